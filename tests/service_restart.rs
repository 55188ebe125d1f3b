//! The bundled `service-restart` plugin in a real server, running a harmless
//! stand-in for systemctl (a shell script in a temp directory) under an exec
//! grant: its output is in the operation's log while it still runs, a
//! non-zero exit fails with the status and the end of stderr, a command
//! line outside the grant is denied without running, and a deployment's
//! command line comes from the config's params defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use opal_host::config::{PluginGrants, TypePolicy};
use opal_host::sandbox::grants::ExecRule;
use opal_tests::{TestServer, WAIT};
use serde_json::{Value, json};

/// Writes the stand-in: `fake-systemctl restart <unit>` says what it does;
/// `broken.service` fails like systemd does, `slow.service` waits (bounded)
/// for a `go` file in `dir` between its two lines, and every run appends its
/// arguments to `dir/calls`.
fn fake_systemctl(dir: &Path) -> PathBuf {
    let script = dir.join("fake-systemctl");
    let d = dir.display();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
PATH=/usr/bin:/bin
echo "$@" >> "{d}/calls"
echo "Restarting $2"
case "$2" in
  broken.service)
    echo "Job for broken.service failed because the control process exited with error code." >&2
    echo "See \"systemctl status broken.service\" for details." >&2
    exit 1 ;;
  slow.service)
    i=0
    while [ ! -e "{d}/go" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done ;;
esac
echo "Restarted $2"
"#
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A server that grants `service-restart` exactly `<script> restart <any one unit>`.
async fn start_server(dir: &Path, script: &Path) -> TestServer {
    let rule = ExecRule { command: script.to_owned(), args: vec!["restart".into(), "*".into()] };
    let grants = PluginGrants { exec: vec![rule], ..Default::default() };
    TestServer::start_with(dir, |c| {
        c.types.insert("service-restart".into(), TypePolicy { grants, ..Default::default() });
    })
    .await
}

async fn start(server: &TestServer, target: &str, params: Value) -> String {
    let body = json!({"type": "service-restart", "target": target, "params": params});
    let reply = server.post("/api/v1/operations", &body).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

/// The operation's log so far: (level, line).
async fn logs(server: &TestServer, id: &str) -> Vec<(String, String)> {
    let events = server.get(&format!("/api/v1/operations/{id}/events")).await.body;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "operation.log")
        .map(|e| (e["level"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned()))
        .collect()
}

fn line(level: &str, message: &str) -> (String, String) {
    (level.to_owned(), message.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_streaming_the_output_while_the_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let script = fake_systemctl(dir.path());
    let server = start_server(dir.path(), &script).await;
    let command = script.display().to_string();

    let id = start(&server, "web-1", json!({"unit": "slow.service", "command": command})).await;
    // The first line is in the log while the command still waits for `go`.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if logs(&server, &id).await.contains(&line("info", "Restarting slow.service")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no output while running: {:?}", logs(&server, &id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let op = server.get(&format!("/api/v1/operations/{id}")).await.body;
    assert_eq!(op["status"], "running", "the command is still waiting: {op}");
    assert!(!logs(&server, &id).await.contains(&line("info", "Restarted slow.service")));
    std::fs::write(dir.path().join("go"), "").unwrap();

    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["message"], "restarted slow.service on web-1");
    assert_eq!(
        op["details"],
        json!({"unit": "slow.service", "command": format!("{command} restart slow.service"), "exit_status": 0})
    );
    assert_eq!(
        logs(&server, &id).await,
        [
            line("info", &format!("running {command} restart slow.service on web-1")),
            line("info", "Restarting slow.service"),
            line("info", "Restarted slow.service"),
        ]
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("calls")).unwrap(), "restart slow.service\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_with_its_status_and_stderr_and_the_grant_is_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let script = fake_systemctl(dir.path());
    let server = start_server(dir.path(), &script).await;
    let command = script.display().to_string();

    // A non-zero exit: failed, with the status and the end of stderr; stderr is also in the log.
    let id = start(&server, "db-1", json!({"unit": "broken.service", "command": command})).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "plugin_error");
    assert_eq!(
        op["error"]["message"],
        format!(
            "{command} restart broken.service exited with status 1: Job for broken.service failed because the \
             control process exited with error code. | See \"systemctl status broken.service\" for details."
        )
    );
    assert_eq!(op["details"]["exit_status"], 1);
    let log = logs(&server, &id).await;
    assert!(log.contains(&line("warn", "See \"systemctl status broken.service\" for details.")), "{log:?}");

    // Outside the grant: another verb, and the default /usr/bin/systemctl. Neither runs.
    let id = start(&server, "db-2", json!({"unit": "db.service", "command": command, "args": ["stop"]})).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "failed", "{op}");
    let message = op["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("cannot run {command} stop db.service: denied: ")), "{message}");
    assert!(message.contains("matches no granted command"), "{message}");
    let id = start(&server, "db-3", json!({"unit": "db.service"})).await;
    let op = server.wait_terminal(&id).await;
    assert!(
        op["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot run /usr/bin/systemctl restart db.service: denied"),
        "{op}"
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("calls")).unwrap(), "restart broken.service\n", "only one ran");

    // A unit name with shell characters never reaches a command: 400, by field.
    let body = json!({"type": "service-restart", "target": "db-4", "params": {"unit": "db; reboot"}});
    let reply = server.post("/api/v1/operations", &body).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.body["errors"][0]["field"], "params/unit", "{reply:?}");
    server.stop().await;
}

