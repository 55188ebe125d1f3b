//! The bundled `http-check` plugin end to end: compiled to wasm32-wasip2,
//! its GET going through wasi:http under a `net` grant to a real loopback
//! axum server; and a server outside the grant that is never reached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use opal_host::config::{PluginGrants, TypePolicy};
use opal_tests::{TestServer, failure_message};
use serde_json::{Value, json};

/// A loopback axum app: `/health` is ready, `/starting` is not yet, `/down`
/// answers 503, `/whoami` echoes the `x-probe` header. Returns its address
/// and how many requests it served.
async fn app() -> (SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route("/health", get(async |State(n): State<Arc<AtomicUsize>>| count(&n, (StatusCode::OK, "status: ready"))))
        .route(
            "/starting",
            get(async |State(n): State<Arc<AtomicUsize>>| count(&n, (StatusCode::OK, "status: starting"))),
        )
        .route(
            "/down",
            get(async |State(n): State<Arc<AtomicUsize>>| count(&n, (StatusCode::SERVICE_UNAVAILABLE, "down"))),
        )
        .route(
            "/whoami",
            get(async |State(n): State<Arc<AtomicUsize>>, headers: HeaderMap| {
                let probe = headers.get("x-probe").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_owned();
                count(&n, (StatusCode::OK, format!("you are {probe}")))
            }),
        )
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, served)
}

fn count<T>(served: &AtomicUsize, reply: T) -> T {
    served.fetch_add(1, Ordering::SeqCst);
    reply
}

/// A server whose `http-check` may reach `net` only.
async fn server(dir: &std::path::Path, net: &[String]) -> TestServer {
    let grants = PluginGrants { net: net.iter().map(|r| r.parse().unwrap()).collect(), ..Default::default() };
    TestServer::start_with(dir, |c| {
        c.types.insert("http-check".into(), TypePolicy { grants, ..Default::default() });
    })
    .await
}

async fn check(server: &TestServer, params: Value) -> Value {
    server.run_to_end("http-check", "app", params).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_status_and_body_of_a_granted_server() {
    let dir = tempfile::tempdir().unwrap();
    let (address, served) = app().await;
    let server = server(dir.path(), &[address.to_string()]).await;

    let url = format!("http://{address}/health");
    let op = check(&server, json!({"url": url, "body_contains": "ready"})).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert!(op["message"].as_str().unwrap().starts_with(&format!("GET {url}: 200 in ")), "{op}");
    let details = &op["details"];
    assert_eq!(details["status"], 200, "{details}");
    assert_eq!(details["body_bytes"], 13);
    assert_eq!(details["body_matched"], true);
    assert_eq!(details["expected_status"], "200-399");
    assert!(details["content_type"].as_str().unwrap().starts_with("text/plain"), "{details}");
    assert!(details["latency_ms"].is_number(), "{details}");

    // Request headers reach the server.
    let url = format!("http://{address}/whoami");
    let op = check(&server, json!({"url": url, "headers": {"x-probe": "opal"}, "body_contains": "you are opal"})).await;
    assert_eq!(op["status"], "completed", "{op}");

    // A wrong status, then a missing text: each names what was expected and what came.
    let url = format!("http://{address}/down");
    let op = check(&server, json!({"url": url})).await;
    assert_eq!(failure_message(&op), format!("GET {url}: expected status 200-399, got 503"));
    assert_eq!(op["details"]["status"], 503);
    let url = format!("http://{address}/starting");
    let op = check(&server, json!({"url": url, "body_contains": "ready"})).await;
    assert_eq!(failure_message(&op), format!("GET {url}: the body does not contain \"ready\" (all 16 bytes read)"));
    assert_eq!(op["details"]["body_matched"], false);
    assert_eq!(served.load(Ordering::SeqCst), 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outside_the_grant_is_denied_and_never_reached() {
    let dir = tempfile::tempdir().unwrap();
    let (granted, _) = app().await;
    let (outside, served) = app().await;
    let server = server(dir.path(), &[granted.to_string()]).await;
    let url = format!("http://{outside}/health");
    let op = check(&server, json!({"url": url})).await;
    assert_eq!(
        failure_message(&op),
        format!(
            "GET {url}: denied: this plugin's net grant does not allow {outside} (HTTP-request-denied; \
             the operator grants it under [types.<name>.grants] net)"
        )
    );
    assert!(op["details"]["error"].as_str().unwrap().contains("denied"), "{op}");
    assert_eq!(served.load(Ordering::SeqCst), 0, "the server outside the grant was never reached");

    // A refused connection (a port nobody listens on, but granted) reads differently.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    server.stop().await;
    let second = dir.path().join("second");
    let server = self::server(&second, &[closed.to_string()]).await;
    let url = format!("http://{closed}/");
    let op = check(&server, json!({"url": url, "timeout_ms": 2000})).await;
    assert_eq!(failure_message(&op), format!("GET {url}: connection refused by {closed}"));
    server.stop().await;
}
