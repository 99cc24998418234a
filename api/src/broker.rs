//! Wire types of the operator's task broker (HTTP + JSON, under `/v1`), shared by the operator
//! that serves it and the agent runtime that calls it.
//!
//! Agents pull: `POST /v1/namespaces/{ns}/agents/{agent}/lease` long-polls for up to `slots`
//! tasks; each leased task is then heartbeated (`.../tasks/{name}/heartbeat`) and completed
//! (`.../tasks/{name}/complete`). Every call after the lease names the attempt it belongs to,
//! so a late call from a pod whose lease was taken away cannot change a newer attempt. A
//! running task may create sub-tasks (`.../tasks/{name}/subtasks`), and any agent may read a
//! task of its namespace (`GET .../tasks/{name}`), and cancel its own sub-tasks
//! (`.../tasks/{name}/subtasks/{child}/cancel`).
//!
//! Executor agents also report the workers connected to them
//! (`POST .../agents/{agent}/workers`), and read the public keys worker tokens are verified
//! with (`GET /v1/worker-keys`).

use serde::{Deserialize, Serialize};

/// The path prefix of every broker endpoint.
pub const API_PREFIX: &str = "/v1";
/// The audience of broker tokens.
pub const TOKEN_AUDIENCE: &str = "cogo-broker";
/// The longest a lease request may wait for work.
pub const MAX_WAIT_SECONDS: u32 = 30;

/// `POST /v1/namespaces/{ns}/agents/{agent}/lease`: ask for up to `slots` tasks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRequest {
    /// The pod asking, recorded as the task's assignee.
    pub pod: String,
    /// Free slots: the most tasks to return (1 to 256).
    pub slots: u32,
    /// Seconds to wait for work when none is queued (0 to [`MAX_WAIT_SECONDS`]).
    #[serde(default)]
    pub wait_seconds: u32,
    /// Lease only tasks whose type starts with one of these prefixes (for example
    /// `python.`); empty leases any type. An Executor leases its workers' task types with
    /// one request per worker kind, as many as that kind has free slots; such leases count
    /// against the workers' capacity, not the agent's `concurrency`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_prefixes: Vec<String>,
    /// Never lease tasks whose type starts with one of these prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_type_prefixes: Vec<String>,
}

impl LeaseRequest {
    /// Whether a task of `task_type` may be leased by this request.
    pub fn wants(&self, task_type: &str) -> bool {
        let has = |prefixes: &[String]| prefixes.iter().any(|p| task_type.starts_with(p.as_str()));
        (self.type_prefixes.is_empty() || has(&self.type_prefixes)) && !has(&self.exclude_type_prefixes)
    }
}

/// The answer to a lease: zero or more tasks, now Running on the asking pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseResponse {
    /// The leased tasks.
    pub tasks: Vec<LeasedTask>,
}

/// One leased task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeasedTask {
    /// Namespace of the AgentTask.
    pub namespace: String,
    /// Name of the AgentTask.
    pub name: String,
    /// UID of the AgentTask.
    pub uid: String,
    /// The task type, which selects the handler.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The task's input.
    #[serde(default, deserialize_with = "crate::json::bounded_value")]
    pub input: serde_json::Value,
    /// The attempt this lease is for; every later call names it.
    pub attempt: i32,
    /// Seconds between heartbeats; a lease not renewed for three of them is lost.
    pub heartbeat_seconds: u32,
    /// When the task's deadline passes (RFC 3339), after which it fails as `DeadlineExceeded`.
    pub deadline: String,
    /// The W3C `traceparent` of the attempt's span, when the attempt is traced: the pod's
    /// spans for it are its children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The item's index, when this is one item of an indexed task (`spec.items`): `input` is
    /// the item's, `attempt` the item's attempt, and every later call about it names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

/// `POST /v1/namespaces/{ns}/tasks/{name}/heartbeat`: keep a lease alive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The pod holding the lease.
    pub pod: String,
    /// The attempt the lease is for.
    pub attempt: i32,
    /// How far the task has come, in a line (at most 1024 bytes), shown as its status
    /// message while it runs; unset leaves the message as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub progress: Option<String>,
    /// The item the lease is for, when it is one item of an indexed task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

