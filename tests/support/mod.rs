//! Shared helpers for the end-to-end tests: a real server on `127.0.0.1:0`
//! with a real redb file in a temp directory and the bundled plugins (built
//! for wasm32-wasip2 by opal-host's build script), real HTTP and WebSocket
//! clients, and bounded waits that fail with a message instead of hanging.

pub mod cluster;
pub mod serve;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opal_host::{RunningServer, ServerConfig};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// The most resident memory a hostile-suite test process (servers included)
/// may hold after its floods and faults, in MiB. It covers the wasm runtime,
/// redb's page cache and the ordinary runs; what the plugins flooded the
/// host with must not stay (docs/operations.md, "Grants", explains the bound).
pub const RSS_BOUND_MIB: u64 = 256;

/// This process's resident memory (`VmRSS`), in MiB.
pub fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024
}

/// A static API token for a test config: `name` holds the secret `token`,
/// with `role`, on the targets matching `targets` (every target if empty).
pub fn api_token(name: &str, token: &str, role: opal_host::auth::Role, targets: &[&str]) -> opal_host::auth::ApiToken {
    use opal_host::auth::{ApiToken, Scope, TokenHash};
    let scope = if targets.is_empty() { Scope::All } else { Scope::from_patterns(targets).unwrap() };
    ApiToken { name: name.into(), hash: TokenHash::of(token), role, scope }
}

/// Counts the panics of every thread of this process from now on (each is
/// still reported as usual); read the count to assert there were none.
pub fn count_panics() -> &'static std::sync::atomic::AtomicUsize {
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static HOOKED: std::sync::Once = std::sync::Once::new();
    HOOKED.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            default_hook(info);
        }));
    });
    &PANICS
}

/// A running server and the temp directory that holds its data.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The data directory.
    pub data_dir: PathBuf,
    server: Option<RunningServer>,
    http: reqwest::Client,
}

/// An HTTP response: status and JSON body (`Null` if the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Location` header, if any.
    pub location: Option<String>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The parsed body.
    pub body: Value,
}

impl TestServer {
    /// Starts a server on a fresh data directory inside `dir`.
    pub async fn start(dir: &Path) -> TestServer {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts a server with the test defaults changed by `tweak`.
    pub async fn start_with(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            // One compiled-plugin cache for every test server: each bundled
            // plugin is compiled once per build, not once per test.
            cache_dir: Some(PathBuf::from(concat!(env!("OUT_DIR"), "/plugin-cache"))),
            max_instances: 32,
            // What 32 instances hold beside the validations' share.
            max_concurrent: 16,
            ..ServerConfig::default()
        };
        tweak(&mut config);
        if config.store_url.is_none()
            && let Some(url) = cluster::store_for(&config.data_dir).await
        {
            config.store_url = Some(url);
        }
        let data_dir = config.data_dir.clone();
        let server = opal_host::start(config).await.expect("server starts");
        TestServer {
            base: format!("http://{}", server.addr),
            data_dir,
            server: Some(server),
            http: reqwest::Client::new(),
        }
    }

