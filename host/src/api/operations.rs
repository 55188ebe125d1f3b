//! `/api/v1/operations`: start, read, list, cancel, and event history.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::body::Body;
use super::caller::Caller;
use super::problem::{ApiError, Problem};
use crate::auth::Role;
use crate::engine::{SubmitError, SubmitRequest, Submitted};
use crate::model::{Operation, OperationId, Seq, Status};
use crate::store::OperationFilter;

/// Longest accepted idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 200;
/// Longest `version` requirement accepted, in bytes.
const MAX_VERSION_REQ: usize = 100;
/// Default and largest page size of `GET /operations`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[utoipa::path(post, path = "/api/v1/operations", tag = "operations",
    request_body(content = super::openapi::NewOperation, content_type = "application/json"),
    responses(
        (status = 202, description = "Admitted: the pending operation", body = Operation,
            headers(("Location" = String, description = "/api/v1/operations/{id}"))),
        (status = 200, description = "A retry with a used idempotency_key: the operation it created", body = Operation,
            headers(("Location" = String, description = "/api/v1/operations/{id}"))),
        (status = 400, description = "Invalid: every field error is listed", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not start operations, or not on this target", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No plugin implements the type", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "An operation of the type or exclusivity group is active on the target, or the key was used for another request", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the limit", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's start rate", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a start may succeed"))),
        (status = 502, description = "The plugin failed while validating", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 507, description = "The data directory is below its free-space floor (min_free_mib)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot take writes now (a cluster's database is unreachable or restarting), or the node is draining before it stops", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
    ))]
/// `POST /api/v1/operations`: 202 with the pending operation and its
/// `Location`; 200 with the original operation for a repeated idempotency key.
pub(super) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator, "starting an operation")?;
    let mut request = parse_create(&super::body::bytes(body)?)?;
    caller.require_target(&request.target)?;
    // After the cheap checks, before the plugin's: a refused request spends nothing.
    app.access.take_start(&caller.0).map_err(|retry_after| ApiError::TooManyRequests {
        detail: format!("{} is starting operations faster than its limit allows", caller.0.name),
        retry_after,
    })?;
    caller.0.audit_name().clone_into(&mut request.created_by);
    request.audit = Some(caller.entry("operation.start", ""));
    let submitted = app.engine.submit(request).await.map_err(|e| match e {
        // Another principal's key: don't show its operation unless the caller may see it.
        SubmitError::KeyReused(op) if !caller.0.sees(&op.target) => ApiError::Conflict {
            detail: "idempotency_key was already used for a different request".into(),
            operation: None,
        },
        e => e.into(),
    })?;
    let (status, operation) = match submitted {
        Submitted::Created(op) => (StatusCode::ACCEPTED, op),
        Submitted::Replayed(op) => (StatusCode::OK, op),
    };
    let location = format!("/api/v1/operations/{}", operation.id);
    Ok((status, [(header::LOCATION, location)], Json(operation)).into_response())
}

/// Reads the body field by field so that every problem is reported at once.
pub(super) fn parse_create(bytes: &[u8]) -> Result<SubmitRequest, ApiError> {
    let mut body = Body::parse(bytes)?;
    let op_type = body.text("type");
    let target = body.target();
    let idempotency_key = body.optional_text("idempotency_key", MAX_IDEMPOTENCY_KEY);
    let version = body
        .optional_text("version", MAX_VERSION_REQ)
        .and_then(|text| super::version_req(&text).map_err(|e| body.reject("version", e)).ok());
    let params = body.params();
    body.finish("the request is invalid")?;
    let (Some(op_type), Some(target)) = (op_type, target) else {
        return Err(ApiError::Internal("a missing field passed validation".into()));
    };
    Ok(SubmitRequest {
        op_type,
        target,
        params,
        created_by: "api".to_owned(),
        idempotency_key,
        version,
        child: None,
        audit: None,
    })
}

pub(super) fn parse_id(id: &str) -> Result<OperationId, ApiError> {
    id.parse().map_err(|_| ApiError::field("id", format!("{id:?} is not an operation id (a 26-character ULID)")))
}

