//! The test kit: run a plugin natively, with plain `cargo test` and no wasm
//! runtime, against a context that records everything it is told.
//!
//! ```
//! use opal_sdk::prelude::*;
//! use opal_sdk::serde_json::json;
//! use opal_sdk::testing::{self, Harness};
//!
//! #[derive(Deserialize, JsonSchema)]
//! pub struct Params { hosts: Vec<String> }
//!
//! pub struct Restart;
//! impl Plugin for Restart {
//!     type Params = Params;
//!     fn run(ctx: &Context, _target: &str, p: Params) -> Result<Outcome> {
//!         for host in ctx.track(&p.hosts).message(|h| format!("restarting {h}")) {
//!             ctx.check_cancelled()?;
//!             ctx.sleep(std::time::Duration::from_secs(2)); // virtual in tests: no wait
//!             info!(ctx, "{host} is back");
//!         }
//!         Ok(Outcome::message(format!("restarted {} hosts", p.hosts.len())))
//!     }
//! }
//!
//! let run = testing::run::<Restart>("cluster-1", json!({"hosts": ["a", "b"]}));
//! assert_eq!(run.completed().message, "restarted 2 hosts");
//! assert_eq!(run.progress(), [(0, "restarting a"), (50, "restarting b"), (100, "2 of 2 done")]);
//! assert_eq!(run.logs(), [(Level::Info, "a is back"), (Level::Info, "b is back")]);
//! assert_eq!(run.details(), Some(&json!({"completed": 2, "total": 2})));
//! assert_eq!(run.slept(), std::time::Duration::from_secs(4));
//!
//! // The operator cancels after the first report: the plugin stops at its next check.
//! let run = Harness::new().cancel_after_progress(1).run::<Restart>("cluster-1", json!({"hosts": ["a", "b"]}));
//! run.assert_cancelled();
//! assert_eq!(run.percents(), [0]);
//!
//! // Params the plugin cannot parse fail as they would on the server.
//! let run = testing::run::<Restart>("cluster-1", json!({"hosts": "a"}));
//! assert!(run.invalid_params()[0].message.contains("expected a sequence"));
//! ```
//!
//! What a run goes through is what the host does: the params are parsed from
//! JSON, then `validate` runs, then `run`; a failed validation ends the run as
//! [`Ending::InvalidParams`] without running it, like the host's 400. One step
//! is missing: the host first checks the params against the JSON Schema
//! (bounds, patterns), which the test kit does not; [`schema`] gives you the
//! schema to assert on instead.
//!
//! `ctx.sleep` advances a virtual clock instead of sleeping, so a plugin with
//! long waits tests in microseconds; [`Run::slept`] says how long it would
//! have slept. A panic in `validate` or `run` ends the run as
//! [`Ending::Panicked`] with the panic's message, as the host fails the
//! operation with code `panic`.

mod exec;
mod host;
pub(crate) mod http;
mod run;

use std::rc::Rc;
use std::time::Duration;

pub use self::http::{Reply, SentRequest};
pub use self::run::{Ending, Event, Run};
use crate::{Context, Outcome, Plugin};

/// Runs `P` on `target` with `params` (anything serializable: `json!({...})`,
/// or the params type itself if it derives `Serialize`) and returns what it
/// did. The same as `Harness::new().run::<P>(target, params)`.
pub fn run<P: Plugin>(target: &str, params: impl serde::Serialize) -> Run {
    Harness::new().run::<P>(target, params)
}

/// Runs a closure as if it were a plugin's `run`: for testing the helper
/// functions a plugin passes its context to, such as one phase.
pub fn run_fn(f: impl FnOnce(&Context) -> crate::Result<Outcome>) -> Run {
    Harness::new().run_fn(f)
}

/// The JSON Schema of `P`'s params, exactly as the plugin publishes it.
pub fn schema<P: Plugin>() -> serde_json::Value {
    serde_json::from_str(&crate::export::params_schema::<P>()).expect("schemars writes JSON")
}

