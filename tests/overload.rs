//! Overload: a plugin that computes without host calls must not slow the
//! operations beside it, `max_cpu_ms` bounds what it may compute, and
//! `runner_threads` bounds the cores a type may take.

use std::time::Duration;

use opal_host::config::TypePolicy;
use opal_tests::{TestServer, plugin_dir};
use serde_json::json;

fn ms(op: &serde_json::Value, field: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(op[field].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_plugins_do_not_starve_a_sleeping_one() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.plugin_dirs = vec![plugins];
        c.cancel_grace = Duration::from_millis(100);
        c.types.insert("faulty".into(), TypePolicy { timeout: Some(Duration::from_secs(30)), ..Default::default() });
    })
    .await;
    let mut busy = Vec::new();
    for i in 0..4 {
        let reply = server
            .post(
                "/api/v1/operations",
                &json!({"type": "faulty", "target": format!("busy-{i}"), "params": {"mode": "spin"}}),
            )
            .await;
        assert_eq!(reply.status, 202, "{reply:?}");
        busy.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    for id in &busy {
        server.wait_progress(id).await;
    }
    let demo = server.start_demo("calm", json!({"steps": 5, "step_ms": 100})).await;
    let done = server.wait_terminal(&demo).await;
    assert_eq!(done["status"], "completed", "{done}");
    let took = ms(&done, "finished_at").duration_since(ms(&done, "started_at")).unwrap();
    // Loose (tests are not benchmarks; docs/performance.md has the figure):
    // before the runners checked their timers at every poll it took ~3 s.
    assert!(took < Duration::from_millis(1800), "5 x 100 ms beside 4 busy plugins took {took:?}");
    for id in &busy {
        server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    }
    for id in &busy {
        server.wait_terminal(id).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cpu_ms_fails_a_computing_plugin_with_cpu_limit() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.plugin_dirs = vec![plugins];
        let policy = TypePolicy {
            timeout: Some(Duration::from_secs(30)),
            max_cpu: Some(Duration::from_millis(300)),
            ..Default::default()
        };
        c.types.insert("faulty".into(), policy);
        // 500 ms of sleeping under a 100 ms CPU limit.
        c.types.insert("demo".into(), TypePolicy { max_cpu: Some(Duration::from_millis(100)), ..Default::default() });
    })
    .await;
    let spin = server.run_to_end("faulty", "cpu-hog", json!({"mode": "spin"})).await;
    assert_eq!(spin["status"], "failed", "{spin}");
    assert_eq!(spin["error"]["code"], "cpu_limit", "{spin}");
    assert!(spin["message"].as_str().unwrap().contains("300 ms of CPU"), "{spin}");
    let took = ms(&spin, "finished_at").duration_since(ms(&spin, "started_at")).unwrap();
    assert!(took < Duration::from_secs(10), "stopped soon after its 300 ms, not at its 30 s timeout: {took:?}");
    // Waiting in host calls is not charged: 500 ms of sleep fit a 100 ms limit.
    let calm = server.run_to_end("demo", "calm", json!({"steps": 10, "step_ms": 50})).await;
    assert_eq!(calm["status"], "completed", "{calm}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_starts_than_the_instance_pool_holds_all_start_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["steady"]);
    // 20 instances: 4 for runs, 16 for validations; 60 starts at once.
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.plugin_dirs = vec![plugins];
        c.max_instances = 4 + opal_host::config::VALIDATION_INSTANCES;
        c.max_concurrent = 4;
    })
    .await;
    let starts = futures_util::future::join_all((0..60).map(|i| {
        let server = &server;
        async move {
            let body = json!({"type": "steady", "target": format!("pool-{i}"), "params": {"steps": 3, "step_ms": 30}});
            server.post("/api/v1/operations", &body).await
        }
    }))
    .await;
    let refused: Vec<_> = starts.iter().filter(|r| r.status != 202).collect();
    assert!(refused.is_empty(), "no start may fail for lack of instances: {refused:?}");
    for reply in &starts {
        let op = server.wait_terminal(reply.body["id"].as_str().unwrap()).await;
        assert_eq!(op["status"], "completed", "no run may fail for lack of instances: {op}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_whose_limits_cannot_hold_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = opal_host::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        max_concurrent: 1000,
        max_instances: 256,
        ..opal_host::ServerConfig::default()
    };
    let Err(refused) = opal_host::start(config).await else {
        panic!("max_concurrent 1000 over 256 instances must be refused")
    };
    let message = refused.to_string();
    assert!(message.contains("max_concurrent = 1000") && message.contains("max_instances = 256"), "{message}");
    assert!(message.contains("at least 1016"), "the message says what would hold: {message}");
    assert!(!dir.path().join("opal.redb").exists(), "refused before anything was opened");
}

/// CPU time (user + system) of each thread of this process named `name`.
fn thread_cpu(name: &str) -> Vec<Duration> {
    let ticks = 100; // USER_HZ, as /proc counts
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the name's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        out.push(Duration::from_millis((field(14) + field(15)) * 1000 / ticks));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_with_runner_threads_computes_on_its_own_threads_only() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.plugin_dirs = vec![plugins];
        let policy = TypePolicy {
            timeout: Some(Duration::from_secs(60)),
            max_cpu: Some(Duration::from_millis(400)),
            runner_threads: Some(1),
            ..Default::default()
        };
        c.types.insert("faulty".into(), policy);
    })
    .await;
    // The type's own thread, named after it (no other test makes one).
    let own = thread_cpu("opal-t-faulty");
    assert_eq!(own.len(), 1, "one thread of its own: {own:?}");
    let started = std::time::Instant::now();
    let mut spinners = Vec::new();
    for i in 0..3 {
        let body = json!({"type": "faulty", "target": format!("share-{i}"), "params": {"mode": "spin"}});
        let reply = server.post("/api/v1/operations", &body).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        spinners.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    // A demo beside them runs on the shared threads and is not held back.
    let demo = server.run_to_end("demo", "beside", json!({"steps": 5, "step_ms": 100})).await;
    assert_eq!(demo["status"], "completed", "{demo}");
    for id in &spinners {
        let op = server.wait_terminal(id).await;
        assert_eq!(op["error"]["code"], "cpu_limit", "{op}");
    }
    let took = started.elapsed();
    // 3 x 400 ms of CPU on one thread take at least 1.2 s, however idle the
    // machine; on both cores they would have taken 0.6 s.
    assert!(took >= Duration::from_millis(1150), "3 x 400 ms of CPU within {took:?}: more than one core");
    let spent = thread_cpu("opal-t-faulty")[0].saturating_sub(own[0]);
    assert!(spent >= Duration::from_millis(1000), "the spinners computed on the type's own thread: {spent:?}");
    server.stop().await;
}
