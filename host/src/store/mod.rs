//! `store`: the durable record of operations and events, behind one
//! interface with two backends.
//!
//! - [`redb`](self::redb): the embedded default, one file in the data
//!   directory, one process.
//! - [`postgres`](self::postgres): the cluster backend, one database shared by
//!   every node of a cluster.
//!
//! The engine, hub, API and schedules hold a [`Store`] and never learn which
//! backend it is: they send [`Change`]s, read records, claim pending work and
//! renew leases. Both backends commit a change before they publish its event
//! to the [`Publish`] sink (the hub), in one dense, commit-ordered `seq`
//! order, so no client sees an event that a crash could take back.

mod change;
mod error;
mod filter;
mod frame;
mod health;
mod inbox;
mod outbox;
pub mod postgres;
pub mod redb;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use change::{Change, Claim, Expect, Publish, Receipt, Renewal};
pub use error::StoreError;
pub use filter::OperationFilter;
pub use health::Condition;
pub use outbox::Outbox;

use crate::model::{Event, EventKind, Operation, OperationId, Seq};
use crate::schedule::Schedule;

/// Where the records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `<dir>/opal.redb`, for this process alone.
    Redb(PathBuf),
    /// A PostgreSQL database (`postgres://user@host:port/db`), shared by a
    /// cluster's nodes.
    Postgres(String),
}

/// Handle to the store: cheap to clone, shared by the engine, hub and API.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    health: health::Health,
    outbox: Outbox,
}

#[derive(Clone)]
enum Backend {
    Redb(redb::RedbStore),
    Postgres(postgres::PgStore),
}

/// The store's background work (writer, event feed); [`StoreTasks::join`]
/// it after every [`Store`] handle is dropped, so nothing queued is lost.
pub enum StoreTasks {
    /// redb's writer thread.
    Redb(redb::WriterThread),
    /// PostgreSQL's writer and feed tasks.
    Postgres(postgres::Tasks),
}

impl StoreTasks {
    /// Waits for the writer to drain its queue and stop.
    pub async fn join(self) {
        match self {
            StoreTasks::Redb(writer) => {
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            }
            StoreTasks::Postgres(tasks) => tasks.join().await,
        }
    }
}

