//! Calling a component's exports, each call in a fresh, bounded `Store`.
//!
//! Every call gets:
//! - a new `Store` from the pooling allocator, dropped afterwards (a trapped
//!   store is never reused);
//! - a memory cap ([`super::host::MemoryCap`]);
//! - an epoch deadline one tick away, whose callback yields to the runtime and
//!   checks the deadline and the force-stop flag, so a spinning guest is
//!   stopped within a tick;
//! - a `tokio::time::timeout` around the whole call, so a guest blocked in an
//!   async host call (a WASI sleep) is stopped too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::bindings::opal::plugin::types as wit;
use super::grants::{Grants, NetPolicy, SCRATCH_GUEST_PATH};
use super::host::{HostState, LogBudget, RunHooks, capped, details_value};
use super::stdio::LogStream;
use super::{Component, Sandbox};
use crate::model::LogLevel;

/// How long `describe` and `validate` may take.
const QUICK_CALL_LIMIT: Duration = Duration::from_secs(5);
/// How long `describe` and `validate` wait for a free instance before
/// giving up with [`Fault::NoInstance`] (a start then gets 503).
const INSTANCE_WAIT: Duration = Duration::from_secs(5);

/// Why a call ended abnormally: the plugin did not return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// It ran past its wall-clock limit.
    #[error("did not finish within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// It was stopped by force after a cancel request.
    #[error("was stopped after ignoring a cancel request")]
    ForcedStop,
    /// It tried to grow its memory past the cap.
    #[error("exceeded its memory limit of {} MiB", .0 / (1024 * 1024))]
    MemoryLimit(usize),
    /// It crashed: a wasm trap (including a Rust panic, which aborts).
    #[error("crashed: {0}")]
    Trap(String),
    /// It computed for longer than its CPU limit.
    #[error("used more than {} ms of CPU time", .0.as_millis())]
    CpuLimit(Duration),
    /// No instance of the pool came free in time (every one is in use).
    #[error("found no free sandbox instance within {} ms", .0.as_millis())]
    NoInstance(Duration),
    /// It could not be instantiated (e.g. the instance pool is exhausted).
    #[error("could not be started: {0}")]
    Instantiate(String),
}

/// The limits of one run, resolved from the plugin and the operator's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Linear memory cap, in bytes.
    pub memory: usize,
    /// Most bytes of log lines kept for the run.
    pub log_bytes: usize,
    /// CPU time the guest may compute (the time its call is polled, not
    /// the time it waits in host calls; see [`super::cpu`]), checked at
    /// each epoch tick.
    pub cpu: Option<Duration>,
}

/// What `describe` returned.
#[derive(Debug, Clone)]
pub struct PluginDescription {
    /// Operation type name.
    pub name: String,
    /// Plugin version (semver text, unchecked).
    pub version: String,
    /// Short title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// JSON Schema text of the params.
    pub params_schema: String,
    /// Default wall-clock limit.
    pub default_timeout: Duration,
    /// Whether interrupted runs may be re-run.
    pub retry_safe: bool,
    /// The exclusivity group, if the plugin declares one.
    pub exclusivity_group: Option<String>,
}

/// How a run that returned ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutput {
    /// Success, with a message and optional final details.
    Completed {
        /// Summary line.
        message: String,
        /// Final details, if the plugin replaced them.
        details: Option<serde_json::Value>,
    },
    /// The plugin reported failure.
    Failed(String),
    /// The plugin rejected its params at run time: (field, message) pairs.
    InvalidParams(Vec<(String, String)>),
    /// The plugin honoured a cancel request.
    Cancelled,
}

