//! Which pod holds which running task, and until when. Heartbeats extend a lease in memory
//! only (they cost no API write); the task controller ends attempts whose lease ran out. The
//! table is rebuilt on start from the Running tasks, each given a fresh lease, so a restart of
//! the operator never takes a task away from a pod that is still working on it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// One held lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The CogoAgent whose pod runs the task.
    pub agent: String,
    /// The pod running the task.
    pub pod: String,
    /// The attempt the pod runs.
    pub attempt: i32,
    /// When the lease runs out unless renewed.
    pub expires: Instant,
    /// Whether the task counts against the agent's `replicas x concurrency`: an Executor's
    /// worker jobs count against its workers' capacity instead.
    pub counted: bool,
}

/// What the table knows of a task's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Held until the given instant.
    Held(Instant),
    /// Ran out: the pod stopped heartbeating.
    Expired,
    /// The table has no lease for this attempt (a new operator, or a newer attempt).
    Unknown,
}

/// Leases of running tasks, by namespace and task name.
#[derive(Debug)]
pub struct Leases {
    ttl: Duration,
    held: HashMap<(String, String), Lease>,
}

impl Leases {
    /// A table whose leases last `ttl` past the last heartbeat.
    pub fn new(ttl: Duration) -> Self {
        Leases {
            ttl,
            held: HashMap::new(),
        }
    }

    /// How long a lease lasts after a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records that `pod` of `agent` holds attempt `attempt` of `ns/name` from `now`. A lease
    /// that replaces one of the same task (a reservation becoming a lease, a renewal) keeps
    /// whether it counts against the agent's concurrency.
    pub fn hold(&mut self, ns: &str, name: &str, agent: &str, pod: &str, attempt: i32, now: Instant) {
        let key = (ns.to_string(), name.to_string());
        let counted = self.held.get(&key).is_none_or(|l| l.counted);
        self.held.insert(
            key,
            Lease {
                agent: agent.to_string(),
                pod: pod.to_string(),
                attempt,
                expires: now + self.ttl,
                counted,
            },
        );
    }

    /// Makes the lease of `ns/name` count against the agent's concurrency, or not.
    pub fn set_counted(&mut self, ns: &str, name: &str, counted: bool) {
        if let Some(l) = self.held.get_mut(&(ns.to_string(), name.to_string())) {
            l.counted = counted;
        }
    }

    /// Extends the lease of `pod` on attempt `attempt` of `ns/name` and returns its new expiry;
    /// None when the table holds no such lease (it was released, or never held here): the
    /// caller then checks the task's status at the API server before holding it anew, so a
    /// heartbeat judged on a stale view cannot bring back a released lease.
    pub fn renew(&mut self, ns: &str, name: &str, pod: &str, attempt: i32, now: Instant) -> Option<Instant> {
        let lease = self.held.get_mut(&(ns.to_string(), name.to_string()))?;
        if lease.attempt != attempt || lease.pod != pod {
            return None;
        }
        lease.expires = now + self.ttl;
        Some(lease.expires)
    }

