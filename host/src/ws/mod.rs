//! `ws`: the WebSocket endpoint, `GET /api/v1/ws`.
//!
//! Owns one task per socket: it says `hello`, turns client messages into hub
//! subscriptions (through the authorization hook), writes the frames the hub
//! queues for it (through its [`outbox`]: progress alone may wait a moment
//! for what follows it), refills the queue from the hub's coalesced backlog when the
//! connection lags, pings the peer and reaps it when it goes silent. Frames are
//! the hub's shared bytes; nothing is re-serialized per client. A client that
//! asks for it ([`Framing::Lines`]) gets each queued run as one text frame,
//! the same joined bytes as every other such client. The protocol is in
//! `docs/protocol.md`.

mod admit;
mod outbox;
mod protocol;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::hub::{Authorize, CLOSE_LAGGING, Connection, Hub, Principal, Topic};
use crate::model::Operation;
use crate::store::Store;
pub use admit::{CLOSE_TOKEN_EXPIRED, CLOSE_TOO_MANY_CONNECTIONS, CLOSE_UNAUTHENTICATED};
use outbox::Outbox;
pub use protocol::PROTOCOL;
use protocol::{ClientMessage, ServerMessage};

/// Largest client message answered with `too_large` instead of read, in bytes.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Largest frame the transport accepts at all; above it the socket is closed (1009).
pub const MAX_FRAME: usize = 1024 * 1024;
/// Most topics in one subscribe or unsubscribe.
pub const MAX_TOPICS: usize = 100;
/// Bad messages tolerated per connection; the next one closes it (1008).
pub const MAX_ERRORS: u32 = 20;
/// Close code: the server is shutting down or restarting (RFC 6455 "service
/// restart"): reconnect, to another node of a cluster, and resume with `since`.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
/// Close code: too many bad messages (RFC 6455 "policy violation").
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a frame over [`MAX_FRAME`] (RFC 6455 "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the peer was silent past the idle timeout.
pub const CLOSE_IDLE: u16 = 4001;

/// Socket settings.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How often the server pings.
    pub ping_interval: Duration,
    /// A peer silent (no frame, no pong) this long is closed.
    pub idle_timeout: Duration,
    /// Longest a single frame write may take before the peer counts as stalled.
    pub send_timeout: Duration,
    /// How long after a write a run of progress alone waits for what follows
    /// it, so waves of progress leave in few writes (see [`outbox`]); progress
    /// after a quiet spell, and zero, send at once.
    pub progress_delay: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            progress_delay: Duration::from_millis(25),
        }
    }
}

/// What one socket task needs.
#[derive(Clone)]
pub struct SocketContext {
    /// The fan-out hub.
    pub hub: Arc<Hub>,
    /// For snapshots of older operations and resumes past the ring.
    pub store: Store,
    /// The subscribe-path authorization hook.
    pub authorize: Arc<dyn Authorize>,
    /// Credentials and per-principal limits.
    pub access: Arc<Access>,
    /// Timings.
    pub config: WsConfig,
    /// Cancelled at server shutdown.
    pub shutdown: CancellationToken,
}

/// How messages map to WebSocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message per text frame (the default).
    OnePerFrame,
    /// Several messages per text frame, one per line (`?batch=true`).
    Lines,
}

