//! `faulty`: a test-only plugin that misbehaves in the way its params ask, so
//! the tests can show that a bad plugin fails its own operation, clearly, and
//! nothing else: the hostile-plugin suite. Its timeout is short to keep those
//! tests quick (the flooding tests raise it in the server's config).

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use opal_sdk::{Context, Error, Outcome, Plugin, PluginInfo};
use schemars::JsonSchema;
use serde::Deserialize;

/// How to misbehave.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Loop forever without a host call.
    Spin,
    /// Sleep far past the timeout (blocked in an async host call).
    Sleep,
    /// Execute `unreachable`.
    Trap,
    /// Panic with a message.
    Panic,
    /// Allocate until memory runs out.
    Memory,
    /// Recurse until the stack runs out.
    Recurse,
    /// Call `report` 1,000,000 times, then succeed.
    ReportFlood,
    /// Write 100 MB of log (stdout, stderr and `log`), then succeed.
    LogFlood,
    /// Set 10 MB of details, then succeed.
    DetailsBomb,
    /// Try to read a file, read the environment, connect to `address` and
    /// run a command; succeed with what each attempt gave in the details.
    Escape,
    /// Report a 102,000-byte progress message, then fail with one as long.
    LongMessage,
    /// Count this run in the file `count_file` (a granted writable
    /// directory) and fail until the count reaches `succeed_on`: a plugin
    /// that fails its first attempts, for the retry tests.
    Flaky,
    /// Behave: succeed at once.
    Succeed,
}

/// The params.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    /// What to do.
    pub mode: Mode,
    /// `escape`: the `host:port` to connect to.
    #[serde(default)]
    pub address: Option<String>,
    /// `escape`: the file to read.
    #[serde(default)]
    pub path: Option<String>,
    /// `flaky`: where the attempts are counted.
    #[serde(default)]
    pub count_file: Option<String>,
    /// `flaky`: the attempt that succeeds (1 = the first).
    #[serde(default)]
    pub succeed_on: Option<u32>,
}

/// The plugin.
pub struct Faulty;

impl Plugin for Faulty {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("faulty", "0.1.0", "Faulty (test only)").timeout(Duration::from_millis(1500))
    }

    fn run(ctx: &Context, _target: &str, params: Params) -> Result<Outcome, Error> {
        ctx.progress(10, "about to misbehave");
        match params.mode {
            Mode::Spin => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            // Not `ctx.sleep`, which wakes up for a cancel: this must stay
            // blocked in one host call, for the host to stop it by force.
            Mode::Sleep => std::thread::sleep(Duration::from_secs(3600)),
            Mode::Trap => trap(),
            Mode::Panic => panic!("the disk is on fire"),
            Mode::Memory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    black_box(&hoard);
                }
            }
            Mode::Recurse => {
                black_box(recurse(black_box(0)));
            }
            Mode::ReportFlood => {
                for i in 0..1_000_000u32 {
                    ctx.progress((i / 10_000) as u8, "flooding");
                }
            }
            Mode::LogFlood => {
                let line = format!("{}\n", "x".repeat(1023));
                for i in 0..100_000 {
                    match i % 3 {
                        0 => drop(std::io::stdout().write_all(line.as_bytes())),
                        1 => drop(std::io::stderr().write_all(line.as_bytes())),
                        _ => ctx.info(&line[..1023]),
                    }
                }
            }
            Mode::DetailsBomb => ctx.details(&serde_json::json!({ "blob": "x".repeat(10 << 20) })),
            Mode::Escape => return Ok(escape(&params)),
            Mode::Flaky => return flaky(&params),
            Mode::LongMessage => {
                // Three bytes a char: the cut must fall on a char boundary.
                let long = "€".repeat(34_000);
                ctx.progress(50, &long);
                return Err(Error::failed(long));
            }
            Mode::Succeed => {}
        }
        Ok(Outcome::message("behaved"))
    }
}

/// Counts this attempt; fails until the count reaches `succeed_on`.
fn flaky(params: &Params) -> Result<Outcome, Error> {
    let path = params.count_file.as_deref().ok_or_else(|| Error::failed("flaky needs count_file"))?;
    let before: u32 = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    let attempt = before + 1;
    std::fs::write(path, attempt.to_string()).map_err(|e| Error::failed(format!("cannot count in {path}: {e}")))?;
    if attempt < params.succeed_on.unwrap_or(1) {
        return Err(Error::failed(format!("attempt {attempt} fails on purpose")));
    }
    Ok(Outcome::message(format!("succeeded on attempt {attempt}"))
        .with_details(serde_json::json!({ "attempt": attempt })))
}

/// Each escape attempt and what came of it: `"denied: ..."` or `"allowed: ..."`.
fn escape(params: &Params) -> Outcome {
    let said = |r: Result<String, String>| match r {
        Ok(what) => format!("allowed: {what}"),
        Err(why) => format!("denied: {why}"),
    };
    let path = params.path.as_deref().unwrap_or("/etc/passwd");
    let file = std::fs::read_to_string(path).map(|t| format!("read {} bytes", t.len())).map_err(|e| e.to_string());
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let env = if vars.is_empty() { Err("no variables".to_owned()) } else { Ok(vars.join(",")) };
    let address = params.address.as_deref().unwrap_or("127.0.0.1:9");
    let socket =
        std::net::TcpStream::connect(address).map(|_| format!("connected to {address}")).map_err(|e| e.to_string());
    // Through the host's exec interface: std::process does not exist on
    // wasm32-wasip2, so only this way reaches the host's check.
    let command = opal_sdk::exec::run("/bin/sh", &["-c", "echo escaped"])
        .map(|o| format!("status {}, stdout {:?}", o.status, o.stdout))
        .map_err(|e| e.to_string());
    Outcome::message("tried").with_details(serde_json::json!({
        "file": said(file), "env": said(env), "socket": said(socket), "command": said(command),
    }))
}

/// Recurses with a frame the optimizer cannot remove.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    recurse(depth + 1).wrapping_add(frame[depth as usize % 32])
}

#[cfg(target_family = "wasm")]
fn trap() {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_family = "wasm"))]
fn trap() {
    std::process::abort()
}

opal_sdk::export_plugin!(Faulty);
