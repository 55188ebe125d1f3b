//! `ws`: the WebSocket endpoint, `GET /api/v1/ws`.
//!
//! Owns one task per socket: it says `hello`, turns client messages into hub
//! subscriptions, and writes the frames the hub queues for it. Frames are the
//! hub's shared bytes; nothing is re-serialized per client. The protocol is in
//! `docs/protocol.md`.

mod protocol;

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::hub::{CLOSE_LAGGING, Connection, Hub, Topic};
use crate::model::Operation;
use crate::store::Store;
pub use protocol::PROTOCOL;
use protocol::{ClientMessage, ServerMessage};

/// Largest client message accepted, in bytes.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// WebSocket close code sent when the server shuts down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Serves one upgraded socket until either side closes it.
pub async fn serve(socket: WebSocket, hub: Arc<Hub>, store: Store, shutdown: CancellationToken) {
    let (connection, mut frames) = hub.connect();
    let (mut sink, mut stream) = socket.split();
    let hello = ServerMessage::Hello { protocol: PROTOCOL, seq: connection.hello_seq }.to_text();
    if sink.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    if sink.send(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                None => {
                    let (code, reason) = if connection.lagged() {
                        (CLOSE_LAGGING, "too far behind; reconnect and resume with since")
                    } else {
                        (CLOSE_GOING_AWAY, "server shutting down")
                    };
                    let _ = sink.send(close(code, reason)).await;
                    return;
                }
            },
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = handle(&connection, &store, &text)
                        && sink.send(Message::Text(reply.into())).await.is_err()
                    {
                        return;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let reply = error("bad_message", "binary frames are not part of the protocol; send JSON text");
                    if sink.send(Message::Text(reply.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            },
            () = shutdown.cancelled() => {
                let _ = sink.send(close(CLOSE_GOING_AWAY, "server shutting down")).await;
                return;
            }
        }
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

fn error(code: &str, message: impl Into<String>) -> String {
    ServerMessage::Error { code, message: message.into() }.to_text()
}

/// Handles one client text message; returns a direct reply, if any.
/// Snapshots are not replies: they travel through the hub's queue.
fn handle(connection: &Connection, store: &Store, text: &str) -> Option<String> {
    if text.len() > MAX_CLIENT_MESSAGE {
        return Some(error("too_large", format!("messages are limited to {MAX_CLIENT_MESSAGE} bytes")));
    }
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => {
            return Some(error("bad_message", format!("not a valid client message: {e}")));
        }
    };
    match message {
        ClientMessage::Ping => Some(ServerMessage::Pong.to_text()),
        ClientMessage::Subscribe { topics, since } => {
            let topics = match parse_topics(&topics) {
                Ok(topics) => topics,
                Err(reply) => return Some(reply),
            };
            let known = known_operations(store, &topics);
            connection.subscribe(&topics, since, &known);
            None
        }
        ClientMessage::Unsubscribe { topics } => match parse_topics(&topics) {
            Ok(topics) => {
                connection.unsubscribe(&topics);
                None
            }
            Err(reply) => Some(reply),
        },
    }
}

fn parse_topics(names: &[String]) -> Result<Vec<Topic>, String> {
    if names.is_empty() {
        return Err(error("bad_message", "topics must not be empty"));
    }
    names.iter().map(|n| n.parse::<Topic>().map_err(|e| error("unknown_topic", e.to_string()))).collect()
}

/// Operations named by `op:<id>` topics, read from the store, for snapshots
/// of operations the hub no longer holds in memory.
fn known_operations(store: &Store, topics: &[Topic]) -> Vec<Operation> {
    topics
        .iter()
        .filter_map(|t| match t {
            Topic::Op(id) => store.get(*id).ok().flatten(),
            Topic::Operations => None,
        })
        .collect()
}
