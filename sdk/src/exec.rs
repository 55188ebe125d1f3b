//! Host commands, for plugins the operator granted them to.
//!
//! ```ignore
//! let out = opal_sdk::exec::run("/usr/bin/systemctl", &["restart", "nginx"])?;
//! if out.status != 0 { return Err(Error::failed(format!("systemctl said {}", out.stderr))) }
//! ```
//!
//! Only a command line that the server's config grants to this plugin
//! (`[types.<name>.grants] exec`) runs; anything else is an error your plugin
//! can report. The command runs without a shell, with an empty environment and
//! no stdin; each line it writes also goes to the operation's log while it
//! runs (stdout at `info`, stderr at `warn`).
//!
//! In a native test there is no host to run commands: script their results
//! with [`crate::testing::Harness::exec`], which also records each call.

use crate::Error;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code; -1 if it was killed by a signal.
    pub status: i32,
    /// What it wrote to stdout (at most 64 KiB).
    pub stdout: String,
    /// What it wrote to stderr (at most 64 KiB).
    pub stderr: String,
}

/// Runs `command` (an absolute path) with `args` and waits for it.
#[cfg(target_family = "wasm")]
pub fn run(command: &str, args: &[&str]) -> Result<Output, Error> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    crate::bindings::opal::plugin::exec::run(command, &args)
        .map(|o| Output { status: o.status, stdout: o.stdout, stderr: o.stderr })
        .map_err(Error::Failed)
}

/// Outside a component, the test kit's script answers
/// ([`crate::testing::Harness::exec`]); with none, the command is refused.
#[cfg(not(target_family = "wasm"))]
pub fn run(command: &str, args: &[&str]) -> Result<Output, Error> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    crate::testing::exec_run(command, &args).map_err(Error::Failed)
}

impl Output {
    /// A command that exited 0 having written `stdout`: for scripting
    /// commands in tests.
    pub fn success(stdout: &str) -> Output {
        Output { status: 0, stdout: stdout.to_owned(), stderr: String::new() }
    }

    /// A command that exited with `status` having written `stderr`.
    pub fn failure(status: i32, stderr: &str) -> Output {
        Output { status, stdout: String::new(), stderr: stderr.to_owned() }
    }
}
