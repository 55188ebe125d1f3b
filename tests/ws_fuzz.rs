//! The WebSocket under fuzz: many clients send random and malformed frames
//! (random text and bytes, broken and mistyped JSON, deep nesting, huge
//! topic lists, oversized messages and frames, bad seqs, binary, abrupt
//! disconnects) while an honest client follows a run of operations. The
//! server must not panic, must answer every bad message with a documented
//! `error` (or close with a documented code), must keep the honest client's
//! stream exact, must end up holding no connection it does not need, and must
//! stay within a memory bound. The first run is in dev mode; the second has
//! credentials, so the fuzzing also reaches the path before authentication:
//! random first messages, silence, a late `auth`, and more waiting sockets
//! than the server lets wait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opal_tests::{TestServer, WAIT, check_server_message, ws_open};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Fuzzing clients, and frames each one sends.
const CLIENTS: usize = 32;
const FRAMES: usize = 400;

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn text(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from_u32(self.below(0x3000) as u32).unwrap_or('\u{fffd}')).collect()
    }
}

/// The two runs measure the process's memory, so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seqs to resume from: beyond the server's, the start, the first.
const SEQS: [u64; 3] = [u64::MAX, 0, 1];

/// One frame a hostile or careless client might send.
fn frame(rng: &mut Rng) -> Message {
    let topics =
        ["operations", "system", "type:demo", "target:x", "op:01ARZ3NDEKTSV4RRFFQ69G5FAV", "bogus", "op:nope", ""];
    let topic = |rng: &mut Rng| Value::String(topics[rng.below(topics.len())].to_owned());
    let text = match rng.below(16) {
        0 => {
            let len = rng.below(200);
            rng.text(len)
        }
        1 => return Message::Binary((0..rng.below(300)).map(|_| rng.next() as u8).collect::<Vec<u8>>().into()),
        2 => {
            let valid = json!({"type": "subscribe", "topics": [topic(rng)]}).to_string();
            let cut = rng.below(valid.len());
            valid[..cut].to_owned()
        }
        3 => json!({"type": "subscribe", "topics": rng.next()}).to_string(),
        4 => json!({"type": "subscribe", "topics": (0..150).map(|i| format!("target:t{i}")).collect::<Vec<_>>()})
            .to_string(),
        5 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
        6 => json!({"type": "ping", "pad": "x".repeat(70 * 1024)}).to_string(),
        7 => json!({"type": "subscribe", "topics": [topic(rng)], "since": SEQS[rng.below(3)]}).to_string(),
        8 => format!(
            r#"{{"type":"subscribe","topics":["operations"],"since":{}}}"#,
            ["-1", "1.5", "1e400", "\"7\"", "null"][rng.below(5)]
        ),
        9 => json!({"type": "unsubscribe", "topics": [topic(rng), topic(rng)]}).to_string(),
        10 => json!({"type": "auth", "token": rng.text(20)}).to_string(),
        11 => json!({"type": rng.text(8)}).to_string(),
        12 => json!({"type": "subscribe", "topics": [topic(rng)], "extra": true}).to_string(),
        13 => "\u{0000}\u{ffff}{\"type\":\"ping\"}".to_owned(),
        14 => return Message::Ping(vec![1, 2, 3].into()),
        _ => json!({"type": "ping"}).to_string(),
    };
    Message::Text(text.into())
}

/// How one fuzzing connection ended.
#[derive(Debug, Default)]
struct Tally {
    errors: usize,
    closes: Vec<Option<u16>>,
}

