//! The [`Scheduler`]: the one owner of the AgentTask state the operator keeps in memory (the
//! queue, the leases and reservations, the wake-ups of waiting lease requests, the tasks whose
//! first status write is deferred, and what Executors report about their workers). The task
//! controller and the broker are its clients: they say what happened (a task was accepted,
//! leased, finished, reported on) and the scheduler changes its tables, wakes whom that
//! concerns, and keeps the `tasks_queued` and `tasks_running` gauges current.
//!
//! Each method takes a lock for as short as it can and never across an `.await`; where two
//! are taken together, the leases come first, then the queue, then the boards of indexed
//! tasks' items.

use std::{
    cmp::Reverse,
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cogo_api::{
    AgentRole, AgentTask, CogoAgent, TaskPhase, WorkerKind,
    broker::{LeaseRequest, LeasedTask, WorkerReport},
};
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use tokio::sync::Notify;

use super::attempts::AttemptSpans;
use super::{
    accept::Target,
    items::{Board, ItemEnd, ItemFence},
    leases::{LeaseState, Leases},
    queue::{TaskQueue, Waiting},
    wake::Wakeups,
    workers::{Availability, WorkerReports, WorkerStats},
};
use crate::metrics::Metrics;

/// Tasks of one agent that ended, as counted by this replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finished {
    /// Tasks that succeeded.
    pub succeeded: i64,
    /// Tasks that failed.
    pub failed: i64,
    /// Milliseconds from first start to end, summed over the tasks that had both.
    pub duration_ms: i64,
    /// How many tasks `duration_ms` covers.
    pub timed: i64,
}

/// What an indexed task's status should say of its items, due to be written (see
/// [`Scheduler::tick_boards`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BoardStatus {
    /// The task's namespace.
    pub namespace: String,
    /// The task's name.
    pub name: String,
    /// The counts and ranges.
    pub items: cogo_api::ItemsStatus,
    /// The message while it runs.
    pub progress: String,
    /// Whether any item was ever leased.
    pub started: bool,
    /// The final phase and message, once decided.
    pub outcome: Option<(TaskPhase, String)>,
}

/// A lease handed to a pod whose status write waits (see [`Scheduler::lease_unwritten`]): what
/// [`crate::tasks::transition::leased`] needs to write it, or to show the task as leased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwrittenLease {
    /// The CogoAgent whose pod holds it.
    pub agent: String,
    /// The pod holding it.
    pub pod: String,
    /// The attempt the pod runs.
    pub attempt: i32,
    /// When it was leased.
    pub at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// A task reserved for a lease request: its name, and the object as the controller queued it
/// (so the lease needs no read), when the queue kept one.
pub type Reserved = (String, Option<Arc<AgentTask>>);

/// Limits on each namespace's tasks; 0 is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamespaceLimits {
    /// Tasks queued at once: a task created past it waits, not accepted, until one is leased.
    pub queued: usize,
    /// Tasks running at once: past it, queued tasks that are not sub-tasks wait for a slot.
    /// Sub-tasks are never held back, so a running workflow cannot wait on its own namespace.
    pub running: usize,
}

/// The AgentTask state kept in memory, behind its locks; shared (as an `Arc`) by the task
/// controller and the broker.
pub struct Scheduler {
    limits: NamespaceLimits,
    /// The keys the broker marks its sub-tasks with; only those pass the namespace limits.
    subtask_keys: std::sync::OnceLock<crate::tokens::auth::Keys>,
    finished: Mutex<HashMap<(String, String), Finished>>,
    queue: Mutex<TaskQueue>,
    leases: Mutex<Leases>,
    wakeups: Wakeups,
    deferred: Mutex<HashSet<(String, String)>>,
    unwritten: Mutex<HashMap<(String, String), UnwrittenLease>>,
    /// Tasks whose attempt's outcome is being written now (see [`Scheduler::writing_outcome`]).
    outcomes_writing: Mutex<HashSet<(String, String)>>,
    boards: Mutex<HashMap<(String, String), Board>>,
    /// The last outcome written of each task: the object's UID and the attempt (see
    /// [`Scheduler::outcome_written`]).
    outcomes: Mutex<HashMap<(String, String), (String, i32)>>,
    lease_ttl: Duration,
    workers: Mutex<WorkerReports>,
    metrics: Arc<Metrics>,
    /// The spans of the attempts running now, ended as their leases are released.
    pub attempts: AttemptSpans,
}

/// While alive, the outcome of a task is being written (see [`Scheduler::writing_outcome`]).
pub struct OutcomeWriting<'a> {
    scheduler: &'a Scheduler,
    key: (String, String),
}

impl Drop for OutcomeWriting<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.scheduler.outcomes_writing.lock() {
            w.remove(&self.key);
        }
    }
}

impl Scheduler {
    /// An empty scheduler whose leases last `lease_ttl` past the last heartbeat, reporting the
    /// queue's depth and the leases held to `metrics`.
    pub fn new(lease_ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Scheduler {
            limits: NamespaceLimits::default(),
            subtask_keys: Default::default(),
            finished: Default::default(),
            queue: Default::default(),
            leases: Mutex::new(Leases::new(lease_ttl)),
            wakeups: Default::default(),
            deferred: Default::default(),
            unwritten: Default::default(),
            outcomes_writing: Default::default(),
            boards: Default::default(),
            outcomes: Default::default(),
            lease_ttl,
            workers: Default::default(),
            attempts: Default::default(),
            metrics,
        }
    }