/// The answer to a heartbeat.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// True when the task was cancelled: the agent should stop and complete it as cancelled.
    pub cancelled: bool,
}

/// How an attempt ended, as the agent reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Outcome {
    /// The handler returned a result.
    Succeeded,
    /// The handler failed.
    Failed,
    /// The agent stopped because the task was cancelled.
    Cancelled,
}

/// `POST /v1/namespaces/{ns}/tasks/{name}/complete`: report the outcome of an attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteRequest {
    /// The pod holding the lease.
    pub pod: String,
    /// The attempt the outcome is for.
    pub attempt: i32,
    /// How it ended.
    pub outcome: Outcome,
    /// The handler's result, on success.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::bounded"
    )]
    pub result: Option<serde_json::Value>,
    /// What went wrong, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a failure may succeed if retried (a timeout upstream, say); false fails the
    /// task at once.
    #[serde(default)]
    pub retryable: bool,
    /// The item the outcome is for, when it is one item of an indexed task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

/// The answer to a completion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteResponse {
    /// The task's phase after the report, as written in its status; for an item, the item's
    /// (Pending when it is retried).
    pub phase: crate::TaskPhase,
    /// False when the report was for an attempt that is no longer current and changed nothing.
    pub applied: bool,
}

/// `POST /v1/namespaces/{ns}/tasks/{parent}/subtasks`: create a sub-task of a task the caller
/// runs. The sub-task is owned by its parent (deleted with it) and inherits its requester.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubtaskRequest {
    /// The pod running the parent.
    pub pod: String,
    /// The parent's attempt the caller runs; a caller whose lease was taken away is refused.
    pub attempt: i32,
    /// Name of the sub-task; when unset, one is generated from the parent's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CogoAgent to run the sub-task (set this or `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Any agent of this role may run the sub-task (set this or `agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::AgentRole>,
    /// The sub-task's type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The sub-task's input.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::bounded"
    )]
    pub input: Option<serde_json::Value>,
    /// Queue priority (-1000 to 1000).
    #[serde(default)]
    pub priority: i32,
    /// Seconds the sub-task may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// How the sub-task is retried (default: its agent's `taskDefaults`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::RetryPolicy>,
}

/// `POST /v1/namespaces/{ns}/tasks/{parent}/subtasks/{name}/cancel`: cancel a sub-task of a
/// task the caller runs (a workflow whose step failed stops the others).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelSubtaskRequest {
    /// The pod running the parent.
    pub pod: String,
    /// The parent's attempt the caller runs.
    pub attempt: i32,
}

/// A task as the broker shows it: `GET /v1/namespaces/{ns}/tasks/{name}`, and the answer to
/// creating a sub-task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// Namespace of the task.
    pub namespace: String,
    /// Name of the task.
    pub name: String,
    /// UID of the task.
    pub uid: String,
    /// The task's type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Parent task, for sub-tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The task's input.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::bounded"
    )]
    pub input: Option<serde_json::Value>,
    /// Lifecycle phase (`Pending` until the operator has seen it).
    pub phase: crate::TaskPhase,
    /// Current attempt, 0 before the first lease.
    pub attempt: i32,
    /// The result, when the task succeeded and it was small enough to keep in status.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::bounded"
    )]
    pub result: Option<serde_json::Value>,
    /// The digest and size of a result too large for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<crate::task::ResultRef>,
    /// Summary of the latest transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/namespaces/{ns}/agents/{agent}/workers`: an Executor pod reports the workers
/// connected to it and the jobs they finished, every few seconds. The operator keeps the
/// newest report of each Executor pod for a while and writes the CogoWorkers' status from them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerReport {
    /// The reporting Executor pod.
    pub pod: String,
    /// The workers connected to it now.
    #[serde(default)]
    pub workers: Vec<ConnectedWorker>,
    /// Jobs finished since the Executor pod started, per CogoWorker.
    #[serde(default)]
    pub jobs: Vec<JobTotals>,
}

