//! The AgentTask controller. Before the lease it resolves each task's target and accepts the
//! task (`Accepted=True`, `phase: Pending`, `Succeeded=Unknown`, queued in the
//! [`Scheduler`](crate::tasks::Scheduler) the broker leases from) or says
//! why it cannot (`Accepted=False` with a reason and a Warning Event), and looks again when
//! agents change. It ends waiting tasks that are cancelled or out of time, re-queues retries
//! once their backoff has passed, ends running attempts whose pod stopped heartbeating or whose
//! deadline passed, makes sub-tasks owned by their parent, and deletes finished tasks after
//! `ttlSecondsAfterFinished`. The broker (leases and completions) owns every other transition.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use cogo_api::{
    AgentRole, AgentTask, AgentTaskStatus, CogoAgent, TaskPhase, WorkerKind,
    conditions::{self, ACCEPTED, SUCCEEDED},
};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::EventType,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, info, instrument, warn};

use super::{Context, error_policy};
use crate::{
    Error, Result,
    kube_io::{apply_fields, publish_task_event, update_status, write_task_status},
    tasks::{
        accept::{self, Target, TaskFacts, WorkerWait},
        leases::LeaseState,
        settle_standing,
        transition::{self, Policy, reason},
    },
};

/// Reconciles one AgentTask.
#[instrument(skip_all, fields(namespace = t.namespace(), name = t.name_any()))]
pub async fn reconcile(t: Arc<AgentTask>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("AgentTask");
    let ns = t.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "AgentTask",
        name: t.name_any(),
    })?;
    let name = t.name_any();
    let status = t.status.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let policy = Policy::of(&t, agent_of(&ctx, &ns, &t).as_deref());
    ctx.scheduler.caught_up(&t);
    ctx.scheduler.forget_other_objects(&t);

    match status.phase {
        Some(p) if p.is_terminal() => {
            ctx.scheduler.dequeue(&ns, &name);
            ctx.scheduler.release(&ns, &name);
            ctx.scheduler.drop_board(&ns, &name);
            return expire_finished(&ctx, &t, &ns).await;
        }
        _ if t.spec.items.is_some() => return super::items::reconcile(&ctx, &t, &ns, &policy, &now).await,
        Some(TaskPhase::Running) => return supervise(&ctx, &t, &ns, &policy, &now).await,
        _ => {}
    }

    // Leased, and the lease not written yet: the broker writes it, or the attempt's outcome
    // in its place, soon; either change brings the task back here.
    if ctx.scheduler.unwritten(&ns, &name).is_some() {
        return Ok(Action::requeue(ctx.config.resync));
    }

    // Waiting (new, queued, or backing off before a retry): cancellation and the deadline
    // end it without a pod.
    if let Some(next) = transition::cancelled_while_waiting(&t, &now)
        .or_else(|| transition::deadline_exceeded(&t, &policy, &now))
    {
        ctx.scheduler.dequeue(&ns, &name);
        return finish(&ctx, &t, next).await;
    }

    // dereference
    let agents = ctx
        .agents
        .state()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
        .map(|a| (a.name_any(), a.spec.role))
        .collect();
    let parent = match &t.spec.parent {
        Some(parent) => Api::<AgentTask>::namespaced(ctx.client.clone(), &ns)
            .get_opt(parent)
            .await?
            .map(Some)
            .unwrap_or(None),
        None => None,
    };
    let facts = TaskFacts {
        agents,
        parent_exists: t.spec.parent.as_ref().map(|_| parent.is_some()),
    };

    // validate: a valid new task (never accepted, not a sub-task of the broker's) also needs
    // room in its namespace's queue.
    let mut verdict = accept::validate(&t, &facts, ctx.config.max_task_input_bytes);
    if verdict.is_ok()
        && !accept::was_accepted(&t)
        && ctx.scheduler.is_limited(&t)
        && !ctx.scheduler.admit(&t)
    {
        verdict = Err(accept::queue_full(ctx.scheduler.limits().queued));
    }

    // apply: a sub-task created with kubectl is owned by its parent, as the broker's are.
    if let Some(parent) = &parent {
        adopt(&ctx, &t, &ns, parent).await?;
    }

    // A new, valid task is queued at once and its first status write waits ACCEPT_GRACE: a
    // task leased by then is accepted and Running in one write (the broker's).
    if let (None, Ok(target)) = (&t.status, &verdict)
        && ctx.scheduler.defer_first_write(&ns, &name)
    {
        ctx.scheduler
            .enqueue(&ns, &name, target.clone(), t.clone(), &ctx.agents);
        return Ok(Action::requeue(ACCEPT_GRACE));
    }

    // update_status
    let wait = worker_wait(&ctx, &ns, &t, &verdict);
    let runs_on_worker = WorkerKind::for_task_type(&t.spec.task_type).is_some();
    let Some(mut next) = accept::compute_pending(&t, &verdict, wait.as_ref(), &now) else {
        // The queue keeps this very version from the cache instead of its own copy.
        ctx.scheduler.share(&ns, &name, &t);
        return Ok(Action::await_change());
    };
    settle_standing(&mut next, &now);
    let rv = t.resource_version();
    // Written only if the task is unchanged since read, so a lease the broker just wrote is
    // never overwritten by this older view; the change that conflicted triggers a new reconcile.
    let written = match update_status(
        ctx.io(),
        t.as_ref(),
        ACCEPTED,
        (&status, &status.conditions),
        (&next, &next.conditions),
        verdict.as_ref().err(),
        rv.as_deref(),
    )
    .await
    {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => return Ok(Action::await_change()),
        other => other?,
    };
    ctx.scheduler.forget_deferred(&ns, &name);
    // A full queue has room again as soon as a task is leased: look again soon.
    let full = matches!(&verdict, Err(e) if e.reason == accept::reason::NAMESPACE_QUEUE_FULL);
    let Ok(target) = verdict else {
        ctx.scheduler.dequeue(&ns, &name);
        return Ok(Action::requeue(if full {
            QUEUE_FULL_RECHECK
        } else {
            ctx.config.resync
        }));
    };
    // A retry waits for its backoff before it is queued again.
    let mut wake = ctx.config.resync;
    if let Some(after) = next.retry_after.as_ref().map(|t| t.0)
        && after > now.0
    {
        ctx.scheduler.dequeue(&ns, &name);
        wake = wake.min(until(after, now.0));
    } else {
        let seen = written
            .map(|mut w| {
                for_cache(&mut w);
                Arc::new(w)
            })
            .unwrap_or(t);
        ctx.scheduler.enqueue(&ns, &name, target, seen, &ctx.agents);
    }
    if let Some(deadline) = policy.deadline(&next) {
        wake = wake.min(until(deadline, now.0));
    }
    // Workers come and go: look again soon, so the message stays true.
    if runs_on_worker {
        wake = wake.min(WORKER_RECHECK);
    }
    Ok(Action::requeue(wake))
}

