//! The fan-out benchmark: `cargo bench -p opal-host --bench fanout [-- --clients 1000 ...]`.
//!
//! It starts `opal serve` (release build) as a child process, connects C
//! WebSocket clients subscribed to `operations`, starts O demo operations of P
//! progress steps each over HTTP, and reports:
//! - lost terminal events (every client must see every operation end);
//! - terminal-event delivery latency (client receipt minus the event's commit
//!   timestamp `at`), p50 / p99 / max;
//! - events delivered per second, across all clients, and the WebSocket
//!   frames that carried them (clients connect with `?batch=true`, so one
//!   frame may carry several events);
//! - the mean size of an event as delivered, in bytes;
//! - server CPU-seconds used for the run, and events delivered per CPU-second;
//! - the server's peak RSS;
//! - how long the operations took to run, against the `steps x step_ms` their
//!   plugin sleeps (delivery work must not slow the operations down);
//! - idle memory per connection: the server's RSS growth for N idle sockets.
//!
//! `--server socketio` runs the same job against a socket.io server doing it
//! the way the seeds do (`host/benches/socketio/server.js`; install it first
//! with `npm ci --prefix host/benches/socketio`), for the comparison of events
//! per CPU-second. The clients speak just enough of the socket.io protocol.
//!
//! `--store postgres://… --nodes 3` runs three Opal nodes of a cluster on
//! that (existing, empty or reused) database instead of one on redb: the
//! clients and the starts are spread over the nodes round robin, every client
//! must still see every operation end, and CPU is summed over the nodes.
//!
//! Everything runs on loopback, bounded in count and time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::{percentile, proc_status_kib, process_cpu_seconds, raise_fd_limit};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// What a received text frame is, for either server.
enum Frame<'a> {
    /// Subscribed: Opal's snapshot, socket.io's `hello`.
    Ready,
    /// An operation event; if terminal, the event after its name.
    Event { terminal: Option<&'a str> },
    /// An engine.io ping, to be answered with "3".
    Ping,
    /// Anything else (socket.io's open and connect packets).
    Other,
}

/// Classifies a message from its first bytes only.
fn split(text: &str) -> Frame<'_> {
    if text == "2" {
        Frame::Ping
    } else if text.starts_with(r#"{"type":"snapshot""#) || text.starts_with(r#"42["hello""#) {
        Frame::Ready
    } else if text.starts_with(r#"{"type":"event""#) || text.starts_with(r#"42["event""#) {
        Frame::Event { terminal: terminal_rest(&text[payload_start(text)..]) }
    } else {
        Frame::Other
    }
}

