//! The [`Plugin`] trait a plugin author implements, and the values it returns.

use serde::de::DeserializeOwned;

use crate::{Context, Error, FieldError};

/// An operation type. Implement it on a unit struct and export it with
/// [`crate::export_plugin!`].
pub trait Plugin: 'static {
    /// The params the operation takes. Its JSON Schema, derived with
    /// `schemars`, is what `describe()` publishes and what the host checks
    /// every request against before `validate` runs.
    type Params: DeserializeOwned + schemars::JsonSchema;

    /// Who this plugin is. Called once, when the host loads it.
    fn info() -> PluginInfo;

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

impl PluginInfo {
    /// Info with an empty description, a 10-minute timeout and no retries.
    pub fn new(name: &str, version: &str, title: &str) -> Self {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            title: title.to_owned(),
            description: String::new(),
            default_timeout_ms: 10 * 60 * 1000,
            retry_safe: false,
            exclusivity_group: None,
        }
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
}

/// What a successful run returns.
#[derive(Debug, Clone, Default)]
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
