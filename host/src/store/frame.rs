//! Event frames as both backends store them: built once when the event is
//! committed, parsed back for fan-out when read from the store.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::model::{Event, EventKind, LogLevel, Operation, OperationId, Seq, Timestamp};

/// The frame of an operation event; `op_json` is the operation, serialized.
pub(crate) fn operation(seq: Seq, kind: EventKind, at: Timestamp, op_json: &str) -> String {
    format!(r#"{{"type":"event","seq":{seq},"event":"{}","at":"{at}","operation":{op_json}}}"#, kind.as_str())
}

#[derive(Serialize)]
struct LogFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: Seq,
    event: &'static str,
    at: Timestamp,
    operation_id: OperationId,
    level: LogLevel,
    message: &'a str,
}

/// The frame of a log line.
pub(crate) fn log(seq: Seq, at: Timestamp, op_id: OperationId, level: LogLevel, message: &str) -> String {
    let frame =
        LogFrame { kind: "event", seq, event: EventKind::Log.as_str(), at, operation_id: op_id, level, message };
    serde_json::to_string(&frame).expect("a log frame serializes")
}

/// The parts of a stored frame that fan-out needs.
#[derive(Deserialize)]
struct StoredFrame {
    event: EventKind,
    operation: Option<Operation>,
    operation_id: Option<OperationId>,
}

/// The event a stored frame records.
pub(crate) fn parse(seq: Seq, op_id: OperationId, text: String) -> Result<Event, serde_json::Error> {
    let parsed: StoredFrame = serde_json::from_str(&text)?;
    Ok(Event {
        seq,
        kind: parsed.event,
        op_id: parsed.operation_id.unwrap_or(op_id),
        operation: parsed.operation.map(Arc::new),
        frame: Utf8Bytes::from(text),
    })
}
