//! `opal run TYPE TARGET -p key=value…`: start an operation and follow it
//! to its end, with a progress bar, the outcome, and an exit code that says
//! how it ended (docs/cli.md).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};

use super::follow::{Follower, Incoming};
use super::remote::{ClientError, Remote, RemoteArgs, encode, exit};

/// `opal run`'s flags.
#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// The operation type (a plugin or workflow name, as `opal plugins` lists them).
    #[arg(value_name = "TYPE")]
    op_type: String,
    /// What it runs on.
    target: String,
    /// A parameter, `key=value`; typed by the params schema (`steps=3` is a number). Repeatable.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// A JSON object of parameters; `-p` values override its keys. `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// Makes the start safe to retry: the same key returns the operation it created.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Print the operation's id and exit once it is admitted, without following it.
    #[arg(long)]
    detach: bool,
    /// NDJSON on stdout: the admitted operation, then every message that follows it.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

/// Runs `opal run`; the exit code says how the operation ended.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<u8> {
    // Registered before anything is sent, so no Ctrl-C falls to the default
    // handler (which would leave the operation running unannounced).
    let mut interrupts = Interrupts::new()?;
    let remote = Remote::new(&args.remote)?;
    let params = build_params(&remote, &args).await?;
    let mut request = json!({"type": args.op_type, "target": args.target, "params": params});
    if let Some(key) = &args.idempotency_key {
        request["idempotency_key"] = json!(key);
    }
    let (_, operation) = remote.post("/api/v1/operations", Some(&request)).await?;
    let id = operation.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if args.json {
        println!("{}", json!({"type": "admitted", "operation": operation}));
    }
    if args.detach {
        if !args.json {
            println!("{id}");
        }
        return Ok(exit::OK);
    }
    let mut view = View::new(args.json);
    view.update(&operation);
    let mut follower = Follower::connect(&remote, vec![format!("op:{id}")], None).await?;
    let mut cancelling = false;
    loop {
        let incoming = tokio::select! {
            incoming = follower.next() => incoming?,
            () = interrupts.next(), if !cancelling => {
                match view.ask(&mut interrupts, &id).await {
                    Choice::Cancel => {
                        cancel(&remote, &id).await?;
                        cancelling = true;
                        view.note("cancelling…");
                    }
                    Choice::Detach => {
                        view.finish_bar();
                        eprintln!("detached: operation {id} goes on; `opal ops show {id}` shows it");
                        return Ok(exit::OK);
                    }
                }
                continue;
            }
        };
        match incoming {
            Incoming::Message(message) => {
                if args.json {
                    println!("{message}");
                }
                if let Some(op) = latest_operation(&message) {
                    view.update(op);
                    if let Some(code) = outcome(op) {
                        view.finish_bar();
                        if !args.json {
                            println!("{}", describe(op));
                        }
                        return Ok(code);
                    }
                } else if message.get("event").and_then(Value::as_str) == Some("operation.log") {
                    view.log(&message);
                }
            }
            Incoming::Reconnecting(reason) => view.note(&format!("reconnecting: {reason}")),
            Incoming::Resumed => view.note("reconnected"),
        }
    }
}

/// The operation a snapshot or event carries.
fn latest_operation(message: &Value) -> Option<&Value> {
    message.get("operation").or_else(|| message.get("operations").and_then(|ops| ops.get(0)))
}

/// The exit code of a finished operation, `None` while it is not.
fn outcome(op: &Value) -> Option<u8> {
    match op.get("status").and_then(Value::as_str)? {
        "completed" => Some(exit::OK),
        "failed" => Some(exit::FAILED),
        "cancelled" => Some(exit::CANCELLED),
        _ => None,
    }
}

/// `completed demo on srv-1 in 0.4s (01K…): done`, and the error code of a failure.
fn describe(op: &Value) -> String {
    let field = |k: &str| op.get(k).and_then(Value::as_str).unwrap_or("");
    let took = super::output::elapsed(
        op.get("started_at").and_then(Value::as_str),
        op.get("finished_at").and_then(Value::as_str),
    )
    .map(|t| format!(" in {t}"))
    .unwrap_or_default();
    let mut line = format!("{} {} on {}{took} ({})", field("status"), field("type"), field("target"), field("id"));
    if let Some(error) = op.get("error").filter(|e| !e.is_null()) {
        let code = error.get("code").and_then(Value::as_str).unwrap_or("error");
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        line.push_str(&format!(": {code}: {message}"));
    } else if !field("message").is_empty() {
        line.push_str(&format!(": {}", field("message")));
    }
    line
}

async fn cancel(remote: &Remote, id: &str) -> Result<(), ClientError> {
    match remote.post(&format!("/api/v1/operations/{}/cancel", encode(id)), None).await {
        // 409: it ended meanwhile; its terminal event is on its way.
        Err(ClientError::Refused(problem)) if problem.status == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// The params: the file's object, then each `-p`, typed by the type's params schema.
async fn build_params(remote: &Remote, args: &RunArgs) -> Result<Value, ClientError> {
    let mut params = match &args.params_file {
        None => Map::new(),
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            }
            .map_err(|e| ClientError::Usage(format!("--params-file {}: {e}", path.display())))?;
            match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(ClientError::Usage(format!("--params-file {}: not a JSON object", path.display())));
                }
                Err(e) => return Err(ClientError::Usage(format!("--params-file {}: {e}", path.display()))),
            }
        }
    };
    if !args.params.is_empty() {
        let schema = params_schema(remote, &args.op_type).await?;
        for (key, text) in &args.params {
            let value = typed(schema.as_ref().and_then(|s| s.pointer(&format!("/properties/{key}"))), text)
                .map_err(|reason| ClientError::Usage(format!("-p {key}={text}: {reason}")))?;
            params.insert(key.clone(), value);
        }
    }
    Ok(Value::Object(params))
}

