//! The authorization hook on the subscribe path.
//!
//! Every topic a client subscribes to passes through [`Authorize`]. Until
//! credentials exist ([`AllowAll`]) everything is allowed; the auth work plugs
//! a real policy in here without touching the hub or the protocol.

use super::Topic;

/// Who is asking. Connections are anonymous until authentication exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials were presented (dev mode).
    Anonymous,
}

/// Decides whether a principal may subscribe to a topic.
pub trait Authorize: Send + Sync + 'static {
    /// True to allow.
    fn may_subscribe(&self, principal: &Principal, topic: &Topic) -> bool;
}

/// Allows every subscription: the policy of a server without credentials.
pub struct AllowAll;

impl Authorize for AllowAll {
    fn may_subscribe(&self, _principal: &Principal, _topic: &Topic) -> bool {
        true
    }
}
