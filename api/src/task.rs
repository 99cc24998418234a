//! `AgentTask`: one unit of work for an agent, the cluster's twin of a row of
//! `distributed_agent_tasks`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::json_schema;
use serde::{Deserialize, Serialize};

use crate::common::{AgentRole, RetryPolicy};

/// The label naming a sub-task's parent (`kubectl get agenttasks -l cogo.xyz/parent=<task>`),
/// set when the parent's name fits a label value (63 characters).
pub const PARENT_LABEL: &str = "cogo.xyz/parent";

/// The annotation holding the W3C `traceparent` of the span the task was created in (a gateway
/// request, the parent task's attempt, or whatever the creator sets): the task's attempts are
/// traced as its children. A malformed value is ignored.
pub const TRACEPARENT_ANNOTATION: &str = "cogo.xyz/traceparent";

/// Whether `s` is a W3C `traceparent` of version 00 (`00-<trace id>-<span id>-<flags>`, lower-case
/// hex, neither id all zeros).
pub fn is_traceparent(s: &str) -> bool {
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && p.bytes().any(|b| b != b'0')
    };
    let parts: Vec<&str> = s.split('-').collect();
    matches!(parts.as_slice(), ["00", trace, span, flags]
        if hex(trace, 32) && hex(span, 16) && flags.len() == 2 && flags.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

/// Desired state of an AgentTask. Everything but `cancelRequested` is fixed at creation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "cogo.xyz",
    version = "v1alpha1",
    kind = "AgentTask",
    namespaced,
    doc = "An AgentTask is one unit of work for a Cogo agent: a task type and its JSON input, sent to a named CogoAgent or to any agent of a role. The operator queues it, an agent pod leases and runs it, and the outcome is recorded in status (wait for it with `kubectl wait --for=condition=Succeeded`).",
    status = "AgentTaskStatus",
    shortname = "at",
    category = "cogo",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.type",
        description = "Task type"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Agent",
        type_ = "string",
        json_path = ".status.agent",
        description = "Agent that runs or ran the task"
    ),
    printcolumn(
        name = "Attempt",
        type_ = "integer",
        json_path = ".status.attempt",
        description = "Current attempt"
    ),
    printcolumn(
        name = "Priority",
        type_ = "integer",
        json_path = ".spec.priority",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.type",
    selectable = ".spec.agent"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.agent) != has(self.role)").message("exactly one of spec.agent and spec.role must be set"))]
#[x_kube(validation = Rule::new("has(self.agent) == has(oldSelf.agent) && (!has(self.agent) || self.agent == oldSelf.agent) && has(self.role) == has(oldSelf.role) && (!has(self.role) || self.role == oldSelf.role)").message("the task's target (spec.agent or spec.role) is immutable"))]
#[x_kube(validation = Rule::new("has(self.parent) == has(oldSelf.parent) && (!has(self.parent) || self.parent == oldSelf.parent)").message("spec.parent is immutable"))]
#[x_kube(validation = Rule::new("has(self.items) || (!has(self.parallelism) && !has(self.maxFailedItems))").message("spec.parallelism and spec.maxFailedItems need spec.items"))]
#[x_kube(validation = Rule::new("has(self.items) == has(oldSelf.items) && (!has(self.items) || (has(self.items.count) == has(oldSelf.items.count) && (!has(self.items.count) || self.items.count == oldSelf.items.count))) && has(self.parallelism) == has(oldSelf.parallelism) && (!has(self.parallelism) || self.parallelism == oldSelf.parallelism) && has(self.maxFailedItems) == has(oldSelf.maxFailedItems) && (!has(self.maxFailedItems) || self.maxFailedItems == oldSelf.maxFailedItems)").message("spec.items, spec.parallelism and spec.maxFailedItems are immutable"))]
pub struct AgentTaskSpec {
    /// Name of the CogoAgent, in the same namespace, that must run the task. Set this or
    /// `role`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub agent: Option<String>,

