//! The bundled `ssh-check` plugin end to end: compiled to wasm32-wasip2,
//! run by a real server under a `net` grant, against real loopback peers (a
//! server that speaks the SSH banner, a closed port, a silent port) and a
//! peer the grant does not cover.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opal_host::config::{PluginGrants, TypePolicy};
use opal_tests::{TestServer, failure_message};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback peer: answers each connection with `greeting` (nothing if
/// empty), then holds it until the client closes. Returns its address and
/// how many connections it accepted.
async fn peer(greeting: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok(Ok((mut socket, _))) = tokio::time::timeout(Duration::from_secs(60), listener.accept()).await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = socket.write_all(greeting.as_bytes()).await;
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(60), socket.read_to_end(&mut sink)).await;
            });
        }
    });
    (address, accepted)
}

/// A server whose `ssh-check` may connect to `net` only.
async fn server(dir: &std::path::Path, net: &[String]) -> TestServer {
    let grants = PluginGrants { net: net.iter().map(|r| r.parse().unwrap()).collect(), ..Default::default() };
    TestServer::start_with(dir, |c| {
        c.types.insert("ssh-check".into(), TypePolicy { grants, ..Default::default() });
    })
    .await
}

/// Runs an ssh-check of `address` and returns the ended operation.
async fn check(server: &TestServer, address: SocketAddr, timeout_ms: u64) -> Value {
    let params = json!({"host": address.ip().to_string(), "port": address.port(), "timeout_ms": timeout_ms});
    server.run_to_end("ssh-check", "conn-1", params).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_the_banner_of_a_granted_server() {
    let dir = tempfile::tempdir().unwrap();
    let (address, accepted) = peer("Authorised use only\r\nSSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n").await;
    let server = server(dir.path(), &[address.to_string()]).await;
    let op = check(&server, address, 5000).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert!(op["message"].as_str().unwrap().starts_with(&format!("OpenSSH_9.6p1 (SSH 2.0) answers on {address}")));
    let details = &op["details"];
    assert_eq!(details["software_version"], "OpenSSH_9.6p1", "{details}");
    assert_eq!(details["protocol_version"], "2.0");
    assert_eq!(details["comments"], "Ubuntu-3ubuntu13");
    assert_eq!(details["address"], address.to_string());
    assert!(details["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{details}");
    assert!(details["banner_ms"].as_f64().is_some(), "{details}");
    assert_eq!(op["progress"], 100);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_as_refused() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // bound, then closed
    let server = server(dir.path(), &[closed.to_string()]).await;
    let op = check(&server, closed, 5000).await;
    assert_eq!(failure_message(&op), format!("connection refused by {closed}: nothing listens there"));
    assert_eq!(op["details"]["stage"], "connect", "{op}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_port_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (address, accepted) = peer("").await;
    let server = server(dir.path(), &[address.to_string()]).await;
    let op = check(&server, address, 700).await;
    assert_eq!(
        failure_message(&op),
        format!("{address} accepted the connection but sent no SSH identification within 700ms")
    );
    assert_eq!(op["details"]["stage"], "banner", "{op}");
    assert!(op["details"]["latency_ms"].is_number(), "it connected: {op}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outside_the_grant_is_denied_and_never_reached() {
    let dir = tempfile::tempdir().unwrap();
    let (granted, _) = peer("SSH-2.0-granted\r\n").await;
    let (outside, accepted) = peer("SSH-2.0-you-should-not-see-this\r\n").await;
    let server = server(dir.path(), &[granted.to_string()]).await;
    let op = check(&server, outside, 5000).await;
    let message = failure_message(&op);
    assert!(
        message.starts_with(&format!("connecting to {outside} was denied: this plugin's net grant does not allow it")),
        "{op}"
    );
    assert_eq!(op["details"]["stage"], "connect", "{op}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the peer outside the grant was never reached");
    server.stop().await;
}
