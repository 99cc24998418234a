//! `cogo-agent`: the agent pod. One binary for every role; the role comes from `COGO_ROLE`.
//!
//! It serves `/livez`, `/readyz` and `/metrics` on the role's port and stops cleanly on
//! SIGTERM. Pulling tasks from the operator's broker builds on this.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use cogo_api::AgentRole;
use tracing::info;

mod broker;
mod handlers;
mod http;
mod pull;

/// Runs one Cogo agent.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Role of this agent: Orchestrator, Indexing, Research, GraphRAG or Executor.
    #[arg(long, env = "COGO_ROLE", value_parser = parse_role)]
    role: AgentRole,
    /// Name of the CogoAgent this pod belongs to.
    #[arg(long, env = "COGO_AGENT_NAME", default_value = "local")]
    agent_name: String,
    /// Address to serve probes and metrics on (defaults to the role's port on all interfaces).
    #[arg(long, env = "COGO_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,
    /// Tasks this pod works on at once.
    #[arg(long, env = "COGO_CONCURRENCY", default_value_t = 4)]
    concurrency: u32,
    /// URL of the operator's broker.
    #[arg(long, env = "COGO_BROKER_URL")]
    broker_url: Option<String>,
    /// Bearer token for the broker (the operator puts it in the agent's `<name>-broker-token` Secret).
    #[arg(long, env = "COGO_BROKER_TOKEN", hide_env_values = true)]
    broker_token: Option<String>,
    /// Namespace of the agent.
    #[arg(long, env = "COGO_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Name of this pod, recorded on the tasks it runs.
    #[arg(long, env = "COGO_POD_NAME")]
    pod_name: Option<String>,
    /// Seconds to let held tasks finish after SIGTERM.
    #[arg(long, env = "COGO_SHUTDOWN_GRACE_SECONDS", default_value_t = 50)]
    shutdown_grace_seconds: u64,
}

fn parse_role(s: &str) -> Result<AgentRole, String> {
    AgentRole::ALL
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!(
                "unknown role {s:?}; expected one of Orchestrator, Indexing, Research, GraphRAG, Executor"
            )
        })
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
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
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], args.role.port() as u16)));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    info!(role = %args.role, agent = %args.agent_name, %addr, concurrency = args.concurrency,
        broker = args.broker_url.as_deref().unwrap_or("<none>"), "agent started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let puller = match (args.broker_url.clone(), args.broker_token.clone()) {
        (Some(url), Some(token)) => {
            let pod = args
                .pod_name
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "local".into());
            let client =
                pull::BrokerClient::new(&url, token, args.namespace.clone(), args.agent_name.clone(), pod);
            let registry = std::sync::Arc::new(handlers::Registry::builtin());
            let grace = std::time::Duration::from_secs(args.shutdown_grace_seconds);
            let (concurrency, stop) = (args.concurrency, stop_rx.clone());
            Some(tokio::spawn(async move {
                tokio::select! {
                    _ = broker::resolve(url) => pull::run(client, registry, concurrency, stop, grace).await,
                    _ = stopped(stop.clone()) => {}
                }
            }))
        }
        (Some(url), None) => {
            tokio::spawn(broker::resolve(url));
            tracing::warn!("no broker token (COGO_BROKER_TOKEN): serving probes only, leasing no tasks");
            None
        }
        _ => None,
    };
    let mut stop = stop_rx.clone();
    axum::serve(listener, http::router(args.role))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = http::termination() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        })
        .await
        .context("server failed")?;
    let _ = stop_tx.send(true);
    if let Some(p) = puller {
        let _ = p.await;
    }
    info!("agent stopped");
    Ok(())
}
