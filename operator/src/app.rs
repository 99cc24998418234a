//! The wiring of `cogo-operator run`: each step of [`run`](crate::run) is one function here,
//! and starts one part of the operator (the client, the health and metrics endpoints, the
//! leader election, the Supabase mirror, the broker, the controllers) or stops it again.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use cogo_api::{AgentTask, CogoAgent};
use cogo_operator::{
    broker::{self, Broker, SubtaskLimits},
    controller::{self, Context},
    leader::{self, LeaderElection, Timing},
    metrics::Metrics,
    scaler,
    server::{self, Health},
    supabase::{self, Mirror, results::ResultStore},
    tokens::{self, auth::Keys, worker_keys::WorkerKeys},
};
use futures::StreamExt;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

/// User-Agent of every request to the API server.
const USER_AGENT: &str = concat!("cogo-operator/", env!("CARGO_PKG_VERSION"));

/// Builds the Kubernetes client (kubeconfig or in-cluster) and checks that the API server
/// answers.
pub async fn connect() -> anyhow::Result<Client> {
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
    Ok(client)
}

/// Serves `/livez`, `/readyz` and `/metrics` on `addr`; returns the metrics, and the flag that
/// makes `/readyz` answer ready.
pub async fn start_metrics(addr: SocketAddr) -> anyhow::Result<(Arc<Metrics>, Arc<AtomicBool>)> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    info!(addr = %addr, "serving /livez, /readyz and /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, server::router(health)).await {
            error!(error = %e, "health server stopped");
        }
    });
    Ok((metrics, ready))
}

/// Whether the operator is stopping: on SIGTERM or SIGINT, or when it loses leadership.
#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Stops on SIGTERM or SIGINT.
    pub fn on_termination() -> Self {
        let (tx, rx) = watch::channel(false);
        let shutdown = Shutdown { tx, rx };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            termination().await;
            info!("termination signal received; shutting down");
            stop.stop();
        });
        shutdown
    }

    /// Stops now.
    pub fn stop(&self) {
        let _ = self.tx.send(true);
    }

    /// Exits the process (status 1) when it is still running `limit` after the stop began:
    /// a stop that hangs (API calls on a connection that went silent, say) must not keep a
    /// replica that lost the lease acting, or a pod from ending.
    pub fn exit_if_stuck(&self, limit: Duration) {
        let stopped = self.stopped();
        tokio::spawn(async move {
            stopped.await;
            tokio::time::sleep(limit).await;
            error!(
                seconds = limit.as_secs(),
                "the operator did not stop in time; exiting now"
            );
            std::process::exit(1);
        });
    }

    /// Resolves once stopping.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// How long the operator may take to stop after SIGTERM: within the pod's 30 s grace period.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// How long the operator may take to stop after it lost the lease: it learns of the loss
/// within the renew deadline (10 s) of its last renewal, and a standby may take over once
/// the lease duration (15 s) has passed.
pub const LOST_LEASE_STOP_DEADLINE: Duration = Duration::from_secs(4);

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

/// How often the leader looks for other pods still labelled the leader.
pub const STALE_LABEL_SWEEP: Duration = Duration::from_secs(10);

/// This replica's pod, when it is labelled `cogo.xyz/leader=true` while it leads and serves
/// the broker, so the broker Service reaches only the leader.
pub struct LeaderPod(Option<(Api<Pod>, String)>);

