//! Native tests: the plugin through `opal_sdk::testing`, with canned HTTP
//! replies from the harness.

use opal_sdk::http::{ErrorKind, HttpError};
use opal_sdk::serde_json::{Value, json};
use opal_sdk::testing::{self, Harness, Reply};

use super::*;

const URL: &str = "http://app.internal:8080/health";

fn check(reply: Reply, params: Value) -> testing::Run {
    Harness::new().http(URL, reply).run::<HttpCheck>("app", params)
}

#[test]
fn passes_on_a_2xx_and_reports_what_it_saw() {
    let reply = Reply::ok("status: ready").header("content-type", "text/plain").chunks(4);
    let run = check(reply, json!({"url": URL, "body_contains": "ready", "headers": {"x-probe": "opal"}}));
    assert!(run.completed().message.starts_with("GET http://app.internal:8080/health: 200 in "), "{run}");
    assert!(run.completed().message.ends_with(" ms, 13 bytes"), "{run}");
    let details = run.details().unwrap();
    assert_eq!(details["status"], 200);
    assert_eq!(details["expected_status"], "200-399");
    assert_eq!(details["body_bytes"], 13);
    assert_eq!(details["body_matched"], true, "found across the 4-byte chunks: {details}");
    assert_eq!(details["content_type"], "text/plain");
    assert!(details["latency_ms"].is_number() && details["total_ms"].is_number(), "{details}");
    assert!(details.get("failed").is_none(), "{details}");
    assert_eq!(run.percents(), [0, 50, 100]);
    let sent = &run.http_requests()[0];
    assert_eq!(sent.headers, [("x-probe".to_owned(), "opal".to_owned())]);
    assert_eq!(sent.timeouts.connect, Duration::from_secs(10), "timeout_ms defaults to 10 s");
}

#[test]
fn a_redirect_passes_by_default_and_shows_where_it_points() {
    let run = check(Reply::status(302).header("location", "/login"), json!({"url": URL}));
    run.completed();
    assert_eq!(run.details().unwrap()["location"], "/login");
}

#[test]
fn a_wrong_status_names_what_was_expected_and_seen() {
    let run = check(Reply::status(503).body("down"), json!({"url": URL}));
    assert_eq!(run.failed(), format!("GET {URL}: expected status 200-399, got 503"));
    assert_eq!(run.details().unwrap()["failed"], json!(["expected status 200-399, got 503"]));
    let run = check(Reply::ok("fine"), json!({"url": URL, "expect_status": 204}));
    assert_eq!(run.failed(), format!("GET {URL}: expected status 204, got 200"));
    let run = check(Reply::status(404), json!({"url": URL, "expect_status": 404}));
    run.completed();
}

#[test]
fn a_missing_text_fails_with_the_body_size() {
    let run = check(Reply::ok("status: starting"), json!({"url": URL, "body_contains": "ready"}));
    assert_eq!(run.failed(), format!("GET {URL}: the body does not contain \"ready\" (all 16 bytes read)"));
    assert_eq!(run.details().unwrap()["body_matched"], false);
    let run = check(Reply::status(500).body("oops"), json!({"url": URL, "body_contains": "ready"}));
    assert_eq!(
        run.failed(),
        format!("GET {URL}: expected status 200-399, got 500; the body does not contain \"ready\" (all 4 bytes read)"),
        "every failed expectation is named"
    );
}

#[test]
fn request_failures_say_why() {
    let denied = HttpError::new(ErrorKind::Denied, "GET http://app.internal:8080/health: denied: ...");
    let run = check(Reply::error(denied), json!({"url": URL}));
    assert_eq!(run.failed(), "GET http://app.internal:8080/health: denied: ...");
    assert_eq!(run.details().unwrap()["error"], "GET http://app.internal:8080/health: denied: ...");
    let broken = Reply::ok(vec![b'x'; 1000]).chunks(100).fail_after(300, HttpError::new(ErrorKind::Connect, "reset"));
    let run = check(broken, json!({"url": URL, "body_contains": "y"}));
    assert_eq!(run.failed(), "reset");
    assert_eq!(run.details().unwrap()["status"], 200, "what was seen before the break is kept");
}

#[test]
fn a_cancel_while_reading_the_body_ends_as_cancelled() {
    let slow = Reply::ok(vec![b'x'; 10_000]).chunks(1000);
    // Check 1 is before sending, check 2 before the first chunk.
    let run = Harness::new().http(URL, slow).cancel_at_check(3).run::<HttpCheck>("app", json!({"url": URL}));
    run.assert_cancelled();
    assert_eq!(run.percents(), [0, 50]);
}

#[test]
fn bad_params_name_their_field() {
    let run = testing::run::<HttpCheck>(
        "app",
        json!({"url": "ftp://x/", "expect_status": 42, "body_contains": "", "headers": {"bad name": "v", "ok": "a\nb"},
               "timeout_ms": 1}),
    );
    let fields: Vec<&str> = run.invalid_params().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["url", "expect_status", "body_contains", "headers/bad name", "headers/ok", "timeout_ms"]);
    assert!(run.invalid_params()[0].message.contains("must start with http:// or https://"), "{run}");
    let run = testing::run::<HttpCheck>("app", json!({"url": URL, "expected": 200}));
    assert!(run.invalid_params()[0].message.contains("unknown field `expected`"), "{run}");
    assert_eq!(testing::schema::<HttpCheck>()["required"], json!(["url"]));
}

#[test]
fn a_url_the_harness_has_no_reply_for_fails_clearly() {
    let run = Harness::new().http("http://other/", Reply::ok("")).run::<HttpCheck>("app", json!({"url": URL}));
    assert_eq!(
        run.failed(),
        format!("GET {URL}: the test harness has no reply for this URL (it has: [\"http://other/\"])")
    );
}

#[test]
fn the_body_scan_finds_text_split_across_chunks() {
    let mut scan = BodyScan::new(Some("needle"));
    for chunk in ["hay ne", "e", "dle hay"] {
        scan.push(chunk.as_bytes());
    }
    assert!(scan.found);
    assert_eq!(scan.bytes, 14);
    let mut scan = BodyScan::new(Some("needle"));
    scan.push(b"needl");
    scan.push(b"x");
    assert!(!scan.found);
}
