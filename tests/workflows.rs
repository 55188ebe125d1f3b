//! Workflows end to end, with real plugins and a real server: the worked
//! example of docs/workflows.md, retry policies, `on_failure`, approval
//! gates, cancel, a crash in the middle of a run, fan-out limits and the
//! pausable queue. `workflows_postgres` runs the same suite on PostgreSQL.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opal_host::ServerConfig;
use opal_host::auth::{AuthConfig, Role};
use opal_host::config::{PluginGrants, TypePolicy};
use opal_host::sandbox::grants::{DirGrant, ExecRule};
use opal_tests::serve::Serve;
use opal_tests::{TestServer, api_token, plugin_dir};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ANN: &str = "opal_ann_token_for_workflow_tests_00000000000";
const BOB: &str = "opal_bob_token_for_workflow_tests_00000000000";
const VIC: &str = "opal_vic_token_for_workflow_tests_00000000000";
const ADMIN: &str = "opal_admin_token_for_workflow_tests_000000000";

/// The first ```toml block of docs/workflows.md: the worked example.
fn docs_example() -> String {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/workflows.md")).unwrap();
    let start = docs.find("```toml\n").expect("docs/workflows.md has a ```toml block") + "```toml\n".len();
    let end = start + docs[start..].find("```").expect("the block ends");
    docs[start..end].to_owned()
}

/// A workflows directory in `dir` holding `files` (name, TOML).
fn workflows(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("workflows");
    std::fs::create_dir_all(&path).unwrap();
    for (name, text) in files {
        std::fs::write(path.join(name), text).unwrap();
    }
    path
}

/// A server with `workflows` and quick progress.
async fn server(dir: &Path, flows: PathBuf, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(&dir.join("data"), |c| {
        c.workflow_dirs = vec![flows];
        c.progress_window = Duration::from_millis(20);
        tweak(c);
    })
    .await
}

async fn start(server: &TestServer, op_type: &str, target: &str, params: Value) -> String {
    let reply = server.post("/api/v1/operations", &json!({"type": op_type, "target": target, "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn children(server: &TestServer, run: &str) -> Vec<Value> {
    children_as(server, None, run).await
}

async fn children_as(server: &TestServer, token: Option<&str>, run: &str) -> Vec<Value> {
    let path = format!("/api/v1/operations?parent={run}&limit=500");
    let reply = server.request_as("GET", &path, token, None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut children = reply.body["operations"].as_array().unwrap().clone();
    children.reverse();
    children
}

/// Polls until `probe` gives `Some`, for at most 30 s.
async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback peer that greets every connection as an SSH server does.
async fn ssh_peer() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok(Ok((mut socket, _))) = tokio::time::timeout(Duration::from_secs(60), listener.accept()).await {
            tokio::spawn(async move {
                let _ = socket.write_all(b"SSH-2.0-OpenSSH_9.6 test\r\n").await;
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut sink)).await;
            });
        }
    });
    address
}

/// A CA for cert-issue (`ca.crt.pem`, `ca.key.pem` in `ca`).
fn make_ca(ca: &Path) {
    use p256::ecdsa::{DerSignature, SigningKey};
    use p256::elliptic_curve::Generate;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, profile::cabf::Root};
    use x509_cert::der::EncodePem;
    std::fs::create_dir_all(ca).unwrap();
    let key = SigningKey::try_generate().unwrap();
    let name = x509_cert::name::Name::from_str("CN=Workflow CA,O=Opal Tests,C=US").unwrap();
    let profile = Root::new(false, name).unwrap();
    let spki = x509_cert::spki::SubjectPublicKeyInfo::from_key(key.verifying_key()).unwrap();
    let validity = x509_cert::time::Validity::from_now(Duration::from_secs(10 * 365 * 86_400)).unwrap();
    let builder =
        CertificateBuilder::new(profile, x509_cert::serial_number::SerialNumber::from(9u32), validity, spki).unwrap();
    let cert = builder.build::<_, DerSignature>(&key).unwrap();
    std::fs::write(ca.join("ca.crt.pem"), cert.to_pem(LineEnding::LF).unwrap()).unwrap();
    std::fs::write(ca.join("ca.key.pem"), key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
}

