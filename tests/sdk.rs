//! The SDK inside a real server: what `opal_sdk::testing` shows natively
//! (tests/plugins/rollout's own tests) is what the host receives from the
//! component: phases mapped onto their slice, per-item progress with its
//! counters in the details, log macros, the schema derived from the params
//! type, and a `ctx.sleep` that wakes up for a cancel.

use std::time::{Duration, Instant};

use opal_tests::{TestServer, plugin_dir};
use serde_json::{Value, json};

/// A server with the rollout plugin and a 1 ms progress window, so nearly
/// every report the plugin makes becomes an event.
async fn server(dir: &std::path::Path) -> TestServer {
    let plugins = plugin_dir(dir, &["rollout"]);
    TestServer::start_with(dir, |c| {
        c.plugin_dirs = vec![plugins];
        c.progress_window = Duration::from_millis(1);
    })
    .await
}

async fn start(server: &TestServer, params: Value) -> String {
    let reply = server.post("/api/v1/operations", &json!({"type": "rollout", "target": "web", "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_items_details_and_logs_reach_the_host_as_the_test_kit_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let id = start(&server, json!({"hosts": ["a", "b", "c"], "step_ms": 60})).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["message"], "rolled out to 3 hosts on web");
    assert_eq!(op["phase"], "verify");
    assert_eq!(op["details"], json!({"completed_hosts": 3, "total_hosts": 3}));

    let events = server.get(&format!("/api/v1/operations/{id}/events")).await.body["events"].clone();
    let events = events.as_array().unwrap();
    let progress: Vec<&Value> =
        events.iter().filter(|e| e["event"] == "operation.progress").map(|e| &e["operation"]).collect();
    let seen: Vec<(u64, &str, &str)> = progress
        .iter()
        .map(|op| {
            (op["progress"].as_u64().unwrap(), op["message"].as_str().unwrap(), op["phase"].as_str().unwrap_or(""))
        })
        .collect();
    // Each of these is followed by a 60 ms sleep, so none can be coalesced
    // away; the deploy phase owns 10-90 %, a third of it per host.
    let expected = [
        (5, "fetching the release", "prepare"),
        (10, "deploying to a", "deploy"),
        (36, "deploying to b", "deploy"),
        (63, "deploying to c", "deploy"),
        (95, "checking health", "verify"),
    ];
    let mut rest = seen.iter();
    for want in &expected {
        assert!(rest.any(|got| got == want), "{want:?} missing or out of order in {seen:?}");
    }
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress went backwards: {seen:?}");
    assert!(
        progress
            .iter()
            .any(|op| op["message"] == "deploying to b"
                && op["details"] == json!({"completed_hosts": 1, "total_hosts": 3})),
        "the counters travel with the item: {seen:?}"
    );

    let logs: Vec<&str> =
        events.iter().filter(|e| e["event"] == "operation.log").filter_map(|e| e["message"].as_str()).collect();
    assert_eq!(logs, ["a runs the release", "b runs the release", "c runs the release"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_wakes_a_plugin_sleeping_in_ctx_sleep_well_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    // Ten-minute steps: only a sleep that wakes up for the cancel ends this
    // before the 5 s grace period runs out and the host stops it by force.
    let id = start(&server, json!({"hosts": ["a", "b"], "step_ms": 600_000})).await;
    let running = server.wait_progress(&id).await;
    assert_eq!(running["phase"], "prepare", "{running}");
    let asked = Instant::now();
    let cancel = server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    assert_eq!(cancel.status, 202, "{cancel:?}");
    let op = server.wait_terminal(&id).await;
    let took = asked.elapsed();
    assert_eq!(op["status"], "cancelled", "{op}");
    assert_eq!(op["message"], "cancelled by api", "the plugin returned Cancelled by itself: {op}");
    assert!(took < Duration::from_secs(2), "took {took:?}: a cancel ends the host's sleep at once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_and_validate_of_the_typed_params_guard_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let plugin = server.get("/api/v1/plugins/rollout").await.body;
    let schema = &plugin["params_schema"];
    assert_eq!(schema["properties"]["hosts"]["minItems"], 1, "{schema}");
    assert_eq!(schema["properties"]["hosts"]["description"], "The hosts, in the order to deploy to.");

    let post = |params: Value| {
        let body = json!({"type": "rollout", "target": "web", "params": params});
        let server = &server;
        async move { server.post("/api/v1/operations", &body).await }
    };
    let empty = post(json!({"hosts": [], "step_ms": 0})).await;
    assert_eq!(empty.status, 400, "{empty:?}");
    assert_eq!(empty.body["errors"][0]["field"], "params/hosts", "{empty:?}");
    let stranger = post(json!({"hosts": ["a"], "step_ms": 0, "fail_on": "z"})).await;
    assert_eq!(stranger.status, 400, "{stranger:?}");
    assert_eq!(stranger.body["errors"], json!([{"field": "params/fail_on", "message": "is not one of the hosts"}]));
    server.stop().await;
}