/// One fuzzing client: connects, sends its frames (reconnecting when the
/// server closes it), and checks every message the server sends back.
async fn fuzz(url: String, seed: u64, headers: Vec<(String, String)>) -> Tally {
    let mut rng = Rng(seed | 1);
    let mut tally = Tally::default();
    let mut sent = 0;
    while sent < FRAMES {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let (mut sink, mut stream) =
            ws_open(&url, &headers).await.expect("the server accepts a fuzzing client").split();
        let reader = tokio::spawn(async move {
            let mut errors = 0;
            loop {
                match tokio::time::timeout(WAIT, stream.next()).await.expect("the server answers or closes in time") {
                    Some(Ok(Message::Text(text))) => {
                        let message: Value = serde_json::from_str(&text).expect("the server sends JSON");
                        check_server_message(&message);
                        errors += usize::from(message["type"] == "error");
                    }
                    Some(Ok(Message::Close(frame))) => return (errors, frame.map(|f| u16::from(f.code))),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return (errors, None),
                }
            }
        });
        // A few connections end abruptly, mid-conversation, or with a frame over the 1 MiB limit.
        let abrupt = rng.below(10) == 0;
        let oversized = rng.below(20) == 0;
        while sent < FRAMES {
            sent += 1;
            let message = if oversized { Message::Text("x".repeat(1_100_000).into()) } else { frame(&mut rng) };
            if sink.send(message).await.is_err() || oversized || (abrupt && rng.below(10) == 0) {
                break;
            }
        }
        if abrupt {
            drop(sink);
            reader.abort();
            continue;
        }
        let _ = sink.send(Message::Close(None)).await;
        let (errors, close) = reader.await.expect("the reader ends");
        tally.errors += errors;
        tally.closes.push(close);
    }
    tally
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_malformed_frames_from_many_clients() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let panics = opal_tests::count_panics();
    let panics_before = panics.load(Ordering::SeqCst);

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut honest = server.ws().await;
    honest.subscribe(&["operations"]).await;
    // Warm up (plugins compiled, buffers allocated) before the memory baseline.
    let warm = server.start_demo("warm", json!({"steps": 2, "step_ms": 1})).await;
    honest.events_until_terminal(&warm).await;
    let baseline = resident_kib();

    let url = server.ws_url();
    let fuzzers: Vec<_> =
        (0..CLIENTS).map(|i| tokio::spawn(fuzz(url.clone(), 0x9e37_79b9_7f4a_7c15 ^ i as u64, Vec::new()))).collect();
    // Meanwhile the honest client follows operations, seq by seq.
    let mut last_seq = 0;
    for round in 0..4 {
        let id = server.start_demo(&format!("honest-{round}"), json!({"steps": 5, "step_ms": 20})).await;
        let events = honest.events_until_terminal(&id).await;
        for event in &events {
            let seq = event["seq"].as_u64().expect("operation events carry a seq");
            assert!(seq > last_seq, "seqs increase: {seq} after {last_seq}");
            last_seq = seq;
        }
        let mine: Vec<&str> =
            events.iter().filter(|e| e["operation"]["id"] == id.as_str()).filter_map(|e| e["event"].as_str()).collect();
        assert_eq!(mine.first(), Some(&"operation.created"), "{mine:?}");
        assert_eq!(mine.last(), Some(&"operation.completed"), "{mine:?}");
    }
    let mut tally = Tally::default();
    for fuzzer in fuzzers {
        let t = tokio::time::timeout(WAIT * 2, fuzzer).await.expect("fuzzers finish").expect("no fuzzer panicked");
        tally.errors += t.errors;
        tally.closes.extend(t.closes);
    }
    println!("{} error replies; closes: {:?}", tally.errors, tally.closes);
    assert!(tally.errors > CLIENTS, "bad messages were answered with errors: {tally:?}");
    for close in &tally.closes {
        assert!(matches!(close, None | Some(1000 | 1008 | 1009)), "only documented close codes: {tally:?}");
    }

    // The honest client is still served, and a new one is too.
    honest.send(json!({"type": "ping"})).await;
    assert_eq!(honest.recv().await["type"], "pong");
    let mut fresh = server.ws().await;
    fresh.subscribe(&["operations"]).await;
    // Every fuzzing connection is gone from the hub: only the honest and the fresh one remain.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clients = server.get("/api/v1/status").await.body["connected_clients"].as_u64();
        if clients == Some(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "connections leaked: {clients:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = resident_kib().saturating_sub(baseline);
    println!("resident memory grew by {grown} KiB");
    assert!(grown < 128 * 1024, "memory grew by {grown} KiB over {CLIENTS} x {FRAMES} frames");
    assert_eq!(panics.load(Ordering::SeqCst), panics_before, "nothing panicked");
    server.stop().await;
}

const FUZZ_TOKEN: &str = "opal_fuzz_token_for_the_ws_fuzz_test_00000000";
const HONEST_TOKEN: &str = "opal_honest_token_for_the_ws_fuzz_test_000000";
/// How long a socket without a header has to authenticate, in the run with credentials.
const AUTH_TIMEOUT: Duration = Duration::from_millis(1500);
/// Clients that never authenticate properly, and connections each one makes.
const UNAUTHENTICATED: usize = 16;
const ATTEMPTS: usize = 12;

fn credentials(config: &mut opal_host::ServerConfig) {
    use opal_host::auth::{AuthConfig, Role};
    let token = |name: &str, token: &str| opal_tests::api_token(name, token, Role::Operator, &["**"]);
    config.auth = AuthConfig {
        tokens: vec![token("fuzz", FUZZ_TOKEN), token("honest", HONEST_TOKEN)],
        ws_auth_timeout: AUTH_TIMEOUT,
        ..AuthConfig::dev()
    };
}

/// How a socket that is not authenticated by header ends: the messages it was
/// sent before the close (there must be none) and the close code.
async fn unauthenticated_end(
    stream: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> (usize, Option<u16>) {
    let mut sent = 0;
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await.expect("the server closes an unauthenticated socket") {
            Some(Ok(Message::Close(frame))) => return (sent, frame.map(|f| u16::from(f.code))),
            Some(Ok(Message::Text(_) | Message::Binary(_))) => sent += 1,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (sent, None),
        }
    }
}

/// One client that never gets in: each connection sends a random first
/// message, nothing at all, or a valid `auth` too late. Each must be closed
/// with 4401 (or 4429 while 256 sockets wait already), having been sent nothing.
async fn fuzz_unauthenticated(url: String, seed: u64) -> Vec<Option<u16>> {
    let mut rng = Rng(seed | 1);
    let mut closes = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut stream = ws_open(&url, &[]).await.expect("the upgrade needs no credentials");
        match rng.below(4) {
            0 | 1 => {
                let first = frame(&mut rng);
                let _ = stream.send(first).await;
            }
            2 => {} // silence
            _ => {
                tokio::time::sleep(AUTH_TIMEOUT + Duration::from_millis(200)).await;
                let late = json!({"type": "auth", "token": FUZZ_TOKEN}).to_string();
                let _ = stream.send(Message::Text(late.into())).await;
            }
        }
        let (sent, close) = unauthenticated_end(&mut stream).await;
        assert_eq!(sent, 0, "an unauthenticated socket is sent nothing");
        closes.push(close);
    }
    closes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_auth_path_under_fuzz_with_credentials() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let panics = opal_tests::count_panics();
    let panics_before = panics.load(Ordering::SeqCst);

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), credentials).await;
    let start = |target: String| {
        let server = &server;
        async move {
            let body = json!({"type": "demo", "target": target, "params": {"steps": 5, "step_ms": 20}});
            let reply = server.request_as("POST", "/api/v1/operations", Some(HONEST_TOKEN), Some(&body)).await;
            assert_eq!(reply.status, 202, "{reply:?}");
            reply.body["id"].as_str().unwrap().to_owned()
        }
    };
    // The honest client authenticates with its first message, as a browser does.
    let mut honest = server.ws_auth_message(HONEST_TOKEN).await;
    honest.subscribe(&["operations"]).await;
    let warm = start("warm".into()).await;
    honest.events_until_terminal(&warm).await;
    let baseline = resident_kib();

    // 256 sockets may wait for their auth message at once; the next is closed with 4429 at once.
    let url = server.ws_url();
    let mut waiting = Vec::new();
    for _ in 0..opal_host::auth::MAX_UNAUTHENTICATED {
        waiting.push(ws_open(&url, &[]).await.expect("upgraded"));
    }
    let mut refused = None;
    for _ in 0..64 {
        let mut extra = ws_open(&url, &[]).await.expect("upgraded");
        let ended = tokio::time::timeout(AUTH_TIMEOUT / 3, unauthenticated_end(&mut extra)).await;
        if let Ok((0, Some(code))) = ended {
            refused = Some(code);
            break;
        }
    }
    assert_eq!(refused, Some(opal_host::ws::CLOSE_TOO_MANY_CONNECTIONS), "the 257th waiting socket");
    for mut socket in waiting {
        let (sent, close) = unauthenticated_end(&mut socket).await;
        assert_eq!((sent, close), (0, Some(opal_host::ws::CLOSE_UNAUTHENTICATED)), "silent sockets time out");
    }

    // Unauthenticated and authenticated fuzzers together, while the honest client follows operations.
    let unauthenticated: Vec<_> = (0..UNAUTHENTICATED)
        .map(|i| tokio::spawn(fuzz_unauthenticated(url.clone(), 0x51_7cc1_b727_220a ^ i as u64)))
        .collect();
    let bearer = format!("Bearer {FUZZ_TOKEN}");
    let authenticated: Vec<_> = (0..CLIENTS / 4)
        .map(|i| {
            tokio::spawn(fuzz(url.clone(), 0x2545_f491 ^ i as u64, vec![("authorization".into(), bearer.clone())]))
        })
        .collect();
    for round in 0..4 {
        let id = start(format!("honest-{round}")).await;
        let received: Vec<(u64, String)> = honest
            .events_until_terminal(&id)
            .await
            .iter()
            .filter(|e| e["operation"]["id"] == id.as_str() && e["event"] != "operation.progress")
            .map(|e| (e["seq"].as_u64().unwrap(), e["event"].as_str().unwrap().to_owned()))
            .collect();
        let events = format!("/api/v1/operations/{id}/events");
        let stored: Vec<(u64, String)> =
            server.request_as("GET", &events, Some(HONEST_TOKEN), None).await.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| !matches!(e["event"].as_str(), Some("operation.progress" | "operation.log")))
                .map(|e| (e["seq"].as_u64().unwrap(), e["event"].as_str().unwrap().to_owned()))
                .collect();
        assert_eq!(received, stored, "the honest client's lifecycle events of {id} are the stored ones");
        assert_eq!(stored.first().map(|e| e.1.as_str()), Some("operation.created"));
    }
    let mut closes = Vec::new();
    for fuzzer in unauthenticated {
        closes.extend(tokio::time::timeout(WAIT * 2, fuzzer).await.expect("fuzzers finish").expect("no panic"));
    }
    let documented = [opal_host::ws::CLOSE_UNAUTHENTICATED, opal_host::ws::CLOSE_TOO_MANY_CONNECTIONS];
    assert!(closes.iter().all(|c| c.is_some_and(|c| documented.contains(&c))), "4401 or 4429 only: {closes:?}");
    assert!(closes.contains(&Some(opal_host::ws::CLOSE_UNAUTHENTICATED)), "{closes:?}");
    let mut tally = Tally::default();
    for fuzzer in authenticated {
        let t = tokio::time::timeout(WAIT * 2, fuzzer).await.expect("fuzzers finish").expect("no panic");
        tally.errors += t.errors;
        tally.closes.extend(t.closes);
    }
    let timed_out = closes.iter().filter(|c| **c == Some(opal_host::ws::CLOSE_UNAUTHENTICATED)).count();
    println!("unauthenticated: {} closes, {timed_out} with 4401; authenticated: {tally:?}", closes.len());
    for close in &tally.closes {
        assert!(matches!(close, None | Some(1000 | 1008 | 1009)), "only documented close codes: {tally:?}");
    }

    // The honest client is still served; every fuzzing connection is gone.
    honest.send(json!({"type": "ping"})).await;
    assert_eq!(honest.recv().await["type"], "pong");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = server.request_as("GET", "/api/v1/status", Some(HONEST_TOKEN), None).await;
        if status.body["connected_clients"].as_u64() == Some(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "connections leaked: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = resident_kib().saturating_sub(baseline);
    println!("resident memory grew by {grown} KiB");
    assert!(grown < 128 * 1024, "memory grew by {grown} KiB");
    assert_eq!(panics.load(Ordering::SeqCst), panics_before, "nothing panicked");
    server.stop().await;
}
