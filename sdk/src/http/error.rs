//! [`HttpError`]: why a request or its body failed, in words for the
//! operator and a kind for the plugin.

use std::fmt;

/// What kind of failure an [`HttpError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL cannot be requested (scheme, host, port).
    InvalidUrl,
    /// A header or another part of the request is malformed.
    InvalidRequest,
    /// The server's config grants this plugin no `net` rule for the host and
    /// port (wasi:http's `HTTP-request-denied`).
    Denied,
    /// Connecting, the first byte or the gap between chunks took longer than
    /// its timeout.
    Timeout,
    /// No connection: refused, the name does not resolve, the TLS handshake
    /// failed, or the connection broke.
    Connect,
    /// The server answered with something that is not valid HTTP.
    Protocol,
    /// The body is larger than the caller's limit.
    TooLarge,
    /// The operation was cancelled while the request waited
    /// ([`super::Request::cancel_on`]).
    Cancelled,
    /// There is no HTTP here: natively, outside a test harness that serves
    /// canned responses.
    Unavailable,
}

/// Why a request failed: an [`ErrorKind`] and a message that says what was
/// asked and what happened.
///
/// Like [`crate::Error`], it does not implement `std::error::Error`; that
/// lets it convert into [`crate::Error`] with `?`, a cancel into
/// [`crate::Error::Cancelled`] and everything else into a failure with its
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    kind: ErrorKind,
    message: String,
}

impl HttpError {
    /// An error of `kind` with `message`; also for canned failures in tests.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HttpError { kind, message: message.into() }
    }

    pub(crate) fn cancelled() -> Self {
        HttpError::new(ErrorKind::Cancelled, "cancelled while waiting for the server")
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What happened, for the operator.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<HttpError> for crate::Error {
    fn from(error: HttpError) -> Self {
        match error.kind {
            ErrorKind::Cancelled => crate::Error::Cancelled,
            _ => crate::Error::Failed(error.message),
        }
    }
}
