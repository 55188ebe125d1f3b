//! The foundation's end-to-end tests: HTTP in, a WASM plugin running, events
//! out over a real WebSocket, everything durable in redb.

use opal_tests::{TestServer, WsClient};
use serde_json::{Value, json};

fn seqs_strictly_increase(events: &[Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not strictly increasing: {seqs:?}");
}

fn kinds_of<'a>(events: &'a [Value], id: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["operation"]["id"] == id || e["operation_id"] == id)
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_runs_end_to_end_and_streams_its_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut all = server.ws().await;
    let snapshot = all.subscribe(&["operations"]).await.remove(0);
    assert_eq!(snapshot["operations"], json!([]), "a fresh server has no operations");

    let reply = server
        .post("/api/v1/operations", &json!({"type": "demo", "target": "srv-1", "params": {"steps": 8, "step_ms": 60}}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.location.as_deref(), Some(format!("/api/v1/operations/{id}").as_str()));
    assert_eq!(reply.body["status"], "pending");
    assert_eq!(reply.body["type"], "demo");
    assert_eq!(reply.body["target"], "srv-1");

    // A second client follows just this operation, log lines included.
    let mut one = server.ws().await;
    one.subscribe(&[&format!("op:{id}")]).await;

    let events = all.events_until_terminal(&id).await;
    seqs_strictly_increase(&events);
    let kinds = kinds_of(&events, &id);
    assert_eq!(kinds.first(), Some(&"operation.created"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"operation.started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"operation.completed"), "{kinds:?}");
    let middle = &kinds[2..kinds.len() - 1];
    assert!(!middle.is_empty() && middle.iter().all(|k| *k == "operation.progress"), "{kinds:?}");

    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "operation.progress")
        .map(|e| e["operation"]["progress"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {progress:?}");
    let done = events.last().unwrap();
    assert_eq!(done["operation"]["status"], "completed");
    assert_eq!(done["operation"]["progress"], 100);
    assert_eq!(done["operation"]["phase"], "verify");
    assert_eq!(done["operation"]["details"], json!({"step": 8, "steps": 8}));

    // The per-operation topic carries the same lifecycle plus the plugin's log.
    let detailed = one.events_until_terminal(&id).await;
    seqs_strictly_increase(&detailed);
    let detailed_kinds = kinds_of(&detailed, &id);
    assert!(detailed_kinds.contains(&"operation.log"), "{detailed_kinds:?}");
    let logs: Vec<&str> =
        detailed.iter().filter(|e| e["event"] == "operation.log").map(|e| e["message"].as_str().unwrap()).collect();
    assert!(logs.iter().any(|l| l.contains("entering install")), "{logs:?}");

    // What was streamed is what is stored.
    let stored = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    let stored: Vec<u64> = stored["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let streamed: Vec<u64> = detailed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(streamed.iter().all(|s| stored.contains(s)), "streamed {streamed:?} not all stored {stored:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_operation_survives_a_restart_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let id = server.start_demo("srv-2", json!({"steps": 4, "step_ms": 10})).await;
    let before = server.wait_terminal(&id).await;
    assert_eq!(before["status"], "completed", "{before}");
    let events_before = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let after = server.get(&format!("/api/v1/operations/{id}")).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body, before, "every field survives the restart");
    let events_after = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    assert_eq!(events_after, events_before);
    let listed = server.get("/api/v1/operations").await.body;
    assert_eq!(listed["operations"][0], before);

    // New events continue the sequence rather than restarting it.
    let last_seq = events_before["events"].as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap();
    let mut ws = server.ws().await;
    let snapshot = ws.subscribe(&[&format!("op:{id}")]).await.remove(0);
    assert!(snapshot["seq"].as_u64().unwrap() >= last_seq, "{snapshot}");
    assert_eq!(snapshot["operations"][0], before, "snapshot of a terminal operation after restart");
    let id2 = server.start_demo("srv-2", json!({"steps": 1, "step_ms": 0})).await;
    let mut all = server.ws().await;
    all.subscribe(&["operations"]).await;
    let _ = server.wait_terminal(&id2).await;
    let events = server.get(&format!("/api/v1/operations/{id2}/events")).await.body;
    let first = events["events"][0]["seq"].as_u64().unwrap();
    assert!(first > last_seq, "seq {first} after restart must exceed {last_seq}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_interrupted_by_shutdown_is_failed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let id = server.start_demo("srv-3", json!({"steps": 100, "step_ms": 100})).await;
    let mut ws = server.ws().await;
    ws.subscribe(&[&format!("op:{id}")]).await;
    // Wait until it really runs.
    loop {
        if ws.recv().await["event"] == "operation.progress" {
            break;
        }
    }
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let op = server.get(&format!("/api/v1/operations/{id}")).await.body;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "interrupted", "{op}");
    assert!(op["finished_at"].is_string(), "{op}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_fails_its_operation_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut ws = server.ws().await;
    ws.subscribe(&["operations"]).await;
    let id = server.start_demo("srv-4", json!({"steps": 6, "step_ms": 5, "fail_at_step": 4})).await;
    let events = ws.events_until_terminal(&id).await;
    let end = events.last().unwrap();
    assert_eq!(end["event"], "operation.failed", "{end}");
    let op = &end["operation"];
    assert_eq!(op["status"], "failed");
    assert_eq!(op["error"]["code"], "plugin_error");
    assert_eq!(op["error"]["message"], "install failed at step 4 of 6");
    assert_eq!(op["message"], "install failed at step 4 of 6");
    // The stored record agrees with the event.
    assert_eq!(server.get(&format!("/api/v1/operations/{id}")).await.body, *op);

    // Another operation on the same server is unaffected.
    let ok = server.start_demo("srv-4b", json!({"steps": 2, "step_ms": 0})).await;
    assert_eq!(server.wait_terminal(&ok).await["status"], "completed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let post = |body: Value| {
        let server = &server;
        async move { server.post("/api/v1/operations", &body).await }
    };
    let fields = |reply: &opal_tests::Reply| -> Vec<String> {
        reply.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
    };

    // Params that break the schema: 400 naming the field.
    let reply = post(json!({"type": "demo", "target": "t", "params": {"steps": 0, "step_ms": 1}})).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.content_type, "application/problem+json");
    assert_eq!(fields(&reply), ["params/steps"], "{reply:?}");
    assert_eq!(reply.body["status"], 400);

    // Every problem is listed, not only the first.
    let reply = post(json!({"type": "demo", "target": "t", "params": {"steps": "many", "bogus": true}})).await;
    assert_eq!(reply.status, 400);
    let mut listed = fields(&reply);
    listed.sort();
    assert_eq!(listed, ["params/bogus", "params/step_ms", "params/steps"], "{reply:?}");

    // The plugin's own validate(): a rule the schema cannot express.
    let reply =
        post(json!({"type": "demo", "target": "t", "params": {"steps": 3, "step_ms": 1, "fail_at_step": 9}})).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(fields(&reply), ["params/fail_at_step"]);
    assert!(reply.body["errors"][0]["message"].as_str().unwrap().contains("between 1 and steps"), "{reply:?}");

    // Missing type and target.
    let reply = post(json!({"params": {}})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(fields(&reply), ["type", "target"]);

    // Unknown type: 404.
    let reply = post(json!({"type": "no-such-plugin", "target": "t"})).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.content_type, "application/problem+json");
    assert!(reply.body["detail"].as_str().unwrap().contains("no-such-plugin"));

    // Malformed JSON: 400.
    let reply = server.post_raw("/api/v1/operations", "{\"type\": \"demo\", ").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body["detail"].as_str().unwrap().contains("not valid JSON"), "{reply:?}");

    // Ids that are not ids, and ids that do not exist.
    assert_eq!(server.get("/api/v1/operations/nope").await.status, 400);
    assert_eq!(server.get("/api/v1/operations/01JCZZZZZZZZZZZZZZZZZZZZZZ").await.status, 404);

    // None of that created anything.
    let listed = server.get("/api/v1/operations").await.body;
    assert_eq!(listed["operations"], json!([]), "{listed}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_operation_can_be_cancelled_and_honours_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let id = server.start_demo("srv-5", json!({"steps": 1000, "step_ms": 20})).await;
    let mut ws: WsClient = server.ws().await;
    ws.subscribe(&[&format!("op:{id}")]).await;
    loop {
        if ws.recv().await["event"] == "operation.progress" {
            break;
        }
    }
    let reply = server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "cancelled", "{op}");
    assert_eq!(op["message"], "cancelled by api", "the demo stopped by itself, within the grace period: {op}");
    assert!(op["progress"].as_u64().unwrap() < 100, "{op}");

    let again = server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    assert_eq!(again.status, 409, "cancelling an ended operation: {again:?}");
    assert_eq!(again.body["operation"]["id"], id.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_and_health_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!((health.body["status"].as_str(), health.body["draining"].as_bool()), (Some("ok"), Some(false)));
    assert!(health.body["version"].is_string() && health.body["uptime_seconds"].is_u64(), "{:?}", health.body);
    let plugins = server.get("/api/v1/plugins").await.body;
    let demo =
        plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "demo").expect("demo is bundled").clone();
    assert_eq!(demo["source"], "bundled");
    assert_eq!(demo["params_schema"]["type"], "object");
    assert!(demo["params_schema"]["properties"]["steps"].is_object(), "{demo}");
    assert_eq!(server.get("/api/v1/plugins/demo").await.body, demo);
    assert_eq!(server.get("/api/v1/plugins/nope").await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_websocket_messages_get_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut ws = server.ws().await;
    ws.send_text("{not json").await;
    assert_eq!(ws.recv().await["code"], "bad_message");
    ws.send(json!({"type": "subscribe", "topics": ["bogus"]})).await;
    assert_eq!(ws.recv().await["code"], "unknown_topic");
    ws.send(json!({"type": "dance"})).await;
    assert_eq!(ws.recv().await["code"], "bad_message");
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    // Still usable afterwards.
    ws.subscribe(&["operations"]).await;
    server.stop().await;
}
