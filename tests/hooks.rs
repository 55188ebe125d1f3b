//! Inbound webhooks and the audit log, against a real server: GitHub's sample
//! push payload signed with the secret of the `[[hooks]]` example in
//! docs/hooks.md (loaded from the doc, so it cannot drift), the Opal
//! signature's replay window, and the audit log's record of who did what.
//! `hooks_postgres` runs the same suite on PostgreSQL.

use std::path::Path;
use std::time::Duration;

use opal_host::ServerConfig;
use opal_host::auth::{AuthConfig, Role};
use opal_host::hooks::signature::{sign_github, sign_opal};
use opal_tests::{Reply, TestServer, api_token};
use serde_json::{Value, json};

const ANN: &str = "opal_ann_token_for_hook_tests_000000000000000";
const VIC: &str = "opal_vic_token_for_hook_tests_000000000000000";
const ROOT: &str = "opal_root_token_for_hook_tests_00000000000000";

/// The first ```toml block of docs/hooks.md, as a server config.
fn docs_config(dir: &Path) -> (ServerConfig, String) {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/hooks.md")).unwrap();
    let start = docs.find("```toml\n").expect("docs/hooks.md has a ```toml block") + "```toml\n".len();
    let end = start + docs[start..].find("```").unwrap();
    let path = dir.join("opal.toml");
    std::fs::write(&path, &docs[start..end]).unwrap();
    let config = ServerConfig::from_file(&path).expect("the docs' example is a valid config");
    let table: toml::Table = toml::from_str(&docs[start..end]).unwrap();
    let secret = table["hooks"][0]["secret"].as_str().unwrap().to_owned();
    (config, secret)
}

fn push_payload() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/github-push.json")).unwrap()
}

async fn deliver(server: &TestServer, hook: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let client = reqwest::Client::new();
    let mut request = client
        .post(format!("{}/api/v1/hooks/{hook}", server.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Reply { status, location: None, retry_after: None, content_type: String::new(), body }
}

fn people(c: &mut ServerConfig) {
    c.auth = AuthConfig {
        tokens: vec![
            api_token("ann", ANN, Role::Operator, &[]),
            api_token("vic", VIC, Role::Viewer, &[]),
            api_token("root", ROOT, Role::Admin, &[]),
        ],
        ..AuthConfig::dev()
    };
}

#[tokio::test]
async fn a_signed_github_push_starts_the_mapped_operation_once() {
    let dir = tempfile::tempdir().unwrap();
    let (config, secret) = docs_config(dir.path());
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.hooks = config.hooks.clone();
        people(c);
    })
    .await;
    let body = push_payload();
    let signature = sign_github(secret.as_bytes(), &body);
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let started = deliver(&server, "github-push", &body, &headers).await;
    assert_eq!(started.status, 202, "{started:?}");
    let op = &started.body;
    assert_eq!(op["type"], "demo");
    assert_eq!(op["target"], "Codertocat/Hello-World", "the target came from /repository/full_name");
    assert_eq!(op["params"]["release"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "a param from /head_commit/id");
    assert_eq!(op["params"]["steps"], 4, "and the static ones");
    assert_eq!(op["created_by"], "hook:github-push");
    let id = op["id"].as_str().unwrap().to_owned();
    let ended = server.wait_terminal_as(&id, ROOT).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["details"]["release"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");

    // GitHub redelivers: the same delivery id gets the same operation back.
    let again = deliver(&server, "github-push", &body, &headers).await;
    assert_eq!((again.status, again.body["id"].as_str()), (200, Some(id.as_str())), "{again:?}");

    // A bad signature: 401, and nothing else said.
    let forged = sign_github(b"not the secret at all, sorry", &body);
    let refused =
        deliver(&server, "github-push", &body, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &forged)]).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.body["detail"], "the signature is missing or does not match");
    let unsigned = deliver(&server, "github-push", &body, &[("X-GitHub-Event", "push")]).await;
    assert_eq!(unsigned.status, 401);

    // GitHub's ping when the hook is made: filtered out, 200.
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let ping_signature = sign_github(secret.as_bytes(), ping);
    let ignored =
        deliver(&server, "github-push", ping, &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &ping_signature)])
            .await;
    assert_eq!(ignored.status, 200, "{ignored:?}");
    assert_eq!(ignored.body, json!({"ignored": "header X-GitHub-Event is \"ping\", not \"push\""}));

    // A push to another branch: ignored by the payload filter.
    let mut dev: Value = serde_json::from_slice(&body).unwrap();
    dev["ref"] = json!("refs/heads/dev");
    let dev = serde_json::to_vec(&dev).unwrap();
    let dev_signature = sign_github(secret.as_bytes(), &dev);
    let other =
        deliver(&server, "github-push", &dev, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &dev_signature)])
            .await;
    assert_eq!(other.body["ignored"], "/ref is \"refs/heads/dev\", not \"refs/heads/main\"");

    // A payload without what the mapping needs: 400 naming the pointer.
    let mut bare: Value = serde_json::from_slice(&body).unwrap();
    bare.as_object_mut().unwrap().remove("head_commit");
    let bare = serde_json::to_vec(&bare).unwrap();
    let bare_signature = sign_github(secret.as_bytes(), &bare);
    let missing =
        deliver(&server, "github-push", &bare, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &bare_signature)])
            .await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert_eq!(
        missing.body["errors"][0],
        json!({"field": "params/release", "message": "the payload has no /head_commit/id"})
    );
    assert_eq!(deliver(&server, "nope", &body, &headers).await.status, 404);

    // The audit log has the delivery, as the hook, and the refused ones.
    let audit = server.request_as("GET", "/api/v1/audit?action=hook.deliver", Some(ROOT), None).await;
    let entries = audit.body["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["principal"] == "hook:github-push" && e["result"] == "ok" && e["object"] == "github-push")
    );
    assert!(
        entries.iter().any(|e| e["result"].as_str().unwrap().starts_with("ignored: header X-GitHub-Event")),
        "{entries:#?}"
    );
    let refused = server.request_as("GET", "/api/v1/audit?action=auth.refused", Some(ROOT), None).await;
    assert!(
        refused.body["entries"].as_array().unwrap().iter().any(|e| e["object"] == "POST /api/v1/hooks/github-push"),
        "{refused:?}"
    );
    let all = server.request_as("GET", "/api/v1/audit?limit=1000", Some(ROOT), None).await;
    let text = all.body.to_string();
    assert!(!text.contains(&secret), "the hook's secret is never in the audit log");
}

