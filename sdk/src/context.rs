//! The run context: a plugin's handle on the host while `run` executes.
//!
//! Every method forwards to a [`Host`]. Inside a wasm component that is the
//! host's `opal:plugin/progress` interface; in a native test it is the
//! recording host of [`crate::testing`]. The context adds what the wire
//! contract leaves to the plugin: phases that own a slice of the progress bar,
//! per-item tracking, details merged across calls, and a sleep that wakes up
//! when the operation is cancelled.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::Error;
use crate::track::Track;

/// The severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Detail for investigating problems.
    Debug,
    /// Normal progress worth keeping.
    Info,
    /// Something unexpected the operation survived.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// What a [`Context`] forwards to: the host side of `opal:plugin/progress`.
pub trait Host {
    /// `progress.report`.
    fn report(&self, percent: u8, message: &str);
    /// `progress.set-details`.
    fn set_details(&self, json: &str);
    /// `progress.phase`.
    fn phase(&self, name: &str);
    /// `progress.log`.
    fn log(&self, level: Level, message: &str);
    /// `progress.cancelled`.
    fn cancelled(&self) -> bool;

    /// Sleeps for `duration`, or until a cancel is requested, whichever comes
    /// first. Inside a component this is `progress.sleep`, which the host
    /// serves and a cancel ends at once. The default, for a host that cannot
    /// wake a sleeper, sleeps on the real clock in slices of [`CANCEL_POLL`],
    /// asking `cancelled()` between them.
    fn sleep(&self, duration: Duration) {
        let deadline = Instant::now().checked_add(duration);
        while !self.cancelled() {
            let left = deadline.map_or(CANCEL_POLL, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(CANCEL_POLL));
        }
    }
}

/// How often a wait that the host cannot wake (an HTTP response, a socket,
/// the default [`Host::sleep`]) asks whether it was cancelled. A cancel thus
/// reaches such a wait within this long, far inside the host's grace period
/// (5 s by default), at the cost of one cheap host call per slice.
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

/// The handle `Plugin::run` receives.
///
/// A context reports into a *span* of the operation's progress bar: the whole
/// 0-100 for the one `run` receives, a slice of it for a phase
/// ([`Context::phase`]). Every method that reports progress takes percentages
/// local to the span, so code that reports 0-100 can run as a phase of a larger
/// operation unchanged. Cloning is cheap; clones report into the same span.
#[derive(Clone)]
pub struct Context {
    /// Shared by the root context and every phase and clone of it.
    run: Rc<RunState>,
    /// The slice of the overall progress this context reports into.
    span: Span,
}

/// What all contexts of one run share.
struct RunState {
    host: Box<dyn Host>,
    /// The details object last sent, so [`Track`] can update its counters
    /// without dropping what the plugin put there itself.
    details: RefCell<Map<String, Value>>,
}

/// A slice of the overall progress, in hundredths of a percent (0..=10_000),
/// so nested phases do not lose precision to rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    const WHOLE: Span = Span { start: 0, end: 10_000 };

    /// The point `done / total` of the way through the span (clamped to its end).
    fn at(self, done: u64, total: u64) -> u32 {
        if total == 0 || done >= total {
            return self.end;
        }
        let width = u64::from(self.end - self.start);
        self.start + (width * done / total) as u32
    }
}

impl Context {
    /// A context that forwards to `host`, reporting into the whole 0-100.
    pub fn new(host: Box<dyn Host>) -> Self {
        Context { run: Rc::new(RunState { host, details: RefCell::default() }), span: Span::WHOLE }
    }

    /// Reports progress (0-100 of this context's span; larger values count as
    /// 100) with a short message saying what is happening now. Call it as
    /// often as you like: the host throttles what it publishes.
    pub fn progress(&self, percent: u8, message: &str) {
        self.report(u64::from(percent), 100, message);
    }

    /// Reports `done` out of `total` of this context's span, e.g. bytes
    /// downloaded of a known length; `total` 0 counts as done.
    pub fn progress_of(&self, done: u64, total: u64, message: &str) {
        self.report(done, total, message);
    }

    pub(crate) fn report(&self, done: u64, total: u64, message: &str) {
        let hundredths = self.span.at(done, total);
        self.run.host.report((hundredths / 100) as u8, message);
    }

