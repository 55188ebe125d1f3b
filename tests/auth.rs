//! Auth end to end: dev mode's bind rule, every role against every endpoint,
//! target scoping over HTTP and on every WebSocket topic, expired and forged
//! credentials, and the WebSocket's ways in and out.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opal_host::ServerConfig;
use opal_host::auth::{AuthConfig, Role, sign_jwt};
use opal_tests::{TestServer, WsClient, api_token, close_code, ws_open};
use serde_json::{Value, json};

const SECRET: &[u8] = b"a test secret that is long enough for HS256";
const ADMIN: &str = "opal_admin_token_for_tests_only_0000000000000";
const OPERATOR: &str = "opal_operator_token_for_tests_only_000000000";
const VIEWER: &str = "opal_viewer_token_for_tests_only_00000000000";

/// Credentials: an admin, and an operator and a viewer scoped to `site-a/*`.
fn credentials(config: &mut ServerConfig) {
    config.auth = AuthConfig {
        tokens: vec![
            api_token("admin", ADMIN, Role::Admin, &[]),
            api_token("operator", OPERATOR, Role::Operator, &["site-a/*"]),
            api_token("viewer", VIEWER, Role::Viewer, &["site-a/*"]),
        ],
        jwt_secret: Some(SECRET.to_vec()),
        ..AuthConfig::dev()
    };
    // A webhook: its signature, not a token, is its credential.
    let hook: opal_host::hooks::HookSection = toml::from_str(
        "name = \"demo\"\nsecret = \"a hook secret for the role table\"\ntype = \"demo\"\ntarget = \"site-a/hook\"",
    )
    .unwrap();
    config.hooks = vec![hook.into_hook().unwrap()];
}

fn jwt(sub: &str, role: &str, targets: &[&str], exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    sign_jwt(&json!({"sub": sub, "role": role, "targets": targets, "exp": now + exp_in}), SECRET)
}

fn long_demo(target: &str) -> Value {
    json!({"type": "demo", "target": target, "params": {"steps": 600, "step_ms": 100}})
}

async fn start_as(server: &TestServer, token: &str, body: &Value) -> String {
    let reply = server.request_as("POST", "/api/v1/operations", Some(token), Some(body)).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn dev_mode_refuses_to_listen_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        ServerConfig { listen: "0.0.0.0:0".parse().unwrap(), data_dir: dir.path().into(), ..ServerConfig::default() };
    let err = opal_host::start(config).await.err().expect("no server without credentials on 0.0.0.0").to_string();
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without credentials"), "{err}");
    assert!(err.contains("opal token new"), "the message says what to do: {err}");
}

fn schedule_body(target: &str) -> Value {
    json!({"cron": "0 3 * * *", "type": "demo", "target": target, "params": {"steps": 1, "step_ms": 0}})
}

fn start_body(target: &str) -> Option<Value> {
    Some(json!({"type": "demo", "target": target, "params": {"steps": 1, "step_ms": 0}}))
}

