//! `config`: every setting of a server, with the defaults a fresh install
//! uses, and the operator's TOML config file (`opal serve --config FILE`).
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! metrics_listen = "10.0.0.11:9464"   # GET /metrics without a token, for Prometheus
//! data = "./data"
//! plugins = ["./plugins"]
//! max_concurrent = 16          # operations running at once, all types
//! retention_days = 30          # how long ended operations are kept
//! audit_retention_days = 90    # how long audit log entries are kept
//! drain_timeout_ms = 30000     # first SIGTERM: how long running operations get to end
//! cancel_grace_ms = 5000
//! progress_window_ms = 500
//!
//! [types.install-server]       # per operation type
//! timeout_ms = 1800000         # overrides the plugin's default
//! max_concurrent = 2
//! exclusivity_group = "server" # overrides the plugin's declaration
//! memory_mib = 256             # this plugin's memory cap (default: memory_limit_mib)
//! max_log_mib = 64             # log kept per run (default: max_log_mib)
//! runner_threads = 1           # its operations run on 1 thread of their own: at most 1 core
//! retry = { attempts = 3, initial = "2s", max = "1m", jitter = 0.2, codes = ["plugin_error", "timeout"] }
//! sha256 = "9f2c…"             # pin: load only these contents (a string or a list)
//!
//! [types.install-server.params]  # defaults under each request's params (the request's fields win)
//! channel = "stable"
//!
//! [types.install-server.grants]  # nothing is granted unless listed here
//! scratch = true                 # a fresh read-write /scratch per operation
//! dirs = [{ host = "/srv/pkgs", guest = "/pkgs" }, { host = "/srv/out", guest = "/out", writable = true }]
//! net = ["10.0.0.0/8:22", "*.example.com:443", "localhost:8000-8099"]
//! exec = [{ command = "/usr/bin/systemctl", args = ["restart", "*"] }]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{AuthConfig, AuthSection, LimitsSection, limits::Limits};
use crate::hub::HubConfig;
use crate::registry::Sources;
use crate::sandbox::SandboxConfig;
use crate::sandbox::grants::{DirGrant, ExecRule, NetRule, SCRATCH_GUEST_PATH};
use crate::ws::WsConfig;

