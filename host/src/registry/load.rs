//! Loading one plugin: compile (or take from the cache), call `describe()`,
//! check the integrity pin and what it says, compile its params schema, and
//! only then put what was compiled into the cache.
//!
//! The pin cannot be checked before compiling: pins are keyed by the plugin's
//! name, which only `describe()` says. A refused file is compiled and its
//! `describe()` runs (sandboxed, with no grants, like any call), but nothing
//! of it is cached and it never runs an operation.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{LoadError, ParamsSchema, Plugin};
use crate::sandbox::Sandbox;

/// Compiles (off the async runtime: Cranelift is CPU-bound), describes and
/// checks one plugin. `pins` are the operator's sha256 pins by plugin name.
pub(super) async fn load_one(
    sandbox: &Arc<Sandbox>,
    wasm: Vec<u8>,
    source: &str,
    pins: &BTreeMap<String, Vec<String>>,
) -> Result<Plugin, LoadError> {
    let (component, pending) = {
        let sandbox = sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.load_deferred(&wasm))
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
    if let Some(pinned) = pins.get(&info.name)
        && !pinned.iter().any(|pin| pin.eq_ignore_ascii_case(&component.sha256))
    {
        return Err(LoadError::Pin { name: info.name, sha256: component.sha256.clone(), pinned: pinned.clone() });
    }
    if let Some(group) = &info.exclusivity_group
        && !valid_name(group)
    {
        return Err(LoadError::Describe(format!("exclusivity group {group:?} must be a name like an operation type")));
    }
    let version = semver::Version::parse(&info.version)
        .map_err(|e| LoadError::Describe(format!("version {:?} is not semver: {e}", info.version)))?;
    let schema = ParamsSchema::compile(&info.params_schema).map_err(LoadError::Describe)?;
    // Accepted: what was compiled may be reused (a few MiB written off the runtime).
    let _ = tokio::task::spawn_blocking(move || pending.store()).await;
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

pub(super) fn valid_name(name: &str) -> bool {
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
