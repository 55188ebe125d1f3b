//! The writer's view of which operations are pending and running.
//!
//! Kept in memory by the writer thread alone (no lock): it is the only
//! writer of the file, so it sees every admission, claim and ending. After a
//! failed commit it is rebuilt from the file ([`Queue::load`]), since the
//! batch it had already applied here was rolled back there.

use std::collections::{BTreeMap, HashMap};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::super::StoreError;
use crate::model::{OperationId, Status, Timestamp};
use opal_migrations::schema::OPERATIONS;

#[derive(Default)]
pub(super) struct Queue {
    /// Pending operations by id (creation order), with their types and,
    /// for a retry, when it is due.
    pending: BTreeMap<OperationId, (String, Option<Timestamp>)>,
    /// How many of `pending` wait for a retry's due time.
    retries: usize,
    /// Running operations with their types.
    running: HashMap<OperationId, String>,
    running_by_type: HashMap<String, usize>,
}

impl Queue {
    /// The queue as the file has it.
    pub(super) fn load(db: &Database) -> Result<Queue, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(OPERATIONS)?;
        let mut queue = Queue::default();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let op = super::reads::decode(k.value(), v.value())?;
            match op.status {
                Status::Pending => queue.push(op.id, op.op_type, op.next_attempt_at),
                Status::Running | Status::Waiting => queue.start(op.id, op.op_type),
                _ => {}
            }
        }
        Ok(queue)
    }

    pub(super) fn push(&mut self, id: OperationId, op_type: String, due: Option<Timestamp>) {
        self.retries += usize::from(due.is_some());
        if let Some((_, old)) = self.pending.insert(id, (op_type, due)) {
            self.retries -= usize::from(old.is_some());
        }
    }

    fn unpend(&mut self, id: &OperationId) {
        if let Some((_, due)) = self.pending.remove(id) {
            self.retries -= usize::from(due.is_some());
        }
    }

    fn start(&mut self, id: OperationId, op_type: String) {
        *self.running_by_type.entry(op_type.clone()).or_default() += 1;
        self.running.insert(id, op_type);
    }

    /// The operation left `pending` or `running` (it ended, or was re-queued).
    pub(super) fn left(&mut self, id: OperationId) {
        self.unpend(&id);
        if let Some(op_type) = self.running.remove(&id)
            && let Some(count) = self.running_by_type.get_mut(&op_type)
        {
            *count -= 1;
        }
    }

    /// Takes up to `max` pending operations of `types`, oldest first, that
    /// their type's limit in `limits` leaves room for, and counts them as
    /// running. One blocked by its type's limit, or by a retry not due
    /// until after `now`, does not hold up others.
    pub(super) fn take(
        &mut self,
        max: usize,
        types: &[String],
        limits: &[(String, usize)],
        now: Timestamp,
    ) -> Vec<OperationId> {
        let mut taken = Vec::new();
        let mut running = self.running_by_type.clone();
        for (id, (op_type, due)) in &self.pending {
            if due.is_some_and(|due| due > now) {
                continue;
            }
            if taken.len() >= max {
                break;
            }
            if !types.iter().any(|t| t == op_type) {
                continue;
            }
            let busy = running.entry(op_type.clone()).or_default();
            if limits.iter().any(|(t, limit)| t == op_type && *busy >= *limit) {
                continue;
            }
            *busy += 1;
            taken.push((*id, op_type.clone()));
        }
        for (id, op_type) in &taken {
            self.unpend(id);
            self.start(*id, op_type.clone());
        }
        taken.into_iter().map(|(id, _)| id).collect()
    }

    pub(super) fn is_pending(&self, id: OperationId) -> bool {
        self.pending.contains_key(&id)
    }

    pub(super) fn is_running(&self, id: OperationId) -> bool {
        self.running.contains_key(&id)
    }

    /// The earliest due time of a pending retry after `now`.
    pub(super) fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        if self.retries == 0 {
            return None;
        }
        self.pending.values().filter_map(|(_, due)| *due).filter(|due| *due > now).min()
    }

    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }
}
