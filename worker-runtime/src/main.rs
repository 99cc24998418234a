//! `cogo-worker`: the worker pod. One binary for every kind; the kind comes from
//! `COGO_WORKER_KIND`.
//!
//! It serves `/livez`, `/readyz` and `/metrics` on the kind's port and stops cleanly on
//! SIGTERM. Connecting to the Executor and running jobs builds on this.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use cogo_api::WorkerKind;
use tracing::info;

mod http;

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
    /// WebSocket URL of the Executor agent.
    #[arg(long, env = "COGO_EXECUTOR_URL")]
    executor_url: Option<String>,
}

fn parse_kind(s: &str) -> Result<WorkerKind, String> {
    WorkerKind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown worker kind {s:?}; expected one of PythonSandbox, FigmaMCP, Browser"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let addr = args
        .listen_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], args.kind.port() as u16)));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    info!(kind = %args.kind, %addr, capacity = args.capacity,
        executor = args.executor_url.as_deref().unwrap_or("<none>"), "worker started");
    axum::serve(listener, http::router(args.kind))
        .with_graceful_shutdown(http::termination())
        .await
        .context("server failed")?;
    info!("worker stopped");
    Ok(())
}
