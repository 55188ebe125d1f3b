//! The recording host: a [`Host`] that writes down every call into a [`Run`]
//! and answers `cancelled()` from the harness's plan instead of an operator.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use super::{CancelWhen, Ending, Event, Run};
use crate::context::Host;
use crate::{Context, Error, Level, Outcome};

/// Runs `f` with a context on a fresh recording host and returns the run.
pub(super) fn record(
    cancel_when: Vec<CancelWhen>,
    cancel_at: Option<Duration>,
    f: impl FnOnce(&Context) -> crate::Result<Outcome>,
) -> Run {
    let run = Rc::new(RefCell::new(Run::default()));
    let host = Rc::new(RecordingHost { run: run.clone(), cancel_when, cancel_at, requested: Cell::new(false) });
    host.requested(); // a plan may cancel before the plugin does anything
    let _current = Current::install(host.clone());
    let ctx = Context::new(Box::new(host));
    let ending = match catch(|| f(&ctx)) {
        Ok(Ok(outcome)) => Ending::Completed(outcome),
        Ok(Err(Error::Failed(message))) => Ending::Failed(message),
        Ok(Err(Error::InvalidParams(errors))) => Ending::InvalidParams(errors),
        Ok(Err(Error::Cancelled)) => Ending::Cancelled,
        Err(panic) => Ending::Panicked(panic),
    };
    drop(ctx);
    let mut run = std::mem::take(&mut *run.borrow_mut());
    run.ending = Some(ending);
    run
}

thread_local! {
    /// The recording host of the run on this thread, for what a plugin
    /// reaches without its context (host commands: [`super::exec`]).
    static CURRENT: RefCell<Option<Rc<RecordingHost>>> = const { RefCell::new(None) };
}

/// Records `event` in this thread's run, as if the plugin had told its
/// context; nothing happens outside a run.
pub(super) fn push(event: Event) {
    if let Some(host) = CURRENT.with(|c| c.borrow().clone()) {
        host.push(event);
    }
}

/// Keeps a run's host as this thread's [`CURRENT`] until dropped.
struct Current(Option<Rc<RecordingHost>>);

impl Current {
    fn install(host: Rc<RecordingHost>) -> Current {
        Current(CURRENT.with(|c| c.replace(Some(host))))
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| c.replace(previous));
    }
}

/// Calls `f`, turning a panic into its message.
pub(super) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic without a message".to_owned()
        }
    })
}

struct RecordingHost {
    /// Shared with [`record`], which takes it back when the run ends.
    run: Rc<RefCell<Run>>,
    cancel_when: Vec<CancelWhen>,
    cancel_at: Option<Duration>,
    /// Set once a cancel is requested; it stays requested, as on the server.
    requested: Cell<bool>,
}

impl RecordingHost {
    /// Records `event`, then checks the plan: the operator's cancel comes
    /// when it comes, whether or not the plugin is looking.
    fn push(&self, event: Event) {
        self.run.borrow_mut().events.push(event);
        self.requested();
    }

    /// Whether a cancel is requested now, requesting it if the plan says so.
    fn requested(&self) -> bool {
        if !self.requested.get() {
            let run = self.run.borrow();
            let due =
                self.cancel_at.is_some_and(|at| run.clock >= at) || self.cancel_when.iter().any(|when| when(&run));
            drop(run);
            if due {
                self.request();
            }
        }
        self.requested.get()
    }

    fn request(&self) {
        self.requested.set(true);
        let mut run = self.run.borrow_mut();
        run.cancel_requested_at = Some(run.events.len());
    }

    /// Records `event` and requests the cancel right after it.
    fn request_after(&self, event: Event) {
        self.run.borrow_mut().events.push(event);
        self.request();
    }
}

impl Host for Rc<RecordingHost> {
    fn report(&self, percent: u8, message: &str) {
        self.push(Event::Progress { percent, message: message.to_owned() });
    }

    fn set_details(&self, json: &str) {
        let details = serde_json::from_str(json).unwrap_or_else(|_| json.into());
        self.push(Event::Details(details));
    }

    fn phase(&self, name: &str) {
        self.push(Event::Phase(name.to_owned()));
    }

    fn log(&self, level: Level, message: &str) {
        self.push(Event::Log { level, message: message.to_owned() });
    }

    fn cancelled(&self) -> bool {
        self.run.borrow_mut().checks += 1;
        self.requested()
    }

    /// Advances the virtual clock; like the real sleep, it ends early once a
    /// cancel is requested (at once if one already is).
    fn sleep(&self, duration: Duration) {
        if self.requested() {
            self.push(Event::Slept(Duration::ZERO));
            return;
        }
        let clock = self.run.borrow().clock;
        let (slept, cancel) = match self.cancel_at {
            Some(at) if clock.saturating_add(duration) >= at => (at.saturating_sub(clock), true),
            _ => (duration, false),
        };
        self.run.borrow_mut().clock = clock.saturating_add(slept);
        if cancel {
            self.request_after(Event::Slept(slept));
        } else {
            self.push(Event::Slept(slept));
        }
    }
}
