//! `server`: assembles the modules into a running server, and takes it apart.
//!
//! Start-up order matters: the store opens (and migrates) first, the hub is
//! seeded from it, the writer is connected to the hub, plugins load, the
//! engine recovers interrupted operations, and only then does the listener
//! accept connections. Shutdown runs the other way and waits for the store's
//! writer to drain, so nothing acknowledged is lost.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, router};
use crate::config::ServerConfig;
use crate::engine::{Engine, EngineConfig};
use crate::hub::{Hub, TargetScopes};
use crate::model::Event;
use crate::model::Status;
use crate::registry::Registry;
use crate::sandbox::Sandbox;
use crate::schedule::Schedules;
use crate::status::StatusSources;
use crate::store::{Location, OperationFilter, Publish, Store};
use crate::workflow::Catalog;
use crate::ws::SocketContext;

/// A server that is accepting connections.
pub struct RunningServer {
    /// The address it listens on (the real port, even for port 0).
    pub addr: SocketAddr,
    /// The `--metrics-listen` address, if one was asked for (the real port).
    pub metrics_addr: Option<SocketAddr>,
    engine: Engine,
    drain_timeout: std::time::Duration,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, closes sockets, stops runners, drains the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let RunningServer { engine, shutdown, task, .. } = self;
        // The store's writer drains once every handle is gone: this one too.
        drop(engine);
        shutdown.cancel();
        task.await?
    }

    /// Runs until `signal` completes, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        self.shutdown().await
    }

    /// Drains, then shuts down: starts get 503 and nothing more is claimed
    /// here while the running operations get up to `drain_timeout` to end
    /// (see [`Engine::drain`]); `hurry` (a second signal) cuts the wait
    /// short. Sockets are then closed with 1012 (reconnect elsewhere).
    pub async fn drain(self, hurry: impl Future<Output = ()>) -> anyhow::Result<()> {
        let left = self.engine.drain(self.drain_timeout, hurry).await;
        tracing::info!(left, "drained; stopping");
        self.shutdown().await
    }
}

/// Forwards the store's batches to the hub once it exists: the store must
/// open first (the hub is seeded from it), but the store needs its sink at
/// once. What arrives before the hub is set (another node's events, in a
/// cluster) is kept and handed over first, in order; the hub drops what its
/// seed already holds.
struct LateHub {
    hub: OnceLock<Arc<Hub>>,
    /// Events published before the hub was set. Also serializes publishing,
    /// so the early events go out before any later ones (one publisher at a
    /// time calls this anyway: the writer or the feed).
    early: Mutex<Vec<Event>>,
}

impl Publish for LateHub {
    fn publish(&self, events: Vec<Event>) {
        let mut early = self.early.lock().expect("early events poisoned");
        match self.hub.get() {
            Some(hub) => {
                if !early.is_empty() {
                    hub.publish(std::mem::take(&mut *early));
                }
                if !events.is_empty() {
                    hub.publish(events);
                }
            }
            None => early.extend(events),
        }
    }
}

