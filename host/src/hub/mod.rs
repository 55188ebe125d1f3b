//! `hub`: live fan-out of committed events to WebSocket connections.
//!
//! Owns the connections' subscriptions and bounded queues, the in-memory view
//! that snapshots are made of (active operations plus the most recent terminal
//! ones), the replay ring of recent events, each lagging connection's
//! coalesced backlog ([`lag`]), and the latest `system.status`. The store's
//! writer calls [`Publish::publish`] with each committed batch, in seq order.
//!
//! Snapshots, replays and registration happen under the same lock as
//! publishing, and go into the same queue as the events: a client sees every
//! event after the point it starts from, none before it, with no gap and no
//! duplicate. The lock is a std mutex held only for in-memory work (no await,
//! no I/O); queues are fed with `try_send`. Reading older events from the store
//! for a resume happens outside the lock.

mod auth;
mod lag;
mod queue;
mod resume;
mod snapshot;
mod topic;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;

pub use auth::{Authorize, Principal, TargetScopes};
pub use lag::LAG_CAP;
pub use queue::{COALESCE_FROM, Frames, MAX_JOINED_BYTES, Receiver, join_lines, superseded};
pub use resume::Resumed;
pub use topic::{EventKey, Topic, UnknownTopic};

use crate::auth::Scope;
use crate::model::{Event, Operation, OperationId, Seq};
use crate::store::Publish;
use lag::{Backlog, Lag};
use queue::Refused;

/// Terminal operations kept in memory for snapshots.
pub const RECENT_TERMINAL: usize = 100;
/// WebSocket close code for a client that fell too far behind.
pub const CLOSE_LAGGING: u16 = 4008;

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames queued per connection before it counts as lagging (one
    /// committed batch that finds the queue empty is always taken).
    pub queue: usize,
    /// Recent events kept in memory for resumes.
    pub ring: usize,
    /// The largest gap a resume may replay (from memory or the store); a
    /// larger one gets a fresh snapshot with `reset: true`.
    pub max_replay: u64,
    /// How long a connection may stay lagging before it is closed.
    pub lag_deadline: Duration,
    /// The most bytes of frames all lagging connections together may hold
    /// in their backlogs. Past it, the connections that have lagged longest
    /// are closed (4008; they resume with `since`) until the rest fit, so
    /// slow consumers cannot grow the server's memory without bound.
    pub lag_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue: 1024,
            ring: 10_000,
            max_replay: 10_000,
            lag_deadline: Duration::from_secs(10),
            lag_bytes: 64 << 20,
        }
    }
}

/// A read of older events from [`History`].
pub type Replay<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Vec<Event>, String>> + Send + 'a>>;

/// Where a resume finds events older than the ring: the store.
pub trait History: Send + Sync {
    /// Every event with `after < seq <= upto`, in order, or an error if any
    /// of them is gone (pruned).
    fn replay(&self, after: Seq, upto: Seq) -> Replay<'_>;
}

/// The fan-out hub. One per server.
pub struct Hub {
    config: HubConfig,
    state: Mutex<State>,
}

struct State {
    last_seq: Seq,
    active: HashMap<OperationId, Arc<Operation>>,
    /// Newest first.
    recent: VecDeque<Arc<Operation>>,
    /// The last `config.ring` events, oldest first.
    ring: VecDeque<Event>,
    system: Option<Utf8Bytes>,
    connections: HashMap<u64, Subscriber>,
    next_connection: u64,
}

struct Subscriber {
    topics: HashSet<Topic>,
    /// The targets the connection's principal may see: events about other
    /// targets are never queued for it, whatever its topics.
    scope: Scope,
    /// Operations named by an `op:<id>` topic that exist but are outside the
    /// scope: nothing about them is delivered (log lines carry no target, so
    /// the scope alone cannot stop them).
    hidden: HashSet<OperationId>,
    queue: queue::Sender,
    lag: Option<Lag>,
    /// Mirrors `lag.is_some()` for the socket task, which checks it after
    /// every batch it writes: an atomic, so that check never takes the lock.
    lagging: Arc<AtomicBool>,
    /// Set to a close code when the hub drops the connection.
    closed: Arc<AtomicU16>,
}

