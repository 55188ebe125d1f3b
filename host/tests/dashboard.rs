//! The dashboard in real Chromium: runs the Playwright suite in
//! `tests/dashboard/` (node + playwright-core + Debian's chromium) against
//! the real `opal` binary, which the suite starts on `127.0.0.1:0` with a
//! temp data dir, and SIGKILLs and restarts for the reconnect test.
//!
//! It lives in opal-host's tests, not opal-tests, because only a package's
//! own integration tests get its binary's path (`CARGO_BIN_EXE_opal`).
//! Missing Chromium or node fails the test with what to install; it never
//! passes silently. It runs `npm ci` when `node_modules` lacks the pinned
//! playwright-core. Screenshots go to `target/dashboard-screenshots/`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The whole suite's budget; each step inside it has its own, shorter one.
const BUDGET: Duration = Duration::from_secs(600);

#[test]
fn dashboard_in_chromium() {
    run_suite(&[]);
}

/// The live scenarios again (updates in two tabs, kill -9 and restart, a
/// server that lost its history) with every server on a PostgreSQL database
/// of its own (`OPAL_TEST_DATABASE_URL`, as the cluster tests use), and the
/// storage scenario that needs one (a database made read-only).
#[test]
fn dashboard_on_postgres_in_chromium() {
    let admin = std::env::var("OPAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let reachable = Command::new("psql").args([admin.as_str(), "-qAtc", "SELECT 1"]).output();
    if !reachable.as_ref().is_ok_and(|out| out.status.success()) {
        let why = format!("PostgreSQL at {admin} cannot be reached with psql: {reachable:?}");
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{why}; CI=true, so this run must not be skipped");
        eprintln!("NOTICE: skipping the dashboard's PostgreSQL run: {why}");
        return;
    }
    run_suite(&[("OPAL_DASHBOARD_STORE", admin.as_str()), ("OPAL_DASHBOARD_FILES", "live,storage,workflows,notify")]);
}

/// Runs the Playwright suite in Chromium, with `env` added. One run at a
/// time: they share `node_modules` and the machine's two cores.
fn run_suite(env: &[(&str, &str)]) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let chromium = std::env::var("OPAL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: the dashboard tests need it. Install it with \
         `apt-get update && apt-get install -y chromium` (Debian), or set OPAL_CHROMIUM to a Chromium binary."
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|out| out.status.success()),
        "node is missing: the dashboard tests need Node.js 20 or newer (`apt-get install -y nodejs npm`): {node:?}"
    );

    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dashboard");
    if installed_playwright(&suite) != pinned_playwright(&suite) {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&suite)
            .status()
            .expect("npm runs (install Node.js and npm)");
        assert!(status.success(), "`npm ci` failed in {}", suite.display());
    }

    let screenshots = target_dir().join("dashboard-screenshots");
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new("node")
        .arg("dashboard.test.mjs")
        .current_dir(&suite)
        .env("OPAL_BIN", env!("CARGO_BIN_EXE_opal"))
        .env("OPAL_CHROMIUM", &chromium)
        .env("OPAL_SCREENSHOTS", &screenshots)
        .env("OPAL_TMP", tmp.path())
        .env("OPAL_CACHE", Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can take down node, Chromium and
        // the servers it started in one signal.
        .process_group(0)
        .spawn()
        .expect("node starts");
    let pid = child.id();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait()));
    let status = exited.recv_timeout(BUDGET).ok().map(|waited| waited.expect("wait for node"));
    if status.is_none() {
        let group = rustix::process::Pid::from_raw(pid as i32).expect("a real pid");
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    // Captured by the test harness: shown on failure, or with --nocapture.
    println!("{stdout}");
    eprintln!("{stderr}");
    let status = status.unwrap_or_else(|| panic!("the dashboard suite ran over {BUDGET:?} and was killed"));
    assert!(
        status.success(),
        "the dashboard suite failed ({status}); its output is above. Screenshots: {}",
        screenshots.display()
    );
}

fn json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The playwright-core version `package.json` pins.
fn pinned_playwright(suite: &Path) -> Option<String> {
    let manifest = json(&suite.join("package.json")).expect("tests/dashboard/package.json");
    manifest["devDependencies"]["playwright-core"].as_str().map(str::to_owned)
}

/// The playwright-core version in `node_modules`, if any: `npm ci` runs when it is missing or stale.
fn installed_playwright(suite: &Path) -> Option<String> {
    json(&suite.join("node_modules/playwright-core/package.json"))?["version"].as_str().map(str::to_owned)
}

/// `target/` (or `$CARGO_TARGET_DIR`): the parent of the tests' temp dir.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("CARGO_TARGET_TMPDIR is inside the target dir").to_owned()
}

/// Reads a pipe to the end on its own thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