/// Settings of one `opal serve`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// A second address that serves only `GET /metrics`, without a token
    /// (`--metrics-listen`, `metrics_listen`): for a scraper on a private
    /// network. The main address serves it to admins and the `metrics` role.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether metric series carry a `target` label (`metrics_target_labels`).
    /// Off by default: targets are unbounded, and each one would be a series.
    pub metrics_target_labels: bool,
    /// Data directory: `opal.redb` and, unless `cache_dir` says otherwise,
    /// the compiled-plugin cache.
    pub data_dir: PathBuf,
    /// Where compiled plugins are cached; `None` for `<data_dir>/cache`.
    /// Artifacts are named by component hash and engine configuration, so
    /// several servers may share one cache.
    pub cache_dir: Option<PathBuf>,
    /// Directories of extra `*.wasm` plugins, besides the bundled ones.
    pub plugin_dirs: Vec<PathBuf>,
    /// Directories of `*.toml` workflow definitions (`--workflows`, `[workflows] dirs`).
    pub workflow_dirs: Vec<PathBuf>,
    /// Inbound webhooks (`[[hooks]]`).
    pub hooks: Vec<crate::hooks::Hook>,
    /// Outbound notification rules (`[[notify]]`).
    pub notify: Vec<crate::notify::Rule>,
    /// Whether to load the plugins compiled into the binary.
    pub bundled_plugins: bool,
    /// Progress throttle window per operation.
    pub progress_window: Duration,
    /// Grace period between a cancel request and a forced stop.
    pub cancel_grace: Duration,
    /// Linear memory cap per plugin instance, in bytes.
    pub memory_limit: usize,
    /// Log bytes kept per run; later lines are dropped after a marker.
    pub log_limit: usize,
    /// Wasm stack per plugin instance, in bytes.
    pub max_wasm_stack: usize,
    /// Most plugin instances alive at once (runs plus validations).
    pub max_instances: u32,
    /// Most operations running at once; the rest wait, `pending`, in FIFO order.
    pub max_concurrent: usize,
    /// Ended operations older than this are pruned, with their events.
    pub retention: Duration,
    /// Audit log entries older than this are pruned.
    pub audit_retention: Duration,
    /// How long a draining node (first SIGTERM) waits for its running
    /// operations before it cancels what is not retry-safe and stops.
    pub drain_timeout: Duration,
    /// How often pruning runs.
    pub prune_interval: Duration,
    /// Per operation type overrides.
    pub types: BTreeMap<String, TypePolicy>,
    /// How often the plugins directories are checked for added, changed or
    /// removed `*.wasm` files.
    pub plugin_poll: Duration,
    /// Fan-out: queues, replay ring, lag deadline.
    pub hub: HubConfig,
    /// WebSocket heartbeats and timeouts.
    pub ws: WsConfig,
    /// How often `system.status` is checked for changes.
    pub status_interval: Duration,
    /// Credentials (none: dev mode, loopback only), CORS origins.
    pub auth: AuthConfig,
    /// Per-principal rate limits, body size, connections and subscriptions.
    pub limits: Limits,
    /// `postgres://…` to run as a node of a cluster sharing that database;
    /// `None` for the redb file in `data_dir`.
    pub store_url: Option<String>,
    /// Wraps the redb file's storage backend: the hook through which the
    /// storage-fault tests inject I/O errors. Not settable from a file.
    pub storage_wrap: Option<crate::store::redb::Wrap>,
    /// This node's name in a cluster, shown in the status and on the
    /// operations it runs (default: hostname and pid).
    pub node_id: String,
    /// How long a node's claim on a running operation lasts unless renewed
    /// (every third of it); after it, another node takes the operation over.
    pub lease: Duration,
    /// Free space the data directory keeps (`min_free_mib`): below it new
    /// starts are refused (507). `None`: the larger of 256 MiB and 1% of the
    /// file system.
    pub min_free: Option<u64>,
}

/// Sandbox instances kept for the validations of starts in flight (and
/// plugin loads), beside those of running operations: `max_concurrent` runs
/// must fit in `max_instances` minus these.
pub const VALIDATION_INSTANCES: u32 = 16;

