//! The workflow driver: one task per running workflow run, from `running`
//! (the claim recorded that) to a terminal status.
//!
//! A run is an operation whose steps are other operations, its children
//! (`parent`, `step`, `item`). The driver goes through the steps in order:
//! it waits at a step's approval gate ([`gate`](super::gate)), renders the
//! step's params from the run's inputs, target, item and earlier outputs,
//! admits one child (or one per `for_each` item, at most `max_parallel`
//! running), and waits for them through the [`feed`](super::feed). The run's
//! progress is the mean of its steps', its phase the current step, and its
//! details each step's status, children and outputs.
//!
//! The run is a durable state machine: every step transition is committed
//! in its details, and each child is admitted with an idempotency key made
//! of the run, the step and the item. After a crash or a node loss the run
//! is re-queued (a run is always retry-safe) and the next driver continues
//! at the first unfinished step: admitting a child again returns the one
//! admitted before, so a completed step never runs again, and a child that
//! was running follows its own plugin's retry-safety rule.
//!
//! A cancel of the run stops starting children, cancels the running ones,
//! and ends the run `cancelled` once they have ended.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::gate::{Decided, Decision, Gate};
use super::{CancelSwitch, Child, Inner, SubmitError, SubmitRequest, Submitted};
use crate::model::{EventKind, OpError, Operation, OperationId, Status, Timestamp};
use crate::store::{Change, Expect, StoreError};
use crate::workflow::template::Scope;
use crate::workflow::{Loaded, OnFailure, OnTimeout};

/// How often a driver re-reads what it waits for, in case the feed missed it.
const REREAD: Duration = Duration::from_secs(1);

/// Where a run is, as kept in its `details`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunState {
    /// The workflow's name and version.
    workflow: String,
    version: String,
    steps: Vec<StepState>,
    /// The gate the run waits at, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gate: Option<Gate>,
}

/// One step's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StepState {
    name: String,
    #[serde(rename = "type")]
    op_type: String,
    status: StepStatus,
    /// Children in all (items), ended, and failed.
    #[serde(default)]
    total: usize,
    #[serde(default)]
    done: usize,
    #[serde(default)]
    failed: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    children: Vec<ChildState>,
    /// The child's final details, or a list of them for a `for_each` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outputs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The gate's decision, if the step has a gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approval: Option<Decided>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StepStatus {
    Pending,
    Waiting,
    Running,
    Completed,
    Failed,
    Rejected,
    Skipped,
    Cancelled,
}

impl StepStatus {
    fn is_final(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Failed | StepStatus::Rejected | StepStatus::Skipped)
    }
}

/// One child, as the run last saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChildState {
    id: OperationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    item: Option<u32>,
    status: Status,
    progress: u8,
    attempt: u32,
}

/// Why a driver stops before the run ends on its own.
enum Stop {
    /// Cancelled: record it once the children ended.
    Cancel,
    /// The server shuts down: hand the run back (or leave it to recovery).
    Shutdown,
    /// Another node took the run over: record nothing.
    Lost,
}

/// How a step ended.
enum StepEnd {
    Completed,
    Failed(String),
}

/// How the run ends.
enum End {
    Completed,
    Failed(&'static str, String),
}

pub(super) async fn drive(inner: &Arc<Inner>, op: Operation, flow: Arc<Loaded>, switch: Arc<CancelSwitch>) {
    let mut run = Run::new(inner, op, flow, switch);
    let end = run.go().await;
    run.finish(end).await;
}

struct Run<'a> {
    inner: &'a Arc<Inner>,
    op: Operation,
    flow: Arc<Loaded>,
    switch: Arc<CancelSwitch>,
    state: RunState,
    feed: tokio::sync::broadcast::Receiver<super::feed::Change>,
    last_write: tokio::time::Instant,
    dirty: bool,
}

