//! `auth`: who is asking, and what they may do.
//!
//! Owns the credentials a server accepts (static API tokens, kept as sha256
//! hashes, and HS256 JWTs), turns a bearer token into a [`Principal`] (a name,
//! a [`Role`] and a [`Scope`] of targets), and the per-principal limits
//! ([`limits`]). It decides nothing about HTTP or sockets: `api` and `ws`
//! ask it, and map its answers to status codes and close codes.
//!
//! With no credentials configured the server is in **dev mode**: every
//! caller is the anonymous admin, and `server::start` refuses to listen on
//! anything but loopback (see [`check_bind`]).

mod access;
mod file;
mod host;
mod jwt;
pub mod limits;
mod scope;
mod token;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

pub use access::{Access, MAX_UNAUTHENTICATED, Refused, Unauthenticated};
pub use file::MIN_JWT_SECRET;
pub(crate) use file::{AuthSection, LimitsSection};
pub use jwt::{Claims, looks_like_jwt, sign as sign_jwt, verify as verify_jwt};
pub use limits::RateLimiter;
pub use scope::{Scope, TargetGlob};
pub use token::{ApiToken, TOKEN_PREFIX, TokenHash, generate_token};

/// What a principal may do. Ordered: each role may do what the ones below it
/// may, except that `/metrics` is for `metrics` and `admin` only (see
/// `Principal::reads_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read `GET /metrics` and nothing else: for a Prometheus scraper.
    Metrics,
    /// Read operations, events, plugins, schedules and status within its targets.
    Viewer,
    /// A viewer that may also start and cancel operations, and create and
    /// delete schedules, within its targets.
    Operator,
    /// Everything, on every target.
    Admin,
}

impl Role {
    /// The name used in config, JWTs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller (or the anonymous one, in dev mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `user:<name>` (a token's name or a JWT's `sub`, one namespace: a JWT
    /// whose `sub` is a token's name is the same principal, for the audit and
    /// the limits); `anonymous` in dev mode.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Which targets it may see and act on.
    pub scope: Scope,
    /// When its credential stops being valid (a JWT's `exp`).
    pub expires: Option<SystemTime>,
}

impl Principal {
    /// The caller of a server without credentials: an admin, unnamed.
    pub fn anonymous() -> Principal {
        Principal { name: "anonymous".into(), role: Role::Admin, scope: Scope::All, expires: None }
    }

    /// True for the dev-mode caller (exempt from the per-principal limits).
    pub fn is_anonymous(&self) -> bool {
        self.name == "anonymous"
    }

    /// What `created_by` and `cancelled_by` record: `api` in dev mode (there
    /// is no one to name), else the principal's name.
    pub fn audit_name(&self) -> &str {
        if self.is_anonymous() { "api" } else { &self.name }
    }

    /// Whether the principal has at least `role`.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether it may scrape `GET /metrics`: admins and the `metrics` role
    /// (a viewer may not: the figures span every target).
    pub fn reads_metrics(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Metrics)
    }

    /// Whether `target` is inside the principal's scope.
    pub fn sees(&self, target: &str) -> bool {
        self.scope.allows(target)
    }
}

/// Why a bearer token was not accepted. The messages go to the client: they
/// say what is wrong with the token, never what the server expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    #[error("this server requires a bearer token (Authorization: Bearer <token>)")]
    Missing,
    /// The header or token is not shaped right.
    #[error("malformed credentials: {0}")]
    Malformed(String),
    /// Not one of the configured API tokens.
    #[error("unknown token")]
    UnknownToken,
    /// A JWT whose signature does not match the configured secret.
    #[error("the token's signature does not match")]
    BadSignature,
    /// A JWT past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// A JWT with missing or invalid claims.
    #[error("{0}")]
    Claims(String),
    /// A JWT presented to a server with no `jwt_secret`.
    #[error("this server does not accept JWTs (no jwt_secret is configured)")]
    JwtNotAccepted,
}

