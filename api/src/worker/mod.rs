//! `CogoWorker`: one worker kind (Python sandbox, browser, Figma) run as a pool of pods that
//! serve the Executor agent, and the protocol those pods speak with it ([`message`]).

pub mod message;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{PodOverrides, Resources, SecretKeyRef};

/// Desired state of a CogoWorker.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "cogo.xyz",
    version = "v1alpha1",
    kind = "CogoWorker",
    namespaced,
    doc = "A CogoWorker runs one worker kind (PythonSandbox, Browser or FigmaMCP) as a pool of pods. Worker pods connect to an Executor agent and run the jobs of python.*, browser.* and figma.* tasks. The operator creates and owns its Deployment, Service and NetworkPolicy.",
    status = "CogoWorkerStatus",
    shortname = "cgw",
    category = "cogo",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind", description = "Worker kind"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas", description = "Desired pods"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Ready pods"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", description = "Reason of the Ready condition"),
    printcolumn(name = "Executor", type_ = "string", json_path = ".status.executor", description = "Executor agent served", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.kind",
    validation = Rule::new(crate::common::NAME_RULE).message("metadata.name must be a DNS-1035 label of at most 63 characters (lower-case letters, digits and '-', starting with a letter) because it names the worker's Service")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || (self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)").message("spec.replicas must lie within spec.autoscaling.minReplicas and spec.autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("self.kind != 'FigmaMCP' || has(self.figmaTokenSecretRef)").message("spec.figmaTokenSecretRef is required when spec.kind is FigmaMCP"))]
#[x_kube(validation = Rule::new("self.kind == 'FigmaMCP' || !has(self.figmaTokenSecretRef)").message("spec.figmaTokenSecretRef is only valid when spec.kind is FigmaMCP"))]
#[x_kube(validation = Rule::new("self.kind == 'PythonSandbox' || !has(self.sandbox) || !has(self.sandbox.allowedPackages) || size(self.sandbox.allowedPackages) == 0").message("spec.sandbox.allowedPackages is only valid when spec.kind is PythonSandbox"))]
#[x_kube(validation = Rule::new("self.kind == 'PythonSandbox' || !has(self.sandbox) || !has(self.sandbox.packageIndexUrl)").message("spec.sandbox.packageIndexUrl is only valid when spec.kind is PythonSandbox"))]
#[x_kube(validation = Rule::new("self.kind == 'Browser' || !has(self.browser)").message("spec.browser is only valid when spec.kind is Browser"))]
#[x_kube(validation = Rule::new("self.kind == 'FigmaMCP' || !has(self.figmaApiUrl)").message("spec.figmaApiUrl is only valid when spec.kind is FigmaMCP"))]
#[x_kube(validation = Rule::new("self.kind == 'FigmaMCP' || !has(self.mcpServers) || size(self.mcpServers) == 0").message("spec.mcpServers is only valid when spec.kind is FigmaMCP"))]
pub struct CogoWorkerSpec {
    /// The worker kind: PythonSandbox (runs Python code, port 3001), FigmaMCP (reads Figma
    /// designs, port 3002) or Browser (headless browser automation, port 3003). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.kind is immutable"))]
    pub kind: WorkerKind,

    /// Number of worker pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Scaling on the Executor's queue of this kind: when set, the operator sizes the pool
    /// within these bounds from the jobs of the kind waiting and running (see
    /// `status.autoscaling`), and `replicas`, which must lie within them, is only the count
    /// before its first decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<crate::AutoscalingSpec>,

    /// Container image of the worker runtime. Defaults to the operator's configured worker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Jobs one pod runs at the same time (1 to 64).
    #[serde(default = "default_capacity")]
    #[schemars(range(min = 1, max = 64))]
    pub capacity: i32,

    /// Name of the Executor CogoAgent, in the same namespace, that the workers connect to.
    /// Defaults to the only Executor agent of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub executor: Option<String>,

    /// Limits of the jobs the workers run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxPolicy>,

    /// Secret key holding the Figma personal access token. Required for, and only valid with,
    /// kind FigmaMCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figma_token_secret_ref: Option<SecretKeyRef>,

