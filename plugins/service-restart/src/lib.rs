//! `service-restart`: restarts a systemd unit through the host's `exec`
//! capability: `systemctl restart <unit>` by default, or whatever command line
//! the deployment uses (`command`, then `args`, then the unit), as long as
//! the operator's exec grant allows it. The grant is the boundary: a command
//! line it does not list fails as denied, whatever the params say.
//!
//! A deployment sets its command line once, in the config's params defaults
//! for this type, so requests and schedules name only the unit:
//!
//! ```toml
//! [types.service-restart.params]     # merged under every request's params
//! command = "/usr/bin/sudo"
//! args = ["-n", "/usr/bin/systemctl", "restart"]
//!
//! [types.service-restart.grants]
//! exec = [{ command = "/usr/bin/sudo", args = ["-n", "/usr/bin/systemctl", "restart", "*"] }]
//! ```
//!
//! The host streams the command's output into the operation's log while it
//! runs (stdout at `info`, stderr at `warn`). A non-zero exit fails the
//! operation with the exit status and the tail of stderr.

mod unit;

use std::time::Duration;

use opal_sdk::exec;
use opal_sdk::prelude::*;

/// The params of `service-restart`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The systemd unit, e.g. `nginx.service` (`nginx` means the same to systemctl).
    pub unit: String,
    /// The program that restarts it: an absolute path the operator's exec grant lists.
    /// A deployment sets it (and `args`) once, in `[types.service-restart.params]`.
    #[serde(default = "default_command")]
    pub command: String,
    /// The arguments before the unit. The command line is `command args... unit`.
    #[serde(default = "default_args")]
    #[schemars(length(max = 16))]
    pub args: Vec<String>,
}

fn default_command() -> String {
    "/usr/bin/systemctl".into()
}
fn default_args() -> Vec<String> {
    vec!["restart".into()]
}

/// How much of stderr a failure quotes: its last lines, up to this many bytes.
const TAIL_LINES: usize = 5;
const TAIL_BYTES: usize = 1024;

/// The service restarter.
pub struct ServiceRestart;

impl Plugin for ServiceRestart {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("service-restart", env!("CARGO_PKG_VERSION"), "Restart a service")
            .description("Restarts a systemd unit with an allow-listed command (systemctl restart by default).")
            .timeout(Duration::from_secs(5 * 60))
            // Restarting again after an interruption has the same effect as once.
            .retry_safe()
    }

    fn validate(p: &Params) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Err(why) = unit::check(&p.unit) {
            errors.push(FieldError::new("unit", format!("{:?} {why}", p.unit)));
        }
        if !p.command.starts_with('/') {
            errors.push(FieldError::new("command", format!("{:?} must be an absolute path", p.command)));
        }
        if p.args.len() > 16 {
            errors.push(FieldError::new("args", "at most 16 arguments"));
        }
        for (i, arg) in p.args.iter().enumerate() {
            if arg.is_empty() || arg.chars().any(char::is_control) {
                errors.push(FieldError::new(format!("args/{i}"), "must be non-empty, without control characters"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn run(ctx: &Context, target: &str, p: Params) -> Result<Outcome> {
        ctx.check_cancelled()?;
        let mut args: Vec<&str> = p.args.iter().map(String::as_str).collect();
        args.push(&p.unit);
        let line = std::iter::once(p.command.as_str()).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
        info!(ctx, "running {line} on {target}");
        ctx.progress(10, &format!("restarting {}", p.unit));
        let out = exec::run(&p.command, &args).map_err(|e| Error::failed(format!("cannot run {line}: {e}")))?;
        ctx.details(&Details { unit: &p.unit, command: &line, exit_status: out.status });
        if out.status != 0 {
            let how = match out.status {
                -1 => "was killed by a signal".to_owned(),
                code => format!("exited with status {code}"),
            };
            return Err(match tail(&out.stderr).or_else(|| tail(&out.stdout)) {
                Some(tail) => Error::failed(format!("{line} {how}: {tail}")),
                None => Error::failed(format!("{line} {how}, saying nothing")),
            });
        }
        ctx.progress(100, &format!("restarted {}", p.unit));
        Ok(Outcome::message(format!("restarted {} on {target}", p.unit)))
    }
}

#[derive(Serialize)]
struct Details<'a> {
    unit: &'a str,
    command: &'a str,
    exit_status: i32,
}

/// The last few non-blank lines of `output`, joined by ` | `, at most
/// [`TAIL_BYTES`] (cut at the front: the end says why it failed).
fn tail(output: &str) -> Option<String> {
    let lines: Vec<&str> = output.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let text = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    if text.len() <= TAIL_BYTES {
        return Some(text);
    }
    let mut start = text.len() - TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    Some(format!("…{}", &text[start..]))
}

opal_sdk::export_plugin!(ServiceRestart);

#[cfg(test)]
mod tests;
