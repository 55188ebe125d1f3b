//! `sandbox`: Wasmtime, and everything about running plugin code safely.
//!
//! Owns the wasmtime `Engine` (pooling allocator, epoch interruption, async),
//! the `Linker`, the epoch ticker and the compiled-component cache. It turns
//! component bytes into a [`Component`] (compiled once, linked once into the
//! `*Pre`) and runs its exports, each call in a fresh `Store` with a memory cap,
//! an epoch deadline and a wall-clock timeout. It knows nothing of operations'
//! lifecycle or storage: what a run means is the engine's business.

mod bindings;
mod cache;
mod call;
mod compat;
mod cpu;
mod exec;
pub mod grants;
mod host;
mod http;
mod stdio;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::Pending;
pub use call::{Fault, PluginDescription, RunLimits, RunOutput};
pub use compat::WIT_VERSION;
pub use host::{LogLine, MAX_DETAILS, RunHooks};

use bindings::OperationPre;
use host::HostState;

/// How often the epoch advances. A busy guest yields to the runtime (and its
/// timeout and cancel checks run) once per tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Dirty bytes of a freed linear memory reset in place (the rest is given
/// back to the kernel): a no-op run dirties less. At most this much stays
/// resident per pool slot that has been used.
const RESIDENT_MEMORY: usize = 64 << 10;
/// Dirty bytes of a freed table reset in place.
const RESIDENT_TABLE: usize = 64 << 10;

/// Sandbox limits, from the operator's config.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// Linear memory cap per store, in bytes, unless the operator sets
    /// another for a plugin.
    pub memory_limit: usize,
    /// The largest memory cap any plugin has: the size of a pool slot.
    pub max_memory_limit: usize,
    /// Log bytes kept per run, unless the operator sets another for a plugin.
    pub log_limit: usize,
    /// Most bytes of wasm stack a guest may use.
    pub max_wasm_stack: usize,
    /// Where per-operation scratch directories are made.
    pub scratch_root: PathBuf,
    /// Most stores alive at once (pooling allocator slots).
    pub max_instances: u32,
}

/// Why loading or calling a plugin failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The engine could not be built from the config.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component, or did not compile.
    #[error("cannot compile the component: {0}")]
    Compile(String),
    /// The component does not fit the `opal:plugin` world or its imports.
    #[error("cannot link the component: {0}")]
    Link(String),
    /// The component was built against an `opal:plugin` version this host
    /// does not speak.
    #[error("incompatible plugin: {0}")]
    Incompatible(String),
    /// A call into the plugin failed.
    #[error("{0}")]
    Call(#[from] Fault),
}

/// The shared wasm runtime. One per server.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    config: SandboxConfig,
    ticker_stop: Arc<AtomicBool>,
    /// One permit per instance the pool holds (`max_instances`): a call
    /// waits for a permit rather than failing on a full pool. Held by the
    /// call's store, so it is given back when the store is dropped.
    instances: Arc<tokio::sync::Semaphore>,
}

/// A compiled and linked plugin component, ready to instantiate.
#[derive(Clone)]
pub struct Component {
    pre: OperationPre<HostState>,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
    /// Whether it was loaded from the precompiled cache.
    pub from_cache: bool,
    /// The interfaces it imports (WASI's and ours), by name.
    pub imports: Vec<String>,
}

impl Sandbox {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Arc<Sandbox>, SandboxError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_memory_size(config.max_memory_limit.max(config.memory_limit));
        // A freed slot's dirty pages are found with PAGEMAP_SCAN (Linux 6.7+;
        // elsewhere this falls back) and the first few reset in place, where
        // `madvise` would shoot down every core's TLB for each operation.
        pool.linear_memory_keep_resident(RESIDENT_MEMORY)
            .table_keep_resident(RESIDENT_TABLE)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| SandboxError::Link(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Link(format!("{e:#}")))?;
        bindings::Operation::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| SandboxError::Link(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.clone());
        std::thread::Builder::new()
            .name("opal-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| SandboxError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        let instances = Arc::new(tokio::sync::Semaphore::new(config.max_instances as usize));
        Ok(Arc::new(Sandbox { engine, linker, config, ticker_stop, instances }))
    }

    /// Compiles (or loads from the cache) and links a component, and caches
    /// what it compiled.
    pub fn load(&self, wasm: &[u8]) -> Result<Component, SandboxError> {
        let (component, pending) = self.load_deferred(wasm)?;
        pending.store();
        Ok(component)
    }

    /// [`Sandbox::load`], but what it compiled goes into the cache only when
    /// the caller calls [`Pending::store`], once it accepts the component.
    pub fn load_deferred(&self, wasm: &[u8]) -> Result<(Component, Pending), SandboxError> {
        let sha256 = cache::sha256_hex(wasm);
        let (component, from_cache, pending) = cache::load(&self.engine, &self.config.cache_dir, wasm, &sha256)?;
        let imports = compat::imports(&self.engine, &component);
        match compat::plugin_wit_version(&imports).map_err(SandboxError::Incompatible)? {
            Some(theirs) if !compat::compatible(&theirs) => {
                return Err(SandboxError::Incompatible(compat::refusal(&theirs)));
            }
            _ => {}
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| SandboxError::Link(format!("{e:#}")))?;
        let pre = OperationPre::new(instance_pre).map_err(|e| SandboxError::Link(format!("{e:#}")))?;
        Ok((Component { pre, sha256, from_cache, imports }, pending))
    }

    /// Where per-operation scratch directories are made.
    pub fn scratch_root(&self) -> &std::path::Path {
        &self.config.scratch_root
    }

    /// A place in the instance pool, waiting at most `wait` (forever if
    /// `None`) for one to be given back.
    pub(crate) async fn instance(&self, wait: Option<Duration>) -> Result<tokio::sync::OwnedSemaphorePermit, Fault> {
        let acquire = self.instances.clone().acquire_owned();
        let permit = match wait {
            Some(wait) => tokio::time::timeout(wait, acquire).await.map_err(|_| Fault::NoInstance(wait))?,
            None => acquire.await,
        };
        permit.map_err(|_| Fault::Instantiate("the sandbox is shutting down".into()))
    }

    /// The default limits of a run that may take `timeout`.
    pub fn default_limits(&self, timeout: Duration) -> RunLimits {
        RunLimits { timeout, memory: self.config.memory_limit, log_bytes: self.config.log_limit, cpu: None }
    }
}

impl Component {
    /// The `opal:plugin` version it was built against, if it imports the package.
    pub fn wit_version(&self) -> Option<semver::Version> {
        compat::plugin_wit_version(&self.imports).ok().flatten()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
