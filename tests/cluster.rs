//! The cluster, end to end: several real `opal serve` processes on one
//! PostgreSQL database (a fresh one per test), driven over loopback HTTP and
//! WebSocket, and killed, frozen, terminated and cut off from the database.
//!
//! - Of 200 concurrent identical starts spread over three nodes exactly one is
//!   admitted; one idempotency key sent 200 times makes one operation.
//! - Seqs are one cluster-wide sequence: a client on one node sees an
//!   operation run on another with the seqs a client there sees, and a resume
//!   with `since` works on any node.
//! - A node killed (SIGKILL) or frozen past its lease (SIGSTOP) loses its
//!   operations to the others, which re-queue and complete each exactly once;
//!   the `journal` plugin's files show that no two attempts ever ran at once,
//!   and a frozen node's late writes are refused.
//! - A schedule fires once per fire time across the cluster.
//! - Killed database connections cost 503s with Retry-After, never a 500 or
//!   an acknowledged operation.
//! - A second SIGTERM (the first drains) hands running operations back at once and closes sockets
//!   with 1012.
//! - A database made read-only costs 503s with Retry-After and a `failed`
//!   storage status; once writable again the node recovers by itself.
//! - A workflow run whose node is killed in step 2 of 3 continues on another
//!   node at step 2; step 1 never runs again.
//!
//! Each test needs PostgreSQL (`OPAL_TEST_DATABASE_URL`, see
//! `tests/support/cluster.rs`) and is skipped, with a notice, without one
//! (failed under `CI=true`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use opal_tests::cluster::{
    Node, NodeOptions, Signal, TestDatabase, eventually, journal_attempts, journal_grant, read_journal, unix_ms_now,
};
use opal_tests::{Reply, close_code, plugin_dir};
use serde_json::{Value, json};

const TERMINAL_EVENTS: [&str; 3] = ["operation.completed", "operation.failed", "operation.cancelled"];

fn is_terminal(op: &Value) -> bool {
    matches!(op["status"].as_str(), Some("completed" | "failed" | "cancelled"))
}

/// `GET /api/v1/operations/{id}` on `node`, which must answer 200.
async fn op(node: &Node, id: &str) -> Value {
    let reply = node.get(&format!("/api/v1/operations/{id}")).await;
    assert_eq!(reply.status, 200, "GET operation {id} on node {}: {reply:?}", node.id);
    reply.body
}

/// `GET /api/v1/operations/{id}/events` on `node`: the stored event frames.
async fn events(node: &Node, id: &str) -> Vec<Value> {
    let reply = node.get(&format!("/api/v1/operations/{id}/events")).await;
    assert_eq!(reply.status, 200, "GET events of {id} on node {}: {reply:?}", node.id);
    reply.body["events"].as_array().expect("an events array").clone()
}

fn seq(event: &Value) -> u64 {
    event["seq"].as_u64().unwrap_or_else(|| panic!("an event without a seq: {event}"))
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["event"].as_str().unwrap_or("?")).collect()
}

/// Starts an operation on `node` (it must be accepted); returns its id.
async fn start(node: &Node, body: &Value) -> String {
    let reply = node.post("/api/v1/operations", body).await;
    assert_eq!(reply.status, 202, "start on node {}: {reply:?}", node.id);
    assert!(reply.body["node"].is_null(), "a pending operation has no node yet: {}", reply.body);
    reply.body["id"].as_str().expect("an id").to_owned()
}

/// How many replies had each status.
fn tally(replies: &[Reply]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        *counts.entry(reply.status).or_insert(0) += 1;
    }
    counts
}

/// A first node, then `n2` and `n3` together (so the database is created by
/// one node and joined by two at once).
async fn three_nodes(db: &TestDatabase, options: NodeOptions) -> Vec<Node> {
    let mut nodes = vec![Node::start(db, "n1", options.clone()).await];
    nodes.extend(Node::start_all(db, &["n2", "n3"], options).await);
    nodes
}

/// The `journal` plugin, granted `<dir>/journal`, for every node of a
/// cluster; `lease` if given.
struct JournalCluster {
    dir: tempfile::TempDir,
    options: NodeOptions,
}

impl JournalCluster {
    fn new(lease: Option<&str>) -> JournalCluster {
        let dir = tempfile::tempdir().unwrap();
        let plugins = plugin_dir(dir.path(), &["journal"]);
        let journal = dir.path().join("journal");
        std::fs::create_dir_all(&journal).unwrap();
        let mut options = NodeOptions::default().plugins(&plugins).config(&journal_grant(&journal)).max_concurrent(64);
        if let Some(lease) = lease {
            options = options.lease(lease);
        }
        JournalCluster { dir, options }
    }

    /// The host path of journal file `file`.
    fn file(&self, file: &str) -> PathBuf {
        self.dir.path().join("journal").join(file)
    }
}

/// A `journal` operation on `target` writing `<target>` in the journal directory.
fn journal_op(target: &str, steps: u32, step_ms: u32) -> Value {
    json!({"type": "journal", "target": target, "params": {"file": target, "steps": steps, "step_ms": step_ms}})
}

