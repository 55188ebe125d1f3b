//! The plugin registry end to end: versions side by side and semver
//! requirements, hot reload without a restart (running operations keep their
//! version), refusal of a plugin built against another `opal:plugin` version,
//! and sha256 pins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use opal_tests::{TEST_PLUGINS, TestServer, WAIT};
use serde_json::{Value, json};

fn wasm(name: &str) -> PathBuf {
    PathBuf::from(TEST_PLUGINS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no test plugin {name}")).1)
}

/// Copies test plugins into `dir/<file name>`; returns `dir`.
fn plugins(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (plugin, file) in files {
        std::fs::copy(wasm(plugin), plugins.join(file)).unwrap();
    }
    plugins
}

/// Replaces `path` with `from`'s bytes in one rename, as an operator's deploy would.
fn replace(path: &Path, from: &Path) {
    let staging = path.with_extension("staging");
    std::fs::copy(from, &staging).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

async fn greet(server: &TestServer, target: &str, extra: Value) -> opal_tests::Reply {
    let mut body = json!({"type": "greeter", "target": target, "params": {"name": target}});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    server.post("/api/v1/operations", &body).await
}

/// Polls until `check` holds for `GET path`, within [`WAIT`].
async fn eventually(server: &TestServer, path: &str, what: &str, check: impl Fn(&opal_tests::Reply) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = server.get(path).await;
        if check(&reply) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} never happened; last: {reply:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_versions_run_side_by_side_and_a_request_may_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins(dir.path(), &[("greeter-v1", "greeter-1.wasm"), ("greeter-v2", "greeter-2.wasm")]);
    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins]).await;

    let summary = server.get("/api/v1/plugins/greeter").await.body;
    assert_eq!(summary["version"], "2.0.0", "the highest is the default: {summary}");
    assert_eq!(summary["versions"], json!(["2.0.0", "1.0.0"]));
    assert_eq!(summary["wit_version"], opal_host::sandbox::WIT_VERSION.to_string());
    assert_eq!(server.get("/api/v1/plugins/greeter?version=^1").await.body["version"], "1.0.0");
    assert_eq!(server.get("/api/v1/plugins/greeter?version=^3").await.status, 404);

    let latest = greet(&server, "a", json!({})).await;
    let pinned = greet(&server, "b", json!({"version": "^1"})).await;
    assert_eq!((latest.status, pinned.status), (202, 202));
    assert_eq!(latest.body["plugin_version"], "2.0.0");
    assert_eq!(pinned.body["plugin_version"], "1.0.0");
    let latest = server.wait_terminal(latest.body["id"].as_str().unwrap()).await;
    let pinned = server.wait_terminal(pinned.body["id"].as_str().unwrap()).await;
    assert_eq!(latest["message"], "greeter 2.0.0 says hello to a");
    assert_eq!(pinned["message"], "greeter 1.0.0 says hello to b");

    for (version, words) in [("^3", "no version of greeter matches ^3; loaded: 2.0.0, 1.0.0"), ("one", "semver")] {
        let reply = greet(&server, "c", json!({"version": version})).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(reply.body["errors"][0]["field"], "version", "{reply:?}");
        assert!(reply.body["errors"][0]["message"].as_str().unwrap().contains(words), "{reply:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_files_are_reloaded_without_a_restart_and_a_running_operation_keeps_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins(dir.path(), &[("greeter-v1", "greeter.wasm")]);
    let server = TestServer::start_with(dir.path(), |c| {
        c.plugin_dirs = vec![plugins.clone()];
        c.plugin_poll = Duration::from_millis(100);
    })
    .await;
    let running = greet(&server, "slow", json!({"params": {"name": "slow", "wait_ms": 1500}})).await;
    assert_eq!(running.body["plugin_version"], "1.0.0", "{running:?}");

    // Replaced while the operation runs.
    replace(&plugins.join("greeter.wasm"), &wasm("greeter-v2"));
    eventually(&server, "/api/v1/plugins/greeter", "the replacement", |r| r.body["version"] == "2.0.0").await;
    assert_eq!(server.get("/api/v1/plugins/greeter").await.body["versions"], json!(["2.0.0"]));
    let fresh = greet(&server, "fresh", json!({})).await;
    assert_eq!(fresh.body["plugin_version"], "2.0.0");
    let running = server.wait_terminal(running.body["id"].as_str().unwrap()).await;
    assert_eq!(running["status"], "completed", "{running}");
    assert_eq!(running["message"], "greeter 1.0.0 says hello to slow", "it kept the version it started with");
    assert_eq!(running["plugin_version"], "1.0.0");

    // Added.
    std::fs::copy(wasm("steady"), plugins.join("steady.wasm")).unwrap();
    eventually(&server, "/api/v1/plugins/steady", "the addition", |r| r.status == 200).await;

    // Removed.
    std::fs::remove_file(plugins.join("greeter.wasm")).unwrap();
    eventually(&server, "/api/v1/plugins/greeter", "the removal", |r| r.status == 404).await;
    assert_eq!(greet(&server, "gone", json!({})).await.status, 404);
    assert_eq!(server.get("/api/v1/plugins/demo").await.status, 200, "the bundled plugins stay");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_for_another_wit_version_is_refused_by_name_and_the_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins(dir.path(), &[("future-wit", "future.wasm"), ("greeter-v1", "greeter.wasm")]);
    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins]).await;
    let list = server.get("/api/v1/plugins").await.body;
    let names: Vec<&str> = list["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"greeter") && !names.contains(&"future-wit"), "{names:?}");
    let refused = &list["refused"][0];
    assert!(refused["source"].as_str().unwrap().ends_with("future.wasm"), "{list}");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("opal:plugin@0.2.0")
            && error.contains(&format!("opal:plugin@{}", opal_host::sandbox::WIT_VERSION)),
        "the refusal names both versions: {error}"
    );
    let reply = greet(&server, "a", json!({})).await;
    assert_eq!(server.wait_terminal(reply.body["id"].as_str().unwrap()).await["status"], "completed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_for_an_older_compatible_wit_version_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins(dir.path(), &[("past-wit", "past.wasm")]);
    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins]).await;
    let summary = server.get("/api/v1/plugins/past-wit").await;
    assert_eq!(summary.status, 200, "{:?}", server.get("/api/v1/plugins").await.body);
    assert_eq!(summary.body["wit_version"], "0.1.0");
    let reply = server.post("/api/v1/operations", &json!({"type": "past-wit", "target": "t"})).await;
    let op = server.wait_terminal(reply.body["id"].as_str().unwrap()).await;
    assert_eq!((op["status"].as_str(), op["message"].as_str()), (Some("completed"), Some("from the past")), "{op}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha256_pin_refuses_other_contents() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins(dir.path(), &[("greeter-v1", "greeter-1.wasm"), ("greeter-v2", "greeter-2.wasm")]);
    let sha256 = |plugin: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(wasm(plugin)).unwrap()))
    };
    let (pin, other) = (sha256("greeter-v1"), sha256("greeter-v2"));
    // A cache of its own (and no bundled plugins to fill it), to see what the refusal left there.
    let cache = dir.path().join("cache");
    let server = TestServer::start_with(dir.path(), |c| {
        c.plugin_dirs = vec![plugins];
        c.cache_dir = Some(cache.clone());
        c.bundled_plugins = false;
        c.types.insert(
            "greeter".into(),
            opal_host::config::TypePolicy { sha256: vec![pin.clone()], ..Default::default() },
        );
    })
    .await;
    let list = server.get("/api/v1/plugins").await.body;
    let greeter = list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "greeter").unwrap();
    assert_eq!(greeter["versions"], json!(["1.0.0"]), "only the pinned contents load: {list}");
    assert_eq!(greeter["sha256"], pin.as_str());
    let refused = &list["refused"][0];
    assert!(refused["source"].as_str().unwrap().ends_with("greeter-2.wasm"), "{list}");
    assert_eq!(
        refused["error"],
        format!("plugin \"greeter\" has sha256 {other}, which is not pinned in the config (pinned: {pin})"),
        "the refusal names both hashes"
    );
    // The refused contents were compiled to learn their name, but never cached.
    let cached: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(cached.iter().any(|f| f.starts_with(&pin)), "the accepted plugin is cached: {cached:?}");
    assert!(!cached.iter().any(|f| f.starts_with(&other)), "the refused plugin left an artifact: {cached:?}");
    server.stop().await;
}
