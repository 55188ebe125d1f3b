//! [`Access`]: the credentials and limits one server enforces, shared by the
//! HTTP handlers and the WebSocket tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::limits::{ConnectionCounter, ConnectionPermit, Limits, RateLimiter};
use super::{AuthConfig, Principal};

/// A principal has as many connections open as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyConnections;

/// Credentials, limits and their live counters. One per server.
pub struct Access {
    /// Who may come in.
    pub auth: AuthConfig,
    /// The configured limits.
    pub limits: Limits,
    starts: RateLimiter,
    ws_messages: RateLimiter,
    connections: ConnectionCounter,
    /// Sockets still waiting for their `auth` message (they have no principal yet).
    unauthenticated: AtomicUsize,
}

/// Sockets that may wait for their `auth` message at once, server-wide:
/// each costs a task and a socket for up to `ws_auth_timeout`, so their
/// number must not be up to whoever can reach the port.
pub const MAX_UNAUTHENTICATED: usize = 256;

/// A socket waiting for its `auth` message; gives its place back on drop.
pub struct Unauthenticated<'a>(&'a AtomicUsize);

impl Drop for Unauthenticated<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Access {
    /// Enforces `auth` and `limits`.
    pub fn new(auth: AuthConfig, limits: Limits) -> Arc<Access> {
        Arc::new(Access {
            starts: RateLimiter::new(limits.start_burst, limits.starts_per_second),
            ws_messages: RateLimiter::new(limits.ws_message_burst, limits.ws_messages_per_second),
            connections: ConnectionCounter::new(limits.max_connections),
            unauthenticated: AtomicUsize::new(0),
            auth,
            limits,
        })
    }

    /// One operation start by `who`, or how long until it may start one.
    pub fn take_start(&self, who: &Principal) -> Result<(), Duration> {
        if who.is_anonymous() { Ok(()) } else { self.starts.take(&who.name) }
    }

    /// One WebSocket message from `who`, or how long until it may send one.
    pub fn take_ws_message(&self, who: &Principal) -> Result<(), Duration> {
        if who.is_anonymous() { Ok(()) } else { self.ws_messages.take(&who.name) }
    }

    /// A connection slot for `who`: `Ok(None)` when unlimited (dev mode),
    /// `Err` when it has the most it may.
    pub fn open_connection(&self, who: &Principal) -> Result<Option<ConnectionPermit>, TooManyConnections> {
        if who.is_anonymous() {
            return Ok(None);
        }
        self.connections.acquire(&who.name).map(Some).ok_or(TooManyConnections)
    }

    /// A place for a socket to wait for its `auth` message, or `None` when
    /// [`MAX_UNAUTHENTICATED`] sockets are waiting already.
    pub fn await_auth(&self) -> Option<Unauthenticated<'_>> {
        let waiting = self.unauthenticated.fetch_add(1, Ordering::Relaxed);
        let place = Unauthenticated(&self.unauthenticated);
        (waiting < MAX_UNAUTHENTICATED).then_some(place)
    }

    /// Whether a request addressed to `host` (its `Host` header) and, from a
    /// browser, sent by a page at `origin` may be served at all:
    /// - in dev mode, only a trusted `host` (loopback or `allowed_hosts`, see
    ///   `host.rs`): nobody needs a token, so a page that reached this server
    ///   by DNS rebinding under its own name would be admin;
    /// - with an `origin`, only the server's own page (the origin names the
    ///   `host`, and the host is trusted) or an origin on `cors_origins`.
    ///
    /// With credentials and no `origin` (curl, scripts, a proxy's health
    /// check), any `Host` is served: the token decides.
    pub fn admit_request(&self, host: Option<&str>, origin: Option<&str>) -> Result<(), Refused> {
        let trusted = host.is_some_and(|h| super::host::trusted(h, &self.auth.allowed_hosts));
        if self.auth.dev_mode() && !trusted {
            return Err(Refused::Host(host.unwrap_or_default().to_owned()));
        }
        let Some(origin) = origin else { return Ok(()) };
        if self.auth.cors_origins.iter().any(|o| o == origin) {
            return Ok(());
        }
        let names_host = host.is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        });
        match (names_host, trusted) {
            (true, true) => Ok(()),
            (true, false) => Err(Refused::UntrustedOrigin(origin.to_owned())),
            (false, _) => Err(Refused::Origin(origin.to_owned())),
        }
    }
}