/// One client's registration with the hub; unregisters on drop.
pub struct Connection {
    id: u64,
    hub: Arc<Hub>,
    lagging: Arc<AtomicBool>,
    closed: Arc<AtomicU16>,
    /// The seq the connection's `hello` reports.
    pub hello_seq: Seq,
}

fn key(event: &Event) -> EventKey<'_> {
    EventKey {
        kind: Some(event.kind),
        op_id: Some(event.op_id),
        op: event.operation.as_ref().map(|op| (op.op_type.as_str(), op.target.as_str())),
    }
}

impl Subscriber {
    fn wants(&self, key: &EventKey<'_>) -> bool {
        self.topics.iter().any(|t| t.matches(key)) && self.may_see(key)
    }

    /// Whether the principal may see the event at all.
    fn may_see(&self, key: &EventKey<'_>) -> bool {
        if self.scope.is_all() {
            return true;
        }
        key.op.is_none_or(|(_, target)| self.scope.allows(target))
            && key.op_id.is_none_or(|id| !self.hidden.contains(&id))
    }

    /// Queues `run`, the frames of `events`, switching to coalesced delivery
    /// when the queue is full. Returns false if the connection must be dropped.
    fn deliver<'e>(
        &mut self,
        run: Arc<Frames>,
        mut events: impl Iterator<Item = &'e Event>,
        deadline: Duration,
    ) -> bool {
        if self.lag.is_none() {
            match self.queue.try_send(run) {
                Ok(()) => return true,
                Err(Refused::Closed) => return false,
                Err(Refused::Full) => self.start_lagging(),
            }
        }
        let lag = self.lag.as_mut().expect("lagging");
        events.all(|e| lag.push(e.clone()) == Backlog::Ok) && lag.since.elapsed() < deadline
    }

    fn deliver_frame(&mut self, frame: Utf8Bytes) -> bool {
        if self.lag.is_none() {
            match self.queue.try_send(Frames::one(frame.clone())) {
                Ok(()) => return true,
                Err(Refused::Closed) => return false,
                Err(Refused::Full) => self.start_lagging(),
            }
        }
        self.lag.as_mut().expect("lagging").push_system(frame);
        true
    }

    fn start_lagging(&mut self) {
        self.lag = Some(Lag::new());
        self.lagging.store(true, Ordering::Relaxed);
    }
}

