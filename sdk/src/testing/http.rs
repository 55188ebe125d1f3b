//! Canned HTTP for native tests: [`Harness::http`] serves a [`Reply`] per
//! URL to [`crate::http`] requests made during the run, and the run keeps
//! every request sent ([`Run::http_requests`]).
//!
//! ```
//! use opal_sdk::http::{ErrorKind, HttpError};
//! use opal_sdk::testing::{Harness, Reply};
//!
//! let harness = Harness::new()
//!     .http("http://repo.local/app.zip", Reply::ok(vec![7u8; 100_000]).chunks(10_000))
//!     .http("http://repo.local/gone", Reply::status(404))
//!     .http("http://down.local/", Reply::error(HttpError::new(ErrorKind::Connect, "connection refused")));
//! # let run = harness.run_fn(|_ctx| {
//! #     let mut r = opal_sdk::http::get("http://repo.local/app.zip").send()?;
//! #     let mut n = 0;
//! #     while let Some(c) = r.chunk()? { assert_eq!(c.len(), 10_000); n += 1; }
//! #     assert_eq!(n, 10);
//! #     assert_eq!(opal_sdk::http::get("http://repo.local/gone").send()?.status(), 404);
//! #     let e = opal_sdk::http::get("http://down.local/").send().unwrap_err();
//! #     assert_eq!(e.kind(), ErrorKind::Connect);
//! #     Ok(opal_sdk::Outcome::default())
//! # });
//! # run.completed();
//! # assert_eq!(run.http_requests().len(), 3);
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::{Harness, Run};
use crate::http::{Body, ErrorKind, Head, HttpError, Request, Timeouts, Url};

/// A canned response for [`Harness::http`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// `Err`: the request fails before any response.
    head: Result<u16, HttpError>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The size of the chunks the body arrives in.
    chunk: usize,
    /// Whether a `content-length` header is added.
    length: bool,
    /// The body breaks off with this error after this many bytes.
    fail_after: Option<(usize, HttpError)>,
}

impl Reply {
    /// A response with `status` and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            head: Ok(status),
            headers: Vec::new(),
            body: Vec::new(),
            chunk: 16 * 1024,
            length: true,
            fail_after: None,
        }
    }

    /// A 200 response with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::status(200).body(body)
    }

    /// The request fails with `error` (refused, timed out, denied...) before
    /// any response arrives.
    pub fn error(error: HttpError) -> Reply {
        Reply { head: Err(error), ..Reply::status(0) }
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The body arrives in chunks of `size` bytes (16 KiB unless set): one
    /// [`crate::http::Response::chunk`] call each.
    pub fn chunks(mut self, size: usize) -> Reply {
        self.chunk = size.max(1);
        self
    }

    /// Sends no `content-length` header, as a streamed (chunked) body does.
    pub fn without_length(mut self) -> Reply {
        self.length = false;
        self
    }

    /// The body breaks off with `error` once `bytes` of it have arrived.
    pub fn fail_after(mut self, bytes: usize, error: HttpError) -> Reply {
        self.fail_after = Some((bytes, error));
        self
    }
}

/// A request the plugin sent during a test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// The URL, as the plugin gave it.
    pub url: String,
    /// The headers it added.
    pub headers: Vec<(String, String)>,
    /// The timeouts it set.
    pub timeouts: Timeouts,
}

impl Harness {
    /// Serves `reply` to every GET of exactly `url` during the run. A request
    /// for a URL with no reply fails with [`ErrorKind::Unavailable`], naming
    /// the URLs that have one.
    pub fn http(mut self, url: &str, reply: Reply) -> Self {
        self.http.retain(|(u, _)| u != url);
        self.http.push((url.to_owned(), reply));
        self
    }
}

impl Run {
    /// Every HTTP request the plugin sent, in order.
    pub fn http_requests(&self) -> &[SentRequest] {
        &self.http_requests
    }
}

/// The replies and the requests of the run on this thread.
#[derive(Default)]
struct Fake {
    replies: Vec<(String, Reply)>,
    sent: Vec<SentRequest>,
}

thread_local! {
    /// The harness run on this thread, if any: plugins run natively on the
    /// test's thread, and each test has its own.
    static FAKE: RefCell<Option<Rc<RefCell<Fake>>>> = const { RefCell::new(None) };
}

/// Serves `replies` on this thread until the guard is finished or dropped.
pub(super) fn install(replies: &[(String, Reply)]) -> Installed {
    let fake = Rc::new(RefCell::new(Fake { replies: replies.to_vec(), sent: Vec::new() }));
    let previous = FAKE.with(|f| f.replace(Some(fake.clone())));
    Installed { fake, previous }
}

