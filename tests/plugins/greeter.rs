// The `greeter` test plugin, shared by the crates that build it as different
// versions (each defines `VERSION` and includes this file), for the tests of
// versions side by side, version requirements and hot reload.

use std::time::Duration;

use opal_sdk::{Context, Error, Outcome, Plugin, PluginInfo};
use schemars::JsonSchema;
use serde::Deserialize;

/// The params.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    /// Who to greet.
    pub name: String,
    /// How long to take first, in ms.
    #[serde(default)]
    #[schemars(range(max = 60000))]
    pub wait_ms: u64,
}

/// The plugin.
pub struct Greeter;

impl Plugin for Greeter {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("greeter", VERSION, "Greeter (test only)")
    }

    fn run(ctx: &Context, _target: &str, params: Params) -> Result<Outcome, Error> {
        ctx.progress(10, "thinking of a greeting");
        ctx.sleep(Duration::from_millis(params.wait_ms));
        Ok(Outcome::message(format!("greeter {VERSION} says hello to {}", params.name)))
    }
}

opal_sdk::export_plugin!(Greeter);