/// Whether an event object (`{"type":"event","seq":N,"event":"…"`) is
/// terminal; if it is, the event after its name.
fn terminal_rest(event: &str) -> Option<&str> {
    const PREFIX: &str = r#"{"type":"event","seq":"#;
    let rest = event.get(PREFIX.len()..)?.trim_start_matches(|c: char| c.is_ascii_digit());
    let name = rest.strip_prefix(r#","event":"operation."#)?;
    ["completed\"", "failed\"", "cancelled\""].iter().find_map(|end| name.strip_prefix(end))
}

/// Where the JSON event object starts: at once for Opal, after `42["event",` for socket.io.
fn payload_start(text: &str) -> usize {
    if text.starts_with("42[") { text.find(',').map_or(0, |i| i + 1) } else { 0 }
}

/// The `at` timestamp and the operation id of a terminal event, given the
/// event after its name ([`terminal_rest`]). Opal writes
/// `"at":"…","operation":{"id":"…"` right after the name, so both are read
/// there without a search; otherwise (socket.io) they are searched for: both
/// servers write them in that order.
fn terminal_fields(rest: &str) -> (&str, &str) {
    let fixed = || {
        let (at, rest) = rest.strip_prefix(r#","at":""#)?.split_once('"')?;
        Some((at, rest.strip_prefix(r#","operation":{"id":""#)?.split_once('"')?.0))
    };
    fixed().unwrap_or_else(|| {
        let string_after = |text: &str, key: &str| -> (usize, usize) {
            let start = text.find(key).unwrap_or_else(|| panic!("{key} in {rest}")) + key.len();
            (start, start + text[start..].find('"').expect("a closing quote"))
        };
        let (a, b) = string_after(rest, r#""at":""#);
        let (c, d) = string_after(&rest[b..], r#""operation":{"id":""#);
        (&rest[a..b], &rest[b + c..b + d])
    })
}

/// A few bytes of text kept inline: a terminal event's `at` or operation id,
/// noted by a client without allocating while the wave arrives.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Short {
    len: u8,
    bytes: [u8; 40],
}

impl Short {
    fn new(text: &str) -> Short {
        let mut bytes = [0; 40];
        assert!(text.len() <= bytes.len(), "{text} is longer than expected");
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Short { len: text.len() as u8, bytes }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("copied from a str")
    }
}

struct Args {
    clients: usize,
    operations: usize,
    steps: u32,
    step_ms: u32,
    window_ms: u32,
    idle: usize,
    socketio: bool,
    /// Print when each kind of event was committed, in 50 ms buckets.
    timeline: bool,
    /// The `opal` binary to run (default: the one this benchmark was built
    /// with), to compare two builds in one sitting.
    opal: String,
    /// `--store URL`: run the Opal nodes on this PostgreSQL database.
    store: Option<String>,
    /// `--nodes N`: how many Opal nodes (all on `--store`); clients and
    /// starts are spread over them round robin.
    nodes: usize,
}

fn args() -> Args {
    let mut a = Args {
        clients: 1000,
        operations: 200,
        steps: 20,
        step_ms: 50,
        window_ms: 500,
        idle: 10_000,
        socketio: false,
        timeline: false,
        opal: env!("CARGO_BIN_EXE_opal").to_owned(),
        store: None,
        nodes: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse::<usize>().ok()).expect("a number after the flag");
        match argv[i].as_str() {
            "--clients" => a.clients = value(),
            "--operations" => a.operations = value(),
            "--steps" => a.steps = value() as u32,
            "--step-ms" => a.step_ms = value() as u32,
            "--window-ms" => a.window_ms = value() as u32,
            "--idle" => a.idle = value(),
            "--server" => {
                a.socketio = match argv.get(i + 1).map(String::as_str) {
                    Some("opal") => false,
                    Some("socketio") => true,
                    other => panic!("--server takes opal or socketio, not {other:?}"),
                };
            }
            "--opal" => a.opal = argv.get(i + 1).expect("a path after --opal").clone(),
            "--store" => a.store = Some(argv.get(i + 1).expect("a postgres:// URL after --store").clone()),
            "--nodes" => a.nodes = value().max(1),
            "--timeline" => {
                a.timeline = true;
                i += 1;
                continue;
            }
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!(
                "unknown flag {other}; flags: --server --clients --operations --steps --step-ms --window-ms --idle --timeline --opal --store --nodes"
            ),
        }
        i += 2;
    }
    a
}

struct Server {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(a: &Args, index: usize) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut command = if a.socketio {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/socketio");
            assert!(
                std::path::Path::new(dir).join("node_modules").exists(),
                "run `npm ci --prefix host/benches/socketio` first"
            );
            let mut node = Command::new("node");
            node.arg("server.js").current_dir(dir).env("PROGRESS_WINDOW_MS", a.window_ms.to_string());
            node
        } else {
            // Every operation runs at once, each holding a sandbox instance,
            // beside the instances kept for validations.
            let config = data.path().join("opal.toml");
            let instances = a.operations.max(1) + opal_host::config::VALIDATION_INSTANCES as usize;
            // FANOUT_CONFIG: more lines for the server's config file, to compare settings.
            let extra = std::env::var("FANOUT_CONFIG").unwrap_or_default().replace("\\n", "\n");
            std::fs::write(&config, format!("max_instances = {}\n{extra}\n", instances.max(256))).unwrap();
            let mut opal = Command::new(&a.opal);
            opal.args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(&config)
                .arg("--data")
                .arg(data.path())
                .args(["--progress-window-ms", &a.window_ms.max(1).to_string()])
                .args(["--max-concurrent", &a.operations.max(1).to_string()])
                .env("RUST_LOG", "warn");
            if let Some(url) = &a.store {
                opal.args(["--store", url, "--node-id", &format!("fanout-{index}")]);
            }
            opal
        };
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("opal starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on http://").expect("address line").to_owned();
        Server { child, addr, _data: data }
    }

    /// RSS now and at its peak, in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let pid = self.child.id();
        (proc_status_kib(pid, "VmRSS:"), proc_status_kib(pid, "VmHWM:"))
    }

    /// User + system CPU time, in seconds.
    fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(&self.child.id().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Small read buffers: tungstenite zeroes its whole read buffer on every read,
/// and 1000 clients on the server's machine should cost it as little as possible.
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// How long each operation ran (`started_at` to `finished_at`), sorted, in
/// ms: a plugin that sleeps `steps x step_ms` should take about that long,
/// however busy the sockets are.
async fn run_times(addr: &str, ids: impl Iterator<Item = &String>) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for id in ids {
        let url = format!("http://{addr}/api/v1/operations/{id}");
        let op: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
        let at = |field: &str| op[field].as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
        if let (Some(started), Some(finished)) = (at("started_at"), at("finished_at")) {
            times.push(finished.duration_since(started).unwrap_or_default().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    times
}

/// Prints how many events of each kind were committed in each 50 ms after
/// the first `operation.created`, from every operation's stored events.
async fn timeline(addr: &str, ids: Vec<String>) {
    let http = reqwest::Client::new();
    let mut events = Vec::new();
    for id in ids {
        let url = format!("http://{addr}/api/v1/operations/{id}/events");
        let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
        for e in body["events"].as_array().unwrap() {
            let at = humantime::parse_rfc3339(e["at"].as_str().unwrap()).unwrap();
            events.push((at, e["event"].as_str().unwrap().trim_start_matches("operation.").to_owned()));
        }
    }
    let start = events.iter().map(|(at, _)| *at).min().unwrap();
    let mut buckets: std::collections::BTreeMap<u128, HashMap<String, usize>> = Default::default();
    for (at, kind) in events {
        let bucket = at.duration_since(start).unwrap_or_default().as_millis() / 50 * 50;
        *buckets.entry(bucket).or_default().entry(kind).or_default() += 1;
    }
    eprintln!("committed events per 50 ms (ms after the first created: kind count ...):");
    for (bucket, kinds) in buckets {
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort();
        let line: Vec<String> = kinds.into_iter().map(|(k, n)| format!("{k} {n}")).collect();
        eprintln!("  {bucket:>5}: {}", line.join(", "));
    }
}

/// Prints terminal-delivery latency by when the terminal event was committed,
/// in 50 ms buckets after the first one: where in the run the tail comes from.
fn latency_timeline(by_commit: Vec<(SystemTime, f64)>) {
    let Some(start) = by_commit.iter().map(|(at, _)| *at).min() else { return };
    let mut buckets: std::collections::BTreeMap<u128, Vec<f64>> = Default::default();
    for (at, latency) in by_commit {
        buckets.entry(at.duration_since(start).unwrap_or_default().as_millis() / 50 * 50).or_default().push(latency);
    }
    eprintln!("terminal latency by commit time (ms after the first terminal: deliveries p50 p99 max):");
    for (bucket, mut latencies) in buckets {
        latencies.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        let max = latencies.last().copied().unwrap_or(f64::NAN);
        eprintln!("  {bucket:>5}: {:>6} {p50:>6.1} {p99:>6.1} {max:>6.1}", latencies.len());
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    raise_fd_limit((a.clients + a.idle + 1024) as u64);
    assert!(a.nodes == 1 || a.store.is_some(), "--nodes above 1 needs --store postgres://…");
    let servers: Vec<Server> = (0..a.nodes).map(|i| Server::start(&a, i)).collect();
    let server = &servers[0];
    let url_of = |server: &Server| {
        if a.socketio {
            format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr)
        } else {
            format!("ws://{}/api/v1/ws?batch=true", server.addr)
        }
    };
    let url = url_of(server);
    let urls: Vec<String> = servers.iter().map(url_of).collect();
    eprintln!(
        "fanout: {} clients, {} operations x {} steps every {} ms, progress window {} ms, server {}",
        a.clients, a.operations, a.steps, a.step_ms, a.window_ms, server.addr
    );

    // Connect and subscribe every client; each reports (terminal latencies, events seen).
    let delivered = Arc::new(AtomicU64::new(0));
    let frames_received = Arc::new(AtomicU64::new(0));
    let event_bytes = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(a.clients);
    let mut clients = Vec::new();
    for i in 0..a.clients {
        let url = urls[i % urls.len()].clone();
        let (delivered, ready, expected) = (delivered.clone(), ready_tx.clone(), a.operations);
        let (frames_received, event_bytes) = (frames_received.clone(), event_bytes.clone());
        let socketio = a.socketio;
        clients.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(client_config()), false)
                .await
                .expect("connect");
            if socketio {
                ws.send(Message::Text("40".into())).await.unwrap(); // join the default namespace
            } else {
                ws.send(Message::Text(json!({"type": "subscribe", "topics": ["operations"]}).to_string().into()))
                    .await
                    .unwrap();
            }
            // Each terminal event's `at` and operation id (parsed after the
            // run), and when the frame that carried it arrived.
            let mut terminal: Vec<(Short, Short, SystemTime)> = Vec::with_capacity(expected);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
            let (mut events, mut frames, mut bytes) = (0, 0, 0);
            while terminal.len() < expected {
                let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await else { break };
                let Message::Text(text) = message else { continue };
                let received = SystemTime::now();
                frames += 1;
                // The clients share the machine with the server: they parse
                // only what is measured, and allocate nothing per event, so
                // that the client side costs little more than the transport
                // floor's readers (benches/loopback.rs).
                let text = text.as_str();
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', text.as_bytes()).chain([text.len()]) {
                    let line = &text[start..end];
                    start = end + 1;
                    match split(line) {
                        Frame::Ping => {
                            let _ = ws.send(Message::Text("3".into())).await;
                        }
                        Frame::Ready => {
                            let _ = ready.send(()).await;
                        }
                        Frame::Event { terminal: rest } => {
                            events += 1;
                            bytes += (line.len() - payload_start(line)) as u64;
                            if let Some(rest) = rest {
                                let (at, id) = terminal_fields(rest);
                                terminal.push((Short::new(at), Short::new(id), received));
                            }
                        }
                        Frame::Other => {}
                    }
                }
            }
            delivered.fetch_add(events, Ordering::Relaxed);
            frames_received.fetch_add(frames, Ordering::Relaxed);
            event_bytes.fetch_add(bytes, Ordering::Relaxed);
            // The socket stays open until every client is done, as a
            // dashboard's would: clients that close as they finish would put
            // their closing handshakes in the way of those still reading.
            (terminal, ws)
        }));
    }
    drop(ready_tx);
    for _ in 0..a.clients {
        ready_rx.recv().await.expect("every client subscribes");
    }

    // Start the operations.
    let cpu_of = |servers: &[Server]| servers.iter().map(Server::cpu_seconds).sum::<f64>();
    let cpu_before = cpu_of(&servers);
    let clients_cpu_before = process_cpu_seconds("self");
    let started = Instant::now();
    let http = reqwest::Client::new();
    let posts = futures_util::future::join_all((0..a.operations).map(|i| {
        let http = http.clone();
        let url = format!("http://{}/api/v1/operations", servers[i % servers.len()].addr);
        let body =
            json!({"type": "demo", "target": format!("bench-{i}"), "params": {"steps": a.steps, "step_ms": a.step_ms}});
        async move {
            let reply = http.post(url).json(&body).send().await.ok()?;
            if reply.status() != 202 {
                return None;
            }
            let body: serde_json::Value = reply.json().await.ok()?;
            body["id"].as_str().map(str::to_owned)
        }
    }))
    .await;
    assert!(posts.iter().all(Option::is_some), "every POST is accepted");

    let mut received = Vec::with_capacity(a.clients);
    let mut open = Vec::with_capacity(a.clients);
    for client in clients {
        let (terminal, ws) = client.await.unwrap();
        received.push(terminal);
        open.push(ws);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_of(&servers) - cpu_before;
    let clients_cpu = process_cpu_seconds("self") - clients_cpu_before;
    let (mut latencies, mut by_commit, mut lost, mut duplicates) = (Vec::new(), Vec::new(), 0, 0);
    for terminal in received {
        // Each operation ends once: a second terminal event for one is
        // counted as a duplicate, and the first is the one measured.
        let mut seen = std::collections::HashSet::with_capacity(terminal.len());
        let count = terminal.len();
        let firsts: Vec<_> = terminal.into_iter().filter(|(_, id, _)| seen.insert(*id)).collect();
        duplicates += count - firsts.len();
        lost += a.operations - firsts.len();
        for (at, _, received) in firsts {
            let at = humantime::parse_rfc3339(at.as_str()).unwrap();
            let latency = received.duration_since(at).unwrap_or_default().as_secs_f64() * 1000.0;
            latencies.push(latency);
            by_commit.push((at, latency));
        }
    }
    drop(open);
    let events = delivered.load(Ordering::Relaxed);
    latencies.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let peak_kib = servers.iter().map(|s| s.rss_kib().1).max().unwrap_or(0);
    let run_ms = if a.socketio { Vec::new() } else { run_times(&server.addr, posts.iter().flatten()).await };

    // Idle connections: the server's RSS growth per socket that only said hello.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before_kib, _) = server.rss_kib();
    let mut idle = Vec::with_capacity(a.idle);
    for _ in 0..a.idle {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((mut ws, _)) => {
                let _ = ws.next().await; // hello, or socket.io's open packet
                if a.socketio {
                    let _ = ws.send(Message::Text("40".into())).await;
                    let _ = ws.next().await; // connected
                }
                idle.push(ws);
            }
            Err(e) => {
                eprintln!("idle connection {} failed: {e}", idle.len());
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after_kib, _) = server.rss_kib();
    let per_idle =
        if idle.is_empty() { f64::NAN } else { (after_kib as f64 - before_kib as f64) * 1024.0 / idle.len() as f64 };

    let report = json!({
        "server": if a.socketio { "socketio" } else { "opal" },
        "nodes": a.nodes, "store": if a.store.is_some() { "postgres" } else { "redb" },
        "clients": a.clients, "operations": a.operations, "steps": a.steps, "step_ms": a.step_ms,
        "progress_window_ms": a.window_ms,
        "lost_terminal_events": lost,
        "duplicate_terminal_events": duplicates,
        "terminal_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99),
                                "max": latencies.last().copied().unwrap_or(f64::NAN)},
        "events_delivered": events,
        "websocket_frames": frames_received.load(Ordering::Relaxed),
        "mean_event_bytes": event_bytes.load(Ordering::Relaxed) as f64 / events as f64,
        "run_seconds": elapsed,
        "events_per_second": events as f64 / elapsed,
        "server_cpu_seconds": cpu,
        "events_per_cpu_second": events as f64 / cpu,
        "clients_cpu_seconds": clients_cpu,
        "server_peak_rss_mib": peak_kib as f64 / 1024.0,
        "operation_run_ms": {"p50": percentile(&run_ms, 0.5), "max": run_ms.last().copied().unwrap_or(f64::NAN),
                             "planned": a.steps as f64 * a.step_ms as f64},
        "idle_connections": idle.len(),
        "idle_bytes_per_connection": per_idle,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    drop(idle);
    if a.timeline && !a.socketio {
        timeline(&server.addr, posts.into_iter().flatten().collect()).await;
        latency_timeline(by_commit);
    }
    assert_eq!(lost, 0, "terminal events were lost");
    assert_eq!(duplicates, 0, "terminal events were delivered twice");
}
