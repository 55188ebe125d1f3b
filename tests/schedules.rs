//! Schedules: a cron that creates operations, skips a fire while its previous
//! operation is still active, and stops when deleted.

use std::time::Duration;

use opal_tests::{TestServer, plugin_dir};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_every_second_creates_operations_and_records_overlaps_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["steady"]);
    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins]).await;
    // Each operation takes about 1.5 s, so fires overlap.
    let reply = server
        .post(
            "/api/v1/schedules",
            &json!({"cron": "* * * * * *", "type": "steady", "target": "cert-renew", "params": {"steps": 3, "step_ms": 500}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.location.as_deref(), Some(format!("/api/v1/schedules/{id}").as_str()));
    assert!(reply.body["next_run_at"].is_string());
    assert_eq!(reply.body["created_by"], "api", "dev mode's creator, as operations record it");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let schedule = loop {
        let schedule = server.get(&format!("/api/v1/schedules/{id}")).await.body;
        if schedule["runs"].as_u64() >= Some(2) && schedule["skipped"].as_u64() >= Some(1) {
            break schedule;
        }
        assert!(tokio::time::Instant::now() < deadline, "not enough runs: {schedule}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let skipped: Vec<&Value> =
        schedule["recent_runs"].as_array().unwrap().iter().filter(|r| r["outcome"] == "skipped").collect();
    assert!(skipped[0]["message"].as_str().unwrap().contains("still"), "{schedule}");

    let created_by = format!("schedule:{id}");
    let ops = server.get(&format!("/api/v1/operations?created_by={created_by}")).await.body;
    let ops = ops["operations"].as_array().unwrap();
    assert!(ops.len() >= 2, "{ops:?}");
    assert!(ops.iter().all(|o| o["target"] == "cert-renew" && o["created_by"] == created_by.as_str()));
    let active = ops.iter().filter(|o| o["status"] == "pending" || o["status"] == "running").count();
    assert!(active <= 1, "never two at once on the target: {ops:?}");

    assert_eq!(server.get("/api/v1/schedules").await.body["schedules"][0]["id"], id.as_str());
    let deleted = server.http_delete(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(deleted, 204);
    assert_eq!(server.http_delete(&format!("/api/v1/schedules/{id}")).await, 404);
    let count = |body: Value| body["operations"].as_array().unwrap().len();
    let before = count(server.get(&format!("/api/v1/operations?created_by={created_by}")).await.body);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = count(server.get(&format!("/api/v1/operations?created_by={created_by}")).await.body);
    assert_eq!(before, after, "a deleted schedule creates nothing more");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let post = |body: Value| {
        let server = &server;
        async move { server.post("/api/v1/schedules", &body).await }
    };
    let bad_cron =
        post(json!({"cron": "every tuesday", "type": "demo", "target": "t", "params": {"steps": 1, "step_ms": 1}}))
            .await;
    assert_eq!(bad_cron.status, 400);
    assert_eq!(bad_cron.body["errors"][0]["field"], "cron");
    let bad_params = post(json!({"cron": "0 * * * *", "type": "demo", "target": "t", "params": {"steps": 0}})).await;
    assert_eq!(bad_params.status, 400);
    assert!(bad_params.body["errors"].as_array().unwrap().iter().any(|e| e["field"] == "params/steps"));
    let unknown = post(json!({"cron": "0 * * * *", "type": "nope", "target": "t"})).await;
    assert_eq!(unknown.status, 404);
    let missing = post(json!({"type": "demo"})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(server.get("/api/v1/schedules").await.body["schedules"], json!([]));
    server.stop().await;
}
