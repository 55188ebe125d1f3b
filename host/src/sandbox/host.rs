//! The per-store host state and the host side of `opal:plugin/progress`.
//!
//! One [`HostState`] lives in each `Store`, so it belongs to exactly one call
//! of one plugin. During `run` it carries the operation's [`RunHooks`]; for
//! `describe` and `validate` there are none and progress calls do nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::opal::plugin::{progress, types};
use super::grants::{ExecRule, NetPolicy};
use super::http::NetHooks;
use crate::model::{LogLevel, Timestamp};
use crate::progress::LiveProgress;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpHooks};

/// Longest message or log line kept, in bytes; longer ones are cut with a marker.
const MAX_TEXT: usize = 4096;
/// Largest `details` document kept, in bytes of JSON; a larger one is
/// replaced by a marker that says how large it was.
pub const MAX_DETAILS: usize = 64 * 1024;

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
    /// Log lines, bounded: a plugin that outruns the store waits. Boxed:
    /// the channel allocates its first block of 32 slots up front, for
    /// every running operation, and a slot is a pointer rather than a line.
    pub logs: mpsc::Sender<Box<LogLine>>,
    /// Cancelled when someone asks to cancel: `progress.cancelled()` reads
    /// it, and it wakes a `progress.sleep`.
    pub cancel: CancellationToken,
    /// Set to stop the guest by force; it stops within one epoch tick.
    pub force_stop: Arc<AtomicBool>,
}

/// How many bytes of log one run may still write. The line that would pass
/// the limit is replaced by a marker saying so; every later line is dropped
/// (the plugin is not slowed or failed for it).
#[derive(Debug)]
pub(super) struct LogBudget {
    left: AtomicUsize,
    limit: usize,
}

/// Sentinel for "the marker has been written".
const SPENT: usize = usize::MAX;

impl LogBudget {
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(LogBudget { left: AtomicUsize::new(limit), limit })
    }

    /// `line` if it fits, the marker if it is the first that does not, else nothing.
    pub(super) fn admit(&self, line: LogLine) -> Option<LogLine> {
        let len = line.message.len();
        let before = self
            .left
            .try_update(Ordering::AcqRel, Ordering::Acquire, |left| match left {
                SPENT => None,
                left if left >= len => Some(left - len),
                _ => Some(SPENT),
            })
            .ok()?;
        if before >= len {
            return Some(line);
        }
        let message = format!(
            "[log limit reached: this run wrote {} bytes of log, the most it may; later lines are dropped]",
            self.limit - before
        );
        Some(LogLine { level: LogLevel::Warn, message, at: line.at })
    }
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
    log_budget: Arc<LogBudget>,
    /// The commands this run may execute.
    pub(super) exec: Vec<ExecRule>,
    http: WasiHttpCtx,
    http_hooks: NetHooks,
    /// The CPU time the guest has computed in this store.
    pub(super) cpu: Arc<super::cpu::CpuClock>,
    /// This store's place in the instance pool, given back with the store.
    pub(super) instance: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl HostState {
    pub(super) fn new(
        wasi: WasiCtx,
        memory_limit: usize,
        hooks: Option<RunHooks>,
        log_budget: Arc<LogBudget>,
        exec: Vec<ExecRule>,
        net: Arc<NetPolicy>,
    ) -> Self {
        let memory = MemoryCap { limit: memory_limit, hit: false };
        let (http, http_hooks) = (WasiHttpCtx::new(), NetHooks { policy: net });
        let cpu = Arc::default();
        HostState {
            wasi,
            table: ResourceTable::new(),
            memory,
            hooks,
            log_budget,
            exec,
            http,
            http_hooks,
            cpu,
            instance: None,
        }
    }

    /// What wasi:http works with: the net hooks, the resource table, its context.
    pub(super) fn http_parts(&mut self) -> (&mut dyn WasiHttpHooks, &mut ResourceTable, &mut WasiHttpCtx) {
        (&mut self.http_hooks, &mut self.table, &mut self.http)
    }

    /// Where this run's log lines go, if it is a run.
    pub(super) fn log_sink(&self) -> Option<LogSink> {
        let hooks = self.hooks.as_ref()?;
        Some(LogSink { logs: hooks.logs.clone(), budget: self.log_budget.clone() })
    }
}

/// A run's log, within its budget; detached from the store so it can be
/// awaited while the store is busy elsewhere.
#[derive(Clone)]
pub(super) struct LogSink {
    logs: mpsc::Sender<Box<LogLine>>,
    budget: Arc<LogBudget>,
}

