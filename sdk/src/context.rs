//! The run context: a plugin's handle on the host while `run` executes.
//!
//! Every method forwards to a [`Host`]. Inside a wasm component that is the
//! host's `opal:plugin/progress` interface; a native test can supply its own.

use std::time::Duration;

use crate::Error;

/// The severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// The handle `Plugin::run` receives.
pub struct Context {
    host: Box<dyn Host>,
}

impl Context {
    /// A context that forwards to `host`.
    pub fn new(host: Box<dyn Host>) -> Self {
        Context { host }
    }

    /// Reports overall progress (0-100) with a short message.
    pub fn progress(&self, percent: u8, message: &str) {
        self.host.report(percent.min(100), message);
    }

    /// Enters a named phase.
    pub fn phase(&self, name: &str) {
        self.host.phase(name);
    }

    /// Replaces the operation's details with `details`, serialized to JSON.
    pub fn details(&self, details: &impl serde::Serialize) {
        match serde_json::to_string(details) {
            Ok(json) => self.host.set_details(&json),
            Err(e) => self.host.log(Level::Warn, &format!("details not serializable: {e}")),
        }
    }

    /// Appends a line to the operation's log.
    pub fn log(&self, level: Level, message: &str) {
        self.host.log(level, message);
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
        self.host.cancelled()
    }

    /// `Err(Error::Cancelled)` once a cancel was requested, for use with `?`.
    pub fn check_cancelled(&self) -> Result<(), Error> {
        if self.cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }

    /// Sleeps for `duration`. In a component this blocks on a WASI monotonic
    /// clock, which the host serves asynchronously, so a sleeping plugin costs
    /// no thread and still honours timeouts.
    pub fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// The host as seen from inside a component: the WIT imports.
pub(crate) struct WitHost;

impl Host for WitHost {
    fn report(&self, percent: u8, message: &str) {
        crate::bindings::opal::plugin::progress::report(percent, message);
    }
    fn set_details(&self, json: &str) {
        crate::bindings::opal::plugin::progress::set_details(json);
    }
    fn phase(&self, name: &str) {
        crate::bindings::opal::plugin::progress::phase(name);
    }
    fn log(&self, level: Level, message: &str) {
        use crate::bindings::opal::plugin::types::Level as Wit;
        let level = match level {
            Level::Debug => Wit::Debug,
            Level::Info => Wit::Info,
            Level::Warn => Wit::Warn,
            Level::Error => Wit::Error,
        };
        crate::bindings::opal::plugin::progress::log(level, message);
    }
    fn cancelled(&self) -> bool {
        crate::bindings::opal::plugin::progress::cancelled()
    }
}
