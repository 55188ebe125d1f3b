//! Per-principal limits, the body limit, and the browser guards (Origin and
//! CORS): each one trips, says so clearly, and recovers.

use std::time::Duration;

use opal_host::ServerConfig;
use opal_host::auth::{ApiToken, AuthConfig, Role, Scope, TokenHash};
use opal_tests::{TestServer, WAIT, close_code, ws_open};
use serde_json::{Value, json};

const ANN: &str = "opal_ann_token_for_the_limits_tests_0000000000";
const BOB: &str = "opal_bob_token_for_the_limits_tests_0000000000";

fn limited(config: &mut ServerConfig) {
    let token = |name: &str, token: &str| ApiToken {
        name: name.into(),
        hash: TokenHash::of(token),
        role: Role::Operator,
        scope: Scope::from_patterns(&["**"]).unwrap(),
    };
    config.auth = AuthConfig {
        tokens: vec![token("ann", ANN), token("bob", BOB)],
        cors_origins: vec!["https://ops.example.com".into()],
        ..AuthConfig::dev()
    };
    // A token back per second: slow enough that a few quick requests always
    // find the bucket empty, fast enough to recover within the test.
    config.limits.start_burst = 2;
    config.limits.starts_per_second = 1.0;
    config.limits.ws_message_burst = 3;
    config.limits.ws_messages_per_second = 1.0;
    config.limits.max_connections = 2;
    config.limits.max_subscriptions = 3;
    config.limits.max_body = 2048;
}

fn start(target: &str) -> Value {
    json!({"type": "demo", "target": target, "params": {"steps": 1, "step_ms": 0}})
}

/// Polls `attempt` until it returns true, within [`WAIT`].
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut attempt: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !attempt().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn starts_are_rate_limited_per_principal_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), limited).await;
    let post = |token: &'static str, target: String| {
        let server = &server;
        async move { server.request_as("POST", "/api/v1/operations", Some(token), Some(&start(&target))).await }
    };
    // The burst of 2, then 429 (within a few more, whatever the machine's speed).
    let mut statuses = Vec::new();
    for i in 0..8 {
        let reply = post(ANN, format!("a-{i}")).await;
        let tripped = reply.status == 429;
        statuses.push(reply);
        if tripped {
            break;
        }
    }
    assert_eq!(statuses.iter().map(|r| r.status).collect::<Vec<_>>()[..2], [202, 202]);
    let tripped = statuses.iter().find(|r| r.status == 429).expect("the burst of 2 is used up");
    assert_eq!(tripped.content_type, "application/problem+json");
    assert!(tripped.body["detail"].as_str().unwrap().contains("user:ann"), "{tripped:?}");
    assert_eq!(tripped.retry_after.as_deref(), Some("1"), "{tripped:?}");
    // Another principal has its own budget.
    assert_eq!(post(BOB, "b-0".into()).await.status, 202);
    // Ann's budget comes back.
    let mut i = 10;
    eventually("a start after the limit", async || {
        i += 1;
        post(ANN, format!("a-{i}")).await.status == 202
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn the_body_limit_is_a_413_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), limited).await;
    let big = json!({"type": "demo", "target": "t", "params": {"steps": 1, "step_ms": 0, "pad": "x".repeat(4096)}});
    let reply = server.request_as("POST", "/api/v1/operations", Some(ANN), Some(&big)).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.content_type, "application/problem+json");
    let reply = server.request_as("POST", "/api/v1/schedules", Some(ANN), Some(&big)).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(server.request_as("POST", "/api/v1/operations", Some(ANN), Some(&start("t"))).await.status, 202);
    server.stop().await;
}

#[tokio::test]
async fn websocket_limits_trip_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), limited).await;
    // Messages: the burst of 3 answered, then rate_limited (within a few more), then served again.
    let mut ann = server.ws_as(ANN).await;
    let mut replies = Vec::new();
    for _ in 0..8 {
        ann.send(json!({"type": "ping"})).await;
        let reply = ann.recv().await;
        let limited = reply["type"] == "error";
        replies.push(reply);
        if limited {
            break;
        }
    }
    assert!(replies[..3].iter().all(|r| r["type"] == "pong"), "{replies:?}");
    let limited = replies.last().unwrap();
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    assert!(limited["message"].as_str().unwrap().contains("retry in"), "{limited}");
    eventually("a ping after the limit", async || {
        // Slowly: each refused message counts as a bad one.
        tokio::time::sleep(Duration::from_millis(250)).await;
        ann.send(json!({"type": "ping"})).await;
        ann.recv().await["type"] == "pong"
    })
    .await;
    // Subscriptions: 3 topics per connection; the 4th is refused and nothing of it is subscribed.
    let mut bob = server.ws_as(BOB).await;
    bob.subscribe(&["operations", "system"]).await;
    bob.send(json!({"type": "subscribe", "topics": ["type:demo", "target:x"]})).await;
    let refused = bob.recv().await;
    assert_eq!(refused["code"], "too_many_subscriptions", "{refused}");
    bob.subscribe(&["type:demo"]).await;
    // Connections: 2 per principal; a third is closed with 4429; a slot frees when one closes.
    let second = server.ws_auth_message(ANN).await;
    let mut third = ws_open(&server.ws_url(), &[("authorization", &format!("Bearer {ANN}"))]).await.unwrap();
    assert_eq!(close_code(&mut third).await, Some(opal_host::ws::CLOSE_TOO_MANY_CONNECTIONS));
    drop(second);
    eventually("a connection after one closed", async || {
        let mut socket = ws_open(&server.ws_url(), &[("authorization", &format!("Bearer {ANN}"))]).await.unwrap();
        use futures_util::StreamExt;
        match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => text.contains("\"hello\""),
            _ => false,
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn other_origins_are_refused_and_listed_ones_get_cors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), limited).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/operations", server.base);
    // A page elsewhere cannot start anything, even with a token, nor open the socket.
    let evil = http.post(&url).header("origin", "https://evil.example").bearer_auth(ANN).body(start("t").to_string());
    let evil = evil.send().await.unwrap();
    assert_eq!(evil.status(), 403);
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let bearer = format!("Bearer {ANN}");
    let socket = ws_open(&server.ws_url(), &[("origin", "https://evil.example"), ("authorization", &bearer)]).await;
    assert_eq!(socket.err(), Some(403));
    // The server's own page, and a listed origin, may.
    let own = server.base.clone();
    let reply = http.get(&url).header("origin", &own).bearer_auth(ANN).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://ops.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{preflight:?}");
    let allowed =
        |r: &reqwest::Response| r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(allowed(&preflight).as_deref(), Some("https://ops.example.com"));
    let listed =
        http.post(&url).header("origin", "https://ops.example.com").bearer_auth(ANN).body(start("t").to_string());
    let listed = listed.send().await.unwrap();
    assert_eq!(listed.status(), 202);
    assert_eq!(allowed(&listed).as_deref(), Some("https://ops.example.com"));
    server.stop().await;
}