/// Starts a server with `config`; returns once it accepts connections.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    crate::auth::check_bind(config.listen, &config.auth).map_err(anyhow::Error::msg)?;
    config.check_capacity().map_err(anyhow::Error::msg)?;
    // First, so that the plugins' compile and cache-load times are recorded.
    let metrics = crate::telemetry::install(config.metrics_target_labels);
    let sink = Arc::new(LateHub { hub: OnceLock::new(), early: Mutex::new(Vec::new()) });
    let feed = crate::engine::Feed::default();
    let location = match &config.store_url {
        Some(url) => Location::Postgres(url.clone()),
        None => Location::Redb(config.data_dir.clone()),
    };
    let (store, store_tasks) =
        Store::open_wrapped(&location, &config.node_id, feed.tee(sink.clone()), config.storage_wrap.clone()).await?;
    // Before anything commits an event: each one's notifications go in its transaction.
    let rules = crate::notify::Rules(config.notify.clone());
    store.set_notify(rules.clone());
    let terminal =
        OperationFilter { statuses: vec![Status::Completed, Status::Failed, Status::Cancelled], ..Default::default() };
    // Seeded before any event can be published: the writer's events reach the
    // hub only once the sink is set below, and the feed starts from the seq
    // read at open, which is at most this one.
    let hub = Hub::new(
        config.hub.clone(),
        store.last_seq().await?,
        store.active().await?,
        store.list(&terminal, crate::hub::RECENT_TERMINAL, None).await?,
    );
    let _ = sink.hub.set(hub.clone());
    sink.publish(Vec::new());

    let sandbox = Sandbox::new(config.sandbox_config())?;
    let sources = config.plugin_sources();
    let registry = Arc::new(Registry::load(&sandbox, sources).await);
    let workflows = Arc::new(Catalog::load(config.workflow_dirs.clone(), &registry));
    let engine = Engine::start(
        store.clone(),
        registry.clone(),
        workflows.clone(),
        feed,
        sandbox,
        EngineConfig {
            progress_window: config.progress_window,
            cancel_grace: config.cancel_grace,
            max_concurrent: config.max_concurrent,
            retention: config.retention,
            audit_retention: config.audit_retention,
            prune_interval: config.prune_interval,
            types: config.types.clone(),
            node: config.node_id.clone(),
            lease: config.lease,
            space: config.store_url.is_none().then(|| (config.data_dir.clone(), config.min_free)),
        },
    )
    .await?;

    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    if config.auth.dev_mode() {
        tracing::warn!(%addr, "dev mode: no credentials are configured, so every caller is admin; listening on loopback only");
    } else {
        tracing::info!(
            tokens = config.auth.tokens.len(),
            jwt = config.auth.jwt_secret.is_some(),
            "bearer tokens required"
        );
    }
    let shutdown = CancellationToken::new();
    registry.clone().watch(config.plugin_poll, shutdown.clone());
    workflows.watch(registry.clone(), config.plugin_poll, shutdown.clone());
    crate::notify::deliver::spawn(store.clone(), Arc::new(rules), shutdown.clone());
    let schedules =
        Schedules::start(store.clone(), engine.clone(), config.limits.max_schedules, shutdown.clone()).await?;
    let status = StatusSources {
        engine: engine.clone(),
        hub: hub.clone(),
        registry: registry.clone(),
        data_dir: config.data_dir.clone(),
        store: store.clone(),
        started: std::time::Instant::now(),
        kick: Arc::new(tokio::sync::Notify::new()),
    };
    status.clone().spawn_broadcast(config.status_interval, shutdown.clone());
    let access = crate::auth::Access::new(config.auth.clone(), config.limits.clone());
    let sockets = SocketContext {
        hub,
        store,
        authorize: Arc::new(TargetScopes),
        access: access.clone(),
        config: config.ws.clone(),
        shutdown: shutdown.clone(),
    };
    let hooks = crate::api::Hooks::new(&config.hooks);
    if let Some(handle) = &metrics {
        crate::telemetry::spawn_upkeep(handle.clone(), shutdown.clone());
    }
    let metrics_addr = match config.metrics_listen {
        Some(at) => Some(serve_metrics(at, metrics.clone(), status.clone(), shutdown.clone()).await?),
        None => None,
    };
    let state = AppState { engine: engine.clone(), registry, schedules, sockets, status, access, hooks, metrics };
    let app = router(state);
    let stop = shutdown.clone();
    let drainer = engine.clone();
    let task = tokio::spawn(async move {
        // Pushed events are small writes that must leave at once: with Nagle's
        // algorithm a write waits for the ack of the previous one, which a
        // peer may delay by up to 40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        // The peer's address reaches the handlers (the audit log records it).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await?;
        engine.shutdown().await;
        drop(engine);
        // Every `Store` handle is gone now; the writer drains and exits.
        store_tasks.join().await;
        Ok(())
    });
    Ok(RunningServer { addr, metrics_addr, engine: drainer, drain_timeout: config.drain_timeout, shutdown, task })
}

/// Serves `GET /metrics`, and nothing else, on `at` without a token: the
/// `--metrics-listen` address, for a scraper on a private network.
async fn serve_metrics(
    at: SocketAddr,
    handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
    status: StatusSources,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(at).await.map_err(|e| anyhow::anyhow!("--metrics-listen {at}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, status) = (handle.clone(), status.clone());
            async move { crate::api::metrics_text(handle.as_ref(), &status) }
        }),
    );
    tracing::info!(%addr, "serving /metrics without a token");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(addr)
}
