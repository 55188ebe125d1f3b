//! 0004: the `audit` table: who did what, when, from where, and with what
//! result (`GET /api/v1/audit`).

use redb::WriteTransaction;

use crate::Migration;
use crate::schema::AUDIT;

pub(crate) const MIGRATION: Migration = Migration { version: 4, name: "audit log", apply };

fn apply(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(AUDIT)?;
    Ok(())
}
