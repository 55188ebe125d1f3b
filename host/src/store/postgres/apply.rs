//! How each [`Change`] is written inside the writer's transaction.
//!
//! Each returns `Ok(Err(refusal))` when the database refused it alone (slot
//! taken, key replayed, fence failed: nothing was written for it), and
//! `Err` when the transaction itself failed. The events a change records are
//! pushed to `events` without a seq: the writer numbers them at the end.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use deadpool_postgres::Transaction;

use crate::model::{AuditEntry, EventKind, LogLevel, Operation, OperationId, Status, Timestamp};
use crate::store::{Change, Claim, Expect, Receipt, StoreError};

/// An event recorded by this batch, waiting for its seq.
pub(super) struct Pending {
    pub(super) op_id: OperationId,
    pub(super) at: Timestamp,
    pub(super) body: Body,
}

pub(super) enum Body {
    /// An operation event, with the operation (and it serialized).
    Operation { kind: EventKind, json: String, operation: Arc<Operation> },
    /// A log line.
    Log { level: LogLevel, message: String },
}

impl Pending {
    pub(super) fn kind(&self) -> EventKind {
        match &self.body {
            Body::Operation { kind, .. } => *kind,
            Body::Log { .. } => EventKind::Log,
        }
    }
}

type Applied = Result<Result<Receipt, StoreError>, tokio_postgres::Error>;

/// [`apply`], returning the change's own events: for changes applied side
/// by side (pipelined on the connection).
pub(super) async fn apply_alone(
    txn: &Transaction<'_>,
    change: &Change,
    node: &str,
    rules: &crate::notify::Rules,
) -> Result<(Result<Receipt, StoreError>, Vec<Pending>), tokio_postgres::Error> {
    let mut events = Vec::new();
    let outcome = apply(txn, change, &mut events, node, rules).await?;
    Ok((outcome, events))
}

pub(super) async fn apply(
    txn: &Transaction<'_>,
    change: &Change,
    events: &mut Vec<Pending>,
    node: &str,
    rules: &crate::notify::Rules,
) -> Applied {
    match change {
        Change::Admit { operation } => admit(txn, operation, events).await,
        Change::Operation { kind, operation, at, expect } => {
            let outcome = transition(txn, *kind, operation, *at, *expect, events, node).await?;
            if outcome.is_ok() {
                // The notifications this event makes, in its transaction.
                for notification in rules.matching(*kind, operation, *at) {
                    put_notification(txn, &notification).await?;
                }
            }
            Ok(outcome)
        }
        Change::Log { op_id, attempt, level, message, at } => {
            let live = txn
                .query_opt(
                    &txn.prepare_cached(
                        "SELECT 1 FROM opal_operations WHERE id = $1 AND attempt = $2
                         AND status IN ('running', 'waiting')",
                    )
                    .await?,
                    &[&op_id.to_string(), &(*attempt as i32)],
                )
                .await?;
            if live.is_none() {
                return Ok(Err(StoreError::Fenced(*op_id, format!("attempt {attempt} is no longer running"))));
            }
            events.push(Pending {
                op_id: *op_id,
                at: *at,
                body: Body::Log { level: *level, message: message.clone() },
            });
            Ok(Ok(Receipt::default()))
        }
        Change::Claim(claim) => take(txn, claim, events).await,
        Change::RequestCancel { id, by } => {
            let n = txn
                .execute(
                    &txn.prepare_cached(
                        "UPDATE opal_operations SET cancel_requested_by = coalesce(cancel_requested_by, $2)
                     WHERE id = $1 AND status IN ('running', 'waiting')",
                    )
                    .await?,
                    &[&id.to_string(), by],
                )
                .await?;
            Ok(Ok(Receipt { count: n as usize, ..Receipt::default() }))
        }
        // The partial unique index is the active set: nothing to repair.
        Change::ReconcileActive => Ok(Ok(Receipt::default())),
        Change::Prune { before, max } => {
            let n = txn
                .execute(
                    &txn.prepare_cached(
                        "WITH doomed AS (
                         SELECT id FROM opal_operations
                         WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at_ms < $1
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
                     ), gone AS (
                         DELETE FROM opal_events e USING doomed d WHERE e.op_id = d.id
                     )
                     DELETE FROM opal_operations o USING doomed d WHERE o.id = d.id",
                    )
                    .await?,
                    &[&millis(*before), &(*max as i64)],
                )
                .await?;
            Ok(Ok(Receipt { count: n as usize, ..Receipt::default() }))
        }
        Change::PutSchedule(schedule) => {
            let json = serde_json::to_string(schedule.as_ref()).expect("a schedule serializes");
            txn.execute(
                &txn.prepare_cached(
                    "INSERT INTO opal_schedules (id, data) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data",
                )
                .await?,
                &[&schedule.id.to_string(), &json],
            )
            .await?;
            Ok(Ok(Receipt { count: 1, ..Receipt::default() }))
        }
        Change::DeleteSchedule(id) => {
            let n = txn
                .execute(&txn.prepare_cached("DELETE FROM opal_schedules WHERE id = $1").await?, &[&id.to_string()])
                .await?;
            Ok(Ok(Receipt { count: n as usize, ..Receipt::default() }))
        }
        Change::Audited { change, entry } => {
            let outcome = Box::pin(apply(txn, change, events, node, rules)).await?;
            let mut entry = (**entry).clone();
            if let Err(why) = &outcome {
                entry.result = format!("refused: {why}");
            }
            put_audit(txn, &entry).await?;
            Ok(outcome)
        }
        Change::PutNotification(notification) => {
            put_notification(txn, notification).await?;
            Ok(Ok(Receipt { count: 1, ..Receipt::default() }))
        }
        Change::Audit(entry) => {
            put_audit(txn, entry).await?;
            Ok(Ok(Receipt { count: 1, ..Receipt::default() }))
        }
        Change::PruneAudit { before, max } => {
            let n = txn
                .execute(
                    &txn.prepare_cached(
                        "DELETE FROM opal_audit WHERE id IN
                         (SELECT id FROM opal_audit WHERE at_ms < $1 ORDER BY id LIMIT $2)",
                    )
                    .await?,
                    &[&millis(*before), &(*max as i64)],
                )
                .await?;
            Ok(Ok(Receipt { count: n as usize, ..Receipt::default() }))
        }
        Change::SetPaused(paused) => {
            txn.execute(&txn.prepare_cached("UPDATE opal_meta SET queue_paused = $1").await?, &[paused]).await?;
            Ok(Ok(Receipt { count: 1, ..Receipt::default() }))
        }
        Change::ClaimFire { id, at_ms } => {
            let n = txn
                .execute(
                    &txn.prepare_cached(
                        "UPDATE opal_schedules SET last_fire_ms = $2
                     WHERE id = $1 AND (last_fire_ms IS NULL OR last_fire_ms < $2)",
                    )
                    .await?,
                    &[&id.to_string(), at_ms],
                )
                .await?;
            Ok(Ok(Receipt { count: n as usize, ..Receipt::default() }))
        }
    }
}