#[tokio::test]
async fn the_worked_example_from_the_docs_completes_with_linked_children_and_rising_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("out"));
    make_ca(&ca);
    std::fs::create_dir_all(&out).unwrap();
    let script = dir.path().join("systemctl");
    std::fs::write(&script, "#!/bin/sh\necho \"restarted $2\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let peer = ssh_peer().await;
    let flows = workflows(dir.path(), &[("rollout.toml", &docs_example())]);
    let command = script.display().to_string();
    let server = server(dir.path(), flows, |c| {
        let ssh =
            PluginGrants { net: vec![format!("127.0.0.1:{}", peer.port()).parse().unwrap()], ..Default::default() };
        c.types.insert("ssh-check".into(), TypePolicy { grants: ssh, ..Default::default() });
        let dirs = vec![
            DirGrant { host: ca.clone(), guest: "/ca".into(), writable: false },
            DirGrant { host: out.clone(), guest: "/out".into(), writable: true },
        ];
        c.types.insert(
            "cert-issue".into(),
            TypePolicy { grants: PluginGrants { dirs, ..Default::default() }, ..Default::default() },
        );
        let exec = vec![ExecRule { command: script.clone(), args: vec!["restart".into(), "*".into()] }];
        let mut restart = TypePolicy { grants: PluginGrants { exec, ..Default::default() }, ..Default::default() };
        restart.params.insert("command".into(), json!(command));
        c.types.insert("service-restart".into(), restart);
    })
    .await;

    // The workflow is an operation type, with its inputs as the params schema.
    let plugins = server.get("/api/v1/plugins").await.body;
    let listed = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "secure-rollout").cloned();
    let listed = listed.unwrap_or_else(|| panic!("the workflow is listed: {plugins}"));
    assert_eq!(listed["kind"], "workflow");
    assert_eq!(listed["params_schema"]["required"], json!(["users"]), "{listed}");
    assert_eq!(listed["steps"].as_array().unwrap().len(), 3);

    let mut ws = server.ws().await;
    ws.subscribe(&["operations"]).await;
    let users = ["alice", "bob", "carol"];
    let params = json!({"users": users, "ssh_port": peer.port()});
    let run = start(&server, "secure-rollout", "127.0.0.1", params).await;
    let events = ws.events_until_terminal(&run).await;

    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["operation"]["id"] == run.as_str())
        .filter_map(|e| e["operation"]["progress"].as_u64())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "the run's progress never goes down: {progress:?}");
    let tail: Vec<String> = events
        .iter()
        .rev()
        .take(4)
        .map(|e| format!("{} {} {}", e["event"], e["operation"]["id"], e["operation"]["progress"]))
        .collect();
    assert_eq!(progress.last(), Some(&100), "{tail:?}");
    assert!(progress.iter().any(|p| *p > 0 && *p < 100), "and it rose in steps: {progress:?}");

    let op = server.get(&format!("/api/v1/operations/{run}")).await.body;
    assert_eq!(op["status"], "completed", "{op}");
    let steps = op["details"]["steps"].as_array().unwrap();
    let statuses: Vec<&str> = steps.iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "completed", "completed"]);
    assert_eq!(
        steps[0]["outputs"]["software_version"], "OpenSSH_9.6",
        "the check's outputs are its details: {}",
        steps[0]
    );
    assert_eq!(steps[1]["outputs"].as_array().unwrap().len(), 3);

    let kids = children(&server, &run).await;
    assert_eq!(kids.len(), 5, "one check, three certificates, one restart: {kids:?}");
    for kid in &kids {
        assert_eq!(kid["parent"], run.as_str(), "{kid}");
        assert_eq!(kid["status"], "completed", "{kid}");
        assert_eq!(kid["created_by"], op["created_by"]);
    }
    let by_step: Vec<(&str, Option<u64>)> =
        kids.iter().map(|k| (k["step"].as_str().unwrap(), k["item"].as_u64())).collect();
    assert_eq!(by_step[0], ("check", None));
    assert_eq!(by_step[4], ("restart", None));
    let mut items: Vec<u64> = by_step[1..4]
        .iter()
        .map(|(s, i)| {
            assert_eq!(*s, "certs");
            i.unwrap()
        })
        .collect();
    items.sort_unstable();
    assert_eq!(items, [0, 1, 2]);
    for user in users {
        assert!(out.join(format!("{user}.crt.pem")).exists(), "{user}'s certificate was written");
    }
    assert_eq!(kids[4]["params"]["unit"], "nginx.service", "the input's default reached the step");
}

