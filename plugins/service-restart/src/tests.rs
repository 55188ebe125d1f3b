//! Native tests through `opal_sdk::testing`, with the host command scripted
//! by the harness; `tests/service_restart.rs` runs a real command in a real
//! server.

use opal_sdk::exec::Output;
use opal_sdk::serde_json::json;
use opal_sdk::testing::{self, Harness};

use super::*;

/// A harness whose systemctl answers `restart <unit>` with `output`.
fn systemctl(output: Output) -> Harness {
    Harness::new().exec(move |command, args| match (command, args) {
        ("/usr/bin/systemctl", [verb, _]) if verb == "restart" => Ok(output.clone()),
        _ => Err(format!("denied: {command} {args:?} matches no granted command")),
    })
}

#[test]
fn restarts_the_unit_with_systemctl_by_default() {
    let run = systemctl(Output::success("")).run::<ServiceRestart>("web-1", json!({"unit": "nginx.service"}));
    assert_eq!(run.completed().message, "restarted nginx.service on web-1");
    assert_eq!(run.exec_calls(), [["/usr/bin/systemctl", "restart", "nginx.service"]]);
    assert_eq!(run.progress(), [(10, "restarting nginx.service"), (100, "restarted nginx.service")]);
    assert_eq!(
        run.details(),
        Some(
            &json!({"unit": "nginx.service", "command": "/usr/bin/systemctl restart nginx.service", "exit_status": 0})
        )
    );
}

#[test]
fn the_command_line_is_configurable_per_deployment() {
    let harness = Harness::new().exec(|_, _| Ok(Output::success("Restarted\n")));
    let params = json!({"unit": "app", "command": "/usr/local/bin/svc", "args": ["--quiet", "restart"]});
    let run = harness.run::<ServiceRestart>("web-1", params);
    run.completed();
    assert_eq!(run.exec_calls(), [["/usr/local/bin/svc", "--quiet", "restart", "app"]]);
    assert_eq!(
        run.logs(),
        [(Level::Info, "running /usr/local/bin/svc --quiet restart app on web-1"), (Level::Info, "Restarted")]
    );
}

#[test]
fn a_non_zero_exit_fails_with_the_status_and_the_tail_of_stderr() {
    let stderr = "line 1\nline 2\nline 3\nJob for db.service failed because the control process exited with error code.\nSee \"systemctl status db.service\" and \"journalctl -xeu db.service\" for details.\n\nline 6\n";
    let run = systemctl(Output::failure(1, stderr)).run::<ServiceRestart>("db-1", json!({"unit": "db.service"}));
    assert_eq!(
        run.failed(),
        "/usr/bin/systemctl restart db.service exited with status 1: line 2 | line 3 | Job for db.service failed \
         because the control process exited with error code. | See \"systemctl status db.service\" and \
         \"journalctl -xeu db.service\" for details. | line 6"
    );
    assert_eq!(run.details().unwrap()["exit_status"], 1);
    assert!(run.logs().contains(&(Level::Warn, "line 6")), "stderr reaches the log: {run}");

    let killed = Output { status: -1, stdout: "stopping\n".into(), stderr: String::new() };
    let run = systemctl(killed).run::<ServiceRestart>("db-1", json!({"unit": "db"}));
    assert_eq!(run.failed(), "/usr/bin/systemctl restart db was killed by a signal: stopping");
    let run = systemctl(Output::failure(5, "")).run::<ServiceRestart>("db-1", json!({"unit": "db"}));
    assert_eq!(run.failed(), "/usr/bin/systemctl restart db exited with status 5, saying nothing");
}

#[test]
fn a_long_stderr_is_cut_at_the_front() {
    let run = systemctl(Output::failure(1, &"x".repeat(5000))).run::<ServiceRestart>("db-1", json!({"unit": "db"}));
    let message = run.failed();
    assert!(message.ends_with(&format!("status 1: …{}", "x".repeat(TAIL_BYTES))), "{}", message.len());
}

#[test]
fn a_command_the_grant_does_not_list_fails_as_denied() {
    let run = systemctl(Output::success("")).run::<ServiceRestart>("web-1", json!({"unit": "nginx", "args": ["stop"]}));
    assert_eq!(
        run.failed(),
        "cannot run /usr/bin/systemctl stop nginx: denied: /usr/bin/systemctl [\"stop\", \"nginx\"] matches no granted command"
    );
    let run = testing::run::<ServiceRestart>("web-1", json!({"unit": "nginx"}));
    assert!(run.failed().contains("denied: no command is granted to this plugin"), "{run}");
}

#[test]
fn a_cancel_before_the_command_runs_nothing() {
    let run =
        systemctl(Output::success("")).cancel_when(|_| true).run::<ServiceRestart>("web-1", json!({"unit": "nginx"}));
    run.assert_cancelled();
    assert!(run.exec_calls().is_empty());
}

#[test]
fn params_are_checked_field_by_field() {
    let run = testing::run::<ServiceRestart>(
        "web-1",
        json!({"unit": "nginx;reboot", "command": "systemctl", "args": ["restart", ""]}),
    );
    let errors: Vec<(&str, &str)> =
        run.invalid_params().iter().map(|e| (e.field.as_str(), e.message.as_str())).collect();
    assert_eq!(
        errors,
        [
            (
                "unit",
                "\"nginx;reboot\" ';' is not allowed in a unit name (letters, digits, : - _ . and one @ only; no shell or glob characters)"
            ),
            ("command", "\"systemctl\" must be an absolute path"),
            ("args/1", "must be non-empty, without control characters"),
        ]
    );
    let run = testing::run::<ServiceRestart>("web-1", json!({"unit": "--root=/tmp"}));
    assert_eq!(
        run.invalid_params()[0].message,
        "\"--root=/tmp\" must not start with '-' (systemctl would read it as an option)"
    );
    let run = testing::run::<ServiceRestart>("web-1", json!({}));
    assert!(run.invalid_params()[0].message.contains("missing field `unit`"), "{run}");
    let schema = testing::schema::<ServiceRestart>();
    assert_eq!(schema["required"], json!(["unit"]));
    assert_eq!(schema["properties"]["command"]["default"], "/usr/bin/systemctl");
}
