//! Reads, lease renewals and the search for orphans: single statements on a
//! pooled connection, never through the writer.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::apply::parse_id;
use super::{PgStore, classify, unavailable};
use crate::model::{Event, Operation, OperationId, Seq};
use crate::schedule::Schedule;
use crate::store::{OperationFilter, Renewal, StoreError, frame};

/// The most rows one listing query reads while filtering by scope.
const LIST_PAGE: i64 = 500;

/// The database's history id and last seq.
pub(super) async fn meta(pool: &Pool) -> Result<(u64, Seq), StoreError> {
    let client = pool.get().await.map_err(unavailable)?;
    let row = client.query_one("SELECT history, last_seq FROM opal_meta", &[]).await.map_err(classify)?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

fn decode(text: &str) -> Result<Operation, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt("operation".into(), e))
}

fn decode_all(rows: &[tokio_postgres::Row]) -> Result<Vec<Operation>, StoreError> {
    rows.iter().map(|r| decode(r.get(0))).collect()
}

impl PgStore {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    pub(crate) async fn get(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT data FROM opal_operations WHERE id = $1", &[&id.to_string()])
            .await
            .map_err(classify)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    pub(crate) async fn list(
        &self,
        filter: &OperationFilter,
        limit: usize,
        before: Option<OperationId>,
    ) -> Result<Vec<Operation>, StoreError> {
        let client = self.client().await?;
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let parent = filter.parent.map(|p| p.to_string());
        let mut upper = before.map(|b| b.to_string()).unwrap_or_else(|| "~".to_owned());
        let mut out = Vec::with_capacity(limit.min(1000));
        // The scope is a pattern match, done here; page until the limit is met.
        loop {
            let rows = client
                .query(
                    "SELECT data, id FROM opal_operations
                     WHERE id < $1
                       AND (cardinality($2::text[]) = 0 OR status = ANY($2))
                       AND ($3::text IS NULL OR type = $3)
                       AND ($4::text IS NULL OR target = $4)
                       AND ($5::text IS NULL OR created_by = $5)
                       AND ($7::text IS NULL OR parent = $7)
                     ORDER BY id DESC LIMIT $6",
                    &[&upper, &statuses, &filter.op_type, &filter.target, &filter.created_by, &LIST_PAGE, &parent],
                )
                .await
                .map_err(classify)?;
            let last_page = (rows.len() as i64) < LIST_PAGE;
            for row in &rows {
                let op = decode(row.get(0))?;
                if filter.matches(&op) {
                    out.push(op);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            match rows.last() {
                Some(row) if !last_page => upper = row.get(1),
                _ => return Ok(out),
            }
        }
    }

    pub(crate) async fn active(&self) -> Result<Vec<Operation>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT data FROM opal_operations WHERE status IN ('pending', 'running', 'waiting') ORDER BY id",
                &[],
            )
            .await
            .map_err(classify)?;
        decode_all(&rows)
    }

    pub(crate) async fn events(&self, id: OperationId, since: Seq) -> Result<Vec<(Seq, String)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, frame FROM opal_events WHERE op_id = $1 AND seq > $2 ORDER BY seq",
                &[&id.to_string(), &(since.min(i64::MAX as u64) as i64)],
            )
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1))).collect())
    }

    pub(crate) async fn last_seq(&self) -> Result<Seq, StoreError> {
        Ok(meta(&self.pool).await?.1)
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let rows =
            self.client().await?.query("SELECT data FROM opal_schedules ORDER BY id", &[]).await.map_err(classify)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get(0)).map_err(|e| StoreError::Corrupt("schedule".into(), e)))
            .collect()
    }

    pub(crate) async fn replay(&self, after: Seq, upto: Seq) -> Result<Vec<Event>, StoreError> {
        read_events(&**self.client().await?, after, Some(upto), None).await
    }

    pub(crate) async fn orphans(&self, node: &str, startup: bool) -> Result<Vec<Operation>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT data FROM opal_operations
                 WHERE status IN ('running', 'waiting') AND (lease_until < now() OR ($2 AND owner = $1))
                 ORDER BY id LIMIT 1000",
                &[&node, &startup],
            )
            .await
            .map_err(classify)?;
        decode_all(&rows)
    }

    pub(crate) async fn audit(
        &self,
        filter: &crate::model::AuditFilter,
        limit: usize,
        before: Option<ulid::Ulid>,
    ) -> Result<Vec<crate::model::AuditEntry>, StoreError> {
        let upper = before.map(|b| b.to_string()).unwrap_or_else(|| "~".to_owned());
        let since = filter.since.map(super::apply::millis);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT data FROM opal_audit
                 WHERE id < $1
                   AND ($2::text IS NULL OR principal = $2)
                   AND ($3::text IS NULL OR action = $3)
                   AND ($4::text IS NULL OR object = $4)
                   AND ($5::bigint IS NULL OR at_ms >= $5)
                 ORDER BY id DESC LIMIT $6",
                &[&upper, &filter.principal, &filter.action, &filter.object, &since, &(limit as i64)],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get(0)).map_err(|e| StoreError::Corrupt("audit entry".into(), e)))
            .collect()
    }

    /// Takes up to `max` due notifications for this node for 30 s: other
    /// nodes skip them meanwhile (a delivery attempt records its outcome,
    /// and a node that dies mid-attempt leaves them due again).
    pub(crate) async fn due_notifications(
        &self,
        now: crate::model::Timestamp,
        max: usize,
    ) -> Result<Vec<crate::model::Notification>, StoreError> {
        let now_ms = super::apply::millis(now);
        let rows = self
            .client()
            .await?
            .query(
                "UPDATE opal_outbox SET next_at_ms = $1 + 30000 WHERE id IN (
                     SELECT id FROM opal_outbox WHERE state = 'pending' AND next_at_ms <= $1
                     ORDER BY next_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING data",
                &[&now_ms, &(max as i64)],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get(0)).map_err(|e| StoreError::Corrupt("notification".into(), e)))
            .collect()
    }

    pub(crate) async fn notifications(
        &self,
        operation: Option<OperationId>,
        limit: usize,
    ) -> Result<Vec<crate::model::Notification>, StoreError> {
        let op = operation.map(|o| o.to_string());
        let rows = self
            .client()
            .await?
            .query(
                "SELECT data FROM opal_outbox WHERE ($1::text IS NULL OR op_id = $1) ORDER BY id DESC LIMIT $2",
                &[&op, &(limit as i64)],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get(0)).map_err(|e| StoreError::Corrupt("notification".into(), e)))
            .collect()
    }

    pub(crate) async fn paused(&self) -> Result<bool, StoreError> {
        let row = self.client().await?.query_one("SELECT queue_paused FROM opal_meta", &[]).await.map_err(classify)?;
        Ok(row.get(0))
    }

    pub(crate) async fn renew(&self, node: &str, lease: Duration) -> Result<Renewal, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "UPDATE opal_operations SET lease_until = now() + $2 * interval '1 millisecond'
                 WHERE owner = $1 AND status IN ('running', 'waiting')
                 RETURNING id, attempt, cancel_requested_by",
                &[&node, &(lease.as_millis() as f64)],
            )
            .await
            .map_err(classify)?;
        let mut renewal = Renewal::default();
        for row in rows {
            let id = parse_id(row.get(0));
            renewal.held.push((id, row.get::<_, i32>(1) as u32));
            if let Some(by) = row.get::<_, Option<String>>(2) {
                renewal.cancels.push((id, by));
            }
        }
        Ok(renewal)
    }

    pub(crate) async fn pending_count(&self) -> Result<usize, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM opal_operations WHERE status = 'pending'", &[])
            .await
            .map_err(classify)?;
        Ok(row.get::<_, i64>(0) as usize)
    }
}

/// The events after `after` (up to `upto`, at most `limit`), in seq order.
pub(super) async fn read_events(
    client: &tokio_postgres::Client,
    after: Seq,
    upto: Option<Seq>,
    limit: Option<i64>,
) -> Result<Vec<Event>, StoreError> {
    let upto = upto.map_or(i64::MAX, |u| u.min(i64::MAX as u64) as i64);
    let rows = client
        .query(
            "SELECT seq, op_id, frame FROM opal_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
            &[&(after as i64), &upto, &limit.unwrap_or(i64::MAX)],
        )
        .await
        .map_err(classify)?;
    rows.into_iter()
        .map(|r| {
            let seq = r.get::<_, i64>(0) as u64;
            frame::parse(seq, parse_id(r.get(1)), r.get(2)).map_err(|e| StoreError::Corrupt(format!("event {seq}"), e))
        })
        .collect()
}
