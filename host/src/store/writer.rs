//! The single writer: group commit, then publish.
//!
//! One OS thread owns every write transaction. It blocks for the first queued
//! change, takes whatever else is already queued (up to [`MAX_BATCH`]), applies
//! them all in one transaction, commits it durably (`Durability::Immediate`),
//! and only then publishes the batch's events, in seq order, and answers the
//! callers. One fsync thus covers many transitions.
//!
//! A change can be refused on its own (an admission whose slot is taken)
//! without failing the others in its batch: refusals are decided before
//! anything is written for that change. A storage error fails the whole batch.
//!
//! It is a thread, not a task, because a commit blocks on fsync for
//! milliseconds; that must not stall a runtime worker on a 2-core machine.

use std::sync::Arc;

use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::apply::{Applied, apply};
use crate::model::{Event, LogLevel, Operation, OperationId, Seq, Timestamp};
use crate::schedule::Schedule;

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
    /// Records a new `pending` operation (event `operation.created`), if its
    /// idempotency key is new and its slot on the target is free; otherwise
    /// refused with [`StoreError::Replay`] or [`StoreError::SlotTaken`]. The
    /// check and the insert are one step, so concurrent identical requests
    /// admit exactly one operation.
    Admit {
        /// The pending operation.
        operation: Arc<Operation>,
    },
    /// The operation's new state, and the event that says why it changed. A
    /// terminal kind releases its slot; `Requeued` (re)claims it.
    Operation {
        /// What happened.
        kind: crate::model::EventKind,
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
    /// Drops `active` entries whose holder is missing or already ended.
    ReconcileActive,
    /// Deletes up to `max` operations that ended before `before`, with their
    /// events and idempotency keys.
    Prune {
        /// Cut-off.
        before: Timestamp,
        /// Most operations removed by one change.
        max: usize,
    },
    /// Creates or replaces a schedule.
    PutSchedule(Arc<Schedule>),
    /// Deletes a schedule.
    DeleteSchedule(crate::schedule::ScheduleId),
}

/// What a committed change produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The seq of its event, if it recorded one.
    pub seq: Option<Seq>,
    /// How many records it removed or repaired.
    pub count: usize,
}

pub(super) struct Append {
    pub(super) change: Change,
    pub(super) ack: Option<oneshot::Sender<Result<Receipt, StoreError>>>,
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
                    Ok((outcomes, events)) => {
                        if let Some(last) = events.last() {
                            last_seq = last.seq;
                        }
                        sink.publish(events);
                        for (append, outcome) in batch.drain(..).zip(outcomes) {
                            if let Some(ack) = append.ack {
                                let _ = ack.send(outcome);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, changes = batch.len(), "store commit failed; batch dropped");
                        let message = e.to_string();
                        for append in batch.drain(..) {
                            if let Some(ack) = append.ack {
                                let _ = ack.send(Err(StoreError::Storage(redb::Error::Corrupted(message.clone()))));
                            }
                        }
                    }
                }
            }
        })
        .map_err(|e| StoreError::Io("writer thread".into(), e))
}

type Outcomes = Vec<Result<Receipt, StoreError>>;

/// Applies `batch` in one durable transaction; returns each change's outcome
/// and the events recorded, in seq order.
fn write_batch(db: &Database, batch: &[Append], last_seq: Seq) -> Result<(Outcomes, Vec<Event>), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Storage(redb::Error::Corrupted(e.to_string())))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    let mut seq = last_seq;
    for append in batch {
        match apply(&txn, &append.change, seq + 1)? {
            Applied::Event(event) => {
                seq = event.seq;
                outcomes.push(Ok(Receipt { seq: Some(seq), count: 0 }));
                events.push(event);
            }
            Applied::Done(count) => outcomes.push(Ok(Receipt { seq: None, count })),
            Applied::Refused(refusal) => outcomes.push(Err(refusal)),
        }
    }
    if seq != last_seq {
        txn.open_table(opal_migrations::schema::META)?.insert(opal_migrations::schema::LAST_SEQ_KEY, seq)?;
    }
    txn.commit()?;
    Ok((outcomes, events))
}
