//! Leases, on a shared store: this node's claim on what it runs, and the
//! reaper of other nodes' expired claims.
//!
//! - **Renewal.** Every third of the lease, the node renews the lease of
//!   every operation it runs, and learns what it no longer holds (another
//!   node re-queued or failed it after its lease expired: this node was
//!   paused or cut off) and which cancels were asked of it on other nodes.
//!   A runner that lost its operation is stopped without writing anything
//!   (its writes would be refused anyway: they are fenced on its attempt).
//!   If renewals keep failing for a whole lease, every runner here stops:
//!   another node is about to take them over.
//! - **Reaping.** At the same pace, the node asks the store for running
//!   operations whose lease expired and re-queues or fails each (see
//!   [`recovery`](super::recovery)); a fence on the attempt makes sure only
//!   one node does it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use super::Inner;
use super::recovery;

pub(super) fn spawn(inner: &Arc<Inner>) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let shutdown = inner.shutdown.clone();
        shutdown.run_until_cancelled(lease_loop(inner)).await;
    });
}

async fn lease_loop(inner: Arc<Inner>) {
    let lease = inner.config.lease;
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    loop {
        tick.tick().await;
        // Only what was running before the renewal can have lost its lease
        // by it; anything claimed meanwhile has a fresh one.
        let before: Vec<_> = inner.lock_queue().entries().map(|(id, e)| (*id, e.attempt)).collect();
        let asked = Instant::now();
        match inner.store.renew(&inner.config.node, lease).await {
            Ok(renewal) => {
                renewed = asked;
                let held: HashSet<_> = renewal.held.iter().copied().collect();
                for (id, attempt) in before {
                    if !held.contains(&(id, attempt)) {
                        lose(&inner, id, "another node took it over after its lease expired");
                    }
                }
                for (id, by) in renewal.cancels {
                    if let Some(switch) = inner.lock_queue().switch(id) {
                        inner.request_cancel(switch, &by);
                    }
                }
            }
            Err(e) if renewed.elapsed() >= lease => {
                tracing::error!(error = %e, "cannot renew leases for a whole lease; stopping every runner here");
                for (id, _) in before {
                    lose(&inner, id, "this node could not renew its lease");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew leases; retrying"),
        }
        reap(&inner).await;
        // The status's queue length, store-wide (claims count it too).
        if let Ok(pending) = inner.store.pending_count().await {
            inner.lock_queue().set_pending(pending);
        }
    }
}

/// Stops a runner that no longer owns its operation, without recording.
fn lose(inner: &Inner, id: crate::model::OperationId, why: &str) {
    if let Some(switch) = inner.lock_queue().switch(id) {
        tracing::warn!(op = %id, "stopping the runner: {why}");
        switch.lose();
    }
}

/// Re-queues or fails the operations whose owner's lease expired.
async fn reap(inner: &Inner) {
    let orphans = match inner.store.orphans(&inner.config.node, false).await {
        Ok(orphans) => orphans,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for expired leases");
            return;
        }
    };
    for op in orphans {
        let why = format!("its node {} stopped renewing its lease", op.node.as_deref().unwrap_or("?"));
        if let Err(e) = recovery::resolve(&inner.store, &inner.registry, &inner.workflows, op, &why).await {
            tracing::warn!(error = %e, "cannot take over an expired lease");
        }
    }
}
