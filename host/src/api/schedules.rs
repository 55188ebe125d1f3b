//! `/api/v1/schedules`: create, list, read, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::body::Body;
use super::problem::ApiError;
use crate::schedule::{NewSchedule, Schedule, ScheduleId};

/// `POST /api/v1/schedules` `{cron, type, target, params?}`: 201 with the schedule.
pub(super) async fn create(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse(&body)?;
    let schedule = app.schedules.create(request).await?;
    let location = format!("/api/v1/schedules/{}", schedule.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(schedule)).into_response())
}

fn parse(bytes: &[u8]) -> Result<NewSchedule, ApiError> {
    let mut body = Body::parse(bytes)?;
    let (cron, op_type, target) = (body.text("cron"), body.text("type"), body.target());
    let params = body.params();
    body.finish("the schedule is invalid")?;
    let (Some(cron), Some(op_type), Some(target)) = (cron, op_type, target) else {
        return Err(ApiError::Internal("a missing field passed validation".into()));
    };
    Ok(NewSchedule { cron, op_type, target, params })
}

fn parse_id(id: &str) -> Result<ScheduleId, ApiError> {
    id.parse().map_err(|_| ApiError::field("id", format!("{id:?} is not a schedule id (a 26-character ULID)")))
}

#[derive(Serialize)]
pub(super) struct List {
    schedules: Vec<Schedule>,
}

/// `GET /api/v1/schedules`.
pub(super) async fn list(State(app): State<AppState>) -> Json<List> {
    Json(List { schedules: app.schedules.list() })
}

/// `GET /api/v1/schedules/{id}`.
pub(super) async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Schedule>, ApiError> {
    let id = parse_id(&id)?;
    app.schedules.get(id).map(Json).ok_or_else(|| ApiError::NotFound(format!("no schedule {id}")))
}

/// `DELETE /api/v1/schedules/{id}`: 204.
pub(super) async fn delete(State(app): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    app.schedules.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
