//! `demo`: a phased "installer" in the shape of the seeds' TAK server installer.
//!
//! It walks four phases (setup up to 30 %, configure up to 60 %, install up to
//! 90 %, verify up to 100 %) in `steps` equal steps of `step_ms` each; a step
//! belongs to the phase its progress lands in, so with few steps some phases
//! pass without a step of their own. It checks for cancellation around every
//! step (a cancel also cuts the step's sleep short), and fails on purpose at
//! `fail_at_step` so failure paths can be tried from the dashboard.
//!
//! Its native tests, at the bottom, run it with `opal_sdk::testing`.

use std::time::Duration;

use opal_sdk::prelude::*;

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
    /// What is installed (a release, a commit): named in the log and the details.
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    pub release: Option<String>,
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
        match &params.release {
            Some(release) => info!(ctx, "installing {release} on {target}: {} steps", params.steps),
            None => info!(ctx, "installing on {target}: {} steps", params.steps),
        }
        let release = params.release.clone();
        let mut phase = "";
        for step in 1..=params.steps {
            ctx.check_cancelled()?;
            let percent = percent_at(step, params.steps);
            let name = phase_at(percent);
            if name != phase {
                phase = name;
                // The demo reports overall progress itself, so its phases
                // only name what it is doing (`..`: no slice of their own).
                ctx.phase(name, ..);
                info!(ctx, "entering {name}");
            }
            if params.fail_at_step == Some(step) {
                return Err(Error::failed(format!("{name} failed at step {step} of {}", params.steps)));
            }
            ctx.sleep(Duration::from_millis(u64::from(params.step_ms)));
            ctx.check_cancelled()?;
            ctx.progress(percent, &format!("{name}: step {step} of {}", params.steps));
            ctx.details(&Details { step, steps: params.steps, release: release.clone() });
        }
        Ok(Outcome::message(format!("installed on {target} in {} steps", params.steps)).with_details(Details {
            step: params.steps,
            steps: params.steps,
            release,
        }))
    }
}

#[derive(Serialize)]
struct Details {
    step: u32,
    steps: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<String>,
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
    use opal_sdk::serde_json::json;
    use opal_sdk::testing::{self, Harness};

    use super::*;

    #[test]
    fn walks_the_four_phases_and_completes() {
        let run = testing::run::<Demo>("srv-1", json!({"steps": 8, "step_ms": 250}));
        assert_eq!(run.completed().message, "installed on srv-1 in 8 steps");
        assert_eq!(run.phases(), ["setup", "configure", "install", "verify"]);
        assert_eq!(run.percents(), [12, 25, 37, 50, 62, 75, 87, 100]);
        assert_eq!(run.progress()[3], (50, "configure: step 4 of 8"));
        assert_eq!(run.logs()[0], (Level::Info, "installing on srv-1: 8 steps"));
        assert!(run.logs().contains(&(Level::Info, "entering install")), "{run}");
        assert_eq!(run.details(), Some(&json!({"step": 8, "steps": 8})));
        assert_eq!(run.slept(), Duration::from_secs(2), "8 steps of 250 ms, on the virtual clock");
    }

    #[test]
    fn stops_at_the_next_step_once_cancelled() {
        let run = Harness::new().cancel_after_progress(3).run::<Demo>("srv-1", json!({"steps": 8, "step_ms": 250}));
        run.assert_cancelled();
        assert_eq!(run.percents(), [12, 25, 37]);
        assert_eq!(run.details(), Some(&json!({"step": 3, "steps": 8})), "details say how far it got");
    }

    #[test]
    fn a_cancel_mid_step_is_not_reported_as_a_finished_step() {
        let one_minute_steps = json!({"steps": 4, "step_ms": 60_000});
        let run = Harness::new().cancel_after(Duration::from_secs(90)).run::<Demo>("srv-1", one_minute_steps);
        run.assert_cancelled();
        assert_eq!(run.slept(), Duration::from_secs(90), "the second sleep ended at the cancel");
        assert_eq!(run.percents(), [25], "step 2 was cut short, so only step 1 counts");
    }

    #[test]
    fn fails_on_purpose_in_the_phase_of_the_step() {
        let run = testing::run::<Demo>("srv-1", json!({"steps": 6, "step_ms": 5, "fail_at_step": 4}));
        assert_eq!(run.failed(), "install failed at step 4 of 6");
        assert_eq!(run.phases(), ["setup", "configure", "install"]);
    }

    #[test]
    fn rejects_what_its_schema_cannot_say() {
        let run = testing::run::<Demo>("srv-1", json!({"steps": 3, "step_ms": 0, "fail_at_step": 4}));
        assert_eq!(run.invalid_params(), [FieldError::new("fail_at_step", "must be between 1 and steps (3)")]);
        let run = testing::run::<Demo>("srv-1", json!({"steps": 3, "step_ms": 0, "colour": "red"}));
        assert!(run.invalid_params()[0].message.contains("unknown field `colour`"), "{run}");
        let schema = testing::schema::<Demo>();
        assert_eq!(schema["properties"]["steps"]["maximum"], 10000);
        assert_eq!(schema["required"], json!(["steps", "step_ms"]));
    }

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
        let p = |fail| Params { steps: 3, step_ms: 0, fail_at_step: fail, release: None };
        assert!(Demo::validate(&p(None)).is_ok());
        assert!(Demo::validate(&p(Some(3))).is_ok());
        assert_eq!(Demo::validate(&p(Some(4))).unwrap_err()[0].field, "fail_at_step");
        assert_eq!(Demo::validate(&p(Some(0))).unwrap_err()[0].field, "fail_at_step");
    }
}
