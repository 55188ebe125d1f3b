//! `opal serve` as a child process of the test, for the tests that kill it
//! (SIGKILL) or fill its disk: the real binary, its own log files, and its
//! address read from its `listening on` line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running `opal serve`; dropping it kills the process (SIGKILL).
pub struct Serve {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    child: std::process::Child,
    logs: tempfile::TempDir,
}

/// How a server that did not start ended.
#[derive(Debug)]
pub struct Exit {
    /// Its exit code.
    pub code: Option<i32>,
    /// Its output.
    pub stderr: String,
}

impl Serve {
    /// Starts `opal serve --data DATA --config CONFIG` (on the PostgreSQL
    /// store of `DATA` when the suite runs on PostgreSQL), and waits for it
    /// to listen.
    pub async fn start(data: &Path, config: &Path) -> Result<Serve, Exit> {
        Self::start_with(data, config, &[]).await
    }

    /// [`Serve::start`] with more arguments.
    pub async fn start_with(data: &Path, config: &Path, args: &[&str]) -> Result<Serve, Exit> {
        Self::start_on("127.0.0.1:0", data, config, args).await
    }

    /// [`Serve::start_with`] on the address `listen` (to restart a server on
    /// the port it had).
    pub async fn start_on(listen: &str, data: &Path, config: &Path, args: &[&str]) -> Result<Serve, Exit> {
        let logs = tempfile::tempdir().unwrap();
        let mut command = Command::new(crate::cluster::opal_bin());
        command.args(["serve", "--listen", listen, "--data"]).arg(data).arg("--config").arg(config).args(args);
        if let Some(url) = crate::cluster::store_for(data).await {
            command.args(["--store", &url]);
        }
        let child = command
            .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.path().join("out")).unwrap())
            .stderr(std::fs::File::create(logs.path().join("err")).unwrap())
            .spawn()
            .expect("opal serve");
        let mut serve = Serve { base: String::new(), child, logs };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(serve.logs.path().join("out")).unwrap_or_default();
            if let Some(addr) = out.lines().find_map(|l| l.trim().strip_prefix("listening on http://")) {
                serve.base = format!("http://{addr}");
                return Ok(serve);
            }
            if let Some(status) = serve.child.try_wait().unwrap() {
                return Err(Exit { code: status.code(), stderr: serve.log() });
            }
            assert!(Instant::now() < deadline, "opal serve did not start:\n{}", serve.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends it SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (at most `within`) for it to exit; its status, if it did.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("out")).unwrap_or_default()
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
        format!("{}{}", read("out"), read("err"))
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}
