//! `api`: the HTTP surface. `router()` builds the whole axum app, so tests can
//! drive it with `oneshot` or serve it on `127.0.0.1:0`. It also mounts the
//! dashboard's static routes (`/`, `/assets/...`), which the `dashboard`
//! module owns.
//!
//! Handlers parse and map; decisions belong to the engine. Errors are mapped
//! to problem+json in `problem`, and nowhere else.

mod audit;
mod body;
mod caller;
mod gates;
mod guard;
mod hooks;
mod notifications;
mod openapi;
mod operations;
mod problem;
mod schedules;

use std::sync::Arc;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};

pub use caller::Caller;
pub use hooks::Hooks;
pub use openapi::document as openapi_document;
pub use problem::ApiError;
use problem::Problem;

use crate::auth::{Access, Role};
use crate::engine::Engine;
use crate::registry::{PluginSummary, RefusedPlugin, Registry, Unresolved};
use crate::schedule::Schedules;
use crate::status::{StatusSources, SystemStatus};
use crate::ws::{Framing, SocketContext};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Operation lifecycle.
    pub engine: Engine,
    /// Loaded plugins.
    pub registry: Arc<Registry>,
    /// Recurring operations.
    pub schedules: Schedules,
    /// What each WebSocket task needs.
    pub sockets: SocketContext,
    /// Figures for `GET /api/v1/status`.
    pub status: StatusSources,
    /// Credentials and per-principal limits.
    pub access: Arc<Access>,
    /// Inbound webhooks.
    pub hooks: Arc<hooks::Hooks>,
    /// The Prometheus recorder's handle (`None` if another recorder was
    /// installed in this process first).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    let access = state.access.clone();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/operations", post(operations::create).get(operations::list))
        .route("/api/v1/operations/{id}", get(operations::get))
        .route("/api/v1/operations/{id}/events", get(operations::events))
        .route("/api/v1/operations/{id}/cancel", post(operations::cancel))
        .route("/api/v1/operations/{id}/approve", post(gates::approve))
        .route("/api/v1/operations/{id}/reject", post(gates::reject))
        .route("/api/v1/queue/pause", post(gates::pause))
        .route("/api/v1/queue/resume", post(gates::resume))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/notifications", get(notifications::list))
        .route("/api/v1/operations/{id}/notifications", get(notifications::of_operation))
        .route("/api/v1/hooks/{name}", post(hooks::deliver))
        .route("/api/v1/schedules", post(schedules::create).get(schedules::list))
        .route("/api/v1/schedules/{id}", get(schedules::get).delete(schedules::delete))
        .route("/api/v1/status", get(status))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/plugins/{name}", get(get_plugin))
        .route("/api/v1/ws", get(websocket))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(crate::telemetry::http_layer))
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::refusals))
        .with_state(state);
    guard::guard(app, &access)
}

/// `GET /healthz` answer: the process serves (whether it can take work is `/readyz`'s).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok` (a process that does not serve does not answer).
    status: &'static str,
    /// The server's version.
    version: &'static str,
    /// The node that answered (`--node-id`).
    node: String,
    /// Seconds since it started.
    uptime_seconds: u64,
    /// Whether it drains before it stops (first SIGTERM).
    draining: bool,
}

/// `GET /healthz`: 200 while the process serves; needs no token.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "The process serves", body = Health)))]
async fn healthz(State(app): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        node: app.engine.node().to_owned(),
        uptime_seconds: app.status.started.elapsed().as_secs(),
        draining: app.engine.draining(),
    })
}

/// `GET /metrics`: the Prometheus text format, for admins and the `metrics`
/// role (a viewer's scope is some targets; these figures span them all).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 403, description = "Neither admin nor the metrics role", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
async fn metrics(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    if !caller.0.reads_metrics() {
        return Err(ApiError::Forbidden(format!(
            "reading /metrics takes the admin or metrics role; {} is a {}",
            caller.0.name,
            caller.0.role.as_str()
        )));
    }
    Ok(metrics_text(app.metrics.as_ref(), &app.status))
}

