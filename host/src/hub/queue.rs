//! A connection's outgoing queue: runs of shared frames, bounded by the
//! number of frames queued.
//!
//! The hub hands each connection a run of frames at a time: everything one
//! committed batch holds for it. Connections that want the same events of a
//! batch (the common case: all dashboards on `operations`) get the same
//! `Arc<Frames>`, and a socket that sends runs as one text frame
//! ([`Frames::joined`]) sends the same bytes as every other such socket,
//! joined once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use crate::model::{Event, EventKind, OperationId};

/// What a live event frame carries, for [`superseded`]: the operation whose
/// whole state it holds, and whether it is only a progress update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StateOf {
    op: OperationId,
    progress: bool,
}

/// Frames queued together, in order.
#[derive(Debug)]
pub struct Frames {
    frames: Vec<Utf8Bytes>,
    /// Per frame, for live events that carry an operation's state; empty for
    /// runs that are never coalesced (snapshots, replays, backlogs).
    states: Vec<Option<StateOf>>,
    joined: OnceLock<Vec<Utf8Bytes>>,
}

/// Most bytes of messages joined into one text frame (a single larger
/// message is a frame of its own). Each socket copies a frame whole into
/// its write buffer, which keeps that capacity for the life of the socket:
/// with runs joined whole, a wave of 200 operations left 1,000 sockets
/// holding about 100 KiB each (heaptrack; docs/performance.md).
pub const MAX_JOINED_BYTES: usize = 16 * 1024;

/// `messages` joined by `\n` into frames of at most [`MAX_JOINED_BYTES`].
pub fn join_lines<'a>(messages: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut frames = Vec::new();
    let mut text = String::new();
    for message in messages {
        if !text.is_empty() && text.len() + 1 + message.len() > MAX_JOINED_BYTES {
            frames.push(std::mem::take(&mut text));
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(message);
    }
    if !text.is_empty() {
        frames.push(text);
    }
    frames
}

impl Frames {
    /// A run of `frames`, which must not be empty. None of them is ever
    /// skipped.
    pub fn new(frames: Vec<Utf8Bytes>) -> Arc<Frames> {
        debug_assert!(!frames.is_empty());
        Arc::new(Frames { frames, states: Vec::new(), joined: OnceLock::new() })
    }

    /// A run of live events, which must not be empty. A progress event in it
    /// may be skipped by a socket that is behind (see [`superseded`]).
    pub fn live(events: &[&Event]) -> Arc<Frames> {
        debug_assert!(!events.is_empty());
        let frames = events.iter().map(|e| e.frame.clone()).collect();
        let states = events
            .iter()
            .map(|e| e.operation.as_ref().map(|_| StateOf { op: e.op_id, progress: e.kind == EventKind::Progress }))
            .collect();
        Arc::new(Frames { frames, states, joined: OnceLock::new() })
    }

    /// A run of one frame.
    pub fn one(frame: Utf8Bytes) -> Arc<Frames> {
        Frames::new(vec![frame])
    }

    /// The frames, one message each.
    pub fn iter(&self) -> impl Iterator<Item = &Utf8Bytes> {
        self.frames.iter()
    }

