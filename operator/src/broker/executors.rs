//! What Executors call: their workers' reports, and the public keys of worker tokens.

use super::*;

/// The most workers and job totals one report may list.
const MAX_REPORTED: usize = 4096;

pub(super) async fn report_workers(
    State(b): State<Arc<Broker>>,
    Path((ns, agent)): Path<(String, String)>,
    _: AgentBearer,
    body: Result<Json<WorkerReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(report) = body?;
    let executor = b
        .agent(&ns, &agent)
        .ok_or_else(|| ApiError::agent_not_found(&ns, &agent))?;
    if executor.spec.role != AgentRole::Executor {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!(
                "{agent} is a {} agent; only Executors report workers",
                executor.spec.role
            ),
        ));
    }
    if report.pod.is_empty() || report.workers.len() > MAX_REPORTED || report.jobs.len() > MAX_REPORTED {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("pod must be set, and workers and jobs list at most {MAX_REPORTED} entries"),
        ));
    }
    b.scheduler.record_workers(&ns, &agent, report);
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn worker_keys(State(b): State<Arc<Broker>>) -> Result<Json<WorkerKeySet>, ApiError> {
    let keys = b.worker_keys.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NoWorkerKeys",
            "this operator issues no worker tokens",
        )
    })?;
    let set = keys.read().map(|k| k.key_set()).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "the key table is poisoned",
        )
    })?;
    Ok(Json(set))
}
