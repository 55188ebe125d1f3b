//! How each [`Change`] is written inside the writer's transaction.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use opal_migrations::schema::{ACTIVE, EVENT_ORDER, EVENTS, IDEMPOTENCY, OPERATIONS, SCHEDULES};
use redb::{ReadableTable, WriteTransaction};
use serde::Serialize;

use super::StoreError;
use super::writer::Change;
use crate::model::{Event, EventKind, LogLevel, Operation, OperationId, Seq, Timestamp};

/// What applying one change did.
pub(super) enum Applied {
    /// It recorded this event.
    Event(Event),
    /// It wrote no event; the number is how many records it touched.
    Done(usize),
    /// It was refused and wrote nothing.
    Refused(StoreError),
}

/// Applies `change`; `seq` is the number its event gets, if it records one.
pub(super) fn apply(txn: &WriteTransaction, change: &Change, seq: Seq) -> Result<Applied, StoreError> {
    match change {
        Change::Admit { operation } => admit(txn, operation, seq),
        Change::Operation { kind, operation, at } => {
            let mut active = txn.open_table(ACTIVE)?;
            let slot = operation.slot();
            let index = (slot.as_str(), operation.target.as_str());
            let key = operation.id.to_key();
            if kind.is_terminal() {
                // Only release the slot if this operation holds it.
                if active.get(index)?.map(|v| v.value()) == Some(key) {
                    active.remove(index)?;
                }
            } else if *kind == EventKind::Requeued {
                active.insert(index, key)?;
            }
            Ok(Applied::Event(record(txn, *kind, operation, *at, seq)?))
        }
        Change::Log { op_id, level, message, at } => Ok(Applied::Event(log(txn, *op_id, *level, message, *at, seq)?)),
        Change::ReconcileActive => reconcile_active(txn).map(Applied::Done),
        Change::Prune { before, max } => prune(txn, *before, *max).map(Applied::Done),
        Change::PutSchedule(schedule) => {
            let json =
                serde_json::to_vec(schedule.as_ref()).map_err(|e| StoreError::Corrupt(schedule.id.to_string(), e))?;
            txn.open_table(SCHEDULES)?.insert(schedule.id.to_key(), json.as_slice())?;
            Ok(Applied::Done(1))
        }
        Change::DeleteSchedule(id) => {
            let removed = txn.open_table(SCHEDULES)?.remove(id.to_key())?.is_some();
            Ok(Applied::Done(usize::from(removed)))
        }
    }
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
    Ok(Applied::Event(record(txn, EventKind::Created, operation, operation.created_at, seq)?))
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
    let frame =
        format!(r#"{{"type":"event","seq":{seq},"event":"{}","at":"{at}","operation":{op_json}}}"#, kind.as_str());
    txn.open_table(EVENTS)?.insert((key, seq), frame.as_bytes())?;
    txn.open_table(EVENT_ORDER)?.insert(seq, key)?;
    Ok(Event { seq, kind, op_id: operation.id, operation: Some(operation.clone()), frame: Utf8Bytes::from(frame) })
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

fn log(
    txn: &WriteTransaction,
    op_id: OperationId,
    level: LogLevel,
    message: &str,
    at: Timestamp,
    seq: Seq,
) -> Result<Event, StoreError> {
    let frame =
        LogFrame { kind: "event", seq, event: EventKind::Log.as_str(), at, operation_id: op_id, level, message };
    let frame = serde_json::to_string(&frame).map_err(|e| StoreError::Corrupt(op_id.to_string(), e))?;
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
