//! The `opal` command: `opal serve` runs the server; `opal plugin list` and
//! `opal plugin inspect FILE` show plugins without one; `opal plugin new NAME`
//! starts a plugin crate; `opal token new` makes an API token. The client
//! subcommands (`opal run`, `opal ops`, `opal schedules`, `opal plugins`)
//! talk to a running server (docs/cli.md).

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use opal_host::ServerConfig;

#[derive(Parser)]
#[command(name = "opal", version, about = "Opal: long-running operations as sandboxed WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP API, WebSocket and the bundled plugins.
    Serve(ServeArgs),
    /// Start an operation on a server and follow it to its end; the exit
    /// code says how it ended (0 completed, 1 failed, 2 refused, 3 server
    /// unreachable or token refused, 130 cancelled).
    Run(cli::run::RunArgs),
    /// Operations on a server: list (the default), show, cancel, logs, watch.
    Ops(cli::ops::OpsArgs),
    /// Schedules on a server: list (the default), show, create, delete.
    Schedules(cli::catalog::SchedulesArgs),
    /// The operation types a server runs (plugins and workflows).
    Plugins(cli::catalog::PluginsArgs),
    /// API tokens: make one, with the config lines that accept it.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Plugins: what a server would load, and what one file is and needs.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

/// `opal serve`'s flags.
#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML config file (see docs/operations.md); flags given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]. Port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory, holding opal.redb and the compiled-plugin cache [default: ./data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where compiled plugins are cached [default: <data>/cache]. Servers may share one.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// A directory of extra *.wasm plugins, besides the bundled ones. Repeatable.
    #[arg(long = "plugins")]
    plugins: Vec<PathBuf>,
    /// A directory of *.toml workflow definitions. Repeatable.
    #[arg(long = "workflows", value_name = "DIR")]
    workflows: Vec<PathBuf>,
    /// Progress throttle window per operation, in milliseconds [default: 500].
    #[arg(long)]
    progress_window_ms: Option<u64>,
    /// Most operations running at once on this node; the rest wait in FIFO order [default: 64].
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Run as a node of a cluster on this PostgreSQL database
    /// (postgres://USER@HOST:PORT/DB) instead of the redb file in --data.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// This node's name in a cluster [default: hostname-pid].
    #[arg(long)]
    node_id: Option<String>,
    /// A cluster node's lease on the operations it runs, e.g. 10s [default: 10s].
    #[arg(long, value_name = "DURATION")]
    lease: Option<String>,
    /// Serve GET /metrics (Prometheus) without a token on this extra address,
    /// for a scraper on a private network; the main address serves it to
    /// admins and the `metrics` role either way.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log lines as `text` (human-readable) or `json` (one object a line);
    /// `auto` is text on a terminal and JSON otherwise.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

/// How `opal serve` writes its log lines (to stderr).
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Text on a terminal, JSON lines otherwise.
    Auto,
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object a line, with the operation's id, type and target as fields.
    Json,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A fresh random token (printed once) and its `[[auth.tokens]]` entry, which holds only its sha256.
    New(cli::token::NewTokenArgs),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate: `cargo test` runs its native tests, `cargo build
    /// --target wasm32-wasip2` builds it for `opal serve --plugins`.
    New(cli::new::NewArgs),
    /// The plugins a server with this config would load, and the files it would refuse.
    List {
        /// The server's TOML config file (its plugins directories, pins and grants).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A directory of extra *.wasm plugins. Repeatable.
        #[arg(long = "plugins")]
        plugins: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One plugin file: name, version, opal:plugin version, params schema,
    /// imports, and whether the config grants each capability it imports.
    Inspect {
        /// The component, a .wasm file.
        file: PathBuf,
        /// The server's TOML config file, for its pins and grants.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command; a failure is one line on stderr (`error: ` and its
/// causes, joined) and exit code 1, never a backtrace.
fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let client = |future: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<u8>>>>| {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(future));
        cli::remote::finish(result)
    };
    let result = match cli.command {
        Command::Run(args) => return client(Box::pin(cli::run::run(args))),
        Command::Ops(args) => return client(Box::pin(cli::ops::run(args))),
        Command::Schedules(args) => return client(Box::pin(cli::catalog::schedules(args))),
        Command::Plugins(args) => return client(Box::pin(cli::catalog::plugins(args))),
        Command::Serve(args) => serve_command(args),
        Command::Plugin { command } => {
            init_logs(LogFormat::Text);
            tokio::runtime::Runtime::new()
                .context("cannot start the async runtime")
                .and_then(|runtime| runtime.block_on(plugin(command)))
        }
        Command::Token { command: TokenCommand::New(args) } => cli::token::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// At most this many malloc arenas per core (glibc's default is 8 per core).
const ARENAS_PER_CORE: usize = 1;

/// Log lines go to stderr: text on a terminal (in colour), JSON lines
/// elsewhere, unless `format` says which; never ANSI codes off a terminal.
/// Returns whether the lines are JSON.
fn init_logs(format: LogFormat) -> bool {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into());
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.with_ansi(terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())).init();
    }
    json
}

