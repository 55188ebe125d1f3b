//! The cluster backend: one PostgreSQL database shared by every node.
//!
//! - [`migrate`]: the numbered SQL steps, applied at open under an advisory
//!   lock; a database newer than this binary is refused.
//! - [`writer`]: one task per node group-commits batches of changes in one
//!   transaction each ([`apply`] writes each change). The seq counter row is
//!   taken last, just before the commit, so seqs are dense and
//!   commit-ordered across the cluster while the row is held only briefly.
//! - [`feed`]: LISTEN/NOTIFY wakes every node's feed, which reads the events
//!   after the last seq it has and publishes them to its hub, its own node's
//!   events included: every hub sees every event once, in seq order.
//! - [`reads`]: the reads, the claim-free queries of leases and orphans,
//!   through a bounded pool.
//!
//! Errors that mean "the database cannot be reached" or "it refuses writes"
//! (read-only, out of disk, a revoked privilege) become
//! [`StoreError::Unavailable`] (HTTP 503 with Retry-After) and mark the store
//! failed until a batch commits again. Connections are re-made by the pool
//! and the feed by themselves; after a refused batch every pooled connection
//! opened before it is replaced ([`Stale`]), since a session keeps the
//! settings (such as `default_transaction_read_only`) it started with.

mod apply;
mod feed;
mod migrate;
mod reads;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::inbox::Inbox;
use super::{Change, Publish, Receipt, StoreError};

/// Connections in the pool, shared by the writer and the reads.
const POOL_SIZE: usize = 8;
/// How long a caller waits for a pooled connection before it is told the
/// database is unavailable.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    writer: Inbox,
    history: u64,
    /// Woken by the feed when another node admits or re-queues work.
    work: Arc<Notify>,
}

/// The writer and the feed; [`Tasks::join`] waits for the writer to drain.
pub struct Tasks {
    writer: tokio::task::JoinHandle<()>,
    feed: tokio::task::JoinHandle<()>,
    stop_feed: CancellationToken,
}

impl Tasks {
    /// Waits for the writer to drain its queue (every handle is gone), then
    /// stops the feed.
    pub async fn join(self) {
        let _ = self.writer.await;
        self.stop_feed.cancel();
        let _ = self.feed.await;
    }
}

impl PgStore {
    /// Connects to `url`, migrates the database and starts the writer and
    /// the feed, which publishes every node's committed events to `sink`.
    pub(super) async fn open(
        url: &str,
        node: &str,
        sink: Arc<dyn Publish>,
        health: Health,
        outbox: super::Outbox,
    ) -> Result<(PgStore, Tasks), StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Database(format!("invalid --store URL: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let stale = Stale::default();
        let pool = Pool::builder(manager)
            .pre_recycle(stale.hook())
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        migrate::run(&pool).await?;
        let (history, last_seq) = reads::meta(&pool).await?;
        let work = Arc::new(Notify::new());
        let (local, local_rx) = mpsc::unbounded_channel();
        let (tx, rx) = Inbox::new();
        let node: Arc<str> = Arc::from(node);
        let writer = tokio::spawn(writer::run(
            pool.clone(),
            rx,
            node.clone(),
            writer::Reports { local, work: work.clone(), health, stale, outbox },
        ));
        let stop_feed = CancellationToken::new();
        let feed = tokio::spawn(feed::run(
            config,
            pool.clone(),
            last_seq,
            sink,
            feed::Wakes { local: local_rx, work: work.clone() },
            stop_feed.clone(),
        ));
        let store = PgStore { pool, writer: tx, history, work };
        Ok((store, Tasks { writer, feed, stop_feed }))
    }

    pub(super) fn history(&self) -> u64 {
        self.history
    }

    pub(super) fn work(&self) -> Arc<Notify> {
        self.work.clone()
    }

    pub(super) async fn commit(&self, change: Change) -> Result<Receipt, StoreError> {
        self.writer.commit(change).await
    }

    pub(super) async fn enqueue(&self, change: Change) -> Result<(), StoreError> {
        self.writer.enqueue(change).await
    }
}

/// Marks the pooled connections opened before a refused write as stale, so
/// that the pool replaces them instead of handing them out again.
#[derive(Clone, Default)]
pub(super) struct Stale(Arc<Mutex<Option<Instant>>>);

impl Stale {
    /// Every connection opened before now is to be replaced.
    pub(super) fn mark(&self) {
        *self.0.lock().expect("stale poisoned") = Some(Instant::now());
    }

    fn hook(&self) -> Hook {
        let stale = self.clone();
        Hook::sync_fn(move |_, metrics| match *stale.0.lock().expect("stale poisoned") {
            Some(before) if metrics.created < before => Err(HookError::message("opened before a refused write")),
            _ => Ok(()),
        })
    }
}

/// What a PostgreSQL error means for the caller.
pub(super) fn classify(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return StoreError::Unavailable(e.to_string());
    }
    match e.code() {
        // 08: connection exceptions; 57P0x: the server is shutting down or
        // starting; 53: out of disk, memory or connections.
        Some(code)
            if code.code().starts_with("08") || code.code().starts_with("57P") || code.code().starts_with("53") =>
        {
            StoreError::Unavailable(reason(&e))
        }
        // The database refuses writes: made read-only, or a privilege revoked.
        Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION || *code == SqlState::INSUFFICIENT_PRIVILEGE => {
            StoreError::Unavailable(format!("the database refuses writes: {}", reason(&e)))
        }
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE => {
            StoreError::Unavailable(format!("transaction conflict: {}", reason(&e)))
        }
        Some(_) => StoreError::Database(reason(&e)),
        // No SQLSTATE: an I/O error on the connection.
        None => StoreError::Unavailable(reason(&e)),
    }
}

/// The database's own message and SQLSTATE, or the driver's error with its
/// cause (a bare `db error` or `error communicating with the server` says
/// nothing).
fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A pool error: the database cannot be reached (or is too busy).
pub(super) fn unavailable(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        e => StoreError::Unavailable(e.to_string()),
    }
}
