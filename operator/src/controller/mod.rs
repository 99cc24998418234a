//! The CogoAgent and CogoWorker controllers. Each reconcile runs the same pipeline:
//! *dereference → validate → build → apply → update_status*. Only dereference, apply and
//! update_status talk to the API server; [`validate`](crate::validate),
//! [`build`](crate::build) and [`status`](crate::status) are pure.

pub mod agent;
pub mod task;
pub mod worker;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    sync::Arc,
};

use cogo_api::{CogoAgent, conditions};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, Store},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    Error, Result,
    build::FIELD_MANAGER,
    config::Config,
    metrics::Metrics,
    validate::{ExistingChild, Invalid},
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
    /// Accepted tasks waiting for a lease, shared with the broker.
    pub queue: Arc<std::sync::Mutex<crate::broker::queue::TaskQueue>>,
    /// Wakes the lease requests that can take a task just queued, or a slot just freed.
    pub queued: Arc<crate::broker::wake::Wakeups>,
    /// Keys for the agents' broker tokens; None runs without the broker (no tokens issued).
    pub keys: Option<crate::tokens::auth::Keys>,
    /// Leases of running tasks, shared with the broker.
    pub leases: Arc<std::sync::Mutex<crate::broker::leases::Leases>>,
    /// The Supabase mirror, when configured: TTL deletion waits until it holds a task.
    pub mirror: Option<Arc<crate::supabase::Mirror>>,
    /// New tasks queued before their first status write (see the task controller).
    pub deferred: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// The task controller's cache, shared with the broker once the controller runs.
    pub tasks: Arc<std::sync::OnceLock<Store<cogo_api::AgentTask>>>,
    /// Keys of the workers' Executor tokens; None issues no worker tokens.
    pub worker_keys: Option<Arc<std::sync::RwLock<crate::tokens::worker_keys::WorkerKeys>>>,
    /// What the Executors report about their workers, shared with the broker.
    pub workers: Arc<std::sync::Mutex<crate::broker::workers::WorkerReports>>,
}

impl Context {
    /// A context whose Events are reported as `cogo-operator` by `instance`.
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        let (agents, _) = reflector::store();
        let leases = crate::broker::leases::Leases::new(config.lease_duration);
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            agents,
            queue: Default::default(),
            queued: Default::default(),
            keys: None,
            leases: Arc::new(std::sync::Mutex::new(leases)),
            tasks: Default::default(),
            deferred: Default::default(),
            mirror: None,
            worker_keys: None,
            workers: Default::default(),
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
        self.keys = Some(keys);
        self
    }

    /// The same context, with the Supabase mirror `mirror`.
    pub fn with_mirror(mut self, mirror: Option<Arc<crate::supabase::Mirror>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// The same context, reading agents from `agents`.
    pub fn with_agents(mut self, agents: Store<CogoAgent>) -> Self {
        self.agents = agents;
        self
    }
}

/// Server-side applies `obj` with the operator's field manager, taking over conflicting fields.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// Whether every field of `desired` is present in `live` with the same value: objects by key
/// (extra keys in `live`, such as defaults the API server filled in, are fine), lists by
/// position with the same length, scalars by equality.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            d.iter().all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv)))
        }
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (d, l) => d == l,
    }
}

/// Applies `desired` unless `live` (the object as last read) already holds all of it, so an
/// unchanged world costs no write. Returns the object as it now is and the number of writes
/// made (0 or 1).
pub async fn apply_if_changed<K>(api: &Api<K>, desired: &K, live: Option<K>) -> Result<(K, u64)>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    if let Some(live) = live {
        let d = serde_json::to_value(desired).map_err(|source| Error::Serialize {
            what: "desired object",
            source,
        })?;
        let l = serde_json::to_value(&live).map_err(|source| Error::Serialize {
            what: "live object",
            source,
        })?;
        if is_subset(&d, &l) {
            return Ok((live, 0));
        }
    }
    Ok((apply(api, desired).await?, 1))
}

/// Deletes the object `name`; one that is already gone is fine.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + DeserializeOwned + Clone + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
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

/// Writes `status` into the object's status subresource with server-side apply; with a
/// `resource_version`, only if the object is still at that version (409 otherwise).
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
    resource_version: Option<&str>,
) -> Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    Ok(api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?)
}

/// Writes `next` as the object's status when it differs from `previous`; when the spec is
/// invalid and the `watched` condition's reason or message changed, also publishes a Warning
/// Event (once per cause, not once per reconcile). Returns the object as written, or None
/// when nothing needed writing.
pub async fn update_status<K, S>(
    ctx: &Context,
    obj: &K,
    watched: &str,
    (previous, previous_conditions): (&S, &[Condition]),
    (next, next_conditions): (&S, &[Condition]),
    invalid: Option<&Invalid>,
    resource_version: Option<&str>,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
    S: Serialize + PartialEq,
{
    if next == previous {
        return Ok(None);
    }
    let kind = K::kind(&());
    let ns = obj.meta().namespace.as_deref().unwrap_or_default();
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let written = apply_status(
        &Api::<K>::namespaced(ctx.client.clone(), ns),
        name,
        next,
        resource_version,
    )
    .await?;
    ctx.metrics.status_written(&kind);
    let ready = conditions::find(next_conditions, watched);
    info!(
        condition = watched,
        reason = ready.map(|c| c.reason.as_str()),
        "status updated"
    );
    if let Some(invalid) = invalid {
        let before = conditions::find(previous_conditions, watched);
        if before.map(|c| (&c.reason, &c.message)) != ready.map(|c| (&c.reason, &c.message)) {
            warn_invalid(&ctx.recorder, obj, invalid).await?;
        }
    }
    Ok(Some(written))
}

/// Publishes a Warning Event saying why the object's spec cannot be carried out.
pub async fn warn_invalid<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    invalid: &Invalid,
) -> Result<()> {
    let event = Event {
        type_: EventType::Warning,
        reason: invalid.reason.to_string(),
        note: Some(invalid.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &obj.object_ref(&()))
        .await
        .map_err(Error::Event)
}

/// Publishes an Event about a task's transition; a failure to publish is logged, never fatal
/// (the transition is in status already).
pub async fn publish_task_event(
    recorder: &Recorder,
    task: &cogo_api::AgentTask,
    (type_, reason): (EventType, &str),
    note: Option<&str>,
    action: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: note.map(|m| m.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &task.object_ref(&())).await {
        warn!(error = %e, "cannot publish the task's Event");
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::is_subset;

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 6003, "name": "http"}]}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 6003, "name": "http", "protocol": "TCP"}], "sessionAffinity": "None"}, "status": {}});
        assert!(is_subset(&desired, &live));
        let scaled = json!({"spec": {"replicas": 3, "ports": [{"port": 6003, "name": "http"}]}});
        assert!(!is_subset(&scaled, &live), "a changed value");
        let extra_port =
            json!({"spec": {"replicas": 2, "ports": [{"port": 6003, "name": "http"}, {"port": 1}]}});
        assert!(!is_subset(&extra_port, &live), "a longer list");
        assert!(
            !is_subset(&json!({"spec": {"new": true}}), &live),
            "a missing key"
        );
    }
}
