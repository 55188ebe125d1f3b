//! 0002: the `idempotency` table, so a repeated POST with the same
//! `idempotency_key` finds the operation the first one created.
//!
//! Also re-derives the `active` index from the operations themselves. Version
//! 1 kept it correct transactionally, but the index is what duplicate
//! prevention trusts, so a file that reaches version 2 starts from an index
//! that provably matches its operations: every pending or running operation
//! holds its `(type, target)` slot, and nothing else does.

use redb::{ReadableTable, WriteTransaction};

use crate::Migration;
use crate::schema::{ACTIVE, IDEMPOTENCY, OPERATIONS};

pub(crate) const MIGRATION: Migration = Migration { version: 2, name: "idempotency keys; rebuilt active index", apply };

fn apply(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(IDEMPOTENCY)?;
    let mut holders = Vec::new();
    {
        let operations = txn.open_table(OPERATIONS)?;
        for entry in operations.iter()? {
            let (key, value) = entry?;
            // Version-1 records are JSON with `type`, `target` and `status`.
            let record: serde_json::Value = serde_json::from_slice(value.value())
                .map_err(|e| redb::Error::Corrupted(format!("operation {}: {e}", key.value())))?;
            if matches!(record["status"].as_str(), Some("pending" | "running")) {
                let field = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
                holders.push((field("type"), field("target"), key.value()));
            }
        }
    }
    let mut active = txn.open_table(ACTIVE)?;
    active.retain(|_, _| false)?;
    for (op_type, target, id) in holders {
        active.insert((op_type.as_str(), target.as_str()), id)?;
    }
    Ok(())
}
