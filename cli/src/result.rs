//! `kubectl cogo result`: a finished task's result, from its status or, when it was too large
//! for status, from the database the operator mirrors into.

use std::time::Duration;

use cogo_api::{AgentTask, TaskPhase};
use kube::ResourceExt;
use serde_json::Value;

use crate::{Outcome, Target, get_task, parse_duration, view};

/// Where results too large for status are read from.
#[derive(clap::Args, Clone, Default)]
pub struct Database {
    /// The database (Supabase's PostgreSQL) the operator mirrors tasks into, as a libpq
    /// connection string, for results too large for a task's status.
    #[arg(long, env = "COGO_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// `--wait` of the commands that create a task.
#[derive(clap::Args)]
pub struct Wait {
    /// Wait for the task to end: its changes go to standard error, its result to standard
    /// output; the exit code is 2 when it fails or is cancelled.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (30s, 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_duration, requires = "wait")]
    wait_timeout: Duration,
    #[command(flatten)]
    pub database: Database,
}

impl Wait {
    /// How long to wait; None when not asked to.
    pub fn timeout(&self) -> Option<Duration> {
        self.wait.then_some(self.wait_timeout)
    }
}

/// `kubectl cogo result`.
#[derive(clap::Args)]
pub struct Args {
    /// The task.
    name: String,
    /// Wait for the task to end first.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (30s, 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_duration, requires = "wait")]
    wait_timeout: Duration,
    /// Print the JSON on one line.
    #[arg(long)]
    compact: bool,
    #[command(flatten)]
    database: Database,
}

/// The row of a task whose large result the mirror copied, by the task's UID and the result's
/// digest (so a later attempt's row never answers for an earlier result).
const FROM_ROW: &str = "select result_data::text from public.distributed_agent_tasks
where task_uid = $1::text::uuid and result_digest = $2 and result_data is not null";

/// The result store, where a large result waits until the mirror copies it into its row.
const FROM_STORE: &str = "select result::text from public.cogo_task_results where digest = $1 limit 1";

/// Reads a result the status only refers to.
async fn from_database(task: &AgentTask, database: &Database) -> anyhow::Result<Value> {
    let name = task.name_any();
    let r = task
        .status
        .as_ref()
        .and_then(|s| s.result_ref.as_ref())
        .ok_or_else(|| anyhow::anyhow!("the AgentTask {name} holds no reference to a result"))?;
    let Some(url) = &database.database_url else {
        anyhow::bail!(
            "the result of {name} ({} bytes) is kept in the database ({}), not in its status; \
             pass --database-url or set COGO_DATABASE_URL to read it",
            r.size_bytes,
            r.location
        );
    };
    let (client, connection) = cogo_db::connect_url(url, None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
    tokio::spawn(connection);
    let uid = task.uid().unwrap_or_default();
    let query = |e: tokio_postgres::Error| anyhow::anyhow!("reading the result: {}", cogo_db::describe(&e));
    let mut text: Option<String> = client
        .query_opt(FROM_ROW, &[&uid, &r.digest])
        .await
        .map_err(query)?
        .map(|row| row.get(0));
    if text.is_none() {
        text = client
            .query_opt(FROM_STORE, &[&r.digest])
            .await
            .map_err(query)?
            .map(|row| row.get(0));
    }
    let text = text.ok_or_else(|| {
        anyhow::anyhow!(
            "the database holds no result {} of {name}: neither its row nor the result store has it",
            r.digest
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Prints the result of the succeeded task `task`.
pub async fn print(task: &AgentTask, database: &Database, compact: bool) -> anyhow::Result<()> {
    let status = task.status.clone().unwrap_or_default();
    let value = match status.result {
        Some(v) => v,
        None if status.result_ref.is_some() => from_database(task, database).await?,
        None => Value::Null,
    };
    match compact {
        true => println!("{value}"),
        false => println!("{}", serde_json::to_string_pretty(&value)?),
    }
    Ok(())
}

/// `kubectl cogo result`.
pub async fn run(target: &Target, a: &Args) -> anyhow::Result<Outcome> {
    let task = match a.wait {
        true => view::follow(target, &a.name, a.wait_timeout, |_| {}).await?,
        false => get_task(target, &a.name).await?,
    };
    let s = task.status.clone().unwrap_or_default();
    match view::phase(&task) {
        TaskPhase::Succeeded => {
            print(&task, &a.database, a.compact).await?;
            Ok(Outcome::Done)
        }
        p if p.is_terminal() => {
            eprintln!(
                "the AgentTask {} ended {}: {}",
                a.name,
                p.as_str(),
                s.message.unwrap_or_default()
            );
            Ok(Outcome::TaskDidNotSucceed)
        }
        p => anyhow::bail!(
            "the AgentTask {} is {}; it has no result yet (--wait waits for it)",
            a.name,
            p.as_str()
        ),
    }
}
