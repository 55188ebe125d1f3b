//! `opal ops`: list, show, cancel, read the log of, and watch operations.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;

use super::follow::{Follower, Incoming};
use super::output::{self, Cell, Fit, Table};
use super::remote::{Remote, RemoteArgs, encode, exit};

/// `opal ops`: with no subcommand, the list.
#[derive(clap::Args, Debug)]
pub(crate) struct OpsArgs {
    #[command(subcommand)]
    command: Option<OpsCommand>,
    #[command(flatten)]
    filter: ListArgs,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Subcommand, Debug)]
enum OpsCommand {
    /// One operation, whole.
    Show {
        /// Its id.
        id: String,
        /// Print the operation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel an operation (it ends `cancelled` once its plugin stops).
    Cancel {
        /// Its id.
        id: String,
        /// Print the operation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An operation's log lines; `-f` follows them until it ends.
    Logs {
        /// Its id.
        id: String,
        /// Keep printing new lines until the operation ends.
        #[arg(short, long)]
        follow: bool,
        /// NDJSON: each log event as the server stores it.
        #[arg(long)]
        json: bool,
    },
    /// The live table of active and recent operations, redrawn as they change (Ctrl-C ends it).
    Watch {
        /// NDJSON: every snapshot and event as it arrives, instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// `opal ops`'s filters.
#[derive(clap::Args, Debug)]
struct ListArgs {
    /// Only these statuses (comma-separated: pending,running).
    #[arg(long)]
    status: Option<String>,
    /// Only this type.
    #[arg(long = "type", value_name = "TYPE")]
    op_type: Option<String>,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// At most this many, newest first (1 to 500).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print the page as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `opal ops …`.
pub(crate) async fn run(args: OpsArgs) -> anyhow::Result<u8> {
    let remote = Remote::new(&args.remote)?;
    match args.command {
        None => list(&remote, &args.filter).await,
        Some(OpsCommand::Show { id, json }) => {
            let op: Value = remote.get(&format!("/api/v1/operations/{}", encode(&id))).await?;
            print_operation(&op, json)?;
            Ok(exit::OK)
        }
        Some(OpsCommand::Cancel { id, json }) => {
            let (_, op) = remote.post(&format!("/api/v1/operations/{}/cancel", encode(&id)), None).await?;
            if json {
                println!("{op}");
            } else {
                println!(
                    "cancelling {} ({} on {})",
                    output::text(&op, "id"),
                    output::text(&op, "type"),
                    output::text(&op, "target")
                );
            }
            Ok(exit::OK)
        }
        Some(OpsCommand::Logs { id, follow, json }) => logs(&remote, &id, follow, json).await,
        Some(OpsCommand::Watch { json }) => watch(&remote, json).await,
    }
}

async fn list(remote: &Remote, filter: &ListArgs) -> anyhow::Result<u8> {
    let mut query = vec![format!("limit={}", filter.limit)];
    for (key, value) in [("status", &filter.status), ("type", &filter.op_type), ("target", &filter.target)] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode(value)));
        }
    }
    let page: Value = remote.get(&format!("/api/v1/operations?{}", query.join("&"))).await?;
    if filter.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(exit::OK);
    }
    let ops = page.get("operations").and_then(Value::as_array).cloned().unwrap_or_default();
    print!("{}", table(ops.iter()).render(output::width()));
    Ok(exit::OK)
}

/// The operations table: one row each.
fn table<'a>(ops: impl Iterator<Item = &'a Value>) -> Table {
    let colour = output::colours();
    let mut table = Table::new(vec![
        ("ID", Fit::Keep),
        ("TYPE", Fit::Cut),
        ("TARGET", Fit::Cut),
        ("STATUS", Fit::Keep),
        ("PROGRESS", Fit::Drop),
        ("AGE", Fit::Drop),
        ("MESSAGE", Fit::Cut),
    ]);
    for op in ops {
        let status = output::text(op, "status");
        let message = match op.get("error").filter(|e| !e.is_null()) {
            Some(e) => format!("{}: {}", output::text(e, "code"), output::text(e, "message")),
            None => match op.get("phase").and_then(Value::as_str) {
                Some(phase) => format!("{phase}: {}", output::text(op, "message")),
                None => output::text(op, "message"),
            },
        };
        table.row(vec![
            output::text(op, "id").into(),
            output::text(op, "type").into(),
            output::text(op, "target").into(),
            Cell::styled(&status, output::status(&status, colour)),
            format!("{}%", output::text(op, "progress")).into(),
            output::age(op.get("created_at").and_then(Value::as_str)).into(),
            message.into(),
        ]);
    }
    table
}

fn print_operation(op: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(op)?);
        return Ok(());
    }
    let colour = output::colours();
    let mut out = String::new();
    for key in ["id", "type", "plugin_version", "target", "status", "progress", "phase", "message", "attempt"] {
        let mut value = output::text(op, key);
        if key == "status" {
            value = output::status(&value, colour);
        }
        out.push_str(&format!("{key:<15} {value}\n"));
    }
    if let Some(error) = op.get("error").filter(|e| !e.is_null()) {
        out.push_str(&format!("{:<15} {}: {}\n", "error", output::text(error, "code"), output::text(error, "message")));
    }
    for key in ["created_by", "created_at", "started_at", "finished_at", "node", "parent", "step", "cancelled_by"] {
        if op.get(key).is_some_and(|v| !v.is_null()) {
            out.push_str(&format!("{key:<15} {}\n", output::text(op, key)));
        }
    }
    out.push_str(&format!("{:<15} {}\n", "params", op.get("params").unwrap_or(&Value::Null)));
    if let Some(details) = op.get("details").filter(|d| !d.is_null()) {
        out.push_str(&format!("{:<15} {}\n", "details", details));
    }
    print!("{out}");
    Ok(())
}

