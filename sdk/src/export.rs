//! The glue between the WIT exports and a [`Plugin`]: JSON in, typed values
//! through the trait, WIT records out. Used by [`crate::export_plugin!`].
//!
//! Parsing the params and filling the info are shared with [`crate::testing`],
//! so a native test takes the same steps as the host's call. Natively the
//! bindings compile but are never called.

use std::time::Duration;

use crate::bindings::opal::plugin::progress;
use crate::bindings::opal::plugin::types as wit;
pub use crate::plugin::CrateMeta;
use crate::{Context, Error, FieldError, Level, Plugin, PluginInfo};

/// The JSON Schema of `P::Params`, as `describe()` publishes it.
pub fn params_schema<P: Plugin>() -> String {
    let schema = schemars::schema_for!(P::Params);
    serde_json::to_string(&schema).unwrap_or_else(|_| "{}".to_owned())
}

/// The plugin's info, with the fields it left empty taken from its crate.
pub fn info<P: Plugin>(krate: &CrateMeta) -> PluginInfo {
    P::info().or_crate(krate)
}

/// Parses the params JSON the way the host hands it over.
pub fn parse<P: Plugin>(params: &str) -> Result<P::Params, Vec<FieldError>> {
    serde_json::from_str(params).map_err(|e| vec![FieldError::new("", e.to_string())])
}

/// `describe`: the plugin's info plus the JSON Schema derived from its params.
pub fn describe<P: Plugin>(krate: &CrateMeta) -> wit::PluginInfo {
    let info = info::<P>(krate);
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        title: info.title,
        description: info.description,
        params_schema: params_schema::<P>(),
        default_timeout_ms: info.default_timeout_ms,
        retry_safe: info.retry_safe,
        exclusivity_group: info.exclusivity_group,
    }
}

/// `validate`: parse the params, then ask the plugin.
pub fn validate<P: Plugin>(params: &str) -> Result<(), Vec<wit::FieldError>> {
    let params = parse::<P>(params).map_err(to_wit_fields)?;
    P::validate(&params).map_err(to_wit_fields)
}

/// `run`: parse the params, run the plugin with a context on the WIT host.
///
/// A panic is not caught here: wasm32-wasip2 aborts on panic, after the
/// standard hook has written the message to stderr, which the host reads
/// to fail the operation with code `panic` and the plugin's own words.
pub fn run<P: Plugin>(target: &str, params: &str) -> Result<wit::Outcome, wit::RunError> {
    let params = parse::<P>(params).map_err(|e| wit::RunError::InvalidParams(to_wit_fields(e)))?;
    let ctx = Context::new(Box::new(WitHost));
    match P::run(&ctx, target, params) {
        Ok(outcome) => Ok(wit::Outcome {
            message: outcome.message,
            details: outcome.details.map(|d| d.to_string()).unwrap_or_default(),
        }),
        Err(Error::InvalidParams(errors)) => Err(wit::RunError::InvalidParams(to_wit_fields(errors))),
        Err(Error::Failed(message)) => Err(wit::RunError::Failed(message)),
        Err(Error::Cancelled) => Err(wit::RunError::Cancelled),
    }
}

fn to_wit_fields(errors: Vec<FieldError>) -> Vec<wit::FieldError> {
    errors.into_iter().map(|e| wit::FieldError { field: e.field, message: e.message }).collect()
}

/// The host as seen from inside a component: the WIT imports.
struct WitHost;

impl crate::context::Host for WitHost {
    fn report(&self, percent: u8, message: &str) {
        progress::report(percent, message);
    }
    fn set_details(&self, json: &str) {
        progress::set_details(json);
    }
    fn phase(&self, name: &str) {
        progress::phase(name);
    }
    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        progress::log(level, message);
    }
    fn cancelled(&self) -> bool {
        progress::cancelled()
    }
    /// The host's `progress.sleep`: the plugin is not woken until the time
    /// is up or a cancel ends it (a sub-millisecond rest counts as 1 ms).
    fn sleep(&self, duration: Duration) {
        let ms = u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        progress::sleep(ms);
    }
}
