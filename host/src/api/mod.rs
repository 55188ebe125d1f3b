//! `api`: the HTTP surface. `router()` builds the whole axum app, so tests can
//! drive it with `oneshot` or serve it on `127.0.0.1:0`.
//!
//! Handlers parse and map; decisions belong to the engine. Errors are mapped
//! to problem+json in `problem`, and nowhere else.

mod operations;
mod problem;
mod schedules;

use std::sync::Arc;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

pub use problem::ApiError;

use crate::engine::Engine;
use crate::hub::Hub;
use crate::registry::{PluginSummary, Registry};
use crate::schedule::Schedules;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Operation lifecycle.
    pub engine: Engine,
    /// Loaded plugins.
    pub registry: Arc<Registry>,
    /// Live fan-out.
    pub hub: Arc<Hub>,
    /// Reads for WebSocket snapshots.
    pub store: Store,
    /// Recurring operations.
    pub schedules: Schedules,
    /// Cancelled when the server shuts down; closes WebSockets.
    pub shutdown: CancellationToken,
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/operations", post(operations::create).get(operations::list))
        .route("/api/v1/operations/{id}", get(operations::get))
        .route("/api/v1/operations/{id}/events", get(operations::events))
        .route("/api/v1/operations/{id}/cancel", post(operations::cancel))
        .route("/api/v1/schedules", post(schedules::create).get(schedules::list))
        .route("/api/v1/schedules/{id}", get(schedules::get).delete(schedules::delete))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/plugins/{name}", get(get_plugin))
        .route("/api/v1/ws", get(websocket))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

#[derive(serde::Serialize)]
struct PluginList {
    plugins: Vec<PluginSummary>,
}

async fn list_plugins(State(app): State<AppState>) -> Json<PluginList> {
    Json(PluginList { plugins: app.registry.list().map(|p| p.summary()).collect() })
}

async fn get_plugin(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<PluginSummary>, ApiError> {
    app.registry
        .get(&name)
        .map(|p| Json(p.summary()))
        .ok_or_else(|| ApiError::NotFound(format!("no plugin named {name:?}")))
}

async fn websocket(State(app): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(crate::ws::MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| crate::ws::serve(socket, app.hub, app.store, app.shutdown))
}
