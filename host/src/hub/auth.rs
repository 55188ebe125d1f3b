//! The authorization hook on the subscribe path.
//!
//! Every topic a client subscribes to passes through [`Authorize`]. The
//! server's policy is [`TargetScopes`]: a `target:<t>` topic outside the
//! principal's scope is refused; every other topic is allowed, and what it
//! carries is filtered per connection by the principal's scope (see
//! `Hub::connect_as`), so `operations` and `type:<name>` show only the
//! operations the principal may see.

use super::Topic;
pub use crate::auth::Principal;

/// Decides whether a principal may subscribe to a topic.
pub trait Authorize: Send + Sync + 'static {
    /// True to allow.
    fn may_subscribe(&self, principal: &Principal, topic: &Topic) -> bool;
}

/// Allows a topic unless it names a target outside the principal's scope,
/// or the principal's role reads nothing (`metrics`: only `GET /metrics`).
pub struct TargetScopes;

impl Authorize for TargetScopes {
    fn may_subscribe(&self, principal: &Principal, topic: &Topic) -> bool {
        if !principal.has(crate::auth::Role::Viewer) {
            return false;
        }
        match topic {
            Topic::Target(target) => principal.sees(target),
            Topic::Operations | Topic::Type(_) | Topic::Op(_) | Topic::System => true,
        }
    }
}
