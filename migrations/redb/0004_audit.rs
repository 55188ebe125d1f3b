//! 0004: the `audit` table (who did what, when, from where, and with what
//! result: `GET /api/v1/audit`), and the notification outbox: `outbox` for
//! the pending ones, `delivered` for those delivered or given up on.

use redb::WriteTransaction;

use crate::Migration;
use crate::schema::{AUDIT, DELIVERED, OUTBOX};

pub(crate) const MIGRATION: Migration = Migration { version: 4, name: "audit log and outbox", apply };

fn apply(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(AUDIT)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(DELIVERED)?;
    Ok(())
}