/// The metrics page, or 503 if this process has no recorder of ours.
pub fn metrics_text(
    handle: Option<&metrics_exporter_prometheus::PrometheusHandle>,
    status: &StatusSources,
) -> Response {
    use axum::response::IntoResponse;
    match handle {
        Some(handle) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            crate::telemetry::render(handle, &status.read()),
        )
            .into_response(),
        None => {
            ApiError::Unavailable("another metrics recorder was installed in this process first".into()).into_response()
        }
    }
}

/// `GET /readyz` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Ready {
    /// Always `true` (a server that is not ready answers 503).
    ready: bool,
}

/// `GET /readyz`: 200 once the server can take work: its store is open
/// and writes succeed, recovery has run and the plugins are loaded (the
/// server listens only after both); 503 with the reason (and Retry-After)
/// while writes fail. Needs no token.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses(
        (status = 200, description = "The server can take work", body = Ready),
        (status = 503, description = "Writes fail; `detail` says why", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
async fn readyz(State(app): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if app.engine.draining() {
        return Err(ApiError::Unavailable(format!("node {} is draining before it stops", app.engine.node())));
    }
    match app.engine.store_condition().failed {
        Some(why) => Err(ApiError::Unavailable(format!("storage failed: {why}"))),
        None => Ok(Json(Ready { ready: true })),
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct PluginList {
    /// Each plugin at its highest loaded version.
    plugins: Vec<PluginDetail>,
    /// Plugin files in the plugins directories that did not load, and why.
    refused: Vec<RefusedPlugin>,
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, description = "The loaded plugins, and the files that did not load", body = PluginList), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json")))]
async fn list_plugins(State(app): State<AppState>, caller: Caller) -> Result<Json<PluginList>, ApiError> {
    caller.require(Role::Viewer, "reading plugins")?;
    let mut plugins: Vec<PluginDetail> = app.registry.list().iter().map(|p| PluginDetail::of(&app, p)).collect();
    plugins.extend(app.engine.workflows().list().iter().map(|w| PluginDetail::of_workflow(&app, w)));
    let mut refused = app.registry.refused();
    refused.extend(app.engine.workflows().refused());
    Ok(Json(PluginList { plugins, refused }))
}

/// `GET /api/v1/plugins/{name}` query parameters.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PluginQuery {
    /// A semver requirement; the highest matching version is shown.
    version: Option<String>,
}

/// A plugin as `GET /api/v1/plugins` and `GET /api/v1/plugins/{name}` show
/// it: its summary, and what this server's config adds to its params.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PluginDetail {
    #[serde(flatten)]
    summary: PluginSummary,
    /// The operator's defaults for this type's params (`[types.<name>.params]`
    /// in the config; `{}` if none), merged under every request's params:
    /// a top-level field the request sets wins.
    #[schema(value_type = Object)]
    param_defaults: serde_json::Map<String, serde_json::Value>,
}

impl PluginDetail {
    fn of(app: &AppState, plugin: &crate::registry::Plugin) -> Self {
        PluginDetail {
            summary: app.registry.summary(plugin),
            param_defaults: app.engine.param_defaults(&plugin.name).clone(),
        }
    }

    fn of_workflow(app: &AppState, flow: &crate::workflow::Loaded) -> Self {
        PluginDetail { summary: flow.summary(), param_defaults: app.engine.param_defaults(&flow.workflow.name).clone() }
    }
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name (its operation type)"), PluginQuery),
    responses(
        (status = 200, description = "The plugin at its highest version, or the highest that meets `version`, with the server's defaults for its params", body = PluginDetail),
        (status = 400, description = "version is not a semver requirement", body = Problem<'static>, content_type = "application/problem+json"), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such plugin, or no loaded version meets the requirement", body = Problem<'static>, content_type = "application/problem+json"),
    ))]
