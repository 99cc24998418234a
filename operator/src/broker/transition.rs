//! Pure status transitions the broker makes: a lease moves a task to Running, a completion
//! to its final phase. Both are fenced by the attempt number, so a late call from a pod whose
//! lease was taken away cannot change a newer attempt.

use cogo_api::{
    AgentTask, AgentTaskStatus, TaskPhase,
    broker::{CompleteRequest, Outcome},
    conditions::{self, SUCCEEDED, status as cs},
    task::{ResultRef, TaskAttempt},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

/// The most attempts status keeps.
pub const MAX_ATTEMPTS_KEPT: usize = 10;

/// Reasons of the `Succeeded` condition and of attempt outcomes.
pub mod reason {
    /// Leased and running.
    pub const RUNNING: &str = "Running";
    /// The handler returned a result.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The handler failed.
    pub const HANDLER_FAILED: &str = "HandlerFailed";
    /// The task was cancelled.
    pub const CANCELLED: &str = "Cancelled";
    /// The result was too large for status.
    pub const RESULT_TOO_LARGE: &str = "ResultTooLarge";
}

/// Why a call about an attempt was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// The task is not leased by this pod for this attempt (any more).
    LeaseLost {
        /// The task's current attempt.
        current: i32,
    },
    /// The same outcome for the same attempt was already recorded: nothing to do.
    AlreadyRecorded(TaskPhase),
}

/// The status of a task just leased by `pod` of agent `agent`, or None when it is not Pending.
pub fn leased(task: &AgentTask, agent: &str, pod: &str, now: &Time) -> Option<AgentTaskStatus> {
    let mut s = task.status.clone().unwrap_or_default();
    if s.phase.unwrap_or_default() != TaskPhase::Pending {
        return None;
    }
    s.attempt += 1;
    s.phase = Some(TaskPhase::Running);
    s.agent = Some(agent.to_string());
    s.pod = Some(pod.to_string());
    s.start_time.get_or_insert_with(|| now.clone());
    s.retry_after = None;
    s.message = Some(format!("attempt {} running on pod {pod}", s.attempt));
    s.attempts.push(TaskAttempt {
        number: s.attempt,
        agent: agent.to_string(),
        pod: pod.to_string(),
        start_time: now.clone(),
        finish_time: None,
        outcome: None,
        message: None,
    });
    if s.attempts.len() > MAX_ATTEMPTS_KEPT {
        s.attempts.drain(..s.attempts.len() - MAX_ATTEMPTS_KEPT);
    }
    let c = conditions::condition(
        SUCCEEDED,
        cs::UNKNOWN,
        reason::RUNNING,
        "the task is running",
        task.metadata.generation,
        now,
    );
    conditions::set_condition(&mut s.conditions, c);
    Some(s)
}

/// Checks that `pod` holds the lease of attempt `attempt`.
pub fn check_lease(task: &AgentTask, pod: &str, attempt: i32) -> Result<(), Fence> {
    let s = task.status.clone().unwrap_or_default();
    let current = s.attempt;
    if s.phase == Some(TaskPhase::Running) && current == attempt && s.pod.as_deref() == Some(pod) {
        Ok(())
    } else {
        Err(Fence::LeaseLost { current })
    }
}

