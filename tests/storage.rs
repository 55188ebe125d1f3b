//! Storage faults.
//!
//! - An I/O error, injected through a redb storage backend that fails writes
//!   from a chosen moment until it is switched off: starts get 503, the
//!   store reopens the file by itself, every operation ends, nothing
//!   acknowledged is lost, nothing panics.
//! - Below the data directory's free-space floor new starts get 507 and
//!   running operations go on; writes resume by themselves once space
//!   returns. The data directory is a small tmpfs mounted for the test (root
//!   only; elsewhere the test says it was skipped), once under a test server
//!   and once under `opal serve` filled through starts and restarted full.

use std::collections::BTreeSet;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opal_tests::serve::{Exit, Serve};
use opal_tests::{TestServer, count_panics};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use serde_json::{Value, json};

/// A switch for [`Faulty`]: while on, every write, resize and sync of the
/// file fails with the chosen OS error.
#[derive(Debug, Default)]
struct Fault {
    /// The errno to fail with; 0 while off.
    errno: AtomicI32,
    /// How many calls failed.
    hits: AtomicUsize,
}

impl Fault {
    fn set(&self, errno: i32) {
        self.errno.store(errno, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        match self.errno.load(Ordering::SeqCst) {
            0 => Ok(()),
            errno => {
                self.hits.fetch_add(1, Ordering::SeqCst);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// The redb file's own backend, with writes failing while [`Fault`] is on.
#[derive(Debug)]
struct Faulty {
    file: FileBackend,
    fault: Arc<Fault>,
}

impl StorageBackend for Faulty {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fault.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.fault.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fault.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// Waits (at most 20 s) until `probe` gives `Some`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fault scenario with `errno`: operations running when the file starts
/// failing, starts during the fault, then the fault lifted.
async fn survives_an_io_error(errno: i32) {
    let panics = count_panics().load(Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let fault = Arc::new(Fault::default());
    let switch = fault.clone();
    let server = TestServer::start_with(dir.path(), |c| {
        c.storage_wrap = Some(opal_host::store::redb::Wrap::new(move |file| {
            Box::new(Faulty { file, fault: switch.clone() }) as Box<dyn StorageBackend>
        }));
        c.status_interval = Duration::from_millis(100);
    })
    .await;
    let mut ws = server.ws().await;
    ws.subscribe(&["operations", "system"]).await;

    // Operations running when the fault begins: 30 steps of 50 ms each.
    let mut before = Vec::new();
    for i in 0..6 {
        before.push(server.start_demo(&format!("before-{i}"), json!({"steps": 30, "step_ms": 50})).await);
    }
    server.wait_progress(&before[5]).await;

    fault.set(errno);
    // The next commit (a progress event at the latest) fails; starts get 503.
    let refused = eventually("a start refused with 503", || async {
        let reply = server
            .post(
                "/api/v1/operations",
                &json!({"type": "demo", "target": "during", "params": {"steps": 1, "step_ms": 1}}),
            )
            .await;
        assert!(reply.status == 202 || reply.status == 503, "a start during the fault: {reply:?}");
        (reply.status == 503).then_some(reply)
    })
    .await;
    assert_eq!(refused.content_type, "application/problem+json");
    assert!(refused.retry_after.is_some(), "a 503 says when to retry: {refused:?}");
    let status = eventually("the status to say storage failed", || async {
        let status = server.get("/api/v1/status").await.body;
        (status["storage"] == "failed").then_some(status)
    })
    .await;
    let why = status["storage_error"].as_str().expect("the status says why");
    assert!(why.contains("opal.redb"), "names the file: {why}");
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body["detail"].as_str().unwrap().contains("storage failed"), "{ready:?}");

    // Long enough for every running operation's plugin to finish (1.5 s
    // of steps): each runner holds its outcome.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let refused_again = server
        .post(
            "/api/v1/operations",
            &json!({"type": "demo", "target": "during-2", "params": {"steps": 1, "step_ms": 1}}),
        )
        .await;
    assert_eq!(refused_again.status, 503, "{refused_again:?}");
    assert!(fault.hits.load(Ordering::SeqCst) > 0, "the fault was hit");

    fault.set(0);
    let after = eventually("a start accepted after the fault", || async {
        let reply = server
            .post(
                "/api/v1/operations",
                &json!({"type": "demo", "target": "after", "params": {"steps": 2, "step_ms": 10}}),
            )
            .await;
        assert!(reply.status == 202 || reply.status == 503, "a start after the fault: {reply:?}");
        (reply.status == 202).then(|| reply.body["id"].as_str().unwrap().to_owned())
    })
    .await;
    assert_eq!(server.wait_terminal(&after).await["status"], "completed");

    // Every operation admitted before the fault ended: completed (its held
    // outcome recorded after the reopen) or, failing that, interrupted.
    for id in &before {
        let op = server.wait_terminal(id).await;
        let code = &op["error"]["code"];
        assert!(op["status"] == "completed" || code == "interrupted", "{op}");
    }
    let running = server.get("/api/v1/operations?status=running").await.body;
    assert_eq!(running["operations"].as_array().map(Vec::len), Some(0), "nothing stays running: {running}");
    let pending = server.get("/api/v1/operations?status=pending").await.body;
    assert_eq!(pending["operations"].as_array().map(Vec::len), Some(0), "nothing stays pending: {pending}");
    let status = server.get("/api/v1/status").await.body;
    assert_eq!(status["storage"], "ok", "{status}");
    assert!(status.get("storage_error").is_none(), "{status}");
    assert_eq!(server.get("/readyz").await.status, 200);

    // Every event a client was sent was committed: each is stored, under its seq.
    let mut sent: Vec<(String, u64)> = Vec::new();
    let mut saw_failed = false;
    let mut saw_recovered = false;
    let drain_until = Instant::now() + Duration::from_millis(500);
    while let Ok(frame) = tokio::time::timeout(drain_until.saturating_duration_since(Instant::now()), ws.recv()).await {
        match frame["event"].as_str() {
            Some("system.status") => {
                let storage = &frame["status"]["storage"];
                saw_failed |= storage == "failed";
                saw_recovered |= saw_failed && storage == "ok";
            }
            Some(_) if frame["seq"].is_u64() => {
                sent.push((frame["operation"]["id"].as_str().unwrap().to_owned(), frame["seq"].as_u64().unwrap()));
            }
            _ => {}
        }
    }
    assert!(saw_failed && saw_recovered, "the system topic said storage failed, then ok");
    assert!(!sent.is_empty());
    let ids: BTreeSet<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    for id in ids {
        let stored = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
        let seqs: BTreeSet<u64> =
            stored["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        for (_, seq) in sent.iter().filter(|(op, _)| op == id) {
            assert!(seqs.contains(seq), "event {seq} of {id} was sent to a client but is not stored: {seqs:?}");
        }
    }
    server.stop().await;
    assert_eq!(count_panics().load(Ordering::SeqCst), panics, "nothing panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_error_gets_503_the_file_reopens_by_itself_and_every_operation_ends() {
    survives_an_io_error(ENOSPC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eio_gets_503_the_file_reopens_by_itself_and_every_operation_ends() {
    survives_an_io_error(EIO).await;
}

/// A tmpfs of `mib` MiB mounted at a fresh directory, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(&path).output();
        match out {
            Ok(out) if out.status.success() => Some(SmallDisk { path, _dir: dir }),
            other => {
                let why = format!("cannot mount a tmpfs (this test needs root): {other:?}");
                assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{why}; CI runs as root, so it must run");
                eprintln!("NOTICE: skipping the low-disk test: {why}");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn fill(path: &Path, mib: usize) {
    std::fs::write(path, vec![7u8; mib << 20]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_space_floor_starts_get_507_running_ones_go_on_and_starts_resume() {
    let Some(disk) = SmallDisk::mount(64) else { return };
    let server = TestServer::start_with(&disk.path.join("data"), |c| {
        c.min_free = Some(24 << 20);
        // The compiled plugins stay off the small disk.
        c.cache_dir = Some(PathBuf::from(concat!(env!("OUT_DIR"), "/plugin-cache")));
    })
    .await;
    let long = server.start_demo("before", json!({"steps": 30, "step_ms": 50})).await;
    server.wait_progress(&long).await;

    // Fill the disk to below the 24 MiB floor.
    let filler = disk.path.join("filler");
    fill(&filler, 48);
    let refused = server
        .post("/api/v1/operations", &json!({"type": "demo", "target": "during", "params": {"steps": 1, "step_ms": 1}}))
        .await;
    assert_eq!(refused.status, 507, "{refused:?}");
    assert_eq!(refused.content_type, "application/problem+json");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&disk.path.join("data").display().to_string())
            && detail.contains("bytes free")
            && detail.contains("min_free_mib"),
        "names the path, the free bytes and the setting: {detail}"
    );
    let status = server.get("/api/v1/status").await.body;
    assert_eq!(status["storage"], "low_space", "{status}");
    assert_eq!(status["min_free_bytes"], 24 << 20, "{status}");

    // The running operation goes on to its end.
    let ended = server.wait_terminal(&long).await;
    assert_eq!(ended["status"], "completed", "{ended}");

    // Space returns: starts resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    let after = server.run_to_end("demo", "after", json!({"steps": 2, "step_ms": 10})).await;
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(server.get("/api/v1/status").await.body["storage"], "ok");
    server.stop().await;
}

/// `opal serve` on a small tmpfs, filled through starts: the watermark
/// answers 507 before redb ever meets a full disk, and a restart on the
/// disk filled to the last byte does not panic: it serves reads and refuses
/// starts with 507, or exits 1 with one line naming the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opal_serve_filled_through_starts_gets_507_before_enospc_and_restarts_full_without_a_panic() {
    let Some(disk) = SmallDisk::mount(16) else { return };
    let data = disk.path.join("data");
    let config = disk.path.parent().unwrap().join("opal.toml");
    // A floor of 2 MiB, and the compiled plugins kept off the small disk.
    std::fs::write(&config, format!("min_free_mib = 2\ncache = {:?}\n", concat!(env!("OUT_DIR"), "/plugin-cache")))
        .unwrap();
    // Leave about 4 MiB free: 2 above the floor, for the starts to fill.
    fill_to(&disk.path.join("filler"), &disk.path, 4 << 20);

    let mut serve = Serve::start(&data, &config).await.expect("opal serve starts on a disk with room");
    let http = reqwest::Client::new();
    let mut accepted = 0;
    let mut full = None;
    for i in 0..20_000 {
        let body = json!({"type": "demo", "target": format!("t{i}"), "params": {"steps": 1, "step_ms": 1}});
        let reply = http.post(format!("{}/api/v1/operations", serve.base)).json(&body).send().await.unwrap();
        match reply.status().as_u16() {
            202 => accepted += 1,
            507 => {
                full = Some(reply.json::<Value>().await.unwrap());
                break;
            }
            other => panic!("start {i} got {other} ({}); the log ends:\n{}", reply.text().await.unwrap(), serve.log()),
        }
    }
    let full = full.unwrap_or_else(|| panic!("20,000 starts never reached the floor; {accepted} accepted"));
    assert!(accepted > 100, "the headroom took starts before the floor: {accepted}");
    eprintln!("{accepted} starts accepted, then 507: {}", full["detail"]);
    assert!(full["detail"].as_str().unwrap().contains(&data.display().to_string()), "{full}");
    let status: Value = http.get(format!("{}/api/v1/status", serve.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["storage"], "low_space", "the watermark, not a storage failure: {status}");
    // Every accepted operation still ends (its transitions fit the headroom).
    eventually("every accepted operation to end", || async {
        let status: Value = http.get(format!("{}/api/v1/status", serve.base)).send().await.ok()?.json().await.ok()?;
        (status["active_operations"] == 0 && status["queued_operations"] == 0).then_some(())
    })
    .await;
    let log = serve.log();
    assert!(!log.contains("storage failed") && !log.contains("No space left"), "redb never met ENOSPC:\n{log}");
    serve.kill();

    // Now the disk is full to the last byte, and the server starts again.
    fill_to(&disk.path.join("filler-2"), &disk.path, 0);
    match Serve::start(&data, &config).await {
        Ok(mut again) => {
            let reply = http
                .post(format!("{}/api/v1/operations", again.base))
                .json(&json!({"type": "demo", "target": "full", "params": {}}))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 507, "a start on the full disk");
            let listed = http.get(format!("{}/api/v1/operations?limit=5", again.base)).send().await.unwrap();
            assert_eq!(listed.status(), 200, "reads are served on the full disk");
            again.kill();
            assert!(!again.log().contains("panicked"), "{}", again.log());
            eprintln!("restarted on the full disk: serves reads, refuses starts with 507");
        }
        Err(Exit { code, stderr }) => {
            assert_eq!(code, Some(1), "a refused start exits 1: {stderr}");
            assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "no panic: {stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
            assert_eq!(lines.len(), 1, "one clear line: {stderr}");
            assert!(lines[0].contains(&data.display().to_string()), "it names the path: {stderr}");
            eprintln!("restart on the full disk refused: {}", lines[0]);
        }
    }
}

/// Fills the file system of `dir` with `path` until `leave` bytes are free
/// (for the server's user).
fn fill_to(path: &Path, dir: &Path, leave: u64) {
    let stat = free_bytes(dir);
    let chunk = vec![7u8; 1 << 16];
    let mut file = std::fs::File::create(path).unwrap();
    let mut left = stat.saturating_sub(leave);
    use std::io::Write;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        match file.write_all(&chunk[..n]) {
            Ok(()) => left -= n as u64,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
            Err(e) => panic!("cannot fill {}: {e}", path.display()),
        }
    }
    let _ = file.sync_all();
}

/// Free bytes on `dir`'s file system, as `df` counts them.
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output().expect("df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df's figure")
}
