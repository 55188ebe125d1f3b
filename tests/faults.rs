//! The hostile-plugin suite, part one: a faulty plugin (spinning, sleeping,
//! trapping, panicking, exhausting memory or stack) fails its own operation,
//! with a clear error, and nothing else: ten ordinary operations started at
//! the same time complete, the host keeps serving, and its memory stays
//! under the suite's bound. (The floods and escapes are in `hostile.rs`.)

use opal_tests::{RSS_BOUND_MIB, TestServer, plugin_dir, rss_mib};
use serde_json::json;

async fn faulty_server(dir: &std::path::Path) -> TestServer {
    let plugins = plugin_dir(dir, &["faulty"]);
    TestServer::start_with(dir, |c| {
        c.plugin_dirs = vec![plugins];
        c.memory_limit = 16 * 1024 * 1024;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_fails_only_its_own_operation_with_a_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = faulty_server(dir.path()).await;
    let cases = [
        ("spin", "timeout", "did not finish within 1500 ms"),
        ("sleep", "timeout", "did not finish within 1500 ms"),
        ("trap", "trap", "crashed: wasm trap: wasm `unreachable` instruction executed"),
        ("panic", "panic", "plugin panicked: the disk is on fire"),
        ("memory", "memory_limit", "exceeded its memory limit of 16 MiB"),
        ("recurse", "trap", "crashed: stack overflow: "),
    ];
    // Ten ordinary operations and the faulty ones, all started at once: the
    // ordinary ones run (2 s each) through every fault.
    let ordinary =
        (0..10).map(|i| start(&server, "demo", format!("bystander-{i}"), json!({"steps": 20, "step_ms": 100})));
    let faulty = cases.iter().map(|(mode, _, _)| start(&server, "faulty", mode.to_string(), json!({"mode": mode})));
    let mut ids = futures_util::future::join_all(ordinary.chain(faulty)).await;
    let faulty = ids.split_off(10);
    let ordinary = ids;

    for ((mode, code, words), id) in cases.iter().zip(&faulty) {
        let op = server.wait_terminal(id).await;
        assert_eq!(op["status"], "failed", "{mode}: {op}");
        assert_eq!(op["error"]["code"], *code, "{mode}: {op}");
        let message = op["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{mode}: {message:?} should say {words:?}");
    }
    for id in &ordinary {
        let bystander = server.wait_terminal(id).await;
        assert_eq!(bystander["status"], "completed", "{bystander}");
    }
    // And the host still starts plugins afterwards, its memory bounded (this
    // is the whole test process: the other tests' servers count too).
    let after = server.run_to_end("faulty", "x", json!({"mode": "succeed"})).await;
    assert_eq!(after["status"], "completed", "{after}");
    let rss = rss_mib();
    assert!(rss < RSS_BOUND_MIB, "the host holds {rss} MiB after the faults; the bound is {RSS_BOUND_MIB} MiB");
    eprintln!("test process RSS after the faults: {rss} MiB (bound {RSS_BOUND_MIB} MiB)");
    server.stop().await;
}

/// Starts an operation (which must be accepted); returns its id.
async fn start(server: &TestServer, op_type: &str, target: String, params: serde_json::Value) -> String {
    let reply = server.post("/api/v1/operations", &json!({"type": op_type, "target": target, "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_directory_is_discovered_next_to_the_bundled_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    std::fs::write(plugins.join("garbage.wasm"), b"not a component").unwrap();
    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins.clone()]).await;
    let listed = server.get("/api/v1/plugins").await.body;
    let from_dir: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] != "bundled")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(from_dir, ["faulty"], "the broken file is skipped, the rest load: {listed}");
    assert!(listed["plugins"].as_array().unwrap().iter().any(|p| p["name"] == "demo"), "{listed}");
    let faulty = server.get("/api/v1/plugins/faulty").await.body;
    assert_eq!(faulty["source"], plugins.join("faulty.wasm").display().to_string());
    assert_eq!(faulty["default_timeout_ms"], 1500);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_ignores_cancel_is_stopped_by_force_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let server = TestServer::start_with(dir.path(), |c| {
        c.plugin_dirs = vec![plugins];
        c.cancel_grace = std::time::Duration::from_millis(200);
    })
    .await;
    let bystander = server.start_demo("bystander", json!({"steps": 30, "step_ms": 50})).await;
    // Spinning (stopped at an epoch tick) and sleeping (blocked in a host call).
    for mode in ["spin", "sleep"] {
        let reply = server
            .post("/api/v1/operations", &json!({"type": "faulty", "target": mode, "params": {"mode": mode}}))
            .await;
        let id = reply.body["id"].as_str().unwrap().to_owned();
        server.wait_progress(&id).await;
        let asked = std::time::Instant::now();
        let cancel = server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
        assert_eq!(cancel.status, 202, "{cancel:?}");
        let op = server.wait_terminal(&id).await;
        let took = asked.elapsed();
        assert_eq!(op["status"], "cancelled", "{mode}: {op}");
        let message = op["message"].as_str().unwrap();
        assert!(message.contains("by force"), "{mode}: stopped by the grace period, not the 1.5 s timeout: {message}");
        assert!(took < std::time::Duration::from_millis(200 + 1000), "{mode}: took {took:?}, more than grace + 1 s");
    }
    let bystander = server.wait_terminal(&bystander).await;
    assert_eq!(bystander["status"], "completed", "other operations are not disturbed: {bystander}");
    server.stop().await;
}
