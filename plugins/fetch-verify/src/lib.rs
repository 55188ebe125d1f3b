//! `fetch-verify`: seed 000's "docker zip" step. Downloads an artifact over
//! HTTP (`opal_sdk::http`, under the operator's `net` grant) into a granted
//! read-write directory, with progress by bytes, and keeps it only if its
//! sha256 is the one given.
//!
//! The body streams into a hidden temporary file next to the destination
//! ([`partial`]) while it is hashed; only a verified file is renamed into
//! place, so a mismatch, a broken download, a 404 or a cancel leaves the
//! directory as it was. With a `Content-Length` the bar moves with the bytes;
//! without one the messages and details count the bytes instead.

pub mod partial;

use std::path::Path;
use std::time::{Duration, Instant};

use opal_sdk::http::{self, HttpError, Url};
use opal_sdk::prelude::*;
use sha2::{Digest, Sha256};

use self::partial::Partial;

/// What to fetch, where to, and what it must hash to.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The artifact's URL: `http://` or `https://`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// Its SHA-256, 64 hex digits.
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: String,
    /// The directory to put it in: a read-write directory the operator
    /// granted, by its path inside the sandbox (e.g. `/artifacts`).
    #[schemars(length(min = 1))]
    pub dir: String,
    /// The file name; by default the last segment of the URL's path.
    #[serde(default)]
    pub file_name: Option<String>,
    /// How long connecting, the first byte, and each pause in the body may
    /// take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 100, max = 600000))]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// The details: the download as it goes, then the verdict.
#[derive(Debug, Default, Serialize)]
struct Report {
    url: String,
    /// Where the file goes (inside the sandbox).
    file: String,
    /// Bytes received so far.
    bytes: u64,
    /// The announced length, if the server sent one.
    total_bytes: Option<u64>,
    /// The sha256 asked for.
    expected_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    actual_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// How often the details are refreshed while bytes arrive without a known
/// length (with one, whenever the percentage moves).
const DETAILS_EVERY: u64 = 1024 * 1024;

/// The plugin.
pub struct FetchVerify;

impl Plugin for FetchVerify {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("fetch-verify", env!("CARGO_PKG_VERSION"), "Fetch and verify")
            .description("Downloads an artifact into a granted directory and keeps it only if its sha256 matches.")
            .timeout(Duration::from_secs(60 * 60))
            .retry_safe()
    }

