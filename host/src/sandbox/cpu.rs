//! The CPU time a guest computes: the sum of the polls of its call.
//!
//! A guest runs only while its call's future is being polled (in wasm, or in
//! a host function that does not wait). Waiting in an async host call (a
//! sleep, a socket) ends the poll, and so does the yield at each epoch tick.
//! So the time spent inside polls is the time the guest held a thread: the
//! call is wrapped in [`Metered`], which adds up each poll's duration, and
//! the epoch callback reads [`CpuClock::used`] (the poll in progress
//! included) to enforce `max_cpu_ms`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The CPU time of one call. A std mutex, taken by the thread polling the
/// call and by the epoch callback on that same thread: never contended.
#[derive(Debug, Default)]
pub(crate) struct CpuClock {
    state: Mutex<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    /// Polls that ended.
    spent: Duration,
    /// When the poll in progress started.
    since: Option<Instant>,
}

impl CpuClock {
    /// Time spent in polls so far, the one in progress included.
    pub(crate) fn used(&self) -> Duration {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.spent + state.since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn start(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).since = Some(Instant::now());
    }

    fn stop(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = state.since.take() {
            state.spent += since.elapsed();
        }
    }
}

/// A future whose polls are timed on `clock`.
pub(crate) struct Metered<'a, F> {
    inner: Pin<Box<F>>,
    clock: &'a CpuClock,
}

impl<'a, F> Metered<'a, F> {
    pub(crate) fn new(inner: F, clock: &'a CpuClock) -> Self {
        Metered { inner: Box::pin(inner), clock }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.clock.start();
        let polled = self.inner.as_mut().poll(cx);
        self.clock.stop();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_is_not_counted_and_computing_is() {
        let clock = CpuClock::default();
        Metered::new(tokio::time::sleep(Duration::from_millis(50)), &clock).await;
        assert!(clock.used() < Duration::from_millis(20), "a sleep is not CPU: {:?}", clock.used());
        Metered::new(async { std::thread::sleep(Duration::from_millis(30)) }, &clock).await;
        assert!(clock.used() >= Duration::from_millis(30), "a blocking poll is: {:?}", clock.used());
    }
}
