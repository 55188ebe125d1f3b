//! `engine`: the lifecycle of operations.
//!
//! Owns admission (type known, params valid, slot free, record durable before
//! the 202), claiming pending work within the concurrency limits ([`claim`]),
//! one runner task per running operation, cancellation, leases ([`lease`]),
//! recovery and retention. It talks to the registry for plugins, to the
//! sandbox through a plugin's `Component`, and to the store through
//! `Change`s; it never touches a database, sockets or HTTP, and does not know
//! whether other nodes share its store (beyond [`Store::shared`]).

mod cancel;
mod claim;
mod defaults;
mod drive;
pub mod feed;
mod gate;
mod lease;
mod queue;
mod recovery;
mod retention;
mod retry;
mod runner;
mod runtime;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TypePolicy;
use crate::model::{AuditEntry, AuditFilter, FieldError, Operation, OperationId, RetryPolicy, Seq};
use crate::registry::{Plugin, Registry, Unresolved};
use crate::sandbox::Sandbox;
use crate::store::{Change, OperationFilter, Store, StoreError};
use crate::workflow::Catalog;
use cancel::CancelSwitch;
pub use feed::Feed;
pub use gate::{DecideError, Decision, Gate};
use queue::Running;
use runtime::Runners;

/// Engine settings, from the operator's config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The progress throttle's window.
    pub progress_window: Duration,
    /// How long a cancelled plugin may take to stop by itself before it is stopped by force.
    pub cancel_grace: Duration,
    /// Most operations running at once.
    pub max_concurrent: usize,
    /// Ended operations older than this are pruned.
    pub retention: Duration,
    /// Audit log entries older than this are pruned.
    pub audit_retention: Duration,
    /// How often pruning runs.
    pub prune_interval: Duration,
    /// Per-type overrides.
    pub types: BTreeMap<String, TypePolicy>,
    /// This node's name (`--node-id`), recorded on the operations it runs.
    pub node: String,
    /// How long a claimed operation's lease lasts unless renewed (renewed
    /// every third of it); only a shared store uses leases.
    pub lease: Duration,
    /// The data directory whose free space gates new starts (the redb
    /// store's), and its floor; `None` where the records live elsewhere.
    pub space: Option<(std::path::PathBuf, Option<u64>)>,
}

/// A request to start an operation, already checked for shape by the API.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// Operation type (plugin name).
    pub op_type: String,
    /// The resource it acts on.
    pub target: String,
    /// Params (a JSON object).
    pub params: serde_json::Value,
    /// Who asks: `user:<name>`, `schedule:<id>` or `api`.
    pub created_by: String,
    /// The client's key for safe retries.
    pub idempotency_key: Option<String>,
    /// Which plugin versions may run it; the highest loaded one if `None`.
    pub version: Option<semver::VersionReq>,
    /// Set when a workflow run starts it as one of its steps.
    pub child: Option<Child>,
    /// The audit entry to record with the admission (its object becomes the
    /// operation's id), in the same transaction.
    pub audit: Option<AuditEntry>,
}

/// What makes an operation a step of a workflow run.
#[derive(Debug, Clone)]
pub struct Child {
    /// The run.
    pub parent: OperationId,
    /// The step's name.
    pub step: String,
    /// Its index among a `for_each` step's children.
    pub item: Option<u32>,
    /// The step's retry policy (else the type's, if any).
    pub retry: Option<RetryPolicy>,
}

/// What runs an operation type: a plugin, or a workflow's steps.
#[derive(Clone)]
pub enum Runnable {
    /// A plugin's `run`.
    Plugin(Arc<Plugin>),
    /// A workflow run, driven by the engine.
    Workflow(Arc<crate::workflow::Loaded>),
}

/// What a successful submit did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new operation was admitted.
    Created(Operation),
    /// The idempotency key was seen before: this is the operation it created.
    Replayed(Operation),
}

