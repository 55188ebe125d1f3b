//! The webhook and audit suite again, with every server on the PostgreSQL
//! store (tests/support/cluster.rs, `store_for`).

#[path = "hooks.rs"]
mod suite;
