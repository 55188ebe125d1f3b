//! `store`: the durable record of operations and events, in one redb file.
//!
//! Owns the redb [`Database`]. Reads go straight to redb (MVCC: they never wait
//! for the writer). Every write goes through the single writer thread in
//! [`writer`], which group-commits batches and only then hands the committed
//! events to a [`Publish`] sink (the hub): no client can see an event that a
//! crash could take back. Nothing else in the host opens the file.

mod apply;
mod error;
mod history;
mod reads;
mod writer;

use std::path::Path;
use std::sync::Arc;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

pub use error::StoreError;
pub use reads::OperationFilter;
pub use writer::{Change, Publish, Receipt};

/// How many changes may wait for the writer. Senders wait (async) when it is
/// full, which slows producers down instead of growing memory.
const QUEUE_CAPACITY: usize = 8192;

/// Handle to the store: cheap to clone, shared by the engine and the API.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: mpsc::Sender<writer::Append>,
    history: u64,
}

/// The running writer thread; join it after every [`Store`] handle is dropped.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to drain its queue and stop.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Store {
    /// Opens (or creates) `<dir>/opal.redb`, applies pending migrations and
    /// starts the writer, which publishes committed events to `sink`.
    pub fn open(dir: &Path, sink: Arc<dyn Publish>) -> Result<(Store, WriterThread), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        let path = dir.join("opal.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Open(path.display().to_string(), e))?;
        let report = opal_migrations::migrate(&db)?;
        if report.from != report.to {
            tracing::info!(from = report.from, to = report.to, "migrated data file");
        }
        let db = Arc::new(db);
        let last_seq = reads::last_seq(&db)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let thread = writer::spawn(db.clone(), rx, last_seq, sink)?;
        Ok((Store { db, writer: tx, history: report.history }, WriterThread(thread)))
    }

    /// The data file's history id, as 16 hex digits: the same for the life
    /// of the file, different for another file. Seqs are comparable only
    /// within one history.
    pub fn history(&self) -> String {
        format!("{:016x}", self.history)
    }

    /// Queues `change` and waits until it is committed (or refused).
    pub async fn commit(&self, change: Change) -> Result<Receipt, StoreError> {
        let (ack, done) = oneshot::channel();
        self.writer.send(writer::Append { change, ack: Some(ack) }).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `change` without waiting for the commit. Its event is still
    /// published only once committed; use this where nobody waits on it.
    pub async fn enqueue(&self, change: Change) -> Result<(), StoreError> {
        self.writer.send(writer::Append { change, ack: None }).await.map_err(|_| StoreError::Closed)
    }
}
