//! What stands before every handler: the request body limit, the `Host`
//! and `Origin` checks, and CORS for the configured origins.
//!
//! **Host.** In dev mode nobody needs a token, so a request must be
//! addressed to `localhost`, a loopback address or a name on
//! `allowed_hosts`; any other `Host` gets 403 (`host-not-allowed`). That is
//! what stops a DNS rebinding page, whose requests carry its own name in
//! both `Host` and `Origin` (see `auth/host.rs`).
//!
//! **Origin.** A browser sends `Origin` with every cross-origin request and
//! with same-origin ones that change something. A request whose `Origin` is
//! neither this server's own page (the trusted `Host` it was sent to) nor on
//! `cors_origins` is refused with 403 before any handler runs. That stops
//! another site's page from starting operations through a visitor's browser,
//! which matters most in dev mode, where no token is needed; and it covers
//! the WebSocket upgrade, which CORS does not. Clients that are not browsers
//! send no `Origin`; with credentials configured they are served whatever
//! `Host` they name (a reverse proxy may pass any), and the token decides.
//!
//! **CORS.** Off unless `cors_origins` lists origins; then those origins get
//! the `Access-Control-*` answers (methods GET, POST, DELETE; headers
//! Authorization and Content-Type; Location and Retry-After readable).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::problem::ApiError;
use crate::auth::{Access, Refused};

/// `router` with the guards of `access` around it.
pub(super) fn guard(router: Router, access: &Arc<Access>) -> Router {
    let mut router = router
        .layer(DefaultBodyLimit::max(access.limits.max_body))
        .layer(axum::middleware::from_fn_with_state(access.clone(), check_browser));
    if !access.auth.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> =
            access.auth.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([header::LOCATION, header::RETRY_AFTER])
                .max_age(Duration::from_secs(600)),
        );
    }
    router
}

async fn check_browser(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    // HTTP/1.1 puts the host in `Host`; an absolute-form request line may carry it instead.
    let host = match headers.get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => request.uri().authority().map(|a| a.as_str()),
    };
    let origin = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or(""));
    match access.admit_request(host, origin) {
        Ok(()) => next.run(request).await,
        Err(refused @ Refused::Host(_)) => ApiError::HostNotAllowed(refused.to_string()).into_response(),
        Err(refused) => ApiError::Forbidden(refused.to_string()).into_response(),
    }
}
