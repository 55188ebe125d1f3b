//! The workflow suite again, with every server on the PostgreSQL store: a test
//! target named `*_postgres` gets a fresh database per server data directory
//! (tests/support/cluster.rs, `store_for`).

#[path = "workflows.rs"]
mod suite;
