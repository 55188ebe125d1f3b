//! The queue in front of a backend's single writer, the same for both: a
//! bounded channel of changes, each with an optional acknowledgement.
//! Senders wait (async) when it is full, which slows producers down instead
//! of growing memory.

use tokio::sync::{mpsc, oneshot};

use super::{Change, Receipt, StoreError};

/// How many changes may wait for the writer.
const CAPACITY: usize = 8192;

/// One queued change, and who waits for its outcome (nobody, if enqueued).
pub(crate) struct Append {
    pub(crate) change: Change,
    ack: Option<oneshot::Sender<Result<Receipt, StoreError>>>,
}

impl Append {
    /// Tells whoever waits how the change went.
    pub(crate) fn answer(self, outcome: Result<Receipt, StoreError>) {
        if let Some(ack) = self.ack {
            let _ = ack.send(outcome);
        }
    }
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct Inbox(mpsc::Sender<Append>);

impl Inbox {
    /// A queue and the writer's end of it.
    pub(crate) fn new() -> (Inbox, mpsc::Receiver<Append>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Inbox(tx), rx)
    }

    /// Queues `change` and waits until it is committed (or refused).
    pub(crate) async fn commit(&self, change: Change) -> Result<Receipt, StoreError> {
        let (ack, done) = oneshot::channel();
        self.0.send(Append { change, ack: Some(ack) }).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `change` without waiting for the commit.
    pub(crate) async fn enqueue(&self, change: Change) -> Result<(), StoreError> {
        self.0.send(Append { change, ack: None }).await.map_err(|_| StoreError::Closed)
    }
}
