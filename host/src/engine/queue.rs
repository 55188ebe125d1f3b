//! The operations this node runs now, each with its cancel switch.
//!
//! Pending operations wait in the store, which decides which ones this node
//! may start ([`Change::Claim`](crate::store::Change::Claim)): oldest first,
//! within the per-type limits, store-wide. This table only bounds how many
//! run here at once (`max_concurrent` is per node) and finds a running
//! operation's switch for a cancel or a lost lease.

use std::collections::HashMap;
use std::sync::Arc;

use super::CancelSwitch;
use crate::model::OperationId;

#[derive(Default)]
pub(super) struct Running {
    ops: HashMap<OperationId, Entry>,
    /// Pending operations, store-wide, as the last claim counted them.
    pending: usize,
}

/// One running operation.
pub(super) struct Entry {
    pub(super) attempt: u32,
    pub(super) switch: Arc<CancelSwitch>,
}

impl Running {
    /// Room for how many more, under `max`.
    pub(super) fn room(&self, max: usize) -> usize {
        max.saturating_sub(self.ops.len())
    }

    pub(super) fn insert(&mut self, id: OperationId, attempt: u32) -> Arc<CancelSwitch> {
        let switch = Arc::new(CancelSwitch::default());
        self.ops.insert(id, Entry { attempt, switch: switch.clone() });
        switch
    }

    /// The cancel switch of a running operation.
    pub(super) fn switch(&self, id: OperationId) -> Option<Arc<CancelSwitch>> {
        self.ops.get(&id).map(|e| e.switch.clone())
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = (&OperationId, &Entry)> {
        self.ops.iter()
    }

    /// Frees the place of a runner that ended.
    pub(super) fn finished(&mut self, id: OperationId) {
        self.ops.remove(&id);
    }

    pub(super) fn set_pending(&mut self, pending: usize) {
        self.pending = pending;
    }

    /// Pending (store-wide) and running (here) counts.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.pending, self.ops.len())
    }
}
