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
        }
    }
}
