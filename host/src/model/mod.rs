//! The domain types every module shares: operations, their statuses, events
//! and sequence numbers. Plain data with serde; no behaviour that needs I/O.

mod audit;
mod event;
mod notification;
mod operation;
mod retry;
mod time;

pub use audit::{AuditEntry, AuditFilter};
pub use event::{Event, EventKind, LogLevel, Seq};
pub use notification::{DeliveryState, Notification};
pub use operation::{OpError, Operation, OperationId, Status};
pub use retry::{Backoff, RetryPolicy, RetrySection, unit_random};
pub use time::Timestamp;

/// A problem with one field of a request, as listed in a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field: a JSON Pointer without the leading `/` (`params/steps`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}
