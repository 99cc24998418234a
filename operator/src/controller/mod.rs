//! The CogoAgent, CogoWorker and AgentTask controllers. Each reconcile runs the same pipeline:
//! *dereference → validate → build → apply → update_status*. Only dereference, apply and
//! update_status talk to the API server (through [`kube_io`](crate::kube_io));
//! [`validate`](crate::validate), [`build`](crate::build), [`status`](crate::status) and the
//! task decisions of [`tasks`](crate::tasks) are pure. The AgentTask controller is a client of
//! the [`Scheduler`], which it shares with the broker.

pub mod agent;
pub mod items;
pub mod task;
pub mod worker;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use cogo_api::CogoAgent;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Recorder, Reporter},
        reflector::{self, Store},
    },
};
use tracing::warn;

use crate::{
    Error, Result,
    config::Config,
    kube_io::{FIELD_MANAGER, apply},
    metrics::Metrics,
    tasks::Scheduler,
    validate::ExistingChild,
};

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator settings.
    pub config: Config,
    /// Publishes Events on the reconciled objects.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Every CogoAgent, as watched (empty until a reflector fills it).
    pub agents: Store<CogoAgent>,
    /// The queue, leases and worker reports of AgentTasks, shared with the broker.
    pub scheduler: Arc<Scheduler>,
    /// Keys for the agents' broker tokens; None runs without the broker (no tokens issued).
    pub keys: Option<crate::tokens::auth::Keys>,
    /// The Supabase mirror, when configured: TTL deletion waits until it holds a task.
    pub mirror: Option<Arc<crate::supabase::Mirror>>,
    /// The task controller's cache, shared with the broker once the controller runs.
    pub tasks: Arc<std::sync::OnceLock<Store<cogo_api::AgentTask>>>,
    /// The CogoWorker controller's cache, shared with the scaler once the controller runs.
    pub workers: Arc<std::sync::OnceLock<Store<cogo_api::CogoWorker>>>,
    /// Keys of the workers' Executor tokens; None issues no worker tokens.
    pub worker_keys: Option<Arc<std::sync::RwLock<crate::tokens::worker_keys::WorkerKeys>>>,
}

impl Context {
    /// A context whose Events are reported as `cogo-operator` by `instance`.
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        let (agents, _) = reflector::store();
        let scheduler = Arc::new(
            Scheduler::new(config.lease_duration, metrics.clone()).with_limits(config.namespace_limits),
        );
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            agents,
            scheduler,
            keys: None,
            tasks: Default::default(),
            workers: Default::default(),
            mirror: None,
            worker_keys: None,
        }
    }

    /// The same context, issuing worker tokens signed with `keys`.
    pub fn with_worker_keys(
        mut self,
        keys: Arc<std::sync::RwLock<crate::tokens::worker_keys::WorkerKeys>>,
    ) -> Self {
        self.worker_keys = Some(keys);
        self
    }

    /// The same context, issuing broker tokens signed with `keys`.
    pub fn with_keys(mut self, keys: crate::tokens::auth::Keys) -> Self {
        // The broker marks its sub-tasks with the same keys.
        self.scheduler.vouch_subtasks_with(keys.clone());
        self.keys = Some(keys);
        self
    }

    /// The same context, with the Supabase mirror `mirror`.
    pub fn with_mirror(mut self, mirror: Option<Arc<crate::supabase::Mirror>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// What the controllers' status writes go through: the client, the recorder of their
    /// Events, and the metrics that count them (see [`update_status`](crate::kube_io::update_status)).
    pub fn io(&self) -> (&Client, &Recorder, &Metrics) {
        (&self.client, &self.recorder, &self.metrics)
    }

    /// The same context, reading agents from `agents`.
    pub fn with_agents(mut self, agents: Store<CogoAgent>) -> Self {
        self.agents = agents;
        self
    }
}

