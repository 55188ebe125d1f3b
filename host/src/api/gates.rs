//! `/api/v1/operations/{id}/approve` and `/reject`: decisions at a workflow
//! run's approval gate; and `/api/v1/queue/pause` and `/resume`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::body::Body;
use super::caller::Caller;
use super::problem::{ApiError, Problem};
use crate::auth::Role;
use crate::engine::{DecideError, Decision};
use crate::model::Operation;

/// Longest accepted comment, in bytes.
const MAX_COMMENT: usize = 2000;

/// Reads `{comment?}`; an empty body is no comment.
pub(super) fn parse_decision(bytes: &[u8]) -> Result<Option<String>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut body = Body::parse(bytes)?;
    let comment = body.optional_text("comment", MAX_COMMENT);
    body.finish("the decision is invalid")?;
    Ok(comment)
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::NotFound(id) => ApiError::NotFound(format!("no operation {id}")),
            DecideError::NotWaiting(op) => ApiError::Conflict {
                detail: format!("operation {} is {}, not waiting for an approval", op.id, op.status.as_str()),
                operation: Some(op),
            },
            DecideError::Store(e) => e.into(),
        }
    }
}

async fn decide(
    app: AppState,
    caller: Caller,
    id: String,
    decision: Decision,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer, "deciding an approval")?;
    let id = super::operations::parse_id(&id)?;
    let comment = parse_decision(&super::body::bytes(body)?)?;
    let (run, gate) = match app.engine.gate(id).await {
        Err(DecideError::NotFound(_)) => return Err(ApiError::NotFound(format!("no operation {id}"))),
        Err(DecideError::NotWaiting(op)) if !caller.0.sees(&op.target) => {
            return Err(ApiError::NotFound(format!("no operation {id}")));
        }
        other => other?,
    };
    if !caller.0.sees(&run.target) {
        return Err(ApiError::NotFound(format!("no operation {id}")));
    }
    let role = match gate.role.as_str() {
        "admin" => Role::Admin,
        "operator" => Role::Operator,
        _ => Role::Viewer,
    };
    caller.require(role, &format!("deciding the approval of step {}", gate.step))?;
    let by = caller.0.audit_name().to_owned();
    if by == run.created_by && !gate.self_approval && !caller.0.is_anonymous() {
        return Err(ApiError::Forbidden(format!(
            "{by} started this run, and the gate of step {} does not allow self-approval",
            gate.step
        )));
    }
    let action = match decision {
        Decision::Approve => "gate.approve",
        Decision::Reject => "gate.reject",
    };
    let entry = caller.entry(action, run.id.to_string()).with_detail(format!("step {} of {}", gate.step, run.op_type));
    let run = app.engine.decide(run, gate, decision, &by, comment, Some(entry)).await?;
    Ok((StatusCode::OK, Json(run)).into_response())
}

#[utoipa::path(post, path = "/api/v1/operations/{id}/approve", tag = "workflows",
    params(("id" = String, Path, description = "The workflow run's id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    request_body(content = Option<super::openapi::DecisionBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "Approved: the run goes on (the event `operation.approved` names who approved)", body = Operation),
        (status = 400, description = "Not an operation id, or a bad comment", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the gate's role, or started the run and the gate does not allow self-approval", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such operation (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "It is not waiting at a gate (it was decided already, or never waited)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the limit", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `POST /api/v1/operations/{id}/approve`.
pub(super) async fn approve(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    decide(app, caller, id, Decision::Approve, body).await
}

#[utoipa::path(post, path = "/api/v1/operations/{id}/reject", tag = "workflows",
    params(("id" = String, Path, description = "The workflow run's id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    request_body(content = Option<super::openapi::DecisionBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "Rejected: the step does not run (the event `operation.rejected` names who rejected)", body = Operation),
        (status = 400, description = "Not an operation id, or a bad comment", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the gate's role, or started the run and the gate does not allow self-approval", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such operation (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "It is not waiting at a gate (it was decided already, or never waited)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the limit", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `POST /api/v1/operations/{id}/reject`.
pub(super) async fn reject(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    decide(app, caller, id, Decision::Reject, body).await
}

/// The queue's state.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct QueueState {
    /// Whether the queue is paused: starts are accepted and wait; running operations go on.
    paused: bool,
}

async fn set_paused(app: AppState, caller: Caller, paused: bool) -> Result<Json<QueueState>, ApiError> {
    caller.require(Role::Admin, if paused { "pausing the queue" } else { "resuming the queue" })?;
    let entry = caller.entry(if paused { "queue.pause" } else { "queue.resume" }, "queue");
    app.engine.set_paused(paused, Some(entry)).await?;
    tracing::info!(by = caller.0.audit_name(), paused, "queue {}", if paused { "paused" } else { "resumed" });
    app.status.broadcast_now();
    Ok(Json(QueueState { paused }))
}

#[utoipa::path(post, path = "/api/v1/queue/pause", tag = "workflows",
    responses(
        (status = 200, description = "Paused, on every node: nothing more starts; starts are accepted and wait", body = QueueState),
        (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "Only an admin may pause the queue", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot take writes now", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
    ))]
/// `POST /api/v1/queue/pause`.
pub(super) async fn pause(State(app): State<AppState>, caller: Caller) -> Result<Json<QueueState>, ApiError> {
    set_paused(app, caller, true).await
}

#[utoipa::path(post, path = "/api/v1/queue/resume", tag = "workflows",
    responses(
        (status = 200, description = "Resumed: what waits starts, oldest first", body = QueueState),
        (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "Only an admin may resume the queue", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot take writes now", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
    ))]
/// `POST /api/v1/queue/resume`.
pub(super) async fn resume(State(app): State<AppState>, caller: Caller) -> Result<Json<QueueState>, ApiError> {
    set_paused(app, caller, false).await
}