impl<'a> Run<'a> {
    fn new(inner: &'a Arc<Inner>, op: Operation, flow: Arc<Loaded>, switch: Arc<CancelSwitch>) -> Run<'a> {
        // Subscribed before any child is admitted, so none of their changes is missed.
        let feed = inner.feed.subscribe();
        let state = resume(&op.details, &flow);
        Run { inner, op, flow, switch, state, feed, last_write: tokio::time::Instant::now(), dirty: false }
    }

    async fn go(&mut self) -> Result<End, Stop> {
        let flow = self.flow.clone();
        let steps = &flow.workflow.steps;
        let mut continued: Vec<String> = Vec::new();
        self.op.message = format!("starting {} steps", steps.len());
        self.write(EventKind::Progress).await?;
        for (index, step) in steps.iter().enumerate() {
            let status = self.state.steps[index].status;
            if status.is_final() {
                if matches!(status, StepStatus::Failed | StepStatus::Rejected) {
                    continued.push(step.name.clone());
                }
                continue;
            }
            self.cancelled()?;
            self.op.phase = Some(step.name.clone());
            if let Some(approval) = &step.approval {
                let decision = self.gate(index, approval).await?;
                if decision == Decision::Reject {
                    self.state.steps[index].status = StepStatus::Rejected;
                    let by = self.state.steps[index].approval.as_ref().map_or("?", |d| d.by.as_str()).to_owned();
                    let why = format!("step {} was rejected by {by}", step.name);
                    if step.on_failure == OnFailure::Continue {
                        continued.push(step.name.clone());
                        self.op.message = why;
                        self.write(EventKind::Progress).await?;
                        continue;
                    }
                    self.skip_rest(index);
                    return Ok(End::Failed("rejected", why));
                }
            }
            match self.step(index).await? {
                StepEnd::Completed => {}
                StepEnd::Failed(why) if step.on_failure == OnFailure::Continue => {
                    continued.push(step.name.clone());
                    self.op.message = format!("step {} failed ({why}); continuing", step.name);
                    self.write(EventKind::Progress).await?;
                }
                StepEnd::Failed(why) => {
                    self.skip_rest(index);
                    return Ok(End::Failed("step_failed", format!("step {} failed: {why}", step.name)));
                }
            }
        }
        if !continued.is_empty() {
            self.op.message = format!(
                "completed {} steps; {} did not succeed: {}",
                steps.len(),
                continued.len(),
                continued.join(", ")
            );
        } else {
            self.op.message = format!("completed {} steps", steps.len());
        }
        Ok(End::Completed)
    }

    /// Marks every step after `index` skipped.
    fn skip_rest(&mut self, index: usize) {
        for step in self.state.steps.iter_mut().skip(index + 1) {
            if !step.status.is_final() {
                step.status = StepStatus::Skipped;
            }
        }
    }

    fn cancelled(&self) -> Result<(), Stop> {
        if self.switch.requested.is_cancelled() { Err(Stop::Cancel) } else { Ok(()) }
    }

    /// Runs step `index`: its children, at most `max_parallel` at once.
    async fn step(&mut self, index: usize) -> Result<StepEnd, Stop> {
        let flow = self.flow.clone();
        let step = &flow.workflow.steps[index];
        let outputs = self.outputs();
        let inputs = self.op.params.clone();
        let run_id = self.op.id.to_string();
        let scope = Scope { target: &self.op.target, run_id: &run_id, inputs: &inputs, outputs: &outputs, item: None };
        let items: Vec<Option<Value>> = match &step.for_each {
            None => vec![None],
            Some(list) => match list.render(&scope) {
                Ok(Value::Array(items)) => items.into_iter().map(Some).collect(),
                Ok(other) => return self.step_failed(index, format!("for_each is not a list but {other}")).await,
                Err(why) => return self.step_failed(index, why).await,
            },
        };
        let parallel = if step.for_each.is_some() { step.max_parallel.max(1) } else { 1 };
        {
            let state = &mut self.state.steps[index];
            state.status = StepStatus::Running;
            state.total = items.len();
        }
        self.op.message = format!("step {} ({}) started", step.name, step.op_type);
        self.commit(EventKind::Progress).await?;

        let mut results: Vec<Option<Result<Value, String>>> = vec![None; items.len()];
        let mut active: HashMap<OperationId, usize> = HashMap::new();
        let mut next = 0;
        let mut stopping = false;
        let mut cancelling = false;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            if !cancelling && self.switch.requested.is_cancelled() {
                cancelling = true;
                stopping = true;
                self.cancel_children(&active).await;
            }
            while !stopping && active.len() < parallel && next < items.len() && retry_at.is_none() {
                let rendered = self.render(index, items[next].as_ref(), &outputs, &inputs);
                let admitted = match rendered {
                    Ok((target, params)) => self.admit(index, next, items.len(), target, params).await,
                    Err(why) => Admitted::Refused(why),
                };
                match admitted {
                    Admitted::Child(child) => {
                        self.track(index, &child);
                        if child.status.is_terminal() {
                            results[next] = Some(outcome(&child));
                        } else {
                            active.insert(child.id, next);
                        }
                        next += 1;
                    }
                    Admitted::Refused(why) => {
                        results[next] = Some(Err(why));
                        next += 1;
                    }
                    Admitted::Later(why) => {
                        self.op.message = format!("step {}: {why}; trying again", step.name);
                        retry_at = Some(tokio::time::Instant::now() + REREAD);
                    }
                }
                if step.on_failure == OnFailure::Stop && results.iter().any(|r| matches!(r, Some(Err(_)))) {
                    stopping = true;
                }
            }
            self.count(index, &results);
            self.write(EventKind::Progress).await?;
            if active.is_empty() && (stopping || next >= items.len()) {
                break;
            }
            let woke = self.wait_children(&mut active, &mut results, index, retry_at).await?;
            if woke == Woke::Retry {
                retry_at = None;
            }
            if step.on_failure == OnFailure::Stop && results.iter().any(|r| matches!(r, Some(Err(_)))) {
                stopping = true;
            }
        }
        self.count(index, &results);
        if cancelling {
            self.state.steps[index].status = StepStatus::Cancelled;
            return Err(Stop::Cancel);
        }
        let failures: Vec<String> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Some(Err(why)) if step.for_each.is_some() => Some(format!("item {i}: {why}")),
                Some(Err(why)) => Some(why.clone()),
                _ => None,
            })
            .collect();
        let details: Vec<Value> = results.into_iter().map(|r| r.and_then(Result::ok).unwrap_or(Value::Null)).collect();
        let outputs = if step.for_each.is_some() {
            Value::Array(details)
        } else {
            details.into_iter().next().unwrap_or_default()
        };
        let state = &mut self.state.steps[index];
        state.outputs = Some(outputs);
        if failures.is_empty() {
            state.status = StepStatus::Completed;
            self.op.message = format!("step {} completed", step.name);
            self.commit(EventKind::Progress).await?;
            return Ok(StepEnd::Completed);
        }
        let why = match failures.len() {
            1 => failures[0].clone(),
            n => format!("{n} children failed; {}", failures[0]),
        };
        state.status = StepStatus::Failed;
        state.error = Some(why.clone());
        self.commit(EventKind::Progress).await?;
        Ok(StepEnd::Failed(why))
    }

    async fn step_failed(&mut self, index: usize, why: String) -> Result<StepEnd, Stop> {
        let state = &mut self.state.steps[index];
        state.status = StepStatus::Failed;
        state.error = Some(why.clone());
        self.commit(EventKind::Progress).await?;
        Ok(StepEnd::Failed(why))
    }

    /// The target and params of step `index` for `item`.
    fn render(
        &self,
        index: usize,
        item: Option<&Value>,
        outputs: &serde_json::Map<String, Value>,
        inputs: &Value,
    ) -> Result<(String, Value), String> {
        let step = &self.flow.workflow.steps[index];
        let run_id = self.op.id.to_string();
        let scope = Scope { target: &self.op.target, run_id: &run_id, inputs, outputs, item };
        let target = match &step.target {
            None => self.op.target.clone(),
            Some(template) => match template.render(&scope)? {
                Value::String(target) if !target.is_empty() => target,
                other => return Err(format!("its target is not a non-empty string but {other}")),
            },
        };
        Ok((target, step.params.render(&scope)?))
    }

    /// Admits the child for item `item` of step `index` (or finds the one
    /// admitted before, by its idempotency key).
    async fn admit(&self, index: usize, item: usize, items: usize, target: String, params: Value) -> Admitted {
        let step = &self.flow.workflow.steps[index];
        let for_each = step.for_each.is_some();
        let request = SubmitRequest {
            op_type: step.op_type.clone(),
            target,
            params,
            created_by: self.op.created_by.clone(),
            idempotency_key: Some(format!("opal-run:{}:{index}:{item}", self.op.id)),
            version: None,
            audit: None,
            child: Some(Child {
                parent: self.op.id,
                step: step.name.clone(),
                item: for_each.then_some(item as u32),
                retry: step.retry.clone(),
            }),
        };
        let label = if for_each { format!("item {item} of {items}") } else { "its operation".to_owned() };
        match self.inner.submit(request).await {
            Ok(Submitted::Created(op) | Submitted::Replayed(op)) => Admitted::Child(Box::new(op)),
            Err(SubmitError::Busy(holder)) => Admitted::Later(format!(
                "{label} waits for {} ({}), {} on target {}",
                holder.id,
                holder.op_type,
                holder.status.as_str(),
                holder.target
            )),
            Err(SubmitError::Store(StoreError::Unavailable(why))) => {
                Admitted::Later(format!("the store is unavailable: {why}"))
            }
            Err(SubmitError::Invalid(errors)) => {
                let list: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
                Admitted::Refused(format!("invalid params: {}", list.join("; ")))
            }
            Err(e) => Admitted::Refused(e.to_string()),
        }
    }

    /// Records what the run knows of `child`.
    fn track(&mut self, index: usize, child: &Operation) {
        let children = &mut self.state.steps[index].children;
        match children.iter_mut().find(|c| c.id == child.id) {
            Some(known) => {
                known.status = child.status;
                known.progress = known.progress.max(child.progress);
                known.attempt = child.attempt;
            }
            None => children.push(ChildState {
                id: child.id,
                item: child.item,
                status: child.status,
                progress: child.progress,
                attempt: child.attempt,
            }),
        }
    }

    fn count(&mut self, index: usize, results: &[Option<Result<Value, String>>]) {
        let state = &mut self.state.steps[index];
        state.done = results.iter().filter(|r| r.is_some()).count();
        state.failed = results.iter().filter(|r| matches!(r, Some(Err(_)))).count();
    }

    async fn cancel_children(&self, active: &HashMap<OperationId, usize>) {
        let by = self.switch.by.lock().expect("cancel switch poisoned").clone().unwrap_or_else(|| "api".into());
        for id in active.keys() {
            if let Err(e) = self.inner.cancel(*id, &by, None).await {
                tracing::debug!(op = %id, error = %e, "cancelling a child of a cancelled run");
            }
        }
    }

    /// Waits for a change of an active child (or a cancel, or `retry_at`).
    async fn wait_children(
        &mut self,
        active: &mut HashMap<OperationId, usize>,
        results: &mut [Option<Result<Value, String>>],
        index: usize,
        retry_at: Option<tokio::time::Instant>,
    ) -> Result<Woke, Stop> {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let changed: Vec<Operation> = tokio::select! {
            biased;
            () = self.inner.shutdown.cancelled() => return Err(Stop::Shutdown),
            () = self.switch.force.notified() => {
                if self.switch.is_lost() {
                    return Err(Stop::Lost);
                }
                return Ok(Woke::Change);
            }
            () = self.switch.asked.notified() => return Ok(Woke::Change),
            change = self.feed.recv() => match change {
                Ok(change) if active.contains_key(&change.operation.id) => vec![Operation::clone(&change.operation)],
                Ok(_) => Vec::new(),
                Err(RecvError::Lagged(_)) => self.reread(active).await,
                Err(RecvError::Closed) => return Err(Stop::Shutdown),
            },
            () = retry => return Ok(Woke::Retry),
            () = tokio::time::sleep(REREAD) => self.reread(active).await,
        };
        for child in changed {
            self.track(index, &child);
            if child.status.is_terminal()
                && let Some(item) = active.remove(&child.id)
            {
                results[item] = Some(outcome(&child));
            }
        }
        Ok(Woke::Change)
    }

    async fn reread(&self, active: &HashMap<OperationId, usize>) -> Vec<Operation> {
        let mut out = Vec::with_capacity(active.len());
        for id in active.keys() {
            if let Ok(Some(op)) = self.inner.store.get(*id).await {
                out.push(op);
            }
        }
        out
    }

    /// Waits at the gate of step `index` until it is decided.
    async fn gate(&mut self, index: usize, approval: &crate::workflow::Approval) -> Result<Decision, Stop> {
        if let Some(decided) = &self.state.steps[index].approval {
            return Ok(decided.decision);
        }
        let step = self.flow.workflow.steps[index].name.clone();
        let gate = match self.state.gate.take().filter(|g| g.index == index) {
            Some(gate) => gate,
            None => Gate {
                step: step.clone(),
                index,
                role: approval.role.clone(),
                self_approval: approval.self_approval,
                deadline: Timestamp::from(Timestamp::now().system_time() + approval.timeout),
                on_timeout: match approval.on_timeout {
                    OnTimeout::Approve => Decision::Approve,
                    OnTimeout::Reject => Decision::Reject,
                },
                decided: None,
            },
        };
        let decided = match gate.decided.clone() {
            Some(decided) => decided,
            None => self.wait_gate(index, gate).await?,
        };
        tracing::info!(op = %self.op.id, step = %step, decision = ?decided.decision, by = %decided.by, "gate decided");
        self.state.gate = None;
        self.state.steps[index].approval = Some(decided.clone());
        self.state.steps[index].status = StepStatus::Pending;
        self.op.status = Status::Running;
        self.commit(EventKind::Progress).await?;
        Ok(decided.decision)
    }

    async fn wait_gate(&mut self, index: usize, gate: Gate) -> Result<Decided, Stop> {
        self.state.gate = Some(gate.clone());
        self.state.steps[index].status = StepStatus::Waiting;
        self.op.status = Status::Waiting;
        self.op.message = format!("step {} waits for approval by a principal with role {}", gate.step, gate.role);
        self.commit(EventKind::Waiting).await?;
        let until = gate.deadline.system_time().duration_since(std::time::SystemTime::now()).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + until;
        loop {
            let decided_now: Option<Operation> = tokio::select! {
                biased;
                () = self.inner.shutdown.cancelled() => return Err(Stop::Shutdown),
                () = self.switch.force.notified() => {
                    return Err(if self.switch.is_lost() { Stop::Lost } else { Stop::Cancel });
                }
                () = self.switch.asked.notified() => return Err(Stop::Cancel),
                change = self.feed.recv() => match change {
                    Ok(c) if c.operation.id == self.op.id && matches!(c.kind, EventKind::Approved | EventKind::Rejected) => {
                        Some(Operation::clone(&c.operation))
                    }
                    Ok(_) => None,
                    Err(RecvError::Lagged(_)) => self.inner.store.get(self.op.id).await.ok().flatten(),
                    Err(RecvError::Closed) => return Err(Stop::Shutdown),
                },
                () = tokio::time::sleep_until(deadline) => {
                    let decision = gate.on_timeout;
                    match self.inner.decide(self.op.clone(), gate.clone(), decision, "timeout", None, None).await {
                        Ok(op) => Some(op),
                        Err(super::DecideError::NotWaiting(now)) => Some(*now),
                        Err(e) => {
                            tracing::warn!(op = %self.op.id, error = %e, "cannot record a gate's timeout; retrying");
                            tokio::time::sleep(REREAD).await;
                            None
                        }
                    }
                }
                () = tokio::time::sleep(REREAD) => self.inner.store.get(self.op.id).await.ok().flatten(),
            };
            let Some(now) = decided_now else { continue };
            if now.attempt != self.op.attempt || now.status.is_terminal() {
                return Err(Stop::Lost);
            }
            if let Some(decided) = Gate::of(&now).and_then(|g| g.decided) {
                // The decision's record is the run's latest state.
                self.op.status = now.status;
                self.op.message = now.message;
                return Ok(decided);
            }
        }
    }

    /// The outputs of the steps that have them, by step name.
    fn outputs(&self) -> serde_json::Map<String, Value> {
        self.state.steps.iter().filter_map(|s| Some((s.name.clone(), s.outputs.clone()?))).collect()
    }

    /// The run's progress: the mean of its steps' (a running step's is its
    /// children's mean), never lower than before.
    fn progress(&self) -> u8 {
        let steps = &self.state.steps;
        if steps.is_empty() {
            return 0;
        }
        let sum: f64 = steps
            .iter()
            .map(|s| match s.status {
                StepStatus::Completed | StepStatus::Failed | StepStatus::Rejected | StepStatus::Skipped => 1.0,
                StepStatus::Running if s.total > 0 => {
                    let ended = s.children.iter().filter(|c| c.status.is_terminal()).count() as f64;
                    let running: f64 = s
                        .children
                        .iter()
                        .filter(|c| !c.status.is_terminal())
                        .map(|c| f64::from(c.progress) / 100.0)
                        .sum();
                    (ended + running) / s.total as f64
                }
                _ => 0.0,
            })
            .sum();
        let percent = (sum / steps.len() as f64 * 100.0).floor().clamp(0.0, 99.0) as u8;
        percent.max(self.op.progress)
    }

    /// Records the run's state now (step transitions: waits for the commit).
    async fn commit(&mut self, kind: EventKind) -> Result<(), Stop> {
        self.dirty = true;
        self.flush(kind, true).await
    }

    /// Records progress, at most once per progress window.
    async fn write(&mut self, kind: EventKind) -> Result<(), Stop> {
        self.dirty = true;
        if self.last_write.elapsed() < self.inner.config.progress_window {
            return Ok(());
        }
        self.flush(kind, false).await
    }

    async fn flush(&mut self, kind: EventKind, wait: bool) -> Result<(), Stop> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        self.last_write = tokio::time::Instant::now();
        self.op.progress = self.progress();
        self.op.details = serde_json::to_value(&self.state).unwrap_or_default();
        let change = Change::Operation {
            kind,
            operation: Arc::new(self.op.clone()),
            at: Timestamp::now(),
            expect: Expect::Runner,
        };
        let result = if wait {
            self.inner.store.commit(change).await.map(|_| ())
        } else {
            self.inner.store.enqueue(change).await
        };
        match result {
            Ok(()) => Ok(()),
            Err(StoreError::Fenced(_, why)) => {
                tracing::warn!(op = %self.op.id, "the run was taken over: {why}");
                Err(Stop::Lost)
            }
            // Its state is also in its children: the next write, or the
            // next driver after a restart, catches up.
            Err(e) => {
                tracing::warn!(op = %self.op.id, error = %e, "cannot record a workflow run's state");
                Ok(())
            }
        }
    }

    async fn finish(mut self, end: Result<End, Stop>) {
        let now = Timestamp::now();
        let kind = match end {
            Ok(End::Completed) => {
                self.op.status = Status::Completed;
                self.op.progress = 100;
                EventKind::Completed
            }
            Ok(End::Failed(code, why)) => {
                self.op.status = Status::Failed;
                self.op.progress = self.progress();
                self.op.message = why.clone();
                self.op.error = Some(OpError::new(code, why));
                EventKind::Failed
            }
            Err(Stop::Cancel) => {
                let by = self.switch.by.lock().expect("cancel switch poisoned").clone();
                for step in &mut self.state.steps {
                    if !step.status.is_final() {
                        step.status = StepStatus::Cancelled;
                    }
                }
                self.state.gate = None;
                self.op.status = Status::Cancelled;
                self.op.progress = self.progress();
                self.op.message = match &by {
                    Some(by) => format!("cancelled by {by}"),
                    None => "cancelled".to_owned(),
                };
                self.op.cancelled_by = by;
                EventKind::Cancelled
            }
            Err(Stop::Shutdown) => {
                super::runner::hand_back(self.inner, self.op).await;
                return;
            }
            Err(Stop::Lost) => return,
        };
        self.op.finished_at = Some(now);
        self.op.details = serde_json::to_value(&self.state).unwrap_or_default();
        tracing::info!(op = %self.op.id, r#type = %self.op.op_type, status = self.op.status.as_str(), "workflow run ended");
        super::runner::record_end(self.inner, kind, self.op, now).await;
    }
}

