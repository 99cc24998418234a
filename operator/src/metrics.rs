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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    kind: String,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    namespace: String,
    agent: String,
    role: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

/// What the scaler reports of every agent's and worker's pool, and of finished tasks.
struct Pools {
    pending: Family<PoolLabels, Gauge>,
    running: Family<PoolLabels, Gauge>,
    desired: Family<PoolLabels, Gauge>,
    oldest: Family<PoolLabels, Gauge>,
    connected: Family<PoolLabels, Gauge>,
    success_rate: Family<PoolLabels, Gauge>,
    finished: Family<FinishedLabels, Counter>,
    durations: Family<RoleLabel, Histogram>,
}

impl Pools {
    fn register(registry: &mut Registry) -> Self {
        let pools = Pools {
            pending: Family::default(),
            running: Family::default(),
            desired: Family::default(),
            oldest: Family::default(),
            connected: Family::default(),
            success_rate: Family::default(),
            finished: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new([
                    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                ])
            }),
        };
        registry.register(
            "pool_pending_tasks",
            "Tasks waiting for an agent (by name or role), or jobs of a worker's kind waiting in its namespace",
            pools.pending.clone(),
        );
        registry.register(
            "pool_running_tasks",
            "Tasks an agent's pods hold, or jobs a worker's pods run",
            pools.running.clone(),
        );
        registry.register(
            "pool_desired_replicas",
            "Pods an agent or worker should run (the scaler's decision with spec.autoscaling)",
            pools.desired.clone(),
        );
        registry.register(
            "pool_oldest_pending_seconds",
            "Age of the oldest task (or job) waiting for a pool, 0 when none waits",
            pools.oldest.clone(),
        );
        registry.register(
            "worker_connected_pods",
            "A worker's pods connected to an Executor",
            pools.connected.clone(),
        );
        registry.register(
            "worker_success_rate_percent",
            "Percentage of a worker's finished jobs that succeeded, as its Executors report",
            pools.success_rate.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks that succeeded or failed, by namespace, agent, role and outcome",
            pools.finished.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Time from a task's first start to its end, by the role that ran it",
            pools.durations.clone(),
        );
        pools
    }
}

/// The figures of one pool the scaler reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolFigures {
    /// Tasks or jobs waiting.
    pub pending: usize,
    /// Tasks or jobs running.
    pub running: usize,
    /// Pods it should run.
    pub desired: i32,
    /// Seconds the oldest waiting task has existed, if one waits.
    pub oldest_pending_seconds: Option<i64>,
}

/// Buckets (seconds) of the dispatch histograms: from the queue (a task, or an item) to a lease.
const DISPATCH_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// The operator's metrics.
pub struct Metrics {
    broker_errors: Family<CodeLabel, Counter>,
    pools: Pools,
    supabase_connected: Gauge,
    realtime_connected: Gauge,
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
    item_dispatch: Histogram,
    task_dispatch: Histogram,
    items_completed: Counter,
    mirror_waiting: Gauge,
    mirror_failures: Counter,
    mirror_rows: Counter,
    mirror_refused: Counter,
    mirror_last_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cogo_operator");
        let pools = Pools::register(&mut registry);
        let broker_errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "broker_errors",
            "Server errors (5xx) the task broker answered, by code",
            broker_errors.clone(),
        );
        let supabase_connected = Gauge::default();
        registry.register(
            "supabase_connected",
            "1 while the Supabase database answered the mirror's (or the intake's) last connect or write",
            supabase_connected.clone(),
        );
        let realtime_connected = Gauge::default();
        registry.register(
            "realtime_connected",
            "1 while the intake listens on the database for rows Supabase clients insert",
            realtime_connected.clone(),
        );
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
        let item_dispatch = Histogram::new(DISPATCH_BUCKETS);
        let task_dispatch = Histogram::new(DISPATCH_BUCKETS);
        registry.register(
            "task_dispatch_seconds",
            "Time from an AgentTask joining the queue (accepted, or its retry's backoff over) to a lease request taking it",
            task_dispatch.clone(),
        );
        let items_completed = Counter::default();
        registry.register(
            "item_dispatch_seconds",
            "Time from an item of an indexed task being ready (laid out, or its backoff over) to its lease",
            item_dispatch.clone(),
        );
        registry.register(
            "items_completed",
            "Outcomes of indexed tasks' items the broker recorded",
            items_completed.clone(),
        );
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
            broker_errors,
            pools,
            supabase_connected,
            realtime_connected,
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
            item_dispatch,
            task_dispatch,
            items_completed,
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

