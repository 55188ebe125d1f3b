//! The transport floor: `cargo bench -p opal-host --bench loopback [-- --clients 1000 ...]`.
//!
//! What would the fan-out benchmark's terminal wave cost with no WebSocket,
//! no JSON and no hub at all? This benchmark moves the same bytes on the same
//! schedule over loopback TCP and reports the delivery latency a perfect
//! server could reach on this machine, with its clients beside it.
//!
//! A sender process (this binary, run again with `--sender`) accepts C
//! connections. It commits R rounds, one every `--spread-ms / R`, each
//! carrying `--events / R` events of `--event-bytes` each (in bytes; no
//! event boundaries are sent) to every connection, as the hub publishes one
//! committed batch to every socket. Each connection has a
//! task that, when woken, writes every round it has not written yet in one
//! write (as a socket task flushes what its queue holds). A round's first
//! 8 bytes are when it was committed, like an event's `at`. The receiving
//! tasks in this process read with 16 KiB buffers, as the fan-out
//! benchmark's clients do, and note each round's latency when its last byte
//! arrives: receipt minus commit.
//!
//! It reports round latency p50 / p99 / max, the bytes moved, and the CPU
//! seconds of the sender and of the receivers. The defaults are the fan-out
//! benchmark's terminal wave: C = 1,000, 400 events of 500 bytes per
//! connection (about 200 terminal events and the 200 progress events just
//! before them), in 75 rounds over 75 ms. `taskset -c 1 <this binary>
//! --split` gives the sender and the receivers a core each. Loopback only,
//! bounded in count and time.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{percentile, process_cpu_seconds, raise_fd_limit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Args {
    clients: usize,
    /// Events per connection in the wave.
    events: usize,
    event_bytes: usize,
    /// Committed batches the wave comes in.
    rounds: usize,
    /// Over how long the rounds are committed.
    spread_ms: u64,
    /// Run the sender on CPU 0 (`taskset`); run this process on CPU 1 with
    /// `taskset -c 1` to give each side a core of its own.
    split: bool,
    sender: bool,
}

fn args() -> Args {
    // The fan-out benchmark's terminal wave: ~200 terminal events and the
    // ~200 progress events of the last window per client, ~500 bytes each,
    // committed over ~75 ms (`--timeline` there).
    let mut a =
        Args { clients: 1000, events: 400, event_bytes: 500, rounds: 75, spread_ms: 75, split: false, sender: false };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse::<usize>().ok()).expect("a number after the flag");
        match argv[i].as_str() {
            "--clients" => a.clients = value(),
            "--events" => a.events = value(),
            "--event-bytes" => a.event_bytes = value(),
            "--rounds" => a.rounds = value().max(1),
            "--spread-ms" => a.spread_ms = value() as u64,
            "--sender" | "--split" | "--bench" => {
                a.sender |= argv[i] == "--sender";
                a.split |= argv[i] == "--split";
                i += 1;
                continue;
            }
            other => {
                panic!("unknown flag {other}; flags: --clients --events --event-bytes --rounds --spread-ms --split")
            }
        }
        i += 2;
    }
    a
}

/// Bytes in one round for one connection: the wave's bytes spread evenly
/// over the rounds (at least a round's 8-byte timestamp).
fn round_bytes(a: &Args) -> usize {
    (a.events * a.event_bytes).div_ceil(a.rounds).max(8)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The sender: accepts `clients` connections, then commits the rounds.
async fn send(a: Args) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    let mut sockets = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        let (socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        sockets.push(socket);
    }
    // Every round's commit time, published as the rounds are committed.
    let (tx, rx) = tokio::sync::watch::channel(Vec::<u64>::new());
    let size = round_bytes(&a);
    let mut writers = Vec::new();
    for mut socket in sockets {
        let mut rx = rx.clone();
        writers.push(tokio::spawn(async move {
            let (mut written, mut out) = (0, Vec::new());
            while rx.changed().await.is_ok() {
                out.clear();
                for at in rx.borrow_and_update()[written..].iter() {
                    let start = out.len();
                    out.resize(start + size, b'x');
                    out[start..start + 8].copy_from_slice(&at.to_le_bytes());
                    written += 1;
                }
                if socket.write_all(&out).await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // let the receivers settle
    let start = tokio::time::Instant::now();
    let every = Duration::from_micros(a.spread_ms * 1000 / a.rounds as u64);
    for k in 0..a.rounds {
        tokio::time::sleep_until(start + every * k as u32).await;
        tx.send_modify(|rounds| rounds.push(now_ns()));
    }
    drop(tx);
    for writer in writers {
        let _ = writer.await;
    }
}

/// One receiver: each round's latency in ms, from its commit to its last byte.
async fn receive(mut socket: TcpStream, rounds: usize, size: usize) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(rounds);
    let mut buf = vec![0u8; 16 * 1024];
    let (mut at, mut pos) = ([0u8; 8], 0usize); // the round's timestamp, and the offset in it
    while latencies.len() < rounds {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let take = chunk.len().min(size - pos);
            if pos < 8 {
                let n = take.min(8 - pos);
                at[pos..pos + n].copy_from_slice(&chunk[..n]);
            }
            pos += take;
            chunk = &chunk[take..];
            if pos == size {
                latencies.push(now_ns().saturating_sub(u64::from_le_bytes(at)) as f64 / 1e6);
                pos = 0;
            }
        }
    }
    latencies
}

#[tokio::main]
async fn main() {
    let a = args();
    raise_fd_limit(a.clients as u64 + 1024);
    if a.sender {
        return send(a).await;
    }
    let me = std::env::current_exe().unwrap();
    let mut sender = if a.split { Command::new("taskset") } else { Command::new(&me) };
    if a.split {
        sender.args(["-c", "0"]).arg(&me);
    }
    let mut child = sender
        .args(std::env::args().skip(1).filter(|arg| arg != "--bench" && arg != "--split"))
        .arg("--sender")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the sender starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line.trim().parse().expect("the sender's address");
    let (rounds, size) = (a.rounds, round_bytes(&a));
    let mut sockets = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        let socket = TcpStream::connect(addr).await.expect("connect");
        socket.set_nodelay(true).unwrap();
        sockets.push(socket);
    }
    let pid = child.id().to_string();
    let (sender_before, self_before) = (process_cpu_seconds(&pid), process_cpu_seconds("self"));
    let receivers: Vec<_> = sockets.into_iter().map(|s| tokio::spawn(receive(s, rounds, size))).collect();
    let mut latencies = Vec::with_capacity(a.clients * rounds);
    let mut short = 0;
    for receiver in receivers {
        let got = tokio::time::timeout(Duration::from_secs(60), receiver).await.expect("the wave arrives").unwrap();
        short += rounds - got.len();
        latencies.extend(got);
    }
    let (sender_cpu, receivers_cpu) =
        (process_cpu_seconds(&pid) - sender_before, process_cpu_seconds("self") - self_before);
    let _ = child.wait();
    latencies.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let report = serde_json::json!({
        "clients": a.clients, "events_per_client": a.events, "event_bytes": a.event_bytes,
        "rounds": a.rounds, "spread_ms": a.spread_ms,
        "bytes_moved": (a.clients * rounds * size) as u64,
        "rounds_missing": short,
        "round_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99),
                             "max": latencies.last().copied().unwrap_or(f64::NAN)},
        "sender_cpu_seconds": sender_cpu,
        "receivers_cpu_seconds": receivers_cpu,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(short, 0, "rounds went missing");
}