/// Method, path, body, and the statuses allowed for no token, a bad token,
/// the viewer, the operator and the admin, in that order.
type Row = (&'static str, &'static str, Option<Value>, [&'static [u16]; 5]);

/// The role × endpoint table. `{a}` is a running operation on `site-a/1`,
/// `{b}` one on `site-b/1`, `{sa}` and `{sb}` schedules on those targets.
/// `the_role_table_covers_every_documented_endpoint` checks that it has a
/// row for every method and path of the OpenAPI document.
fn endpoint_table() -> Vec<Row> {
    vec![
        ("GET", "/healthz", None, [&[200], &[200], &[200], &[200], &[200]]),
        ("GET", "/readyz", None, [&[200], &[200], &[200], &[200], &[200]]),
        ("GET", "/api/v1/openapi.json", None, [&[200], &[200], &[200], &[200], &[200]]),
        ("GET", "/api/v1/status", None, [&[401], &[401], &[200], &[200], &[200]]),
        // Admins and the metrics role only: a viewer's scope is some targets, these span all.
        ("GET", "/metrics", None, [&[401], &[401], &[403], &[403], &[200]]),
        ("GET", "/api/v1/plugins", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/plugins/demo", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/operations", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/operations/{a}", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/operations/{b}", None, [&[401], &[401], &[404], &[404], &[200]]),
        ("GET", "/api/v1/operations/{a}/events", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/operations/{b}/events", None, [&[401], &[401], &[404], &[404], &[200]]),
        ("POST", "/api/v1/operations", start_body("site-a/new-{role}"), [&[401], &[401], &[403], &[202], &[202]]),
        ("POST", "/api/v1/operations", start_body("site-b/new-{role}"), [&[401], &[401], &[403], &[403], &[202]]),
        ("GET", "/api/v1/schedules", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/schedules/{sa}", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/schedules/{sb}", None, [&[401], &[401], &[404], &[404], &[200]]),
        ("POST", "/api/v1/schedules", Some(schedule_body("site-a/s-{role}")), [&[401], &[401], &[403], &[201], &[201]]),
        ("POST", "/api/v1/schedules", Some(schedule_body("site-b/s-{role}")), [&[401], &[401], &[403], &[403], &[201]]),
        ("DELETE", "/api/v1/schedules/{sb}", None, [&[401], &[401], &[403], &[404], &[204]]),
        ("DELETE", "/api/v1/schedules/{sa}", None, [&[401], &[401], &[403], &[204], &[404]]),
        ("GET", "/api/v1/audit", None, [&[401], &[401], &[403], &[403], &[200]]),
        ("GET", "/api/v1/notifications", None, [&[401], &[401], &[403], &[403], &[200]]),
        ("GET", "/api/v1/operations/{a}/notifications", None, [&[401], &[401], &[200], &[200], &[200]]),
        ("GET", "/api/v1/operations/{b}/notifications", None, [&[401], &[401], &[404], &[404], &[200]]),
        // Unsigned: refused whatever the token.
        ("POST", "/api/v1/hooks/demo", None, [&[401], &[401], &[401], &[401], &[401]]),
        // Neither is a workflow run waiting at a gate: 409 for whoever may see it.
        ("POST", "/api/v1/operations/{a}/approve", None, [&[401], &[401], &[409], &[409], &[409]]),
        ("POST", "/api/v1/operations/{b}/approve", None, [&[401], &[401], &[404], &[404], &[409]]),
        ("POST", "/api/v1/operations/{a}/reject", None, [&[401], &[401], &[409], &[409], &[409]]),
        ("POST", "/api/v1/operations/{b}/reject", None, [&[401], &[401], &[404], &[404], &[409]]),
        ("POST", "/api/v1/queue/pause", None, [&[401], &[401], &[403], &[403], &[200]]),
        ("POST", "/api/v1/queue/resume", None, [&[401], &[401], &[403], &[403], &[200]]),
        ("POST", "/api/v1/operations/{b}/cancel", None, [&[401], &[401], &[403], &[404], &[202]]),
        // The operator's cancel may already have ended it by the admin's turn.
        ("POST", "/api/v1/operations/{a}/cancel", None, [&[401], &[401], &[403], &[202], &[202, 409]]),
    ]
}

/// Every row of [`endpoint_table`], as every caller, in the table's order
/// (requests are made in that order too). An expired JWT gets what no token
/// gets.
#[tokio::test]
async fn every_role_against_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), credentials).await;
    let a = start_as(&server, ADMIN, &long_demo("site-a/1")).await;
    let b = start_as(&server, ADMIN, &long_demo("site-b/1")).await;
    let mut schedules = Vec::new();
    for target in ["site-a/s", "site-b/s"] {
        let reply = server.request_as("POST", "/api/v1/schedules", Some(ADMIN), Some(&schedule_body(target))).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        schedules.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let table = endpoint_table();
    let expired = jwt("root", "admin", &[], -10);
    // Each caller, and the column of the table it is held to.
    let callers: [(&str, Option<&str>, usize); 6] = [
        ("none", None, 0),
        ("forged", Some("opal_not_a_token"), 1),
        ("expired", Some(expired.as_str()), 0),
        ("viewer", Some(VIEWER), 2),
        ("operator", Some(OPERATOR), 3),
        ("admin", Some(ADMIN), 4),
    ];
    for (method, path, body, expected) in &table {
        for (role, token, column) in &callers {
            let allowed = expected[*column];
            let path = path
                .replace("{a}", &a)
                .replace("{b}", &b)
                .replace("{sa}", &schedules[0])
                .replace("{sb}", &schedules[1]);
            let body = body.as_ref().map(|b| serde_json::from_str(&b.to_string().replace("{role}", role)).unwrap());
            let reply = server.request_as(method, &path, *token, body.as_ref()).await;
            assert!(allowed.contains(&reply.status), "{method} {path} as {role}: expected {allowed:?}, got {reply:?}");
            if reply.status >= 400 && *method != "DELETE" {
                assert_eq!(reply.content_type, "application/problem+json", "{method} {path} as {role}");
            }
            if reply.status == 401 {
                assert!(reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{reply:?}");
            }
        }
    }
    // Audit: who started and who cancelled.
    let op = server.request_as("GET", &format!("/api/v1/operations/{a}"), Some(ADMIN), None).await.body;
    assert_eq!(op["created_by"], "user:admin");
    let mine = server.request_as("GET", "/api/v1/operations?target=site-a/new-operator", Some(ADMIN), None).await;
    assert_eq!(mine.body["operations"][0]["created_by"], "user:operator", "{mine:?}");
    let ended = server.wait_terminal_as(&a, ADMIN).await;
    assert_eq!((ended["status"].as_str(), ended["cancelled_by"].as_str()), (Some("cancelled"), Some("user:operator")));
    server.stop().await;
}

#[tokio::test]
async fn expired_forged_and_foreign_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), credentials).await;
    let good = jwt("ann", "viewer", &["site-a/*"], 3600);
    assert_eq!(server.request_as("GET", "/api/v1/operations", Some(&good), None).await.status, 200);
    let expired = jwt("ann", "viewer", &["site-a/*"], -10);
    let other_secret = sign_jwt(
        &json!({"sub": "ann", "role": "admin", "exp": 4_000_000_000u64}),
        b"not the server's secret, also 32+ bytes",
    );
    let (head, rest) = good.split_once('.').unwrap();
    let sig = rest.rsplit('.').next().unwrap();
    let elevated = format!("{head}.{}.{sig}", b64(&json!({"sub": "ann", "role": "admin", "exp": 4_000_000_000u64})));
    let none_alg = format!(
        "{}.{}.",
        b64(&json!({"alg": "none"})),
        b64(&json!({"sub": "ann", "role": "admin", "exp": 4_000_000_000u64}))
    );
    for (token, words) in [
        (expired.as_str(), "expired"),
        (other_secret.as_str(), "signature"),
        (elevated.as_str(), "signature"),
        (none_alg.as_str(), "only HS256"),
        ("opal_unknown", "unknown token"),
    ] {
        let reply = server.request_as("GET", "/api/v1/operations", Some(token), None).await;
        assert_eq!(reply.status, 401, "{token}: {reply:?}");
        assert!(reply.body["detail"].as_str().unwrap().contains(words), "{token}: {reply:?}");
        assert_eq!(ws_open(&server.ws_url(), &[("authorization", &format!("Bearer {token}"))]).await.err(), Some(401));
        let mut socket = ws_open(&server.ws_url(), &[]).await.unwrap();
        send_json(&mut socket, &json!({"type": "auth", "token": token})).await;
        assert_eq!(close_code(&mut socket).await, Some(opal_host::ws::CLOSE_UNAUTHENTICATED), "{token}");
    }
    server.stop().await;
}

