//! `cogo-operator`: runs the Cogo controllers. This file is the command line and the list of
//! wiring steps of `run`; each step is a function of [`app`].

mod app;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};
use cogo_operator::{broker::SubtaskLimits, config::Config, controller::Context};
use kube::Client;
use tracing::info;

/// The Cogo operator for AI agents on Kubernetes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the CogoAgent and CogoWorker controllers.
    Run(RunArgs),
    /// Run the chat gateway: the seed's Edge Function actions behind Supabase user JWTs.
    Gateway(GatewayArgs),
}

#[derive(clap::Args, Debug)]
struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "COGO_GATEWAY_ADDR", default_value = "0.0.0.0:8090")]
    addr: SocketAddr,
    /// Namespace of the agents, workers and tasks it serves: one the operator's intake serves
    /// (`--intake-namespace`), which the rows it inserts name.
    #[arg(long, env = "COGO_GATEWAY_NAMESPACE")]
    namespace: Option<String>,
    /// Connection string of Supabase's Postgres (libpq form or URL).
    #[arg(long, env = "COGO_GATEWAY_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// PEM file of the database server's CA, to verify its certificate against (when the file
    /// exists).
    #[arg(long, env = "COGO_GATEWAY_DATABASE_CA_FILE")]
    database_ca_file: Option<std::path::PathBuf>,
    /// Database connections the gateway keeps.
    #[arg(long, env = "COGO_GATEWAY_DATABASE_CONNECTIONS", default_value_t = 4)]
    database_connections: usize,
    /// The project's JWT secret, for HS256 user tokens.
    #[arg(long, env = "COGO_GATEWAY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The project's JWKS URL, for RS256 and ES256 user tokens
    /// (`https://<project>.supabase.co/auth/v1/.well-known/jwks.json`).
    #[arg(long, env = "COGO_GATEWAY_JWKS_URL")]
    jwks_url: Option<String>,
    /// The issuer user tokens must name (`https://<project>.supabase.co/auth/v1`).
    #[arg(long, env = "COGO_GATEWAY_JWT_ISSUER")]
    jwt_issuer: String,
    /// The audience user tokens must name.
    #[arg(long, env = "COGO_GATEWAY_JWT_AUDIENCE", default_value = "authenticated")]
    jwt_audience: String,
    /// Seconds of clock difference tolerated in `exp` and `nbf`.
    #[arg(long, env = "COGO_GATEWAY_JWT_LEEWAY_SECONDS", default_value_t = 30)]
    jwt_leeway_seconds: u64,
    /// Only `user_roles` rows of this domain (or of none) grant permissions.
    #[arg(long, env = "COGO_GATEWAY_DOMAIN")]
    domain: Option<String>,
    /// Requests per second per user, and the burst: `<rate>[/<burst>]`.
    #[arg(long, env = "COGO_GATEWAY_USER_RATE", default_value = "20/40")]
    user_rate: cogo_operator::gateway::limit::Rate,
    /// Requests per second per client address, and the burst: `<rate>[/<burst>]`.
    #[arg(long, env = "COGO_GATEWAY_ADDRESS_RATE", default_value = "100/200")]
    address_rate: cogo_operator::gateway::limit::Rate,
    /// The largest request body, in bytes.
    #[arg(long, env = "COGO_GATEWAY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    /// Seconds a request may take, besides the waits it asks for.
    #[arg(long, env = "COGO_GATEWAY_REQUEST_TIMEOUT_SECONDS", default_value_t = 15)]
    request_timeout_seconds: u64,
    /// Seconds the operator's intake may take to turn a request into an AgentTask.
    #[arg(long, env = "COGO_GATEWAY_INTAKE_TIMEOUT_SECONDS", default_value_t = 10)]
    intake_timeout_seconds: u64,
    /// Seconds `send_message` and `ai_greeting` wait for their answer.
    #[arg(long, env = "COGO_GATEWAY_ANSWER_TIMEOUT_SECONDS", default_value_t = 120)]
    answer_timeout_seconds: u64,
    /// Seconds a user's `user_roles` row is remembered (a change takes this long to apply).
    #[arg(long, env = "COGO_GATEWAY_ROLES_TTL_SECONDS", default_value_t = 5)]
    roles_ttl_seconds: u64,
    /// This replica's name in Events (defaults to the pod name).
    #[arg(long, env = "COGO_POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "COGO_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

