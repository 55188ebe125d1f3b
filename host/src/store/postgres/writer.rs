//! The node's writer: group commit into one transaction per batch, then wake
//! the feed.
//!
//! One task takes the first queued change and whatever else is queued (up to
//! [`MAX_BATCH`]), applies them in one transaction ([`apply`](super::apply)),
//! numbers the batch's events with the counter row in `opal_meta`, inserts
//! them, NOTIFYs, and commits. Only then are callers answered, and the events
//! handed to this node's feed (other nodes' feeds read them from the
//! database), which publishes them in seq order with everyone else's. A refused change
//! (slot taken, fenced) fails alone; a database error fails the batch, which
//! is retried when it was a deadlock between nodes' batches.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::error::SqlState;

use super::apply::{self, Pending};
use super::{Stale, unavailable};
use crate::store::health::Health;
use axum::extract::ws::Utf8Bytes;

use crate::model::{Event, EventKind};
use crate::store::inbox::Append;
use crate::store::{Change, Receipt, StoreError, frame};

/// The most changes one transaction takes.
const MAX_BATCH: usize = 512;
/// How often a batch that lost a deadlock to another node's is tried again.
const CONFLICT_RETRIES: usize = 5;

/// Where the writer reports what it did.
pub(super) struct Reports {
    /// This node's feed, which publishes the committed events.
    pub(super) local: mpsc::UnboundedSender<Vec<Event>>,
    /// Woken when a batch made claimable work.
    pub(super) work: Arc<Notify>,
    /// Failed while batches fail on the database, healthy once one commits.
    pub(super) health: Health,
    /// The notification rules each event is matched against.
    pub(super) outbox: crate::store::Outbox,
    /// Marked when a batch failed, so the pool replaces its connections.
    pub(super) stale: Stale,
}

pub(super) async fn run(pool: Pool, mut rx: mpsc::Receiver<Append>, node: Arc<str>, reports: Reports) {
    let Reports { local, work, health, stale, outbox } = reports;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        let started = std::time::Instant::now();
        let result = loop {
            tries += 1;
            match write_batch(&pool, &batch, &node, &outbox.rules()).await {
                Err(Fatal::Db(e)) if tries <= CONFLICT_RETRIES && conflict(&e) => continue,
                other => break other,
            }
        };
        match result {
            Ok((outcomes, new_work, events)) => {
                crate::telemetry::commit(started.elapsed(), batch.len());
                health.ok();
                if !events.is_empty() {
                    // The feed publishes them in seq order with every other node's.
                    let _ = local.send(events);
                }
                if new_work {
                    work.notify_one();
                }
                for (append, outcome) in batch.drain(..).zip(outcomes) {
                    append.answer(outcome);
                }
            }
            Err(fatal) => {
                let e = fatal.into_store_error();
                tracing::error!(error = %e, changes = batch.len(), "database commit failed; batch dropped");
                if let StoreError::Unavailable(why) = &e {
                    health.failed(why);
                    stale.mark();
                }
                for append in batch.drain(..) {
                    append.answer(Err(copy(&e)));
                }
            }
        }
    }
}

/// Why a whole batch failed.
enum Fatal {
    Pool(deadpool_postgres::PoolError),
    Db(tokio_postgres::Error),
}

impl Fatal {
    fn into_store_error(self) -> StoreError {
        match self {
            Fatal::Pool(e) => unavailable(e),
            Fatal::Db(e) => super::classify(e),
        }
    }
}

impl From<tokio_postgres::Error> for Fatal {
    fn from(e: tokio_postgres::Error) -> Self {
        Fatal::Db(e)
    }
}

fn conflict(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// The same error again, for each caller of a failed batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Database(other.to_string()),
    }
}

type Outcomes = Vec<Result<Receipt, StoreError>>;

/// What a committed batch produced: each change's outcome, whether it made
/// claimable work, and its events, numbered.
type Written = (Outcomes, bool, Vec<Event>);

async fn write_batch(
    pool: &Pool,
    batch: &[Append],
    node: &str,
    rules: &crate::notify::Rules,
) -> Result<Written, Fatal> {
    let mut client = pool.get().await.map_err(Fatal::Pool)?;
    let txn = client.transaction().await?;
    let mut events: Vec<Pending> = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    // For each outcome, how many events had been recorded once it was applied.
    let mut ends = Vec::with_capacity(batch.len());
    // The changes go out pipelined: each one's statements are sent without
    // waiting for the others' answers, in batch order, so the database does
    // them in that order. A claim is a barrier: it must see every change
    // before it done, and nothing after it may run between its read and its
    // update.
    let mut start = 0;
    while start < batch.len() {
        let is_claim = |a: &Append| matches!(a.change, Change::Claim(_));
        let end = if is_claim(&batch[start]) {
            start + 1
        } else {
            batch[start..].iter().position(is_claim).map_or(batch.len(), |p| start + p)
        };
        let applied = futures_util::future::join_all(
            batch[start..end].iter().map(|a| apply::apply_alone(&txn, &a.change, node, rules)),
        )
        .await;
        for result in applied {
            let (outcome, recorded) = result?;
            ends.push((events.len(), events.len() + recorded.len()));
            events.extend(recorded);
            outcomes.push(outcome);
        }
        start = end;
    }
    let mut new_work = false;
    let mut committed = Vec::new();
    if !events.is_empty() {
        let n = events.len() as i64;
        // The counter row, taken last: held from here to the commit. The
        // notification goes out with the commit.
        let last: i64 = txn
            .query_one(
                &txn.prepare_cached(
                    "WITH counter AS (UPDATE opal_meta SET last_seq = last_seq + $1 RETURNING last_seq)
                     SELECT last_seq, pg_notify('opal_events', last_seq::text) FROM counter",
                )
                .await?,
                &[&n],
            )
            .await?
            .get(0);
        let first = last - n + 1;
        let mut seqs = Vec::with_capacity(events.len());
        let mut ops = Vec::with_capacity(events.len());
        let mut frames = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let seq = first + i as i64;
            new_work |= matches!(event.kind(), EventKind::Created | EventKind::Requeued);
            seqs.push(seq);
            ops.push(event.op_id.to_string());
            frames.push(match &event.body {
                apply::Body::Operation { kind, json, .. } => frame::operation(seq as u64, *kind, event.at, json),
                apply::Body::Log { level, message } => frame::log(seq as u64, event.at, event.op_id, *level, message),
            });
        }
        txn.execute(
            &txn.prepare_cached("INSERT INTO opal_events (seq, op_id, frame) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])").await?,
            &[&seqs, &ops, &frames],
        )
        .await?;
        committed = events
            .into_iter()
            .zip(seqs.iter().zip(frames))
            .map(|(event, (seq, frame))| Event {
                seq: *seq as u64,
                kind: event.kind(),
                op_id: event.op_id,
                operation: match event.body {
                    apply::Body::Operation { operation, .. } => Some(operation),
                    apply::Body::Log { .. } => None,
                },
                frame: Utf8Bytes::from(frame),
            })
            .collect();
        for (outcome, (start, end)) in outcomes.iter_mut().zip(&ends) {
            if let Ok(receipt) = outcome
                && end > start
            {
                receipt.seq = Some((first + *end as i64 - 1) as u64);
            }
        }
    }
    txn.commit().await?;
    Ok((outcomes, new_work, committed))
}