fn b64(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn send_json(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    value: &Value,
) {
    use futures_util::SinkExt;
    socket.send(tokio_tungstenite::tungstenite::Message::Text(value.to_string().into())).await.unwrap();
}

#[tokio::test]
async fn a_websocket_authenticates_by_header_or_first_message_and_closes_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |config| {
        credentials(config);
        config.auth.ws_auth_timeout = Duration::from_millis(1000);
    })
    .await;
    // By header, and by first message.
    let mut by_header = server.ws_as(VIEWER).await;
    by_header.subscribe(&["operations"]).await;
    let mut by_message = server.ws_auth_message(OPERATOR).await;
    by_message.subscribe(&["target:site-a/x"]).await;
    // Nothing sent before the deadline, or something else first: closed, 4401.
    let mut silent = ws_open(&server.ws_url(), &[]).await.unwrap();
    assert_eq!(close_code(&mut silent).await, Some(opal_host::ws::CLOSE_UNAUTHENTICATED));
    let mut rude = ws_open(&server.ws_url(), &[]).await.unwrap();
    send_json(&mut rude, &json!({"type": "subscribe", "topics": ["operations"]})).await;
    assert_eq!(close_code(&mut rude).await, Some(opal_host::ws::CLOSE_UNAUTHENTICATED));
    // A JWT that expires in two or three seconds: the socket is closed then, with 4419.
    let short = jwt("ann", "viewer", &["site-a/*"], 3);
    let mut expiring = server.ws_as(&short).await;
    expiring.subscribe(&["operations"]).await;
    assert_eq!(close_code(expiring.stream_mut()).await, Some(opal_host::ws::CLOSE_TOKEN_EXPIRED));
    // The other sockets are still served.
    by_header.send(json!({"type": "ping"})).await;
    assert_eq!(by_header.recv().await["type"], "pong");
    // A second auth message is a bad message, not a re-login.
    by_message.send(json!({"type": "auth", "token": ADMIN})).await;
    assert_eq!(by_message.recv().await["code"], "bad_message");
    server.stop().await;
}