    /// Drops what the table holds in error, judged against `task` (the cached view of a task:
    /// None when it is gone, else whether it is finished, its attempt and whether it is
    /// Running): leases of finished or deleted tasks, leases that ran out of an older attempt or
    /// of the status's own attempt when that is no longer running, and reservations that ran
    /// out (a reservation lives only while its lease is written). Returns what was dropped.
    pub fn heal(
        &mut self,
        now: Instant,
        task: impl Fn(&str, &str) -> Option<(bool, i32, bool)>,
    ) -> Vec<(String, String)> {
        let stale: Vec<(String, String)> = self
            .held
            .iter()
            .filter(|((ns, name), l)| match task(ns, name) {
                None => true,
                Some((true, _, _)) => true,
                Some((false, attempt, running)) => {
                    l.expires <= now
                        && (l.attempt == 0 || l.attempt < attempt || (l.attempt == attempt && !running))
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &stale {
            self.held.remove(k);
        }
        stale
    }

    /// Forgets the lease of `ns/name`.
    pub fn release(&mut self, ns: &str, name: &str) -> Option<Lease> {
        self.held.remove(&(ns.to_string(), name.to_string()))
    }

    /// The state of the lease of attempt `attempt` of `ns/name` at `now`.
    pub fn state(&self, ns: &str, name: &str, attempt: i32, now: Instant) -> LeaseState {
        match self.held.get(&(ns.to_string(), name.to_string())) {
            Some(l) if l.attempt == attempt && l.expires > now => LeaseState::Held(l.expires),
            Some(l) if l.attempt == attempt => LeaseState::Expired,
            _ => LeaseState::Unknown,
        }
    }

    /// Whether a lease (or a reservation) of `ns/name` is held.
    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.held.contains_key(&(ns.to_string(), name.to_string()))
    }

    /// Whether the lease of `ns/name` held is for attempt `attempt`.
    pub fn holds(&self, ns: &str, name: &str, attempt: i32) -> bool {
        self.held
            .get(&(ns.to_string(), name.to_string()))
            .is_some_and(|l| l.attempt == attempt)
    }

    /// Tasks the pods of `agent` in `ns` hold that count against its concurrency.
    pub fn running_for(&self, ns: &str, agent: &str) -> usize {
        self.held
            .iter()
            .filter(|((n, _), l)| n == ns && l.agent == agent && l.counted)
            .count()
    }

    /// Tasks running (or being leased) in `ns`, on any agent or worker.
    pub fn running_in(&self, ns: &str) -> usize {
        self.held.keys().filter(|(n, _)| n == ns).count()
    }

    /// Every held lease.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_run_out_unless_renewed() {
        let t0 = Instant::now();
        let mut l = Leases::new(Duration::from_secs(15));
        l.hold("ns", "t", "a", "p", 1, t0);
        assert_eq!(
            l.state("ns", "t", 1, t0),
            LeaseState::Held(t0 + Duration::from_secs(15))
        );
        assert_eq!(
            l.state("ns", "t", 1, t0 + Duration::from_secs(15)),
            LeaseState::Expired
        );
        assert_eq!(
            l.renew("ns", "t", "p", 1, t0 + Duration::from_secs(10)),
            Some(t0 + Duration::from_secs(25))
        );
        assert_eq!(
            l.state("ns", "t", 1, t0 + Duration::from_secs(20)),
            LeaseState::Held(t0 + Duration::from_secs(25))
        );
        assert_eq!(
            l.state("ns", "t", 2, t0),
            LeaseState::Unknown,
            "another attempt's lease is not this one"
        );
        assert_eq!(l.state("ns", "u", 1, t0), LeaseState::Unknown);
        // A renewal never makes a lease: not for another pod, attempt or task, nor once released.
        assert_eq!(l.renew("ns", "t", "other-pod", 1, t0), None);
        assert_eq!(l.renew("ns", "t", "p", 2, t0), None);
        assert_eq!(l.renew("ns", "u", "p", 1, t0), None);
        l.release("ns", "t");
        assert_eq!(l.renew("ns", "t", "p", 1, t0), None);
        assert!(
            !l.contains("ns", "t"),
            "a late heartbeat does not bring a released lease back"
        );
    }

    #[test]
    fn the_table_heals_against_the_tasks() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut l = Leases::new(Duration::from_secs(15));
        for (name, attempt) in [
            ("done", 1),
            ("gone", 1),
            ("running", 2),
            ("old", 1),
            ("retried", 2),
            ("unwritten", 3),
            ("reserved", 0),
        ] {
            l.hold("ns", name, "a", "p", attempt, t0);
        }
        l.hold("ns", "fresh-reservation", "a", "p", 0, later);
        let tasks = |_: &str, name: &str| match name {
            "done" => Some((true, 1, false)),
            "gone" => None,
            "running" => Some((false, 2, true)),
            "old" => Some((false, 2, true)),
            // Attempt 2 ended and the task waits for its retry: its lease is not the pod's.
            "retried" => Some((false, 2, false)),
            // Leased for attempt 3, not written yet: still attempt 2 in status.
            "unwritten" => Some((false, 2, false)),
            "reserved" | "fresh-reservation" => Some((false, 0, false)),
            _ => unreachable!(),
        };
        // Before anything ran out, only what is finished or deleted goes.
        let mut dropped = l.heal(t0, tasks);
        dropped.sort();
        assert_eq!(
            dropped,
            [("ns".into(), "done".into()), ("ns".into(), "gone".into())]
        );
        let mut dropped = l.heal(later, tasks);
        dropped.sort();
        assert_eq!(
            dropped,
            [
                ("ns".into(), "old".into()),
                ("ns".into(), "reserved".into()),
                ("ns".into(), "retried".into())
            ],
            "an older attempt's lease, a reservation that ran out, and the lease of an attempt that ended"
        );
        assert!(
            l.contains("ns", "unwritten"),
            "an unwritten lease of the next attempt is the broker's to end"
        );
        assert!(
            l.contains("ns", "running"),
            "an expired lease of the current attempt is the controller's to end"
        );
        assert!(l.contains("ns", "fresh-reservation"));
    }

    #[test]
    fn running_tasks_are_counted_per_agent_and_namespace() {
        let t0 = Instant::now();
        let mut l = Leases::new(Duration::from_secs(15));
        l.hold("ns", "t1", "a", "p", 1, t0);
        l.hold("ns", "t2", "a", "q", 1, t0);
        l.hold("ns", "t3", "b", "r", 1, t0);
        l.hold("other", "t1", "a", "p", 1, t0);
        assert_eq!(l.running_for("ns", "a"), 2);
        assert_eq!(l.running_for("ns", "b"), 1);
        assert_eq!(
            (l.running_in("ns"), l.running_in("other"), l.running_in("none")),
            (3, 1, 0)
        );
        assert!(l.release("ns", "t1").is_some());
        assert!(l.release("ns", "t1").is_none());
        assert_eq!(l.running_for("ns", "a"), 1);
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn worker_jobs_do_not_count_against_the_agent_and_renewals_keep_that() {
        let t0 = Instant::now();
        let mut l = Leases::new(Duration::from_secs(15));
        l.hold("ns", "py", "exec", "p", 0, t0);
        l.set_counted("ns", "py", false);
        l.hold("ns", "own", "exec", "p", 1, t0);
        assert_eq!(l.running_for("ns", "exec"), 1);
        l.hold("ns", "py", "exec", "p", 1, t0);
        l.renew("ns", "py", "p", 1, t0 + Duration::from_secs(5));
        assert_eq!(
            l.running_for("ns", "exec"),
            1,
            "the lease and its renewal stay uncounted"
        );
        l.release("ns", "py");
        l.hold("ns", "py", "exec", "p", 2, t0);
        assert_eq!(l.running_for("ns", "exec"), 2, "a new lease counts unless told");
    }
}
