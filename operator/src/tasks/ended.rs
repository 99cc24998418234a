//! What is said when a task starts and ends. The log lines use the levels the system
//! specification gives them: INFO for a task that starts and one that ends well (or is
//! cancelled), WARN for a failed attempt that will be retried (the work is slowed, not lost),
//! ERROR for a task that failed. A task that succeeded or failed is also counted, once, where
//! its final status was written: in the scheduler (for its agent's `status.tasks`) and in the
//! metrics (by agent, role and outcome).

use cogo_api::{AgentTaskStatus, CogoAgent, TaskPhase, conditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{error, info, warn};

use super::Scheduler;
use crate::metrics::Metrics;

/// Logs, and counts when final, the outcome `status` of `namespace/name` (of type
/// `task_type`) just written.
pub fn ended(
    (scheduler, metrics, agents): (&Scheduler, &Metrics, &Store<CogoAgent>),
    (namespace, name, task_type): (&str, &str, &str),
    status: &AgentTaskStatus,
) {
    log(namespace, name, task_type, status);
    let (Some(phase @ (TaskPhase::Succeeded | TaskPhase::Failed)), Some(agent)) =
        (status.phase, &status.agent)
    else {
        return;
    };
    let seconds = match (&status.start_time, &status.completion_time) {
        (Some(start), Some(end)) => Some(end.0.duration_since(start.0).as_secs_f64().max(0.0)),
        _ => None,
    };
    scheduler.count_finished(namespace, agent, phase, seconds);
    let role = agents
        .get(&ObjectRef::new(agent).within(namespace))
        .map_or("", |a| a.spec.role.as_str());
    metrics.task_finished((namespace, agent, role), phase.as_str(), seconds);
}

/// Logs that attempt `status.attempt` of `namespace/name` started on `pod` of `agent`.
pub fn started(namespace: &str, name: &str, agent: &str, pod: &str, status: &AgentTaskStatus) {
    info!(
        namespace,
        task = name,
        agent,
        pod,
        attempt = status.attempt,
        "task started"
    );
}

/// Logs the outcome `status` of `namespace/name` (of type `task_type`) once written: a final
/// phase, or Pending again for a retry.
fn log(namespace: &str, name: &str, task_type: &str, status: &AgentTaskStatus) {
    let reason = conditions::find(&status.conditions, conditions::SUCCEEDED)
        .map(|c| c.reason.as_str())
        .unwrap_or_default();
    let agent = status.agent.as_deref().unwrap_or_default();
    let detail = status.message.as_deref().unwrap_or_default();
    let attempt = status.attempt;
    match status.phase {
        Some(TaskPhase::Succeeded) => {
            info!(
                namespace,
                task = name,
                task_type,
                agent,
                attempt,
                "task succeeded"
            )
        }
        Some(TaskPhase::Cancelled) => {
            info!(
                namespace,
                task = name,
                task_type,
                agent,
                attempt,
                reason,
                "task cancelled"
            )
        }
        Some(TaskPhase::Failed) => {
            error!(
                namespace,
                task = name,
                task_type,
                agent,
                attempt,
                reason,
                detail,
                "task failed"
            )
        }
        _ => warn!(
            namespace,
            task = name,
            task_type,
            agent,
            attempt,
            reason,
            detail,
            "task attempt failed; retrying"
        ),
    }
}
