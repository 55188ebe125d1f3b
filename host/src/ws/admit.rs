//! Admission of a socket: who it is and whether it may stay.
//!
//! A client that could send an `Authorization` header was authenticated
//! before the upgrade. A browser cannot set headers on a WebSocket, so a
//! socket without one (on a server with credentials) must send
//! `{"type":"auth","token":"..."}` as its first message within
//! `ws_auth_timeout_ms`; until then it is sent nothing and subscribes to
//! nothing. Failing that, it is closed with [`CLOSE_UNAUTHENTICATED`]. Then it
//! takes one of its principal's connection slots, or is closed with
//! [`CLOSE_TOO_MANY_CONNECTIONS`].

use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::protocol::ClientMessage;
use crate::auth::limits::ConnectionPermit;
use crate::auth::{Access, MAX_UNAUTHENTICATED, Principal};

/// Close code: no valid credentials (bad token, no `auth` message in time, or another message first).
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
/// Close code: the JWT the connection authenticated with has expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4419;
/// Close code: the principal has as many connections open as it may.
pub const CLOSE_TOO_MANY_CONNECTIONS: u16 = 4429;

/// Why a socket was not admitted: a close code and its reason.
pub(super) type Refusal = (u16, String);

/// Waits for the `auth` message and checks its token. At most
/// [`MAX_UNAUTHENTICATED`] sockets wait at once; one more is closed with
/// [`CLOSE_TOO_MANY_CONNECTIONS`] at once.
pub(super) async fn first_message(socket: &mut WebSocket, access: &Access) -> Result<Principal, Refusal> {
    let Some(_waiting) = access.await_auth() else {
        return Err((
            CLOSE_TOO_MANY_CONNECTIONS,
            format!("{MAX_UNAUTHENTICATED} sockets are waiting to authenticate already; retry later"),
        ));
    };
    let deadline = Instant::now() + access.auth.ws_auth_timeout;
    let refuse = |reason: String| (CLOSE_UNAUTHENTICATED, reason);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| refuse(format!("no auth message within {} ms", access.auth.ws_auth_timeout.as_millis())))?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err(refuse("the first message must be {\"type\":\"auth\",\"token\":...}".into())),
            Some(Err(_)) | None => return Err(refuse("closed before authenticating".into())),
        };
        return match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Auth { token, .. }) => {
                access.auth.authenticate_token(&token).map_err(|e| refuse(e.to_string()))
            }
            _ => Err(refuse("the first message must be {\"type\":\"auth\",\"token\":...}".into())),
        };
    }
}

/// One of `principal`'s connection slots (`None`: unlimited, in dev mode).
pub(super) fn slot(access: &Access, principal: &Principal) -> Result<Option<ConnectionPermit>, Refusal> {
    access.open_connection(principal).map_err(|_| {
        (
            CLOSE_TOO_MANY_CONNECTIONS,
            format!("{} has {} connections open already", principal.name, access.limits.max_connections),
        )
    })
}

/// When the principal's credential expires, as a timer deadline.
pub(super) fn expiry(principal: &Principal) -> Option<Instant> {
    let expires = principal.expires?;
    let left = expires.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}