impl ServerConfig {
    /// Checks that the limits fit together: every operation `max_concurrent`
    /// allows to run holds a sandbox instance for its whole run, and starts
    /// need instances to validate their params, so `max_concurrent` +
    /// [`VALIDATION_INSTANCES`] must fit in `max_instances`. A config that
    /// cannot hold is refused at start, naming the settings, rather than
    /// failing operations later.
    pub fn check_capacity(&self) -> Result<(), String> {
        let needed = self.max_concurrent as u64 + u64::from(VALIDATION_INSTANCES);
        if needed > u64::from(self.max_instances) {
            return Err(format!(
                "max_concurrent = {} cannot hold with max_instances = {}: each running operation holds a sandbox \
                 instance, and {VALIDATION_INSTANCES} more are kept for validating starts, so max_instances must be \
                 at least {needed}; raise max_instances or lower max_concurrent",
                self.max_concurrent, self.max_instances
            ));
        }
        for (name, policy) in &self.types {
            if let Some(n) = policy.max_concurrent
                && n > self.max_concurrent
            {
                tracing::info!(r#type = %name, n, "a type's max_concurrent above the global one has no effect");
            }
        }
        Ok(())
    }
}

/// The default node id: the host's name and this process's id.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "opal".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The most threads of its own one type may run on (`runner_threads`).
pub const MAX_RUNNER_THREADS: usize = 64;

/// What the operator sets for one operation type.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypePolicy {
    /// Replaces the plugin's `default-timeout-ms`.
    #[serde(default, rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Option<Duration>,
    /// Most operations of this type running at once.
    pub max_concurrent: Option<usize>,
    /// CPU time one operation of this type may compute (`max_cpu_ms`);
    /// past it, the operation fails with code `cpu_limit`.
    #[serde(default, rename = "max_cpu_ms", deserialize_with = "millis")]
    pub max_cpu: Option<Duration>,
    /// This type's share of the machine: its operations run on this many
    /// threads of their own instead of the shared runner threads, so
    /// together they never compute on more cores than that, whatever the
    /// plugin does.
    pub runner_threads: Option<usize>,
    /// Replaces the plugin's exclusivity group.
    pub exclusivity_group: Option<String>,
    /// Failed attempts of this type are tried again under this policy
    /// (`[types.X.retry]`); a workflow step's own `retry` wins for its children.
    #[serde(default, deserialize_with = "retry_policy")]
    pub retry: Option<crate::model::RetryPolicy>,
    /// This plugin's linear memory cap, in MiB.
    pub memory_mib: Option<usize>,
    /// sha256 pins (hex): the plugin loads only if its component hashes to one.
    #[serde(default, deserialize_with = "one_or_many")]
    pub sha256: Vec<String>,
    /// Log kept per run of this plugin, in MiB.
    pub max_log_mib: Option<usize>,
    /// What this plugin may reach: scratch, directories, network, commands.
    #[serde(default)]
    pub grants: PluginGrants,
    /// Defaults for this type's params (`[types.X.params]`), merged under
    /// each request's params before they are checked: a top-level field the
    /// request sets wins whole. A convenience, not a boundary (requests may
    /// override any of them); the grants are the boundary.
    #[serde(default, deserialize_with = "param_defaults")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

fn retry_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<crate::model::RetryPolicy>, D::Error> {
    let section = crate::model::RetrySection::deserialize(d)?;
    crate::model::RetryPolicy::from_section(&section).map(Some).map_err(serde::de::Error::custom)
}

/// The capabilities the operator grants one plugin (`[types.X.grants]`).
/// Nothing is granted by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawGrants")]
pub struct PluginGrants {
    /// A fresh read-write directory per operation at `/scratch`.
    pub scratch: bool,
    /// Keep each operation's scratch directory (under `<data>/scratch/<id>`) after the run.
    pub keep_scratch: bool,
    /// Host directories.
    pub dirs: Vec<DirGrant>,
    /// Outbound network rules.
    pub net: Vec<NetRule>,
    /// Commands.
    pub exec: Vec<ExecRule>,
}

/// `[types.X.grants]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    scratch: bool,
    #[serde(default)]
    keep_scratch: bool,
    #[serde(default)]
    dirs: Vec<RawDir>,
    #[serde(default)]
    net: Vec<String>,
    #[serde(default)]
    exec: Vec<RawExec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    host: PathBuf,
    guest: String,
    #[serde(default)]
    writable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: PathBuf,
    #[serde(default)]
    args: Vec<String>,
}

impl TryFrom<RawGrants> for PluginGrants {
    type Error = String;

    fn try_from(raw: RawGrants) -> Result<Self, String> {
        let mut dirs = Vec::new();
        for dir in raw.dirs {
            if !dir.guest.starts_with('/') || dir.guest == SCRATCH_GUEST_PATH {
                return Err(format!("dirs: guest path {:?} must be absolute and not {SCRATCH_GUEST_PATH}", dir.guest));
            }
            if !dir.host.is_absolute() {
                return Err(format!("dirs: host path {} must be absolute", dir.host.display()));
            }
            dirs.push(DirGrant { host: dir.host, guest: dir.guest, writable: dir.writable });
        }
        let net = raw.net.iter().map(|r| r.parse::<NetRule>()).collect::<Result<_, _>>()?;
        let mut exec = Vec::new();
        for rule in raw.exec {
            if !rule.command.is_absolute() {
                return Err(format!("exec: command {} must be an absolute path", rule.command.display()));
            }
            if rule.args.iter().take(rule.args.len().saturating_sub(1)).any(|a| a == "**") {
                return Err(format!("exec: in {}, `**` may only be the last argument", rule.command.display()));
            }
            exec.push(ExecRule { command: rule.command, args: rule.args });
        }
        Ok(PluginGrants { scratch: raw.scratch, keep_scratch: raw.keep_scratch, dirs, net, exec })
    }
}