#[tokio::test]
async fn an_opal_signature_older_than_five_minutes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opal.toml");
    let secret = "another-secret-of-enough-length";
    std::fs::write(
        &path,
        format!(
            "[[hooks]]\nname = \"release\"\nsecret = \"{secret}\"\nsignature = \"opal\"\ntype = \"demo\"\n\
             target = \"/host\"\nparams = {{ release = \"/release\" }}\nstatic_params = {{ steps = 1, step_ms = 1 }}\n"
        ),
    )
    .unwrap();
    let hooks = ServerConfig::from_file(&path).unwrap().hooks;
    let server = TestServer::start_with(&dir.path().join("data"), |c| c.hooks = hooks).await;
    let body = br#"{"release":"v1.4.2","host":"web-3"}"#;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let old = sign_opal(secret.as_bytes(), now - 301, body);
    let stale = deliver(&server, "release", body, &[("X-Opal-Signature", &old)]).await;
    assert_eq!(stale.status, 401, "{stale:?}");
    let fresh = sign_opal(secret.as_bytes(), now, body);
    let started = deliver(&server, "release", body, &[("X-Opal-Signature", &fresh), ("X-Opal-Delivery", "r-1")]).await;
    assert_eq!(started.status, 202, "{started:?}");
    assert_eq!(
        (started.body["target"].as_str(), started.body["params"]["release"].as_str()),
        (Some("web-3"), Some("v1.4.2"))
    );
    let tampered =
        deliver(&server, "release", br#"{"release":"v6.6.6","host":"web-3"}"#, &[("X-Opal-Signature", &fresh)]).await;
    assert_eq!(tampered.status, 401);
}

