//! The runners' own tokio runtime.
//!
//! Every running operation (its runner task, and the plugin inside it) runs
//! on worker threads of its own, not on the server's runtime. The server's
//! runtime serves HTTP and every WebSocket: when an event reaches a thousand
//! dashboards, a thousand socket tasks queue up there, and a plugin whose
//! sleep ended would wait behind all of them (measured: 20 steps of 50 ms took
//! 1.3 s instead of 1.0 s, and the delays bunched the operations' ends into
//! one burst). On threads of their own, a runner that wakes is scheduled by
//! the OS at once, whatever the sockets are doing: the dashboards' load never
//! slows the operations they watch.
//!
//! A type with `runner_threads` set gets a runtime of its own with that many
//! threads ([`Runners`]): its operations compute on those threads only, so a
//! busy plugin of that type never takes more cores than its share, and the
//! other operations keep the shared threads.
//!
//! Owned by the engine; dropping it stops the threads without blocking (at
//! shutdown the engine has already waited for its runners).

use std::collections::HashMap;
use std::io;

use tokio::runtime::{Builder, Handle, Runtime};

/// The shared runner threads, and the threads of each type that has its own.
pub(super) struct Runners {
    shared: RunnerRuntime,
    own: HashMap<String, RunnerRuntime>,
}

impl Runners {
    /// `shared` threads for every type, plus `own` threads for each type named there.
    pub(super) fn start(shared: usize, own: impl IntoIterator<Item = (String, usize)>) -> io::Result<Runners> {
        let shared = RunnerRuntime::start(shared, "opal-runner")?;
        let own = own
            .into_iter()
            .map(|(op_type, threads)| {
                // A thread's name is cut to 15 bytes; the type's first letters say enough.
                let name: String = format!("opal-t-{op_type}").chars().take(15).collect();
                Ok((op_type, RunnerRuntime::start(threads, &name)?))
            })
            .collect::<io::Result<_>>()?;
        Ok(Runners { shared, own })
    }

    /// Where a runner of `op_type` is spawned.
    pub(super) fn handle(&self, op_type: &str) -> &Handle {
        self.own.get(op_type).unwrap_or(&self.shared).handle()
    }
}

/// A multi-threaded runtime for runner tasks.
pub(super) struct RunnerRuntime {
    /// Always `Some` until dropped: `Drop` takes it to shut it down in the
    /// background, which is allowed inside an async context.
    runtime: Option<Runtime>,
}

impl RunnerRuntime {
    /// Starts `threads` worker threads (at least one), named `name`.
    fn start(threads: usize, name: &str) -> io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            // A computing guest yields once per epoch tick (10 ms). By
            // default a worker polls its timers and I/O only every 61 task
            // polls, so beside a few busy guests a sleeping plugin's timer
            // would wait 61 ticks to fire: check them at every poll instead.
            .event_interval(1)
            .enable_all()
            .build()?;
        Ok(RunnerRuntime { runtime: Some(runtime) })
    }

    /// Where runner tasks are spawned.
    fn handle(&self) -> &Handle {
        self.runtime.as_ref().expect("runtime present until dropped").handle()
    }
}

impl Drop for RunnerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // From a thread of its own: the last handle to the engine may be
            // dropped by a runner, on one of the threads being stopped.
            let stop = std::thread::Builder::new().name("opal-runner-stop".into());
            if let Err(e) = stop.spawn(move || runtime.shutdown_background()) {
                tracing::warn!(error = %e, "cannot stop the runner threads");
            }
        }
    }
}
