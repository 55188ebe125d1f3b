//! `registry`: which plugins exist, by operation type.
//!
//! Owns the loaded [`Plugin`]s: the bundled ones compiled into the binary and
//! the `*.wasm` components found in the operator's plugins directories. Loading
//! a plugin means compiling it through the sandbox (or taking it from the
//! cache), calling `describe()`, checking what it says, and compiling its
//! params schema. A plugin that fails to load is logged and skipped; the others
//! are served.

mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::sandbox::{Component, Sandbox};

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

/// What `GET /api/v1/plugins` shows of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginSummary {
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
}

impl Plugin {
    /// The public view of this plugin.
    pub fn summary(&self) -> PluginSummary {
        PluginSummary {
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
        }
    }
}

/// All loaded plugins, by name.
#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<Plugin>>,
}

impl Registry {
    /// Loads the bundled plugins, then every `*.wasm` in `dirs`. When two
    /// plugins share a name, the higher version wins.
    pub async fn load(sandbox: &Arc<Sandbox>, bundled: &[(&str, &'static [u8])], dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry::default();
        for (name, wasm) in bundled {
            match load_one(sandbox, wasm, "bundled").await {
                Ok(plugin) => registry.insert(plugin),
                Err(e) => {
                    tracing::error!(plugin = name, error = %e, "bundled plugin failed to load")
                }
            }
        }
        for dir in dirs {
            for path in wasm_files(dir) {
                let loaded = match std::fs::read(&path) {
                    Ok(wasm) => load_one(sandbox, &wasm, &path.display().to_string()).await,
                    Err(e) => Err(LoadError::Read(path.display().to_string(), e)),
                };
                match loaded {
                    Ok(plugin) => registry.insert(plugin),
                    Err(e) => tracing::error!(path = %path.display(), error = %e, "plugin skipped"),
                }
            }
        }
        registry
    }

    fn insert(&mut self, plugin: Plugin) {
        if let Some(existing) = self.plugins.get(&plugin.name)
            && existing.version >= plugin.version
        {
            tracing::warn!(plugin = %plugin.name, kept = %existing.version, skipped = %plugin.version, source = %plugin.source, "duplicate plugin name; keeping the higher version");
            return;
        }
        tracing::info!(plugin = %plugin.name, version = %plugin.version, source = %plugin.source, cached = plugin.component.from_cache, "plugin loaded");
        self.plugins.insert(plugin.name.clone(), Arc::new(plugin));
    }

    /// The plugin for operation type `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(name).cloned()
    }

    /// Every plugin, by name.
    pub fn list(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }
}

/// The `*.wasm` files directly in `dir`, sorted; none if it does not exist.
fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "plugins directory not readable; skipped");
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    files
}

/// Compiles (off the async runtime: Cranelift is CPU-bound), describes and checks one plugin.
async fn load_one(sandbox: &Arc<Sandbox>, wasm: &[u8], source: &str) -> Result<Plugin, LoadError> {
    let component = {
        let (sandbox, wasm) = (sandbox.clone(), wasm.to_vec());
        tokio::task::spawn_blocking(move || sandbox.load(&wasm))
            .await
            .map_err(|e| LoadError::Describe(format!("loader panicked: {e}")))??
    };
    let info = component.describe(sandbox).await.map_err(crate::sandbox::SandboxError::from)?;
    if !valid_name(&info.name) {
        return Err(LoadError::Describe(format!(
            "name {:?} must be 1-64 lowercase letters, digits or '-', starting with a letter",
            info.name
        )));
    }
    if let Some(group) = &info.exclusivity_group
        && !valid_name(group)
    {
        return Err(LoadError::Describe(format!("exclusivity group {group:?} must be a name like an operation type")));
    }
    let version = semver::Version::parse(&info.version)
        .map_err(|e| LoadError::Describe(format!("version {:?} is not semver: {e}", info.version)))?;
    let schema = ParamsSchema::compile(&info.params_schema).map_err(LoadError::Describe)?;
    Ok(Plugin {
        name: info.name,
        version,
        title: info.title,
        description: info.description,
        schema,
        default_timeout: info.default_timeout,
        retry_safe: info.retry_safe,
        exclusivity_group: info.exclusivity_group,
        source: source.to_owned(),
        component,
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for ok in ["demo", "ssh-check", "a1"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", "Demo", "1x", "a_b", "a b", &"a".repeat(65)] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
