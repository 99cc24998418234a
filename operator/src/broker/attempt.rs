//! The calls about one task a pod runs: heartbeat, complete, and read.

use super::*;

pub(super) async fn heartbeat(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    Bearer(claims): Bearer,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let Json(req) = body?;
    if let Some(i) = req.item {
        item_lease(&b, &claims, (&ns, &name, i), (&req.pod, req.attempt))?;
        let cancelled = b
            .tasks
            .get()
            .and_then(|s| s.get(&ObjectRef::new(&name).within(&ns)))
            .is_some_and(|t| t.spec.cancel_requested);
        return Ok(Json(HeartbeatResponse { cancelled }));
    }
    let (_, mut task) = b
        .held_task(&claims, &ns, &name, Some((&req.pod, req.attempt)))
        .await?;
    let renewed = b
        .scheduler
        .renew(&ns, &name, &req.pod, req.attempt, std::time::Instant::now());
    if renewed.is_none() {
        // Not in the table (released, or held by another operator before this one led): only
        // the task's status at the API server may say this pod still runs it.
        task = b.assigned_task(&claims, &ns, &name, true).await?.1;
        transition::check_lease(&task, &req.pod, req.attempt).map_err(fence_error)?;
        b.scheduler
            .hold_running(&task, &b.agents, std::time::Instant::now());
    }
    if let Some(progress) = req.progress.as_deref() {
        show_progress(&b, &ns, &task, progress).await;
    }
    Ok(Json(HeartbeatResponse {
        cancelled: task.spec.cancel_requested,
    }))
}

/// Writes a running task's progress as its status message, when it changed. Only the task as
/// seen is written over (a newer state wins), and a failed write is left to the next
/// heartbeat: progress is a courtesy, never a reason to fail a heartbeat.
async fn show_progress(b: &Broker, ns: &str, task: &AgentTask, progress: &str) {
    let Some(status) = task.status.as_ref() else {
        return;
    };
    if status.phase != Some(TaskPhase::Running) || status.message.as_deref() == Some(progress) {
        return;
    }
    let mut end = progress.len().min(1024);
    while !progress.is_char_boundary(end) {
        end -= 1;
    }
    let progress = &progress[..end];
    if status.message.as_deref() == Some(progress) {
        return;
    }
    let mut next = status.clone();
    next.message = Some(progress.to_string());
    let api: kube::Api<AgentTask> = kube::Api::namespaced(b.client.clone(), ns);
    if let Err(e) = write_task_status(&api, &task.name_any(), task.resource_version().as_deref(), &next).await
    {
        debug!(task = %task.name_any(), error = %e, "progress not written; the next heartbeat tries again");
    }
}

/// Checks that the bearer's agent holds attempt `attempt` of item `i` of `ns/name` on `pod`,
/// and renews that lease.
fn item_lease(
    b: &Broker,
    claims: &Claims,
    (ns, name, i): (&str, &str, u32),
    (pod, attempt): (&str, i32),
) -> Result<(), ApiError> {
    let agent = claims
        .sub
        .strip_prefix(&Claims::subject(ns, ""))
        .ok_or(AuthError::WrongAgent)?;
    match b.scheduler.item_lease((ns, name, i), (agent, pod, attempt), true) {
        Some(Ok(())) => Ok(()),
        Some(Err(fence)) => Err(item_fence_error(ns, name, i, fence)),
        None => Err(no_items(ns, name)),
    }
}

/// The answer to a call about an item of a task whose items are not laid out here: it is
/// finished, cancelled, gone, or not an indexed task.
fn no_items(ns: &str, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "LeaseLost",
        format!("{ns}/{name} has no running items here: it is finished, cancelled, gone or not indexed"),
    )
}

fn item_fence_error(ns: &str, name: &str, i: u32, fence: crate::tasks::items::ItemFence) -> ApiError {
    use crate::tasks::items::ItemFence;
    match fence {
        ItemFence::NoSuchItem => ApiError::new(
            StatusCode::NOT_FOUND,
            "ItemNotFound",
            format!("{ns}/{name} has no item {i}"),
        ),
        ItemFence::LeaseLost => ApiError::new(
            StatusCode::CONFLICT,
            "LeaseLost",
            format!("item {i} of {ns}/{name} is not leased to this pod for this attempt"),
        ),
        ItemFence::AlreadyRecorded => ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyRecorded",
            format!("the outcome of this attempt of item {i} of {ns}/{name} is recorded already"),
        ),
    }
}

