//! The [`Plugin`] trait a plugin author implements, and the values it returns.

use serde::de::DeserializeOwned;

use crate::{Context, Error, FieldError};

/// An operation type. Implement it on a unit struct and export it with
/// [`crate::export_plugin!`].
///
/// Only `Params` and `run` are required. `info` defaults to the plugin
/// crate's own name, version and description (from its `Cargo.toml`), so a
/// crate named `hello` is the operation type `hello`.
pub trait Plugin: 'static {
    /// The params the operation takes. Its JSON Schema, derived with
    /// `schemars`, is what `describe()` publishes and what the host checks
    /// every request against before `validate` runs.
    type Params: DeserializeOwned + schemars::JsonSchema;

    /// Who this plugin is. Called once, when the host loads it. Fields left
    /// empty are filled from the crate's `Cargo.toml` by [`crate::export_plugin!`]:
    /// `name` (with `_` as `-`), `version`, `description`, and `title` (the
    /// name as words: `cert-issue` is "Cert issue").
    fn info() -> PluginInfo {
        PluginInfo::default()
    }

    /// Checks what the schema cannot express. Return every problem found.
    fn validate(params: &Self::Params) -> Result<(), Vec<FieldError>> {
        let _ = params;
        Ok(())
    }

    /// Runs the operation against `target`.
    fn run(ctx: &Context, target: &str, params: Self::Params) -> Result<Outcome, Error>;
}

/// What a plugin says about itself; see the WIT record `plugin-info`.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Operation type name: lowercase letters, digits and `-`.
    pub name: String,
    /// The plugin's semver version.
    pub version: String,
    /// Short title for dashboards.
    pub title: String,
    /// One or two sentences on what it does.
    pub description: String,
    /// Wall-clock limit for one run, in milliseconds.
    pub default_timeout_ms: u64,
    /// Whether a run interrupted by a host crash may simply be run again.
    pub retry_safe: bool,
    /// Operation types sharing a group never run at once on one target.
    pub exclusivity_group: Option<String>,
}

/// The timeout a plugin gets unless it sets one: 10 minutes.
const DEFAULT_TIMEOUT_MS: u64 = 10 * 60 * 1000;

impl Default for PluginInfo {
    /// Everything from the crate's metadata, a 10-minute timeout, no retries.
    fn default() -> Self {
        PluginInfo {
            name: String::new(),
            version: String::new(),
            title: String::new(),
            description: String::new(),
            default_timeout_ms: DEFAULT_TIMEOUT_MS,
            retry_safe: false,
            exclusivity_group: None,
        }
    }
}

impl PluginInfo {
    /// Info with an empty description, a 10-minute timeout and no retries.
    pub fn new(name: &str, version: &str, title: &str) -> Self {
        PluginInfo { name: name.to_owned(), version: version.to_owned(), title: title.to_owned(), ..Self::default() }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_owned();
        self
    }

    /// Sets the default timeout.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.default_timeout_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Declares that the operation may be re-run after an interruption.
    pub fn retry_safe(mut self) -> Self {
        self.retry_safe = true;
        self
    }

    /// Puts the operation type in an exclusivity group: no two members of the
    /// group run on the same target at once.
    pub fn exclusivity_group(mut self, group: &str) -> Self {
        self.exclusivity_group = Some(group.to_owned());
        self
    }

    /// Fills the fields left empty from the plugin crate's metadata.
    pub(crate) fn or_crate(mut self, krate: &CrateMeta) -> Self {
        if self.name.is_empty() {
            self.name = krate.name.replace('_', "-");
        }
        if self.version.is_empty() {
            krate.version.clone_into(&mut self.version);
        }
        if self.description.is_empty() {
            krate.description.clone_into(&mut self.description);
        }
        if self.title.is_empty() {
            self.title = humanize(&self.name);
        }
        self
    }
}

/// `cert-issue` -> `Cert issue`: a name made into a title for dashboards.
///
/// ASCII only, as the host requires of plugin names (`[a-z][a-z0-9-]*`):
/// `char::to_uppercase` would link core's Unicode case tables, 13.6 KB of
/// data that every running operation of the plugin would map
/// (plugin-guide.md, "Memory").
fn humanize(name: &str) -> String {
    let mut title = name.replace('-', " ");
    if let Some(first) = title.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    title
}

/// The plugin crate's `Cargo.toml` metadata, captured by
/// [`crate::export_plugin!`] where `env!` sees the plugin's crate, not the SDK.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct CrateMeta {
    /// `CARGO_PKG_NAME`.
    pub name: &'static str,
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
    /// `CARGO_PKG_DESCRIPTION`.
    pub description: &'static str,
}

/// What a successful run returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// One-line summary for the operator.
    pub message: String,
    /// Final details, if the run wants to replace the ones it set while running.
    pub details: Option<serde_json::Value>,
}

impl Outcome {
    /// An outcome with a message and the details left as they are.
    pub fn message(message: impl Into<String>) -> Self {
        Outcome { message: message.into(), details: None }
    }

    /// Replaces the final details with `details`.
    pub fn with_details(mut self, details: impl serde::Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: CrateMeta = CrateMeta { name: "hello_world", version: "1.2.3", description: "Says hello." };

    #[test]
    fn empty_fields_come_from_the_crate() {
        let info = PluginInfo::default().or_crate(&HELLO);
        assert_eq!(
            (info.name.as_str(), info.version.as_str(), info.title.as_str(), info.description.as_str()),
            ("hello-world", "1.2.3", "Hello world", "Says hello.")
        );
        assert_eq!(info.default_timeout_ms, DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn titles_are_names_as_words() {
        assert_eq!(humanize("cert-issue"), "Cert issue");
        assert_eq!(humanize("x"), "X");
        assert_eq!(humanize("9-lives"), "9 lives");
        assert_eq!(humanize(""), "");
        // Not a valid plugin name; left as it is rather than split inside a character.
        assert_eq!(humanize("école"), "école");
    }

    #[test]
    fn fields_the_plugin_sets_are_kept() {
        let info = PluginInfo::new("greet", "0.1.0", "Greet").description("Greets.").or_crate(&HELLO);
        assert_eq!((info.name.as_str(), info.version.as_str(), info.title.as_str()), ("greet", "0.1.0", "Greet"));
        assert_eq!(info.description, "Greets.");
    }
}
