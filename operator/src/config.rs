//! Operator configuration, from flags or environment variables.

use std::time::Duration;

/// Settings every controller reads. Built from the command line in `main`, and directly in tests.
#[derive(Clone, Debug)]
pub struct Config {
    /// Image for CogoAgents that do not set `spec.image`.
    pub agent_image: Option<String>,
    /// Image for CogoWorkers that do not set `spec.image`.
    pub worker_image: Option<String>,
    /// Pull policy for the default images (None leaves Kubernetes' rule).
    pub default_pull_policy: Option<String>,
    /// URL agent pods use to reach the broker.
    pub broker_url: String,
    /// How often a healthy object is reconciled even when nothing changed.
    pub resync: Duration,
    /// How long to wait before retrying a reconcile that failed.
    pub error_backoff: Duration,
    /// The largest `spec.input` of an AgentTask, serialized, that the operator accepts.
    pub max_task_input_bytes: usize,
    /// How long a running task's lease lasts after its pod's last heartbeat (three heartbeat
    /// intervals); an attempt whose lease runs out ends with reason `HeartbeatLost`.
    pub lease_duration: Duration,
    /// How long the queue-depth scaler waits before it removes pods: it keeps the highest
    /// count it wanted within this window.
    pub scale_down_window: Duration,
    /// Limits on each namespace's queued and running tasks.
    pub namespace_limits: crate::tasks::NamespaceLimits,
    /// The OpenTelemetry settings (`OTEL_*` variables) the operator passes on to the agent and
    /// worker pods it makes, so they send their spans where it sends its own.
    pub trace_env: Vec<(String, String)>,
}

/// The `OTEL_*` variables passed on to pods: where spans go and which are kept. Headers are not
/// passed on (they may hold credentials); pods that need them set them in their pod template.
pub const TRACE_ENV: [&str; 6] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// The variables of [`TRACE_ENV`] that `get` finds set.
pub fn trace_env(get: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    TRACE_ENV
        .iter()
        .filter_map(|k| get(k).filter(|v| !v.is_empty()).map(|v| (k.to_string(), v)))
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agent_image: Some(format!("cogo-agent:{}", env!("CARGO_PKG_VERSION"))),
            worker_image: Some(format!("cogo-worker:{}", env!("CARGO_PKG_VERSION"))),
            default_pull_policy: None,
            broker_url: "http://cogo-operator.cogo-system.svc:8080".into(),
            resync: Duration::from_secs(300),
            error_backoff: Duration::from_secs(15),
            max_task_input_bytes: 256 * 1024,
            lease_duration: Duration::from_secs(15),
            scale_down_window: Duration::from_secs(120),
            namespace_limits: Default::default(),
            trace_env: Vec::new(),
        }
    }
}
