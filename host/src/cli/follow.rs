//! Following topics over the WebSocket, as a client: subscribe, hand each
//! `snapshot` and `event` to the caller, and across a dropped connection
//! (a restart, a drain's 1012, a 4008) reconnect and resume with `since`,
//! so that the caller sees every event once and never a gap.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::remote::{ClientError, Remote, root_cause};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the follower keeps trying to reconnect before it gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// What [`Follower::next`] hands back.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A `snapshot` or `event` message, as the server sent it.
    Message(Value),
    /// The connection dropped; the follower is reconnecting (the reason says why).
    Reconnecting(String),
    /// Reconnected; what was missed has been replayed (or a snapshot follows).
    Resumed,
}

/// A subscription that survives reconnects.
pub(crate) struct Follower {
    remote: Remote,
    topics: Vec<String>,
    socket: Option<Socket>,
    /// The seq of the last event or snapshot handed out.
    seq: Option<u64>,
    /// The server's history id, from `hello`: a seq means something only within it.
    history: Option<String>,
    /// Set when the socket dropped and the caller has not been told yet.
    lost: Option<String>,
}

impl Follower {
    /// Connects and subscribes: from now (a snapshot first), or, with
    /// `since`, replaying every event after that seq.
    pub(crate) async fn connect(remote: &Remote, topics: Vec<String>, since: Option<u64>) -> Result<Self, ClientError> {
        let mut follower =
            Follower { remote: remote.clone(), topics, socket: None, seq: since, history: None, lost: None };
        follower.open().await?;
        Ok(follower)
    }

    /// The next snapshot or event, or a note that the connection is being re-made.
    pub(crate) async fn next(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some(reason) = self.lost.take() {
                self.socket = None;
                return Ok(Incoming::Reconnecting(reason));
            }
            let Some(socket) = self.socket.as_mut() else {
                self.reconnect().await?;
                return Ok(Incoming::Resumed);
            };
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value =
                        serde_json::from_str(&text).map_err(|_| self.not_opal("a frame that is not JSON"))?;
                    if let Some(incoming) = self.handle(message)? {
                        return Ok(incoming);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason = match frame {
                        Some(f) if u16::from(f.code) == 4401 => {
                            return Err(ClientError::Unauthorized {
                                server: self.remote.base().to_owned(),
                                detail: f.reason.to_string(),
                            });
                        }
                        Some(f) => format!("closed by the server ({} {})", u16::from(f.code), f.reason),
                        None => "closed by the server".to_owned(),
                    };
                    self.lost = Some(reason);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => self.lost = Some(root_cause(&e)),
                None => self.lost = Some("the connection ended".to_owned()),
            }
        }
    }

    /// Keeps snapshots and events; swallows hello, pong and resumed; an
    /// error from the server ends the follow.
    fn handle(&mut self, message: Value) -> Result<Option<Incoming>, ClientError> {
        match message.get("type").and_then(Value::as_str) {
            Some("snapshot") | Some("event") => {
                if let Some(seq) = message.get("seq").and_then(Value::as_u64) {
                    self.seq = Some(self.seq.map_or(seq, |s| s.max(seq)));
                }
                Ok(Some(Incoming::Message(message)))
            }
            Some("error") => {
                let text = message.get("message").and_then(Value::as_str).unwrap_or("error");
                let code = message.get("code").and_then(Value::as_str).unwrap_or("error");
                Err(if code == "forbidden" {
                    ClientError::Forbidden(text.to_owned())
                } else {
                    self.not_opal(&format!("the WebSocket error {code}: {text}"))
                })
            }
            _ => Ok(None),
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
        let mut delay = Duration::from_millis(250);
        loop {
            match self.open().await {
                Ok(()) => return Ok(()),
                Err(e @ (ClientError::Unauthorized { .. } | ClientError::Forbidden(_))) => return Err(e),
                Err(e) if tokio::time::Instant::now() + delay > deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Connects, reads `hello`, and subscribes: with `since` when this is a
    /// reconnect to the same history, so the server replays what was missed.
    async fn open(&mut self) -> Result<(), ClientError> {
        let mut request = self
            .remote
            .ws_url()
            .into_client_request()
            .map_err(|e| ClientError::Usage(format!("--server gives a bad WebSocket URL: {e}")))?;
        if let Some(token) = self.remote.token() {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Usage("the token holds characters a header cannot".to_owned()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| match e {
            tungstenite::Error::Http(response) if response.status() == 401 || response.status() == 403 => {
                ClientError::Unauthorized {
                    server: self.remote.base().to_owned(),
                    detail: format!("{} on the WebSocket upgrade", response.status()),
                }
            }
            other => ClientError::Unreachable { server: self.remote.base().to_owned(), cause: root_cause(&other) },
        })?;
        let hello = loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => break serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 4401 => {
                    return Err(ClientError::Unauthorized {
                        server: self.remote.base().to_owned(),
                        detail: f.reason.to_string(),
                    });
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        server: self.remote.base().to_owned(),
                        cause: root_cause(&e),
                    });
                }
                _ => return Err(self.not_opal("no hello on the WebSocket")),
            }
        };
        if hello.get("type").and_then(Value::as_str) != Some("hello") {
            return Err(self.not_opal("no hello on the WebSocket"));
        }
        let history = hello.get("history").and_then(Value::as_str).map(str::to_owned);
        let since = match (&self.history, &history) {
            // The first connection: the caller's `since`, if it gave one.
            (None, _) => self.seq,
            // A reconnect to the same data: resume where we were.
            (Some(before), Some(now)) if before == now => self.seq,
            // Another history (the data was replaced): seqs mean nothing here.
            _ => None,
        };
        self.history = history;
        let mut subscribe = json!({"type": "subscribe", "topics": self.topics});
        if let Some(since) = since {
            subscribe["since"] = json!(since);
        }
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| ClientError::Unreachable { server: self.remote.base().to_owned(), cause: root_cause(&e) })?;
        self.socket = Some(socket);
        Ok(())
    }

    fn not_opal(&self, what: &str) -> ClientError {
        ClientError::NotOpal { server: self.remote.base().to_owned(), what: what.to_owned() }
    }
}