/// Records the outcome of an item's attempt: its result first goes to the result store (when
/// there is one), in a batch with other items', so an acknowledged result is never lost.
async fn complete_item(
    b: &Broker,
    claims: &Claims,
    (ns, name, i): (&str, &str, u32),
    req: CompleteRequest,
) -> Result<Json<CompleteResponse>, ApiError> {
    use crate::tasks::items::{ItemEnd, ItemFence};
    let agent = claims
        .sub
        .strip_prefix(&Claims::subject(ns, ""))
        .ok_or(AuthError::WrongAgent)?;
    match b
        .scheduler
        .item_lease((ns, name, i), (agent, &req.pod, req.attempt), false)
    {
        Some(Ok(())) => {}
        Some(Err(ItemFence::AlreadyRecorded)) => {
            return Ok(Json(CompleteResponse {
                phase: TaskPhase::Running,
                applied: false,
            }));
        }
        Some(Err(fence)) => return Err(item_fence_error(ns, name, i, fence)),
        None => return Err(no_items(ns, name)),
    }
    let mut req = req;
    if let (Outcome::Succeeded, Some(result)) = (req.outcome, &req.result) {
        let too_deep = cogo_api::json::too_deep("the result", result);
        match (&b.results, too_deep) {
            (_, Some(why)) => {
                req.outcome = Outcome::Failed;
                req.error = Some(format!("{}: {why}", transition::reason::INVALID_RESULT));
                req.retryable = false;
            }
            (Some(store), None) => {
                use crate::supabase::results::StoreError;
                let task = b
                    .tasks
                    .get()
                    .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
                    .ok_or_else(|| ApiError::task_not_found(ns, name))?;
                let row = crate::supabase::row::row_id(&task, &b.keys);
                match store.put_item(&row, (i, req.attempt), result).await {
                    Ok(()) => {}
                    Err(StoreError::Unavailable(why)) => {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "ResultStoreUnavailable",
                            format!(
                                "the result store cannot take the item's result now ({why}); offer it again"
                            ),
                        ));
                    }
                    Err(e @ StoreError::Refused(_)) => {
                        req.outcome = Outcome::Failed;
                        req.error = Some(format!("{}: {e}", transition::reason::INVALID_RESULT));
                        req.retryable = false;
                    }
                }
            }
            (None, None) => {}
        }
    }
    let ended = b.scheduler.complete_item(
        (ns, name, i),
        (&req.pod, req.attempt),
        (req.outcome, req.retryable, req.error.as_deref()),
    );
    match ended {
        Some(Ok(end)) => Ok(Json(CompleteResponse {
            phase: match end {
                ItemEnd::Succeeded => TaskPhase::Succeeded,
                ItemEnd::Retrying => TaskPhase::Pending,
                ItemEnd::Failed => TaskPhase::Failed,
            },
            applied: true,
        })),
        Some(Err(ItemFence::AlreadyRecorded)) => Ok(Json(CompleteResponse {
            phase: TaskPhase::Running,
            applied: false,
        })),
        Some(Err(fence)) => Err(item_fence_error(ns, name, i, fence)),
        None => Err(no_items(ns, name)),
    }
}

