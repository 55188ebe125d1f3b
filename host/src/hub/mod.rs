//! `hub`: live fan-out of committed events to WebSocket connections.
//!
//! Owns the connections' subscriptions, their bounded outbound queues, and the
//! in-memory view that snapshots are made of (active operations plus the most
//! recent terminal ones). The store's writer calls [`Hub::publish`] with each
//! committed batch, in seq order.
//!
//! Snapshot and subscription happen under the same lock as publishing, and
//! the snapshot goes into the same queue as the events: a client sees every
//! event after the snapshot's seq, none before it, with no gap and no
//! duplicate. The lock is a std mutex held only for in-memory work (no await,
//! no I/O); queues are fed with `try_send`.

mod snapshot;
mod topic;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

pub use topic::{Topic, UnknownTopic};

use crate::model::{Event, Operation, OperationId, Seq};
use crate::store::Publish;

/// Frames queued per connection. A connection whose queue is full is a slow
/// consumer: it is dropped from the hub and its socket closed with
/// [`CLOSE_LAGGING`], and it can reconnect and resume.
pub const CONNECTION_QUEUE: usize = 4096;
/// Terminal operations kept in memory for snapshots.
pub const RECENT_TERMINAL: usize = 100;
/// WebSocket close code for a client that fell too far behind.
pub const CLOSE_LAGGING: u16 = 4008;

/// The fan-out hub. One per server.
pub struct Hub {
    state: Mutex<State>,
}

struct State {
    last_seq: Seq,
    active: HashMap<OperationId, Arc<Operation>>,
    /// Newest first.
    recent: VecDeque<Arc<Operation>>,
    connections: HashMap<u64, Subscriber>,
    next_connection: u64,
}

struct Subscriber {
    topics: HashSet<Topic>,
    queue: mpsc::Sender<Utf8Bytes>,
    lagged: Arc<AtomicBool>,
}

/// One client's registration with the hub; unregisters on drop.
pub struct Connection {
    id: u64,
    hub: Arc<Hub>,
    lagged: Arc<AtomicBool>,
    /// The seq the connection's `hello` reports.
    pub hello_seq: Seq,
}

impl Hub {
    /// A hub whose view starts from the store's state at `last_seq`.
    pub fn new(last_seq: Seq, active: Vec<Operation>, recent: Vec<Operation>) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(State {
                last_seq,
                active: active.into_iter().map(|op| (op.id, Arc::new(op))).collect(),
                recent: recent.into_iter().take(RECENT_TERMINAL).map(Arc::new).collect(),
                connections: HashMap::new(),
                next_connection: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hub state poisoned")
    }

    /// Registers a connection; frames for it arrive on the returned receiver.
    pub fn connect(self: &Arc<Self>) -> (Connection, mpsc::Receiver<Utf8Bytes>) {
        let (queue, frames) = mpsc::channel(CONNECTION_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut state = self.lock();
        let id = state.next_connection;
        state.next_connection += 1;
        state.connections.insert(id, Subscriber { topics: HashSet::new(), queue, lagged: lagged.clone() });
        let hello_seq = state.last_seq;
        drop(state);
        (Connection { id, hub: self.clone(), lagged, hello_seq }, frames)
    }

    /// The seq of the last published event.
    pub fn last_seq(&self) -> Seq {
        self.lock().last_seq
    }

    /// How many connections are registered.
    pub fn connections(&self) -> usize {
        self.lock().connections.len()
    }
}

impl Connection {
    /// Adds `topics` and queues a snapshot of each. `known` supplies
    /// operations the hub no longer holds in memory (older terminal ones),
    /// read from the store by the caller. With `since`, a client resuming
    /// from an older seq gets `reset: true` snapshots: this version keeps no
    /// replay buffer, so it never pretends a gap was filled.
    pub fn subscribe(&self, topics: &[Topic], since: Option<Seq>, known: &[Operation]) {
        let mut state = self.hub.lock();
        let seq = state.last_seq;
        let reset = since.is_some_and(|s| s != seq);
        let frames: Vec<Utf8Bytes> = topics.iter().map(|t| snapshot::frame(&state, t, seq, reset, known)).collect();
        let Some(subscriber) = state.connections.get_mut(&self.id) else {
            return;
        };
        subscriber.topics.extend(topics.iter().copied());
        for frame in frames {
            if subscriber.queue.try_send(frame).is_err() {
                subscriber.lagged.store(true, Ordering::Relaxed);
                state.connections.remove(&self.id);
                return;
            }
        }
    }

    /// Removes `topics`.
    pub fn unsubscribe(&self, topics: &[Topic]) {
        if let Some(subscriber) = self.hub.lock().connections.get_mut(&self.id) {
            for topic in topics {
                subscriber.topics.remove(topic);
            }
        }
    }

    /// True if the hub dropped this connection for falling behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Relaxed)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.lock().connections.remove(&self.id);
    }
}

impl Publish for Hub {
    fn publish(&self, events: Vec<Event>) {
        let mut state = self.lock();
        let mut dropped = Vec::new();
        for event in &events {
            state.last_seq = event.seq;
            if let Some(op) = &event.operation {
                state.remember(op.clone());
            }
            for (id, subscriber) in &state.connections {
                if subscriber.topics.iter().any(|t| t.matches(event))
                    && subscriber.queue.try_send(event.frame.clone()).is_err()
                {
                    subscriber.lagged.store(true, Ordering::Relaxed);
                    dropped.push(*id);
                }
            }
            for id in dropped.drain(..) {
                tracing::warn!(connection = id, "slow WebSocket consumer dropped");
                state.connections.remove(&id);
            }
        }
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
}