impl LogSink {
    /// Appends a line; waits while the log queue is full.
    pub(super) async fn send(&self, line: LogLine) {
        if let Some(line) = self.budget.admit(line) {
            // A closed channel means the run is over; the line has nowhere to go.
            let _ = self.logs.send(Box::new(line)).await;
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A `details` document from its JSON text: an object as it is, anything
/// else as `{"text": ...}`, and a document over [`MAX_DETAILS`] as a marker.
pub(super) fn details_value(json: &str) -> serde_json::Value {
    if json.len() > MAX_DETAILS {
        let marker = format!("details of {} bytes were dropped: the limit is {MAX_DETAILS} bytes", json.len());
        return serde_json::json!({ "truncated": marker });
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        _ => serde_json::json!({ "text": capped(json.to_owned()) }),
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
            let details = details_value(&json);
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
        let level = match level {
            types::Level::Debug => LogLevel::Debug,
            types::Level::Info => LogLevel::Info,
            types::Level::Warn => LogLevel::Warn,
            types::Level::Error => LogLevel::Error,
        };
        if let Some(sink) = self.log_sink() {
            sink.send(LogLine { level, message: capped(message), at: Timestamp::now() }).await;
        }
    }

    fn cancelled(&mut self) -> bool {
        self.hooks.as_ref().is_some_and(|h| h.cancel.is_cancelled())
    }

    async fn sleep(&mut self, ms: u64) -> bool {
        sleep_unless_cancelled(ms, self.hooks.as_ref().map(|h| &h.cancel)).await
    }
}

/// `progress.sleep`: waits `ms`, or until `cancel` (none outside a run:
/// nothing cancels `describe` or `validate`, which have their own time
/// limit). True if a cancel was asked. The guest's fiber stays suspended
/// the whole time, so a sleeping plugin costs no CPU.
async fn sleep_unless_cancelled(ms: u64, cancel: Option<&CancellationToken>) -> bool {
    let nap = tokio::time::sleep(Duration::from_millis(ms));
    match cancel {
        None => {
            nap.await;
            false
        }
        Some(cancel) => {
            tokio::select! {
                biased;
                () = cancel.cancelled() => true,
                () = nap => cancel.is_cancelled(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine { level: LogLevel::Info, message: text.to_owned(), at: Timestamp::now() }
    }

    #[test]
    fn the_log_budget_keeps_what_fits_then_one_marker_then_nothing() {
        let budget = LogBudget::new(10);
        assert_eq!(budget.admit(line("12345")).unwrap().message, "12345");
        assert_eq!(budget.admit(line("1234")).unwrap().message, "1234");
        let marker = budget.admit(line("12")).unwrap();
        assert_eq!(marker.level, LogLevel::Warn);
        assert!(marker.message.contains("log limit reached") && marker.message.contains("9 bytes"), "{marker:?}");
        assert!(budget.admit(line("1")).is_none(), "after the marker, nothing");
        assert!(budget.admit(line("")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_lasts_its_time_unless_a_cancel_ends_it_at_once() {
        let cancel = CancellationToken::new();
        let started = tokio::time::Instant::now();
        assert!(!sleep_unless_cancelled(1_500, Some(&cancel)).await, "no cancel was asked");
        assert_eq!(started.elapsed(), Duration::from_millis(1_500));

        let started = tokio::time::Instant::now();
        let asked = cancel.clone();
        let asker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            asked.cancel();
        });
        assert!(sleep_unless_cancelled(600_000, Some(&cancel)).await, "the cancel ended the sleep");
        assert_eq!(started.elapsed(), Duration::from_millis(250), "woken at the cancel, not at a poll");
        asker.await.unwrap();

        let started = tokio::time::Instant::now();
        // The longest sleep a guest can ask for is clamped by tokio, not a panic.
        assert!(sleep_unless_cancelled(u64::MAX, Some(&cancel)).await, "asked before the call");
        assert_eq!(started.elapsed(), Duration::ZERO);

        assert!(!sleep_unless_cancelled(20, None).await, "outside a run nothing cancels");
    }

    #[test]
    fn oversized_details_become_a_marker_and_others_keep_their_shape() {
        assert_eq!(details_value(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(details_value("[1]"), serde_json::json!({"text": "[1]"}));
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(MAX_DETAILS));
        let marker = details_value(&big);
        assert!(marker["truncated"].as_str().unwrap().contains(&big.len().to_string()), "{marker}");
    }
}
