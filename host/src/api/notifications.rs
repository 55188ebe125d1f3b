//! `GET /api/v1/notifications` (admin): the delivery state of outbound
//! notifications; and `GET /api/v1/operations/{id}/notifications`: one
//! operation's, for whoever may read it.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::caller::Caller;
use super::problem::{ApiError, Problem};
use crate::auth::Role;
use crate::model::Notification;

/// Default and largest page size.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct NotificationsQuery {
    /// Only this operation's notifications.
    #[param(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    operation: Option<String>,
    /// How many, newest first: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct NotificationList {
    notifications: Vec<Notification>,
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", params(NotificationsQuery),
    responses(
        (status = 200, description = "Notifications, newest first: pending, delivered or dead, with attempts and the last error", body = NotificationList),
        (status = 400, description = "A bad parameter", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "Only an admin reads every notification", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `GET /api/v1/notifications?operation&limit`.
pub(super) async fn list(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<NotificationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<NotificationList>, ApiError> {
    caller.require(Role::Admin, "reading notifications")?;
    let Query(query) = query.map_err(|e| ApiError::field("", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let operation = query
        .operation
        .as_deref()
        .map(|o| super::operations::parse_id(o).map_err(|_| ApiError::field("operation", "is not an operation id")))
        .transpose()?;
    let notifications = app.engine.notifications(operation, limit).await?;
    Ok(Json(NotificationList { notifications }))
}

#[utoipa::path(get, path = "/api/v1/operations/{id}/notifications", tag = "notifications",
    params(("id" = String, Path, description = "The operation id (a ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "The operation's notifications, newest first", body = NotificationList),
        (status = 400, description = "Not an operation id", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such operation (or one outside the caller's targets)", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
/// `GET /api/v1/operations/{id}/notifications`.
pub(super) async fn of_operation(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<NotificationList>, ApiError> {
    caller.require(Role::Viewer, "reading operations")?;
    let id = super::operations::parse_id(&id)?;
    match app.engine.get(id).await? {
        Some(op) if caller.0.sees(&op.target) => {}
        _ => return Err(ApiError::NotFound(format!("no operation {id}"))),
    }
    let notifications = app.engine.notifications(Some(id), MAX_LIMIT).await?;
    Ok(Json(NotificationList { notifications }))
}
