//! Outbound notifications against a real server and a real receiver on
//! loopback: signed deliveries for failed and completed operations, at least
//! once across a receiver that is down for 10 s and across a SIGKILL of
//! Opal, and a receiver that never answers delaying no operation.
//! `notify_postgres` runs the same suite on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use opal_host::ServerConfig;
use opal_host::hooks::signature::verify_opal;
use opal_tests::TestServer;
use opal_tests::serve::Serve;
use serde_json::{Value, json};

const SECRET: &str = "a notification secret for the tests";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    signature: String,
    body: Vec<u8>,
}

/// A receiver on `addr` (a free port if `None`); records what it gets.
async fn receiver(addr: Option<SocketAddr>) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                sink.lock().unwrap().push(Received {
                    delivery: text("x-opal-delivery"),
                    signature: text("x-opal-signature"),
                    body: body.to_vec(),
                });
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, got)
}

/// A free loopback port, with nobody on it.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn rule_toml(addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[notify]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nsecret = \"{SECRET}\"\n\
         events = [\"completed\", \"failed\"]\ninitial_delay = \"200ms\"\nmax_delay = \"1s\"\nmax_attempts = 100\n{extra}"
    )
}

fn rules(dir: &std::path::Path, text: &str) -> Vec<opal_host::notify::Rule> {
    let path = dir.join("notify.toml");
    std::fs::write(&path, text).unwrap();
    ServerConfig::from_file(&path).unwrap().notify
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Waits (at most `within`) until `got` holds deliveries of all `ops`; returns
/// the delivery ids by operation.
async fn delivered(got: &Mutex<Vec<Received>>, ops: &[String], within: Duration) -> BTreeMap<String, BTreeSet<String>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut by_op: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in got.lock().unwrap().iter() {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            by_op.entry(body["operation"]["id"].as_str().unwrap().to_owned()).or_default().insert(r.delivery.clone());
        }
        if ops.iter().all(|op| by_op.contains_key(op)) {
            return by_op;
        }
        assert!(tokio::time::Instant::now() < deadline, "not every operation was notified: {by_op:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failed_and_completed_operations_are_notified_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, got) = receiver(None).await;
    let notify = rules(dir.path(), &rule_toml(addr, ""));
    let server = TestServer::start_with(&dir.path().join("data"), |c| c.notify = notify).await;
    let ok = server.run_to_end("demo", "n-1", json!({"steps": 2, "step_ms": 10})).await;
    let failed = server.run_to_end("demo", "n-2", json!({"steps": 2, "step_ms": 10, "fail_at_step": 1})).await;
    let cancelled = server.start_demo("n-3", json!({"steps": 100, "step_ms": 50})).await;
    server.post(&format!("/api/v1/operations/{cancelled}/cancel"), &json!({})).await;
    server.wait_terminal(&cancelled).await;
    let ids = [ok["id"].as_str().unwrap().to_owned(), failed["id"].as_str().unwrap().to_owned()];
    delivered(&got, &ids, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = got.lock().unwrap().clone();
    for r in &received {
        verify_opal(SECRET.as_bytes(), Some(&r.signature), &r.body, now()).expect("every notification is signed");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], r.delivery.as_str(), "the delivery id is in the body and the header");
        assert_ne!(body["operation"]["id"], cancelled.as_str(), "cancelled was not asked for");
    }
    let events: BTreeMap<String, String> = received
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (body["operation"]["id"].as_str().unwrap().to_owned(), body["event"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(events[&ids[0]], "completed");
    assert_eq!(events[&ids[1]], "failed");

    // Their state is visible: to an admin for all, and per operation.
    let all = server.get("/api/v1/notifications").await.body;
    let list = all["notifications"].as_array().unwrap();
    assert!(list.iter().all(|n| n["state"] == "delivered" && n["attempts"] == 1), "{all}");
    let own = server.get(&format!("/api/v1/operations/{}/notifications", ids[1])).await.body;
    assert_eq!(own["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(own["notifications"][0]["event"], "failed");
    assert!(!all.to_string().contains(SECRET), "the secret is never shown");
}

#[tokio::test]
async fn a_receiver_down_for_10_s_gets_every_notification_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let notify = rules(dir.path(), &rule_toml(addr, ""));
    let server = TestServer::start_with(&dir.path().join("data"), |c| c.notify = notify).await;
    let mut ops = Vec::new();
    for i in 0..5 {
        let params = if i % 2 == 0 {
            json!({"steps": 1, "step_ms": 5})
        } else {
            json!({"steps": 1, "step_ms": 5, "fail_at_step": 1})
        };
        ops.push(server.run_to_end("demo", &format!("down-{i}"), params).await["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pending = server.get("/api/v1/notifications").await.body;
    let list = pending["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert!(
        list.iter().all(|n| n["state"] == "pending" && n["attempts"].as_u64() > Some(1)),
        "retried meanwhile: {pending}"
    );
    assert!(list.iter().all(|n| n["last_error"].is_string()));

    let (_, got) = receiver(Some(addr)).await;
    let by_op = delivered(&got, &ops, Duration::from_secs(20)).await;
    let deliveries: Vec<String> = got.lock().unwrap().iter().map(|r| r.delivery.clone()).collect();
    let distinct: BTreeSet<&String> = deliveries.iter().collect();
    println!(
        "{} requests, {} distinct deliveries, {} duplicates",
        deliveries.len(),
        distinct.len(),
        deliveries.len() - distinct.len()
    );
    assert_eq!(distinct.len(), 5, "one delivery id per notification: {by_op:?}");
    for n in list {
        assert!(distinct.contains(&n["id"].as_str().unwrap().to_owned()), "each delivery id arrived at least once");
    }
    // A delivery is recorded once the receiver's answer is in: the last
    // one may arrive a moment after its request did.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let after = server.get("/api/v1/notifications").await.body;
        if after["notifications"].as_array().unwrap().iter().all(|n| n["state"] == "delivered") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all recorded as delivered: {after}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn notifications_pending_at_a_sigkill_are_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let config = dir.path().join("opal.toml");
    std::fs::write(&config, rule_toml(addr, "")).unwrap();
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data, &config).await.expect("opal serve starts");
    let client = reqwest::Client::new();
    let mut ops = Vec::new();
    for i in 0..3 {
        let body = json!({"type": "demo", "target": format!("k-{i}"), "params": {"steps": 1, "step_ms": 5}});
        let reply = client.post(format!("{}/api/v1/operations", serve.base)).json(&body).send().await.unwrap();
        ops.push(reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    // Ended, their notifications pending (nobody listens yet).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list: Value =
            client.get(format!("{}/api/v1/notifications", serve.base)).send().await.unwrap().json().await.unwrap();
        if list["notifications"].as_array().is_some_and(|l| l.len() == 3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no notifications: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.kill();
    let (_, got) = receiver(Some(addr)).await;
    let serve = Serve::start(&data, &config).await.expect("opal serve starts again");
    delivered(&got, &ops, Duration::from_secs(40)).await;
    drop(serve);
}

#[tokio::test]
async fn a_receiver_that_never_answers_delays_no_operation() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = black_hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    let slow = rules(dir.path(), &rule_toml(addr, "timeout = \"30s\""));
    async fn run_times(server: &TestServer, prefix: &str) -> Vec<f64> {
        let mut times = Vec::new();
        for i in 0..6 {
            let op = server.run_to_end("demo", &format!("{prefix}-{i}"), json!({"steps": 4, "step_ms": 25})).await;
            let at = |k: &str| humantime::parse_rfc3339(op[k].as_str().unwrap()).unwrap();
            times.push(at("finished_at").duration_since(at("started_at")).unwrap().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        times
    }
    let with = TestServer::start_with(&dir.path().join("with"), |c| c.notify = slow).await;
    let with_times = run_times(&with, "w").await;
    let stuck = with.get("/api/v1/notifications").await.body;
    assert!(stuck["notifications"].as_array().unwrap().iter().all(|n| n["state"] == "pending"), "{stuck}");
    with.stop().await;
    let without = TestServer::start_with(&dir.path().join("without"), |_| {}).await;
    let without_times = run_times(&without, "o").await;
    let median = |t: &[f64]| t[t.len() / 2];
    println!(
        "run time medians: {:.1} ms with a receiver that never answers, {:.1} ms without",
        median(&with_times),
        median(&without_times)
    );
    assert!(
        (median(&with_times) - median(&without_times)).abs() < 50.0,
        "equal run times: {with_times:?} vs {without_times:?}"
    );
}

#[tokio::test]
async fn a_long_run_and_a_gate_waiting_for_approval_are_notified_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, got) = receiver(None).await;
    let text = format!(
        "[[notify]]\nname = \"watch\"\nurl = \"http://{addr}/hook\"\nsecret = \"{SECRET}\"\n\
         events = [\"running_longer\", \"waiting\"]\nrunning_longer_than = \"300ms\"\ntypes = [\"demo\", \"gated\"]\n"
    );
    let notify = rules(dir.path(), &text);
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("gated.toml"),
        "name = \"gated\"\n[[steps]]\nname = \"go\"\ntype = \"demo\"\nparams = { steps = 1, step_ms = 1 }\n\
         approval = { role = \"operator\", timeout = \"1h\" }\n",
    )
    .unwrap();
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.notify = notify;
        c.workflow_dirs = vec![flows];
    })
    .await;
    let long = server.start_demo("long-1", json!({"steps": 20, "step_ms": 100})).await;
    let run = server.post("/api/v1/operations", &json!({"type": "gated", "target": "g-1"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    delivered(&got, &[long.clone(), run.clone()], Duration::from_secs(20)).await;
    server.wait_terminal(&long).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events: Vec<(String, String)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (body["operation"]["id"].as_str().unwrap().to_owned(), body["event"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(events.iter().filter(|e| e.0 == long).count(), 1, "once per attempt, however long: {events:?}");
    assert!(events.contains(&(long.clone(), "running_longer".to_owned())));
    assert!(events.contains(&(run.clone(), "waiting".to_owned())), "{events:?}");
}

/// The code block of `lang` in docs/hooks.md.
fn docs_block(lang: &str) -> String {
    let docs =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/hooks.md")).unwrap();
    let fence = format!("```{lang}\n");
    let start = docs.find(&fence).unwrap_or_else(|| panic!("docs/hooks.md has a ```{lang} block")) + fence.len();
    docs[start..start + docs[start..].find("```").unwrap()].to_owned()
}

/// The receivers' examples in docs/hooks.md, run as they are by python3 and
/// node on a real notification: they accept it, and refuse it tampered.
#[tokio::test]
async fn the_docs_verification_examples_accept_a_real_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, got) = receiver(None).await;
    let notify = rules(dir.path(), &rule_toml(addr, ""));
    let server = TestServer::start_with(&dir.path().join("data"), |c| c.notify = notify).await;
    let op = server.run_to_end("demo", "docs-1", json!({"steps": 1, "step_ms": 1})).await;
    delivered(&got, &[op["id"].as_str().unwrap().to_owned()], Duration::from_secs(20)).await;
    let r = got.lock().unwrap()[0].clone();
    std::fs::write(dir.path().join("body"), &r.body).unwrap();
    let mut tampered = r.body.clone();
    tampered[0] = b' ';
    std::fs::write(dir.path().join("tampered"), &tampered).unwrap();
    let python = format!(
        "{}\nimport os, sys\nbody = open(sys.argv[1], 'rb').read()\nprint(verify(os.environ['SECRET'].encode(), os.environ['SIG'], body))\n",
        docs_block("python")
    );
    let node = format!(
        "{}\nconst body = require('node:fs').readFileSync(process.argv[2]);\nconsole.log(verify(process.env.SECRET, process.env.SIG, body));\n",
        docs_block("js")
    );
    std::fs::write(dir.path().join("verify.py"), python).unwrap();
    std::fs::write(dir.path().join("verify.js"), node).unwrap();
    for (program, script, yes) in [("python3", "verify.py", "True"), ("node", "verify.js", "true")] {
        for (file, expected) in [("body", yes), ("tampered", if yes == "True" { "False" } else { "false" })] {
            let out = std::process::Command::new(program)
                .arg(dir.path().join(script))
                .arg(dir.path().join(file))
                .env("SECRET", SECRET)
                .env("SIG", &r.signature)
                .output()
                .unwrap_or_else(|e| panic!("{program} runs: {e}"));
            assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected, "{program} on the {file} body");
        }
    }
}

/// A receiver that always answers 500.
async fn failing_receiver() -> (SocketAddr, Arc<Mutex<usize>>) {
    let hits: Arc<Mutex<usize>> = Arc::default();
    let count = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                *count.lock().unwrap() += 1;
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

#[tokio::test]
async fn a_notification_is_dead_after_its_attempts_and_slack_gets_text() {
    let dir = tempfile::tempdir().unwrap();
    let (bad, hits) = failing_receiver().await;
    let (slack, got) = receiver(None).await;
    let text = format!(
        "[[notify]]\nname = \"bad\"\nurl = \"http://{bad}/hook\"\nsecret = \"{SECRET}\"\nevents = [\"failed\"]\n\
         max_attempts = 3\ninitial_delay = \"100ms\"\nmax_delay = \"200ms\"\n\n\
         [[notify]]\nname = \"chat\"\nurl = \"http://{slack}/hook\"\nsecret = \"{SECRET}\"\nevents = [\"failed\"]\nformat = \"slack\"\n"
    );
    let notify = rules(dir.path(), &text);
    let server = TestServer::start_with(&dir.path().join("data"), |c| c.notify = notify).await;
    let op = server.run_to_end("demo", "web-7", json!({"steps": 1, "step_ms": 1, "fail_at_step": 1})).await;
    let id = op["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let list = server.get(&format!("/api/v1/operations/{id}/notifications")).await.body;
        let dead = list["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["rule"] == "bad" && n["state"] == "dead")
            .cloned();
        if let Some(dead) = dead {
            break dead;
        }
        assert!(tokio::time::Instant::now() < deadline, "never dead: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["last_error"], "the receiver answered 500 Internal Server Error");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*hits.lock().unwrap(), 3, "no attempt after the last");
    let text_body: Value = serde_json::from_slice(&got.lock().unwrap()[0].body).unwrap();
    let message = text_body["text"].as_str().unwrap();
    assert!(message.contains("demo on web-7 failed"), "{message}");
    assert_eq!(text_body.as_object().unwrap().len(), 1, "Slack's shape: {text_body}");
}
