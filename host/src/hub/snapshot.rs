//! Building `snapshot` frames from the hub's in-memory view.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{State, Topic};
use crate::model::{Operation, Seq};

#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: String,
    seq: Seq,
    reset: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    operations: Option<Vec<&'a Operation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a RawValue>,
    /// The subscribe's request id, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
}

/// The snapshot of `topic` at `seq`. For operation topics: active operations
/// (oldest first), then recent terminal ones (newest first), then `known`
/// ones the view lacks; only those `visible` to the connection. For
/// `system`: the latest status.
pub(super) fn frame(
    state: &State,
    topic: &Topic,
    seq: Seq,
    reset: bool,
    known: &[Operation],
    visible: &dyn Fn(&Operation) -> bool,
    id: Option<&serde_json::Value>,
) -> Utf8Bytes {
    let (operations, status_text);
    if *topic == Topic::System {
        status_text = state.system.as_ref().and_then(|frame| {
            let event: serde_json::Value = serde_json::from_str(frame.as_str()).ok()?;
            serde_json::value::to_raw_value(&event["status"]).ok()
        });
        operations = None;
    } else {
        status_text = None;
        let mut ops: Vec<&Operation> =
            state.active.values().map(|op| op.as_ref()).filter(|op| topic.covers(op) && visible(op)).collect();
        ops.sort_by_key(|op| op.id);
        ops.extend(state.recent.iter().map(|op| op.as_ref()).filter(|op| topic.covers(op) && visible(op)));
        for op in known {
            // Only terminal operations may come from outside the view: an active
            // one is always in it, and a newer state of it would be overwritten.
            if op.status.is_terminal() && topic.covers(op) && visible(op) && !ops.iter().any(|o| o.id == op.id) {
                ops.push(op);
            }
        }
        operations = Some(ops);
    }
    let snapshot = Snapshot {
        kind: "snapshot",
        topic: topic.to_string(),
        seq,
        reset,
        operations,
        status: status_text.as_deref(),
        id,
    };
    Utf8Bytes::from(serde_json::to_string(&snapshot).expect("snapshots serialize"))
}
