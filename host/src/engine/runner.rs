//! The runner: one task per operation, from `running` (the claim recorded
//! that) to a terminal status.
//!
//! It starts the plugin's `run` in the sandbox and, while that runs, forwards
//! log lines and throttled progress to the store. When `run` ends it drains
//! the remaining log lines, flushes the throttle, and commits the terminal
//! transition (which the store publishes only once durable). Every write is
//! fenced on the run's attempt: once another node has taken the operation
//! over, nothing this runner writes is accepted, and a lost lease stops it.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{CancelSwitch, Inner};
use crate::config::TypePolicy;
use crate::model::{EventKind, LogLevel, OpError, Operation, Status, Timestamp};
use crate::progress::{LiveProgress, ProgressThrottle};
use crate::registry::Plugin;
use crate::sandbox::grants::{Grants, Scratch};
use crate::sandbox::{Fault, LogLine, RunHooks, RunLimits, RunOutput};
use crate::store::{Change, Expect, StoreError};

/// Log lines waiting to be stored, per operation. A plugin that logs faster
/// than the store commits waits (its `log` call is async) once this is full.
const LOG_QUEUE: usize = 256;

pub(super) async fn run(
    inner: &Inner,
    mut op: Operation,
    plugin: Arc<Plugin>,
    switch: &CancelSwitch,
    policy: &TypePolicy,
) {
    let store = &inner.store;
    let (limits, prepared) = prepare(inner, &op, &plugin, policy);

    let (progress_tx, progress_rx) = watch::channel(LiveProgress::default());
    let (log_tx, mut log_rx) = mpsc::channel(LOG_QUEUE);
    let hooks = RunHooks {
        progress: progress_tx,
        logs: log_tx,
        cancel: switch.requested.clone(),
        force_stop: switch.forced.clone(),
    };
    let mut throttle = ProgressThrottle::new(progress_rx, inner.config.progress_window);
    let mut panic = PanicWatch::default();
    let (target, params) = (op.target.clone(), op.params.to_string());

    let result = match &prepared {
        Err(why) => Err(Fault::Instantiate(why.clone())),
        Ok((grants, _scratch)) => {
            let run = plugin.component.run(&inner.sandbox, &target, &params, hooks, limits, grants);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    biased;
                    result = &mut run => break result,
                    () = switch.force.notified() => {
                        if switch.is_lost() {
                            return;
                        }
                        break Err(Fault::ForcedStop);
                    }
                    () = inner.shutdown.cancelled() => {
                        Box::pin(hand_back(inner, op)).await;
                        return;
                    }
                    Some(line) = log_rx.recv() => {
                        panic.observe(&line);
                        let _ = store.enqueue(log(&op, *line)).await;
                    }
                    live = throttle.next() => {
                        apply(&mut op, live);
                        let _ = store.enqueue(progress(&op)).await;
                    }
                }
            }
        }
    };
    drop(prepared); // the scratch directory goes with the run

    // The sandbox is gone; whatever it queued is still ours to record, in order.
    while let Ok(line) = log_rx.try_recv() {
        panic.observe(&line);
        let _ = store.enqueue(log(&op, *line)).await;
    }
    // A completed run's terminal event carries its final state, so a pending
    // progress update would only repeat it; a failed or cancelled run's last
    // progress is kept, as it says how far the run got.
    if let Some(live) = throttle.flush() {
        apply(&mut op, live);
        if !matches!(result, Ok(RunOutput::Completed { .. })) {
            let _ = store.enqueue(progress(&op)).await;
        }
    }

    let by = switch.by.lock().expect("cancel switch poisoned").clone();
    let mut kind = finish(&mut op, result, panic.message, by);
    let at = op.finished_at.unwrap_or_else(Timestamp::now);
    if let Some(delay) = super::retry::schedule(&mut op) {
        kind = EventKind::RetryScheduled;
        tracing::info!(op = %op.id, r#type = %op.op_type, attempt = op.attempt, ?delay, "attempt failed; retry scheduled");
    } else {
        tracing::info!(op = %op.id, r#type = %op.op_type, status = op.status.as_str(), "operation ended");
    }
    // Boxed, like `hand_back` above: awaited inline, these futures would
    // widen the state the runner holds for the whole run (6.9 KB instead
    // of 4.5 KB per running operation).
    Box::pin(record_end(inner, kind, op, at)).await;
}

/// Commits the run's terminal transition (or its retry). While the store is unavailable
/// (the database is unreachable or refuses writes, the redb file is being
/// reopened after an I/O error) the outcome is held and retried: on a
/// private store until it commits or the server stops (the next start then
/// records the run as interrupted); on a shared one for as long as the lease
/// could still be ours (a lease later, another node has taken the operation
/// over and the fence refuses the write anyway).
pub(super) async fn record_end(inner: &Inner, kind: EventKind, op: Operation, at: Timestamp) {
    let give_up = inner.store.shared().then(|| tokio::time::Instant::now() + inner.config.lease * 2);
    let op = Arc::new(op);
    let mut warned = false;
    loop {
        let change = Change::Operation { kind, operation: op.clone(), at, expect: Expect::Runner };
        match inner.store.commit(change).await {
            Ok(_) => {
                if warned {
                    tracing::info!(op = %op.id, "recorded the held outcome");
                }
                return;
            }
            Err(StoreError::Fenced(_, why)) => {
                tracing::warn!(op = %op.id, "the end of this run was not recorded: {why}");
                return;
            }
            Err(StoreError::Unavailable(why))
                if give_up.is_none_or(|at| tokio::time::Instant::now() < at) && !inner.shutdown.is_cancelled() =>
            {
                if !warned {
                    tracing::warn!(op = %op.id, "the store is unavailable ({why}); holding the outcome and retrying");
                    warned = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => {
                tracing::error!(op = %op.id, error = %e, "cannot record the end of an operation");
                return;
            }
        }
    }
}

/// At shutdown: on a private store, nothing (the next start records the run
/// as interrupted, as after a crash); on a shared one, the operation goes
/// back at once, re-queued for another node if its plugin is retry-safe,
/// else failed as `interrupted`, rather than waiting for its lease to expire.
pub(super) async fn hand_back(inner: &Inner, op: Operation) {
    if !inner.store.shared() {
        tracing::info!(op = %op.id, "server shutting down; the next start records this run as interrupted");
        return;
    }
    let why = format!("node {} shut down while it ran", inner.config.node);
    let (kind, next) = super::recovery::decide(&inner.registry, &inner.workflows, op, &why);
    tracing::info!(op = %next.id, outcome = kind.as_str(), "{why}");
    let change = Change::Operation { kind, operation: Arc::new(next), at: Timestamp::now(), expect: Expect::Runner };
    if let Err(e) = inner.store.commit(change).await {
        tracing::warn!(error = %e, "cannot hand an operation back at shutdown; its lease will expire");
    }
}

/// The run's limits and grants from the plugin and the operator's policy,
/// with its scratch directory made if granted; `Err` says why it cannot run.
fn prepare(
    inner: &Inner,
    op: &Operation,
    plugin: &Plugin,
    policy: &TypePolicy,
) -> (RunLimits, Result<(Grants, Option<Scratch>), String>) {
    let mut limits = inner.sandbox.default_limits(policy.timeout.unwrap_or(plugin.default_timeout));
    limits.memory = policy.memory_limit().unwrap_or(limits.memory);
    limits.log_bytes = policy.log_limit().unwrap_or(limits.log_bytes);
    limits.cpu = policy.max_cpu;
    let granted = &policy.grants;
    let scratch = match granted.scratch {
        true => Scratch::create(inner.sandbox.scratch_root(), &op.id.to_string(), granted.keep_scratch)
            .map(Some)
            .map_err(|e| format!("cannot create its scratch directory: {e}")),
        false => Ok(None),
    };
    let prepared = scratch.map(|scratch| {
        let grants = Grants {
            scratch: scratch.as_ref().map(|s| s.path().to_owned()),
            dirs: granted.dirs.clone(),
            net: granted.net.clone(),
            exec: granted.exec.clone(),
        };
        (grants, scratch)
    });
    (limits, prepared)
}

fn progress(op: &Operation) -> Change {
    Change::Operation {
        kind: EventKind::Progress,
        operation: Arc::new(op.clone()),
        at: Timestamp::now(),
        expect: Expect::Runner,
    }
}

fn log(op: &Operation, line: LogLine) -> Change {
    Change::Log { op_id: op.id, attempt: op.attempt, level: line.level, message: line.message, at: line.at }
}

/// Copies the plugin's live progress into the operation.
fn apply(op: &mut Operation, live: LiveProgress) {
    op.progress = live.percent;
    if !live.message.is_empty() {
        op.message = live.message;
    }
    if live.phase.is_some() {
        op.phase = live.phase;
    }
    if let Some(details) = live.details {
        op.details = details;
    }
}

/// Sets the terminal status, message and error from how the run ended.
fn finish(
    op: &mut Operation,
    result: Result<RunOutput, Fault>,
    panic: Option<String>,
    cancelled_by: Option<String>,
) -> EventKind {
    op.finished_at = Some(Timestamp::now());
    let fail = |op: &mut Operation, code: &str, message: String| {
        op.status = Status::Failed;
        op.message = message.clone();
        op.error = Some(OpError::new(code, message));
        EventKind::Failed
    };
    match result {
        Ok(RunOutput::Completed { message, details }) => {
            op.status = Status::Completed;
            op.progress = 100;
            op.message = if message.is_empty() { "completed".to_owned() } else { message };
            if let Some(details) = details {
                op.details = details;
            }
            EventKind::Completed
        }
        Ok(RunOutput::Failed(message)) => fail(op, "plugin_error", message),
        Ok(RunOutput::InvalidParams(errors)) => {
            let list: Vec<String> = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect();
            fail(op, "invalid_params", format!("invalid params: {}", list.join("; ")))
        }
        Ok(RunOutput::Cancelled) | Err(Fault::ForcedStop) => {
            op.status = Status::Cancelled;
            let forced = if matches!(result, Err(Fault::ForcedStop)) {
                " (stopped by force after the grace period)"
            } else {
                ""
            };
            op.cancelled_by.clone_from(&cancelled_by);
            op.message = match cancelled_by {
                Some(by) => format!("cancelled by {by}{forced}"),
                None => format!("cancelled{forced}"),
            };
            EventKind::Cancelled
        }
        Err(fault) => {
            let code = match &fault {
                Fault::Timeout(_) => "timeout",
                Fault::MemoryLimit(_) => "memory_limit",
                Fault::CpuLimit(_) => "cpu_limit",
                Fault::Trap(_) if panic.is_some() => "panic",
                Fault::Trap(_) => "trap",
                _ => "internal",
            };
            let message = match (&fault, panic) {
                (Fault::Trap(_), Some(panic)) => format!("plugin panicked: {panic}"),
                (fault, _) => format!("plugin {fault}"),
            };
            fail(op, code, message)
        }
    }
}

/// Spots a Rust panic message in the plugin's stderr, so a crash can be
/// reported with the plugin's own words instead of "unreachable".
#[derive(Default)]
struct PanicWatch {
    /// Saw "panicked at <location>:"; the message is on the next line.
    armed: bool,
    message: Option<String>,
}

impl PanicWatch {
    fn observe(&mut self, line: &LogLine) {
        if line.level != LogLevel::Warn || self.message.is_some() {
            return;
        }
        if self.armed {
            self.message = Some(line.message.trim().to_owned());
        } else if line.message.contains(" panicked at ") {
            self.armed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stderr(text: &str) -> LogLine {
        LogLine { level: LogLevel::Warn, message: text.to_owned(), at: Timestamp::now() }
    }

    #[test]
    fn panic_message_is_the_line_after_the_location() {
        let mut watch = PanicWatch::default();
        watch.observe(&stderr("starting"));
        watch.observe(&stderr("thread '<unnamed>' panicked at src/lib.rs:10:5:"));
        watch.observe(&stderr("disk on fire"));
        watch.observe(&stderr("note: run with `RUST_BACKTRACE=1`"));
        assert_eq!(watch.message.as_deref(), Some("disk on fire"));
    }

    #[test]
    fn cancelled_run_names_who_cancelled() {
        let mut op = Operation::pending("demo", "0.1.0", "t", serde_json::json!({}), "api");
        let kind = finish(&mut op, Err(Fault::ForcedStop), None, Some("user:ann".into()));
        assert_eq!(kind, EventKind::Cancelled);
        assert_eq!(op.status, Status::Cancelled);
        assert!(op.message.contains("user:ann") && op.message.contains("by force"), "{}", op.message);
    }

    #[test]
    fn faults_map_to_codes() {
        let code = |fault| {
            let mut op = Operation::pending("demo", "0.1.0", "t", serde_json::json!({}), "api");
            finish(&mut op, Err(fault), None, None);
            op.error.unwrap().code
        };
        assert_eq!(code(Fault::Timeout(std::time::Duration::from_secs(1))), "timeout");
        assert_eq!(code(Fault::MemoryLimit(64 << 20)), "memory_limit");
        assert_eq!(code(Fault::Trap("unreachable".into())), "trap");
    }
}
