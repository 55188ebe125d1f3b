//! The deployment of docs/deploy.md, tested: the systemd unit passes
//! `systemd-analyze verify`, the nginx site parses with its TLS settings,
//! and Debian's real nginx, with the very locations file we ship, carries
//! HTTP and the WebSocket to a real `opal serve`, and a client that loses its
//! socket when Opal restarts resumes through nginx without a gap.
//!
//! Without `nginx` or `systemd-analyze` on the machine the tests say they
//! were skipped, except under `CI=true`, where they fail (`.ci/run` installs
//! nginx).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opal_tests::cluster::opal_bin;
use opal_tests::serve::Serve;
use opal_tests::{WsClient, close_code, ws_open};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The tool's path, or `None` (the test is skipped) when it is missing and
/// this is not CI.
fn tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(found);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{name} is missing; .ci/run installs it");
    eprintln!("skipped: {name} is not installed (apt-get install -y {name})");
    None
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", &["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("deploy/opal.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/opal serve"), "{unit}");
    for setting in ["DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=opal", "NoNewPrivileges=yes"] {
        assert!(unit.lines().any(|l| l == setting), "the unit sets {setting}");
    }
    // verify checks that ExecStart's program exists: point it at ours.
    let path = dir.path().join("opal.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/opal", &opal_bin().display().to_string())).unwrap();
    let output = Command::new(analyze).arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // An unknown or misspelt setting is only a warning: none is allowed.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("opal.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze warns about the unit:\n{}", ours.join("\n"));

    // Its flags are ones `opal serve` takes.
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/opal ")).unwrap();
    let mut args: Vec<&str> = exec.split_whitespace().collect();
    args.push("--help");
    let help = Command::new(opal_bin()).args(&args).output().unwrap();
    assert!(help.status.success(), "opal {exec}: {}", String::from_utf8_lossy(&help.stderr));
}

