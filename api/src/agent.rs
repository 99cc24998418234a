//! `CogoAgent`: one agent role run as a scalable pool of pods.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{AgentRole, PodOverrides, Resources, RetryPolicy, SecretKeyRef};

/// Desired state of a CogoAgent: which role it plays, how many pods run it and how they work.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "cogo.xyz",
    version = "v1alpha1",
    kind = "CogoAgent",
    namespaced,
    doc = "A CogoAgent runs one agent role (Orchestrator, Indexing, Research, GraphRAG or Executor) as a scalable pool of pods that pull AgentTasks from the operator's broker. The operator creates and owns its Deployment, Service and PodDisruptionBudget.",
    status = "CogoAgentStatus",
    shortname = "cga",
    category = "cogo",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role", description = "Agent role"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas", description = "Desired pods"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Ready pods"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", description = "Reason of the Ready condition"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.queue.pending", description = "Tasks waiting for this agent", priority = 1),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.model.name", description = "Model the agent's pods use", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.role",
    validation = Rule::new(crate::common::NAME_RULE).message("metadata.name must be a DNS-1035 label of at most 63 characters (lower-case letters, digits and '-', starting with a letter) because it names the agent's Service")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || (self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)").message("spec.replicas must lie within spec.autoscaling.minReplicas and spec.autoscaling.maxReplicas"))]
pub struct CogoAgentSpec {
    /// The agent's role: Orchestrator, Indexing, Research, GraphRAG or Executor. It fixes the
    /// port (6001 to 6005), the default resources and the task types the agent handles.
    /// Immutable: create another CogoAgent to run another role.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.role is immutable"))]
    pub role: AgentRole,

    /// Number of agent pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Container image of the agent runtime. Defaults to the operator's configured agent image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Tasks one pod works on at the same time (1 to 256).
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: i32,

    /// Language model the agent calls. Required by roles that reason with a model (Research,
    /// Orchestrator); other roles ignore it when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,

    /// Where the Indexing and GraphRAG agents keep their indexes and graphs: a database that
    /// every replica shares, else a local store on each pod's own volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// CPU and memory of each pod. Defaults by role: Indexing and GraphRAG get 500m CPU
    /// (limit 2) and 1Gi; the other roles 250m CPU (limit 1) and 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Scaling on queue depth: when set, the operator sizes the pool within these bounds from
    /// the agent's pending and running tasks (see `status.autoscaling`), and `replicas`, which
    /// must lie within them, is only the count before its first decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Defaults for tasks sent to this agent that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_defaults: Option<TaskDefaults>,

    /// Overrides for the agent's pods (env, scheduling, pull secrets ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
}

fn default_replicas() -> i32 {
    1
}
fn default_concurrency() -> i32 {
    4
}

/// The model provider an agent calls.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ModelProvider {
    /// Google's Gemini API (`generateContent`), key in the `x-goog-api-key` header.
    Gemini,
    /// Any server of the OpenAI chat completions API (OpenAI, Ollama, vLLM, llama.cpp), key
    /// as a bearer token.
    OpenAICompatible,
}

/// Which language model an agent uses and where its API key is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'OpenAICompatible' || has(self.endpoint)").message("model.endpoint is required when model.provider is OpenAICompatible"))]
pub struct ModelSpec {
    /// The provider's API: Gemini (Google's Generative Language API) or OpenAICompatible (any
    /// server that speaks the OpenAI chat completions API).
    #[serde(default = "default_provider")]
    pub provider: ModelProvider,
    /// Model name, for example `gemini-2.5-flash-lite`.
    #[serde(default = "default_model_name")]
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Base URL of the provider's API. Defaults to Google's endpoint for Gemini; required for
    /// OpenAICompatible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    /// Secret key holding the API key. The Secret must exist in the agent's namespace and
    /// contain the key, or the agent reports `Ready=False` with reason `ModelSecretNotFound`.
    pub api_key_secret_ref: SecretKeyRef,
}

fn default_provider() -> ModelProvider {
    ModelProvider::Gemini
}
fn default_model_name() -> String {
    "gemini-2.5-flash-lite".into()
}

