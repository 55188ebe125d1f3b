//! Reads: straight redb read transactions, never waiting for the writer.

use opal_migrations::schema::{ACTIVE, EVENTS, LAST_SEQ_KEY, META, OPERATIONS};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::{Store, StoreError};
use crate::model::{Operation, OperationId, Seq};

pub(super) fn last_seq(db: &Database) -> Result<Seq, StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta.get(LAST_SEQ_KEY)?.map(|v| v.value()).unwrap_or(0))
}

fn decode(key: u128, bytes: &[u8]) -> Result<Operation, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(OperationId::from_key(key).to_string(), e))
}

impl Store {
    /// The operation with `id`, if it exists.
    pub fn get(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OPERATIONS)?;
        table
            .get(id.to_key())?
            .map(|v| decode(id.to_key(), v.value()))
            .transpose()
    }

    /// Up to `limit` operations, newest first, strictly older than `before`.
    pub fn list(
        &self,
        limit: usize,
        before: Option<OperationId>,
    ) -> Result<Vec<Operation>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OPERATIONS)?;
        let upper = before.map(|b| b.to_key()).unwrap_or(u128::MAX);
        let mut out = Vec::with_capacity(limit.min(1000));
        for entry in table.range(..upper)?.rev().take(limit) {
            let (k, v) = entry?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The pending and running operations, from the `active` index.
    pub fn active(&self) -> Result<Vec<Operation>, StoreError> {
        let txn = self.db.begin_read()?;
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
    pub fn events(&self, id: OperationId, since: Seq) -> Result<Vec<(Seq, String)>, StoreError> {
        let txn = self.db.begin_read()?;
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
    pub fn last_seq(&self) -> Result<Seq, StoreError> {
        last_seq(&self.db)
    }
}
