//! The chat gateway (`cogo-operator gateway`): the seed's Edge Function actions (`status`,
//! `languages`, `ai_greeting`, `send_message`, `agent_task`) behind Supabase user JWTs.
//!
//! A request is rate-limited by address, its token verified ([`jwt`]), rate-limited by user,
//! and its action's permission checked against the token's and the user's `user_roles` grants
//! ([`perms`]). Tasks are created the way Supabase clients create them: a `pending` row in
//! `distributed_agent_tasks` with the caller as `user_id`, which the operator's intake turns into
//! a sealed AgentTask (`row-<id>`) whose mirror row the caller owns under row-level security.
//! The gateway follows the task through one shared watch ([`tasks`]) and streams its progress.
//! Every request it authenticated or refused is audited ([`db`]).

pub mod db;
pub mod jwt;
pub mod limit;
pub mod perms;
pub mod routes;
pub mod tasks;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cogo_api::{AgentTask, CogoAgent, CogoWorker};
use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::mpsc;
use tracing::info;

use self::{
    db::{AuditRecord, Db},
    limit::{Limiter, Rate},
    perms::RoleRow,
    tasks::Hub,
};

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The namespace of the agents, workers and tasks it serves: one of the operator's intake
    /// namespaces, which its rows name.
    pub namespace: String,
    /// The database's libpq connection string.
    pub database_url: String,
    /// The database server's CA (PEM), when its certificate is to be verified against it.
    pub database_ca: Option<Vec<u8>>,
    /// Database connections.
    pub database_connections: usize,
    /// How tokens are verified.
    pub verifier: jwt::VerifierConfig,
    /// The domain whose `user_roles` rows grant permissions (rows of other domains do not);
    /// none: every row.
    pub domain: Option<String>,
    /// Requests per user.
    pub user_rate: Rate,
    /// Requests per address.
    pub address_rate: Rate,
    /// The largest body taken, in bytes.
    pub max_body_bytes: usize,
    /// How long a request may take, besides the waits it asks for.
    pub request_timeout: Duration,
    /// How long the operator's intake may take to turn a row into an AgentTask.
    pub intake_timeout: Duration,
    /// How long `send_message` and `ai_greeting` wait for their task's answer.
    pub answer_timeout: Duration,
    /// How long a user's `user_roles` row is remembered.
    pub roles_ttl: Duration,
    /// This replica's name, in Events.
    pub identity: String,
}

/// A user's `user_roles` row, remembered for [`Settings::roles_ttl`].
type RolesCache = HashMap<String, (Instant, Option<RoleRow>)>;

/// The gateway's state, shared by its requests.
pub struct Gateway {
    /// How it runs.
    pub settings: Settings,
    /// The namespace's CogoAgents, as one watch keeps them.
    pub agents: Store<CogoAgent>,
    /// The namespace's CogoWorkers, as one watch keeps them.
    pub workers: Store<CogoWorker>,
    /// Verifies tokens.
    pub verifier: jwt::Verifier,
    /// The database.
    pub db: Arc<Db>,
    /// The audit's queue.
    pub audit: mpsc::Sender<AuditRecord>,
    /// Buckets per user.
    pub users: Limiter<String>,
    /// Buckets per address.
    pub addresses: Limiter<IpAddr>,
    roles: Mutex<RolesCache>,
    /// Follows tasks.
    pub hub: Arc<Hub>,
    /// Publishes Events on the tasks it creates.
    pub recorder: Recorder,
}

/// Users whose roles are remembered at most; past it the memory is cleared.
const MAX_CACHED_USERS: usize = 10_000;

impl Gateway {
    /// The gateway of `settings`, talking to Kubernetes with `client` and fetching JWKS with
    /// `http`. Starts its watch of tasks and its audit writer.
    pub fn new(client: Client, settings: Settings, http: reqwest::Client) -> Arc<Gateway> {
        let ns = settings.namespace.clone();
        let db = Arc::new(Db::new(
            settings.database_url.clone(),
            settings.database_ca.clone(),
            settings.database_connections,
        ));
        let hub = Hub::new(Api::<AgentTask>::namespaced(client.clone(), &ns));
        tokio::spawn(hub.clone().run());
        let reporter = Reporter {
            controller: "cogo-gateway".into(),
            instance: Some(settings.identity.clone()),
        };
        Arc::new(Gateway {
            agents: mirrored(Api::namespaced(client.clone(), &ns)),
            workers: mirrored(Api::namespaced(client.clone(), &ns)),
            verifier: jwt::Verifier::new(settings.verifier.clone(), http),
            audit: db::audit_writer(db.clone(), 10_000),
            db,
            users: Limiter::new(settings.user_rate),
            addresses: Limiter::new(settings.address_rate),
            roles: Mutex::new(HashMap::new()),
            hub,
            recorder: Recorder::new(client, reporter),
            settings,
        })
    }

    /// The user's `user_roles` row, from memory when read within [`Settings::roles_ttl`].
    pub async fn roles(&self, user: &str) -> Result<Option<RoleRow>, db::DbError> {
        let now = Instant::now();
        if let Some((at, row)) = self.roles.lock().unwrap_or_else(|e| e.into_inner()).get(user)
            && now.duration_since(*at) < self.settings.roles_ttl
        {
            return Ok(row.clone());
        }
        let row = self.db.roles(user).await?;
        let mut cache = self.roles.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_USERS {
            cache.clear();
        }
        cache.insert(user.to_string(), (now, row.clone()));
        Ok(row)
    }
}

/// A store of the objects `api` reaches, kept by a watch that runs until the process ends.
fn mirrored<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, crate::kube_io::watch_config()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(stream.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, "the gateway's watch failed; it resumes");
        }
    }));
    reader
}

/// Serves the gateway on `settings.addr` until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    http: reqwest::Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = settings.addr;
    let gateway = Gateway::new(client, settings, http);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, namespace = %gateway.settings.namespace, "the chat gateway listens");
    axum::serve(
        listener,
        routes::router(gateway).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}
