//! `workflow`: workflow definitions, the TOML files that chain operations.
//!
//! A workflow file names an operation type of its own, its inputs (the
//! params schema of that type) and its steps, each of which starts one
//! operation (or one per item of a `for_each` list) of a plugin or of
//! another workflow ([`definition`]). Step params are [`template`]s over the
//! run's inputs, target, item and earlier steps' outputs, checked at load.
//!
//! The [`Catalog`] holds the workflows of the operator's workflows
//! directories and reloads them when their files change, as the registry
//! does for plugins: a bad file is refused (with its file, line and reason)
//! and the others still load. Running a workflow is the engine's business
//! (`engine::drive`); this module knows nothing of operations' lifecycle.

pub mod definition;
pub mod template;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

pub use definition::{Approval, OnFailure, OnTimeout, Step, Workflow};

use sha2::{Digest, Sha256};

use crate::registry::{ParamsSchema, PluginSummary, RefusedPlugin, Registry, StepSummary};

/// A loaded workflow and its compiled params schema.
pub struct Loaded {
    /// The definition.
    pub workflow: Workflow,
    /// Its inputs as a JSON Schema, compiled.
    pub schema: ParamsSchema,
    /// sha256 of the file, hex.
    pub sha256: String,
}

impl Loaded {
    /// What `GET /api/v1/plugins` shows of it.
    pub fn summary(&self) -> PluginSummary {
        let w = &self.workflow;
        PluginSummary {
            kind: "workflow",
            name: w.name.clone(),
            version: w.version.to_string(),
            title: w.title.clone(),
            description: w.description.clone(),
            params_schema: self.schema.document().clone(),
            default_timeout_ms: 0,
            retry_safe: true,
            exclusivity_group: None,
            source: w.source.clone(),
            sha256: self.sha256.clone(),
            versions: vec![w.version.to_string()],
            wit_version: None,
            steps: Some(
                w.steps
                    .iter()
                    .map(|s| StepSummary {
                        name: s.name.clone(),
                        op_type: s.op_type.clone(),
                        for_each: s.for_each.is_some(),
                        approval_role: s.approval.as_ref().map(|a| a.role.clone()),
                    })
                    .collect(),
            ),
        }
    }
}

/// The workflows of the workflows directories, by name.
pub struct Catalog {
    dirs: Vec<PathBuf>,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    by_name: BTreeMap<String, Arc<Loaded>>,
    /// Each file's stamp, the workflow it provides, or why it was refused.
    files: BTreeMap<PathBuf, (Stamp, Result<String, String>)>,
}

/// A file's size and modification time: when either changes, it is reloaded.
type Stamp = (u64, Option<SystemTime>);

/// A file as read: its workflow and the hash of its text, or why not.
type Parsed = Result<(Workflow, String), String>;

impl Catalog {
    /// A catalog of the `*.toml` files in `dirs`, loaded now.
    pub fn load(dirs: Vec<PathBuf>, registry: &Registry) -> Catalog {
        let catalog = Catalog { dirs, state: RwLock::default() };
        catalog.rescan(registry);
        catalog
    }

    /// An empty catalog (no workflows directories).
    pub fn empty() -> Catalog {
        Catalog { dirs: Vec::new(), state: RwLock::default() }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("workflow catalog poisoned")
    }

    /// The workflow named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Loaded>> {
        self.read().by_name.get(name).cloned()
    }

    /// Every loaded workflow, by name.
    pub fn list(&self) -> Vec<Arc<Loaded>> {
        self.read().by_name.values().cloned().collect()
    }

    /// The files that did not load, and why.
    pub fn refused(&self) -> Vec<RefusedPlugin> {
        let state = self.read();
        let refused = state.files.iter().filter_map(|(path, (_, r))| Some((path, r.as_ref().err()?)));
        refused
            .map(|(path, error)| RefusedPlugin { source: path.display().to_string(), error: error.clone() })
            .collect()
    }

    /// Looks at the directories and (re)loads what changed since the last
    /// look; a removed file's workflow is unloaded. A step whose type is
    /// neither a loaded plugin nor a workflow of these files is refused.
    pub fn rescan(&self, registry: &Registry) {
        let mut seen: BTreeMap<PathBuf, Stamp> = BTreeMap::new();
        for dir in &self.dirs {
            for path in crate::registry::files_with_extension(dir, "toml") {
                let stamp = std::fs::metadata(&path).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None));
                seen.insert(path, stamp);
            }
        }
        let unchanged = {
            let state = self.read();
            state.files.len() == seen.len() && seen.iter().all(|(p, s)| state.files.get(p).is_some_and(|f| f.0 == *s))
        };
        if unchanged {
            return;
        }
        // Parse every file again: a step may name a workflow of another file.
        let mut parsed: Vec<(PathBuf, Stamp, Parsed)> = seen
            .iter()
            .map(|(path, stamp)| {
                let source = path.display().to_string();
                let workflow = std::fs::read_to_string(path)
                    .map_err(|e| format!("{source}: cannot read it: {e}"))
                    .and_then(|text| {
                        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
                        Workflow::parse(&source, &text).map(|w| (w, sha256)).map_err(|e| e.to_string())
                    });
                (path.clone(), *stamp, workflow)
            })
            .collect();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (path, _, result) in &mut parsed {
            let Ok((workflow, _)) = result else { continue };
            let clash = if registry.get(&workflow.name).is_some() {
                Some(format!("{}: name {:?} is taken by a plugin", path.display(), workflow.name))
            } else {
                names.get(&workflow.name).map(|other| {
                    format!(
                        "{}: workflow {:?} is already defined in {}",
                        path.display(),
                        workflow.name,
                        other.display()
                    )
                })
            };
            match clash {
                Some(why) => *result = Err(why),
                None => {
                    names.insert(workflow.name.clone(), path.clone());
                }
            }
        }
        let mut state = State::default();
        for (path, stamp, result) in parsed {
            let loaded = result.and_then(|(workflow, sha256)| {
                let unknown: Vec<&str> = workflow
                    .step_types()
                    .into_iter()
                    .filter(|t| registry.get(t).is_none() && !names.contains_key(*t))
                    .collect();
                if !unknown.is_empty() {
                    return Err(format!(
                        "{}: no plugin or workflow implements step type {}",
                        path.display(),
                        unknown.join(", ")
                    ));
                }
                let schema = ParamsSchema::compile(&workflow.params_schema().to_string())
                    .map_err(|e| format!("{}: its inputs are not a valid schema: {e}", path.display()))?;
                Ok(Loaded { workflow, schema, sha256 })
            });
            match loaded {
                Ok(loaded) => {
                    let name = loaded.workflow.name.clone();
                    tracing::info!(workflow = %name, version = %loaded.workflow.version, path = %path.display(), "workflow loaded");
                    state.by_name.insert(name.clone(), Arc::new(loaded));
                    state.files.insert(path, (stamp, Ok(name)));
                }
                Err(why) => {
                    tracing::error!(path = %path.display(), error = %why, "workflow refused");
                    state.files.insert(path, (stamp, Err(why)));
                }
            }
        }
        *self.state.write().expect("workflow catalog poisoned") = state;
    }

    /// Rescans every `interval` until `stop`.
    pub fn watch(
        self: Arc<Self>,
        registry: Arc<Registry>,
        interval: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if self.dirs.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => self.rescan(&registry),
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}
