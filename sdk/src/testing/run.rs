//! [`Run`]: what a plugin did in a test, in order, and how it ended.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::{FieldError, Level, Outcome};

/// One thing the plugin told its context, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `progress`, as the host receives it: overall percent (phases already
    /// mapped onto their slice) and the message.
    Progress {
        /// Overall progress, 0-100.
        percent: u8,
        /// What the plugin said it was doing.
        message: String,
    },
    /// A phase was entered.
    Phase(String),
    /// The details were set to this document.
    Details(Value),
    /// A log line.
    Log {
        /// Its severity.
        level: Level,
        /// The line.
        message: String,
    },
    /// `sleep`, with the virtual time that passed (less than asked if a
    /// cancel cut it short).
    Slept(Duration),
    /// A host command ([`crate::exec::run`]), before it ran.
    Exec {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

/// How a run ended; the test kit's mirror of the operation's final status.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// `run` returned `Ok`: the operation is `completed`.
    Completed(Outcome),
    /// `run` returned `Error::Failed`: `failed` with code `plugin_error`.
    Failed(String),
    /// Parsing, `validate` or `run` rejected the params: a 400 at submission,
    /// or `failed` with code `invalid_params` from `run`.
    InvalidParams(Vec<FieldError>),
    /// `run` returned `Error::Cancelled`: the operation is `cancelled`.
    Cancelled,
    /// The plugin panicked with this message: `failed` with code `panic`.
    Panicked(String),
}

/// Everything one test run recorded, with assertions that print the whole
/// record when they fail.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub(super) events: Vec<Event>,
    /// None only while the run is going (as seen by a `cancel_when` predicate).
    pub(super) ending: Option<Ending>,
    /// Calls of `ctx.cancelled()` and `ctx.check_cancelled()`.
    pub(super) checks: usize,
    /// The virtual clock: all the time `ctx.sleep` passed.
    pub(super) clock: Duration,
    /// How many events there were when the cancel was requested.
    pub(super) cancel_requested_at: Option<usize>,
    /// The HTTP requests sent ([`Run::http_requests`]).
    pub(super) http_requests: Vec<super::SentRequest>,
}

impl Run {
    pub(super) fn ended(ending: Ending) -> Run {
        Run { ending: Some(ending), ..Run::default() }
    }

    /// Every event, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// How the run ended.
    ///
    /// # Panics
    /// If it has not ended: only a `cancel_when` predicate sees such a run.
    pub fn ending(&self) -> &Ending {
        self.ending.as_ref().expect("the run has not ended yet")
    }

    /// The outcome of a run that completed.
    ///
    /// # Panics
    /// If it did not complete, printing the whole run.
    #[track_caller]
    pub fn completed(&self) -> &Outcome {
        match self.ending() {
            Ending::Completed(outcome) => outcome,
            _ => self.unexpected("complete"),
        }
    }

    /// The message of a run that failed.
    ///
    /// # Panics
    /// If it did not fail, printing the whole run.
    #[track_caller]
    pub fn failed(&self) -> &str {
        match self.ending() {
            Ending::Failed(message) => message,
            _ => self.unexpected("fail"),
        }
    }

    /// The field errors of a run whose params were rejected.
    ///
    /// # Panics
    /// If the params were not rejected, printing the whole run.
    #[track_caller]
    pub fn invalid_params(&self) -> &[FieldError] {
        match self.ending() {
            Ending::InvalidParams(errors) => errors,
            _ => self.unexpected("reject its params"),
        }
    }

    /// The panic message of a run that panicked.
    ///
    /// # Panics
    /// If it did not panic, printing the whole run.
    #[track_caller]
    pub fn panicked(&self) -> &str {
        match self.ending() {
            Ending::Panicked(message) => message,
            _ => self.unexpected("panic"),
        }
    }

    /// Asserts that the run stopped as cancelled.
    ///
    /// # Panics
    /// If it did not, printing the whole run.
    #[track_caller]
    pub fn assert_cancelled(&self) {
        if self.ending() != &Ending::Cancelled {
            self.unexpected("stop as cancelled")
        }
    }

    #[track_caller]
    fn unexpected(&self, what: &str) -> ! {
        panic!("expected the run to {what}, but it did not:\n{self}")
    }

    /// Every progress report: (overall percent, message).
    pub fn progress(&self) -> Vec<(u8, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Progress { percent, message } => Some((*percent, message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Every reported percentage, in order.
    pub fn percents(&self) -> Vec<u8> {
        self.progress().into_iter().map(|(percent, _)| percent).collect()
    }

    /// The phases entered, in order.
    pub fn phases(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Phase(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Every log line: (level, line).
    pub fn logs(&self) -> Vec<(Level, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Log { level, message } => Some((*level, message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Every details document set while running, in order.
    pub fn all_details(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Details(details) => Some(details),
                _ => None,
            })
            .collect()
    }

    /// The operation's details at the end, as the host would store them: the
    /// outcome's if a completed run returned some, else the last set.
    pub fn details(&self) -> Option<&Value> {
        match &self.ending {
            Some(Ending::Completed(Outcome { details: Some(details), .. })) => Some(details),
            _ => self.all_details().pop(),
        }
    }

    /// The virtual time the plugin spent in `ctx.sleep`.
    pub fn slept(&self) -> Duration {
        self.clock
    }

    /// How many times the plugin asked whether it was cancelled.
    pub fn cancel_checks(&self) -> usize {
        self.checks
    }

    /// Whether the harness requested a cancel during the run.
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested_at.is_some()
    }
}

/// The run as a readable list, one event a line, for failure messages.
impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, event) in self.events.iter().enumerate() {
            if self.cancel_requested_at == Some(i) {
                writeln!(f, "  -- cancel requested --")?;
            }
            match event {
                Event::Progress { percent, message } => writeln!(f, "  progress {percent:>3}%  {message}")?,
                Event::Phase(name) => writeln!(f, "  phase    {name}")?,
                Event::Details(details) => writeln!(f, "  details  {details}")?,
                Event::Log { level, message } => writeln!(f, "  log      {level}: {message}")?,
                Event::Slept(time) => writeln!(f, "  slept    {time:?}")?,
                Event::Exec { command, args } => writeln!(f, "  exec     {command} {}", args.join(" "))?,
            }
        }
        if self.cancel_requested_at == Some(self.events.len()) {
            writeln!(f, "  -- cancel requested --")?;
        }
        match &self.ending {
            Some(ending) => write!(f, "  ended    {ending:?}"),
            None => write!(f, "  (still running)"),
        }
    }
}
