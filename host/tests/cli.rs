//! `opal serve` as a user runs it: a child process on `127.0.0.1:0` that
//! announces its real address on stdout, says plainly on stderr that it is in
//! dev mode, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serve_prints_its_address_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opal"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        // No log lines: the dev-mode notice must not depend on them.
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("opal starts");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });

    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("a line on stdout");
    let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert!(!addr.ends_with(":0"), "the real port, not 0: {addr}");

    let mut stream = TcpStream::connect(addr).expect("it accepts connections");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // In dev mode the Host must name loopback (see auth/host.rs).
    stream
        .write_all(format!("GET /api/v1/plugins HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"name\":\"demo\""), "the bundled demo plugin is there: {response}");
    assert!(dir.path().join("opal.redb").exists(), "data lives in --data");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "opal did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    let stderr = stderr.join().unwrap();
    // stderr is a pipe, so the logs are JSON lines, and the notice is one of them.
    let notice = "opal: dev mode: no credentials are configured, so every caller is admin";
    assert!(
        stderr
            .lines()
            .any(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|line| line["level"] == "WARN"
                && line["fields"]["message"].as_str().is_some_and(|m| m.starts_with(notice)))),
        "the dev-mode notice on stderr, as a JSON line: {stderr:?}"
    );
}

/// Runs `opal` with `args`; returns (success, stdout, stderr).
fn opal(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opal")).args(args).env("RUST_LOG", "error").output().expect("opal runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugin_inspect_shows_what_a_file_is_and_which_grants_it_would_get() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("demo.wasm");
    std::fs::write(&wasm, opal_host::bundled::get("demo").unwrap()).unwrap();
    let config = dir.path().join("opal.toml");
    std::fs::write(&config, "[types.demo.grants]\nscratch = true\n").unwrap();
    let wasm = wasm.to_str().unwrap();

    let (ok, text, err) = opal(&["plugin", "inspect", wasm]);
    assert!(ok, "{err}");
    assert!(text.starts_with("demo 0.1.0\n"), "{text}");
    assert!(text.contains(&format!("opal:plugin: {}", opal_host::sandbox::WIT_VERSION)), "{text}");
    assert!(text.contains("\"steps\""), "the params schema: {text}");
    // The demo touches no file, socket or command: only the environment shows.
    assert!(text.contains("environment  not granted  never granted: plugins see an empty environment"), "{text}");
    assert!(!text.contains("filesystem") && !text.contains("network"), "{text}");

    let (ok, json, err) = opal(&["plugin", "inspect", "--json", "--config", config.to_str().unwrap(), wasm]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["name"], "demo");
    assert!(
        report["imports"].as_array().unwrap().iter().any(|i| i.as_str().unwrap().starts_with("opal:plugin/progress@"))
    );
    let capabilities: Vec<&str> =
        report["capabilities"].as_array().unwrap().iter().map(|c| c["capability"].as_str().unwrap()).collect();
    assert_eq!(capabilities, ["environment"], "{report}");

    std::fs::write(dir.path().join("junk.wasm"), b"not a component").unwrap();
    let (ok, _, err) = opal(&["plugin", "inspect", dir.path().join("junk.wasm").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("junk.wasm cannot be loaded") && err.contains("cannot compile"), "{err}");
}

#[test]
fn plugin_list_shows_what_a_server_would_load_and_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    // The same name and version as the bundled demo: refused as a duplicate.
    std::fs::write(plugins.join("demo-copy.wasm"), opal_host::bundled::get("demo").unwrap()).unwrap();
    let (ok, text, err) = opal(&["plugin", "list", "--plugins", plugins.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(text.contains("demo 0.1.0\n") && text.contains("source:      bundled"), "{text}");
    assert!(
        text.contains("refused") && text.contains("demo-copy.wasm") && text.contains("already loaded from bundled"),
        "{text}"
    );
    let (ok, json, _) = opal(&["plugin", "list", "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(list["plugins"].as_array().unwrap().iter().any(|p| p["name"] == "demo"), "{list}");
}
