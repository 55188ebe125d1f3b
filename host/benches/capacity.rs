//! The capacity benchmark: `cargo bench -p opal-host --bench capacity [-- --operations 10000 ...]`.
//!
//! It starts the release `opal serve` as a child process, with the instance
//! pool and `max_concurrent` sized for N operations at once, connects a few
//! WebSocket clients subscribed to `operations`, starts N demo operations of
//! S steps of M ms (64 POSTs in flight, each its own target), waits until all
//! N run at once, and then until every client has seen every one end. It
//! reports:
//! - the server's RSS per running operation: RSS with all N running, minus
//!   RSS before the first start, over N;
//! - start latency (POST to 202) p50 / p99, measured while the earlier
//!   operations run;
//! - server CPU per operation, over the whole run;
//! - lost terminal events (every client must see every operation end).
//!
//! Everything runs on loopback, bounded in count and time.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{percentile, proc_status_kib, process_cpu_seconds, raise_fd_limit};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    operations: usize,
    steps: u32,
    step_ms: u32,
    clients: usize,
}

fn args() -> Args {
    let mut a = Args { operations: 10_000, steps: 10, step_ms: 1000, clients: 5 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse::<usize>().ok()).expect("a number after the flag");
        match argv[i].as_str() {
            "--operations" => a.operations = value(),
            "--steps" => a.steps = value() as u32,
            "--step-ms" => a.step_ms = value() as u32,
            "--clients" => a.clients = value(),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown flag {other}; flags: --operations --steps --step-ms --clients"),
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
    fn start(a: &Args) -> Server {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("opal.toml");
        let instances = a.operations + opal_host::config::VALIDATION_INSTANCES as usize;
        std::fs::write(&config, format!("max_instances = {instances}\nmax_concurrent = {}\n", a.operations)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_opal"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(data.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("opal starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on http://").expect("address line").to_owned();
        Server { child, addr, _data: data }
    }

    /// RSS now, in KiB.
    fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

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

async fn running(http: &reqwest::Client, addr: &str) -> usize {
    let status: serde_json::Value =
        http.get(format!("http://{addr}/api/v1/status")).send().await.unwrap().json().await.unwrap();
    status["active_operations"].as_u64().unwrap_or(0) as usize
}

#[tokio::main]
async fn main() {
    let a = args();
    raise_fd_limit((a.clients + 4096) as u64);
    let server = Server::start(&a);
    eprintln!(
        "capacity: {} operations of {} x {} ms at once, {} watching clients, server {}",
        a.operations, a.steps, a.step_ms, a.clients, server.addr
    );
    let url = format!("ws://{}/api/v1/ws?batch=true", server.addr);
    let mut watchers = Vec::new();
    for _ in 0..a.clients {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        ws.send(Message::Text(json!({"type": "subscribe", "topics": ["operations"]}).to_string().into()))
            .await
            .unwrap();
        let expected = a.operations;
        watchers.push(tokio::spawn(async move {
            let mut ended = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            while ended < expected {
                let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await else { break };
                if let Message::Text(text) = message {
                    ended += [r#""event":"operation.completed""#, r#""event":"operation.failed""#]
                        .iter()
                        .map(|t| text.matches(t).count())
                        .sum::<usize>();
                }
            }
            ended
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kib();
    let cpu_before = server.cpu_seconds();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let posts = futures_util::future::join_all((0..a.operations).map(|i| {
        let (http, sem) = (http.clone(), sem.clone());
        let url = format!("http://{}/api/v1/operations", server.addr);
        let body =
            json!({"type": "demo", "target": format!("cap-{i}"), "params": {"steps": a.steps, "step_ms": a.step_ms}});
        async move {
            let _permit = sem.acquire().await.unwrap();
            let t = Instant::now();
            let status = http.post(url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, t.elapsed().as_secs_f64() * 1000.0)
        }
    }))
    .await;
    let posted_in = started.elapsed();
    let refused = posts.iter().filter(|(status, _)| *status != 202).count();
    let mut latencies: Vec<f64> = posts.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(|x, y| x.partial_cmp(y).unwrap());

    // All of them at once: the RSS they hold.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak_running = 0;
    let mut rss_running = 0;
    while Instant::now() < deadline {
        let now = running(&http, &server.addr).await;
        if now > peak_running {
            peak_running = now;
            rss_running = server.rss_kib();
        }
        if now >= a.operations || (now < peak_running && peak_running > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = 0;
    for watcher in watchers {
        seen += watcher.await.unwrap();
    }
    let cpu = server.cpu_seconds() - cpu_before;
    let lost = a.operations * a.clients - seen;
    let report = json!({
        "operations": a.operations, "steps": a.steps, "step_ms": a.step_ms, "clients": a.clients,
        "refused_starts": refused,
        "posted_seconds": posted_in.as_secs_f64(),
        "start_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99),
                             "max": latencies.last().copied().unwrap_or(f64::NAN)},
        "peak_running": peak_running,
        "rss_before_mib": rss_before as f64 / 1024.0,
        "rss_running_mib": rss_running as f64 / 1024.0,
        "rss_per_running_operation_kib": (rss_running as f64 - rss_before as f64) / peak_running.max(1) as f64,
        "server_cpu_seconds": cpu,
        "cpu_ms_per_operation": cpu * 1000.0 / a.operations as f64,
        "lost_terminal_events": lost,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(refused, 0, "every start is accepted");
    assert_eq!(lost, 0, "terminal events were lost");
}
