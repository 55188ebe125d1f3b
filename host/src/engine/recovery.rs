//! Start-up recovery: nothing stays `pending` or `running` across a restart.
//!
//! Whatever the `active` index holds when the process starts was left behind
//! by a previous process that crashed or shut down mid-run. Each such
//! operation is failed with code `interrupted`, durably, before the server
//! accepts a request, which also releases its `(type, target)` slot.

use std::sync::Arc;

use crate::model::{EventKind, OpError, Status, Timestamp};
use crate::store::{Change, Store, StoreError};

pub(super) async fn recover(store: &Store) -> Result<(), StoreError> {
    let left = store.active()?;
    if !left.is_empty() {
        tracing::warn!(
            count = left.len(),
            "failing operations interrupted by the previous shutdown"
        );
    }
    for mut op in left {
        let was = op.status;
        let now = Timestamp::now();
        op.status = Status::Failed;
        op.finished_at = Some(now);
        op.message = format!(
            "interrupted: the server stopped while the operation was {}",
            was.as_str()
        );
        op.error = Some(OpError::new("interrupted", op.message.clone()));
        store
            .commit(Change::Operation {
                kind: EventKind::Failed,
                operation: Arc::new(op),
                at: now,
            })
            .await?;
    }
    Ok(())
}
