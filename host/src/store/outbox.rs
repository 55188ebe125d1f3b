//! The notification outbox's rules, shared with the writers: every event a
//! writer commits is matched against them in its transaction, and what
//! matches is written to the outbox in that same transaction (see `notify`).

use std::sync::{Arc, RwLock};

use crate::notify::Rules;

/// The rules, set once the config is read (none until then).
#[derive(Clone, Default)]
pub struct Outbox(Arc<RwLock<Arc<Rules>>>);

impl Outbox {
    /// Replaces the rules.
    pub fn set(&self, rules: Rules) {
        *self.0.write().expect("outbox rules poisoned") = Arc::new(rules);
    }

    /// The rules now.
    pub fn rules(&self) -> Arc<Rules> {
        self.0.read().expect("outbox rules poisoned").clone()
    }
}
