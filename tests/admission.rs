//! Admission: no duplicates, exclusivity groups, idempotency keys, the FIFO
//! queue under concurrency limits, cancelling what waits, timeouts from config,
//! and filtered history.

use std::time::Duration;

use opal_host::config::TypePolicy;
use opal_tests::{TestServer, plugin_dir};
use serde_json::{Value, json};

async fn steady_server(dir: &std::path::Path, tweak: impl FnOnce(&mut opal_host::ServerConfig)) -> TestServer {
    let plugins = plugin_dir(dir, &["steady", "faulty"]);
    TestServer::start_with(dir, |c| {
        c.plugin_dirs = vec![plugins];
        tweak(c);
    })
    .await
}

fn op(kind: &str, target: &str, params: Value) -> Value {
    json!({"type": kind, "target": target, "params": params})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_concurrent_posts_start_exactly_one_operation() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let body = op("demo", "srv-dup", json!({"steps": 20, "step_ms": 100}));
    let replies = futures_util::future::join_all((0..50).map(|_| server.post("/api/v1/operations", &body))).await;

    let created: Vec<&Value> = replies.iter().filter(|r| r.status == 202).map(|r| &r.body).collect();
    assert_eq!(created.len(), 1, "exactly one 202: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    let id = created[0]["id"].as_str().unwrap();
    let conflicts: Vec<_> = replies.iter().filter(|r| r.status == 409).collect();
    assert_eq!(conflicts.len(), 49);
    for reply in conflicts {
        assert_eq!(reply.content_type, "application/problem+json");
        assert_eq!(reply.body["operation"]["id"], id, "every 409 names the running operation: {:?}", reply.body);
    }
    let listed = server.get("/api/v1/operations?target=srv-dup").await.body;
    assert_eq!(listed["operations"].as_array().unwrap().len(), 1, "{listed}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_run_side_by_side_unless_an_exclusivity_group_joins_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = steady_server(dir.path(), |_| {}).await;
    // steady declares the group `maintenance`; demo has none: both run on srv.
    let a = server.post("/api/v1/operations", &op("steady", "srv", json!({"steps": 50, "step_ms": 100}))).await;
    let b = server.post("/api/v1/operations", &op("demo", "srv", json!({"steps": 50, "step_ms": 100}))).await;
    assert_eq!((a.status, b.status), (202, 202), "{a:?} {b:?}");
    assert_eq!(a.body["group"], "maintenance");
    server.stop().await;

    // The operator puts demo into the same group: now they exclude each other on one target.
    let dir = tempfile::tempdir().unwrap();
    let server = steady_server(dir.path(), |c| {
        c.types
            .insert("demo".into(), TypePolicy { exclusivity_group: Some("maintenance".into()), ..Default::default() });
    })
    .await;
    let a = server.post("/api/v1/operations", &op("steady", "srv", json!({"steps": 50, "step_ms": 100}))).await;
    assert_eq!(a.status, 202);
    let b = server.post("/api/v1/operations", &op("demo", "srv", json!({"steps": 5, "step_ms": 1}))).await;
    assert_eq!(b.status, 409, "{b:?}");
    assert_eq!(b.body["operation"]["id"], a.body["id"]);
    assert!(b.body["detail"].as_str().unwrap().contains("steady"), "{b:?}");
    // Another target is free.
    let c = server.post("/api/v1/operations", &op("demo", "other", json!({"steps": 1, "step_ms": 1}))).await;
    assert_eq!(c.status, 202);
    // Once the holder ends, the group is free again on srv.
    let id = a.body["id"].as_str().unwrap();
    server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    server.wait_terminal(id).await;
    let d = server.post("/api/v1/operations", &op("demo", "srv", json!({"steps": 1, "step_ms": 1}))).await;
    assert_eq!(d.status, 202, "{d:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_original_operation_and_never_starts_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut body = op("demo", "srv-idem", json!({"steps": 2, "step_ms": 10}));
    body["idempotency_key"] = json!("renew-2026-11-22");
    let first = server.post("/api/v1/operations", &body).await;
    assert_eq!(first.status, 202);
    let id = first.body["id"].as_str().unwrap().to_owned();
    assert_eq!(first.body["idempotency_key"], "renew-2026-11-22");

    let again = server.post("/api/v1/operations", &body).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["id"], id.as_str());
    server.wait_terminal(&id).await;
    let after_end = server.post("/api/v1/operations", &body).await;
    assert_eq!(after_end.status, 200, "still the original, even after it ended: {after_end:?}");
    assert_eq!(after_end.body["status"], "completed");

    body["params"]["steps"] = json!(3);
    let different = server.post("/api/v1/operations", &body).await;
    assert_eq!(different.status, 409, "{different:?}");
    assert_eq!(different.body["operation"]["id"], id.as_str());

    let listed = server.get("/api/v1/operations?target=srv-idem").await.body;
    assert_eq!(listed["operations"].as_array().unwrap().len(), 1);
    let bad = server.post("/api/v1/operations", &json!({"type": "demo", "target": "x", "idempotency_key": ""})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["errors"][0]["field"], "idempotency_key");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_global_limit_of_two_ten_operations_run_two_at_a_time_in_fifo_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = steady_server(dir.path(), |c| c.max_concurrent = 2).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let reply = server
            .post("/api/v1/operations", &op("steady", &format!("q{i}"), json!({"steps": 3, "step_ms": 40})))
            .await;
        assert_eq!(reply.status, 202);
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let mut spans = Vec::new();
    for id in &ids {
        let op = server.wait_terminal(id).await;
        assert_eq!(op["status"], "completed", "{op}");
        let ms = |field: &str| humantime::parse_rfc3339(op[field].as_str().unwrap()).unwrap();
        spans.push((ms("started_at"), ms("finished_at")));
    }
    for pair in spans.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "started out of FIFO order: {spans:?}");
    }
    for (i, (start, _)) in spans.iter().enumerate() {
        // Operations that had started and not yet finished when this one started.
        let overlapping = spans[..i].iter().filter(|(s, f)| s <= start && f > start).count();
        assert!(overlapping < 2, "operation {i} started while {overlapping} others ran: {spans:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_type_limit_queues_that_type_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = steady_server(dir.path(), |c| {
        c.types.insert("steady".into(), TypePolicy { max_concurrent: Some(1), ..Default::default() });
    })
    .await;
    let first = server.post("/api/v1/operations", &op("steady", "a", json!({"steps": 100, "step_ms": 50}))).await;
    let second = server.post("/api/v1/operations", &op("steady", "b", json!({"steps": 1, "step_ms": 1}))).await;
    let other = server.start_demo("c", json!({"steps": 1, "step_ms": 1})).await;
    assert_eq!(server.wait_terminal(&other).await["status"], "completed", "another type is not held up");
    let waiting = server.get(&format!("/api/v1/operations/{}", second.body["id"].as_str().unwrap())).await.body;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    let first_id = first.body["id"].as_str().unwrap();
    server.post(&format!("/api/v1/operations/{first_id}/cancel"), &json!({})).await;
    assert_eq!(server.wait_terminal(second.body["id"].as_str().unwrap()).await["status"], "completed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_operation_can_be_cancelled_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let server = steady_server(dir.path(), |c| c.max_concurrent = 1).await;
    let running = server.post("/api/v1/operations", &op("steady", "a", json!({"steps": 200, "step_ms": 20}))).await;
    let waiting = server.post("/api/v1/operations", &op("steady", "b", json!({"steps": 1, "step_ms": 1}))).await;
    let (running, waiting) = (running.body["id"].as_str().unwrap(), waiting.body["id"].as_str().unwrap());
    let reply = server.post(&format!("/api/v1/operations/{waiting}/cancel"), &json!({})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["status"], "cancelled");
    let op = server.wait_terminal(waiting).await;
    assert_eq!(op["status"], "cancelled");
    assert!(op["started_at"].is_null(), "it never ran: {op}");
    assert_eq!(op["message"], "cancelled by api before it started");
    // The slot it held is free again, and the running one is undisturbed.
    let again = server.post("/api/v1/operations", &op_body("b")).await;
    assert_eq!(again.status, 202, "{again:?}");
    let first = server.get(&format!("/api/v1/operations/{running}")).await.body;
    assert_eq!(first["status"], "running", "{first}");
    server.post(&format!("/api/v1/operations/{running}/cancel"), &json!({})).await;
    assert_eq!(server.wait_terminal(running).await["status"], "cancelled");
    server.stop().await;
}

fn op_body(target: &str) -> Value {
    op("steady", target, json!({"steps": 1, "step_ms": 1}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_from_the_config_overrides_the_plugins_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.types.insert("demo".into(), TypePolicy { timeout: Some(Duration::from_millis(300)), ..Default::default() });
    })
    .await;
    let id = server.start_demo("slow", json!({"steps": 10, "step_ms": 100})).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "timeout");
    assert_eq!(op["error"]["message"], "plugin did not finish within 300 ms");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_by_status_type_target_and_creator_with_cursor_paging() {
    let dir = tempfile::tempdir().unwrap();
    let server = steady_server(dir.path(), |_| {}).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(server.start_demo(&format!("h{i}"), json!({"steps": 1, "step_ms": 0})).await);
    }
    let failed = server.start_demo("h-fail", json!({"steps": 2, "step_ms": 0, "fail_at_step": 1})).await;
    let steady = server.post("/api/v1/operations", &op("steady", "h0", json!({"steps": 1, "step_ms": 0}))).await;
    for id in ids.iter().chain([&failed]) {
        server.wait_terminal(id).await;
    }
    server.wait_terminal(steady.body["id"].as_str().unwrap()).await;

    let only = |q: &str| {
        let server = &server;
        let q = q.to_owned();
        async move {
            let body = server.get(&format!("/api/v1/operations?{q}")).await.body;
            body["operations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(only("status=failed").await, std::slice::from_ref(&failed));
    assert_eq!(only("type=steady").await.len(), 1);
    assert_eq!(only("target=h0").await.len(), 2);
    assert_eq!(only("target=h0&type=demo").await, [ids[0].clone()]);
    assert_eq!(only("created_by=api").await.len(), 7);
    assert_eq!(only("status=completed,failed&type=demo").await.len(), 6);

    // Newest first, page by page, nothing missed or repeated.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server.get(&format!("/api/v1/operations?type=demo&limit=4{cursor}")).await.body;
        seen.extend(page["operations"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = ids.iter().chain([&failed]).cloned().collect();
    expected.reverse();
    assert_eq!(seen, expected);

    let bad = server.get("/api/v1/operations?status=finished").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["errors"][0]["field"], "status");
    assert_eq!(server.get("/api/v1/operations?colour=red").await.status, 400);
    server.stop().await;
}
