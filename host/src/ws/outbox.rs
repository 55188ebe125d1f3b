//! A socket's outbox: the runs taken from its hub queue, on their way out.
//!
//! Runs are written as soon as they arrive, with whatever else is queued,
//! and flushed once: one syscall for many frames when events come thick and
//! fast. The exception is a run that holds nothing but progress: progress is
//! throttled already (one event per operation per window, 500 ms by
//! default), so it may wait a little longer, [`WsConfig::progress_delay`] at
//! most, for the runs that follow it. A progress wave over many operations
//! then leaves in a few writes instead of one per committed batch, and the
//! first run that is not only progress (a lifecycle or terminal event) takes
//! everything held with it at once. Order is kept; nothing is dropped here
//! but what [`superseded`] allows a socket that is behind to skip.
//!
//! [`WsConfig::progress_delay`]: super::WsConfig::progress_delay

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::time::Instant;

use super::Framing;
use crate::hub::{Frames, Receiver, superseded};

/// Runs written before one flush, at most.
const BATCH: usize = 64;

/// Runs taken from the queue and not yet written.
pub(super) struct Outbox {
    held: Vec<Arc<Frames>>,
    /// How long a progress-only run may wait; zero writes everything at once.
    delay: Duration,
    /// When the held runs must go out, if they are progress only.
    due: Option<Instant>,
}

impl Outbox {
    pub(super) fn new(delay: Duration) -> Self {
        Outbox { held: Vec::new(), delay, due: None }
    }

    /// Takes `run` and whatever else is queued (up to [`BATCH`] runs held).
    /// True if they must be written now; otherwise [`Outbox::due`] says when.
    pub(super) fn take(&mut self, run: Arc<Frames>, queue: &mut Receiver) -> bool {
        let mut urgent = !run.progress_only();
        self.held.push(run);
        while self.held.len() < BATCH
            && let Some(run) = queue.try_recv()
        {
            urgent |= !run.progress_only();
            self.held.push(run);
        }
        if urgent || self.delay.is_zero() || self.held.len() >= BATCH {
            return true;
        }
        self.due.get_or_insert_with(|| Instant::now() + self.delay);
        false
    }

    /// When held progress must be written, if any is held.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Writes everything held and flushes once, within `limit`. False if the
    /// peer did not take it in time.
    ///
    /// A socket that finds many messages in hand is behind: it skips the
    /// progress events that a newer state of the same operation, also in
    /// hand, makes stale ([`superseded`]), as the design's slow-consumer
    /// rule asks.
    pub(super) async fn write(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        framing: Framing,
        limit: Duration,
    ) -> bool {
        self.due = None;
        let runs = std::mem::take(&mut self.held);
        let skip = superseded(&runs);
        let write = async {
            for (i, run) in runs.iter().enumerate() {
                let skip = skip.as_ref().map(|s| &s[i]).filter(|s| s.contains(&true));
                match (framing, skip) {
                    (Framing::Lines, None) => sink.feed(Message::Text(run.joined().clone())).await?,
                    (Framing::Lines, Some(skip)) => {
                        let kept: Vec<&str> =
                            run.iter().zip(skip).filter(|(_, skip)| !**skip).map(|(f, _)| f.as_str()).collect();
                        if !kept.is_empty() {
                            sink.feed(Message::Text(kept.join("\n").into())).await?;
                        }
                    }
                    (Framing::OnePerFrame, skip) => {
                        for (j, frame) in run.iter().enumerate() {
                            if !skip.is_some_and(|s| s[j]) {
                                sink.feed(Message::Text(frame.clone())).await?;
                            }
                        }
                    }
                }
            }
            sink.flush().await
        };
        matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
    }
}
