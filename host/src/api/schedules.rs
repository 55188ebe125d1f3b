//! `/api/v1/schedules`: create, list, read, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::body::Body;
use super::caller::Caller;
use super::problem::{ApiError, Problem};
use crate::auth::Role;
use crate::schedule::{NewSchedule, Schedule, ScheduleId};

#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules",
    request_body(content = super::openapi::NewSchedule, content_type = "application/json"),
    responses(
        (status = 201, description = "The schedule", body = Schedule,
            headers(("Location" = String, description = "/api/v1/schedules/{id}"))),
        (status = 400, description = "Invalid: every field error is listed", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not create schedules, or not on this target", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No plugin implements the type", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "The server holds max_schedules schedules already", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the limit", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's start rate (a schedule spends a start)", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a create may succeed"))),
        (status = 502, description = "The plugin failed while validating", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 507, description = "The data directory is below its free-space floor (min_free_mib)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot take writes now (a cluster's database is unreachable or restarting)", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
    ))]
/// `POST /api/v1/schedules` `{cron, type, target, params?}`: 201 with the
/// schedule. A create spends one of the caller's starts: a schedule is a way
/// to start operations, so it must not be a way around the start limit.
pub(super) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator, "creating a schedule")?;
    let mut request = parse(&super::body::bytes(body)?)?;
    caller.require_target(&request.target)?;
    // After the cheap checks, before the plugin's: a refused request spends nothing.
    app.access.take_start(&caller.0).map_err(|retry_after| ApiError::TooManyRequests {
        detail: format!("{} is creating schedules and starting operations faster than its limit allows", caller.0.name),
        retry_after,
    })?;
    caller.0.audit_name().clone_into(&mut request.created_by);
    request.audit = Some(caller.entry("schedule.create", ""));
    let schedule = app.schedules.create(request).await?;
    let location = format!("/api/v1/schedules/{}", schedule.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(schedule)).into_response())
}

pub(super) fn parse(bytes: &[u8]) -> Result<NewSchedule, ApiError> {
    let mut body = Body::parse(bytes)?;
    let (cron, op_type, target) = (body.text("cron"), body.text("type"), body.target());
    let params = body.params();
    body.finish("the schedule is invalid")?;
    let (Some(cron), Some(op_type), Some(target)) = (cron, op_type, target) else {
        return Err(ApiError::Internal("a missing field passed validation".into()));
    };
    Ok(NewSchedule { cron, op_type, target, params, created_by: "api".to_owned(), audit: None })
}

fn parse_id(id: &str) -> Result<ScheduleId, ApiError> {
    id.parse().map_err(|_| ApiError::field("id", format!("{id:?} is not a schedule id (a 26-character ULID)")))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ScheduleList)]
pub(super) struct List {
    schedules: Vec<Schedule>,
}

#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, description = "The schedules on the caller's targets", body = List), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json")))]
/// `GET /api/v1/schedules`: those on the caller's targets.
pub(super) async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<List>, ApiError> {
    caller.require(Role::Viewer, "reading schedules")?;
    let schedules = app.schedules.list().into_iter().filter(|s| caller.0.sees(&s.target)).collect();
    Ok(Json(List { schedules }))
}

/// The schedule `id` if the caller may see it; a 404 alike for a missing one
/// and for one outside its targets.
fn visible(app: &AppState, caller: &Caller, id: &str) -> Result<Schedule, ApiError> {
    let id = parse_id(id)?;
    app.schedules
        .get(id)
        .filter(|s| caller.0.sees(&s.target))
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {id}")))
}

#[utoipa::path(get, path = "/api/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "The schedule id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "The schedule", body = Schedule),
        (status = 400, description = "Not a schedule id", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `GET /api/v1/schedules/{id}`.
pub(super) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    caller.require(Role::Viewer, "reading schedules")?;
    visible(&app, &caller, &id).map(Json)
}

#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "The schedule id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 204, description = "Deleted; the operations it created are kept"),
        (status = 400, description = "Not a schedule id", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not delete schedules", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `DELETE /api/v1/schedules/{id}`: 204.
pub(super) async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator, "deleting a schedule")?;
    let id = visible(&app, &caller, &id)?.id;
    app.schedules.delete(id, Some(caller.entry("schedule.delete", id.to_string()))).await?;
    Ok(StatusCode::NO_CONTENT)
}