    /// The scheduler with `limits` on each namespace's tasks.
    pub fn with_limits(mut self, limits: NamespaceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits on each namespace's tasks.
    pub fn limits(&self) -> NamespaceLimits {
        self.limits
    }

    /// Takes `keys` as the ones the broker marks its sub-tasks with (see
    /// [`crate::seal::seal_subtask`]); without them every task is held to the namespace limits.
    pub fn vouch_subtasks_with(&self, keys: crate::tokens::auth::Keys) {
        let _ = self.subtask_keys.set(keys);
    }

    /// Whether the namespace limits hold `task` back: every task but the sub-tasks the broker
    /// created for running tasks.
    pub fn is_limited(&self, task: &AgentTask) -> bool {
        // Without limits the answer changes nothing: spare the seal's check.
        if self.limits == NamespaceLimits::default() {
            return true;
        }
        !self
            .subtask_keys
            .get()
            .is_some_and(|k| crate::seal::is_broker_subtask(k, task))
    }

    /// Whether `task`, never accepted, may join its namespace's queue under the limit on
    /// queued tasks (see [`TaskQueue::admit`]): always when there is no limit, and when it is
    /// being leased already.
    pub fn admit(&self, task: &AgentTask) -> bool {
        let limit = self.limits.queued;
        let (Some(ns), Some(name)) = (task.metadata.namespace.as_deref(), task.metadata.name.as_deref())
        else {
            return true;
        };
        if limit == 0 || self.is_leased(ns, name) {
            return true;
        }
        let created = super::queue::created_second(task);
        self.queue
            .lock()
            .is_ok_and(|mut q| q.admit(ns, name, created, limit))
    }

    /// Queues `task` (`ns/name`) for `target`, with the object as last seen so the lease needs
    /// no read, and wakes the lease requests that may take it (per `agents`). A task being
    /// leased right now is not queued again from an older view.
    pub fn enqueue(
        &self,
        ns: &str,
        name: &str,
        target: Target,
        task: Arc<AgentTask>,
        agents: &Store<CogoAgent>,
    ) {
        if self.is_leased(ns, name) || self.is_stale(ns, name, &task) {
            return;
        }
        let limited = self.is_limited(&task);
        if let Ok(mut q) = self.queue.lock() {
            q.upsert_task(target.clone(), task, limited);
            self.metrics.set_tasks_queued(q.len());
        }
        self.wakeups.target(ns, &target, agents);
    }

    /// Records that the outcome of attempt `attempt` of `task` was just written: until the
    /// task cache shows it (see [`Scheduler::caught_up`]), an older view of the task is not
    /// queued, so a task that ended is not run again from a stale cache. The record is of this
    /// object (its UID): a task created later under the same name is not held back by it.
    pub fn outcome_written(&self, task: &AgentTask, attempt: i32) {
        let key = (task.namespace().unwrap_or_default(), task.name_any());
        if let Ok(mut o) = self.outcomes.lock() {
            o.insert(key, (task.uid().unwrap_or_default(), attempt));
        }
    }

    /// Forgets the outcome recorded for `task`'s name once a view of it at its attempt (or
    /// later) has been seen, or once another object holds the name.
    pub fn caught_up(&self, task: &AgentTask) {
        let key = (task.namespace().unwrap_or_default(), task.name_any());
        let (uid, attempt) = (task.uid().unwrap_or_default(), attempt_of(task));
        if let Ok(mut o) = self.outcomes.lock()
            && o.get(&key).is_some_and(|(u, a)| *u != uid || attempt >= *a)
        {
            o.remove(&key);
        }
    }

    /// Forgets the items laid out under `task`'s name for another object: a task deleted and
    /// created again under the same name starts from its own items. Their slots are free again.
    pub fn forget_other_objects(&self, task: &AgentTask) {
        let key = (task.namespace().unwrap_or_default(), task.name_any());
        let uid = task.uid();
        let dropped = self.boards.lock().is_ok_and(|mut b| {
            b.get(&key).is_some_and(|board| board.task.uid() != uid) && b.remove(&key).is_some()
        });
        if dropped {
            self.wakeups.namespace(&key.0);
        }
    }

    /// Whether `task` is a view of `ns/name` older than an outcome of the same object written
    /// since.
    fn is_stale(&self, ns: &str, name: &str, task: &AgentTask) -> bool {
        let (uid, attempt) = (task.uid().unwrap_or_default(), attempt_of(task));
        self.outcomes.lock().is_ok_and(|o| {
            o.get(&(ns.to_string(), name.to_string()))
                .is_some_and(|(u, a)| *u == uid && attempt < *a)
        })
    }

    /// Releases the lease of `ns/name` if it is the one of attempt `attempt` (see
    /// [`Scheduler::release`]).
    pub fn release_attempt(&self, ns: &str, name: &str, attempt: i32) {
        if self.leases.lock().is_ok_and(|l| l.holds(ns, name, attempt)) {
            self.release(ns, name);
        }
    }

    /// Queues `task` again for the target its spec names (a lease that could not be written),
    /// and wakes the lease requests that may take it (per `agents`).
    pub fn requeue(&self, task: &AgentTask, agents: &Store<CogoAgent>) {
        let target = match (&task.spec.agent, task.spec.role) {
            (Some(a), _) => Target::Agent(a.clone()),
            (None, Some(r)) => Target::Role(r),
            (None, None) => return,
        };
        let limited = self.is_limited(task);
        if let Ok(mut q) = self.queue.lock() {
            q.upsert_task(target.clone(), Arc::new(task.clone()), limited);
            self.metrics.set_tasks_queued(q.len());
        }
        self.wakeups
            .target(&task.namespace().unwrap_or_default(), &target, agents);
    }

    /// Has the queue keep `task` (the cache's) for `ns/name` in place of an equal copy of the
    /// same resourceVersion, so a queued task is held in memory once.
    pub fn share(&self, ns: &str, name: &str, task: &Arc<AgentTask>) {
        if let Ok(mut q) = self.queue.lock() {
            q.share(ns, name, task);
        }
    }

    /// Takes `ns/name` out of the queue (it is running, finished, invalid or backing off), and
    /// forgets that its first status write was deferred.
    pub fn dequeue(&self, ns: &str, name: &str) {
        if let Ok(mut q) = self.queue.lock() {
            q.remove(ns, name);
            self.metrics.set_tasks_queued(q.len());
        }
        self.forget_deferred(ns, name);
    }

    /// Tasks waiting for the agent `agent` (of role `role`) of `ns`, by its name or its role,
    /// and tasks its pods hold against its concurrency.
    pub fn queue_of(&self, ns: &str, agent: &str, role: AgentRole) -> (Waiting, usize) {
        let running =
            self.leases.lock().map_or(0, |l| l.running_for(ns, agent)) + self.items_running_for(ns, agent);
        let mut pending = self
            .queue
            .lock()
            .map(|q| q.pending_for(ns, agent, role))
            .unwrap_or_default();
        self.count_waiting_items(ns, &mut pending, |b| match &b.target {
            Target::Agent(a) => a == agent,
            Target::Role(r) => *r == role,
        });
        (pending, running)
    }

    /// Adds the items of the indexed tasks of `ns` that `mine` picks to `pending`: items
    /// waiting count as tasks waiting, as old as their task.
    fn count_waiting_items(&self, ns: &str, pending: &mut Waiting, mine: impl Fn(&Board) -> bool) {
        let Ok(boards) = self.boards.lock() else { return };
        for ((n, _), b) in boards.iter() {
            let waiting = b.pending();
            if n == ns && waiting > 0 && mine(b) {
                let created = super::queue::created_second(&b.task);
                pending.count += waiting;
                pending.oldest = Some(pending.oldest.map_or(created, |o| o.min(created)));
            }
        }
    }

    /// Items of indexed tasks of `ns` running now.
    fn items_running_in(&self, ns: &str) -> usize {
        self.boards.lock().map_or(0, |boards| {
            boards
                .iter()
                .filter(|((n, _), _)| n == ns)
                .map(|(_, b)| b.running())
                .sum()
        })
    }

    /// Items of indexed tasks that pods of `agent` in `ns` run now.
    fn items_running_for(&self, ns: &str, agent: &str) -> usize {
        self.boards.lock().map_or(0, |boards| {
            boards
                .iter()
                .filter(|((n, _), _)| n == ns)
                .map(|(_, b)| b.running_for(agent))
                .sum()
        })
    }

    /// Keeps `board`, the items of the indexed task `ns/name`, unless it has one already; wakes
    /// the lease requests that may take its items. True when it was new.
    pub fn lay_out(&self, ns: &str, name: &str, board: Board, agents: &Store<CogoAgent>) -> bool {
        let target = board.target.clone();
        let new = self.boards.lock().is_ok_and(|mut b| {
            let key = (ns.to_string(), name.to_string());
            if b.contains_key(&key) {
                return false;
            }
            b.insert(key, board);
            true
        });
        if new {
            self.wakeups.target(ns, &target, agents);
        }
        new
    }

    /// What status should say of the items of `ns/name`, when they are laid out here.
    pub fn board_status(&self, ns: &str, name: &str) -> Option<cogo_api::ItemsStatus> {
        self.boards
            .lock()
            .ok()?
            .get(&(ns.to_string(), name.to_string()))
            .map(Board::status)
    }

    /// Whether the indexed task `ns/name` has its items laid out here.
    pub fn has_board(&self, ns: &str, name: &str) -> bool {
        self.boards
            .lock()
            .is_ok_and(|b| b.contains_key(&(ns.to_string(), name.to_string())))
    }

    /// Forgets the items of `ns/name` (the task ended or is gone); the slots its running items
    /// held are free again.
    pub fn drop_board(&self, ns: &str, name: &str) {
        let dropped = self
            .boards
            .lock()
            .ok()
            .and_then(|mut b| b.remove(&(ns.to_string(), name.to_string())));
        if dropped.is_some() {
            self.wakeups.namespace(ns);
        }
    }

    /// Leases items of the indexed tasks of `ns` that `agent` may run (sent to it or to its
    /// role, of a type `req` wants), highest priority and oldest task first: as many as `req`
    /// has slots left after the `leased` tasks it got, and the agent has free (`replicas x
    /// concurrency` minus what its pods hold). Returns the task, and each item's index,
    /// attempt and time left until its deadline.
    pub fn take_items(
        &self,
        ns: &str,
        agent: &CogoAgent,
        req: &LeaseRequest,
        leased: usize,
    ) -> Vec<(Arc<AgentTask>, u32, i32, Duration)> {
        let name = agent.name_any();
        let cap =
            (agent.spec.replicas.max(0) as usize).saturating_mul(agent.spec.concurrency.max(1) as usize);
        // Counted and taken under both locks, so two requests cannot fill the same room.
        let Ok(leases) = self.leases.lock() else {
            return Vec::new();
        };
        let Ok(mut boards) = self.boards.lock() else {
            return Vec::new();
        };
        let here = || boards.iter().filter(|((n, _), _)| n == ns).map(|(_, b)| b);
        let running = leases.running_for(ns, &name) + here().map(|b| b.running_for(&name)).sum::<usize>();
        // Items count against the namespace's limit on running tasks, as tasks do.
        let mut ns_room = match self.limits.running {
            0 => usize::MAX,
            limit => limit.saturating_sub(leases.running_in(ns) + here().map(Board::running).sum::<usize>()),
        };
        let n = (req.slots as usize)
            .saturating_sub(leased)
            .min(cap.saturating_sub(running));
        if n == 0 {
            return Vec::new();
        }
        let ttl = self.lease_ttl;
        let mut mine: Vec<_> = boards
            .iter_mut()
            .filter(|((n, _), b)| {
                n == ns
                    && b.has_ready()
                    && req.wants(&b.task.spec.task_type)
                    && match &b.target {
                        Target::Agent(a) => *a == name,
                        Target::Role(r) => *r == agent.spec.role,
                    }
            })
            .map(|(_, b)| b)
            .collect();
        mine.sort_by_key(|b| {
            (
                Reverse(b.task.spec.priority),
                super::queue::created_second(&b.task),
            )
        });
        let now = Instant::now();
        let mut out = Vec::new();
        for b in mine {
            let room = n - out.len();
            if room == 0 {
                break;
            }
            let limited = self.limits.running > 0 && self.is_limited(&b.task);
            let room = if limited { room.min(ns_room) } else { room };
            let task = b.task.clone();
            for taken in b.take(room, (&name, &req.pod), now, ttl) {
                if limited {
                    ns_room -= 1;
                }
                self.metrics.item_dispatched(taken.waited);
                out.push((task.clone(), taken.index, taken.attempt, taken.left));
            }
        }
        out
    }

    /// Checks that `pod` of `agent` holds attempt `attempt` of item `i` of `ns/name`; with
    /// `renew`, extends its lease. None when the task has no items laid out here.
    pub fn item_lease(
        &self,
        (ns, name, i): (&str, &str, u32),
        (agent, pod, attempt): (&str, &str, i32),
        renew: bool,
    ) -> Option<Result<(), ItemFence>> {
        let ttl = self.lease_ttl;
        let mut boards = self.boards.lock().ok()?;
        let b = boards.get_mut(&(ns.to_string(), name.to_string()))?;
        Some(match b.check(i, pod, attempt) {
            Ok(l) if l.agent != agent => Err(ItemFence::LeaseLost),
            Ok(_) if renew => b.renew(i, pod, attempt, Instant::now(), ttl),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        })
    }

    /// Records how attempt `attempt` of item `i` of `ns/name`, run by `pod`, ended (see
    /// [`Board::complete`]), and wakes the lease requests of the agent whose slot it freed.
    /// None when the task has no items laid out here.
    pub fn complete_item(
        &self,
        (ns, name, i): (&str, &str, u32),
        (pod, attempt): (&str, i32),
        (outcome, retryable, error): (cogo_api::broker::Outcome, bool, Option<&str>),
    ) -> Option<Result<ItemEnd, ItemFence>> {
        let (ended, agent) = {
            let mut boards = self.boards.lock().ok()?;
            let b = boards.get_mut(&(ns.to_string(), name.to_string()))?;
            let agent = b.lease(i).map(|l| l.agent.clone());
            (
                b.complete(i, (pod, attempt), (outcome, retryable, error), Instant::now()),
                agent,
            )
        };
        if let (Ok(_), Some(agent)) = (&ended, agent) {
            self.metrics.item_completed();
            // The slot is the agent's, and under a limit on running tasks the namespace's.
            if self.limits.running > 0 {
                self.wakeups.namespace(ns);
            } else {
                self.wakeups.agent(ns, &agent);
            }
        }
        Some(ended)
    }

    /// Moves every board's time on to `now` (see [`Board::tick`]), waking the lease requests
    /// that may take what became free or ready, and returns the boards whose status is due: it
    /// changed and was last written at least `every` ago, or the task is decided, and no write
    /// of it is under way. Each is marked as being written at `now`;
    /// [`Scheduler::status_written`] or [`Scheduler::status_unwritten`] says how that ended.
    pub fn tick_boards(&self, now: Instant, every: Duration, agents: &Store<CogoAgent>) -> Vec<BoardStatus> {
        let mut due = Vec::new();
        let mut wake = Vec::new();
        if let Ok(mut boards) = self.boards.lock() {
            for ((ns, name), b) in boards.iter_mut() {
                let (freed, woke) = b.tick(now);
                for agent in freed {
                    wake.push((ns.clone(), Some(agent), None));
                }
                if woke {
                    wake.push((ns.clone(), None, Some(b.target.clone())));
                }
                let outcome = b.outcome();
                let ripe = b.written.is_none_or(|w| now.duration_since(w) >= every) || outcome.is_some();
                if b.changed && ripe && !b.writing {
                    b.changed = false;
                    b.writing = true;
                    b.written = Some(now);
                    due.push(BoardStatus {
                        namespace: ns.clone(),
                        name: name.clone(),
                        items: b.status(),
                        progress: b.progress(),
                        started: b.started(),
                        outcome,
                    });
                }
            }
        }
        for (ns, agent, target) in wake {
            match (agent, target) {
                (Some(_), _) if self.limits.running > 0 => self.wakeups.namespace(&ns),
                (Some(a), _) => self.wakeups.agent(&ns, &a),
                (None, Some(t)) => self.wakeups.target(&ns, &t, agents),
                _ => {}
            }
        }
        due
    }

    /// Marks the status of `ns/name`'s items as not written after all (the write failed), so
    /// the next tick tries again.
    pub fn status_unwritten(&self, ns: &str, name: &str) {
        if let Ok(mut boards) = self.boards.lock()
            && let Some(b) = boards.get_mut(&(ns.to_string(), name.to_string()))
        {
            b.changed = true;
            b.writing = false;
            b.written = None;
        }
    }

    /// Marks the status write of `ns/name`'s items as done.
    pub fn status_written(&self, ns: &str, name: &str) {
        if let Ok(mut boards) = self.boards.lock()
            && let Some(b) = boards.get_mut(&(ns.to_string(), name.to_string()))
        {
            b.writing = false;
        }
    }

    /// Starts no more items of `ns/name` (it is being cancelled).
    pub fn stop_board(&self, ns: &str, name: &str) {
        if let Ok(mut boards) = self.boards.lock()
            && let Some(b) = boards.get_mut(&(ns.to_string(), name.to_string()))
        {
            b.stop();
        }
    }

    /// Counts a task of `agent` in `ns` that ended in `phase` (Succeeded or Failed) after
    /// `seconds` from its first start, when known.
    pub fn count_finished(&self, ns: &str, agent: &str, phase: TaskPhase, seconds: Option<f64>) {
        let Ok(mut f) = self.finished.lock() else { return };
        let c = f.entry((ns.to_string(), agent.to_string())).or_default();
        if phase == TaskPhase::Succeeded {
            c.succeeded += 1;
        } else {
            c.failed += 1;
        }
        if let Some(s) = seconds {
            c.duration_ms += (s * 1000.0) as i64;
            c.timed += 1;
        }
    }

    /// The tasks of `agent` in `ns` this replica saw end.
    pub fn finished_of(&self, ns: &str, agent: &str) -> Finished {
        self.finished
            .lock()
            .ok()
            .and_then(|f| f.get(&(ns.to_string(), agent.to_string())).copied())
            .unwrap_or_default()
    }

    /// Jobs of `kind` waiting in `ns`, and jobs the pods of the CogoWorker `worker` run, as
    /// the Executors report them.
    pub fn jobs_of(&self, ns: &str, worker: &str, kind: WorkerKind) -> (Waiting, usize) {
        let mut pending = self
            .queue
            .lock()
            .map(|q| q.pending_of_kind(ns, kind))
            .unwrap_or_default();
        self.count_waiting_items(ns, &mut pending, |b| {
            WorkerKind::for_task_type(&b.task.spec.task_type) == Some(kind)
        });
        let running = self.worker_stats(ns, worker).active_jobs.max(0) as usize;
        (pending, running)
    }

    /// Whether `ns/name` is queued.
    pub fn is_queued(&self, ns: &str, name: &str) -> bool {
        self.queue.lock().is_ok_and(|q| q.contains(ns, name))
    }

    /// Records that the first status write of the new task `ns/name` is deferred (it is queued
    /// first, so a lease in the meantime accepts it in the same write); true the first time.
    pub fn defer_first_write(&self, ns: &str, name: &str) -> bool {
        self.deferred
            .lock()
            .is_ok_and(|mut d| d.insert((ns.to_string(), name.to_string())))
    }

    /// Forgets that the first status write of `ns/name` was deferred: it has been written.
    pub fn forget_deferred(&self, ns: &str, name: &str) {
        if let Ok(mut d) = self.deferred.lock() {
            d.remove(&(ns.to_string(), name.to_string()));
        }
    }

    /// What the lease requests of `agent` in `ns` wait on: woken when a task they may take is
    /// queued, or a slot of the agent is freed. Register before looking at the queue, so a
    /// task queued in between is not missed.
    pub fn wakeup(&self, ns: &str, agent: &str) -> Arc<Notify> {
        self.wakeups.of(ns, agent)
    }

    /// Takes up to `req.slots` queued tasks of the types `req` wants for `agent`, and reserves
    /// a lease for each (`agents` says whom to wake should the reservation be given back). An
    /// Executor's lease of its workers' task types (all of `req.typePrefixes` name worker
    /// kinds) is bounded by the slots its workers have free, which it asks for; any other lease
    /// by the agent's free slots (`replicas x concurrency` minus the tasks its pods hold).
    pub fn reserve<'a>(
        &'a self,
        ns: &'a str,
        agent: &CogoAgent,
        req: &LeaseRequest,
        agents: &'a Store<CogoAgent>,
    ) -> Reservation<'a> {
        Reservation {
            scheduler: self,
            agents,
            ns,
            tasks: self.take(ns, agent, req),
        }
    }

    fn take(&self, ns: &str, agent: &CogoAgent, req: &LeaseRequest) -> Vec<Reserved> {
        let name = agent.name_any();
        let Ok(mut leases) = self.leases.lock() else {
            return Vec::new();
        };
        let worker_lane = is_worker_lane(agent, req);
        let slots = req.slots as usize;
        let free = if worker_lane {
            slots
        } else {
            let cap =
                (agent.spec.replicas.max(0) as usize).saturating_mul(agent.spec.concurrency.max(1) as usize);
            let items = self.items_running_for(ns, &name);
            cap.saturating_sub(leases.running_for(ns, &name) + items)
                .min(slots)
        };
        if free == 0 {
            return Vec::new();
        }
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let room = match self.limits.running {
            0 => usize::MAX,
            limit => limit.saturating_sub(leases.running_in(ns) + self.items_running_in(ns)),
        };
        let names = queue.pop_for(ns, &name, agent.spec.role, (free, room), |t| req.wants(t));
        let now = Instant::now();
        // A task already held (being leased from an older queue entry) is not taken twice.
        let names: Vec<_> = names
            .into_iter()
            .map(|n| {
                let (obj, waited) = queue.take_object(ns, &n);
                if let Some(waited) = waited {
                    self.metrics.task_dispatched(waited);
                }
                (n, obj)
            })
            .filter(|(n, _)| !leases.contains(ns, n))
            .collect();
        for (n, _) in &names {
            // Attempt 0 is a reservation: it counts against the cap until the lease is written.
            leases.hold(ns, n, &name, &req.pod, 0, now);
            leases.set_counted(ns, n, !worker_lane);
        }
        self.metrics.set_tasks_queued(queue.len());
        self.metrics.set_tasks_running(leases.len());
        names
    }

    /// Gives back the reservation of `ns/name` (a lease not written); true when there was one.
    pub fn unreserve(&self, ns: &str, name: &str) -> bool {
        let at_limit = {
            let Ok(mut l) = self.leases.lock() else {
                return false;
            };
            if l.state(ns, name, 0, Instant::now()) == LeaseState::Unknown {
                return false;
            }
            l.release(ns, name);
            self.metrics.set_tasks_running(l.len());
            self.was_at_limit(&l, ns)
        };
        // The slot it held in its namespace is free again.
        if at_limit {
            self.wakeups.namespace(ns);
        }
        true
    }

    /// Whether `ns` ran its limit of tasks before the lease just released from `leases`.
    fn was_at_limit(&self, leases: &Leases, ns: &str) -> bool {
        self.limits.running > 0
            && leases.running_in(ns) + self.items_running_in(ns) + 1 >= self.limits.running
    }

    /// Records that `pod` of `agent` holds attempt `attempt` of `ns/name` from `now` (its lease
    /// was just written).
    pub fn hold(&self, ns: &str, name: &str, agent: &str, pod: &str, attempt: i32, now: Instant) {
        if let Ok(mut l) = self.leases.lock() {
            l.hold(ns, name, agent, pod, attempt, now);
            self.metrics.set_tasks_running(l.len());
        }
    }

    /// Starts the leases of `tasks`, just handed to `pod` of `agent` in `ns`, at `now`: a lease
    /// runs from the moment the pod is told, not from its write.
    pub fn hold_leased(&self, ns: &str, agent: &str, pod: &str, tasks: &[LeasedTask], now: Instant) {
        if let Ok(mut l) = self.leases.lock() {
            for t in tasks.iter().filter(|t| t.item.is_none()) {
                l.hold(ns, &t.name, agent, pod, t.attempt, now);
            }
            self.metrics.set_tasks_running(l.len());
        }
    }

    /// Records that the lease of `ns/name` (held already) is not written yet: its status says
    /// Pending until the lease is written, or until the attempt's outcome is written in its
    /// place (see [`crate::broker`]'s coalescing).
    pub fn lease_unwritten(&self, ns: &str, name: &str, lease: UnwrittenLease) {
        if let Ok(mut u) = self.unwritten.lock() {
            u.insert((ns.to_string(), name.to_string()), lease);
        }
    }

    /// Marks the outcome of `ns/name` as being written until the returned guard is dropped: an
    /// unwritten lease of the task then waits instead of being written beside it (both are
    /// fenced on the same resourceVersion, so one of the two would fail, and a lease written
    /// first makes the outcome's write fail and be made again).
    pub fn writing_outcome(&self, ns: &str, name: &str) -> OutcomeWriting<'_> {
        let key = (ns.to_string(), name.to_string());
        if let Ok(mut w) = self.outcomes_writing.lock() {
            w.insert(key.clone());
        }
        OutcomeWriting { scheduler: self, key }
    }

    /// Whether the outcome of `ns/name` is being written now.
    pub fn is_writing_outcome(&self, ns: &str, name: &str) -> bool {
        self.outcomes_writing
            .lock()
            .is_ok_and(|w| w.contains(&(ns.to_string(), name.to_string())))
    }

    /// The lease of `ns/name` that is held but not written yet, if any.
    pub fn unwritten(&self, ns: &str, name: &str) -> Option<UnwrittenLease> {
        self.unwritten
            .lock()
            .ok()
            .and_then(|u| u.get(&(ns.to_string(), name.to_string())).cloned())
    }

    /// Forgets that the lease of attempt `attempt` of `ns/name` is unwritten: the task's status
    /// now says what became of it (the lease, or the attempt's outcome, was written).
    pub fn lease_written(&self, ns: &str, name: &str, attempt: i32) {
        if let Ok(mut u) = self.unwritten.lock() {
            let key = (ns.to_string(), name.to_string());
            if u.get(&key).is_some_and(|l| l.attempt == attempt) {
                u.remove(&key);
            }
        }
    }

    /// Extends the lease of `pod` on attempt `attempt` of `ns/name` and returns its new expiry;
    /// None when no such lease is held here (see [`Leases::renew`]).
    pub fn renew(&self, ns: &str, name: &str, pod: &str, attempt: i32, now: Instant) -> Option<Instant> {
        self.leases
            .lock()
            .ok()
            .and_then(|mut l| l.renew(ns, name, pod, attempt, now))
    }

    /// Gives the running task `t` a fresh lease from `now` for the pod and attempt its status
    /// names: it was leased before this operator led, or its lease was released here while its
    /// pod still works on it. It counts against its agent unless it is an Executor's worker job
    /// (per `agents`). Returns when the lease runs out; None when the lease table is unusable.
    pub fn hold_running(&self, t: &AgentTask, agents: &Store<CogoAgent>, now: Instant) -> Option<Instant> {
        let counted = counts_against_agent(agents, &t.namespace().unwrap_or_default(), t);
        let mut l = self.leases.lock().ok()?;
        hold_from_status(&mut l, t, counted, now);
        self.metrics.set_tasks_running(l.len());
        Some(now + l.ttl())
    }

    /// Gives every Running task of `tasks` a fresh lease from `now` (see
    /// [`Scheduler::hold_running`]), as the operator starts to lead; returns how many there were.
    pub fn seed_running(&self, tasks: &[AgentTask], agents: &Store<CogoAgent>, now: Instant) -> usize {
        let Ok(mut l) = self.leases.lock() else {
            return 0;
        };
        let mut running = 0;
        for t in tasks.iter().filter(|t| is_running(t)) {
            let counted = counts_against_agent(agents, &t.namespace().unwrap_or_default(), t);
            hold_from_status(&mut l, t, counted, now);
            running += 1;
        }
        self.metrics.set_tasks_running(l.len());
        running
    }

    /// The state of the lease of attempt `attempt` of `ns/name` at `now`.
    pub fn lease_state(&self, ns: &str, name: &str, attempt: i32, now: Instant) -> LeaseState {
        self.leases
            .lock()
            .map(|l| l.state(ns, name, attempt, now))
            .unwrap_or(LeaseState::Unknown)
    }

    /// Whether a lease (or reservation) of `ns/name` is held.
    pub fn is_leased(&self, ns: &str, name: &str) -> bool {
        self.leases.lock().is_ok_and(|l| l.contains(ns, name))
    }

    /// Forgets the lease of `ns/name` (its outcome is recorded, or the task is gone) and, when
    /// one was held, wakes the lease requests of its agent waiting for a free slot (of every
    /// agent of the namespace, when the namespace ran its limit of tasks).
    pub fn release(&self, ns: &str, name: &str) {
        self.attempts.close(ns, name);
        if let Ok(mut u) = self.unwritten.lock() {
            u.remove(&(ns.to_string(), name.to_string()));
        }
        let released = self.leases.lock().ok().and_then(|mut l| {
            let lease = l.release(ns, name);
            self.metrics.set_tasks_running(l.len());
            lease.map(|lease| (lease, self.was_at_limit(&l, ns)))
        });
        match released {
            // The namespace was at its limit: any of its agents may now take a task.
            Some((_, true)) => self.wakeups.namespace(ns),
            Some((lease, false)) => self.wakeups.agent(ns, &lease.agent),
            None => {}
        }
    }

    /// Drops the leases and reservations the tasks as cached in `tasks` no longer have (see
    /// [`Leases::heal`]), freeing their slots, and wakes every waiting lease request when it
    /// dropped any; unqueues the tasks `tasks` no longer holds (deleted while they waited).
    /// Returns what was dropped and unqueued.
    pub fn heal(&self, tasks: &Store<AgentTask>, now: Instant) -> Vec<(String, String)> {
        let dropped = self
            .leases
            .lock()
            .map(|mut l| {
                let dropped = l.heal(now, |ns, name| {
                    tasks.get(&ObjectRef::new(name).within(ns)).map(|t| {
                        let s = t.status.as_ref();
                        let phase = s.and_then(|s| s.phase);
                        (
                            phase.is_some_and(|p| p.is_terminal()),
                            s.map(|s| s.attempt).unwrap_or_default(),
                            phase == Some(TaskPhase::Running),
                        )
                    })
                });
                self.metrics.set_tasks_running(l.len());
                dropped
            })
            .unwrap_or_default();
        if !dropped.is_empty() {
            self.wakeups.all();
        }
        for (ns, name) in &dropped {
            self.attempts.close(ns, name);
        }
        if let Ok(mut u) = self.unwritten.lock() {
            for key in &dropped {
                u.remove(key);
            }
        }
        if let Ok(mut o) = self.outcomes.lock() {
            o.retain(|(ns, name), (uid, _)| {
                tasks
                    .get(&ObjectRef::new(name).within(ns))
                    .is_some_and(|t| t.uid().as_deref() == Some(uid.as_str()))
            });
        }
        // So are the items of a task deleted while they ran.
        if let Ok(mut boards) = self.boards.lock() {
            boards.retain(|(ns, name), board| {
                tasks
                    .get(&ObjectRef::new(name).within(ns))
                    .is_some_and(|t| t.metadata.deletion_timestamp.is_none() && t.uid() == board.task.uid())
            });
        }
        // A task deleted while it waited is never reconciled again: its entry goes here.
        let unqueued = self
            .queue
            .lock()
            .map(|mut q| {
                let gone = q.retain(|ns, name| {
                    tasks
                        .get(&ObjectRef::new(name).within(ns))
                        .is_some_and(|t| t.metadata.deletion_timestamp.is_none())
                });
                self.metrics.set_tasks_queued(q.len());
                gone
            })
            .unwrap_or_default();
        dropped.into_iter().chain(unqueued).collect()
    }

    /// Keeps `report`, the newest of a pod of the Executor `executor` in `ns`.
    pub fn record_workers(&self, ns: &str, executor: &str, report: WorkerReport) {
        if let Ok(mut w) = self.workers.lock() {
            w.record(ns, executor, report, Instant::now());
        }
    }

    /// What the Executors of `ns` report now of the pods of the CogoWorker `worker`.
    pub fn worker_stats(&self, ns: &str, worker: &str) -> WorkerStats {
        self.workers
            .lock()
            .map(|w| w.stats(ns, worker, Instant::now()))
            .unwrap_or_default()
    }

    /// Whether the Executor `executor` of `ns` (any Executor of `ns` when None) can run a job
    /// of `kind` now; None when the reports cannot be read.
    pub fn worker_availability(
        &self,
        ns: &str,
        executor: Option<&str>,
        kind: WorkerKind,
    ) -> Option<Availability> {
        self.workers
            .lock()
            .ok()
            .map(|w| w.availability(ns, executor, kind, Instant::now()))
    }
}

