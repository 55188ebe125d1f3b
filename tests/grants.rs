//! Capability grants end to end: a plugin reaches exactly what the operator's
//! config grants it (a scratch directory, host directories read-only or
//! read-write, TCP to allowed addresses, commands with fixed arguments) and
//! nothing else; each denial is an error the plugin reports, and the host
//! goes on.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opal_host::config::{PluginGrants, TypePolicy};
use opal_host::sandbox::grants::{DirGrant, ExecRule};
use opal_tests::{TestServer, plugin_dir};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// A loopback listener that answers every connection with `reply` (after
/// reading the request, if `read_first`) and closes it. Returns its address
/// and how many connections it has served so far.
async fn responder(reply: Vec<u8>, read_first: bool) -> (std::net::SocketAddr, Served) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = Served::default();
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept()).await
        {
            count.fetch_add(1, Ordering::SeqCst);
            if read_first {
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
            }
            let _ = socket.write_all(&reply).await;
        }
    });
    (address, served)
}

/// A loopback listener that greets every connection with `greeting`.
async fn greeter(greeting: &'static str) -> (String, Served) {
    let (address, served) = responder(format!("{greeting}\n").into_bytes(), false).await;
    (address.to_string(), served)
}

type Served = Arc<AtomicUsize>;

async fn probe(server: &TestServer, params: Value) -> Value {
    let reply = server.post("/api/v1/operations", &json!({"type": "prober", "target": "t", "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let op = server.wait_terminal(reply.body["id"].as_str().unwrap()).await;
    assert_eq!(op["status"], "completed", "{op}");
    op["details"].clone()
}

fn allowed(details: &Value, key: &str) -> String {
    let said = details[key].as_str().unwrap_or_else(|| panic!("no {key:?} in {details}"));
    said.strip_prefix("allowed: ").unwrap_or_else(|| panic!("{key} was denied: {said}")).to_owned()
}

fn denied(details: &Value, key: &str) {
    let said = details[key].as_str().unwrap_or_else(|| panic!("no {key:?} in {details}"));
    assert!(said.starts_with("denied: "), "{key} was allowed: {said}");
}

fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (ro, rw) = (dir.join("ro"), dir.join("rw"));
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("in.txt"), "from the host").unwrap();
    std::fs::write(dir.join("secret.txt"), "not for plugins").unwrap();
    (ro, rw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reaches_what_is_granted_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (ro, rw) = setup(dir.path());
    let (granted_addr, granted_served) = greeter("hello from the allowed service").await;
    let (other_addr, other_served) = greeter("you should not see this").await;
    let plugins = plugin_dir(dir.path(), &["prober"]);
    let grants = PluginGrants {
        scratch: true,
        keep_scratch: false,
        dirs: vec![
            DirGrant { host: ro.clone(), guest: "/in".into(), writable: false },
            DirGrant { host: rw.clone(), guest: "/out".into(), writable: true },
        ],
        net: vec![granted_addr.parse().unwrap()],
        exec: vec![ExecRule { command: "/bin/echo".into(), args: vec!["hello".into(), "*".into()] }],
    };
    let server = TestServer::start_with(dir.path(), |c| {
        c.plugin_dirs = vec![plugins];
        c.types.insert("prober".into(), TypePolicy { grants, ..Default::default() });
    })
    .await;

    let details = probe(
        &server,
        json!({
            "read": ["/in/in.txt", "/scratch/made.txt", "/in/../secret.txt", "/etc/hostname"],
            "write": ["/scratch/made.txt", "/out/result.txt", "/in/nope.txt"],
            "connect": [granted_addr, other_addr],
            "exec": [["/bin/echo", "hello", "opal"], ["/bin/echo", "goodbye", "opal"], ["/bin/sh", "-c", "echo hi"]],
        }),
    )
    .await;
    // Granted.
    assert_eq!(allowed(&details, "read /in/in.txt"), "from the host");
    assert_eq!(allowed(&details, "write /scratch/made.txt"), "wrote");
    assert_eq!(allowed(&details, "write /out/result.txt"), "wrote");
    assert_eq!(std::fs::read_to_string(rw.join("result.txt")).unwrap(), "probed\n", "written on the host");
    assert_eq!(allowed(&details, &format!("connect {granted_addr}")), "hello from the allowed service");
    assert_eq!(allowed(&details, "exec /bin/echo hello opal"), "status 0, stdout \"hello opal\"");
    // Reads happen before writes: the scratch file did not exist yet, and the scratch is fresh.
    denied(&details, "read /scratch/made.txt");
    // Not granted.
    denied(&details, "read /in/../secret.txt");
    denied(&details, "read /etc/hostname");
    denied(&details, "write /in/nope.txt");
    assert!(!ro.join("nope.txt").exists());
    denied(&details, &format!("connect {other_addr}"));
    denied(&details, "exec /bin/echo goodbye opal");
    denied(&details, "exec /bin/sh -c echo hi");
    assert!(details["exec /bin/sh -c echo hi"].as_str().unwrap().contains("matches no granted command"), "{details}");

    // The scratch directory went with the run.
    let scratch = dir.path().join("scratch");
    let left: Vec<_> = std::fs::read_dir(&scratch).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "scratch directories left behind: {left:?}");

    assert_eq!(granted_served.load(Ordering::SeqCst), 1);
    assert_eq!(other_served.load(Ordering::SeqCst), 0, "the other listener was never reached");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_scratch_leaves_the_scratch_directory_with_what_the_plugin_wrote() {
    for keep in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let plugins = plugin_dir(dir.path(), &["prober"]);
        let grants = PluginGrants { scratch: true, keep_scratch: keep, ..Default::default() };
        let server = TestServer::start_with(dir.path(), |c| {
            c.plugin_dirs = vec![plugins];
            c.types.insert("prober".into(), TypePolicy { grants, ..Default::default() });
        })
        .await;
        let body = json!({"type": "prober", "target": "t", "params": {"write": ["/scratch/made.txt"]}});
        let reply = server.post("/api/v1/operations", &body).await;
        let id = reply.body["id"].as_str().unwrap_or_else(|| panic!("{reply:?}")).to_owned();
        let op = server.wait_terminal(&id).await;
        assert_eq!(allowed(&op["details"], "write /scratch/made.txt"), "wrote", "{op}");
        // The run is over once it is terminal: the directory is removed before the end is recorded.
        let scratch = dir.path().join("scratch").join(&id);
        if keep {
            assert_eq!(std::fs::read_to_string(scratch.join("made.txt")).unwrap(), "probed\n", "kept with its file");
        } else {
            assert!(!scratch.exists(), "keep_scratch = false, yet {} is left", scratch.display());
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grants_nothing_is_reachable_and_a_command_log_goes_to_the_operation() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let (address, served) = greeter("unreachable").await;
    let plugins = plugin_dir(dir.path(), &["prober"]);
    let server = TestServer::start_with(dir.path(), |c| c.plugin_dirs = vec![plugins]).await;
    let details = probe(
        &server,
        json!({"read": ["/etc/hostname"], "write": ["/tmp/x"], "connect": [address], "exec": [["/bin/echo", "hi"]]}),
    )
    .await;
    for key in ["read /etc/hostname", "write /tmp/x", &format!("connect {address}"), "exec /bin/echo hi"] {
        denied(&details, key);
    }
    assert!(details["exec /bin/echo hi"].as_str().unwrap().contains("no command is granted"), "{details}");
    assert_eq!(served.load(Ordering::SeqCst), 0, "nothing connected");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_output_is_streamed_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &["prober"]);
    let grants = PluginGrants {
        exec: vec![ExecRule { command: "/bin/sh".into(), args: vec!["-c".into(), "*".into()] }],
        ..Default::default()
    };
    let server = TestServer::start_with(dir.path(), |c| {
        c.plugin_dirs = vec![plugins];
        c.types.insert("prober".into(), TypePolicy { grants, ..Default::default() });
    })
    .await;
    let reply = server
        .post(
            "/api/v1/operations",
            &json!({"type": "prober", "target": "t",
                    "params": {"exec": [["/bin/sh", "-c", "echo one; echo two >&2; echo \"env: $HOME\"; exit 3"]]}}),
        )
        .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let op = server.wait_terminal(&id).await;
    let said = op["details"].as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned();
    assert_eq!(said, "allowed: status 3, stdout \"one\\nenv:\"", "exit status and stdout, with an empty environment");
    let events = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    let lines: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "operation.log")
        .map(|e| (e["level"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned()))
        .collect();
    assert!(lines.contains(&("info".into(), "one".into())), "{lines:?}");
    assert!(lines.contains(&("warn".into(), "two".into())), "{lines:?}");
    server.stop().await;
}

/// A loopback HTTP/1.1 server that answers every request with 200 and `ok`.
async fn http_server() -> (u16, Served) {
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec();
    let (address, served) = responder(ok, true).await;
    (address.port(), served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_go_only_where_the_net_grant_allows() {
    let dir = tempfile::tempdir().unwrap();
    let (allowed_port, allowed_served) = http_server().await;
    let (other_port, other_served) = http_server().await;
    let plugins = plugin_dir(dir.path(), &["prober"]);
    let grants = PluginGrants { net: vec![format!("localhost:{allowed_port}").parse().unwrap()], ..Default::default() };
    let server = TestServer::start_with(dir.path(), |c| {
        c.plugin_dirs = vec![plugins];
        c.types.insert("prober".into(), TypePolicy { grants, ..Default::default() });
    })
    .await;
    let (by_name, other_port_url, by_address) = (
        format!("http://localhost:{allowed_port}/health"),
        format!("http://localhost:{other_port}/health"),
        format!("http://127.0.0.1:{allowed_port}/health"),
    );
    let details = probe(&server, json!({"http": [by_name, other_port_url, by_address]})).await;
    assert_eq!(allowed(&details, &format!("http {by_name}")), "status 200");
    denied(&details, &format!("http {other_port_url}"));
    // The rule names a host: HTTP is matched by name, and 127.0.0.1 is another name.
    denied(&details, &format!("http {by_address}"));
    assert!(details[format!("http {other_port_url}")].as_str().unwrap().contains("HttpRequestDenied"), "{details}");
    assert_eq!(allowed_served.load(Ordering::SeqCst), 1, "only the request by name reached it");
    assert_eq!(other_served.load(Ordering::SeqCst), 0, "the other server was never reached");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_says_which_imported_capabilities_the_config_grants() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugin_dir(dir.path(), &["prober"]).join("prober.wasm");
    let mut config = opal_host::ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
    let sandbox = opal_host::sandbox::Sandbox::new(config.sandbox_config()).unwrap();
    let plugin = opal_host::registry::load_file(&sandbox, &wasm, &Default::default()).await.unwrap();
    let report = |config: &opal_host::ServerConfig| {
        let report = opal_host::registry::PluginReport::new(&plugin, config);
        report.capabilities.iter().map(|c| (c.capability, c.granted, c.note.clone())).collect::<Vec<_>>()
    };
    let none = report(&config);
    let names: Vec<&str> = none.iter().map(|c| c.0).collect();
    for wanted in ["filesystem", "network", "http", "exec"] {
        assert!(names.contains(&wanted), "prober imports {wanted}: {names:?}");
    }
    assert!(none.iter().all(|c| !c.1), "nothing is granted by default: {none:?}");

    let grants = PluginGrants {
        scratch: true,
        net: vec!["127.0.0.1:22".parse().unwrap()],
        exec: vec![ExecRule { command: "/bin/echo".into(), args: vec!["**".into()] }],
        ..Default::default()
    };
    config.types.insert("prober".into(), TypePolicy { grants, ..Default::default() });
    let granted = report(&config);
    let find = |name: &str| granted.iter().find(|c| c.0 == name).unwrap().clone();
    assert_eq!(find("filesystem"), ("filesystem", true, "/scratch (rw)".to_owned()));
    assert_eq!(find("network"), ("network", true, "127.0.0.1:22".to_owned()));
    assert_eq!(find("exec"), ("exec", true, "/bin/echo **".to_owned()));
    assert!(!find("environment").1, "the environment is never granted");
}
