//! The WorkerRegistry: which worker pods are connected (kind, capacity, jobs, last frame),
//! which job runs where, and how many slots each kind's lane holds. Its LoadBalancer picks the
//! least loaded worker of a kind, taking turns (round robin) among equally loaded ones.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cogo_api::{
    WorkerKind,
    broker::{ConnectedWorker, JobTotals},
    worker::message::{ErrorData, WorkerMessage},
};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

/// A connection's id, unique within this Executor.
pub type ConnId = u64;

/// What a connection's writer sends.
#[derive(Debug)]
pub enum Outbound {
    /// A frame.
    Frame(Box<WorkerMessage>),
    /// A close frame with its code and reason; the writer stops after it.
    Close(u16, String),
}

impl Outbound {
    /// A frame to send.
    pub fn frame(m: WorkerMessage) -> Self {
        Outbound::Frame(Box::new(m))
    }
}

/// How a job dispatched to a worker ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The worker returned the task's result.
    Result(Value),
    /// The worker reported a failure.
    Failed(ErrorData),
    /// The worker went away before it answered: run the job elsewhere.
    Lost,
}

/// A job handed to a worker: where to send its frames, and where its outcome arrives.
pub struct Assignment {
    /// The worker's id (pod name).
    pub worker_id: String,
    /// Its connection.
    pub conn: ConnId,
    /// Its writer.
    pub tx: mpsc::UnboundedSender<Outbound>,
    /// Whether it takes `traceparent` in `execute` frames.
    pub traces: bool,
    /// The outcome.
    pub outcome: oneshot::Receiver<JobOutcome>,
}

/// Why a worker's report about a job was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishError {
    /// No such job runs (it finished already, was never sent, or was cancelled).
    UnknownJob,
    /// The job runs on another worker.
    NotYours,
}

struct Worker {
    id: String,
    worker: String,
    kind: WorkerKind,
    capacity: u32,
    jobs: BTreeSet<String>,
    last_seen: Instant,
    tx: mpsc::UnboundedSender<Outbound>,
    traces: bool,
}

struct Job {
    kind: WorkerKind,
    conn: ConnId,
    reply: oneshot::Sender<JobOutcome>,
}

#[derive(Default)]
struct State {
    workers: BTreeMap<ConnId, Worker>,
    jobs: HashMap<String, Job>,
    last_pick: HashMap<WorkerKind, ConnId>,
    held: HashMap<WorkerKind, u32>,
    by_worker: BTreeMap<String, (u64, u64)>,
    by_kind: HashMap<WorkerKind, (u64, u64)>,
}

/// The Executor's workers and their jobs.
#[derive(Default)]
pub struct WorkerRegistry {
    state: Mutex<State>,
    changed: Notify,
    next_conn: AtomicU64,
}

/// Figures for the metrics of one worker kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindFigures {
    /// Connected workers.
    pub total: u32,
    /// Workers running at least one job.
    pub active: u32,
    /// Jobs leased and waiting for a worker.
    pub queued: u32,
    /// Percentage of finished jobs that succeeded (100 before any finished).
    pub success_rate: u32,
}

