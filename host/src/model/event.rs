//! Events: the numbered, durable record of everything that happens to operations.
//!
//! An [`Event`] is built by the store's writer once its batch is committed. Its
//! `frame` is the complete WebSocket text frame, serialized once and shared by
//! every client that receives it (and stored as the event's record).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use super::{Operation, OperationId};

/// A global event sequence number. Strictly increasing across the whole
/// server and across restarts; the resume cursor of the WebSocket protocol.
pub type Seq = u64;

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The operation was accepted (`pending`).
    #[serde(rename = "operation.created")]
    Created,
    /// The plugin started running.
    #[serde(rename = "operation.started")]
    Started,
    /// Interrupted by a restart and queued to run again (`pending`, attempt + 1).
    #[serde(rename = "operation.requeued")]
    Requeued,
    /// A failed attempt will be retried (`pending`, attempt + 1, `next_attempt_at` set).
    #[serde(rename = "operation.retry_scheduled")]
    RetryScheduled,
    /// A workflow run reached an approval gate (`waiting`).
    #[serde(rename = "operation.waiting")]
    Waiting,
    /// A gate was approved (by a principal, or by its timeout); the run goes on.
    #[serde(rename = "operation.approved")]
    Approved,
    /// A gate was rejected (by a principal, or by its timeout).
    #[serde(rename = "operation.rejected")]
    Rejected,
    /// Progress, message, phase or details changed (throttled).
    #[serde(rename = "operation.progress")]
    Progress,
    /// A log line.
    #[serde(rename = "operation.log")]
    Log,
    /// Terminal: success.
    #[serde(rename = "operation.completed")]
    Completed,
    /// Terminal: failure.
    #[serde(rename = "operation.failed")]
    Failed,
    /// Terminal: cancelled.
    #[serde(rename = "operation.cancelled")]
    Cancelled,
}

impl EventKind {
    /// The name on the wire, e.g. `operation.progress`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "operation.created",
            EventKind::Started => "operation.started",
            EventKind::Requeued => "operation.requeued",
            EventKind::RetryScheduled => "operation.retry_scheduled",
            EventKind::Waiting => "operation.waiting",
            EventKind::Approved => "operation.approved",
            EventKind::Rejected => "operation.rejected",
            EventKind::Progress => "operation.progress",
            EventKind::Log => "operation.log",
            EventKind::Completed => "operation.completed",
            EventKind::Failed => "operation.failed",
            EventKind::Cancelled => "operation.cancelled",
        }
    }

    /// True for the kinds that put the operation back in the queue.
    pub fn requeues(self) -> bool {
        matches!(self, EventKind::Requeued | EventKind::RetryScheduled)
    }

    /// True for the three terminal kinds.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Failed | EventKind::Cancelled)
    }
}

/// The severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// Normal.
    Info,
    /// Unexpected but survived.
    Warn,
    /// Failed.
    Error,
}

/// A committed event, ready to fan out.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its place in the global order.
    pub seq: Seq,
    /// What happened.
    pub kind: EventKind,
    /// The operation it is about.
    pub op_id: OperationId,
    /// The operation's state after the event; `None` for log lines.
    pub operation: Option<Arc<Operation>>,
    /// The whole `{"type":"event",...}` frame, serialized once.
    pub frame: Utf8Bytes,
}