/// The operation's log lines, from its stored events; `-f` goes on live
/// from the last seq read, until the operation ends.
async fn logs(remote: &Remote, id: &str, follow: bool, json: bool) -> anyhow::Result<u8> {
    let page: Value = remote.get(&format!("/api/v1/operations/{}/events", encode(id))).await?;
    let events = page.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut last_seq = 0;
    let mut ended = false;
    for event in &events {
        last_seq = last_seq.max(event.get("seq").and_then(Value::as_u64).unwrap_or(0));
        print_log(event, json);
        ended |= is_terminal_event(event);
    }
    if !follow || ended {
        return Ok(exit::OK);
    }
    let mut follower = Follower::connect(remote, vec![format!("op:{id}")], (last_seq > 0).then_some(last_seq)).await?;
    loop {
        match follower.next().await? {
            Incoming::Message(message) => {
                let seq = message.get("seq").and_then(Value::as_u64).unwrap_or(0);
                if message.get("type").and_then(Value::as_str) == Some("event") && seq > last_seq {
                    last_seq = seq;
                    print_log(&message, json);
                    if is_terminal_event(&message) {
                        return Ok(exit::OK);
                    }
                } else if let Some(op) = message.get("operations").and_then(|ops| ops.get(0)) {
                    // A snapshot: the operation may have ended in between.
                    if matches!(op.get("status").and_then(Value::as_str), Some("completed" | "failed" | "cancelled")) {
                        return Ok(exit::OK);
                    }
                }
            }
            Incoming::Reconnecting(reason) => eprintln!("(reconnecting: {reason})"),
            Incoming::Resumed => {}
        }
    }
}

fn is_terminal_event(event: &Value) -> bool {
    matches!(
        event.get("event").and_then(Value::as_str),
        Some("operation.completed" | "operation.failed" | "operation.cancelled")
    )
}

fn print_log(event: &Value, json: bool) {
    if event.get("event").and_then(Value::as_str) != Some("operation.log") {
        return;
    }
    if json {
        println!("{event}");
    } else {
        println!(
            "{} {:>5} {}",
            output::text(event, "at"),
            output::text(event, "level"),
            output::text(event, "message")
        );
    }
}

/// The live table: the `operations` topic kept as a map and redrawn at
/// most every 200 ms on a terminal; off a terminal, one line per change.
async fn watch(remote: &Remote, json: bool) -> anyhow::Result<u8> {
    let mut follower = Follower::connect(remote, vec!["operations".to_owned()], None).await?;
    let mut ops: BTreeMap<String, Value> = BTreeMap::new();
    let live = !json && std::io::stdout().is_terminal();
    let mut redraw = tokio::time::interval(Duration::from_millis(200));
    let mut dirty = true;
    let mut note = String::new();
    loop {
        let incoming = tokio::select! {
            incoming = follower.next() => incoming?,
            _ = redraw.tick(), if live && dirty => {
                draw(&ops, &note);
                dirty = false;
                continue;
            }
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
        };
        match incoming {
            Incoming::Message(message) => {
                if json {
                    println!("{message}");
                    continue;
                }
                if let Some(list) = message.get("operations").and_then(Value::as_array) {
                    if message.get("reset").and_then(Value::as_bool) == Some(true)
                        || message.get("type").and_then(Value::as_str) == Some("snapshot")
                    {
                        ops.clear();
                    }
                    for op in list {
                        ops.insert(output::text(op, "id"), op.clone());
                    }
                } else if let Some(op) = message.get("operation") {
                    if !live {
                        println!(
                            "{} {} {} on {} {}% {}",
                            output::text(&message, "event"),
                            output::text(op, "id"),
                            output::text(op, "type"),
                            output::text(op, "target"),
                            output::text(op, "progress"),
                            output::text(op, "message"),
                        );
                    }
                    ops.insert(output::text(op, "id"), op.clone());
                }
                dirty = true;
            }
            Incoming::Reconnecting(reason) => {
                note = format!("reconnecting: {reason}");
                dirty = true;
                if !live && !json {
                    eprintln!("({note})");
                }
            }
            Incoming::Resumed => {
                note.clear();
                dirty = true;
            }
        }
    }
}

/// Active operations first (oldest first), then the rest, newest first, as
/// many as the terminal has rows for.
fn draw(ops: &BTreeMap<String, Value>, note: &str) {
    let (active, done): (Vec<&Value>, Vec<&Value>) = ops
        .values()
        .partition(|op| matches!(op.get("status").and_then(Value::as_str), Some("pending" | "running" | "waiting")));
    let rows = console::Term::stdout().size_checked().map_or(24, |(rows, _)| usize::from(rows));
    let shown: Vec<&Value> = active.into_iter().chain(done.into_iter().rev()).take(rows.saturating_sub(3)).collect();
    let mut screen = String::from("\x1b[H\x1b[2J");
    screen.push_str(&format!(
        "opal ops watch ({} operations){}\n",
        ops.len(),
        if note.is_empty() { String::new() } else { format!(" ({note})") }
    ));
    screen.push_str(&table(shown.into_iter()).render(output::width()));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(screen.as_bytes());
    let _ = stdout.flush();
}