impl WorkerRegistry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves after the next change of workers, capacity or held slots.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// A future that resolves on the next change; create it before looking, then await it.
    pub fn on_change(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Adds a connected worker. Another connection of the same worker id (a reconnect the
    /// Executor has not noticed the end of) is dropped, and its jobs are run elsewhere.
    pub fn connect(
        &self,
        id: &str,
        worker: &str,
        kind: WorkerKind,
        capacity: u32,
        tx: mpsc::UnboundedSender<Outbound>,
        now: Instant,
    ) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::SeqCst) + 1;
        let mut s = self.lock();
        let stale: Vec<ConnId> = s
            .workers
            .iter()
            .filter(|(_, w)| w.id == id)
            .map(|(c, _)| *c)
            .collect();
        for c in stale {
            if let Some(old) = drop_worker(&mut s, c) {
                let _ = old.send(Outbound::Close(1008, "the worker connected again".into()));
            }
        }
        s.workers.insert(
            conn,
            Worker {
                id: id.into(),
                worker: worker.into(),
                kind,
                capacity,
                jobs: BTreeSet::new(),
                last_seen: now,
                tx,
                traces: false,
            },
        );
        drop(s);
        self.notify();
        conn
    }

    /// Records that the worker on `conn` takes `traceparent` in its `execute` frames (it said
    /// so when it connected).
    pub fn set_traces(&self, conn: ConnId, traces: bool) {
        if let Some(w) = self.lock().workers.get_mut(&conn) {
            w.traces = traces;
        }
    }

    /// Removes a connection; its jobs are run elsewhere.
    pub fn disconnect(&self, conn: ConnId) {
        let mut s = self.lock();
        let gone = drop_worker(&mut s, conn).is_some();
        drop(s);
        if gone {
            self.notify();
        }
    }

    /// Sets a worker's capacity (0 while it drains).
    pub fn set_capacity(&self, conn: ConnId, capacity: u32) {
        let mut s = self.lock();
        if let Some(w) = s.workers.get_mut(&conn)
            && w.capacity != capacity
        {
            w.capacity = capacity;
            drop(s);
            self.notify();
        }
    }

    /// Records a frame from a worker.
    pub fn seen(&self, conn: ConnId, now: Instant) {
        if let Some(w) = self.lock().workers.get_mut(&conn) {
            w.last_seen = now;
        }
    }

    /// Whether the connection is silent for longer than `limit` (or gone).
    pub fn is_silent(&self, conn: ConnId, now: Instant, limit: Duration) -> bool {
        self.lock()
            .workers
            .get(&conn)
            .is_none_or(|w| now.saturating_duration_since(w.last_seen) > limit)
    }

    /// Workers of `kind` connected now.
    pub fn connected(&self, kind: WorkerKind) -> usize {
        self.lock().workers.values().filter(|w| w.kind == kind).count()
    }

    /// Slots of `kind` the lane may still lease: the capacity of the connected workers of the
    /// kind, less the jobs the lane holds.
    pub fn free(&self, kind: WorkerKind) -> u32 {
        let s = self.lock();
        let capacity: u32 = s
            .workers
            .values()
            .filter(|w| w.kind == kind)
            .map(|w| w.capacity)
            .sum();
        capacity.saturating_sub(s.held.get(&kind).copied().unwrap_or_default())
    }

    /// Counts a job of `kind` leased by the lane, until [`WorkerRegistry::release`].
    pub fn hold(&self, kind: WorkerKind) {
        *self.lock().held.entry(kind).or_default() += 1;
    }

    /// Forgets a leased job of `kind`: its slot is free again.
    pub fn release(&self, kind: WorkerKind) {
        if let Some(n) = self.lock().held.get_mut(&kind) {
            *n = n.saturating_sub(1);
        }
        self.notify();
    }

    /// Hands the job `task` to the least loaded worker of `kind` with a free slot (round robin
    /// among equals); None when none has one.
    pub fn assign(&self, task: &str, kind: WorkerKind) -> Option<Assignment> {
        let mut s = self.lock();
        let least = s
            .workers
            .values()
            .filter(|w| w.kind == kind && (w.jobs.len() as u32) < w.capacity)
            .map(|w| w.jobs.len())
            .min()?;
        let candidates: Vec<ConnId> = s
            .workers
            .iter()
            .filter(|(_, w)| w.kind == kind && (w.jobs.len() as u32) < w.capacity && w.jobs.len() == least)
            .map(|(c, _)| *c)
            .collect();
        let last = s.last_pick.get(&kind).copied().unwrap_or_default();
        let conn = candidates
            .iter()
            .copied()
            .find(|c| *c > last)
            .unwrap_or(candidates[0]);
        s.last_pick.insert(kind, conn);
        let (reply, outcome) = oneshot::channel();
        let w = s.workers.get_mut(&conn)?;
        w.jobs.insert(task.to_string());
        let assignment = Assignment {
            worker_id: w.id.clone(),
            conn,
            tx: w.tx.clone(),
            traces: w.traces,
            outcome,
        };
        if let Some(old) = s.jobs.insert(task.to_string(), Job { kind, conn, reply }) {
            // The task ran elsewhere under this id; that run is over.
            if let Some(w) = s.workers.get_mut(&old.conn) {
                w.jobs.remove(task);
            }
        }
        Some(assignment)
    }

    /// Takes a worker's outcome of `task`.
    pub fn finish(&self, conn: ConnId, task: &str, outcome: JobOutcome) -> Result<(), FinishError> {
        let mut s = self.lock();
        match s.jobs.get(task) {
            None => return Err(FinishError::UnknownJob),
            Some(j) if j.conn != conn => return Err(FinishError::NotYours),
            Some(_) => {}
        }
        let job = s.jobs.remove(task).ok_or(FinishError::UnknownJob)?;
        let succeeded = matches!(outcome, JobOutcome::Result(_));
        let mut cogo_worker = None;
        if let Some(w) = s.workers.get_mut(&conn) {
            w.jobs.remove(task);
            cogo_worker = Some(w.worker.clone());
        }
        if let Some(name) = cogo_worker {
            count(s.by_worker.entry(name).or_default(), succeeded);
        }
        count(s.by_kind.entry(job.kind).or_default(), succeeded);
        drop(s);
        let _ = job.reply.send(outcome);
        Ok(())
    }

    /// Takes `task` away from its worker (cancelled, or its lease lost); returns where to send
    /// the order to stop it.
    pub fn abort(&self, task: &str) -> Option<(String, mpsc::UnboundedSender<Outbound>)> {
        let mut s = self.lock();
        let job = s.jobs.remove(task)?;
        let w = s.workers.get_mut(&job.conn)?;
        w.jobs.remove(task);
        Some((w.id.clone(), w.tx.clone()))
    }

    /// The connected workers and the job totals, for the report to the operator.
    pub fn snapshot(&self) -> (Vec<ConnectedWorker>, Vec<JobTotals>) {
        let s = self.lock();
        let workers = s
            .workers
            .values()
            .map(|w| ConnectedWorker {
                id: w.id.clone(),
                worker: w.worker.clone(),
                kind: w.kind,
                capacity: w.capacity,
                active: w.jobs.len() as u32,
            })
            .collect();
        let totals = s
            .by_worker
            .iter()
            .map(|(worker, (ok, failed))| JobTotals {
                worker: worker.clone(),
                succeeded: *ok,
                failed: *failed,
            })
            .collect();
        (workers, totals)
    }

    /// The figures of `kind`, for the metrics.
    pub fn figures(&self, kind: WorkerKind) -> KindFigures {
        let s = self.lock();
        let of_kind = || s.workers.values().filter(|w| w.kind == kind);
        let assigned: u32 = s.jobs.values().filter(|j| j.kind == kind).count() as u32;
        let (ok, failed) = s.by_kind.get(&kind).copied().unwrap_or_default();
        KindFigures {
            total: of_kind().count() as u32,
            active: of_kind().filter(|w| !w.jobs.is_empty()).count() as u32,
            queued: s
                .held
                .get(&kind)
                .copied()
                .unwrap_or_default()
                .saturating_sub(assigned),
            success_rate: (ok * 100).checked_div(ok + failed).unwrap_or(100) as u32,
        }
    }
}

