//! Helpers for the multi-process cluster tests (`tests/cluster.rs`): a fresh
//! PostgreSQL database per test, real `opal serve` processes against it
//! (started, signalled, killed), bounded polling, and the `journal` test
//! plugin's files.
//!
//! The database server comes from `OPAL_TEST_DATABASE_URL` (default
//! [`DEFAULT_DATABASE_URL`]); its user must be allowed to create databases.
//! When it cannot be reached, a test is skipped with a notice on stderr,
//! except under `CI=true`, where it fails: CI must never pass a cluster suite
//! it did not run.

use std::fmt::Display;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::TestServer;

/// The PostgreSQL server the tests use unless `OPAL_TEST_DATABASE_URL` says
/// otherwise. Its database is only connected to: each test creates its own.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The longest a node may take to print its `listening on` line.
pub const NODE_START: Duration = Duration::from_secs(60);

/// How long any one HTTP request to a node may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection attempt to PostgreSQL may take before the server
/// counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which store a test binary's [`TestServer`]s use: PostgreSQL when the
/// test target's name ends in `_postgres` (tests/Cargo.toml builds the
/// lifecycle, hub and auth suites a second time that way) or when
/// `OPAL_TEST_STORE=postgres`; otherwise redb.
pub fn postgres_under_test() -> bool {
    if std::env::var("OPAL_TEST_STORE").is_ok_and(|v| v == "postgres") {
        return true;
    }
    let exe = std::env::current_exe().ok();
    let stem = exe.as_ref().and_then(|e| e.file_stem()).and_then(|s| s.to_str()).unwrap_or_default();
    // Test binaries are named `<target>-<hash>`.
    stem.rsplit_once('-').is_some_and(|(target, _)| target.ends_with("_postgres"))
}

/// When [`postgres_under_test`], the URL of the database behind the server
/// whose data directory is `data_dir`: one database per directory, so a
/// server restarted on the same directory finds its records again. The
/// databases live as long as the test process (a server may be restarted on
/// them at any point); the next run drops those of processes that are gone.
/// `None` on redb, and when PostgreSQL cannot be reached outside CI (after
/// a notice: the test then runs on redb).
pub async fn store_for(data_dir: &Path) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static DATABASES: Mutex<Option<HashMap<PathBuf, TestDatabase>>> = Mutex::new(None);
    if !postgres_under_test() {
        return None;
    }
    let known = |dir: &Path| {
        let databases = DATABASES.lock().unwrap();
        databases.as_ref().and_then(|d| d.get(dir)).map(|db| db.url().to_owned())
    };
    if let Some(url) = known(data_dir) {
        return Some(url);
    }
    let db = TestDatabase::create().await?;
    let url = db.url().to_owned();
    // Kept (never dropped in this process); see above.
    DATABASES.lock().unwrap().get_or_insert_with(HashMap::new).insert(data_dir.to_owned(), db);
    Some(url)
}

/// Drops the test databases of test processes that are gone (a run that
/// crashed, or the `_postgres` suites' databases, kept until their process
/// ended).
async fn sweep_stale(admin: &tokio_postgres::Client) {
    let Ok(rows) = admin.query("SELECT datname FROM pg_database WHERE datname LIKE 'opal\\_test\\_%'", &[]).await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid =
            name.strip_prefix("opal_test_").and_then(|rest| rest.split('_').next()).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }
}

/// A database of its own for one test, dropped (with its connections) when
/// this value is.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    admin: tokio_postgres::Client,
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server closes the connection.
        let _ = connection.await;
    });
    Ok(client)
}

/// An error with its sources (tokio-postgres says only "error connecting to
/// server" at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `url` with its database name replaced by `database` (query kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..authority_end])
}