impl TypePolicy {
    /// This plugin's memory cap, in bytes, if the operator set one.
    pub fn memory_limit(&self) -> Option<usize> {
        self.memory_mib.map(|mib| mib * MIB)
    }

    /// This plugin's log limit per run, in bytes, if the operator set one.
    pub fn log_limit(&self) -> Option<usize> {
        self.max_log_mib.map(|mib| mib * MIB)
    }
}

const MIB: usize = 1024 * 1024;
/// The largest memory cap the config may set, in MiB.
const MAX_MEMORY_MIB: usize = 4096;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            metrics_target_labels: false,
            data_dir: PathBuf::from("data"),
            cache_dir: None,
            plugin_dirs: Vec::new(),
            workflow_dirs: Vec::new(),
            hooks: Vec::new(),
            notify: Vec::new(),
            bundled_plugins: true,
            progress_window: Duration::from_millis(500),
            cancel_grace: Duration::from_secs(5),
            memory_limit: 64 * MIB,
            log_limit: 16 * MIB,
            max_wasm_stack: MIB,
            max_instances: 256,
            max_concurrent: 64,
            retention: Duration::from_secs(30 * 24 * 3600),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            drain_timeout: Duration::from_secs(30),
            prune_interval: Duration::from_secs(3600),
            types: BTreeMap::new(),
            plugin_poll: Duration::from_secs(1),
            hub: HubConfig::default(),
            ws: WsConfig::default(),
            status_interval: Duration::from_secs(2),
            auth: AuthConfig::dev(),
            limits: Limits::default(),
            store_url: None,
            storage_wrap: None,
            node_id: default_node_id(),
            lease: Duration::from_secs(10),
            min_free: None,
        }
    }
}

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read config file {0}: {1}")]
    Read(String, #[source] std::io::Error),
    /// It is not valid TOML, or has unknown or mistyped settings.
    #[error("invalid config file {0}: {1}")]
    Parse(String, String),
    /// A value is out of range.
    #[error("invalid config file {0}: {1}")]
    Value(String, String),
}

/// The file's shape: every setting optional, unknown ones refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    metrics_target_labels: Option<bool>,
    data: Option<PathBuf>,
    cache: Option<PathBuf>,
    #[serde(default)]
    plugins: Vec<PathBuf>,
    #[serde(default)]
    workflows: WorkflowsSection,
    #[serde(default)]
    hooks: Vec<crate::hooks::HookSection>,
    #[serde(default)]
    notify: Vec<crate::notify::NotifySection>,
    progress_window_ms: Option<u64>,
    cancel_grace_ms: Option<u64>,
    memory_limit_mib: Option<usize>,
    max_log_mib: Option<usize>,
    max_wasm_stack_kib: Option<usize>,
    max_instances: Option<u32>,
    max_concurrent: Option<usize>,
    retention_days: Option<u64>,
    audit_retention_days: Option<u64>,
    drain_timeout_ms: Option<u64>,
    ping_interval_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    progress_delay_ms: Option<u64>,
    max_lagging_mib: Option<usize>,
    min_free_mib: Option<u64>,
    status_interval_ms: Option<u64>,
    plugin_poll_ms: Option<u64>,
    #[serde(default)]
    types: BTreeMap<String, TypePolicy>,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    limits: LimitsSection,
    node_id: Option<String>,
    #[serde(default)]
    store: StoreSection,
}

/// `[workflows]`: where workflow definitions are read from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowsSection {
    /// Directories of `*.toml` workflow files.
    #[serde(default)]
    dirs: Vec<PathBuf>,
}

/// `[store]`: where the records live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    /// `postgres://user@host:port/db`.
    url: Option<String>,
    /// The lease, e.g. `"10s"`.
    lease: Option<String>,
}

/// Checks a `--store` URL: PostgreSQL is the only shared store.
pub fn check_store_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!("store URL {url:?} must start with postgres:// (or omit it for the redb file in --data)"));
    }
    url.parse::<tokio_postgres::Config>().map(|_| ()).map_err(|e| format!("store URL {url:?}: {e}"))
}

