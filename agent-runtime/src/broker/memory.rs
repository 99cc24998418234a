//! A broker in memory: tasks submitted to it are leased, heartbeated and completed as with the
//! operator's broker (type filters, cancellation, sub-tasks, worker reports and keys), with no
//! cluster. The pull loop and the roles are tested against it.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::Mutex,
    time::Duration,
};

use cogo_api::{
    TaskPhase,
    broker::{
        CompleteRequest, LeaseRequest, LeasedTask, Outcome, SubtaskRequest, TaskView, WorkerKeySet,
        WorkerReport,
    },
};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;

use super::{BrokerApi, CallError};

#[derive(Default)]
struct State {
    queued: VecDeque<LeasedTask>,
    all: BTreeMap<String, LeasedTask>,
    outcomes: BTreeMap<String, CompleteRequest>,
    cancelled: HashSet<String>,
    leases: Vec<LeaseRequest>,
    heartbeats: BTreeMap<String, u32>,
    parents: BTreeMap<String, String>,
    progress: BTreeMap<String, String>,
    creates: Vec<String>,
    reports: Vec<WorkerReport>,
    keys: WorkerKeySet,
    failing_completes: u32,
    max_result_bytes: Option<usize>,
    max_subtasks: Option<usize>,
}

/// An in-memory broker for one pod.
pub struct MemoryBroker {
    pod: String,
    heartbeat_seconds: u32,
    state: Mutex<State>,
    changed: Notify,
}

