//! The audit log's entries: every action a principal takes (starts, cancels,
//! approvals, queue pause and resume, schedule changes, webhook deliveries)
//! and every refused authorization, with who, when, from where and what came
//! of it. Never a token, a secret or a request body: names and ids only.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::Timestamp;

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Unique id (ULID): entries sort by time.
    #[schema(value_type = String)]
    pub id: Ulid,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Who: `user:<name>`, `hook:<name>`, `api` (dev mode), or `unauthenticated`.
    pub principal: String,
    /// The client's address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// What: `operation.start`, `operation.cancel`, `gate.approve`,
    /// `gate.reject`, `queue.pause`, `queue.resume`, `schedule.create`,
    /// `schedule.delete`, `hook.deliver`, `auth.refused`.
    pub action: String,
    /// On what: an operation or schedule id, a hook's name, or the refused
    /// request's method and path.
    pub object: String,
    /// What came of it: `ok`, or `refused: <why>` (`<status>: <why>` for a
    /// refused authorization).
    pub result: String,
    /// More about the object (e.g. `demo on srv-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry for `action` on `object` by `principal`, now; `result` is
    /// set when the action is applied.
    pub fn new(principal: &str, remote: Option<String>, action: &str, object: impl Into<String>) -> AuditEntry {
        AuditEntry {
            id: Ulid::new(),
            at: Timestamp::now(),
            principal: principal.to_owned(),
            remote,
            action: action.to_owned(),
            object: object.into(),
            result: "ok".to_owned(),
            detail: None,
        }
    }

    /// The same entry with `detail`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> AuditEntry {
        self.detail = Some(detail.into());
        self
    }
}

/// Which entries a listing returns; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// This principal.
    pub principal: Option<String>,
    /// This action.
    pub action: Option<String>,
    /// This object.
    pub object: Option<String>,
    /// At or after this time.
    pub since: Option<Timestamp>,
}

impl AuditFilter {
    /// Whether `entry` is one the listing returns.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == entry.principal)
            && self.action.as_ref().is_none_or(|a| *a == entry.action)
            && self.object.as_ref().is_none_or(|o| *o == entry.object)
            && self.since.is_none_or(|s| entry.at >= s)
    }
}
