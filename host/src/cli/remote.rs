//! The client side of the HTTP API: which server, which token, and one
//! typed error for everything that can go wrong talking to it.
//!
//! Every client subcommand (`opal run`, `opal ops`, `opal schedules`,
//! `opal plugins`) takes [`RemoteArgs`] and talks through a [`Remote`].

use std::process::ExitCode;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The exit codes of the client subcommands (documented in docs/cli.md).
pub(crate) mod exit {
    /// Done; for `opal run`, the operation completed.
    pub(crate) const OK: u8 = 0;
    /// The operation failed (or was interrupted and not retried).
    pub(crate) const FAILED: u8 = 1;
    /// The server refused the request (400, 404, 409, 429, 503…), with its reasons.
    pub(crate) const REFUSED: u8 = 2;
    /// The server could not be reached, refused the token, or answered
    /// something that is not Opal's API.
    pub(crate) const UNREACHABLE: u8 = 3;
    /// The operation was cancelled (128 + SIGINT, as shells report Ctrl-C).
    pub(crate) const CANCELLED: u8 = 130;
}

/// `--server` and `--token`, shared by every client subcommand.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct RemoteArgs {
    /// The Opal server's base URL.
    #[arg(long, env = "OPAL_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub(crate) server: String,
    /// An API token or JWT (none is needed by a dev-mode server).
    #[arg(long, env = "OPAL_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
}

/// Why a request got no answer it could use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No connection, or no answer in time.
    #[error("cannot reach the Opal server at {server}: {cause} (set --server or OPAL_SERVER)")]
    Unreachable {
        /// The base URL tried.
        server: String,
        /// What the connection attempt said.
        cause: String,
    },
    /// 401, or 403 for the request as a whole.
    #[error("the server at {server} refused the token: {detail} (set --token or OPAL_TOKEN)")]
    Unauthorized {
        /// The base URL.
        server: String,
        /// The server's `detail`.
        detail: String,
    },
    /// 403: the token is good but its role or targets do not allow this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Any other error answer, as the server's problem document says it.
    #[error("{}", Problem::describe(.0))]
    Refused(Problem),
    /// A request this client will not send as given (a `-p` value that its
    /// params schema cannot take, an unreadable params file).
    #[error("{0}")]
    Usage(String),
    /// An answer that is not what Opal's API sends.
    #[error("the server at {server} answered {what}; is it an Opal server?")]
    NotOpal {
        /// The base URL.
        server: String,
        /// What came back.
        what: String,
    },
}

impl ClientError {
    /// The exit code this error ends the command with.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused(_) | ClientError::Forbidden(_) | ClientError::Usage(_) => exit::REFUSED,
            ClientError::Unreachable { .. } | ClientError::Unauthorized { .. } | ClientError::NotOpal { .. } => {
                exit::UNREACHABLE
            }
        }
    }
}

/// An RFC 9457 problem document, as the server sends every error.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Problem {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The kind, for people.
    #[serde(default)]
    pub(crate) title: String,
    /// What went wrong.
    #[serde(default)]
    pub(crate) detail: String,
    /// Each field's problem (400).
    #[serde(default)]
    pub(crate) errors: Vec<FieldProblem>,
    /// The operation a 409 is about.
    #[serde(default)]
    pub(crate) operation: Option<Value>,
}

/// One field's problem in a 400.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct FieldProblem {
    /// The field, as a JSON Pointer without its leading slash (`params/steps`).
    pub(crate) field: String,
    /// Why it is refused.
    pub(crate) message: String,
}

impl Problem {
    /// One line, then a line per field error, then the operation a 409 names.
    fn describe(&self) -> String {
        let mut text = format!("{} {}: {}", self.status, self.title, self.detail);
        for e in &self.errors {
            text.push_str(&format!("\n  {}: {}", e.field, e.message));
        }
        if let Some(op) = &self.operation {
            let field = |k: &str| op.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
            text.push_str(&format!(
                "\n  operation {} ({} on {}) is {}: {}",
                field("id"),
                field("type"),
                field("target"),
                field("status"),
                field("message")
            ));
        }
        text
    }
}

/// A server to talk to.
#[derive(Clone)]
pub(crate) struct Remote {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Remote {
    /// Checks the URL; nothing is sent yet.
    pub(crate) fn new(args: &RemoteArgs) -> anyhow::Result<Self> {
        let base = args.server.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Usage(format!("--server {base:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientError::Usage(format!("--server {base:?} must start with http:// or https://")).into());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("opal-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let token = args.token.clone().filter(|t| !t.trim().is_empty());
        Ok(Remote { http, base, token })
    }

    /// The base URL, as given.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The token, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The WebSocket URL (`ws://…/api/v1/ws`, `wss://` for https).
    pub(crate) fn ws_url(&self) -> String {
        let rest = self.base.strip_prefix("https://").map(|r| format!("wss://{r}"));
        let url = rest.unwrap_or_else(|| format!("ws://{}", self.base.trim_start_matches("http://")));
        format!("{url}/api/v1/ws")
    }

    /// `GET path` (with its query), decoded.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, None).await.and_then(|(_, v)| self.decode(v))
    }

    /// `POST path` with a JSON body (or none); the status and the decoded answer.
    pub(crate) async fn post(&self, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), ClientError> {
        self.send(Method::POST, path, body).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, path, None).await.map(|_| ())
    }

    fn decode<T: DeserializeOwned>(&self, value: Value) -> Result<T, ClientError> {
        serde_json::from_value(value).map_err(|e| self.not_opal(format!("JSON of another shape ({e})")))
    }

    fn not_opal(&self, what: String) -> ClientError {
        ClientError::NotOpal { server: self.base.clone(), what }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { server: self.base.clone(), cause: root_cause(&e) })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable { server: self.base.clone(), cause: root_cause(&e) })?;
        if status == StatusCode::NO_CONTENT {
            return Ok((status, Value::Null));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| self.not_opal(format!("{status} with a body that is not JSON")))?;
        if status.is_success() {
            return Ok((status, value));
        }
        let problem: Problem =
            serde_json::from_value(value).map_err(|_| self.not_opal(format!("{status} without a problem document")))?;
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized { server: self.base.clone(), detail: problem.detail },
            StatusCode::FORBIDDEN => ClientError::Forbidden(problem.detail),
            _ => ClientError::Refused(problem),
        })
    }
}

/// The innermost cause of a transport error, which says what happened
/// ("Connection refused (os error 111)") where the outer ones say only where.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() { e.to_string() } else { text }
}

/// Runs a client command: its error is one line on stderr and the exit code
/// that [`ClientError::exit_code`] gives (3 for any other error, such as a
/// WebSocket that fails for good).
pub(crate) fn finish(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e.downcast_ref::<ClientError>().map_or(exit::UNREACHABLE, ClientError::exit_code);
            ExitCode::from(code)
        }
    }
}

/// Percent-encodes one path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
