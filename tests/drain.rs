//! Graceful drain of the real `opal serve`: the first SIGTERM stops new
//! starts (503 with Retry-After, `/readyz` says draining) while a running
//! operation completes, then the process exits 0 within `drain_timeout`; a
//! second SIGTERM stops it at once.

use std::time::{Duration, Instant};

use opal_tests::serve::Serve;
use serde_json::{Value, json};

async fn start(client: &reqwest::Client, base: &str, target: &str, params: Value) -> reqwest::Response {
    let body = json!({"type": "demo", "target": target, "params": params});
    client.post(format!("{base}/api/v1/operations")).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn sigterm_drains_running_operations_refuses_starts_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opal.toml");
    std::fs::write(&config, "drain_timeout_ms = 10000\nprogress_window_ms = 20\n").unwrap();
    let mut serve = Serve::start(&dir.path().join("data"), &config).await.expect("opal serve starts");
    let client = reqwest::Client::new();
    let base = serve.base.clone();
    let reply = start(&client, &base, "srv-1", json!({"steps": 30, "step_ms": 100})).await;
    assert_eq!(reply.status(), 202);
    let id = reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    loop {
        let op: Value =
            client.get(format!("{base}/api/v1/operations/{id}")).send().await.unwrap().json().await.unwrap();
        if op["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    serve.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let refused = start(&client, &base, "srv-2", json!({"steps": 1, "step_ms": 1})).await;
    assert_eq!(refused.status(), 503, "a start during the drain is refused");
    assert!(refused.headers().get("retry-after").is_some());
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("draining"), "{problem}");
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("draining"));
    let health: Value = client.get(format!("{base}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["draining"].as_bool()), (Some("ok"), Some(true)), "it still serves");

    // Reads are served meanwhile; the process exits 0 once the operation ended.
    let op: Value = client.get(format!("{base}/api/v1/operations/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(op["status"], "running", "it runs on during the drain");
    let status = serve.wait_exit(Duration::from_secs(10)).await.expect("it exits within drain_timeout");
    assert!(status.success(), "exit 0: {status:?}\n{}", serve.log());
    let drained = signalled.elapsed();
    assert!(drained >= Duration::from_secs(1), "it waited for the operation: {drained:?}");
    // The operation completed before the exit: the next start finds it so, not interrupted.
    drop(serve);
    let serve = Serve::start(&dir.path().join("data"), &config).await.expect("opal serve starts again");
    let op: Value =
        client.get(format!("{}/api/v1/operations/{id}", serve.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["attempt"], 1);
    assert!(drained < Duration::from_secs(10), "within drain_timeout: {drained:?}");
}

#[tokio::test]
async fn a_second_sigterm_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opal.toml");
    std::fs::write(&config, "drain_timeout_ms = 60000\n").unwrap();
    let mut serve = Serve::start(&dir.path().join("data"), &config).await.expect("opal serve starts");
    let client = reqwest::Client::new();
    let reply = start(&client, &serve.base, "srv-1", json!({"steps": 600, "step_ms": 100})).await;
    assert_eq!(reply.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    serve.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(serve.wait_exit(Duration::from_millis(10)).await.is_none(), "still draining");
    let signalled = Instant::now();
    serve.terminate();
    let status = serve.wait_exit(Duration::from_secs(10)).await.expect("it exits");
    assert!(status.success(), "{status:?}\n{}", serve.log());
    assert!(signalled.elapsed() < Duration::from_secs(5), "at once: {:?}", signalled.elapsed());
}
