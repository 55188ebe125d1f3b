//! The SDK's context and test kit, exercised the way plugin authors use them.

use std::cell::Cell;
use std::time::{Duration, Instant};

use opal_sdk::context::{CANCEL_POLL, Host};
use opal_sdk::prelude::*;
use opal_sdk::serde_json::json;
use opal_sdk::testing::{self, Ending, Event, Harness};

/// The params of [`Stepper`].
#[derive(Deserialize, JsonSchema)]
pub struct Params {
    /// How many steps.
    #[schemars(range(min = 1))]
    steps: u32,
    /// Panic at this step.
    #[serde(default)]
    panic_at: Option<u32>,
}

/// Steps through `steps` one-second steps, checking for a cancel before each.
pub struct Stepper;

impl Plugin for Stepper {
    type Params = Params;

    fn validate(p: &Params) -> Result<(), Vec<FieldError>> {
        match p.panic_at {
            Some(n) if n > p.steps => Err(vec![FieldError::new("panic_at", "must be at most steps")]),
            _ => Ok(()),
        }
    }

    fn run(ctx: &Context, target: &str, p: Params) -> Result<Outcome> {
        for step in ctx.track(1..=p.steps) {
            ctx.check_cancelled()?;
            if p.panic_at == Some(step) {
                panic!("step {step} exploded");
            }
            ctx.sleep(Duration::from_secs(1));
        }
        Ok(Outcome::message(format!("{} steps on {target}", p.steps)))
    }
}

#[test]
fn a_run_records_progress_details_and_virtual_time() {
    let run = testing::run::<Stepper>("t", json!({"steps": 4}));
    assert_eq!(run.completed().message, "4 steps on t");
    assert_eq!(run.percents(), [0, 25, 50, 75, 100]);
    assert_eq!(run.progress()[1], (25, "item 2 of 4"));
    assert_eq!(run.progress()[4], (100, "4 of 4 done"));
    assert_eq!(run.details(), Some(&json!({"completed": 4, "total": 4})));
    assert_eq!(run.slept(), Duration::from_secs(4), "virtual: the test did not wait");
    assert_eq!(run.cancel_checks(), 4);
    assert!(!run.cancel_requested());
}

#[test]
fn cancel_after_n_progress_reports() {
    let run = Harness::new().cancel_after_progress(2).run::<Stepper>("t", json!({"steps": 4}));
    run.assert_cancelled();
    assert_eq!(run.percents(), [0, 25], "stopped at the check after the second report");
    assert_eq!(run.slept(), Duration::from_secs(1));
    assert!(run.cancel_requested());
}

#[test]
fn cancel_at_a_given_check() {
    let run = Harness::new().cancel_at_check(3).run::<Stepper>("t", json!({"steps": 4}));
    run.assert_cancelled();
    assert_eq!(run.cancel_checks(), 3);
    assert_eq!(run.slept(), Duration::from_secs(2));
}

#[test]
fn cancel_mid_sleep_cuts_the_sleep_short() {
    let run = Harness::new().cancel_after(Duration::from_millis(1500)).run::<Stepper>("t", json!({"steps": 4}));
    run.assert_cancelled();
    assert_eq!(run.slept(), Duration::from_millis(1500), "the second sleep ended at the cancel");
    let sleeps: Vec<&Event> = run.events().iter().filter(|e| matches!(e, Event::Slept(_))).collect();
    assert_eq!(sleeps, [&Event::Slept(Duration::from_secs(1)), &Event::Slept(Duration::from_millis(500))]);
    assert!(run.to_string().contains("-- cancel requested --"), "{run}");
}

#[test]
fn cancel_when_a_predicate_holds_and_before_the_start() {
    let run = Harness::new()
        .cancel_when(|run| run.slept() >= Duration::from_secs(3))
        .run::<Stepper>("t", json!({"steps": 9}));
    run.assert_cancelled();
    assert_eq!(run.percents().last(), Some(&33));

    let run = Harness::new().cancel_when(|_| true).run::<Stepper>("t", json!({"steps": 9}));
    run.assert_cancelled();
    assert_eq!(run.slept(), Duration::ZERO);
}

#[test]
fn a_cancel_comes_when_it_comes_whether_or_not_the_plugin_looks() {
    let oblivious = |ctx: &Context| {
        ctx.progress(10, "one");
        ctx.progress(20, "two");
        ctx.progress(30, "three");
        Ok(Outcome::message("done anyway"))
    };
    let run = Harness::new().cancel_after_progress(2).run_fn(oblivious);
    assert!(run.cancel_requested());
    assert_eq!(run.completed().message, "done anyway");
    let shown = run.to_string();
    let (before, after) = shown.split_once("-- cancel requested --").expect("the moment is shown");
    assert!(before.contains("two") && after.contains("three"), "{shown}");
}

