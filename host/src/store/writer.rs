//! The single writer: group commit, then publish.
//!
//! One OS thread owns every write transaction. It blocks for the first queued
//! change, takes whatever else is already queued (up to [`MAX_BATCH`]), applies
//! them all in one transaction, commits it durably (`Durability::Immediate`),
//! and only then builds the [`Event`]s, publishes them in seq order and
//! acknowledges the callers. One fsync thus covers many transitions.
//!
//! It is a thread, not a task, because a commit blocks on fsync for
//! milliseconds; that must not stall a runtime worker on a 2-core machine.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use opal_migrations::schema::{ACTIVE, EVENTS, LAST_SEQ_KEY, META, OPERATIONS};
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::model::{Event, EventKind, LogLevel, Operation, OperationId, Seq, Timestamp};

/// The most changes one commit takes. Bounds a batch's latency and memory.
const MAX_BATCH: usize = 1024;

/// Where committed events go (the hub). Called on the writer thread, in seq
/// order, after the commit; it must not block.
pub trait Publish: Send + Sync + 'static {
    /// Hands over one committed batch.
    fn publish(&self, events: Vec<Event>);
}

/// One change to record.
#[derive(Debug)]
pub enum Change {
    /// The operation's new state, and the event that says why it changed.
    /// `Created` also claims its `(type, target)` in the `active` index; a
    /// terminal kind releases it.
    Operation {
        /// What happened.
        kind: EventKind,
        /// The operation after it happened (shared with the published event).
        operation: Arc<Operation>,
        /// When it happened.
        at: Timestamp,
    },
    /// A line for an operation's log.
    Log {
        /// The operation.
        op_id: OperationId,
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
        /// When it was written.
        at: Timestamp,
    },
}

pub(super) struct Append {
    pub(super) change: Change,
    pub(super) ack: Option<oneshot::Sender<Result<Seq, StoreError>>>,
}

pub(super) fn spawn(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Append>,
    mut last_seq: Seq,
    sink: Arc<dyn Publish>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name("opal-store-writer".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                match write_batch(&db, &batch, last_seq) {
                    Ok(written) => {
                        last_seq += written.len() as Seq;
                        let mut events = Vec::with_capacity(written.len());
                        let mut acks = Vec::with_capacity(written.len());
                        for (append, event) in batch.drain(..).zip(written) {
                            acks.push((append.ack, event.seq));
                            events.push(event);
                        }
                        sink.publish(events);
                        for (ack, seq) in acks {
                            if let Some(ack) = ack {
                                let _ = ack.send(Ok(seq));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, changes = batch.len(), "store commit failed; batch dropped");
                        for append in batch.drain(..) {
                            if let Some(ack) = append.ack {
                                let _ = ack.send(Err(StoreError::Storage(redb::Error::Corrupted(e.to_string()))));
                            }
                        }
                    }
                }
            }
        })
        .map_err(|e| StoreError::Io("writer thread".into(), e))
}

/// Applies `batch` in one durable transaction; returns the events it recorded.
fn write_batch(db: &Database, batch: &[Append], last_seq: Seq) -> Result<Vec<Event>, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Storage(redb::Error::Corrupted(e.to_string())))?;
    let mut events = Vec::with_capacity(batch.len());
    let mut seq = last_seq;
    for append in batch {
        seq += 1;
        events.push(apply(&txn, &append.change, seq)?);
    }
    txn.open_table(META)?.insert(LAST_SEQ_KEY, seq)?;
    txn.commit()?;
    Ok(events)
}

fn apply(txn: &WriteTransaction, change: &Change, seq: Seq) -> Result<Event, StoreError> {
    match change {
        Change::Operation {
            kind,
            operation,
            at,
        } => {
            let op_json = serde_json::to_string(operation.as_ref())
                .map_err(|e| StoreError::Corrupt(operation.id.to_string(), e))?;
            let key = operation.id.to_key();
            txn.open_table(OPERATIONS)?
                .insert(key, op_json.as_bytes())?;
            let mut active = txn.open_table(ACTIVE)?;
            let index = (operation.op_type.as_str(), operation.target.as_str());
            if *kind == EventKind::Created {
                active.insert(index, key)?;
            } else if kind.is_terminal() {
                // Only release the slot if this operation holds it.
                let holder = active.get(index)?.map(|v| v.value());
                if holder == Some(key) {
                    active.remove(index)?;
                }
            }
            let frame = format!(
                r#"{{"type":"event","seq":{seq},"event":"{}","at":"{at}","operation":{op_json}}}"#,
                kind.as_str()
            );
            txn.open_table(EVENTS)?
                .insert((key, seq), frame.as_bytes())?;
            Ok(Event {
                seq,
                kind: *kind,
                op_id: operation.id,
                operation: Some(operation.clone()),
                frame: Utf8Bytes::from(frame),
            })
        }
        Change::Log {
            op_id,
            level,
            message,
            at,
        } => {
            let frame = serde_json::to_string(&LogFrame {
                kind: "event",
                seq,
                event: EventKind::Log.as_str(),
                at: *at,
                operation_id: *op_id,
                level: *level,
                message,
            })
            .map_err(|e| StoreError::Corrupt(op_id.to_string(), e))?;
            txn.open_table(EVENTS)?
                .insert((op_id.to_key(), seq), frame.as_bytes())?;
            Ok(Event {
                seq,
                kind: EventKind::Log,
                op_id: *op_id,
                operation: None,
                frame: Utf8Bytes::from(frame),
            })
        }
    }
}

#[derive(Serialize)]
struct LogFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: Seq,
    event: &'static str,
    at: Timestamp,
    operation_id: OperationId,
    level: LogLevel,
    message: &'a str,
}
