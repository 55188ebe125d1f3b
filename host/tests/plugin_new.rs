//! `opal plugin new` as the plugin guide walks it, with the real `opal`
//! binary and real cargo: scaffold `hello` into a temp directory, run its
//! native tests, build it for wasm32-wasip2, serve the build directory with
//! `opal serve`, run an operation to completion, then rebuild a change and
//! see the server pick it up.
//!
//! The scaffold's builds share `<target>/plugin-new` across runs, so only the
//! first run compiles its dependencies (about 30 s natively and 30 s for
//! wasm on the 2-core dev machine; later runs take seconds). They run with
//! `--offline`: the scaffold starts from this checkout's Cargo.lock, whose
//! crates the workspace's own build has already fetched.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The longest one cargo step may take (a cold build on a busy 2-core machine).
const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);
/// The longest a server-side wait may take.
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_new_plugin_tests_natively_builds_for_wasm_and_runs_in_opal_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let created = run(opal().args(["plugin", "new", "hello"]).current_dir(tmp.path()), "opal plugin new");
    assert!(created.contains("cargo build --target wasm32-wasip2"), "it says what to do next: {created}");
    let crate_dir = tmp.path().join("hello");

    let tests = run(cargo(&crate_dir).args(["test", "--offline"]), "cargo test (the scaffold's native tests)");
    assert!(tests.contains("test result: ok. 3 passed"), "{tests}");
    run(cargo(&crate_dir).args(["fmt", "--check"]), "cargo fmt --check (the scaffold is formatted)");
    run(cargo(&crate_dir).args(["build", "--offline", "--target", "wasm32-wasip2"]), "cargo build (wasm)");
    let build_dir = target_dir().join("wasm32-wasip2/debug");
    assert!(build_dir.join("hello.wasm").is_file(), "{} holds hello.wasm", build_dir.display());

    // What the scaffold's README says: serve the build directory itself.
    let server = Server::start(tmp.path(), &build_dir);
    let plugin = server.get("/api/v1/plugins/hello").1;
    assert_eq!(plugin["version"], "0.1.0", "name and version come from Cargo.toml: {plugin}");
    assert_eq!(plugin["title"], "Hello");
    assert_eq!(plugin["description"], "An Opal operation plugin.");
    assert_eq!(plugin["params_schema"]["required"], json!(["name"]), "{plugin}");
    let op = server.run_to_the_end(json!({"name": "Ada"}));
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["message"], "said hello to Ada");
    assert_eq!(op["progress"], 100);

    // Edit, rebuild: the server reloads the file and new operations run the change.
    let lib = crate_dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap().replace("said hello to", "said hi to");
    std::fs::write(&lib, source).unwrap();
    run(cargo(&crate_dir).args(["build", "--offline", "--target", "wasm32-wasip2"]), "cargo build (the change)");
    let deadline = Instant::now() + WAIT;
    loop {
        let op = server.run_to_the_end(json!({"name": "Bo"}));
        if op["message"] == "said hi to Bo" {
            break;
        }
        assert_eq!(op["message"], "said hello to Bo", "{op}");
        assert!(Instant::now() < deadline, "the rebuilt plugin was not picked up within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The real `opal` binary.
fn opal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_opal"))
}

/// Where the scaffold's builds go: `<this workspace's target>/plugin-new`.
fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    target.join("plugin-new")
}

#[path = "../build_plugins.rs"]
#[allow(dead_code)]
mod build_plugins;

/// `cargo` in `dir`, with a clean environment as in `host/build_plugins.rs`:
/// the outer build's flags are for the outer build.
fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir).env("CARGO_TARGET_DIR", target_dir());
    for var in build_plugins::OUTER_BUILD_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd` to the end within [`BUILD_LIMIT`], asserting success; returns
/// its stdout and stderr.
fn run(cmd: &mut Command, what: &str) -> String {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + BUILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {BUILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "{what} failed ({status}):\n{output}");
    output
}

/// `opal serve` on 127.0.0.1:0 with one plugins directory; killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path, plugins: &Path) -> Server {
        let mut child = opal()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .arg("--plugins")
            .arg(plugins)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("opal serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("a line on stdout");
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("{line:?}")).to_owned();
        Server { child, addr }
    }

    /// One HTTP/1.1 request; returns the status and the JSON body.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(format!("{head}{body}").as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    /// Starts a `hello` operation on `srv-1` and polls it until it ends.
    fn run_to_the_end(&self, params: Value) -> Value {
        let body = json!({"type": "hello", "target": "srv-1", "params": params});
        let (status, op) = self.request("POST", "/api/v1/operations", Some(&body));
        assert_eq!(status, 202, "{op}");
        let path = format!("/api/v1/operations/{}", op["id"].as_str().unwrap());
        let deadline = Instant::now() + WAIT;
        loop {
            let op = self.get(&path).1;
            if matches!(op["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return op;
            }
            assert!(Instant::now() < deadline, "the operation did not end: {op}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