/// Unix milliseconds, as the `*_ms` columns hold them.
pub(super) fn millis(at: Timestamp) -> i64 {
    at.system_time().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn put_notification(txn: &Transaction<'_>, n: &crate::model::Notification) -> Result<(), tokio_postgres::Error> {
    let data = serde_json::to_string(n).expect("a notification serializes");
    let state = match n.state {
        crate::model::DeliveryState::Pending => "pending",
        crate::model::DeliveryState::Delivered => "delivered",
        crate::model::DeliveryState::Dead => "dead",
    };
    txn.execute(
        &txn.prepare_cached(
            "INSERT INTO opal_outbox (id, op_id, state, next_at_ms, data) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, next_at_ms = EXCLUDED.next_at_ms,
                                           data = EXCLUDED.data",
        )
        .await?,
        &[&n.id.to_string(), &n.operation.to_string(), &state, &millis(n.next_at), &data],
    )
    .await?;
    Ok(())
}

/// Records `entry`; an entry with its id already there is replaced, as in
/// the redb file. A request's entry is written again when its first attempt
/// was refused and it is retried (a cancel that lost the race to a claim
/// goes on to cancel the run), and it ends with the retry's result.
async fn put_audit(txn: &Transaction<'_>, entry: &AuditEntry) -> Result<(), tokio_postgres::Error> {
    let data = serde_json::to_string(entry).expect("an audit entry serializes");
    txn.execute(
        &txn.prepare_cached(
            "INSERT INTO opal_audit (id, at_ms, principal, action, object, result, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET at_ms = EXCLUDED.at_ms, principal = EXCLUDED.principal,
                 action = EXCLUDED.action, object = EXCLUDED.object, result = EXCLUDED.result,
                 data = EXCLUDED.data",
        )
        .await?,
        &[
            &entry.id.to_string(),
            &millis(entry.at),
            &entry.principal,
            &entry.action,
            &entry.object,
            &entry.result,
            &data,
        ],
    )
    .await?;
    Ok(())
}

/// The time of a `*_ms` column.
pub(super) fn from_millis(ms: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

fn json(op: &Operation) -> String {
    serde_json::to_string(op).expect("an operation serializes")
}

async fn admit(txn: &Transaction<'_>, op: &Arc<Operation>, events: &mut Vec<Pending>) -> Applied {
    let id = op.id.to_string();
    let data = json(op);
    // The unique indexes decide; a holder that ends between the insert and
    // the look-up is followed by another try.
    for _ in 0..3 {
        let inserted = txn
            .execute(
                &txn.prepare_cached(
                    "INSERT INTO opal_operations
                     (id, type, target, slot, status, attempt, idempotency_key, created_by, data, parent)
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9)
                 ON CONFLICT DO NOTHING",
                )
                .await?,
                &[
                    &id,
                    &op.op_type,
                    &op.target,
                    &op.slot(),
                    &(op.attempt as i32),
                    &op.idempotency_key,
                    &op.created_by,
                    &data,
                    &op.parent.map(|p| p.to_string()),
                ],
            )
            .await?;
        if inserted == 1 {
            events.push(Pending {
                op_id: op.id,
                at: op.created_at,
                body: Body::Operation { kind: EventKind::Created, json: data, operation: op.clone() },
            });
            return Ok(Ok(Receipt::default()));
        }
        if let Some(key) = &op.idempotency_key
            && let Some(row) = txn
                .query_opt(
                    &txn.prepare_cached("SELECT id FROM opal_operations WHERE idempotency_key = $1").await?,
                    &[key],
                )
                .await?
        {
            return Ok(Err(StoreError::Replay(parse_id(row.get(0)))));
        }
        let holder = txn
            .query_opt(
                &txn.prepare_cached(
                    "SELECT id FROM opal_operations
                 WHERE slot = $1 AND target = $2 AND status IN ('pending', 'running', 'waiting')",
                )
                .await?,
                &[&op.slot(), &op.target],
            )
            .await?;
        if let Some(row) = holder {
            return Ok(Err(StoreError::SlotTaken(parse_id(row.get(0)))));
        }
    }
    Ok(Err(StoreError::Unavailable("the target's slot changed hands during admission; retry".into())))
}

pub(super) fn parse_id(text: &str) -> OperationId {
    text.parse().unwrap_or_default()
}

async fn transition(
    txn: &Transaction<'_>,
    kind: EventKind,
    op: &Arc<Operation>,
    at: Timestamp,
    expect: Expect,
    events: &mut Vec<Pending>,
    node: &str,
) -> Applied {
    // A re-queue carries the next attempt, so it expects the one before.
    let attempt = if kind.requeues() { op.attempt.saturating_sub(1) } else { op.attempt } as i32;
    let fence = match expect {
        Expect::Runner => "status IN ('running', 'waiting') AND owner IS NOT DISTINCT FROM $9",
        Expect::Pending => "status = 'pending'",
        Expect::Waiting => "status = 'waiting'",
        Expect::Orphan => {
            "status IN ('pending', 'running', 'waiting')
             AND (status = 'pending' OR lease_until IS NULL OR lease_until < now() OR owner = $9)"
        }
    };
    let data = json(op);
    let owner = match op.status {
        Status::Running | Status::Waiting => op.node.clone(),
        _ => None,
    };
    let sql = format!(
        "UPDATE opal_operations SET status = $2, attempt = $3, finished_at_ms = $4, data = $5,
             owner = $6, next_attempt_ms = $8,
             lease_until = CASE WHEN $2 IN ('running', 'waiting') THEN lease_until END,
             cancel_requested_by = CASE WHEN $2 IN ('running', 'waiting') THEN cancel_requested_by END
         WHERE id = $1 AND attempt = $7 AND ({fence})"
    );
    let (id, status, next_attempt, finished) =
        (op.id.to_string(), op.status.as_str(), op.attempt as i32, op.finished_at.map(millis));
    let due = op.next_attempt_at.filter(|_| op.status == Status::Pending).map(millis);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&id, &status, &next_attempt, &finished, &data, &owner, &attempt, &due];
    let me = Some(node.to_owned());
    match expect {
        Expect::Runner => params.push(&op.node),
        Expect::Pending | Expect::Waiting => {}
        Expect::Orphan => params.push(&me),
    }
    let n = txn.execute(&txn.prepare_cached(&sql).await?, &params).await?;
    if n == 0 {
        return Ok(Err(StoreError::Fenced(op.id, format!("it is no longer {expect:?} attempt {attempt}"))));
    }
    events.push(Pending { op_id: op.id, at, body: Body::Operation { kind, json: data, operation: op.clone() } });
    Ok(Ok(Receipt::default()))
}

