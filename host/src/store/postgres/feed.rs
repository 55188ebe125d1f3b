//! The feed: every committed event, every node's, to this node's hub, in
//! seq order.
//!
//! This node's own events come straight from its writer, already built. For
//! the others', a connection of its own LISTENs on `opal_events` (each writer
//! NOTIFYs in the transaction that commits its events); a notification or,
//! failing one, a short poll wakes the feed, which reads the events after the
//! last seq it published and publishes them. The notification is only a
//! wake-up: the read decides, so a lost notification delays an event by at
//! most [`POLL`] and never loses it. Because seqs are commit-ordered, "after
//! the last seq" never skips an event that commits later.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::reads::read_events;
use crate::model::{Event, EventKind, Seq};
use crate::store::Publish;

/// The longest an event waits for a node's feed when a notification is lost.
const POLL: Duration = Duration::from_millis(500);
/// How long to wait before listening again after the connection dropped.
const RECONNECT: Duration = Duration::from_secs(1);
/// The most events one read takes.
const READ: i64 = 5000;

/// What wakes the feed, and whom it wakes.
pub(super) struct Wakes {
    /// This node's writer's committed events, in seq order.
    pub(super) local: mpsc::UnboundedReceiver<Vec<Event>>,
    /// Woken when the feed sees another node's admission or re-queue
    /// (claimable work; the writer wakes it for this node's own).
    pub(super) work: Arc<Notify>,
}

pub(super) async fn run(
    config: tokio_postgres::Config,
    pool: Pool,
    last: Seq,
    sink: Arc<dyn Publish>,
    mut wakes: Wakes,
    stop: CancellationToken,
) {
    let notified = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(config, notified.clone(), stop.clone()));
    let mut feed = Feed { pool, last, sink, work: wakes.work.clone() };
    let mut writing = true;
    loop {
        let local = tokio::select! {
            () = stop.cancelled() => break,
            () = notified.notified() => None,
            batch = wakes.local.recv(), if writing => {
                writing = batch.is_some();
                batch
            }
            () = tokio::time::sleep(POLL) => None,
        };
        match local {
            // This node's own events: published as they are, without a read
            // or a parse, once whatever other nodes committed before them is.
            Some(mut batch) => {
                batch.retain(|e| e.seq > feed.last);
                let Some(first) = batch.first().map(|e| e.seq) else { continue };
                if first > feed.last + 1 && !feed.catch_up(Some(first - 1)).await {
                    continue;
                }
                if first == feed.last + 1 {
                    feed.publish(batch, false);
                }
            }
            None => {
                feed.catch_up(None).await;
            }
        }
    }
    listener.abort();
}

/// The feed's position, and where it publishes.
struct Feed {
    pool: Pool,
    last: Seq,
    sink: Arc<dyn Publish>,
    work: Arc<Notify>,
}

impl Feed {
    fn publish(&mut self, events: Vec<Event>, wake: bool) {
        let Some(newest) = events.last().map(|e| e.seq) else { return };
        if wake && events.iter().any(|e| matches!(e.kind, EventKind::Created | EventKind::Requeued)) {
            self.work.notify_one();
        }
        self.sink.publish(events);
        self.last = newest;
    }

    /// Reads and publishes the committed events after the last one, up to
    /// `upto` if given; false if the database could not be read.
    async fn catch_up(&mut self, upto: Option<Seq>) -> bool {
        loop {
            let read = match self.pool.get().await {
                Ok(client) => read_events(&client, self.last, upto, Some(READ)).await,
                Err(e) => Err(super::unavailable(e)),
            };
            let events = match read {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "the event feed cannot read; retrying");
                    return false;
                }
            };
            if let Some(first) = events.first()
                && first.seq != self.last + 1
            {
                tracing::warn!(after = self.last, first = first.seq, "events were pruned before this node read them");
            }
            let full = events.len() as i64 == READ;
            self.publish(events, true);
            if !full {
                return true;
            }
        }
    }
}

/// Keeps a LISTEN connection open, re-making it when it drops, and turns
/// each notification into a wake-up.
async fn listen(config: tokio_postgres::Config, notified: Arc<Notify>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let subscribe = client.batch_execute("LISTEN opal_events");
                tokio::pin!(subscribe);
                // The connection must be polled for the LISTEN to complete.
                let subscribed = loop {
                    tokio::select! {
                        result = &mut subscribe => break result.is_ok(),
                        message = messages.next() => if message.is_none_or(|m| m.is_err()) { break false },
                    }
                };
                if subscribed {
                    // Anything committed while we were not listening.
                    notified.notify_one();
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
                tracing::warn!("the event feed's LISTEN connection dropped; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "the event feed cannot connect; retrying"),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}
