//! Per-principal limits, the body limit, and the browser guards (Origin and
//! CORS): each one trips, says so clearly, and recovers.

use std::time::Duration;

use opal_host::ServerConfig;
use opal_host::auth::{AuthConfig, Role};
use opal_tests::{TestServer, WAIT, api_token, close_code, ws_open};
use serde_json::{Value, json};

const ANN: &str = "opal_ann_token_for_the_limits_tests_0000000000";
const BOB: &str = "opal_bob_token_for_the_limits_tests_0000000000";

fn limited(config: &mut ServerConfig) {
    let token = |name: &str, token: &str| api_token(name, token, Role::Operator, &["**"]);
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
    // Requests refused before the limit (a 400, a 413) spend nothing of it.
    for _ in 0..4 {
        let bad = server.request_as("POST", "/api/v1/operations", Some(ANN), Some(&json!({"type": "demo"}))).await;
        assert_eq!(bad.status, 400, "{bad:?}");
    }
    let big = json!({"type": "demo", "target": "t", "pad": "x".repeat(4096)});
    assert_eq!(server.request_as("POST", "/api/v1/operations", Some(ANN), Some(&big)).await.status, 413);
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

/// `METHOD url` with these `Host` and `Origin` headers (and a token, if any): status and body.
async fn from_page(method: &str, url: &str, host: &str, origin: Option<&str>, token: Option<&str>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method.clone(), url).header("host", host);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method == reqwest::Method::POST {
        // A target of its own each time: an accepted start must not make the next one a 409.
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let target = format!("page-{}", STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        request = request.header("content-type", "application/json").body(start(&target).to_string());
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    (status, serde_json::from_str(&reply.text().await.unwrap()).unwrap_or(Value::Null))
}

/// A WebSocket upgrade with these `Host` and `Origin` headers: `Ok` if it got its `hello`, else the status.
async fn ws_from_page(server: &TestServer, host: &str, origin: Option<&str>, token: Option<&str>) -> Result<(), u16> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("host", host)];
    headers.extend(origin.map(|o| ("origin", o)));
    headers.extend(bearer.as_deref().map(|b| ("authorization", b)));
    let stream = ws_open(&server.ws_url(), &headers).await?;
    opal_tests::WsClient::greeted(stream).await;
    Ok(())
}

#[tokio::test]
async fn a_dev_mode_server_answers_only_to_loopback_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let ops = format!("{}/api/v1/operations", server.base);
    // A DNS rebinding page: its own name in Host and Origin, both agreeing. And the same name
    // without Origin (a GET, or a script), and a request with no Host at all.
    let rebound = format!("evil.example:{port}");
    let page = format!("http://evil.example:{port}");
    for (method, origin) in [("POST", Some(page.as_str())), ("GET", Some(&page)), ("GET", None)] {
        let (status, body) = from_page(method, &ops, &rebound, origin, None).await;
        assert_eq!(status, 403, "{method} with Host {rebound} and Origin {origin:?}: {body}");
        assert_eq!(body["type"], "https://opal.dev/problems/host-not-allowed", "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("dev mode") && detail.contains("allowed_hosts"), "{detail}");
        assert_eq!(ws_from_page(&server, &rebound, origin, None).await, Err(403), "the upgrade too");
    }
    let (status, _) = from_page("GET", &format!("{}/", server.base), &rebound, None, None).await;
    assert_eq!(status, 403, "the dashboard too");
    assert_eq!(server.get("/api/v1/operations").await.body["operations"], json!([]), "nothing was started");
    // Loopback names, on any port, each as its own page.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}"), "localhost".into()]
    {
        let own = format!("http://{host}");
        let (status, body) = from_page("POST", &ops, &host, Some(&own), None).await;
        assert_eq!(status, 202, "Host {host}: {body}");
        assert_eq!(ws_from_page(&server, &host, Some(&own), None).await, Ok(()), "Host {host}");
        // A loopback name is no passport for another origin.
        assert_eq!(from_page("POST", &ops, &host, Some(&page), None).await.0, 403, "Host {host}");
    }
    server.stop().await;
}

