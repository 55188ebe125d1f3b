//! `progress`: the per-operation throttle between a chatty plugin and the event stream.
//!
//! The plugin's host calls write the latest [`LiveProgress`] into a
//! `tokio::sync::watch` channel: a cheap overwrite, whatever the rate. The
//! operation's runner owns the receiving [`ProgressThrottle`], which decides
//! what gets published:
//! - **leading edge**: the first change after a quiet period goes out at once;
//! - **trailing edge**: changes inside the window are held, and the latest one
//!   goes out when the window closes (which opens the next window);
//! - **flush**: a terminal transition takes any held change first, so the
//!   last value always gets through.
//!
//! So a plugin that reports without pause produces one event per window, plus
//! at most two at the edges, and the final numbers are exact.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// The throttled part of an operation's state, as the plugin last set it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProgress {
    /// Overall percent, 0-100.
    pub percent: u8,
    /// What the plugin says it is doing.
    pub message: String,
    /// The phase it last entered.
    pub phase: Option<String>,
    /// The details it last set.
    pub details: Option<serde_json::Value>,
    /// Bumped on every change; how the throttle knows what it has published.
    pub version: u64,
}

/// Decides when a changed [`LiveProgress`] is published. See the module docs.
pub struct ProgressThrottle {
    rx: watch::Receiver<LiveProgress>,
    window: Duration,
    /// The version last handed out.
    published: u64,
    /// End of the current window, if one is open.
    window_end: Option<Instant>,
}

impl ProgressThrottle {
    /// A throttle over `rx` with the given window.
    pub fn new(rx: watch::Receiver<LiveProgress>, window: Duration) -> Self {
        let published = rx.borrow().version;
        ProgressThrottle { rx, window, published, window_end: None }
    }

    /// Waits until a value is due and returns it. Cancel-safe: dropping the
    /// future loses nothing, so it can sit in a `select!` loop.
    pub async fn next(&mut self) -> LiveProgress {
        loop {
            match self.window_end {
                None => {
                    if self.rx.changed().await.is_err() {
                        // The plugin is gone; only `flush` has anything left.
                        std::future::pending::<()>().await;
                    }
                    if let Some(value) = self.take_unpublished() {
                        return value; // leading edge
                    }
                }
                Some(end) => {
                    sleep_until(end).await;
                    self.window_end = None;
                    if let Some(value) = self.take_unpublished() {
                        return value; // trailing edge
                    }
                }
            }
        }
    }

    /// The latest value if it has not been published yet. Call it before a
    /// terminal transition.
    pub fn flush(&mut self) -> Option<LiveProgress> {
        self.take_unpublished()
    }

    fn take_unpublished(&mut self) -> Option<LiveProgress> {
        let value = self.rx.borrow_and_update();
        if value.version == self.published {
            return None;
        }
        self.published = value.version;
        self.window_end = Some(Instant::now() + self.window);
        Some(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tx: &watch::Sender<LiveProgress>, percent: u8, message: &str) {
        tx.send_modify(|p| {
            p.percent = percent;
            p.message = message.to_owned();
            p.version += 1;
        });
    }

    /// Runs a throttle in its own task and returns what it publishes.
    fn spawn(
        rx: watch::Receiver<LiveProgress>,
        window: Duration,
    ) -> tokio::sync::mpsc::UnboundedReceiver<LiveProgress> {
        let (out, published) = tokio::sync::mpsc::unbounded_channel();
        let mut throttle = ProgressThrottle::new(rx, window);
        tokio::spawn(async move {
            loop {
                let value = throttle.next().await;
                if out.send(value).is_err() {
                    break;
                }
            }
        });
        published
    }

    #[tokio::test(start_paused = true)]
    async fn burst_in_one_window_gives_leading_and_trailing_only() {
        let (tx, rx) = watch::channel(LiveProgress::default());
        let mut published = spawn(rx, Duration::from_millis(500));
        let start = Instant::now();
        for i in 1..=10_000u32 {
            report(&tx, (i / 100) as u8, &format!("report {i}"));
            tokio::task::yield_now().await; // let the throttle see every value
        }
        assert!(start.elapsed() < Duration::from_millis(500), "the burst fits in one window");

        let leading = published.recv().await.unwrap();
        assert_eq!(leading.message, "report 1");
        let trailing = published.recv().await.unwrap();
        assert_eq!(trailing.message, "report 10000");
        assert_eq!(trailing.percent, 100);
        assert_eq!(Instant::now() - start, Duration::from_millis(500), "trailing edge at window end");

        // Nothing more, however long we wait.
        let more = tokio::time::timeout(Duration::from_secs(60), published.recv()).await;
        assert!(more.is_err(), "unexpected extra event: {more:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn steady_stream_gives_one_event_per_window() {
        let (tx, rx) = watch::channel(LiveProgress::default());
        let mut published = spawn(rx, Duration::from_millis(100));
        // 10 s of reports every millisecond.
        for i in 1..=10_000u32 {
            report(&tx, 0, &i.to_string());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(tx);
        let mut count = 0;
        let mut last = String::new();
        while let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(1), published.recv()).await {
            count += 1;
            last = v.message;
        }
        assert_eq!(last, "10000", "the last value gets through");
        assert!(count <= 10_000 / 100 + 2, "{count} events for 100 windows");
        assert!(count >= 10_000 / 100 - 2, "{count} events: the stream was starved");
    }

    #[tokio::test(start_paused = true)]
    async fn flush_returns_only_the_unpublished_value() {
        let (tx, rx) = watch::channel(LiveProgress::default());
        let mut throttle = ProgressThrottle::new(rx, Duration::from_millis(500));
        assert_eq!(throttle.flush(), None);
        report(&tx, 10, "a");
        assert_eq!(throttle.next().await.message, "a");
        report(&tx, 20, "b");
        assert_eq!(throttle.flush().map(|v| v.message), Some("b".to_owned()));
        assert_eq!(throttle.flush(), None);
        report(&tx, 30, "c");
        drop(tx);
        assert_eq!(throttle.flush().map(|v| v.percent), Some(30), "a value set just before the plugin ended");
    }
}
