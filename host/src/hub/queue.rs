//! A connection's outgoing queue: runs of shared frames, bounded by the
//! number of frames queued.
//!
//! The hub hands each connection a run of frames at a time: everything one
//! committed batch holds for it. When every event of a batch is wanted (the
//! common case: all dashboards on `operations`), every connection gets the
//! same `Arc<Frames>`, and a socket that sends runs as one text frame
//! ([`Frames::joined`]) sends the same bytes as every other such socket,
//! joined once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

/// Frames queued together, in order.
#[derive(Debug)]
pub struct Frames {
    frames: Vec<Utf8Bytes>,
    joined: OnceLock<Utf8Bytes>,
}

impl Frames {
    /// A run of `frames`, which must not be empty.
    pub fn new(frames: Vec<Utf8Bytes>) -> Arc<Frames> {
        debug_assert!(!frames.is_empty());
        Arc::new(Frames { frames, joined: OnceLock::new() })
    }

    /// A run of one frame.
    pub fn one(frame: Utf8Bytes) -> Arc<Frames> {
        Frames::new(vec![frame])
    }

    /// The frames, one message each.
    pub fn iter(&self) -> impl Iterator<Item = &Utf8Bytes> {
        self.frames.iter()
    }

    /// How many frames the run holds.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True if the run holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The messages joined by `\n`, for a socket that takes several messages
    /// per frame. Joined on first use, then shared.
    pub fn joined(&self) -> &Utf8Bytes {
        self.joined.get_or_init(|| match self.frames.as_slice() {
            [one] => one.clone(),
            many => {
                let mut text = String::with_capacity(many.iter().map(|f| f.len() + 1).sum());
                for (i, frame) in many.iter().enumerate() {
                    if i > 0 {
                        text.push('\n');
                    }
                    text.push_str(frame.as_str());
                }
                Utf8Bytes::from(text)
            }
        })
    }
}

/// Why a run was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The queue holds `capacity` frames already: the connection lags.
    Full,
    /// The socket task is gone.
    Closed,
}

/// The hub's end of a connection's queue.
pub(super) struct Sender {
    tx: mpsc::UnboundedSender<Arc<Frames>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// The socket task's end of a connection's queue.
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Arc<Frames>>,
    queued: Arc<AtomicUsize>,
}

/// A queue that refuses a run once `capacity` frames are waiting. A run that
/// finds the queue empty is always taken, so one large batch never counts as
/// lagging; at most `capacity` plus one batch is ever queued.
pub(super) fn bounded(capacity: usize) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (Sender { tx, queued: queued.clone(), capacity }, Receiver { rx, queued })
}

impl Sender {
    /// Queues `frames`, unless the queue is full or closed.
    pub(super) fn try_send(&self, frames: Arc<Frames>) -> Result<(), Refused> {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + frames.len() > self.capacity {
            return Err(Refused::Full);
        }
        let len = frames.len();
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.send(frames).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            Refused::Closed
        })
    }

    /// How many more frames fit before the queue is full.
    pub(super) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.queued.load(Ordering::Acquire))
    }
}

impl Receiver {
    /// The next run; `None` once the hub has dropped the connection.
    pub async fn recv(&mut self) -> Option<Arc<Frames>> {
        let frames = self.rx.recv().await?;
        self.queued.fetch_sub(frames.len(), Ordering::AcqRel);
        Some(frames)
    }

    /// The next run if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Frames>> {
        let frames = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(frames.len(), Ordering::AcqRel);
        Some(frames)
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(texts: &[&'static str]) -> Arc<Frames> {
        Frames::new(texts.iter().map(|t| Utf8Bytes::from_static(t)).collect())
    }

    #[test]
    fn joined_is_the_messages_one_per_line_and_a_single_frame_is_itself() {
        assert_eq!(run(&[r#"{"a":1}"#, r#"{"b":2}"#]).joined().as_str(), "{\"a\":1}\n{\"b\":2}");
        assert_eq!(run(&[r#"{"a":1}"#]).joined().as_str(), r#"{"a":1}"#);
    }

    #[test]
    fn the_bound_counts_frames_and_frees_them_as_they_are_received() {
        let (tx, mut rx) = bounded(3);
        assert_eq!(tx.try_send(run(&["1", "2"])), Ok(()));
        assert_eq!(tx.room(), 1);
        assert_eq!(tx.try_send(run(&["3", "4"])), Err(Refused::Full), "2 + 2 frames exceed 3");
        assert_eq!(tx.try_send(run(&["3"])), Ok(()));
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(2));
        assert_eq!(tx.room(), 2);
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(1));
        assert!(rx.is_empty());
        assert_eq!(tx.try_send(run(&["a", "b", "c", "d", "e"])), Ok(()), "an empty queue takes any run");
    }

    #[test]
    fn a_closed_queue_refuses_as_closed() {
        let (tx, rx) = bounded(3);
        drop(rx);
        assert_eq!(tx.try_send(run(&["x"])), Err(Refused::Closed));
        assert_eq!(tx.room(), 3, "a refused run is not counted");
    }
}
