//! The operation record: what is stored, returned by the API and carried in events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::Timestamp;

/// An operation's id: a ULID, so ids sort by creation time. Ids made in one
/// process are strictly increasing, even within a millisecond: the store
/// starts pending operations in id order, so that order is FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(Ulid);

impl OperationId {
    /// A fresh id for an operation created now, above every id this
    /// process made before.
    pub fn new() -> Self {
        static IDS: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());
        let mut ids = IDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The generator only fails past 2^80 ids in one millisecond.
        let id = ids.generate().unwrap_or_else(|_| Ulid::new());
        OperationId(id)
    }

    /// The id as the `u128` key the store uses.
    pub fn to_key(self) -> u128 {
        self.0.0
    }

    /// The id from a store key.
    pub fn from_key(key: u128) -> Self {
        OperationId(Ulid(key))
    }
}

impl Default for OperationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OperationId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(OperationId)
    }
}

/// Where an operation is in its lifecycle.
///
/// `pending -> running -> completed | failed | cancelled`, and `pending -> cancelled`.
/// A workflow run waiting at an approval gate is `waiting` (`running ->
/// waiting -> running`); a failed attempt that will be retried goes back to
/// `pending` until its `next_attempt_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted and durable, not started yet.
    Pending,
    /// The plugin is running.
    Running,
    /// A workflow run waits for an approver at a gate.
    Waiting,
    /// The plugin returned success.
    Completed,
    /// The plugin failed, trapped, timed out or was interrupted.
    Failed,
    /// Someone cancelled it.
    Cancelled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 6] =
        [Status::Pending, Status::Running, Status::Waiting, Status::Completed, Status::Failed, Status::Cancelled];

    /// True while a node holds it: running, or waiting at a gate.
    pub fn is_held(self) -> bool {
        matches!(self, Status::Running | Status::Waiting)
    }

    /// True for the three final statuses.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// The name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Why an operation failed: a stable machine code and a message for people.
///
/// Codes: `plugin_error` (the plugin reported failure), `invalid_params`,
/// `timeout`, `trap` (the plugin crashed), `memory_limit`, `cpu_limit`, `interrupted` (the
/// host stopped while it ran), `internal` (a host-side fault); for workflow runs also
/// `step_failed` (a step failed under `on_failure = "stop"`) and `rejected` (an
/// approval gate was rejected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpError {
    /// Stable machine-readable code.
    pub code: String,
    /// What happened, for the operator.
    pub message: String,
}

impl OpError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        OpError { code: code.to_owned(), message: message.into() }
    }
}

/// One operation: the unit Opal runs, tracks and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Operation {
    /// Unique id (ULID).
    #[schema(value_type = String, pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub id: OperationId,
    /// The operation type: the plugin's name.
    #[serde(rename = "type")]
    pub op_type: String,
    /// The version of the plugin that runs (or ran) it.
    pub plugin_version: String,
    /// The resource it acts on, e.g. a connection id.
    pub target: String,
    /// The params it was started with (a JSON object).
    pub params: serde_json::Value,
    /// Lifecycle status.
    pub status: Status,
    /// Overall progress, 0-100.
    #[schema(maximum = 100)]
    pub progress: u8,
    /// What it is doing now, or how it ended.
    pub message: String,
    /// Plugin-defined details (a JSON object), e.g. `{completed_certs: 3}`.
    pub details: serde_json::Value,
    /// The phase the plugin last entered.
    pub phase: Option<String>,
    /// Set when `status` is `failed`.
    pub error: Option<OpError>,
    /// Who started it: `user:<name>`, `schedule:<id>` or `api`.
    pub created_by: String,
    /// When it was accepted.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the plugin started running.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal status.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// 1 for the first run; more when re-queued after an interruption or retried.
    #[schema(minimum = 1)]
    pub attempt: u32,
    /// The exclusivity group it ran in, if its type has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The client's idempotency key, if the request carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Who cancelled it (`user:<name>`, or `api` in dev mode), once someone has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// The node that runs it, or ran it last (`--node-id`); absent while it
    /// has never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The workflow run this operation is a step of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub parent: Option<OperationId>,
    /// The name of the step of `parent` it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Its index among the children of a `for_each` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// Set while a failed attempt waits to be retried: when the next one may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    /// The retry policy its failures follow, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<super::RetryPolicy>,
}

impl Operation {
    /// A new `pending` operation.
    pub fn pending(
        op_type: &str,
        plugin_version: &str,
        target: &str,
        params: serde_json::Value,
        created_by: &str,
    ) -> Self {
        Operation {
            id: OperationId::new(),
            op_type: op_type.to_owned(),
            plugin_version: plugin_version.to_owned(),
            target: target.to_owned(),
            params,
            status: Status::Pending,
            progress: 0,
            message: "queued".to_owned(),
            details: serde_json::Value::Object(Default::default()),
            phase: None,
            error: None,
            created_by: created_by.to_owned(),
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            attempt: 1,
            group: None,
            idempotency_key: None,
            cancelled_by: None,
            node: None,
            parent: None,
            step: None,
            item: None,
            next_attempt_at: None,
            retry: None,
        }
    }

    /// The `active` index slot this operation holds while pending or running:
    /// its exclusivity group if it has one, else its type. At most one
    /// operation holds a slot per target.
    ///
    /// The children of a workflow's `for_each` step are exclusive per item:
    /// their slot carries the item's index, so siblings on one target do not
    /// shut each other out.
    pub fn slot(&self) -> String {
        let slot = match &self.group {
            Some(group) => format!("group:{group}"),
            None => self.op_type.clone(),
        };
        match self.item {
            Some(item) => format!("{slot}#{item}"),
            None => slot,
        }
    }
}