impl TestDatabase {
    /// Creates a fresh, uniquely named database on the test server. `None`
    /// (after a notice on stderr) when the server cannot be reached and `CI`
    /// is not `true`; under `CI=true` that is a panic.
    pub async fn create() -> Option<TestDatabase> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let admin_url = std::env::var("OPAL_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let admin = match connect(&admin_url).await {
            Ok(client) => client,
            Err(e) => {
                let why = format!("PostgreSQL at {admin_url} cannot be reached: {}", error_chain(&e));
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!(
                        "{why}. CI=true, so the cluster tests must run, not be skipped: start PostgreSQL there \
                         or point OPAL_TEST_DATABASE_URL at a server whose user may create databases"
                    );
                }
                eprintln!(
                    "NOTICE: skipping this cluster test: {why}. Start PostgreSQL or set OPAL_TEST_DATABASE_URL \
                     (default {DEFAULT_DATABASE_URL}) to a server whose user may create databases."
                );
                return None;
            }
        };
        static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SWEPT.swap(true, Ordering::SeqCst) {
            sweep_stale(&admin).await;
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("opal_test_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name} on {admin_url}: {}", error_chain(&e)));
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { name, url, admin_url, admin })
    }

    /// The URL the nodes connect to (`postgres://…/<name>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills every connection to this database (`pg_terminate_backend`), as a
    /// failover or an administrator would; returns how many were killed.
    pub async fn terminate_backends(&self) -> u64 {
        let row = self
            .admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("pg_terminate_backend on the test database");
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
    }

    /// Makes the database read-only for new sessions (`default_transaction_read_only`),
    /// or writable again.
    pub async fn set_read_only(&self, read_only: bool) {
        let sql = match read_only {
            true => format!("ALTER DATABASE \"{}\" SET default_transaction_read_only = on", self.name),
            false => format!("ALTER DATABASE \"{}\" RESET default_transaction_read_only", self.name),
        };
        self.admin.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {}", error_chain(&e)));
    }

    /// How many connections the database has now.
    pub async fn backends(&self) -> u64 {
        let row = self
            .admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&self.name])
            .await
            .expect("pg_stat_activity");
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
    }

    /// A client connected to the test database itself, to look at what the
    /// nodes stored.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await.unwrap_or_else(|e| panic!("cannot connect to {}: {}", self.url, error_chain(&e)))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own with a runtime of its own does the dropping.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let admin = connect(&admin_url).await.map_err(|e| error_chain(&e))?;
                admin
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let forced = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
                if forced.is_err() {
                    // Before PostgreSQL 13 there is no FORCE; the backends are gone anyway.
                    admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the test database {}: the dropping thread panicked", self.name),
        }
    }
}

/// How a node is started besides its store and id.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--lease` (a humantime duration, e.g. `2s`); the server's default if `None`.
    pub lease: Option<String>,
    /// `--plugins` directories (e.g. from [`crate::plugin_dir`]).
    pub plugins: Vec<PathBuf>,
    /// The config file's text (`--config`), if not empty.
    pub config: String,
    /// `--max-concurrent`.
    pub max_concurrent: Option<usize>,
    /// Any further arguments of `opal serve`.
    pub args: Vec<String>,
}

impl NodeOptions {
    /// Sets `--lease`.
    pub fn lease(mut self, lease: &str) -> Self {
        self.lease = Some(lease.to_owned());
        self
    }

    /// Adds a `--plugins` directory.
    pub fn plugins(mut self, dir: &Path) -> Self {
        self.plugins.push(dir.to_path_buf());
        self
    }

    /// Appends `text` to the config file.
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    /// Sets `--max-concurrent`.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Adds an argument of `opal serve`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
}

/// A signal for [`Node::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: dies at once, nothing cleaned up.
    Kill,
    /// SIGSTOP: frozen, connections left open.
    Stop,
    /// SIGCONT: thawed.
    Cont,
    /// SIGTERM: asked to shut down cleanly.
    Term,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
            Signal::Term => "TERM",
        }
    }
}