    /// Any agent of this role in the namespace may run the task. Set this or `agent`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<AgentRole>,

    /// The task type, `<area>.<action>` in lower case, for example `research.query`,
    /// `python.execute` or `cogo.echo`. It selects the handler in the agent. Immutable.
    #[serde(rename = "type")]
    #[schemars(
        length(min = 3, max = 128),
        regex(pattern = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.type is immutable"))]
    pub task_type: String,

    /// The task's input: any JSON value, passed to the handler as is. Kept small (the
    /// operator rejects inputs over its configured limit, 256 KiB by default); put large data
    /// elsewhere and pass a reference. The operator reads it once, when the task is accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::bounded"
    )]
    #[schemars(schema_with = "free_json")]
    pub input: Option<serde_json::Value>,

    /// Higher runs first among the tasks queued for the same agent; equal priorities run in
    /// creation order (-1000 to 1000).
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,

    /// Seconds the task may run, across all attempts, before it fails with reason
    /// `DeadlineExceeded`. Defaults to the agent's `taskDefaults.timeoutSeconds` (600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<i64>,

    /// How failed attempts are retried. Defaults to the agent's `taskDefaults.retry`, else 3
    /// retries with backoff from 1 s doubling up to 300 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,

    /// Seconds after the task finishes when it is deleted. Unset keeps it. Deletion waits
    /// until the Supabase mirror, when configured, holds the final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Runs the task once per item, each item with its own input, after Kubernetes' Indexed
    /// Jobs: the items are leased, retried (by `retry`, per item) and timed out (by
    /// `timeoutSeconds`, per item attempt) one by one, and the task succeeds when every item
    /// did (or at most `maxFailedItems` failed). Status counts them and lists the finished
    /// ones as index ranges; each item's result goes to the result store (the Supabase
    /// database), not to status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<TaskItems>,

    /// Items of `items` that run at once, at most; unset: as many as the agents have free
    /// slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub parallelism: Option<i32>,

    /// Items of `items` that may fail (after their retries) with the task still succeeding;
    /// once more have failed the task fails at once, starting no more items. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_failed_items: Option<i64>,

    /// Name of the parent AgentTask in the same namespace, for sub-tasks an orchestrator
    /// creates. A sub-task is owned by its parent and deleted with it. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub parent: Option<String>,

    /// Who asked for the task. The Supabase mirror makes it the owner of the task's row (for
    /// row-level security) only when the operator sealed the task (annotation
    /// `cogo.xyz/requester-seal`: tasks the intake makes from a user's row, and sub-tasks of
    /// sealed tasks), since anyone who may create AgentTasks can write this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Requester>,

    /// Set to true to cancel the task. A queued task ends at once; a running one ends when its
    /// agent next heartbeats. Cannot be set back to false.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("spec.cancelRequested cannot be set back to false"))]
    pub cancel_requested: bool,
}

/// The items of an indexed task: a list of inputs, or a count of items whose inputs come from
/// `spec.input` as a template. Set exactly one of `inputs` and `count` (the operator refuses
/// the task otherwise, with reason `InvalidItems`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskItems {
    /// The number of items, numbered from 0 to count - 1. Item i's input is `spec.input` with every string
    /// `"{{index}}"` replaced by the number i, and `{{index}}` inside longer strings by its
    /// digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub count: Option<i64>,
    /// One input per item (any JSON values), item i's at position i; `spec.input` must then
    /// be unset. They count against the operator's input limit (256 KiB by default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::bounded_list"
    )]
    #[schemars(schema_with = "item_inputs")]
    pub inputs: Option<Vec<serde_json::Value>>,
}

/// The most items of an indexed task.
pub const MAX_ITEMS: i64 = 100_000;

fn item_inputs(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 100000,
        "items": { "x-kubernetes-preserve-unknown-fields": true },
    })
}