/// How often a task refused by its namespace's full queue is looked at again.
pub(super) const QUEUE_FULL_RECHECK: Duration = Duration::from_secs(2);

/// How often a waiting task that runs on a worker is looked at again.
const WORKER_RECHECK: Duration = Duration::from_secs(5);

/// Why an accepted task that runs on a worker waits (see [`WorkerWait::decide`]); None
/// for other tasks.
fn worker_wait(
    ctx: &Context,
    ns: &str,
    t: &AgentTask,
    verdict: &std::result::Result<Target, crate::validate::Invalid>,
) -> Option<WorkerWait> {
    let kind = WorkerKind::for_task_type(&t.spec.task_type)?;
    let executor = match verdict.as_ref().ok()? {
        Target::Agent(a) => {
            let agent = ctx.agents.get(&ObjectRef::new(a).within(ns))?;
            if agent.spec.role != AgentRole::Executor {
                return None;
            }
            Some(a.clone())
        }
        Target::Role(AgentRole::Executor) => None,
        Target::Role(_) => return None,
    };
    let availability = ctx.scheduler.worker_availability(ns, executor.as_deref(), kind)?;
    let said = t
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, ACCEPTED))
        .map(|c| c.reason.as_str());
    WorkerWait::decide(kind, executor, availability, said)
}