/// The faulty test plugin granted a writable `/state` for its attempt counter.
fn flaky_policy(state: &Path, retry: Option<&str>) -> TypePolicy {
    let dirs = vec![DirGrant { host: state.to_owned(), guest: "/state".into(), writable: true }];
    let mut policy = TypePolicy { grants: PluginGrants { dirs, ..Default::default() }, ..Default::default() };
    if let Some(retry) = retry {
        let section: opal_host::model::RetrySection = toml::from_str(retry).unwrap();
        policy.retry = Some(opal_host::model::RetryPolicy::from_section(&section).unwrap());
    }
    policy
}

#[tokio::test]
async fn a_plugin_that_fails_twice_completes_on_attempt_3_after_the_policys_delays() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let plugins = plugin_dir(dir.path(), &["faulty"]);
    let flows = workflows(dir.path(), &[]);
    let policy = flaky_policy(&state, Some("attempts = 3\ninitial = \"400ms\"\nmax = \"5s\"\njitter = 0.25"));
    let server = server(dir.path(), flows, |c| {
        c.plugin_dirs = vec![plugins];
        c.types.insert("faulty".into(), policy);
    })
    .await;
    let mut ws = server.ws().await;
    ws.subscribe(&["operations"]).await;
    let params = json!({"mode": "flaky", "count_file": "/state/count", "succeed_on": 3});
    let id = start(&server, "faulty", "flaky-1", params.clone()).await;

    // While it waits for its retry, it still holds its slot.
    until("the first retry to wait", || async {
        let op = server.get(&format!("/api/v1/operations/{id}")).await.body;
        (op["attempt"] == 2 && op["status"] == "pending").then_some(op)
    })
    .await;
    let again =
        server.post("/api/v1/operations", &json!({"type": "faulty", "target": "flaky-1", "params": params})).await;
    assert_eq!(again.status, 409, "the slot is held across attempts: {again:?}");
    assert_eq!(again.body["operation"]["id"], id.as_str());

    let events: Vec<Value> =
        ws.events_until_terminal(&id).await.into_iter().filter(|e| e["operation"]["id"] == id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    let scheduled: Vec<&Value> = events.iter().filter(|e| e["event"] == "operation.retry_scheduled").collect();
    assert_eq!(scheduled.len(), 2, "two retries: {kinds:?}");
    assert!(!kinds.contains(&"operation.failed"), "only the last outcome is terminal: {kinds:?}");
    assert_eq!(kinds.last(), Some(&"operation.completed"));
    let started: Vec<&Value> = events.iter().filter(|e| e["event"] == "operation.started").collect();
    assert_eq!(started.len(), 3, "{kinds:?}");
    let end = events.last().unwrap();
    assert_eq!(end["operation"]["attempt"], 3);
    assert_eq!(end["operation"]["details"]["attempt"], 3, "the plugin counted three runs");

    // The delays are the policy's: 400 ms, then 800 ms, each within 25 %.
    let time = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    for (i, (retry, next)) in scheduled.iter().zip(&started[1..]).enumerate() {
        let op = &retry["operation"];
        assert_eq!(op["status"], "pending");
        assert_eq!(op["attempt"], i as u64 + 2);
        assert_eq!(op["error"]["code"], "plugin_error", "the last error is kept: {op}");
        let due = time(&op["next_attempt_at"]);
        let delay = due.duration_since(time(&retry["at"])).unwrap().as_millis() as f64;
        let base = 400.0 * f64::from(1u32 << i);
        assert!((base * 0.75 - 5.0..=base * 1.25 + 5.0).contains(&delay), "retry {i}: delay {delay} ms, base {base}");
        let ran = time(&next["at"]);
        assert!(ran >= due, "attempt {} started at {ran:?}, before its time {due:?}", i + 2);
        assert!(ran.duration_since(due).unwrap() < Duration::from_millis(500), "and soon after it");
    }

    // A validation error is never retried, whatever the policy.
    let bad = server.post("/api/v1/operations", &json!({"type": "faulty", "target": "x", "params": {"mode": 7}})).await;
    assert_eq!(bad.status, 400);
}

