//! How each [`Change`] is written inside the writer's transaction.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use opal_migrations::schema::{
    ACTIVE, AUDIT, DELIVERED, EVENT_ORDER, EVENTS, IDEMPOTENCY, META, OPERATIONS, OUTBOX, SCHEDULES,
};
use redb::{ReadableTable, WriteTransaction};

use super::queue::Queue;
use crate::model::{AuditEntry, Event, EventKind, LogLevel, Operation, OperationId, Seq, Status, Timestamp};
use crate::store::{Change, Expect, StoreError, frame};

/// What applying one change did.
pub(super) enum Applied {
    /// It recorded these events (perhaps none), touched `count` records and
    /// started the `claimed` operations.
    Done { events: Vec<Event>, count: usize, claimed: Vec<Operation> },
    /// It was refused and wrote nothing.
    Refused(StoreError),
}

impl Applied {
    fn event(event: Event) -> Applied {
        Applied::Done { events: vec![event], count: 0, claimed: Vec::new() }
    }

    fn count(count: usize) -> Applied {
        Applied::Done { events: Vec::new(), count, claimed: Vec::new() }
    }
}

/// Applies `change`; `seq` is the number its first event gets, if it records
/// any. `queue` follows what the change does to pending and running work.
pub(super) fn apply(
    txn: &WriteTransaction,
    change: &Change,
    seq: Seq,
    queue: &mut Queue,
    rules: &crate::notify::Rules,
) -> Result<Applied, StoreError> {
    match change {
        Change::Admit { operation } => {
            let applied = admit(txn, operation, seq)?;
            if matches!(applied, Applied::Done { .. }) {
                queue.push(operation.id, operation.op_type.clone(), None);
            }
            Ok(applied)
        }
        Change::Operation { kind, operation, at, expect } => {
            // This writer sees every transition, so its queue answers the
            // runner's and the cancel's fences without reading the record
            // (the hot path: every progress event); recovery reads it.
            let fenced = match expect {
                Expect::Runner => (!queue.is_running(operation.id)).then(|| "it is no longer running here".to_owned()),
                Expect::Pending => (!queue.is_pending(operation.id)).then(|| "it is no longer pending".to_owned()),
                Expect::Waiting => {
                    let stored = txn
                        .open_table(OPERATIONS)?
                        .get(operation.id.to_key())?
                        .map(|v| decode(operation.id.to_key(), v.value()))
                        .transpose()?;
                    match stored {
                        Some(s) if s.status == Status::Waiting && s.attempt == operation.attempt => None,
                        Some(s) => Some(format!("it is {} (attempt {}), not waiting", s.status.as_str(), s.attempt)),
                        None => Some("it no longer exists".to_owned()),
                    }
                }
                Expect::Orphan => {
                    let stored = txn
                        .open_table(OPERATIONS)?
                        .get(operation.id.to_key())?
                        .map(|v| decode(operation.id.to_key(), v.value()))
                        .transpose()?;
                    match stored {
                        Some(stored) => fence(&stored, operation, *kind).err(),
                        None => Some("it no longer exists".to_owned()),
                    }
                }
            };
            if let Some(why) = fenced {
                return Ok(Applied::Refused(StoreError::Fenced(operation.id, why)));
            }
            let mut active = txn.open_table(ACTIVE)?;
            let slot = operation.slot();
            let index = (slot.as_str(), operation.target.as_str());
            let key = operation.id.to_key();
            if kind.is_terminal() {
                // Only release the slot if this operation holds it.
                if active.get(index)?.map(|v| v.value()) == Some(key) {
                    active.remove(index)?;
                }
                queue.left(operation.id);
            } else if kind.requeues() {
                active.insert(index, key)?;
                queue.left(operation.id);
                queue.push(operation.id, operation.op_type.clone(), operation.next_attempt_at);
            }
            // The notifications this event makes, in its transaction.
            for notification in rules.matching(*kind, operation, *at) {
                put_notification(txn, &notification)?;
            }
            Ok(Applied::event(record(txn, *kind, operation, *at, seq)?))
        }
        Change::PutNotification(notification) => {
            put_notification(txn, notification)?;
            Ok(Applied::count(1))
        }
        Change::Log { op_id, level, message, at, .. } => {
            Ok(Applied::event(log(txn, *op_id, *level, message, *at, seq)?))
        }
        Change::Claim(claim) => {
            if paused(txn)? {
                return Ok(Applied::Done { events: Vec::new(), count: 0, claimed: Vec::new() });
            }
            let ids = queue.take(claim.max, &claim.types, &claim.limits, Timestamp::now());
            let mut events = Vec::with_capacity(ids.len());
            let mut claimed = Vec::with_capacity(ids.len());
            for (i, id) in ids.into_iter().enumerate() {
                let stored = txn
                    .open_table(OPERATIONS)?
                    .get(id.to_key())?
                    .map(|v| decode(id.to_key(), v.value()))
                    .transpose()?;
                let Some(mut op) = stored else { continue };
                op.status = Status::Running;
                op.node = Some(claim.node.clone());
                op.started_at = Some(Timestamp::now());
                op.message = "starting".to_owned();
                op.next_attempt_at = None;
                let op = Arc::new(op);
                events.push(record(
                    txn,
                    EventKind::Started,
                    &op,
                    op.started_at.unwrap_or_else(Timestamp::now),
                    seq + i as u64,
                )?);
                claimed.push(Operation::clone(&op));
            }
            Ok(Applied::Done { count: claimed.len(), events, claimed })
        }
        // Every running operation is this process's own: the engine cancels
        // it directly.
        Change::RequestCancel { .. } => Ok(Applied::count(0)),
        Change::Audited { change, entry } => {
            let applied = apply(txn, change, seq, queue, rules)?;
            let mut entry = (**entry).clone();
            if let Applied::Refused(why) = &applied {
                entry.result = format!("refused: {why}");
            }
            put_audit(txn, &entry)?;
            Ok(applied)
        }
        Change::Audit(entry) => {
            put_audit(txn, entry)?;
            Ok(Applied::count(1))
        }
        Change::PruneAudit { before, max } => prune_audit(txn, *before, *max).map(Applied::count),
        Change::SetPaused(paused) => {
            txn.open_table(META)?.insert(PAUSED_KEY, u64::from(*paused))?;
            Ok(Applied::count(1))
        }
        // One process, one timer: every fire is this process's.
        Change::ClaimFire { .. } => Ok(Applied::count(1)),
        Change::ReconcileActive => reconcile_active(txn).map(Applied::count),
        Change::Prune { before, max } => prune(txn, *before, *max).map(Applied::count),
        Change::PutSchedule(schedule) => {
            let json =
                serde_json::to_vec(schedule.as_ref()).map_err(|e| StoreError::Corrupt(schedule.id.to_string(), e))?;
            txn.open_table(SCHEDULES)?.insert(schedule.id.to_key(), json.as_slice())?;
            Ok(Applied::count(1))
        }
        Change::DeleteSchedule(id) => {
            let removed = txn.open_table(SCHEDULES)?.remove(id.to_key())?.is_some();
            Ok(Applied::count(usize::from(removed)))
        }
    }
}