impl Hub {
    /// A hub whose view starts from the store's state at `last_seq`.
    pub fn new(config: HubConfig, last_seq: Seq, active: Vec<Operation>, recent: Vec<Operation>) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            state: Mutex::new(State {
                last_seq,
                active: active.into_iter().map(|op| (op.id, Arc::new(op))).collect(),
                recent: recent.into_iter().take(RECENT_TERMINAL).map(Arc::new).collect(),
                ring: VecDeque::new(),
                system: None,
                connections: HashMap::new(),
                next_connection: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hub state poisoned")
    }

    /// Registers a connection that may see everything; frames for it arrive
    /// on the returned receiver.
    pub fn connect(self: &Arc<Self>) -> (Connection, Receiver) {
        self.connect_as(Scope::All)
    }

    /// Registers a connection that sees only the operations on targets in `scope`.
    pub fn connect_as(self: &Arc<Self>, scope: Scope) -> (Connection, Receiver) {
        let (queue, frames) = queue::bounded(self.config.queue);
        let closed = Arc::new(AtomicU16::new(0));
        let lagging = Arc::new(AtomicBool::new(false));
        let mut state = self.lock();
        let id = state.next_connection;
        state.next_connection += 1;
        let subscriber = Subscriber {
            topics: HashSet::new(),
            scope,
            hidden: HashSet::new(),
            queue,
            lag: None,
            lagging: lagging.clone(),
            closed: closed.clone(),
        };
        state.connections.insert(id, subscriber);
        let hello_seq = state.last_seq;
        drop(state);
        (Connection { id, hub: self.clone(), lagging, closed, hello_seq }, frames)
    }

    /// The seq of the last published event.
    pub fn last_seq(&self) -> Seq {
        self.lock().last_seq
    }

    /// How many connections are registered.
    pub fn connections(&self) -> usize {
        self.lock().connections.len()
    }

    /// Publishes a `system.status` frame (no seq: it is not replayable
    /// history, just the latest reading) and keeps it for `system` snapshots.
    pub fn publish_system(&self, frame: Utf8Bytes) {
        let mut state = self.lock();
        state.system = Some(frame.clone());
        let system = EventKey { kind: None, op_id: None, op: None };
        let mut dropped = Vec::new();
        for (id, subscriber) in &mut state.connections {
            if subscriber.topics.iter().any(|t| t.matches(&system)) && !subscriber.deliver_frame(frame.clone()) {
                dropped.push(*id);
            }
        }
        state.drop_connections(dropped, CLOSE_LAGGING);
    }
}

impl State {
    /// Updates the snapshot view with an operation's latest state.
    fn remember(&mut self, op: Arc<Operation>) {
        if op.status.is_terminal() {
            self.active.remove(&op.id);
            self.recent.retain(|r| r.id != op.id);
            self.recent.push_front(op);
            self.recent.truncate(RECENT_TERMINAL);
        } else {
            self.active.insert(op.id, op);
        }
    }

    /// Adds to `dropped` the connections that have lagged longest, until the
    /// backlogs of the lagging connections left fit in `cap` bytes.
    fn over_lag_cap(&self, cap: usize, dropped: &mut Vec<u64>) {
        let mut lagging: Vec<(tokio::time::Instant, u64, usize)> = self
            .connections
            .iter()
            .filter_map(|(id, s)| s.lag.as_ref().map(|lag| (lag.since, *id, lag.bytes())))
            .filter(|(_, id, _)| !dropped.contains(id))
            .collect();
        let mut total: usize = lagging.iter().map(|(_, _, bytes)| bytes).sum();
        if total <= cap {
            return;
        }
        lagging.sort_unstable();
        for (_, id, bytes) in lagging {
            if total <= cap {
                break;
            }
            tracing::warn!(
                connection = id,
                bytes,
                total,
                cap,
                "lagging backlogs over the server-wide cap; closing the furthest behind"
            );
            dropped.push(id);
            total -= bytes;
        }
    }

    fn drop_connections(&mut self, ids: Vec<u64>, code: u16) {
        for id in ids {
            if let Some(subscriber) = self.connections.remove(&id) {
                tracing::warn!(connection = id, code, "WebSocket connection dropped by the hub");
                subscriber.closed.store(code, Ordering::Relaxed);
            }
        }
    }

