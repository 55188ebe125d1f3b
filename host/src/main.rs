//! The `opal` command: `opal serve` runs the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use opal_host::ServerConfig;

#[derive(Parser)]
#[command(
    name = "opal",
    version,
    about = "Opal: long-running operations as sandboxed WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP API, WebSocket and the bundled plugins.
    Serve {
        /// Address to listen on. Port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Data directory (holds opal.redb and the compiled-plugin cache).
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// A directory of extra *.wasm plugins, besides the bundled ones. Repeatable.
        #[arg(long = "plugins")]
        plugins: Vec<PathBuf>,
        /// Progress throttle window per operation, in milliseconds.
        #[arg(long, default_value_t = 500)]
        progress_window_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve {
            listen,
            data,
            plugins,
            progress_window_ms,
        } => runtime.block_on(serve(ServerConfig {
            listen,
            data_dir: data,
            plugin_dirs: plugins,
            progress_window: Duration::from_millis(progress_window_ms),
            ..ServerConfig::default()
        })),
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let server = opal_host::start(config).await?;
    // Scripts and tests wait for exactly this line; keep it stable.
    println!("listening on http://{}", server.addr);
    server.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