#[test]
fn a_panic_ends_the_run_with_its_message() {
    let run = testing::run::<Stepper>("t", json!({"steps": 3, "panic_at": 2}));
    assert_eq!(run.panicked(), "step 2 exploded");
    assert_eq!(run.ending(), &Ending::Panicked("step 2 exploded".into()));
}

#[test]
fn params_are_parsed_then_validated_before_the_run() {
    let run = testing::run::<Stepper>("t", json!({"steps": "many"}));
    assert_eq!(run.invalid_params()[0].field, "");
    assert!(run.invalid_params()[0].message.contains("invalid type"), "{run}");
    assert!(run.events().is_empty());

    let run = testing::run::<Stepper>("t", json!({"steps": 2, "panic_at": 3}));
    assert_eq!(run.invalid_params(), [FieldError::new("panic_at", "must be at most steps")]);
    assert!(run.events().is_empty(), "validation failed: run never started");
}

#[test]
fn the_schema_is_the_published_one() {
    let schema = testing::schema::<Stepper>();
    assert_eq!(schema["properties"]["steps"]["minimum"], 1);
    assert_eq!(schema["properties"]["steps"]["description"], "How many steps.");
    assert_eq!(schema["required"], json!(["steps"]));
}

#[test]
#[should_panic(expected = "expected the run to complete, but it did not")]
fn a_failed_expectation_prints_the_run() {
    Harness::new().cancel_after_progress(1).run::<Stepper>("t", json!({"steps": 2})).completed();
}

#[test]
fn phases_map_local_progress_onto_their_slice() {
    let run = testing::run_fn(|ctx| {
        ctx.progress(10, "setup");
        let install = ctx.phase("install", 30..90);
        install.progress(0, "starting");
        install.progress(50, "halfway");
        install.progress(200, "past the end counts as the end");
        let nested = install.phase("unpack", 50..=100);
        nested.progress(50, "unpacking");
        nested.progress_of(3, 4, "three quarters");
        let verify = ctx.phase("verify", 90..);
        verify.progress(100, "verified");
        Ok(Outcome::message("done"))
    });
    assert_eq!(run.percents(), [10, 30, 60, 90, 75, 82, 100]);
    assert_eq!(run.phases(), ["install", "unpack", "verify"]);
}

#[test]
fn reversed_or_out_of_range_phases_do_not_panic() {
    let run = testing::run_fn(|ctx| {
        let (from, to) = (90, 30);
        ctx.phase("backwards", from..to).progress(50, "an empty slice at its end");
        ctx.phase("too far", 50..250).progress(100, "ends at 100");
        Ok(Outcome::default())
    });
    assert_eq!(run.percents(), [30, 100]);
}

#[test]
fn track_merges_its_counters_into_the_plugins_details() {
    let run = testing::run_fn(|ctx| {
        ctx.details(&json!({"ca": "root-1"}));
        let users = ["ann", "bob", "cy"];
        let issue = ctx.phase("issue", 10..100);
        for user in
            issue.track(users).message(|u| format!("issuing for {u}")).details_keys("completed_certs", "total_certs")
        {
            if user == "cy" {
                break;
            }
        }
        Ok(Outcome::message("stopped early"))
    });
    assert_eq!(run.progress(), [(10, "issuing for ann"), (40, "issuing for bob"), (70, "issuing for cy")]);
    assert_eq!(
        run.details(),
        Some(&json!({"ca": "root-1", "completed_certs": 2, "total_certs": 3})),
        "cy was never done"
    );
}

#[test]
fn track_without_a_known_total_counts_only() {
    let run = testing::run_fn(|ctx| {
        for _ in ctx.track((0..10).filter(|n| n % 3 == 0)) {}
        Ok(Outcome::default())
    });
    assert_eq!(run.progress(), [(0, "item 1"), (0, "item 2"), (0, "item 3"), (0, "item 4"), (100, "4 of 4 done")]);
    assert_eq!(run.details(), Some(&json!({"completed": 4, "total": 4})));

    let run = testing::run_fn(|ctx| {
        for _ in ctx.track((0..10).filter(|n| n % 5 == 0)).total(2) {}
        Ok(Outcome::default())
    });
    assert_eq!(run.percents(), [0, 50, 100]);
}

#[test]
fn an_empty_track_goes_straight_to_the_end() {
    let run = testing::run_fn(|ctx| {
        for _ in ctx.phase("nothing", 20..40).track(Vec::<u8>::new()) {}
        Ok(Outcome::default())
    });
    assert_eq!(run.progress(), [(40, "0 of 0 done")]);
}