/// The fake of one run, in place until dropped.
pub(super) struct Installed {
    fake: Rc<RefCell<Fake>>,
    previous: Option<Rc<RefCell<Fake>>>,
}

impl Installed {
    /// Takes the fake away and returns the requests sent meanwhile.
    pub(super) fn finish(self) -> Vec<SentRequest> {
        std::mem::take(&mut self.fake.borrow_mut().sent)
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        FAKE.with(|f| f.replace(previous));
    }
}

/// [`crate::http`]'s transport outside a component.
#[cfg_attr(target_family = "wasm", allow(dead_code))]
pub(crate) fn send(request: &Request, url: &Url) -> Result<Head, HttpError> {
    let Some(fake) = FAKE.with(|f| f.borrow().clone()) else {
        return Err(HttpError::new(
            ErrorKind::Unavailable,
            format!(
                "GET {url}: HTTP exists only inside the Opal sandbox; in a native test, \
                 serve a canned reply with opal_sdk::testing::Harness::http"
            ),
        ));
    };
    let mut fake = fake.borrow_mut();
    fake.sent.push(SentRequest {
        url: request.url().to_owned(),
        headers: request.headers().to_vec(),
        timeouts: request.timeouts_set(),
    });
    let Some((_, reply)) = fake.replies.iter().find(|(u, _)| u == request.url()) else {
        let known: Vec<&str> = fake.replies.iter().map(|(u, _)| u.as_str()).collect();
        return Err(HttpError::new(
            ErrorKind::Unavailable,
            format!("GET {}: the test harness has no reply for this URL (it has: {known:?})", request.url()),
        ));
    };
    let status = reply.head.clone()?;
    let mut headers = reply.headers.clone();
    if reply.length {
        headers.push(("content-length".to_owned(), reply.body.len().to_string()));
    }
    let chunks = reply.body.chunks(reply.chunk).map(<[u8]>::to_vec).collect();
    let body = CannedBody { chunks, sent: 0, fail_after: reply.fail_after.clone() };
    Ok(Head { status, headers, body: Box::new(body) })
}

struct CannedBody {
    chunks: VecDeque<Vec<u8>>,
    sent: usize,
    fail_after: Option<(usize, HttpError)>,
}

impl Body for CannedBody {
    fn read(&mut self, max: usize, _cancelled: Option<&dyn Fn() -> bool>) -> Result<Option<Vec<u8>>, HttpError> {
        if let Some((after, error)) = &self.fail_after
            && self.sent >= *after
        {
            return Err(error.clone());
        }
        let Some(mut chunk) = self.chunks.pop_front() else { return Ok(None) };
        let mut limit = max;
        if let Some((after, _)) = &self.fail_after {
            limit = limit.min(after - self.sent);
        }
        if chunk.len() > limit {
            let rest = chunk.split_off(limit);
            self.chunks.push_front(rest);
        }
        self.sent += chunk.len();
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn outside_a_harness_requests_fail_and_say_why() {
        let error = http::get("http://example.com/").send().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.message().contains("HTTP exists only inside the Opal sandbox"), "{error}");
    }

    #[test]
    fn a_broken_body_breaks_where_it_was_told() {
        let reply = Reply::ok(vec![1u8; 100]).chunks(40).fail_after(50, HttpError::new(ErrorKind::Connect, "reset"));
        let run = Harness::new().http("http://h/", reply).run_fn(|_| {
            let mut response = http::get("http://h/").send()?;
            assert_eq!(response.content_length(), Some(100));
            assert_eq!(response.chunk()?.map(|c| c.len()), Some(40));
            assert_eq!(response.chunk()?.map(|c| c.len()), Some(10), "cut at the break");
            Err(response.chunk().unwrap_err().into())
        });
        assert_eq!(run.failed(), "reset");
    }

    #[test]
    fn a_cancel_while_waiting_is_a_cancel() {
        let reply = Reply::ok(vec![1u8; 100]).chunks(10).without_length();
        let run = Harness::new().http("http://h/", reply).cancel_after_progress(1).run_fn(|ctx| {
            let mut response = http::get("http://h/").cancel_on(ctx).send()?;
            assert_eq!(response.content_length(), None);
            while let Some(chunk) = response.chunk()? {
                ctx.progress(10, &format!("{} bytes", chunk.len()));
            }
            Ok(crate::Outcome::default())
        });
        run.assert_cancelled();
        assert_eq!(run.percents(), [10]);
        assert_eq!(run.http_requests()[0].url, "http://h/");
    }
}