/// Parses a lease such as `10s`: at least 1 s (renewals run every third).
pub fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = humantime::parse_duration(text).map_err(|e| format!("lease {text:?}: {e}"))?;
    if lease < Duration::from_secs(1) {
        return Err(format!("lease {text:?} must be at least 1s"));
    }
    Ok(lease)
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// `[types.X.params]`: a TOML table, as the JSON object the plugin will see.
/// TOML's date-times have no JSON form, so they are refused by name.
fn param_defaults<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<serde_json::Map<String, serde_json::Value>, D::Error> {
    fn json(at: &str, value: toml::Value) -> Result<serde_json::Value, String> {
        Ok(match value {
            toml::Value::String(s) => s.into(),
            toml::Value::Integer(i) => i.into(),
            toml::Value::Float(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| format!("params.{at}: {f} has no JSON form (use a finite number)"))?,
            toml::Value::Boolean(b) => b.into(),
            toml::Value::Datetime(t) => {
                return Err(format!("params.{at}: the date-time {t} has no JSON form; write it as a string"));
            }
            toml::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| json(&format!("{at}[{i}]"), v))
                .collect::<Result<Vec<_>, _>>()?
                .into(),
            toml::Value::Table(table) => object(at, table)?.into(),
        })
    }
    fn object(at: &str, table: toml::Table) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let prefix = if at.is_empty() { String::new() } else { format!("{at}.") };
        table.into_iter().map(|(k, v)| json(&format!("{prefix}{k}"), v).map(|v| (k, v))).collect()
    }
    match toml::Value::deserialize(d)? {
        toml::Value::Table(table) => object("", table).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "params: must be a table of defaults for the plugin's params (key = value lines), not {}",
            other.type_str()
        ))),
    }
}

fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
}