/// Why a request is refused before any handler sees it (a 403 each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// Dev mode, and the request names a host that is neither loopback nor in `allowed_hosts`.
    #[error(
        "this server is in dev mode (no credentials are configured), so it answers only requests addressed to \
         localhost or a loopback address; Host {0:?} is neither. A page under another name that reaches this \
         server is what a DNS rebinding attack looks like. To serve this name, list it in auth.allowed_hosts"
    )]
    Host(String),
    /// A browser page from another origin, not in `cors_origins`.
    #[error("requests from a page at origin {0:?} are not allowed (see auth.cors_origins)")]
    Origin(String),
    /// A page whose origin names the request's host, but a host that is not trusted.
    #[error(
        "requests from a page at origin {0:?} are not allowed: its host is neither a loopback address nor in \
         auth.allowed_hosts, and the origin is not in auth.cors_origins"
    )]
    UntrustedOrigin(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(auth: AuthConfig) -> Arc<Access> {
        let auth = AuthConfig { cors_origins: vec!["https://ops.example.com".into()], ..auth };
        Access::new(auth, Limits::default())
    }

    fn with_credentials() -> AuthConfig {
        AuthConfig { jwt_secret: Some(vec![b'k'; 32]), ..AuthConfig::dev() }
    }

    #[test]
    fn origins_are_the_page_itself_or_listed() {
        for access in [access(AuthConfig::dev()), access(with_credentials())] {
            let local = Some("127.0.0.1:8080");
            assert_eq!(access.admit_request(local, None), Ok(()));
            assert_eq!(access.admit_request(local, Some("http://127.0.0.1:8080")), Ok(()));
            assert_eq!(access.admit_request(Some("localhost:8080"), Some("http://localhost:8080")), Ok(()));
            assert_eq!(access.admit_request(Some("[::1]:8080"), Some("http://[::1]:8080")), Ok(()));
            assert_eq!(access.admit_request(local, Some("https://ops.example.com")), Ok(()));
            for origin in ["https://evil.example", "http://127.0.0.1:9999", "null"] {
                assert_eq!(access.admit_request(local, Some(origin)), Err(Refused::Origin(origin.into())));
            }
        }
    }

    #[test]
    fn a_rebinding_page_is_refused() {
        let (host, origin) = (Some("evil.example:8080"), Some("http://evil.example:8080"));
        let dev = access(AuthConfig::dev());
        assert_eq!(dev.admit_request(host, origin), Err(Refused::Host("evil.example:8080".into())));
        assert_eq!(dev.admit_request(host, None), Err(Refused::Host("evil.example:8080".into())));
        assert_eq!(dev.admit_request(None, None), Err(Refused::Host(String::new())));
        // With credentials the token decides, but a browser page is still not its own origin.
        let served = access(with_credentials());
        assert_eq!(served.admit_request(host, None), Ok(()));
        assert_eq!(served.admit_request(host, origin), Err(Refused::UntrustedOrigin(origin.unwrap().into())));
    }

    #[test]
    fn allowed_hosts_are_served_as_their_own_origin() {
        for auth in [AuthConfig::dev(), with_credentials()] {
            let access = access(AuthConfig { allowed_hosts: vec!["opal.example.com".into()], ..auth });
            let host = Some("opal.example.com");
            assert_eq!(access.admit_request(host, None), Ok(()));
            assert_eq!(access.admit_request(host, Some("https://opal.example.com")), Ok(()));
            assert!(access.admit_request(host, Some("https://evil.example")).is_err());
            assert!(access.admit_request(Some("evil.example"), Some("http://evil.example")).is_err());
        }
    }

    #[test]
    fn sockets_waiting_to_authenticate_are_capped() {
        let access = Access::new(AuthConfig::dev(), Limits::default());
        let waiting: Vec<_> = (0..MAX_UNAUTHENTICATED).map(|_| access.await_auth().expect("a place")).collect();
        assert!(access.await_auth().is_none());
        drop(waiting);
        assert!(access.await_auth().is_some(), "places are given back");
    }
}
