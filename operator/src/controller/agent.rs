//! The CogoAgent controller: Deployment, Service and PodDisruptionBudget per agent.

use std::sync::Arc;

use cogo_api::{CogoAgent, CogoAgentStatus};
use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
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
    kube_io::{apply_if_changed, delete, update_status},
    status::{self, Observed},
    validate::{self, Facts},
};

/// The agent's pool identity, with its controller owner reference.
pub fn pool(agent: &CogoAgent) -> Result<Pool<'_>> {
    let name = agent.metadata.name.as_deref().unwrap_or_default();
    let namespace = agent
        .metadata
        .namespace
        .as_deref()
        .ok_or_else(|| Error::MissingNamespace {
            kind: "CogoAgent",
            name: name.to_string(),
        })?;
    let mut owner = agent
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingNamespace {
            kind: "CogoAgent",
            name: name.to_string(),
        })?;
    owner.block_owner_deletion = Some(true);
    Ok(Pool {
        app: build::agent::APP,
        name,
        namespace,
        component: agent.spec.role.slug(),
        owner,
    })
}

/// Reconciles one CogoAgent.
#[instrument(skip_all, fields(namespace = agent.namespace(), name = agent.name_any()))]
pub async fn reconcile(agent: Arc<CogoAgent>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("CogoAgent");
    let pool = pool(&agent)?;
    let (ns, name) = (pool.namespace, pool.name);
    let client = ctx.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let uid = agent.metadata.uid.clone().unwrap_or_default();

    // dereference
    let children = PoolChildren::fetch(&client, ns, name).await?;
    let found_pdb = pdbs.get_opt(name).await?;
    let facts = Facts {
        secrets: secret_keys(&secrets, validate::agent_secret_names(&agent)).await?,
        existing: children.existing(),
        agents: vec![],
    };

    let PoolChildren {
        deployment: found_deployment,
        service: found_service,
    } = children;

    // validate
    let verdict = validate::agent(&agent, &facts, &ctx.config);

    // build + apply
    let deployment = match &verdict {
        Ok(image) => {
            let mut writes = 0;
            let token_secret = match &ctx.keys {
                Some(keys) => {
                    writes += ensure_token(&secrets, &pool, keys).await?;
                    Some(build::agent::token_secret_name(name))
                }
                None => None,
            };
            let desired =
                build::agent::deployment(&agent, &pool, &ctx.config, image.clone(), token_secret.as_deref());
            let (applied, w) = apply_if_changed(&deployments, &desired, found_deployment).await?;
            writes += w;
            let service = build::agent::service(&agent, &pool);
            writes += apply_if_changed(&services, &service, found_service).await?.1;
            match (build::agent::pod_disruption_budget(&agent, &pool), found_pdb) {
                (Some(pdb), live) => writes += apply_if_changed(&pdbs, &pdb, live).await?.1,
                (None, Some(live))
                    if super::controller_uid(&live.metadata).as_deref() == Some(uid.as_str()) =>
                {
                    delete(&pdbs, name).await?;
                    writes += 1;
                }
                (None, _) => {}
            }
            ctx.metrics.child_writes("CogoAgent", writes);
            Some(applied)
        }
        Err(_) => {
            found_deployment.filter(|d| super::controller_uid(&d.metadata).as_deref() == Some(uid.as_str()))
        }
    };

    // update_status
    let now = Time(jiff::Timestamp::now());
    // The queue, the finished tasks and the scaler's decision are the scaler's to write
    // (under its own field manager): this status neither sends nor compares them.
    let previous = CogoAgentStatus {
        queue: None,
        tasks: None,
        autoscaling: None,
        ..agent.status.clone().unwrap_or_default()
    };
    let computed = status::compute(Observed {
        generation: agent.metadata.generation,
        desired: agent.desired_replicas(),
        deployment: deployment.as_ref(),
        invalid: verdict.as_ref().err(),
        previous: &previous.conditions,
        now: &now,
    });
    let mut conditions = computed.conditions;
    status::set_store_shared(&mut conditions, &agent.spec, agent.metadata.generation, &now);
    let next = CogoAgentStatus {
        observed_generation: computed.observed_generation,
        conditions,
        replicas: computed.replicas,
        ready_replicas: computed.ready_replicas,
        selector: Some(pool.selector_string()),
        model: status::model_in_use(deployment.as_ref(), previous.model.as_ref()),
        ..previous.clone()
    };
    update_status(
        ctx.io(),
        agent.as_ref(),
        cogo_api::conditions::READY,
        (&previous, &previous.conditions),
        (&next, &next.conditions),
        verdict.as_ref().err(),
        None,
    )
    .await?;
    Ok(Action::requeue(ctx.config.resync.min(super::TOKEN_CHECK)))
}

/// Makes sure the agent's token Secret holds a valid broker token for it; returns the writes
/// made.
async fn ensure_token(
    secrets: &Api<Secret>,
    pool: &Pool<'_>,
    keys: &crate::tokens::auth::Keys,
) -> Result<u64> {
    let name = build::agent::token_secret_name(pool.name);
    super::ensure_token_secret(
        secrets,
        pool,
        &name,
        |token| keys.verify(token, pool.namespace, pool.name).ok().map(|c| c.exp),
        |now, ttl| {
            let token = keys
                .issue(pool.namespace, pool.name, now, ttl)
                .map_err(|e| Error::Broker(format!("cannot sign a token: {e}")))?;
            Ok(build::agent::token_secret(pool, &token))
        },
    )
    .await
}

/// Whether the agent references the Secret `name`, or owns it as its broker token.
fn references_secret(agent: &CogoAgent, name: &str) -> bool {
    name == build::agent::token_secret_name(&agent.name_any())
        || validate::agent_secret_names(agent).contains(name)
}

/// Maps a changed Secret to the agents of its namespace that reference it.
pub fn agents_for_secret(store: &Store<CogoAgent>, secret: &impl ResourceExt) -> Vec<ObjectRef<CogoAgent>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .into_iter()
        .filter(|a| a.namespace() == ns && references_secret(a, &name))
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// Runs the CogoAgent controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let managed = crate::kube_io::watch_config()
        .labels("app.kubernetes.io/managed-by=cogo-operator,app.kubernetes.io/name=cogo-agent");
    let controller = Controller::new(
        Api::<CogoAgent>::all(client.clone()),
        crate::kube_io::watch_config().any_semantic(),
    );
    let store = controller.store();
    controller
        .owns(Api::<Deployment>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), managed)
        // Only the metadata of Secrets is watched (names and namespaces tell which agent to
        // reconcile); the few an agent names are read when it is reconciled.
        .watches_stream(
            watcher(
                Api::<kube::core::PartialObjectMeta<Secret>>::all(client),
                crate::kube_io::watch_config(),
            )
            .touched_objects(),
            move |s| agents_for_secret(&store, &s),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