/// Time from `now` until `at` (a little past it, so the reconcile finds it passed).
fn until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    let d = at.duration_since(now);
    Duration::from_millis(d.as_millis().clamp(0, i64::MAX as i128) as u64) + Duration::from_millis(50)
}

/// The CogoAgent whose defaults apply to the task: the one that runs it, else the one it names.
fn agent_of(ctx: &Context, ns: &str, t: &AgentTask) -> Option<Arc<CogoAgent>> {
    let name = t
        .status
        .as_ref()
        .and_then(|s| s.agent.clone())
        .or_else(|| t.spec.agent.clone())?;
    ctx.agents.get(&ObjectRef::new(&name).within(ns))
}

/// Watches over a running task: its deadline, and its pod's heartbeats.
async fn supervise(ctx: &Context, t: &AgentTask, ns: &str, policy: &Policy, now: &Time) -> Result<Action> {
    let name = t.name_any();
    ctx.scheduler.dequeue(ns, &name);
    if let Some(next) = transition::deadline_exceeded(t, policy, now) {
        return finish(ctx, t, next).await;
    }
    let status = t.status.clone().unwrap_or_default();
    let clock = Instant::now();
    let state = ctx.scheduler.lease_state(ns, &name, status.attempt, clock);
    let expires = match state {
        LeaseState::Held(expires) => expires,
        // Leased before this operator started (or by another replica): the pod gets a full
        // lease from now to show it is alive.
        LeaseState::Unknown => ctx
            .scheduler
            .hold_running(t, &ctx.agents, clock)
            .ok_or_else(|| Error::Broker("the lease table is poisoned".into()))?,
        LeaseState::Expired => {
            let message = format!(
                "pod {} sent no heartbeat for {}s",
                status.pod.as_deref().unwrap_or("?"),
                ctx.config.lease_duration.as_secs()
            );
            let next = transition::end_attempt(t, reason::HEARTBEAT_LOST, &message, policy, now);
            return finish(ctx, t, next).await;
        }
    };
    let mut wake = expires.saturating_duration_since(clock) + Duration::from_millis(50);
    if let Some(deadline) = policy.deadline(&status) {
        wake = wake.min(until(deadline, now.0));
    }
    Ok(Action::requeue(wake))
}

/// Writes a transition the controller decided (a final phase, or back to Pending for a
/// retry), fenced by the task's resourceVersion, and says so in an Event.
async fn finish(ctx: &Context, t: &AgentTask, next: AgentTaskStatus) -> Result<Action> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let api = Api::<AgentTask>::namespaced(ctx.client.clone(), &ns);
    match write_task_status(&api, &name, t.resource_version().as_deref(), &next).await {
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Action::await_change()),
        other => other?,
    };
    ctx.metrics.status_written("AgentTask");
    ctx.scheduler.outcome_written(t, next.attempt);
    if let Some(attempt) = t.status.as_ref().map(|s| s.attempt) {
        let phase = next.phase.unwrap_or(TaskPhase::Pending);
        ctx.scheduler
            .attempts
            .end((&ns, &name), attempt, phase, next.message.as_deref());
    }
    ctx.scheduler.release(&ns, &name);
    let c = conditions::find(&next.conditions, SUCCEEDED);
    let reason = c.map(|c| c.reason.clone()).unwrap_or_default();
    crate::tasks::ended::ended(
        (&ctx.scheduler, &ctx.metrics, &ctx.agents),
        (&ns, &name, &t.spec.task_type),
        &next,
    );
    let type_ = if next.phase == Some(TaskPhase::Cancelled) {
        EventType::Normal
    } else {
        EventType::Warning
    };
    publish_task_event(
        &ctx.recorder,
        t,
        (type_, &reason),
        next.message.as_deref(),
        "Supervise",
    )
    .await;
    Ok(Action::await_change())
}

