//! `engine`: the lifecycle of operations.
//!
//! Owns admission (type known, params valid, record durable before the 202),
//! the runner task of every running operation, cancellation, and recovery of
//! operations a previous process left behind. It talks to the registry for
//! plugins, to the sandbox through a plugin's `Component`, and to the store
//! through `Change`s; it never touches redb, sockets or HTTP types.

mod recovery;
mod runner;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{EventKind, FieldError, Operation, OperationId, Seq};
use crate::registry::Registry;
use crate::sandbox::Sandbox;
use crate::store::{Change, Store, StoreError};

/// Engine settings, from the operator's config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The progress throttle's window.
    pub progress_window: Duration,
    /// How long a cancelled plugin may take to stop by itself before it is stopped by force.
    pub cancel_grace: Duration,
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
    /// The plugin's `validate` did not return (crashed or hung).
    #[error("the plugin could not validate the params: it {0}")]
    Plugin(#[from] crate::sandbox::Fault),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
}

struct Inner {
    store: Store,
    registry: Arc<Registry>,
    sandbox: Arc<Sandbox>,
    config: EngineConfig,
    /// Cancel switches of the operations that have a runner, by id. A std
    /// mutex: it is held for a map operation, never across an await.
    running: Mutex<HashMap<OperationId, Arc<CancelSwitch>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// The two-stage stop of one running operation.
#[derive(Default)]
struct CancelSwitch {
    /// Asked to stop: `progress.cancelled()` returns true.
    requested: Arc<AtomicBool>,
    /// Set when the grace period is over: the epoch callback traps a
    /// computing guest at its next tick.
    forced: Arc<AtomicBool>,
    /// Wakes the runner when the grace period is over, so it drops the run
    /// even while the guest is blocked in an async host call (a sleep).
    force: tokio::sync::Notify,
    /// Who asked, for the record.
    by: Mutex<Option<String>>,
}

impl CancelSwitch {
    fn force(&self) {
        self.forced.store(true, Ordering::Relaxed);
        // `notify_one` keeps a permit if the runner is not waiting right now.
        self.force.notify_one();
    }
}

impl Engine {
    /// Starts the engine: operations left `pending` or `running` by a previous
    /// process are resolved first (see `recovery`).
    pub async fn start(
        store: Store,
        registry: Arc<Registry>,
        sandbox: Arc<Sandbox>,
        config: EngineConfig,
    ) -> Result<Engine, StoreError> {
        recovery::recover(&store).await?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                registry,
                sandbox,
                config,
                running: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// Validates and records a new operation, then starts it. Returns once the
    /// `pending` record is durable.
    pub async fn submit(&self, request: SubmitRequest) -> Result<Operation, SubmitError> {
        let plugin = self
            .inner
            .registry
            .get(&request.op_type)
            .ok_or_else(|| SubmitError::UnknownType(request.op_type.clone()))?;
        let mut errors = plugin.schema.check(&request.params, "params");
        if errors.is_empty() {
            let params = request.params.to_string();
            for (field, message) in plugin
                .component
                .validate(&self.inner.sandbox, &params)
                .await?
            {
                let field = if field.is_empty() {
                    "params".to_owned()
                } else {
                    format!("params/{field}")
                };
                errors.push(FieldError::new(field, message));
            }
        }
        if !errors.is_empty() {
            return Err(SubmitError::Invalid(errors));
        }
        let operation = Operation::pending(
            &plugin.name,
            &plugin.version.to_string(),
            &request.target,
            request.params,
            &request.created_by,
        );
        self.inner
            .store
            .commit(Change::Operation {
                kind: EventKind::Created,
                operation: Arc::new(operation.clone()),
                at: operation.created_at,
            })
            .await?;
        let switch = Arc::new(CancelSwitch::default());
        self.inner
            .running
            .lock()
            .expect("running map poisoned")
            .insert(operation.id, switch.clone());
        let inner = self.inner.clone();
        let op = operation.clone();
        self.inner.tasks.spawn(async move {
            let id = op.id;
            runner::run(&inner, op, plugin, &switch).await;
            inner
                .running
                .lock()
                .expect("running map poisoned")
                .remove(&id);
        });
        Ok(operation)
    }

    /// Asks a running operation to stop. It sees `cancelled()` at once and is
    /// stopped by force after the grace period.
    pub async fn cancel(&self, id: OperationId, by: &str) -> Result<Operation, CancelError> {
        let switch = self
            .inner
            .running
            .lock()
            .expect("running map poisoned")
            .get(&id)
            .cloned();
        let Some(switch) = switch else {
            return match self.inner.store.get(id)? {
                None => Err(CancelError::NotFound(id)),
                Some(op) => Err(CancelError::AlreadyEnded(Box::new(op))),
            };
        };
        *switch.by.lock().expect("cancel switch poisoned") = Some(by.to_owned());
        switch.requested.store(true, Ordering::Relaxed);
        let (grace, shutdown) = (self.inner.config.cancel_grace, self.inner.shutdown.clone());
        let forced = switch.clone();
        self.inner.tasks.spawn(async move {
            // Shutdown stops the runner anyway; don't hold it up for the grace period.
            if shutdown
                .run_until_cancelled(tokio::time::sleep(grace))
                .await
                .is_some()
            {
                forced.force();
            }
        });
        self.inner.store.get(id)?.ok_or(CancelError::NotFound(id))
    }

    /// The operation with `id`.
    pub fn get(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        self.inner.store.get(id)
    }

    /// A page of operations, newest first, older than `before`.
    pub fn list(
        &self,
        limit: usize,
        before: Option<OperationId>,
    ) -> Result<Vec<Operation>, StoreError> {
        self.inner.store.list(limit, before)
    }

    /// The stored event frames of `id` after `since`.
    pub fn events(&self, id: OperationId, since: Seq) -> Result<Vec<(Seq, String)>, StoreError> {
        self.inner.store.events(id, since)
    }

    /// Stops every runner without recording an outcome (the next start records
    /// them as interrupted) and waits for them to let go of their sandboxes.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}
