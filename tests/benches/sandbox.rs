//! Sandbox benchmarks: `cargo bench -p opal-tests --bench sandbox [-- --ops 5000]`.
//!
//! Reports, as JSON, medians over repeated runs of:
//! - a guest -> host `progress.report` call, in ns (the faulty plugin's
//!   `report_flood` makes 1,000,000 of them; a no-op run is subtracted);
//! - instantiate + run of a no-op plugin from the pooling allocator with the
//!   linked `*Pre`, in µs;
//! - loading a plugin from the precompiled cache, and compiling it cold, in ms;
//! - end-to-end no-op operations per second through HTTP, the store (one
//!   durable commit per state change, group-committed) and the hub, with a
//!   WebSocket client watching them all end.
//!
//! Everything runs in this process on loopback, bounded in count and time.
//! `-- --only-e2e 1` runs each sandbox figure once and the end-to-end phase
//! in full, for a profile of that phase.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opal_host::sandbox::grants::Grants;
use opal_host::sandbox::{RunHooks, Sandbox, SandboxConfig};
use opal_tests::{TEST_PLUGINS, TestServer, plugin_dir};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The `event` fields of the events that end an operation.
const TERMINAL: [&str; 3] =
    [r#""event":"operation.completed""#, r#""event":"operation.failed""#, r#""event":"operation.cancelled""#];

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(TEST_PLUGINS.iter().find(|(n, _)| *n == name).expect("a test plugin").1).unwrap()
}

fn config(dir: &std::path::Path) -> SandboxConfig {
    SandboxConfig {
        cache_dir: dir.join("cache"),
        memory_limit: 64 << 20,
        max_memory_limit: 64 << 20,
        log_limit: 16 << 20,
        max_wasm_stack: 1 << 20,
        scratch_root: dir.join("scratch"),
        max_instances: 16,
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn hooks() -> RunHooks {
    let (progress, _) = tokio::sync::watch::channel(Default::default());
    let (logs, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    RunHooks { progress, logs, cancel: Default::default(), force_stop: Arc::new(AtomicBool::new(false)) }
}

/// One run of the faulty plugin in `mode`, in seconds.
async fn run(sandbox: &Sandbox, component: &opal_host::sandbox::Component, mode: &str) -> f64 {
    let limits = sandbox.default_limits(Duration::from_secs(60));
    let params = json!({ "mode": mode }).to_string();
    let started = Instant::now();
    let out = component.run(sandbox, "bench", &params, hooks(), limits, &Grants::default()).await;
    let took = started.elapsed().as_secs_f64();
    assert!(out.is_ok(), "{mode}: {out:?}");
    took
}

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let ops = arg("--ops", 5000);
    // `--only-e2e 1`: just the end-to-end phase, e.g. under a profiler.
    let only_e2e = arg("--only-e2e", 0) == 1;
    let dir = tempfile::tempdir().unwrap();
    let faulty = wasm("faulty");

    // Cold compile versus the precompiled cache (a fresh engine each time, as after a restart).
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    for i in 0..if only_e2e { 1 } else { 5 } {
        let cache = dir.path().join(format!("c{i}"));
        let sandbox = Sandbox::new(config(&cache)).unwrap();
        let t = Instant::now();
        assert!(!sandbox.load(&faulty).unwrap().from_cache);
        cold.push(t.elapsed().as_secs_f64() * 1e3);
        drop(sandbox);
        let sandbox = Sandbox::new(config(&cache)).unwrap();
        let t = Instant::now();
        assert!(sandbox.load(&faulty).unwrap().from_cache);
        cached.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let sandbox = Sandbox::new(config(dir.path())).unwrap();
    let component = sandbox.load(&faulty).unwrap();
    // Instantiate + run of a no-op (`succeed`: one report, then return).
    for _ in 0..50 {
        run(&sandbox, &component, "succeed").await;
    }
    let mut noop = Vec::new();
    for _ in 0..if only_e2e { 1 } else { 1000 } {
        noop.push(run(&sandbox, &component, "succeed").await * 1e6);
    }
    // A million reports, minus a no-op run.
    let mut report = Vec::new();
    for _ in 0..if only_e2e { 1 } else { 7 } {
        let flood = run(&sandbox, &component, "report_flood").await;
        report.push((flood - median(noop.clone()) / 1e6) / 1e6 * 1e9);
    }

    // End to end: POST no-op operations, each on its own target, and wait
    // until a WebSocket client has seen every one of them end.
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let server = TestServer::start_with(&dir.path().join("server"), |c| {
        c.plugin_dirs = vec![plugins];
        c.max_concurrent = 256;
        c.max_instances = 256 + opal_host::config::VALIDATION_INSTANCES;
    })
    .await;
    let mut ws = server.ws_batched().await;
    ws.subscribe(&["operations"]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/operations", server.base);
    let started = Instant::now();
    // The watcher stands for a dashboard on another machine: it counts
    // terminal events by substring rather than parsing and schema-checking
    // every message (the tests do that), so the client's own work does not
    // crowd the server off the two cores.
    let watcher = tokio::spawn(async move {
        let mut ended = 0;
        while ended < ops {
            let frame = ws.stream_mut().next().await.expect("the socket is open").expect("a valid frame");
            if let Message::Text(text) = frame {
                ended += TERMINAL.iter().map(|t| text.matches(t).count()).sum::<usize>();
            }
        }
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut posts = Vec::new();
    for i in 0..ops {
        let (http, url, sem) = (http.clone(), url.clone(), sem.clone());
        posts.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let body = json!({"type": "faulty", "target": format!("t{i}"), "params": {"mode": "succeed"}});
            http.post(&url).json(&body).send().await.unwrap().status().as_u16()
        }));
    }
    for post in posts {
        assert_eq!(post.await.unwrap(), 202);
    }
    tokio::time::timeout(Duration::from_secs(300), watcher).await.expect("every operation ends").unwrap();
    let per_second = ops as f64 / started.elapsed().as_secs_f64();
    server.stop().await;

    let report = json!({
        "report_call_ns_median": median(report),
        "noop_instantiate_and_run_us_median": median(noop),
        "load_from_cache_ms_median": median(cached),
        "cold_compile_ms_median": median(cold),
        "end_to_end_noop_operations": ops,
        "end_to_end_noop_operations_per_second": per_second,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
