//! The CogoWorker controller: Deployment, Service and NetworkPolicy per worker.

use std::sync::Arc;

use cogo_api::{CogoAgent, CogoWorker, CogoWorkerStatus};
use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Secret, Service},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::instrument;

use super::{Context, PoolChildren, error_policy, secret_keys};
use crate::{
    Error, Result,
    build::{self, Pool},
    kube_io::{apply_if_changed, update_status},
    status::{self, Observed},
    tasks::workers::WorkerStats,
    tokens::worker_keys::WorkerIdentity,
    validate::{self, Facts},
};

/// The worker's pool identity, with its controller owner reference.
pub fn pool(worker: &CogoWorker) -> Result<Pool<'_>> {
    let name = worker.metadata.name.as_deref().unwrap_or_default();
    let missing = || Error::MissingNamespace {
        kind: "CogoWorker",
        name: name.to_string(),
    };
    let namespace = worker.metadata.namespace.as_deref().ok_or_else(missing)?;
    let mut owner = worker.controller_owner_ref(&()).ok_or_else(missing)?;
    owner.block_owner_deletion = Some(true);
    Ok(Pool {
        app: build::worker::APP,
        name,
        namespace,
        component: worker.spec.kind.slug(),
        owner,
    })
}

/// Reconciles one CogoWorker.
#[instrument(skip_all, fields(namespace = worker.namespace(), name = worker.name_any()))]
pub async fn reconcile(worker: Arc<CogoWorker>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("CogoWorker");
    let pool = pool(&worker)?;
    let (ns, name) = (pool.namespace, pool.name);
    let client = ctx.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let agents: Api<CogoAgent> = Api::namespaced(client.clone(), ns);
    let uid = worker.metadata.uid.clone().unwrap_or_default();

    // dereference
    let children = PoolChildren::fetch(&client, ns, name).await?;
    let found_policy = policies.get_opt(name).await?;
    let facts = Facts {
        secrets: secret_keys(&secrets, validate::worker_secret_names(&worker)).await?,
        existing: children.existing(),
        agents: agents
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|a| (a.name_any(), a.spec.role))
            .collect(),
    };

    let PoolChildren {
        deployment: found_deployment,
        service: found_service,
    } = children;

    // validate
    let verdict = validate::worker(&worker, &facts, &ctx.config);

    // build + apply
    let deployment = match &verdict {
        Ok(valid) => {
            let mut writes = 0;
            if let Some(keys) = &ctx.worker_keys {
                let who = WorkerIdentity {
                    namespace: ns,
                    worker: name,
                    kind: worker.spec.kind,
                    executor: &valid.executor,
                };
                writes += ensure_token(&secrets, &pool, keys, who).await?;
            }
            let d =
                build::worker::deployment(&worker, &pool, &ctx.config, valid.image.clone(), &valid.executor);
            let (applied, w) = apply_if_changed(&deployments, &d, found_deployment).await?;
            writes += w;
            let service = build::worker::service(&worker, &pool);
            writes += apply_if_changed(&services, &service, found_service).await?.1;
            let policy = build::worker::network_policy(&worker, &pool, &valid.executor);
            writes += apply_if_changed(&policies, &policy, found_policy).await?.1;
            ctx.metrics.child_writes("CogoWorker", writes);
            Some(applied)
        }
        Err(_) => {
            found_deployment.filter(|d| super::controller_uid(&d.metadata).as_deref() == Some(uid.as_str()))
        }
    };

    // update_status
    let now = Time(jiff::Timestamp::now());
    // The queue and the scaler's decision are the scaler's to write (under its own field
    // manager): this status neither sends nor compares them.
    let previous = CogoWorkerStatus {
        queue: None,
        autoscaling: None,
        ..worker.status.clone().unwrap_or_default()
    };
    let computed = status::compute(Observed {
        generation: worker.metadata.generation,
        desired: worker.desired_replicas(),
        deployment: deployment.as_ref(),
        invalid: verdict.as_ref().err(),
        previous: &previous.conditions,
        now: &now,
    });
    let next = with_stats(
        CogoWorkerStatus {
            observed_generation: computed.observed_generation,
            conditions: computed.conditions,
            replicas: computed.replicas,
            ready_replicas: computed.ready_replicas,
            selector: Some(pool.selector_string()),
            executor: verdict
                .as_ref()
                .ok()
                .map(|v| v.executor.clone())
                .or(previous.executor.clone()),
            ..previous.clone()
        },
        stats(&ctx, ns, name),
    );
    update_status(
        ctx.io(),
        worker.as_ref(),
        cogo_api::conditions::READY,
        (&previous, &previous.conditions),
        (&next, &next.conditions),
        verdict.as_ref().err(),
        None,
    )
    .await?;
    Ok(Action::requeue(ctx.config.resync.min(super::TOKEN_CHECK)))
}