/// `opal serve`: the config file, then the flags over it.
fn serve_command(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config,
        listen,
        data,
        cache,
        plugins,
        workflows,
        progress_window_ms,
        max_concurrent,
        store,
        node_id,
        lease,
        metrics_listen,
        log_format,
    } = args;
    let json_logs = init_logs(log_format);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    {
        let mut settings = match &config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        if let Some(listen) = listen {
            settings.listen = listen;
        }
        if let Some(data) = data {
            settings.data_dir = data;
        }
        if let Some(cache) = cache {
            settings.cache_dir = Some(cache);
        }
        settings.plugin_dirs.extend(plugins);
        settings.workflow_dirs.extend(workflows);
        if let Some(ms) = progress_window_ms {
            settings.progress_window = Duration::from_millis(ms);
        }
        if let Some(n) = max_concurrent {
            anyhow::ensure!(n > 0, "--max-concurrent must be at least 1");
            settings.max_concurrent = n;
        }
        if let Some(url) = store {
            opal_host::config::check_store_url(&url).map_err(anyhow::Error::msg)?;
            settings.store_url = Some(url);
        }
        if let Some(node) = node_id {
            anyhow::ensure!(!node.trim().is_empty(), "--node-id must not be empty");
            settings.node_id = node;
        }
        if let Some(lease) = lease {
            settings.lease = opal_host::config::parse_lease(&lease).map_err(anyhow::Error::msg)?;
        }
        if let Some(addr) = metrics_listen {
            settings.metrics_listen = Some(addr);
        }
        runtime.block_on(serve(settings, json_logs))
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<ServerConfig> {
    Ok(match path {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    })
}

async fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    use opal_host::registry::{PluginReport, Registry};
    use opal_host::sandbox::Sandbox;
    // Compiled artifacts go to a throwaway cache: inspecting must not write
    // into a server's data directory.
    let cache = tempfile::tempdir().context("cannot make a temporary directory")?;
    let sandbox_for = |config: &ServerConfig| {
        let mut sandbox = config.sandbox_config();
        sandbox.cache_dir = cache.path().join("cache");
        sandbox.max_instances = 4;
        Sandbox::new(sandbox)
    };
    match command {
        PluginCommand::New(args) => cli::new::run(args),
        PluginCommand::List { config, plugins, json } => {
            let mut config = load_config(config.as_ref())?;
            config.plugin_dirs.extend(plugins);
            let sandbox = sandbox_for(&config)?;
            let registry = Registry::load(&sandbox, config.plugin_sources()).await;
            let mut reports = Vec::new();
            for latest in registry.list() {
                for version in registry.versions(&latest.name) {
                    let plugin = registry.get_exact(&latest.name, &version.parse()?).expect("a listed version");
                    reports.push(PluginReport::new(&plugin, &config));
                }
            }
            let refused = registry.refused();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"plugins": reports, "refused": refused}))?
                );
            } else {
                for report in &reports {
                    print!("{}", report.to_text());
                }
                for r in &refused {
                    println!("refused {}: {}", r.source, r.error);
                }
            }
            Ok(())
        }
        PluginCommand::Inspect { file, config, json } => {
            let config = load_config(config.as_ref())?;
            let sandbox = sandbox_for(&config)?;
            let plugin = opal_host::registry::load_file(&sandbox, &file, &config.plugin_sources().pins)
                .await
                .with_context(|| format!("{} cannot be loaded", file.display()))?;
            let report = PluginReport::new(&plugin, &config);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
    }
}

async fn serve(config: ServerConfig, json_logs: bool) -> anyhow::Result<()> {
    let dev_mode = config.auth.dev_mode();
    let server = opal_host::start(config).await?;
    if dev_mode {
        // Whatever RUST_LOG says: whoever starts it must know that everyone is admin.
        let notice = format!(
            "opal: dev mode: no credentials are configured, so every caller is admin. Serving {} (loopback) \
             only, to Host names that are loopback. Configure tokens before serving anyone else (`opal token \
             new`; docs/operations.md, \"Auth\").",
            server.addr
        );
        if json_logs {
            // One more JSON line, so a log shipper reads every line of stderr.
            let line = serde_json::json!({"timestamp": chrono::Utc::now().to_rfc3339(), "level": "WARN",
                "fields": {"message": notice}, "target": "opal"});
            eprintln!("{line}");
        } else {
            eprintln!("{notice}");
        }
    }
    if let Some(addr) = server.metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
    // Scripts and tests wait for exactly this line; keep it stable.
    println!("listening on http://{}", server.addr);
    // The first Ctrl-C or SIGTERM drains (starts get 503, running
    // operations get drain_timeout to end); a second one stops at once.
    shutdown_signal().await;
    server.drain(shutdown_signal()).await?;
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

/// Caps glibc's malloc arenas before any thread starts. Each thread that
/// allocates while the others hold their arenas gets one of its own, up to 8
/// per core, and memory freed in one arena is not reused by threads of
/// another: with socket tasks, runner threads and the store writer all
/// allocating, a fan-out wave pinned 45 MiB more at its peak with the default
/// than with one arena per core (docs/performance.md, "Memory under a
/// wave"). `MALLOC_ARENA_MAX` in the environment still wins.
#[allow(unsafe_code)] // mallopt is a C call; nothing else here is unsafe.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = (cores * ARENAS_PER_CORE).max(2);
        // SAFETY: mallopt only changes malloc's tuning; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas).unwrap_or(i32::MAX));
        }
    }
}
