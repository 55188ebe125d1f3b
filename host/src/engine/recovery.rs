//! Recovery: no operation stays `pending` or `running` with nobody on it.
//!
//! The store names the orphans ([`Store::orphans`]): at start-up on a private
//! store, everything a previous process left unfinished; on a shared store,
//! the running operations whose owner's lease expired (it died, paused or
//! lost the database), and at start-up also those still owned by this node's
//! id. Each one is, durably:
//! - re-queued (`pending`, attempt + 1, event `operation.requeued`) if its
//!   plugin declares itself retry-safe; or
//! - failed with code `interrupted`, which releases its slot.
//!
//! Both are fenced on the orphan's attempt, so of two nodes reaping the same
//! operation one wins, and its old owner can write nothing more. At start-up
//! the `active` index is then reconciled, so duplicate prevention starts from
//! the truth.
//!
//! After the store comes back from a storage failure, the operations it
//! records as running on this node that no runner here holds any more (a
//! claim whose answer was lost, a runner stopped while it held its outcome)
//! are resolved the same way ([`after_failure`]).

use std::sync::Arc;

use super::Inner;
use crate::model::{EventKind, OpError, Operation, Status, Timestamp};
use crate::registry::Registry;
use crate::store::{Change, Expect, Store, StoreError};

/// Resolves what a previous process (or this node's id before a restart) left.
pub(super) async fn recover(
    store: &Store,
    registry: &Registry,
    workflows: &crate::workflow::Catalog,
    node: &str,
) -> Result<(), StoreError> {
    for op in store.orphans(node, true).await? {
        let why = format!("the server stopped while the operation was {}", op.status.as_str());
        resolve(store, registry, workflows, op, &why).await?;
    }
    let repaired = store.commit(Change::ReconcileActive).await?.count;
    if repaired > 0 {
        tracing::warn!(count = repaired, "dropped stale entries from the active index");
    }
    Ok(())
}

/// Resolves the operations recorded as running on this node that have no
/// runner here; called by the claimer (which starts every runner, so none
/// starts meanwhile) after the store recovered from a storage failure.
pub(super) async fn after_failure(inner: &Inner) {
    let active = match inner.store.active().await {
        Ok(active) => active,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for operations left without a runner");
            return;
        }
    };
    let node = inner.config.node.as_str();
    let mut resolved = 0;
    for op in active {
        let mine = op.status.is_held() && op.node.as_deref() == Some(node);
        if !mine || inner.lock_queue().switch(op.id).is_some() {
            continue;
        }
        let why = "the store failed while it ran, and its run could not be recorded";
        match resolve(&inner.store, &inner.registry, &inner.workflows, op, why).await {
            Ok(()) => resolved += 1,
            Err(e) => tracing::warn!(error = %e, "cannot resolve an operation left without a runner"),
        }
    }
    tracing::info!(resolved, "the store recovered; resolved the operations left without a runner");
}

/// Re-queues or fails one orphan; `Ok` also when another node got to it first.
pub(super) async fn resolve(
    store: &Store,
    registry: &Registry,
    workflows: &crate::workflow::Catalog,
    op: Operation,
    why: &str,
) -> Result<(), StoreError> {
    let (kind, op) = decide(registry, workflows, op, why);
    tracing::warn!(op = %op.id, r#type = %op.op_type, outcome = kind.as_str(), "{why}");
    let change = Change::Operation { kind, operation: Arc::new(op), at: Timestamp::now(), expect: Expect::Orphan };
    match store.commit(change).await {
        Ok(_) | Err(StoreError::Fenced(..)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `op` may be run again after an interruption: a workflow run, or
/// an operation whose plugin (the version it was admitted with) is retry-safe.
pub(super) fn retry_safe(registry: &Registry, workflows: &crate::workflow::Catalog, op: &Operation) -> bool {
    workflows.get(&op.op_type).is_some()
        || semver::Version::parse(&op.plugin_version)
            .ok()
            .and_then(|v| registry.get_exact(&op.op_type, &v))
            .is_some_and(|p| p.retry_safe)
}

/// What becomes of an operation whose run was cut short: re-queued as the
/// next attempt if its plugin (the version it was admitted with) is
/// retry-safe here (a workflow run always is: it continues where it
/// stopped), else retried later if its retry policy names `interrupted`,
/// else failed as `interrupted`. (The store fences a re-queue on the attempt
/// before the bump.)
pub(super) fn decide(
    registry: &Registry,
    workflows: &crate::workflow::Catalog,
    mut op: Operation,
    why: &str,
) -> (EventKind, Operation) {
    let workflow = workflows.get(&op.op_type).is_some();
    let retry_safe = retry_safe(registry, workflows, &op);
    if retry_safe {
        op.status = Status::Pending;
        op.attempt += 1;
        op.started_at = None;
        // A workflow run keeps its progress: it continues where it stopped.
        if !workflow {
            op.progress = 0;
        }
        op.error = None;
        op.message = format!("re-queued after an interruption (attempt {})", op.attempt);
        (EventKind::Requeued, op)
    } else {
        op.status = Status::Failed;
        op.finished_at = Some(Timestamp::now());
        op.message = format!("interrupted: {why}");
        op.error = Some(OpError::new("interrupted", op.message.clone()));
        if super::retry::schedule(&mut op).is_some() {
            return (EventKind::RetryScheduled, op);
        }
        (EventKind::Failed, op)
    }
}
