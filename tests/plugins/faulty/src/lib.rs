//! `faulty`: a test-only plugin that misbehaves in the way its params ask, so
//! the tests can show that a bad plugin fails its own operation, clearly, and
//! nothing else. Its timeout is short to keep those tests quick.

use std::hint::black_box;
use std::time::Duration;

use opal_sdk::{Context, Error, Outcome, Plugin, PluginInfo};
use schemars::JsonSchema;
use serde::Deserialize;

/// How to misbehave.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Loop forever without a host call.
    Spin,
    /// Sleep far past the timeout (blocked in an async host call).
    Sleep,
    /// Execute `unreachable`.
    Trap,
    /// Panic with a message.
    Panic,
    /// Allocate until memory runs out.
    Memory,
    /// Behave: succeed at once.
    Succeed,
}

/// The params.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    /// What to do.
    pub mode: Mode,
}

/// The plugin.
pub struct Faulty;

impl Plugin for Faulty {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("faulty", "0.1.0", "Faulty (test only)").timeout(Duration::from_millis(1500))
    }

    fn run(ctx: &Context, _target: &str, params: Params) -> Result<Outcome, Error> {
        ctx.progress(10, "about to misbehave");
        match params.mode {
            Mode::Spin => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Mode::Sleep => ctx.sleep(Duration::from_secs(3600)),
            Mode::Trap => trap(),
            Mode::Panic => panic!("the disk is on fire"),
            Mode::Memory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    black_box(&hoard);
                }
            }
            Mode::Succeed => {}
        }
        Ok(Outcome::message("behaved"))
    }
}

#[cfg(target_family = "wasm")]
fn trap() {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_family = "wasm"))]
fn trap() {
    std::process::abort()
}

opal_sdk::export_plugin!(Faulty);
