//! Pure status transitions after a task is accepted. The broker's: a lease moves a task to
//! Running, a completion to its final phase; both are fenced by the attempt number, so a late
//! call from a pod whose lease was taken away cannot change a newer attempt. The task
//! controller's: an attempt whose pod stopped heartbeating ends, a task out of time fails, a
//! waiting task that is cancelled ends.

use cogo_api::{
    AgentTask, AgentTaskStatus, CogoAgent, RetryPolicy, TaskPhase,
    broker::{CompleteRequest, Outcome},
    conditions::{self, ACCEPTED, SUCCEEDED, status as cs},
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
    /// The result was too large for status (and, when the task failed for it, no result
    /// store could take it).
    pub const RESULT_TOO_LARGE: &str = "ResultTooLarge";
    /// The result cannot be kept as it is: it nests too deep, or the result store refused it.
    pub const INVALID_RESULT: &str = "InvalidResult";
    /// The attempt's pod stopped heartbeating (it died, hung or lost the network).
    pub const HEARTBEAT_LOST: &str = "HeartbeatLost";
    /// The task ran longer than its timeout.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// An attempt failed and the next one waits for its backoff.
    pub const BACKING_OFF: &str = "BackingOff";
}

/// The retry policy and timeout that apply to a task: its own, else its agent's
/// `taskDefaults`, else the built-in defaults (3 retries, 1 s doubling to 300 s; 600 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Seconds the task may run across all attempts, from its first start.
    pub timeout_seconds: i64,
}

impl Policy {
    /// The policy of `task`, whose agent (the one it names, or the one that ran it) is `agent`.
    pub fn of(task: &AgentTask, agent: Option<&CogoAgent>) -> Policy {
        let defaults = agent.and_then(|a| a.spec.task_defaults.as_ref());
        Policy {
            retry: task
                .spec
                .retry
                .clone()
                .or_else(|| defaults.and_then(|d| d.retry.clone()))
                .unwrap_or_default(),
            timeout_seconds: task
                .spec
                .timeout_seconds
                .or_else(|| defaults.map(|d| d.timeout_seconds))
                .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
        }
    }

    /// Seconds to wait before the attempt after failed attempt `attempt` (from 1):
    /// `initialSeconds * factor^(attempt-1)`, at most `maxSeconds`.
    pub fn backoff_seconds(&self, attempt: i32) -> i64 {
        let b = &self.retry.backoff;
        let max = i64::from(b.max_seconds);
        let mut delay = i64::from(b.initial_seconds);
        for _ in 1..attempt.max(1) {
            delay = delay.saturating_mul(i64::from(b.factor.max(1)));
            if delay >= max {
                break;
            }
        }
        delay.min(max)
    }

    /// When the task's time is up, counted from its first start; None before it started.
    pub fn deadline(&self, status: &AgentTaskStatus) -> Option<jiff::Timestamp> {
        let start = status.start_time.as_ref()?.0;
        Some(start + jiff::SignedDuration::from_secs(self.timeout_seconds))
    }
}

/// Timeout of tasks whose agent sets none.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 600;

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

/// The status of a task just leased by `pod` of agent `agent`, or None when it is not Pending
/// (or waits for its retry's backoff).
pub fn leased(task: &AgentTask, agent: &str, pod: &str, now: &Time) -> Option<AgentTaskStatus> {
    let mut s = task.status.clone().unwrap_or_default();
    if s.phase.unwrap_or_default() != TaskPhase::Pending {
        return None;
    }
    // A retry waits for its backoff, whoever queued it.
    if s.retry_after.as_ref().is_some_and(|at| at.0 > now.0) {
        return None;
    }
    s.attempt += 1;
    s.phase = Some(TaskPhase::Running);
    s.observed_generation = task.metadata.generation;
    // A task leased before the controller wrote its first status is accepted by the lease.
    if conditions::find(&s.conditions, ACCEPTED).is_none_or(|c| c.status != cs::TRUE) {
        let c = conditions::condition(
            ACCEPTED,
            cs::TRUE,
            super::accept::reason::QUEUED,
            format!("leased by agent {agent}"),
            task.metadata.generation,
            now,
        );
        conditions::set_condition(&mut s.conditions, c);
    }
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

/// The status of `task` with the lease `lease`, handed to its pod but not written yet, in it:
/// None when the status has moved on (the lease or the attempt's outcome was written, or the
/// task was leased again, finished or changed otherwise), so the unwritten lease no longer
/// applies.
pub fn as_leased(task: &AgentTask, lease: &super::UnwrittenLease) -> Option<AgentTaskStatus> {
    let s = task.status.as_ref();
    let pending = s.and_then(|s| s.phase).unwrap_or_default() == TaskPhase::Pending;
    let next = s.map_or(0, |s| s.attempt) + 1;
    if !pending || next != lease.attempt {
        return None;
    }
    leased(task, &lease.agent, &lease.pod, &lease.at)
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

/// The longest error message kept in status, in bytes: it is copied into the message, the
/// `Succeeded` condition and the attempt's history, and the object must stay well within
/// etcd's size limit.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `message`, cut at [`MAX_MESSAGE_BYTES`] (at a character boundary) with a note saying so.
pub fn cap_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [{} more bytes cut]", &message[..end], message.len() - end)
}

/// Where a task's result can be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultRoom {
    /// The largest result, as JSON bytes, kept in status.
    pub status_bytes: usize,
    /// Whether a result store keeps larger ones (status then holds their digest).
    pub store: bool,
}

