//! Native tests: the plugin through `opal_sdk::testing`, against real
//! loopback listeners (std::net is the OS here).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;

use opal_sdk::serde_json::json;
use opal_sdk::testing::{self, Harness};

use super::*;

/// A listener that answers one connection with `greeting`, then closes its
/// side if `close`, and returns what the client sent back.
fn server_then(greeting: &'static [u8], close: bool) -> (u16, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket.write_all(greeting).unwrap();
        if close {
            socket.shutdown(std::net::Shutdown::Write).unwrap();
        }
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let _ = socket.read_to_end(&mut got);
        got
    });
    (port, handle)
}

/// A listener that sends `greeting` and keeps the connection open.
fn server(greeting: &'static [u8]) -> (u16, JoinHandle<Vec<u8>>) {
    server_then(greeting, false)
}

fn params(port: u16, timeout_ms: u64) -> opal_sdk::serde_json::Value {
    json!({"host": "127.0.0.1", "port": port, "timeout_ms": timeout_ms})
}

#[test]
fn reports_the_server_software_protocol_and_latency() {
    let (port, peer) = server(b"Authorised use only\r\nSSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n");
    let run = testing::run::<SshCheck>("conn-7", params(port, 5000));
    let outcome = run.completed();
    assert!(outcome.message.starts_with(&format!("OpenSSH_9.6p1 (SSH 2.0) answers on 127.0.0.1:{port}")), "{run}");
    let details = run.details().unwrap();
    assert_eq!(details["software_version"], "OpenSSH_9.6p1");
    assert_eq!(details["protocol_version"], "2.0");
    assert_eq!(details["comments"], "Ubuntu-3ubuntu13");
    assert_eq!(details["banner"], "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13");
    assert_eq!(details["address"], format!("127.0.0.1:{port}"));
    assert!(details["latency_ms"].as_f64().unwrap() >= 0.0, "{details}");
    assert!(details.get("error").is_none(), "{details}");
    assert_eq!(run.percents(), [0, 10, 40, 100]);
    assert!(run.logs().contains(&(Level::Debug, "before its identification the server said: Authorised use only")));
    let sent = peer.join().unwrap();
    assert!(sent.starts_with(b"SSH-2.0-OpalSshCheck_"), "the check says who it is: {sent:?}");
}

#[test]
fn a_closed_port_is_connection_refused() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // bound, then closed
    let run = testing::run::<SshCheck>("conn-7", params(port, 5000));
    assert_eq!(run.failed(), format!("connection refused by 127.0.0.1:{port}: nothing listens there"));
    let details = run.details().unwrap();
    assert_eq!(details["stage"], "connect");
    assert_eq!(details["address"], format!("127.0.0.1:{port}"));
}

#[test]
fn a_silent_port_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The connection completes in the backlog; nobody ever writes.
    let run = testing::run::<SshCheck>("conn-7", params(port, 300));
    assert_eq!(
        run.failed(),
        format!("127.0.0.1:{port} accepted the connection but sent no SSH identification within 300ms")
    );
    assert_eq!(run.details().unwrap()["stage"], "banner");
    assert!(run.details().unwrap()["latency_ms"].is_number(), "it did connect: {run}");
    drop(listener);
}

#[test]
fn a_cancel_ends_the_wait_for_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Check 2 is the first while waiting for the identification; check 3
    // comes after a slice of silence.
    let run = Harness::new().cancel_at_check(3).run::<SshCheck>("conn-7", params(port, 60_000));
    run.assert_cancelled();
    assert_eq!(run.percents(), [0, 10, 40]);
    drop(listener);
}

#[test]
fn other_services_are_not_ssh() {
    let (port, _peer) = server_then(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", true);
    let run = testing::run::<SshCheck>("conn-7", params(port, 5000));
    assert_eq!(
        run.failed(),
        format!(
            "127.0.0.1:{port} is not an SSH server: it closed the connection without an SSH identification line \
             (it sent: \"HTTP/1.1 400 Bad Request\")"
        )
    );
    let oversized: &'static [u8] =
        Box::leak(format!("SSH-2.0-{}\r\n", "x".repeat(400)).into_bytes().into_boxed_slice());
    let (port, _peer) = server(oversized);
    let run = testing::run::<SshCheck>("conn-7", params(port, 5000));
    assert!(run.failed().ends_with("longer than the 255 bytes RFC 4253 allows"), "{run}");
    let (port, _peer) = server(b"\x16\x03\x01\x00\xa5\x01\x00");
    let run = testing::run::<SshCheck>("conn-7", params(port, 5000));
    assert!(run.failed().contains("is not an SSH server: it sent binary data"), "{run}");
    assert_eq!(run.details().unwrap()["stage"], "banner");
}

#[test]
fn a_name_that_does_not_resolve_fails_at_resolve() {
    let run = testing::run::<SshCheck>("conn-7", json!({"host": "no-such-host.invalid", "port": 22}));
    assert!(run.failed().starts_with("cannot resolve no-such-host.invalid: "), "{run}");
    assert_eq!(run.details().unwrap()["stage"], "resolve");
}

#[test]
fn bad_params_name_their_field() {
    let fields =
        |p| testing::run::<SshCheck>("c", p).invalid_params().iter().map(|e| e.field.clone()).collect::<Vec<_>>();
    assert_eq!(fields(json!({"host": "", "port": 0, "timeout_ms": 5})), ["host", "port", "timeout_ms"]);
    assert_eq!(fields(json!({"host": "example.com:22"})), ["host"]);
    assert_eq!(fields(json!({"host": "a b"})), ["host"]);
    let run = testing::run::<SshCheck>("c", json!({"host": "h", "port": 70000}));
    assert!(run.invalid_params()[0].message.contains("70000"), "{run}");
    let run = testing::run::<SshCheck>("c", json!({"port": 22}));
    assert!(run.invalid_params()[0].message.contains("missing field `host`"), "{run}");
    assert_eq!(SshCheck::validate(&Params { host: "::1".into(), port: 22, timeout_ms: 1000 }), Ok(()));
    let schema = testing::schema::<SshCheck>();
    assert_eq!(schema["required"], json!(["host"]));
    assert_eq!(schema["properties"]["port"]["default"], 22);
}
