//! A busy plugin beside a sleeping one: `cargo bench -p opal-tests --bench busy [-- --busy 4 --rounds 3]`.
//!
//! Starts a server in-process with the faulty test plugin, runs B operations
//! of it in `spin` mode (a loop with no host calls) on the two cores, then a
//! demo operation of 5 steps of 100 ms beside them, and reports how long the
//! demo took (its `started_at` to `finished_at`; 0.5 s alone), the median of
//! R rounds. The spinning operations are cancelled between rounds.

use std::time::Duration;

use opal_host::config::TypePolicy;
use opal_tests::{TestServer, plugin_dir};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn at(op: &serde_json::Value, field: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(op[field].as_str().unwrap()).unwrap()
}

#[tokio::main]
async fn main() {
    let (busy, rounds) = (arg("--busy", 4), arg("--rounds", 3));
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.plugin_dirs = vec![plugins];
        c.cancel_grace = Duration::from_millis(100);
        c.types.insert("faulty".into(), TypePolicy { timeout: Some(Duration::from_secs(60)), ..Default::default() });
    })
    .await;
    let mut took = Vec::new();
    for round in 0..rounds {
        let mut spinning = Vec::new();
        for i in 0..busy {
            let body = json!({"type": "faulty", "target": format!("busy-{round}-{i}"), "params": {"mode": "spin"}});
            let reply = server.post("/api/v1/operations", &body).await;
            assert_eq!(reply.status, 202, "{reply:?}");
            spinning.push(reply.body["id"].as_str().unwrap().to_owned());
        }
        for id in &spinning {
            server.wait_progress(id).await;
        }
        let demo = server.start_demo(&format!("calm-{round}"), json!({"steps": 5, "step_ms": 100})).await;
        let done = server.wait_terminal(&demo).await;
        assert_eq!(done["status"], "completed", "{done}");
        took.push(at(&done, "finished_at").duration_since(at(&done, "started_at")).unwrap().as_secs_f64() * 1000.0);
        for id in &spinning {
            server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
        }
        for id in &spinning {
            server.wait_terminal(id).await;
        }
    }
    server.stop().await;
    let mut sorted = took.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let report = json!({
        "busy_operations": busy,
        "demo_5x100ms_ms": took,
        "demo_5x100ms_ms_median": sorted[sorted.len() / 2],
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
