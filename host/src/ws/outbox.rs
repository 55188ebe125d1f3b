//! A socket's outbox: the runs taken from its hub queue, on their way out.
//!
//! Runs are written as soon as they arrive, with whatever else is queued,
//! and flushed once: one syscall for many frames when events come thick and
//! fast. The exception is a run that holds nothing but progress and comes
//! within [`WsConfig::progress_delay`] of the socket's last write: progress is
//! throttled already (one event per operation per window, 500 ms by
//! default), so it may wait until that delay has passed, for the runs that
//! follow it. A stream of progress waves over many operations then leaves in
//! one write per delay instead of one per committed batch, and the first run
//! that is not only progress (a lifecycle or terminal event) takes everything
//! held with it at once. Progress after a quiet spell is written at once: held,
//! the last window's trailing progress of operations about to end would be
//! written together with, and ahead of, their terminal events (measured in
//! docs/performance.md, "Terminal latency at moderate load"). Order is kept;
//! nothing is dropped here but what [`superseded`] allows a socket that is
//! behind to skip.
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
    /// When the last write went out.
    last_write: Option<Instant>,
    /// Messages and bytes sent, for `/metrics`.
    counters: crate::telemetry::SocketCounters,
}

impl Outbox {
    pub(super) fn new(delay: Duration) -> Self {
        Outbox {
            held: Vec::new(),
            delay,
            due: None,
            last_write: None,
            counters: crate::telemetry::SocketCounters::new(),
        }
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
        self.decide(urgent || self.held.len() >= BATCH, Instant::now())
    }

    /// Whether what is held goes out now (`urgent`: not only progress, or a
    /// full batch). Progress after a quiet spell goes out at once, a leading
    /// edge; only progress that follows a write within the delay is held,
    /// until the delay has passed since that write. So a lone progress wave
    /// is never held into the path of the terminal events that follow it,
    /// while a stream of waves still leaves in one write per delay.
    fn decide(&mut self, urgent: bool, now: Instant) -> bool {
        if urgent || self.delay.is_zero() {
            return true;
        }
        let Some(last) = self.last_write.filter(|last| now.saturating_duration_since(*last) < self.delay) else {
            return true;
        };
        self.due.get_or_insert(last + self.delay);
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
        self.last_write = Some(Instant::now());
        let runs = std::mem::take(&mut self.held);
        let skip = superseded(&runs);
        let (mut messages, mut bytes) = (0, 0);
        let write = async {
            let mut first = 0;
            for run in &runs {
                let skip = skip.as_ref().map(|s| &s[first..first + run.len()]).filter(|s| s.contains(&true));
                first += run.len();
                match (framing, skip) {
                    (Framing::Lines, None) => {
                        messages += run.len();
                        for frame in run.joined() {
                            bytes += frame.len();
                            sink.feed(Message::Text(frame.clone())).await?;
                        }
                    }
                    (Framing::Lines, Some(skip)) => {
                        let kept: Vec<&str> =
                            run.iter().zip(skip).filter(|(_, skip)| !**skip).map(|(f, _)| f.as_str()).collect();
                        messages += kept.len();
                        for frame in crate::hub::join_lines(kept) {
                            bytes += frame.len();
                            sink.feed(Message::Text(frame.into())).await?;
                        }
                    }
                    (Framing::OnePerFrame, skip) => {
                        for (j, frame) in run.iter().enumerate() {
                            if !skip.is_some_and(|s| s[j]) {
                                (messages, bytes) = (messages + 1, bytes + frame.len());
                                sink.feed(Message::Text(frame.clone())).await?;
                            }
                        }
                    }
                }
            }
            sink.flush().await
        };
        let written = matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())));
        self.counters.sent(messages, bytes);
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_after_a_quiet_spell_goes_at_once_and_progress_right_after_a_write_waits() {
        let delay = Duration::from_millis(25);
        let mut outbox = Outbox::new(delay);
        let start = Instant::now();
        assert!(outbox.decide(false, start), "the first progress is a leading edge");
        outbox.last_write = Some(start);
        assert!(!outbox.decide(false, start + Duration::from_millis(5)), "progress 5 ms after a write waits");
        assert_eq!(outbox.due(), Some(start + delay), "until the delay has passed since that write");
        assert!(outbox.decide(true, start + Duration::from_millis(6)), "a terminal event never waits");
        outbox.due = None;
        assert!(outbox.decide(false, start + Duration::from_millis(30)), "after a quiet spell: at once");
        assert!(Outbox::new(Duration::ZERO).decide(false, start), "a zero delay holds nothing");
    }
}