/// Every message a client received that mentions site-b in any way (but
/// the name of a topic it asked for itself).
fn leaks(messages: &[Value], site_b_ids: &[String]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| {
            let mut m = (*m).clone();
            if let Some(fields) = m.as_object_mut() {
                fields.remove("topic");
                fields.remove("topics");
            }
            let text = m.to_string();
            text.contains("site-b") || site_b_ids.iter().any(|id| text.contains(id.as_str()))
        })
        .cloned()
        .collect()
}

/// Reads messages until `id`'s terminal event has arrived; returns them all.
async fn read_until_terminal(client: &mut WsClient, id: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = client.recv().await;
        let done = message["type"] == "event"
            && message["operation"]["id"] == id
            && matches!(
                message["event"].as_str(),
                Some("operation.completed" | "operation.failed" | "operation.cancelled")
            );
        seen.push(message);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_viewer_scoped_to_site_a_never_hears_of_site_b() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), credentials).await;
    let quick = |target: &str| json!({"type": "demo", "target": target, "params": {"steps": 4, "step_ms": 5}});
    let mut site_b = Vec::new();
    // Before the viewer arrives: history on both sites.
    site_b.push(start_as(&server, ADMIN, &quick("site-b/x")).await);
    let early_a = start_as(&server, ADMIN, &quick("site-a/x")).await;
    server.wait_terminal_as(&site_b[0], ADMIN).await;
    server.wait_terminal_as(&early_a, ADMIN).await;
    // A running site-b operation, for op:<id> of something live.
    let live_b = start_as(&server, ADMIN, &long_demo("site-b/live")).await;
    site_b.push(live_b.clone());

    let mut viewer = server.ws_as(VIEWER).await;
    let topics =
        ["operations", "type:demo", "target:site-a/x", "system", &format!("op:{live_b}"), &format!("op:{}", site_b[0])];
    let snapshots = viewer.subscribe(&topics).await;
    let seen_op_b = &snapshots[4]["operations"];
    assert_eq!(seen_op_b, &json!([]), "an invisible operation looks like a missing one");
    // Asking for site-b's target topic is refused, by name.
    viewer.send(json!({"type": "subscribe", "topics": ["target:site-b/x"]})).await;
    let refusal = viewer.recv().await;
    assert_eq!(refusal["code"], "forbidden", "{refusal}");
    // The viewer's second socket, with a resume from seq 0: a replay.
    let mut resumer = server.ws_auth_message(VIEWER).await;
    resumer
        .send(json!({"type": "subscribe", "topics": ["operations", "type:demo", format!("op:{live_b}")], "since": 0}))
        .await;

    // A mixed run: both sites, progress, logs, failures, cancels.
    let mut site_a = Vec::new();
    for i in 0..3 {
        site_a.push(start_as(&server, OPERATOR, &quick(&format!("site-a/{i}"))).await);
        site_b.push(start_as(&server, ADMIN, &quick(&format!("site-b/{i}"))).await);
    }
    let failing =
        json!({"type": "demo", "target": "site-b/fail", "params": {"steps": 3, "step_ms": 5, "fail_at_step": 2}});
    site_b.push(start_as(&server, ADMIN, &failing).await);
    let cancelled = server.request_as("POST", &format!("/api/v1/operations/{live_b}/cancel"), Some(ADMIN), None).await;
    assert_eq!(cancelled.status, 202);
    for id in site_a.iter().chain(&site_b) {
        server.wait_terminal_as(id, ADMIN).await;
    }
    // The last event of the run, on site-a: everything before it has been delivered.
    let last = start_as(&server, OPERATOR, &quick("site-a/x")).await;
    let mut messages = snapshots.clone();
    messages.extend(read_until_terminal(&mut viewer, &last).await);
    let replayed = read_until_terminal(&mut resumer, &last).await;
    assert!(messages.iter().any(|m| m["operation"]["id"] == site_a[0].as_str()), "the viewer sees site-a");
    assert!(replayed.iter().any(|m| m["operation"]["id"] == early_a.as_str()), "and replays its history");
    assert_eq!(leaks(&messages, &site_b), Vec::<Value>::new(), "live");
    assert_eq!(leaks(&replayed, &site_b), Vec::<Value>::new(), "replayed");
    // HTTP agrees: lists are filtered, a target filter outside the scope is empty.
    let list = server.request_as("GET", "/api/v1/operations?limit=500", Some(VIEWER), None).await.body;
    assert_eq!(leaks(std::slice::from_ref(&list), &site_b), Vec::<Value>::new());
    assert_eq!(list["operations"].as_array().unwrap().len(), site_a.len() + 2);
    let filtered = server.request_as("GET", "/api/v1/operations?target=site-b/x", Some(VIEWER), None).await.body;
    assert_eq!(filtered["operations"], json!([]));
    server.stop().await;
}

