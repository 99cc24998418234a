//! The agent roles. [`register`] gives a role its handlers (every role has the
//! [`builtin`] types), the lanes it leases tasks in, HTTP routes of its own on its port (the
//! Executor's worker WebSocket) and the background work it does while the pod runs.

pub mod builtin;
pub mod executor;
pub mod generate;
pub mod graphrag;
pub mod indexing;
pub mod orchestrator;
pub mod research;

use std::time::Duration;

use axum::Router;
use cogo_api::AgentRole;
use futures::future::BoxFuture;

use crate::{
    broker::SharedBroker,
    handler::{HandlerError, Registry, TaskContext},
    llm::{ChatRequest, ChatResponse, Model, SharedModel},
    pod::Metrics,
    pull::{FixedSlots, Lane},
};

/// What a role is set up from.
#[derive(Clone)]
pub struct RoleConfig {
    /// The role.
    pub role: AgentRole,
    /// The CogoAgent this pod belongs to.
    pub agent: String,
    /// Its namespace.
    pub namespace: String,
    /// This pod.
    pub pod: String,
    /// Tasks of the role's own lane this pod runs at once.
    pub concurrency: u32,
    /// The broker, when the pod has one.
    pub broker: Option<SharedBroker>,
    /// The pod's metrics.
    pub metrics: Metrics,
    /// How often the Executor pings its workers.
    pub worker_ping: Duration,
    /// How long a leased worker job waits while no worker of its kind is connected, before it
    /// goes back to the broker.
    pub no_worker_for: Duration,
    /// The agent's language model, when its CogoAgent names one.
    pub model: Option<SharedModel>,
    /// How the Research agent reads pages.
    pub fetch: research::fetch::FetchPolicy,
    /// Where the Indexing and GraphRAG agents keep indexes and graphs.
    pub storage: Storage,
    /// How the Indexing agent fetches repositories and embeds texts.
    pub index: indexing::IndexPolicy,
}

/// Where a role keeps what it builds: the database when a connection string is given, else a
/// local store in `dir`.
#[derive(Clone, Debug)]
pub struct Storage {
    /// The database's connection string (libpq form).
    pub database_url: Option<String>,
    /// PEM roots for the database's TLS.
    pub database_ca: Option<Vec<u8>>,
    /// The local store's directory (and scratch space for git checkouts).
    pub dir: std::path::PathBuf,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            database_url: None,
            database_ca: None,
            dir: std::env::temp_dir().join("cogo-store"),
        }
    }
}

/// What a role adds to the pod.
pub struct RoleParts {
    /// Routes served on the role's port next to the probes.
    pub routes: Router,
    /// Lanes besides the role's own.
    pub lanes: Vec<Lane>,
    /// Type prefixes the own lane leaves to the other lanes.
    pub own_lane_excludes: Vec<String>,
    /// Work that runs as long as the pod.
    pub background: Vec<BoxFuture<'static, ()>>,
}

impl RoleParts {
    fn none() -> Self {
        RoleParts {
            routes: Router::new(),
            lanes: vec![],
            own_lane_excludes: vec![],
            background: vec![],
        }
    }
}

/// Sets up `role`: registers its handlers into `registry` and returns its routes, every lane
/// it pulls in (its own lane of `concurrency` slots first) and its background work.
pub fn register(role: AgentRole, config: &RoleConfig, registry: &mut Registry) -> RoleParts {
    builtin::register(registry);
    if config.model.is_some() {
        registry.register(
            cogo_api::catalogue::llm::GENERATE,
            generate::Generate {
                model: config.model.clone(),
            },
        );
    }
    let mut parts = match role {
        AgentRole::Executor => executor::register(config, registry),
        AgentRole::Research => {
            research::register(registry, config.model.clone(), config.fetch.clone());
            RoleParts::none()
        }
        AgentRole::Orchestrator => orchestrator::register(config, registry),
        AgentRole::Indexing | AgentRole::GraphRag => {
            let st = &config.storage;
            let store =
                crate::store::Lazy::new(st.database_url.clone(), st.database_ca.clone(), st.dir.clone());
            if role == AgentRole::Indexing {
                indexing::register(registry, store, config.model.clone(), config.index.clone());
            } else {
                graphrag::register(registry, store, config.model.clone());
            }
            RoleParts::none()
        }
    };
    let own = Lane {
        name: role.slug().into(),
        type_prefixes: vec![],
        exclude_type_prefixes: parts.own_lane_excludes.clone(),
        slots: std::sync::Arc::new(FixedSlots::new(config.concurrency)),
        wait_seconds: crate::pull::OWN_LANE_WAIT_SECONDS,
    };
    parts.lanes.insert(0, own);
    parts
}

/// A store failure fails the task, retryable when the database may come back.
impl From<crate::store::StoreError> for HandlerError {
    fn from(e: crate::store::StoreError) -> Self {
        HandlerError {
            retryable: e.retryable(),
            message: e.to_string(),
        }
    }
}

/// Asks `model` for an answer to `req`, unless the task is cancelled first. A failed call
/// fails the task, retryable when another call may succeed.
pub(crate) async fn ask(
    ctx: &TaskContext,
    model: &Model,
    req: &ChatRequest,
) -> Result<ChatResponse, HandlerError> {
    unless_cancelled(ctx, async {
        model.chat(req).await.map_err(|e| HandlerError {
            retryable: e.retryable(),
            message: e.to_string(),
        })
    })
    .await
}

/// The model, or the error of an agent that has none.
pub(crate) fn need_model(model: &Option<SharedModel>, task_type: &str) -> Result<SharedModel, HandlerError> {
    model.clone().ok_or_else(|| {
        HandlerError::fatal(format!(
            "{task_type} needs a model, and this agent has none: set spec.model on its CogoAgent"
        ))
    })
}

/// Runs `work` unless the task is cancelled first.
pub(crate) async fn unless_cancelled<T>(
    ctx: &TaskContext,
    work: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    tokio::select! {
        r = work => r,
        _ = ctx.until_cancelled() => Err(HandlerError::cancelled()),
    }
}