    /// True if the run is live progress and nothing else: it may wait a
    /// moment for what follows it.
    pub fn progress_only(&self) -> bool {
        !self.states.is_empty() && self.states.iter().all(|s| s.is_some_and(|s| s.progress))
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
    /// per frame: in frames of at most [`MAX_JOINED_BYTES`]. Joined on first
    /// use, then shared by every socket that sends this run whole.
    pub fn joined(&self) -> &[Utf8Bytes] {
        self.joined.get_or_init(|| match self.frames.as_slice() {
            [one] => vec![one.clone()],
            many => join_lines(many.iter().map(Utf8Bytes::as_str)).into_iter().map(Utf8Bytes::from).collect(),
        })
    }
}

/// Messages a socket must have in hand before it skips anything.
pub const COALESCE_FROM: usize = 32;

/// Which messages of `runs` (taken from the queue together, in order) a
/// socket that is behind may skip: a progress event of an operation whose
/// newer state is also in `runs`. Lifecycle, log and terminal events are
/// never skipped, nor is anything in a run made with [`Frames::new`]. Nothing
/// is skipped unless `runs` hold at least [`COALESCE_FROM`] messages: a
/// socket that keeps up sees every event. Returns, per message of all the
/// runs in order, whether to skip it, or `None` if none is skipped.
///
/// Every socket that is behind calls this on each write, so it sorts the
/// states in hand rather than hashing them: in the 1,000-client wave, hashing
/// each id into a growing set took 8-11% of the server's CPU
/// (docs/performance.md, "The wave at 1.13 times the floor").
pub fn superseded(runs: &[Arc<Frames>]) -> Option<Vec<bool>> {
    let total: usize = runs.iter().map(|r| r.len()).sum();
    if runs.len() < 2 || total < COALESCE_FROM {
        return None;
    }
    // (operation, position in hand, progress only), for every message that
    // carries an operation's state; sorted, each operation's states are
    // together, oldest first.
    let mut states = Vec::with_capacity(total);
    let mut position = 0;
    for run in runs {
        let held = run.states.iter().enumerate().filter_map(|(j, s)| s.map(|s| (s.op, position + j, s.progress)));
        states.extend(held);
        position += run.len();
    }
    states.sort_unstable();
    let mut skip = vec![false; total];
    let mut any = false;
    for pair in states.windows(2) {
        let ((op, at, progress), (newer, ..)) = (pair[0], pair[1]);
        if progress && op == newer {
            skip[at] = true;
            any = true;
        }
    }
    any.then_some(skip)
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
        let joined = run(&[r#"{"a":1}"#, r#"{"b":2}"#]);
        assert_eq!(joined.joined().iter().map(Utf8Bytes::as_str).collect::<Vec<_>>(), ["{\"a\":1}\n{\"b\":2}"]);
        assert_eq!(run(&[r#"{"a":1}"#]).joined()[0].as_str(), r#"{"a":1}"#);
    }

    #[test]
    fn joined_frames_stay_under_the_limit_and_keep_every_message_whole_and_in_order() {
        let messages: Vec<String> =
            (0..100).map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(500))).collect();
        let big = "y".repeat(MAX_JOINED_BYTES + 10);
        let all: Vec<&str> = messages.iter().map(String::as_str).chain([big.as_str(), "{}"]).collect();
        let frames = join_lines(all.iter().copied());
        assert!(frames.len() > 3, "{} frames", frames.len());
        let lines: Vec<&str> = frames.iter().flat_map(|f| f.split('\n')).collect();
        assert_eq!(lines, all, "every message once, whole, in order");
        for frame in &frames {
            assert!(frame.len() <= MAX_JOINED_BYTES || !frame.contains('\n'), "only a lone message may be larger");
        }
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

    fn live(states: &[(u128, bool)]) -> Arc<Frames> {
        let frames = states.iter().map(|_| Utf8Bytes::from_static("{}")).collect();
        let states =
            states.iter().map(|&(op, progress)| Some(StateOf { op: OperationId::from_key(op), progress })).collect();
        Arc::new(Frames { frames, states, joined: OnceLock::new() })
    }

    #[test]
    fn a_socket_behind_skips_progress_made_stale_by_a_newer_state_in_hand() {
        // 40 messages in hand: op 1's progress, then 38 others, then op 1's
        // terminal state; op 2's progress is its latest and stays.
        let mut first = vec![(1, true), (2, true)];
        first.extend((0..18).map(|i| (100 + i, false)));
        let mut second: Vec<(u128, bool)> = (0..19).map(|i| (200 + i, false)).collect();
        second.push((1, false));
        let skip = superseded(&[live(&first), live(&second)]).expect("something is skipped");
        assert_eq!(skip.len(), first.len() + second.len(), "one flag per message in hand");
        assert_eq!(skip.iter().filter(|s| **s).count(), 1);
        assert!(skip[0], "op 1's progress is stale");
        assert!(!skip[1], "op 2's progress is its newest state");
        assert!(skip[first.len()..].iter().all(|s| !s), "terminal and lifecycle events are never skipped");

        // Op 3's progress three times, in two runs: the older two are stale,
        // the newest is its latest state and stays.
        let mut first: Vec<(u128, bool)> = vec![(3, true), (4, false), (3, true)];
        first.extend((0..30).map(|i| (300 + i, false)));
        let second = [(5, false), (3, true)];
        let skip = superseded(&[live(&first), live(&second)]).expect("something is skipped");
        let skipped: Vec<usize> = (0..skip.len()).filter(|&i| skip[i]).collect();
        assert_eq!(skipped, [0, 2], "op 3's older progress, in order of arrival");
    }

    #[test]
    fn a_socket_that_keeps_up_or_holds_replays_skips_nothing() {
        let few = [live(&[(1, true)]), live(&[(1, true)])];
        assert_eq!(superseded(&few), None, "fewer than COALESCE_FROM messages in hand");
        let replay = Frames::new((0..40).map(|_| Utf8Bytes::from_static("{}")).collect());
        assert_eq!(superseded(&[replay, live(&[(1, false)])]), None, "replays and snapshots are never skipped");
        let progress_only: Vec<(u128, bool)> = (0..40).map(|i| (i, true)).collect();
        assert_eq!(superseded(&[live(&progress_only), live(&[(99, true)])]), None, "each op's newest state stays");
    }

    #[test]
    fn a_closed_queue_refuses_as_closed() {
        let (tx, rx) = bounded(3);
        drop(rx);
        assert_eq!(tx.try_send(run(&["x"])), Err(Refused::Closed));
        assert_eq!(tx.room(), 3, "a refused run is not counted");
    }
}
