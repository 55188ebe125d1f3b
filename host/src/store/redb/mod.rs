//! The embedded backend: one redb file, one process.
//!
//! Owns the redb [`Database`]. Reads go straight to redb (MVCC: they never
//! wait for the writer). Every write goes through the single writer thread in
//! [`writer`], which group-commits batches and only then hands the committed
//! events to the [`Publish`] sink (the hub). The writer also keeps the queue
//! of pending operations in memory ([`queue`]): this process is the only one
//! that admits and claims, so the file needs no index of them. After an I/O
//! error the writer closes and reopens the file by itself ([`file`]).

mod apply;
mod file;
mod history;
mod queue;
mod reads;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub use file::Wrap;
use file::{Opener, Slot};

use super::health::Health;
use super::inbox::Inbox;
use super::{Change, Publish, Receipt, Renewal, StoreError};
use crate::model::Operation;

/// The redb store.
#[derive(Clone)]
pub struct RedbStore {
    db: Slot,
    writer: Inbox,
    history: u64,
    path: PathBuf,
    /// Woken by the writer when it admits or re-queues an operation.
    work: Arc<Notify>,
    /// Pending operations, as the writer last counted them.
    pending: Arc<AtomicUsize>,
    /// What the previous process left unfinished, found at open and handed
    /// to recovery once.
    left: Arc<Mutex<Option<Vec<Operation>>>>,
}

/// The running writer thread; join it after every handle is dropped.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to drain its queue and stop.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl RedbStore {
    /// Opens (or creates) `<dir>/opal.redb` (through `wrap`, if given),
    /// applies pending migrations and starts the writer, which publishes
    /// committed events to `sink` and keeps `health`.
    pub(super) fn open(
        dir: &Path,
        wrap: Option<Wrap>,
        sink: Arc<dyn Publish>,
        health: Health,
        outbox: super::Outbox,
    ) -> Result<(RedbStore, WriterThread), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        let opener = Opener::new(dir.join("opal.redb"), wrap);
        let db = opener.open()?;
        let report = opal_migrations::migrate(&db)?;
        if report.from != report.to {
            tracing::info!(from = report.from, to = report.to, "migrated data file");
        }
        let db = Arc::new(db);
        let last_seq = reads::last_seq(&db)?;
        let left = reads::unfinished(&db)?;
        let (tx, rx) = Inbox::new();
        let work = Arc::new(Notify::new());
        let pending = Arc::new(AtomicUsize::new(0));
        let path = opener.path.clone();
        let slot = Slot::new(db);
        let shared = writer::Shared {
            slot: slot.clone(),
            opener,
            sink,
            work: work.clone(),
            pending: pending.clone(),
            health,
            outbox,
        };
        let thread = writer::spawn(shared, rx, last_seq)?;
        let store = RedbStore {
            db: slot,
            writer: tx,
            history: report.history,
            path,
            work,
            pending,
            left: Arc::new(Mutex::new(Some(left))),
        };
        Ok((store, WriterThread(thread)))
    }

    pub(super) fn history(&self) -> u64 {
        self.history
    }

    pub(super) fn work(&self) -> Arc<Notify> {
        self.work.clone()
    }

    pub(super) fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    pub(super) async fn commit(&self, change: Change) -> Result<Receipt, StoreError> {
        self.writer.commit(change).await
    }

    pub(super) async fn enqueue(&self, change: Change) -> Result<(), StoreError> {
        self.writer.enqueue(change).await
    }

    /// At start-up, everything the previous process left unfinished; later,
    /// nothing: no other process shares the file, so nothing is orphaned
    /// while this one runs.
    pub(super) async fn orphans(&self, _node: &str, startup: bool) -> Result<Vec<Operation>, StoreError> {
        let left = if startup { self.left.lock().expect("orphans poisoned").take() } else { None };
        Ok(left.unwrap_or_default())
    }

    /// Nothing to renew: this process is the only owner there is.
    pub(super) async fn renew(&self, _node: &str, _lease: Duration) -> Result<Renewal, StoreError> {
        Ok(Renewal::default())
    }

    pub(super) async fn paused(&self) -> Result<bool, StoreError> {
        use redb::ReadableDatabase;
        let txn = self.db.get()?.begin_read()?;
        let meta = txn.open_table(opal_migrations::schema::META)?;
        Ok(meta.get(apply::PAUSED_KEY)?.is_some_and(|v| v.value() == 1))
    }

    pub(super) async fn pending_count(&self) -> Result<usize, StoreError> {
        Ok(self.pending_now())
    }

    pub(super) fn pending_now(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}
