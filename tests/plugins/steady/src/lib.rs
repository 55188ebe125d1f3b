//! `steady`: a test-only plugin that behaves: it takes `steps` steps of
//! `step_ms`, reports each, honours cancel, declares itself retry-safe (so an
//! interrupted run is re-queued) and belongs to the `maintenance` exclusivity
//! group.

use std::time::Duration;

use opal_sdk::{Context, Error, Outcome, Plugin, PluginInfo, serde_json};
use schemars::JsonSchema;
use serde::Deserialize;

/// The params.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Number of steps.
    #[schemars(range(min = 1, max = 100000))]
    pub steps: u32,
    /// Milliseconds per step.
    #[schemars(range(max = 60000))]
    pub step_ms: u32,
    /// Bytes of padding in the details of every step, to make events big.
    #[serde(default)]
    #[schemars(range(max = 65536))]
    pub pad: u32,
}

/// The plugin.
pub struct Steady;

impl Plugin for Steady {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("steady", "0.1.0", "Steady (test only)").retry_safe().exclusivity_group("maintenance")
    }

    fn run(ctx: &Context, target: &str, params: Params) -> Result<Outcome, Error> {
        for step in 1..=params.steps {
            ctx.check_cancelled()?;
            ctx.sleep(Duration::from_millis(u64::from(params.step_ms)));
            ctx.progress((u64::from(step) * 100 / u64::from(params.steps)) as u8, &format!("step {step}"));
            if params.pad > 0 {
                ctx.details(&serde_json::json!({ "step": step, "pad": "x".repeat(params.pad as usize) }));
            }
        }
        Ok(Outcome::message(format!("{} steps on {target}", params.steps)))
    }
}

opal_sdk::export_plugin!(Steady);