impl Component {
    /// Calls `describe`.
    pub async fn describe(&self, sandbox: &Sandbox) -> Result<PluginDescription, Fault> {
        let instance = sandbox.instance(Some(INSTANCE_WAIT)).await?;
        let mut store =
            new_store(sandbox, instance, None, quick_limits(sandbox), None, &Grants::default(), NetPolicy::default())?;
        let info = call(&mut store, QUICK_CALL_LIMIT, async |store| {
            let began = std::time::Instant::now();
            let instance = self.pre.instantiate_async(&mut *store).await?;
            crate::telemetry::instantiate(began.elapsed());
            instance.call_describe(&mut *store).await
        })
        .await?;
        Ok(PluginDescription {
            name: info.name,
            version: info.version,
            title: info.title,
            description: info.description,
            params_schema: info.params_schema,
            default_timeout: Duration::from_millis(info.default_timeout_ms),
            retry_safe: info.retry_safe,
            exclusivity_group: info.exclusivity_group,
        })
    }

    /// Calls `validate`; returns the field errors, empty if the params are fine.
    pub async fn validate(&self, sandbox: &Sandbox, params: &str) -> Result<Vec<(String, String)>, Fault> {
        let instance = sandbox.instance(Some(INSTANCE_WAIT)).await?;
        let mut store =
            new_store(sandbox, instance, None, quick_limits(sandbox), None, &Grants::default(), NetPolicy::default())?;
        let result = call(&mut store, QUICK_CALL_LIMIT, async |store| {
            let began = std::time::Instant::now();
            let instance = self.pre.instantiate_async(&mut *store).await?;
            crate::telemetry::instantiate(began.elapsed());
            instance.call_validate(&mut *store, params).await
        })
        .await?;
        Ok(result.err().unwrap_or_default().into_iter().map(|e| (e.field, e.message)).collect())
    }

    /// Calls `run` with `hooks` connected, within `limits`, with what
    /// `grants` allows. Setting `hooks.force_stop` stops the guest within one
    /// epoch tick.
    pub async fn run(
        &self,
        sandbox: &Sandbox,
        target: &str,
        params: &str,
        hooks: RunHooks,
        limits: RunLimits,
        grants: &Grants,
    ) -> Result<RunOutput, Fault> {
        let net = NetPolicy::resolve(&grants.net).await;
        let force_stop = hooks.force_stop.clone();
        // The engine claims no more runs than the pool holds beside the
        // validations' share, so this wait is short.
        let instance = sandbox.instance(None).await?;
        let mut store = new_store(sandbox, instance, Some(hooks), limits, Some(force_stop), grants, net)?;
        let result = call(&mut store, limits.timeout, async |store| {
            let began = std::time::Instant::now();
            let instance = self.pre.instantiate_async(&mut *store).await?;
            crate::telemetry::instantiate(began.elapsed());
            instance.call_run(&mut *store, target, params).await
        })
        .await?;
        Ok(match result {
            Ok(outcome) => RunOutput::Completed {
                message: capped(outcome.message),
                details: match outcome.details.trim() {
                    "" => None,
                    text => Some(details_value(text)),
                },
            },
            Err(wit::RunError::Failed(message)) => RunOutput::Failed(capped(message)),
            Err(wit::RunError::InvalidParams(errors)) => RunOutput::InvalidParams(
                errors.into_iter().take(100).map(|e| (capped(e.field), capped(e.message))).collect(),
            ),
            Err(wit::RunError::Cancelled) => RunOutput::Cancelled,
        })
    }
}

/// The limits of `describe` and `validate`.
fn quick_limits(sandbox: &Sandbox) -> RunLimits {
    RunLimits { timeout: QUICK_CALL_LIMIT, memory: sandbox.config.memory_limit, log_bytes: 0, cpu: None }
}

