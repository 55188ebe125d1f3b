//! Which operations a listing returns, the same for both backends.

use crate::model::{Operation, Status};

/// Which operations a listing returns. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    /// Any of these statuses.
    pub statuses: Vec<Status>,
    /// This type.
    pub op_type: Option<String>,
    /// This target.
    pub target: Option<String>,
    /// This creator (`api`, `user:<name>`, `schedule:<id>`).
    pub created_by: Option<String>,
    /// Only the steps of this workflow run.
    pub parent: Option<crate::model::OperationId>,
    /// Only targets inside this scope (the caller's), if set.
    pub scope: Option<crate::auth::Scope>,
}

impl OperationFilter {
    /// Whether `op` is one the listing returns.
    pub fn matches(&self, op: &Operation) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&op.status))
            && self.op_type.as_ref().is_none_or(|t| *t == op.op_type)
            && self.target.as_ref().is_none_or(|t| *t == op.target)
            && self.created_by.as_ref().is_none_or(|c| *c == op.created_by)
            && self.parent.is_none_or(|p| op.parent == Some(p))
            && self.scope.as_ref().is_none_or(|s| s.allows(&op.target))
    }
}
