//! Applies `migrations/postgres/` at open, under an advisory lock so that
//! nodes starting together apply each step exactly once. Each step runs in a
//! transaction with its row in `opal_schema`: a crash mid-way leaves the
//! database at the step before. A database whose newest step is above this
//! build's is refused, before anything is written.

use deadpool_postgres::Pool;
use opal_migrations::postgres::{LATEST, LOCK_KEY, MIGRATIONS};

use super::{classify, unavailable};
use crate::store::StoreError;

pub(super) async fn run(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await.map_err(classify)?;
    let result = steps(&mut client).await;
    // Released on every path; a lost connection releases it anyway.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    result
}

async fn steps(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS opal_schema (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(classify)?;
    let row = client.query_one("SELECT coalesce(max(version), 0) FROM opal_schema", &[]).await.map_err(classify)?;
    let found: i32 = row.get(0);
    if found > LATEST {
        return Err(StoreError::DatabaseTooNew { found, supported: LATEST });
    }
    for step in MIGRATIONS.iter().filter(|m| m.version > found) {
        let txn = client.transaction().await.map_err(classify)?;
        txn.batch_execute(step.sql).await.map_err(classify)?;
        txn.execute("INSERT INTO opal_schema (version, name) VALUES ($1, $2)", &[&step.version, &step.name])
            .await
            .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        tracing::info!(version = step.version, name = step.name, "migrated the database");
    }
    Ok(())
}
