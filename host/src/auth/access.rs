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

    /// Whether a browser page at `origin` may use the API or open the
    /// WebSocket: its own page (the origin names the `host` the request was
    /// sent to) or an origin on the allow-list.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let same = host.is_some_and(|host| {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
        });
        same || self.auth.cors_origins.iter().any(|o| o == origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_the_page_itself_or_listed() {
        let auth = AuthConfig { cors_origins: vec!["https://ops.example.com".into()], ..AuthConfig::dev() };
        let access = Access::new(auth, Limits::default());
        assert!(access.origin_allowed("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(access.origin_allowed("https://ops.example.com", Some("127.0.0.1:8080")));
        assert!(!access.origin_allowed("https://evil.example", Some("127.0.0.1:8080")));
        assert!(!access.origin_allowed("http://127.0.0.1:9999", Some("127.0.0.1:8080")));
        assert!(!access.origin_allowed("null", None));
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