const TWO_DEMOS: &str = r#"
name = "NAME"
[inputs.fail_at]
type = "integer"
[[steps]]
name = "first"
type = "demo"
params = { steps = 2, step_ms = 20, fail_at_step = "{{ inputs.fail_at }}" }
on_failure = "ON_FAILURE"
[[steps]]
name = "second"
type = "demo"
params = { steps = 2, step_ms = 20 }
"#;

#[tokio::test]
async fn on_failure_stop_fails_the_run_and_continue_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let stop = TWO_DEMOS.replace("NAME", "stops").replace("ON_FAILURE", "stop");
    let go_on = TWO_DEMOS.replace("NAME", "goes-on").replace("ON_FAILURE", "continue");
    let flows = workflows(dir.path(), &[("stop.toml", &stop), ("continue.toml", &go_on)]);
    let server = server(dir.path(), flows, |_| {}).await;

    let run = start(&server, "stops", "t-1", json!({"fail_at": 1})).await;
    let op = server.wait_terminal(&run).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "step_failed");
    assert!(op["message"].as_str().unwrap().starts_with("step first failed"), "{op}");
    let statuses: Vec<&str> =
        op["details"]["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "skipped"]);
    assert_eq!(children(&server, &run).await.len(), 1, "the second step never started");

    let run = start(&server, "goes-on", "t-2", json!({"fail_at": 1})).await;
    let op = server.wait_terminal(&run).await;
    assert_eq!(op["status"], "completed", "{op}");
    let statuses: Vec<&str> =
        op["details"]["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "completed"]);
    assert!(op["message"].as_str().unwrap().contains("first"), "the message names the failed step: {op}");
    let kids = children(&server, &run).await;
    assert_eq!(kids.iter().map(|k| k["status"].as_str().unwrap()).collect::<Vec<_>>(), ["failed", "completed"]);
}

const GATED: &str = r#"
name = "NAME"
[[steps]]
name = "prepare"
type = "demo"
params = { steps = 1, step_ms = 10 }
[[steps]]
name = "deploy"
type = "demo"
params = { steps = 1, step_ms = 10 }
approval = { role = "operator", timeout = "TIMEOUT", on_timeout = "ON_TIMEOUT", self_approval = SELF }
"#;

fn gated(name: &str, timeout: &str, on_timeout: &str, self_approval: bool) -> String {
    GATED
        .replace("NAME", name)
        .replace("ON_TIMEOUT", on_timeout)
        .replace("TIMEOUT", timeout)
        .replace("SELF", &self_approval.to_string())
}

fn people(c: &mut ServerConfig) {
    c.auth = AuthConfig {
        tokens: vec![
            api_token("ann", ANN, Role::Operator, &[]),
            api_token("bob", BOB, Role::Operator, &[]),
            api_token("vic", VIC, Role::Viewer, &[]),
            api_token("root", ADMIN, Role::Admin, &[]),
        ],
        ..AuthConfig::dev()
    };
}

async fn start_as(server: &TestServer, token: &str, op_type: &str, target: &str) -> String {
    let body = json!({"type": op_type, "target": target});
    let reply = server.request_as("POST", "/api/v1/operations", Some(token), Some(&body)).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn wait_status_as(server: &TestServer, token: &str, id: &str, status: &str) -> Value {
    until(&format!("{id} to be {status}"), || async {
        let op = server.request_as("GET", &format!("/api/v1/operations/{id}"), Some(token), None).await.body;
        (op["status"] == status).then_some(op)
    })
    .await
}

#[tokio::test]
async fn an_approval_gate_waits_for_another_principal_with_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let flows = workflows(
        dir.path(),
        &[("gate.toml", &gated("gated", "1h", "reject", false)), ("own.toml", &gated("own", "1h", "reject", true))],
    );
    let server = server(dir.path(), flows, people).await;
    let mut ws = server.ws_as(ADMIN).await;
    ws.subscribe(&["operations"]).await;

    // Approved by another principal.
    let run = start_as(&server, ANN, "gated", "web-1").await;
    let waiting = wait_status_as(&server, ANN, &run, "waiting").await;
    assert_eq!(waiting["details"]["gate"]["step"], "deploy", "{waiting}");
    assert_eq!(waiting["details"]["gate"]["role"], "operator");
    assert_eq!(waiting["phase"], "deploy");
    let path = format!("/api/v1/operations/{run}/approve");
    let comment = json!({"comment": "looks good"});
    let viewer = server.request_as("POST", &path, Some(VIC), Some(&comment)).await;
    assert_eq!(viewer.status, 403, "a viewer lacks the gate's role: {viewer:?}");
    let own = server.request_as("POST", &path, Some(ANN), Some(&comment)).await;
    assert_eq!(own.status, 403, "no self-approval: {own:?}");
    assert!(own.body["detail"].as_str().unwrap().contains("self-approval"), "{own:?}");
    let bad = server.request_as("POST", &path, Some(BOB), Some(&json!({"comment": 5}))).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let approved = server.request_as("POST", &path, Some(BOB), Some(&comment)).await;
    assert_eq!(approved.status, 200, "{approved:?}");
    let again = server.request_as("POST", &path, Some(BOB), None).await;
    assert_eq!(again.status, 409, "the first decision wins: {again:?}");
    let op = server.wait_terminal_as(&run, ANN).await;
    assert_eq!(op["status"], "completed", "{op}");
    let approval = &op["details"]["steps"][1]["approval"];
    assert_eq!((approval["decision"].as_str(), approval["by"].as_str()), (Some("approve"), Some("user:bob")));
    assert_eq!(approval["comment"], "looks good");
    let events = ws.events_until_terminal(&run).await;
    let decided = events.iter().find(|e| e["event"] == "operation.approved" && e["operation"]["id"] == run.as_str());
    let decided = decided.expect("the decision is an event");
    assert_eq!(decided["operation"]["details"]["gate"]["decided"]["by"], "user:bob", "{decided}");
    assert!(events.iter().any(|e| e["event"] == "operation.waiting" && e["operation"]["id"] == run.as_str()));
    assert_eq!(children_as(&server, Some(ANN), &run).await.len(), 2);

    // Rejected: the step never runs and the run fails.
    let run = start_as(&server, ANN, "gated", "web-2").await;
    wait_status_as(&server, ANN, &run, "waiting").await;
    let reject = format!("/api/v1/operations/{run}/reject");
    let rejected = server.request_as("POST", &reject, Some(BOB), Some(&json!({"comment": "not today"}))).await;
    assert_eq!(rejected.status, 200, "{rejected:?}");
    let op = server.wait_terminal_as(&run, ANN).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("rejected")), "{op}");
    assert!(op["message"].as_str().unwrap().contains("user:bob"), "{op}");
    assert_eq!(children_as(&server, Some(ANN), &run).await.len(), 1, "the gated step did not run");

    // A gate that allows it may be approved by whoever started the run.
    let run = start_as(&server, ANN, "own", "web-3").await;
    wait_status_as(&server, ANN, &run, "waiting").await;
    let own = server.request_as("POST", &format!("/api/v1/operations/{run}/approve"), Some(ANN), None).await;
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(server.wait_terminal_as(&run, ANN).await["status"], "completed");

    // Not waiting: 409; no such run: 404.
    let done = server.request_as("POST", &format!("/api/v1/operations/{run}/approve"), Some(BOB), None).await;
    assert_eq!(done.status, 409);
    let none =
        server.request_as("POST", "/api/v1/operations/01KAQ3ZZZZZZZZZZZZZZZZZZZZ/approve", Some(BOB), None).await;
    assert_eq!(none.status, 404);
}

