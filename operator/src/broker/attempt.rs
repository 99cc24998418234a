//! The calls about one task a pod runs: heartbeat, complete, and read.

use super::*;

pub(super) async fn heartbeat(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    Bearer(claims): Bearer,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let Json(req) = body?;
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

pub(super) async fn complete(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    Bearer(claims): Bearer,
    _share: BodyShare,
    body: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Json<CompleteResponse>, ApiError> {
    let Json(mut req) = body?;
    let (api, mut task) = b.held_task(&claims, &ns, &name, None).await?;
    let room = transition::ResultRoom {
        status_bytes: b.max_result_bytes,
        store: b.results.is_some(),
    };
    let mut fresh = false;
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
