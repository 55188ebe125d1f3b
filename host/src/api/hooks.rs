//! `POST /api/v1/hooks/{name}`: a signed webhook delivery starts the
//! operation its `[[hooks]]` entry maps it to (see `crate::hooks` and
//! docs/hooks.md). No bearer token: the signature is the credential, and the
//! caller recorded on the operation is `hook:<name>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::{ApiError, Problem};
use crate::auth::RateLimiter;
use crate::engine::{SubmitRequest, Submitted};
use crate::hooks::signature::{self, Refused};
use crate::hooks::{Hook, Mapped, Scheme};
use crate::model::{AuditEntry, FieldError, Operation};

/// The configured hooks, with a rate limiter each.
pub struct Hooks {
    by_name: BTreeMap<String, (Hook, RateLimiter)>,
}

impl Hooks {
    /// The hooks of the config.
    pub fn new(hooks: &[Hook]) -> Arc<Hooks> {
        let by_name = hooks
            .iter()
            .map(|h| {
                let limiter = RateLimiter::new(h.per_minute, f64::from(h.per_minute) / 60.0);
                (h.name.clone(), (h.clone(), limiter))
            })
            .collect();
        Arc::new(Hooks { by_name })
    }
}

/// A delivery a filter left out.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Ignored {
    /// Which filter did not match, and how.
    ignored: String,
}

/// The delivery's id, the idempotency key of what it starts.
fn delivery(headers: &HeaderMap) -> Option<String> {
    ["x-github-delivery", "x-opal-delivery"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(|id| id.chars().take(100).collect())
}

#[utoipa::path(post, path = "/api/v1/hooks/{name}", tag = "hooks", security(()),
    params(("name" = String, Path, description = "The hook's name, as in its [[hooks]] entry")),
    request_body(content = Object, description = "The sender's payload (JSON), signed", content_type = "application/json"),
    responses(
        (status = 202, description = "Started: the operation", body = Operation,
            headers(("Location" = String, description = "/api/v1/operations/{id}"))),
        (status = 200, description = "A redelivery (same X-GitHub-Delivery or X-Opal-Delivery): the operation it started the first time; or `{ignored}` when a filter did not match", body = Operation),
        (status = 400, description = "The body is not JSON, or a pointer the mapping needs is missing (named in `errors`), or the params are invalid", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 401, description = "The signature is missing or does not match (or is older than 5 minutes)", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No hook has that name", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "The operation is already active on the target", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the hook's max_body_kib", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 429, description = "Over the hook's rate_per_minute", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a delivery may succeed"))),
        (status = 503, description = "The store cannot take writes now", body = Problem<'static>, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
    ))]
/// `POST /api/v1/hooks/{name}`.
pub(super) async fn deliver(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    super::caller::Remote(remote): super::caller::Remote,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let Some((hook, limiter)) = app.hooks.by_name.get(&name) else {
        return Err(ApiError::NotFound(format!("no hook named {name:?}")));
    };
    limiter.take(&hook.name).map_err(|retry_after| ApiError::TooManyRequests {
        detail: format!("hook {name} takes at most {} deliveries a minute", hook.per_minute),
        retry_after,
    })?;
    let body = super::body::bytes(body)?;
    if body.len() > hook.max_body {
        return Err(ApiError::TooLarge(format!("hook {name} takes bodies of at most {} KiB", hook.max_body / 1024)));
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let checked = match hook.scheme {
        Scheme::Github => signature::verify_github(hook.secret.bytes(), text("x-hub-signature-256"), &body),
        Scheme::Opal => {
            let now = chrono::Utc::now().timestamp();
            signature::verify_opal(hook.secret.bytes(), text("x-opal-signature"), &body, now)
        }
    };
    if let Err(why) = checked {
        tracing::warn!(hook = %name, reason = %why, "webhook delivery refused");
        let detail = match why {
            Refused::Stale(_) => "the signature is too old (or too far in the future)",
            _ => "the signature is missing or does not match",
        };
        return Err(ApiError::Unauthorized(detail.into()));
    }
    let payload: serde_json::Value = serde_json::from_slice(&body).map_err(|e| ApiError::Invalid {
        detail: "the body is not JSON".into(),
        errors: vec![FieldError::new("", e.to_string())],
    })?;
    let principal = format!("hook:{name}");
    let entry = AuditEntry::new(&principal, remote, "hook.deliver", name.clone());
    let header = |wanted: &str| headers.get(wanted).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (target, params) = match hook.map(header, &payload) {
        Ok(Mapped::Start { target, params }) => (target, params),
        Ok(Mapped::Ignored(why)) => {
            let mut entry = entry;
            entry.result = format!("ignored: {why}");
            app.engine.audit(entry).await;
            return Ok((StatusCode::OK, Json(Ignored { ignored: why })).into_response());
        }
        Err(unmapped) => {
            return Err(ApiError::Invalid {
                detail: format!("the payload does not fit hook {name}: {}", unmapped.message),
                errors: vec![FieldError::new(unmapped.field, unmapped.message)],
            });
        }
    };
    let request = SubmitRequest {
        op_type: hook.op_type.clone(),
        target,
        params,
        created_by: principal,
        idempotency_key: delivery(&headers).map(|d| format!("hook:{name}:{d}")),
        version: None,
        child: None,
        audit: Some(entry),
    };
    let (status, operation) = match app.engine.submit(request).await? {
        Submitted::Created(op) => (StatusCode::ACCEPTED, op),
        Submitted::Replayed(op) => (StatusCode::OK, op),
    };
    let location = format!("/api/v1/operations/{}", operation.id);
    Ok((status, [(header::LOCATION, location)], Json(operation)).into_response())
}