/// Tasks a lease request reserved and has not settled yet; dropped unsettled (the request was
/// dropped mid-lease), it gives their reservations back and queues them again. A task whose
/// lease was written keeps it: its pod never heard of it, so its lease runs out and the task is
/// retried by its policy.
pub struct Reservation<'a> {
    scheduler: &'a Scheduler,
    agents: &'a Store<CogoAgent>,
    ns: &'a str,
    tasks: Vec<Reserved>,
}

impl Reservation<'_> {
    /// The reserved tasks.
    pub fn tasks(&self) -> &[Reserved] {
        &self.tasks
    }

    /// Ends the reservation: the request wrote each lease or gave each back itself.
    pub fn settle(mut self) {
        self.tasks.clear();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for (name, task) in self.tasks.drain(..) {
            if self.scheduler.unreserve(self.ns, &name)
                && let Some(task) = task
            {
                self.scheduler.requeue(&task, self.agents);
            }
        }
    }
}

/// The attempt `task`'s status records (0 before its first lease).
fn attempt_of(task: &AgentTask) -> i32 {
    task.status.as_ref().map_or(0, |s| s.attempt)
}

/// Whether a running task counts against its agent's `replicas x concurrency`: an Executor's
/// worker jobs count against its workers' capacity instead.
pub fn counts_against_agent(agents: &Store<CogoAgent>, ns: &str, t: &AgentTask) -> bool {
    let agent = t
        .status
        .as_ref()
        .and_then(|s| s.agent.as_deref())
        .unwrap_or_default();
    let executor = agents
        .get(&ObjectRef::new(agent).within(ns))
        .is_some_and(|a| a.spec.role == AgentRole::Executor);
    !(executor && WorkerKind::for_task_type(&t.spec.task_type).is_some())
}

