//! `cogo-operator`: runs the Cogo controllers.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use cogo_api::{AgentTask, CogoAgent};
use cogo_operator::{
    broker,
    config::Config,
    controller::{self, Context},
    leader::{LeaderElection, Timing},
    metrics::Metrics,
    server::{self, Health},
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::watch;
use tracing::{error, info};

/// User-Agent of every request to the API server.
const USER_AGENT: &str = concat!("cogo-operator/", env!("CARGO_PKG_VERSION"));

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
    /// Sub-tasks one task may create.
    #[arg(long, env = "COGO_MAX_SUBTASKS_PER_TASK", default_value_t = 100)]
    max_subtasks_per_task: usize,
    /// Levels of sub-tasks below a task a user created.
    #[arg(long, env = "COGO_MAX_SUBTASK_DEPTH", default_value_t = 5)]
    max_subtask_depth: usize,
    /// Unfinished sub-tasks one namespace may hold.
    #[arg(long, env = "COGO_MAX_SUBTASKS_PER_NAMESPACE", default_value_t = 10_000)]
    max_subtasks_per_namespace: usize,
    /// Namespace where rows inserted into `distributed_agent_tasks` as `pending` become
    /// AgentTasks. Needs `--supabase-secret`. Unset: no intake.
    #[arg(long, env = "COGO_INTAKE_NAMESPACE", requires = "supabase_secret")]
    intake_namespace: Option<String>,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Gives every Running task a fresh lease in `ctx.scheduler`; returns how many there were.
async fn seed_leases(client: &Client, ctx: &Context) -> anyhow::Result<usize> {
    let api = Api::<AgentTask>::all(client.clone());
    let mut params = ListParams::default().limit(500);
    let mut running = 0;
    loop {
        let page = api.list(&params).await?;
        running += ctx
            .scheduler
            .seed_running(&page.items, &ctx.agents, std::time::Instant::now());
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(running),
        }
    }
}