    /// True if the ring holds every event after `seq`.
    fn ring_covers(&self, seq: Seq) -> bool {
        match self.ring.front() {
            Some(first) => first.seq <= seq + 1,
            None => seq == self.last_seq,
        }
    }
}

impl Publish for Hub {
    fn publish(&self, events: Vec<Event>) {
        let mut state = self.lock();
        // A feed that started before the hub was seeded may repeat what the
        // seed already holds.
        let events = match events.first() {
            Some(first) if first.seq <= state.last_seq => {
                let last = state.last_seq;
                events.into_iter().filter(|e| e.seq > last).collect()
            }
            _ => events,
        };
        let deadline = self.config.lag_deadline;
        for event in &events {
            state.last_seq = event.seq;
            if let Some(op) = &event.operation {
                state.remember(op.clone());
            }
        }
        // Connections that want the same events of the batch (all of them, for
        // every dashboard on `operations`; all but the log lines, often) get
        // the same run: its frames are listed, and joined, once. Most want
        // what the connection before them wanted, so that run is tried first,
        // without hashing.
        let keys: Vec<EventKey<'_>> = events.iter().map(key).collect();
        let mut runs: HashMap<Vec<usize>, Arc<Frames>> = HashMap::new();
        let mut last: Option<(Vec<usize>, Arc<Frames>)> = None;
        let mut wanted = Vec::with_capacity(events.len());
        let mut dropped = Vec::new();
        // What the lagging connections' backlogs hold, summed in the same pass.
        let mut lagging_bytes = 0;
        for (id, subscriber) in &mut state.connections {
            lagging_bytes += subscriber.lag.as_ref().map_or(0, |lag| lag.bytes());
            wanted.clear();
            wanted.extend(keys.iter().enumerate().filter(|(_, k)| subscriber.wants(k)).map(|(i, _)| i));
            if wanted.is_empty() {
                continue;
            }
            let run = match &last {
                Some((previous, run)) if *previous == wanted => run.clone(),
                _ => {
                    let run = runs
                        .entry(wanted.clone())
                        .or_insert_with(|| Frames::live(&wanted.iter().map(|&i| &events[i]).collect::<Vec<_>>()))
                        .clone();
                    last = Some((wanted.clone(), run.clone()));
                    run
                }
            };
            let before = subscriber.lag.as_ref().map_or(0, |lag| lag.bytes());
            if !subscriber.deliver(run, wanted.iter().map(|&i| &events[i]), deadline) {
                dropped.push(*id);
            }
            // `before` was counted above; coalescing may have shrunk the backlog.
            lagging_bytes = lagging_bytes + subscriber.lag.as_ref().map_or(0, |lag| lag.bytes()) - before;
        }
        drop(keys);
        if lagging_bytes > self.config.lag_bytes {
            state.over_lag_cap(self.config.lag_bytes, &mut dropped);
        }
        state.drop_connections(dropped, CLOSE_LAGGING);
        for event in events {
            if state.ring.len() >= self.config.ring {
                state.ring.pop_front();
            }
            state.ring.push_back(event);
        }
    }
}

impl Connection {
    /// Removes `topics`.
    pub fn unsubscribe(&self, topics: &[Topic]) {
        if let Some(subscriber) = self.hub.lock().connections.get_mut(&self.id) {
            for topic in topics {
                subscriber.topics.remove(topic);
                if let Topic::Op(id) = topic {
                    subscriber.hidden.remove(id);
                }
            }
        }
    }

    /// Marks operations this connection must never hear about (they exist but
    /// are outside its scope), before it subscribes to their `op:<id>`
    /// topics; it then gets what a nonexistent operation's topic gives.
    pub fn hide(&self, ids: &[OperationId]) {
        if let Some(subscriber) = self.hub.lock().connections.get_mut(&self.id) {
            subscriber.hidden.extend(ids.iter().copied());
        }
    }

    /// Called by the socket task when its queue is empty: moves the coalesced
    /// backlog, if any, into the queue. Drops the connection if it has been
    /// lagging past the deadline.
    pub fn refill(&self) {
        let deadline = self.hub.config.lag_deadline;
        let mut state = self.hub.lock();
        let Some(subscriber) = state.connections.get_mut(&self.id) else { return };
        let Some(lag) = &mut subscriber.lag else { return };
        if lag.drain_into(&subscriber.queue) {
            subscriber.lag = None;
            subscriber.lagging.store(false, Ordering::Relaxed);
        } else if lag.since.elapsed() >= deadline {
            state.drop_connections(vec![self.id], CLOSE_LAGGING);
        }
    }

    /// True while this connection gets coalesced delivery. Lock-free.
    pub fn lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    /// The close code if the hub dropped this connection.
    pub fn closed_by_hub(&self) -> Option<u16> {
        match self.closed.load(Ordering::Relaxed) {
            0 => None,
            code => Some(code),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.lock().connections.remove(&self.id);
    }
}
