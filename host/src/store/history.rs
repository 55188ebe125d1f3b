//! Reading events back in global seq order, for WebSocket resumes.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use opal_migrations::schema::{EVENT_ORDER, EVENTS};
use redb::ReadableDatabase;
use serde::Deserialize;

use super::Store;
use crate::hub::History;
use crate::model::{Event, EventKind, Operation, OperationId, Seq};

/// The parts of a stored frame that fan-out needs.
#[derive(Deserialize)]
struct StoredFrame {
    event: EventKind,
    operation: Option<Operation>,
    operation_id: Option<OperationId>,
}

impl History for Store {
    fn replay(&self, after: Seq, upto: Seq) -> Result<Vec<Event>, String> {
        let read = || -> Result<Vec<Event>, Box<dyn std::error::Error>> {
            let txn = self.db.begin_read()?;
            let order = txn.open_table(EVENT_ORDER)?;
            let events = txn.open_table(EVENTS)?;
            let mut out = Vec::with_capacity((upto - after) as usize);
            for entry in order.range(after + 1..=upto)? {
                let (seq, op) = entry?;
                let (seq, op) = (seq.value(), op.value());
                let Some(bytes) = events.get((op, seq))? else { break };
                let text = String::from_utf8(bytes.value().to_vec())?;
                let parsed: StoredFrame = serde_json::from_str(&text)?;
                let op_id = parsed.operation_id.unwrap_or(OperationId::from_key(op));
                out.push(Event {
                    seq,
                    kind: parsed.event,
                    op_id,
                    operation: parsed.operation.map(Arc::new),
                    frame: Utf8Bytes::from(text),
                });
            }
            Ok(out)
        };
        let events = read().map_err(|e| e.to_string())?;
        // Seqs are dense: anything missing was pruned, and a partial replay
        // would be a silent gap.
        if events.len() as u64 != upto - after {
            return Err(format!("{} of {} events after seq {after} are no longer stored", events.len(), upto - after));
        }
        Ok(events)
    }
}
