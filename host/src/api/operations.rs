//! `/api/v1/operations`: start, read, list, cancel, and event history.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::problem::ApiError;
use crate::engine::{SubmitRequest, Submitted};
use crate::model::{FieldError, Operation, OperationId, Seq, Status};
use crate::store::OperationFilter;

/// Longest accepted target, in bytes.
pub(super) const MAX_TARGET: usize = 256;
/// Longest accepted idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 200;
/// Default and largest page size of `GET /operations`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// `POST /api/v1/operations`: 202 with the pending operation and its
/// `Location`; 200 with the original operation for a repeated idempotency key.
pub(super) async fn create(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse_create(&body)?;
    let (status, operation) = match app.engine.submit(request).await? {
        Submitted::Created(op) => (StatusCode::ACCEPTED, op),
        Submitted::Replayed(op) => (StatusCode::OK, op),
    };
    let location = format!("/api/v1/operations/{}", operation.id);
    Ok((status, [(header::LOCATION, location)], Json(operation)).into_response())
}

/// Reads the body field by field so that every problem is reported at once.
fn parse_create(body: &[u8]) -> Result<SubmitRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
        detail: format!("the body is not valid JSON: {e}"),
        errors: vec![FieldError::new("", format!("malformed JSON: {e}"))],
    })?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::field("", "the body must be a JSON object"));
    };
    let mut errors = Vec::new();
    let mut text = |name: &str, fields: &mut serde_json::Map<String, Value>| match fields.remove(name) {
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
    let op_type = text("type", &mut fields);
    let target = text("target", &mut fields);
    if let Some(t) = &target {
        if t.len() > MAX_TARGET {
            errors.push(FieldError::new("target", format!("must be at most {MAX_TARGET} bytes")));
        } else if t.chars().any(char::is_control) {
            errors.push(FieldError::new("target", "must not contain control characters"));
        }
    }
    let idempotency_key = match fields.remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len()) => Some(k),
        Some(_) => {
            errors.push(FieldError::new(
                "idempotency_key",
                format!("must be a string of 1 to {MAX_IDEMPOTENCY_KEY} bytes"),
            ));
            None
        }
    };
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
    match (op_type, target) {
        (Some(op_type), Some(target)) if errors.is_empty() => {
            Ok(SubmitRequest { op_type, target, params, created_by: "api".to_owned(), idempotency_key })
        }
        _ => Err(ApiError::Invalid { detail: "the request is invalid".into(), errors }),
    }
}

fn parse_id(id: &str) -> Result<OperationId, ApiError> {
    id.parse().map_err(|_| ApiError::field("id", format!("{id:?} is not an operation id (a 26-character ULID)")))
}

/// `GET /api/v1/operations/{id}`.
pub(super) async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Operation>, ApiError> {
    let id = parse_id(&id)?;
    app.engine.get(id)?.map(Json).ok_or_else(|| ApiError::NotFound(format!("no operation {id}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// One status or several, comma-separated.
    status: Option<String>,
    #[serde(rename = "type")]
    op_type: Option<String>,
    target: Option<String>,
    created_by: Option<String>,
}

fn parse_statuses(text: &str) -> Result<Vec<Status>, ApiError> {
    text.split(',')
        .map(|s| {
            serde_json::from_value(Value::String(s.trim().to_owned())).map_err(|_| {
                ApiError::field(
                    "status",
                    format!("{s:?} is not a status (pending, running, completed, failed, cancelled)"),
                )
            })
        })
        .collect()
}

#[derive(Serialize)]
pub(super) struct Page {
    operations: Vec<Operation>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /api/v1/operations?status&type&target&created_by&limit&cursor`: newest first.
pub(super) async fn list(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
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
    };
    let operations = app.engine.list(&filter, limit, before)?;
    let next_cursor = (operations.len() == limit).then(|| operations.last().map(|op| op.id.to_string())).flatten();
    Ok(Json(Page { operations, next_cursor }))
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    since: Option<Seq>,
}

/// `GET /api/v1/operations/{id}/events?since`: the stored event frames, in order.
pub(super) async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if app.engine.get(id)?.is_none() {
        return Err(ApiError::NotFound(format!("no operation {id}")));
    }
    let frames = app.engine.events(id, query.since.unwrap_or(0))?;
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

/// `POST /api/v1/operations/{id}/cancel`: 202 once the plugin has been asked to stop.
pub(super) async fn cancel(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let operation = app.engine.cancel(id, "api").await?;
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