/// Why an operation could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// No plugin implements the type.
    #[error("unknown operation type {0:?}")]
    UnknownType(String),
    /// The params are wrong; every problem is listed.
    #[error("invalid params")]
    Invalid(Vec<FieldError>),
    /// Another operation of the same type (or exclusivity group) is pending
    /// or running on the target.
    #[error("operation {} ({}) is already {} on target {:?}", .0.id, .0.op_type, .0.status.as_str(), .0.target)]
    Busy(Box<Operation>),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key already used by operation {} for a different request", .0.id)]
    KeyReused(Box<Operation>),
    /// The data directory is below its free-space floor.
    #[error("{}", .0.refusal())]
    LowSpace(Box<crate::space::Space>),
    /// This node is draining before it stops: it admits nothing more.
    #[error("node {0} is draining before it stops; start the operation on another node, or retry after its restart")]
    Draining(String),
    /// The plugin's `validate` did not return (crashed or hung).
    #[error("the plugin could not validate the params: it {0}")]
    Plugin(#[from] crate::sandbox::Fault),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Recovering interrupted operations failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runners' threads could not be started.
    #[error("cannot start the runner threads: {0}")]
    Threads(std::io::Error),
}

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// There is no such operation.
    #[error("no operation {0}")]
    NotFound(OperationId),
    /// It already ended.
    #[error("operation {} already ended ({})", .0.id, .0.status.as_str())]
    AlreadyEnded(Box<Operation>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle to the engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    /// Stops the runners once the last handle is gone without a
    /// [`Engine::shutdown`] (a server dropped with the runtime it ran on):
    /// they run on threads of their own and would otherwise go on alone.
    _stop_when_gone: Arc<tokio_util::sync::DropGuard>,
}

struct Inner {
    store: Store,
    registry: Arc<Registry>,
    workflows: Arc<Catalog>,
    sandbox: Arc<Sandbox>,
    config: EngineConfig,
    /// Committed operation changes, for the workflow drivers.
    feed: Feed,
    /// Whether the queue is paused, as this node last learned it.
    paused: AtomicBool,
    /// Set by [`Engine::drain`]: nothing more is admitted or claimed here.
    draining: AtomicBool,
    /// The operations running here. A std mutex: held for bookkeeping only,
    /// never across an await.
    queue: Mutex<Running>,
    /// The plugin each operation admitted here was checked against, until it
    /// starts: it runs with that one even if a reload replaced it meanwhile.
    admitted: Mutex<HashMap<OperationId, Arc<Plugin>>>,
    /// Woken when a runner ends, so the claimer fills its place.
    room: tokio::sync::Notify,
    /// Runner tasks; spawned on `runners`, awaited at shutdown.
    tasks: TaskTracker,
    /// Threads of the runners' own, apart from the sockets, and of each type
    /// that has its own (see [`runtime`]).
    runners: Runners,
    shutdown: CancellationToken,
}