macro_rules! dispatch {
    ($self:expr, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Redb($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens the store at `location` (creating and migrating it as needed)
    /// for node `node`, and starts its writer; committed events, this node's
    /// and every other node's, go to `sink` in seq order.
    pub async fn open(
        location: &Location,
        node: &str,
        sink: Arc<dyn Publish>,
    ) -> Result<(Store, StoreTasks), StoreError> {
        Store::open_wrapped(location, node, sink, None).await
    }

    /// [`Store::open`], with the redb file's storage backend wrapped by
    /// `wrap` (the fault-injection tests' hook).
    pub async fn open_wrapped(
        location: &Location,
        node: &str,
        sink: Arc<dyn Publish>,
        wrap: Option<redb::Wrap>,
    ) -> Result<(Store, StoreTasks), StoreError> {
        let health = health::Health::new();
        let outbox = Outbox::default();
        match location {
            Location::Redb(dir) => {
                let (store, writer) = redb::RedbStore::open(dir, wrap, sink, health.clone(), outbox.clone())?;
                Ok((Store { backend: Backend::Redb(store), health, outbox }, StoreTasks::Redb(writer)))
            }
            Location::Postgres(url) => {
                let (store, tasks) = postgres::PgStore::open(url, node, sink, health.clone(), outbox.clone()).await?;
                Ok((Store { backend: Backend::Postgres(store), health, outbox }, StoreTasks::Postgres(tasks)))
            }
        }
    }

    /// Sets the notification rules every committed event is matched against
    /// (in its transaction) from now on.
    pub fn set_notify(&self, rules: crate::notify::Rules) {
        self.outbox.set(rules);
    }

    /// Pending notifications due at `now` (at most `max`), taken for this
    /// node for a while (a shared store's other nodes skip them meanwhile).
    pub async fn due_notifications(
        &self,
        now: crate::model::Timestamp,
        max: usize,
    ) -> Result<Vec<crate::model::Notification>, StoreError> {
        dispatch!(self, s => s.due_notifications(now, max).await)
    }

    /// Notifications, newest first (only `operation`'s, if given).
    pub async fn notifications(
        &self,
        operation: Option<OperationId>,
        limit: usize,
    ) -> Result<Vec<crate::model::Notification>, StoreError> {
        dispatch!(self, s => s.notifications(operation, limit).await)
    }

    /// Whether writes succeed now, and how often they came back after failing.
    pub fn condition(&self) -> Condition {
        self.health.now()
    }

    /// Follows [`Store::condition`].
    pub fn watch_condition(&self) -> tokio::sync::watch::Receiver<Condition> {
        self.health.watch()
    }

    /// `"redb"` or `"postgres"`, for the status.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Redb(_) => "redb",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether other processes share the store (and so need leases).
    pub fn shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The store's history id, as 16 hex digits: the same for the life of
    /// the data, different for other data. Seqs are comparable only within
    /// one history.
    pub fn history(&self) -> String {
        format!("{:016x}", dispatch!(self, s => s.history()))
    }

    /// Woken when pending work may have appeared (an admission or re-queue,
    /// on any node), so the engine claims it without polling.
    pub fn work(&self) -> Arc<Notify> {
        dispatch!(self, s => s.work())
    }

    /// The size of the local data file, if there is one.
    pub fn file_bytes(&self) -> Option<u64> {
        match &self.backend {
            Backend::Redb(s) => Some(s.file_bytes()),
            Backend::Postgres(_) => None,
        }
    }

    /// Queues `change` and waits until it is committed (or refused).
    pub async fn commit(&self, change: Change) -> Result<Receipt, StoreError> {
        let counted = Counted::of(&change);
        let receipt = dispatch!(self, s => s.commit(change).await)?;
        counted.record(&receipt);
        Ok(receipt)
    }

    /// Queues `change` without waiting for the commit. Its event is still
    /// published only once committed; use this where nobody waits on it.
    /// (Nothing that the metrics count goes this way: lifecycle changes are
    /// committed with [`Store::commit`].)
    pub async fn enqueue(&self, change: Change) -> Result<(), StoreError> {
        dispatch!(self, s => s.enqueue(change).await)
    }

    /// The operation with `id`, if it exists.
    pub async fn get(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        dispatch!(self, s => s.get(id).await)
    }

    /// Up to `limit` operations matching `filter`, newest first, strictly
    /// older than `before`.
    pub async fn list(
        &self,
        filter: &OperationFilter,
        limit: usize,
        before: Option<OperationId>,
    ) -> Result<Vec<Operation>, StoreError> {
        dispatch!(self, s => s.list(filter, limit, before).await)
    }

    /// The pending and running operations, oldest first.
    pub async fn active(&self) -> Result<Vec<Operation>, StoreError> {
        dispatch!(self, s => s.active().await)
    }

    /// The event frames of operation `id` with a seq above `since`, in order.
    pub async fn events(&self, id: OperationId, since: Seq) -> Result<Vec<(Seq, String)>, StoreError> {
        dispatch!(self, s => s.events(id, since).await)
    }

    /// The seq of the last committed event.
    pub async fn last_seq(&self) -> Result<Seq, StoreError> {
        dispatch!(self, s => s.last_seq().await)
    }

    /// Every schedule, oldest first.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        dispatch!(self, s => s.schedules().await)
    }

    /// Every event with `after < seq <= upto`, in order, or an error if any
    /// of them is gone (pruned): a partial replay would be a silent gap.
    pub async fn replay(&self, after: Seq, upto: Seq) -> Result<Vec<Event>, String> {
        let events = match &self.backend {
            Backend::Redb(s) => s.replay(after, upto).await?,
            Backend::Postgres(s) => s.replay(after, upto).await.map_err(|e| e.to_string())?,
        };
        if events.len() as u64 != upto - after {
            return Err(format!("{} of {} events after seq {after} are no longer stored", events.len(), upto - after));
        }
        Ok(events)
    }

    /// The operations nobody runs any more, for recovery: in a private store
    /// (`startup`), everything a previous process left unfinished; in a
    /// shared one, the running operations whose lease expired, and at
    /// `startup` also those that `node` (a previous process with this id)
    /// still owns.
    pub async fn orphans(&self, node: &str, startup: bool) -> Result<Vec<Operation>, StoreError> {
        dispatch!(self, s => s.orphans(node, startup).await)
    }

    /// Renews `node`'s leases on its running operations for `lease`; returns
    /// what it still holds and the cancels asked of it.
    pub async fn renew(&self, node: &str, lease: Duration) -> Result<Renewal, StoreError> {
        dispatch!(self, s => s.renew(node, lease).await)
    }

    /// How many operations are pending, store-wide (a query on a shared store).
    pub async fn pending_count(&self) -> Result<usize, StoreError> {
        dispatch!(self, s => s.pending_count().await)
    }

    /// Up to `limit` audit entries matching `filter`, newest first, older than `before`.
    pub async fn audit(
        &self,
        filter: &crate::model::AuditFilter,
        limit: usize,
        before: Option<ulid::Ulid>,
    ) -> Result<Vec<crate::model::AuditEntry>, StoreError> {
        dispatch!(self, s => s.audit(filter, limit, before).await)
    }

    /// Whether the queue is paused (store-wide).
    pub async fn paused(&self) -> Result<bool, StoreError> {
        dispatch!(self, s => s.paused().await)
    }

    /// How many operations are pending, if the store knows without a query
    /// (a private store counts them in its writer).
    pub fn pending_now(&self) -> Option<usize> {
        match &self.backend {
            Backend::Redb(s) => Some(s.pending_now()),
            Backend::Postgres(_) => None,
        }
    }
}

impl crate::hub::History for Store {
    fn replay(&self, after: Seq, upto: Seq) -> crate::hub::Replay<'_> {
        Box::pin(Store::replay(self, after, upto))
    }
}

/// What a change adds to the operation metrics once it has committed.
enum Counted {
    Admitted(Arc<Operation>),
    Transition(EventKind, Arc<Operation>),
    Claim,
    Nothing,
}

impl Counted {
    fn of(change: &Change) -> Self {
        match change {
            Change::Admit { operation } => Counted::Admitted(operation.clone()),
            Change::Operation { kind, operation, .. } => Counted::Transition(*kind, operation.clone()),
            Change::Claim(_) => Counted::Claim,
            Change::Audited { change, .. } => Counted::of(change),
            _ => Counted::Nothing,
        }
    }

    fn record(self, receipt: &Receipt) {
        match self {
            Counted::Admitted(op) => crate::telemetry::admitted(&op),
            Counted::Transition(kind, op) => crate::telemetry::transition(kind, &op),
            Counted::Claim => {
                for op in &receipt.claimed {
                    crate::telemetry::transition(EventKind::Started, op);
                }
            }
            Counted::Nothing => {}
        }
    }
}