/// Where an indexed task's items are (see `spec.items`). Finished items are listed as index
/// ranges (`"0-3,5,7-120"`), never one by one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemsStatus {
    /// Items in all.
    pub total: i64,
    /// Items not started, or waiting to be retried.
    pub pending: i64,
    /// Items an agent pod runs now.
    pub running: i64,
    /// Items that succeeded.
    pub succeeded: i64,
    /// Items that failed after their retries.
    pub failed: i64,
    /// Indexes of the items that succeeded, as ranges.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub succeeded_indexes: String,
    /// Indexes of the items that failed, as ranges.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failed_indexes: String,
}

/// `indexes` (ascending, no repeats) as ranges: `0-3,5,7-120`.
pub fn index_ranges(indexes: impl IntoIterator<Item = u32>) -> String {
    let mut out = String::new();
    let mut run: Option<(u32, u32)> = None;
    let push = |out: &mut String, (a, b): (u32, u32)| {
        if !out.is_empty() {
            out.push(',');
        }
        if a == b {
            out.push_str(&a.to_string());
        } else {
            out.push_str(&format!("{a}-{b}"));
        }
    };
    for i in indexes {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some(r) => {
                push(&mut out, r);
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some(r) = run {
        push(&mut out, r);
    }
    out
}

/// The indexes `ranges` (as [`index_ranges`] writes them) lists, each below `total`; None when
/// it is malformed.
pub fn parse_index_ranges(ranges: &str, total: u32) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    if ranges.is_empty() {
        return Some(out);
    }
    for part in ranges.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if a > b || b >= total {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

fn free_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// The user and session on whose behalf a task runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// Supabase Auth user id (a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub user_id: Option<String>,
    /// Chat session the task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub session_id: Option<String>,
}

/// The lifecycle phase of a task. Pending: accepted or waiting for an agent. Running: leased by
/// an agent pod. Succeeded, Failed, Cancelled: final.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema)]
pub enum TaskPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskPhase {
    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Cancelled
        )
    }

    /// The phase's name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskPhase::Pending => "Pending",
            TaskPhase::Running => "Running",
            TaskPhase::Succeeded => "Succeeded",
            TaskPhase::Failed => "Failed",
            TaskPhase::Cancelled => "Cancelled",
        }
    }
}

/// Observed state of an AgentTask. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentTaskStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (the target exists and the input is valid) and `Succeeded` (Unknown while
    /// the task is not finished, then True or False).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The CogoAgent that runs or ran the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The pod that runs or ran the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Number of the current attempt (1 for the first run), 0 before the first lease.
    #[serde(default)]
    pub attempt: i32,
    /// The most recent attempts, newest last (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub attempts: Vec<TaskAttempt>,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the task reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Earliest time the next attempt may be leased, while a retry backs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// The handler's result, when it is small enough to keep here.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::bounded"
    )]
    #[schemars(schema_with = "free_json")]
    pub result: Option<serde_json::Value>,
    /// Where the result is when it was too large for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<ResultRef>,
    /// An indexed task's items (see `spec.items`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemsStatus>,
    /// Human-readable summary of the latest transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One attempt of a task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskAttempt {
    /// Attempt number, from 1.
    pub number: i32,
    /// Agent that ran the attempt.
    pub agent: String,
    /// Pod that ran the attempt.
    pub pod: String,
    /// When the attempt was leased.
    pub start_time: Time,
    /// When the attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// How the attempt ended, a PascalCase reason such as `Succeeded`, `HandlerFailed` or
    /// `HeartbeatLost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Details of the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A result kept outside status because of its size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultRef {
    /// SHA-256 of the result's JSON, as `sha256:<hex>`.
    pub digest: String,
    /// Size of the result's JSON in bytes.
    pub size_bytes: i64,
    /// Where the full result is kept, for example `supabase:distributed_agent_tasks`.
    pub location: String,
    /// Why the result is not in status.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::is_traceparent;

    #[test]
    fn only_well_formed_traceparents_pass() {
        assert!(is_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(is_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        ));
        for bad in [
            "",
            "00",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033zz-01",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
    }
}