/// The status after the outcome `req` of the attempt it names. A retryable failure goes back
/// to Pending for the next attempt while `policy` allows; a result larger than
/// `room.status_bytes` keeps only its digest and size in status. A result that cannot be kept
/// (nested deeper than [`cogo_api::json::MAX_DEPTH`], or too large for status with no result
/// store) fails the task, with the reason, instead of being lost.
pub fn completed(
    task: &AgentTask,
    req: &CompleteRequest,
    policy: &Policy,
    now: &Time,
    room: ResultRoom,
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
    let result = req.result.as_ref().filter(|_| req.outcome == Outcome::Succeeded);
    let bytes = result.map(|r| serde_json::to_vec(r).unwrap_or_default());
    let unkept = match (result, &bytes) {
        (Some(r), Some(b)) => cogo_api::json::too_deep("the result", r)
            .map(|why| (reason::INVALID_RESULT, why))
            .or_else(|| {
                (b.len() > room.status_bytes && !room.store).then(|| {
                    (
                        reason::RESULT_TOO_LARGE,
                        format!(
                            "the result is {} bytes, more than the {} bytes kept in status, and no result \
                             store (Supabase) is configured for larger ones",
                            b.len(),
                            room.status_bytes
                        ),
                    )
                })
            }),
        _ => None,
    };
    let (phase, status, why, message) = match req.outcome {
        Outcome::Succeeded if unkept.is_some() => {
            let (why, message) = unkept.unwrap_or_default();
            (TaskPhase::Failed, cs::FALSE, why, message)
        }
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
            req.error
                .as_deref()
                .map(cap_message)
                .unwrap_or_else(|| "the handler failed".into()),
        ),
        Outcome::Cancelled => (
            TaskPhase::Cancelled,
            cs::FALSE,
            reason::CANCELLED,
            "the task was cancelled".into(),
        ),
    };
    if phase == TaskPhase::Failed && req.retryable {
        return Ok(end_attempt(task, why, &message, policy, now));
    }
    let detail = (phase != TaskPhase::Succeeded).then_some(message.as_str());
    close_attempt(&mut s, req.attempt, why, detail, now);
    if let (Some(result), Some(bytes), TaskPhase::Succeeded) = (result, bytes, phase) {
        if bytes.len() <= room.status_bytes {
            s.result = Some(result.clone());
        } else {
            s.result_ref = Some(ResultRef {
                digest: format!("sha256:{}", hex(&Sha256::digest(&bytes))),
                size_bytes: bytes.len() as i64,
                location: "supabase:distributed_agent_tasks".into(),
                reason: format!(
                    "{}: the result is {} bytes, more than the {} kept in status",
                    reason::RESULT_TOO_LARGE,
                    bytes.len(),
                    room.status_bytes
                ),
            });
        }
    }
    settle(&mut s, phase, (status, why, message), gen_, now);
    Ok(s)
}

/// Records how attempt `number` ended, when it is the newest attempt kept.
fn close_attempt(s: &mut AgentTaskStatus, number: i32, why: &str, message: Option<&str>, now: &Time) {
    if let Some(last) = s.attempts.last_mut().filter(|a| a.number == number) {
        last.finish_time = Some(now.clone());
        last.outcome = Some(why.to_string());
        last.message = message.map(str::to_string);
    }
}

