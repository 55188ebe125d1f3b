//! The feed: every committed operation change, as the store publishes it
//! (this node's and, on a shared store, every other node's), for the
//! workflow drivers that wait for their children and their gates.
//!
//! A broadcast channel: sending costs nothing while no driver listens, and a
//! driver that falls behind is told so (`Lagged`) and reads the store
//! instead, so nothing it waits for is missed.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::{Event, EventKind, Operation};
use crate::store::Publish;

/// Changes a lagging driver may fall behind by before it re-reads the store.
const CAPACITY: usize = 4096;

/// One committed change of an operation.
#[derive(Debug, Clone)]
pub struct Change {
    /// What happened.
    pub kind: EventKind,
    /// The operation after it happened.
    pub operation: Arc<Operation>,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Feed(broadcast::Sender<Change>);

impl Default for Feed {
    fn default() -> Self {
        Feed(broadcast::channel(CAPACITY).0)
    }
}

impl Feed {
    /// Passes on the operation changes among `events`.
    pub fn observe(&self, events: &[Event]) {
        if self.0.receiver_count() == 0 {
            return;
        }
        for event in events {
            if let Some(operation) = &event.operation {
                let _ = self.0.send(Change { kind: event.kind, operation: operation.clone() });
            }
        }
    }

    /// Follows the changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.0.subscribe()
    }

    /// A sink that passes every batch to `next` and then to this feed.
    pub fn tee(&self, next: Arc<dyn Publish>) -> Arc<dyn Publish> {
        Arc::new(Tee { next, feed: self.clone() })
    }
}

struct Tee {
    next: Arc<dyn Publish>,
    feed: Feed,
}

impl Publish for Tee {
    fn publish(&self, events: Vec<Event>) {
        self.feed.observe(&events);
        self.next.publish(events);
    }
}