    /// Shuts the server down cleanly and waits until its data file is closed.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        reply(self.http.get(format!("{}{path}", self.base)).send().await.expect("GET")).await
    }

    /// `POST path` with a raw body.
    pub async fn post_raw(&self, path: &str, body: &str) -> Reply {
        let request = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        reply(request.body(body.to_owned()).send().await.expect("POST")).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, &body.to_string()).await
    }

    /// `DELETE path`; returns the status.
    pub async fn http_delete(&self, path: &str) -> u16 {
        self.http.delete(format!("{}{path}", self.base)).send().await.expect("DELETE").status().as_u16()
    }

    /// Starts a demo operation and returns its id (asserting the 202).
    pub async fn start_demo(&self, target: &str, params: Value) -> String {
        let reply = self.post("/api/v1/operations", &json!({"type": "demo", "target": target, "params": params})).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// Polls `GET /operations/{id}` until it is terminal (bounded by [`WAIT`]).
    pub async fn wait_terminal(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let op = self.get(&format!("/api/v1/operations/{id}")).await.body;
            if matches!(op["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return op;
            }
            assert!(tokio::time::Instant::now() < deadline, "operation {id} did not end: {op}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET /operations/{id}` as the holder of `token` until it is terminal (bounded by [`WAIT`]).
    pub async fn wait_terminal_as(&self, id: &str, token: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let op = self.request_as("GET", &format!("/api/v1/operations/{id}"), Some(token), None).await.body;
            if matches!(op["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return op;
            }
            assert!(tokio::time::Instant::now() < deadline, "operation {id} did not end: {op}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until operation `id` runs and has reported progress (bounded by [`WAIT`]).
    pub async fn wait_progress(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let op = self.get(&format!("/api/v1/operations/{id}")).await.body;
            if op["status"] == "running" && op["progress"].as_u64() > Some(0) {
                return op;
            }
            assert!(tokio::time::Instant::now() < deadline, "operation {id} never made progress: {op}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts an operation (which must be accepted) and returns it once it
    /// has ended.
    pub async fn run_to_end(&self, op_type: &str, target: &str, params: Value) -> Value {
        let body = json!({"type": op_type, "target": target, "params": params});
        let reply = self.post("/api/v1/operations", &body).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        self.wait_terminal(reply.body["id"].as_str().unwrap()).await
    }

    /// Opens a WebSocket and reads its `hello`.
    pub async fn ws(&self) -> WsClient {
        WsClient::connect(&format!("{}/api/v1/ws", self.base.replacen("http", "ws", 1))).await
    }

    /// `METHOD path` as the holder of `token` (no `Authorization` header if `None`).
    pub async fn request_as(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        reply(request.send().await.expect("HTTP request")).await
    }

    /// The `ws://` URL of the socket endpoint.
    pub fn ws_url(&self) -> String {
        format!("{}/api/v1/ws", self.base.replacen("http", "ws", 1))
    }

    /// Opens a WebSocket with `Authorization: Bearer <token>` and reads its `hello`.
    pub async fn ws_as(&self, token: &str) -> WsClient {
        let stream = ws_open(&self.ws_url(), &[("authorization", &format!("Bearer {token}"))])
            .await
            .unwrap_or_else(|status| panic!("websocket refused with {status}"));
        WsClient::greeted(stream).await
    }

    /// Opens a WebSocket without a header, authenticates with an `auth`
    /// message, and reads its `hello`.
    pub async fn ws_auth_message(&self, token: &str) -> WsClient {
        let mut stream = ws_open(&self.ws_url(), &[]).await.unwrap_or_else(|status| panic!("refused with {status}"));
        let auth = json!({"type": "auth", "token": token}).to_string();
        stream.send(Message::Text(auth.into())).await.expect("ws send");
        WsClient::greeted(stream).await
    }

    /// A WebSocket client connected with `?batch=true`, after its `hello`.
    pub async fn ws_batched(&self) -> WsClient {
        let mut client =
            WsClient::connect(&format!("{}/api/v1/ws?batch=true", self.base.replacen("http", "ws", 1))).await;
        client.batched = true;
        client
    }
}

/// Opens a WebSocket to `url` with extra request `headers`; `Err` holds the
/// HTTP status of a refused upgrade.
pub async fn ws_open(url: &str, headers: &[(&str, &str)]) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a websocket URL");
    for (name, value) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        request.headers_mut().insert(name, value.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => Ok(stream),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// Reads `stream` until the server closes it; returns the close code (bounded by [`WAIT`]).
pub async fn close_code(stream: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await.expect("the server closes the socket within the wait") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (location, content_type) = (header("location"), header("content-type").unwrap_or_default());
    let retry_after = header("retry-after");
    let text = response.text().await.unwrap_or_default();
    Reply { status, location, retry_after, content_type, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
}

/// The error message of an operation that must have failed.
pub fn failure_message(op: &Value) -> &str {
    assert_eq!(op["status"], "failed", "{op}");
    op["error"]["message"].as_str().unwrap()
}

/// A real WebSocket client speaking Opal's protocol.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Connected with `?batch=true`: a frame may carry several messages.
    batched: bool,
    /// Messages of the last frame not yet returned by `recv`.
    pending: VecDeque<Value>,
    /// The server's `hello`.
    pub hello: Value,
}

impl WsClient {
    /// Connects to `url` and reads the `hello`.
    pub async fn connect(url: &str) -> WsClient {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        WsClient::greeted(stream).await
    }

    /// Speaks WebSocket over an already connected TCP stream (e.g. one with
    /// small buffers) and reads the `hello`.
    pub async fn over(tcp: TcpStream, url: &str) -> WsClient {
        let (stream, _) =
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await.expect("websocket handshake");
        WsClient::greeted(stream).await
    }

    /// Speaks Opal's protocol on an open stream: reads the `hello`.
    pub async fn greeted(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> WsClient {
        let batched = false;
        let mut client = WsClient { stream, batched, pending: VecDeque::new(), hello: Value::Null };
        let hello = client.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["protocol"], 1, "{hello}");
        client.hello = hello;
        client
    }

    /// The raw stream, for tests that read close frames.
    pub fn stream_mut(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.stream
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) {
        self.stream.send(Message::Text(message.to_string().into())).await.expect("ws send");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.into())).await.expect("ws send");
    }

    /// The next JSON message (bounded by [`WAIT`]), checked against
    /// `docs/schemas/ws-server.json`.
    pub async fn recv(&mut self) -> Value {
        if let Some(message) = self.pending.pop_front() {
            return message;
        }
        let mut frame = self.recv_frame().await.into_iter();
        let first = frame.next().expect("a frame holds at least one message");
        self.pending.extend(frame);
        first
    }

    /// Every message of the next text frame: exactly one unless the client
    /// connected with `?batch=true`, where messages are one per line.
    pub async fn recv_frame(&mut self) -> Vec<Value> {
        assert!(self.pending.is_empty(), "messages of the last frame are unread");
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a websocket message within the wait")
                .expect("the socket is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => {
                    let lines: Vec<&str> = text.split('\n').collect();
                    assert!(self.batched || lines.len() == 1, "several messages in one frame without ?batch: {text}");
                    return lines
                        .into_iter()
                        .map(|line| {
                            let message = serde_json::from_str(line).expect("one JSON message per line");
                            check_server_message(&message);
                            message
                        })
                        .collect();
                }
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Subscribes to `topics` and returns their snapshots, in order.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Vec<Value> {
        self.send(json!({"type": "subscribe", "topics": topics})).await;
        let mut snapshots = Vec::new();
        for topic in topics {
            let snapshot = self.recv().await;
            assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
            assert_eq!(snapshot["topic"], *topic, "{snapshot}");
            snapshots.push(snapshot);
        }
        snapshots
    }

    /// Reads events until `id` reaches a terminal event; returns all events
    /// read (of every operation), in arrival order.
    pub async fn events_until_terminal(&mut self, id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let message = self.recv().await;
            assert_eq!(message["type"], "event", "{message}");
            let terminal = message["operation"]["id"] == id
                && matches!(
                    message["event"].as_str(),
                    Some("operation.completed" | "operation.failed" | "operation.cancelled")
                );
            events.push(message);
            if terminal {
                return events;
            }
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/test_plugins.rs"));

/// Copies the test-only plugins `names` into a fresh directory inside `dir`,
/// for a server's `plugin_dirs`; returns that directory.
pub fn plugin_dir(dir: &Path, names: &[&str]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in names {
        let (_, path) = TEST_PLUGINS.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no test plugin {name}"));
        std::fs::copy(path, plugins.join(format!("{name}.wasm"))).unwrap();
    }
    plugins
}

/// Checks a server message against `docs/schemas/ws-server.json`, so the
/// documented schemas cannot drift from what the server sends.
pub fn check_server_message(message: &Value) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas");
        let load = |name: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(docs.join(name)).unwrap()).expect("schema is JSON")
        };
        let registry: &'static jsonschema::Registry<'static> = Box::leak(Box::new(
            jsonschema::Registry::new()
                .add("https://opal.dev/schemas/operation.json", load("operation.json"))
                .expect("operation schema")
                .prepare()
                .expect("registry"),
        ));
        jsonschema::options().with_registry(registry).build(&load("ws-server.json")).expect("ws-server schema compiles")
    });
    let errors: Vec<String> =
        validator.iter_errors(message).map(|e| format!("{} at {}", e, e.instance_path().as_str())).collect();
    assert!(errors.is_empty(), "server message breaks docs/schemas/ws-server.json: {errors:?}\n{message}");
}
