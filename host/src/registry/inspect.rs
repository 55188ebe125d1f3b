//! What `opal plugin list` and `opal plugin inspect` show: a plugin's name,
//! version, `opal:plugin` version, params schema and imports, and for each
//! capability it imports, whether the operator's config grants it.

use serde::Serialize;

use super::Plugin;
use crate::config::{PluginGrants, ServerConfig};

/// One plugin, as the CLI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// Operation type.
    pub name: String,
    /// Version.
    pub version: String,
    /// The `opal:plugin` version it was built against.
    pub wit_version: Option<String>,
    /// `bundled` or the file.
    pub source: String,
    /// sha256 of the component.
    pub sha256: String,
    /// Params JSON Schema.
    pub params_schema: serde_json::Value,
    /// Every interface it imports.
    pub imports: Vec<String>,
    /// Each capability it imports and whether the config grants it.
    pub capabilities: Vec<CapabilityReport>,
}

/// A capability a plugin's imports reach for.
#[derive(Debug, Clone, Serialize)]
pub struct CapabilityReport {
    /// `filesystem`, `network`, `http`, `exec` or `environment`.
    pub capability: &'static str,
    /// The imports that reach for it.
    pub through: Vec<String>,
    /// Whether the config grants it to this plugin.
    pub granted: bool,
    /// What is granted, or what to add to grant it.
    pub note: String,
}

/// The capabilities behind interface names, and how a grant covers each.
const CAPABILITIES: [(&str, &[&str]); 5] = [
    ("filesystem", &["wasi:filesystem/"]),
    ("network", &["wasi:sockets/"]),
    ("http", &["wasi:http/"]),
    ("exec", &["opal:plugin/exec"]),
    ("environment", &["wasi:cli/environment"]),
];

impl PluginReport {
    /// The report for `plugin` under `config`'s grants.
    pub fn new(plugin: &Plugin, config: &ServerConfig) -> PluginReport {
        let grants = config.policy(&plugin.name).grants;
        let imports = plugin.component.imports.clone();
        let capabilities = CAPABILITIES
            .iter()
            .filter_map(|(capability, prefixes)| {
                let through: Vec<String> =
                    imports.iter().filter(|i| prefixes.iter().any(|p| i.starts_with(p))).cloned().collect();
                if through.is_empty() {
                    return None;
                }
                let (granted, note) = grant_of(capability, &grants, &plugin.name);
                Some(CapabilityReport { capability, through, granted, note })
            })
            .collect();
        PluginReport {
            name: plugin.name.clone(),
            version: plugin.version.to_string(),
            wit_version: plugin.component.wit_version().map(|v| v.to_string()),
            source: plugin.source.clone(),
            sha256: plugin.component.sha256.clone(),
            params_schema: plugin.schema.document().clone(),
            imports,
            capabilities,
        }
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{} {}\n  opal:plugin: {}\n  source:      {}\n  sha256:      {}\n  capabilities:\n",
            self.name,
            self.version,
            self.wit_version.as_deref().unwrap_or("(imports none of it)"),
            self.source,
            self.sha256,
        );
        if self.capabilities.is_empty() {
            text.push_str("    none beyond clocks, random and stdio\n");
        }
        for c in &self.capabilities {
            let mark = if c.granted { "granted" } else { "not granted" };
            text.push_str(&format!("    {:<12} {:<12} {}\n", c.capability, mark, c.note));
        }
        text.push_str("  imports:\n");
        for import in &self.imports {
            text.push_str(&format!("    {import}\n"));
        }
        let schema = serde_json::to_string_pretty(&self.params_schema).unwrap_or_default();
        text.push_str("  params schema:\n");
        for line in schema.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text
    }
}

fn grant_of(capability: &str, grants: &PluginGrants, name: &str) -> (bool, String) {
    let add = |what: &str| format!("calls fail; grant it with [types.{name}.grants] {what}");
    match capability {
        "filesystem" => {
            let mut granted: Vec<String> =
                grants.dirs.iter().map(|d| format!("{} ({})", d.guest, if d.writable { "rw" } else { "ro" })).collect();
            if grants.scratch {
                granted.insert(0, "/scratch (rw)".into());
            }
            if granted.is_empty() { (false, add("scratch or dirs")) } else { (true, granted.join(", ")) }
        }
        "network" | "http" => match grants.net.is_empty() {
            true => (false, add("net")),
            false => (true, grants.net.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        },
        "exec" => match grants.exec.is_empty() {
            true => (false, add("exec")),
            false => (true, grants.exec.iter().map(|r| r.describe()).collect::<Vec<_>>().join("; ")),
        },
        _ => (false, "never granted: plugins see an empty environment".into()),
    }
}
