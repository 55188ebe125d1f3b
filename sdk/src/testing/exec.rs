//! Scripted host commands for native tests: [`Harness::exec`] answers the
//! plugin's [`crate::exec::run`] calls, and the run records each call
//! ([`Run::exec_calls`]) and, as the host does, the command's output lines
//! in the log.
//!
//! ```
//! use opal_sdk::exec::Output;
//! use opal_sdk::testing::Harness;
//! use opal_sdk::Level;
//!
//! let harness = Harness::new().exec(|command, args| match args {
//!     [verb, unit] if command == "/usr/bin/systemctl" && verb == "restart" => {
//!         Ok(Output::success(&format!("restarted {unit}\n")))
//!     }
//!     _ => Err(format!("denied: {command} {args:?} matches no granted command")),
//! });
//! let run = harness.run_fn(|_ctx| {
//!     let out = opal_sdk::exec::run("/usr/bin/systemctl", &["restart", "nginx"])?;
//!     assert_eq!(out.status, 0);
//!     assert!(opal_sdk::exec::run("/bin/sh", &["-c", "reboot"]).is_err());
//!     Ok(opal_sdk::Outcome::default())
//! });
//! run.completed();
//! assert_eq!(run.exec_calls(), [vec!["/usr/bin/systemctl", "restart", "nginx"], vec!["/bin/sh", "-c", "reboot"]]);
//! assert_eq!(run.logs(), [(Level::Info, "restarted nginx")]);
//! ```
//!
//! Without [`Harness::exec`] every command is refused, as on a server that
//! grants the plugin none.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Event, Harness, Run, host};
use crate::Level;
use crate::exec::Output;

/// Answers a command line: `(command, args)` to what it did, or why it
/// could not run (denied, not found).
pub(super) type ExecScript = Rc<dyn Fn(&str, &[String]) -> Result<Output, String>>;

impl Harness {
    /// Answers every [`crate::exec::run`] of the run with `answer`, given the
    /// command and its arguments: `Ok` with the command's [`Output`] (its
    /// stdout lines then its stderr lines go to the log at `info` and `warn`,
    /// as the host streams them), or `Err` with the message the plugin gets,
    /// as for a command the operator did not grant.
    pub fn exec(mut self, answer: impl Fn(&str, &[String]) -> Result<Output, String> + 'static) -> Self {
        self.exec = Some(Rc::new(answer));
        self
    }
}

impl Run {
    /// Every command the plugin ran (or tried to), as `[command, args...]`.
    pub fn exec_calls(&self) -> Vec<Vec<&str>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Exec { command, args } => {
                    Some(std::iter::once(command.as_str()).chain(args.iter().map(String::as_str)).collect())
                }
                _ => None,
            })
            .collect()
    }
}

thread_local! {
    /// The script of the harness run on this thread, if any: plugins run
    /// natively on the test's thread, and each test has its own.
    static SCRIPT: RefCell<Option<Option<ExecScript>>> = const { RefCell::new(None) };
}

/// Puts `script` (`None`: refuse everything) in place for this thread's run
/// until the guard is dropped.
pub(super) fn install(script: Option<ExecScript>) -> Installed {
    Installed { previous: SCRIPT.with(|s| s.replace(Some(script))) }
}

/// The script of one run, in place until dropped.
pub(super) struct Installed {
    previous: Option<Option<ExecScript>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SCRIPT.with(|s| s.replace(previous));
    }
}

/// [`crate::exec::run`] outside a component.
#[cfg_attr(target_family = "wasm", allow(dead_code))]
pub(crate) fn run(command: &str, args: &[String]) -> Result<Output, String> {
    let Some(script) = SCRIPT.with(|s| s.borrow().clone()) else {
        return Err(format!(
            "cannot run {command}: host commands exist only inside the Opal sandbox; in a native test, \
             script them with opal_sdk::testing::Harness::exec"
        ));
    };
    host::push(Event::Exec { command: command.to_owned(), args: args.to_vec() });
    let line = std::iter::once(command).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
    let output = match script {
        Some(answer) => answer(command, args)?,
        None => return Err(format!("denied: no command is granted to this plugin (asked for {line:?})")),
    };
    for (level, text) in [(Level::Info, &output.stdout), (Level::Warn, &output.stderr)] {
        for message in text.lines() {
            host::push(Event::Log { level, message: message.to_owned() });
        }
    }
    Ok(output)
}
