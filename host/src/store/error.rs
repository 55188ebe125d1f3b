//! The store's error type.

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created or read.
    #[error("cannot use data directory {0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The redb file could not be opened (e.g. another Opal holds it).
    #[error("cannot open data file {0}: {1}")]
    Open(String, #[source] redb::DatabaseError),
    /// Migration failed or the file is too new.
    #[error(transparent)]
    Migrate(#[from] opal_migrations::MigrateError),
    /// The PostgreSQL database was migrated by a newer Opal.
    #[error(
        "the database has schema version {found}, newer than this Opal understands ({supported}); \
         run a newer Opal on every node"
    )]
    DatabaseTooNew {
        /// The database's version.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
    /// A redb operation failed.
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record {0}: {1}")]
    Corrupt(String, #[source] serde_json::Error),
    /// Admission refused: another pending or running operation holds the
    /// slot (same type, or same exclusivity group) on the target.
    #[error("operation {0} is already active on this target")]
    SlotTaken(crate::model::OperationId),
    /// Admission refused: this idempotency key already created an operation.
    #[error("idempotency key already used by operation {0}")]
    Replay(crate::model::OperationId),
    /// A transition was refused because the stored operation is no longer
    /// what the change expected (see [`Expect`](super::Expect)): another node
    /// took its lease over, or it was claimed or ended meanwhile.
    #[error("operation {0} has moved on: {1}")]
    Fenced(crate::model::OperationId, String),
    /// The database cannot be reached or refuses writes for now; the caller
    /// may retry (HTTP 503 with Retry-After).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// The writer has stopped (the server is shutting down).
    #[error("the store is shut down")]
    Closed,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.into())
            }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
