//! What stands before every handler: the request body limit, the `Origin`
//! check, and CORS for the configured origins.
//!
//! **Origin.** A browser sends `Origin` with every cross-origin request and
//! with same-origin ones that change something. A request whose `Origin` is
//! neither this server (the `Host` it was sent to) nor on `cors_origins` is
//! refused with 403 before any handler runs. That stops another site's page
//! from starting operations through a visitor's browser, which matters most
//! in dev mode, where no token is needed; and it covers the WebSocket
//! upgrade, which CORS does not. Clients that are not browsers send no
//! `Origin` and are not affected.
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
use crate::auth::Access;

/// `router` with the guards of `access` around it.
pub(super) fn guard(router: Router, access: &Arc<Access>) -> Router {
    let mut router = router
        .layer(DefaultBodyLimit::max(access.limits.max_body))
        .layer(axum::middleware::from_fn_with_state(access.clone(), check_origin));
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

async fn check_origin(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().unwrap_or("");
        if !access.origin_allowed(origin, host) {
            return ApiError::Forbidden(format!(
                "requests from a page at origin {origin:?} are not allowed (see cors_origins)"
            ))
            .into_response();
        }
    }
    next.run(request).await
}