/// Serves one upgraded socket until either side closes it. `principal` is
/// `None` when the upgrade request carried no credentials: the socket must
/// then authenticate with its first message (see [`admit`]).
pub async fn serve(mut socket: WebSocket, cx: SocketContext, principal: Option<Principal>, framing: Framing) {
    let admitted = match principal {
        Some(principal) => Ok(principal),
        None => admit::first_message(&mut socket, &cx.access).await,
    };
    let admitted = admitted.and_then(|p| admit::slot(&cx.access, &p).map(|permit| (p, permit)));
    let (principal, _permit) = match admitted {
        Ok(admitted) => admitted,
        Err((code, reason)) => {
            tracing::debug!(code, %reason, "WebSocket refused");
            let close = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            let _ = tokio::time::timeout(cx.config.send_timeout, socket.send(Message::Close(Some(close)))).await;
            return;
        }
    };
    let expiry = admit::expiry(&principal);
    let (connection, mut frames) = cx.hub.connect_as(principal.scope.clone());
    let mut subscribed = HashSet::new();
    let (mut sink, mut stream) = socket.split();
    let send_timeout = cx.config.send_timeout;
    let send = async |sink: &mut futures_util::stream::SplitSink<WebSocket, Message>, message: Message| {
        matches!(tokio::time::timeout(send_timeout, sink.send(message)).await, Ok(Ok(())))
    };
    let hello =
        ServerMessage::Hello { protocol: PROTOCOL, seq: connection.hello_seq, history: cx.store.history() }.to_text();
    if !send(&mut sink, Message::Text(hello.into())).await {
        return;
    }
    let mut ping = tokio::time::interval_at(Instant::now() + cx.config.ping_interval, cx.config.ping_interval);
    let mut last_heard = Instant::now();
    let mut errors = 0u32;
    let mut outbox = Outbox::new(cx.config.progress_delay);
    let (code, reason): (u16, &'static str) = loop {
        tokio::select! {
            run = frames.recv() => match run {
                Some(run) => {
                    if outbox.take(run, &mut frames) && !outbox.write(&mut sink, framing, send_timeout).await {
                        break (CLOSE_LAGGING, "stalled");
                    }
                    if frames.is_empty() && connection.lagging() {
                        connection.refill();
                    }
                }
                None => break match connection.closed_by_hub() {
                    Some(code) => (code, "too far behind; reconnect and resume with since"),
                    None => (CLOSE_SERVICE_RESTART, "server shutting down; reconnect (to another node of a cluster) and resume with since"),
                },
            },
            message = stream.next() => {
                last_heard = Instant::now();
                let mut request = None;
                let reply = match message {
                    Some(Ok(Message::Text(text))) => match cx.access.take_ws_message(&principal) {
                        Ok(()) => {
                            request = protocol::request_id(&text);
                            handle(&connection, &cx, &principal, &mut subscribed, &text).await
                        }
                        Err(wait) => Err(("rate_limited", format!(
                            "{} sends messages faster than its limit allows; this one was dropped, retry in {} ms",
                            principal.name,
                            wait.as_millis().max(1)
                        ))),
                    },
                    Some(Ok(Message::Binary(_))) => Err(("bad_message", "binary frames are not part of the protocol; send JSON text".to_owned())),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
                    Some(Err(e)) if too_big(&e) => break (CLOSE_TOO_BIG, "a frame over the 1 MiB limit"),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                };
                let reply = match reply {
                    Ok(reply) => reply,
                    Err((code, message)) => {
                        errors += 1;
                        if errors > MAX_ERRORS {
                            break (CLOSE_POLICY, "too many bad messages");
                        }
                        Some(ServerMessage::Error { code, message, id: request }.to_text())
                    }
                };
                if let Some(reply) = reply
                    && !send(&mut sink, Message::Text(reply.into())).await
                {
                    return;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > cx.config.idle_timeout {
                    break (CLOSE_IDLE, "no frame from the client within the idle timeout");
                }
                if !send(&mut sink, Message::Ping(Default::default())).await {
                    return;
                }
                if connection.lagging() {
                    connection.refill();
                }
            }
            () = sleep_until(outbox.due()) => {
                if !outbox.write(&mut sink, framing, send_timeout).await {
                    break (CLOSE_LAGGING, "stalled");
                }
            }
            () = cx.shutdown.cancelled() => break (CLOSE_SERVICE_RESTART, "server shutting down; reconnect (to another node of a cluster) and resume with since"),
            () = sleep_until(expiry) => break (CLOSE_TOKEN_EXPIRED, "the token has expired; reconnect with a fresh one"),
        }
    };
    if code == CLOSE_LAGGING {
        crate::telemetry::slow_consumer_closed();
    }
    let _ = send(&mut sink, Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))).await;
}

