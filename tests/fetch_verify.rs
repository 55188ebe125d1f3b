//! The bundled `fetch-verify` plugin end to end: compiled to wasm32-wasip2,
//! downloading through wasi:http from a real loopback axum server into a
//! granted read-write directory. A verified file is kept; a mismatch, a 404
//! or a cancel mid-download (a slow streaming body) leave the directory empty.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::routing::get;
use opal_host::config::{PluginGrants, TypePolicy};
use opal_host::sandbox::grants::DirGrant;
use opal_tests::TestServer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The artifact: 1 MiB of a repeating pattern.
fn artifact() -> Vec<u8> {
    (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect()
}

/// How the slow body comes: this many chunks of this size, one per 50 ms.
const SLOW_CHUNKS: usize = 400;
const SLOW_CHUNK: usize = 16 * 1024;

/// A loopback axum app: `/app.bin` is the artifact, `/slow.bin` streams
/// for 20 s; anything else is a 404.
async fn app() -> SocketAddr {
    let router = Router::new().route("/app.bin", get(async || artifact())).route(
        "/slow.bin",
        get(async || {
            let chunks = futures_util::stream::unfold(0, |i| async move {
                if i == SLOW_CHUNKS {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok::<_, std::io::Error>(vec![7u8; SLOW_CHUNK]), i + 1))
            });
            ([(header::CONTENT_LENGTH, (SLOW_CHUNKS * SLOW_CHUNK).to_string())], Body::from_stream(chunks))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// A server whose `fetch-verify` may reach `peer` and write to `out` (as
/// `/out`), with a 1 ms progress window so nearly every report is an event.
async fn server(dir: &Path, peer: SocketAddr) -> (TestServer, PathBuf) {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let grants = PluginGrants {
        dirs: vec![DirGrant { host: out.clone(), guest: "/out".into(), writable: true }],
        net: vec![peer.to_string().parse().unwrap()],
        ..Default::default()
    };
    let server = TestServer::start_with(&dir.join("data"), |c| {
        c.progress_window = Duration::from_millis(1);
        c.types.insert("fetch-verify".into(), TypePolicy { grants, ..Default::default() });
    })
    .await;
    (server, out)
}

async fn start(server: &TestServer, params: Value) -> String {
    let reply =
        server.post("/api/v1/operations", &json!({"type": "fetch-verify", "target": "srv-1", "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_with_byte_progress_and_keeps_a_verified_file() {
    let dir = tempfile::tempdir().unwrap();
    let peer = app().await;
    let (server, out) = server(dir.path(), peer).await;
    let body = artifact();
    let sha256 = hex::encode(Sha256::digest(&body));
    let id = start(&server, json!({"url": format!("http://{peer}/app.bin"), "sha256": sha256, "dir": "/out"})).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["progress"], 100);
    assert!(op["message"].as_str().unwrap().starts_with("/out/app.bin verified: 1.0 MiB, sha256 "), "{op}");
    assert_eq!(listing(&out), ["app.bin"], "the file and nothing else");
    assert_eq!(std::fs::read(out.join("app.bin")).unwrap(), body);
    let details = &op["details"];
    assert_eq!(details["bytes"], 1024 * 1024, "{details}");
    assert_eq!(details["total_bytes"], 1024 * 1024);
    assert_eq!(details["verified"], true);
    assert_eq!(details["actual_sha256"], sha256);

    let events = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    let percents: Vec<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "operation.progress" || e["event"] == "operation.completed")
        .map(|e| e["operation"]["progress"].as_u64().unwrap())
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress is monotone: {percents:?}");
    assert!(percents.iter().any(|p| (1..95).contains(p)), "the bar moved with the bytes: {percents:?}");
    assert_eq!(percents.last(), Some(&100), "the terminal event ends at 100: {percents:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatch_or_a_404_fails_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let peer = app().await;
    let (server, out) = server(dir.path(), peer).await;
    let url = format!("http://{peer}/app.bin");
    let wrong = "ab".repeat(32);
    let op = server.wait_terminal(&start(&server, json!({"url": url, "sha256": wrong, "dir": "/out"})).await).await;
    assert_eq!(op["status"], "failed", "{op}");
    let message = op["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("sha256 mismatch for {url}: expected {wrong}, got ")), "{op}");
    assert!(message.ends_with("(1048576 bytes); nothing was kept"), "{op}");
    assert_eq!(op["details"]["verified"], false);
    assert!(listing(&out).is_empty(), "no file and no temporary file: {:?}", listing(&out));

    let url = format!("http://{peer}/missing.bin");
    let op = server.wait_terminal(&start(&server, json!({"url": url, "sha256": wrong, "dir": "/out"})).await).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["message"], format!("GET {url} answered 404 (expected 200)"));
    assert!(listing(&out).is_empty(), "{:?}", listing(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_download_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let peer = app().await;
    let (server, out) = server(dir.path(), peer).await;
    let params = json!({"url": format!("http://{peer}/slow.bin"), "sha256": "00".repeat(32), "dir": "/out"});
    let id = start(&server, params).await;
    let running = server.wait_progress(&id).await;
    assert!(running["details"]["bytes"].as_u64() > Some(0), "{running}");
    let partial = listing(&out);
    assert!(partial.len() == 1 && partial[0].starts_with(".slow.bin.") && partial[0].ends_with(".part"), "{partial:?}");

    let reply = server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "cancelled", "{op}");
    assert!(op["details"]["bytes"].as_u64() < Some((SLOW_CHUNKS * SLOW_CHUNK) as u64), "it stopped early: {op}");
    assert!(listing(&out).is_empty(), "the partial file is gone: {:?}", listing(&out));
    server.stop().await;
}
