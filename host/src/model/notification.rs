//! Outbound notifications: one record per (rule, event) to deliver, kept in
//! the store's outbox from the transaction of the event that caused it until
//! it is delivered or given up on.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::{OperationId, Timestamp};

/// Where a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up on after the rule's attempts.
    Dead,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// Its id: the `X-Opal-Delivery` header, the same at every attempt.
    #[schema(value_type = String)]
    pub id: Ulid,
    /// The `[[notify]]` entry it is for.
    pub rule: String,
    /// The operation it is about.
    #[schema(value_type = String)]
    pub operation: OperationId,
    /// What happened: `completed`, `failed`, `cancelled`, `retries_exhausted`,
    /// `waiting`, `running_longer`.
    pub event: String,
    /// Where it goes.
    pub url: String,
    /// The body, as built when the event was committed.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    /// Pending, delivered or dead.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When it was made (with its event).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the next attempt is due (pending only).
    #[schema(value_type = String, format = DateTime)]
    pub next_at: Timestamp,
    /// When it was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