/// Makes sure the worker's token Secret holds a valid token for `who`; returns the writes
/// made. A token for another kind or Executor (the spec changed) is reissued.
async fn ensure_token(
    secrets: &Api<Secret>,
    pool: &Pool<'_>,
    keys: &std::sync::RwLock<crate::tokens::worker_keys::WorkerKeys>,
    who: WorkerIdentity<'_>,
) -> Result<u64> {
    let keys = keys
        .read()
        .map_err(|_| Error::Broker("the worker key table is poisoned".into()))?
        .clone();
    let name = build::worker::token_secret_name(pool.name);
    super::ensure_token_secret(
        secrets,
        pool,
        &name,
        |token| {
            keys.verify(token)
                .filter(|c| {
                    c.worker() == Some((who.namespace, who.worker))
                        && c.kind == who.kind
                        && c.executor == who.executor
                })
                .map(|c| c.exp)
        },
        |now, ttl| Ok(build::worker::token_secret(pool, &keys.issue(who, now, ttl)?)),
    )
    .await
}

/// What the Executors report of the worker's pods.
fn stats(ctx: &Context, ns: &str, name: &str) -> WorkerStats {
    ctx.scheduler.worker_stats(ns, name)
}

/// `status` with the report-derived fields set from `stats`.
fn with_stats(status: CogoWorkerStatus, stats: WorkerStats) -> CogoWorkerStatus {
    CogoWorkerStatus {
        connected_workers: Some(stats.connected_workers),
        active_jobs: Some(stats.active_jobs),
        success_rate_percent: stats.success_rate_percent,
        ..status
    }
}

/// How often the Executors' reports are written into CogoWorker status, at most.
pub const REPORT_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// Writes `connectedWorkers`, `activeJobs` and `successRatePercent` of every CogoWorker whose
/// figures changed, every [`REPORT_WRITE_INTERVAL`], until `shutdown` resolves. The controller's
/// own status writes carry the same figures, so the two never undo each other.
async fn write_reported_status(
    ctx: Arc<Context>,
    store: Store<CogoWorker>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(REPORT_WRITE_INTERVAL) => {}
        }
        for w in store.state() {
            let (Some(ns), name) = (w.namespace(), w.name_any()) else {
                continue;
            };
            let previous = w.status.clone().unwrap_or_default();
            let next = with_stats(previous.clone(), stats(&ctx, &ns, &name));
            if next == previous {
                continue;
            }
            let patch = serde_json::json!({"status": {
                "connectedWorkers": next.connected_workers,
                "activeJobs": next.active_jobs,
                "successRatePercent": next.success_rate_percent,
            }});
            let api: Api<CogoWorker> = Api::namespaced(ctx.client.clone(), &ns);
            match api
                .patch_status(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => ctx.metrics.status_written("CogoWorker"),
                Err(e) => {
                    tracing::warn!(worker = %name, namespace = %ns, error = %e, "cannot write the workers' figures")
                }
            }
        }
    }
}

/// Whether the worker references the Secret `name`, or owns it as its Executor token.
fn references_secret(worker: &CogoWorker, name: &str) -> bool {
    name == build::worker::token_secret_name(&worker.name_any())
        || validate::worker_secret_names(worker).contains(name)
}

/// Maps a changed Secret to the workers of its namespace that reference it.
pub fn workers_for_secret(
    store: &Store<CogoWorker>,
    secret: &impl ResourceExt,
) -> Vec<ObjectRef<CogoWorker>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .into_iter()
        .filter(|w| w.namespace() == ns && references_secret(w, &name))
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Maps a changed CogoAgent to the workers whose Executor it may be: every worker of the
/// namespace when it is an Executor, and any worker that names it in `spec.executor`.
pub fn workers_for_agent(store: &Store<CogoWorker>, agent: &CogoAgent) -> Vec<ObjectRef<CogoWorker>> {
    let (ns, name) = (agent.namespace(), agent.name_any());
    let is_executor = agent.spec.role == cogo_api::AgentRole::Executor;
    store
        .state()
        .into_iter()
        .filter(|w| w.namespace() == ns && (is_executor || w.spec.executor.as_deref() == Some(name.as_str())))
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Runs the CogoWorker controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let managed = crate::kube_io::watch_config()
        .labels("app.kubernetes.io/managed-by=cogo-operator,app.kubernetes.io/name=cogo-worker");
    let controller = Controller::new(
        Api::<CogoWorker>::all(client.clone()),
        crate::kube_io::watch_config().any_semantic(),
    );
    let (secret_store, agent_store) = (controller.store(), controller.store());
    // The scaler reads workers from this cache.
    let _ = ctx.workers.set(controller.store());
    let (reports, stop_reports) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(write_reported_status(
        ctx.clone(),
        controller.store(),
        async move {
            let _ = stop_reports.await;
        },
    ));
    controller
        .owns(Api::<Deployment>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<NetworkPolicy>::all(client.clone()), managed)
        // Only the metadata of Secrets is watched; see the agent controller.
        .watches_stream(
            watcher(
                Api::<kube::core::PartialObjectMeta<Secret>>::all(client.clone()),
                crate::kube_io::watch_config(),
            )
            .touched_objects(),
            move |s| workers_for_secret(&secret_store, &s),
        )
        .watches(
            Api::<CogoAgent>::all(client),
            crate::kube_io::watch_config(),
            move |a| workers_for_agent(&agent_store, &a),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    drop(reports);
}
