//! `rollout`: rolls a release out to a list of hosts, in three phases that
//! own a slice of the progress bar each: prepare (0-10 %), deploy (10-90 %,
//! host by host, with `{completed_hosts, total_hosts}` in the details) and
//! verify (90-100 %). Each step sleeps `step_ms`, and a cancel cuts it short.
//! A test-only plugin that shows the SDK: docs/plugin-guide.md includes it,
//! its native tests are at the bottom, and tests/sdk.rs runs it in a server.

use std::time::Duration;

use opal_sdk::prelude::*;

/// The params; the doc comments are the schema's descriptions.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The hosts, in the order to deploy to.
    #[schemars(length(min = 1))]
    pub hosts: Vec<String>,
    /// How long each step takes, in milliseconds.
    #[schemars(range(max = 600000))]
    pub step_ms: u64,
    /// A host that refuses the release, to try failures.
    #[serde(default)]
    pub fail_on: Option<String>,
}

/// The plugin.
pub struct Rollout;

impl Plugin for Rollout {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("rollout", "0.1.0", "Roll out (test only)").description("Deploys to each host in turn.")
    }

    fn validate(p: &Params) -> Result<(), Vec<FieldError>> {
        match &p.fail_on {
            Some(host) if !p.hosts.contains(host) => Err(vec![FieldError::new("fail_on", "is not one of the hosts")]),
            _ => Ok(()),
        }
    }

    fn run(ctx: &Context, target: &str, p: Params) -> Result<Outcome> {
        let step = Duration::from_millis(p.step_ms);
        let prepare = ctx.phase("prepare", 0..10);
        prepare.progress(50, "fetching the release");
        ctx.sleep(step);
        ctx.check_cancelled()?;

        let deploy = ctx.phase("deploy", 10..90);
        let hosts = deploy.track(&p.hosts).message(|host| format!("deploying to {host}"));
        for host in hosts.details_keys("completed_hosts", "total_hosts") {
            if p.fail_on.as_ref() == Some(host) {
                return Err(Error::failed(format!("{host} refused the release")));
            }
            ctx.sleep(step);
            ctx.check_cancelled()?;
            info!(ctx, "{host} runs the release");
        }

        let verify = ctx.phase("verify", 90..);
        verify.progress(50, "checking health");
        ctx.sleep(step);
        ctx.check_cancelled()?;
        Ok(Outcome::message(format!("rolled out to {} hosts on {target}", p.hosts.len())))
    }
}

opal_sdk::export_plugin!(Rollout);

#[cfg(test)]
mod tests {
    use opal_sdk::serde_json::json;
    use opal_sdk::testing::{self, Harness};

    use super::*;

    fn params(hosts: &[&str]) -> opal_sdk::serde_json::Value {
        json!({"hosts": hosts, "step_ms": 1000})
    }

    #[test]
    fn deploys_host_by_host_within_its_phase() {
        let run = testing::run::<Rollout>("web", params(&["a", "b", "c", "d"]));
        assert_eq!(run.completed().message, "rolled out to 4 hosts on web");
        assert_eq!(run.phases(), ["prepare", "deploy", "verify"]);
        assert_eq!(
            run.progress(),
            [
                (5, "fetching the release"),
                (10, "deploying to a"),
                (30, "deploying to b"),
                (50, "deploying to c"),
                (70, "deploying to d"),
                (90, "4 of 4 done"),
                (95, "checking health"),
            ]
        );
        assert_eq!(run.details(), Some(&json!({"completed_hosts": 4, "total_hosts": 4})));
        assert_eq!(run.logs()[3], (Level::Info, "d runs the release"));
        assert_eq!(run.slept(), Duration::from_secs(6), "prepare, four hosts, verify");
    }

    #[test]
    fn a_cancel_mid_host_leaves_that_host_uncounted() {
        let run =
            Harness::new().cancel_after(Duration::from_millis(2500)).run::<Rollout>("web", params(&["a", "b", "c"]));
        run.assert_cancelled();
        assert_eq!(run.slept(), Duration::from_millis(2500), "b's step was cut short");
        assert_eq!(run.logs(), [(Level::Info, "a runs the release")]);
        assert_eq!(run.details(), Some(&json!({"completed_hosts": 1, "total_hosts": 3})));
    }

    #[test]
    fn a_refusing_host_fails_the_rollout_where_it_stands() {
        let run = testing::run::<Rollout>("web", json!({"hosts": ["a", "b", "c"], "step_ms": 0, "fail_on": "c"}));
        assert_eq!(run.failed(), "c refused the release");
        assert_eq!(run.details(), Some(&json!({"completed_hosts": 2, "total_hosts": 3})));
        let run = testing::run::<Rollout>("web", json!({"hosts": ["a"], "step_ms": 0, "fail_on": "z"}));
        assert_eq!(run.invalid_params(), [FieldError::new("fail_on", "is not one of the hosts")]);
    }
}