/// Waits until every operation of `ids` (journal operations, whose file is
/// named after their target) runs on node `on` and has journaled a step.
async fn wait_running_on(reader: &Node, ids: &[String], on: &str, cluster: &JournalCluster) {
    eventually(
        Duration::from_secs(30),
        format!("{} operations running on node {on}, each with a journal line", ids.len()),
        || async move {
            for id in ids {
                let op = op(reader, id).await;
                let file = op["target"].as_str().unwrap_or_default();
                if op["status"] != "running" || op["node"] != on || read_journal(&cluster.file(file)).is_empty() {
                    return Err(op.to_string());
                }
            }
            Ok(())
        },
    )
    .await;
}

/// Asserts that every operation of `ids` still runs its first attempt on node `on`.
async fn assert_still_on(reader: &Node, ids: &[String], on: &str) {
    for id in ids {
        let op = op(reader, id).await;
        assert!(
            op["status"] == "running" && op["node"] == on && op["attempt"] == 1,
            "a node joining the cluster must take nothing from a live node: {op}"
        );
    }
}

/// After the event that re-queued attempt `old`, no event of attempt `old`
/// (its runner's writes must be refused once its lease is gone).
fn assert_no_writes_after_requeue(events: &[Value], old: u64) {
    let requeue = events
        .iter()
        .position(|e| e["event"] == "operation.requeued" && e["operation"]["attempt"].as_u64() > Some(old))
        .unwrap_or_else(|| panic!("no operation.requeued after attempt {old}: {:?}", kinds(events)));
    for event in &events[requeue + 1..] {
        if let Some(attempt) = event["operation"]["attempt"].as_u64() {
            assert!(attempt > old, "attempt {old} wrote after it was re-queued: {event}");
        }
    }
}

