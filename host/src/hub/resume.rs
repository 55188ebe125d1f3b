//! Subscribing: a snapshot, or a resume that replays the missed events from
//! the ring and, further back, from the store's [`History`].

use axum::extract::ws::Utf8Bytes;

use super::{CLOSE_LAGGING, Connection, Frames, History, State, Topic, key, snapshot};
use crate::model::{Event, Operation, Seq};

/// What a subscribe with `since` turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// No `since`: snapshots were sent.
    Snapshot,
    /// The missed events (this many) were replayed; then a `resumed` message.
    Replayed(usize),
    /// The gap could not be served: snapshots with `reset: true` were sent.
    Reset,
}

impl Connection {
    /// Adds `topics`. Without `since`, queues a snapshot of each. With
    /// `since`, replays every event after it that matches one of the new
    /// topics (and none already subscribed, which were delivered live), from
    /// the ring or, for older ones, from `history`; if the gap is too large or
    /// partly pruned, queues `reset: true` snapshots instead. The client's
    /// request `id`, if any, is echoed in each snapshot (or in `resumed`).
    pub async fn subscribe(
        &self,
        topics: &[Topic],
        since: Option<Seq>,
        known: &[Operation],
        history: &dyn History,
        id: Option<&serde_json::Value>,
    ) -> Resumed {
        let hub = &self.hub;
        let mut fetched: Option<(Seq, Vec<Event>)> = None;
        for _ in 0..3 {
            // The lock is taken in a block of its own: it must be released
            // before the store is read, and never held across that await.
            let gap = {
                let mut state = hub.lock();
                let last = state.last_seq;
                let Some(since) = since else {
                    return self.snapshot(&mut state, topics, false, known, id);
                };
                if since > last || last - since > hub.config.max_replay {
                    return self.snapshot(&mut state, topics, true, known, id);
                }
                // Events up to `upto` come from the store, the rest from the ring.
                let upto = match &fetched {
                    Some((upto, _)) if state.ring_covers(*upto) => Some(*upto),
                    _ if state.ring_covers(since) => Some(since),
                    _ => None,
                };
                match upto {
                    Some(upto) => {
                        let stored = fetched.take().map(|(_, events)| events).unwrap_or_default();
                        let ring: Vec<Event> = state.ring.iter().filter(|e| e.seq > upto).cloned().collect();
                        return self.replay(&mut state, topics, since, stored.into_iter().chain(ring), id);
                    }
                    None => (since, state.ring.front().map_or(last, |first| first.seq - 1)),
                }
            };
            let (since, upto) = gap;
            match history.replay(since, upto).await {
                Ok(events) => fetched = Some((upto, events)),
                Err(e) => {
                    tracing::info!(since, error = %e, "resume gap not in history; sending a reset");
                    return self.snapshot(&mut hub.lock(), topics, true, known, id);
                }
            }
        }
        self.snapshot(&mut hub.lock(), topics, true, known, id)
    }

    fn snapshot(
        &self,
        state: &mut State,
        topics: &[Topic],
        reset: bool,
        known: &[Operation],
        id: Option<&serde_json::Value>,
    ) -> Resumed {
        let seq = state.last_seq;
        let Some(subscriber) = state.connections.get(&self.id) else { return Resumed::Reset };
        let visible = |op: &Operation| subscriber.scope.allows(&op.target) && !subscriber.hidden.contains(&op.id);
        let frames: Vec<Utf8Bytes> =
            topics.iter().map(|t| snapshot::frame(state, t, seq, reset, known, &visible, id)).collect();
        let Some(subscriber) = state.connections.get_mut(&self.id) else { return Resumed::Reset };
        subscriber.topics.extend(topics.iter().cloned());
        let mut ok = true;
        for frame in frames {
            ok &= subscriber.deliver_frame(frame);
        }
        if !ok {
            state.drop_connections(vec![self.id], CLOSE_LAGGING);
        }
        if reset { Resumed::Reset } else { Resumed::Snapshot }
    }

    fn replay(
        &self,
        state: &mut State,
        topics: &[Topic],
        since: Seq,
        events: impl Iterator<Item = Event>,
        id: Option<&serde_json::Value>,
    ) -> Resumed {
        let seq = state.last_seq;
        let deadline = self.hub.config.lag_deadline;
        let Some(subscriber) = state.connections.get_mut(&self.id) else { return Resumed::Reset };
        let new: Vec<Topic> = topics.iter().filter(|t| !subscriber.topics.contains(*t)).cloned().collect();
        let missed: Vec<Event> = events
            .filter(|event| {
                let key = key(event);
                !subscriber.topics.iter().any(|t| t.matches(&key))
                    && new.iter().any(|t| t.matches(&key))
                    && subscriber.may_see(&key)
            })
            .collect();
        let count = missed.len();
        // A replay is never skipped into: it is exactly the missed events.
        let mut ok = missed.is_empty()
            || subscriber.deliver(
                Frames::new(missed.iter().map(|e| e.frame.clone()).collect()),
                missed.iter(),
                deadline,
            );
        subscriber.topics.extend(new);
        let names: Vec<String> = topics.iter().map(ToString::to_string).collect();
        let mut resumed =
            serde_json::json!({"type": "resumed", "topics": names, "since": since, "seq": seq, "replayed": count});
        if let Some(id) = id {
            resumed["id"] = id.clone();
        }
        ok &= subscriber.deliver_frame(Utf8Bytes::from(resumed.to_string()));
        if !ok {
            state.drop_connections(vec![self.id], CLOSE_LAGGING);
        }
        Resumed::Replayed(count)
    }
}
