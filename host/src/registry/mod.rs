//! `registry`: which plugins exist, by operation type and version.
//!
//! Owns the loaded [`Plugin`]s: the bundled ones compiled into the binary and
//! the `*.wasm` components found in the operator's plugins directories.
//! Several versions of one plugin are served side by side; a request may name
//! a semver requirement, and gets the highest version by default. Loading a
//! plugin ([`load`]) means compiling it through the sandbox (or taking it from
//! the cache), checking its `opal:plugin` version, calling `describe()`,
//! checking its sha256 pin and what it says, compiling its params schema, and
//! only then caching what was compiled. A plugin that fails to load is logged
//! and skipped (and leaves nothing in the cache); the others are served.
//!
//! The plugins directories are watched ([`Registry::rescan`], on an interval):
//! a `.wasm` added, replaced or removed takes effect without a restart. An
//! operation holds the `Arc<Plugin>` it was admitted with, so it runs the
//! version it started with whatever happens to the file.

mod inspect;
mod load;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::sandbox::Component;

pub use inspect::{CapabilityReport, PluginReport};
pub use schema::ParamsSchema;

/// Why one plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, #[source] std::io::Error),
    /// Compiling, linking or `describe()` failed.
    #[error("{0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// `describe()` returned something unusable.
    #[error("plugin describes itself wrongly: {0}")]
    Describe(String),
    /// The operator pinned this plugin to other contents.
    #[error("plugin {name:?} has sha256 {sha256}, which is not pinned in the config (pinned: {})", pinned.join(", "))]
    Pin {
        /// The plugin's name.
        name: String,
        /// What the file hashes to.
        sha256: String,
        /// What the config allows.
        pinned: Vec<String>,
    },
    /// Another source already provides this name and version.
    #[error("{name} {version} is already loaded from {existing}")]
    Duplicate {
        /// The plugin's name.
        name: String,
        /// Its version.
        version: semver::Version,
        /// Where the loaded one came from.
        existing: String,
    },
}

/// A loaded plugin: what it says about itself, and how to run it.
pub struct Plugin {
    /// Operation type it implements.
    pub name: String,
    /// Its version.
    pub version: semver::Version,
    /// Short title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// Params schema, as published and as compiled.
    pub schema: ParamsSchema,
    /// Wall-clock limit per run.
    pub default_timeout: Duration,
    /// Whether interrupted runs are re-queued.
    pub retry_safe: bool,
    /// The exclusivity group the plugin declares (the operator's config may override it).
    pub exclusivity_group: Option<String>,
    /// Where it came from: `bundled` or the file path.
    pub source: String,
    /// The compiled, linked component.
    pub component: Component,
}

/// What `GET /api/v1/plugins` shows of a plugin (or of a workflow, which
/// is started the same way).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginSummary {
    /// `plugin`, or `workflow` for a workflow definition's type.
    pub kind: &'static str,
    /// Operation type.
    pub name: String,
    /// Version.
    pub version: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Params JSON Schema.
    pub params_schema: serde_json::Value,
    /// Default timeout, ms.
    pub default_timeout_ms: u64,
    /// Re-run after interruption?
    pub retry_safe: bool,
    /// Declared exclusivity group.
    pub exclusivity_group: Option<String>,
    /// `bundled` or a file path.
    pub source: String,
    /// sha256 of the component.
    pub sha256: String,
    /// Every loaded version of this plugin, highest first.
    pub versions: Vec<String>,
    /// The `opal:plugin` package version it was built against.
    pub wit_version: Option<String>,
    /// A workflow's steps, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepSummary>>,
}

/// One step of a workflow, as `GET /api/v1/plugins` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepSummary {
    /// The step's name.
    pub name: String,
    /// The operation type it runs.
    #[serde(rename = "type")]
    pub op_type: String,
    /// Whether it runs once per item of a list.
    pub for_each: bool,
    /// The role an approver needs, if the step has an approval gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_role: Option<String>,
}

impl Plugin {
    /// The public view of this plugin; `versions` are all loaded versions of it.
    pub fn summary(&self, versions: Vec<String>) -> PluginSummary {
        PluginSummary {
            kind: "plugin",
            name: self.name.clone(),
            version: self.version.to_string(),
            title: self.title.clone(),
            description: self.description.clone(),
            params_schema: self.schema.document().clone(),
            default_timeout_ms: self.default_timeout.as_millis() as u64,
            retry_safe: self.retry_safe,
            exclusivity_group: self.exclusivity_group.clone(),
            source: self.source.clone(),
            sha256: self.component.sha256.clone(),
            versions,
            wit_version: self.component.wit_version().map(|v| v.to_string()),
            steps: None,
        }
    }
}