impl GatewayArgs {
    fn settings(&self, client: &Client) -> anyhow::Result<cogo_operator::gateway::Settings> {
        use cogo_operator::gateway::{Settings, jwt::VerifierConfig};
        if self.jwt_secret.is_none() && self.jwks_url.is_none() {
            anyhow::bail!("set --jwt-secret (HS256), --jwks-url (RS256/ES256) or both");
        }
        // An empty or short secret would let anyone sign tokens; Supabase's have 32 or more.
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            anyhow::bail!("the JWT secret is shorter than 32 bytes: set the project's JWT secret");
        }
        // The chart mounts the database Secret's `ca.crt` when it has one: a missing file is no CA.
        let ca = match &self.database_ca_file {
            Some(path) if path.exists() => Some(
                std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            ),
            _ => None,
        };
        Ok(Settings {
            addr: self.addr,
            namespace: self
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            database_url: self.database_url.clone(),
            database_ca: ca,
            database_connections: self.database_connections.clamp(1, 64),
            verifier: VerifierConfig {
                hs256_secret: self.jwt_secret.clone().map(String::into_bytes),
                jwks_url: self.jwks_url.clone(),
                audience: self.jwt_audience.clone(),
                leeway_seconds: self.jwt_leeway_seconds,
                ..VerifierConfig::new(self.jwt_issuer.clone())
            },
            domain: self.domain.clone(),
            user_rate: self.user_rate,
            address_rate: self.address_rate,
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_seconds.max(1)),
            intake_timeout: Duration::from_secs(self.intake_timeout_seconds.max(1)),
            answer_timeout: Duration::from_secs(self.answer_timeout_seconds.max(1)),
            roles_ttl: Duration::from_secs(self.roles_ttl_seconds),
            identity: self
                .identity
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("cogo-gateway-{}", std::process::id())),
        })
    }
}

/// The gateway's HTTP client (for the JWKS): rustls with ring and the system's roots.
fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("cogo-gateway/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Serves the chat gateway until SIGTERM.
async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let _telemetry = init_tracing("cogo-gateway", args.log_format);
    let client = app::connect().await?;
    let settings = args.settings(&client)?;
    let shutdown = app::Shutdown::on_termination();
    cogo_operator::gateway::run(client, settings, http_client()?, shutdown.stopped()).await
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Image for CogoAgents that set no `spec.image`.
    #[arg(long, env = "COGO_AGENT_IMAGE", default_value = concat!("cogo-agent:", env!("CARGO_PKG_VERSION")))]
    agent_image: String,
    /// Image for CogoWorkers that set no `spec.image`.
    #[arg(long, env = "COGO_WORKER_IMAGE", default_value = concat!("cogo-worker:", env!("CARGO_PKG_VERSION")))]
    worker_image: String,
    /// Pull policy for the default images (Always, IfNotPresent, Never).
    #[arg(long, env = "COGO_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// URL agent pods use to reach the operator's broker.
    #[arg(
        long,
        env = "COGO_BROKER_URL",
        default_value = "http://cogo-operator.cogo-system.svc:8080"
    )]
    broker_url: String,
    /// Address of the health and metrics endpoints.
    #[arg(long, env = "COGO_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
    /// Seconds between reconciles of an unchanged object.
    #[arg(long, env = "COGO_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Elect a leader with a Lease, so several replicas can run.
    #[arg(long, env = "COGO_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "COGO_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "COGO_LEASE_NAME", default_value = "cogo-operator")]
    lease_name: String,
    /// This replica's identity in the election and in Events (defaults to the pod name).
    #[arg(long, env = "COGO_POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "COGO_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Address of the broker agents pull tasks from (served by the leader).
    #[arg(long, env = "COGO_BROKER_ADDR", default_value = "0.0.0.0:8080")]
    broker_addr: SocketAddr,
    /// Seconds between an agent's heartbeats.
    #[arg(long, env = "COGO_HEARTBEAT_SECONDS", default_value_t = 5)]
    heartbeat_seconds: u32,
    /// Milliseconds a lease's status write waits for the attempt's outcome: a task done by
    /// then gets one status write (its outcome) instead of two. Until its lease is written a
    /// task's status says Pending, and it runs again should the operator stop meanwhile.
    /// 0: every lease is written at once.
    #[arg(long, env = "COGO_COALESCE_MILLIS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    coalesce_millis: u64,
    /// The largest AgentTask `spec.input` accepted, in bytes of JSON.
    #[arg(long, env = "COGO_MAX_TASK_INPUT_BYTES", default_value_t = 256 * 1024)]
    max_task_input_bytes: usize,
    /// Secret, in the operator's namespace, whose key `url` is the connection string of
    /// Supabase's Postgres; every AgentTask is mirrored there. Unset: no mirror.
    #[arg(long, env = "COGO_SUPABASE_SECRET")]
    supabase_secret: Option<String>,
    /// The name of this cluster in the Supabase mirror's rows (column `cluster`), so operators
    /// of several clusters can share one database. Unset: the UID of namespace kube-system.
    #[arg(long, env = "COGO_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Label this replica's pod (`COGO_POD_NAME` in the lease namespace) `cogo.xyz/leader=true`
    /// while it leads and serves the broker, so the broker Service reaches only the leader.
    #[arg(long, env = "COGO_LABEL_LEADER_POD", default_value_t = false, action = clap::ArgAction::Set)]
    label_leader_pod: bool,
    /// Seconds the queue-depth scaler waits before it removes an agent's pods: it keeps the
    /// most pods it wanted within this window.
    #[arg(long, env = "COGO_SCALE_DOWN_STABILIZATION_SECONDS", default_value_t = 120)]
    scale_down_stabilization_seconds: u64,
    /// Sub-tasks one task may create.
    #[arg(long, env = "COGO_MAX_SUBTASKS_PER_TASK", default_value_t = 100)]
    max_subtasks_per_task: usize,
    /// Levels of sub-tasks below a task a user created.
    #[arg(long, env = "COGO_MAX_SUBTASK_DEPTH", default_value_t = 5)]
    max_subtask_depth: usize,
    /// Unfinished sub-tasks one namespace may hold.
    #[arg(long, env = "COGO_MAX_SUBTASKS_PER_NAMESPACE", default_value_t = 10_000)]
    max_subtasks_per_namespace: usize,
    /// Tasks one namespace may have queued at once; a new task past it stays Pending, not
    /// accepted (`NamespaceQueueFull`), until one is leased. 0: no limit.
    #[arg(long, env = "COGO_MAX_QUEUED_TASKS_PER_NAMESPACE", default_value_t = 0)]
    max_queued_tasks_per_namespace: usize,
    /// Tasks one namespace may run at once; past it, its queued tasks wait for a slot
    /// (sub-tasks of running tasks are never held back). 0: no limit.
    #[arg(long, env = "COGO_MAX_RUNNING_TASKS_PER_NAMESPACE", default_value_t = 0)]
    max_running_tasks_per_namespace: usize,
    /// Namespaces where rows inserted into `distributed_agent_tasks` as `pending` become
    /// AgentTasks (comma-separated): a row naming one of them becomes a task there, a row
    /// naming none in the first, a row naming another namespace is left to the operator that
    /// serves it. Needs `--supabase-secret`. Unset: no intake.
    #[arg(
        long,
        env = "COGO_INTAKE_NAMESPACE",
        requires = "supabase_secret",
        value_delimiter = ',',
        value_parser = dns_label
    )]
    intake_namespace: Vec<String>,
}

