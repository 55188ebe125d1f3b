//! `config`: every setting of a server, with the defaults a fresh install uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one `opal serve`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Data directory: `opal.redb` and the compiled-plugin cache.
    pub data_dir: PathBuf,
    /// Directories of extra `*.wasm` plugins, besides the bundled ones.
    pub plugin_dirs: Vec<PathBuf>,
    /// Whether to load the plugins compiled into the binary.
    pub bundled_plugins: bool,
    /// Progress throttle window per operation.
    pub progress_window: Duration,
    /// Grace period between a cancel request and a forced stop.
    pub cancel_grace: Duration,
    /// Linear memory cap per plugin instance, in bytes.
    pub memory_limit: usize,
    /// Most plugin instances alive at once.
    pub max_instances: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            plugin_dirs: Vec::new(),
            bundled_plugins: true,
            progress_window: Duration::from_millis(500),
            cancel_grace: Duration::from_secs(5),
            memory_limit: 64 * 1024 * 1024,
            max_instances: 256,
        }
    }
}