/// Where an agent keeps what it builds (code indexes, knowledge graphs).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Name of a Secret in the agent's namespace with the PostgreSQL connection string under
    /// `url` (libpq form, any `sslmode`) and optionally a CA under `ca.crt`: the same Secret
    /// form as the operator's Supabase connection. Every replica then shares the same indexes
    /// and graphs (pgvector holds the embeddings where the database has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub database_secret: Option<String>,
    /// A PersistentVolumeClaim for the local store (used when no database is set), mounted at
    /// `/var/lib/cogo`, for an agent of one pod (`replicas` 1, no autoscaling above 1); its
    /// Deployment then replaces the pod rather than rolling, so the claim is never wanted by
    /// two pods at once. Without one, each pod keeps its store in an `emptyDir` that goes with
    /// the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: Option<String>,
    /// Size limit of the local store's `emptyDir` (default `2Gi`), a Kubernetes quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
    )]
    pub size: Option<String>,
}

/// Bounds and target for scaling a pool (an agent's, or a worker's) on the depth of its queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// Fewest pods.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Tasks, pending and running, per pod the scaler aims for.
    #[serde(default = "default_target_queued")]
    #[schemars(range(min = 1, max = 10000))]
    pub target_queued_tasks_per_pod: i32,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_target_queued() -> i32 {
    10
}

/// Defaults applied to tasks that do not set their own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefaults {
    /// Seconds a task may run before it fails with reason `DeadlineExceeded`.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i64,
    /// Retry policy of tasks that do not set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

fn default_timeout() -> i64 {
    600
}

/// Observed state of a CogoAgent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CogoAgentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (all desired pods are ready and up to date), `Progressing` (a rollout or scale
    /// is under way) and `Degraded` (the spec cannot be carried out, or pods keep failing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods that exist for this agent.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready to take tasks.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the agent's pods, for the scale subresource and HPAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Tasks waiting for and held by this agent, as the operator last wrote them (at most
    /// every 10 s, and when they change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
    /// What the queue-depth scaler decided, when `spec.autoscaling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
    /// Totals of finished tasks, written with `queue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskTotals>,
    /// The model the agent's pods use: that of `spec.model` once every pod runs it (during a
    /// rollout to another model, the one the pods ran before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInUse>,
}

/// The model an agent's pods use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelInUse {
    /// The provider's API.
    pub provider: ModelProvider,
    /// The model's name.
    pub name: String,
}

/// What the queue-depth scaler decided for a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// Pods the agent should run: its Deployment's replicas.
    pub desired_replicas: i32,
    /// When the scaler last changed `desiredReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}

impl CogoAgent {
    /// Pods the agent should run. With `spec.autoscaling`, the scaler's decision kept within
    /// its bounds (`spec.replicas` until the scaler has decided); otherwise `spec.replicas`.
    pub fn desired_replicas(&self) -> i32 {
        scaled_replicas(
            self.spec.replicas,
            self.spec.autoscaling.as_ref(),
            self.status.as_ref().and_then(|s| s.autoscaling.as_ref()),
        )
    }
}

/// Pods a pool of `replicas` should run: with `bounds`, the scaler's `decided` count (or
/// `replicas` before it decided) kept within them.
pub fn scaled_replicas(
    replicas: i32,
    bounds: Option<&AutoscalingSpec>,
    decided: Option<&AutoscalingStatus>,
) -> i32 {
    let Some(bounds) = bounds else {
        return replicas;
    };
    decided
        .map_or(replicas, |a| a.desired_replicas)
        .clamp(bounds.min_replicas, bounds.max_replicas.max(bounds.min_replicas))
}

/// Depth of a pool's queue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Tasks accepted and not yet leased: for an agent, those sent to it or its role; for a
    /// worker, those of its kind in its namespace.
    pub pending: i64,
    /// Tasks the agent's pods hold, or jobs the worker's pods run.
    pub running: i64,
}

/// Counts of an agent's finished tasks, as the operator saw them finish (tasks that finished
/// while no replica led, in the seconds of a failover, are not counted).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskTotals {
    /// Tasks that succeeded.
    pub succeeded: i64,
    /// Tasks that failed.
    pub failed: i64,
    /// Mean duration of finished tasks, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_duration_ms: Option<i64>,
}
