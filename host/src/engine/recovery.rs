//! Start-up recovery: nothing stays `pending` or `running` across a restart.
//!
//! Every operation not in a terminal status when the process starts was left
//! behind by a previous process that crashed or shut down. Found by a full
//! scan (not by trusting the `active` index), each one is, durably and before
//! the server accepts a request:
//! - re-queued (`pending`, attempt + 1) if its plugin declares itself
//!   retry-safe; or
//! - failed with code `interrupted`, which releases its slot.
//!
//! Then the `active` index is reconciled: any entry whose holder has ended or
//! vanished is dropped, so duplicate prevention starts from the truth.

use std::sync::Arc;

use super::queue::Queued;
use crate::model::{EventKind, OpError, Status, Timestamp};
use crate::registry::Registry;
use crate::store::{Change, Store, StoreError};

/// Resolves the operations a previous process left; returns the re-queued
/// ones, oldest first.
pub(super) async fn recover(store: &Store, registry: &Registry) -> Result<Vec<Queued>, StoreError> {
    let left = store.unfinished()?;
    let mut requeued = Vec::new();
    for mut op in left {
        let was = op.status;
        let now = Timestamp::now();
        // The version it was admitted with, or none: it never runs another.
        let plugin = semver::Version::parse(&op.plugin_version)
            .ok()
            .and_then(|v| registry.get_exact(&op.op_type, &v))
            .filter(|p| p.retry_safe);
        let kind = match &plugin {
            Some(_) => {
                op.status = Status::Pending;
                op.attempt += 1;
                op.started_at = None;
                op.progress = 0;
                op.error = None;
                op.message = format!("re-queued after an interruption (attempt {})", op.attempt);
                EventKind::Requeued
            }
            None => {
                op.status = Status::Failed;
                op.finished_at = Some(now);
                op.message = format!("interrupted: the server stopped while the operation was {}", was.as_str());
                op.error = Some(OpError::new("interrupted", op.message.clone()));
                EventKind::Failed
            }
        };
        tracing::warn!(op = %op.id, r#type = %op.op_type, outcome = kind.as_str(), "operation interrupted by the previous shutdown");
        store.commit(Change::Operation { kind, operation: Arc::new(op.clone()), at: now }).await?;
        if let Some(plugin) = plugin {
            requeued.push(Queued { op, plugin });
        }
    }
    let repaired = store.commit(Change::ReconcileActive).await?.count;
    if repaired > 0 {
        tracing::warn!(count = repaired, "dropped stale entries from the active index");
    }
    Ok(requeued)
}