/// Puts the task in `phase`, with `text` as its message and as the `Succeeded` condition's
/// (with `status` and `reason`). A final phase also records the completion time and ends any
/// backoff.
fn settle(
    s: &mut AgentTaskStatus,
    phase: TaskPhase,
    (status, reason, text): (&str, &str, String),
    generation: Option<i64>,
    now: &Time,
) {
    s.phase = Some(phase);
    // The transition was decided on this generation of the spec (a cancellation changes it).
    s.observed_generation = generation.or(s.observed_generation);
    if phase.is_terminal() {
        s.completion_time = Some(now.clone());
        s.retry_after = None;
    }
    s.message = Some(text.clone());
    conditions::set_condition(
        &mut s.conditions,
        conditions::condition(SUCCEEDED, status, reason, text, generation, now),
    );
}

/// Ends the running attempt, which failed with `why`: the task waits for its next attempt
/// (`Pending` with `retryAfter`) while the retry policy allows and it is not cancelled, and
/// otherwise ends as Failed (or Cancelled) with `why` as its reason.
pub fn end_attempt(
    task: &AgentTask,
    why: &str,
    message: &str,
    policy: &Policy,
    now: &Time,
) -> AgentTaskStatus {
    let mut s = task.status.clone().unwrap_or_default();
    let gen_ = task.metadata.generation;
    let attempt = s.attempt;
    close_attempt(&mut s, attempt, why, Some(message), now);
    s.pod = None;
    let (phase, status, reason, text) = if task.spec.cancel_requested {
        (
            TaskPhase::Cancelled,
            cs::FALSE,
            reason::CANCELLED,
            format!("the task was cancelled; attempt {attempt}: {message}"),
        )
    } else if attempt <= policy.retry.limit {
        let delay = policy.backoff_seconds(attempt);
        let text = format!(
            "attempt {attempt} failed ({why}: {message}); retry {attempt} of {} in {delay}s",
            policy.retry.limit
        );
        settle(
            &mut s,
            TaskPhase::Pending,
            (cs::UNKNOWN, reason::BACKING_OFF, text),
            gen_,
            now,
        );
        s.retry_after = Some(Time(now.0 + jiff::SignedDuration::from_secs(delay)));
        return s;
    } else {
        let retries = match policy.retry.limit {
            0 => "the retry policy allows no retries".to_string(),
            n => format!("all {n} retries are used"),
        };
        (
            TaskPhase::Failed,
            cs::FALSE,
            why,
            format!("attempt {attempt} failed: {message}; {retries}"),
        )
    };
    settle(&mut s, phase, (status, reason, text), gen_, now);
    s
}

/// The status of a task whose time is up at `now`, or None while it has time left (or it is
/// finished, or never started). A running attempt ends with it.
pub fn deadline_exceeded(task: &AgentTask, policy: &Policy, now: &Time) -> Option<AgentTaskStatus> {
    let mut s = task.status.clone().unwrap_or_default();
    if s.phase.is_none_or(TaskPhase::is_terminal) || policy.deadline(&s)? > now.0 {
        return None;
    }
    let text = format!(
        "the task ran past its timeout of {}s (across {} attempt(s))",
        policy.timeout_seconds, s.attempt
    );
    if s.phase == Some(TaskPhase::Running) {
        let attempt = s.attempt;
        close_attempt(&mut s, attempt, reason::DEADLINE_EXCEEDED, Some(&text), now);
    }
    s.pod = None;
    settle(
        &mut s,
        TaskPhase::Failed,
        (cs::FALSE, reason::DEADLINE_EXCEEDED, text),
        task.metadata.generation,
        now,
    );
    Some(s)
}

