//! Opal's schemas and the numbered migrations that build them: the redb
//! file's steps (`migrations/redb/`, this module) and PostgreSQL's SQL steps
//! (`migrations/postgres/`, [`postgres`]).
//!
//! The `meta` table holds `schema_version`. At start-up [`migrate`] applies
//! every step newer than the file's version, all in one write transaction, so a
//! crash mid-way leaves the file as it was. A file written by a newer Opal (its
//! version is above [`LATEST`]) is refused rather than guessed at.
//!
//! A step is a function of one write transaction. Steps are never edited once
//! released; a change of layout is a new step. The tables of the current layout
//! are in [`schema`], which is what the host's store uses.

use redb::{Database, ReadableTable, WriteTransaction};

#[path = "../redb/0001_initial.rs"]
mod m0001_initial;
#[path = "../redb/0002_idempotency.rs"]
mod m0002_idempotency;
#[path = "../redb/0003_event_order.rs"]
mod m0003_event_order;
#[path = "../redb/0004_audit.rs"]
mod m0004_audit;
pub mod postgres;
pub mod schema;

/// One numbered migration step.
pub struct Migration {
    /// The schema version the file has once this step is applied.
    pub version: u64,
    /// A short description, for logs.
    pub name: &'static str,
    /// The step itself.
    pub apply: fn(&WriteTransaction) -> Result<(), redb::Error>,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] =
    &[m0001_initial::MIGRATION, m0002_idempotency::MIGRATION, m0003_event_order::MIGRATION, m0004_audit::MIGRATION];

/// The schema version this build writes.
pub const LATEST: u64 = 4;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The file was written by a newer Opal.
    #[error(
        "the data file has schema version {found}, newer than this Opal understands ({supported}); \
         run a newer Opal or restore a backup"
    )]
    TooNew {
        /// The file's version.
        found: u64,
        /// The newest version this build knows.
        supported: u64,
    },
    /// redb failed.
    #[error("storage error while migrating: {0}")]
    Storage(#[from] redb::Error),
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// The version the file had before.
    pub from: u64,
    /// The version it has now.
    pub to: u64,
    /// The file's history id: made once, when the file is first migrated,
    /// and kept for its life. A client resuming from a seq of another
    /// history (the data was replaced) must not trust that seq.
    pub history: u64,
}

/// Brings `db` to [`LATEST`], applying the pending steps in one transaction.
pub fn migrate(db: &Database) -> Result<MigrateReport, MigrateError> {
    let txn = db.begin_write().map_err(redb::Error::from)?;
    let from = {
        let meta = txn.open_table(schema::META).map_err(redb::Error::from)?;
        let version = meta.get(schema::SCHEMA_VERSION_KEY).map_err(redb::Error::from)?.map(|v| v.value());
        version.unwrap_or(0)
    };
    if from > LATEST {
        return Err(MigrateError::TooNew { found: from, supported: LATEST });
    }
    for step in MIGRATIONS.iter().filter(|m| m.version > from) {
        (step.apply)(&txn)?;
        let mut meta = txn.open_table(schema::META).map_err(redb::Error::from)?;
        meta.insert(schema::SCHEMA_VERSION_KEY, step.version).map_err(redb::Error::from)?;
    }
    let history = {
        let mut meta = txn.open_table(schema::META).map_err(redb::Error::from)?;
        let existing = meta.get(schema::HISTORY_KEY).map_err(redb::Error::from)?.map(|v| v.value());
        match existing {
            Some(history) => history,
            None => {
                let history = new_history_id();
                meta.insert(schema::HISTORY_KEY, history).map_err(redb::Error::from)?;
                history
            }
        }
    };
    txn.commit().map_err(redb::Error::from)?;
    Ok(MigrateReport { from, to: LATEST.max(from), history })
}

/// A random, non-zero id (std's randomly keyed hasher over the clock).
fn new_history_id() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::collections::hash_map::RandomState::new().hash_one(now.as_nanos()).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_file_reaches_latest_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let first = migrate(&db).unwrap();
        assert_eq!((first.from, first.to), (0, LATEST));
        let again = migrate(&db).unwrap();
        assert_eq!((again.from, again.to, again.history), (LATEST, LATEST, first.history), "the history id stays");
        let other = Database::create(dir.path().join("u.redb")).unwrap();
        assert_ne!(migrate(&other).unwrap().history, first.history, "another file, another history");
    }

    #[test]
    fn newer_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(schema::META).unwrap().insert(schema::SCHEMA_VERSION_KEY, LATEST + 1).unwrap();
        txn.commit().unwrap();
        let err = migrate(&db).unwrap_err();
        assert!(matches!(err, MigrateError::TooNew { found, .. } if found == LATEST + 1), "{err}");
        assert!(err.to_string().contains("newer than this Opal"), "{err}");
    }

    #[test]
    fn versions_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as u64 + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().unwrap().version, LATEST);
    }
}
