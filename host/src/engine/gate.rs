//! Approval gates: a workflow step with `approval = {...}` stops its run in
//! status `waiting` until a principal with the gate's role approves or
//! rejects it, or its timeout decides (`on_timeout`).
//!
//! The gate lives in the run's `details.gate` while the run waits, so any
//! node can see it and take the decision. A decision is one fenced write
//! (the run must still be waiting at the same attempt), so of two decisions,
//! or a decision and the timeout, exactly one counts. It is recorded as an
//! `operation.approved` or `operation.rejected` event naming who made it;
//! the driver (on whichever node holds the run) reads it from there.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Engine, Inner};
use crate::model::{EventKind, Operation, OperationId, Status, Timestamp};
use crate::store::{Change, Expect, StoreError};

/// A gate a run waits at, as kept in `details.gate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// The step it guards.
    pub step: String,
    /// The step's index.
    pub index: usize,
    /// The role an approver needs on the run's target.
    pub role: String,
    /// Whether whoever started the run may approve it.
    pub self_approval: bool,
    /// When the timeout decides.
    pub deadline: Timestamp,
    /// What the timeout decides: `approve` or `reject`.
    pub on_timeout: Decision,
    /// The decision, once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<Decided>,
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The step runs.
    Approve,
    /// The step does not run.
    Reject,
}

/// A decision taken, and by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    /// Approve or reject.
    pub decision: Decision,
    /// `user:<name>`, `api` in dev mode, or `timeout`.
    pub by: String,
    /// The approver's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError {
    /// There is no such operation.
    #[error("no operation {0}")]
    NotFound(OperationId),
    /// It is not waiting at a gate (any more).
    #[error("operation {} is {}, not waiting for an approval", .0.id, .0.status.as_str())]
    NotWaiting(Box<Operation>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Gate {
    /// The gate in a run's details, if it waits at one.
    pub fn of(op: &Operation) -> Option<Gate> {
        serde_json::from_value(op.details.get("gate")?.clone()).ok()
    }
}

impl Engine {
    /// The run `id` and the gate it waits at.
    pub async fn gate(&self, id: OperationId) -> Result<(Operation, Gate), DecideError> {
        let op = self.inner.store.get(id).await?.ok_or(DecideError::NotFound(id))?;
        match Gate::of(&op) {
            Some(gate) if op.status == Status::Waiting && gate.decided.is_none() => Ok((op, gate)),
            _ => Err(DecideError::NotWaiting(Box::new(op))),
        }
    }

    /// Records `decision` on `run`, which waits at `gate`; the run goes on.
    pub async fn decide(
        &self,
        run: Operation,
        gate: Gate,
        decision: Decision,
        by: &str,
        comment: Option<String>,
        audit: Option<crate::model::AuditEntry>,
    ) -> Result<Operation, DecideError> {
        self.inner.decide(run, gate, decision, by, comment, audit).await
    }
}

impl Inner {
    pub(super) async fn decide(
        &self,
        mut run: Operation,
        mut gate: Gate,
        decision: Decision,
        by: &str,
        comment: Option<String>,
        audit: Option<crate::model::AuditEntry>,
    ) -> Result<Operation, DecideError> {
        let at = Timestamp::now();
        gate.decided = Some(Decided { decision, by: by.to_owned(), comment: comment.clone(), at });
        let verb = match decision {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        };
        run.status = Status::Running;
        run.message = match &comment {
            Some(comment) => format!("step {} {verb} by {by}: {comment}", gate.step),
            None => format!("step {} {verb} by {by}", gate.step),
        };
        if let Some(details) = run.details.as_object_mut() {
            details.insert("gate".into(), serde_json::to_value(&gate).unwrap_or_default());
        }
        let kind = match decision {
            Decision::Approve => EventKind::Approved,
            Decision::Reject => EventKind::Rejected,
        };
        let change = Change::Operation { kind, operation: Arc::new(run.clone()), at, expect: Expect::Waiting };
        match self.store.commit(super::audited(change, audit)).await {
            Ok(_) => Ok(run),
            Err(StoreError::Fenced(id, _)) => {
                let now = self.store.get(id).await?.ok_or(DecideError::NotFound(id))?;
                Err(DecideError::NotWaiting(Box::new(now)))
            }
            Err(e) => Err(e.into()),
        }
    }
}
