//! Cancellation: a pending operation ends at once; a running one is asked
//! first (`progress.cancelled()` turns true) and stopped by force after the
//! grace period, even while it is blocked in a host call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{CancelError, Engine, Inner};
use crate::model::{EventKind, Operation, OperationId, Status, Timestamp};
use crate::store::{Change, StoreError};

/// The two-stage stop of one running operation.
#[derive(Default)]
pub(super) struct CancelSwitch {
    /// Asked to stop: `progress.cancelled()` returns true.
    pub(super) requested: Arc<AtomicBool>,
    /// Set when the grace period is over: the epoch callback traps a
    /// computing guest at its next tick.
    pub(super) forced: Arc<AtomicBool>,
    /// Wakes the runner when the grace period is over, so it drops the run
    /// even while the guest is blocked in an async host call (a sleep).
    pub(super) force: tokio::sync::Notify,
    /// Who asked, for the record.
    pub(super) by: Mutex<Option<String>>,
}

impl CancelSwitch {
    fn force(&self) {
        self.forced.store(true, Ordering::Relaxed);
        // `notify_one` keeps a permit if the runner is not waiting right now.
        self.force.notify_one();
    }
}

impl Engine {
    /// Cancels an operation: a pending one ends `cancelled` at once; a
    /// running one sees `cancelled()` at once and is stopped by force after
    /// the grace period. Either way it ends `cancelled`.
    pub async fn cancel(&self, id: OperationId, by: &str) -> Result<Operation, CancelError> {
        // An admitted operation reaches the queue a moment after its record
        // is durable; wait that moment out rather than call it ended.
        for _ in 0..100 {
            let (queued, switch, known) = {
                let mut queue = self.inner.lock_queue();
                (queue.remove_pending(id), queue.switch(id), queue.holds(id))
            };
            if let Some(queued) = queued {
                return Ok(self.inner.cancel_pending(queued.op, by).await?);
            }
            if let Some(switch) = switch {
                // The first to ask is the one who cancelled it; a repeated request changes nothing.
                switch.by.lock().expect("cancel switch poisoned").get_or_insert_with(|| by.to_owned());
                switch.requested.store(true, Ordering::Relaxed);
                let (grace, shutdown, forced) =
                    (self.inner.config.cancel_grace, self.inner.shutdown.clone(), switch.clone());
                self.inner.tasks.spawn(async move {
                    // Shutdown stops the runner anyway; don't hold it up for the grace period.
                    if shutdown.run_until_cancelled(tokio::time::sleep(grace)).await.is_some() {
                        forced.force();
                    }
                });
                return self.inner.store.get(id)?.ok_or(CancelError::NotFound(id));
            }
            match self.inner.store.get(id)? {
                None => return Err(CancelError::NotFound(id)),
                Some(op) if op.status.is_terminal() => return Err(CancelError::AlreadyEnded(Box::new(op))),
                Some(_) if !known => tokio::time::sleep(Duration::from_millis(5)).await,
                Some(_) => {}
            }
        }
        Err(CancelError::Store(StoreError::Closed))
    }
}

impl Inner {
    async fn cancel_pending(&self, mut op: Operation, by: &str) -> Result<Operation, StoreError> {
        let now = Timestamp::now();
        op.status = Status::Cancelled;
        op.finished_at = Some(now);
        op.message = format!("cancelled by {by} before it started");
        op.cancelled_by = Some(by.to_owned());
        self.store
            .commit(Change::Operation { kind: EventKind::Cancelled, operation: Arc::new(op.clone()), at: now })
            .await?;
        Ok(op)
    }
}