/// The server's credentials, from the `[auth]` config section.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Static API tokens, by hash.
    pub tokens: Vec<ApiToken>,
    /// The HS256 secret for JWTs, if JWTs are accepted (at least 32 bytes).
    pub jwt_secret: Option<Vec<u8>>,
    /// How long a WebSocket without an `Authorization` header has to send its `auth` message.
    pub ws_auth_timeout: Duration,
    /// Origins allowed to call the API from a browser (CORS) and to open the WebSocket.
    pub cors_origins: Vec<String>,
    /// Names besides loopback that requests may address the server by (`Host`):
    /// `name` (any port) or `name:port`. See `host.rs` for why it matters.
    pub allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &self.tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("ws_auth_timeout", &self.ws_auth_timeout)
            .field("cors_origins", &self.cors_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl AuthConfig {
    /// A config with no credentials: dev mode.
    pub fn dev() -> AuthConfig {
        AuthConfig { ws_auth_timeout: Duration::from_secs(10), ..Default::default() }
    }

    /// True when no credentials are configured.
    pub fn dev_mode(&self) -> bool {
        self.tokens.is_empty() && self.jwt_secret.is_none()
    }

    /// The principal a request with `authorization` (the header's value, if
    /// any) stands for. In dev mode every request is the anonymous admin,
    /// whatever it carries.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if self.dev_mode() {
            return Ok(Principal::anonymous());
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError::Malformed("expected Authorization: Bearer <token>".into())),
        };
        self.authenticate_token(token)
    }

    /// The principal a bare bearer token stands for (as sent in a WebSocket `auth` message).
    pub fn authenticate_token(&self, token: &str) -> Result<Principal, AuthError> {
        if self.dev_mode() {
            return Ok(Principal::anonymous());
        }
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if looks_like_jwt(token) {
            let secret = self.jwt_secret.as_deref().ok_or(AuthError::JwtNotAccepted)?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let claims = verify_jwt(token, secret, now)?;
            let scope = match (claims.role, &claims.targets) {
                (Role::Admin, _) => Scope::All,
                (Role::Metrics, _) => Scope::Targets(Vec::new().into()),
                (_, Some(targets)) => Scope::from_patterns(targets).map_err(AuthError::Claims)?,
                (_, None) => return Err(AuthError::Claims("targets are required".into())),
            };
            return Ok(Principal {
                name: format!("user:{}", claims.sub),
                role: claims.role,
                scope,
                expires: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
            });
        }
        token::find(&self.tokens, token).ok_or(AuthError::UnknownToken)
    }
}

/// Refuses to serve without credentials on anything but loopback: dev mode
/// lets everyone in, so it must be reachable from this machine only.
pub fn check_bind(listen: SocketAddr, auth: &AuthConfig) -> Result<(), String> {
    if auth.dev_mode() && !listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without credentials: with no [auth] tokens and no jwt_secret the \
             server is in dev mode and lets everyone in as admin, so it only binds a loopback address. Configure \
             credentials (see docs/operations.md, \"Auth\"; `opal token new` makes a token) or listen on 127.0.0.1."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> AuthConfig {
        let (token, hash) = ("opal_test_token_0123456789", TokenHash::of("opal_test_token_0123456789"));
        let _ = token;
        AuthConfig {
            tokens: vec![ApiToken {
                name: "ci".into(),
                hash,
                role: Role::Operator,
                scope: Scope::from_patterns(&["site-a/*"]).unwrap(),
            }],
            jwt_secret: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
            ..AuthConfig::dev()
        }
    }

    #[test]
    fn dev_mode_lets_everyone_in_on_loopback_only() {
        let dev = AuthConfig::dev();
        assert_eq!(dev.authenticate(None), Ok(Principal::anonymous()));
        assert!(check_bind("127.0.0.1:0".parse().unwrap(), &dev).is_ok());
        assert!(check_bind("[::1]:8080".parse().unwrap(), &dev).is_ok());
        let err = check_bind("0.0.0.0:8080".parse().unwrap(), &dev).unwrap_err();
        assert!(err.contains("refusing to listen on 0.0.0.0:8080 without credentials"), "{err}");
        assert!(check_bind("0.0.0.0:8080".parse().unwrap(), &config()).is_ok());
    }

    #[test]
    fn tokens_and_jwts_become_principals() {
        let auth = config();
        let ci = auth.authenticate(Some("Bearer opal_test_token_0123456789")).unwrap();
        assert_eq!((ci.name.as_str(), ci.role), ("user:ci", Role::Operator));
        assert!(ci.sees("site-a/x") && !ci.sees("site-b/x"));
        let jwt = sign_jwt(
            &json!({"sub": "ann", "role": "admin", "exp": 4_000_000_000u64}),
            auth.jwt_secret.as_ref().unwrap(),
        );
        let ann = auth.authenticate(Some(&format!("bearer {jwt}"))).unwrap();
        assert_eq!((ann.name.as_str(), ann.role, ann.scope.clone()), ("user:ann", Role::Admin, Scope::All));
        assert!(ann.expires.is_some());
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(Some("Bearer nope")), Err(AuthError::UnknownToken));
        assert!(matches!(auth.authenticate(Some("Basic abc")), Err(AuthError::Malformed(_))));
        let expired = sign_jwt(&json!({"sub": "ann", "role": "admin", "exp": 1}), auth.jwt_secret.as_ref().unwrap());
        assert_eq!(auth.authenticate_token(&expired), Err(AuthError::Expired));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        let viewer = Principal { role: Role::Viewer, ..Principal::anonymous() };
        assert!(viewer.has(Role::Viewer) && !viewer.has(Role::Operator));
    }
}