/// One `opal serve` process of a cluster. It derefs to a [`TestServer`]
/// client of its address, so `get`, `post`, `ws`, `wait_terminal`… work on
/// it. Dropping it kills the process (SIGKILL); if the test is failing, the
/// end of the node's log is printed first.
pub struct Node {
    /// The node id (`--node-id`).
    pub id: String,
    /// The process id.
    pub pid: u32,
    client: TestServer,
    child: Child,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts `opal serve` as node `id` of the cluster on `db`, and waits
    /// (at most [`NODE_START`]) for its `listening on` line.
    pub async fn start(db: &TestDatabase, id: &str, options: NodeOptions) -> Node {
        let dir = tempfile::Builder::new().prefix(&format!("opal-node-{id}-")).tempdir().expect("a temp directory");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut command = Command::new(opal_bin());
        command
            .args(["serve", "--store", db.url(), "--node-id", id, "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            // One compiled-plugin cache for every node and test server: each
            // plugin is compiled once per build, not once per node.
            .arg("--cache")
            .arg(concat!(env!("OUT_DIR"), "/plugin-cache"));
        if !options.config.is_empty() {
            let file = dir.path().join("opal.toml");
            std::fs::write(&file, &options.config).unwrap();
            command.arg("--config").arg(file);
        }
        if let Some(lease) = &options.lease {
            command.args(["--lease", lease]);
        }
        for plugins in &options.plugins {
            command.arg("--plugins").arg(plugins);
        }
        if let Some(n) = options.max_concurrent {
            command.args(["--max-concurrent", &n.to_string()]);
        }
        command.args(&options.args);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info,wasmtime=warn,cranelift=warn");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", opal_bin().display()));
        let pid = child.id();
        let mut node = Node {
            id: id.to_owned(),
            pid,
            client: TestServer {
                base: String::new(),
                data_dir: data,
                server: None,
                http: reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client"),
            },
            child,
            dir,
        };
        let started = Instant::now();
        loop {
            let out = std::fs::read_to_string(node.dir.path().join("stdout.log")).unwrap_or_default();
            if let Some(addr) = out.lines().find_map(|l| l.trim().strip_prefix("listening on http://")) {
                node.client.base = format!("http://{addr}");
                return node;
            }
            if let Some(status) = node.child.try_wait().expect("try_wait") {
                panic!("node {id} exited with {status} before listening; its log ends:\n{}", node.log_tail(40));
            }
            assert!(
                started.elapsed() < NODE_START,
                "node {id} did not print its listening line within {NODE_START:?}; its log ends:\n{}",
                node.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts nodes `ids` with the same options, all at once.
    pub async fn start_all(db: &TestDatabase, ids: &[&str], options: NodeOptions) -> Vec<Node> {
        futures_util::future::join_all(ids.iter().map(|id| Node::start(db, id, options.clone()))).await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.client.base
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        let status = Command::new("kill")
            .args(["-s", signal.name(), &self.pid.to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill -s {} {} failed: {status}", signal.name(), self.pid);
    }

    /// SIGKILL, then reaps the process.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::Kill);
        self.wait_exit(Duration::from_secs(10)).await
    }

    /// Waits (at most `within`) for the process to exit; returns its status.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "node {} did not exit within {within:?}; its log ends:\n{}",
                self.id,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// `GET /api/v1/status`'s body.
    pub async fn status(&self) -> serde_json::Value {
        let reply = self.get("/api/v1/status").await;
        assert_eq!(reply.status, 200, "status of node {}: {reply:?}", self.id);
        reply.body
    }

    /// Everything the node logged (stderr) and printed (stdout) so far.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// The last `lines` lines of [`Node::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Deref for Node {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.client
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- node {} (pid {}), the end of its log ----\n{}\n----", self.id, self.pid, self.log_tail(60));
        }
        // SIGKILL works on a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `opal` binary the nodes run: `OPAL_BIN` if set, else the one cargo
/// builds beside this test (`<target>/<profile>/opal`).
///
/// `cargo test --workspace` builds it (opal-host has integration tests, so
/// its binary is built with them). `cargo test -p opal-tests` does not: when
/// the binary is missing or older than the sources it is built from, it is
/// built here first, once per test process, with `cargo build -p opal-host
/// --bin opal` in the same target directory and profile.
pub fn opal_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("OPAL_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("the test runs from <target>/<profile>/deps");
        let bin = profile_dir.join(format!("opal{}", std::env::consts::EXE_SUFFIX));
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
        if let Some(why) = stale(&bin, root) {
            build_opal(root, profile_dir, &why);
        }
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
    .clone()
}

/// Why `bin` must be (re)built, if it must: missing, or older than a file
/// it is built from.
fn stale(bin: &Path, root: &Path) -> Option<String> {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return Some(format!("{} does not exist", bin.display()));
    };
    let sources = ["host", "migrations", "sdk", "wit", "plugins", "Cargo.lock", "Cargo.toml"];
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for source in sources {
        newest_file(&root.join(source), &mut newest);
    }
    match newest {
        Some((modified, path)) if modified > built => {
            Some(format!("{} is older than {}", bin.display(), path.display()))
        }
        _ => None,
    }
}

/// The most recently modified file under `path` (skipping build output and
/// what does not go into the binary), into `newest`.
fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    if meta.is_dir() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if matches!(name, "target" | "tests" | "benches" | "node_modules") || name.starts_with('.') {
            return;
        }
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            newest_file(&entry.path(), newest);
        }
    } else if let Ok(modified) = meta.modified()
        && newest.as_ref().is_none_or(|(m, _)| modified > *m)
    {
        *newest = Some((modified, path.to_path_buf()));
    }
}