#[cfg(not(target_family = "wasm"))]
pub(crate) use self::exec::run as exec_run;

/// A predicate over the run so far that decides when to request a cancel.
type CancelWhen = Rc<dyn Fn(&Run) -> bool>;

/// Runs plugins against a recording context, with a simulated cancel if asked.
///
/// A cancel is *requested* at some point; from then on `ctx.cancelled()` is
/// true and `ctx.sleep` returns at once, exactly as on the server. What the
/// plugin does about it is what the test checks. The conditions are checked
/// before the run, after everything the plugin reports, and at each
/// `cancelled()` call and sleep; several `cancel_*` conditions combine: the
/// first that holds requests the cancel.
#[derive(Clone, Default)]
pub struct Harness {
    /// Request a cancel once any of these holds.
    cancel_when: Vec<CancelWhen>,
    /// Request a cancel once the virtual clock reaches this, even mid-sleep.
    cancel_at: Option<Duration>,
    /// Canned HTTP replies by URL ([`Harness::http`]).
    http: Vec<(String, Reply)>,
    /// Answers host commands ([`Harness::exec`]); without it they are refused.
    exec: Option<exec::ExecScript>,
}

impl Harness {
    /// A harness that never cancels.
    pub fn new() -> Self {
        Harness::default()
    }

    /// Requests a cancel once the plugin has made `n` progress reports
    /// (`ctx.progress`, phase progress, or `track` items).
    pub fn cancel_after_progress(self, n: usize) -> Self {
        self.cancel_when(move |run| run.progress().len() >= n)
    }

    /// Requests a cancel at the plugin's `n`th call of `ctx.cancelled()` or
    /// `ctx.check_cancelled()` (1-based): that call and every later one see it.
    pub fn cancel_at_check(self, n: usize) -> Self {
        self.cancel_when(move |run| run.cancel_checks() >= n)
    }

    /// Requests a cancel once `elapsed` of virtual time has passed (time
    /// passes only in `ctx.sleep`); a sleep across that moment ends there.
    pub fn cancel_after(mut self, elapsed: Duration) -> Self {
        self.cancel_at = Some(self.cancel_at.map_or(elapsed, |at| at.min(elapsed)));
        self
    }

    /// Requests a cancel once `when` holds for the run so far; e.g.
    /// `|run| run.phases().contains(&"install")`. `|_| true` cancels before
    /// the plugin starts.
    pub fn cancel_when(mut self, when: impl Fn(&Run) -> bool + 'static) -> Self {
        self.cancel_when.push(Rc::new(when));
        self
    }

    /// Runs `P` on `target` with `params`, serialized to JSON and parsed back
    /// as the host would hand them over.
    pub fn run<P: Plugin>(&self, target: &str, params: impl serde::Serialize) -> Run {
        let json = serde_json::to_string(&params).expect("the test's params serialize to JSON");
        match crate::export::parse::<P>(&json) {
            Ok(params) => self.run_typed::<P>(target, params),
            Err(errors) => Run::ended(Ending::InvalidParams(errors)),
        }
    }

    /// Runs `P` on `target` with params already typed: `validate`, then `run`.
    pub fn run_typed<P: Plugin>(&self, target: &str, params: P::Params) -> Run {
        match host::catch(|| P::validate(&params)) {
            Ok(Ok(())) => self.run_fn(|ctx| P::run(ctx, target, params)),
            Ok(Err(errors)) => Run::ended(Ending::InvalidParams(errors)),
            Err(panic) => Run::ended(Ending::Panicked(panic)),
        }
    }

    /// Runs a closure as a plugin's `run`; see [`run_fn`].
    pub fn run_fn(&self, f: impl FnOnce(&Context) -> crate::Result<Outcome>) -> Run {
        let _exec = exec::install(self.exec.clone());
        let http = http::install(&self.http);
        let mut run = host::record(self.cancel_when.clone(), self.cancel_at, f);
        run.http_requests = http.finish();
        run
    }
}