#[tokio::test]
async fn with_credentials_a_foreign_host_is_served_to_tokens_but_is_no_origin() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |config| {
        limited(config);
        config.auth.allowed_hosts = vec!["opal.example.com".into()];
    })
    .await;
    let ops = format!("{}/api/v1/operations", server.base);
    // Behind a proxy that passes its public name on: a script with a token is served.
    assert_eq!(from_page("GET", &ops, "proxy.example.com", None, Some(ANN)).await.0, 200);
    assert_eq!(from_page("GET", &ops, "proxy.example.com", None, None).await.0, 401);
    assert_eq!(ws_from_page(&server, "proxy.example.com", None, Some(ANN)).await, Ok(()));
    // A browser page under that name is not this server's own page, unless the name is listed.
    let (status, body) =
        from_page("POST", &ops, "proxy.example.com", Some("https://proxy.example.com"), Some(ANN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("allowed_hosts"), "{body}");
    let page = Some("https://proxy.example.com");
    assert_eq!(ws_from_page(&server, "proxy.example.com", page, Some(ANN)).await, Err(403));
    let page = Some("https://opal.example.com");
    assert_eq!(from_page("POST", &ops, "opal.example.com", page, Some(ANN)).await.0, 202);
    assert_eq!(ws_from_page(&server, "opal.example.com", page, Some(ANN)).await, Ok(()));
    server.stop().await;
}

#[tokio::test]
async fn schedules_spend_starts_are_capped_and_name_their_creator() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |config| {
        limited(config);
        config.limits.max_schedules = 3;
    })
    .await;
    let schedule = |target: &str| json!({"cron": "0 3 * * *", "type": "demo", "target": target, "params": {"steps": 1, "step_ms": 0}});
    let create = |token: &'static str, target: String| {
        let server = &server;
        async move { server.request_as("POST", "/api/v1/schedules", Some(token), Some(&schedule(&target))).await }
    };
    // The start budget (a burst of 2) covers schedules too: 201, 201, then 429 within a few more.
    let mut replies = Vec::new();
    for i in 0..8 {
        let reply = create(ANN, format!("s-{i}")).await;
        let tripped = reply.status == 429;
        replies.push(reply);
        if tripped {
            break;
        }
    }
    assert_eq!(replies.iter().map(|r| r.status).collect::<Vec<_>>()[..2], [201, 201], "{replies:?}");
    let tripped = replies.last().unwrap();
    assert_eq!(tripped.status, 429, "{replies:?}");
    assert!(tripped.body["detail"].as_str().unwrap().contains("user:ann"), "{tripped:?}");
    assert!(tripped.retry_after.is_some(), "{tripped:?}");
    // The creator is recorded, and shown.
    let first = replies[0].body["id"].as_str().unwrap().to_owned();
    assert_eq!(replies[0].body["created_by"], "user:ann", "{:?}", replies[0]);
    let shown = server.request_as("GET", &format!("/api/v1/schedules/{first}"), Some(BOB), None).await;
    assert_eq!(shown.body["created_by"], "user:ann", "{shown:?}");
    // Ann's budget comes back.
    let mut i = 10;
    eventually("a schedule after the limit", async || {
        i += 1;
        create(ANN, format!("s-{i}")).await.status == 201
    })
    .await;
    // Three schedules is the most the server keeps: Bob, with budget to spare, gets 409 until one goes.
    let full = create(BOB, "b-1".into()).await;
    assert_eq!(full.status, 409, "{full:?}");
    assert!(full.body["detail"].as_str().unwrap().contains("max_schedules"), "{full:?}");
    let deleted = server.request_as("DELETE", &format!("/api/v1/schedules/{first}"), Some(ANN), None).await;
    assert_eq!(deleted.status, 204);
    let mine = create(BOB, "b-2".into()).await;
    assert_eq!((mine.status, mine.body["created_by"].as_str()), (201, Some("user:bob")), "{mine:?}");
    let list = server.request_as("GET", "/api/v1/schedules", Some(BOB), None).await.body;
    let mut creators: Vec<&str> =
        list["schedules"].as_array().unwrap().iter().map(|s| s["created_by"].as_str().unwrap()).collect();
    creators.sort_unstable();
    assert_eq!(creators, ["user:ann", "user:ann", "user:bob"], "{list}");
    server.stop().await;
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |config| {
        limited(config);
        config.auth.cors_origins.clear();
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/operations", server.base);
    let allow = |r: &reqwest::Response| r.headers().get("access-control-allow-origin").cloned();
    // The origin limited() would list, and the server's own page: neither gets a CORS answer.
    for origin in ["https://ops.example.com", server.base.as_str()] {
        let preflight = http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
            .await
            .unwrap();
        assert_eq!(allow(&preflight), None, "preflight from {origin}: {preflight:?}");
        assert!(preflight.headers().get("access-control-allow-methods").is_none(), "{preflight:?}");
        let get = http.get(&url).header("origin", origin).bearer_auth(ANN).send().await.unwrap();
        assert_eq!(allow(&get), None, "GET from {origin}: {get:?}");
    }
    server.stop().await;
}