#[tokio::test]
async fn a_gate_that_times_out_decides_as_its_on_timeout_says() {
    let dir = tempfile::tempdir().unwrap();
    let flows = workflows(
        dir.path(),
        &[
            ("reject.toml", &gated("times-out-rejected", "300ms", "reject", false)),
            ("approve.toml", &gated("times-out-approved", "300ms", "approve", false)),
        ],
    );
    let server = server(dir.path(), flows, |_| {}).await;
    let rejected = start(&server, "times-out-rejected", "a", json!({})).await;
    let approved = start(&server, "times-out-approved", "b", json!({})).await;
    let op = server.wait_terminal(&rejected).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("rejected")), "{op}");
    assert_eq!(op["details"]["steps"][1]["approval"]["by"], "timeout");
    let op = server.wait_terminal(&approved).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["details"]["steps"][1]["approval"]["by"], "timeout");
    assert_eq!(op["details"]["steps"][1]["approval"]["decision"], "approve");
}

const FAN_OUT: &str = r#"
name = "fan-out"
[inputs.hosts]
type = "array"
items = "string"
[inputs.step_ms]
type = "integer"
default = 40
[[steps]]
name = "each"
type = "demo"
for_each = "{{ inputs.hosts }}"
max_parallel = 5
target = "{{ item }}"
params = { steps = 3, step_ms = "{{ inputs.step_ms }}" }
"#;