/// Writes a notification: pending ones in `outbox`, the others moved to `delivered`.
fn put_notification(txn: &WriteTransaction, n: &crate::model::Notification) -> Result<(), StoreError> {
    let json = serde_json::to_vec(n).map_err(|e| StoreError::Corrupt(n.id.to_string(), e))?;
    if n.state == crate::model::DeliveryState::Pending {
        txn.open_table(OUTBOX)?.insert(n.id.0, json.as_slice())?;
    } else {
        txn.open_table(OUTBOX)?.remove(n.id.0)?;
        txn.open_table(DELIVERED)?.insert(n.id.0, json.as_slice())?;
    }
    Ok(())
}

fn put_audit(txn: &WriteTransaction, entry: &AuditEntry) -> Result<(), StoreError> {
    let json = serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt(entry.id.to_string(), e))?;
    txn.open_table(AUDIT)?.insert(entry.id.0, json.as_slice())?;
    Ok(())
}

/// Deletes up to `max` entries older than `before` (ids sort by time).
fn prune_audit(txn: &WriteTransaction, before: Timestamp, max: usize) -> Result<usize, StoreError> {
    let mut table = txn.open_table(AUDIT)?;
    let mut doomed = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let at = serde_json::from_slice::<AuditEntry>(value.value()).map(|e| e.at).ok();
        if doomed.len() >= max || at.is_some_and(|at| at >= before) {
            break;
        }
        doomed.push(key.value());
    }
    for key in &doomed {
        table.remove(*key)?;
    }
    Ok(doomed.len())
}

/// The `meta` entry that is 1 while the queue is paused.
pub(super) const PAUSED_KEY: &str = "queue_paused";

/// Whether the queue is paused.
pub(super) fn paused(txn: &WriteTransaction) -> Result<bool, StoreError> {
    Ok(txn.open_table(META)?.get(PAUSED_KEY)?.is_some_and(|v| v.value() == 1))
}

/// Whether `stored` is still an orphan that a change to `next` (by `kind`)
/// may resolve: unfinished, at the attempt the change was decided on (a
/// re-queue carries the next attempt, so it expects the one before).
fn fence(stored: &Operation, next: &Operation, kind: EventKind) -> Result<(), String> {
    let attempt = if kind.requeues() { next.attempt.saturating_sub(1) } else { next.attempt };
    if stored.attempt != attempt {
        return Err(format!("attempt {} is current, not {attempt}", stored.attempt));
    }
    if stored.status.is_terminal() {
        return Err(format!("it is {}", stored.status.as_str()));
    }
    Ok(())
}

