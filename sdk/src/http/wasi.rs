//! The component side: a GET over wasi:http 0.2 (`wasi:http/outgoing-handler`),
//! through the `wasip2` crate's bindings.
//!
//! Waiting is a `wasi:io/poll` on the response (or the body stream) and, when
//! a cancel should wake us, a [`CANCEL_POLL`] timer next to it: the host
//! serves both asynchronously, so a waiting plugin holds no thread.

use std::time::Duration;

use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{self as wit, ErrorCode};
use wasip2::io::poll::{Pollable, poll};
use wasip2::io::streams::{InputStream, StreamError};

use super::{Body, ErrorKind, Head, HttpError, Request, Scheme, Url};
use crate::context::CANCEL_POLL;

pub(super) fn send(request: &Request, url: &Url, cancelled: Option<&dyn Fn() -> bool>) -> Result<Head, HttpError> {
    let target = format!("GET {url}");
    let invalid = |what: &str| HttpError::new(ErrorKind::InvalidRequest, format!("{target}: {what}"));
    let fields: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
    let headers = wit::Fields::from_list(&fields).map_err(|e| invalid(&format!("the headers are refused ({e:?})")))?;
    let outgoing = wit::OutgoingRequest::new(headers);
    let scheme = match url.scheme {
        Scheme::Http => wit::Scheme::Http,
        Scheme::Https => wit::Scheme::Https,
    };
    outgoing.set_scheme(Some(&scheme)).map_err(|()| invalid("the scheme is refused"))?;
    outgoing.set_authority(Some(&url.authority())).map_err(|()| invalid("the host is refused"))?;
    outgoing.set_path_with_query(Some(&url.path_and_query)).map_err(|()| invalid("the path is refused"))?;

    let timeouts = request.timeouts;
    let options = wit::RequestOptions::new();
    // A host that does not support a timeout refuses to set it; the
    // operation's own timeout still bounds the request then.
    let _ = options.set_connect_timeout(Some(nanos(timeouts.connect)));
    let _ = options.set_first_byte_timeout(Some(nanos(timeouts.first_byte)));
    let _ = options.set_between_bytes_timeout(Some(nanos(timeouts.between_bytes)));

    let describe = |code: ErrorCode| describe(&target, url, request, code);
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(describe)?;
    wait(&pending.subscribe(), cancelled)?;
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(describe(code)),
        Some(Err(())) | None => return Err(HttpError::new(ErrorKind::Protocol, format!("{target}: no response"))),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let body = response.consume().map_err(|()| invalid("the body was taken already"))?;
    let stream = body.stream().map_err(|()| invalid("the body stream was taken already"))?;
    let body = WasiBody { target, between_bytes: timeouts.between_bytes, stream: Some(stream), body: Some(body) };
    Ok(Head { status, headers, body: Box::new(body) })
}

/// The body of a response. The stream is a child of the body resource, so it
/// is dropped first; the fields are options so `Drop` can order that.
struct WasiBody {
    target: String,
    between_bytes: Duration,
    stream: Option<InputStream>,
    body: Option<wit::IncomingBody>,
}

impl Body for WasiBody {
    fn read(&mut self, max: usize, cancelled: Option<&dyn Fn() -> bool>) -> Result<Option<Vec<u8>>, HttpError> {
        let Some(stream) = &self.stream else { return Ok(None) };
        loop {
            match stream.read(max as u64) {
                Ok(bytes) if !bytes.is_empty() => return Ok(Some(bytes)),
                Ok(_) => wait(&stream.subscribe(), cancelled)?,
                Err(StreamError::Closed) => {
                    self.stream = None;
                    if let Some(body) = self.body.take() {
                        // Trailers, if any, are of no interest; finishing
                        // only releases the body.
                        drop(wit::IncomingBody::finish(body));
                    }
                    return Ok(None);
                }
                Err(StreamError::LastOperationFailed(error)) => {
                    let error = match wit::http_error_code(&error) {
                        Some(ErrorCode::ConnectionReadTimeout) => HttpError::new(
                            ErrorKind::Timeout,
                            format!("{}: the body paused longer than {}", self.target, seconds(self.between_bytes)),
                        ),
                        Some(code) => {
                            HttpError::new(kind(&code), format!("{}: the body broke off: {code}", self.target))
                        }
                        None => HttpError::new(
                            ErrorKind::Connect,
                            format!("{}: the body broke off: {}", self.target, error.to_debug_string()),
                        ),
                    };
                    return Err(error);
                }
            }
        }
    }
}

impl Drop for WasiBody {
    fn drop(&mut self) {
        self.stream.take();
        self.body.take();
    }
}

/// Blocks until `ready` is, asking `cancelled` every [`CANCEL_POLL`].
fn wait(ready: &Pollable, cancelled: Option<&dyn Fn() -> bool>) -> Result<(), HttpError> {
    let Some(cancelled) = cancelled else {
        ready.block();
        return Ok(());
    };
    loop {
        let timer = monotonic_clock::subscribe_duration(nanos(CANCEL_POLL));
        let woke = poll(&[ready, &timer]);
        if woke.contains(&0) {
            return Ok(());
        }
        if cancelled() {
            return Err(HttpError::cancelled());
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64()).trim_end_matches('0').trim_end_matches('.').to_owned() + " s"
}

/// The wasi:http error `code` for `GET url`, in words.
fn describe(target: &str, url: &Url, request: &Request, code: ErrorCode) -> HttpError {
    let hostport = format!("{}:{}", url.host, url.port_or_default());
    let t = request.timeouts;
    let message = match &code {
        ErrorCode::HttpRequestDenied => format!(
            "{target}: denied: this plugin's net grant does not allow {hostport} (HTTP-request-denied; \
             the operator grants it under [types.<name>.grants] net)"
        ),
        ErrorCode::ConnectionRefused => format!("{target}: connection refused by {hostport}"),
        ErrorCode::ConnectionTimeout => format!("{target}: no connection to {hostport} within {}", seconds(t.connect)),
        ErrorCode::ConnectionReadTimeout => {
            format!("{target}: no response from {hostport} within {}", seconds(t.first_byte))
        }
        ErrorCode::DnsError(payload) => {
            let why = payload.rcode.as_deref().unwrap_or("no such host");
            format!("{target}: cannot resolve {}: {why}", url.host)
        }
        other => format!("{target}: {other}"),
    };
    HttpError::new(kind(&code), message)
}

fn kind(code: &ErrorCode) -> ErrorKind {
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => ErrorKind::Denied,
        ErrorCode::DnsTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => ErrorKind::Timeout,
        ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => ErrorKind::Connect,
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestUriTooLong => ErrorKind::InvalidUrl,
        _ => ErrorKind::Protocol,
    }
}