    /// Base address of the Figma REST API (FigmaMCP only), for a proxy or a private
    /// endpoint. Defaults to https://api.figma.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub figma_api_url: Option<String>,

    /// MCP servers the workers are clients of (FigmaMCP only), by name, for the `mcp.tools`
    /// and `mcp.call` tasks: Figma's Dev Mode MCP server, or any server speaking MCP's
    /// streamable HTTP transport.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("spec.mcpServers names must be unique"))]
    pub mcp_servers: Vec<McpServer>,

    /// What the browser may load and how long it waits (Browser only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<BrowserPolicy>,

    /// CPU and memory of each pod. Defaults by kind: PythonSandbox 250m CPU (limit 1) and
    /// 512Mi, Browser 500m CPU (limit 2) and 1Gi, FigmaMCP 100m CPU (limit 500m) and 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Overrides for the worker's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
}

/// An MCP server the FigmaMCP workers call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    /// The name tasks use for it (`server` of `mcp.tools` and `mcp.call`): lower-case
    /// letters, digits and '-'.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Its streamable HTTP endpoint, such as `http://127.0.0.1:3845/mcp`.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// Secret key holding a token sent as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Seconds one call to the server may take (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// What a Browser worker's pages may load, and how long the browser waits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrowserPolicy {
    /// Let pages load `file://` addresses (files of the worker's own container). Off by
    /// default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_file_urls: bool,
    /// Let pages load the pod's own addresses: loopback, link-local (cloud metadata) and the
    /// pod's IP. Off by default; other addresses are for the NetworkPolicy to allow or deny.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_pod_addresses: bool,
    /// Seconds a page may take to load (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub page_timeout_seconds: Option<i32>,
    /// Seconds one step of `browser.run` may take (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub step_timeout_seconds: Option<i32>,
}

fn default_replicas() -> i32 {
    1
}
fn default_capacity() -> i32 {
    2
}

/// The three worker kinds: PythonSandbox (port 3001), FigmaMCP (port 3002), Browser (port 3003).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum WorkerKind {
    PythonSandbox,
    #[serde(rename = "FigmaMCP")]
    FigmaMcp,
    Browser,
}

impl WorkerKind {
    /// Every kind, in port order.
    pub const ALL: [WorkerKind; 3] = [
        WorkerKind::PythonSandbox,
        WorkerKind::FigmaMcp,
        WorkerKind::Browser,
    ];

    /// The port the kind's pods serve health and metrics on.
    pub fn port(self) -> i32 {
        match self {
            WorkerKind::PythonSandbox => 3001,
            WorkerKind::FigmaMcp => 3002,
            WorkerKind::Browser => 3003,
        }
    }

    /// The kind's name as written in resources.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::PythonSandbox => "PythonSandbox",
            WorkerKind::FigmaMcp => "FigmaMCP",
            WorkerKind::Browser => "Browser",
        }
    }

    /// Lower-case name used in labels.
    pub fn slug(self) -> &'static str {
        match self {
            WorkerKind::PythonSandbox => "python-sandbox",
            WorkerKind::FigmaMcp => "figma-mcp",
            WorkerKind::Browser => "browser",
        }
    }

    /// The task type prefixes whose jobs this kind runs: `python.` for PythonSandbox,
    /// `browser.` for Browser, `figma.` and `mcp.` for FigmaMCP.
    pub fn task_prefixes(self) -> &'static [&'static str] {
        match self {
            WorkerKind::PythonSandbox => &["python."],
            WorkerKind::Browser => &["browser."],
            WorkerKind::FigmaMcp => &["figma.", "mcp."],
        }
    }

    /// The kind whose workers run tasks of `task_type`, if any; the Executor leases only
    /// such tasks for its workers.
    pub fn for_task_type(task_type: &str) -> Option<WorkerKind> {
        WorkerKind::ALL
            .into_iter()
            .find(|k| k.task_prefixes().iter().any(|p| task_type.starts_with(p)))
    }

    /// Whether pods of this kind may reach the network when the spec does not say: the
    /// Python sandbox may not (it runs untrusted code); a browser and the Figma client must.
    pub fn egress_by_default(self) -> bool {
        !matches!(self, WorkerKind::PythonSandbox)
    }
}