/// A namespace's name (an RFC 1123 label), or why the argument is not one.
fn dns_label(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a namespace name (lower-case letters, digits and '-', at most 63, starting and ending alphanumeric)"
        ))
    }
}

/// Sets up logs, and traces when an OTLP endpoint is configured, for the process `service`.
fn init_tracing(service: &str, format: LogFormat) -> cogo_telemetry::Telemetry {
    let format = match format {
        LogFormat::Json => cogo_telemetry::LogFormat::Json,
        LogFormat::Text => cogo_telemetry::LogFormat::Text,
    };
    let pod = std::env::var("COGO_POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    cogo_telemetry::init(
        service,
        &[("service.instance.id", pod.clone()), ("k8s.pod.name", pod)],
        format,
        "info,kube=warn,tower=warn,hyper=warn",
    )
}

impl RunArgs {
    /// The operator's settings.
    fn config(&self) -> Config {
        Config {
            agent_image: Some(self.agent_image.clone()),
            worker_image: Some(self.worker_image.clone()),
            default_pull_policy: self.image_pull_policy.clone(),
            broker_url: self.broker_url.clone(),
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            max_task_input_bytes: self.max_task_input_bytes,
            lease_duration: Duration::from_secs(3 * u64::from(self.heartbeat_seconds.max(1))),
            scale_down_window: Duration::from_secs(self.scale_down_stabilization_seconds),
            namespace_limits: cogo_operator::tasks::NamespaceLimits {
                queued: self.max_queued_tasks_per_namespace,
                running: self.max_running_tasks_per_namespace,
            },
            trace_env: cogo_operator::config::trace_env(|k| std::env::var(k).ok()),
            ..Config::default()
        }
    }

