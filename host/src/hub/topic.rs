//! Topics a WebSocket client can subscribe to.

use std::fmt;
use std::str::FromStr;

use crate::model::{EventKind, Operation, OperationId};

/// The longest topic name accepted, in bytes.
const MAX_TOPIC: usize = 300;

/// A stream of events a client can subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `operations`: lifecycle and progress of every operation (no log lines).
    Operations,
    /// `target:<t>`: lifecycle and progress of the operations on one target.
    Target(String),
    /// `type:<name>`: lifecycle and progress of the operations of one type.
    Type(String),
    /// `op:<id>`: everything about one operation, log lines included.
    Op(OperationId),
    /// `system`: `system.status`, whenever it changes.
    System,
}

/// What topic matching needs to know of an event.
#[derive(Debug, Clone, Copy)]
pub struct EventKey<'a> {
    /// The event kind; `None` for `system.status`.
    pub kind: Option<EventKind>,
    /// The operation it is about, if any.
    pub op_id: Option<OperationId>,
    /// That operation's type and target (absent for log lines).
    pub op: Option<(&'a str, &'a str)>,
}

impl Topic {
    /// Whether an event belongs to this topic.
    pub fn matches(&self, event: &EventKey<'_>) -> bool {
        let lifecycle = matches!(event.kind, Some(k) if k != EventKind::Log);
        match self {
            Topic::Operations => lifecycle,
            Topic::Target(t) => lifecycle && event.op.is_some_and(|(_, target)| target == t),
            Topic::Type(n) => lifecycle && event.op.is_some_and(|(op_type, _)| op_type == n),
            Topic::Op(id) => event.op_id == Some(*id),
            Topic::System => event.kind.is_none(),
        }
    }

    /// Whether `op` belongs in this topic's snapshot.
    pub fn covers(&self, op: &Operation) -> bool {
        match self {
            Topic::Operations => true,
            Topic::Target(t) => op.target == *t,
            Topic::Type(n) => op.op_type == *n,
            Topic::Op(id) => op.id == *id,
            Topic::System => false,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Operations => f.write_str("operations"),
            Topic::Target(t) => write!(f, "target:{t}"),
            Topic::Type(n) => write!(f, "type:{n}"),
            Topic::Op(id) => write!(f, "op:{id}"),
            Topic::System => f.write_str("system"),
        }
    }
}

/// Why a topic name was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown topic {0:?}: expected \"operations\", \"system\", \"target:<target>\", \"type:<name>\" or \"op:<operation id>\""
)]
pub struct UnknownTopic(pub String);

impl FromStr for Topic {
    type Err = UnknownTopic;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownTopic(s.chars().take(100).collect());
        if s.len() > MAX_TOPIC {
            return Err(unknown());
        }
        let non_empty = |rest: &str| (!rest.is_empty() && !rest.chars().any(char::is_control)).then(|| rest.to_owned());
        match s.split_once(':') {
            None if s == "operations" => Ok(Topic::Operations),
            None if s == "system" => Ok(Topic::System),
            Some(("op", id)) => id.parse().map(Topic::Op).map_err(|_| unknown()),
            Some(("target", t)) => non_empty(t).map(Topic::Target).ok_or_else(unknown),
            Some(("type", n)) => non_empty(n).map(Topic::Type).ok_or_else(unknown),
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let id = OperationId::new();
        for topic in [
            Topic::Operations,
            Topic::System,
            Topic::Op(id),
            Topic::Target("site-a/x:1".into()),
            Topic::Type("demo".into()),
        ] {
            assert_eq!(topic.to_string().parse::<Topic>(), Ok(topic));
        }
        for bad in ["op:nope", "target:", "type:", "bogus", "Operations", "target:a\nb"] {
            assert!(bad.parse::<Topic>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_lines_reach_only_the_operation_topic() {
        let id = OperationId::new();
        let log = EventKey { kind: Some(EventKind::Log), op_id: Some(id), op: Some(("demo", "t")) };
        let progress = EventKey { kind: Some(EventKind::Progress), op_id: Some(id), op: Some(("demo", "t")) };
        for topic in [Topic::Operations, Topic::Target("t".into()), Topic::Type("demo".into())] {
            assert!(!topic.matches(&log) && topic.matches(&progress), "{topic}");
        }
        assert!(Topic::Op(id).matches(&log));
        assert!(!Topic::Target("u".into()).matches(&progress));
        assert!(!Topic::System.matches(&progress));
    }
}
