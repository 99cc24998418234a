//! `kubectl cogo`: Cogo's AgentTasks from the command line. Installed as `kubectl-cogo` on the
//! `PATH`, kubectl runs it for `kubectl cogo ...`; it reads the same kubeconfig, context and
//! namespace kubectl would.
//!
//! Exit codes: 0 when the command did what it was asked (and a task it waited for succeeded),
//! 1 when it could not (a usage error included), 2 when a task it waited for, or whose result
//! it was asked for, ended Failed or Cancelled.

mod change;
mod logs;
mod result;
mod submit;
mod view;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use cogo_api::AgentTask;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// Submit, follow, read, cancel and retry Cogo AgentTasks.
#[derive(Parser)]
#[command(name = "kubectl-cogo", bin_name = "kubectl cogo", version)]
struct Cli {
    /// The kubeconfig file to use (by default, as kubectl: $KUBECONFIG, then ~/.kube/config,
    /// then the pod's service account).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (by default its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (by default the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an AgentTask from flags or from a file, and optionally wait for its result.
    Submit(submit::Args),
    /// List the namespace's tasks, or show one task with its attempts.
    Get(view::GetArgs),
    /// Show a task and its sub-tasks (a workflow and its steps) as a tree.
    Tree(view::TreeArgs),
    /// Print a line each time a task changes phase, attempt or message.
    Watch(view::WatchArgs),
    /// Print the log of the pod that ran an attempt of a task, from the attempt's start to its end.
    Logs(logs::Args),
    /// Print a finished task's result, from its status or, when it was too large for status,
    /// from the database.
    Result(result::Args),
    /// Ask tasks to stop (spec.cancelRequested).
    Cancel(change::CancelArgs),
    /// Run an ended task again as a new task with the same spec.
    Retry(change::RetryArgs),
}

/// What a command found: success, or a task it reports on that did not succeed.
pub enum Outcome {
    /// Done as asked.
    Done,
    /// A task ended Failed or Cancelled.
    TaskDidNotSucceed,
}

/// The cluster and namespace a command works in.
pub struct Target {
    /// The client, as the kubeconfig says.
    pub client: Client,
    /// The namespace to work in.
    pub namespace: String,
}

impl Target {
    /// The AgentTasks of the namespace.
    pub fn tasks(&self) -> Api<AgentTask> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<Target> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read the kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options).await?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no cluster to talk to: {e}"))?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    Ok(Target { client, namespace })
}

/// The message of an error from the API server or the client, without kube's wrapping.
pub fn explain(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Reads a task, with a message naming it and its namespace when it does not exist.
pub async fn get_task(target: &Target, name: &str) -> anyhow::Result<AgentTask> {
    match target.tasks().get_opt(name).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => anyhow::bail!(
            "the AgentTask {name} does not exist in the namespace {}",
            target.namespace
        ),
        Err(e) => anyhow::bail!("cannot read the AgentTask {name}: {}", explain(&e)),
    }
}

/// Parses a duration such as `90s`, `10m`, `1h` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 10m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?} is not a duration such as 30s, 10m or 1h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit 1 like every other error, so 2 means only that a task did not succeed.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let run = async {
        let target = connect(&cli).await?;
        match &cli.command {
            Command::Submit(a) => submit::run(&target, a).await,
            Command::Get(a) => view::get(&target, a).await,
            Command::Tree(a) => view::tree(&target, a).await,
            Command::Watch(a) => view::watch(&target, a).await,
            Command::Logs(a) => logs::run(&target, a).await,
            Command::Result(a) => result::run(&target, a).await,
            Command::Cancel(a) => change::cancel(&target, a).await,
            Command::Retry(a) => change::retry(&target, a).await,
        }
    };
    match run.await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::TaskDidNotSucceed) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubectl_writes_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "10x", "ten", "-1s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
