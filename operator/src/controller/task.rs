//! The AgentTask controller, up to the lease: it resolves each task's target and accepts the
//! task (`Accepted=True`, `phase: Pending`, `Succeeded=Unknown`) or says why it cannot
//! (`Accepted=False` with a reason and a Warning Event), and looks again when agents change.

use std::sync::Arc;

use cogo_api::{AgentTask, CogoAgent, conditions::ACCEPTED};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::instrument;

use super::{Context, error_policy, update_status};
use crate::{
    Error, Result,
    task::{self, TaskFacts},
};

/// Reconciles one AgentTask.
#[instrument(skip_all, fields(namespace = t.namespace(), name = t.name_any()))]
pub async fn reconcile(t: Arc<AgentTask>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("AgentTask");
    let ns = t.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "AgentTask",
        name: t.name_any(),
    })?;

    // dereference
    let agents = ctx
        .agents
        .state()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
        .map(|a| (a.name_any(), a.spec.role))
        .collect();
    let parent_exists = match &t.spec.parent {
        Some(parent) => Some(
            Api::<AgentTask>::namespaced(ctx.client.clone(), &ns)
                .get_opt(parent)
                .await?
                .is_some(),
        ),
        None => None,
    };
    let facts = TaskFacts {
        agents,
        parent_exists,
    };

    // validate
    let verdict = task::validate(&t, &facts, ctx.config.max_task_input_bytes);

    // update_status (nothing to build or apply before the lease)
    let now = Time(jiff::Timestamp::now());
    let Some(next) = task::compute_pending(&t, &verdict, &now) else {
        // Leased or finished: the broker owns it now.
        dequeue(&ctx, &ns, &t.name_any());
        return Ok(Action::await_change());
    };
    let previous = t.status.clone().unwrap_or_default();
    let rv = t.resource_version();
    // Written only if the task is unchanged since read, so a lease the broker just wrote is
    // never overwritten by this older view; the change that conflicted triggers a new reconcile.
    match update_status(
        &ctx,
        t.as_ref(),
        ACCEPTED,
        (&previous, &previous.conditions),
        (&next, &next.conditions),
        verdict.as_ref().err(),
        rv.as_deref(),
    )
    .await
    {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => return Ok(Action::await_change()),
        other => other?,
    }
    match verdict {
        Ok(target) => {
            let created = t
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|c| c.0.as_second())
                .unwrap_or_default();
            if let Ok(mut q) = ctx.queue.lock() {
                q.upsert(&ns, &t.name_any(), target, t.spec.priority, created);
            }
            ctx.queued.notify_waiters();
        }
        Err(_) => dequeue(&ctx, &ns, &t.name_any()),
    }
    Ok(Action::requeue(ctx.config.resync))
}

fn dequeue(ctx: &Context, ns: &str, name: &str) {
    if let Ok(mut q) = ctx.queue.lock() {
        q.remove(ns, name);
    }
}

/// Maps a changed CogoAgent to the waiting tasks of its namespace that it may serve.
pub fn tasks_for_agent(store: &Store<AgentTask>, agent: &CogoAgent) -> Vec<ObjectRef<AgentTask>> {
    let (ns, name, role) = (agent.namespace(), agent.name_any(), agent.spec.role);
    store
        .state()
        .into_iter()
        .filter(|t| t.namespace() == ns)
        .filter(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_none_or(|p| p == cogo_api::TaskPhase::Pending)
        })
        .filter(|t| t.spec.agent.as_deref() == Some(name.as_str()) || t.spec.role == Some(role))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

/// Runs the AgentTask controller until `shutdown` resolves. `ctx.agents` must be filled first.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<AgentTask>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    controller
        .watches(
            Api::<CogoAgent>::all(client),
            watcher::Config::default(),
            move |a| tasks_for_agent(&store, &a),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
