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
//! the whole batch. An I/O error (a full disk, a failing device) also marks
//! the store failed, and the writer reopens the file by itself ([`reopen`]),
//! refusing changes as `Unavailable` (HTTP 503) until a durable write
//! succeeds again.
//!
//! It is a thread, not a task, because a commit blocks on fsync for
//! milliseconds; that must not stall a runtime worker on a 2-core machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Notify, mpsc};

use super::apply::{Applied, apply};
use super::file::{self, Opener, Slot};
use super::queue::Queue;
use crate::model::{Event, Seq};
use crate::store::health::Health;
use crate::store::inbox::Append;
use crate::store::{Publish, Receipt, StoreError};

/// The most changes one commit takes. Bounds a batch's latency and memory.
const MAX_BATCH: usize = 1024;
/// The longest wait between two attempts to reopen a failed file.
const REOPEN_BACKOFF: Duration = Duration::from_secs(2);

/// What the writer shares with the store's handles.
pub(super) struct Shared {
    /// Where readers find the database; the writer swaps it on a reopen.
    pub(super) slot: Slot,
    pub(super) opener: Opener,
    pub(super) sink: Arc<dyn Publish>,
    /// Woken when it admits or re-queues work, and after a reopen.
    pub(super) work: Arc<Notify>,
    pub(super) pending: Arc<AtomicUsize>,
    pub(super) health: Health,
    /// The notification rules each event is matched against.
    pub(super) outbox: crate::store::Outbox,
}

pub(super) fn spawn(
    shared: Shared,
    mut rx: mpsc::Receiver<Append>,
    mut last_seq: Seq,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let mut db = shared.slot.get()?;
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
                let started = std::time::Instant::now();
                match write_batch(&db, &batch, last_seq, &mut queue, &shared.outbox.rules()) {
                    Ok((outcomes, events, new_work)) => {
                        crate::telemetry::commit(started.elapsed(), batch.len());
                        if let Some(last) = events.last() {
                            last_seq = last.seq;
                        }
                        shared.sink.publish(events);
                        shared.pending.store(queue.pending(), Ordering::Relaxed);
                        if new_work || queue.pending() > before {
                            shared.work.notify_one();
                        }
                        for (append, outcome) in batch.drain(..).zip(outcomes) {
                            append.answer(outcome);
                        }
                    }
                    Err(e) if failed_storage(&e) => {
                        // Nothing of the batch was written; redb refuses
                        // every write from now on until the file is reopened.
                        let why = file::describe(&shared.opener.path, &e);
                        shared.health.failed(&why);
                        for append in batch.drain(..) {
                            append.answer(Err(StoreError::Unavailable(why.clone())));
                        }
                        drop(db);
                        let Some((reopened, reloaded, file_seq)) = reopen(&shared, &mut rx) else { return };
                        (db, queue) = (reopened, reloaded);
                        // A commit whose fsync failed may have reached the
                        // file all the same: its events are published now.
                        if file_seq > last_seq {
                            match super::history::between(&db, last_seq, file_seq) {
                                Ok(events) => shared.sink.publish(events),
                                Err(e) => tracing::error!(error = %e, "cannot read back the events of a failed commit"),
                            }
                        }
                        last_seq = file_seq;
                        shared.pending.store(queue.pending(), Ordering::Relaxed);
                        shared.health.ok();
                        shared.work.notify_one();
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

/// Whether `e` means the file can take no more writes until it is reopened
/// (an I/O error: a full disk, a failing device).
fn failed_storage(e: &StoreError) -> bool {
    matches!(e, StoreError::Storage(redb::Error::Io(_) | redb::Error::PreviousIo))
}

/// Closes the failed file and opens it again, retrying with backoff until a
/// durable write succeeds; meanwhile every queued change is refused as
/// `Unavailable`. Returns the reopened database with its queue and last seq,
/// or `None` once every handle is gone (the server stopped).
fn reopen(shared: &Shared, rx: &mut mpsc::Receiver<Append>) -> Option<(Arc<Database>, Queue, Seq)> {
    if let Some(old) = shared.slot.take() {
        file::close(old);
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match open_and_probe(&shared.opener) {
            Ok((db, queue, last_seq)) => {
                let db = Arc::new(db);
                shared.slot.put(db.clone());
                tracing::warn!(path = %shared.opener.path.display(), "reopened the data file after a storage error");
                return Some((db, queue, last_seq));
            }
            Err(e) => shared.health.failed(&file::describe(&shared.opener.path, &e)),
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            loop {
                match rx.try_recv() {
                    Ok(append) => append.answer(Err(StoreError::Unavailable(
                        shared.health.now().failed.unwrap_or_else(|| "storage failed".into()),
                    ))),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return None,
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(REOPEN_BACKOFF);
    }
}

/// Opens the file and proves it takes a durable write again.
fn open_and_probe(opener: &Opener) -> Result<(Database, Queue, Seq), StoreError> {
    let db = opener.open()?;
    let last_seq = super::reads::last_seq(&db)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Storage(redb::Error::Corrupted(e.to_string())))?;
    txn.open_table(opal_migrations::schema::META)?.insert(opal_migrations::schema::LAST_SEQ_KEY, last_seq)?;
    txn.commit()?;
    let queue = Queue::load(&db)?;
    Ok((db, queue, last_seq))
}

type Outcomes = Vec<Result<Receipt, StoreError>>;

/// Applies `batch` in one durable transaction; returns each change's
/// outcome, the events recorded in seq order, and whether it re-queued work.
fn write_batch(
    db: &Database,
    batch: &[Append],
    last_seq: Seq,
    queue: &mut Queue,
    rules: &crate::notify::Rules,
) -> Result<(Outcomes, Vec<Event>, bool), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Storage(redb::Error::Corrupted(e.to_string())))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    let mut seq = last_seq;
    let mut new_work = false;
    for append in batch {
        match apply(&txn, &append.change, seq + 1, queue, rules)? {
            Applied::Done { events: recorded, count, claimed } => {
                let mut receipt = Receipt { count, ..Receipt::default() };
                if let Some(last) = recorded.last() {
                    seq = last.seq;
                    receipt.seq = Some(seq);
                }
                new_work |= recorded.iter().any(|e| e.kind.requeues());
                receipt.claimed = claimed;
                receipt.pending = queue.pending();
                if matches!(append.change, crate::store::Change::Claim(_)) {
                    receipt.paused = super::apply::paused(&txn)?;
                    receipt.wake_at = queue.next_due(crate::model::Timestamp::now());
                }
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
