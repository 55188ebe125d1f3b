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
    /// How many of `ops` are workflow runs: they drive children and run no
    /// plugin, so they take no place under `max_concurrent` (a run waiting
    /// for its children in the last place would wait forever).
    drivers: usize,
    /// Pending operations, store-wide, as the last claim counted them.
    pending: usize,
}

/// One running operation.
pub(super) struct Entry {
    pub(super) attempt: u32,
    pub(super) switch: Arc<CancelSwitch>,
    driver: bool,
}

impl Running {
    /// Room for how many more, under `max`.
    pub(super) fn room(&self, max: usize) -> usize {
        max.saturating_sub(self.ops.len() - self.drivers)
    }

    /// Registers a running operation (`driver`: a workflow run).
    pub(super) fn insert(&mut self, id: OperationId, attempt: u32, driver: bool) -> Arc<CancelSwitch> {
        let switch = Arc::new(CancelSwitch::default());
        if let Some(old) = self.ops.insert(id, Entry { attempt, switch: switch.clone(), driver }) {
            self.drivers -= usize::from(old.driver);
        }
        self.drivers += usize::from(driver);
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
        if let Some(old) = self.ops.remove(&id) {
            self.drivers -= usize::from(old.driver);
        }
    }

    pub(super) fn set_pending(&mut self, pending: usize) {
        self.pending = pending;
    }

    /// Pending (store-wide) and running (here) counts.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.pending, self.ops.len())
    }
}