/// An nginx of our own: prefix, config and logs in a temp directory.
struct Nginx {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(bin: &Path, upstream: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let root = nix_root();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\n{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
               upstream opal {{ server 127.0.0.1:{upstream}; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    server_name localhost;\n    include {locations};\n  }}\n}}\n",
            user = if root { "user root;\n" } else { "" },
            locations = repo().join("deploy/nginx/opal-locations.conf").display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("nginx starts");
        let nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen:\n{}", nginx.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr"), read("error.log"))
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nix_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn post(base: &str, body: Value) -> Value {
    let response = reqwest::Client::new().post(format!("{base}/api/v1/operations")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn wait_ended(base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let op: Value = reqwest::get(format!("{base}/api/v1/operations/{id}")).await.unwrap().json().await.unwrap();
        if matches!(op["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            return op;
        }
        assert!(Instant::now() < deadline, "{id} did not end: {op}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_websocket_through_nginx_gets_its_events_and_resumes_after_an_opal_restart() {
    let Some(bin) = tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = (dir.path().join("data"), dir.path().join("opal.toml"));
    std::fs::write(&config, "").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut opal = Serve::start_on(&listen, &data, &config, &[]).await.expect("opal serve starts");
    let upstream: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let nginx = Nginx::start(&bin, upstream);
    let base = nginx.base();

    // HTTP and the dashboard, through nginx.
    let health: Value = reqwest::get(format!("{base}/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok", "{}", nginx.log());
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));

    // A WebSocket through nginx gets every event of an operation.
    let ws_url = format!("{}/api/v1/ws", base.replace("http://", "ws://"));
    let mut ws = WsClient::greeted(ws_open(&ws_url, &[]).await.expect("the upgrade passes nginx")).await;
    let history = ws.hello["history"].clone();
    ws.subscribe(&["operations"]).await;
    let first = post(&base, json!({"type": "demo", "target": "srv-1", "params": {"steps": 3, "step_ms": 50}})).await;
    let id = first["id"].as_str().unwrap();
    let events = ws.events_until_terminal(id).await;
    assert_eq!(events.last().unwrap()["event"], "operation.completed");
    let last_seq = events.last().unwrap()["seq"].as_u64().unwrap();

    // Opal restarts: the socket is closed with 1012 (reconnect), through nginx.
    opal.terminate();
    assert_eq!(close_code(ws.stream_mut()).await, Some(1012), "{}", nginx.log());
    let status = opal.wait_exit(Duration::from_secs(30)).await.expect("opal exits");
    assert!(status.success(), "{}", opal.log());
    let opal = Serve::start_on(&listen, &data, &config, &[]).await.expect("opal restarts on its port");

    // An operation runs while the client is away.
    let missed = post(&base, json!({"type": "demo", "target": "srv-2", "params": {"steps": 2, "step_ms": 20}})).await;
    let missed_id = missed["id"].as_str().unwrap().to_owned();
    wait_ended(&base, &missed_id).await;

    // It reconnects through nginx and resumes: the missed events are
    // replayed, in order, and nothing it saw comes again.
    let mut ws = WsClient::greeted(ws_open(&ws_url, &[]).await.expect("the upgrade passes nginx")).await;
    assert_eq!(ws.hello["history"], history, "the same data");
    ws.send(json!({"type": "subscribe", "topics": ["operations"], "since": last_seq})).await;
    let mut replayed = Vec::new();
    let resumed = loop {
        let message = ws.recv().await;
        match message["type"].as_str() {
            Some("event") => replayed.push(message),
            Some("resumed") => break message,
            other => panic!("expected a replay, got {other:?}: {message}"),
        }
    };
    assert!(replayed.iter().all(|e| e["seq"].as_u64().unwrap() > last_seq));
    assert!(replayed.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()), "in order");
    let missed_events: Vec<&str> = replayed
        .iter()
        .filter(|e| e["operation"]["id"] == missed_id.as_str())
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(missed_events.first(), Some(&"operation.created"), "{missed_events:?}");
    assert_eq!(missed_events.last(), Some(&"operation.completed"), "{missed_events:?}");
    assert_eq!(resumed["replayed"].as_u64(), Some(replayed.len() as u64));

    // And it is live again.
    let live = post(&base, json!({"type": "demo", "target": "srv-3", "params": {"steps": 2, "step_ms": 20}})).await;
    let live_events = ws.events_until_terminal(live["id"].as_str().unwrap()).await;
    assert_eq!(live_events.last().unwrap()["event"], "operation.completed");
    drop(opal);
}

#[test]
fn the_tls_site_parses_with_nginx() {
    let Some(bin) = tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"]) else { return };
    let Some(openssl) = tool("openssl", &["/usr/bin/openssl"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=ops.example.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let locations = repo().join("deploy/nginx/opal-locations.conf");
    let site = std::fs::read_to_string(repo().join("deploy/nginx/opal.conf"))
        .unwrap()
        .replace("/etc/letsencrypt/live/ops.example.com/fullchain.pem", &cert.display().to_string())
        .replace("/etc/letsencrypt/live/ops.example.com/privkey.pem", &key.display().to_string())
        .replace("/etc/nginx/opal-locations.conf", &locations.display().to_string());
    std::fs::write(dir.path().join("opal.conf"), site).unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!("pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  include {d}/opal.conf;\n}}\n"),
    )
    .unwrap();
    let test = Command::new(bin)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success(), "nginx -t:\n{stderr}");
    assert!(stderr.contains("syntax is ok"), "{stderr}");
}

/// Runs one demo operation on a fresh `opal serve ARGS`, stops it, and
/// returns the operation's id and everything the server wrote on stderr.
async fn logs_of_one_operation(args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = (dir.path().join("data"), dir.path().join("opal.toml"));
    std::fs::write(&config, "").unwrap();
    let mut opal = Serve::start_with(&data, &config, args).await.expect("opal serve starts");
    let op =
        post(&opal.base, json!({"type": "demo", "target": "srv-log", "params": {"steps": 2, "step_ms": 10}})).await;
    let id = op["id"].as_str().unwrap().to_owned();
    wait_ended(&opal.base, &id).await;
    opal.terminate();
    assert!(opal.wait_exit(Duration::from_secs(30)).await.is_some_and(|s| s.success()), "{}", opal.log());
    let stderr = opal.log().lines().filter(|l| !l.starts_with("listening on")).collect::<Vec<_>>().join("\n");
    (id, stderr)
}

#[tokio::test]
async fn logs_are_json_lines_off_a_terminal_and_name_the_operation_on_each_of_its_lines() {
    // stderr is a file here: `auto` writes JSON lines.
    let (id, stderr) = logs_of_one_operation(&[]).await;
    assert!(!stderr.contains('\x1b'), "no ANSI codes in a file: {stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"]["message"].is_string()), "{stderr}");
    let about: Vec<&Value> = lines.iter().filter(|l| l["span"]["id"] == id.as_str()).collect();
    assert!(
        about.iter().any(|l| l["fields"]["message"] == "operation ended"),
        "the operation's own lines name it: {stderr}"
    );
    for line in &about {
        assert_eq!(line["span"]["type"], "demo", "{line}");
        assert_eq!(line["span"]["target"], "srv-log", "{line}");
    }

    // `--log-format text`: human-readable, still no ANSI codes in a file,
    // and the operation's lines carry the same three fields.
    let (id, stderr) = logs_of_one_operation(&["--log-format", "text"]).await;
    assert!(!stderr.contains('\x1b'), "no ANSI codes in a file: {stderr}");
    let ended = stderr.lines().find(|l| l.contains("operation ended")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(ended.contains(&format!("operation{{id={id} type=demo target=srv-log}}")), "{ended}");
    assert!(serde_json::from_str::<Value>(ended).is_err(), "text, not JSON: {ended}");
}