/// Whether a lease request is an Executor's request for its workers' task types only.
fn is_worker_lane(agent: &CogoAgent, req: &LeaseRequest) -> bool {
    agent.spec.role == AgentRole::Executor
        && !req.type_prefixes.is_empty()
        && req
            .type_prefixes
            .iter()
            .all(|p| WorkerKind::for_task_type(p).is_some())
}

fn is_running(t: &AgentTask) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.phase == Some(cogo_api::TaskPhase::Running))
}

/// Holds the lease of the running task `t` for the agent, pod and attempt its status names.
fn hold_from_status(l: &mut Leases, t: &AgentTask, counted: bool, now: Instant) {
    let s = t.status.clone().unwrap_or_default();
    let (ns, name) = (t.namespace().unwrap_or_default(), t.name_any());
    let (agent, pod) = (s.agent.unwrap_or_default(), s.pod.unwrap_or_default());
    l.hold(&ns, &name, &agent, &pod, s.attempt, now);
    l.set_counted(&ns, &name, counted);
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    use super::*;

    fn agent(name: &str, spec: serde_json::Value) -> CogoAgent {
        let mut a = CogoAgent::new(name, serde_json::from_value(spec).unwrap());
        a.metadata.namespace = Some("ns".into());
        a
    }

    fn task(name: &str, created: &str) -> Arc<AgentTask> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                "spec": {"agent": "a", "type": "cogo.echo"},
            }))
            .unwrap(),
        )
    }

    fn lease_request(slots: u32) -> LeaseRequest {
        serde_json::from_value(json!({"pod": "p", "slots": slots})).unwrap()
    }

    fn gauges(m: &Metrics) -> (bool, bool) {
        let text = m.encode();
        (
            text.contains("cogo_operator_tasks_queued 0"),
            text.contains("cogo_operator_tasks_running 0"),
        )
    }

    #[test]
    fn a_reservation_takes_no_more_than_the_agent_has_free_and_keeps_the_gauges_current() {
        let metrics = Arc::new(Metrics::default());
        let s = Scheduler::new(Duration::from_secs(15), metrics.clone());
        let (agents, _) = reflector::store();
        let a = agent("a", json!({"role": "Research", "replicas": 1, "concurrency": 2}));
        for (name, created) in [
            ("t1", "2026-01-01T00:00:01Z"),
            ("t2", "2026-01-01T00:00:02Z"),
            ("t3", "2026-01-01T00:00:03Z"),
        ] {
            s.enqueue(
                "ns",
                name,
                Target::Agent("a".into()),
                task(name, created),
                &agents,
            );
        }
        assert!(metrics.encode().contains("cogo_operator_tasks_queued 3"));
        s.hold("ns", "elsewhere", "a", "p", 1, Instant::now());
        let reserved = s.reserve("ns", &a, &lease_request(5), &agents);
        let names: Vec<_> = reserved.tasks().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["t1"], "two slots, one held already");
        assert!(reserved.tasks()[0].1.is_some(), "the queued object comes along");
        reserved.settle();
        assert!(s.is_leased("ns", "t1") && !s.is_queued("ns", "t1"));
        let text = metrics.encode();
        assert!(
            text.contains("cogo_operator_tasks_queued 2") && text.contains("cogo_operator_tasks_running 2"),
            "{text}"
        );
        s.release("ns", "t1");
        s.release("ns", "elsewhere");
        s.dequeue("ns", "t2");
        s.dequeue("ns", "t3");
        assert_eq!(gauges(&metrics), (true, true));
    }

    #[test]
    fn a_namespace_at_its_running_limit_leases_only_the_broker_s_sub_tasks_and_wakes_all_its_agents_when_one_ends()
     {
        let keys = crate::tokens::auth::Keys {
            current: crate::tokens::auth::Key {
                id: "k".into(),
                secret: vec![1; 32],
            },
            previous: vec![],
        };
        let limits = NamespaceLimits {
            queued: 0,
            running: 2,
        };
        let s = Scheduler::new(Duration::from_secs(15), Default::default()).with_limits(limits);
        s.vouch_subtasks_with(keys.clone());
        let (agents, _) = reflector::store();
        let a = agent("a", json!({"role": "Research", "replicas": 1, "concurrency": 10}));
        let mut sub = task("sub", "2026-01-01T00:00:03Z").as_ref().clone();
        sub.spec.parent = Some("wf".into());
        let mut forged = sub.clone();
        forged.metadata.name = Some("forged".into());
        crate::seal::seal_subtask(&keys, &mut sub);
        for t in [
            task("t1", "2026-01-01T00:00:01Z"),
            task("t2", "2026-01-01T00:00:02Z"),
            Arc::new(sub),
            Arc::new(forged),
        ] {
            let name = t.metadata.name.clone().unwrap();
            s.enqueue("ns", &name, Target::Agent("a".into()), t, &agents);
        }
        s.hold("ns", "running", "a", "p", 1, Instant::now());
        let reserved = s.reserve("ns", &a, &lease_request(10), &agents);
        let names: Vec<_> = reserved.tasks().iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            ["t1", "sub"],
            "one slot of two is free; the broker's sub-task passes"
        );
        reserved.settle();
        // At the limit: a lease request waits, and the end of any task of the namespace wakes it.
        let woken = s.wakeup("ns", "b");
        let waiting = woken.notified();
        futures::pin_mut!(waiting);
        assert!(futures::FutureExt::now_or_never(waiting.as_mut()).is_none());
        waiting.as_mut().enable();
        s.release("ns", "running");
        assert!(
            futures::FutureExt::now_or_never(waiting).is_some(),
            "agent b of the namespace is woken"
        );
        assert!(
            s.reserve("ns", &a, &lease_request(10), &agents)
                .tasks()
                .is_empty(),
            "t1 and sub still run"
        );
        s.release("ns", "sub");
        let next = s.reserve("ns", &a, &lease_request(10), &agents);
        let names: Vec<_> = next.tasks().iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            ["t2"],
            "a task whose spec.parent the broker did not vouch for waits its turn"
        );
    }

    #[test]
    fn an_unwritten_lease_is_forgotten_when_written_released_or_healed() {
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let lease = |attempt| UnwrittenLease {
            agent: "a".into(),
            pod: "p".into(),
            attempt,
            at: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        s.hold("ns", "t", "a", "p", 2, Instant::now());
        s.lease_unwritten("ns", "t", lease(2));
        s.lease_written("ns", "t", 1);
        assert_eq!(
            s.unwritten("ns", "t"),
            Some(lease(2)),
            "another attempt's write changes nothing"
        );
        s.lease_written("ns", "t", 2);
        assert_eq!(s.unwritten("ns", "t"), None);

        s.lease_unwritten("ns", "t", lease(2));
        s.release("ns", "t");
        assert_eq!(s.unwritten("ns", "t"), None, "released with its lease");

        let (tasks, _) = reflector::store::<AgentTask>();
        s.hold("ns", "gone", "a", "p", 1, Instant::now());
        s.lease_unwritten("ns", "gone", lease(1));
        assert_eq!(
            s.heal(&tasks, Instant::now()),
            [("ns".to_string(), "gone".to_string())]
        );
        assert_eq!(s.unwritten("ns", "gone"), None, "healed with its lease");
    }

    #[test]
    fn items_take_agents_slots_and_count_against_the_namespace_running_limit() {
        let limits = NamespaceLimits {
            queued: 0,
            running: 3,
        };
        let s = Scheduler::new(Duration::from_secs(15), Default::default()).with_limits(limits);
        let (agents, _) = reflector::store();
        let a = agent("a", json!({"role": "Research", "replicas": 1, "concurrency": 10}));
        let t: AgentTask = serde_json::from_value(json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "many", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"agent": "a", "type": "cogo.echo", "items": {"count": 5}},
        }))
        .unwrap();
        let board = board_of(&t);
        assert!(s.lay_out("ns", "many", board, &agents));
        s.hold("ns", "running", "a", "p", 1, Instant::now());
        let items = s.take_items("ns", &a, &lease_request(10), 0);
        assert_eq!(items.len(), 2, "three may run in the namespace, and a task runs");
        let (waiting, running) = s.queue_of("ns", "a", AgentRole::Research);
        assert_eq!((waiting.count, running), (3, 3), "the scaler sees the items");
        s.enqueue(
            "ns",
            "t1",
            Target::Agent("a".into()),
            task("t1", "2026-01-01T00:00:01Z"),
            &agents,
        );
        assert!(
            s.reserve("ns", &a, &lease_request(10), &agents)
                .tasks()
                .is_empty(),
            "the items fill the namespace's limit"
        );
        let done = s.complete_item(
            ("ns", "many", items[0].1),
            ("p", 1),
            (cogo_api::broker::Outcome::Succeeded, false, None),
        );
        assert_eq!(done, Some(Ok(super::super::items::ItemEnd::Succeeded)));
        let next = s.reserve("ns", &a, &lease_request(10), &agents);
        assert_eq!(next.tasks().len(), 1, "an item ended: room for the task");
        next.settle();

        // Without a namespace limit, the agent's slots bound them: 10, two held by tasks.
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let board = board_of(&t);
        s.lay_out("ns", "many", board, &agents);
        let small = agent("a", json!({"role": "Research", "replicas": 1, "concurrency": 4}));
        s.hold("ns", "x", "a", "p", 1, Instant::now());
        assert_eq!(s.take_items("ns", &small, &lease_request(10), 0).len(), 3);
        assert_eq!(
            s.take_items("ns", &small, &lease_request(10), 0).len(),
            0,
            "the agent's four slots are full"
        );
        s.drop_board("ns", "many");
        assert_eq!(
            s.queue_of("ns", "a", AgentRole::Research).1,
            1,
            "the items' slots are free"
        );
    }

    #[test]
    fn items_of_a_worker_task_type_wait_as_jobs_of_their_kind_and_go_to_its_lane() {
        use super::super::{items::Board, transition::Policy};
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let (agents, _) = reflector::store();
        let executor = agent(
            "executor",
            json!({"role": "Executor", "replicas": 1, "concurrency": 10}),
        );
        let t: AgentTask = serde_json::from_value(json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "pages", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"role": "Executor", "type": "python.execute", "items": {"count": 4},
                     "input": {"code": "print({{index}})"}},
        }))
        .unwrap();
        let board = Board::new(
            Arc::new(t.clone()),
            Target::Role(AgentRole::Executor),
            Policy::of(&t, None),
            (&[], &[]),
        );
        s.lay_out("ns", "pages", board, &agents);
        let waiting = |s: &Scheduler, kind| s.jobs_of("ns", "python", kind).0;
        assert_eq!(
            waiting(&s, WorkerKind::PythonSandbox).count,
            4,
            "the worker scaler sees the items"
        );
        assert_eq!(waiting(&s, WorkerKind::PythonSandbox).oldest, Some(1_767_225_600));
        assert_eq!(waiting(&s, WorkerKind::Browser).count, 0);
        // The Executor's browser lane does not take them; its python lane takes as many as
        // it has free slots.
        let lane = |prefix: &str, slots: u32| -> LeaseRequest {
            serde_json::from_value(json!({"pod": "p", "slots": slots, "typePrefixes": [prefix]})).unwrap()
        };
        assert!(s.take_items("ns", &executor, &lane("browser.", 2), 0).is_empty());
        let taken = s.take_items("ns", &executor, &lane("python.", 3), 0);
        assert_eq!(taken.len(), 3);
        assert_eq!(waiting(&s, WorkerKind::PythonSandbox).count, 1);
    }

    #[test]
    fn a_view_older_than_an_outcome_written_is_not_queued() {
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let (agents, _) = reflector::store();
        let stale = with_uid(&task("t", "2026-01-01T00:00:00Z"), "u-1");
        s.outcome_written(&stale, 1);
        s.enqueue("ns", "t", Target::Agent("a".into()), stale.clone(), &agents);
        assert!(
            !s.is_queued("ns", "t"),
            "the cache's view predates attempt 1's outcome"
        );
        s.caught_up(&stale);
        s.enqueue("ns", "t", Target::Agent("a".into()), stale.clone(), &agents);
        assert!(!s.is_queued("ns", "t"), "an older view does not catch up");
        let mut retried = stale.as_ref().clone();
        retried.status = Some(cogo_api::AgentTaskStatus {
            phase: Some(TaskPhase::Pending),
            attempt: 1,
            ..Default::default()
        });
        let retried = Arc::new(retried);
        s.enqueue("ns", "t", Target::Agent("a".into()), retried.clone(), &agents);
        assert!(
            s.is_queued("ns", "t"),
            "a view at the attempt written is queued (a retry)"
        );
        s.caught_up(&retried);
        s.dequeue("ns", "t");
        s.enqueue("ns", "t", Target::Agent("a".into()), stale, &agents);
        assert!(s.is_queued("ns", "t"), "forgotten once the cache caught up");
    }

    #[test]
    fn a_task_created_again_under_the_name_of_one_that_ended_is_queued() {
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let (agents, _) = reflector::store();
        let (tasks, mut writer) = reflector::store();
        let ended = with_uid(&task("t", "2026-01-01T00:00:00Z"), "u-1");
        s.outcome_written(&ended, 1);
        // Deleted before the cache showed its outcome; a new object takes the name.
        let again = with_uid(&task("t", "2026-01-01T00:01:00Z"), "u-2");
        writer.apply_watcher_event(&watcher::Event::Apply(again.as_ref().clone()));
        s.heal(&tasks, Instant::now());
        s.enqueue("ns", "t", Target::Agent("a".into()), again.clone(), &agents);
        assert!(
            s.is_queued("ns", "t"),
            "another object's outcome holds nothing back"
        );
        s.dequeue("ns", "t");

        // The record of the old object stays until the new one is seen, then goes.
        s.outcome_written(&ended, 1);
        s.enqueue("ns", "t", Target::Agent("a".into()), again.clone(), &agents);
        assert!(s.is_queued("ns", "t"));
        s.caught_up(&again);
        assert!(
            s.outcomes.lock().unwrap().is_empty(),
            "the old object's record is dropped"
        );

        // An indexed task's items belong to the object that laid them out.
        let indexed = |uid: &str| -> AgentTask {
            serde_json::from_value(json!({
                "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": "many", "namespace": "ns", "uid": uid,
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"agent": "a", "type": "cogo.echo", "items": {"count": 5}},
            }))
            .unwrap()
        };
        let a = agent("a", json!({"role": "Research", "replicas": 1, "concurrency": 10}));
        let old = indexed("u-1");
        let board = board_of(&old);
        s.lay_out("ns", "many", board, &agents);
        assert_eq!(s.take_items("ns", &a, &lease_request(2), 0).len(), 2);
        s.forget_other_objects(&old);
        assert!(s.has_board("ns", "many"), "its own object keeps its items");
        s.forget_other_objects(&indexed("u-2"));
        assert!(
            !s.has_board("ns", "many"),
            "a new object under the name lays out its own"
        );
        assert_eq!(
            s.queue_of("ns", "a", AgentRole::Research).1,
            0,
            "the old items' slots are free"
        );

        // So does the healer, against the cache.
        let board = board_of(&old);
        s.lay_out("ns", "many", board, &agents);
        writer.apply_watcher_event(&watcher::Event::Apply(indexed("u-2")));
        s.heal(&tasks, Instant::now());
        assert!(!s.has_board("ns", "many"));
    }

    /// A fresh board of `t`'s items for the agent `a`.
    fn board_of(t: &AgentTask) -> super::super::items::Board {
        use super::super::{items::Board, transition::Policy};
        Board::new(
            Arc::new(t.clone()),
            Target::Agent("a".into()),
            Policy::of(t, None),
            (&[], &[]),
        )
    }

    fn with_uid(t: &Arc<AgentTask>, uid: &str) -> Arc<AgentTask> {
        let mut t = t.as_ref().clone();
        t.metadata.uid = Some(uid.into());
        Arc::new(t)
    }

    #[test]
    fn finished_tasks_are_counted_per_agent() {
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        s.count_finished("ns", "a", TaskPhase::Succeeded, Some(1.5));
        s.count_finished("ns", "a", TaskPhase::Failed, None);
        s.count_finished("other", "a", TaskPhase::Failed, Some(2.0));
        assert_eq!(
            s.finished_of("ns", "a"),
            Finished {
                succeeded: 1,
                failed: 1,
                duration_ms: 1500,
                timed: 1
            }
        );
        assert_eq!(s.finished_of("ns", "b"), Finished::default());
    }

    #[test]
    fn healing_unqueues_tasks_deleted_while_they_waited_and_counts_the_rest() {
        let metrics = Arc::new(Metrics::default());
        let s = Scheduler::new(Duration::from_secs(15), metrics.clone());
        let (agents, _) = reflector::store();
        let (tasks, mut writer) = reflector::store::<AgentTask>();
        for name in ["kept", "deleted", "going"] {
            let t = task(name, "2026-01-01T00:00:00Z");
            s.enqueue("ns", name, Target::Agent("a".into()), t.clone(), &agents);
            if name != "deleted" {
                let mut t = t.as_ref().clone();
                if name == "going" {
                    t.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
                }
                writer.apply_watcher_event(&watcher::Event::Apply(t));
            }
        }
        assert_eq!(s.queue_of("ns", "a", AgentRole::Research).0.count, 3);
        let mut gone = s.heal(&tasks, Instant::now());
        gone.sort();
        assert_eq!(
            gone,
            [
                ("ns".to_string(), "deleted".to_string()),
                ("ns".into(), "going".into())
            ]
        );
        assert_eq!(s.queue_of("ns", "a", AgentRole::Research).0.count, 1);
        assert!(s.is_queued("ns", "kept"));
        assert!(metrics.encode().contains("cogo_operator_tasks_queued 1"));
    }

    #[test]
    fn a_dropped_reservation_gives_its_tasks_back_and_a_written_lease_stays() {
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let (agents, mut writer) = reflector::store();
        let a = agent("a", json!({"role": "Research", "replicas": 1, "concurrency": 4}));
        writer.apply_watcher_event(&watcher::Event::Apply(a.clone()));
        for name in ["t1", "t2"] {
            s.enqueue(
                "ns",
                name,
                Target::Agent("a".into()),
                task(name, "2026-01-01T00:00:00Z"),
                &agents,
            );
        }
        let reserved = s.reserve("ns", &a, &lease_request(2), &agents);
        assert_eq!(reserved.tasks().len(), 2);
        // t1's lease was written before the request was dropped.
        s.hold("ns", "t1", "a", "p", 1, Instant::now());
        drop(reserved);
        assert!(s.is_leased("ns", "t1") && !s.is_queued("ns", "t1"));
        assert!(
            !s.is_leased("ns", "t2") && s.is_queued("ns", "t2"),
            "the reservation was given back and the task queued again"
        );
        assert!(!s.unreserve("ns", "t2"), "nothing left to give back");
    }

    #[test]
    fn a_task_being_leased_is_not_queued_again_from_an_older_view() {
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let (agents, _) = reflector::store();
        s.hold("ns", "t", "a", "p", 0, Instant::now());
        s.enqueue(
            "ns",
            "t",
            Target::Agent("a".into()),
            task("t", "2026-01-01T00:00:00Z"),
            &agents,
        );
        assert!(!s.is_queued("ns", "t"));
        assert!(s.defer_first_write("ns", "t"));
        assert!(!s.defer_first_write("ns", "t"), "only the first time");
        s.dequeue("ns", "t");
        assert!(s.defer_first_write("ns", "t"), "forgotten with the queue entry");
    }

    #[test]
    fn running_tasks_are_seeded_with_a_fresh_lease_and_worker_jobs_are_not_counted() {
        let s = Scheduler::new(Duration::from_secs(15), Default::default());
        let (agents, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(agent("exec", json!({"role": "Executor"}))));
        let running = |name: &str, task_type: &str| -> AgentTask {
            serde_json::from_value(json!({
                "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"agent": "exec", "type": task_type},
                "status": {"phase": "Running", "agent": "exec", "pod": "p", "attempt": 2},
            }))
            .unwrap()
        };
        let mut pending = running("waiting", "cogo.echo");
        pending.status = None;
        let t0 = Instant::now();
        let tasks = [
            running("own", "cogo.echo"),
            running("job", "python.execute"),
            pending,
        ];
        assert_eq!(s.seed_running(&tasks, &agents, t0), 2);
        assert_eq!(
            s.lease_state("ns", "job", 2, t0),
            LeaseState::Held(t0 + Duration::from_secs(15))
        );
        assert!(!s.is_leased("ns", "waiting"));
        let exec = agent(
            "exec",
            json!({"role": "Executor", "replicas": 1, "concurrency": 2}),
        );
        s.enqueue(
            "ns",
            "next",
            Target::Agent("exec".into()),
            task("next", "2026-01-01T00:00:00Z"),
            &agents,
        );
        assert_eq!(
            s.reserve("ns", &exec, &lease_request(5), &agents).tasks().len(),
            1,
            "the worker job does not take one of the two slots"
        );
    }
}
