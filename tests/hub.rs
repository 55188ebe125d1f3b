//! The live fan-out hub end to end: snapshots plus events give every client the
//! true state; a resume replays exactly the missed events (from memory or from
//! redb) or says `reset`; a stalled client costs bounded memory, still gets
//! every terminal event, or is closed with 4008; bad frames get error codes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use opal_tests::{TestServer, WsClient, plugin_dir};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn server_with(dir: &std::path::Path, tweak: impl FnOnce(&mut opal_host::ServerConfig)) -> TestServer {
    let plugins = plugin_dir(dir, &["steady"]);
    TestServer::start_with(dir, |c| {
        c.plugin_dirs = vec![plugins];
        tweak(c);
    })
    .await
}

async fn start_steady(server: &TestServer, target: &str, params: Value) -> String {
    let reply = server.post("/api/v1/operations", &json!({"type": "steady", "target": target, "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

fn is_terminal(op: &Value) -> bool {
    matches!(op["status"].as_str(), Some("completed" | "failed" | "cancelled"))
}

/// A client's view: the snapshot, then every event applied in order.
async fn follow_until_all_terminal(mut ws: WsClient, ids: Vec<String>) -> HashMap<String, Value> {
    let snapshot = ws.subscribe(&["operations"]).await.remove(0);
    let mut seq = snapshot["seq"].as_u64().unwrap();
    let mut view: HashMap<String, Value> = HashMap::new();
    for op in snapshot["operations"].as_array().unwrap() {
        view.insert(op["id"].as_str().unwrap().to_owned(), op.clone());
    }
    while !ids.iter().all(|id| view.get(id).is_some_and(is_terminal)) {
        let event = ws.recv().await;
        let next = event["seq"].as_u64().unwrap();
        assert!(next > seq, "seq {next} after {seq}: a gap is fine only upward, never a repeat");
        seq = next;
        let op = &event["operation"];
        view.insert(op["id"].as_str().unwrap().to_owned(), op.clone());
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_joining_at_random_moments_end_with_the_true_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| c.progress_window = Duration::from_millis(20)).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(start_steady(&server, &format!("j{i}"), json!({"steps": 10 + 2 * i, "step_ms": 20})).await);
    }
    // Clients join at different moments of the run (its operations take 0.2 to 0.7 s).
    let url = format!("{}/api/v1/ws", server.base.replacen("http", "ws", 1));
    let clients: Vec<_> = [0u64, 35, 80, 150, 220, 310, 420, 530]
        .into_iter()
        .map(|delay| {
            let (ids, url) = (ids.clone(), url.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                follow_until_all_terminal(WsClient::connect(&url).await, ids).await
            })
        })
        .collect();
    let mut truth = BTreeMap::new();
    for id in &ids {
        server.wait_terminal(id).await;
        truth.insert(id.clone(), server.get(&format!("/api/v1/operations/{id}")).await.body);
    }
    for client in clients {
        let view = client.await.unwrap();
        for (id, op) in &truth {
            assert_eq!(view.get(id), Some(op), "a client's view of {id} differs from the server's");
        }
    }
    server.stop().await;
}

/// Reads events for `id` until its terminal event; returns their seqs.
async fn seqs_until_terminal(ws: &mut WsClient, id: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let m = ws.recv().await;
        if m["type"] != "event" {
            continue;
        }
        seqs.push(m["seq"].as_u64().unwrap());
        if m["operation"]["id"] == id && is_terminal(&m["operation"]) {
            return seqs;
        }
    }
}

async fn resume_replays_exactly_the_missed_events(ring: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| {
        c.progress_window = Duration::from_millis(10);
        c.hub.ring = ring;
    })
    .await;
    let id = start_steady(&server, "r", json!({"steps": 60, "step_ms": 15})).await;
    let topic = format!("op:{id}");

    let mut ws = server.ws().await;
    let snapshot = ws.subscribe(&[&topic]).await.remove(0);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let m = ws.recv().await;
        seen.push(m["seq"].as_u64().unwrap());
    }
    let last = *seen.last().unwrap();
    drop(ws); // a forced disconnect, mid-run
    tokio::time::sleep(Duration::from_millis(300)).await; // events happen meanwhile

    let mut ws = server.ws().await;
    ws.send(json!({"type": "subscribe", "topics": [topic], "since": last})).await;
    let mut replayed = Vec::new();
    let mut ended = false;
    let resumed = loop {
        let m = ws.recv().await;
        match m["type"].as_str() {
            Some("event") => {
                ended |= is_terminal(&m["operation"]);
                replayed.push(m["seq"].as_u64().unwrap());
            }
            Some("resumed") => break m,
            _ => panic!("unexpected {m}"),
        }
    };
    assert_eq!(resumed["since"], last);
    assert_eq!(resumed["replayed"], replayed.len());
    assert!(!replayed.is_empty(), "events happened while disconnected");
    let after = if ended { Vec::new() } else { seqs_until_terminal(&mut ws, &id).await };

    let mut received: Vec<u64> = seen.into_iter().chain(replayed).chain(after).collect();
    let stored = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    let mut expected: Vec<u64> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .filter(|s| *s > snapshot["seq"].as_u64().unwrap())
        .collect();
    let count = received.len();
    received.dedup();
    assert_eq!(received.len(), count, "no event twice");
    expected.sort();
    assert_eq!(received, expected, "exactly the stored events after the snapshot, in order");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_the_missed_events_from_memory() {
    resume_replays_exactly_the_missed_events(10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_the_missed_events_from_redb_when_memory_has_moved_on() {
    resume_replays_exactly_the_missed_events(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_beyond_the_window_gets_a_reset_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| c.hub.max_replay = 2).await;
    let id = start_steady(&server, "w", json!({"steps": 20, "step_ms": 1})).await;
    server.wait_terminal(&id).await;
    let mut ws = server.ws().await;
    ws.send(json!({"type": "subscribe", "topics": ["operations"], "since": 1})).await;
    let snapshot = ws.recv().await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["reset"], true);
    assert_eq!(snapshot["operations"][0]["id"], id.as_str());
    // A seq from the future (another server's) is a reset too.
    ws.send(json!({"type": "subscribe", "topics": ["system"], "since": 1_000_000})).await;
    assert_eq!(ws.recv().await["reset"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_names_the_history_its_seqs_belong_to() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = server_with(a.path(), |_| {}).await;
    let first = server.ws().await.hello["history"].as_str().unwrap().to_owned();
    server.stop().await;
    let server = server_with(a.path(), |_| {}).await;
    assert_eq!(server.ws().await.hello["history"], first.as_str(), "the same data file, the same history");
    server.stop().await;
    let server = server_with(b.path(), |_| {}).await;
    assert_ne!(server.ws().await.hello["history"], first.as_str(), "other data, another history");
    server.stop().await;
}

/// Connects a client whose socket takes little at a time, so a client that
/// stops reading backs the server up quickly.
async fn stalled_client(server: &TestServer) -> WsClient {
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    WsClient::over(stream, &format!("ws://{addr}/api/v1/ws")).await
}

/// Subscribes a stalled client to `operations`, then runs 20 operations that
/// publish about 25 MB of progress while it reads nothing; returns the client
/// and the operations, all ended.
async fn flood_a_stalled_client(server: &TestServer) -> (WsClient, Vec<String>) {
    let mut ws = stalled_client(server).await;
    ws.subscribe(&["operations"]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(start_steady(server, &format!("s{i}"), json!({"steps": 150, "step_ms": 2, "pad": 8000})).await);
    }
    for id in &ids {
        server.wait_terminal(id).await;
    }
    (ws, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_gets_coalesced_delivery_and_every_terminal_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| {
        c.progress_window = Duration::from_millis(1);
        c.hub.queue = 32;
        c.hub.lag_deadline = Duration::from_secs(120);
    })
    .await;
    let (mut ws, ids) = flood_a_stalled_client(&server).await;
    let mut terminal = HashMap::new();
    let mut progress = 0;
    let mut seq = 0;
    while terminal.len() < ids.len() {
        let m = ws.recv().await;
        let next = m["seq"].as_u64().unwrap();
        assert!(next > seq, "in order, once");
        seq = next;
        match m["event"].as_str().unwrap() {
            "operation.progress" => progress += 1,
            "operation.completed" => {
                terminal.insert(m["operation"]["id"].as_str().unwrap().to_owned(), m["operation"]["progress"].clone());
            }
            _ => {}
        }
    }
    assert!(terminal.values().all(|p| *p == 100), "every terminal event, with the final state");
    let mut stored_progress = 0;
    for id in &ids {
        let events = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
        stored_progress +=
            events["events"].as_array().unwrap().iter().filter(|e| e["event"] == "operation.progress").count();
    }
    assert!(progress < stored_progress, "progress was coalesced ({progress} of {stored_progress} delivered)");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stays_stalled_is_closed_with_4008_and_can_resume() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| {
        c.progress_window = Duration::from_millis(1);
        c.hub.queue = 32;
        c.hub.lag_deadline = Duration::from_millis(200);
        c.ws.send_timeout = Duration::from_millis(500);
    })
    .await;
    let (mut ws, _) = flood_a_stalled_client(&server).await;
    // Read what was buffered; the stream ends, with 4008 if the close frame got through.
    let mut last_seq = 0;
    let code = loop {
        match tokio::time::timeout(opal_tests::WAIT, ws.stream_mut().next()).await.expect("the server ends it") {
            Some(Ok(Message::Text(text))) => {
                let m: Value = serde_json::from_str(&text).unwrap();
                if let Some(seq) = m["seq"].as_u64() {
                    last_seq = seq;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    if let Some(code) = code {
        assert_eq!(code, 4008, "the documented close code");
    }
    // Resuming from where it stopped brings the client to the true state.
    let mut ws = server.ws().await;
    ws.send(json!({"type": "subscribe", "topics": ["operations"], "since": last_seq})).await;
    let first = ws.recv().await;
    assert!(matches!(first["type"].as_str(), Some("event" | "resumed" | "snapshot")), "{first}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_codes_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |_| {}).await;
    let mut good = server.ws().await;
    good.subscribe(&["operations"]).await;
    let mut bad = server.ws().await;
    bad.send_text("{not json").await;
    assert_eq!(bad.recv().await["code"], "bad_message");
    bad.send_text(&"x".repeat(70 * 1024)).await;
    assert_eq!(bad.recv().await["code"], "too_large");
    bad.send(json!({"type": "subscribe", "topics": ["target:"]})).await;
    assert_eq!(bad.recv().await["code"], "unknown_topic");
    // Persistent abuse closes the abuser, and only the abuser.
    let code = loop {
        bad.send_text("nope").await;
        match tokio::time::timeout(opal_tests::WAIT, bad.stream_mut().next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    // A frame over the transport's 1 MiB limit closes that socket with 1009.
    let mut huge = server.ws().await;
    huge.send_text(&"x".repeat(1_100_000)).await;
    let code = match tokio::time::timeout(opal_tests::WAIT, huge.stream_mut().next()).await.unwrap() {
        Some(Ok(Message::Close(frame))) => frame.map(|f| u16::from(f.code)),
        other => panic!("expected a close, got {other:?}"),
    };
    assert_eq!(code, Some(1009));
    let id = start_steady(&server, "g", json!({"steps": 1, "step_ms": 1})).await;
    let events = good.events_until_terminal(&id).await;
    assert!(!events.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_for_a_target_a_type_and_the_system() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| c.status_interval = Duration::from_millis(50)).await;
    let mut by_target = server.ws().await;
    by_target.subscribe(&["target:site-a"]).await;
    let mut by_type = server.ws().await;
    by_type.subscribe(&["type:demo"]).await;
    let mut system = server.ws().await;
    let snapshot = system.subscribe(&["system"]).await.remove(0);
    assert!(snapshot["status"].is_object() || snapshot["status"].is_null(), "{snapshot}");

    let other = start_steady(&server, "site-b", json!({"steps": 1, "step_ms": 1})).await;
    let mine = start_steady(&server, "site-a", json!({"steps": 1, "step_ms": 1})).await;
    let demo = server.start_demo("site-b", json!({"steps": 1, "step_ms": 1})).await;
    for e in by_target.events_until_terminal(&mine).await {
        assert_eq!(e["operation"]["target"], "site-a", "{e}");
        assert_ne!(e["operation"]["id"], other.as_str());
    }
    for e in by_type.events_until_terminal(&demo).await {
        assert_eq!(e["operation"]["type"], "demo", "{e}");
    }
    let status = loop {
        let m = system.recv().await;
        if m["event"] == "system.status" {
            break m;
        }
    };
    assert!(status["status"]["connected_clients"].as_u64().unwrap() >= 3, "{status}");
    assert!(status["status"]["plugins"].as_u64().unwrap() >= 2, "{status}");
    let http = server.get("/api/v1/status").await.body;
    assert_eq!(http["plugins"], status["status"]["plugins"]);
    assert!(http["uptime_seconds"].is_u64(), "{http}");
    server.stop().await;
}

#[test]
fn the_message_schemas_reject_what_the_protocol_does_not_allow() {
    opal_tests::check_server_message(&json!({"type": "hello", "protocol": 1, "seq": 0, "history": "0123456789abcdef"}));
    for bad in [
        json!({"type": "event", "seq": 1}),
        json!({"type": "hello", "protocol": 2, "seq": 0, "history": "0123456789abcdef"}),
        json!({"type": "hello", "protocol": 1, "seq": 0}),
        json!({"type": "error", "code": "whatever", "message": "x"}),
        json!({"type": "snapshot", "topic": "operations", "seq": 1, "reset": false, "operations": [{"id": "x"}]}),
    ] {
        let result = std::panic::catch_unwind(|| opal_tests::check_server_message(&bad));
        assert!(result.is_err(), "schema accepted {bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_client_gets_the_same_messages_several_to_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| c.progress_window = Duration::from_millis(10)).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(start_steady(&server, &format!("b{i}"), json!({"steps": 10, "step_ms": 10})).await);
    }
    for id in &ids {
        server.wait_terminal(id).await;
    }
    let last = server.ws().await.subscribe(&["operations"]).await.remove(0)["seq"].as_u64().unwrap();

    // A resume replays its events as one run: several to a frame for a
    // batched client (frames of at most 16 KiB), one frame per event for a
    // plain one, with the same messages.
    let resume = json!({"type": "subscribe", "topics": ["operations"], "since": 0});
    let mut batched = server.ws_batched().await;
    batched.send(resume.clone()).await;
    let mut frames = Vec::new();
    let resumed = loop {
        let messages = batched.recv_frame().await;
        if messages.len() == 1 && messages[0]["type"] == "resumed" {
            break messages.into_iter().next().unwrap();
        }
        frames.push(messages);
    };
    for messages in &frames {
        let bytes: usize = messages.iter().map(|m| m.to_string().len() + 1).sum();
        assert!(messages.len() == 1 || bytes <= 16 * 1024 + 1, "a frame of {bytes} bytes");
    }
    let (_, full) = frames.split_last().expect("at least one frame");
    assert!(full.iter().all(|f| f.len() > 10), "several events share each frame but the last");
    let frame: Vec<Value> = frames.concat();
    assert!(frame.len() > 10, "{} replayed events", frame.len());

    let mut plain = server.ws().await;
    plain.send(resume).await;
    let mut one_by_one = Vec::new();
    for _ in 0..frame.len() {
        let messages = plain.recv_frame().await;
        assert_eq!(messages.len(), 1, "without ?batch every frame is one message");
        one_by_one.extend(messages);
    }
    assert_eq!(one_by_one, frame, "the same messages, in the same order");
    assert_eq!(plain.recv().await, resumed);
    assert_eq!(frame.last().unwrap()["seq"], last, "every event up to the subscribe");

    // Live events reach both the same way.
    let id = start_steady(&server, "b-live", json!({"steps": 5, "step_ms": 10})).await;
    let live_batched = batched.events_until_terminal(&id).await;
    let live_plain = plain.events_until_terminal(&id).await;
    assert_eq!(live_batched, live_plain);

    // A bad value is refused before the upgrade, naming the parameter.
    let url = format!("{}/api/v1/ws?batch=maybe", server.base.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["errors"][0]["field"], "batch", "{body}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    server.stop().await;
}

/// Reads what is buffered until the server closes the socket: `None` if it
/// is still open after `within`, else the close code if its frame got through.
async fn closed_within(ws: &mut WsClient, within: Duration) -> Option<Option<u16>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.stream_mut().next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => return Some(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Some(None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_lag_cap_closes_the_furthest_behind_and_the_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), |c| {
        c.progress_window = Duration::from_millis(1);
        c.hub.queue = 32;
        // No connection is closed for its own lag or a stalled write: only
        // the shared cap can close one.
        c.hub.lag_deadline = Duration::from_secs(600);
        c.ws.send_timeout = Duration::from_secs(600);
        c.hub.lag_bytes = 2 << 20;
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut ws = stalled_client(&server).await;
        ws.subscribe(&["operations"]).await;
        stalled.push(ws);
    }
    let reader = server.ws().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(start_steady(&server, &format!("cap{i}"), json!({"steps": 150, "step_ms": 2, "pad": 8000})).await);
    }
    // A client that reads, joining mid-flood, sees every operation end.
    let follower = tokio::spawn(follow_until_all_terminal(reader, ids.clone()));
    for id in &ids {
        server.wait_terminal(id).await;
    }
    let seen = follower.await.unwrap();
    assert_eq!(seen.len(), ids.len());
    assert!(seen.values().all(|op| op["status"] == "completed"), "{seen:?}");
    // About 25 MB went out against a 2 MiB cap: stalled clients were closed
    // with 4008 (those whose close frame got through say so).
    let mut closed = 0;
    for ws in &mut stalled {
        if let Some(code) = closed_within(ws, Duration::from_secs(5)).await {
            assert!(code.is_none_or(|code| code == 4008), "the documented close code: {code:?}");
            closed += 1;
        }
    }
    assert!(closed > 0, "the cap closed the furthest behind");
    server.stop().await;
}

/// The next message that answers a request (events, such as `system.status`, are skipped).
async fn answer(ws: &mut WsClient) -> Value {
    loop {
        let message = ws.recv().await;
        if message["type"] != "event" {
            return message;
        }
    }
}

/// A request's `id` comes back in what answers it, so a client with several
/// subscribes in flight knows which one an error refuses.
#[tokio::test]
async fn request_ids_are_echoed_in_snapshots_resumes_pongs_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut ws = server.ws().await;
    ws.send(json!({"type": "subscribe", "topics": ["operations", "system"], "id": "sub-1"})).await;
    let first = ws.recv().await;
    let second = ws.recv().await;
    assert_eq!((first["type"].as_str(), first["id"].as_str()), (Some("snapshot"), Some("sub-1")), "{first}");
    assert_eq!(second["id"], "sub-1", "{second}");
    ws.send(json!({"type": "subscribe", "topics": ["nope:1"], "id": 7})).await;
    let error = answer(&mut ws).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str(), error["id"].as_u64()),
        (Some("error"), Some("unknown_topic"), Some(7)),
        "{error}"
    );
    ws.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(answer(&mut ws).await, json!({"type": "pong", "id": "p"}));
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(answer(&mut ws).await, json!({"type": "pong"}), "no id, none echoed");
    ws.send(json!({"type": "ping", "id": {"not": "an id"}})).await;
    let refused = answer(&mut ws).await;
    assert_eq!((refused["code"].as_str(), refused.get("id")), (Some("bad_message"), None), "{refused}");
    let seq = first["seq"].as_u64().unwrap();
    ws.send(json!({"type": "subscribe", "topics": ["type:demo"], "since": seq, "id": "resume-1"})).await;
    let resumed = answer(&mut ws).await;
    assert_eq!((resumed["type"].as_str(), resumed["id"].as_str()), (Some("resumed"), Some("resume-1")), "{resumed}");
    server.stop().await;
}