/// Claims pending operations for `claim.node`: oldest first, skipping rows
/// another node is claiming right now (`SKIP LOCKED`), within the per-type
/// limits. Claims of a limited type are serialized by an advisory lock on
/// the type, so two nodes cannot both see room for the last place.
async fn take(txn: &Transaction<'_>, claim: &Claim, events: &mut Vec<Pending>) -> Applied {
    let now_ms = millis(Timestamp::now());
    // One round trip: whether the queue is paused, and when the next retry is due.
    let row = txn
        .query_one(
            &txn.prepare_cached(
                "SELECT (SELECT queue_paused FROM opal_meta),
                        (SELECT min(next_attempt_ms) FROM opal_operations
                         WHERE status = 'pending' AND next_attempt_ms IS NOT NULL AND next_attempt_ms > $1)",
            )
            .await?,
            &[&now_ms],
        )
        .await?;
    let (paused, wake_ms): (bool, Option<i64>) = (row.get(0), row.get(1));
    let wake_at = wake_ms.map(from_millis);
    if paused {
        return Ok(Ok(Receipt { paused, wake_at, ..Receipt::default() }));
    }
    let mut room: Vec<(String, i64)> = Vec::new();
    let mut limited: Vec<&(String, usize)> = claim.limits.iter().filter(|(t, _)| claim.types.contains(t)).collect();
    limited.sort();
    for (op_type, limit) in limited {
        txn.execute(
            &txn.prepare_cached("SELECT pg_advisory_xact_lock(hashtext('opal.claim.' || $1))").await?,
            &[op_type],
        )
        .await?;
        let running: i64 = txn
            .query_one(
                &txn.prepare_cached(
                    "SELECT count(*) FROM opal_operations WHERE status IN ('running', 'waiting') AND type = $1",
                )
                .await?,
                &[op_type],
            )
            .await?
            .get(0);
        room.push((op_type.clone(), (*limit as i64 - running).max(0)));
    }
    let fetch = (claim.max * 2 + 16) as i64;
    let rows = txn
        .query(
            &txn.prepare_cached(
                "SELECT data FROM opal_operations
             WHERE status = 'pending' AND type = ANY($1) AND (next_attempt_ms IS NULL OR next_attempt_ms <= $3)
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&claim.types, &fetch, &now_ms],
        )
        .await?;
    let lease_ms = claim.lease.as_millis() as i64;
    let now = Timestamp::now();
    let mut ids = Vec::new();
    let mut datas = Vec::new();
    let mut claimed = Vec::new();
    let seen = rows.len();
    for row in rows {
        if claimed.len() >= claim.max {
            break;
        }
        let mut op: Operation = match serde_json::from_str(row.get(0)) {
            Ok(op) => op,
            Err(e) => {
                tracing::error!(error = %e, "a pending operation's record cannot be read; skipped");
                continue;
            }
        };
        if let Some((_, left)) = room.iter_mut().find(|(t, _)| *t == op.op_type) {
            if *left == 0 {
                continue;
            }
            *left -= 1;
        }
        op.status = Status::Running;
        op.node = Some(claim.node.clone());
        op.started_at = Some(now);
        op.message = "starting".to_owned();
        op.next_attempt_at = None;
        let data = json(&op);
        ids.push(op.id.to_string());
        datas.push(data.clone());
        let op = Arc::new(op);
        events.push(Pending {
            op_id: op.id,
            at: now,
            body: Body::Operation { kind: EventKind::Started, json: data, operation: op.clone() },
        });
        claimed.push(Operation::clone(&op));
    }
    if !ids.is_empty() {
        txn.execute(
            &txn.prepare_cached(
                "UPDATE opal_operations o SET status = 'running', owner = $3,
                 lease_until = now() + $4 * interval '1 millisecond', data = v.data
             FROM unnest($1::text[], $2::text[]) AS v(id, data) WHERE o.id = v.id",
            )
            .await?,
            &[&ids, &datas, &claim.node, &(lease_ms as f64)],
        )
        .await?;
    }
    // How many claimable operations are still pending: exact when the read
    // saw them all, else a lower bound (the claimer only needs to know
    // whether there are more; the status shows it).
    let pending = seen - claimed.len();
    Ok(Ok(Receipt { count: claimed.len(), claimed, pending, seq: None, paused, wake_at }))
}
