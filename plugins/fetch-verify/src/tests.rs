//! Native tests: canned HTTP replies from the harness, real files in a
//! temporary directory.

use opal_sdk::http::{ErrorKind, HttpError};
use opal_sdk::serde_json::{Value, json};
use opal_sdk::testing::{self, Harness, Reply, Run};
use sha2::{Digest, Sha256};

use super::*;

const URL: &str = "http://repo.internal/releases/app-1.2.zip";

fn artifact() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn params(dir: &Path, sha256: &str) -> Value {
    json!({"url": URL, "sha256": sha256, "dir": dir.to_str().unwrap()})
}

/// Everything in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn fetch(reply: Reply, params: Value) -> Run {
    Harness::new().http(URL, reply).run::<FetchVerify>("srv-1", params)
}

#[test]
fn downloads_verifies_and_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let body = artifact();
    let run = fetch(Reply::ok(body.clone()).chunks(30_000), params(dir.path(), &sha(&body).to_uppercase()));
    let outcome = run.completed();
    assert!(outcome.message.contains("app-1.2.zip verified: 293.0 KiB, sha256 "), "{run}");
    assert_eq!(listing(dir.path()), ["app-1.2.zip"], "only the file: no temporary left");
    assert_eq!(std::fs::read(dir.path().join("app-1.2.zip")).unwrap(), body);

    let percents = run.percents();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "monotone: {percents:?}");
    assert_eq!(percents.last(), Some(&100));
    assert_eq!(percents[1], 9, "a tenth of the bytes is a tenth of the download phase (0-95)");
    assert_eq!(run.progress()[1].1, "downloaded 29.3 KiB of 293.0 KiB");
    assert_eq!(run.phases(), ["download", "verify"]);
    let details = run.details().unwrap();
    assert_eq!(details["bytes"], 300_000);
    assert_eq!(details["total_bytes"], 300_000);
    assert_eq!(details["verified"], true);
    assert_eq!(details["actual_sha256"], sha(&body));
    assert!(run.all_details().len() < 20, "details follow the percentage, not every chunk");
    assert_eq!(run.http_requests()[0].timeouts.first_byte, Duration::from_secs(30));
}

#[test]
fn without_a_length_the_messages_count_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let body = artifact();
    let run = fetch(Reply::ok(body.clone()).chunks(50_000).without_length(), params(dir.path(), &sha(&body)));
    run.completed();
    let progress = run.progress();
    assert_eq!(progress[1..4], [(0, "downloaded 48.8 KiB"), (0, "downloaded 97.7 KiB"), (0, "downloaded 146.5 KiB")]);
    assert_eq!(progress[6], (0, "downloaded 293.0 KiB"));
    assert_eq!(run.percents().last(), Some(&100));
    assert_eq!(run.details().unwrap()["total_bytes"], Value::Null);
}

#[test]
fn a_mismatch_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app-1.2.zip"), "the previous version").unwrap();
    let wrong = "0".repeat(64);
    let run = fetch(Reply::ok(artifact()), params(dir.path(), &wrong));
    let actual = sha(&artifact());
    assert_eq!(
        run.failed(),
        format!("sha256 mismatch for {URL}: expected {wrong}, got {actual} (300000 bytes); nothing was kept")
    );
    assert_eq!(listing(dir.path()), ["app-1.2.zip"], "no temporary file");
    assert_eq!(std::fs::read_to_string(dir.path().join("app-1.2.zip")).unwrap(), "the previous version");
    assert_eq!(run.details().unwrap()["verified"], false);
}

#[test]
fn a_404_or_a_broken_body_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = fetch(Reply::status(404).body("not found"), params(dir.path(), &sha(b"")));
    assert_eq!(run.failed(), format!("GET {URL} answered 404 (expected 200)"));
    assert!(listing(dir.path()).is_empty());

    let broken = Reply::ok(artifact())
        .chunks(50_000)
        .fail_after(120_000, HttpError::new(ErrorKind::Connect, "connection reset"));
    let run = fetch(broken, params(dir.path(), &sha(&artifact())));
    assert_eq!(run.failed(), "connection reset");
    assert_eq!(run.details().unwrap()["bytes"], 120_000, "{run}");
    assert!(listing(dir.path()).is_empty(), "the partial download is gone: {:?}", listing(dir.path()));

    let denied = Reply::error(HttpError::new(ErrorKind::Denied, "GET ...: denied: ..."));
    let run = fetch(denied, params(dir.path(), &sha(b"")));
    assert_eq!(run.failed(), "GET ...: denied: ...");
    assert_eq!(run.details().unwrap()["error"], "GET ...: denied: ...");
}

#[test]
fn a_cancel_mid_download_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let body = artifact();
    let run = Harness::new()
        .http(URL, Reply::ok(body.clone()).chunks(10_000))
        .cancel_after_progress(5)
        .run::<FetchVerify>("srv-1", params(dir.path(), &sha(&body)));
    run.assert_cancelled();
    assert_eq!(run.progress().len(), 5, "it stopped at the next chunk: {run}");
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn a_directory_that_is_not_there_fails_clearly() {
    let run = fetch(Reply::ok("x"), json!({"url": URL, "sha256": sha(b"x"), "dir": "/no/such/dir"}));
    assert!(run.failed().starts_with("cannot write in /no/such/dir: "), "{run}");
    assert!(run.failed().ends_with("(it must be a directory granted read-write)"), "{run}");
}

#[test]
fn bad_params_name_their_field() {
    let run = testing::run::<FetchVerify>(
        "srv-1",
        json!({"url": "http://h/dir/", "sha256": "abc", "dir": "out", "timeout_ms": 5}),
    );
    let fields: Vec<&str> = run.invalid_params().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["sha256", "dir", "file_name", "timeout_ms"]);
    for bad in ["../etc/passwd", ".hidden", "a/b", ".."] {
        let run = testing::run::<FetchVerify>(
            "s",
            json!({"url": URL, "sha256": "0".repeat(64), "dir": "/o", "file_name": bad}),
        );
        assert_eq!(run.invalid_params()[0].field, "file_name", "{bad}: {run}");
    }
    let run = testing::run::<FetchVerify>("s", json!({"url": "nope", "sha256": "0".repeat(64), "dir": "/o"}));
    assert_eq!(run.invalid_params()[0].field, "url");
    let schema = testing::schema::<FetchVerify>();
    assert_eq!(schema["required"], json!(["url", "sha256", "dir"]));
    assert_eq!(schema["properties"]["sha256"]["pattern"], "^[0-9a-fA-F]{64}$");
}