impl LeaderPod {
    /// Clears the label of `pod` in `namespace` (None: pods are not labelled), so a replica
    /// that led before it restarted does not keep receiving broker traffic.
    pub async fn clear(client: &Client, namespace: &str, pod: Option<String>) -> anyhow::Result<Self> {
        let Some(pod) = pod else {
            return Ok(LeaderPod(None));
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        leader::label_pod(&api, &pod, false)
            .await
            .context("cannot clear the leader label of this replica's pod")?;
        Ok(LeaderPod(Some((api, pod))))
    }

    /// Labels the pod the leader, once the broker serves; then, every
    /// [`STALE_LABEL_SWEEP`] until `stop` and while `leadership` surely holds the lease, clears
    /// the label from any other replica that still carries it (one that lost the lease but
    /// could not clear its own), so the broker Service reaches this replica alone.
    pub async fn mark(
        &self,
        leadership: &Leadership,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Some((api, pod)) = &self.0 else {
            return Ok(());
        };
        leader::label_pod(api, pod, true)
            .await
            .context("cannot label this replica's pod as the leader")?;
        info!(%pod, "labelled this pod the leader: the broker Service now reaches it");
        let (api, pod) = (api.clone(), pod.clone());
        let election = leadership.election.clone();
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                // Without an election there is no other leader; with one, only a fresh
                // renewal proves no standby can have taken over.
                let sure = election.as_ref().is_none_or(|e| e.surely_leads());
                let swept = if sure {
                    leader::clear_stale_labels(&api, &pod).await
                } else {
                    Ok(vec![])
                };
                match swept {
                    Ok(cleared) if !cleared.is_empty() => {
                        warn!(pods = ?cleared, "cleared the leader label of replicas that no longer lead");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot look for stale leader labels"),
                }
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(STALE_LABEL_SWEEP) => {}
                }
            }
        });
        Ok(())
    }

    /// Clears the label as the operator stops; a failure is logged.
    pub async fn clear_at_exit(&self) {
        if let Some((api, pod)) = &self.0
            && let Err(e) = leader::label_pod(api, pod, false).await
        {
            error!(error = %e, "cannot clear the leader label of this replica's pod");
        }
    }
}

