//! `demo`: a phased "installer" in the shape of the seeds' TAK server installer.
//!
//! It walks four phases (setup up to 30 %, configure up to 60 %, install up to
//! 90 %, verify up to 100 %) in `steps` equal steps of `step_ms` each; a step
//! belongs to the phase its progress lands in, so with few steps some phases
//! pass without a step of their own. It
//! checks for cancellation before every step, and fails on purpose at
//! `fail_at_step` so failure paths can be tried from the dashboard.

use std::time::Duration;

use opal_sdk::{Context, Error, FieldError, Outcome, Plugin, PluginInfo};
use schemars::JsonSchema;
use serde::Deserialize;

/// The demo's params.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// How many steps the whole install takes.
    #[schemars(range(min = 1, max = 10000))]
    pub steps: u32,
    /// How long each step sleeps, in milliseconds.
    #[schemars(range(min = 0, max = 60000))]
    pub step_ms: u32,
    /// Fail when this step (1-based) is reached. Must be at most `steps`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub fail_at_step: Option<u32>,
}

/// The phases, with the overall progress at which each one ends.
const PHASES: [(&str, u8); 4] = [("setup", 30), ("configure", 60), ("install", 90), ("verify", 100)];

/// The demo installer.
pub struct Demo;

impl Plugin for Demo {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("demo", env!("CARGO_PKG_VERSION"), "Demo installer")
            .description("Walks setup, configure, install and verify phases, one sleep per step.")
            .timeout(Duration::from_secs(15 * 60))
    }

    fn validate(params: &Params) -> Result<(), Vec<FieldError>> {
        match params.fail_at_step {
            Some(n) if n == 0 || n > params.steps => {
                Err(vec![FieldError::new("fail_at_step", format!("must be between 1 and steps ({})", params.steps))])
            }
            _ => Ok(()),
        }
    }

    fn run(ctx: &Context, target: &str, params: Params) -> Result<Outcome, Error> {
        ctx.info(&format!("installing on {target}: {} steps", params.steps));
        let mut phase = "";
        for step in 1..=params.steps {
            ctx.check_cancelled()?;
            let percent = percent_at(step, params.steps);
            let name = phase_at(percent);
            if name != phase {
                phase = name;
                ctx.phase(name);
                ctx.info(&format!("entering {name}"));
            }
            if params.fail_at_step == Some(step) {
                return Err(Error::failed(format!("{name} failed at step {step} of {}", params.steps)));
            }
            ctx.sleep(Duration::from_millis(u64::from(params.step_ms)));
            ctx.progress(percent, &format!("{name}: step {step} of {}", params.steps));
            ctx.details(&Details { step, steps: params.steps });
        }
        Ok(Outcome::message(format!("installed on {target} in {} steps", params.steps))
            .with_details(Details { step: params.steps, steps: params.steps }))
    }
}

#[derive(serde::Serialize)]
struct Details {
    step: u32,
    steps: u32,
}

/// Overall percent once 1-based `step` of `steps` is done: linear, so it never
/// goes backwards and the last step reaches exactly 100.
fn percent_at(step: u32, steps: u32) -> u8 {
    (u64::from(step) * 100 / u64::from(steps)) as u8
}

/// The phase that `percent` falls in.
fn phase_at(percent: u8) -> &'static str {
    PHASES.iter().find(|(_, end)| percent <= *end).map_or("verify", |(name, _)| name)
}

opal_sdk::export_plugin!(Demo);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_monotonic_and_ends_at_100() {
        for steps in [1, 3, 4, 7, 100] {
            let mut last = 0;
            for step in 1..=steps {
                let pct = percent_at(step, steps);
                assert!(pct >= last, "steps={steps} step={step}: {pct} < {last}");
                last = pct;
            }
            assert_eq!(last, 100, "steps={steps}");
            assert_eq!(phase_at(last), "verify", "steps={steps}");
        }
    }

    #[test]
    fn phases_run_in_order() {
        let names: Vec<_> = (1..=10).map(|s| phase_at(percent_at(s, 10))).collect();
        assert_eq!(
            names,
            [
                "setup",
                "setup",
                "setup",
                "configure",
                "configure",
                "configure",
                "install",
                "install",
                "install",
                "verify"
            ]
        );
    }

    #[test]
    fn fail_at_step_must_be_within_steps() {
        let p = |fail| Params { steps: 3, step_ms: 0, fail_at_step: fail };
        assert!(Demo::validate(&p(None)).is_ok());
        assert!(Demo::validate(&p(Some(3))).is_ok());
        assert_eq!(Demo::validate(&p(Some(4))).unwrap_err()[0].field, "fail_at_step");
        assert_eq!(Demo::validate(&p(Some(0))).unwrap_err()[0].field, "fail_at_step");
    }
}
