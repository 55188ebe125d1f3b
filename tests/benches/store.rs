//! Store benchmarks: `cargo bench -p opal-tests --bench store [-- --ops 3000 --rounds 3]`.
//!
//! Reports, as JSON, in one sitting:
//! - end-to-end no-op operations per second (HTTP 202 → terminal event seen
//!   by a WebSocket client) on redb, on PostgreSQL with one node, and on
//!   PostgreSQL with three nodes sharing the database (the posts spread over
//!   the nodes, the watcher on the first: every node's hub sees every event);
//! - commit latency p50/p99 of one transition (a progress event of a running
//!   operation), committed one at a time, on each store.
//!
//! Medians over `--rounds` rounds; the ratio PostgreSQL / redb is of medians
//! measured in the same run. Everything runs in this process on loopback
//! (the nodes are in-process servers), bounded in count and time. It needs
//! the PostgreSQL of `OPAL_TEST_DATABASE_URL` (see tests/support/cluster.rs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opal_host::model::{EventKind, Operation, Status, Timestamp};
use opal_host::store::{Change, Expect, Location, Publish, Store};
use opal_tests::cluster::TestDatabase;
use opal_tests::{TestServer, plugin_dir};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const TERMINAL: [&str; 3] =
    [r#""event":"operation.completed""#, r#""event":"operation.failed""#, r#""event":"operation.cancelled""#];

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `ops` no-op operations through the nodes at `bases` (round robin), watched
/// on the first; operations per second.
async fn end_to_end(servers: &[TestServer], ops: usize, round: usize) -> f64 {
    let mut ws = servers[0].ws_batched().await;
    ws.subscribe(&["operations"]).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
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
        let url = format!("{}/api/v1/operations", servers[i % servers.len()].base);
        let (http, sem) = (http.clone(), sem.clone());
        posts.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let body = json!({"type": "faulty", "target": format!("r{round}-t{i}"), "params": {"mode": "succeed"}});
            http.post(&url).json(&body).send().await.unwrap().status().as_u16()
        }));
    }
    for post in posts {
        assert_eq!(post.await.unwrap(), 202);
    }
    tokio::time::timeout(Duration::from_secs(300), watcher).await.expect("every operation ends").unwrap();
    ops as f64 / started.elapsed().as_secs_f64()
}

struct Discard;

impl Publish for Discard {
    fn publish(&self, _events: Vec<opal_host::model::Event>) {}
}

/// Commit latencies, in ms, of `n` progress transitions of one running operation.
async fn commit_latency(location: &Location, n: usize) -> (f64, f64) {
    let (store, tasks) = Store::open(location, "bench", Arc::new(Discard)).await.expect("the store opens");
    let mut op = Operation::pending("faulty", "0.1.0", &format!("latency-{}", Timestamp::now()), json!({}), "bench");
    store.commit(Change::Admit { operation: Arc::new(op.clone()) }).await.unwrap();
    let claim = opal_host::store::Claim {
        node: "bench".into(),
        max: 1,
        types: vec!["faulty".into()],
        limits: Vec::new(),
        lease: Duration::from_secs(60),
    };
    let claimed = store.commit(Change::Claim(claim)).await.unwrap().claimed;
    op = claimed.into_iter().find(|c| c.id == op.id).expect("the operation is claimed");
    assert_eq!(op.status, Status::Running);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        op.progress = (i % 100) as u8;
        let change = Change::Operation {
            kind: EventKind::Progress,
            operation: Arc::new(op.clone()),
            at: Timestamp::now(),
            expect: Expect::Runner,
        };
        let t = Instant::now();
        store.commit(change).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(store);
    tasks.join().await;
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn servers(dir: &std::path::Path, url: Option<&str>, nodes: usize) -> Vec<TestServer> {
    let plugins = plugin_dir(dir, &["faulty"]);
    let mut out = Vec::new();
    for i in 0..nodes {
        let (plugins, url) = (plugins.clone(), url.map(str::to_owned));
        out.push(
            TestServer::start_with(&dir.join(format!("node{i}")), move |c| {
                c.plugin_dirs = vec![plugins];
                c.max_concurrent = 256;
                c.max_instances = 256 + opal_host::config::VALIDATION_INSTANCES;
                c.store_url = url;
                c.node_id = format!("node{i}");
            })
            .await,
        );
    }
    out
}

#[tokio::main]
async fn main() {
    let ops = arg("--ops", 3000);
    let rounds = arg("--rounds", 3);
    let latency_n = arg("--commits", 1000);
    let Some(db) = TestDatabase::create().await else {
        eprintln!("the store benchmark needs PostgreSQL; see the notice above");
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    let redb = servers(&dir.path().join("redb"), None, 1).await;
    let pg1 = servers(&dir.path().join("pg1"), Some(db.url()), 1).await;
    let mut results: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        results[0].push(end_to_end(&redb, ops, round).await);
        results[1].push(end_to_end(&pg1, ops, round).await);
    }
    for server in pg1 {
        server.stop().await;
    }
    for server in redb {
        server.stop().await;
    }
    let pg3 = servers(&dir.path().join("pg3"), Some(db.url()), 3).await;
    for round in 0..rounds {
        results[2].push(end_to_end(&pg3, ops, rounds + round).await);
    }
    for server in pg3 {
        server.stop().await;
    }

    let redb_latency = commit_latency(&Location::Redb(dir.path().join("latency")), latency_n).await;
    let pg_latency = commit_latency(&Location::Postgres(db.url().to_owned()), latency_n).await;
    let [redb, pg1, pg3] = results.map(median);
    let report = json!({
        "ops_per_round": ops,
        "rounds": rounds,
        "redb_noop_ops_per_second_median": redb.round(),
        "postgres_1_node_noop_ops_per_second_median": pg1.round(),
        "postgres_3_nodes_noop_ops_per_second_median": pg3.round(),
        "postgres_1_node_over_redb": (pg1 / redb * 100.0).round() / 100.0,
        "redb_commit_ms_p50": redb_latency.0,
        "redb_commit_ms_p99": redb_latency.1,
        "postgres_commit_ms_p50": pg_latency.0,
        "postgres_commit_ms_p99": pg_latency.1,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
