//! The per-store host state and the host side of `opal:plugin/progress`.
//!
//! One [`HostState`] lives in each `Store`, so it belongs to exactly one call
//! of one plugin. During `run` it carries the operation's [`RunHooks`]; for
//! `describe` and `validate` there are none and progress calls do nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, watch};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::opal::plugin::{progress, types};
use crate::model::{LogLevel, Timestamp};
use crate::progress::LiveProgress;

/// Longest message or log line kept, in bytes; longer ones are cut with a marker.
const MAX_TEXT: usize = 4096;

/// A line for the operation's log, from `progress.log` or the plugin's stdio.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Severity (stdout is `info`, stderr is `warn`).
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// When the plugin wrote it.
    pub at: Timestamp,
}

/// How a running plugin reaches its operation. Owned by the engine's runner.
#[derive(Clone)]
pub struct RunHooks {
    /// The live progress the throttle reads.
    pub progress: watch::Sender<LiveProgress>,
    /// Log lines, bounded: a plugin that outruns the store waits.
    pub logs: mpsc::Sender<LogLine>,
    /// Set when someone asks to cancel; `progress.cancelled()` reads it.
    pub cancel: Arc<AtomicBool>,
}

/// Caps a store's linear memory and remembers whether the cap was hit, so a
/// resulting trap can be reported as `memory_limit` rather than a bare crash.
pub(super) struct MemoryCap {
    pub(super) limit: usize,
    pub(super) hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Everything one store holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) memory: MemoryCap,
    pub(super) hooks: Option<RunHooks>,
}

impl HostState {
    pub(super) fn new(wasi: WasiCtx, memory_limit: usize, hooks: Option<RunHooks>) -> Self {
        HostState { wasi, table: ResourceTable::new(), memory: MemoryCap { limit: memory_limit, hit: false }, hooks }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Cuts `text` to [`MAX_TEXT`] bytes on a char boundary, with a marker.
pub(super) fn capped(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let dropped = text.len() - end;
        text.truncate(end);
        text.push_str(&format!("… [{dropped} bytes truncated]"));
    }
    text
}

impl types::Host for HostState {}

impl progress::Host for HostState {
    fn report(&mut self, percent: u8, message: String) {
        if let Some(hooks) = &self.hooks {
            let message = capped(message);
            hooks.progress.send_modify(|p| {
                p.percent = percent.min(100);
                p.message = message;
                p.version += 1;
            });
        }
    }

    fn set_details(&mut self, json: String) {
        if let Some(hooks) = &self.hooks {
            let details = match serde_json::from_str::<serde_json::Value>(&json) {
                Ok(value @ serde_json::Value::Object(_)) => value,
                _ => serde_json::json!({ "text": capped(json) }),
            };
            hooks.progress.send_modify(|p| {
                p.details = Some(details);
                p.version += 1;
            });
        }
    }

    fn phase(&mut self, name: String) {
        if let Some(hooks) = &self.hooks {
            let name = capped(name);
            hooks.progress.send_modify(|p| {
                p.phase = Some(name);
                p.version += 1;
            });
        }
    }

    async fn log(&mut self, level: types::Level, message: String) {
        if let Some(hooks) = &self.hooks {
            let level = match level {
                types::Level::Debug => LogLevel::Debug,
                types::Level::Info => LogLevel::Info,
                types::Level::Warn => LogLevel::Warn,
                types::Level::Error => LogLevel::Error,
            };
            let line = LogLine { level, message: capped(message), at: Timestamp::now() };
            // A closed channel means the run is over; the line has nowhere to go.
            let _ = hooks.logs.send(line).await;
        }
    }

    fn cancelled(&mut self) -> bool {
        self.hooks.as_ref().is_some_and(|h| h.cancel.load(Ordering::Relaxed))
    }
}
