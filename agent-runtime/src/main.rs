//! `cogo-agent`: the agent pod. One binary for every role; the role comes from `COGO_ROLE`.
//!
//! It serves `/livez`, `/readyz`, `/metrics` and its role's routes on the role's port, pulls
//! tasks from the operator's broker and runs them, and stops cleanly on SIGTERM.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use cogo_agent::{
    app,
    broker::{self, HttpBroker, SharedBroker, TokenSource},
    llm::{Model, ModelConfig, ModelMetrics},
    pod,
    roles::{
        RoleConfig, Storage,
        indexing::{EmbeddingPrefixes, IndexPolicy, git::Limits},
        research::fetch::FetchPolicy,
    },
};
use cogo_api::{AgentRole, agent::ModelProvider};
use tracing::{info, warn};

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
    /// Address to serve probes, metrics and the role's routes on (defaults to the role's port
    /// on all interfaces).
    #[arg(long, env = "COGO_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,
    /// Tasks this pod works on at once (the Executor's worker jobs are bounded by its workers).
    #[arg(long, env = "COGO_CONCURRENCY", default_value_t = 4)]
    concurrency: u32,
    /// URL of the operator's broker.
    #[arg(long, env = "COGO_BROKER_URL")]
    broker_url: Option<String>,
    /// File holding the bearer token for the broker: the agent's `<name>-broker-token` Secret,
    /// mounted (the operator renews the short-lived token; it is read again when refused).
    #[arg(long, env = "COGO_BROKER_TOKEN_FILE")]
    broker_token_file: Option<std::path::PathBuf>,
    /// The bearer token itself, for running outside a cluster (the file wins when both are set).
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
    /// Seconds between the Executor's pings to its workers; a worker silent for three of them
    /// is dropped and its jobs run elsewhere.
    #[arg(long, env = "COGO_WORKER_PING_SECONDS", default_value_t = 5)]
    worker_ping_seconds: u64,
    /// Seconds a leased worker job waits while no worker of its kind is connected to this
    /// Executor, before it goes back to the queue as a retryable failure.
    #[arg(long, env = "COGO_NO_WORKER_SECONDS", default_value_t = 30)]
    no_worker_seconds: u64,
    /// The model's provider: Gemini or OpenAICompatible (from the CogoAgent's `spec.model`).
    #[arg(long, env = "COGO_MODEL_PROVIDER", value_parser = parse_provider)]
    model_provider: Option<ModelProvider>,
    /// The model's name.
    #[arg(long, env = "COGO_MODEL_NAME", default_value = "gemini-2.5-flash-lite")]
    model_name: String,
    /// The model API's base URL (Google's for Gemini when unset).
    #[arg(long, env = "COGO_MODEL_ENDPOINT")]
    model_endpoint: Option<String>,
    /// The model's API key (from the Secret in `spec.model.apiKeySecretRef`).
    #[arg(long, env = "COGO_MODEL_API_KEY", hide_env_values = true, default_value = "")]
    model_api_key: String,
    /// Seconds one model call may take.
    #[arg(long, env = "COGO_MODEL_TIMEOUT_SECONDS", default_value_t = 120)]
    model_timeout_seconds: u64,
    /// Calls made for one answer when the model fails in a way that may pass (429, 5xx,
    /// timeouts, a broken connection).
    #[arg(long, env = "COGO_MODEL_ATTEMPTS", default_value_t = 4)]
    model_attempts: u32,
    /// Let the Research agent read pages at private, loopback and link-local addresses (off:
    /// a task could otherwise reach the cluster's internal services or cloud metadata).
    #[arg(long, env = "COGO_RESEARCH_ALLOW_PRIVATE", default_value_t = false)]
    research_allow_private: bool,
    /// The database the Indexing and GraphRAG agents keep indexes and graphs in (a libpq
    /// connection string); without it they keep them in a local store.
    #[arg(long, env = "COGO_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PEM roots for the database's TLS, when its connection string names none.
    #[arg(long, env = "COGO_DATABASE_CA", hide_env_values = true)]
    database_ca: Option<String>,
    /// The local store's directory; default `cogo-store` in the system's temporary directory.
    #[arg(long, env = "COGO_STORE_DIR")]
    store_dir: Option<std::path::PathBuf>,
    /// Let the Indexing agent fetch git repositories from loopback, private and link-local
    /// addresses (off: a task could otherwise reach the cluster's internal services or cloud
    /// metadata).
    #[arg(long, env = "COGO_INDEX_ALLOW_PRIVATE", default_value_t = false)]
    index_allow_private: bool,
    /// Text the Indexing agent puts before a query it embeds (`query: ` for an e5 model served
    /// as it is).
    #[arg(long, env = "COGO_EMBEDDING_QUERY_PREFIX", default_value = "")]
    embedding_query_prefix: String,
    /// Text the Indexing agent puts before a chunk it embeds (`passage: ` for an e5 model).
    #[arg(long, env = "COGO_EMBEDDING_PASSAGE_PREFIX", default_value = "")]
    embedding_passage_prefix: String,
}