    fn validate(p: &Params) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let url = Url::parse(&p.url).map_err(|e| errors.push(FieldError::new("url", e.message()))).ok();
        if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(FieldError::new("sha256", "must be 64 hex digits"));
        }
        if !p.dir.starts_with('/') {
            errors.push(FieldError::new("dir", "must be an absolute path inside the sandbox, e.g. /artifacts"));
        }
        match &p.file_name {
            Some(name) => {
                if let Err(why) = check_name(name) {
                    errors.push(FieldError::new("file_name", why));
                }
            }
            None => {
                if url.as_ref().is_some_and(|u| name_from(u).is_none()) {
                    errors.push(FieldError::new("file_name", "the URL's path ends without a file name: give one"));
                }
            }
        }
        if !(100..=600_000).contains(&p.timeout_ms) {
            errors.push(FieldError::new("timeout_ms", "must be between 100 and 600000"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn run(ctx: &Context, _target: &str, p: Params) -> Result<Outcome> {
        let url = Url::parse(&p.url).map_err(|e| Error::invalid("url", e.message()))?;
        let name = match &p.file_name {
            Some(name) => name.clone(),
            None => name_from(&url).ok_or_else(|| Error::invalid("file_name", "the URL has no file name"))?,
        };
        let dest = Path::new(&p.dir).join(&name);
        let expected = p.sha256.to_ascii_lowercase();
        let mut report = Report {
            url: p.url.clone(),
            file: dest.display().to_string(),
            expected_sha256: expected.clone(),
            ..Report::default()
        };
        let started = Instant::now();

        let download = ctx.phase("download", 0..95);
        download.progress(0, &format!("GET {}", p.url));
        let timeout = Duration::from_millis(p.timeout_ms);
        let mut response =
            http::get(&p.url).timeout(timeout).cancel_on(ctx).send().map_err(|e| http_failed(ctx, &mut report, e))?;
        if response.status() != 200 {
            let why = format!("GET {} answered {} (expected 200)", p.url, response.status());
            return Err(fail(ctx, &mut report, why));
        }
        let total = response.content_length();
        report.total_bytes = total;
        ctx.details(&report);
        let mut file = Partial::create(&dest).map_err(|e| {
            let why = format!("cannot write in {}: {e} (it must be a directory granted read-write)", p.dir);
            fail(ctx, &mut report, why)
        })?;
        info!(ctx, "downloading {} into {}", p.url, file.path().display());

        let mut hasher = Sha256::new();
        let mut shown = (0u64, 0u8);
        while let Some(chunk) = response.chunk().map_err(|e| http_failed(ctx, &mut report, e))? {
            file.write(&chunk).map_err(|e| fail(ctx, &mut report, format!("writing {}: {e}", dest.display())))?;
            hasher.update(&chunk);
            report.bytes += chunk.len() as u64;
            let percent = match total {
                Some(total) => {
                    let message = format!("downloaded {} of {}", size(report.bytes), size(total));
                    download.progress_of(report.bytes, total, &message);
                    (report.bytes.saturating_mul(100) / total.max(1)).min(100) as u8
                }
                None => {
                    // No length, no percentage: the bar stays, the message counts.
                    download.progress(0, &format!("downloaded {}", size(report.bytes)));
                    0
                }
            };
            if percent != shown.1 || report.bytes - shown.0 >= DETAILS_EVERY {
                shown = (report.bytes, percent);
                ctx.details(&report);
            }
        }
        if let Some(total) = total
            && report.bytes != total
        {
            let why = format!("the download of {} ended after {} of {total} bytes", p.url, report.bytes);
            return Err(fail(ctx, &mut report, why));
        }

        let verify = ctx.phase("verify", 95..);
        verify.progress(0, "checking the sha256");
        let actual = hex::encode(hasher.finalize());
        report.actual_sha256 = Some(actual.clone());
        report.verified = Some(actual == expected);
        if actual != expected {
            let why = format!(
                "sha256 mismatch for {}: expected {expected}, got {actual} ({} bytes); nothing was kept",
                p.url, report.bytes
            );
            return Err(fail(ctx, &mut report, why));
        }
        let kept = file.keep().map_err(|e| fail(ctx, &mut report, format!("keeping {}: {e}", dest.display())))?;
        report.elapsed_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        ctx.details(&report);
        let message = format!("{} verified: {}, sha256 {}…", kept.display(), size(report.bytes), &actual[..12]);
        verify.progress(100, &message);
        Ok(Outcome::message(message))
    }
}

/// The last segment of the URL's path, if it is a usable file name.
fn name_from(url: &Url) -> Option<String> {
    let path = url.path_and_query.split('?').next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    check_name(name).ok().map(|()| name.to_owned())
}

/// A plain file name: no directories, nothing hidden or special.
fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("must not be empty, . or ..");
    }
    if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err("must be a plain file name, without / \\ or control characters");
    }
    if name.starts_with('.') {
        return Err("must not start with . (hidden names are the plugin's temporary files)");
    }
    if name.len() > 255 {
        return Err("is longer than 255 bytes");
    }
    Ok(())
}

/// Records the failure in the details and returns it. The temporary file,
/// if any, goes when its guard drops on the way out.
fn fail(ctx: &Context, report: &mut Report, why: String) -> Error {
    report.error = Some(why.clone());
    ctx.details(report);
    Error::Failed(why)
}

/// [`fail`] for an HTTP error; a cancel stays a cancel.
fn http_failed(ctx: &Context, report: &mut Report, error: HttpError) -> Error {
    match Error::from(error) {
        Error::Failed(why) => fail(ctx, report, why),
        other => other,
    }
}

/// `1.5 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

opal_sdk::export_plugin!(FetchVerify);

#[cfg(test)]
mod tests;