fn admit(txn: &WriteTransaction, operation: &Arc<Operation>, seq: Seq) -> Result<Applied, StoreError> {
    let key = operation.id.to_key();
    let mut idempotency = txn.open_table(IDEMPOTENCY)?;
    if let Some(idempotency_key) = &operation.idempotency_key
        && let Some(original) = idempotency.get(idempotency_key.as_str())?
    {
        return Ok(Applied::Refused(StoreError::Replay(OperationId::from_key(original.value()))));
    }
    let mut active = txn.open_table(ACTIVE)?;
    let slot = operation.slot();
    let index = (slot.as_str(), operation.target.as_str());
    if let Some(holder) = active.get(index)? {
        return Ok(Applied::Refused(StoreError::SlotTaken(OperationId::from_key(holder.value()))));
    }
    active.insert(index, key)?;
    if let Some(idempotency_key) = &operation.idempotency_key {
        idempotency.insert(idempotency_key.as_str(), key)?;
    }
    Ok(Applied::event(record(txn, EventKind::Created, operation, operation.created_at, seq)?))
}

/// Writes the operation record and its event; returns the event.
fn record(
    txn: &WriteTransaction,
    kind: EventKind,
    operation: &Arc<Operation>,
    at: Timestamp,
    seq: Seq,
) -> Result<Event, StoreError> {
    // Serialize the operation once: it is both the record and part of the frame.
    let op_json =
        serde_json::to_string(operation.as_ref()).map_err(|e| StoreError::Corrupt(operation.id.to_string(), e))?;
    let key = operation.id.to_key();
    txn.open_table(OPERATIONS)?.insert(key, op_json.as_bytes())?;
    let frame = frame::operation(seq, kind, at, &op_json);
    txn.open_table(EVENTS)?.insert((key, seq), frame.as_bytes())?;
    txn.open_table(EVENT_ORDER)?.insert(seq, key)?;
    Ok(Event { seq, kind, op_id: operation.id, operation: Some(operation.clone()), frame: Utf8Bytes::from(frame) })
}

fn log(
    txn: &WriteTransaction,
    op_id: OperationId,
    level: LogLevel,
    message: &str,
    at: Timestamp,
    seq: Seq,
) -> Result<Event, StoreError> {
    let frame = frame::log(seq, at, op_id, level, message);
    txn.open_table(EVENTS)?.insert((op_id.to_key(), seq), frame.as_bytes())?;
    txn.open_table(EVENT_ORDER)?.insert(seq, op_id.to_key())?;
    Ok(Event { seq, kind: EventKind::Log, op_id, operation: None, frame: Utf8Bytes::from(frame) })
}

fn decode(key: u128, bytes: &[u8]) -> Result<Operation, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(OperationId::from_key(key).to_string(), e))
}

fn reconcile_active(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let operations = txn.open_table(OPERATIONS)?;
    let mut active = txn.open_table(ACTIVE)?;
    let mut stale = Vec::new();
    for entry in active.iter()? {
        let (index, holder) = entry?;
        let holder = holder.value();
        let live = match operations.get(holder)? {
            Some(v) => !decode(holder, v.value())?.status.is_terminal(),
            None => false,
        };
        if !live {
            let (slot, target) = index.value();
            stale.push((slot.to_owned(), target.to_owned()));
        }
    }
    for (slot, target) in &stale {
        active.remove((slot.as_str(), target.as_str()))?;
    }
    Ok(stale.len())
}

fn prune(txn: &WriteTransaction, before: Timestamp, max: usize) -> Result<usize, StoreError> {
    let mut operations = txn.open_table(OPERATIONS)?;
    let mut doomed = Vec::new();
    for entry in operations.iter()? {
        let (key, value) = entry?;
        let op = decode(key.value(), value.value())?;
        // Ids are in creation order, and nothing ends before it was created.
        if op.created_at >= before || doomed.len() >= max {
            break;
        }
        if op.status.is_terminal() && op.finished_at.is_some_and(|f| f < before) {
            doomed.push((key.value(), op.idempotency_key));
        }
    }
    let mut events = txn.open_table(EVENTS)?;
    let mut order = txn.open_table(EVENT_ORDER)?;
    let mut idempotency = txn.open_table(IDEMPOTENCY)?;
    for (key, idempotency_key) in &doomed {
        operations.remove(*key)?;
        let mut seqs = Vec::new();
        for entry in events.range((*key, 0)..=(*key, Seq::MAX))? {
            seqs.push(entry?.0.value().1);
        }
        for seq in seqs {
            order.remove(seq)?;
        }
        events.retain_in((*key, 0)..=(*key, Seq::MAX), |_, _| false)?;
        if let Some(k) = idempotency_key {
            idempotency.remove(k.as_str())?;
        }
    }
    Ok(doomed.len())
}
