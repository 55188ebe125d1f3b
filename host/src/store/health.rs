//! Whether the store can write: set by each backend's writer, read by the
//! status, the readiness endpoint and the engine.
//!
//! A write that fails on storage (an I/O error in the redb file, a database
//! that refuses writes) marks the store failed with the reason; the first
//! write that succeeds after that marks it healthy again and counts one
//! recovery. The engine watches that count: after a recovery it resolves
//! whatever was left running here without a runner.

use std::sync::Arc;

use tokio::sync::watch;

/// The store's condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// Why writes fail, while they do.
    pub failed: Option<String>,
    /// How many times writes came back after failing.
    pub recoveries: u64,
}

/// The writer's side; cheap to clone.
#[derive(Clone)]
pub(crate) struct Health(Arc<watch::Sender<Condition>>);

impl Health {
    pub(crate) fn new() -> Health {
        Health(Arc::new(watch::Sender::new(Condition::default())))
    }

    /// Writes fail, for `why`.
    pub(crate) fn failed(&self, why: &str) {
        self.0.send_if_modified(|c| {
            if c.failed.as_deref() == Some(why) {
                return false;
            }
            if c.failed.is_none() {
                tracing::error!("storage failed: {why}; new operations are refused (503) until writes succeed again");
            }
            c.failed = Some(why.to_owned());
            true
        });
    }

    /// Writes succeed.
    pub(crate) fn ok(&self) {
        self.0.send_if_modified(|c| {
            if c.failed.take().is_none() {
                return false;
            }
            c.recoveries += 1;
            tracing::warn!("storage recovered: writes succeed again");
            true
        });
    }

    /// The condition now.
    pub(crate) fn now(&self) -> Condition {
        self.0.borrow().clone()
    }

    /// Follows the condition.
    pub(crate) fn watch(&self) -> watch::Receiver<Condition> {
        self.0.subscribe()
    }
}