fn new_store(
    sandbox: &Sandbox,
    instance: tokio::sync::OwnedSemaphorePermit,
    hooks: Option<RunHooks>,
    limits: RunLimits,
    force_stop: Option<Arc<AtomicBool>>,
    grants: &Grants,
    net: NetPolicy,
) -> Result<Store<HostState>, Fault> {
    let mut wasi = WasiCtxBuilder::new();
    let preopens = grants.scratch.iter().map(|host| (host.as_path(), SCRATCH_GUEST_PATH, FsPerms::ReadWrite)).chain(
        grants.dirs.iter().map(|d| {
            (d.host.as_path(), d.guest.as_str(), if d.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly })
        }),
    );
    for (host, guest, perms) in preopens {
        wasi.preopened_dir(host, guest, perms).map_err(|e| {
            Fault::Instantiate(format!("cannot open the granted directory {} for {guest}: {e:#}", host.display()))
        })?;
    }
    let net = Arc::new(net);
    if !net.is_empty() {
        // Connects are checked by address; the implicit bind of a connect is
        // to the unspecified address and port 0. No listening, no UDP.
        wasi.allow_tcp(true).allow_ip_name_lookup(true).allow_udp(false);
        let net = net.clone();
        wasi.socket_addr_check(move |addr, used| {
            let allowed = match used {
                SocketAddrUse::TcpConnect => net.allows_connect(addr),
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            Box::pin(async move { allowed })
        });
    }
    let budget = LogBudget::new(limits.log_bytes);
    if let Some(hooks) = &hooks {
        let stream = |level| LogStream { level, logs: hooks.logs.clone(), budget: budget.clone() };
        wasi.stdout(stream(LogLevel::Info));
        wasi.stderr(stream(LogLevel::Warn));
    }
    let mut state = HostState::new(wasi.build(), limits.memory, hooks, budget, grants.exec.clone(), net);
    state.instance = Some(instance);
    let mut store = Store::new(&sandbox.engine, state);
    let limit = limits.timeout;
    store.limiter(|state| &mut state.memory);
    let deadline = Instant::now() + limit;
    store.set_epoch_deadline(1);
    let cpu = limits.cpu;
    store.epoch_deadline_callback(move |store| {
        if Instant::now() >= deadline {
            return Err(wasmtime::Error::new(Fault::Timeout(limit)));
        }
        if let Some(cpu) = cpu
            && store.data().cpu.used() > cpu
        {
            return Err(wasmtime::Error::new(Fault::CpuLimit(cpu)));
        }
        if force_stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Err(wasmtime::Error::new(Fault::ForcedStop));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
}

/// Runs `f` on the store within `limit`, and turns every way it can go wrong
/// into a [`Fault`].
async fn call<R>(
    store: &mut Store<HostState>,
    limit: Duration,
    f: impl AsyncFnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, Fault> {
    let clock = store.data().cpu.clone();
    let outcome = tokio::time::timeout(limit, super::cpu::Metered::new(f(store), &clock)).await;
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Err(_elapsed) => Err(Fault::Timeout(limit)),
        Ok(Err(error)) => Err(classify(store, &error)),
    }
}

fn classify(store: &Store<HostState>, error: &wasmtime::Error) -> Fault {
    if let Some(fault) = error.downcast_ref::<Fault>() {
        return fault.clone();
    }
    if store.data().memory.hit {
        return Fault::MemoryLimit(store.data().memory.limit);
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return Fault::Trap(trap_text(*trap, error));
    }
    if error.to_string().contains("instantiat") || error.to_string().contains("pool") {
        return Fault::Instantiate(format!("{error:#}"));
    }
    Fault::Trap(format!("{error:#}"))
}

/// The trap's own words plus the innermost guest frame, if the backtrace has
/// one. A backtrace whose innermost frames are all one function is runaway
/// recursion: said plainly, whether it ran out of wasm stack or out of the
/// stack the guest keeps in its linear memory (an out-of-bounds access).
fn trap_text(trap: Trap, error: &wasmtime::Error) -> String {
    let names: Vec<String> = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .filter_map(|f| f.func_name())
                .map(|n| format!("{:#}", rustc_demangle::demangle(n)))
                .collect()
        })
        .unwrap_or_default();
    let recursive = names.len() >= RECURSION_FRAMES && names[..RECURSION_FRAMES].iter().all(|n| *n == names[0]);
    match names.first() {
        Some(func) if recursive || trap == Trap::StackOverflow => {
            format!("stack overflow: {trap} in deeply recursive calls (in {func})")
        }
        Some(func) => format!("{trap} (in {func})"),
        None => trap.to_string(),
    }
}

/// Innermost frames that, all one function, count as runaway recursion.
const RECURSION_FRAMES: usize = 16;
