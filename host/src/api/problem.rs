//! Every HTTP error, mapped in one place to a status and an RFC 9457
//! `application/problem+json` body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::{CancelError, SubmitError};
use crate::model::{FieldError, Operation};
use crate::schedule::ScheduleError;
use crate::store::StoreError;

/// An API error; converts into a problem+json response.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed or invalid; every field error listed.
    Invalid {
        /// What is wrong, in one sentence.
        detail: String,
        /// Each field's problem.
        errors: Vec<FieldError>,
    },
    /// 401: no credentials, or credentials that are not valid.
    Unauthorized(String),
    /// 403: authenticated, but not allowed to do this.
    Forbidden(String),
    /// 403: a dev-mode server addressed by a name that is not loopback (see `auth::Refused::Host`).
    HostNotAllowed(String),
    /// 404: no such resource (or one the caller may not see).
    NotFound(String),
    /// 409: conflicts with the current state; the operation in question is
    /// included when the caller may see it.
    Conflict {
        /// What conflicts.
        detail: String,
        /// The operation it conflicts with.
        operation: Option<Box<Operation>>,
    },
    /// 413: the request body is over the limit.
    TooLarge(String),
    /// 429: over a rate limit; `Retry-After` says when to try again.
    TooManyRequests {
        /// Which limit.
        detail: String,
        /// When a retry can succeed.
        retry_after: std::time::Duration,
    },
    /// 500: a host-side fault; details go to the log, not the client.
    Internal(String),
    /// 502: the plugin failed while validating.
    Plugin(String),
    /// 507: the data directory is below its free-space floor.
    InsufficientStorage(String),
    /// 503: the store cannot take writes for now (its database is
    /// unreachable or restarting); `Retry-After` says when to try again.
    Unavailable(String),
}

/// An RFC 9457 problem, as every error response carries it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Problem<'a> {
    /// `https://opal.dev/problems/<kind>`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'a str,
    /// The kind, for people.
    #[schema(value_type = String)]
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// What went wrong.
    #[schema(value_type = String)]
    detail: &'a str,
    /// Each field's problem (400 only).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Option<Vec<FieldError>>, nullable = false)]
    errors: &'a [FieldError],
    /// The operation a 409 is about, when the caller may see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Operation>, nullable = false)]
    operation: Option<&'a Operation>,
}

impl ApiError {
    /// A 400 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid { detail: "the request is invalid".into(), errors: vec![FieldError::new(field, message)] }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title, detail, errors, operation) = match &self {
            ApiError::Invalid { detail, errors } => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
                detail.as_str(),
                errors.as_slice(),
                None,
            ),
            ApiError::Unauthorized(detail) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail.as_str(), &[][..], None)
            }
            ApiError::Forbidden(detail) => {
                (StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail.as_str(), &[][..], None)
            }
            ApiError::HostNotAllowed(detail) => {
                (StatusCode::FORBIDDEN, "host-not-allowed", "Host not allowed", detail.as_str(), &[][..], None)
            }
            ApiError::NotFound(detail) => {
                (StatusCode::NOT_FOUND, "not-found", "Not found", detail.as_str(), &[][..], None)
            }
            ApiError::Conflict { detail, operation } => {
                (StatusCode::CONFLICT, "conflict", "Conflict", detail.as_str(), &[][..], operation.as_deref())
            }
            ApiError::TooLarge(detail) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request too large", detail.as_str(), &[][..], None)
            }
            ApiError::TooManyRequests { detail, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests", detail.as_str(), &[][..], None)
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the server failed; see its log",
                    &[][..],
                    None,
                )
            }
            ApiError::Plugin(detail) => {
                (StatusCode::BAD_GATEWAY, "plugin-failed", "Plugin failed", detail.as_str(), &[][..], None)
            }
            ApiError::InsufficientStorage(detail) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
                detail.as_str(),
                &[][..],
                None,
            ),
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "store unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail.as_str(), &[][..], None)
            }
        };
        let kind = format!("https://opal.dev/problems/{kind}");
        let body = Problem { kind: &kind, title, status: status.as_u16(), detail, errors, operation };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"opal\""));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_SECONDS));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                // Whole seconds, rounded up: a retry at that time finds a token.
                let seconds = retry_after.as_millis().div_ceil(1000).max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
            }
            _ => {}
        }
        response
    }
}

/// `Retry-After` on a 503: a node reconnects to its database within a few seconds.
const UNAVAILABLE_RETRY_SECONDS: u64 = 2;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(why) => {
                ApiError::Unavailable(format!("the store cannot take this request now ({why}); retry later"))
            }
            // A read that failed on the redb file's storage.
            e @ StoreError::Storage(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed) => {
                ApiError::Unavailable(format!("storage failed: {e}; retry later"))
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::UnknownType(name) => {
                ApiError::NotFound(format!("no plugin implements operation type {name:?}"))
            }
            SubmitError::Invalid(errors) => ApiError::Invalid { detail: "the params are invalid".into(), errors },
            SubmitError::Busy(op) => ApiError::Conflict {
                detail: format!(
                    "a {} operation is already {} on target {:?}",
                    op.op_type,
                    op.status.as_str(),
                    op.target
                ),
                operation: Some(op),
            },
            SubmitError::KeyReused(op) => ApiError::Conflict {
                detail: "idempotency_key was already used for a different request".into(),
                operation: Some(op),
            },
            e @ SubmitError::LowSpace(_) => ApiError::InsufficientStorage(e.to_string()),
            e @ SubmitError::Draining(_) => ApiError::Unavailable(e.to_string()),
            SubmitError::Plugin(fault @ crate::sandbox::Fault::NoInstance(_)) => {
                ApiError::Unavailable(format!("every sandbox instance is busy: the plugin {fault}"))
            }
            SubmitError::Plugin(fault) => {
                ApiError::Plugin(format!("the plugin could not validate the params: it {fault}"))
            }
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound(id) => ApiError::NotFound(format!("no operation {id}")),
            CancelError::AlreadyEnded(op) => ApiError::Conflict {
                detail: format!("operation already ended ({})", op.status.as_str()),
                operation: Some(op),
            },
            CancelError::Store(e) => e.into(),
        }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Invalid(errors) => ApiError::Invalid { detail: "the schedule is invalid".into(), errors },
            ScheduleError::Submit(e) => e.into(),
            ScheduleError::NotFound(id) => ApiError::NotFound(format!("no schedule {id}")),
            e @ ScheduleError::Full(_) => ApiError::Conflict { detail: e.to_string(), operation: None },
            ScheduleError::Store(e) => e.into(),
        }
    }
}