#[test]
fn details_replace_and_the_outcomes_details_win() {
    let run = testing::run_fn(|ctx| {
        ctx.details(&json!({"a": 1}));
        ctx.details(&json!({"b": 2}));
        Ok(Outcome::message("ok").with_details(json!({"final": true})))
    });
    assert_eq!(run.all_details(), [&json!({"a": 1}), &json!({"b": 2})]);
    assert_eq!(run.details(), Some(&json!({"final": true})));
}

#[test]
fn log_macros_take_format_arguments() {
    let run = testing::run_fn(|ctx| {
        let n = 3;
        debug!(ctx, "n is {n}");
        info!(ctx, "issued {n} certificates");
        warn!(ctx, "{} was slow", "bob");
        error!(ctx, "{:>4}", n);
        ctx.log(Level::Info, "plain");
        Ok(Outcome::default())
    });
    assert_eq!(
        run.logs(),
        [
            (Level::Debug, "n is 3"),
            (Level::Info, "issued 3 certificates"),
            (Level::Warn, "bob was slow"),
            (Level::Error, "   3"),
            (Level::Info, "plain")
        ]
    );
}

#[test]
fn errors_convert_with_the_question_mark() {
    let run = testing::run_fn(|_| {
        let n: u32 = "twelve".parse()?;
        Ok(Outcome::message(n.to_string()))
    });
    assert_eq!(run.failed(), "invalid digit found in string");
    let run = testing::run_fn(|_| Err(Error::invalid("hosts/2", "not a host name")));
    assert_eq!(run.invalid_params(), [FieldError::new("hosts/2", "not a host name")]);
}

/// A host that says "cancelled" from its `after`th check on, on the real clock.
struct CancelsAfter {
    checks: Cell<u32>,
    after: u32,
}

impl Host for CancelsAfter {
    fn report(&self, _: u8, _: &str) {}
    fn set_details(&self, _: &str) {}
    fn phase(&self, _: &str) {}
    fn log(&self, _: Level, _: &str) {}
    fn cancelled(&self) -> bool {
        self.checks.set(self.checks.get() + 1);
        self.checks.get() >= self.after
    }
}

/// The sleep a component uses (the `Host` default) wakes up for a cancel.
#[test]
fn the_real_sleep_returns_soon_after_a_cancel() {
    let ctx = Context::new(Box::new(CancelsAfter { checks: Cell::new(0), after: 3 }));
    let started = Instant::now();
    ctx.sleep(Duration::from_secs(30));
    let took = started.elapsed();
    assert!(took >= CANCEL_POLL * 2, "slept two slices before the third check: {took:?}");
    assert!(took < CANCEL_POLL * 2 + Duration::from_secs(1), "woke for the cancel: {took:?}");

    let ctx = Context::new(Box::new(CancelsAfter { checks: Cell::new(0), after: u32::MAX }));
    let started = Instant::now();
    ctx.sleep(Duration::from_millis(30));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(1), "a short sleep is one slice: {took:?}");
}

#[test]
fn host_commands_are_refused_unless_scripted_and_each_call_is_recorded() {
    use opal_sdk::exec::{self, Output};
    let restart = |ctx: &Context| {
        let out = exec::run("/usr/bin/systemctl", &["restart", "nginx"])?;
        info!(ctx, "exit {}", out.status);
        Ok(Outcome::message(out.stdout))
    };
    // No script: refused as on a server that grants the plugin no command.
    let run = testing::run_fn(restart);
    assert_eq!(
        run.failed(),
        "denied: no command is granted to this plugin (asked for \"/usr/bin/systemctl restart nginx\")"
    );
    assert_eq!(run.exec_calls(), [["/usr/bin/systemctl", "restart", "nginx"]], "a refused call is still recorded");

    // Scripted: the output's lines reach the log before the plugin's own, as the host streams them.
    let run = Harness::new()
        .exec(|_, _| Ok(Output { status: 3, stdout: "one\ntwo\n".into(), stderr: "oops\n".into() }))
        .run_fn(restart);
    assert_eq!(run.completed().message, "one\ntwo\n");
    assert_eq!(
        run.logs(),
        [(Level::Info, "one"), (Level::Info, "two"), (Level::Warn, "oops"), (Level::Info, "exit 3")]
    );
    assert!(run.to_string().contains("exec     /usr/bin/systemctl restart nginx"), "{run}");

    // Outside a test-kit run there is no host at all.
    let outside = exec::run("/bin/true", &[]).unwrap_err().to_string();
    assert!(outside.contains("Harness::exec"), "{outside}");
    assert_eq!(Output::failure(1, "no"), Output { status: 1, stdout: String::new(), stderr: "no".into() });
    assert_eq!(Output::success("ok").status, 0);
}
