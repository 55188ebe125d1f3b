//! `telemetry`: the server's Prometheus metrics (`GET /metrics`).
//!
//! The code records through the `metrics` facade, from where things happen:
//! the store (commits, operations started and finished), the WebSocket
//! writer, the sandbox and the HTTP layer. One recorder serves the whole
//! process; it is installed by the first server a process starts. Gauges
//! that are readings (queue depth, running operations, connections) are set
//! when scraped, from the same figures as `GET /api/v1/status`.
//!
//! Series carry no `target` label unless `metrics_target_labels = true`:
//! targets are unbounded, and each label value is a series kept forever.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::model::{EventKind, Operation};

/// The recorder's handle, once installed.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// Whether operation series carry `target` (`metrics_target_labels`).
static TARGET_LABELS: AtomicBool = AtomicBool::new(false);

/// Histogram buckets, in seconds, for operation runs (100 ms to an hour).
const RUN_SECONDS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Buckets for short latencies: commits, HTTP requests, plugin loads (100 µs to 10 s).
const LATENCY_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Buckets for a store commit's batch size, in changes.
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the process's recorder (the first call does; later ones find
/// it) and returns its handle: `None` if another recorder was installed
/// first, in which case `/metrics` says so.
pub fn install(target_labels: bool) -> Option<PrometheusHandle> {
    TARGET_LABELS.store(target_labels, Ordering::Relaxed);
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("opal_operation_duration_seconds".into()), RUN_SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("opal_store_batch_size".into()), BATCH_SIZES))
                .and_then(|b| b.set_buckets(LATENCY_SECONDS))
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// Drains histogram samples into their buckets now and then, so memory
/// stays flat between scrapes.
pub fn spawn_upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => handle.run_upkeep(),
                () = shutdown.cancelled() => return,
            }
        }
    });
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("opal_operations_admitted_total", "Operations admitted (202), by type");
    describe_counter!("opal_operations_started_total", "Operation attempts started on this node, by type");
    describe_counter!(
        "opal_operations_finished_total",
        "Operations that ended (or scheduled a retry) on this node, by type and outcome"
    );
    describe_histogram!("opal_operation_duration_seconds", Unit::Seconds, "Run time of ended operations, by type");
    describe_gauge!("opal_queue_depth", "Operations waiting to run (pending), store-wide");
    describe_gauge!("opal_operations_running", "Operations running on this node");
    describe_gauge!("opal_ws_connections", "Open WebSocket connections on this node");
    describe_counter!("opal_ws_messages_sent_total", "Messages sent to WebSocket clients");
    describe_counter!("opal_ws_bytes_sent_total", Unit::Bytes, "Bytes of frames sent to WebSocket clients");
    describe_counter!("opal_ws_slow_consumer_closes_total", "WebSocket clients closed for falling behind (4008)");
    describe_histogram!("opal_store_commit_seconds", Unit::Seconds, "Time to commit one batch of changes");
    describe_histogram!("opal_store_batch_size", "Changes committed together");
    describe_histogram!("opal_plugin_compile_seconds", Unit::Seconds, "Compiling a plugin (cache miss)");
    describe_histogram!("opal_plugin_cache_load_seconds", Unit::Seconds, "Loading a compiled plugin from the cache");
    describe_histogram!(
        "opal_plugin_instantiate_seconds",
        Unit::Seconds,
        "Instantiating a plugin for a run or validation"
    );
    describe_counter!("opal_http_requests_total", "HTTP requests, by route, method and status");
    describe_histogram!("opal_http_request_duration_seconds", Unit::Seconds, "HTTP request time, by route");
}

/// The text format, with the readings set first.
pub fn render(handle: &PrometheusHandle, readings: &crate::status::SystemStatus) -> String {
    metrics::gauge!("opal_queue_depth").set(readings.queued_operations as f64);
    metrics::gauge!("opal_operations_running").set(readings.active_operations as f64);
    metrics::gauge!("opal_ws_connections").set(readings.connected_clients as f64);
    handle.render()
}

/// An operation's labels: its type, and its target when configured.
fn labels(op: &Operation) -> Vec<(&'static str, String)> {
    let mut labels = vec![("type", op.op_type.clone())];
    if TARGET_LABELS.load(Ordering::Relaxed) {
        labels.push(("target", op.target.clone()));
    }
    labels
}

/// A committed admission.
pub(crate) fn admitted(op: &Operation) {
    metrics::counter!("opal_operations_admitted_total", &labels(op)).increment(1);
}

/// A committed lifecycle change of `op`, made by this node.
pub(crate) fn transition(kind: EventKind, op: &Operation) {
    let outcome = match kind {
        EventKind::Started => {
            metrics::counter!("opal_operations_started_total", &labels(op)).increment(1);
            return;
        }
        EventKind::Completed => "completed",
        EventKind::Failed => "failed",
        EventKind::Cancelled => "cancelled",
        EventKind::RetryScheduled => "retry_scheduled",
        _ => return,
    };
    let mut labels = labels(op);
    if let (Some(started), Some(finished)) = (op.started_at, op.finished_at) {
        let took = finished.system_time().duration_since(started.system_time()).unwrap_or_default();
        metrics::histogram!("opal_operation_duration_seconds", &labels).record(took.as_secs_f64());
    }
    labels.push(("outcome", outcome.to_owned()));
    metrics::counter!("opal_operations_finished_total", &labels).increment(1);
}

/// One committed batch of the store.
pub(crate) fn commit(elapsed: Duration, changes: usize) {
    metrics::histogram!("opal_store_commit_seconds").record(elapsed.as_secs_f64());
    metrics::histogram!("opal_store_batch_size").record(changes as f64);
}

/// A plugin compiled (cache miss) or loaded from the cache.
pub(crate) fn plugin_load(from_cache: bool, elapsed: Duration) {
    let name = if from_cache { "opal_plugin_cache_load_seconds" } else { "opal_plugin_compile_seconds" };
    metrics::histogram!(name).record(elapsed.as_secs_f64());
}

/// A plugin instantiated.
pub(crate) fn instantiate(elapsed: Duration) {
    metrics::histogram!("opal_plugin_instantiate_seconds").record(elapsed.as_secs_f64());
}

/// Counters of one WebSocket task's writes, looked up once per connection.
#[derive(Clone)]
pub(crate) struct SocketCounters {
    messages: metrics::Counter,
    bytes: metrics::Counter,
}

impl SocketCounters {
    /// The process's counters.
    pub(crate) fn new() -> Self {
        SocketCounters {
            messages: metrics::counter!("opal_ws_messages_sent_total"),
            bytes: metrics::counter!("opal_ws_bytes_sent_total"),
        }
    }

    /// A frame of `messages` messages and `bytes` bytes went out.
    pub(crate) fn sent(&self, messages: usize, bytes: usize) {
        self.messages.increment(messages as u64);
        self.bytes.increment(bytes as u64);
    }
}

/// A slow client closed with 4008.
pub(crate) fn slow_consumer_closed() {
    metrics::counter!("opal_ws_slow_consumer_closes_total").increment(1);
}

/// Records every HTTP request by matched route (never the raw path, whose
/// ids would each be a series), method and status.
pub(crate) async fn http_layer(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("opal_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("opal_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
