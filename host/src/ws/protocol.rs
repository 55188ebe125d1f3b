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
    },
    /// Remove topics.
    Unsubscribe { topics: Vec<String> },
    /// Application-level ping; answered with `pong`.
    Ping,
    /// The bearer token, as the first message of a socket opened without an
    /// `Authorization` header (browsers cannot set one).
    Auth { token: String },
}

/// Server messages other than snapshots and events (those are built once,
/// elsewhere, and shared).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ServerMessage<'a> {
    /// First message on every connection.
    Hello { protocol: u32, seq: Seq, history: String },
    /// Answer to `ping`.
    Pong,
    /// A client message was not understood or not allowed; the connection stays open.
    Error { code: &'a str, message: String },
}

impl ServerMessage<'_> {
    pub(super) fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server messages serialize")
    }
}
