//! Reads: straight redb read transactions, never waiting for the writer.

use opal_migrations::schema::{ACTIVE, EVENTS, LAST_SEQ_KEY, META, OPERATIONS, SCHEDULES};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::RedbStore;
use crate::model::{Operation, OperationId, Seq};
use crate::schedule::{Schedule, ScheduleId};
use crate::store::{OperationFilter, StoreError};

pub(super) fn last_seq(db: &Database) -> Result<Seq, StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta.get(LAST_SEQ_KEY)?.map(|v| v.value()).unwrap_or(0))
}

/// Every operation a node held (running, or waiting at a gate), oldest
/// first: a full scan, independent of the `active` index, for start-up
/// recovery. Pending operations never started, so they are not orphans:
/// they stay queued and start as usual.
pub(super) fn unfinished(db: &Database) -> Result<Vec<Operation>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(OPERATIONS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let op = decode(k.value(), v.value())?;
        if op.status.is_held() {
            out.push(op);
        }
    }
    Ok(out)
}

pub(super) fn decode(key: u128, bytes: &[u8]) -> Result<Operation, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(OperationId::from_key(key).to_string(), e))
}

impl RedbStore {
    /// The operation with `id`, if it exists.
    pub(crate) async fn get(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = txn.open_table(OPERATIONS)?;
        table.get(id.to_key())?.map(|v| decode(id.to_key(), v.value())).transpose()
    }

    /// Up to `limit` operations matching `filter`, newest first, strictly
    /// older than `before`. Scans newest to oldest; retention keeps the table
    /// bounded.
    pub(crate) async fn list(
        &self,
        filter: &OperationFilter,
        limit: usize,
        before: Option<OperationId>,
    ) -> Result<Vec<Operation>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = txn.open_table(OPERATIONS)?;
        let upper = before.map(|b| b.to_key()).unwrap_or(u128::MAX);
        let mut out = Vec::with_capacity(limit.min(1000));
        for entry in table.range(..upper)?.rev() {
            let (k, v) = entry?;
            let op = decode(k.value(), v.value())?;
            if filter.matches(&op) {
                out.push(op);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` audit entries matching `filter`, newest first, older than `before`.
    pub(crate) async fn audit(
        &self,
        filter: &crate::model::AuditFilter,
        limit: usize,
        before: Option<ulid::Ulid>,
    ) -> Result<Vec<crate::model::AuditEntry>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = txn.open_table(opal_migrations::schema::AUDIT)?;
        let upper = before.map(|b| b.0).unwrap_or(u128::MAX);
        let mut out = Vec::new();
        for entry in table.range(..upper)?.rev() {
            let (k, v) = entry?;
            let entry: crate::model::AuditEntry = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(ulid::Ulid(k.value()).to_string(), e))?;
            if filter.since.is_some_and(|since| entry.at < since) {
                break;
            }
            if filter.matches(&entry) {
                out.push(entry);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Pending notifications due at `now`, at most `max` (one process: no claim needed).
    pub(crate) async fn due_notifications(
        &self,
        now: crate::model::Timestamp,
        max: usize,
    ) -> Result<Vec<crate::model::Notification>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = txn.open_table(opal_migrations::schema::OUTBOX)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let n: crate::model::Notification = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(ulid::Ulid(k.value()).to_string(), e))?;
            if n.next_at <= now {
                out.push(n);
                if out.len() == max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Notifications, newest first, of `operation` if given.
    pub(crate) async fn notifications(
        &self,
        operation: Option<OperationId>,
        limit: usize,
    ) -> Result<Vec<crate::model::Notification>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let mut out: Vec<crate::model::Notification> = Vec::new();
        for table in [opal_migrations::schema::OUTBOX, opal_migrations::schema::DELIVERED] {
            let table = txn.open_table(table)?;
            for entry in table.iter()?.rev() {
                let (k, v) = entry?;
                let n: crate::model::Notification = serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Corrupt(ulid::Ulid(k.value()).to_string(), e))?;
                if operation.is_none_or(|o| o == n.operation) {
                    out.push(n);
                }
            }
        }
        out.sort_by_key(|n| std::cmp::Reverse(n.id));
        out.truncate(limit);
        Ok(out)
    }

    /// The operations holding a slot in the `active` index.
    pub(crate) async fn active(&self) -> Result<Vec<Operation>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let active = txn.open_table(ACTIVE)?;
        let ops = txn.open_table(OPERATIONS)?;
        let mut out = Vec::new();
        for entry in active.iter()? {
            let (_, id) = entry?;
            let key = id.value();
            if let Some(v) = ops.get(key)? {
                out.push(decode(key, v.value())?);
            }
        }
        out.sort_by_key(|op| op.id);
        Ok(out)
    }

    /// The event frames of operation `id` with a seq above `since`, in order.
    pub(crate) async fn events(&self, id: OperationId, since: Seq) -> Result<Vec<(Seq, String)>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let key = id.to_key();
        let mut out = Vec::new();
        for entry in table.range((key, since.saturating_add(1))..=(key, Seq::MAX))? {
            let (k, v) = entry?;
            let frame = String::from_utf8_lossy(v.value()).into_owned();
            out.push((k.value().1, frame));
        }
        Ok(out)
    }

    /// The seq of the last committed event.
    pub(crate) async fn last_seq(&self) -> Result<Seq, StoreError> {
        last_seq(&*self.db.get()?)
    }

    /// Every schedule, oldest first.
    pub(crate) async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = txn.open_table(SCHEDULES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let id = ScheduleId::from_key(k.value());
            out.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(id.to_string(), e))?);
        }
        Ok(out)
    }
}
