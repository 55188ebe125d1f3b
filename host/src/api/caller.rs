//! [`Caller`]: the authenticated principal of a request, as an extractor,
//! and the role checks every handler makes with it.
//!
//! Every `/api/v1` handler but `openapi.json` takes a `Caller`, so a handler
//! that forgets authentication does not compile into the router's table of
//! endpoints that the role × endpoint test walks.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::problem::ApiError;
use crate::auth::{Principal, Role};

/// Who is calling, and from where (the peer's address, for the audit log).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal, pub Option<String>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let mut caller = Caller::from_headers(&parts.headers, app)?;
        caller.1 = remote(parts);
        Ok(caller)
    }
}

/// The peer's address, for handlers without a [`Caller`] (webhooks).
pub(super) struct Remote(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Remote(remote(parts)))
    }
}

/// The peer's address, when the server was started with it (it always is).
pub(super) fn remote(parts: &Parts) -> Option<String> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.to_string())
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
        app.access
            .auth
            .authenticate(header)
            .map(|principal| Caller(principal, None))
            .map_err(|e| ApiError::Unauthorized(e.to_string()))
    }

    /// An audit entry for `action` on `object` by this caller.
    pub fn entry(&self, action: &str, object: impl Into<String>) -> crate::model::AuditEntry {
        crate::model::AuditEntry::new(self.0.audit_name(), self.1.clone(), action, object)
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
