//! HTTP GET for plugins, over wasi:http, where the operator granted it.
//!
//! ```no_run
//! # use opal_sdk::prelude::*;
//! # use opal_sdk::http;
//! # fn run(ctx: &Context) -> Result<Outcome> {
//! let mut response = http::get("https://example.com/release.zip")
//!     .header("accept", "application/zip")
//!     .timeout(std::time::Duration::from_secs(20))
//!     .cancel_on(ctx) // waiting ends with `Cancelled` once the operator cancels
//!     .send()?;
//! let (status, length) = (response.status(), response.content_length());
//! while let Some(chunk) = response.chunk()? {
//!     // write it, hash it, report progress...
//! #   let _ = (chunk, status, length);
//! }
//! # Ok(Outcome::default()) }
//! ```
//!
//! A request reaches only a `host:port` that the server's config grants the
//! plugin (`[types.<name>.grants] net`); any other fails with
//! [`ErrorKind::Denied`] before a connection is made. Redirects are not
//! followed: a 3xx is a response like any other.
//!
//! The body streams: [`Response::chunk`] hands over what has arrived, so a
//! plugin can report progress and check for a cancel between chunks.
//! With [`Request::cancel_on`], waiting for the response or for the next
//! chunk also wakes up for a cancel (within [`crate::context::CANCEL_POLL`]),
//! so a stalled server cannot hold a cancelled operation until its timeout.
//!
//! [`HttpError`] converts into the run's [`crate::Error`] with `?`, a cancel
//! into [`crate::Error::Cancelled`]; its [`ErrorKind`] says what went wrong
//! for plugins that report each case in their own words.
//!
//! In a native test there is no network: a [`crate::testing::Harness`] serves
//! canned responses ([`crate::testing::Harness::http`]) and records the
//! requests; outside a harness every request fails with
//! [`ErrorKind::Unavailable`].

mod error;
mod url;
#[cfg(target_family = "wasm")]
mod wasi;

use std::time::Duration;

pub use self::error::{ErrorKind, HttpError};
pub use self::url::{Scheme, Url};
use crate::Context;

/// Starts a GET request for `url` (`http://` or `https://`).
pub fn get(url: &str) -> Request {
    Request { url: url.to_owned(), headers: Vec::new(), timeouts: Timeouts::default(), cancel: None }
}

/// How long each stage of a request may take. Each one that passes fails
/// the request with [`ErrorKind::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the TCP (and TLS) connection is up.
    pub connect: Duration,
    /// From the request sent until the response's first byte.
    pub first_byte: Duration,
    /// Between two chunks of the body.
    pub between_bytes: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 30 s to the first byte, 30 s between chunks: generous
    /// for a service that works, short next to an operation's timeout.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(30),
            between_bytes: Duration::from_secs(30),
        }
    }
}

/// A GET request being built; [`Request::send`] sends it.
#[derive(Clone)]
pub struct Request {
    url: String,
    headers: Vec<(String, String)>,
    timeouts: Timeouts,
    /// Whose cancel interrupts waiting, if any.
    cancel: Option<Context>,
}

impl Request {
    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets all three timeouts to `limit`.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeouts = Timeouts { connect: limit, first_byte: limit, between_bytes: limit };
        self
    }

    /// Sets the timeouts one by one.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Makes waiting for the response and for each chunk end with
    /// [`ErrorKind::Cancelled`] once `ctx`'s operation is cancelled.
    pub fn cancel_on(mut self, ctx: &Context) -> Self {
        self.cancel = Some(ctx.clone());
        self
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers added, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The timeouts it will be sent with.
    pub fn timeouts_set(&self) -> Timeouts {
        self.timeouts
    }

    /// Sends the request and waits for the response's status and headers.
    pub fn send(self) -> Result<Response, HttpError> {
        let url = Url::parse(&self.url)?;
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        let cancelled = self.cancel.clone();
        let is_cancelled = || cancelled.as_ref().is_some_and(Context::cancelled);
        if is_cancelled() {
            return Err(HttpError::cancelled());
        }
        let watch: Option<&dyn Fn() -> bool> = self.cancel.as_ref().map(|_| &is_cancelled as &dyn Fn() -> bool);
        let head = send(&self, &url, watch)?;
        Ok(Response { status: head.status, headers: head.headers, body: head.body, cancel: self.cancel, ended: false })
    }
}

/// Rejects header names and values that would not survive the wire.
fn check_header(name: &str, value: &str) -> Result<(), HttpError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(HttpError::new(ErrorKind::InvalidRequest, format!("invalid header name {name:?}")));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(HttpError::new(
            ErrorKind::InvalidRequest,
            format!("the value of header {name:?} has a line break"),
        ));
    }
    Ok(())
}

/// A response whose status and headers have arrived; the body streams
/// through [`Response::chunk`].
pub struct Response {
    status: u16,
    /// Names lowercased, in the order received.
    headers: Vec<(String, String)>,
    body: Box<dyn Body>,
    cancel: Option<Context>,
    /// Set once the body has ended, so later calls say so again.
    ended: bool,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response").field("status", &self.status).field("headers", &self.headers).finish()
    }
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Every header, names in lowercase.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body's length as the `Content-Length` header announces it.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// The next chunk of the body, as it arrives (at most [`MAX_CHUNK`]
    /// bytes); `None` once it has ended. Fails if the connection breaks, the
    /// server pauses longer than the between-bytes timeout, or (with
    /// [`Request::cancel_on`]) the operation is cancelled.
    pub fn chunk(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        if self.ended {
            return Ok(None);
        }
        let cancel = self.cancel.clone();
        let is_cancelled = || cancel.as_ref().is_some_and(Context::cancelled);
        if is_cancelled() {
            return Err(HttpError::cancelled());
        }
        let watch: Option<&dyn Fn() -> bool> = cancel.as_ref().map(|_| &is_cancelled as &dyn Fn() -> bool);
        let chunk = self.body.read(MAX_CHUNK, watch)?;
        self.ended = chunk.is_none();
        Ok(chunk)
    }

    /// The whole body, failing with [`ErrorKind::TooLarge`] past `limit` bytes.
    pub fn bytes(mut self, limit: usize) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk()? {
            if body.len() + chunk.len() > limit {
                return Err(HttpError::new(ErrorKind::TooLarge, format!("the body is larger than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The whole body as text (invalid UTF-8 replaced), at most `limit` bytes.
    pub fn text(self, limit: usize) -> Result<String, HttpError> {
        self.bytes(limit).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// The most one [`Response::chunk`] returns.
pub const MAX_CHUNK: usize = 64 * 1024;

/// The status line and headers of a response, with its body to come.
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Box<dyn Body>,
}

/// A response body as it arrives: wasi:http in a component, canned bytes in
/// the test kit.
pub(crate) trait Body {
    /// Up to `max` bytes, `None` at the end. `cancelled`, if given, is asked
    /// while waiting; once it says yes the read fails with `Cancelled`.
    fn read(&mut self, max: usize, cancelled: Option<&dyn Fn() -> bool>) -> Result<Option<Vec<u8>>, HttpError>;
}

#[cfg(target_family = "wasm")]
fn send(request: &Request, url: &Url, cancelled: Option<&dyn Fn() -> bool>) -> Result<Head, HttpError> {
    wasi::send(request, url, cancelled)
}

#[cfg(not(target_family = "wasm"))]
fn send(request: &Request, url: &Url, _cancelled: Option<&dyn Fn() -> bool>) -> Result<Head, HttpError> {
    crate::testing::http::send(request, url)
}