impl ServerConfig {
    /// The defaults with the settings of the TOML file at `path` applied.
    /// Relative paths in the file are relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(name.clone(), e))?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Parse(name.clone(), e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = ServerConfig::default();
        if let Some(listen) = file.listen {
            config.listen = listen;
        }
        config.metrics_listen = file.metrics_listen;
        if let Some(on) = file.metrics_target_labels {
            config.metrics_target_labels = on;
        }
        if let Some(data) = file.data {
            config.data_dir = base.join(data);
        }
        config.cache_dir = file.cache.map(|cache| base.join(cache));
        config.plugin_dirs = file.plugins.into_iter().map(|p| base.join(p)).collect();
        config.workflow_dirs = file.workflows.dirs.into_iter().map(|p| base.join(p)).collect();
        for section in file.hooks {
            let hook = section.into_hook().map_err(|e| ConfigError::Value(name.clone(), e))?;
            if config.hooks.iter().any(|h: &crate::hooks::Hook| h.name == hook.name) {
                return Err(ConfigError::Value(name.clone(), format!("hooks: {:?} is defined twice", hook.name)));
            }
            config.hooks.push(hook);
        }
        for section in file.notify {
            let rule = section.into_rule().map_err(|e| ConfigError::Value(name.clone(), e))?;
            if config.notify.iter().any(|r: &crate::notify::Rule| r.name == rule.name) {
                return Err(ConfigError::Value(name.clone(), format!("notify: {:?} is defined twice", rule.name)));
            }
            config.notify.push(rule);
        }
        let positive = |what: &str, v: u64| {
            if v == 0 { Err(ConfigError::Value(name.clone(), format!("{what} must be at least 1"))) } else { Ok(v) }
        };
        if let Some(url) = file.store.url {
            check_store_url(&url).map_err(|e| ConfigError::Value(name.clone(), format!("store.url: {e}")))?;
            config.store_url = Some(url);
        }
        if let Some(lease) = file.store.lease {
            config.lease = parse_lease(&lease).map_err(|e| ConfigError::Value(name.clone(), format!("store.{e}")))?;
        }
        if let Some(node) = file.node_id {
            if node.trim().is_empty() {
                return Err(ConfigError::Value(name.clone(), "node_id must not be empty".into()));
            }
            config.node_id = node;
        }
        if let Some(ms) = file.progress_window_ms {
            config.progress_window = Duration::from_millis(ms);
        }
        if let Some(ms) = file.cancel_grace_ms {
            config.cancel_grace = Duration::from_millis(ms);
        }
        let memory_mib = |what: &str, mib: usize| {
            if (1..=MAX_MEMORY_MIB).contains(&mib) {
                Ok(mib * MIB)
            } else {
                Err(ConfigError::Value(name.clone(), format!("{what} must be 1 to {MAX_MEMORY_MIB}")))
            }
        };
        if let Some(mib) = file.memory_limit_mib {
            config.memory_limit = memory_mib("memory_limit_mib", mib)?;
        }
        if let Some(mib) = file.max_log_mib {
            config.log_limit = positive("max_log_mib", mib as u64)? as usize * MIB;
        }
        if let Some(kib) = file.max_wasm_stack_kib {
            if !(64..=64 * 1024).contains(&kib) {
                return Err(ConfigError::Value(name.clone(), "max_wasm_stack_kib must be 64 to 65536".into()));
            }
            config.max_wasm_stack = kib * 1024;
        }
        if let Some(n) = file.max_instances {
            config.max_instances = positive("max_instances", u64::from(n))? as u32;
        }
        if let Some(n) = file.max_concurrent {
            config.max_concurrent = positive("max_concurrent", n as u64)? as usize;
        }
        if let Some(ms) = file.drain_timeout_ms {
            config.drain_timeout = Duration::from_millis(ms);
        }
        if let Some(days) = file.audit_retention_days {
            config.audit_retention = Duration::from_secs(positive("audit_retention_days", days)? * 24 * 3600);
        }
        if let Some(days) = file.retention_days {
            config.retention = Duration::from_secs(positive("retention_days", days)? * 24 * 3600);
        }
        if let Some(ms) = file.ping_interval_ms {
            config.ws.ping_interval = Duration::from_millis(positive("ping_interval_ms", ms)?);
        }
        if let Some(ms) = file.idle_timeout_ms {
            config.ws.idle_timeout = Duration::from_millis(positive("idle_timeout_ms", ms)?);
        }
        if let Some(ms) = file.progress_delay_ms {
            if ms > 1000 {
                return Err(ConfigError::Value(name.clone(), format!("progress_delay_ms must be 0 to 1000, not {ms}")));
            }
            config.ws.progress_delay = Duration::from_millis(ms);
        }
        if let Some(mib) = file.min_free_mib {
            config.min_free = Some(mib * MIB as u64);
        }
        if let Some(mib) = file.max_lagging_mib {
            config.hub.lag_bytes = positive("max_lagging_mib", mib as u64)? as usize * MIB;
        }
        if let Some(ms) = file.plugin_poll_ms {
            config.plugin_poll = Duration::from_millis(positive("plugin_poll_ms", ms)?);
        }
        if let Some(ms) = file.status_interval_ms {
            config.status_interval = Duration::from_millis(positive("status_interval_ms", ms)?);
        }
        for (name_, policy) in &file.types {
            if policy.max_concurrent == Some(0) {
                return Err(ConfigError::Value(
                    name.clone(),
                    format!("types.{name_}.max_concurrent must be at least 1"),
                ));
            }
            if policy.timeout == Some(Duration::ZERO) {
                return Err(ConfigError::Value(name.clone(), format!("types.{name_}.timeout_ms must be at least 1")));
            }
            if let Some(mib) = policy.memory_mib {
                memory_mib(&format!("types.{name_}.memory_mib"), mib)?;
            }
            if let Some(bad) = policy.sha256.iter().find(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(ConfigError::Value(
                    name.clone(),
                    format!("types.{name_}.sha256: {bad:?} is not a sha256 (64 hex digits)"),
                ));
            }
            if policy.max_log_mib == Some(0) {
                return Err(ConfigError::Value(name.clone(), format!("types.{name_}.max_log_mib must be at least 1")));
            }
            if let Some(n) = policy.runner_threads
                && !(1..=MAX_RUNNER_THREADS).contains(&n)
            {
                return Err(ConfigError::Value(
                    name.clone(),
                    format!("types.{name_}.runner_threads must be 1 to {MAX_RUNNER_THREADS}, not {n}"),
                ));
            }
        }
        config.types = file.types;
        config.auth = file.auth.into_config(base).map_err(|e| ConfigError::Value(name.clone(), e))?;
        config.limits = file.limits.into_limits().map_err(|e| ConfigError::Value(name.clone(), e))?;
        Ok(config)
    }

    /// The sandbox's settings.
    pub fn sandbox_config(&self) -> SandboxConfig {
        SandboxConfig {
            cache_dir: self.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("cache")),
            memory_limit: self.memory_limit,
            max_memory_limit: self.max_memory_limit(),
            log_limit: self.log_limit,
            max_wasm_stack: self.max_wasm_stack,
            scratch_root: self.data_dir.join("scratch"),
            max_instances: self.max_instances,
        }
    }

    /// Where the plugins come from: the bundled ones (unless turned off),
    /// the plugins directories, and the sha256 pins.
    pub fn plugin_sources(&self) -> Sources {
        Sources {
            bundled: if self.bundled_plugins { crate::bundled::BUNDLED.to_vec() } else { Vec::new() },
            dirs: self.plugin_dirs.clone(),
            pins: self
                .types
                .iter()
                .filter(|(_, p)| !p.sha256.is_empty())
                .map(|(n, p)| (n.clone(), p.sha256.clone()))
                .collect(),
        }
    }

    /// The largest memory cap of any plugin: the default or an override.
    pub fn max_memory_limit(&self) -> usize {
        self.types.values().filter_map(TypePolicy::memory_limit).fold(self.memory_limit, usize::max)
    }

    /// The operator's policy for `op_type` (empty if none).
    pub fn policy(&self, op_type: &str) -> TypePolicy {
        self.types.get(op_type).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opal.toml");
        std::fs::write(&path, text).unwrap();
        ServerConfig::from_file(&path)
    }

    #[test]
    fn a_full_file_is_applied() {
        let config = parse(
            r#"
            max_concurrent = 2
            retention_days = 7
            plugins = ["extra"]
            [types.demo]
            timeout_ms = 1500
            max_concurrent = 1
            exclusivity_group = "server"
            "#,
        )
        .unwrap();
        assert_eq!(config.max_concurrent, 2);
        assert_eq!(config.retention, Duration::from_secs(7 * 86400));
        assert!(config.plugin_dirs[0].ends_with("extra"));
        let demo = config.policy("demo");
        assert_eq!(demo.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(demo.max_concurrent, Some(1));
        assert_eq!(demo.exclusivity_group.as_deref(), Some("server"));
        assert_eq!(config.policy("other"), TypePolicy::default());
    }

    #[test]
    fn mistakes_are_named() {
        let err = parse("max_concurent = 2").unwrap_err().to_string();
        assert!(err.contains("max_concurent"), "{err}");
        let err = parse("max_concurrent = 0").unwrap_err().to_string();
        assert!(err.contains("max_concurrent must be at least 1"), "{err}");
        let err = parse("[types.demo]\ntimeout = 5").unwrap_err().to_string();
        assert!(err.contains("timeout"), "{err}");
        let err = parse("max_concurrent = \"two\"").unwrap_err().to_string();
        assert!(err.contains("max_concurrent"), "{err}");
        let err = parse("[types.demo]\nmemory_mib = 5000").unwrap_err().to_string();
        assert!(err.contains("types.demo.memory_mib must be 1 to 4096"), "{err}");
        let err = parse("[types.demo]\nmax_log_mib = 0").unwrap_err().to_string();
        assert!(err.contains("types.demo.max_log_mib must be at least 1"), "{err}");
        let err = parse("[types.demo]\nrunner_threads = 0").unwrap_err().to_string();
        assert!(err.contains("types.demo.runner_threads must be 1 to 64, not 0"), "{err}");
        assert_eq!(parse("[types.demo]\nrunner_threads = 2").unwrap().policy("demo").runner_threads, Some(2));
        let err = parse("max_wasm_stack_kib = 8").unwrap_err().to_string();
        assert!(err.contains("max_wasm_stack_kib must be 64 to 65536"), "{err}");
    }

    #[test]
    fn grants_are_read_and_checked() {
        let config = parse(
            r#"
            [types.deploy.grants]
            scratch = true
            dirs = [{ host = "/srv/in", guest = "/in" }, { host = "/srv/out", guest = "/out", writable = true }]
            net = ["10.0.0.0/8:22", "*.example.com:443"]
            exec = [{ command = "/usr/bin/systemctl", args = ["restart", "*"] }]
            "#,
        )
        .unwrap();
        let grants = config.policy("deploy").grants;
        assert!(grants.scratch && !grants.keep_scratch);
        assert_eq!(grants.dirs[1], DirGrant { host: "/srv/out".into(), guest: "/out".into(), writable: true });
        assert!(!grants.dirs[0].writable, "read-only unless said");
        assert_eq!(grants.net.len(), 2);
        assert!(grants.exec[0].allows("/usr/bin/systemctl", &["restart".into(), "nginx".into()]));
        assert_eq!(config.policy("other").grants, PluginGrants::default(), "nothing unless granted");
        for (bad, words) in [
            ("net = [\"nohost\"]", "no port"),
            ("dirs = [{ host = \"rel\", guest = \"/in\" }]", "must be absolute"),
            ("dirs = [{ host = \"/a\", guest = \"/scratch\" }]", "not /scratch"),
            ("exec = [{ command = \"sh\" }]", "absolute path"),
            ("exec = [{ command = \"/bin/sh\", args = [\"**\", \"x\"] }]", "only be the last"),
            ("sandbox = true", "unknown field"),
        ] {
            let err = parse(&format!("[types.x.grants]\n{bad}")).unwrap_err().to_string();
            assert!(err.contains(words), "{bad}: {err}");
        }
    }

    #[test]
    fn params_defaults_are_read_as_json_and_mistakes_named() {
        let config = parse(
            r#"
            [types.service-restart.params]
            command = "/usr/bin/sudo"
            args = ["-n", "/usr/bin/systemctl", "restart"]
            limits = { retries = 2, ratio = 0.5, on = true }
            "#,
        )
        .unwrap();
        let params = serde_json::Value::Object(config.policy("service-restart").params);
        assert_eq!(
            params,
            serde_json::json!({
                "command": "/usr/bin/sudo",
                "args": ["-n", "/usr/bin/systemctl", "restart"],
                "limits": {"retries": 2, "ratio": 0.5, "on": true},
            })
        );
        assert!(config.policy("other").params.is_empty(), "no defaults unless set");
        for (bad, words) in [
            ("[types.x]\nparams = 5", "params: must be a table of defaults for the plugin's params"),
            ("[types.x]\nparams = [\"a\"]", "key = value lines), not array"),
            (
                "[types.x.params]\nat = 1979-05-27T07:32:00Z",
                "params.at: the date-time 1979-05-27T07:32:00Z has no JSON form",
            ),
            ("[types.x.params]\nw = { when = [1979-05-27] }", "params.w.when[0]: the date-time"),
            ("[types.x.params]\nn = nan", "params.n: NaN has no JSON form"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(words), "{bad}: {err}");
            assert!(err.contains("params"), "{bad}: the error names the section: {err}");
        }
    }

    #[test]
    fn limits_per_plugin_override_the_defaults_and_size_the_pool() {
        let config =
            parse("memory_limit_mib = 32\nmax_log_mib = 4\n[types.big]\nmemory_mib = 512\nmax_log_mib = 1").unwrap();
        assert_eq!(config.memory_limit, 32 * MIB);
        assert_eq!(config.log_limit, 4 * MIB);
        assert_eq!(config.policy("big").memory_limit(), Some(512 * MIB));
        assert_eq!(config.policy("big").log_limit(), Some(MIB));
        assert_eq!(config.policy("small").memory_limit(), None);
        assert_eq!(config.max_memory_limit(), 512 * MIB, "a pool slot fits the largest cap");
        assert_eq!(ServerConfig::default().max_memory_limit(), 64 * MIB);
    }
}
