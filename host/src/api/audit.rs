//! The audit log over HTTP: `GET /api/v1/audit` (admin), and the middleware
//! that records every refused authorization (401 and 403) with who tried,
//! from where, and on what.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::caller::Caller;
use super::problem::{ApiError, Problem};
use crate::auth::Role;
use crate::model::{AuditEntry, AuditFilter};

/// Default and largest page size.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only this principal (`user:ann`, `hook:github`, `unauthenticated`).
    principal: Option<String>,
    /// Only this action (`operation.start`, `auth.refused`, ...).
    action: Option<String>,
    /// Only this object (an operation or schedule id, a hook's name, `METHOD /path`).
    object: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    since: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuditPage)]
pub(super) struct Page {
    entries: Vec<AuditEntry>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log, newest first", body = Page),
        (status = 400, description = "An unknown parameter, or a bad since, limit or cursor", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "Only an admin reads the audit log", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `GET /api/v1/audit?principal&action&object&since&limit&cursor`: newest first.
pub(super) async fn list(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.require(Role::Admin, "reading the audit log")?;
    let Query(query) = query.map_err(|e| ApiError::field("", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            ulid::Ulid::from_string(c).map_err(|_| ApiError::field("cursor", "is not a cursor from a previous page"))
        })
        .transpose()?;
    let since = query
        .since
        .as_deref()
        .map(|s| {
            humantime::parse_rfc3339_weak(s)
                .map(crate::model::Timestamp::from)
                .map_err(|_| ApiError::field("since", format!("{s:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    let filter = AuditFilter { principal: query.principal, action: query.action, object: query.object, since };
    let entries = app.engine.audit_log(&filter, limit, before).await?;
    let next_cursor = (entries.len() == limit).then(|| entries.last().map(|e| e.id.to_string())).flatten();
    Ok(Json(Page { entries, next_cursor }))
}

/// Records every 401 and 403 of the API in the audit log: who tried (the
/// principal its credentials name, or `unauthenticated`), from where, and
/// what (`METHOD /path`). The credentials themselves are never recorded.
pub(super) async fn refusals(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.to_string());
    let response = next.run(request).await;
    let status = response.status();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return response;
    }
    let principal = authorization
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .and_then(|h| app.access.auth.authenticate(Some(h)).ok())
        .map_or_else(|| "unauthenticated".to_owned(), |p| p.audit_name().to_owned());
    let mut entry = AuditEntry::new(&principal, remote, "auth.refused", format!("{method} {path}"));
    entry.result = format!("refused: {}", status.as_u16());
    app.engine.audit(entry).await;
    response
}
