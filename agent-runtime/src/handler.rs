//! Task handlers, keyed by task type: what a handler is given ([`TaskContext`]), what it
//! returns, and the [`Registry`] the roles fill.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use cogo_api::broker::{LeasedTask, SubtaskRequest, TaskView};
use serde_json::Value;
use tokio::sync::watch;

use crate::broker::{CallError, SharedBroker};

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

impl HandlerError {
    /// A failure that a retry would repeat (bad input, say).
    pub fn fatal(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that a retry may not repeat (a peer away, say).
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retryable: true,
        }
    }

    /// The failure of a task that was cancelled.
    pub fn cancelled() -> Self {
        HandlerError::fatal("cancelled")
    }

    /// The failure of a broker call about a sub-task (`what` says which): refused for what it
    /// is (a limit, a bad request, a name another task holds) it fails the task at once;
    /// anything else may pass when the task is retried.
    pub fn of_broker(what: &str, e: CallError) -> Self {
        let message = format!("{what}: {e}");
        match e {
            CallError::Refused(400 | 403 | 422, _) => HandlerError::fatal(message),
            CallError::Refused(409, body) if body.code == "AlreadyExists" => HandlerError::fatal(message),
            _ => HandlerError::retryable(message),
        }
    }
}

/// What a handler may look at while it runs.
#[derive(Clone)]
pub struct TaskContext {
    /// Turns true when the task is cancelled (or its lease is lost).
    pub cancelled: watch::Receiver<bool>,
    /// The task being run: name, type, attempt, deadline.
    pub task: Arc<LeasedTask>,
    /// The broker, to create and read sub-tasks; None when the task does not come from one.
    pub broker: Option<SharedBroker>,
    /// How far the task has come, sent with every heartbeat (see
    /// [`TaskContext::report_progress`]).
    pub progress: Arc<watch::Sender<Option<String>>>,
}

impl TaskContext {
    /// A context for `task` outside any broker, with its cancellation sender.
    pub fn detached(task: LeasedTask) -> (watch::Sender<bool>, TaskContext) {
        let (tx, rx) = watch::channel(false);
        (
            tx,
            TaskContext {
                cancelled: rx,
                task: Arc::new(task),
                broker: None,
                progress: Arc::new(watch::channel(None).0),
            },
        )
    }

    /// The attempt being run, from 1.
    pub fn attempt(&self) -> i32 {
        self.task.attempt
    }

    /// Resolves when the task is cancelled.
    pub async fn until_cancelled(&self) {
        let mut rx = self.cancelled.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    fn broker(&self) -> Result<&SharedBroker, CallError> {
        self.broker
            .as_ref()
            .ok_or_else(|| CallError::Transport("this task does not come from a broker".into()))
    }

    /// Creates a sub-task of the running task; creating one of the same name again returns
    /// the existing one.
    pub async fn create_subtask(&self, mut req: SubtaskRequest) -> Result<TaskView, CallError> {
        let broker = self.broker()?;
        req.pod = broker.pod().to_string();
        req.attempt = self.task.attempt;
        broker.create_subtask(&self.task, &req).await
    }

    /// Says how far the task has come, in a line (at most 1024 bytes); the heartbeats carry it
    /// to the task's status message.
    pub fn report_progress(&self, line: impl Into<String>) {
        let mut line: String = line.into();
        if line.len() > 1024 {
            let mut end = 1021;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push_str("...");
        }
        self.progress.send_if_modified(|p| {
            let changed = p.as_deref() != Some(line.as_str());
            *p = Some(line);
            changed
        });
    }

    /// Cancels the sub-task `name` of the running task.
    pub async fn cancel_subtask(&self, name: &str) -> Result<(), CallError> {
        self.broker()?.cancel_subtask(&self.task, name).await
    }

    /// Reads a task of the namespace.
    pub async fn get_task(&self, name: &str) -> Result<TaskView, CallError> {
        self.broker()?.get_task(name).await
    }
}

/// The future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send + 'a>>;

/// Runs the tasks of one type.
pub trait TaskHandler: Send + Sync {
    /// Runs one task.
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a>;
}

/// Handlers by task type, or by type prefix (`python.` for every `python.*` type).
#[derive(Default)]
pub struct Registry {
    exact: BTreeMap<&'static str, Box<dyn TaskHandler>>,
    prefixes: BTreeMap<&'static str, Box<dyn TaskHandler>>,
}

impl Registry {
    /// Registers `handler` for `task_type`.
    pub fn register(&mut self, task_type: &'static str, handler: impl TaskHandler + 'static) {
        self.exact.insert(task_type, Box::new(handler));
    }

    /// Registers `handler` for every task type that starts with `prefix`.
    pub fn register_prefix(&mut self, prefix: &'static str, handler: impl TaskHandler + 'static) {
        self.prefixes.insert(prefix, Box::new(handler));
    }

    /// The handler of `task_type`: its own, else the one of its longest registered prefix.
    pub fn get(&self, task_type: &str) -> Option<&dyn TaskHandler> {
        if let Some(h) = self.exact.get(task_type) {
            return Some(h.as_ref());
        }
        self.prefixes
            .iter()
            .filter(|(p, _)| task_type.starts_with(*p))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, h)| h.as_ref())
    }

    /// The task types handled (`python.*` for a prefix), for messages.
    pub fn types(&self) -> Vec<String> {
        let exact = self.exact.keys().map(|t| t.to_string());
        exact
            .chain(self.prefixes.keys().map(|p| format!("{p}*")))
            .collect()
    }
}

/// Reads a task input into its catalogue type; a missing, unknown or ill-typed field fails
/// the task at once, naming the field.
pub fn parse_input<T: serde::de::DeserializeOwned>(
    task_type: &str,
    input: &Value,
) -> Result<T, HandlerError> {
    serde_json::from_value(input.clone())
        .map_err(|e| HandlerError::fatal(format!("invalid {task_type} input: {e}")))
}

/// A leased task for tests and local runs: `name` of `task_type` with `input`, attempt 1,
/// due in ten minutes.
pub fn local_task(name: &str, task_type: &str, input: Value) -> LeasedTask {
    LeasedTask {
        namespace: "local".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        task_type: task_type.into(),
        input,
        attempt: 1,
        heartbeat_seconds: 5,
        deadline: (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(10)).to_string(),
        traceparent: None,
        item: None,
    }
}