fn pool_labels(kind: &str, namespace: &str, name: &str) -> PoolLabels {
    PoolLabels {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
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

    /// Records how long an item waited, ready, for its lease.
    pub fn item_dispatched(&self, waited: std::time::Duration) {
        self.item_dispatch.observe(waited.as_secs_f64());
    }

    /// Records how long a task waited in the queue for a lease request to take it.
    pub fn task_dispatched(&self, waited: std::time::Duration) {
        self.task_dispatch.observe(waited.as_secs_f64());
    }

    /// Counts an item outcome the broker recorded.
    pub fn item_completed(&self) {
        self.items_completed.inc();
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
        self.supabase_connected.set(0);
    }

    /// Notes that the mirror connected to the database.
    pub fn mirror_connected(&self) {
        self.supabase_connected.set(1);
    }

    /// Counts rows written and notes the time of the write.
    pub fn mirror_written(&self, rows: usize) {
        self.supabase_connected.set(1);
        self.mirror_rows.inc_by(rows as u64);
        self.mirror_last_success.set(jiff::Timestamp::now().as_second());
    }

    /// Counts a server error the broker answered with `code`.
    pub fn broker_error(&self, code: &str) {
        self.broker_errors
            .get_or_create(&CodeLabel { code: code.into() })
            .inc();
    }

    /// Records whether the intake listens on the database.
    pub fn set_realtime_connected(&self, listening: bool) {
        self.realtime_connected.set(i64::from(listening));
    }

    /// Records the figures of the pool `kind` `namespace/name`.
    pub fn set_pool(&self, (kind, namespace, name): (&str, &str, &str), figures: PoolFigures) {
        let labels = pool_labels(kind, namespace, name);
        let p = &self.pools;
        p.pending.get_or_create(&labels).set(figures.pending as i64);
        p.running.get_or_create(&labels).set(figures.running as i64);
        p.desired.get_or_create(&labels).set(i64::from(figures.desired));
        p.oldest
            .get_or_create(&labels)
            .set(figures.oldest_pending_seconds.unwrap_or(0));
    }

    /// Records the worker `namespace/name`'s connected pods and success rate (None before any
    /// job finished).
    pub fn set_worker(&self, (namespace, name): (&str, &str), connected: i32, success_rate: Option<i32>) {
        let labels = pool_labels("CogoWorker", namespace, name);
        self.pools
            .connected
            .get_or_create(&labels)
            .set(i64::from(connected));
        match success_rate {
            Some(rate) => {
                self.pools
                    .success_rate
                    .get_or_create(&labels)
                    .set(i64::from(rate));
            }
            None => {
                self.pools.success_rate.remove(&labels);
            }
        }
    }

    /// Drops the figures of a pool that is gone.
    pub fn forget_pool(&self, (kind, namespace, name): (&str, &str, &str)) {
        let labels = pool_labels(kind, namespace, name);
        let p = &self.pools;
        for family in [
            &p.pending,
            &p.running,
            &p.desired,
            &p.oldest,
            &p.connected,
            &p.success_rate,
        ] {
            family.remove(&labels);
        }
    }

    /// Counts a task of `agent` (of `role`) in `namespace` that ended with `outcome`
    /// (`Succeeded` or `Failed`), which ran for `seconds` when known.
    pub fn task_finished(
        &self,
        (namespace, agent, role): (&str, &str, &str),
        outcome: &str,
        seconds: Option<f64>,
    ) {
        let labels = FinishedLabels {
            namespace: namespace.into(),
            agent: agent.into(),
            role: role.into(),
            outcome: outcome.into(),
        };
        self.pools.finished.get_or_create(&labels).inc();
        if let Some(s) = seconds {
            self.pools
                .durations
                .get_or_create(&RoleLabel { role: role.into() })
                .observe(s);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_finished_tasks_are_exported_and_gone_pools_forgotten() {
        let m = Metrics::default();
        let figures = PoolFigures {
            pending: 7,
            running: 2,
            desired: 3,
            oldest_pending_seconds: Some(42),
        };
        m.set_pool(("CogoAgent", "team", "research"), figures);
        m.set_worker(("team", "python"), 2, Some(95));
        m.task_finished(("team", "research", "Research"), "Succeeded", Some(1.5));
        m.task_finished(("team", "research", "Research"), "Failed", None);
        let text = m.encode();
        for line in [
            r#"cogo_operator_pool_pending_tasks{kind="CogoAgent",namespace="team",name="research"} 7"#,
            r#"cogo_operator_pool_running_tasks{kind="CogoAgent",namespace="team",name="research"} 2"#,
            r#"cogo_operator_pool_desired_replicas{kind="CogoAgent",namespace="team",name="research"} 3"#,
            r#"cogo_operator_pool_oldest_pending_seconds{kind="CogoAgent",namespace="team",name="research"} 42"#,
            r#"cogo_operator_worker_connected_pods{kind="CogoWorker",namespace="team",name="python"} 2"#,
            r#"cogo_operator_worker_success_rate_percent{kind="CogoWorker",namespace="team",name="python"} 95"#,
            r#"cogo_operator_tasks_finished_total{namespace="team",agent="research",role="Research",outcome="Succeeded"} 1"#,
            r#"cogo_operator_tasks_finished_total{namespace="team",agent="research",role="Research",outcome="Failed"} 1"#,
            r#"cogo_operator_task_duration_seconds_count{role="Research"} 1"#,
            r#"cogo_operator_task_duration_seconds_bucket{le="2.5",role="Research"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        m.set_worker(("team", "python"), 0, None);
        m.forget_pool(("CogoAgent", "team", "research"));
        let text = m.encode();
        assert!(!text.contains(r#"name="research""#), "{text}");
        assert!(
            !text.contains("worker_success_rate_percent{"),
            "no rate before a job finished"
        );
        assert!(text.contains("supabase_connected 0"));
        m.mirror_written(1);
        assert!(m.encode().contains("supabase_connected 1"));
        m.mirror_failed();
        assert!(m.encode().contains("supabase_connected 0"));
    }
}