async fn get_plugin(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<axum::extract::Query<PluginQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PluginDetail>, ApiError> {
    caller.require(Role::Viewer, "reading plugins")?;
    let axum::extract::Query(query) = query.map_err(|e| ApiError::field("", e.body_text()))?;
    let requirement =
        query.version.as_deref().map(version_req).transpose().map_err(|e| ApiError::field("version", e))?;
    if let Some(flow) = app.engine.workflows().get(&name) {
        return match &requirement {
            Some(req) if !req.matches(&flow.workflow.version) => Err(ApiError::NotFound(format!(
                "workflow {name} is version {}, which does not match {req}",
                flow.workflow.version
            ))),
            _ => Ok(Json(PluginDetail::of_workflow(&app, &flow))),
        };
    }
    match app.registry.resolve(&name, requirement.as_ref()) {
        Ok(plugin) => Ok(Json(PluginDetail::of(&app, &plugin))),
        Err(Unresolved::UnknownType) => Err(ApiError::NotFound(format!("no plugin named {name:?}"))),
        Err(Unresolved::NoMatchingVersion(message)) => Err(ApiError::NotFound(message)),
    }
}

/// Parses a `version` requirement such as `^1.2`, `=0.1.0` or `1`.
fn version_req(text: &str) -> Result<semver::VersionReq, String> {
    semver::VersionReq::parse(text).map_err(|e| format!("{text:?} is not a semver requirement (like ^1.2): {e}"))
}

/// `GET /api/v1/ws` query parameters.
#[derive(serde::Deserialize)]
struct WsQuery {
    /// True: the client takes several messages per text frame, one per line.
    #[serde(default)]
    batch: bool,
}

/// `GET /api/v1/ws`: a request with `Authorization` is authenticated here
/// (401 if it fails); one without must send an `auth` message first, unless
/// the server is in dev mode. (A browser page from another origin than this
/// server's and its allow-list got 403 in `guard` already.)
async fn websocket(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    query: Result<axum::extract::Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let principal = match headers.get(axum::http::header::AUTHORIZATION) {
        Some(_) => Some(Caller::from_headers(&headers, &app)?.0),
        None if app.access.auth.dev_mode() => Some(crate::auth::Principal::anonymous()),
        None => None,
    };
    let axum::extract::Query(query) = query.map_err(|e| ApiError::field("batch", e.body_text()))?;
    let framing = if query.batch { Framing::Lines } else { Framing::OnePerFrame };
    Ok(upgrade
        .max_message_size(crate::ws::MAX_FRAME)
        // Clients send little; a small read buffer is what keeps an idle
        // connection cheap (the default is 128 KiB per socket).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| crate::ws::serve(socket, app.sockets, principal, framing)))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = ServerStatus)]
struct Status {
    version: &'static str,
    uptime_seconds: u64,
    /// The node that answered (`--node-id`).
    node: String,
    /// Its store backend: `redb` (one node) or `postgres` (a cluster).
    store: &'static str,
    /// Who asked: the caller's name as operations record it (`user:<name>`,
    /// `api` in dev mode), so a client can tell its own runs.
    caller: String,
    /// The caller's role: what it may do (`viewer`, `operator`, `admin`).
    role: &'static str,
    #[serde(flatten)]
    figures: SystemStatus,
}

#[utoipa::path(get, path = "/api/v1/status", tag = "meta",
    responses((status = 200, description = "Version, uptime and figures", body = Status), (status = 401, description = "No valid bearer token", body = Problem<'static>, content_type = "application/problem+json"), (status = 403, description = "The caller's role may not do this", body = Problem<'static>, content_type = "application/problem+json")))]
/// `GET /api/v1/status`.
async fn status(State(app): State<AppState>, caller: Caller) -> Result<Json<Status>, ApiError> {
    caller.require(Role::Viewer, "reading the status")?;
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: app.status.started.elapsed().as_secs(),
        node: app.engine.node().to_owned(),
        store: app.engine.store_kind(),
        caller: caller.0.audit_name().to_owned(),
        role: caller.0.role.as_str(),
        figures: app.status.read(),
    }))
}