fn build_opal(root: &Path, profile_dir: &Path, why: &str) {
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => "dev".to_owned(),
    };
    eprintln!("building the opal binary for the cluster tests ({why})");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "-p", "opal-host", "--bin", "opal", "--profile", &profile, "--target-dir"])
        .arg(target_dir)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "`cargo build -p opal-host --bin opal` failed (see above); or set OPAL_BIN to an opal binary"
    );
}

/// Polls `probe` every 50 ms until it returns `Ok`, for at most `within`;
/// then fails, saying `what` was awaited and what the last probe saw.
pub async fn eventually<T, F, Fut>(within: Duration, what: impl Display, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(started.elapsed() < within, "{what}: not within {within:?}; last seen: {last}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `[types.journal.grants]` lines that give the `journal` test plugin
/// `dir` (host) as its writable `/journal`.
pub fn journal_grant(dir: &Path) -> String {
    format!(
        "[types.journal.grants]\ndirs = [{{ host = {:?}, guest = \"/journal\", writable = true }}]\n",
        dir.display().to_string()
    )
}

/// One line of a journal file: `<nonce> <step> <unix_ms>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    /// The attempt's random nonce.
    pub nonce: String,
    /// The step, from 1.
    pub step: u32,
    /// When it was written, in Unix milliseconds.
    pub unix_ms: u64,
}

/// One attempt's lines in a journal file.
#[derive(Debug, Clone)]
pub struct JournalAttempt {
    /// Its nonce.
    pub nonce: String,
    /// Its lines, in file order.
    pub lines: Vec<JournalLine>,
}

/// Every complete line of the journal file at `path` (none if there is no file).
pub fn read_journal(path: &Path) -> Vec<JournalLine> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    // A line still being written (no newline yet) is left for the next read.
    text.split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("{}: not a journal line: {line:?}", path.display())))
        .collect()
}

fn parse_line(line: &str) -> Option<JournalLine> {
    let mut parts = line.split(' ');
    let nonce = parts.next()?.to_owned();
    let step = parts.next()?.parse().ok()?;
    let unix_ms = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(JournalLine { nonce, step, unix_ms })
}

/// The attempts in the journal file at `path`, in the order they began,
/// checking that they did not overlap: once a new nonce appears, no earlier
/// one appears again.
pub fn journal_attempts(path: &Path) -> Vec<JournalAttempt> {
    let mut attempts: Vec<JournalAttempt> = Vec::new();
    for line in read_journal(path) {
        match attempts.last_mut() {
            Some(current) if current.nonce == line.nonce => current.lines.push(line),
            _ => {
                if let Some(earlier) = attempts.iter().find(|a| a.nonce == line.nonce) {
                    panic!(
                        "{}: attempt {} wrote {line:?} after attempt {} had begun: two attempts ran at once \
                         (earlier lines of it: {:?})",
                        path.display(),
                        earlier.nonce,
                        attempts.last().map(|a| a.nonce.as_str()).unwrap_or_default(),
                        earlier.lines,
                    );
                }
                attempts.push(JournalAttempt { nonce: line.nonce.clone(), lines: vec![line] });
            }
        }
    }
    attempts
}

/// Milliseconds since the Unix epoch now, to compare with journal lines.
pub fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "y"), "postgres://u:p@h/y?sslmode=disable");
        assert_eq!(with_database("postgres://h:5432", "z"), "postgres://h:5432/z");
    }

    #[test]
    fn interleaved_attempts_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, "a 1 10\na 2 20\nb 1 30\nb 2 40\n").unwrap();
        let attempts = journal_attempts(&path);
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[1].lines[1], JournalLine { nonce: "b".into(), step: 2, unix_ms: 40 });
        std::fs::write(&path, "a 1 10\nb 1 30\na 2 40\n").unwrap();
        let caught = std::panic::catch_unwind(|| journal_attempts(&path));
        assert!(caught.is_err(), "a line of attempt a after attempt b began is an overlap");
    }
}
