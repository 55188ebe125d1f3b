//! The CPU time a guest computes: the sum of the polls of its call.
//!
//! A guest runs only while its call's future is being polled (in wasm, or in
//! a host function that does not wait). Waiting in an async host call (a
//! sleep, a socket) ends the poll, and so does the yield at each epoch tick.
//! A poll runs on one thread from start to end, so the polling thread's own
//! CPU clock (`CLOCK_THREAD_CPUTIME_ID`) read at both ends gives the CPU the
//! guest used in it: time the OS gave to other threads meanwhile is not
//! charged, however loaded the machine. The call is wrapped in [`Metered`],
//! which adds up each poll's CPU, and the epoch callback (on the polling
//! thread) reads [`CpuClock::used`], the poll in progress included, to
//! enforce `max_cpu_ms`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// The CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let now = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.clamp(0, 999_999_999) as u32)
}

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
    /// The polling thread's CPU time when the poll in progress started.
    since: Option<Duration>,
}

impl CpuClock {
    /// Time spent in polls so far, the one in progress included.
    pub(crate) fn used(&self) -> Duration {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.spent + state.since.map_or(Duration::ZERO, |since| thread_cpu().saturating_sub(since))
    }

    fn start(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).since = Some(thread_cpu());
    }

    fn stop(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = state.since.take() {
            state.spent += thread_cpu().saturating_sub(since);
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
        assert!(clock.used() < Duration::from_millis(20), "nor is a thread that blocks: {:?}", clock.used());
        // Computes for 30 ms of this thread's own CPU time, however busy the
        // machine is (wall time would count the other threads' turns).
        let thread_cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        let spin = async {
            let until = thread_cpu() + Duration::from_millis(30);
            while thread_cpu() < until {
                std::hint::spin_loop();
            }
        };
        Metered::new(spin, &clock).await;
        assert!(clock.used() >= Duration::from_millis(25), "computing is: {:?}", clock.used());
    }
}
