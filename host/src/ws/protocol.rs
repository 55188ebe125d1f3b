//! The WebSocket protocol's messages (documented in docs/protocol.md).

use serde::{Deserialize, Serialize};

use crate::model::Seq;

/// The protocol version announced in `hello`.
pub const PROTOCOL: u32 = 1;

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum ClientMessage {
    /// Add topics; `since` is the last seq the client saw, when resuming.
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        since: Option<Seq>,
        /// The client's request id, echoed in the snapshots (or `resumed`,
        /// or `error`) that answer.
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Remove topics.
    Unsubscribe {
        topics: Vec<String>,
        /// Accepted (an unsubscribe has no answer to echo it in).
        #[serde(default)]
        #[allow(dead_code)]
        id: Option<serde_json::Value>,
    },
    /// Application-level ping; answered with `pong`.
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// The bearer token, as the first message of a socket opened without an
    /// `Authorization` header (browsers cannot set one).
    Auth {
        token: String,
        /// Accepted (`hello` answers an auth message).
        #[serde(default)]
        #[allow(dead_code)]
        id: Option<serde_json::Value>,
    },
}

/// Server messages other than snapshots and events (those are built once,
/// elsewhere, and shared).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ServerMessage<'a> {
    /// First message on every connection.
    Hello { protocol: u32, seq: Seq, history: String },
    /// Answer to `ping`.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    /// A client message was not understood or not allowed; the connection stays open.
    Error {
        code: &'a str,
        message: String,
        /// The request's id, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
}

/// The `id` of a client message, if it has a usable one: a string of at
/// most 64 bytes, or a number. It is echoed as it was sent.
pub(super) fn request_id(text: &str) -> Option<serde_json::Value> {
    let message: serde_json::Value = serde_json::from_str(text).ok()?;
    message.get("id").filter(|id| usable_id(id)).cloned()
}

/// Whether `id` is a request id the server echoes.
pub(super) fn usable_id(id: &serde_json::Value) -> bool {
    id.as_str().is_some_and(|s| s.len() <= 64) || id.is_number()
}

impl ServerMessage<'_> {
    pub(super) fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server messages serialize")
    }
}