    /// Enters the phase `name`, which owns the slice `range` of this context's
    /// progress, and returns the context to report it through: its 0-100 maps
    /// onto `range`. The bounds are percentages of this context's span (30..90
    /// and 30..=90 mean the same: from 30 to 90; `..` is all of it). Bounds
    /// past 100 count as 100, and a reversed range is an empty slice at its end.
    ///
    /// ```
    /// # use opal_sdk::Context;
    /// # fn install(ctx: &Context) {
    /// let install = ctx.phase("install", 30..90);
    /// install.progress(50, "unpacking"); // 60 % overall
    /// let unpack = install.phase("unpack", 50..100);
    /// unpack.progress(50, "half unpacked"); // 75 % of install: 75 % overall
    /// # }
    /// # let run = opal_sdk::testing::run_fn(|ctx| { install(ctx); Ok(opal_sdk::Outcome::default()) });
    /// # assert_eq!(run.percents(), [60, 75]);
    /// # assert_eq!(run.phases(), ["install", "unpack"]);
    /// ```
    ///
    /// Phases do not report anything when they start or end: the progress
    /// bar moves when the phase reports. To name a phase without giving it a
    /// slice, pass `..` and ignore the returned context.
    pub fn phase(&self, name: &str, range: impl RangeBounds<u8>) -> Context {
        self.run.host.phase(name);
        let end = match range.end_bound() {
            Bound::Included(&end) | Bound::Excluded(&end) => end.min(100),
            Bound::Unbounded => 100,
        };
        let start = match range.start_bound() {
            Bound::Included(&start) | Bound::Excluded(&start) => start.min(end),
            Bound::Unbounded => 0,
        };
        let span = Span { start: self.span.at(start.into(), 100), end: self.span.at(end.into(), 100) };
        Context { run: self.run.clone(), span }
    }

    /// Wraps `items` in an iterator that reports progress per item across this
    /// context's span, and keeps `{"completed": n, "total": m}` in the
    /// details: seed 000's per-certificate loop in one line.
    ///
    /// Each item counts as done when the next one is asked for, so an item the
    /// loop body fails on (`?`, `break`) is never counted. See [`Track`] for
    /// the message and the detail keys.
    ///
    /// ```
    /// # use opal_sdk::prelude::*;
    /// # fn issue(_user: &str) -> Result<()> { Ok(()) }
    /// # fn run(ctx: &Context, users: &[&str]) -> Result<Outcome> {
    /// for user in ctx.track(users).message(|u| format!("issuing a certificate for {u}")) {
    ///     ctx.check_cancelled()?;
    ///     issue(user)?;
    /// }
    /// # Ok(Outcome::default()) }
    /// # let run = opal_sdk::testing::run_fn(|ctx| run(ctx, &["ann", "bob"]));
    /// # assert_eq!(run.progress(), [(0, "issuing a certificate for ann"), (50, "issuing a certificate for bob"), (100, "2 of 2 done")]);
    /// ```
    pub fn track<I: IntoIterator>(&self, items: I) -> Track<'_, I::IntoIter> {
        Track::new(self, items.into_iter())
    }

    /// Replaces the operation's details with `details`, serialized to JSON
    /// (an object, e.g. a struct with `#[derive(Serialize)]`).
    pub fn details(&self, details: &impl serde::Serialize) {
        match serde_json::to_value(details) {
            Ok(Value::Object(map)) => {
                self.run.host.set_details(&serde_json::to_string(&map).unwrap_or_default());
                *self.run.details.borrow_mut() = map;
            }
            Ok(other) => {
                self.run.details.borrow_mut().clear();
                self.run.host.set_details(&other.to_string());
            }
            Err(e) => self.log(Level::Warn, &format!("details not serializable: {e}")),
        }
    }

    /// Sets `fields` in the details object last sent, keeping the rest.
    pub(crate) fn merge_details(&self, fields: impl IntoIterator<Item = (String, Value)>) {
        let json = {
            let mut details = self.run.details.borrow_mut();
            details.extend(fields);
            serde_json::to_string(&*details).unwrap_or_default()
        };
        self.run.host.set_details(&json);
    }

    /// Appends a line to the operation's log; never throttled. The macros
    /// [`crate::info!`], [`crate::warn!`] and friends take format arguments.
    pub fn log(&self, level: Level, message: &str) {
        self.run.host.log(level, message);
    }

    /// Appends an info line to the log.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Appends a warning line to the log.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// True once a cancel was requested.
    pub fn cancelled(&self) -> bool {
        self.run.host.cancelled()
    }

    /// `Err(Error::Cancelled)` once a cancel was requested, for use with `?`.
    pub fn check_cancelled(&self) -> Result<(), Error> {
        if self.cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }

    /// Sleeps for `duration`, returning early, at once, if the operation is
    /// cancelled meanwhile: follow it with `ctx.check_cancelled()?`. In a
    /// component the host serves the sleep (`progress.sleep`), so a sleeping
    /// plugin costs no thread and no CPU and still honours timeouts; in
    /// [`crate::testing`] it only advances a virtual clock.
    pub fn sleep(&self, duration: Duration) {
        self.run.host.sleep(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_nest_without_losing_precision() {
        let third = Span { start: Span::WHOLE.at(0, 100), end: Span::WHOLE.at(33, 100) };
        let half_of_third = Span { start: third.at(50, 100), end: third.at(100, 100) };
        assert_eq!((half_of_third.start, half_of_third.end), (1650, 3300));
        assert_eq!(half_of_third.at(0, 7), 1650);
        assert_eq!(half_of_third.at(7, 7), 3300);
        assert_eq!(half_of_third.at(9, 7), 3300, "past the end is the end");
        assert_eq!(Span::WHOLE.at(29, 100), 2900, "whole percentages map exactly");
    }
}