fn count(totals: &mut (u64, u64), succeeded: bool) {
    if succeeded {
        totals.0 += 1;
    } else {
        totals.1 += 1;
    }
}

/// Removes a worker and tells its jobs they were lost; returns its writer.
fn drop_worker(s: &mut State, conn: ConnId) -> Option<mpsc::UnboundedSender<Outbound>> {
    let w = s.workers.remove(&conn)?;
    for task in &w.jobs {
        if let Some(job) = s.jobs.remove(task) {
            let _ = job.reply.send(JobOutcome::Lost);
        }
    }
    Some(w.tx)
}

/// The lane slots of one worker kind, backed by the registry.
pub struct KindSlots {
    /// The registry.
    pub registry: Arc<WorkerRegistry>,
    /// The kind.
    pub kind: WorkerKind,
}

struct Held(Arc<WorkerRegistry>, WorkerKind);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

impl crate::pull::Slots for KindSlots {
    fn free(&self) -> u32 {
        self.registry.free(self.kind)
    }

    fn changed(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(self.registry.changed())
    }

    fn hold(&self) -> crate::pull::Slot {
        self.registry.hold(self.kind);
        Box::new(Held(self.registry.clone(), self.kind))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PY: WorkerKind = WorkerKind::PythonSandbox;

    fn add(r: &WorkerRegistry, id: &str, capacity: u32) -> (ConnId, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (r.connect(id, "python", PY, capacity, tx, Instant::now()), rx)
    }

    #[test]
    fn the_least_loaded_worker_gets_the_job_and_equals_take_turns() {
        let r = WorkerRegistry::default();
        let (a, _ra) = add(&r, "a", 2);
        let (b, _rb) = add(&r, "b", 2);
        let (c, _rc) = add(&r, "c", 2);
        let picks: Vec<ConnId> = (0..3)
            .map(|i| r.assign(&format!("t{i}"), PY).unwrap().conn)
            .collect();
        assert_eq!(picks, [a, b, c], "round robin among equally loaded workers");
        r.finish(b, "t1", JobOutcome::Result(json!(1))).unwrap();
        assert_eq!(r.assign("t3", PY).unwrap().conn, b, "b has the fewest jobs");
        let picks: Vec<ConnId> = (4..7)
            .filter_map(|i| r.assign(&format!("t{i}"), PY))
            .map(|x| x.conn)
            .collect();
        assert_eq!(picks.len(), 3, "six slots in all, three taken: three more");
        assert!(r.assign("t9", PY).is_none(), "every slot is taken");
        assert!(
            r.assign("t9", WorkerKind::Browser).is_none(),
            "no worker of that kind"
        );
    }

    #[test]
    fn a_dropped_worker_loses_its_jobs_to_be_run_elsewhere() {
        let r = WorkerRegistry::default();
        let (a, _ra) = add(&r, "a", 1);
        let mut job = r.assign("t", PY).unwrap();
        assert_eq!(job.conn, a);
        r.disconnect(a);
        assert_eq!(job.outcome.try_recv().unwrap(), JobOutcome::Lost);
        assert_eq!(r.free(PY), 0, "no worker left");
        let (b, _rb) = add(&r, "b", 1);
        let mut again = r.assign("t", PY).unwrap();
        assert_eq!(again.conn, b);
        assert_eq!(
            r.finish(a, "t", JobOutcome::Result(json!(0))),
            Err(FinishError::NotYours)
        );
        r.finish(b, "t", JobOutcome::Result(json!(2))).unwrap();
        assert_eq!(again.outcome.try_recv().unwrap(), JobOutcome::Result(json!(2)));
        assert_eq!(
            r.finish(b, "t", JobOutcome::Result(json!(2))),
            Err(FinishError::UnknownJob),
            "a duplicate result"
        );
    }

    #[test]
    fn a_worker_that_connects_again_replaces_its_old_connection() {
        let r = WorkerRegistry::default();
        let (a, mut old) = add(&r, "a", 1);
        let mut job = r.assign("t", PY).unwrap();
        let (a2, _new) = add(&r, "a", 1);
        assert_ne!(a, a2);
        assert_eq!(job.outcome.try_recv().unwrap(), JobOutcome::Lost);
        assert!(matches!(old.try_recv().unwrap(), Outbound::Close(1008, _)));
        assert_eq!(r.snapshot().0.len(), 1);
    }

    #[test]
    fn lane_slots_follow_capacity_and_held_jobs() {
        let r = Arc::new(WorkerRegistry::default());
        let slots = KindSlots {
            registry: r.clone(),
            kind: PY,
        };
        use crate::pull::Slots;
        assert_eq!(slots.free(), 0);
        let (a, _ra) = add(&r, "a", 2);
        add(&r, "b", 3).1.close();
        assert_eq!(slots.free(), 5);
        let held = slots.hold();
        assert_eq!(slots.free(), 4);
        assert_eq!(r.figures(PY).queued, 1, "held and not yet on a worker");
        r.set_capacity(a, 0);
        assert_eq!(slots.free(), 2, "a drains");
        drop(held);
        assert_eq!(slots.free(), 3);
    }

    #[test]
    fn totals_and_figures_count_outcomes_per_worker_and_kind() {
        let r = WorkerRegistry::default();
        let (a, _ra) = add(&r, "a", 2);
        r.assign("ok", PY).unwrap();
        r.assign("bad", PY).unwrap();
        assert_eq!(r.figures(PY).active, 1);
        r.finish(a, "ok", JobOutcome::Result(json!(1))).unwrap();
        r.finish(
            a,
            "bad",
            JobOutcome::Failed(ErrorData {
                message: "x".into(),
                retryable: false,
            }),
        )
        .unwrap();
        let (workers, totals) = r.snapshot();
        assert_eq!(workers[0].active, 0);
        assert_eq!((totals[0].succeeded, totals[0].failed), (1, 1));
        let f = r.figures(PY);
        assert_eq!((f.total, f.active, f.success_rate), (1, 0, 50));
    }
}