/// Deletes a finished task once `ttlSecondsAfterFinished` has passed; waits otherwise.
async fn expire_finished(ctx: &Context, t: &AgentTask, ns: &str) -> Result<Action> {
    let (Some(ttl), Some(done)) = (
        t.spec.ttl_seconds_after_finished,
        t.status.as_ref().and_then(|s| s.completion_time.as_ref()),
    ) else {
        return Ok(Action::await_change());
    };
    let now = jiff::Timestamp::now();
    let at = done.0 + jiff::SignedDuration::from_secs(ttl);
    if at > now {
        return Ok(Action::requeue(until(at, now)));
    }
    // The row keeps the task's history: delete only once the database holds its final state.
    if let Some(mirror) = &ctx.mirror
        && !mirror.holds(&mirror.row_id(t), crate::supabase::row::version(t))
    {
        debug!("waiting for the Supabase mirror before deleting the finished task");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let api = Api::<AgentTask>::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: t.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&t.name_any(), &params).await {
        Ok(_) => info!("deleted {ttl}s after the task finished (ttlSecondsAfterFinished)"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Makes `parent` an owner of the sub-task `t`, so deleting the parent deletes it.
async fn adopt(ctx: &Context, t: &AgentTask, ns: &str, parent: &AgentTask) -> Result<()> {
    let Some(uid) = parent.uid() else {
        return Ok(());
    };
    if t.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    let owner = OwnerReference {
        api_version: AgentTask::api_version(&()).into(),
        kind: AgentTask::kind(&()).into(),
        name: parent.name_any(),
        uid,
        ..Default::default()
    };
    let body = serde_json::json!({
        "apiVersion": AgentTask::api_version(&()),
        "kind": AgentTask::kind(&()),
        "metadata": {"name": t.name_any(), "ownerReferences": [owner]},
    });
    apply_fields(
        &Api::<AgentTask>::namespaced(ctx.client.clone(), ns),
        &t.name_any(),
        &body,
    )
    .await?;
    ctx.metrics.child_writes("AgentTask", 1);
    Ok(())
}

/// How long a new task waits in the queue before the controller writes its first status.
pub const ACCEPT_GRACE: Duration = Duration::from_secs(1);

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

/// The agents whose change can change a waiting task's verdict, from a watch of CogoAgents:
/// one added, deleted, or whose spec changed (a new generation). Status writes (the scaler's,
/// every few seconds while tasks wait) are not: each would have every waiting task of the
/// namespace reconciled again.
pub fn changed_agents<S>(events: S) -> impl Stream<Item = Result<CogoAgent, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<CogoAgent>, watcher::Error>> + Send,
{
    let mut generations: HashMap<String, Option<i64>> = HashMap::new();
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => {
                let (uid, generation) = (a.uid().unwrap_or_default(), a.metadata.generation);
                (generations.insert(uid, generation) != Some(generation)).then_some(Ok(a))
            }
            Ok(watcher::Event::Delete(a)) => {
                generations.remove(&a.uid().unwrap_or_default());
                Some(Ok(a))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(changed)
    })
}

/// Runs the AgentTask controller until `shutdown` resolves. `ctx.agents` must be filled first.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let (store, writer) = reflector::store();
    // The one watch of AgentTasks: the controller, the broker (through the cache) and the
    // Supabase mirror all follow it.
    let mirror = ctx.mirror.clone();
    if let Some(m) = &mirror {
        m.follow(store.clone());
    }
    let tasks = watcher(
        Api::<AgentTask>::all(client.clone()),
        crate::kube_io::watch_config().any_semantic(),
    )
    .default_backoff()
    .modify(for_cache)
    .inspect(move |event| {
        if let (Some(m), Ok(event)) = (&mirror, event) {
            m.see(event);
        }
    });
    let controller = Controller::for_stream(
        reflector::reflector(writer, tasks).applied_objects(),
        store.clone(),
    );
    // The broker reads tasks from this cache first.
    let _ = ctx.tasks.set(store.clone());
    let healer = {
        let (store, ctx) = (store.clone(), ctx.clone());
        tokio::spawn(async move {
            // The controller's runner waits for the same store.
            if crate::kube_io::listed(&store).await.is_err() {
                return;
            }
            let mut every = tokio::time::interval(HEAL_EVERY);
            loop {
                every.tick().await;
                heal_leases(&ctx, &store);
            }
        })
    };
    let driver = tokio::spawn(super::items::drive(ctx.clone(), store.clone()));
    let agents = watcher(Api::<CogoAgent>::all(client), crate::kube_io::watch_config()).default_backoff();
    controller
        .watches_stream(changed_agents(agents), move |a| tasks_for_agent(&store, &a))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    healer.abort();
    driver.abort();
}

/// What the task cache (the controller's, which the broker reads too) keeps of a task: all
/// but its managedFields, which nothing here reads (status is replaced by a JSON patch, which
/// needs none) and which are a large part of a small task's size.
pub fn for_cache(t: &mut AgentTask) {
    t.metadata.managed_fields = None;
}

/// How often the lease table is checked against the cached tasks.
pub const HEAL_EVERY: Duration = Duration::from_secs(10);

/// Drops leases and reservations the tasks no longer have (see
/// [`Scheduler::heal`](crate::tasks::Scheduler::heal)), freeing their slots.
pub fn heal_leases(ctx: &Context, store: &Store<AgentTask>) {
    let dropped = ctx.scheduler.heal(store, Instant::now());
    if !dropped.is_empty() {
        warn!(
            ?dropped,
            "dropped leases and queue entries of tasks that finished, were deleted or moved on"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_a_task_without_its_managed_fields() {
        let served: AgentTask = serde_json::from_value(serde_json::json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
                         "managedFields": [
                             {"manager": "kubectl", "operation": "Apply", "apiVersion": "cogo.xyz/v1alpha1",
                              "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:type": {}}}},
                             {"manager": "cogo-operator", "operation": "Apply", "subresource": "status",
                              "apiVersion": "cogo.xyz/v1alpha1", "fieldsType": "FieldsV1",
                              "fieldsV1": {"f:status": {"f:phase": {}}}}]},
            "spec": {"agent": "a", "type": "cogo.echo"},
            "status": {"phase": "Running", "attempt": 1}
        }))
        .unwrap();
        let mut cached = served.clone();
        for_cache(&mut cached);
        assert_eq!(cached.metadata.managed_fields, None);
        let mut without = served;
        without.metadata.managed_fields = cached.metadata.managed_fields.clone();
        assert_eq!(
            serde_json::to_value(&cached).unwrap(),
            serde_json::to_value(&without).unwrap(),
            "nothing else changes"
        );
    }

    #[tokio::test]
    async fn only_agents_added_deleted_or_respecified_wake_waiting_tasks() {
        let agent = |uid: &str, generation: i64, queued: i64| -> CogoAgent {
            // The name is the UID's first letter: `b2` is `b` created again.
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent",
                "metadata": {"name": &uid[..1], "namespace": "ns", "uid": uid, "generation": generation},
                "spec": {"role": "Research"},
                "status": {"queue": {"pending": queued, "running": 0}}
            }))
            .unwrap()
        };
        use watcher::Event::*;
        let events = vec![
            Ok(Init),
            Ok(InitApply(agent("a", 1, 0))),
            Ok(InitApply(agent("b", 4, 0))),
            Ok(InitDone),
            // The scaler's status writes: the same generation.
            Ok(Apply(agent("a", 1, 10))),
            Ok(Apply(agent("a", 1, 20))),
            // The spec changed.
            Ok(Apply(agent("a", 2, 20))),
            Ok(Delete(agent("b", 4, 0))),
            // Created again under the same name: a new object.
            Ok(Apply(agent("b2", 1, 0))),
            // A relist sees nothing new.
            Ok(Init),
            Ok(InitApply(agent("a", 2, 30))),
            Ok(InitDone),
        ];
        let seen: Vec<(String, i64)> = changed_agents(futures::stream::iter(events))
            .map(|a| {
                let a = a.unwrap();
                (a.name_any(), a.metadata.generation.unwrap())
            })
            .collect()
            .await;
        let expected = [("a", 1), ("b", 4), ("a", 2), ("b", 4), ("b", 1)].map(|(n, g)| (n.to_string(), g));
        assert_eq!(seen, expected);
    }
}