    /// This replica's identity in the election and in Events.
    fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("cogo-operator-{}", std::process::id()))
    }

    /// The operator's own namespace: of the leader Lease, the leader pod and the key Secrets.
    fn namespace(&self, client: &Client) -> String {
        self.lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    }

    /// The pod labelled the leader while this replica leads; None when pods are not labelled.
    fn leader_pod(&self) -> anyhow::Result<Option<String>> {
        match (self.label_leader_pod, self.identity.clone()) {
            (true, Some(pod)) => Ok(Some(pod)),
            (true, None) => anyhow::bail!("--label-leader-pod needs the pod's name (COGO_POD_NAME)"),
            _ => Ok(None),
        }
    }

    /// Where the Supabase database is, and what goes there.
    fn supabase(&self) -> app::SupabaseSettings {
        app::SupabaseSettings {
            secret: self.supabase_secret.clone(),
            cluster_name: self.cluster_name.clone(),
            intake_namespaces: self.intake_namespace.clone(),
        }
    }

    /// What the broker tells agents, and how many sub-tasks it lets them make.
    fn broker(&self) -> app::BrokerSettings {
        app::BrokerSettings {
            heartbeat_seconds: self.heartbeat_seconds.max(1),
            coalesce_window: Duration::from_millis(self.coalesce_millis),
            subtask_limits: SubtaskLimits {
                per_task: self.max_subtasks_per_task,
                depth: self.max_subtask_depth,
                per_namespace: self.max_subtasks_per_namespace,
            },
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Gateway(args) => gateway(args).await,
    }
}

/// Starts the operator, step by step, and stops it again on SIGTERM or a lost leadership.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = init_tracing("cogo-operator", args.log_format);
    let config = args.config();
    let client = app::connect().await?;
    let (metrics, ready) = app::start_metrics(args.health_addr).await?;
    let identity = args.identity();
    let shutdown = app::Shutdown::on_termination();
    shutdown.exit_if_stuck(app::STOP_DEADLINE);
    let namespace = args.namespace(&client);
    let leader_pod = app::LeaderPod::clear(&client, &namespace, args.leader_pod()?).await?;
    let leadership = if args.leader_elect {
        let lease = (namespace.as_str(), args.lease_name.clone());
        match app::Leadership::win(&client, lease, &identity, (&metrics, &ready), &shutdown).await {
            Some(won) => won,
            None => return Ok(()),
        }
    } else {
        app::Leadership::unelected(&metrics)
    };
    let agents = app::watch_agents(&client).await?;
    let (keys, worker_keys) = app::load_keys(&client, &namespace).await?;
    let ctx = Context::new(client.clone(), config, metrics.clone(), Some(identity))
        .with_agents(agents.clone())
        .with_keys(keys.clone())
        .with_worker_keys(worker_keys.clone());
    let shared = (&agents, &metrics, &keys);
    let supabase = app::start_supabase(&client, args.supabase(), &namespace, shared, &shutdown).await;
    let ctx = Arc::new(ctx.with_mirror(supabase.mirror.clone()));
    let broker = app::broker(&ctx, (keys, worker_keys), supabase.results.clone(), args.broker());
    app::restore_leases(&client, &ctx).await?;
    app::start_broker(args.broker_addr, broker, shutdown.stopped()).await?;
    leader_pod.mark(&leadership, shutdown.stopped()).await?;
    ready.store(true, Ordering::Relaxed);
    app::run_controllers(ctx, &shutdown).await;
    supabase.wait_for_mirror().await;
    leader_pod.clear_at_exit().await;
    // A replica that lost the lease exits non-zero, so it is seen and restarts as a candidate.
    if leadership.step_down().await {
        anyhow::bail!("stopped after losing leadership");
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(args: &[&str]) -> Result<Vec<String>, String> {
        let argv = ["cogo-operator", "run", "--supabase-secret", "db"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Run(run),
            }) => Ok(run.intake_namespace),
            Ok(_) => Err("not run".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn intake_namespaces_are_a_comma_separated_list_of_namespace_names() {
        assert_eq!(intake(&[]).unwrap(), Vec::<String>::new(), "no intake");
        assert_eq!(intake(&["--intake-namespace", "chat"]).unwrap(), ["chat"]);
        assert_eq!(
            intake(&["--intake-namespace", "chat, tenant-b"]).unwrap(),
            ["chat", "tenant-b"]
        );
        for bad in ["Chat", "tenant_b", "-a", "chat,", &"a".repeat(64)] {
            let err = intake(&[&format!("--intake-namespace={bad}")]).unwrap_err();
            assert!(err.contains("is not a namespace name"), "{bad}: {err}");
        }
    }
}
