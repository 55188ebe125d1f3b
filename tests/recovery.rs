//! Start-up recovery and storage upkeep: an old data file is migrated and its
//! interrupted operation resolved; a retry-safe operation is re-queued after a
//! restart; retention prunes what is past its age.

use std::time::Duration;

use opal_tests::{TestServer, plugin_dir};
use serde_json::json;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/schema-v1.redb");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_v1_file_is_migrated_and_its_interrupted_operation_failed() {
    if opal_tests::cluster::postgres_under_test() {
        // The fixture is a redb file; the PostgreSQL migrations have their own checks.
        eprintln!("NOTICE: the schema-v1 redb fixture applies to the redb store only; not run on PostgreSQL");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(FIXTURE, dir.path().join("opal.redb")).unwrap();
    let server = TestServer::start(dir.path()).await;

    let get = |id: &str| {
        let server = &server;
        let id = id.to_owned();
        async move { server.get(&format!("/api/v1/operations/{id}")).await.body }
    };
    let completed = get("01M80GXQP80ZSVV4FKZ5MP7K85").await;
    assert_eq!(completed["status"], "completed", "{completed}");
    assert_eq!(completed["target"], "srv-1");
    assert_eq!(completed["progress"], 100);
    assert_eq!(completed["message"], "installed on srv-1 in 10 steps");
    assert_eq!(completed["details"], json!({"step": 10, "steps": 10}));
    assert!(completed.get("group").is_none(), "fields added later stay absent: {completed}");
    let events = server.get("/api/v1/operations/01M80GXQP80ZSVV4FKZ5MP7K85/events").await.body;
    assert_eq!(events["events"].as_array().unwrap().len(), 14, "its history came along");

    let failed = get("01M80GZ03CYHFYYJS9756AGT6C").await;
    assert_eq!((failed["status"].as_str(), failed["error"]["code"].as_str()), (Some("failed"), Some("plugin_error")));
    assert_eq!(get("01M80GZ0429J2EPEFF7ZFNHNH4").await["status"], "cancelled");

    // It was running when the old server was killed; demo is not retry-safe.
    let interrupted = get("01M80GZ2CP9SY2G9GKB6728KEV").await;
    assert_eq!(interrupted["status"], "failed", "{interrupted}");
    assert_eq!(interrupted["error"]["code"], "interrupted");
    assert_eq!(interrupted["message"], "interrupted: the server stopped while the operation was running");

    // Its slot was released: the target takes a new operation, and seqs continue.
    let id = server.start_demo("srv-4", json!({"steps": 1, "step_ms": 0})).await;
    assert_eq!(server.wait_terminal(&id).await["status"], "completed");
    server.stop().await;

    // Reopening the migrated file is a no-op.
    let server = TestServer::start(dir.path()).await;
    assert_eq!(server.get("/api/v1/operations?limit=10").await.body["operations"].as_array().unwrap().len(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_safe_operation_is_requeued_after_a_restart_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["steady"]);
    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins.clone()]).await;
    let reply = server
        .post("/api/v1/operations", &json!({"type": "steady", "target": "r", "params": {"steps": 30, "step_ms": 50}}))
        .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let mut ws = server.ws().await;
    ws.subscribe(&[&format!("op:{id}")]).await;
    while ws.recv().await["event"] != "operation.progress" {}
    server.stop().await;

    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins]).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["attempt"], 2);
    let events = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    let requeued = kinds.iter().position(|k| *k == "operation.requeued").expect("a requeued event");
    assert_eq!(kinds.iter().filter(|k| **k == "operation.started").count(), 2, "{kinds:?}");
    assert!(kinds[requeued + 1..].contains(&"operation.started"), "started again after the requeue: {kinds:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_ended_operations_and_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.retention = Duration::from_millis(300);
        c.prune_interval = Duration::from_millis(100);
    })
    .await;
    let old = server.start_demo("p", json!({"steps": 1, "step_ms": 0})).await;
    server.wait_terminal(&old).await;
    let running = server.start_demo("q", json!({"steps": 100, "step_ms": 50})).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.get(&format!("/api/v1/operations/{old}")).await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the ended operation was never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.get(&format!("/api/v1/operations/{old}/events")).await.status, 404);
    let kept = server.get(&format!("/api/v1/operations/{running}")).await;
    assert_eq!(kept.status, 200, "an active operation is never pruned");
    server.stop().await;
}
