//! Opal's PostgreSQL schema: numbered SQL steps, applied by the host's
//! PostgreSQL store at start-up (under an advisory lock, each step in its own
//! transaction together with its row in `opal_schema`).
//!
//! Like the redb steps, a released step is never edited; a change of layout is
//! a new file in `migrations/postgres/`. A database whose newest step is above
//! [`LATEST`] was migrated by a newer Opal and is refused.

/// One numbered SQL step.
pub struct SqlMigration {
    /// The schema version the database has once this step is applied.
    pub version: i32,
    /// A short description, for logs and the `opal_schema` table.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every step, oldest first.
pub const MIGRATIONS: &[SqlMigration] = &[
    SqlMigration { version: 1, name: "initial", sql: include_str!("../postgres/0001_initial.sql") },
    SqlMigration { version: 2, name: "workflows", sql: include_str!("../postgres/0002_workflows.sql") },
    SqlMigration { version: 3, name: "audit log", sql: include_str!("../postgres/0003_audit.sql") },
];

/// The schema version this build writes.
pub const LATEST: i32 = 3;

/// The advisory lock key held while migrating ("opal" + "mig" in ASCII), so
/// nodes starting together apply each step once.
pub const LOCK_KEY: i64 = 0x006f_7061_6c6d_6967;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().unwrap().version, LATEST);
    }
}
