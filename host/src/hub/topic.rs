//! Topics a WebSocket client can subscribe to.

use std::fmt;
use std::str::FromStr;

use crate::model::{Event, EventKind, Operation, OperationId};

/// A stream of events a client can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `operations`: lifecycle and progress of every operation (no log lines).
    Operations,
    /// `op:<id>`: everything about one operation, log lines included.
    Op(OperationId),
}

impl Topic {
    /// Whether `event` belongs to this topic.
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Topic::Operations => event.kind != EventKind::Log,
            Topic::Op(id) => event.op_id == *id,
        }
    }

    /// Whether `op` belongs in this topic's snapshot.
    pub fn covers(&self, op: &Operation) -> bool {
        match self {
            Topic::Operations => true,
            Topic::Op(id) => op.id == *id,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Operations => f.write_str("operations"),
            Topic::Op(id) => write!(f, "op:{id}"),
        }
    }
}

/// Why a topic name was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown topic {0:?}: expected \"operations\" or \"op:<operation id>\"")]
pub struct UnknownTopic(pub String);

impl FromStr for Topic {
    type Err = UnknownTopic;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "operations" {
            return Ok(Topic::Operations);
        }
        s.strip_prefix("op:")
            .and_then(|id| id.parse().ok())
            .map(Topic::Op)
            .ok_or_else(|| UnknownTopic(s.chars().take(100).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let id = OperationId::new();
        for topic in [Topic::Operations, Topic::Op(id)] {
            assert_eq!(topic.to_string().parse::<Topic>(), Ok(topic));
        }
        assert!("op:nope".parse::<Topic>().is_err());
        assert!("target:x".parse::<Topic>().is_err());
    }
}