#[tokio::test]
async fn the_audit_log_says_who_started_cancelled_and_was_refused_and_never_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), people).await;
    let start = json!({"type": "demo", "target": "srv-1", "params": {"steps": 200, "step_ms": 50}});
    let started = server.request_as("POST", "/api/v1/operations", Some(ANN), Some(&start)).await;
    assert_eq!(started.status, 202);
    let id = started.body["id"].as_str().unwrap().to_owned();
    let busy = server.request_as("POST", "/api/v1/operations", Some(ROOT), Some(&start)).await;
    assert_eq!(busy.status, 409);
    let viewer = server.request_as("POST", "/api/v1/operations", Some(VIC), Some(&start)).await;
    assert_eq!(viewer.status, 403);
    let nobody = server.request_as("GET", "/api/v1/operations", None, None).await;
    assert_eq!(nobody.status, 401);
    let forged =
        server.request_as("GET", "/api/v1/operations", Some("opal_forged_token_never_valid_0000000000"), None).await;
    assert_eq!(forged.status, 401);
    let cancel = server.request_as("POST", &format!("/api/v1/operations/{id}/cancel"), Some(ANN), None).await;
    assert_eq!(cancel.status, 202);
    assert_eq!(server.wait_terminal_as(&id, ANN).await["status"], "cancelled");
    let schedule =
        json!({"cron": "0 0 1 1 *", "type": "demo", "target": "srv-2", "params": {"steps": 1, "step_ms": 1}});
    let created = server.request_as("POST", "/api/v1/schedules", Some(ANN), Some(&schedule)).await;
    let sid = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(server.request_as("DELETE", &format!("/api/v1/schedules/{sid}"), Some(ANN), None).await.status, 204);
    assert_eq!(server.request_as("POST", "/api/v1/queue/pause", Some(ROOT), None).await.status, 200);
    assert_eq!(server.request_as("POST", "/api/v1/queue/resume", Some(ROOT), None).await.status, 200);

    // Only an admin reads it.
    let denied = server.request_as("GET", "/api/v1/audit", Some(VIC), None).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    let denied = server.request_as("GET", "/api/v1/audit", Some(ANN), None).await;
    assert_eq!(denied.status, 403);

    let log = server.request_as("GET", "/api/v1/audit?limit=1000", Some(ROOT), None).await;
    assert_eq!(log.status, 200, "{log:?}");
    let entries = log.body["entries"].as_array().unwrap();
    let find = |principal: &str, action: &str, object: &str| {
        entries.iter().find(|e| e["principal"] == principal && e["action"] == action && e["object"] == object).cloned()
    };
    let start_entry = find("user:ann", "operation.start", &id).expect("ann's start");
    assert_eq!((start_entry["result"].as_str(), start_entry["detail"].as_str()), (Some("ok"), Some("demo on srv-1")));
    assert!(start_entry["remote"].as_str().unwrap().starts_with("127.0.0.1:"), "{start_entry}");
    assert!(find("user:ann", "operation.cancel", &id).is_some(), "ann's cancel");
    let busy = entries.iter().find(|e| e["principal"] == "user:root" && e["action"] == "operation.start").unwrap();
    assert!(busy["result"].as_str().unwrap().starts_with("refused: "), "a refused start is recorded too: {busy}");
    let refused = find("user:vic", "auth.refused", "POST /api/v1/operations").expect("the viewer's refused start");
    assert_eq!(refused["result"], "refused: 403");
    let anonymous: Vec<&Value> = entries
        .iter()
        .filter(|e| e["principal"] == "unauthenticated" && e["object"] == "GET /api/v1/operations")
        .collect();
    assert_eq!(anonymous.len(), 2, "no token, and a forged one: {anonymous:?}");
    assert!(find("user:ann", "schedule.create", &sid).is_some());
    assert!(find("user:ann", "schedule.delete", &sid).is_some());
    assert!(
        find("user:root", "queue.pause", "queue").is_some() && find("user:root", "queue.resume", "queue").is_some()
    );
    assert!(
        find("user:vic", "auth.refused", "GET /api/v1/audit").is_some(),
        "reading it without the role is refused too"
    );
    // Newest first, and filters.
    let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    let mine =
        server.request_as("GET", "/api/v1/audit?principal=user:ann&action=operation.start", Some(ROOT), None).await;
    assert_eq!(mine.body["entries"].as_array().unwrap().len(), 1);
    let page = server.request_as("GET", "/api/v1/audit?limit=2", Some(ROOT), None).await;
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = server.request_as("GET", &format!("/api/v1/audit?limit=2&cursor={cursor}"), Some(ROOT), None).await;
    assert_eq!(next.body["entries"][0]["id"], entries[2]["id"]);
    let bad = server.request_as("GET", "/api/v1/audit?since=yesterday", Some(ROOT), None).await;
    assert_eq!(bad.status, 400);

    // No token anywhere in it.
    let text = log.body.to_string();
    for secret in [ANN, VIC, ROOT, "opal_forged_token_never_valid_0000000000"] {
        assert!(!text.contains(secret), "a token appears in the audit log");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_hook_is_rate_limited_and_its_bodies_capped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opal.toml");
    let secret = "a rate limited hook secret";
    std::fs::write(
        &path,
        format!(
            "[[hooks]]\nname = \"small\"\nsecret = \"{secret}\"\ntype = \"demo\"\ntarget = \"t\"\n\
             static_params = {{ steps = 1, step_ms = 1 }}\nrate_per_minute = 2\nmax_body_kib = 1\n"
        ),
    )
    .unwrap();
    let hooks = ServerConfig::from_file(&path).unwrap().hooks;
    let server = TestServer::start_with(&dir.path().join("data"), |c| c.hooks = hooks).await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    let signature = sign_github(secret.as_bytes(), big.as_bytes());
    let too_big = deliver(&server, "small", big.as_bytes(), &[("X-Hub-Signature-256", &signature)]).await;
    assert_eq!(too_big.status, 413, "{too_big:?}");
    let body = b"{}";
    let signature = sign_github(secret.as_bytes(), body);
    let first =
        deliver(&server, "small", body, &[("X-Hub-Signature-256", &signature), ("X-GitHub-Delivery", "a")]).await;
    assert_eq!(first.status, 202, "{first:?}");
    let third =
        deliver(&server, "small", body, &[("X-Hub-Signature-256", &signature), ("X-GitHub-Delivery", "b")]).await;
    assert_eq!(third.status, 429, "the oversized delivery spent one of the two: {third:?}");
    assert!(third.body["detail"].as_str().unwrap().contains("2 deliveries a minute"));
}
