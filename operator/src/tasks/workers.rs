//! What the Executor pods report about their workers: who is connected, how busy, and how
//! their jobs ended. The newest report of each Executor pod is kept for [`REPORT_TTL`]; the
//! CogoWorker status (`connectedWorkers`, `activeJobs`, `successRatePercent`) and the message
//! of a worker task that waits are computed from them.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use cogo_api::{WorkerKind, broker::WorkerReport};

/// How long a report counts: an Executor pod reports every few seconds, so one that stopped
/// reporting is gone, and so are its workers.
pub const REPORT_TTL: Duration = Duration::from_secs(30);

/// The report-derived part of a CogoWorker's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// Worker pods connected to an Executor.
    pub connected_workers: i32,
    /// Jobs they run.
    pub active_jobs: i32,
    /// Percentage of finished jobs that succeeded; None before any finished.
    pub success_rate_percent: Option<i32>,
}

/// Whether an Executor has a worker of a kind to run a job now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// No worker of the kind is connected.
    NoneConnected,
    /// Workers are connected and every slot is taken.
    Busy,
    /// A slot is free.
    Free,
}

/// The newest report of every Executor pod, by namespace, Executor agent and pod.
#[derive(Debug, Default)]
pub struct WorkerReports {
    reports: HashMap<(String, String, String), (Instant, WorkerReport)>,
}

impl WorkerReports {
    /// Keeps `report` of Executor agent `executor` in `ns`, received at `now`. Returns true
    /// when it differs from that pod's previous report.
    pub fn record(&mut self, ns: &str, executor: &str, report: WorkerReport, now: Instant) -> bool {
        self.reports
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < REPORT_TTL);
        let key = (ns.to_string(), executor.to_string(), report.pod.clone());
        let changed = self.reports.get(&key).is_none_or(|(_, old)| *old != report);
        self.reports.insert(key, (now, report));
        changed
    }

    fn fresh(&self, ns: &str, now: Instant) -> impl Iterator<Item = (&str, &WorkerReport)> {
        self.reports
            .iter()
            .filter(move |((n, _, _), (at, _))| n == ns && now.saturating_duration_since(*at) < REPORT_TTL)
            .map(|((_, executor, _), (_, r))| (executor.as_str(), r))
    }

    /// The status figures of the CogoWorker `worker` of `ns`, from every fresh report.
    pub fn stats(&self, ns: &str, worker: &str, now: Instant) -> WorkerStats {
        let (mut connected, mut active, mut ok, mut failed) = (0i64, 0i64, 0u64, 0u64);
        for (_, r) in self.fresh(ns, now) {
            for w in r.workers.iter().filter(|w| w.worker == worker) {
                connected += 1;
                active += i64::from(w.active);
            }
            for j in r.jobs.iter().filter(|j| j.worker == worker) {
                ok += j.succeeded;
                failed += j.failed;
            }
        }
        let finished = ok + failed;
        WorkerStats {
            connected_workers: connected.min(i64::from(i32::MAX)) as i32,
            active_jobs: active.min(i64::from(i32::MAX)) as i32,
            success_rate_percent: (finished > 0).then(|| ((ok * 100) / finished) as i32),
        }
    }

    /// Whether the Executor `executor` of `ns` (any Executor of `ns` when None) can run a job
    /// of `kind` now.
    pub fn availability(
        &self,
        ns: &str,
        executor: Option<&str>,
        kind: WorkerKind,
        now: Instant,
    ) -> Availability {
        let mut best = Availability::NoneConnected;
        for (_, r) in self
            .fresh(ns, now)
            .filter(|(e, _)| executor.is_none_or(|x| x == *e))
        {
            for w in r.workers.iter().filter(|w| w.kind == kind) {
                if w.active < w.capacity {
                    return Availability::Free;
                }
                best = Availability::Busy;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use cogo_api::broker::{ConnectedWorker, JobTotals};

    use super::*;

    fn worker(id: &str, worker: &str, capacity: u32, active: u32) -> ConnectedWorker {
        ConnectedWorker {
            id: id.into(),
            worker: worker.into(),
            kind: WorkerKind::PythonSandbox,
            capacity,
            active,
        }
    }

    #[test]
    fn stats_sum_every_executor_pod_and_forget_silent_ones() {
        let t0 = Instant::now();
        let mut r = WorkerReports::default();
        let first = WorkerReport {
            pod: "exec-a".into(),
            workers: vec![worker("p1", "python", 2, 1), worker("b1", "browser", 1, 0)],
            jobs: vec![JobTotals {
                worker: "python".into(),
                succeeded: 3,
                failed: 1,
            }],
        };
        assert!(r.record("team", "executor", first.clone(), t0));
        assert!(
            !r.record("team", "executor", first, t0),
            "the same report changes nothing"
        );
        r.record(
            "team",
            "executor",
            WorkerReport {
                pod: "exec-b".into(),
                workers: vec![worker("p2", "python", 2, 2)],
                jobs: vec![],
            },
            t0,
        );
        assert_eq!(
            r.stats("team", "python", t0),
            WorkerStats {
                connected_workers: 2,
                active_jobs: 3,
                success_rate_percent: Some(75)
            }
        );
        assert_eq!(r.stats("other", "python", t0), WorkerStats::default());
        let later = t0 + REPORT_TTL;
        assert_eq!(r.stats("team", "python", later).connected_workers, 0);
    }

    #[test]
    fn availability_says_none_busy_or_free() {
        let t0 = Instant::now();
        let mut r = WorkerReports::default();
        let kind = WorkerKind::PythonSandbox;
        assert_eq!(
            r.availability("team", None, kind, t0),
            Availability::NoneConnected
        );
        r.record(
            "team",
            "executor",
            WorkerReport {
                pod: "e".into(),
                workers: vec![worker("p1", "python", 2, 2)],
                jobs: vec![],
            },
            t0,
        );
        assert_eq!(
            r.availability("team", Some("executor"), kind, t0),
            Availability::Busy
        );
        assert_eq!(
            r.availability("team", Some("other"), kind, t0),
            Availability::NoneConnected
        );
        assert_eq!(
            r.availability("team", None, WorkerKind::Browser, t0),
            Availability::NoneConnected
        );
        r.record(
            "team",
            "executor",
            WorkerReport {
                pod: "e".into(),
                workers: vec![worker("p1", "python", 2, 1)],
                jobs: vec![],
            },
            t0,
        );
        assert_eq!(r.availability("team", None, kind, t0), Availability::Free);
    }
}
