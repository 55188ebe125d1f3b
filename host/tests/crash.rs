//! Crash safety with the real binary: `opal serve` is killed with SIGKILL
//! while 100 operations run, three times over. After each restart nothing is
//! lost, nothing is stuck, and completed work is still completed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opal"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("opal starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the address line");
        let addr = line.trim().strip_prefix("listening on http://").expect("listening line").to_owned();
        Server { child, addr }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
        self.child.wait().unwrap();
    }

    /// One HTTP/1.1 request; returns the status and the JSON body.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        // Opal's JSON bodies carry a Content-Length, so the body is what follows the head.
        let (_, payload) = response.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(payload).unwrap_or(Value::Null))
    }

    fn all_operations(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self.call("GET", &format!("/api/v1/operations?limit=500{cursor}"), None);
            assert_eq!(status, 200);
            all.extend(page["operations"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return all,
            }
        }
    }

    fn event_count(&self, id: &str) -> usize {
        self.call("GET", &format!("/api/v1/operations/{id}/events"), None).1["events"].as_array().unwrap().len()
    }
}

#[test]
fn sigkill_during_100_operations_loses_nothing_three_times_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut completed_before: HashMap<String, usize> = HashMap::new();
    let mut all_ids: Vec<String> = Vec::new();

    for round in 0..3 {
        let server = Server::start(dir.path());
        if round > 0 {
            check_after_restart(&server, &all_ids, &completed_before);
        }
        // 100 operations on the same 100 targets every round: a target's slot
        // must have been released by recovery for its POST to be accepted.
        for i in 0..100 {
            let steps = 1 + (i * 7 + round * 13) % 30;
            let body = json!({"type": "demo", "target": format!("t{i}"), "params": {"steps": steps, "step_ms": 20}});
            let (status, op) = server.call("POST", "/api/v1/operations", Some(&body));
            assert_eq!(status, 202, "round {round}, op {i}: {op}");
            all_ids.push(op["id"].as_str().unwrap().to_owned());
        }
        // Let some finish, then record exactly what had completed before the kill.
        std::thread::sleep(Duration::from_millis(300));
        for op in server.all_operations() {
            if op["status"] == "completed" {
                let id = op["id"].as_str().unwrap().to_owned();
                let events = server.event_count(&id);
                completed_before.insert(id, events);
            }
        }
        server.kill();
    }

    let server = Server::start(dir.path());
    check_after_restart(&server, &all_ids, &completed_before);
    server.kill();
}

fn check_after_restart(server: &Server, all_ids: &[String], completed_before: &HashMap<String, usize>) {
    let ops = server.all_operations();
    let by_id: HashMap<&str, &Value> = ops.iter().map(|op| (op["id"].as_str().unwrap(), op)).collect();
    for id in all_ids {
        let op = by_id.get(id.as_str()).unwrap_or_else(|| panic!("operation {id} was lost"));
        let status = op["status"].as_str().unwrap();
        assert!(!matches!(status, "pending" | "running"), "{id} is stuck {status}: {op}");
        if status == "failed" && op["error"]["code"] == "interrupted" {
            assert!(op["message"].as_str().unwrap().contains("interrupted"), "{op}");
        }
    }
    for (id, events) in completed_before {
        let op = by_id[id.as_str()];
        assert_eq!(op["status"], "completed", "{id} had completed before the kill: {op}");
        assert_eq!(server.event_count(id), *events, "{id} keeps every event it had");
    }
}