impl MemoryBroker {
    /// A broker whose tasks ask for a heartbeat every `heartbeat_seconds`.
    pub fn new(pod: &str, heartbeat_seconds: u32) -> Self {
        MemoryBroker {
            pod: pod.into(),
            heartbeat_seconds,
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a task of `task_type` with `input`, due in ten minutes.
    pub fn submit(&self, name: &str, task_type: &str, input: Value) {
        self.submit_due(
            name,
            task_type,
            input,
            jiff::Timestamp::now() + jiff::SignedDuration::from_mins(10),
        );
    }

    /// Queues a task of `task_type` with `input`, due at `deadline`.
    pub fn submit_due(&self, name: &str, task_type: &str, input: Value, deadline: jiff::Timestamp) {
        let task = LeasedTask {
            namespace: "memory".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            task_type: task_type.into(),
            input,
            attempt: 1,
            heartbeat_seconds: self.heartbeat_seconds,
            deadline: deadline.to_string(),
            traceparent: None,
            item: None,
        };
        let mut s = self.state();
        s.all.insert(name.into(), task.clone());
        s.queued.push_back(task);
        drop(s);
        self.changed.notify_waiters();
    }

    /// Cancels a task: its next heartbeat says so.
    pub fn cancel(&self, name: &str) {
        self.state().cancelled.insert(name.into());
    }

    /// The outcome reported for `name`, waiting up to `timeout` for it.
    pub async fn outcome(&self, name: &str, timeout: Duration) -> Option<CompleteRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(o) = self.state().outcomes.get(name).cloned() {
                return Some(o);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Every lease request made, in order.
    pub fn lease_requests(&self) -> Vec<LeaseRequest> {
        self.state().leases.clone()
    }

    /// How many heartbeats `name` got.
    pub fn heartbeats(&self, name: &str) -> u32 {
        self.state().heartbeats.get(name).copied().unwrap_or_default()
    }

    /// The latest progress `name` reported with a heartbeat.
    pub fn progress(&self, name: &str) -> Option<String> {
        self.state().progress.get(name).cloned()
    }

    /// The names of every sub-task creation asked for (also of those that existed), in order.
    pub fn subtask_creates(&self) -> Vec<String> {
        self.state().creates.clone()
    }

    /// Deletes a task: reading it answers 404 from now on, and so do its heartbeats.
    pub fn delete(&self, name: &str) {
        let mut s = self.state();
        s.all.remove(name);
        s.queued.retain(|t| t.name != name);
        s.outcomes.remove(name);
    }

    /// The sub-tasks of `parent`, by name.
    pub fn subtasks_of(&self, parent: &str) -> Vec<String> {
        let s = self.state();
        s.parents
            .iter()
            .filter(|(_, p)| *p == parent)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Tasks still queued.
    pub fn queued(&self) -> Vec<String> {
        self.state().queued.iter().map(|t| t.name.clone()).collect()
    }

    /// Every worker report received.
    pub fn reports(&self) -> Vec<WorkerReport> {
        self.state().reports.clone()
    }

    /// Makes the next `n` completions fail as if the broker were unreachable.
    pub fn fail_completes(&self, n: u32) {
        self.state().failing_completes = n;
    }

    /// Refuses completions whose result is larger than `bytes` (413), as a broker whose body
    /// limit they pass does.
    pub fn refuse_results_over(&self, bytes: usize) {
        self.state().max_result_bytes = Some(bytes);
    }

    /// Refuses sub-tasks past `n` in all (422 `TooManySubtasks`), as the broker's limits do.
    pub fn limit_subtasks(&self, n: usize) {
        self.state().max_subtasks = Some(n);
    }

    /// Sets the worker keys the broker publishes.
    pub fn set_worker_keys(&self, keys: WorkerKeySet) {
        self.state().keys = keys;
    }

    fn take(&self, req: &LeaseRequest) -> Vec<LeasedTask> {
        let mut s = self.state();
        let mut taken = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(t) = s.queued.pop_front() {
            if taken.len() < req.slots as usize && req.wants(&t.task_type) {
                taken.push(t);
            } else {
                kept.push_back(t);
            }
        }
        s.queued = kept;
        taken
    }
}

fn not_found(name: &str) -> CallError {
    CallError::Refused(
        404,
        cogo_api::broker::ErrorBody {
            code: "TaskNotFound".into(),
            message: format!("no task {name}"),
        },
    )
}

impl BrokerApi for MemoryBroker {
    fn pod(&self) -> &str {
        &self.pod
    }

    fn lease(&self, mut req: LeaseRequest) -> BoxFuture<'_, Result<Vec<LeasedTask>, CallError>> {
        Box::pin(async move {
            req.pod = self.pod.clone();
            self.state().leases.push(req.clone());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds.into());
            loop {
                let notified = self.changed.notified();
                let tasks = self.take(&req);
                if !tasks.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(tasks);
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        })
    }

    fn heartbeat<'a>(
        &'a self,
        task: &'a LeasedTask,
        progress: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        Box::pin(async move {
            let mut s = self.state();
            if !s.all.contains_key(&task.name) {
                return Err(not_found(&task.name));
            }
            *s.heartbeats.entry(task.name.clone()).or_default() += 1;
            if let Some(p) = progress {
                s.progress.insert(task.name.clone(), p.to_string());
            }
            Ok(s.cancelled.contains(&task.name))
        })
    }

    fn complete<'a>(
        &'a self,
        task: &'a LeasedTask,
        req: &'a CompleteRequest,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let mut s = self.state();
            if s.failing_completes > 0 {
                s.failing_completes -= 1;
                return Err(CallError::Transport(
                    "connection refused (the broker is away)".into(),
                ));
            }
            let size = req.result.as_ref().map_or(0, |r| r.to_string().len());
            if let Some(max) = s.max_result_bytes
                && size > max
            {
                let body = cogo_api::broker::ErrorBody {
                    code: "RequestTooLarge".into(),
                    message: format!("the body is over {max} bytes"),
                };
                return Err(CallError::Refused(413, body));
            }
            s.outcomes.insert(task.name.clone(), req.clone());
            drop(s);
            self.changed.notify_waiters();
            Ok(())
        })
    }

    fn create_subtask<'a>(
        &'a self,
        parent: &'a LeasedTask,
        req: &'a SubtaskRequest,
    ) -> BoxFuture<'a, Result<TaskView, CallError>> {
        Box::pin(async move {
            let name = req.name.clone().unwrap_or_else(|| format!("{}-sub", parent.name));
            self.state().creates.push(name.clone());
            let (exists, made, max) = {
                let s = self.state();
                (s.all.contains_key(&name), s.parents.len(), s.max_subtasks)
            };
            if !exists && max.is_some_and(|m| made >= m) {
                let body = cogo_api::broker::ErrorBody {
                    code: "TooManySubtasks".into(),
                    message: format!("{} has {made} sub-tasks, the most one task may have", parent.name),
                };
                return Err(CallError::Refused(422, body));
            }
            if !exists {
                self.submit(&name, &req.task_type, req.input.clone().unwrap_or(Value::Null));
                self.state().parents.insert(name.clone(), parent.name.clone());
            }
            self.get_task(&name).await
        })
    }

    fn cancel_subtask<'a>(
        &'a self,
        parent: &'a LeasedTask,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let mut s = self.state();
            if s.parents.get(name) != Some(&parent.name) {
                return Err(not_found(name));
            }
            let before = s.queued.len();
            s.queued.retain(|t| t.name != name);
            if s.queued.len() < before {
                // Never leased: it ends now.
                let cancelled = CompleteRequest {
                    pod: self.pod.clone(),
                    attempt: 0,
                    outcome: Outcome::Cancelled,
                    result: None,
                    error: Some("cancelled before it started".into()),
                    retryable: false,
                    item: None,
                };
                s.outcomes.insert(name.to_string(), cancelled);
            } else {
                s.cancelled.insert(name.to_string());
            }
            drop(s);
            self.changed.notify_waiters();
            Ok(())
        })
    }

    fn get_task<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<TaskView, CallError>> {
        Box::pin(async move {
            let s = self.state();
            let task = s.all.get(name).ok_or_else(|| not_found(name))?;
            let outcome = s.outcomes.get(name);
            let phase = match outcome.map(|o| o.outcome) {
                Some(Outcome::Succeeded) => TaskPhase::Succeeded,
                Some(Outcome::Failed) => TaskPhase::Failed,
                Some(Outcome::Cancelled) => TaskPhase::Cancelled,
                None if s.queued.iter().any(|t| t.name == name) => TaskPhase::Pending,
                None => TaskPhase::Running,
            };
            Ok(TaskView {
                namespace: task.namespace.clone(),
                name: task.name.clone(),
                uid: task.uid.clone(),
                task_type: task.task_type.clone(),
                parent: s.parents.get(name).cloned(),
                input: Some(task.input.clone()),
                phase,
                attempt: task.attempt,
                result: outcome.and_then(|o| o.result.clone()),
                result_ref: None,
                message: outcome.and_then(|o| o.error.clone()),
            })
        })
    }

    fn report_workers<'a>(&'a self, report: &'a WorkerReport) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            self.state().reports.push(report.clone());
            self.changed.notify_waiters();
            Ok(())
        })
    }

    fn worker_keys(&self) -> BoxFuture<'_, Result<WorkerKeySet, CallError>> {
        Box::pin(async move { Ok(self.state().keys.clone()) })
    }
}