/// Where plugins come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Compiled into the binary: (name, component bytes).
    pub bundled: Vec<(&'static str, &'static [u8])>,
    /// Directories of `*.wasm` files, watched for changes.
    pub dirs: Vec<PathBuf>,
    /// The operator's sha256 pins, by plugin name: a plugin with pins loads
    /// only if its component hashes to one of them.
    pub pins: BTreeMap<String, Vec<String>>,
}

/// Why no plugin answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// No plugin has that name.
    UnknownType,
    /// Some versions are loaded, none matches: the message says which are.
    NoMatchingVersion(String),
}

/// What a rescan changed, by file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rescan {
    /// Files newly loaded or reloaded.
    pub loaded: Vec<PathBuf>,
    /// Files whose plugin was unloaded (removed, or now failing to load).
    pub unloaded: Vec<PathBuf>,
    /// Files that failed to load, with why.
    pub failed: Vec<(PathBuf, String)>,
}

/// All loaded plugins, by name and version.
pub struct Registry {
    sandbox: Arc<crate::sandbox::Sandbox>,
    sources: Sources,
    catalog: RwLock<Catalog>,
}

#[derive(Default)]
struct Catalog {
    plugins: BTreeMap<String, BTreeMap<semver::Version, Arc<Plugin>>>,
    /// What each file in the plugins directories was when last looked at.
    files: BTreeMap<PathBuf, FileState>,
}

/// A file's size and modification time: when either changes, it is reloaded.
type Stamp = (u64, Option<SystemTime>);

struct FileState {
    stamp: Stamp,
    /// The plugin it provides, if it loaded.
    provides: Option<(String, semver::Version)>,
    /// Why it did not load, if it did not.
    error: Option<String>,
}

/// A plugin file that did not load, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefusedPlugin {
    /// The file.
    pub source: String,
    /// Why, in words.
    pub error: String,
}

impl Catalog {
    fn insert(&mut self, plugin: Plugin) -> Result<(), LoadError> {
        let versions = self.plugins.entry(plugin.name.clone()).or_default();
        if let Some(existing) = versions.get(&plugin.version) {
            return Err(LoadError::Duplicate {
                name: plugin.name,
                version: plugin.version,
                existing: existing.source.clone(),
            });
        }
        tracing::info!(plugin = %plugin.name, version = %plugin.version, source = %plugin.source, cached = plugin.component.from_cache, "plugin loaded");
        versions.insert(plugin.version.clone(), Arc::new(plugin));
        Ok(())
    }

    fn remove(&mut self, name: &str, version: &semver::Version) {
        if let Some(versions) = self.plugins.get_mut(name) {
            versions.remove(version);
            if versions.is_empty() {
                self.plugins.remove(name);
            }
        }
    }
}