/// What admitting a child gave.
enum Admitted {
    /// The child (new, or admitted before).
    Child(Box<Operation>),
    /// It cannot run: the step item fails with this.
    Refused(String),
    /// Not now (its slot is taken, the store is unavailable): try again.
    Later(String),
}

#[derive(PartialEq, Eq)]
enum Woke {
    Change,
    Retry,
}

/// A child's outcome: its final details, or why it did not complete.
fn outcome(child: &Operation) -> Result<Value, String> {
    match child.status {
        Status::Completed => Ok(child.details.clone()),
        Status::Cancelled => Err(child.message.clone()),
        _ => Err(match &child.error {
            Some(error) => format!("{} ({}): {}", child.id, error.code, error.message),
            None => format!("{}: {}", child.id, child.message),
        }),
    }
}

/// The run's state from its details (a re-queued run's), or a fresh one.
fn resume(details: &Value, flow: &Loaded) -> RunState {
    let workflow = &flow.workflow;
    if let Ok(state) = serde_json::from_value::<RunState>(details.clone())
        && state.steps.len() == workflow.steps.len()
        && state.steps.iter().zip(&workflow.steps).all(|(s, w)| s.name == w.name)
    {
        return state;
    }
    RunState {
        workflow: workflow.name.clone(),
        version: workflow.version.to_string(),
        steps: workflow
            .steps
            .iter()
            .map(|s| StepState {
                name: s.name.clone(),
                op_type: s.op_type.clone(),
                status: StepStatus::Pending,
                total: 0,
                done: 0,
                failed: 0,
                children: Vec::new(),
                outputs: None,
                error: None,
                approval: None,
            })
            .collect(),
        gate: None,
    }
}