#[tokio::test]
async fn a_fan_out_over_50_items_never_runs_more_than_max_parallel_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let flows = workflows(dir.path(), &[("fan.toml", FAN_OUT)]);
    let server = server(dir.path(), flows, |c| c.max_concurrent = 16).await;
    let mut ws = server.ws().await;
    ws.subscribe(&["operations"]).await;
    let hosts: Vec<String> = (0..50).map(|i| format!("host-{i:02}")).collect();
    let run = start(&server, "fan-out", "fleet", json!({"hosts": hosts})).await;
    let events = ws.events_until_terminal(&run).await;
    let mut running: HashSet<String> = HashSet::new();
    let mut most = 0;
    for event in &events {
        let op = &event["operation"];
        if op["parent"] != run.as_str() {
            continue;
        }
        let id = op["id"].as_str().unwrap().to_owned();
        match event["event"].as_str().unwrap() {
            "operation.started" => {
                running.insert(id);
            }
            kind if kind.ends_with("completed") || kind.ends_with("failed") || kind.ends_with("cancelled") => {
                running.remove(&id);
            }
            _ => {}
        }
        most = most.max(running.len());
    }
    let kinds: Vec<String> =
        events.iter().take(12).map(|e| format!("{} {}", e["event"], e["operation"]["parent"])).collect();
    assert_eq!(most, 5, "at most max_parallel children ran at once, and that many did: {kinds:?}");
    let op = server.get(&format!("/api/v1/operations/{run}")).await.body;
    assert_eq!(op["status"], "completed", "{op}");
    let kids = children(&server, &run).await;
    assert_eq!(kids.len(), 50);
    let targets: HashSet<&str> = kids.iter().map(|k| k["target"].as_str().unwrap()).collect();
    assert_eq!(targets.len(), 50, "each item ran on its own target");
}

#[tokio::test]
async fn cancelling_a_run_cancels_its_running_children_and_starts_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let flows = workflows(dir.path(), &[("fan.toml", FAN_OUT)]);
    let server = server(dir.path(), flows, |_| {}).await;
    let hosts: Vec<String> = (0..12).map(|i| format!("h{i}")).collect();
    let run = start(&server, "fan-out", "fleet", json!({"hosts": hosts, "step_ms": 2000})).await;
    until("five running children", || async {
        let kids = children(&server, &run).await;
        (kids.iter().filter(|k| k["status"] == "running").count() == 5).then_some(())
    })
    .await;
    let cancel = server.post(&format!("/api/v1/operations/{run}/cancel"), &json!({})).await;
    assert_eq!(cancel.status, 202, "{cancel:?}");
    let op = server.wait_terminal(&run).await;
    assert_eq!(op["status"], "cancelled", "{op}");
    let kids = children(&server, &run).await;
    assert_eq!(kids.len(), 5, "nothing more started: {kids:?}");
    for kid in &kids {
        assert_eq!(kid["status"], "cancelled", "{kid}");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(children(&server, &run).await.len(), 5, "and nothing starts later");
}

const THREE_STEPS: &str = r#"
name = "three"
[[steps]]
name = "one"
type = "demo"
params = { steps = 1, step_ms = 10 }
[[steps]]
name = "two"
type = "demo"
params = { steps = 40, step_ms = 100 }
retry = { attempts = 2, initial = "100ms", codes = ["interrupted"] }
[[steps]]
name = "three"
type = "demo"
params = { steps = 1, step_ms = 10 }
"#;

