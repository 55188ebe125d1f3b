//! `GET /metrics`: the real binary (one recorder per process), read with an
//! independent Prometheus text-format parser. Its counters match what the
//! test did, it is refused to a viewer, served to admins and the `metrics`
//! role, and on `--metrics-listen` without a token.

use std::collections::HashMap;
use std::time::Duration;

use opal_tests::serve::Serve;
use opal_tests::{WsClient, check_server_message};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ADMIN: &str = "opal_admin_token_for_metrics_tests_000000000";
const VIEWER: &str = "opal_viewer_token_for_metrics_tests_00000000";
const SCRAPER: &str = "opal_scraper_token_for_metrics_tests_0000000";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let entry = |name: &str, token: &str, role: &str, targets: &str| {
        format!(
            "[[auth.tokens]]\nname = {name:?}\nrole = {role:?}\n{targets}sha256 = {:?}\n\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        )
    };
    let text = [
        entry("root", ADMIN, "admin", ""),
        entry("ann", VIEWER, "viewer", "targets = [\"**\"]\n"),
        entry("prometheus", SCRAPER, "metrics", ""),
    ]
    .concat();
    let path = dir.join("opal.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn request(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The samples of one scrape, by metric name and labels.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format parses"))
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match &s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(*v),
                prometheus_parse::Value::Untyped(v) => Some(*v),
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map(|b| b.count),
                _ => None,
            })
    }

    fn names(&self) -> HashMap<&str, usize> {
        let mut names = HashMap::new();
        for s in &self.0.samples {
            *names.entry(s.metric.as_str()).or_default() += 1;
        }
        names
    }
}

