//! `status`: what the server is doing, for `GET /api/v1/status` and the
//! `system.status` broadcast.
//!
//! A task reads the figures at an interval and publishes them to the hub's
//! `system` topic only when they changed, so an idle dashboard gets nothing
//! and a busy one gets at most one message per interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::hub::Hub;
use crate::model::Timestamp;
use crate::registry::Registry;

/// The figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SystemStatus {
    /// Operations running now.
    pub active_operations: usize,
    /// Operations waiting for a slot.
    pub queued_operations: usize,
    /// Open WebSocket connections.
    pub connected_clients: usize,
    /// Loaded plugins.
    pub plugins: usize,
    /// Size of the data file, in bytes (0 on a PostgreSQL store).
    pub storage_bytes: u64,
    /// Free space on the data directory's file system, in bytes.
    pub disk_free_bytes: u64,
    /// `ok`; `low_space` while the data directory is below its floor and
    /// new starts are refused (507); `failed` while writes fail (an I/O
    /// error, a database that refuses writes) and starts get 503 until the
    /// store recovers by itself.
    pub storage: &'static str,
    /// Why writes fail, while `storage` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
    /// The free-space floor, in bytes (0 where starts are not gated on it).
    pub min_free_bytes: u64,
    /// Whether the queue is paused (`POST /api/v1/queue/pause`): starts are
    /// accepted and wait; running operations go on.
    pub paused: bool,
}

/// Where the figures come from.
#[derive(Clone)]
pub struct StatusSources {
    /// Queue counts.
    pub engine: Engine,
    /// Connection count.
    pub hub: Arc<Hub>,
    /// Plugin count.
    pub registry: Arc<Registry>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The store, for its size.
    pub store: crate::store::Store,
    /// When the server started.
    pub started: Instant,
    /// Wakes the broadcast at once (the queue was paused or resumed).
    pub kick: Arc<tokio::sync::Notify>,
}

impl StatusSources {
    /// Reads the figures now.
    pub fn read(&self) -> SystemStatus {
        let (queued, running) = self.engine.counts();
        let space = self.engine.space();
        let storage_bytes = self.store.file_bytes().unwrap_or(0);
        let disk_free_bytes =
            rustix::fs::statvfs(&self.data_dir).map(|s| s.f_bavail.saturating_mul(s.f_frsize)).unwrap_or(0);
        let failed = self.store.condition().failed;
        let storage = match (&failed, space.as_ref().is_some_and(crate::space::Space::low)) {
            (Some(_), _) => "failed",
            (None, true) => "low_space",
            (None, false) => "ok",
        };
        SystemStatus {
            active_operations: running,
            queued_operations: queued,
            connected_clients: self.hub.connections(),
            plugins: self.registry.list().len(),
            storage_bytes,
            disk_free_bytes,
            storage,
            storage_error: failed,
            min_free_bytes: space.map_or(0, |s| s.floor),
            paused: self.engine.paused(),
        }
    }

    /// Publishes the figures now if they changed, rather than at the next interval.
    pub fn broadcast_now(&self) {
        self.kick.notify_one();
    }

    /// Publishes `system.status` whenever the figures change, every `interval`.
    /// Disk figures move by a few bytes all the time, so they count as a
    /// change only when they move by more than 1 MiB.
    pub fn spawn_broadcast(self, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut last: Option<SystemStatus> = None;
            loop {
                let next = async {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = self.kick.notified() => {}
                    }
                };
                if shutdown.run_until_cancelled(next).await.is_none() {
                    return;
                }
                let now = self.read();
                if last.as_ref().is_some_and(|l| same(l, &now)) {
                    continue;
                }
                let frame = serde_json::json!({
                    "type": "event", "event": "system.status", "at": Timestamp::now(), "status": now,
                });
                self.hub.publish_system(Utf8Bytes::from(frame.to_string()));
                last = Some(now);
            }
        });
    }
}

fn same(a: &SystemStatus, b: &SystemStatus) -> bool {
    const MIB: u64 = 1024 * 1024;
    a.active_operations == b.active_operations
        && a.queued_operations == b.queued_operations
        && a.connected_clients == b.connected_clients
        && a.plugins == b.plugins
        && a.storage_bytes.abs_diff(b.storage_bytes) < MIB
        && a.disk_free_bytes.abs_diff(b.disk_free_bytes) < MIB
        && a.storage == b.storage
        && a.storage_error == b.storage_error
        && a.paused == b.paused
}
