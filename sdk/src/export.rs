//! The glue between the WIT exports and a [`Plugin`]: JSON in, typed values
//! through the trait, WIT records out. Used by [`crate::export_plugin!`].

use crate::bindings::opal::plugin::types as wit;
use crate::context::WitHost;
use crate::{Context, Error, FieldError, Plugin};

/// `describe`: the plugin's info plus the JSON Schema derived from its params.
pub fn describe<P: Plugin>() -> wit::PluginInfo {
    let info = P::info();
    let schema = schemars::schema_for!(P::Params);
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        title: info.title,
        description: info.description,
        params_schema: serde_json::to_string(&schema).unwrap_or_else(|_| "{}".to_owned()),
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

fn parse<P: Plugin>(params: &str) -> Result<P::Params, Vec<FieldError>> {
    serde_json::from_str(params).map_err(|e| vec![FieldError::new("", e.to_string())])
}

fn to_wit_fields(errors: Vec<FieldError>) -> Vec<wit::FieldError> {
    errors.into_iter().map(|e| wit::FieldError { field: e.field, message: e.message }).collect()
}
