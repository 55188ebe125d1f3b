//! The redb file: how it is opened (and opened again after an I/O error),
//! and the slot through which readers reach the open database.
//!
//! After an I/O error redb refuses every later write until the database is
//! closed and opened again. The writer does that by itself (see
//! [`writer`](super::writer)): it empties the [`Slot`] (readers get
//! [`StoreError::Unavailable`] meanwhile), waits for the readers still
//! holding the old handle to let go, and opens the file again through the
//! same [`Opener`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

use crate::store::StoreError;

/// Wraps the file's storage backend, e.g. to inject I/O faults in tests.
#[derive(Clone)]
pub struct Wrap(Arc<dyn Fn(FileBackend) -> Box<dyn StorageBackend> + Send + Sync>);

impl Wrap {
    /// A wrap that makes the backend with `f` from the file's own.
    pub fn new(f: impl Fn(FileBackend) -> Box<dyn StorageBackend> + Send + Sync + 'static) -> Wrap {
        Wrap(Arc::new(f))
    }
}

impl fmt::Debug for Wrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Wrap(..)")
    }
}

impl PartialEq for Wrap {
    fn eq(&self, other: &Wrap) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Wrap {}

/// Opens the data file, the same way each time.
pub(super) struct Opener {
    pub(super) path: PathBuf,
    wrap: Option<Wrap>,
}

impl Opener {
    pub(super) fn new(path: PathBuf, wrap: Option<Wrap>) -> Opener {
        Opener { path, wrap }
    }

    /// Opens (or creates) the file; redb repairs it first if it was not
    /// closed cleanly.
    pub(super) fn open(&self) -> Result<Database, StoreError> {
        let name = || self.path.display().to_string();
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| StoreError::Io(name(), e))?;
        let file = FileBackend::new(file).map_err(|e| StoreError::Open(name(), e))?;
        let builder = redb::Builder::new();
        let opened = match &self.wrap {
            None => builder.create_with_backend(file),
            Some(wrap) => builder.create_with_backend(Boxed((wrap.0)(file))),
        };
        opened.map_err(|e| StoreError::Open(name(), e))
    }
}

/// Where readers find the open database; empty while it is being reopened.
#[derive(Clone)]
pub(super) struct Slot(Arc<RwLock<Option<Arc<Database>>>>);

impl Slot {
    pub(super) fn new(db: Arc<Database>) -> Slot {
        Slot(Arc::new(RwLock::new(Some(db))))
    }

    /// The open database, or `Unavailable` while it is being reopened.
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.0
            .read()
            .expect("slot poisoned")
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the data file is being reopened after a storage error".into()))
    }

    /// Empties the slot; returns what it held.
    pub(super) fn take(&self) -> Option<Arc<Database>> {
        self.0.write().expect("slot poisoned").take()
    }

    pub(super) fn put(&self, db: Arc<Database>) {
        *self.0.write().expect("slot poisoned") = Some(db);
    }
}

/// A boxed backend is a backend.
#[derive(Debug)]
struct Boxed(Box<dyn StorageBackend>);

impl StorageBackend for Boxed {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// Waits (a bounded time) until no reader holds `db` any more, then closes it.
pub(super) fn close(db: Arc<Database>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut db = db;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return drop(db),
            Err(held) if std::time::Instant::now() >= deadline => {
                tracing::warn!("a reader still holds the failed data file; it closes when that read ends");
                return drop(held);
            }
            Err(held) => {
                db = held;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

/// What the status says while writes to `path` fail.
pub(super) fn describe(path: &Path, e: &StoreError) -> String {
    match e {
        // These name the file already.
        StoreError::Io(..) | StoreError::Open(..) => e.to_string(),
        e => format!("cannot write the data file {}: {e}", path.display()),
    }
}
