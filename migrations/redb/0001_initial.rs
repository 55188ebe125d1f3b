//! 0001: the initial layout: `meta`, `operations`, `events`, `active`, `schedules`.

use redb::WriteTransaction;

use crate::Migration;
use crate::schema::{ACTIVE, EVENTS, META, OPERATIONS, SCHEDULES};

pub(crate) const MIGRATION: Migration = Migration { version: 1, name: "initial", apply };

fn apply(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(OPERATIONS)?;
    txn.open_table(EVENTS)?;
    txn.open_table(ACTIVE)?;
    txn.open_table(SCHEDULES)?;
    Ok(())
}