/// The operation `id` if the caller may see it; a 404 alike for a missing
/// one and for one outside its targets.
async fn visible(app: &AppState, caller: &Caller, id: OperationId) -> Result<Operation, ApiError> {
    match app.engine.get(id).await? {
        Some(op) if caller.0.sees(&op.target) => Ok(op),
        _ => Err(ApiError::NotFound(format!("no operation {id}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/operations/{id}", tag = "operations", params(("id" = String, Path, description = "The operation id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "The operation", body = Operation),
        (status = 400, description = "Not an operation id", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such operation (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `GET /api/v1/operations/{id}`.
pub(super) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    caller.require(Role::Viewer, "reading operations")?;
    visible(&app, &caller, parse_id(&id)?).await.map(Json)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    cursor: Option<String>,
    /// One status or several, comma-separated (`pending,running`).
    #[param(
        pattern = "^(pending|running|waiting|completed|failed|cancelled)(,(pending|running|waiting|completed|failed|cancelled))*$"
    )]
    status: Option<String>,
    /// Only this type.
    #[serde(rename = "type")]
    op_type: Option<String>,
    /// Only this target.
    target: Option<String>,
    /// Only operations started by this creator (`user:ann`, `schedule:<id>`, `api`).
    created_by: Option<String>,
    /// Only the steps (children) of this workflow run.
    #[param(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    parent: Option<String>,
}

fn parse_statuses(text: &str) -> Result<Vec<Status>, ApiError> {
    text.split(',')
        .map(|s| {
            serde_json::from_value(Value::String(s.trim().to_owned())).map_err(|_| {
                ApiError::field(
                    "status",
                    format!("{s:?} is not a status (pending, running, waiting, completed, failed, cancelled)"),
                )
            })
        })
        .collect()
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OperationPage)]
pub(super) struct Page {
    operations: Vec<Operation>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/operations", tag = "operations", params(ListQuery),
    responses(
        (status = 200, description = "A page of operations, newest first", body = Page),
        (status = 400, description = "An unknown parameter, or a bad status, limit or cursor", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `GET /api/v1/operations?status&type&target&created_by&limit&cursor`: newest first.
pub(super) async fn list(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    caller.require(Role::Viewer, "reading operations")?;
    let Query(query) = query.map_err(|e| ApiError::field("", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let before = query
        .cursor
        .as_deref()
        .map(|c| c.parse().map_err(|_| ApiError::field("cursor", "is not a cursor from a previous page")))
        .transpose()?;
    let filter = OperationFilter {
        statuses: query.status.as_deref().map(parse_statuses).transpose()?.unwrap_or_default(),
        op_type: query.op_type,
        target: query.target,
        created_by: query.created_by,
        parent: query
            .parent
            .as_deref()
            .map(|p| p.parse().map_err(|_| ApiError::field("parent", format!("{p:?} is not an operation id"))))
            .transpose()?,
        scope: (!caller.0.scope.is_all()).then(|| caller.0.scope.clone()),
    };
    let operations = app.engine.list(&filter, limit, before).await?;
    let next_cursor = (operations.len() == limit).then(|| operations.last().map(|op| op.id.to_string())).flatten();
    Ok(Json(Page { operations, next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only events with a seq above this one.
    #[param(value_type = Option<u64>, minimum = 0)]
    since: Option<Seq>,
}

#[utoipa::path(get, path = "/api/v1/operations/{id}/events", tag = "operations", params(("id" = String, Path, description = "The operation id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$"), EventsQuery),
    responses(
        (status = 200, description = "Its events, oldest first, log lines included", body = super::openapi::EventList),
        (status = 400, description = "Not an operation id, or a bad since", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such operation (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `GET /api/v1/operations/{id}/events?since`: the stored event frames, in order.
pub(super) async fn events(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer, "reading operations")?;
    let Query(query) = query.map_err(|e| ApiError::field("since", e.body_text()))?;
    let id = parse_id(&id)?;
    visible(&app, &caller, id).await?;
    let frames = app.engine.events(id, query.since.unwrap_or(0)).await?;
    // The frames are stored as JSON already: splice them, don't re-encode.
    let mut body = String::from("{\"events\":[");
    for (i, (_, frame)) in frames.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(frame);
    }
    body.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[utoipa::path(post, path = "/api/v1/operations/{id}/cancel", tag = "operations", params(("id" = String, Path, description = "The operation id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 202, description = "Cancelling: a pending operation is cancelled at once, a running one is asked to stop", body = Operation),
        (status = 400, description = "Not an operation id", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not cancel operations", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such operation (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "It already ended; the problem holds it", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `POST /api/v1/operations/{id}/cancel`: 202 once the plugin has been asked to stop.
pub(super) async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator, "cancelling an operation")?;
    let id = parse_id(&id)?;
    visible(&app, &caller, id).await?;
    let entry = caller.entry("operation.cancel", id.to_string());
    let operation = app.engine.cancel_audited(id, caller.0.audit_name(), entry).await?;
    Ok((StatusCode::ACCEPTED, Json(operation)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<String> {
        match parse_create(body.as_bytes()) {
            Err(ApiError::Invalid { errors, .. }) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn every_field_error_is_listed() {
        assert_eq!(fields("{}"), ["type", "target"]);
        assert_eq!(fields(r#"{"type":1,"target":"","params":[],"x":1}"#), ["type", "target", "params", "x"]);
        assert_eq!(fields("not json"), [""]);
        assert_eq!(fields("[1]"), [""]);
    }

    #[test]
    fn a_good_request_parses() {
        let r = parse_create(br#"{"type":"demo","target":"srv-1","params":{"steps":2}}"#).unwrap();
        assert_eq!((r.op_type.as_str(), r.target.as_str()), ("demo", "srv-1"));
        assert_eq!(r.params["steps"], 2);
    }
}
