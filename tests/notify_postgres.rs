//! The notification suite again, with every server on the PostgreSQL store
//! (tests/support/cluster.rs, `store_for`).

#[path = "notify.rs"]
mod suite;