pub(super) async fn complete(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    Bearer(claims): Bearer,
    _share: BodyShare,
    body: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Json<CompleteResponse>, ApiError> {
    let Json(mut req) = body?;
    if let Some(i) = req.item {
        return complete_item(&b, &claims, (&ns, &name, i), req).await;
    }
    let (api, mut task) = b.held_task(&claims, &ns, &name, None).await?;
    let room = transition::ResultRoom {
        status_bytes: b.max_result_bytes,
        store: b.results.is_some(),
    };
    let mut fresh = false;
    // An unwritten lease of the attempt waits while its outcome is written in its place.
    let _writing = b.scheduler.writing_outcome(&ns, &name);
    for _ in 0..3 {
        let policy = Policy::of(&task, b.agent(&ns, &assigned_agent(&task)).as_deref());
        let status = match transition::completed(&task, &req, &policy, &now(), room) {
            Ok(s) => s,
            Err(Fence::AlreadyRecorded(phase)) => {
                return Ok(Json(CompleteResponse {
                    phase,
                    applied: false,
                }));
            }
            // The cached view may predate the lease: ask the API server.
            Err(Fence::LeaseLost { .. }) if !fresh => {
                fresh = true;
                task = b.assigned_task(&claims, &ns, &name, true).await?.1;
                continue;
            }
            Err(f) => return Err(fence_error(f)),
        };
        let rv = task.resource_version().unwrap_or_default();
        // A result too large for status is stored before the outcome is recorded, so an
        // acknowledged result survives any restart; until the store takes it, the agent offers
        // the outcome again.
        if let (Some(store), Some(r), Some(result)) = (&b.results, &status.result_ref, &req.result) {
            use crate::supabase::results::StoreError;
            match store
                .put(&crate::supabase::row::row_id(&task, &b.keys), &r.digest, result)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Unavailable(why)) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ResultStoreUnavailable",
                        format!("the result store cannot take the result now ({why}); offer it again"),
                    ));
                }
                Err(e @ StoreError::Refused(_)) => {
                    req = CompleteRequest {
                        outcome: Outcome::Failed,
                        result: None,
                        error: Some(format!("{}: {e}", transition::reason::INVALID_RESULT)),
                        retryable: false,
                        ..req
                    };
                    continue;
                }
            }
        }
        match write_task_status(&api, &name, Some(&rv), &status).await {
            Ok(_) => {
                b.scheduler.outcome_written(&task, req.attempt);
                b.scheduler.attempts.end(
                    (&ns, &name),
                    req.attempt,
                    status.phase.unwrap_or(TaskPhase::Running),
                    status.message.as_deref(),
                );
                b.scheduler.release(&ns, &name);
                crate::tasks::ended::ended(
                    (&b.scheduler, &b.metrics, &b.agents),
                    (&ns, &name, &task.spec.task_type),
                    &status,
                );
                let phase = status.phase.unwrap_or(TaskPhase::Running);
                // Success is in status; an Event for it would be one more write per task.
                let event = match phase {
                    TaskPhase::Succeeded => None,
                    TaskPhase::Cancelled => Some((EventType::Normal, "Cancelled")),
                    TaskPhase::Pending => Some((EventType::Warning, "BackingOff")),
                    _ => Some((EventType::Warning, "Failed")),
                };
                if let Some(event) = event {
                    publish_task_event(&b.recorder, &task, event, status.message.as_deref(), "Complete")
                        .await;
                }
                return Ok(Json(CompleteResponse { phase, applied: true }));
            }
            Err(e) if is_conflict(&e) => {
                fresh = true;
                task = b.assigned_task(&claims, &ns, &name, true).await?.1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        "the task kept changing; try again",
    ))
}

pub(super) fn view(task: &AgentTask) -> TaskView {
    let s = task.status.clone().unwrap_or_default();
    TaskView {
        namespace: task.namespace().unwrap_or_default(),
        name: task.name_any(),
        uid: task.metadata.uid.clone().unwrap_or_default(),
        task_type: task.spec.task_type.clone(),
        parent: task.spec.parent.clone(),
        input: task.spec.input.clone(),
        phase: s.phase.unwrap_or_default(),
        attempt: s.attempt,
        result: s.result,
        result_ref: s.result_ref,
        message: s.message,
    }
}

pub(super) async fn read_task(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    Bearer(claims): Bearer,
) -> Result<Json<TaskView>, ApiError> {
    if !claims
        .sub
        .starts_with(&cogo_api::broker::Claims::subject(&ns, ""))
    {
        return Err(AuthError::WrongAgent.into());
    }
    let task = Api::<AgentTask>::namespaced(b.client.clone(), &ns)
        .get_opt(&name)
        .await?
        .ok_or_else(|| ApiError::task_not_found(&ns, &name))?;
    Ok(Json(view(&b.as_leased(&ns, task))))
}
