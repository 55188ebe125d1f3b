//! `/api/v1/schedules`: create, list, read, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::operations::MAX_TARGET;
use super::problem::ApiError;
use crate::model::FieldError;
use crate::schedule::{NewSchedule, Schedule, ScheduleId};

/// `POST /api/v1/schedules` `{cron, type, target, params?}`: 201 with the schedule.
pub(super) async fn create(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse(&body)?;
    let schedule = app.schedules.create(request).await?;
    let location = format!("/api/v1/schedules/{}", schedule.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(schedule)).into_response())
}

fn parse(body: &[u8]) -> Result<NewSchedule, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
        detail: format!("the body is not valid JSON: {e}"),
        errors: vec![FieldError::new("", format!("malformed JSON: {e}"))],
    })?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::field("", "the body must be a JSON object"));
    };
    let mut errors = Vec::new();
    let mut text = |name: &str| match fields.remove(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(Value::String(_)) => {
            errors.push(FieldError::new(name, "must not be empty"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(name, "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new(name, "is required"));
            None
        }
    };
    let (cron, op_type, target) = (text("cron"), text("type"), text("target"));
    if target.as_ref().is_some_and(|t| t.len() > MAX_TARGET || t.chars().any(char::is_control)) {
        errors
            .push(FieldError::new("target", format!("must be at most {MAX_TARGET} bytes, without control characters")));
    }
    let params = match fields.remove("params") {
        None => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            errors.push(FieldError::new("params", "must be a JSON object"));
            Value::Null
        }
    };
    for unknown in fields.keys() {
        errors.push(FieldError::new(unknown.as_str(), "is not an accepted field"));
    }
    match (cron, op_type, target) {
        (Some(cron), Some(op_type), Some(target)) if errors.is_empty() => {
            Ok(NewSchedule { cron, op_type, target, params })
        }
        _ => Err(ApiError::Invalid { detail: "the schedule is invalid".into(), errors }),
    }
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
