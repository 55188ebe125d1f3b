//! opal-host: the Opal operations engine.
//!
//! Each module owns one concern and talks to the others through a small
//! typed handle (see `docs/architecture.md`):
//!
//! | module | owns |
//! |---|---|
//! | [`model`] | the shared data types: operations, events, seqs |
//! | [`config`] | server settings and defaults |
//! | [`auth`] | credentials, principals, roles, target scopes and per-principal limits |
//! | [`store`] | the redb file and its single group-commit writer |
//! | [`sandbox`] | wasmtime: engine, limits, component cache, calls into plugins |
//! | [`registry`] | which plugins are loaded, by operation type |
//! | [`workflow`] | workflow definitions (TOML): steps, templates, the catalog of workflows |
//! | [`progress`] | the per-operation progress throttle |
//! | [`engine`] | operation lifecycle: admission, queue and limits, runners, workflow drivers, gates, retries, cancel, recovery, retention |
//! | [`schedule`] | recurring operations on a cron |
//! | [`notify`] | outbound notifications: the `[[notify]]` rules and their at-least-once delivery |
//! | [`hooks`] | inbound webhooks: signatures, filters, payload mapping |
//! | [`hub`] | topics, snapshots and fan-out to connections |
//! | [`ws`] | the WebSocket protocol, heartbeats |
//! | [`status`] | system figures and the `system.status` broadcast |
//! | [`api`] | the HTTP API |
//! | [`dashboard`] | the embedded web dashboard served at `/` |
//! | [`server`] | assembling and stopping all of the above |
//! | [`scaffold`] | `opal plugin new`: the template of a new plugin crate |

pub mod api;
pub mod auth;
pub mod bundled;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod hooks;
pub mod hub;
pub mod model;
pub mod notify;
pub mod progress;
pub mod registry;
pub mod sandbox;
pub mod scaffold;
pub mod schedule;
pub mod server;
pub mod space;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod workflow;
pub mod ws;

pub use config::ServerConfig;
pub use server::{RunningServer, start};
