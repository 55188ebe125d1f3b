//! Building `snapshot` frames from the hub's in-memory view.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use super::{State, Topic};
use crate::model::{Operation, Seq};

#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: String,
    seq: Seq,
    reset: bool,
    operations: Vec<&'a Operation>,
}

/// The snapshot of `topic` at `seq`: active operations (oldest first), then
/// recent terminal ones (newest first); then `known` ones the view lacks.
pub(super) fn frame(state: &State, topic: &Topic, seq: Seq, reset: bool, known: &[Operation]) -> Utf8Bytes {
    let mut active: Vec<&Operation> =
        state.active.values().map(|op| op.as_ref()).filter(|op| topic.covers(op)).collect();
    active.sort_by_key(|op| op.id);
    let mut operations = active;
    operations.extend(state.recent.iter().map(|op| op.as_ref()).filter(|op| topic.covers(op)));
    for op in known {
        // Only terminal operations may come from outside the view: an active
        // one is always in it, and a newer state of it would be overwritten.
        if op.status.is_terminal() && topic.covers(op) && !operations.iter().any(|o| o.id == op.id) {
            operations.push(op);
        }
    }
    let snapshot = Snapshot { kind: "snapshot", topic: topic.to_string(), seq, reset, operations };
    Utf8Bytes::from(serde_json::to_string(&snapshot).expect("operations serialize"))
}