/// The status of a task cancelled before any pod runs it (Pending, or waiting for a retry),
/// or None when it is not cancelled or not waiting.
pub fn cancelled_while_waiting(task: &AgentTask, now: &Time) -> Option<AgentTaskStatus> {
    let mut s = task.status.clone().unwrap_or_default();
    if !task.spec.cancel_requested || s.phase.is_some_and(|p| p != TaskPhase::Pending) {
        return None;
    }
    settle(
        &mut s,
        TaskPhase::Cancelled,
        (
            cs::FALSE,
            reason::CANCELLED,
            "the task was cancelled before it ran".into(),
        ),
        task.metadata.generation,
        now,
    );
    Some(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ROOM: ResultRoom = ResultRoom {
        status_bytes: 1024,
        store: true,
    };

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

    fn pol() -> Policy {
        Policy::of(&task(), None)
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
            item: None,
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
        let accepted = conditions::find(&s.conditions, ACCEPTED).unwrap();
        assert_eq!(
            accepted.status, "True",
            "a task leased before its first status write is accepted by the lease"
        );
        assert_eq!(s.observed_generation, Some(1));
        t.status = Some(s);
        assert!(
            leased(&t, "a", "a-pod-2", &at(11)).is_none(),
            "a running task is not leased again"
        );
    }

    #[test]
    fn an_unwritten_lease_shows_until_the_status_moves_past_it() {
        let lease = |attempt| crate::tasks::UnwrittenLease {
            agent: "a".into(),
            pod: "p".into(),
            attempt,
            at: at(10),
        };
        let mut t = task();
        t.status = None;
        let s = as_leased(&t, &lease(1)).expect("a new task shows its first lease");
        assert_eq!(s, leased(&t, "a", "p", &at(10)).unwrap());
        assert!(as_leased(&t, &lease(2)).is_none(), "not another attempt's");

        // The lease written (or its outcome): the status says so itself.
        t.status = leased(&t, "a", "p", &at(10));
        assert!(as_leased(&t, &lease(1)).is_none());
        let done = completed(
            &t,
            &complete("p", 1, Outcome::Succeeded, None),
            &pol(),
            &at(11),
            ROOM,
        )
        .unwrap();
        t.status = Some(done);
        assert!(as_leased(&t, &lease(1)).is_none());

        // A retry waiting for its next attempt shows that attempt's lease, and not the last one's.
        let mut retried = task();
        retried.status = leased(&retried, "a", "p", &at(10));
        retried.status = Some(end_attempt(
            &retried,
            reason::HEARTBEAT_LOST,
            "gone",
            &pol(),
            &at(20),
        ));
        assert!(as_leased(&retried, &lease(1)).is_none());
        let after_backoff = crate::tasks::UnwrittenLease {
            at: at(25),
            ..lease(2)
        };
        let s = as_leased(&retried, &after_backoff).unwrap();
        assert_eq!(
            (s.phase, s.attempt, s.retry_after),
            (Some(TaskPhase::Running), 2, None)
        );
        assert_eq!(s.attempts.len(), 2);
    }

    #[test]
    fn completion_records_the_outcome_and_result() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let s = completed(
            &t,
            &complete("p", 1, Outcome::Succeeded, Some(json!({"echo": 1}))),
            &pol(),
            &at(12),
            ROOM,
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

        let f = completed(
            &t,
            &complete("p", 1, Outcome::Failed, None),
            &pol(),
            &at(12),
            ROOM,
        )
        .unwrap();
        assert_eq!(f.phase, Some(TaskPhase::Failed));
        assert_eq!(f.message.as_deref(), Some("boom"));
    }

    #[test]
    fn late_and_duplicate_reports_are_fenced() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let late = completed(
            &t,
            &complete("p", 0, Outcome::Succeeded, None),
            &pol(),
            &at(12),
            ROOM,
        );
        assert_eq!(late, Err(Fence::LeaseLost { current: 1 }));
        let other_pod = completed(
            &t,
            &complete("q", 1, Outcome::Succeeded, None),
            &pol(),
            &at(12),
            ROOM,
        );
        assert_eq!(other_pod, Err(Fence::LeaseLost { current: 1 }));
        t.status = Some(
            completed(
                &t,
                &complete("p", 1, Outcome::Succeeded, None),
                &pol(),
                &at(12),
                ROOM,
            )
            .unwrap(),
        );
        let again = completed(
            &t,
            &complete("p", 1, Outcome::Failed, None),
            &pol(),
            &at(13),
            ROOM,
        );
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
            &pol(),
            &at(12),
            ROOM,
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
    fn a_result_that_cannot_be_kept_fails_the_task_with_the_reason() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let big = json!({"blob": "x".repeat(2000)});
        let no_store = ResultRoom {
            status_bytes: 1024,
            store: false,
        };
        let req = complete("p", 1, Outcome::Succeeded, Some(big));
        let s = completed(&t, &req, &with_retry(3), &at(12), no_store).unwrap();
        assert_eq!(s.phase, Some(TaskPhase::Failed), "failed for good, not retried");
        assert!(s.result.is_none() && s.result_ref.is_none());
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        assert_eq!(c.reason, reason::RESULT_TOO_LARGE);
        assert!(c.message.contains("no result store"), "{}", c.message);

        let deep: serde_json::Value =
            serde_json::from_str(&format!("{}1{}", "[".repeat(70), "]".repeat(70))).unwrap();
        let req = complete("p", 1, Outcome::Succeeded, Some(deep));
        let s = completed(&t, &req, &with_retry(3), &at(12), ROOM).unwrap();
        assert_eq!(s.phase, Some(TaskPhase::Failed));
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        assert_eq!(c.reason, reason::INVALID_RESULT);
        assert!(c.message.contains("nests more than 64 levels"), "{}", c.message);
        assert_eq!(
            s.attempts.last().unwrap().outcome.as_deref(),
            Some(reason::INVALID_RESULT)
        );

        // A small result fits either way, and a failure's result is not kept.
        let req = complete("p", 1, Outcome::Succeeded, Some(json!({"ok": 1})));
        let s = completed(&t, &req, &pol(), &at(12), no_store).unwrap();
        assert_eq!(
            (s.phase, s.result),
            (Some(TaskPhase::Succeeded), Some(json!({"ok": 1})))
        );
        let req = complete("p", 1, Outcome::Failed, Some(json!({"partial": 1})));
        let s = completed(&t, &req, &pol(), &at(12), ROOM).unwrap();
        assert_eq!((s.phase, s.result), (Some(TaskPhase::Failed), None));
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

    fn with_retry(limit: i32) -> Policy {
        let mut p = pol();
        p.retry.limit = limit;
        p
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_cap() {
        let p = pol();
        let delays: Vec<i64> = (1..=11).map(|a| p.backoff_seconds(a)).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        let mut flat = pol();
        flat.retry.backoff.factor = 1;
        flat.retry.backoff.initial_seconds = 7;
        assert_eq!(flat.backoff_seconds(20), 7);
    }

    #[test]
    fn the_task_then_its_agent_then_the_defaults_set_the_policy() {
        let mut agent = CogoAgent::new(
            "a",
            serde_json::from_value(
                json!({"role": "Research", "taskDefaults": {"timeoutSeconds": 60, "retry": {"limit": 1}}}),
            )
            .unwrap(),
        );
        let mut t = task();
        assert_eq!(Policy::of(&t, None).timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert_eq!(Policy::of(&t, None).retry.limit, 3);
        let p = Policy::of(&t, Some(&agent));
        assert_eq!((p.timeout_seconds, p.retry.limit), (60, 1));
        t.spec.timeout_seconds = Some(5);
        t.spec.retry = Some(RetryPolicy {
            limit: 0,
            ..Default::default()
        });
        let p = Policy::of(&t, Some(&agent));
        assert_eq!((p.timeout_seconds, p.retry.limit), (5, 0));
        agent.spec.task_defaults = None;
        t.spec.retry = None;
        assert_eq!(Policy::of(&t, Some(&agent)).retry.limit, 3);
    }

    #[test]
    fn a_retryable_failure_backs_off_then_fails_when_retries_are_used() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let mut req = complete("p", 1, Outcome::Failed, None);
        req.retryable = true;
        let s = completed(&t, &req, &with_retry(1), &at(12), ROOM).unwrap();
        assert_eq!(s.phase, Some(TaskPhase::Pending));
        assert_eq!(s.retry_after, Some(at(13)), "1 s after the first failure");
        assert_eq!(s.pod, None);
        assert!(s.completion_time.is_none());
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", reason::BACKING_OFF)
        );
        assert_eq!(s.attempts[0].outcome.as_deref(), Some(reason::HANDLER_FAILED));

        t.status = Some(s);
        assert!(leased(&t, "a", "q", &at(12)).is_none(), "not before its backoff");
        t.status = leased(&t, "a", "q", &at(14));
        req.pod = "q".into();
        req.attempt = 2;
        let s = completed(&t, &req, &with_retry(1), &at(15), ROOM).unwrap();
        assert_eq!(s.phase, Some(TaskPhase::Failed));
        assert_eq!(s.retry_after, None);
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reason::HANDLER_FAILED)
        );
        assert!(c.message.contains("all 1 retries are used"), "{}", c.message);

        let mut fatal = complete("q", 2, Outcome::Failed, None);
        fatal.retryable = false;
        let s = completed(&t, &fatal, &with_retry(5), &at(15), ROOM).unwrap();
        assert_eq!(
            s.phase,
            Some(TaskPhase::Failed),
            "a failure that is not retryable is final"
        );
    }

    #[test]
    fn a_lost_heartbeat_retries_or_fails_saying_why() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let s = end_attempt(
            &t,
            reason::HEARTBEAT_LOST,
            "pod p stopped heartbeating",
            &with_retry(2),
            &at(30),
        );
        assert_eq!(s.phase, Some(TaskPhase::Pending));
        assert_eq!(s.attempts[0].outcome.as_deref(), Some(reason::HEARTBEAT_LOST));

        let s = end_attempt(
            &t,
            reason::HEARTBEAT_LOST,
            "pod p stopped heartbeating",
            &with_retry(0),
            &at(30),
        );
        assert_eq!(s.phase, Some(TaskPhase::Failed));
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        assert_eq!(c.reason, reason::HEARTBEAT_LOST);
        assert!(
            c.message.contains("pod p stopped heartbeating") && c.message.contains("allows no retries"),
            "{}",
            c.message
        );

        t.spec.cancel_requested = true;
        let s = end_attempt(&t, reason::HEARTBEAT_LOST, "gone", &with_retry(2), &at(30));
        assert_eq!(
            s.phase,
            Some(TaskPhase::Cancelled),
            "a cancelled task is not retried"
        );
    }

    #[test]
    fn the_deadline_counts_from_the_first_start_across_attempts() {
        let mut t = task();
        let mut p = pol();
        p.timeout_seconds = 60;
        assert!(deadline_exceeded(&t, &p, &at(1000)).is_none(), "never started");
        t.status = leased(&t, "a", "p", &at(10));
        assert!(deadline_exceeded(&t, &p, &at(69)).is_none());
        let mut retried = end_attempt(&t, reason::HEARTBEAT_LOST, "gone", &p, &at(20));
        retried.start_time = Some(at(10));
        let mut waiting = t.clone();
        waiting.status = Some(retried);
        let s = deadline_exceeded(&waiting, &p, &at(70)).unwrap();
        assert_eq!(
            s.phase,
            Some(TaskPhase::Failed),
            "a task waiting for a retry times out too"
        );

        let s = deadline_exceeded(&t, &p, &at(70)).unwrap();
        assert_eq!(s.phase, Some(TaskPhase::Failed));
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reason::DEADLINE_EXCEEDED)
        );
        assert_eq!(s.attempts[0].outcome.as_deref(), Some(reason::DEADLINE_EXCEEDED));
        t.status = Some(s);
        assert!(
            deadline_exceeded(&t, &p, &at(99)).is_none(),
            "finished tasks stay as they are"
        );
    }

    #[test]
    fn cancelling_a_waiting_task_ends_it_at_once() {
        let mut t = task();
        assert!(cancelled_while_waiting(&t, &at(5)).is_none());
        t.spec.cancel_requested = true;
        t.metadata.generation = Some(2);
        let s = cancelled_while_waiting(&t, &at(5)).unwrap();
        assert_eq!(s.phase, Some(TaskPhase::Cancelled));
        assert_eq!(
            s.observed_generation,
            Some(2),
            "the cancellation's generation is observed"
        );
        assert_eq!(s.completion_time, Some(at(5)));
        t.status = leased(&t, "a", "p", &at(10));
        assert!(
            cancelled_while_waiting(&t, &at(11)).is_none(),
            "a running task learns of it by heartbeat"
        );
    }

    #[test]
    fn long_error_messages_are_cut_everywhere_they_are_kept() {
        let mut t = task();
        t.status = leased(&t, "a", "p", &at(10));
        let mut failed = complete("p", 1, Outcome::Failed, None);
        failed.error = Some("é".repeat(500_000));
        let s = completed(&t, &failed, &pol(), &at(12), ROOM).unwrap();
        let c = conditions::find(&s.conditions, SUCCEEDED).unwrap();
        for (what, text) in [
            ("message", s.message.clone().unwrap_or_default()),
            ("condition", c.message.clone()),
            (
                "attempt",
                s.attempts
                    .last()
                    .and_then(|a| a.message.clone())
                    .unwrap_or_default(),
            ),
        ] {
            assert!(
                text.len() < MAX_MESSAGE_BYTES + 64,
                "{what}: {} bytes",
                text.len()
            );
            assert!(text.ends_with("more bytes cut]"), "{what} says it was cut");
        }
        assert_eq!(cap_message("short"), "short");
    }
}