/// This replica's leadership: won in an election, or taken without one.
pub struct Leadership {
    election: Option<Arc<LeaderElection>>,
    lost: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Leadership {
    /// Leads without an election (a single replica).
    pub fn unelected(metrics: &Arc<Metrics>) -> Self {
        metrics.set_leader(true);
        Leadership {
            election: None,
            lost: Arc::new(AtomicBool::new(false)),
            metrics: metrics.clone(),
        }
    }

    /// Campaigns for the Lease `name` of `namespace` as `identity` (ready meanwhile, as a
    /// standby) until it is won, then holds it; losing it later stops the operator. None when
    /// the operator is stopped before it wins.
    pub async fn win(
        client: &Client,
        (namespace, name): (&str, String),
        identity: &str,
        (metrics, ready): (&Arc<Metrics>, &AtomicBool),
        shutdown: &Shutdown,
    ) -> Option<Self> {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let election = Arc::new(LeaderElection::new(
            api,
            name,
            identity.to_string(),
            Timing::default(),
        ));
        info!(namespace = %namespace, identity = %identity, "campaigning for the leader lease");
        ready.store(true, Ordering::Relaxed);
        tokio::select! {
            _ = election.acquire() => {}
            _ = shutdown.stopped() => return None,
        }
        metrics.set_leader(true);
        let lost = Arc::new(AtomicBool::new(false));
        let (e, stop, flag) = (election.clone(), shutdown.clone(), lost.clone());
        tokio::spawn(async move {
            let reason = e.hold().await;
            error!(error = %reason, "lost leadership; stopping");
            flag.store(true, Ordering::Relaxed);
            stop.stop();
            // A standby may lead once the lease runs out: this replica must be gone by then.
            tokio::time::sleep(LOST_LEASE_STOP_DEADLINE).await;
            error!(
                seconds = LOST_LEASE_STOP_DEADLINE.as_secs(),
                "the operator did not stop in time after losing the lease; exiting now"
            );
            std::process::exit(1);
        });
        Some(Leadership {
            election: Some(election),
            lost,
            metrics: metrics.clone(),
        })
    }

    /// Gives the Lease up, if there is one; true when it had been lost before.
    pub async fn step_down(self) -> bool {
        if let Some(election) = self.election {
            self.metrics.set_leader(false);
            election.release().await;
        }
        self.lost.load(Ordering::Relaxed)
    }
}

/// Watches every CogoAgent, for the task controller's and the broker's lookups; returns the
/// store once it is filled, so no task is judged before its agents are known.
pub async fn watch_agents(client: &Client) -> anyhow::Result<Store<CogoAgent>> {
    let (agents, writer) = reflector::store::<CogoAgent>();
    let agent_watch = reflector(
        writer,
        watcher(
            Api::<CogoAgent>::all(client.clone()),
            cogo_operator::kube_io::watch_config(),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(agent_watch);
    cogo_operator::kube_io::listed(&agents)
        .await
        .context("cannot list CogoAgents")?;
    Ok(agents)
}

/// Loads (creating them the first time) the keys of agents' broker tokens and of worker
/// tokens from their Secrets in `namespace`, and follows the worker keys' Secret, so rotating
/// them takes effect without a restart.
pub async fn load_keys(client: &Client, namespace: &str) -> anyhow::Result<(Keys, Arc<RwLock<WorkerKeys>>)> {
    let keys = tokens::keys::load_or_create(&Api::namespaced(client.clone(), namespace))
        .await
        .context("cannot load the broker's signing keys")?;
    // Worker tokens are signed with keys only the operator holds.
    let secrets_api = Api::namespaced(client.clone(), namespace);
    let worker_keys = Arc::new(RwLock::new(
        tokens::worker_keys::load_or_create(&secrets_api)
            .await
            .context("cannot load the worker-token keys")?,
    ));
    tokio::spawn(follow_worker_keys(secrets_api, worker_keys.clone()));
    Ok((keys, worker_keys))
}

/// Keeps `keys` equal to the Secret of worker-token keys as it changes (a rotation); a Secret
/// that cannot be used is logged and the keys in use are kept.
async fn follow_worker_keys(api: Api<Secret>, keys: Arc<RwLock<WorkerKeys>>) {
    let config = cogo_operator::kube_io::watch_config()
        .fields(&format!("metadata.name={}", tokens::worker_keys::KEYS_SECRET));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        let Ok(secret) = event else { continue };
        match tokens::worker_keys::parse(&secret) {
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

/// What `--supabase-secret`, `--cluster-name` and `--intake-namespace` say.
pub struct SupabaseSettings {
    /// The Secret holding the database's connection string; None: no database.
    pub secret: Option<String>,
    /// The cluster's name in the rows; None: the UID of namespace kube-system.
    pub cluster_name: Option<String>,
    /// Where pending rows become AgentTasks, the first for rows naming no namespace; empty:
    /// no intake.
    pub intake_namespaces: Vec<String>,
}

/// What runs against Supabase's database, when one is configured.
pub struct Supabase {
    /// The mirror of AgentTasks.
    pub mirror: Option<Arc<Mirror>>,
    /// The store of results too large for status.
    pub results: Option<Arc<ResultStore>>,
    /// The mirror's task, which ends once it has written what waits.
    task: Option<JoinHandle<()>>,
}

impl Supabase {
    /// Waits (10 s at most) for the mirror to write what waits, before the lease is given up.
    pub async fn wait_for_mirror(self) {
        if let Some(task) = self.task
            && tokio::time::timeout(Duration::from_secs(10), task).await.is_err()
        {
            tracing::warn!("the mirror did not stop in 10 s");
        }
    }
}

/// Starts the Supabase mirror and, with an intake namespace, the intake, when `settings` name
/// a Secret (of `namespace`); the mirror reads agents from `agents`, counts into `metrics` and
/// keys rows with `keys`.
pub async fn start_supabase(
    client: &Client,
    settings: SupabaseSettings,
    namespace: &str,
    (agents, metrics, keys): (&Store<CogoAgent>, &Arc<Metrics>, &Keys),
    shutdown: &Shutdown,
) -> Supabase {
    let mut started = Supabase {
        mirror: None,
        results: None,
        task: None,
    };
    if let Some(secret) = settings.secret.clone() {
        let cluster = supabase::cluster_id(client, settings.cluster_name).await;
        let m = Mirror::new(metrics.clone(), cluster, keys.clone(), agents.clone());
        info!(secret = %secret, namespace = %namespace, cluster = %m.cluster(), "mirroring AgentTasks to Supabase");
        started.task = Some(tokio::spawn(m.clone().run(
            client.clone(),
            (namespace.to_string(), secret.clone()),
            shutdown.stopped(),
        )));
        started.results = Some(Arc::new(ResultStore::new(
            Api::namespaced(client.clone(), namespace),
            secret,
        )));
        started.mirror = Some(m);
    }
    if let Some(secret) = settings.secret
        && !settings.intake_namespaces.is_empty()
    {
        tokio::spawn(supabase::intake::run(
            client.clone(),
            (namespace.to_string(), secret),
            settings.intake_namespaces,
            (metrics.clone(), keys.clone()),
            shutdown.stopped(),
        ));
    }
    started
}

/// What the command line says about the broker.
pub struct BrokerSettings {
    /// Seconds between an agent's heartbeats.
    pub heartbeat_seconds: u32,
    /// How many sub-tasks may be made.
    pub subtask_limits: SubtaskLimits,
    /// How long a lease's status write waits for the attempt's outcome.
    pub coalesce_window: Duration,
}

/// The broker's state: the controllers' client, agents, scheduler and task cache, and the
/// keys, result store and settings of its own.
pub fn broker(
    ctx: &Context,
    (keys, worker_keys): (Keys, Arc<RwLock<WorkerKeys>>),
    results: Option<Arc<ResultStore>>,
    BrokerSettings {
        heartbeat_seconds,
        subtask_limits,
        coalesce_window,
    }: BrokerSettings,
) -> Broker {
    Broker {
        client: ctx.client.clone(),
        keys,
        scheduler: ctx.scheduler.clone(),
        agents: ctx.agents.clone(),
        heartbeat_seconds,
        max_result_bytes: 64 * 1024,
        tasks: ctx.tasks.clone(),
        results,
        recorder: ctx.recorder.clone(),
        worker_keys: Some(worker_keys),
        complete_budget: Default::default(),
        coalesce_window,
        subtask_limits,
        metrics: ctx.metrics.clone(),
    }
}

/// Gives every Running task a fresh lease, counted against its agent's concurrency, before the
/// first lease request is served: running tasks keep their pods.
pub async fn restore_leases(client: &Client, ctx: &Context) -> anyhow::Result<()> {
    let running = seed_leases(client, ctx).await.context("cannot list AgentTasks")?;
    info!(running, "leases of running tasks restored");
    Ok(())
}

/// Gives every Running task a fresh lease in `ctx.scheduler`; returns how many there were.
async fn seed_leases(client: &Client, ctx: &Context) -> kube::Result<usize> {
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

/// Serves the broker on `addr` until `stop` resolves.
pub async fn start_broker(
    addr: SocketAddr,
    state: Broker,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    info!(addr = %addr, "serving the task broker");
    tokio::spawn(async move {
        let served = axum::serve(listener, broker::router(state))
            .with_graceful_shutdown(stop)
            .await;
        if let Err(e) = served {
            error!(error = %e, "the broker stopped");
        }
    });
    Ok(())
}

/// Runs the CogoAgent, CogoWorker and AgentTask controllers, and the queue-depth scaler,
/// until the operator stops.
pub async fn run_controllers(ctx: Arc<Context>, shutdown: &Shutdown) {
    info!("starting the CogoAgent, CogoWorker and AgentTask controllers and the scaler");
    tokio::join!(
        controller::agent::run(ctx.clone(), shutdown.stopped()),
        controller::worker::run(ctx.clone(), shutdown.stopped()),
        scaler::run(ctx.clone(), shutdown.stopped()),
        controller::task::run(ctx, shutdown.stopped()),
    );
}
