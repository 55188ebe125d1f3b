//! The host side of `opal:plugin/exec`: granted commands only, no shell, an
//! empty environment, no stdin, output streamed into the operation's log.
//!
//! The child is spawned in a process group of its own. When the run's future
//! is dropped before the command has finished (timeout, forced stop after a
//! cancel, server shutdown), the whole group is killed with SIGKILL, so a
//! `sh -c "sleep 600 & wait"` leaves no `sleep` behind; `kill_on_drop` also
//! has tokio reap the child. A command that finishes on its own is left
//! alone, and so is a descendant that moved to another group or session
//! (`setsid`): only the group is ours to kill.

use std::process::Stdio;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::bindings::opal::plugin::exec;
use super::host::{HostState, LogLine, LogSink, capped};
use crate::model::{LogLevel, Timestamp};

/// Most bytes of stdout or stderr returned to the plugin.
const MAX_CAPTURE: usize = 64 * 1024;
/// Longest piece of output read as one log line, in bytes.
const MAX_LINE: u64 = 8192;

impl exec::Host for HostState {
    async fn run(&mut self, command: String, args: Vec<String>) -> Result<exec::Output, String> {
        let Some(rule) = self.exec.iter().find(|r| r.allows(&command, &args)) else {
            let line = std::iter::once(command.as_str()).chain(args.iter().map(String::as_str)).collect::<Vec<_>>();
            return Err(if self.exec.is_empty() {
                format!("denied: no command is granted to this plugin (asked for {:?})", line.join(" "))
            } else {
                let granted: Vec<String> = self.exec.iter().map(|r| r.describe()).collect();
                format!("denied: {:?} matches no granted command ({})", line.join(" "), granted.join("; "))
            });
        };
        let mut child = tokio::process::Command::new(&rule.command)
            .args(&args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {command}: {e}"))?;
        // Declared after `child`, so dropped before it: the group is killed
        // while its leader is still unreaped and its id cannot be reused.
        let mut group = GroupKill(child.id().and_then(|id| Pid::from_raw(i32::try_from(id).ok()?)));
        let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let sink = self.log_sink();
        let (out, err, status) =
            tokio::join!(pump(stdout, LogLevel::Info, &sink), pump(stderr, LogLevel::Warn, &sink), child.wait());
        // It ran to the end and closed its output: nothing of it is ours to kill.
        group.0 = None;
        let status = status.map_err(|e| format!("{command} did not finish: {e}"))?;
        Ok(exec::Output { status: status.code().unwrap_or(-1), stdout: out, stderr: err })
    }
}

/// A command's process group (its id is the leader's pid), killed with
/// SIGKILL when this is dropped while it holds one.
struct GroupKill(Option<Pid>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(group) = self.0
            && let Err(e) = kill_process_group(group, Signal::KILL)
            && e != rustix::io::Errno::SRCH
        {
            tracing::warn!(pgid = group.as_raw_nonzero().get(), error = %e, "cannot kill a command's process group");
        }
    }
}

/// Copies `stream` line by line into the log at `level`, and returns up to
/// [`MAX_CAPTURE`] bytes of it.
async fn pump(stream: impl AsyncRead + Unpin, level: LogLevel, sink: &Option<LogSink>) -> String {
    let mut captured = String::new();
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // At most one long line's worth at a time: a command that never
        // writes a newline cannot make the host buffer without bound.
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
        if captured.len() < MAX_CAPTURE {
            let mut end = line.len().min(MAX_CAPTURE - captured.len());
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            captured.push_str(&line[..end]);
            captured.push('\n');
        }
        if let Some(sink) = sink {
            sink.send(LogLine { level, message: capped(line), at: Timestamp::now() }).await;
        }
    }
    captured
}