impl Registry {
    /// Loads the bundled plugins, then every `*.wasm` in the directories.
    pub async fn load(sandbox: &Arc<crate::sandbox::Sandbox>, sources: Sources) -> Registry {
        let registry = Registry { sandbox: sandbox.clone(), sources, catalog: RwLock::default() };
        for (name, wasm) in &registry.sources.bundled {
            let loaded = load::load_one(sandbox, wasm.to_vec(), "bundled", &registry.sources.pins).await;
            if let Err(e) = loaded.and_then(|plugin| registry.write().insert(plugin)) {
                tracing::error!(plugin = name, error = %e, "bundled plugin failed to load");
            }
        }
        registry.rescan().await;
        registry
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().expect("registry poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().expect("registry poisoned")
    }

    /// Looks at the plugins directories and applies what changed since the
    /// last look: new and changed files are (re)loaded, removed ones
    /// unloaded. A file that fails to load is not retried until it changes.
    pub async fn rescan(&self) -> Rescan {
        let mut seen: BTreeMap<PathBuf, Stamp> = BTreeMap::new();
        for dir in &self.sources.dirs {
            for path in wasm_files(dir) {
                let stamp = std::fs::metadata(&path).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None));
                seen.insert(path, stamp);
            }
        }
        let (changed, gone): (Vec<PathBuf>, Vec<PathBuf>) = {
            let catalog = self.read();
            let changed = seen
                .iter()
                .filter(|(path, stamp)| catalog.files.get(*path).is_none_or(|f| f.stamp != **stamp))
                .map(|(path, _)| path.clone())
                .collect();
            let gone = catalog.files.keys().filter(|p| !seen.contains_key(*p)).cloned().collect();
            (changed, gone)
        };
        let mut report = Rescan::default();
        for path in gone {
            let mut catalog = self.write();
            if let Some(FileState { provides: Some((name, version)), .. }) = catalog.files.remove(&path) {
                tracing::info!(plugin = %name, %version, path = %path.display(), "plugin file removed; unloaded");
                catalog.remove(&name, &version);
                report.unloaded.push(path);
            }
        }
        for path in changed {
            let stamp = seen[&path];
            let source = path.display().to_string();
            let loaded = match std::fs::read(&path) {
                Ok(wasm) => load::load_one(&self.sandbox, wasm, &source, &self.sources.pins).await,
                Err(e) => Err(LoadError::Read(source.clone(), e)),
            };
            let mut catalog = self.write();
            if let Some(FileState { provides: Some((name, version)), .. }) = catalog.files.remove(&path) {
                catalog.remove(&name, &version);
                report.unloaded.push(path.clone());
            }
            let loaded = loaded.and_then(|plugin| {
                let provides = (plugin.name.clone(), plugin.version.clone());
                catalog.insert(plugin).map(|()| provides)
            });
            let state = match loaded {
                Ok(provides) => {
                    report.unloaded.retain(|p| *p != path);
                    report.loaded.push(path.clone());
                    FileState { stamp, provides: Some(provides), error: None }
                }
                Err(e) => {
                    tracing::error!(path = %source, error = %e, "plugin refused");
                    report.failed.push((path.clone(), e.to_string()));
                    FileState { stamp, provides: None, error: Some(e.to_string()) }
                }
            };
            catalog.files.insert(path, state);
        }
        report
    }

    /// Rescans the plugins directories every `interval` until `stop`.
    pub fn watch(self: Arc<Self>, interval: Duration, stop: tokio_util::sync::CancellationToken) {
        if self.sources.dirs.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let _ = self.rescan().await;
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// The highest version of the plugin for operation type `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read().plugins.get(name).and_then(|v| v.values().next_back().cloned())
    }

    /// Exactly this version of `name`, if it is loaded.
    pub fn get_exact(&self, name: &str, version: &semver::Version) -> Option<Arc<Plugin>> {
        self.read().plugins.get(name).and_then(|v| v.get(version).cloned())
    }

    /// The highest version of `name` that meets `requirement` (any, if none).
    pub fn resolve(&self, name: &str, requirement: Option<&semver::VersionReq>) -> Result<Arc<Plugin>, Unresolved> {
        let catalog = self.read();
        let versions = catalog.plugins.get(name).ok_or(Unresolved::UnknownType)?;
        let Some(requirement) = requirement else {
            return versions.values().next_back().cloned().ok_or(Unresolved::UnknownType);
        };
        versions.iter().rev().find(|(v, _)| requirement.matches(v)).map(|(_, p)| p.clone()).ok_or_else(|| {
            let loaded: Vec<String> = versions.keys().rev().map(ToString::to_string).collect();
            Unresolved::NoMatchingVersion(format!(
                "no version of {name} matches {requirement}; loaded: {}",
                loaded.join(", ")
            ))
        })
    }

    /// Every loaded version of `name`, highest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        self.read().plugins.get(name).map(|v| v.keys().rev().map(ToString::to_string).collect()).unwrap_or_default()
    }

    /// The highest version of every plugin, by name.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        self.read().plugins.values().filter_map(|v| v.values().next_back().cloned()).collect()
    }

    /// The plugin files that did not load, and why.
    pub fn refused(&self) -> Vec<RefusedPlugin> {
        let catalog = self.read();
        let refused = catalog.files.iter().filter_map(|(path, f)| Some((path, f.error.as_ref()?)));
        refused
            .map(|(path, error)| RefusedPlugin { source: path.display().to_string(), error: error.clone() })
            .collect()
    }

    /// The public view of a plugin, with all its loaded versions.
    pub fn summary(&self, plugin: &Plugin) -> PluginSummary {
        plugin.summary(self.versions(&plugin.name))
    }
}

/// Loads one plugin file as the registry would (pins included), for
/// `opal plugin inspect`.
pub async fn load_file(
    sandbox: &Arc<crate::sandbox::Sandbox>,
    path: &Path,
    pins: &BTreeMap<String, Vec<String>>,
) -> Result<Plugin, LoadError> {
    let source = path.display().to_string();
    let wasm = std::fs::read(path).map_err(|e| LoadError::Read(source.clone(), e))?;
    load::load_one(sandbox, wasm, &source, pins).await
}

/// The `*.wasm` files directly in `dir`, sorted; none if it does not exist.
fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "wasm")
}

/// The files directly in `dir` whose name ends in `.ext`, sorted; none (after
/// a warning) if it cannot be read. The plugins and workflows directories
/// are read this way.
pub(crate) fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "directory not readable; skipped");
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext) && p.is_file())
        .collect();
    files.sort();
    files
}
