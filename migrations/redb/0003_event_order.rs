//! 0003: the `event_order` index (seq → operation), so a WebSocket client
//! resuming after a disconnect can be replayed the events it missed, in seq
//! order, from the store when they are no longer in memory.

use redb::{ReadableTable, WriteTransaction};

use crate::Migration;
use crate::schema::{EVENT_ORDER, EVENTS};

pub(crate) const MIGRATION: Migration = Migration { version: 3, name: "event order index", apply };

fn apply(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let events = txn.open_table(EVENTS)?;
    let mut order = txn.open_table(EVENT_ORDER)?;
    for entry in events.iter()? {
        let (key, _) = entry?;
        let (op, seq) = key.value();
        order.insert(seq, op)?;
    }
    Ok(())
}
