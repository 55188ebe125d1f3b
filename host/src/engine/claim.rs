//! The claimer: takes pending operations from the store while this node has
//! room, and starts a runner for each.
//!
//! One task per engine, so claims never race each other on this node. It
//! claims when woken (an admission or re-queue anywhere, a runner ending
//! here) and, on a shared store, also every [`POLL`], in case a wake-up was
//! missed. The store decides which operations a claim gets (oldest first,
//! per-type limits store-wide, each to one node only); this task only bounds
//! how many run here (`max_concurrent`). After the store recovers from a
//! storage failure it first resolves what was left running here without a
//! runner (see [`recovery`](super::recovery)).

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use super::Inner;
use super::runner;

use crate::model::{EventKind, OpError, Operation, Status, Timestamp};
use crate::store::{Change, Claim, Expect};

/// How often a node of a cluster looks for work without a wake-up.
const POLL: Duration = Duration::from_millis(500);
/// How long to wait after a failed claim (the store is unavailable).
const RETRY: Duration = Duration::from_secs(1);

pub(super) fn spawn(inner: &Arc<Inner>) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let shutdown = inner.shutdown.clone();
        shutdown.run_until_cancelled(claim_loop(inner)).await;
    });
}

async fn claim_loop(inner: Arc<Inner>) {
    let work = inner.store.work();
    let poll = if inner.store.shared() { POLL } else { Duration::from_secs(3600) };
    let mut recoveries = inner.store.condition().recoveries;
    loop {
        let condition = inner.store.condition();
        if condition.recoveries != recoveries && condition.failed.is_none() {
            recoveries = condition.recoveries;
            super::recovery::after_failure(&inner).await;
        }
        // A draining node takes no more work: what waits goes to other nodes, or to its restart.
        let draining = inner.draining.load(std::sync::atomic::Ordering::Relaxed);
        let room = if draining { 0 } else { inner.lock_queue().room(inner.config.max_concurrent) };
        let mut full = false;
        let mut wake_at = None;
        if room > 0 {
            match inner.store.commit(Change::Claim(claim(&inner, room))).await {
                Ok(receipt) => {
                    inner.paused.store(receipt.paused, std::sync::atomic::Ordering::Relaxed);
                    wake_at = receipt.wake_at;
                    inner.lock_queue().set_pending(receipt.pending);
                    full = receipt.claimed.len() == room && receipt.pending > 0;
                    for op in receipt.claimed {
                        start(&inner, op).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim pending operations; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        if full {
            // Every place taken and more waiting: wait for a runner to end.
            inner.room.notified().await;
            continue;
        }
        // A retry that is not due yet wakes the claimer when it is.
        let until_due = wake_at
            .and_then(|at: crate::model::Timestamp| at.system_time().duration_since(std::time::SystemTime::now()).ok())
            .map_or(poll, |d| d.min(poll) + Duration::from_millis(1));
        tokio::select! {
            () = work.notified() => {}
            () = inner.room.notified() => {}
            () = tokio::time::sleep(until_due) => {}
        }
    }
}

fn claim(inner: &Inner, room: usize) -> Claim {
    let mut types: Vec<String> = inner.registry.list().iter().map(|p| p.name.clone()).collect();
    types.extend(inner.workflows.list().iter().map(|w| w.workflow.name.clone()));
    let limits = inner.config.types.iter().filter_map(|(t, p)| Some((t.clone(), p.max_concurrent?))).collect();
    Claim { node: inner.config.node.clone(), max: room, types, limits, lease: inner.config.lease }
}

/// Starts a runner for `op`, which the store now records as running here,
/// with the plugin it was admitted with (or the same version, loaded here);
/// or, for a workflow run, its driver.
async fn start(inner: &Arc<Inner>, op: Operation) {
    // Every line logged while it runs names the operation.
    let span = tracing::info_span!("operation", id = %op.id, r#type = %op.op_type, target = %op.target);
    if let Some(flow) = inner.workflows.get(&op.op_type) {
        let switch = inner.lock_queue().insert(op.id, op.attempt, true);
        let task = inner.clone();
        inner.tasks.spawn(
            async move {
                let id = op.id;
                super::drive::drive(&task, op, flow, switch).await;
                task.lock_queue().finished(id);
                task.room.notify_one();
            }
            .instrument(span),
        );
        return;
    }
    let admitted = inner.admitted.lock().expect("admitted poisoned").remove(&op.id);
    let plugin = admitted.or_else(|| {
        let version = semver::Version::parse(&op.plugin_version).ok()?;
        inner.registry.get_exact(&op.op_type, &version)
    });
    let Some(plugin) = plugin else {
        unavailable(inner, op).await;
        return;
    };
    let switch = inner.lock_queue().insert(op.id, op.attempt, false);
    let handle = inner.runners.handle(&op.op_type).clone();
    let task = inner.clone();
    let run = async move {
        let id = op.id;
        let policy = task.config.types.get(&op.op_type).cloned().unwrap_or_default();
        runner::run(&task, op, plugin, &switch, &policy).await;
        task.lock_queue().finished(id);
        task.room.notify_one();
    };
    inner.tasks.spawn_on(run.instrument(span), &handle);
}

/// Fails an operation whose plugin version is not loaded on this node.
async fn unavailable(inner: &Inner, mut op: Operation) {
    let now = Timestamp::now();
    op.status = Status::Failed;
    op.finished_at = Some(now);
    op.message = format!("plugin {} {} is not loaded on node {}", op.op_type, op.plugin_version, inner.config.node);
    op.error = Some(OpError::new("internal", op.message.clone()));
    tracing::error!(op = %op.id, "{}", op.message);
    let change =
        Change::Operation { kind: EventKind::Failed, operation: Arc::new(op), at: now, expect: Expect::Runner };
    if let Err(e) = inner.store.commit(change).await {
        tracing::error!(error = %e, "cannot record a claimed operation's failure");
    }
}