/// The type's params schema, or `None` when the server does not know the
/// type (the start then says so, with the server's words).
async fn params_schema(remote: &Remote, op_type: &str) -> Result<Option<Value>, ClientError> {
    match remote.get::<Value>(&format!("/api/v1/plugins/{}", encode(op_type))).await {
        Ok(plugin) => Ok(plugin.get("params_schema").cloned()),
        Err(ClientError::Refused(problem)) if problem.status == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A `-p` value as its property's schema types it: integers and numbers
/// parse as numbers, booleans as booleans, arrays and objects as JSON;
/// strings, and keys the schema does not name, stay text (the server
/// refuses what does not fit, naming the field).
fn typed(property: Option<&Value>, text: &str) -> Result<Value, String> {
    let types: Vec<&str> = match property.and_then(|p| p.get("type")) {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"string") || types.is_empty() {
        return Ok(Value::String(text.to_owned()));
    }
    if text == "null" && types.contains(&"null") {
        return Ok(Value::Null);
    }
    for t in &types {
        let parsed = match *t {
            "integer" => text.parse::<i64>().ok().map(Value::from),
            "number" => text.parse::<i64>().ok().map(Value::from).or_else(|| text.parse::<f64>().ok().map(Value::from)),
            "boolean" => text.parse::<bool>().ok().map(Value::from),
            "array" | "object" => serde_json::from_str::<Value>(text)
                .ok()
                .filter(|v| (*t == "array" && v.is_array()) || (*t == "object" && v.is_object())),
            _ => None,
        };
        if let Some(value) = parsed {
            return Ok(value);
        }
    }
    Err(format!("the params schema wants {}", types.join(" or ")))
}

/// The answer to Ctrl-C.
enum Choice {
    Cancel,
    Detach,
}

/// SIGINT, as a stream.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            Ok(Interrupts { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupts {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What the person sees on stderr: a bar on a terminal, plain lines otherwise.
struct View {
    bar: Option<ProgressBar>,
    json: bool,
    phase: Option<String>,
}

impl View {
    fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {prefix:.bold} {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        View { bar, json, phase: None }
    }

    fn update(&mut self, op: &Value) {
        let progress = op.get("progress").and_then(Value::as_u64).unwrap_or(0);
        let phase = op.get("phase").and_then(Value::as_str).map(str::to_owned);
        let message = op.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
        let status = op.get("status").and_then(Value::as_str).unwrap_or("");
        match &self.bar {
            Some(bar) => {
                bar.set_position(progress);
                bar.set_prefix(phase.clone().unwrap_or_else(|| status.to_owned()));
                bar.set_message(message);
            }
            None if !self.json && phase.is_some() && phase != self.phase => {
                eprintln!("{:>3}% {}: {message}", progress, phase.as_deref().unwrap_or(""));
            }
            None => {}
        }
        self.phase = phase;
    }

    fn log(&self, event: &Value) {
        if self.json {
            return;
        }
        let level = event.get("level").and_then(Value::as_str).unwrap_or("info");
        let message = event.get("message").and_then(Value::as_str).unwrap_or("");
        let line = format!("{level:>5} {message}");
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("  ({text})")),
            None if !self.json => eprintln!("({text})"),
            None => {}
        }
    }

    fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Asks on stderr whether to cancel or detach; a second Ctrl-C, or an
    /// answer that is neither (stdin closed), detaches.
    async fn ask(&self, interrupts: &mut Interrupts, id: &str) -> Choice {
        if let Some(bar) = &self.bar {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        eprint!(
            "\ninterrupted: cancel operation {id} on the server, or detach and leave it running? [c]ancel/[d]etach: "
        );
        let answer = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        });
        let choice = tokio::select! {
            answer = answer => match answer {
                Ok(Ok(line)) if matches!(line.trim().to_ascii_lowercase().as_str(), "c" | "cancel" | "y" | "yes") => Choice::Cancel,
                _ => Choice::Detach,
            },
            () = interrupts.next() => Choice::Detach,
        };
        eprintln!();
        if let Some(bar) = &self.bar {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_typed_by_their_schema() {
        let integer = json!({"type": "integer"});
        assert_eq!(typed(Some(&integer), "3").unwrap(), json!(3));
        assert!(typed(Some(&integer), "three").unwrap_err().contains("integer"));
        assert_eq!(typed(Some(&json!({"type": "number"})), "0.5").unwrap(), json!(0.5));
        assert_eq!(typed(Some(&json!({"type": "boolean"})), "true").unwrap(), json!(true));
        assert_eq!(typed(Some(&json!({"type": "array"})), r#"["a","b"]"#).unwrap(), json!(["a", "b"]));
        assert_eq!(typed(Some(&json!({"type": ["integer", "null"]})), "null").unwrap(), Value::Null);
        assert_eq!(typed(Some(&json!({"type": "string"})), "42").unwrap(), json!("42"));
        assert_eq!(typed(None, "42").unwrap(), json!("42"));
    }

    #[test]
    fn a_param_needs_a_key_and_an_equals_sign() {
        assert_eq!(parse_param("a=b=c").unwrap(), ("a".to_owned(), "b=c".to_owned()));
        assert!(parse_param("=x").is_err());
        assert!(parse_param("steps").is_err());
    }
}
