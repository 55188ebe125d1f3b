//! A granted command that hangs is killed with everything it started when
//! its operation ends first: at the operation's timeout, and at a cancel
//! (a plugin blocked in the command cannot see the cancel, so it is stopped
//! by force after the grace period, and the command with it). The command is
//! a harmless script in a temp directory that starts a child `sleep`, writes
//! both pids to a file and waits; the test then polls `/proc` for both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use opal_host::ServerConfig;
use opal_host::config::{PluginGrants, TypePolicy};
use opal_host::sandbox::grants::ExecRule;
use opal_tests::{TestServer, WAIT, plugin_dir};
use serde_json::json;

/// Writes the script: it starts `sleep 300` in the background, writes
/// "<its own pid> <the sleep's pid>" to `dir/pids` and waits for the sleep
/// (which keeps the script's stdout open, as a real daemon child would).
fn hanging_script(dir: &Path) -> PathBuf {
    let script = dir.join("hang");
    let d = dir.display();
    let text = format!(
        "#!/bin/sh\nsleep 300 &\necho \"$$ $!\" > \"{d}/pids.tmp\" && mv \"{d}/pids.tmp\" \"{d}/pids\"\nwait\n"
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A server whose `prober` may run exactly `script`, with `tweak` applied.
async fn start_server(dir: &Path, script: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let plugins = plugin_dir(dir, &["prober"]);
    let grants =
        PluginGrants { exec: vec![ExecRule { command: script.to_owned(), args: vec![] }], ..Default::default() };
    TestServer::start_with(dir, |c| {
        c.plugin_dirs = vec![plugins];
        c.types.insert("prober".into(), TypePolicy { grants, ..Default::default() });
        tweak(c);
    })
    .await
}

/// Starts a prober that runs `script`; returns the operation's id.
async fn run_script(server: &TestServer, script: &Path) -> String {
    let body = json!({"type": "prober", "target": "t", "params": {"exec": [[script.display().to_string()]]}});
    let reply = server.post("/api/v1/operations", &body).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

/// The script's pid and its child's, once both run. Killed when dropped,
/// so a failing test leaves no `sleep` behind on the machine.
struct Hung([u32; 2]);

impl Hung {
    /// Waits (bounded by [`WAIT`]) for the script to write its pids.
    async fn wait(dir: &Path) -> Hung {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("pids")) {
                let pids: Vec<u32> = text.split_whitespace().map(|p| p.parse().unwrap()).collect();
                let hung = Hung(pids.try_into().unwrap_or_else(|p| panic!("two pids, not {p:?}")));
                assert!(hung.0.iter().all(|p| !gone(*p)), "both run before the test acts: {:?}", hung.0);
                return hung;
            }
            assert!(tokio::time::Instant::now() < deadline, "the script never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the script and its child are both gone; fails if either
    /// still runs 10 s after the operation ended (SIGKILL takes milliseconds).
    async fn assert_gone(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<u32> = self.0.into_iter().filter(|p| !gone(*p)).collect();
            if left.is_empty() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{left:?} of (script, child) {:?} still run", self.0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        for pid in self.0.into_iter().filter(|p| !gone(*p)) {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// Whether process `pid` no longer runs: no `/proc` entry, or a zombie
/// (dead, waiting for its parent to reap it).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_timeout_the_command_and_its_child_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let script = hanging_script(dir.path());
    let server = start_server(dir.path(), &script, |c| {
        c.types.get_mut("prober").unwrap().timeout = Some(Duration::from_millis(1500));
    })
    .await;
    let id = run_script(&server, &script).await;
    let hung = Hung::wait(dir.path()).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "timeout", "{op}");
    assert_eq!(op["error"]["message"], "plugin did not finish within 1500 ms", "{op}");
    hung.assert_gone().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_cancel_the_command_and_its_child_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let script = hanging_script(dir.path());
    let server = start_server(dir.path(), &script, |c| c.cancel_grace = Duration::from_millis(200)).await;
    let id = run_script(&server, &script).await;
    let hung = Hung::wait(dir.path()).await;
    let cancel = server.post(&format!("/api/v1/operations/{id}/cancel"), &json!({})).await;
    assert_eq!(cancel.status, 202, "{cancel:?}");
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "cancelled", "{op}");
    assert!(op["message"].as_str().unwrap().contains("by force"), "{op}");
    hung.assert_gone().await;
    server.stop().await;
}
