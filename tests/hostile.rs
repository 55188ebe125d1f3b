//! The hostile-plugin suite, part two: plugins that flood the host (a million
//! progress reports, 100 MB of log, 10 MB of details, 100 KB messages) or try
//! to escape the sandbox without grants. Each is cut down or denied with a
//! clear marker,
//! ten ordinary operations started at the same time all complete, and the
//! host's memory stays bounded. (The crashing plugins are in `faults.rs`.)
//!
//! This file holds one test, so the process's RSS is this server's alone.

use std::time::Duration;

use opal_tests::{RSS_BOUND_MIB, TestServer, plugin_dir, rss_mib};
use serde_json::{Value, json};

async fn start(server: &TestServer, target: &str, params: Value) -> String {
    let reply = server.post("/api/v1/operations", &json!({"type": "faulty", "target": target, "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_cut_down_escapes_are_denied_and_ordinary_operations_complete() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let server = TestServer::start_with(dir.path(), |c| {
        c.plugin_dirs = vec![plugins];
        c.types.insert(
            "faulty".into(),
            opal_host::config::TypePolicy {
                timeout: Some(Duration::from_secs(60)),
                max_log_mib: Some(1),
                ..Default::default()
            },
        );
    })
    .await;
    // Something that must not be reached: a listener the plugin is told to call.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();

    let targets: Vec<String> = (0..10).map(|i| format!("ordinary-{i}")).collect();
    let ordinary: Vec<String> = futures_util::future::join_all(
        targets.iter().map(|t| server.start_demo(t, json!({"steps": 10, "step_ms": 50}))),
    )
    .await;
    let report = start(&server, "report", json!({"mode": "report_flood"})).await;
    let logs = start(&server, "logs", json!({"mode": "log_flood"})).await;
    let details = start(&server, "details", json!({"mode": "details_bomb"})).await;
    let escape = start(&server, "escape", json!({"mode": "escape", "address": address, "path": "/etc/hostname"})).await;
    let long = start(&server, "long", json!({"mode": "long_message"})).await;

    for id in &ordinary {
        let op = server.wait_terminal(id).await;
        assert_eq!(op["status"], "completed", "{op}");
    }

    // A million reports: the operation completes, and the throttle let through
    // a handful of progress events, not a million.
    let op = server.wait_terminal(&report).await;
    assert_eq!(op["status"], "completed", "{op}");
    let events = server.get(&format!("/api/v1/operations/{report}/events")).await.body;
    let progress = events["events"].as_array().unwrap().iter().filter(|e| e["event"] == "operation.progress").count();
    assert!(progress < 200, "{progress} progress events for a million reports");

    // 100 MB of log: 1 MiB kept (the configured limit), then one marker line.
    let op = server.wait_terminal(&logs).await;
    assert_eq!(op["status"], "completed", "{op}");
    let events = server.get(&format!("/api/v1/operations/{logs}/events")).await.body;
    let lines: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["event"] == "operation.log").collect();
    let kept: usize = lines.iter().map(|l| l["message"].as_str().unwrap().len()).sum();
    let last = lines.last().unwrap();
    assert!(
        last["message"].as_str().unwrap().starts_with("[log limit reached"),
        "the last line says the log was cut: {last}"
    );
    assert_eq!(last["level"], "warn");
    assert!(kept <= (1 << 20) + 200, "{kept} bytes of log kept");
    assert!(kept > (1 << 20) - 2048, "the log is kept up to the limit, not far short of it: {kept}");

    // 10 MB of details: replaced by a marker that says how large they were.
    let op = server.wait_terminal(&details).await;
    assert_eq!(op["status"], "completed", "{op}");
    let marker = op["details"]["truncated"].as_str().unwrap_or_else(|| panic!("a marker: {op}"));
    assert!(marker.contains("10485") && marker.contains("limit"), "{marker}");

    // 102,000-byte messages (of 3-byte chars): cut at the last char boundary
    // within 4 KiB, with a marker that says how much went.
    let op = server.wait_terminal(&long).await;
    let capped = format!("{}… [97905 bytes truncated]", "€".repeat(1365));
    assert_eq!(op["error"]["code"], "plugin_error", "{op}");
    assert_eq!(op["error"]["message"], capped.as_str(), "the failure message");
    let events = server.get(&format!("/api/v1/operations/{long}/events")).await.body;
    let reported: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["event"] == "operation.progress").collect();
    assert!(
        reported.iter().any(|e| e["operation"]["message"] == capped.as_str()),
        "the progress message: {reported:?}"
    );

    // No grants: no file, no environment, no socket, no command. After the
    // plugin's own "denied: ", each says why, in the host's (or WASI's) words.
    let op = server.wait_terminal(&escape).await;
    assert_eq!(op["status"], "completed", "{op}");
    for (attempt, why) in [
        // No directory is preopened, so no path exists for the plugin (WASI's ENOENT).
        ("file", "No such file or directory (os error 44)"),
        // The host's address check refused the connect (WASI's access-denied).
        ("socket", "Permission denied (os error 2)"),
        // The environment the host gave it is empty (the plugin's words).
        ("env", "no variables"),
        // The host's exec interface, which is where the plugin's call went.
        ("command", r#"denied: no command is granted to this plugin (asked for "/bin/sh -c echo escaped")"#),
    ] {
        let said = op["details"][attempt].as_str().unwrap();
        assert_eq!(said.strip_prefix("denied: "), Some(why), "{attempt}: {}", op["details"]);
    }
    let reached = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(reached.is_err(), "the plugin reached the listener");

    // The host still runs plugins, and its memory is bounded.
    let after = start(&server, "after", json!({"mode": "succeed"})).await;
    assert_eq!(server.wait_terminal(&after).await["status"], "completed");
    let rss = rss_mib();
    assert!(rss < RSS_BOUND_MIB, "the host holds {rss} MiB after the suite; the bound is {RSS_BOUND_MIB} MiB");
    eprintln!("host RSS after the hostile suite: {rss} MiB (bound {RSS_BOUND_MIB} MiB)");
    server.stop().await;
}
