//! Cancellation: a pending operation ends at once; a running one is asked
//! first (`progress.cancelled()` turns true) and stopped by force after the
//! grace period, even while it is blocked in a host call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{CancelError, Engine, Inner};
use crate::model::{AuditEntry, EventKind, Operation, OperationId, Status, Timestamp};
use crate::store::{Change, Expect, StoreError};

/// The two-stage stop of one running operation.
#[derive(Default)]
pub(super) struct CancelSwitch {
    /// Asked to stop: `progress.cancelled()` returns true, and a
    /// `progress.sleep` in progress returns at once.
    pub(super) requested: CancellationToken,
    /// Set when the grace period is over: the epoch callback traps a
    /// computing guest at its next tick.
    pub(super) forced: Arc<AtomicBool>,
    /// Wakes the runner when the grace period is over, so it drops the run
    /// even while the guest is blocked in an async host call (a sleep).
    pub(super) force: tokio::sync::Notify,
    /// Woken when a cancel is asked, for a workflow run's driver.
    pub(super) asked: tokio::sync::Notify,
    /// Who asked, for the record.
    pub(super) by: Mutex<Option<String>>,
    /// Set when this node lost the operation (its lease was taken over):
    /// the run is stopped at once and nothing more is recorded for it.
    pub(super) lost: AtomicBool,
}

impl CancelSwitch {
    fn force(&self) {
        self.forced.store(true, Ordering::Relaxed);
        // `notify_one` keeps a permit if the runner is not waiting right now.
        self.force.notify_one();
    }

    /// Stops the run at once, to be dropped without a record.
    pub(super) fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.force();
    }

    /// Whether the run was lost rather than stopped by a cancel.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Engine {
    /// Cancels an operation: a pending one ends `cancelled` at once; a
    /// running one sees `cancelled()` at once (on another node of a cluster,
    /// at that node's next lease renewal) and is stopped by force after the
    /// grace period. Either way it ends `cancelled`.
    /// A workflow run's driver cancels its running children and starts
    /// nothing more.
    pub async fn cancel(&self, id: OperationId, by: &str) -> Result<Operation, CancelError> {
        self.inner.cancel(id, by, None).await
    }

    /// [`Engine::cancel`], recording `audit` with the cancel (a pending
    /// operation's end, or the request to stop a running one).
    pub async fn cancel_audited(&self, id: OperationId, by: &str, audit: AuditEntry) -> Result<Operation, CancelError> {
        self.inner.cancel(id, by, Some(audit)).await
    }
}

impl Inner {
    pub(super) async fn cancel(
        &self,
        id: OperationId,
        by: &str,
        audit: Option<AuditEntry>,
    ) -> Result<Operation, CancelError> {
        // A claim may start a pending operation while we look: try again.
        for _ in 0..100 {
            let switch = self.lock_queue().switch(id);
            if let Some(switch) = switch {
                self.request_cancel(switch, by);
                // The request is the action: it changes no record, so its entry goes alone.
                if let Some(entry) = audit {
                    self.store.commit(Change::Audit(Box::new(entry))).await?;
                }
                return self.store.get(id).await?.ok_or(CancelError::NotFound(id));
            }
            let op = match self.store.get(id).await? {
                None => return Err(CancelError::NotFound(id)),
                Some(op) if op.status.is_terminal() => return Err(CancelError::AlreadyEnded(Box::new(op))),
                Some(op) => op,
            };
            match op.status {
                Status::Pending => match self.cancel_pending(op, by, audit.clone()).await {
                    Ok(op) => return Ok(op),
                    Err(StoreError::Fenced(..)) => continue,
                    Err(e) => return Err(e.into()),
                },
                // Running on another node: its owner acts on the request.
                _ if self.store.shared() && op.node.as_deref() != Some(self.config.node.as_str()) => {
                    let request = Change::RequestCancel { id, by: by.to_owned() };
                    self.store.commit(super::audited(request, audit)).await?;
                    return Ok(op);
                }
                // Claimed here a moment ago; its runner is about to register.
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        Err(CancelError::Store(StoreError::Closed))
    }

    /// Asks a running operation to stop, and forces it after the grace period.
    pub(super) fn request_cancel(&self, switch: Arc<CancelSwitch>, by: &str) {
        // The first to ask is the one who cancelled it; a repeated request changes nothing.
        let first = {
            let mut who = switch.by.lock().expect("cancel switch poisoned");
            let first = who.is_none();
            who.get_or_insert_with(|| by.to_owned());
            first
        };
        switch.requested.cancel();
        switch.asked.notify_one();
        if !first {
            return;
        }
        let (grace, shutdown) = (self.config.cancel_grace, self.shutdown.clone());
        self.tasks.spawn(async move {
            // Shutdown stops the runner anyway; don't hold it up for the grace period.
            if shutdown.run_until_cancelled(tokio::time::sleep(grace)).await.is_some() {
                switch.force();
            }
        });
    }

    async fn cancel_pending(
        &self,
        mut op: Operation,
        by: &str,
        audit: Option<AuditEntry>,
    ) -> Result<Operation, StoreError> {
        let now = Timestamp::now();
        op.status = Status::Cancelled;
        op.finished_at = Some(now);
        op.message = format!("cancelled by {by} before it started");
        op.cancelled_by = Some(by.to_owned());
        self.admitted.lock().expect("admitted poisoned").remove(&op.id);
        let change = Change::Operation {
            kind: EventKind::Cancelled,
            operation: Arc::new(op.clone()),
            at: now,
            expect: Expect::Pending,
        };
        self.store.commit(super::audited(change, audit)).await?;
        Ok(op)
    }
}
