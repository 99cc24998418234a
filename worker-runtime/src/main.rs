//! `cogo-worker`: the worker pod. One binary for every kind; the kind comes from
//! `COGO_WORKER_KIND`. `cogo-worker sandbox-exec ...` is the sandbox's first program (see
//! `cogo_worker::python::shim`).
//!
//! It serves `/livez`, `/readyz` and `/metrics` on the kind's port, checks that its jobs can
//! run, connects to its Executor and runs the jobs it is sent, and on SIGTERM finishes them
//! within the grace period.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use cogo_agent::pod;
use cogo_api::WorkerKind;
use cogo_worker::{
    jobs,
    link::{self, LinkConfig, LinkMetrics, TokenSource},
    python,
};
use tracing::{error, info, warn};

/// Runs one Cogo worker.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Kind of worker: PythonSandbox, FigmaMCP or Browser.
    #[arg(long, env = "COGO_WORKER_KIND", value_parser = parse_kind)]
    kind: WorkerKind,
    /// Address to serve probes and metrics on (defaults to the kind's port on all interfaces).
    #[arg(long, env = "COGO_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,
    /// Jobs this pod runs at once.
    #[arg(long, env = "COGO_CAPACITY", default_value_t = 2)]
    capacity: u32,
    /// WebSocket URL of the Executor agent's worker endpoint.
    #[arg(long, env = "COGO_EXECUTOR_URL")]
    executor_url: Option<String>,
    /// File holding the worker's token (the operator mounts the `<worker>-executor-token` Secret).
    #[arg(long, env = "COGO_EXECUTOR_TOKEN_FILE")]
    executor_token_file: Option<PathBuf>,
    /// The worker's token itself, instead of a file.
    #[arg(long, env = "COGO_EXECUTOR_TOKEN", hide_env_values = true)]
    executor_token: Option<String>,
    /// Name of this pod, its id with the Executor.
    #[arg(long, env = "COGO_POD_NAME")]
    pod_name: Option<String>,
    /// Seconds between heartbeats to the Executor.
    #[arg(long, env = "COGO_HEARTBEAT_SECONDS", default_value_t = 5)]
    heartbeat_seconds: u64,
    /// Seconds to finish running jobs after SIGTERM, before handing the rest back.
    #[arg(long, env = "COGO_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    shutdown_grace_seconds: u64,
}

fn parse_kind(s: &str) -> Result<WorkerKind, String> {
    WorkerKind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown worker kind {s:?}; expected one of PythonSandbox, FigmaMCP, Browser"))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("sandbox-exec") {
        return ExitCode::from(python::shim::main(&argv[2..]).clamp(0, 255) as u8);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = pod::init_tracing("cogo-worker", &[("cogo.worker.kind", args.kind.to_string())]);
    let addr = args
        .listen_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], args.kind.port() as u16)));
    info!(kind = %args.kind, %addr, capacity = args.capacity,
        executor = args.executor_url.as_deref().unwrap_or("<none>"), "worker started");
    let runner = jobs::runner_for(args.kind).map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    let metrics = pod::Metrics::new("worker", "kind", args.kind.slug());
    let link_metrics = LinkMetrics::register(&metrics);
    let token = match (&args.executor_token_file, &args.executor_token) {
        (Some(f), _) => Some(TokenSource::File(f.clone())),
        (None, Some(t)) => Some(TokenSource::Value(t.clone())),
        (None, None) => None,
    };
    let ready = pod::Ready::later();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let linked = {
        let (ready, stop) = (ready.clone(), stop_rx.clone());
        let worker_id = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "local".into());
        let (url, kind, capacity) = (args.executor_url.clone(), args.kind, args.capacity);
        let (heartbeat, grace) = (
            Duration::from_secs(args.heartbeat_seconds.max(1)),
            Duration::from_secs(args.shutdown_grace_seconds),
        );
        tokio::spawn(async move {
            let Some(runner) = runner else {
                warn!(kind = %kind, "this version runs no jobs of this worker kind; serving probes only");
                ready.set();
                return;
            };
            // Connect only once jobs can run here: a sandbox that cannot start is said loudly.
            loop {
                match runner.check().await {
                    Ok(()) => break,
                    Err(e) => error!(error = %e, "jobs cannot run on this worker; checking again in 15 s"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                    _ = pod::stopped(stop.clone()) => return,
                }
            }
            info!("the job check passed");
            ready.set();
            match (url, token) {
                (Some(url), Some(token)) => {
                    let config = LinkConfig {
                        url,
                        token,
                        worker_id,
                        capacity,
                        heartbeat,
                        grace,
                    };
                    link::run(config, runner, stop, link_metrics).await;
                }
                _ => warn!(
                    "no Executor URL or token (COGO_EXECUTOR_URL, COGO_EXECUTOR_TOKEN_FILE): running no jobs"
                ),
            }
        })
    };
    let served = pod::serve(addr, pod::router(metrics, ready, axum::Router::new()), stop_tx).await;
    let _ = linked.await;
    served?;
    info!("worker stopped");
    Ok(())
}