#[tokio::test]
async fn metrics_count_what_happened_and_are_only_for_admins_and_scrapers() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Serve::start_with(&dir.path().join("data"), &config, &["--metrics-listen", "127.0.0.1:0"])
        .await
        .expect("opal serve starts");
    let base = server.base.clone();

    // A WebSocket client that follows everything, so frames are sent.
    let ws_url = format!("{}/api/v1/ws", base.replace("http://", "ws://"));
    let stream = opal_tests::ws_open(&ws_url, &[("authorization", &format!("Bearer {ADMIN}"))]).await.unwrap();
    let mut ws = WsClient::greeted(stream).await;
    ws.subscribe(&["operations"]).await;

    // N = 5 started: 3 complete and M = 2 fail.
    let mut ids = Vec::new();
    for (i, fail) in [None, None, None, Some(2), Some(1)].into_iter().enumerate() {
        let mut params = json!({"steps": 3, "step_ms": 20});
        if let Some(step) = fail {
            params["fail_at_step"] = json!(step);
        }
        let body = json!({"type": "demo", "target": format!("srv-{i}"), "params": params});
        let (status, text) =
            request(reqwest::Method::POST, &format!("{base}/api/v1/operations"), Some(ADMIN), Some(body)).await;
        assert_eq!(status, 202, "{text}");
        ids.push(serde_json::from_str::<Value>(&text).unwrap()["id"].as_str().unwrap().to_owned());
    }
    let mut ended = 0;
    while ended < ids.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.recv()).await.expect("events keep coming");
        check_server_message(&message);
        if matches!(message["event"].as_str(), Some("operation.completed" | "operation.failed")) {
            ended += 1;
        }
    }
    // A refused start is counted by the HTTP series, not as an operation.
    let bad = json!({"type": "demo", "target": "srv-x", "params": {"steps": "many"}});
    let (status, _) =
        request(reqwest::Method::POST, &format!("{base}/api/v1/operations"), Some(ADMIN), Some(bad)).await;
    assert_eq!(status, 400);

    let (status, text) = request(reqwest::Method::GET, &format!("{base}/metrics"), Some(ADMIN), None).await;
    assert_eq!(status, 200, "{text}");
    let scrape = Scrape::parse(&text);
    let demo = [("type", "demo")];
    assert_eq!(scrape.value("opal_operations_admitted_total", &demo), Some(5.0), "{text}");
    assert_eq!(scrape.value("opal_operations_started_total", &demo), Some(5.0), "{text}");
    let finished = |outcome| scrape.value("opal_operations_finished_total", &[("type", "demo"), ("outcome", outcome)]);
    assert_eq!(finished("completed"), Some(3.0), "{text}");
    assert_eq!(finished("failed"), Some(2.0), "{text}");
    assert_eq!(scrape.value("opal_operation_duration_seconds_count", &demo), Some(5.0), "{text}");
    let route = |status| {
        scrape.value(
            "opal_http_requests_total",
            &[("route", "/api/v1/operations"), ("method", "POST"), ("status", status)],
        )
    };
    assert_eq!(route("202"), Some(5.0), "{text}");
    assert_eq!(route("400"), Some(1.0), "{text}");
    assert_eq!(scrape.value("opal_queue_depth", &[]), Some(0.0));
    assert_eq!(scrape.value("opal_operations_running", &[]), Some(0.0));
    assert!(scrape.value("opal_ws_connections", &[]).unwrap() >= 1.0, "{text}");
    assert!(scrape.value("opal_ws_messages_sent_total", &[]).unwrap() >= 10.0, "{text}");
    assert!(scrape.value("opal_ws_bytes_sent_total", &[]).unwrap() > 1000.0, "{text}");
    assert!(scrape.value("opal_store_commit_seconds_count", &[]).unwrap() >= 5.0, "{text}");
    assert!(scrape.value("opal_store_batch_size_count", &[]).unwrap() >= 5.0, "{text}");
    assert!(scrape.value("opal_plugin_instantiate_seconds_count", &[]).unwrap() >= 5.0, "{text}");
    let loads = scrape.value("opal_plugin_compile_seconds_count", &[]).unwrap_or(0.0)
        + scrape.value("opal_plugin_cache_load_seconds_count", &[]).unwrap_or(0.0);
    assert!(loads >= 1.0, "the bundled plugins were compiled or loaded: {text}");
    // No per-target series by default: targets are unbounded.
    assert!(!text.contains("target=\"srv-0\""), "{text}");
    // The raw path of a request never becomes a label.
    let (status, _) =
        request(reqwest::Method::GET, &format!("{base}/api/v1/operations/{}", ids[0]), Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let (_, again) = request(reqwest::Method::GET, &format!("{base}/metrics"), Some(SCRAPER), None).await;
    assert!(again.contains("route=\"/api/v1/operations/{id}\""), "{again}");
    assert!(!again.contains(&ids[0]), "an id in a label: {again}");
    assert!(Scrape::parse(&again).names().len() >= 15, "{again}");

    // A viewer may not; no token may not; the metrics role may.
    let (status, text) = request(reqwest::Method::GET, &format!("{base}/metrics"), Some(VIEWER), None).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("admin or metrics role"), "{text}");
    let (status, _) = request(reqwest::Method::GET, &format!("{base}/metrics"), None, None).await;
    assert_eq!(status, 401);
    let (status, _) = request(reqwest::Method::GET, &format!("{base}/metrics"), Some(SCRAPER), None).await;
    assert_eq!(status, 200);
    // The scraper's token reads nothing else.
    let (status, _) = request(reqwest::Method::GET, &format!("{base}/api/v1/operations"), Some(SCRAPER), None).await;
    assert_eq!(status, 403);

    // Nor may it follow anything on the WebSocket.
    let stream = opal_tests::ws_open(&ws_url, &[("authorization", &format!("Bearer {SCRAPER}"))]).await.unwrap();
    let mut scraper = WsClient::greeted(stream).await;
    scraper.send(json!({"type": "subscribe", "topics": ["operations"], "id": "s1"})).await;
    let refused = scraper.recv().await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("forbidden")), "{refused}");

    // --metrics-listen serves /metrics without a token, and only that.
    let line =
        server.stdout().lines().find_map(|l| l.strip_prefix("metrics on ").map(str::to_owned)).expect("its address");
    let (status, text) = request(reqwest::Method::GET, &line, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(Scrape::parse(&text).value("opal_operations_admitted_total", &demo), Some(5.0));
    let (status, _) = request(reqwest::Method::GET, &line.replace("/metrics", "/api/v1/operations"), None, None).await;
    assert_eq!(status, 404);
}
