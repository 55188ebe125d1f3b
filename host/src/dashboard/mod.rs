//! `dashboard`: the live operations console that `opal serve` serves at `/`.
//!
//! Owns the page's static files (`host/dashboard/`: HTML, CSS and plain ES
//! modules, no build step), embedded in the binary with `include_str!`, so a
//! server needs nothing beside its executable. It serves those files and
//! nothing else: the page is an ordinary client of the public HTTP API and
//! WebSocket, with no private endpoint, so what it can do any client can.
//!
//! Caching: every asset lives under `/assets/<hash>/`, where `<hash>` is a
//! content hash of all of them. A different build has a different prefix, so
//! assets are sent `immutable` for a year and a browser never mixes files of
//! two versions; a request for another build's prefix gets 404 rather than
//! today's bytes under yesterday's name. The page itself (`/`) is
//! `no-cache`: the browser revalidates it, and so always learns the current
//! prefix. The ES modules import each other by relative path, so they follow
//! the prefix without naming it.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    /// File name, as it appears in URLs under the asset prefix.
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes (all assets are text).
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset { name: $name, content_type: $content_type, body: include_str!(concat!("../../dashboard/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads. A unit test checks that each one the page or
/// a module refers to is listed here.
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("auth.js", JS),
    asset!("cancel.js", JS),
    asset!("detail.js", JS),
    asset!("dom.js", JS),
    asset!("form.js", JS),
    asset!("format.js", JS),
    asset!("list.js", JS),
    asset!("queue.js", JS),
    asset!("runs.js", JS),
    asset!("schema.js", JS),
    asset!("socket.js", JS),
    asset!("store.js", JS),
    asset!("system.js", JS),
    asset!("toasts.js", JS),
];

/// The page, with `{{ASSETS}}` and `{{VERSION}}` still in it.
const INDEX_TEMPLATE: &str = include_str!("../../dashboard/index.html");

/// Content hash of every asset: the version part of their URLs.
static ASSET_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    for asset in ASSETS {
        hash.update(asset.name.as_bytes());
        hash.update([0]);
        hash.update(asset.body.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..6])
});

/// The page with its asset prefix and the server version filled in, built once.
static INDEX: LazyLock<String> = LazyLock::new(|| {
    INDEX_TEMPLATE.replace("{{ASSETS}}", &asset_prefix()).replace("{{VERSION}}", env!("CARGO_PKG_VERSION"))
});

/// `/assets/<hash>`: where this build's assets are served.
pub fn asset_prefix() -> String {
    format!("/assets/{}", *ASSET_HASH)
}

/// What the page may load and connect to: only this server. Styles set from
/// scripts go through the CSSOM, which `style-src 'self'` allows.
const CSP: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes: `/` and `/assets/{hash}/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/assets/{version}/{file}", get(asset))
}

/// `GET /`: the page.
async fn index() -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        INDEX.as_str(),
    )
        .into_response();
    add_nosniff(&mut response);
    response
}

/// `GET /assets/{version}/{file}`: one asset of this build, cached for good.
async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|a| a.name == file);
    let Some(asset) = found.filter(|_| version == *ASSET_HASH) else {
        let mut response = (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            "no such asset in this build; reload the page\n",
        )
            .into_response();
        add_nosniff(&mut response);
        return response;
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        ],
        asset.body,
    )
        .into_response();
    add_nosniff(&mut response);
    response
}

/// Browsers must take the declared type, so a module is never run as anything else.
fn add_nosniff(response: &mut Response) {
    response
        .headers_mut()
        .insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
}

#[cfg(test)]
mod tests;
