//! The `opal` client subcommands: the real binary against a real server.
//! `opal run` follows an operation and exits with its outcome; the progress
//! bar shows under a pseudo-terminal (util-linux `script`) and not in a
//! pipe; `--json` is NDJSON; Ctrl-C answered "cancel" cancels on the
//! server; `opal ops`, `opal schedules` and `opal plugins` read and act; an
//! unreachable server or a refused token is one line and exit 3.

use std::process::Stdio;
use std::time::Duration;

use opal_host::auth::{AuthConfig, Role};
use opal_tests::{TestServer, api_token, cluster::opal_bin};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const VIEWER: &str = "opal_viewer_token_for_client_tests_000000000";

/// What a finished `opal` run printed, and its exit code.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `opal ARGS` against `server`, with a clean environment for colours.
fn opal(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(opal_bin());
    command
        .args(args)
        .env("OPAL_SERVER", server)
        .env_remove("OPAL_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(server: &str, args: &[&str]) -> Ran {
    let output = tokio::time::timeout(Duration::from_secs(60), opal(server, args).output())
        .await
        .unwrap_or_else(|_| panic!("opal {args:?} did not end within 60 s"))
        .expect("opal runs");
    Ran {
        code: output.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `COMMAND` under a pseudo-terminal of `cols` columns, via util-linux
/// `script`: what the terminal showed (escapes and all) and the exit code.
async fn in_terminal(server: &str, command: &str, cols: u16, env: &[(&str, &str)]) -> Ran {
    let bin = opal_bin();
    let line = format!("stty cols {cols} rows 30; {} {command}", bin.display());
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-f", "-c", &line, "/dev/null"])
        .env("OPAL_SERVER", server)
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        script.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), script.output())
        .await
        .expect("script ends within 60 s")
        .expect("util-linux script runs");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The text with ANSI escape sequences and carriage returns taken out.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// The id in `opal run`'s outcome line (`… (01K…)`).
fn id_in(line: &str) -> String {
    let open = line.rfind('(').expect("an id in parentheses");
    line[open + 1..open + 27].to_owned()
}

#[tokio::test]
async fn run_follows_an_operation_and_exits_0_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let ran = run(&server.base, &["run", "demo", "srv-1", "-p", "steps=3", "-p", "step_ms=100"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let outcome = ran.stdout.lines().last().expect("an outcome line");
    assert!(outcome.starts_with("completed demo on srv-1 in "), "{outcome}");
    // Piped: no progress bar and no escape codes, on either stream.
    for stream in [&ran.stdout, &ran.stderr] {
        assert!(!stream.contains('\x1b') && !stream.contains('\r'), "escapes when piped: {stream:?}");
        assert!(!stream.contains("[="), "a progress bar when piped: {stream:?}");
    }
    // `-p steps=3` went out as a number, as the params schema types it.
    let op = server.get(&format!("/api/v1/operations/{}", id_in(outcome))).await.body;
    assert_eq!(op["params"]["steps"], json!(3));
    assert_eq!(op["status"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn a_failed_operation_exits_1_and_a_refused_start_exits_2_naming_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let args = ["run", "demo", "srv-2", "-p", "steps=3", "-p", "step_ms=20", "-p", "fail_at_step=2"];
    let failed = run(&server.base, &args).await;
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stdout.lines().last().unwrap().starts_with("failed demo on srv-2"), "{failed:?}");

    let long = server.start_demo("srv-3", json!({"steps": 200, "step_ms": 100})).await;
    let refused = run(&server.base, &["run", "demo", "srv-3", "-p", "steps=2", "-p", "step_ms=10"]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("409"), "{refused:?}");
    assert!(refused.stderr.contains(&long), "the 409 names the running operation {long}: {}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{refused:?}");

    // Field errors: one typed here, one from the server, each named.
    let typed = run(&server.base, &["run", "demo", "srv-4", "-p", "steps=many", "-p", "step_ms=10"]).await;
    assert_eq!(typed.code, 2, "{typed:?}");
    assert!(typed.stderr.contains("-p steps=many") && typed.stderr.contains("integer"), "{typed:?}");
    let invalid = run(&server.base, &["run", "demo", "srv-4", "-p", "steps=0", "-p", "fail_at_step=9"]).await;
    assert_eq!(invalid.code, 2, "{invalid:?}");
    // Each field error on a line of its own, named as the server names it.
    assert!(invalid.stderr.starts_with("error: 400"), "{invalid:?}");
    assert!(invalid.stderr.contains("\n  params/steps: "), "{invalid:?}");
    assert!(invalid.stderr.contains("\n  params/step_ms: "), "{invalid:?}");

    let cancelled = run(&server.base, &["ops", "cancel", &long]).await;
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert_eq!(server.wait_terminal(&long).await["status"], "cancelled");
    server.stop().await;
}

#[tokio::test]
async fn json_is_ndjson_on_stdout_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let ran = run(&server.base, &["run", "--json", "demo", "srv-5", "-p", "steps=4", "-p", "step_ms=50"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.is_empty(), "--json writes nothing else: {:?}", ran.stderr);
    let lines: Vec<Value> =
        ran.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert_eq!(lines[0]["type"], "admitted");
    let id = lines[0]["operation"]["id"].as_str().unwrap();
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "operation.completed", "{last}");
    assert_eq!(last["operation"]["id"], id);
    assert!(lines.iter().any(|l| l["event"] == "operation.log"), "log events are in the stream");
    server.stop().await;
}

#[tokio::test]
async fn the_progress_bar_shows_on_a_terminal_and_tables_fit_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let ran = in_terminal(&server.base, "run demo srv-6 -p steps=6 -p step_ms=200", 100, &[]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let screen = plain(&ran.stdout);
    assert!(ran.stdout.contains('\r') || ran.stdout.contains("\x1b["), "the bar redraws in place: {screen}");
    assert!(screen.contains("[=") && screen.contains('%'), "a progress bar: {screen}");
    assert!(screen.contains("completed demo on srv-6"), "{screen}");

    // A narrow terminal: every line of the table fits in its 64 columns
    // (the message and target are cut, progress and age left out, the id
    // and status kept whole); the status is coloured, unless NO_COLOR is set.
    let table = in_terminal(&server.base, "ops", 64, &[]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<String> = plain(&table.stdout).lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("ID"), "{lines:?}");
    let row = lines.iter().find(|l| l.contains("srv-6")).expect("the operation's row");
    assert!(row.contains(" completed ") && row.split_whitespace().next().unwrap().len() == 26, "{lines:?}");
    for line in &lines {
        assert!(line.chars().count() <= 64, "{line:?} is wider than the terminal");
    }
    let wide = in_terminal(&server.base, "ops", 200, &[]).await;
    let wide_header = plain(&wide.stdout).lines().next().unwrap().to_owned();
    assert!(wide_header.contains("PROGRESS") && wide_header.contains("AGE"), "{wide_header}");
    assert!(table.stdout.contains("\x1b[32m"), "completed is green on a terminal: {:?}", table.stdout);
    let no_colour = in_terminal(&server.base, "ops", 120, &[("NO_COLOR", "1")]).await;
    assert!(!no_colour.stdout.contains("\x1b[32m"), "NO_COLOR: {:?}", no_colour.stdout);
    // A pipe gets whole lines and no colour.
    let piped = run(&server.base, &["ops"]).await;
    assert!(!piped.stdout.contains('\x1b') && piped.stdout.contains("completed"), "{piped:?}");
    server.stop().await;
}

#[tokio::test]
async fn ctrl_c_answered_cancel_cancels_the_operation_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut child = opal(&server.base, &["run", "--json", "demo", "srv-7", "-p", "steps=300", "-p", "step_ms=100"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let admitted: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    let id = admitted["operation"]["id"].as_str().unwrap().to_owned();
    // The snapshot: the client follows on the WebSocket now.
    let snapshot: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"cancel\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("ends").unwrap();
    assert_eq!(status.code(), Some(130), "cancelled exits 130");
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "cancelled");
    assert_eq!(op["cancelled_by"], "api");
    while let Some(line) = stdout.next_line().await.unwrap() {
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    // Ctrl-C answered "detach" leaves it running, and exits 0.
    let mut child = opal(&server.base, &["run", "--json", "demo", "srv-8", "-p", "steps=300", "-p", "step_ms=100"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let admitted: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    let detached = admitted["operation"]["id"].as_str().unwrap().to_owned();
    stdout.next_line().await.unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    child.stdin.take().unwrap().write_all(b"d\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("ends").unwrap();
    assert_eq!(status.code(), Some(0));
    let op = server.get(&format!("/api/v1/operations/{detached}")).await.body;
    assert!(matches!(op["status"].as_str(), Some("running" | "pending")), "still running: {op}");
    server.post(&format!("/api/v1/operations/{detached}/cancel"), &json!({})).await;
    server.stop().await;
}

#[tokio::test]
async fn ops_schedules_and_plugins_read_and_act() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let done = server.run_to_end("demo", "srv-10", json!({"steps": 2, "step_ms": 10})).await;
    let done_id = done["id"].as_str().unwrap();

    let list = run(&server.base, &["ops", "--json", "--status", "completed"]).await;
    assert_eq!(list.code, 0, "{list:?}");
    let page: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(page["operations"][0]["id"], done_id);
    let filtered = run(&server.base, &["ops", "--target", "elsewhere"]).await;
    assert_eq!(filtered.stdout.lines().count(), 1, "only the header: {filtered:?}");

    let show = run(&server.base, &["ops", "show", done_id]).await;
    assert!(show.stdout.contains("completed") && show.stdout.contains("srv-10"), "{show:?}");
    let logs = run(&server.base, &["ops", "logs", done_id]).await;
    assert!(logs.stdout.lines().count() >= 2 && logs.stdout.contains("info"), "{logs:?}");
    let missing = run(&server.base, &["ops", "show", "01KAAAAAAAAAAAAAAAAAAAAAAA"]).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.starts_with("error: 404"), "{missing:?}");

    // `logs -f` follows a running operation to its end.
    let running = server.start_demo("srv-11", json!({"steps": 5, "step_ms": 100})).await;
    let follow = run(&server.base, &["ops", "logs", "-f", &running]).await;
    assert_eq!(follow.code, 0, "{follow:?}");
    let stored = server.get(&format!("/api/v1/operations/{running}/events")).await.body;
    let log_lines = stored["events"].as_array().unwrap().iter().filter(|e| e["event"] == "operation.log").count();
    assert_eq!(follow.stdout.lines().count(), log_lines, "every log line once: {follow:?}");

    // `watch` off a terminal prints a line per event, until Ctrl-C.
    let mut watch = opal(&server.base, &["ops", "watch"]).spawn().unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let watched = server.start_demo("srv-12", json!({"steps": 2, "step_ms": 10})).await;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
        if line.starts_with("operation.completed") && line.contains(&watched) {
            break;
        }
    }
    let pid = watch.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert_eq!(watch.wait().await.unwrap().code(), Some(0));

    let plugins = run(&server.base, &["plugins"]).await;
    assert!(plugins.stdout.lines().any(|l| l.starts_with("demo ")), "{plugins:?}");
    let created = run(
        &server.base,
        &[
            "schedules",
            "create",
            "--cron",
            "0 3 * * *",
            "demo",
            "srv-13",
            "--params",
            r#"{"steps": 1, "step_ms": 0}"#,
            "--json",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{created:?}");
    let schedule: Value = serde_json::from_str(&created.stdout).unwrap();
    let schedule_id = schedule["id"].as_str().unwrap();
    let listed = run(&server.base, &["schedules"]).await;
    assert!(listed.stdout.contains(schedule_id) && listed.stdout.contains("0 3 * * *"), "{listed:?}");
    let bad_cron = run(&server.base, &["schedules", "create", "--cron", "every day", "demo", "srv-13"]).await;
    assert_eq!(bad_cron.code, 2, "{bad_cron:?}");
    assert!(bad_cron.stderr.contains("cron"), "{bad_cron:?}");
    assert_eq!(run(&server.base, &["schedules", "delete", schedule_id]).await.code, 0);
    assert!(!run(&server.base, &["schedules"]).await.stdout.contains(schedule_id));
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_or_a_refused_token_is_one_line_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let ran = run(&nowhere, &["ops"]).await;
    assert_eq!(ran.code, 3, "{ran:?}");
    assert_eq!(ran.stderr.lines().count(), 1, "one line: {:?}", ran.stderr);
    assert!(ran.stderr.starts_with("error: cannot reach the Opal server at"), "{:?}", ran.stderr);
    let ran = run(&nowhere, &["run", "demo", "srv-1", "-p", "steps=1"]).await;
    assert_eq!(ran.code, 3, "{ran:?}");
    // A --server that is no URL is a usage error: exit 2, saying why.
    let ran = run("ftp://example.com", &["ops"]).await;
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("must start with http:// or https://"), "{ran:?}");

    let server = TestServer::start_with(dir.path(), |config| {
        config.auth =
            AuthConfig { tokens: vec![api_token("viewer", VIEWER, Role::Viewer, &["**"])], ..AuthConfig::dev() };
    })
    .await;
    let refused = run(&server.base, &["ops", "--token", "opal_not_a_token_this_server_knows_00000000"]).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    assert!(refused.stderr.contains("refused the token"), "{refused:?}");
    let none = run(&server.base, &["plugins"]).await;
    assert_eq!(none.code, 3, "no token: {none:?}");
    let mut viewer = opal(&server.base, &["ops"]);
    viewer.env("OPAL_TOKEN", VIEWER);
    let listed = viewer.output().await.unwrap();
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    // A viewer may not start: the server's 403 is a refusal, exit 2.
    let mut start = opal(&server.base, &["run", "demo", "srv-1", "-p", "steps=1"]);
    start.env("OPAL_TOKEN", VIEWER);
    let forbidden = start.output().await.unwrap();
    assert_eq!(forbidden.status.code(), Some(2), "{forbidden:?}");
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("forbidden"), "{forbidden:?}");
    server.stop().await;
}

#[tokio::test]
async fn run_follows_across_a_server_restart_without_a_gap_or_a_repeat() {
    use opal_tests::serve::Serve;
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = (dir.path().join("data"), dir.path().join("opal.toml"));
    std::fs::write(&config, "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Serve::start_on(&listen, &data, &config, &[]).await.expect("opal serve starts");
    let mut child = opal(&server.base, &["run", "--json", "demo", "srv-20", "-p", "steps=30", "-p", "step_ms=100"])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines: Vec<Value> = Vec::new();
    // Follow until it runs, then the server dies (SIGKILL) and comes back on its port.
    while !lines.iter().any(|l| l["event"] == "operation.progress") {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await.unwrap().unwrap().unwrap();
        lines.push(serde_json::from_str(&line).unwrap());
    }
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = Serve::start_on(&listen, &data, &config, &[]).await.expect("opal serve restarts");
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await.unwrap().unwrap() {
        lines.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
    }
    let status = child.wait().await.unwrap();
    let id = lines[0]["operation"]["id"].as_str().unwrap();
    let last = lines.last().unwrap();
    let end =
        reqwest::get(format!("{}/api/v1/operations/{id}", server.base)).await.unwrap().json::<Value>().await.unwrap();
    // Whatever recovery made of it (re-queued and completed, or failed as
    // interrupted), the client saw that end and exits with it.
    assert_eq!(last["operation"]["status"], end["status"], "{last}");
    let expected = match end["status"].as_str() {
        Some("completed") => 0,
        Some("failed") => 1,
        other => panic!("unexpected end {other:?}"),
    };
    assert_eq!(status.code(), Some(expected), "{end}");
    // Events on both sides of the restart, each once, in seq order.
    let seqs: Vec<u64> = lines.iter().filter(|l| l["type"] == "event").map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "no repeat, in order: {seqs:?}");
    let stored = reqwest::get(format!("{}/api/v1/operations/{id}/events", server.base))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let lifecycle = |e: &Value| e["event"] != "operation.progress" && e["event"] != "operation.log";
    let stored_seqs: Vec<u64> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| lifecycle(e))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let seen: Vec<u64> =
        lines.iter().filter(|l| l["type"] == "event" && lifecycle(l)).map(|l| l["seq"].as_u64().unwrap()).collect();
    // The snapshot covers what came before it; every lifecycle event after it was seen.
    let snapshot = lines.iter().find(|l| l["type"] == "snapshot").expect("a snapshot")["seq"].as_u64().unwrap();
    let after: Vec<u64> = stored_seqs.iter().copied().filter(|s| *s > snapshot).collect();
    assert!(
        !after.is_empty() && after.iter().all(|s| seen.contains(s)),
        "{seen:?} of {stored_seqs:?} after {snapshot}"
    );
}