/// A stand-in for `sudo -n`: refuses without `-n`, then runs the rest.
fn fake_sudo(dir: &Path) -> PathBuf {
    let script = dir.join("fake-sudo");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = -n ] || { echo 'sudo: a password is required' >&2; exit 1; }\nshift\nexec \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_sets_the_command_line_once_and_requests_name_only_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (systemctl, sudo) = (fake_systemctl(dir.path()), fake_sudo(dir.path()));
    let (systemctl, sudo) = (systemctl.display().to_string(), sudo.display().to_string());
    // As in docs/operations.md: `sudo -n systemctl restart <unit>`, set in
    // [types.service-restart.params] and granted with the unit left open.
    let defaults = json!({"command": sudo, "args": ["-n", systemctl, "restart"]});
    let rule = ExecRule {
        command: sudo.clone().into(),
        args: vec!["-n".into(), systemctl.clone(), "restart".into(), "*".into()],
    };
    let policy = TypePolicy {
        grants: PluginGrants { exec: vec![rule], ..Default::default() },
        params: defaults.as_object().unwrap().clone(),
        ..Default::default()
    };
    let server = TestServer::start_with(dir.path(), |c| {
        c.types.insert("service-restart".into(), policy);
    })
    .await;

    // The plugin's page shows what the deployment merges under its params.
    let plugin = server.get("/api/v1/plugins/service-restart").await;
    assert_eq!(plugin.status, 200, "{plugin:?}");
    assert_eq!(plugin.body["param_defaults"], defaults, "{plugin:?}");
    assert_eq!(plugin.body["name"], "service-restart", "the summary is still there: {plugin:?}");

    // The request names only the unit; the configured command line runs.
    let id = start(&server, "web-1", json!({"unit": "web.service"})).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "completed", "{op}");
    let line_run = format!("{sudo} -n {systemctl} restart web.service");
    assert_eq!(op["details"], json!({"unit": "web.service", "command": line_run, "exit_status": 0}));
    assert_eq!(
        op["params"],
        json!({"unit": "web.service", "command": sudo, "args": ["-n", systemctl, "restart"]}),
        "the record says what ran"
    );
    assert_eq!(logs(&server, &id).await[0], line("info", &format!("running {line_run} on web-1")));
    assert_eq!(std::fs::read_to_string(dir.path().join("calls")).unwrap(), "restart web.service\n");

    // A field the request sets wins whole (no merging of lists), and the
    // grant is still the boundary: `sudo stop` is not granted, so nothing runs.
    let id = start(&server, "web-2", json!({"unit": "web.service", "args": ["-n", systemctl, "stop"]})).await;
    let op = server.wait_terminal(&id).await;
    assert_eq!(op["status"], "failed", "{op}");
    let message = op["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("cannot run {sudo} -n {systemctl} stop web.service: denied: ")), "{message}");
    assert_eq!(std::fs::read_to_string(dir.path().join("calls")).unwrap(), "restart web.service\n", "only one ran");
    server.stop().await;
}
