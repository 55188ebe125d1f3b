//! Admission control: which pending operations may start now.
//!
//! A FIFO of admitted operations and the counts of running ones. An operation
//! starts when the global limit and its type's limit both have room; one
//! blocked by its type's limit does not hold up other types behind it, but
//! within a type the order is strictly first in, first out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::CancelSwitch;
use crate::model::{Operation, OperationId};
use crate::registry::Plugin;

/// An admitted operation waiting for a slot.
pub(super) struct Queued {
    pub(super) op: Operation,
    pub(super) plugin: Arc<Plugin>,
}

/// An operation handed to a runner.
pub(super) struct Started {
    pub(super) op: Operation,
    pub(super) plugin: Arc<Plugin>,
    pub(super) switch: Arc<CancelSwitch>,
}

#[derive(Default)]
pub(super) struct Queue {
    pending: VecDeque<Queued>,
    running: HashMap<OperationId, (String, Arc<CancelSwitch>)>,
    running_by_type: HashMap<String, usize>,
}

impl Queue {
    pub(super) fn push(&mut self, queued: Queued) {
        self.pending.push_back(queued);
    }

    /// Removes a pending operation (a cancel before it started).
    pub(super) fn remove_pending(&mut self, id: OperationId) -> Option<Queued> {
        let index = self.pending.iter().position(|q| q.op.id == id)?;
        self.pending.remove(index)
    }

    /// The cancel switch of a running operation.
    pub(super) fn switch(&self, id: OperationId) -> Option<Arc<CancelSwitch>> {
        self.running.get(&id).map(|(_, s)| s.clone())
    }

    /// Whether the operation is known here at all (pending or running).
    pub(super) fn holds(&self, id: OperationId) -> bool {
        self.running.contains_key(&id) || self.pending.iter().any(|q| q.op.id == id)
    }

    /// Takes every pending operation that fits, in order, and counts it as running.
    pub(super) fn take_startable(&mut self, global: usize, type_limit: impl Fn(&str) -> Option<usize>) -> Vec<Started> {
        let mut started = Vec::new();
        let mut index = 0;
        while index < self.pending.len() && self.running.len() < global {
            let op_type = &self.pending[index].op.op_type;
            let busy = self.running_by_type.get(op_type).copied().unwrap_or(0);
            if type_limit(op_type).is_some_and(|limit| busy >= limit) {
                index += 1;
                continue;
            }
            let Queued { op, plugin } = self.pending.remove(index).expect("index is in range");
            let switch = Arc::new(CancelSwitch::default());
            *self.running_by_type.entry(op.op_type.clone()).or_default() += 1;
            self.running.insert(op.id, (op.op_type.clone(), switch.clone()));
            started.push(Started { op, plugin, switch });
        }
        started
    }

    /// Frees the slot of a runner that ended.
    pub(super) fn finished(&mut self, id: OperationId) {
        if let Some((op_type, _)) = self.running.remove(&id)
            && let Some(count) = self.running_by_type.get_mut(&op_type)
        {
            *count -= 1;
        }
    }

    /// Pending and running counts.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.pending.len(), self.running.len())
    }
}