/// Keeps `keys` equal to the Secret of worker-token keys as it changes (a rotation); a Secret
/// that cannot be used is logged and the keys in use are kept.
async fn follow_worker_keys(
    api: Api<k8s_openapi::api::core::v1::Secret>,
    keys: Arc<std::sync::RwLock<cogo_operator::tokens::worker_keys::WorkerKeys>>,
) {
    let config = watcher::Config::default().fields(&format!(
        "metadata.name={}",
        cogo_operator::tokens::worker_keys::KEYS_SECRET
    ));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        let Ok(secret) = event else { continue };
        match cogo_operator::tokens::worker_keys::parse(&secret) {
            Ok(fresh) => {
                if let Ok(mut k) = keys.write() {
                    if k.current.id != fresh.current.id {
                        info!(current = %fresh.current.id, "worker-token keys rotated");
                    }
                    *k = fresh;
                }
            }
            Err(e) => error!(error = %e, "keeping the worker-token keys in use"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let config = Config {
        agent_image: Some(args.agent_image),
        worker_image: Some(args.worker_image),
        default_pull_policy: args.image_pull_policy,
        broker_url: args.broker_url,
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        max_task_input_bytes: args.max_task_input_bytes,
        lease_duration: Duration::from_secs(3 * u64::from(args.heartbeat_seconds.max(1))),
        ..Config::default()
    };
    let mut kube_config = kube::Config::infer()
        .await
        .context("cannot configure a Kubernetes client (kubeconfig or in-cluster)")?;
    // The API server's audit log and metrics name the operator by this.
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    let client = Client::try_from(kube_config).context("cannot build the Kubernetes client")?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    info!(server = %version.git_version, "connected to the API server");

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.health_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.health_addr))?;
    info!(addr = %args.health_addr, "serving /livez, /readyz and /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, server::router(health)).await {
            error!(error = %e, "health server stopped");
        }
    });

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("cogo-operator-{}", std::process::id()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            termination().await;
            info!("termination signal received; shutting down");
            let _ = stop_tx.send(true);
        });
    }

    // A replica that led before it restarted must not keep receiving broker traffic.
    let leader_pod = match (args.label_leader_pod, args.identity.clone()) {
        (true, Some(pod)) => {
            let ns = args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
            cogo_operator::leader::label_pod(&api, &pod, false)
                .await
                .context("cannot clear the leader label of this replica's pod")?;
            Some((api, pod))
        }
        (true, None) => anyhow::bail!("--label-leader-pod needs the pod's name (COGO_POD_NAME)"),
        _ => None,
    };

    let lost_leadership = Arc::new(AtomicBool::new(false));
    let election = if args.leader_elect {
        let ns = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let election = Arc::new(LeaderElection::new(
            api,
            args.lease_name,
            identity.clone(),
            Timing::default(),
        ));
        info!(namespace = %ns, identity = %identity, "campaigning for the leader lease");
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            _ = election.acquire() => {}
            _ = stopped() => return Ok(()),
        }
        metrics.set_leader(true);
        let (e, stop_tx, lost) = (election.clone(), stop_tx.clone(), lost_leadership.clone());
        tokio::spawn(async move {
            let reason = e.hold().await;
            error!(error = %reason, "lost leadership; stopping");
            lost.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = stop_tx.send(true);
        });
        Some(election)
    } else {
        None
    };

    // Every CogoAgent, for the task controller's lookups; filled before tasks are judged.
    let (agents, writer) = reflector::store::<CogoAgent>();
    let agent_watch = reflector(
        writer,
        watcher(Api::<CogoAgent>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(agent_watch);
    agents
        .wait_until_ready()
        .await
        .context("cannot list CogoAgents")?;

    // The broker's signing keys live in a Secret of the operator's namespace.
    let keys_ns = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let keys = cogo_operator::tokens::keys::load_or_create(&Api::namespaced(client.clone(), &keys_ns))
        .await
        .context("cannot load the broker's signing keys")?;
    // Worker tokens are signed with keys only the operator holds; rotating them in their
    // Secret takes effect without a restart.
    let secrets_api = Api::namespaced(client.clone(), &keys_ns);
    let worker_keys = Arc::new(std::sync::RwLock::new(
        cogo_operator::tokens::worker_keys::load_or_create(&secrets_api)
            .await
            .context("cannot load the worker-token keys")?,
    ));
    tokio::spawn(follow_worker_keys(secrets_api, worker_keys.clone()));
    let ctx = Context::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
        Some(identity.clone()),
    )
    .with_agents(agents.clone())
    .with_keys(keys.clone())
    .with_worker_keys(worker_keys.clone());
    let mut mirror_task = None;
    let mut results = None;
    let mut mirror = None;
    if let Some(secret) = args.supabase_secret.clone() {
        let cluster = cogo_operator::supabase::cluster_id(&client, args.cluster_name.clone()).await;
        let m = cogo_operator::supabase::Mirror::new(metrics.clone(), cluster, keys.clone());
        info!(secret = %secret, namespace = %keys_ns, cluster = %m.cluster(), "mirroring AgentTasks to Supabase");
        mirror_task = Some(tokio::spawn(m.clone().run(
            client.clone(),
            agents.clone(),
            (keys_ns.clone(), secret.clone()),
            stopped(),
        )));
        results = Some(Arc::new(cogo_operator::supabase::results::ResultStore::new(
            Api::namespaced(client.clone(), &keys_ns),
            secret,
        )));
        mirror = Some(m);
    }
    if let (Some(secret), Some(target)) = (args.supabase_secret.clone(), args.intake_namespace.clone()) {
        tokio::spawn(cogo_operator::supabase::intake::run(
            client.clone(),
            (keys_ns.clone(), secret),
            target,
            (metrics.clone(), keys.clone()),
            stopped(),
        ));
    }
    let ctx = ctx.with_mirror(mirror.clone());
    let ctx = Arc::new(ctx);

    let broker_state = broker::Broker {
        client: client.clone(),
        keys,
        scheduler: ctx.scheduler.clone(),
        agents,
        heartbeat_seconds: args.heartbeat_seconds.max(1),
        max_result_bytes: 64 * 1024,
        tasks: ctx.tasks.clone(),
        results,
        recorder: ctx.recorder.clone(),
        worker_keys: Some(worker_keys),
        complete_budget: Default::default(),
        subtask_limits: broker::SubtaskLimits {
            per_task: args.max_subtasks_per_task,
            depth: args.max_subtask_depth,
            per_namespace: args.max_subtasks_per_namespace,
        },
    };
    // Running tasks keep their pods: each gets a fresh lease, and counts against its agent's
    // concurrency, before the first lease request is served.
    let running = seed_leases(&client, &ctx)
        .await
        .context("cannot list AgentTasks")?;
    info!(running, "leases of running tasks restored");
    let broker_listener = tokio::net::TcpListener::bind(args.broker_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.broker_addr))?;
    info!(addr = %args.broker_addr, "serving the task broker");
    let broker_stop = stopped();
    tokio::spawn(async move {
        let served = axum::serve(broker_listener, broker::router(broker_state))
            .with_graceful_shutdown(broker_stop)
            .await;
        if let Err(e) = served {
            error!(error = %e, "the broker stopped");
        }
    });
    if let Some((api, pod)) = &leader_pod {
        cogo_operator::leader::label_pod(api, pod, true)
            .await
            .context("cannot label this replica's pod as the leader")?;
        info!(%pod, "labelled this pod the leader: the broker Service now reaches it");
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    info!("starting the CogoAgent, CogoWorker and AgentTask controllers");
    tokio::join!(
        controller::agent::run(ctx.clone(), stopped()),
        controller::worker::run(ctx.clone(), stopped()),
        controller::task::run(ctx, stopped()),
    );

    // The mirror writes what waits before the lease is given up.
    if let Some(task) = mirror_task
        && tokio::time::timeout(Duration::from_secs(10), task).await.is_err()
    {
        tracing::warn!("the mirror did not stop in 10 s");
    }
    if let Some((api, pod)) = &leader_pod
        && let Err(e) = cogo_operator::leader::label_pod(api, pod, false).await
    {
        error!(error = %e, "cannot clear the leader label of this replica's pod");
    }
    if let Some(election) = election {
        metrics.set_leader(false);
        election.release().await;
    }
    // A replica that lost the lease exits non-zero, so it is seen and restarts as a candidate.
    if lost_leadership.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!("stopped after losing leadership");
    }
    info!("stopped");
    Ok(())
}