impl Engine {
    /// Starts the engine: operations left `pending` or `running` by a previous
    /// process are failed or re-queued first (see `recovery`), then queued
    /// operations start and the retention task begins.
    pub async fn start(
        store: Store,
        registry: Arc<Registry>,
        workflows: Arc<Catalog>,
        feed: Feed,
        sandbox: Arc<Sandbox>,
        config: EngineConfig,
    ) -> Result<Engine, StartError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let own = config.types.iter().filter_map(|(t, p)| Some((t.clone(), p.runner_threads?)));
        let runners = Runners::start(threads, own).map_err(StartError::Threads)?;
        recovery::recover(&store, &registry, &workflows, &config.node).await?;
        let paused = AtomicBool::new(store.paused().await?);
        let shutdown = CancellationToken::new();
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                registry,
                workflows,
                sandbox,
                config,
                feed,
                paused,
                draining: AtomicBool::new(false),
                queue: Mutex::new(Running::default()),
                admitted: Mutex::new(HashMap::new()),
                room: tokio::sync::Notify::new(),
                tasks: TaskTracker::new(),
                runners,
                shutdown: shutdown.clone(),
            }),
            _stop_when_gone: Arc::new(shutdown.drop_guard()),
        };
        claim::spawn(&engine.inner);
        if engine.inner.store.shared() {
            lease::spawn(&engine.inner);
        }
        retention::spawn(&engine.inner);
        Ok(engine)
    }

    /// Checks a request without starting anything: type known, a version
    /// that meets `version` loaded, params valid once the operator's
    /// defaults are merged under them.
    pub async fn check(
        &self,
        op_type: &str,
        version: Option<&semver::VersionReq>,
        params: &serde_json::Value,
    ) -> Result<(), SubmitError> {
        self.inner.checked(op_type, version, params.clone()).await.map(|_| ())
    }

    /// The operator's params defaults for `op_type` (`[types.X.params]`; empty if none).
    pub fn param_defaults(&self, op_type: &str) -> &serde_json::Map<String, serde_json::Value> {
        self.inner.param_defaults(op_type)
    }

    /// Validates and admits a new operation (its params merged with the
    /// operator's defaults, as checked, stored and run), then queues it. Returns once the
    /// `pending` record is durable. Admission is atomic in the store: of many
    /// identical concurrent requests exactly one is admitted. While the queue
    /// is paused the operation waits in it like any other pending one.
    pub async fn submit(&self, request: SubmitRequest) -> Result<Submitted, SubmitError> {
        self.inner.submit(request).await
    }

    /// Pauses (`true`) or resumes the queue, store-wide: while it is paused,
    /// starts are accepted and wait; running operations go on.
    pub async fn set_paused(&self, paused: bool, audit: Option<AuditEntry>) -> Result<(), StoreError> {
        let change = audited(Change::SetPaused(paused), audit);
        self.inner.store.commit(change).await?;
        self.inner.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.inner.store.work().notify_one();
        }
        Ok(())
    }

    /// Records an audit entry that goes with no other change (a refused
    /// authorization, an ignored delivery); returns once it is durable, so
    /// the answer is never ahead of the record.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.inner.store.commit(Change::Audit(Box::new(entry))).await {
            tracing::warn!(error = %e, "cannot record an audit entry");
        }
    }

    /// Notifications, newest first (only `operation`'s, if given).
    pub async fn notifications(
        &self,
        operation: Option<OperationId>,
        limit: usize,
    ) -> Result<Vec<crate::model::Notification>, StoreError> {
        self.inner.store.notifications(operation, limit).await
    }

    /// A page of the audit log, newest first, older than `before`.
    pub async fn audit_log(
        &self,
        filter: &AuditFilter,
        limit: usize,
        before: Option<ulid::Ulid>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.store.audit(filter, limit, before).await
    }

    /// Whether the queue is paused (on a cluster, as of this node's last claim).
    pub fn paused(&self) -> bool {
        self.inner.paused.load(Ordering::Relaxed)
    }

    /// The loaded workflows.
    pub fn workflows(&self) -> &Arc<Catalog> {
        &self.inner.workflows
    }

    /// The operation with `id`.
    pub async fn get(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        self.inner.store.get(id).await
    }

    /// A page of operations matching `filter`, newest first, older than `before`.
    pub async fn list(
        &self,
        filter: &OperationFilter,
        limit: usize,
        before: Option<OperationId>,
    ) -> Result<Vec<Operation>, StoreError> {
        self.inner.store.list(filter, limit, before).await
    }

    /// The stored event frames of `id` after `since`.
    pub async fn events(&self, id: OperationId, since: Seq) -> Result<Vec<(Seq, String)>, StoreError> {
        self.inner.store.events(id, since).await
    }

    /// The data directory's free space against its floor, if starts are
    /// gated on it.
    pub fn space(&self) -> Option<crate::space::Space> {
        self.inner.space()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// Which store backend it runs on (`redb`, `postgres`).
    pub fn store_kind(&self) -> &'static str {
        self.inner.store.kind()
    }

    /// Whether the store's writes succeed now.
    pub fn store_condition(&self) -> crate::store::Condition {
        self.inner.store.condition()
    }

    /// Pending (queued, store-wide) and running (on this node) counts.
    pub fn counts(&self) -> (usize, usize) {
        let (pending, running) = self.inner.lock_queue().counts();
        (self.inner.store.pending_now().unwrap_or(pending), running)
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Drains this node before it stops: it admits and claims nothing more,
    /// and waits (at most `timeout`, or until `hurry`) for what runs here to
    /// end. What still runs then is cancelled cooperatively unless it is
    /// retry-safe (those are handed back at [`Engine::shutdown`], or
    /// re-queued at the next start), and given the cancel grace to end.
    /// Returns how many were still running at the deadline.
    pub async fn drain(&self, timeout: Duration, hurry: impl std::future::Future<Output = ()>) -> usize {
        self.inner.draining.store(true, Ordering::Relaxed);
        tracing::info!(?timeout, "draining: admitting nothing more, waiting for the running operations");
        tokio::pin!(hurry);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let running = self.inner.lock_queue().counts().1;
            if running == 0 {
                return 0;
            }
            tokio::select! {
                () = &mut hurry => return running,
                () = tokio::time::sleep_until(deadline) => break,
                () = self.inner.room.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let ids: Vec<OperationId> = self.inner.lock_queue().entries().map(|(id, _)| *id).collect();
        let mut cancelled = 0;
        for id in &ids {
            let Ok(Some(op)) = self.inner.store.get(*id).await else { continue };
            if recovery::retry_safe(&self.inner.registry, &self.inner.workflows, &op) {
                continue;
            }
            if self.inner.cancel(*id, "drain", None).await.is_ok() {
                cancelled += 1;
            }
        }
        tracing::warn!(left = ids.len(), cancelled, "drain timeout: cancelled what is not retry-safe");
        let grace = tokio::time::Instant::now() + self.inner.config.cancel_grace + Duration::from_millis(500);
        while self.inner.lock_queue().counts().1 > 0 && tokio::time::Instant::now() < grace {
            tokio::select! {
                () = &mut hurry => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        ids.len()
    }

    /// Stops claiming and stops every runner. On a private store nothing
    /// is recorded for them (the next start deals with them, as after a
    /// crash); on a shared one each is handed back at once (see
    /// [`runner`]): re-queued if its plugin is retry-safe, else failed as
    /// `interrupted`. Waits for them to let go of their sandboxes.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// `change`, recorded with `audit` if there is one.
fn audited(change: Change, audit: Option<AuditEntry>) -> Change {
    match audit {
        Some(entry) => Change::Audited { change: Box::new(change), entry: Box::new(entry) },
        None => change,
    }
}

impl Inner {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Running> {
        self.queue.lock().expect("queue poisoned")
    }

    /// The operator's policy for `op_type`.
    fn policy(&self, op_type: &str) -> TypePolicy {
        self.config.types.get(op_type).cloned().unwrap_or_default()
    }

    fn space(&self) -> Option<crate::space::Space> {
        let (dir, min_free) = self.config.space.as_ref()?;
        crate::space::Space::of(dir, *min_free)
    }

    fn param_defaults(&self, op_type: &str) -> &serde_json::Map<String, serde_json::Value> {
        static NONE: std::sync::LazyLock<serde_json::Map<String, serde_json::Value>> =
            std::sync::LazyLock::new(serde_json::Map::new);
        self.config.types.get(op_type).map_or(&*NONE, |policy| &policy.params)
    }

    /// What runs `op_type` (a workflow, else the plugin version that meets
    /// `version`), and the params as merged with the defaults, once checked.
    async fn checked(
        &self,
        op_type: &str,
        version: Option<&semver::VersionReq>,
        requested: serde_json::Value,
    ) -> Result<(Runnable, serde_json::Value), SubmitError> {
        let defaults = self.param_defaults(op_type);
        let params = defaults::merge(defaults, requested.clone());
        if let Some(flow) = self.workflows.get(op_type) {
            // An input's default fills in what the request leaves out, as the
            // operator's defaults do: the run's params say what it ran with.
            let mut params = params;
            if let Some(given) = params.as_object_mut() {
                for input in &flow.workflow.inputs {
                    if let Some(default) = &input.default {
                        given.entry(input.name.clone()).or_insert_with(|| default.clone());
                    }
                }
            }
            if let Some(version) = version
                && !version.matches(&flow.workflow.version)
            {
                let message =
                    format!("workflow {op_type} is version {}, which does not match {version}", flow.workflow.version);
                return Err(SubmitError::Invalid(vec![FieldError::new("version", message)]));
            }
            let mut errors = flow.schema.check(&params, "params");
            defaults::blame(&mut errors, op_type, defaults, &requested);
            return if errors.is_empty() {
                Ok((Runnable::Workflow(flow), params))
            } else {
                Err(SubmitError::Invalid(errors))
            };
        }
        let plugin = self.registry.resolve(op_type, version).map_err(|e| match e {
            Unresolved::UnknownType => SubmitError::UnknownType(op_type.to_owned()),
            Unresolved::NoMatchingVersion(message) => SubmitError::Invalid(vec![FieldError::new("version", message)]),
        })?;
        let mut errors = plugin.schema.check(&params, "params");
        if errors.is_empty() {
            let text = params.to_string();
            for (field, message) in plugin.component.validate(&self.sandbox, &text).await? {
                let field = if field.is_empty() { "params".to_owned() } else { format!("params/{field}") };
                errors.push(FieldError::new(field, message));
            }
        }
        defaults::blame(&mut errors, &plugin.name, defaults, &requested);
        if errors.is_empty() { Ok((Runnable::Plugin(plugin), params)) } else { Err(SubmitError::Invalid(errors)) }
    }

    async fn submit(&self, request: SubmitRequest) -> Result<Submitted, SubmitError> {
        // A draining node's own workflow runs still admit their steps.
        if self.draining.load(Ordering::Relaxed) && request.child.is_none() {
            return Err(SubmitError::Draining(self.config.node.clone()));
        }
        if let Some(space) = self.space()
            && space.low()
        {
            return Err(SubmitError::LowSpace(Box::new(space)));
        }
        let (runnable, params) = self.checked(&request.op_type, request.version.as_ref(), request.params).await?;
        let (name, version, declared_group) = match &runnable {
            Runnable::Plugin(p) => (p.name.clone(), p.version.to_string(), p.exclusivity_group.clone()),
            Runnable::Workflow(w) => (w.workflow.name.clone(), w.workflow.version.to_string(), None),
        };
        let policy = self.policy(&name);
        let mut operation = Operation::pending(&name, &version, &request.target, params, &request.created_by);
        operation.group = policy.exclusivity_group.or(declared_group);
        operation.idempotency_key = request.idempotency_key;
        operation.retry = policy.retry;
        if let Some(child) = request.child {
            operation.parent = Some(child.parent);
            operation.step = Some(child.step);
            operation.item = child.item;
            if child.retry.is_some() {
                operation.retry = child.retry;
            }
        }
        // An entry without an object is about the operation; one with (a
        // hook's delivery) names the operation in its detail.
        let audit = request.audit.map(|mut entry| {
            let what = format!("{} on {}", operation.op_type, operation.target);
            if entry.object.is_empty() {
                entry.object = operation.id.to_string();
                entry.detail = Some(what);
            } else {
                entry.detail = Some(format!("operation {}: {what}", operation.id));
            }
            entry
        });
        match self.store.commit(audited(Change::Admit { operation: Arc::new(operation.clone()) }, audit)).await {
            Ok(_) => {
                if let Runnable::Plugin(plugin) = runnable {
                    self.admitted.lock().expect("admitted poisoned").insert(operation.id, plugin);
                }
                self.store.work().notify_one();
                Ok(Submitted::Created(operation))
            }
            Err(StoreError::SlotTaken(holder)) => {
                let holder = self.store.get(holder).await?.ok_or(StoreError::Closed)?;
                Err(SubmitError::Busy(Box::new(holder)))
            }
            Err(StoreError::Replay(original)) => {
                let original = self.store.get(original).await?.ok_or(StoreError::Closed)?;
                let same = original.op_type == operation.op_type
                    && original.target == operation.target
                    && original.params == operation.params;
                if same { Ok(Submitted::Replayed(original)) } else { Err(SubmitError::KeyReused(Box::new(original))) }
            }
            Err(e) => Err(e.into()),
        }
    }
}
