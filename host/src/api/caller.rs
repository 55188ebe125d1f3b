//! [`Caller`]: the authenticated principal of a request, as an extractor,
//! and the role checks every handler makes with it.
//!
//! Every `/api/v1` handler but `openapi.json` takes a `Caller`, so a handler
//! that forgets authentication does not compile into the router's table of
//! endpoints that the role × endpoint test walks.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::problem::ApiError;
use crate::auth::{Principal, Role};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        Caller::from_headers(&parts.headers, app)
    }
}

impl Caller {
    /// Authenticates the request with these headers.
    pub(super) fn from_headers(headers: &axum::http::HeaderMap, app: &AppState) -> Result<Caller, ApiError> {
        let header = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(
                value.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?,
            ),
        };
        app.access.auth.authenticate(header).map(Caller).map_err(|e| ApiError::Unauthorized(e.to_string()))
    }

    /// `Ok` if the caller has at least `role`; else a 403 saying which role it takes.
    pub fn require(&self, role: Role, action: &str) -> Result<(), ApiError> {
        if self.0.has(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{action} takes the {} role; {} is a {}",
                role.as_str(),
                self.0.name,
                self.0.role.as_str()
            )))
        }
    }

    /// `Ok` if `target` is in the caller's scope; else a 403 naming it. Only
    /// for targets the caller names itself: a resource outside the scope is
    /// a 404, as if it did not exist.
    pub fn require_target(&self, target: &str) -> Result<(), ApiError> {
        if self.0.sees(target) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("target {target:?} is outside the targets of {}", self.0.name)))
        }
    }
}