/// The status after the agent's report of an attempt's outcome. Results larger than
/// `max_result_bytes` are not kept in status: a digest and size are, and the reason.
pub fn completed(
    task: &AgentTask,
    req: &CompleteRequest,
    now: &Time,
    max_result_bytes: usize,
) -> Result<AgentTaskStatus, Fence> {
    let previous = task.status.clone().unwrap_or_default();
    if let Some(phase) = previous.phase
        && phase.is_terminal()
        && previous.attempt == req.attempt
        && previous.pod.as_deref() == Some(req.pod.as_str())
    {
        return Err(Fence::AlreadyRecorded(phase));
    }
    check_lease(task, &req.pod, req.attempt)?;
    let mut s = previous;
    let gen_ = task.metadata.generation;
    let (phase, status, why, message) = match req.outcome {
        Outcome::Succeeded => (
            TaskPhase::Succeeded,
            cs::TRUE,
            reason::SUCCEEDED,
            "the task succeeded".to_string(),
        ),
        Outcome::Failed => (
            TaskPhase::Failed,
            cs::FALSE,
            reason::HANDLER_FAILED,
            req.error.clone().unwrap_or_else(|| "the handler failed".into()),
        ),
        Outcome::Cancelled => (
            TaskPhase::Cancelled,
            cs::FALSE,
            reason::CANCELLED,
            "the task was cancelled".into(),
        ),
    };
    s.phase = Some(phase);
    s.completion_time = Some(now.clone());
    s.message = Some(message.clone());
    if let Some(last) = s.attempts.last_mut().filter(|a| a.number == req.attempt) {
        last.finish_time = Some(now.clone());
        last.outcome = Some(why.to_string());
        last.message = (phase != TaskPhase::Succeeded).then(|| message.clone());
    }
    if let Some(result) = &req.result {
        let bytes = serde_json::to_vec(result).unwrap_or_default();
        if bytes.len() <= max_result_bytes {
            s.result = Some(result.clone());
        } else {
            s.result_ref = Some(ResultRef {
                digest: format!("sha256:{}", hex(&Sha256::digest(&bytes))),
                size_bytes: bytes.len() as i64,
                location: "supabase:distributed_agent_tasks".into(),
                reason: format!(
                    "{}: the result is {} bytes, more than the {max_result_bytes} kept in status",
                    reason::RESULT_TOO_LARGE,
                    bytes.len()
                ),
            });
        }
    }
    conditions::set_condition(
        &mut s.conditions,
        conditions::condition(SUCCEEDED, status, why, message, gen_, now),
    );
    Ok(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    fn task() -> AgentTask {
        let mut t = AgentTask::new(
            "t",
            serde_json::from_value(json!({"agent": "a", "type": "cogo.echo"})).unwrap(),
        );
        t.metadata.generation = Some(1);
        t.status = Some(AgentTaskStatus {
            phase: Some(TaskPhase::Pending),
            ..Default::default()
        });
        t
    }

    fn complete(
        pod: &str,
        attempt: i32,
        outcome: Outcome,
        result: Option<serde_json::Value>,
    ) -> CompleteRequest {
        CompleteRequest {
            pod: pod.into(),
            attempt,
            outcome,
            result,
            error: Some("boom".into()),
            retryable: false,
        }
    }

    #[test]
    fn a_lease_runs_the_next_attempt_once() {
        let mut t = task();
        let s = leased(&t, "a", "a-pod-1", &at(10)).unwrap();
        assert_eq!(
            (s.phase, s.attempt, s.pod.as_deref()),
            (Some(TaskPhase::Running), 1, Some("a-pod-1"))
        );
        assert_eq!(s.attempts.len(), 1);
        assert_eq!(
            conditions::find(&s.conditions, SUCCEEDED).unwrap().reason,
            reason::RUNNING
        );
        t.status = Some(s);
        assert!(
            leased(&t, "a", "a-pod-2", &at(11)).is_none(),
            "a running task is not leased again"
        );
    }

    #[test]
    fn completion_records_the_outcome_and_result() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let s = completed(
            &t,
            &complete("p", 1, Outcome::Succeeded, Some(json!({"echo": 1}))),
            &at(12),
            1024,
        )
        .unwrap();
        assert_eq!(s.phase, Some(TaskPhase::Succeeded));
        assert_eq!(s.result, Some(json!({"echo": 1})));
        assert_eq!(s.completion_time, Some(at(12)));
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reason::SUCCEEDED)
        );
        assert_eq!(s.attempts[0].outcome.as_deref(), Some(reason::SUCCEEDED));

        let f = completed(&t, &complete("p", 1, Outcome::Failed, None), &at(12), 1024).unwrap();
        assert_eq!(f.phase, Some(TaskPhase::Failed));
        assert_eq!(f.message.as_deref(), Some("boom"));
    }

    #[test]
    fn late_and_duplicate_reports_are_fenced() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let late = completed(&t, &complete("p", 0, Outcome::Succeeded, None), &at(12), 1024);
        assert_eq!(late, Err(Fence::LeaseLost { current: 1 }));
        let other_pod = completed(&t, &complete("q", 1, Outcome::Succeeded, None), &at(12), 1024);
        assert_eq!(other_pod, Err(Fence::LeaseLost { current: 1 }));
        t.status = Some(completed(&t, &complete("p", 1, Outcome::Succeeded, None), &at(12), 1024).unwrap());
        let again = completed(&t, &complete("p", 1, Outcome::Failed, None), &at(13), 1024);
        assert_eq!(
            again,
            Err(Fence::AlreadyRecorded(TaskPhase::Succeeded)),
            "the first outcome stands"
        );
    }

    #[test]
    fn large_results_keep_only_a_digest_in_status() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let big = json!({"blob": "x".repeat(2000)});
        let s = completed(
            &t,
            &complete("p", 1, Outcome::Succeeded, Some(big.clone())),
            &at(12),
            1024,
        )
        .unwrap();
        assert!(s.result.is_none());
        let r = s.result_ref.unwrap();
        let bytes = serde_json::to_vec(&big).unwrap();
        assert_eq!(r.size_bytes, bytes.len() as i64);
        assert_eq!(r.digest, format!("sha256:{}", hex(&Sha256::digest(&bytes))));
        assert!(r.reason.starts_with(reason::RESULT_TOO_LARGE));
    }

    #[test]
    fn attempts_are_bounded() {
        let mut t = task();
        for i in 0..15 {
            let mut s = leased(&t, "a", "p", &at(i)).unwrap();
            s.phase = Some(TaskPhase::Pending);
            t.status = Some(s);
        }
        let s = t.status.unwrap();
        assert_eq!(s.attempt, 15);
        assert_eq!(s.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(s.attempts.first().unwrap().number, 6);
    }
}
