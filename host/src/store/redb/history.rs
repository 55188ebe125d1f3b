//! Reading events back in global seq order, for WebSocket resumes.

use opal_migrations::schema::{EVENT_ORDER, EVENTS};
use redb::{Database, ReadableDatabase};

use super::RedbStore;
use crate::model::{Event, OperationId, Seq};
use crate::store::frame;

impl RedbStore {
    /// Every stored event with `after < seq <= upto`, in order, stopping at the first gap.
    pub(crate) async fn replay(&self, after: Seq, upto: Seq) -> Result<Vec<Event>, String> {
        let db = self.db.get().map_err(|e| e.to_string())?;
        between(&db, after, upto)
    }
}

/// Every stored event of `db` with `after < seq <= upto`, in order,
/// stopping at the first gap.
pub(super) fn between(db: &Database, after: Seq, upto: Seq) -> Result<Vec<Event>, String> {
    let read = || -> Result<Vec<Event>, Box<dyn std::error::Error>> {
        let txn = db.begin_read()?;
        let order = txn.open_table(EVENT_ORDER)?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::with_capacity(upto.saturating_sub(after) as usize);
        for entry in order.range(after + 1..=upto)? {
            let (seq, op) = entry?;
            let (seq, op) = (seq.value(), op.value());
            let Some(bytes) = events.get((op, seq))? else { break };
            let text = String::from_utf8(bytes.value().to_vec())?;
            out.push(frame::parse(seq, OperationId::from_key(op), text)?);
        }
        Ok(out)
    };
    read().map_err(|e| e.to_string())
}