impl std::fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits applied to each job a worker runs. A PythonSandbox job runs in its own mount, PID,
/// IPC, UTS and (unless egress is allowed) network namespaces, under a seccomp filter, with
/// these limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxFileSize) || !has(self.workspaceSize) || quantity(self.maxFileSize).compareTo(quantity(self.workspaceSize)) <= 0").message("sandbox.maxFileSize must not exceed sandbox.workspaceSize"))]
pub struct SandboxPolicy {
    /// Seconds one job may run (wall time, and also its CPU time) before the worker kills
    /// it; a task's own `timeoutSeconds` input may only shorten it.
    #[serde(default = "default_job_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Memory one job may use (its address space), as a Kubernetes quantity; 256Mi when
    /// unset. When `resources.memory` is unset, the pod's memory limit is `capacity` times
    /// this plus 256Mi for the worker itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub memory_limit: Option<String>,
    /// Processes and threads one job may run at once (1 to 1024, default 32). A job that
    /// reaches it is stopped and reported as `killed: processes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_processes: Option<i32>,
    /// Largest file a job may write, as a Kubernetes quantity (default 64Mi); a larger write
    /// fails inside the job with "File too large".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub max_file_size: Option<String>,
    /// Bytes a job's workspace may hold, its input files included, as a Kubernetes quantity
    /// (default 256Mi). A job that writes more is stopped and reported as `killed: output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub workspace_size: Option<String>,
    /// Bytes of standard output and standard error kept for the result, as a Kubernetes
    /// quantity (default 1Mi). A job that prints more is stopped, its output truncated and
    /// reported as `killed: output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub max_output_size: Option<String>,
    /// Whether jobs may open network connections beyond the Executor and cluster DNS. Unset
    /// means: denied for PythonSandbox, allowed for Browser and FigmaMCP. Enforced with a
    /// NetworkPolicy, and for PythonSandbox jobs also with a network namespace of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_egress: Option<bool>,
    /// Python packages a job may ask for in its `packages` input (PythonSandbox only). The
    /// worker installs them, as wheels only, into the job's own environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_packages: Vec<String>,
    /// The package index (PEP 503 "simple" API) packages are installed from
    /// (PythonSandbox only). Defaults to https://pypi.org/simple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub package_index_url: Option<String>,
}

fn default_job_timeout() -> i32 {
    60
}

impl Default for SandboxPolicy {
    /// What an absent `spec.sandbox` means: the schema's defaults.
    fn default() -> Self {
        SandboxPolicy {
            timeout_seconds: default_job_timeout(),
            memory_limit: None,
            max_processes: None,
            max_file_size: None,
            workspace_size: None,
            max_output_size: None,
            allow_egress: None,
            allowed_packages: vec![],
            package_index_url: None,
        }
    }
}

/// Observed state of a CogoWorker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CogoWorkerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, as for CogoAgent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods that exist for this worker.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the worker's pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Name of the Executor agent the workers connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// Worker pods connected to the Executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_workers: Option<i32>,
    /// Jobs running on this worker's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<i32>,
    /// Percentage of finished jobs that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate_percent: Option<i32>,
    /// Jobs of this kind waiting for a worker in the namespace (`pending`), and jobs running
    /// on this worker's pods (`running`), as the operator last wrote them (at most every
    /// 10 s, and when they change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<crate::agent::QueueStatus>,
    /// What the queue-depth scaler decided, when `spec.autoscaling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<crate::AutoscalingStatus>,
}

impl CogoWorker {
    /// Pods the worker should run. With `spec.autoscaling`, the scaler's decision kept within
    /// its bounds (`spec.replicas` until the scaler has decided); otherwise `spec.replicas`.
    pub fn desired_replicas(&self) -> i32 {
        crate::agent::scaled_replicas(
            self.spec.replicas,
            self.spec.autoscaling.as_ref(),
            self.status.as_ref().and_then(|s| s.autoscaling.as_ref()),
        )
    }
}
