//! Storage faults: below the data directory's free-space floor new starts
//! get 507 and running operations go on; writes resume by themselves once
//! space returns. The data directory is a small tmpfs mounted for the test
//! (root only; elsewhere the test says it was skipped).

use std::path::{Path, PathBuf};
use std::process::Command;

use opal_tests::TestServer;
use serde_json::json;

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
    let refused = server.post("/api/v1/operations", &json!({"type": "demo", "target": "during", "params": {}})).await;
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
