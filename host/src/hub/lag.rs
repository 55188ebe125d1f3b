//! Coalesced delivery for a connection that fell behind.
//!
//! When a connection's queue is full, its further events wait here instead.
//! Progress events are coalesced: only the latest progress of each operation
//! is kept, and none once the operation's terminal event has arrived (that
//! event carries the final state). Every other event (lifecycle, terminal,
//! log) is kept, in seq order. As the connection's queue empties, the socket
//! task refills it from here; once this is empty the connection is back to
//! direct delivery. A connection that stays here past the deadline, or whose
//! backlog would pass [`LAG_CAP`] even after coalescing, is closed.

use std::collections::{HashMap, VecDeque};

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use super::queue::{self, Frames};
use crate::model::{Event, EventKind, OperationId, Seq};

/// Most events a lagging connection may have waiting, after coalescing.
pub const LAG_CAP: usize = 10_000;

/// A lagging connection's backlog.
pub(super) struct Lag {
    /// When the connection fell behind.
    pub(super) since: Instant,
    pending: VecDeque<Event>,
    /// The seq of the newest progress event per operation; older ones are stale.
    latest_progress: HashMap<OperationId, Seq>,
    /// The latest `system.status` frame not yet sent.
    system: Option<Utf8Bytes>,
    /// The bytes of the frames in `pending`: what this backlog holds on to
    /// (the hub caps the sum over every lagging connection).
    bytes: usize,
}

/// Whether a lagging connection can keep up.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Backlog {
    /// Within the cap.
    Ok,
    /// Over the cap even after coalescing: close the connection.
    Overflow,
}

impl Lag {
    pub(super) fn new() -> Self {
        Lag { since: Instant::now(), pending: VecDeque::new(), latest_progress: HashMap::new(), system: None, bytes: 0 }
    }

    /// The bytes of the frames waiting here.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn stale(&self, event: &Event) -> bool {
        event.kind == EventKind::Progress && self.latest_progress.get(&event.op_id) != Some(&event.seq)
    }

    /// Adds an event to the backlog.
    pub(super) fn push(&mut self, event: Event) -> Backlog {
        if event.kind == EventKind::Progress {
            self.latest_progress.insert(event.op_id, event.seq);
        } else if event.kind.is_terminal() {
            self.latest_progress.remove(&event.op_id);
        }
        self.bytes += event.frame.len();
        self.pending.push_back(event);
        if self.pending.len() > LAG_CAP {
            let latest = &self.latest_progress;
            self.pending.retain(|e| !(e.kind == EventKind::Progress && latest.get(&e.op_id) != Some(&e.seq)));
            self.bytes = self.pending.iter().map(|e| e.frame.len()).sum();
        }
        if self.pending.len() > LAG_CAP { Backlog::Overflow } else { Backlog::Ok }
    }

    /// Keeps the newest `system.status` frame.
    pub(super) fn push_system(&mut self, frame: Utf8Bytes) {
        self.system = Some(frame);
    }

    /// Moves what fits into `queue`, as one run; true once the backlog is empty.
    pub(super) fn drain_into(&mut self, queue: &queue::Sender) -> bool {
        let room = queue.room();
        if room == 0 {
            return false;
        }
        let mut frames = Vec::new();
        while frames.len() < room
            && let Some(event) = self.pending.pop_front()
        {
            self.bytes -= event.frame.len();
            if self.stale(&event) {
                continue;
            }
            if event.kind == EventKind::Progress {
                self.latest_progress.remove(&event.op_id);
            }
            frames.push(event.frame);
        }
        let drained = self.pending.is_empty();
        if drained && frames.len() < room {
            frames.extend(self.system.take());
        }
        if frames.is_empty() {
            return drained;
        }
        queue.try_send(Frames::new(frames)).is_ok() && drained && self.system.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Operation;

    fn event(seq: Seq, kind: EventKind, op: &Operation) -> Event {
        Event {
            seq,
            kind,
            op_id: op.id,
            operation: Some(Arc::new(op.clone())),
            frame: Utf8Bytes::from(format!("{seq}")),
        }
    }

    fn drained(lag: &mut Lag) -> Vec<String> {
        let (tx, mut rx) = queue::bounded(100);
        assert!(lag.drain_into(&tx));
        let mut out = Vec::new();
        while let Some(frames) = rx.try_recv() {
            out.extend(frames.iter().map(ToString::to_string));
        }
        out
    }

    #[test]
    fn only_the_latest_progress_survives_and_nothing_else_is_dropped() {
        let (a, b) = (
            Operation::pending("demo", "1", "a", serde_json::json!({}), "api"),
            Operation::pending("demo", "1", "b", serde_json::json!({}), "api"),
        );
        let mut lag = Lag::new();
        lag.push(event(1, EventKind::Started, &a));
        lag.push(event(2, EventKind::Progress, &a));
        lag.push(event(3, EventKind::Progress, &b));
        lag.push(event(4, EventKind::Log, &a));
        lag.push(event(5, EventKind::Progress, &a));
        lag.push(event(6, EventKind::Progress, &b));
        lag.push(event(7, EventKind::Completed, &b));
        assert_eq!(drained(&mut lag), ["1", "4", "5", "7"], "seq order; b's progress gave way to its terminal event");
    }

    #[test]
    fn a_backlog_past_the_cap_overflows() {
        let op = Operation::pending("demo", "1", "a", serde_json::json!({}), "api");
        let mut lag = Lag::new();
        for seq in 1..=LAG_CAP as Seq {
            assert_eq!(lag.push(event(seq, EventKind::Log, &op)), Backlog::Ok);
        }
        assert_eq!(lag.push(event(LAG_CAP as Seq + 1, EventKind::Log, &op)), Backlog::Overflow);
        // Progress alone never overflows: it coalesces.
        let mut lag = Lag::new();
        for seq in 1..=3 * LAG_CAP as Seq {
            assert_eq!(lag.push(event(seq, EventKind::Progress, &op)), Backlog::Ok);
        }
    }
}