/// UID of the object's controller owner.
pub fn controller_uid(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// The Deployment and Service that exist under a pool's name, as read at the start of a
/// reconcile: for the conflict check, for the apply's comparison, and for status.
pub struct PoolChildren {
    /// The Deployment of that name, if any.
    pub deployment: Option<k8s_openapi::api::apps::v1::Deployment>,
    /// The Service of that name, if any.
    pub service: Option<k8s_openapi::api::core::v1::Service>,
}

impl PoolChildren {
    /// Reads both.
    pub async fn fetch(client: &Client, ns: &str, name: &str) -> Result<Self> {
        Ok(PoolChildren {
            deployment: Api::namespaced(client.clone(), ns).get_opt(name).await?,
            service: Api::namespaced(client.clone(), ns).get_opt(name).await?,
        })
    }

    /// What exists under the pool's name, for the conflict check.
    pub fn existing(&self) -> Vec<ExistingChild> {
        [
            existing("Deployment", self.deployment.as_ref()),
            existing("Service", self.service.as_ref()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Records an existing object under a child's name, for the conflict check.
pub fn existing<K: Resource>(kind: &'static str, obj: Option<&K>) -> Option<ExistingChild> {
    obj.map(|o| ExistingChild {
        kind,
        controller_uid: controller_uid(o.meta()),
    })
}

/// Tokens are valid this long: a token that leaks stops working within hours.
pub const TOKEN_TTL_SECONDS: i64 = 6 * 3600;
/// A token is reissued when less than this is left; pods read the renewed Secret (mounted,
/// so the kubelet updates the file within a minute or two) before the old token expires.
pub const TOKEN_RENEW_SECONDS: i64 = 3 * 3600;
/// The longest an agent or worker waits for its next reconcile, so tokens are renewed in time
/// whatever `--resync-seconds` says.
pub const TOKEN_CHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// Makes sure the Secret `name`, owned by the pool's resource, holds a token that `expiry`
/// accepts (it returns the token's expiry when the token verifies for this pool) with more
/// than [`TOKEN_RENEW_SECONDS`] left; otherwise applies the Secret `issue` builds (from now
/// and the token's lifetime). Returns the writes made.
pub async fn ensure_token_secret(
    secrets: &Api<Secret>,
    pool: &crate::build::Pool<'_>,
    name: &str,
    expiry: impl Fn(&str) -> Option<i64>,
    issue: impl FnOnce(i64, i64) -> Result<Secret>,
) -> Result<u64> {
    let now = jiff::Timestamp::now().as_second();
    if let Some(existing) = secrets.get_opt(name).await? {
        let token = existing
            .data
            .as_ref()
            .and_then(|d| d.get("token"))
            .map(|t| String::from_utf8_lossy(&t.0).into_owned());
        let owned = controller_uid(&existing.metadata).as_deref() == Some(pool.owner.uid.as_str());
        let fresh = token
            .and_then(|t| expiry(&t))
            .is_some_and(|exp| exp - now > TOKEN_RENEW_SECONDS);
        if owned && fresh {
            return Ok(0);
        }
    }
    apply(secrets, &issue(now, TOKEN_TTL_SECONDS)?).await?;
    Ok(1)
}

/// Looks up each named Secret and returns its keys (never its values), or None when missing.
pub async fn secret_keys(
    api: &Api<Secret>,
    names: BTreeSet<String>,
) -> Result<BTreeMap<String, Option<BTreeSet<String>>>> {
    let mut out = BTreeMap::new();
    for name in names {
        let keys = api.get_opt(&name).await?.map(|s| {
            let mut keys: BTreeSet<String> = s.data.unwrap_or_default().into_keys().collect();
            keys.extend(s.string_data.unwrap_or_default().into_keys());
            keys
        });
        out.insert(name, keys);
    }
    Ok(out)
}

/// Shared error policy: log, count, and retry after the configured backoff.
pub fn error_policy<K: Resource<DynamicType = ()> + ResourceExt>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&());
    warn!(%kind, name = %obj.name_any(), namespace = ?obj.namespace(), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(&kind, error);
    Action::requeue(ctx.config.error_backoff)
}
