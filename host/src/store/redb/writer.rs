//! The single writer: group commit, then publish.
//!
//! One OS thread owns every write transaction. It blocks for the first queued
//! change, takes whatever else is already queued (up to [`MAX_BATCH`]), applies
//! them all in one transaction, commits it durably (`Durability::Immediate`),
//! and only then publishes the batch's events, in seq order, and answers the
//! callers. One fsync thus covers many transitions.
//!
//! A change can be refused on its own (an admission whose slot is taken, a
//! fenced transition) without failing the others in its batch: refusals are
//! decided before anything is written for that change. A storage error fails
//! the whole batch.
//!
//! It is a thread, not a task, because a commit blocks on fsync for
//! milliseconds; that must not stall a runtime worker on a 2-core machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::{Database, Durability};
use tokio::sync::{Notify, mpsc};

use super::apply::{Applied, apply};
use super::queue::Queue;
use crate::model::{Event, Seq};
use crate::store::inbox::Append;
use crate::store::{Publish, Receipt, StoreError};

/// The most changes one commit takes. Bounds a batch's latency and memory.
const MAX_BATCH: usize = 1024;

pub(super) fn spawn(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Append>,
    mut last_seq: Seq,
    sink: Arc<dyn Publish>,
    work: Arc<Notify>,
    pending: Arc<AtomicUsize>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let mut queue = Queue::load(&db)?;
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
                let before = queue.pending();
                match write_batch(&db, &batch, last_seq, &mut queue) {
                    Ok((outcomes, events, new_work)) => {
                        if let Some(last) = events.last() {
                            last_seq = last.seq;
                        }
                        sink.publish(events);
                        pending.store(queue.pending(), Ordering::Relaxed);
                        if new_work || queue.pending() > before {
                            work.notify_one();
                        }
                        for (append, outcome) in batch.drain(..).zip(outcomes) {
                            append.answer(outcome);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, changes = batch.len(), "store commit failed; batch dropped");
                        // The batch's queue moves were rolled back with it.
                        match Queue::load(&db) {
                            Ok(reloaded) => queue = reloaded,
                            Err(e) => tracing::error!(error = %e, "cannot reload the pending queue"),
                        }
                        let message = e.to_string();
                        for append in batch.drain(..) {
                            append.answer(Err(StoreError::Storage(redb::Error::Corrupted(message.clone()))));
                        }
                    }
                }
            }
        })
        .map_err(|e| StoreError::Io("writer thread".into(), e))
}

type Outcomes = Vec<Result<Receipt, StoreError>>;

/// Applies `batch` in one durable transaction; returns each change's
/// outcome, the events recorded in seq order, and whether it re-queued work.
fn write_batch(
    db: &Database,
    batch: &[Append],
    last_seq: Seq,
    queue: &mut Queue,
) -> Result<(Outcomes, Vec<Event>, bool), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Storage(redb::Error::Corrupted(e.to_string())))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    let mut seq = last_seq;
    let mut new_work = false;
    for append in batch {
        match apply(&txn, &append.change, seq + 1, queue)? {
            Applied::Done { events: recorded, count, claimed } => {
                let mut receipt = Receipt { count, ..Receipt::default() };
                if let Some(last) = recorded.last() {
                    seq = last.seq;
                    receipt.seq = Some(seq);
                }
                new_work |= recorded.iter().any(|e| e.kind == crate::model::EventKind::Requeued);
                receipt.claimed = claimed;
                receipt.pending = queue.pending();
                outcomes.push(Ok(receipt));
                events.extend(recorded);
            }
            Applied::Refused(refusal) => outcomes.push(Err(refusal)),
        }
    }
    if seq != last_seq {
        txn.open_table(opal_migrations::schema::META)?.insert(opal_migrations::schema::LAST_SEQ_KEY, seq)?;
    }
    txn.commit()?;
    Ok((outcomes, events, new_work))
}
