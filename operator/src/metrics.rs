//! Prometheus metrics of the operator, served on `/metrics`.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: String,
    error: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabel, Histogram>,
    status_writes: Family<KindLabel, Counter>,
    child_writes: Family<KindLabel, Counter>,
    leader: Gauge,
    tasks_queued: Gauge,
    tasks_running: Gauge,
    mirror_lag: Histogram,
    mirror_waiting: Gauge,
    mirror_failures: Counter,
    mirror_rows: Counter,
    mirror_refused: Counter,
    mirror_last_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cogo_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        let status_writes = Family::<KindLabel, Counter>::default();
        let child_writes = Family::<KindLabel, Counter>::default();
        let leader = Gauge::default();
        let mirror_lag = Histogram::new([
            0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
            30.0, 120.0,
        ]);
        let mirror_waiting = Gauge::default();
        let mirror_failures = Counter::default();
        let mirror_rows = Counter::default();
        let mirror_refused = Counter::default();
        let mirror_last_success = Gauge::default();
        registry.register(
            "mirror_lag_seconds",
            "Time from a task change seen to its row written to Supabase",
            mirror_lag.clone(),
        );
        registry.register(
            "mirror_waiting",
            "Task changes waiting to be written to Supabase",
            mirror_waiting.clone(),
        );
        registry.register(
            "mirror_failures",
            "Failed connects and writes of the Supabase mirror",
            mirror_failures.clone(),
        );
        registry.register(
            "mirror_rows",
            "Rows the Supabase mirror wrote",
            mirror_rows.clone(),
        );
        registry.register(
            "mirror_refused_rows",
            "Rows the database refused (bad data); the mirror set them aside and wrote the others",
            mirror_refused.clone(),
        );
        registry.register(
            "mirror_last_success_timestamp_seconds",
            "Unix time of the mirror's last successful write",
            mirror_last_success.clone(),
        );
        let tasks_queued = Gauge::default();
        let tasks_running = Gauge::default();
        registry.register(
            "tasks_queued",
            "AgentTasks accepted and waiting for a lease",
            tasks_queued.clone(),
        );
        registry.register(
            "tasks_running",
            "AgentTasks leased by agent pods (leases this replica holds)",
            tasks_running.clone(),
        );
        registry.register("reconciles", "Reconciles started, by kind", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by kind and error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by kind",
            duration.clone(),
        );
        registry.register(
            "status_writes",
            "Status subresource writes, by kind",
            status_writes.clone(),
        );
        registry.register(
            "child_writes",
            "Writes to owned objects (applies and deletes that changed something), by kind",
            child_writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            status_writes,
            child_writes,
            leader,
            tasks_queued,
            tasks_running,
            mirror_lag,
            mirror_waiting,
            mirror_failures,
            mirror_rows,
            mirror_refused,
            mirror_last_success,
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    fn kind(kind: &str) -> KindLabel {
        KindLabel {
            kind: kind.to_string(),
        }
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile_started(&self, kind: &str) -> ReconcileTimer {
        self.reconciles.get_or_create(&Self::kind(kind)).inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.get_or_create(&Self::kind(kind)).clone(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, kind: &str, error: &Error) {
        let labels = FailureLabels {
            kind: kind.to_string(),
            error: error.metric_label().to_string(),
        };
        self.failures.get_or_create(&labels).inc();
    }

    /// Counts a status write.
    pub fn status_written(&self, kind: &str) {
        self.status_writes.get_or_create(&Self::kind(kind)).inc();
    }

    /// Counts writes to owned objects.
    pub fn child_writes(&self, kind: &str, n: u64) {
        self.child_writes.get_or_create(&Self::kind(kind)).inc_by(n);
    }

    /// Records the depth of the task queue and the number of leases held.
    pub fn set_tasks(&self, queued: usize, running: usize) {
        self.set_tasks_queued(queued);
        self.set_tasks_running(running);
    }

    /// Records the depth of the task queue.
    pub fn set_tasks_queued(&self, queued: usize) {
        self.tasks_queued.set(queued as i64);
    }

    /// Records the number of leases held (reservations included).
    pub fn set_tasks_running(&self, running: usize) {
        self.tasks_running.set(running as i64);
    }

    /// Records the lag of one mirrored change.
    pub fn mirror_lag(&self, lag: std::time::Duration) {
        self.mirror_lag.observe(lag.as_secs_f64());
    }

    /// Records the changes waiting for the mirror.
    pub fn set_mirror_waiting(&self, n: usize) {
        self.mirror_waiting.set(n as i64);
    }

    /// Counts a row the database refused.
    pub fn mirror_refused(&self) {
        self.mirror_refused.inc();
    }

    /// Counts a failed connect or write of the mirror.
    pub fn mirror_failed(&self) {
        self.mirror_failures.inc();
    }

    /// Counts rows written and notes the time of the write.
    pub fn mirror_written(&self, rows: usize) {
        self.mirror_rows.inc_by(rows as u64);
        self.mirror_last_success.set(jiff::Timestamp::now().as_second());
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Status writes so far for `kind`.
    pub fn status_writes(&self, kind: &str) -> u64 {
        self.status_writes.get_or_create(&Self::kind(kind)).get()
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
