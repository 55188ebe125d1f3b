//! `opal schedules …` and `opal plugins`: what a server will run, and when.

use serde_json::{Value, json};

use super::output::{self, Fit, Table};
use super::remote::{Remote, RemoteArgs, encode, exit};

/// `opal schedules`: with no subcommand, the list.
#[derive(clap::Args, Debug)]
pub(crate) struct SchedulesArgs {
    #[command(subcommand)]
    command: Option<SchedulesCommand>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Subcommand, Debug)]
enum SchedulesCommand {
    /// One schedule, with its recent runs.
    Show {
        /// Its id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A new schedule: TYPE on TARGET at every CRON time (UTC).
    Create {
        /// 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
        #[arg(long)]
        cron: String,
        /// The operation type.
        #[arg(value_name = "TYPE")]
        op_type: String,
        /// What it runs on.
        target: String,
        /// The params, as a JSON object.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        params: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule (the operations it started are kept).
    Delete {
        /// Its id.
        id: String,
    },
}

/// Runs `opal schedules …`.
pub(crate) async fn schedules(args: SchedulesArgs) -> anyhow::Result<u8> {
    let remote = Remote::new(&args.remote)?;
    match args.command {
        None => {
            let page: Value = remote.get("/api/v1/schedules").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(exit::OK);
            }
            let mut table = Table::new(vec![
                ("ID", Fit::Keep),
                ("CRON", Fit::Keep),
                ("TYPE", Fit::Cut),
                ("TARGET", Fit::Cut),
                ("NEXT RUN", Fit::Drop),
                ("RUNS", Fit::Drop),
                ("SKIPPED", Fit::Drop),
                ("FAILED", Fit::Drop),
            ]);
            for s in page.get("schedules").and_then(Value::as_array).into_iter().flatten() {
                table.row(
                    ["id", "cron", "type", "target", "next_run_at", "runs", "skipped", "failed"]
                        .iter()
                        .map(|k| output::text(s, k).into())
                        .collect(),
                );
            }
            print!("{}", table.render(output::width()));
        }
        Some(SchedulesCommand::Show { id, json }) => {
            let schedule: Value = remote.get(&format!("/api/v1/schedules/{}", encode(&id))).await?;
            print_schedule(&schedule, json || args.json)?;
        }
        Some(SchedulesCommand::Create { cron, op_type, target, params, json }) => {
            let params: Value = serde_json::from_str(&params)
                .map_err(|e| super::remote::ClientError::Usage(format!("--params is not JSON: {e}")))?;
            let body = json!({"cron": cron, "type": op_type, "target": target, "params": params});
            let (_, schedule) = remote.post("/api/v1/schedules", Some(&body)).await?;
            print_schedule(&schedule, json || args.json)?;
        }
        Some(SchedulesCommand::Delete { id }) => {
            remote.delete(&format!("/api/v1/schedules/{}", encode(&id))).await?;
            if args.json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted schedule {id}");
            }
        }
    }
    Ok(exit::OK)
}

fn print_schedule(schedule: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(schedule)?);
        return Ok(());
    }
    for key in ["id", "cron", "type", "target", "created_by", "created_at", "next_run_at", "runs", "skipped", "failed"]
    {
        println!("{key:<12} {}", output::text(schedule, key));
    }
    println!("{:<12} {}", "params", schedule.get("params").unwrap_or(&Value::Null));
    for run in schedule.get("recent_runs").and_then(Value::as_array).into_iter().flatten() {
        println!(
            "  {} {:<9} {} {}",
            output::text(run, "at"),
            output::text(run, "outcome"),
            output::text(run, "operation_id"),
            output::text(run, "message")
        );
    }
    Ok(())
}

/// `opal plugins`'s flags.
#[derive(clap::Args, Debug)]
pub(crate) struct PluginsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Runs `opal plugins`: the operation types the server runs.
pub(crate) async fn plugins(args: PluginsArgs) -> anyhow::Result<u8> {
    let remote = Remote::new(&args.remote)?;
    let page: Value = remote.get("/api/v1/plugins").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(exit::OK);
    }
    let mut table =
        Table::new(vec![("TYPE", Fit::Keep), ("VERSION", Fit::Keep), ("KIND", Fit::Drop), ("DESCRIPTION", Fit::Cut)]);
    for p in page.get("plugins").and_then(Value::as_array).into_iter().flatten() {
        let kind = p.get("kind").and_then(Value::as_str).unwrap_or("plugin");
        table.row(vec![
            output::text(p, "name").into(),
            output::text(p, "version").into(),
            kind.into(),
            output::text(p, "description").into(),
        ]);
    }
    print!("{}", table.render(output::width()));
    for r in page.get("refused").and_then(Value::as_array).into_iter().flatten() {
        eprintln!("refused {}: {}", output::text(r, "source"), output::text(r, "error"));
    }
    Ok(exit::OK)
}