fn parse_provider(s: &str) -> Result<ModelProvider, String> {
    match s {
        "Gemini" => Ok(ModelProvider::Gemini),
        "OpenAICompatible" => Ok(ModelProvider::OpenAICompatible),
        _ => Err(format!(
            "unknown model provider {s:?}; expected Gemini or OpenAICompatible"
        )),
    }
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = pod::init_tracing(
        "cogo-agent",
        &[("cogo.agent.role", args.role.as_str().to_string())],
    );
    let addr = args
        .listen_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], args.role.port() as u16)));
    let pod_name = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "local".into());
    info!(role = %args.role, agent = %args.agent_name, %addr, concurrency = args.concurrency,
        broker = args.broker_url.as_deref().unwrap_or("<none>"), "agent started");
    let token = match (&args.broker_token_file, &args.broker_token) {
        (Some(file), _) => Some(TokenSource::File(file.clone())),
        (None, Some(token)) => Some(TokenSource::Fixed(token.clone())),
        (None, None) => None,
    };
    let ready = pod::Ready::now();
    let broker: Option<SharedBroker> = match (&args.broker_url, token) {
        (Some(url), Some(token)) => Some(Arc::new(
            HttpBroker::new(
                url,
                token,
                args.namespace.clone(),
                args.agent_name.clone(),
                pod_name.clone(),
            )
            .with_readiness(ready.clone()),
        )),
        (Some(url), None) => {
            tokio::spawn(broker::resolve(url.clone()));
            warn!(
                "no broker token (COGO_BROKER_TOKEN_FILE or COGO_BROKER_TOKEN): serving probes only, leasing no tasks"
            );
            None
        }
        _ => None,
    };
    let metrics = pod::Metrics::new("agent", "role", args.role.slug());
    let model = match args.model_provider {
        None => None,
        Some(provider) => {
            let config = ModelConfig {
                provider,
                name: args.model_name.clone(),
                endpoint: args.model_endpoint.clone(),
                api_key: args.model_api_key.clone(),
                timeout: Duration::from_secs(args.model_timeout_seconds.max(1)),
                attempts: args.model_attempts,
            };
            let client = config.client().map_err(anyhow::Error::msg)?;
            info!(provider = ?provider, model = %config.name,
                endpoint = config.endpoint.as_deref().unwrap_or("<provider's>"), "model configured");
            Some(Arc::new(Model::new(
                client,
                config.attempts,
                ModelMetrics::new(&metrics, &args.agent_name),
            )))
        }
    };
    let config = RoleConfig {
        role: args.role,
        agent: args.agent_name.clone(),
        namespace: args.namespace.clone(),
        pod: pod_name,
        concurrency: args.concurrency,
        broker,
        metrics,
        worker_ping: Duration::from_secs(args.worker_ping_seconds.max(1)),
        no_worker_for: Duration::from_secs(args.no_worker_seconds.max(1)),
        model,
        fetch: FetchPolicy {
            allow_private: args.research_allow_private,
            ..FetchPolicy::default()
        },
        storage: Storage {
            database_url: args.database_url.clone().filter(|u| !u.is_empty()),
            database_ca: args
                .database_ca
                .clone()
                .filter(|c| !c.is_empty())
                .map(String::into_bytes),
            dir: args.store_dir.clone().unwrap_or_else(|| Storage::default().dir),
        },
        index: IndexPolicy {
            git: Limits {
                allow_private: args.index_allow_private,
                ..Limits::default()
            },
            prefixes: EmbeddingPrefixes {
                query: args.embedding_query_prefix.clone(),
                passage: args.embedding_passage_prefix.clone(),
            },
        },
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let (stop, _) = tokio::sync::watch::channel(false);
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    app::serve(listener, config, args.broker_url.clone(), (grace, ready), stop).await?;
    info!("agent stopped");
    Ok(())
}