#[tokio::test]
async fn a_run_killed_in_step_2_of_3_continues_after_the_restart_without_running_step_1_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flows = workflows(dir.path(), &[("three.toml", THREE_STEPS)]);
    let config = dir.path().join("opal.toml");
    std::fs::write(
        &config,
        format!("progress_window_ms = 20\n[workflows]\ndirs = [{:?}]\n", flows.display().to_string()),
    )
    .unwrap();
    let mut serve = Serve::start(&data, &config).await.expect("opal serve starts");
    let client = reqwest::Client::new();
    let get = |base: String, path: String| {
        let client = client.clone();
        async move { client.get(format!("{base}{path}")).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let reply = client
        .post(format!("{}/api/v1/operations", serve.base))
        .json(&json!({"type": "three", "target": "box"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202);
    let run = reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let base = serve.base.clone();
    let first = until("step two running", || {
        let (base, run) = (base.clone(), run.clone());
        let get = &get;
        async move {
            let kids = get(base, format!("/api/v1/operations?parent={run}")).await;
            let kids = kids["operations"].as_array().unwrap().clone();
            let two = kids
                .iter()
                .find(|k| k["step"] == "two" && k["status"] == "running" && k["progress"].as_u64() > Some(0));
            two.map(|_| kids.iter().find(|k| k["step"] == "one").unwrap().clone())
        }
    })
    .await;
    assert_eq!(first["status"], "completed");
    serve.kill();

    let serve = Serve::start(&data, &config).await.expect("opal serve starts again");
    let base = serve.base.clone();
    let op = until("the run to end", || {
        let (base, run) = (base.clone(), run.clone());
        let get = &get;
        async move {
            let op = get(base, format!("/api/v1/operations/{run}")).await;
            matches!(op["status"].as_str(), Some("completed" | "failed" | "cancelled")).then_some(op)
        }
    })
    .await;
    assert_eq!(op["status"], "completed", "{op}\n{}", serve.log());
    assert!(op["attempt"].as_u64() >= Some(2), "the run itself was re-queued: {op}");
    let kids = get(base, format!("/api/v1/operations?parent={run}")).await;
    let kids = kids["operations"].as_array().unwrap();
    let ones: Vec<&Value> = kids.iter().filter(|k| k["step"] == "one").collect();
    assert_eq!(ones.len(), 1, "step one has one child: {kids:?}");
    assert_eq!(ones[0]["attempt"], 1, "which never ran again");
    assert_eq!(ones[0]["started_at"], first["started_at"]);
    let two: Vec<&Value> = kids.iter().filter(|k| k["step"] == "two").collect();
    assert_eq!(two.len(), 1, "step two is still one operation: {kids:?}");
    assert_eq!(two[0]["attempt"], 2, "retried after its interruption: {}", two[0]);
    assert_eq!(two[0]["status"], "completed");
    assert_eq!(kids.iter().filter(|k| k["step"] == "three").count(), 1);
}

#[tokio::test]
async fn starts_wait_while_the_queue_is_paused_and_run_in_fifo_order_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let flows = workflows(dir.path(), &[]);
    let server = server(dir.path(), flows, |c| {
        c.max_concurrent = 1;
        c.status_interval = Duration::from_millis(50);
    })
    .await;
    let mut system = server.ws().await;
    system.subscribe(&["system"]).await;
    let paused = server.post("/api/v1/queue/pause", &json!({})).await;
    assert_eq!((paused.status, &paused.body), (200, &json!({"paused": true})));
    assert_eq!(server.get("/api/v1/status").await.body["paused"], true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, system.recv()).await.expect("paused on the system topic");
        if message["status"]["paused"] == true {
            break;
        }
    }

    let mut ws = server.ws().await;
    ws.subscribe(&["operations"]).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(start(&server, "demo", &format!("q-{i}"), json!({"steps": 1, "step_ms": 10})).await);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for id in &ids {
        assert_eq!(server.get(&format!("/api/v1/operations/{id}")).await.body["status"], "pending", "starts wait");
    }
    let resumed = server.post("/api/v1/queue/resume", &json!({})).await;
    assert_eq!(resumed.body, json!({"paused": false}));
    let events = ws.events_until_terminal(ids.last().unwrap()).await;
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "operation.started")
        .map(|e| e["operation"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(started, ids.iter().map(String::as_str).collect::<Vec<_>>(), "FIFO");
    for id in &ids {
        assert_eq!(server.wait_terminal(id).await["status"], "completed");
    }
    assert_eq!(server.get("/api/v1/status").await.body["paused"], false);
}

#[tokio::test]
async fn only_an_admin_pauses_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let flows = workflows(dir.path(), &[]);
    let server = server(dir.path(), flows, people).await;
    let refused = server.request_as("POST", "/api/v1/queue/pause", Some(BOB), None).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let paused = server.request_as("POST", "/api/v1/queue/pause", Some(ADMIN), None).await;
    assert_eq!(paused.status, 200, "{paused:?}");
    let resumed = server.request_as("POST", "/api/v1/queue/resume", Some(ADMIN), None).await;
    assert_eq!(resumed.status, 200, "{resumed:?}");
}

#[tokio::test]
async fn a_bad_file_is_refused_with_its_line_and_the_others_load_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "name = \"broken\"\n[[steps]]\nname = \"a\"\ntype = \"demo\"\nparams = { x = \"{{ inputs.nope }}\" }\n";
    let good = "name = \"fine\"\n[[steps]]\nname = \"a\"\ntype = \"demo\"\nparams = { steps = 1, step_ms = 5 }\n";
    let flows = workflows(dir.path(), &[("bad.toml", bad), ("good.toml", good)]);
    let server = server(dir.path(), flows.clone(), |c| c.plugin_poll = Duration::from_millis(100)).await;
    let plugins = server.get("/api/v1/plugins").await.body;
    let names: Vec<&str> = plugins["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"fine") && !names.contains(&"broken"), "{names:?}");
    let refused = plugins["refused"].as_array().unwrap();
    let why = refused.iter().find(|r| r["source"].as_str().unwrap().ends_with("bad.toml")).expect("listed as refused");
    let error = why["error"].as_str().unwrap();
    assert!(error.contains("bad.toml:5:") && error.contains("inputs.nope"), "file, line and reason: {error}");
    let unknown = server.post("/api/v1/operations", &json!({"type": "broken", "target": "t"})).await;
    assert_eq!(unknown.status, 404);

    // Fixed on disk: it loads without a restart.
    std::fs::write(flows.join("bad.toml"), bad.replace("inputs.nope", "target")).unwrap();
    until("the fixed file to load", || async {
        let plugins = server.get("/api/v1/plugins").await.body;
        plugins["plugins"].as_array().unwrap().iter().any(|p| p["name"] == "broken").then_some(())
    })
    .await;
    let op = server.run_to_end("fine", "t", json!({})).await;
    assert_eq!(op["status"], "completed");
    let invalid = server.post("/api/v1/operations", &json!({"type": "fine", "target": "t", "params": {"x": 1}})).await;
    assert_eq!(invalid.status, 400, "a workflow's params are its inputs: {invalid:?}");
}

#[tokio::test]
async fn a_step_may_run_another_workflow_and_use_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let inner = "name = \"inner\"\n[inputs.n]\ntype = \"integer\"\n[[steps]]\nname = \"work\"\ntype = \"demo\"\nparams = { steps = \"{{ inputs.n }}\", step_ms = 5 }\n";
    let outer = r#"
name = "outer"
[[steps]]
name = "first"
type = "inner"
params = { n = 2 }
[[steps]]
name = "second"
type = "demo"
params = { steps = "{{ steps.first.outputs.steps.0.outputs.steps }}", step_ms = 5 }
"#;
    let flows = workflows(dir.path(), &[("inner.toml", inner), ("outer.toml", outer)]);
    let server = server(dir.path(), flows, |_| {}).await;
    let run = start(&server, "outer", "t", json!({})).await;
    let op = server.wait_terminal(&run).await;
    assert_eq!(op["status"], "completed", "{op}");
    let kids = children(&server, &run).await;
    assert_eq!((kids[0]["type"].as_str(), kids[1]["type"].as_str()), (Some("inner"), Some("demo")));
    assert_eq!(kids[1]["params"]["steps"], 2, "the inner run's outputs reached the next step");
    let grandchildren = children(&server, kids[0]["id"].as_str().unwrap()).await;
    assert_eq!(grandchildren.len(), 1);
    assert_eq!(grandchildren[0]["parent"], kids[0]["id"]);
}