/// Whether the transport refused a frame for its size.
fn too_big(error: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<Error>())
        .is_some_and(|e| matches!(e, Error::Capacity(_)))
}

/// Completes at `deadline`, or never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

type Reply = Result<Option<String>, (&'static str, String)>;

/// Handles one client text message; returns a direct reply, if any.
/// Snapshots and replays are not replies: they travel through the hub's queue.
async fn handle(
    connection: &Connection,
    cx: &SocketContext,
    principal: &Principal,
    subscribed: &mut HashSet<Topic>,
    text: &str,
) -> Reply {
    if text.len() > MAX_CLIENT_MESSAGE {
        return Err(("too_large", format!("messages are limited to {MAX_CLIENT_MESSAGE} bytes")));
    }
    let message: ClientMessage =
        serde_json::from_str(text).map_err(|e| ("bad_message", format!("not a valid client message: {e}")))?;
    if let ClientMessage::Subscribe { id: Some(id), .. }
    | ClientMessage::Unsubscribe { id: Some(id), .. }
    | ClientMessage::Ping { id: Some(id) } = &message
        && !protocol::usable_id(id)
    {
        return Err(("bad_message", "id must be a string of at most 64 bytes, or a number".into()));
    }
    match message {
        ClientMessage::Ping { id } => Ok(Some(ServerMessage::Pong { id }.to_text())),
        ClientMessage::Subscribe { topics, since, id } => {
            let topics = parse_topics(&topics)?;
            if let Some(denied) = topics.iter().find(|t| !cx.authorize.may_subscribe(principal, t)) {
                return Err(("forbidden", format!("{denied} is outside the targets of {}", principal.name)));
            }
            let max = cx.access.limits.max_subscriptions;
            let added = topics.iter().filter(|t| !subscribed.contains(*t)).collect::<HashSet<_>>().len();
            if subscribed.len() + added > max {
                return Err((
                    "too_many_subscriptions",
                    format!(
                        "a connection may hold {max} topics; it holds {} (nothing was subscribed)",
                        subscribed.len()
                    ),
                ));
            }
            let known = known_operations(&cx.store, &topics).await;
            // An operation outside the scope is subscribed to like one that
            // does not exist: an empty snapshot, then nothing, ever.
            let hidden: Vec<_> = known.iter().filter(|op| !principal.sees(&op.target)).map(|op| op.id).collect();
            if !hidden.is_empty() {
                connection.hide(&hidden);
            }
            let known: Vec<Operation> = known.into_iter().filter(|op| principal.sees(&op.target)).collect();
            subscribed.extend(topics.iter().cloned());
            connection.subscribe(&topics, since, &known, &cx.store, id.as_ref()).await;
            Ok(None)
        }
        ClientMessage::Unsubscribe { topics, .. } => {
            let topics = parse_topics(&topics)?;
            for topic in &topics {
                subscribed.remove(topic);
            }
            connection.unsubscribe(&topics);
            Ok(None)
        }
        ClientMessage::Auth { .. } => {
            Err(("bad_message", "this connection is authenticated already; auth is only the first message".into()))
        }
    }
}

fn parse_topics(names: &[String]) -> Result<Vec<Topic>, (&'static str, String)> {
    if names.is_empty() || names.len() > MAX_TOPICS {
        return Err(("bad_message", format!("topics must list 1 to {MAX_TOPICS} topics")));
    }
    names.iter().map(|n| n.parse::<Topic>().map_err(|e| ("unknown_topic", e.to_string()))).collect()
}

/// Operations named by `op:<id>` topics, read from the store, for snapshots
/// of operations the hub no longer holds in memory.
async fn known_operations(store: &Store, topics: &[Topic]) -> Vec<Operation> {
    let mut known = Vec::new();
    for topic in topics {
        if let Topic::Op(id) = topic
            && let Ok(Some(op)) = store.get(*id).await
        {
            known.push(op);
        }
    }
    known
}
