//! `journal`: a test-only, retry-safe plugin that leaves a trace of every
//! attempt. At its start it picks a random nonce; at each of its `steps`
//! steps it sleeps `step_ms`, appends the line `<nonce> <step> <unix_ms>` to
//! `/journal/<file>` (the directory the operator grants it, see
//! [`GUEST_DIR`]) and reports its progress.
//!
//! The cluster tests read the file afterwards: each attempt of an operation
//! has its own nonce, so two attempts that ran at the same time (a lease that
//! two nodes both believed they held) show up as interleaved nonces.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opal_sdk::{Context, Error, FieldError, Outcome, Plugin, PluginInfo};
use schemars::JsonSchema;
use serde::Deserialize;

/// Where the operator's config must grant a writable directory:
/// `[types.journal.grants] dirs = [{ host = "...", guest = "/journal", writable = true }]`.
pub const GUEST_DIR: &str = "/journal";

/// The params.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The journal's file name in the granted directory (no `/`).
    #[schemars(length(min = 1, max = 200))]
    pub file: String,
    /// Number of steps, one line each.
    #[schemars(range(min = 1, max = 100000))]
    pub steps: u32,
    /// Milliseconds slept before each step.
    #[schemars(range(max = 60000))]
    pub step_ms: u32,
}

/// The plugin.
pub struct Journal;

/// A nonce that differs between attempts: std's hasher keys come from the
/// WASI random source, mixed with the clock.
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", hasher.finish())
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl Plugin for Journal {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("journal", "0.1.0", "Journal (test only)").retry_safe()
    }

    fn validate(params: &Params) -> Result<(), Vec<FieldError>> {
        let bad = params.file.is_empty() || params.file.contains(['/', '\\']) || params.file.starts_with('.');
        if bad { Err(vec![FieldError::new("file", "must be a plain file name")]) } else { Ok(()) }
    }

    fn run(ctx: &Context, _target: &str, params: Params) -> Result<Outcome, Error> {
        let nonce = nonce();
        let path = format!("{GUEST_DIR}/{}", params.file);
        ctx.info(&format!("attempt nonce {nonce}"));
        for step in 1..=params.steps {
            ctx.check_cancelled()?;
            ctx.sleep(Duration::from_millis(u64::from(params.step_ms)));
            ctx.check_cancelled()?;
            let line = format!("{nonce} {step} {}\n", unix_ms());
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| Error::failed(format!("cannot append to {path}: {e}")))?;
            ctx.progress((u64::from(step) * 100 / u64::from(params.steps)) as u8, &format!("step {step}"));
        }
        Ok(Outcome::message(format!("{} steps journaled with nonce {nonce}", params.steps)))
    }
}

opal_sdk::export_plugin!(Journal);