/// An operation that was running on node `dead` when it went away: it
/// completed exactly once, on another node, in a later attempt, after an
/// `operation.requeued`; nothing of the first attempt was recorded after the
/// re-queue; its journal shows attempts one after the other, the last one
/// complete.
async fn assert_completed_once_elsewhere(reader: &Node, id: &str, dead: &str, journal: &Path, steps: u32) {
    let op = op(reader, id).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert!(op["node"].is_string() && op["node"] != dead, "completed by another node than {dead}: {op}");
    let attempt = op["attempt"].as_u64().expect("an attempt");
    assert!(attempt >= 2, "re-run as a later attempt: {op}");

    let events = events(reader, id).await;
    let seqs: Vec<u64> = events.iter().map(seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events in seq order: {seqs:?}");
    let terminal: Vec<&Value> =
        events.iter().filter(|e| TERMINAL_EVENTS.contains(&e["event"].as_str().unwrap_or_default())).collect();
    assert_eq!(terminal.len(), 1, "exactly one terminal event for {id}: {:?}", kinds(&events));
    assert_eq!(terminal[0]["event"], "operation.completed", "{}", terminal[0]);
    assert_eq!(terminal[0]["operation"]["attempt"], attempt, "completed by the last attempt: {}", terminal[0]);
    assert_eq!(terminal[0]["operation"]["node"], op["node"], "{}", terminal[0]);
    assert_no_writes_after_requeue(&events, 1);

    let attempts = journal_attempts(journal);
    assert!(
        attempts.len() >= 2,
        "{}: the first attempt and the re-run both journaled: {attempts:?}",
        journal.display()
    );
    assert!(attempts.len() as u64 <= attempt, "{}: more attempts ran than recorded ({attempt})", journal.display());
    let last: Vec<u32> = attempts.last().unwrap().lines.iter().map(|l| l.step).collect();
    assert_eq!(
        last,
        (1..=steps).collect::<Vec<_>>(),
        "{}: the last attempt journaled each step once",
        journal.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_across_three_nodes_admit_exactly_one() {
    let Some(db) = TestDatabase::create().await else { return };
    let nodes = three_nodes(&db, NodeOptions::default()).await;
    for node in &nodes {
        let status = node.status().await;
        assert_eq!(status["node"], node.id.as_str(), "{status}");
        assert_eq!(status["store"], "postgres", "{status}");
    }

    // One (type, target), 200 times at once, round-robin over the nodes; the
    // operation lasts long enough to be active for all of them.
    let body = json!({"type": "demo", "target": "dup", "params": {"steps": 100, "step_ms": 300}});
    let replies = join_all((0..200).map(|i| nodes[i % 3].post("/api/v1/operations", &body))).await;
    let accepted: Vec<&Reply> = replies.iter().filter(|r| r.status == 202).collect();
    assert_eq!(accepted.len(), 1, "exactly one start is admitted; statuses: {:?}", tally(&replies));
    let id = accepted[0].body["id"].as_str().expect("an id");
    for reply in replies.iter().filter(|r| r.status != 202) {
        assert_eq!(reply.status, 409, "every other start is a conflict; statuses: {:?}: {reply:?}", tally(&replies));
        assert_eq!(reply.body["operation"]["id"], id, "every 409 names the admitted operation: {reply:?}");
    }
    for node in &nodes {
        let listed = node.get("/api/v1/operations?target=dup").await.body;
        let ids: Vec<&Value> = listed["operations"].as_array().unwrap().iter().map(|o| &o["id"]).collect();
        assert_eq!(ids, [id], "node {} lists one operation on the target", node.id);
    }

    // One idempotency key, 200 times at once: one operation, named by every answer.
    let body = json!({"type": "demo", "target": "idem", "params": {"steps": 100, "step_ms": 300},
                      "idempotency_key": "cluster-key-1"});
    let replies = join_all((0..200).map(|i| nodes[i % 3].post("/api/v1/operations", &body))).await;
    let counts = tally(&replies);
    assert_eq!(counts.get(&202), Some(&1), "the first use of the key is admitted, once: {counts:?}");
    assert_eq!(counts.get(&200), Some(&199), "every replay answers 200 with the original: {counts:?}");
    let id = replies.iter().find(|r| r.status == 202).unwrap().body["id"].as_str().unwrap();
    for reply in &replies {
        assert_eq!(reply.body["id"], id, "every answer names the one operation: {reply:?}");
    }
    let listed = nodes[1].get("/api/v1/operations?target=idem").await.body;
    assert_eq!(listed["operations"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_node_sees_the_seqs_of_an_operation_run_on_another() {
    let Some(db) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    // Only b has `steady`, so b runs the operation and a only hears of it.
    let plugins = plugin_dir(dir.path(), &["steady"]);
    let fast = NodeOptions::default().arg("--progress-window-ms").arg("50");
    let a = Node::start(&db, "a", fast.clone()).await;
    let b = Node::start(&db, "b", fast.plugins(&plugins)).await;

    let (mut on_a, mut on_b) = (a.ws().await, b.ws().await);
    assert_eq!(on_a.hello["history"], on_b.hello["history"], "one cluster, one history");
    let from_a = on_a.subscribe(&["operations"]).await.remove(0)["seq"].as_u64().unwrap();
    let from_b = on_b.subscribe(&["operations"]).await.remove(0)["seq"].as_u64().unwrap();

    let id = start(&b, &json!({"type": "steady", "target": "cross", "params": {"steps": 30, "step_ms": 40}})).await;
    let after = from_a.max(from_b);
    let seen_by = |events: Vec<Value>| -> Vec<Value> { events.into_iter().filter(|e| seq(e) > after).collect() };
    let (seen_a, seen_b) = tokio::join!(on_a.events_until_terminal(&id), on_b.events_until_terminal(&id));
    let (seen_a, seen_b) = (seen_by(seen_a), seen_by(seen_b));
    assert_eq!(kinds(&seen_a).first(), Some(&"operation.created"), "{:?}", kinds(&seen_a));
    assert_eq!(kinds(&seen_a).last(), Some(&"operation.completed"), "{:?}", kinds(&seen_a));
    assert_eq!(seen_a, seen_b, "a client on a receives exactly what a client on b does, with the same seqs");

    let done = op(&a, &id).await;
    assert_eq!(done["node"], "b", "{done}");
    let stored = events(&a, &id).await;
    assert_eq!(stored, events(&b, &id).await, "both nodes store one history");
    let stored_seqs: Vec<u64> = stored.iter().map(seq).collect();
    assert!(
        stored_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the only activity in the cluster has dense seqs: {stored_seqs:?}"
    );
    let lifecycle: Vec<u64> = stored.iter().filter(|e| e["event"] != "operation.log").map(seq).collect();
    let live: Vec<u64> = seen_a.iter().filter(|e| e["operation"]["id"] == id.as_str()).map(seq).collect();
    assert_eq!(live, lifecycle, "the socket's seqs are the stored ones (the operations topic carries no log lines)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_operations_complete_exactly_once_on_the_others() {
    let Some(db) = TestDatabase::create().await else { return };
    let cluster = JournalCluster::new(Some("2s"));
    const STEPS: u32 = 60;
    let mut x = Node::start(&db, "x", cluster.options.clone()).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(start(&x, &journal_op(&format!("k{i}"), STEPS, 100)).await);
    }
    wait_running_on(&x, &ids, "x", &cluster).await;
    let others = Node::start_all(&db, &["y", "z"], cluster.options.clone()).await;
    assert_still_on(&others[0], &ids, "x").await;

    let killed = Instant::now();
    x.kill().await;
    let ids = &ids;
    let reader = &others[0];
    // Lease (2 s) plus a few seconds: every operation is re-queued by then.
    eventually(
        Duration::from_secs(7).saturating_sub(killed.elapsed()),
        "the killed node's operations re-queued",
        || async move {
            for id in ids {
                let op = op(reader, id).await;
                if op["attempt"].as_u64() < Some(2) {
                    return Err(op.to_string());
                }
            }
            Ok(())
        },
    )
    .await;
    eventually(Duration::from_secs(40), "the re-queued operations ended", || async move {
        for id in ids {
            let op = op(reader, id).await;
            if !is_terminal(&op) {
                return Err(op.to_string());
            }
        }
        Ok(())
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        assert_completed_once_elsewhere(&others[1], id, "x", &cluster.file(&format!("k{i}")), STEPS).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_lease_loses_its_operation_and_its_late_writes() {
    let Some(db) = TestDatabase::create().await else { return };
    let cluster = JournalCluster::new(Some("2s"));
    const STEPS: u32 = 80;
    let x = Node::start(&db, "x", cluster.options.clone()).await;
    let id = start(&x, &journal_op("paused", STEPS, 100)).await;
    let ids = [id.clone()];
    wait_running_on(&x, &ids, "x", &cluster).await;
    let y = Node::start(&db, "y", cluster.options.clone()).await;
    assert_still_on(&y, &ids, "x").await;

    let stopped = Instant::now();
    x.signal(Signal::Stop);
    let (y_ref, id_ref) = (&y, id.as_str());
    let taken = eventually(
        Duration::from_secs(7).saturating_sub(stopped.elapsed()),
        "the frozen node's operation re-queued and running on y",
        || async move {
            let op = op(y_ref, id_ref).await;
            if op["attempt"].as_u64() >= Some(2) && op["node"] == "y" && op["status"] == "running" {
                Ok(op)
            } else {
                Err(op.to_string())
            }
        },
    )
    .await;
    // Frozen for 5 s in all, well past its 2 s lease, then thawed.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(stopped.elapsed())).await;
    let thawed_ms = unix_ms_now();
    x.signal(Signal::Cont);

    let x_ref = &x;
    eventually(Duration::from_secs(5), "the thawed node stops the runner it lost", || async move {
        let status = x_ref.status().await;
        if status["active_operations"] == 0 { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
    let done = eventually(Duration::from_secs(30), "the operation ended on y", || async move {
        let op = op(y_ref, id_ref).await;
        if is_terminal(&op) { Ok(op) } else { Err(op.to_string()) }
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["node"], "y", "the final record is the new owner's: {done}");
    assert_eq!(done["attempt"], taken["attempt"], "{done}");

    let events = events(&x, &id).await;
    assert_no_writes_after_requeue(&events, 1);
    let terminal: Vec<&Value> =
        events.iter().filter(|e| TERMINAL_EVENTS.contains(&e["event"].as_str().unwrap_or_default())).collect();
    assert_eq!(terminal.len(), 1, "one terminal event: {:?}", kinds(&events));

    // The journal: the thawed runner may have written a line in the moment
    // before it learnt it had lost the operation, never later.
    let lines = read_journal(&cluster.file("paused"));
    let old = &lines.first().expect("the first attempt journaled").nonce;
    let new = &lines.last().unwrap().nonce;
    assert_ne!(old, new, "the re-run journaled with its own nonce");
    let late: Vec<_> = lines.iter().filter(|l| l.nonce == *old && l.unix_ms > thawed_ms + 2000).collect();
    assert!(late.is_empty(), "the frozen node's runner went on after it was thawed: {late:?}");
    let last: Vec<u32> = lines.iter().filter(|l| l.nonce == *new).map(|l| l.step).collect();
    assert_eq!(last, (1..=STEPS).collect::<Vec<_>>(), "the new owner journaled every step once");
    let mut x = x;
    assert!(x.exited().is_none(), "the thawed node goes on serving");
    assert_eq!(x.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_another_node_replays_exactly_the_missed_events() {
    let Some(db) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["steady"]);
    let options = NodeOptions::default().plugins(&plugins).arg("--progress-window-ms").arg("10");
    let a = Node::start(&db, "a", options.clone()).await;
    let b = Node::start(&db, "b", options).await;
    let id = start(&a, &json!({"type": "steady", "target": "r", "params": {"steps": 60, "step_ms": 50}})).await;
    let topic = format!("op:{id}");

    let mut ws = a.ws().await;
    let history = ws.hello["history"].clone();
    let snapshot = ws.subscribe(&[&topic]).await.remove(0);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let m = ws.recv().await;
        assert_eq!(m["type"], "event", "{m}");
        seen.push(seq(&m));
    }
    let last = *seen.last().unwrap();
    drop(ws); // a forced disconnect, mid-run

    let (b_ref, id_ref) = (&b, id.as_str());
    eventually(Duration::from_secs(20), "five more events after the disconnect", || async move {
        let missed = events(b_ref, id_ref).await.iter().filter(|e| seq(e) > last).count();
        if missed >= 5 { Ok(()) } else { Err(format!("{missed} events")) }
    })
    .await;

    let mut ws = b.ws().await;
    assert_eq!(ws.hello["history"], history, "the same history on every node");
    ws.send(json!({"type": "subscribe", "topics": [topic], "since": last})).await;
    let mut replayed = Vec::new();
    let mut ended = false;
    let resumed = loop {
        let m = ws.recv().await;
        match m["type"].as_str() {
            Some("event") => {
                ended |= is_terminal(&m["operation"]);
                replayed.push(seq(&m));
            }
            Some("resumed") => break m,
            _ => panic!("a resume is answered with events, then resumed, not {m}"),
        }
    };
    assert_eq!(resumed["since"], last, "{resumed}");
    assert_eq!(resumed["replayed"], replayed.len(), "{resumed}");
    assert!(replayed.len() >= 5, "the missed events were replayed: {replayed:?}");
    let mut after = Vec::new();
    while !ended {
        let m = ws.recv().await;
        if m["type"] == "event" {
            ended = m["operation"]["id"] == id.as_str() && is_terminal(&m["operation"]);
            after.push(seq(&m));
        }
    }

    let received: Vec<u64> = seen.into_iter().chain(replayed).chain(after).collect();
    let stored = events(&a, &id).await;
    assert_eq!(stored, events(&b, &id).await, "both nodes store one history");
    let from = snapshot["seq"].as_u64().unwrap();
    let expected: Vec<u64> = stored.iter().map(seq).filter(|s| *s > from).collect();
    assert_eq!(received, expected, "exactly the stored events after the snapshot, each once, in order");

    // A seq the cluster has not reached is not to be resumed from: reset.
    let mut ws = b.ws().await;
    let beyond = ws.hello["seq"].as_u64().unwrap() + 1_000_000;
    ws.send(json!({"type": "subscribe", "topics": ["operations"], "since": beyond})).await;
    let reset = ws.recv().await;
    assert_eq!(reset["type"], "snapshot", "{reset}");
    assert_eq!(reset["reset"], true, "{reset}");
    let listed: Vec<&Value> = reset["operations"].as_array().unwrap().iter().map(|o| &o["id"]).collect();
    assert!(listed.contains(&&json!(id)), "the reset snapshot holds the operation: {reset}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_fire_time_across_three_nodes() {
    let Some(db) = TestDatabase::create().await else { return };
    let nodes = three_nodes(&db, NodeOptions::default()).await;
    let created = Instant::now();
    let reply = nodes[0]
        .post(
            "/api/v1/schedules",
            &json!({"cron": "* * * * * *", "type": "demo", "target": "tick", "params": {"steps": 1, "step_ms": 10}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let sid = reply.body["id"].as_str().unwrap().to_owned();
    let schedule_path = format!("/api/v1/schedules/{sid}");
    // The other nodes learn of it from the store (they reload the schedules
    // every 2 s); from then on all three compete for every fire time.
    for node in &nodes[1..] {
        let path = schedule_path.as_str();
        eventually(Duration::from_secs(10), format!("node {} knows the schedule", node.id), || async move {
            let seen = node.get(path).await;
            if seen.status == 200 { Ok(()) } else { Err(format!("{seen:?}")) }
        })
        .await;
    }

    // Ten fire times more, watched; then the schedule is deleted on another node.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let schedule = nodes[1].get(&schedule_path).await.body;
    assert_eq!(nodes[2].http_delete(&schedule_path).await, 204);
    let (deleted_ms, elapsed) = (unix_ms_now(), created.elapsed().as_secs() as usize);
    // Longer than a reload: a node that has not seen the delete yet must not fire it either.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let path = format!("/api/v1/operations?created_by=schedule:{sid}&limit=500");
    let (reader, path) = (&nodes[0], path.as_str());
    let ops = eventually(Duration::from_secs(20), "every scheduled operation ended", || async move {
        let ops = reader.get(path).await.body["operations"].as_array().cloned().unwrap_or_default();
        if ops.iter().all(is_terminal) { Ok(ops) } else { Err(Value::from(ops).to_string()) }
    })
    .await;
    let mut per_second: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for op in &ops {
        let created_at = op["created_at"].as_str().expect("created_at");
        per_second.entry(created_at[..19].to_owned()).or_default().push(format!("{} on {}", op["id"], op["node"]));
        let created_ms = humantime::parse_rfc3339(created_at)
            .expect("an RFC 3339 time")
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(created_ms <= deleted_ms + 1000, "a deleted schedule fired: {op}");
    }
    let doubled: Vec<_> = per_second.iter().filter(|(_, ops)| ops.len() > 1).collect();
    assert!(doubled.is_empty(), "a fire time made more than one operation: {doubled:?}");
    assert!(
        ops.len() + 2 >= elapsed && ops.len() <= elapsed + 1,
        "one operation a second for the schedule's {elapsed} s, not {}: {per_second:?}",
        ops.len()
    );
    assert!(ops.iter().all(|o| o["status"] == "completed"), "{ops:?}");
    assert_eq!(schedule["skipped"], 0, "no fire was taken twice (a second one would be skipped): {schedule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_keeps_firing_when_the_node_that_created_it_is_killed() {
    let Some(db) = TestDatabase::create().await else { return };
    let options = NodeOptions::default().lease("2s");
    let mut a = Node::start(&db, "a", options.clone()).await;
    let b = Node::start(&db, "b", options).await;
    let reply = a
        .post(
            "/api/v1/schedules",
            &json!({"cron": "* * * * * *", "type": "demo", "target": "tick", "params": {"steps": 1, "step_ms": 10}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let sid = reply.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/operations?created_by=schedule:{sid}&limit=500");
    let (reader, path) = (&b, path.as_str());
    let count = || async move { reader.get(path).await.body["operations"].as_array().map_or(0, Vec::len) };
    eventually(Duration::from_secs(10), "two fires", || async move {
        let n = count().await;
        if n >= 2 { Ok(()) } else { Err(format!("{n} operations")) }
    })
    .await;
    a.kill().await;
    let before = count().await;
    eventually(Duration::from_secs(15), "three more fires after the creating node died", || async move {
        let n = count().await;
        if n >= before + 3 { Ok(()) } else { Err(format!("{n} operations, {before} before the kill")) }
    })
    .await;
    let ops = reader.get(path).await.body["operations"].as_array().cloned().unwrap();
    let mut per_second: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &ops {
        *per_second.entry(&op["created_at"].as_str().unwrap()[..19]).or_default() += 1;
    }
    assert!(per_second.values().all(|n| *n == 1), "one operation per fire time: {per_second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_connections_cost_503s_and_lose_nothing_acknowledged() {
    let Some(db) = TestDatabase::create().await else { return };
    let cluster = JournalCluster::new(None);
    let nodes = three_nodes(&db, cluster.options.clone()).await;
    const STEPS: u32 = 50;
    let mut journaled = Vec::new();
    for i in 0..6 {
        journaled.push(start(&nodes[i % 3], &journal_op(&format!("s{i}"), STEPS, 100)).await);
    }
    let (reader, ids) = (&nodes[0], &journaled);
    eventually(Duration::from_secs(20), "the journal operations running", || async move {
        for id in ids {
            let op = op(reader, id).await;
            if op["status"] != "running" {
                return Err(op.to_string());
            }
        }
        Ok(())
    })
    .await;

    // For 3 s every connection to the database is killed every 100 ms, while
    // starts keep coming to every node.
    let storm_until = Instant::now() + Duration::from_secs(3);
    let next_target = AtomicUsize::new(0);
    let demo =
        |i: usize| json!({"type": "demo", "target": format!("storm-{i}"), "params": {"steps": 2, "step_ms": 20}});
    let (killed, replies) = tokio::join!(
        async {
            let mut killed = 0;
            while Instant::now() < storm_until {
                killed += db.terminate_backends().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            killed
        },
        async {
            let mut replies = Vec::new();
            while Instant::now() < storm_until {
                let i = next_target.fetch_add(1, Ordering::SeqCst);
                replies.push(nodes[i % 3].post("/api/v1/operations", &demo(i)).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            replies
        }
    );
    assert!(killed > 0, "the storm killed the nodes' connections");
    eprintln!("starts during the storm: {:?} ({killed} connections killed)", tally(&replies));
    let mut acknowledged: Vec<String> = journaled.clone();
    for reply in &replies {
        match reply.status {
            202 => acknowledged.push(reply.body["id"].as_str().unwrap().to_owned()),
            503 => {
                let retry_after =
                    reply.retry_after.as_deref().unwrap_or_else(|| panic!("a 503 without Retry-After: {reply:?}"));
                assert!(retry_after.parse::<u64>().is_ok(), "Retry-After in whole seconds: {reply:?}");
                assert!(reply.content_type.starts_with("application/problem+json"), "a 503 is a problem: {reply:?}");
            }
            _ => panic!("a start while the database is cut off is admitted or answered 503, never: {reply:?}"),
        }
    }

    // Each node reconnects by itself and admits starts again.
    for node in &nodes {
        let (next_target, demo) = (&next_target, &demo);
        let id = eventually(Duration::from_secs(30), format!("node {} admits starts again", node.id), || async move {
            let i = next_target.fetch_add(1, Ordering::SeqCst);
            let reply = node.post("/api/v1/operations", &demo(i)).await;
            match reply.status {
                202 => Ok(reply.body["id"].as_str().unwrap().to_owned()),
                503 if reply.retry_after.is_some() => Err(format!("{reply:?}")),
                _ => panic!("after the storm, node {} answered a start with {reply:?}", node.id),
            }
        })
        .await;
        acknowledged.push(id);
    }

    // Every acknowledged operation is there, on every node, and ends.
    let (nodes_ref, acknowledged_ref) = (&nodes, &acknowledged);
    eventually(Duration::from_secs(45), "every acknowledged operation ended", || async move {
        for id in acknowledged_ref {
            for node in nodes_ref {
                let op = op(node, id).await;
                if !is_terminal(&op) {
                    return Err(op.to_string());
                }
            }
        }
        Ok(())
    })
    .await;
    for (i, id) in journaled.iter().enumerate() {
        let op = op(&nodes[1], id).await;
        assert_eq!(op["status"], "completed", "a retry-safe operation survives the storm: {op}");
        let attempts = journal_attempts(&cluster.file(&format!("s{i}")));
        let last: Vec<u32> = attempts.last().expect("journaled").lines.iter().map(|l| l.step).collect();
        assert_eq!(last, (1..=STEPS).collect::<Vec<_>>(), "s{i}: the last attempt journaled every step once");
    }
    let mut nodes = nodes;
    for node in &mut nodes {
        assert!(node.exited().is_none(), "node {} survived the storm", node.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_node_hands_its_operations_back_at_once_and_closes_sockets_with_1012() {
    let Some(db) = TestDatabase::create().await else { return };
    // A lease far longer than the test's bound: only a handback can be this fast.
    let cluster = JournalCluster::new(Some("30s"));
    const STEPS: u32 = 60;
    let mut x = Node::start(&db, "x", cluster.options.clone()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(start(&x, &journal_op(&format!("h{i}"), STEPS, 100)).await);
    }
    wait_running_on(&x, &ids, "x", &cluster).await;
    let mut ws = x.ws().await;
    ws.subscribe(&["operations"]).await;
    let y = Node::start(&db, "y", cluster.options.clone()).await;
    assert_still_on(&y, &ids, "x").await;

    let terminated = Instant::now();
    // The first SIGTERM drains (waiting up to drain_timeout for the 6 s
    // runs); the second stops at once and hands them back.
    x.signal(Signal::Term);
    tokio::time::sleep(Duration::from_millis(300)).await;
    x.signal(Signal::Term);
    let code = tokio::time::timeout(Duration::from_secs(15), close_code(ws.stream_mut()))
        .await
        .expect("the terminated node closes its sockets");
    assert_eq!(code, Some(1012), "a node leaving the cluster closes its sockets with 1012 (service restart)");
    let exit = x.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.success(), "a clean shutdown: {exit}");

    let (y_ref, ids_ref) = (&y, &ids);
    eventually(
        Duration::from_secs(12).saturating_sub(terminated.elapsed()),
        "the handed-back operations completed on y, long before the 30 s lease would have run out",
        || async move {
            for id in ids_ref {
                let op = op(y_ref, id).await;
                if !is_terminal(&op) {
                    return Err(op.to_string());
                }
            }
            Ok(())
        },
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        assert_completed_once_elsewhere(&y, id, "x", &cluster.file(&format!("h{i}")), STEPS).await;
        assert_eq!(op(&y, id).await["node"], "y");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_opal_is_refused_and_left_alone() {
    let Some(db) = TestDatabase::create().await else { return };
    // A node migrates the fresh database, and stops.
    let mut first = Node::start(&db, "old", NodeOptions::default()).await;
    first.kill().await;
    let client = db.client().await;
    client.batch_execute("INSERT INTO opal_schema (version, name) VALUES (999, 'from the future')").await.unwrap();
    let tables = |client: tokio_postgres::Client| async move {
        let rows = client
            .query("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'opal%'", &[])
            .await
            .unwrap();
        rows[0].get::<_, i64>(0)
    };
    let before = tables(db.client().await).await;

    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(opal_tests::cluster::opal_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--node-id", "new", "--store", db.url(), "--data"])
        .arg(data.path())
        .output()
        .expect("opal runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a newer database must be refused: {stderr}");
    assert!(stderr.contains("schema version 999") && stderr.contains("newer than this Opal"), "{stderr}");
    assert!(!stderr.contains("panicked"), "a clear error, not a panic: {stderr}");
    assert_eq!(tables(db.client().await).await, before, "nothing was created or dropped");
    let version: i32 = client.query_one("SELECT max(version) FROM opal_schema", &[]).await.unwrap().get(0);
    assert_eq!(version, 999, "the database is left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_node_reaches_the_runner_on_another_within_a_renewal() {
    let Some(db) = TestDatabase::create().await else { return };
    // A 3 s lease: renewals, which carry the cancel to the owner, every second.
    let cluster = JournalCluster::new(Some("3s"));
    let x = Node::start(&db, "x", cluster.options.clone()).await;
    let id = start(&x, &journal_op("far", 600, 100)).await;
    let ids = [id.clone()];
    wait_running_on(&x, &ids, "x", &cluster).await;
    let y = Node::start(&db, "y", cluster.options.clone()).await;
    assert_still_on(&y, &ids, "x").await;

    let asked = Instant::now();
    let reply = y.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    assert_eq!(reply.status, 202, "a cancel on a node that does not run it is accepted: {reply:?}");
    let (x_ref, id_ref) = (&x, id.as_str());
    let ended = eventually(Duration::from_secs(10), "the cancel reaches the runner on x", || async move {
        let op = op(x_ref, id_ref).await;
        if is_terminal(&op) { Ok(op) } else { Err(op.to_string()) }
    })
    .await;
    let took = asked.elapsed();
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["node"], "x", "the owner ended it: {ended}");
    assert!(
        ended["message"].as_str().is_some_and(|m| m.contains("cancelled by") && !m.contains("by force")),
        "the plugin saw cancelled() and stopped by itself: {ended}"
    );
    // One renewal (a third of the lease), plus the plugin's own 100 ms step
    // and scheduling slack; the 5 s grace never came into it.
    assert!(took < Duration::from_millis(2500), "the cancel took {took:?} to reach the runner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_gets_503s_and_the_node_recovers_by_itself_when_it_is_writable_again() {
    let Some(db) = TestDatabase::create().await else { return };
    let node = Node::start(&db, "a", NodeOptions::default()).await;
    let long = start(&node, &json!({"type": "demo", "target": "long", "params": {"steps": 30, "step_ms": 100}})).await;
    let (node, long) = (&node, &long);
    eventually(Duration::from_secs(20), "the long operation running", || async move {
        let op = op(node, long).await;
        if op["status"] == "running" { Ok(()) } else { Err(op.to_string()) }
    })
    .await;

    // Read-only for every new session, and every session made new.
    db.set_read_only(true).await;
    db.terminate_backends().await;
    let demo = |i: usize| json!({"type": "demo", "target": format!("ro-{i}"), "params": {"steps": 1, "step_ms": 1}});
    let next = AtomicUsize::new(0);
    let next = &next;
    let refused = eventually(Duration::from_secs(20), "a start refused with 503", || async move {
        let reply = node.post("/api/v1/operations", &demo(next.fetch_add(1, Ordering::SeqCst))).await;
        match reply.status {
            503 => Ok(reply),
            202 => Err(format!("{reply:?}")),
            _ => panic!("a start on a read-only database is admitted or answered 503, never: {reply:?}"),
        }
    })
    .await;
    assert!(refused.retry_after.is_some(), "{refused:?}");
    assert!(refused.content_type.starts_with("application/problem+json"), "{refused:?}");
    // Failed, and why: the first failure may be the killed connections, the
    // next ones say that the database refuses writes.
    eventually(Duration::from_secs(10), "the status saying storage failed as read-only", || async move {
        let status = node.status().await;
        let read_only = status["storage_error"].as_str().is_some_and(|why| why.contains("read-only"));
        if status["storage"] == "failed" && read_only { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
    assert_eq!(node.get("/readyz").await.status, 503);

    // Writable again: the node finds out by itself.
    db.set_read_only(false).await;
    let lifted = Instant::now();
    let id = eventually(Duration::from_secs(30), "starts admitted again", || async move {
        let reply = node.post("/api/v1/operations", &demo(next.fetch_add(1, Ordering::SeqCst))).await;
        match reply.status {
            202 => Ok(reply.body["id"].as_str().unwrap().to_owned()),
            503 => Err(format!("{reply:?}")),
            _ => panic!("a start after the database is writable again: {reply:?}"),
        }
    })
    .await;
    eprintln!("starts admitted again {:?} after the database was writable", lifted.elapsed());
    let id = &id;
    eventually(Duration::from_secs(20), "the new operation completing", || async move {
        let op = op(node, id).await;
        if op["status"] == "completed" { Ok(()) } else { Err(op.to_string()) }
    })
    .await;
    // The operation that ran through it ends: completed, or interrupted if
    // its outcome could not be held long enough. Nothing stays running.
    let ended = eventually(Duration::from_secs(40), "the long operation ending", || async move {
        let op = op(node, long).await;
        if is_terminal(&op) { Ok(op) } else { Err(op.to_string()) }
    })
    .await;
    assert!(ended["status"] == "completed" || ended["error"]["code"] == "interrupted", "{ended}");
    eprintln!("the long operation ended {} {:?} after", ended["status"], lifted.elapsed());
    let status = node.status().await;
    assert_eq!(status["storage"], "ok", "{status}");
    assert_eq!(node.get("/readyz").await.status, 200);
    let log = node.log();
    assert!(!log.contains("panicked"), "{log}");
}

const WORKFLOW: &str = r#"
name = "three-steps"
[[steps]]
name = "one"
type = "demo"
params = { steps = 1, step_ms = 10 }
[[steps]]
name = "two"
type = "demo"
params = { steps = 30, step_ms = 100 }
retry = { attempts = 3, initial = "100ms", codes = ["interrupted"] }
[[steps]]
name = "three"
type = "demo"
params = { steps = 1, step_ms = 10 }
"#;

/// A workflow run is a durable state machine in the shared database: when
/// the node driving it dies in step 2 of 3, another node takes the run over
/// once the lease expires and continues at step 2; step 1 never runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_run_continues_on_another_node_when_its_node_is_killed() {
    let Some(db) = TestDatabase::create().await else { return };
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("three.toml"), WORKFLOW).unwrap();
    let dir = flows.path().display().to_string();
    let options = NodeOptions::default().lease("2s").arg("--workflows").arg(&dir);
    let mut nodes = Node::start_all(&db, &["a", "b"], options).await;
    let run = start(&nodes[0], &json!({"type": "three-steps", "target": "box"})).await;
    let path = format!("/api/v1/operations?parent={run}");
    let reader = &nodes[1];
    let first = eventually(Duration::from_secs(20), "step two running", || {
        let path = path.clone();
        async move {
            let kids = reader.get(&path).await.body["operations"].as_array().cloned().unwrap_or_default();
            let two = kids.iter().any(|k| k["step"] == "two" && k["status"] == "running");
            let one = kids.iter().find(|k| k["step"] == "one").cloned();
            match (two, one) {
                (true, Some(one)) => Ok(one),
                _ => Err(format!("children: {kids:?}")),
            }
        }
    })
    .await;
    let driver = op(reader, &run).await["node"].as_str().unwrap().to_owned();
    let (dead, alive) = if driver == "a" { (0, 1) } else { (1, 0) };
    nodes[dead].kill().await;
    let survivor = &nodes[alive];
    let id = run.as_str();
    let ended = eventually(Duration::from_secs(40), "the run to end on the survivor", || async move {
        let run = op(survivor, id).await;
        if is_terminal(&run) { Ok(run) } else { Err(format!("{run}")) }
    })
    .await;
    assert_eq!(ended["status"], "completed", "{ended}\n{}", survivor.log_tail(30));
    assert_eq!(ended["node"], survivor.id.as_str(), "the survivor drove it to the end");
    assert!(ended["attempt"].as_u64() >= Some(2), "the run was taken over: {ended}");
    let kids =
        survivor.get(&format!("/api/v1/operations?parent={run}")).await.body["operations"].as_array().cloned().unwrap();
    let ones: Vec<&Value> = kids.iter().filter(|k| k["step"] == "one").collect();
    assert_eq!(ones.len(), 1, "{kids:?}");
    assert_eq!(
        (ones[0]["attempt"].as_u64(), &ones[0]["started_at"]),
        (Some(1), &first["started_at"]),
        "step one never ran again"
    );
    for step in ["two", "three"] {
        let of: Vec<&Value> = kids.iter().filter(|k| k["step"] == step).collect();
        assert_eq!(of.len(), 1, "step {step} is one operation: {kids:?}");
        assert_eq!(of[0]["status"], "completed");
    }
}
