//! The AgentTask controller's share of indexed tasks (`spec.items`): it accepts such a task and
//! lays out its items in the [`Scheduler`](crate::tasks::Scheduler) (from its status, after a
//! restart), cancels it, and, in [`drive`], moves the items' time on and writes what status
//! says of them: at most once every [`STATUS_EVERY`] per task while they run, and once more
//! when the task is decided. The broker leases, heartbeats and completes the items themselves,
//! in memory.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cogo_api::{AgentTask, TaskPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef, reflector::Store},
};
use tracing::{debug, warn};

use super::Context;
use crate::{
    Error, Result,
    kube_io::{publish_task_event, update_status, write_task_status},
    tasks::{
        BoardStatus,
        accept::{self, TaskFacts},
        items::{self, Board},
        settle_standing,
        transition::Policy,
    },
};

/// How often, at most, a running indexed task's status is written.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How often [`drive`] moves the items' time on.
const TICK: Duration = Duration::from_millis(100);

/// Reconciles an indexed task that is not finished.
pub async fn reconcile(
    ctx: &Context,
    t: &Arc<AgentTask>,
    ns: &str,
    policy: &Policy,
    now: &Time,
) -> Result<Action> {
    let name = t.name_any();
    if t.spec.cancel_requested {
        // No more items start; the board goes once the cancellation is written, with the
        // outcomes recorded until then.
        ctx.scheduler.stop_board(ns, &name);
        let next = items::cancelled(t, ctx.scheduler.board_status(ns, &name), now);
        if end(ctx, t, next).await? {
            ctx.scheduler.drop_board(ns, &name);
        }
        return Ok(Action::await_change());
    }
    if ctx.scheduler.has_board(ns, &name) {
        return Ok(Action::requeue(ctx.config.resync));
    }
    let agents = ctx
        .agents
        .state()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns))
        .map(|a| (a.name_any(), a.spec.role))
        .collect();
    let parent_exists = match &t.spec.parent {
        Some(parent) => Some(
            Api::<AgentTask>::namespaced(ctx.client.clone(), ns)
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
    let mut verdict = accept::validate(t, &facts, ctx.config.max_task_input_bytes);
    // An indexed task counts as one queued task of its namespace until it ends.
    if verdict.is_ok() && !accept::was_accepted(t) && ctx.scheduler.is_limited(t) && !ctx.scheduler.admit(t) {
        verdict = Err(accept::queue_full(ctx.scheduler.limits().queued));
    }
    let full = matches!(&verdict, Err(e) if e.reason == accept::reason::NAMESPACE_QUEUE_FULL);
    let status = t.status.clone().unwrap_or_default();
    let Ok(target) = verdict else {
        // Not runnable (yet): say why, as for any task, and look again.
        if let Some(mut next) = accept::compute_pending(t, &verdict, None, now) {
            settle_standing(&mut next, now);
            write_pending(ctx, t, (&status, &next), verdict.as_ref().err()).await?;
        }
        let again = if full {
            super::task::QUEUE_FULL_RECHECK
        } else {
            ctx.config.resync
        };
        return Ok(Action::requeue(again));
    };
    // Laid out from status: the items it lists as finished stay finished.
    let listed = status.items.clone().unwrap_or_default();
    let total = items::item_count(t);
    let done = |ranges: &str| cogo_api::task::parse_index_ranges(ranges, total).unwrap_or_default();
    let (succeeded, failed) = (done(&listed.succeeded_indexes), done(&listed.failed_indexes));
    let board = Board::new(t.clone(), target.clone(), policy.clone(), (&succeeded, &failed));
    let items = board.status();
    ctx.scheduler.lay_out(ns, &name, board, &ctx.agents);
    // A new task is accepted at once (its items then show in status within a second).
    if status.phase.is_none_or(|p| p == TaskPhase::Pending)
        && let Some(mut next) = accept::compute_pending(t, &Ok(target), None, now)
    {
        next.items = Some(items);
        next.message = Some(format!(
            "{total} items queued; {}",
            if ctx.mirror.is_some() {
                "their results go to the result store (cogo_task_item_results)"
            } else {
                "no result store (Supabase) is configured, so the items' results are not kept"
            }
        ));
        settle_standing(&mut next, now);
        write_pending(ctx, t, (&status, &next), None).await?;
    }
    Ok(Action::requeue(ctx.config.resync))
}

/// Writes the Pending status `next` of `t` (fenced), with an Event when it is not accepted.
async fn write_pending(
    ctx: &Context,
    t: &AgentTask,
    (status, next): (&cogo_api::AgentTaskStatus, &cogo_api::AgentTaskStatus),
    invalid: Option<&crate::validate::Invalid>,
) -> Result<()> {
    let rv = t.resource_version();
    match update_status(
        ctx.io(),
        t,
        cogo_api::conditions::ACCEPTED,
        (status, &status.conditions),
        (next, &next.conditions),
        invalid,
        rv.as_deref(),
    )
    .await
    {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Writes the final status `next` of the indexed task `t`, and says so; false when a newer
/// view of the task conflicted (it is reconciled again).
async fn end(ctx: &Context, t: &AgentTask, next: cogo_api::AgentTaskStatus) -> Result<bool> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let api = Api::<AgentTask>::namespaced(ctx.client.clone(), &ns);
    match write_task_status(&api, &name, t.resource_version().as_deref(), &next).await {
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(false),
        other => other?,
    };
    ctx.metrics.status_written("AgentTask");
    said(ctx, t, &next).await;
    Ok(true)
}

/// Logs, counts and publishes an Event for the final status `next` of `t`, just written.
async fn said(ctx: &Context, t: &AgentTask, next: &cogo_api::AgentTaskStatus) {
    let ns = t.namespace().unwrap_or_default();
    crate::tasks::ended::ended(
        (&ctx.scheduler, &ctx.metrics, &ctx.agents),
        (&ns, &t.name_any(), &t.spec.task_type),
        next,
    );
    let reason = cogo_api::conditions::find(&next.conditions, cogo_api::conditions::SUCCEEDED)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let type_ = match next.phase {
        Some(TaskPhase::Failed) => EventType::Warning,
        _ => EventType::Normal,
    };
    // Success is in status, as for other tasks; the others are told.
    if next.phase != Some(TaskPhase::Succeeded) {
        publish_task_event(
            &ctx.recorder,
            t,
            (type_, &reason),
            next.message.as_deref(),
            "Items",
        )
        .await;
    }
}

/// Moves the items' time on every [`TICK`] and writes the status of each indexed task whose
/// items changed (see [`crate::tasks::Scheduler::tick_boards`]), until the task cache ends.
pub async fn drive(ctx: Arc<Context>, store: Store<AgentTask>) {
    if crate::kube_io::listed(&store).await.is_err() {
        return;
    }
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // A write in flight keeps its board out of the next ticks, so a slow API server delays
        // only that board's status: every board's items keep moving.
        for due in ctx
            .scheduler
            .tick_boards(Instant::now(), STATUS_EVERY, &ctx.agents)
        {
            tokio::spawn(write_items(ctx.clone(), store.clone(), due));
        }
    }
}

/// Writes what `due` says of an indexed task's items into its status; a task decided by it
/// is finished, and its items forgotten. A write that fails is made again at the next tick.
async fn write_items(ctx: Arc<Context>, store: Store<AgentTask>, due: BoardStatus) {
    let (ns, name) = (due.namespace.as_str(), due.name.as_str());
    let Some(t) = store.get(&ObjectRef::new(name).within(ns)) else {
        ctx.scheduler.drop_board(ns, name);
        return;
    };
    if t.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(TaskPhase::is_terminal)
    {
        ctx.scheduler.drop_board(ns, name);
        return;
    }
    let next = items::status_of(&t, &due, &Time(jiff::Timestamp::now()));
    let api = Api::<AgentTask>::namespaced(ctx.client.clone(), ns);
    match write_task_status(&api, name, t.resource_version().as_deref(), &next).await {
        Ok(_) => {
            ctx.metrics.status_written("AgentTask");
            ctx.scheduler.status_written(ns, name);
            if due.outcome.is_some() {
                ctx.scheduler.drop_board(ns, name);
                said(&ctx, &t, &next).await;
            }
        }
        Err(e) => {
            // A conflict: the cache is behind the write just made, or the spec changed.
            debug!(task = name, error = %e, "the items' status is written again at the next tick");
            if !matches!(&e, kube::Error::Api(s) if s.code == 409) {
                warn!(task = name, namespace = ns, error = %e, "cannot write the items' status; trying again");
            }
            ctx.scheduler.status_unwritten(ns, name);
        }
    }
}
