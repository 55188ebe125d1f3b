//! `http-check`: does an HTTP endpoint answer as expected? A GET through
//! `opal_sdk::http` (wasi:http, under the operator's `net` grant), then the
//! status against `expect_status` (an exact code, or any 200-399) and the
//! body against `body_contains`.
//!
//! Its details say what was seen (status, latency, body size, content type)
//! next to what was expected, so the dashboard shows both; a failure names
//! every expectation that failed and what came instead. Redirects are not
//! followed: a 3xx passes the default expectation, and `location` is shown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opal_sdk::http::{self, HttpError, Url};
use opal_sdk::prelude::*;

/// What to request and what to expect.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The URL to GET: `http://` or `https://`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// The status that counts as success; without it, any 200-399.
    #[serde(default)]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<u16>,
    /// Text the body must contain (case-sensitive).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub body_contains: Option<String>,
    /// Request headers, e.g. `{"authorization": "Bearer ..."}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long connecting, the first byte, and each pause in the body may
    /// take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 100, max = 300000))]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// The most of a body that is read: past this the check stops reading and
/// says so (`body_truncated`), rather than spend the operation's time on it.
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// The details: what was asked, what was seen, what failed.
#[derive(Debug, Default, Serialize)]
struct Report {
    url: String,
    /// `200-399` or the exact code expected.
    expected_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_contains: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// Until the status and headers arrived, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// Until the body ended, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    total_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    body_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    /// Where a 3xx points.
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    /// Whether the body contained `body_contains`.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_matched: Option<bool>,
    /// Each expectation that failed, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<String>,
    /// Why the request itself failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The plugin.
pub struct HttpCheck;

impl Plugin for HttpCheck {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("http-check", env!("CARGO_PKG_VERSION"), "HTTP check")
            .description("GETs a URL and checks its status (default 200-399) and, optionally, a text in its body.")
            .timeout(Duration::from_secs(600))
            .retry_safe()
    }

    fn validate(p: &Params) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Err(e) = Url::parse(&p.url) {
            errors.push(FieldError::new("url", e.message()));
        }
        if let Some(status) = p.expect_status
            && !(100..=599).contains(&status)
        {
            errors.push(FieldError::new("expect_status", "must be an HTTP status code, 100-599"));
        }
        if p.body_contains.as_deref() == Some("") {
            errors.push(FieldError::new("body_contains", "is empty: leave it out to skip the body check"));
        }
        for (name, value) in &p.headers {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                errors.push(FieldError::new(format!("headers/{name}"), "is not a valid header name"));
            } else if value.contains(['\r', '\n', '\0']) {
                errors.push(FieldError::new(format!("headers/{name}"), "the value has a line break"));
            }
        }
        if !(100..=300_000).contains(&p.timeout_ms) {
            errors.push(FieldError::new("timeout_ms", "must be between 100 and 300000"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn run(ctx: &Context, _target: &str, p: Params) -> Result<Outcome> {
        let expected = match p.expect_status {
            Some(code) => code.to_string(),
            None => "200-399".to_owned(),
        };
        let mut report = Report {
            url: p.url.clone(),
            expected_status: expected.clone(),
            body_contains: p.body_contains.clone(),
            ..Report::default()
        };

        ctx.progress(0, &format!("GET {}", p.url));
        let started = Instant::now();
        let mut request = http::get(&p.url).timeout(Duration::from_millis(p.timeout_ms)).cancel_on(ctx);
        for (name, value) in &p.headers {
            request = request.header(name, value);
        }
        let mut response = request.send().map_err(|e| request_failed(ctx, &mut report, e))?;
        let latency = started.elapsed();
        let status = response.status();
        report.status = Some(status);
        report.latency_ms = Some(millis(latency));
        report.content_type = response.header("content-type").map(str::to_owned);
        report.location = response.header("location").map(str::to_owned);
        info!(ctx, "{} answered {status} in {} ms", p.url, millis(latency));

        ctx.progress(50, &format!("status {status}; reading the body"));
        let mut body = BodyScan::new(p.body_contains.as_deref());
        while let Some(chunk) = response.chunk().map_err(|e| request_failed(ctx, &mut report, e))? {
            body.push(&chunk);
            if body.bytes >= MAX_BODY {
                report.body_truncated = true;
                warn!(ctx, "stopped reading the body after {MAX_BODY} bytes");
                break;
            }
        }
        report.total_ms = Some(millis(started.elapsed()));
        report.body_bytes = Some(body.bytes);

        let status_ok = match p.expect_status {
            Some(code) => status == code,
            None => (200..400).contains(&status),
        };
        if !status_ok {
            report.failed.push(format!("expected status {expected}, got {status}"));
        }
        if let Some(needle) = &p.body_contains {
            report.body_matched = Some(body.found);
            if !body.found {
                let read = if report.body_truncated { "the first" } else { "all" };
                report.failed.push(format!("the body does not contain {needle:?} ({read} {} bytes read)", body.bytes));
            }
        }
        ctx.details(&report);
        if !report.failed.is_empty() {
            return Err(Error::failed(format!("GET {}: {}", p.url, report.failed.join("; "))));
        }
        let message = format!("GET {}: {status} in {} ms, {} bytes", p.url, millis(latency), body.bytes);
        ctx.progress(100, &message);
        Ok(Outcome::message(message))
    }
}

/// Counts a body's bytes and looks for a text in it, across chunk borders.
struct BodyScan<'a> {
    needle: Option<&'a [u8]>,
    bytes: u64,
    found: bool,
    /// The end of what came so far, as long as the needle less one byte: a
    /// match may start there and end in the next chunk.
    tail: Vec<u8>,
}

impl<'a> BodyScan<'a> {
    fn new(needle: Option<&'a str>) -> Self {
        BodyScan { needle: needle.map(str::as_bytes), bytes: 0, found: false, tail: Vec::new() }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let Some(needle) = self.needle.filter(|n| !n.is_empty() && !self.found) else { return };
        self.tail.extend_from_slice(chunk);
        self.found = self.tail.windows(needle.len()).any(|w| w == needle);
        let keep = needle.len() - 1;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
    }
}

/// Records why the request failed and returns the run's error (a cancel
/// stays a cancel).
fn request_failed(ctx: &Context, report: &mut Report, error: HttpError) -> Error {
    report.error = Some(error.message().to_owned());
    ctx.details(report);
    error.into()
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

opal_sdk::export_plugin!(HttpCheck);

#[cfg(test)]
mod tests;
