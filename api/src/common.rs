//! Types shared by more than one custom resource: agent roles, secret references, retry
//! policies and the pod overrides that both agents and workers accept.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, LocalObjectReference, Toleration};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The five agent roles of the Cogo system. Each role listens on its own port, taken from the
/// system specification: Orchestrator 6001 (distributes work and manages workflows), Indexing
/// 6002 (code analysis and vector search), Research 6003 (web research and AI analysis with
/// Gemini), GraphRAG 6004 (knowledge-graph reasoning) and Executor 6005 (coordinates worker pods).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum AgentRole {
    Orchestrator,
    Indexing,
    Research,
    #[serde(rename = "GraphRAG")]
    GraphRag,
    Executor,
}

impl AgentRole {
    /// Every role, in port order.
    pub const ALL: [AgentRole; 5] = [
        AgentRole::Orchestrator,
        AgentRole::Indexing,
        AgentRole::Research,
        AgentRole::GraphRag,
        AgentRole::Executor,
    ];

    /// The port the role's pods listen on and its Service exposes.
    pub fn port(self) -> i32 {
        match self {
            AgentRole::Orchestrator => 6001,
            AgentRole::Indexing => 6002,
            AgentRole::Research => 6003,
            AgentRole::GraphRag => 6004,
            AgentRole::Executor => 6005,
        }
    }

    /// The role's name as written in resources (`GraphRAG`, not `GraphRag`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Orchestrator => "Orchestrator",
            AgentRole::Indexing => "Indexing",
            AgentRole::Research => "Research",
            AgentRole::GraphRag => "GraphRAG",
            AgentRole::Executor => "Executor",
        }
    }

    /// Lower-case name used in labels and realtime channel names (`graphrag`).
    pub fn slug(self) -> &'static str {
        match self {
            AgentRole::Orchestrator => "orchestrator",
            AgentRole::Indexing => "indexing",
            AgentRole::Research => "research",
            AgentRole::GraphRag => "graphrag",
            AgentRole::Executor => "executor",
        }
    }

    /// Whether the role's work is CPU heavy (Indexing and GraphRAG), which sets its default
    /// CPU and memory.
    pub fn is_heavy(self) -> bool {
        matches!(self, AgentRole::Indexing | AgentRole::GraphRag)
    }
}

impl std::fmt::Display for AgentRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key of a Secret in the same namespace as the resource that references it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the resource's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How a failed task is retried.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// How many times a failed attempt is retried before the task fails (0 to 20). An attempt
    /// fails when its agent reports a retryable failure or stops heartbeating.
    #[serde(default = "default_retry_limit")]
    #[schemars(range(min = 0, max = 20))]
    pub limit: i32,
    /// Delay between attempts, growing exponentially.
    #[serde(default)]
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            limit: default_retry_limit(),
            backoff: Backoff::default(),
        }
    }
}

fn default_retry_limit() -> i32 {
    3
}

/// Exponential backoff: attempt n waits `initialSeconds * factor^(n-1)`, at most `maxSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.initialSeconds <= self.maxSeconds")
    .message("backoff.initialSeconds must not exceed backoff.maxSeconds"))]
pub struct Backoff {
    /// Delay before the first retry, in seconds.
    #[serde(default = "default_backoff_initial")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_seconds: i32,
    /// Multiplier applied to the delay after each retry (1 to 10).
    #[serde(default = "default_backoff_factor")]
    #[schemars(range(min = 1, max = 10))]
    pub factor: i32,
    /// Upper bound of the delay, in seconds.
    #[serde(default = "default_backoff_max")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_seconds: i32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_seconds: default_backoff_initial(),
            factor: default_backoff_factor(),
            max_seconds: default_backoff_max(),
        }
    }
}

fn default_backoff_initial() -> i32 {
    1
}
fn default_backoff_factor() -> i32 {
    2
}
fn default_backoff_max() -> i32 {
    300
}

/// Overrides applied to the pods the operator creates. Everything here is optional; the
/// operator's secure defaults (non-root, read-only root filesystem, no privilege escalation,
/// seccomp RuntimeDefault) cannot be weakened through it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels for the pods (the operator's own selector labels always win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra environment variables for the main container; a variable with the same name as
    /// one the operator sets replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Node labels the pods must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Scheduling affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Secrets, in the same namespace, used to pull the image. Each must exist: a missing one
    /// sets `Ready=False` with reason `ImagePullSecretNotFound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Image pull policy of the main container (Always, IfNotPresent or Never). Defaults to
    /// Kubernetes' own rule (Always for `:latest`, IfNotPresent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// ServiceAccount the pods run as. By default the namespace's `default` account, with no
    /// API token mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// RuntimeClass of the pods, for example a gVisor or Kata class for stronger isolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Seconds a pod has to finish its work after SIGTERM before it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,
}

/// When the kubelet pulls the image: Always, IfNotPresent or Never.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The value Kubernetes expects in `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// CPU and memory for the main container. Unset values fall back to the operator's defaults
/// for the role or kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU requested, as a Kubernetes quantity such as `250m` or `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"))]
    pub cpu_request: Option<String>,
    /// CPU limit, as a Kubernetes quantity. Must not be below the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"))]
    pub cpu_limit: Option<String>,
    /// Memory requested and limited (the same value, so pods are never overcommitted on
    /// memory), as a Kubernetes quantity such as `512Mi` or `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub memory: Option<String>,
}

/// The bytes of a memory-like Kubernetes quantity (`512Mi`, `1G`, `1048576`), as the schema's
/// pattern `^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$` allows them; None for anything else or on overflow.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let digits = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits);
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    if number.is_empty() {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// Lists the Secret names a pod spec would need, for the operator's existence checks.
pub fn image_pull_secret_names(overrides: &PodOverrides) -> impl Iterator<Item = &str> {
    overrides
        .image_pull_secrets
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !n.is_empty())
}

/// The CEL rule and message that keep a resource's name usable as a Service name.
pub(crate) const NAME_RULE: &str =
    "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";

#[cfg(test)]
mod tests {
    use super::quantity_bytes;

    #[test]
    fn memory_quantities_in_bytes() {
        for (q, bytes) in [
            ("512Mi", Some(512 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1G", Some(1_000_000_000)),
            ("2k", Some(2000)),
            ("4096", Some(4096)),
            ("Mi", None),
            ("1.5Gi", None),
            ("1Pi", None),
            ("99999999999Ti", None),
        ] {
            assert_eq!(quantity_bytes(q), bytes, "{q}");
        }
    }
}