/// A worker pod connected to an Executor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectedWorker {
    /// The worker's id (its pod name).
    pub id: String,
    /// The CogoWorker it belongs to.
    pub worker: String,
    /// Its kind.
    pub kind: crate::WorkerKind,
    /// Jobs it takes at once (0 while it drains).
    pub capacity: u32,
    /// Jobs it runs now.
    pub active: u32,
}

/// Jobs of one CogoWorker's pods that finished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobTotals {
    /// The CogoWorker.
    pub worker: String,
    /// Jobs that returned a result.
    pub succeeded: u64,
    /// Jobs that failed.
    pub failed: u64,
}

/// `GET /v1/worker-keys`: the public keys worker tokens are signed with, as a JSON Web Key
/// Set (RFC 7517). Rotated-out keys stay in it until they are dropped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub struct WorkerKeySet {
    /// The keys.
    pub keys: Vec<WorkerKey>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct WorkerKey {
    /// Key type: `OKP`.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// Algorithm: `EdDSA`.
    pub alg: String,
    /// Use: `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Key id, as named in the tokens' header.
    pub kid: String,
    /// The public key, base64url without padding.
    pub x: String,
}

/// The body of every error answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// A stable, PascalCase code, such as `Unauthorized` or `LeaseLost`.
    pub code: String,
    /// What is wrong, for humans.
    pub message: String,
}

/// Claims of a broker token: which agent the bearer may act as.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `agent:<namespace>/<name>`.
    pub sub: String,
    /// Always [`TOKEN_AUDIENCE`].
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

impl Claims {
    /// The subject naming an agent.
    pub fn subject(namespace: &str, agent: &str) -> String {
        format!("agent:{namespace}/{agent}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_reject_unknown_fields() {
        let err =
            serde_json::from_value::<LeaseRequest>(json!({"pod": "p", "slots": 2, "slot": 3})).unwrap_err();
        assert!(err.to_string().contains("unknown field `slot`"), "{err}");
        let ok: LeaseRequest = serde_json::from_value(json!({"pod": "p", "slots": 2})).unwrap();
        assert_eq!(ok.wait_seconds, 0);
        assert!(
            ok.wants("cogo.echo") && ok.wants("python.execute"),
            "no filter: any type"
        );
    }

    #[test]
    fn type_prefixes_filter_what_a_lease_takes() {
        let python: LeaseRequest =
            serde_json::from_value(json!({"pod": "p", "slots": 2, "typePrefixes": ["python."]})).unwrap();
        assert!(python.wants("python.execute"));
        assert!(!python.wants("cogo.echo") && !python.wants("browser.run"));
        let own: LeaseRequest = serde_json::from_value(
            json!({"pod": "p", "slots": 2, "excludeTypePrefixes": ["python.", "browser."]}),
        )
        .unwrap();
        assert!(own.wants("cogo.echo") && own.wants("research.query"));
        assert!(!own.wants("python.execute") && !own.wants("browser.screenshot"));
    }

    #[test]
    fn completions_carry_the_attempt_and_outcome() {
        let c: CompleteRequest = serde_json::from_value(
            json!({"pod": "p", "attempt": 2, "outcome": "Failed", "error": "boom", "retryable": true}),
        )
        .unwrap();
        assert_eq!((c.attempt, c.outcome, c.retryable), (2, Outcome::Failed, true));
        assert!(
            serde_json::from_value::<CompleteRequest>(json!({"pod": "p", "attempt": 1, "outcome": "Done"}))
                .is_err()
        );
    }

    #[test]
    fn leased_tasks_name_their_type_field_type() {
        let t = LeasedTask {
            namespace: "ns".into(),
            name: "t".into(),
            uid: "u".into(),
            task_type: "cogo.echo".into(),
            input: json!({"a": 1}),
            attempt: 1,
            heartbeat_seconds: 5,
            deadline: "2026-01-01T00:00:00Z".into(),
            traceparent: None,
            item: None,
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["type"], "cogo.echo");
        assert_eq!(v["heartbeatSeconds"], 5);
        assert!(
            v.get("item").is_none(),
            "a task that is not an item says nothing of items"
        );
        let item = LeasedTask { item: Some(7), ..t };
        assert_eq!(serde_json::to_value(&item).unwrap()["item"], 7);
    }
}