/// What a subscription to one topic gives a principal.
#[derive(Debug, PartialEq)]
enum Sees {
    /// A snapshot holding these operation ids (sorted).
    Snapshot(Vec<String>),
    /// An error message with this code.
    Refused(&'static str),
}

async fn subscribe_one(client: &mut WsClient, topic: &str) -> Sees {
    client.send(json!({"type": "subscribe", "topics": [topic]})).await;
    let reply = client.recv().await;
    match reply["type"].as_str() {
        Some("snapshot") => {
            let mut ids: Vec<String> = reply["operations"]
                .as_array()
                .map(|ops| ops.iter().map(|op| op["id"].as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            ids.sort();
            Sees::Snapshot(ids)
        }
        Some("error") if reply["code"] == "forbidden" => Sees::Refused("forbidden"),
        _ => panic!("{topic}: unexpected {reply}"),
    }
}

#[tokio::test]
async fn every_role_against_every_kind_of_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), credentials).await;
    let a = start_as(&server, ADMIN, &long_demo("site-a/x")).await;
    let b = start_as(&server, ADMIN, &long_demo("site-b/x")).await;
    let both = {
        let mut ids = vec![a.clone(), b.clone()];
        ids.sort();
        ids
    };
    let only_a = vec![a.clone()];
    let jwt_viewer = jwt("ann", "viewer", &["site-a/*"], 600);
    let jwt_admin = jwt("root", "admin", &[], 600);
    let scoped = |who| {
        [
            ("operations", Sees::Snapshot(only_a.clone())),
            ("type:demo", Sees::Snapshot(only_a.clone())),
            ("target:site-a/x", Sees::Snapshot(only_a.clone())),
            ("target:site-b/x", Sees::Refused("forbidden")),
            ("op:A", Sees::Snapshot(only_a.clone())),
            ("op:B", Sees::Snapshot(Vec::new())), // invisible looks like missing
            ("system", Sees::Snapshot(Vec::new())),
        ]
        .map(|(topic, sees)| (who, topic, sees))
    };
    let everything = |who| {
        [
            ("operations", Sees::Snapshot(both.clone())),
            ("type:demo", Sees::Snapshot(both.clone())),
            ("target:site-a/x", Sees::Snapshot(only_a.clone())),
            ("target:site-b/x", Sees::Snapshot(vec![b.clone()])),
            ("op:A", Sees::Snapshot(only_a.clone())),
            ("op:B", Sees::Snapshot(vec![b.clone()])),
            ("system", Sees::Snapshot(Vec::new())),
        ]
        .map(|(topic, sees)| (who, topic, sees))
    };
    let table: Vec<(&str, &str, Sees)> = [
        scoped(VIEWER),
        scoped(OPERATOR),
        scoped(jwt_viewer.as_str()),
        everything(ADMIN),
        everything(jwt_admin.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut failures = Vec::new();
    for (who, topic, expected) in table {
        let topic = topic.replace("op:A", &format!("op:{a}")).replace("op:B", &format!("op:{b}"));
        // A fresh socket per row, authenticated both ways in turn.
        let mut client = if topic.len() % 2 == 0 { server.ws_as(who).await } else { server.ws_auth_message(who).await };
        let got = subscribe_one(&mut client, &topic).await;
        if got != expected {
            failures.push(format!("{}… on {topic}: expected {expected:?}, got {got:?}", &who[..12]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    server.stop().await;
}

/// Routes the router serves that the OpenAPI document leaves out on
/// purpose: the WebSocket (described in docs/protocol.md and its schemas)
/// and the dashboard's page and assets.
const UNDOCUMENTED: [(&str, &str); 3] = [("GET", "/api/v1/ws"), ("GET", "/"), ("GET", "/assets/{version}/{file}")];

/// Every (method, path) the OpenAPI document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&method.as_str()) {
                pairs.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    pairs
}

/// The documented path template `path` falls under: equal segments, or any
/// segment where the template has a `{parameter}`.
fn template_of<'d>(path: &str, documented: &'d BTreeSet<(String, String)>, method: &str) -> Option<&'d str> {
    let segments: Vec<&str> = path.split('/').collect();
    documented.iter().filter(|(m, _)| m == method).map(|(_, t)| t.as_str()).find(|template| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
    })
}

/// Every `.route("path", get(..).post(..))` in the router's source: axum
/// cannot list a router's routes, so the test reads them where they are
/// declared (the API's router and the dashboard's, which it merges).
fn routed() -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for file in ["../host/src/api/mod.rs", "../host/src/dashboard/mod.rs"] {
        let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        for (at, _) in text.match_indices(".route(\"") {
            let rest = &text[at + ".route(\"".len()..];
            let path = &rest[..rest.find('"').unwrap()];
            // The call's arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += i32::from(c == '(') - i32::from(c == ')');
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let call = &rest[..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let found = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !call[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                });
                if found {
                    pairs.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    pairs
}

/// The role table cannot fall behind the API: it has a row for every method
/// and path of the served OpenAPI document; every route of the router is in
/// the document or in [`UNDOCUMENTED`]; and every documented endpoint is
/// really served (answers neither 404 nor 405 for its method).
#[tokio::test]
async fn the_role_table_covers_every_documented_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), credentials).await;
    let doc = server.get("/api/v1/openapi.json").await.body;
    let documented = documented(&doc);
    assert!(documented.contains(&("POST".into(), "/api/v1/operations".into())), "the document reads: {documented:?}");

    let mut covered = BTreeSet::new();
    for (method, path, _, _) in endpoint_table() {
        let template = template_of(path, &documented, method)
            .unwrap_or_else(|| panic!("the table tests {method} {path}, which the OpenAPI document does not describe"));
        covered.insert((method.to_owned(), template.to_owned()));
    }
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(missing.is_empty(), "documented endpoints without a row in the role table: {missing:?}");

    let routed = routed();
    assert!(routed.contains(&("DELETE".into(), "/api/v1/schedules/{id}".into())), "the source reads: {routed:?}");
    let undocumented: BTreeSet<(String, String)> =
        UNDOCUMENTED.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let unknown: Vec<_> = routed.difference(&documented).filter(|r| !undocumented.contains(*r)).collect();
    assert!(unknown.is_empty(), "routes neither in the OpenAPI document nor in UNDOCUMENTED: {unknown:?}");
    let stale: Vec<_> = undocumented.iter().filter(|r| !routed.contains(*r) || documented.contains(*r)).collect();
    assert!(stale.is_empty(), "UNDOCUMENTED lists what is not routed, or is documented: {stale:?}");
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(unrouted.is_empty(), "documented but not in the router: {unrouted:?}");

    // Every documented endpoint, with real ids, as the admin: served, whatever else it says.
    let op = start_as(&server, ADMIN, &long_demo("site-a/served")).await;
    let mut answered = Vec::new();
    for (method, template) in &documented {
        let schedule = if template.starts_with("/api/v1/schedules/") {
            let reply = server.request_as("POST", "/api/v1/schedules", Some(ADMIN), Some(&schedule_body("x"))).await;
            reply.body["id"].as_str().unwrap().to_owned()
        } else {
            String::new()
        };
        let path = template
            .replace("{name}", "demo")
            .replace("{id}", if template.starts_with("/api/v1/schedules/") { &schedule } else { &op });
        assert!(!path.contains('{'), "a parameter this test does not fill: {template}");
        let reply = server.request_as(method, &path, Some(ADMIN), None).await;
        assert!(![404, 405].contains(&reply.status), "{method} {path} is documented but not served: {reply:?}");
        answered.push(format!("{method} {path} {}", reply.status));
    }
    // And the check can fail: the router does answer 404 and 405.
    assert_eq!(server.request_as("GET", "/api/v1/nothing-here", Some(ADMIN), None).await.status, 404);
    assert_eq!(server.request_as("PUT", "/api/v1/status", Some(ADMIN), None).await.status, 405);
    // The undocumented routes are served too (the WebSocket refuses a plain GET with 400).
    let page = reqwest::get(format!("{}/", server.base)).await.unwrap().text().await.unwrap();
    let asset = &page[page.find("/assets/").expect("the page loads its assets")..];
    let asset = &asset[..asset.find(['"', '\'']).unwrap()];
    for (method, path) in UNDOCUMENTED {
        let path = if path.starts_with("/assets/") { asset } else { path };
        let status = server.request_as(method, path, None, None).await.status;
        assert!(![404, 405].contains(&status), "{method} {path}: {status}");
    }
    println!("{answered:#?}");
    server.stop().await;
}
