//! Task handlers, keyed by task type. Each role registers its own; every agent has the
//! built-in `cogo.echo` (returns its input), `cogo.sleep` (waits `seconds`) and `cogo.fail`
//! (fails as told), for diagnostics and tests.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use cogo_api::{
    TaskPhase,
    broker::{LeasedTask, SubtaskRequest, TaskView},
};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::pull::{BrokerClient, CallError};

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

/// What a handler may look at while it runs.
#[derive(Clone)]
pub struct TaskContext {
    /// Turns true when the task is cancelled.
    pub cancelled: watch::Receiver<bool>,
    /// The attempt being run, from 1.
    pub attempt: i32,
    /// The broker, to create and read sub-tasks; None when the task does not come from it.
    pub broker: Option<Arc<Parent>>,
}

/// The running task as a parent: creates and reads its sub-tasks through the broker.
pub struct Parent {
    /// The client of this pod.
    pub client: BrokerClient,
    /// The task being run.
    pub task: LeasedTask,
}

impl Parent {
    /// Creates a sub-task; creating one of the same name again returns the existing one.
    pub async fn create(&self, mut req: SubtaskRequest) -> Result<TaskView, CallError> {
        req.pod = self.client.pod.clone();
        req.attempt = self.task.attempt;
        self.client.create_subtask(&self.task, &req).await
    }

    /// Reads a task of the namespace.
    pub async fn get(&self, name: &str) -> Result<TaskView, CallError> {
        self.client.get_task(name).await
    }
}

/// The future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send + 'a>>;

/// Runs the tasks of one type.
pub trait TaskHandler: Send + Sync {
    /// Runs one task.
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a>;
}

/// `cogo.echo`: returns its input.
pub struct Echo;

impl TaskHandler for Echo {
    fn run<'a>(&'a self, input: &'a Value, _: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move { Ok(input.clone()) })
    }
}

/// `cogo.sleep`: waits `input.seconds` (at most an hour), then returns how long it slept.
pub struct Sleep;

impl TaskHandler for Sleep {
    fn run<'a>(&'a self, input: &'a Value, mut ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let seconds = input.get("seconds").and_then(Value::as_f64).unwrap_or(1.0);
            if !(0.0..=3600.0).contains(&seconds) {
                return Err(HandlerError {
                    message: format!("seconds must be 0 to 3600, not {seconds}"),
                    retryable: false,
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => Ok(json!({"slept": seconds})),
                _ = ctx.cancelled.wait_for(|c| *c) => Err(HandlerError { message: "cancelled".into(), retryable: false }),
            }
        })
    }
}

/// `cogo.fail`: fails with `input.message` (retryable when `input.retryable` is true), unless
/// the attempt is at least `input.succeedFromAttempt`, when it returns `{"attempt": n}`.
pub struct Fail;

impl TaskHandler for Fail {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let from = input.get("succeedFromAttempt").and_then(Value::as_i64);
            if from.is_some_and(|n| i64::from(ctx.attempt) >= n) {
                return Ok(json!({"attempt": ctx.attempt}));
            }
            Err(HandlerError {
                message: input
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("cogo.fail failed as asked")
                    .to_string(),
                retryable: input.get("retryable").and_then(Value::as_bool).unwrap_or(false),
            })
        })
    }
}

/// `cogo.fanout`: creates `input.count` sub-tasks of `input.type` (default `cogo.echo`) for
/// `input.agent` or `input.role`, each with `input.input`, waits for all of them, and returns
/// their results. Sub-tasks are named `<task>-<i>`, so a retried attempt adopts those the
/// previous one created.
pub struct Fanout;

impl TaskHandler for Fanout {
    fn run<'a>(&'a self, input: &'a Value, mut ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let fail = |message: String, retryable| HandlerError { message, retryable };
            let Some(parent) = ctx.broker.clone() else {
                return Err(fail("cogo.fanout needs the broker".into(), false));
            };
            let count = input.get("count").and_then(Value::as_u64).unwrap_or(2);
            if !(1..=100).contains(&count) {
                return Err(fail(format!("count must be 1 to 100, not {count}"), false));
            }
            let field = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
            let role = match field("role") {
                Some(r) => Some(
                    serde_json::from_value(Value::String(r.clone()))
                        .map_err(|_| fail(format!("unknown role {r:?}"), false))?,
                ),
                None => None,
            };
            let prefix: String = parent.task.name.chars().take(55).collect();
            let mut names = Vec::new();
            for i in 0..count {
                let req = SubtaskRequest {
                    pod: String::new(),
                    attempt: 0,
                    name: Some(format!("{prefix}-{i}")),
                    agent: field("agent"),
                    role,
                    task_type: field("type").unwrap_or_else(|| "cogo.echo".into()),
                    input: input.get("input").cloned(),
                    priority: 0,
                    timeout_seconds: None,
                };
                let view = parent
                    .create(req)
                    .await
                    .map_err(|e| fail(format!("cannot create sub-task {i}: {e}"), true))?;
                names.push(view.name);
            }
            let mut results = vec![Value::Null; names.len()];
            let mut done = vec![false; names.len()];
            while done.iter().any(|d| !d) {
                for (i, name) in names.iter().enumerate() {
                    if done[i] {
                        continue;
                    }
                    let Ok(view) = parent.get(name).await else {
                        continue;
                    };
                    match view.phase {
                        TaskPhase::Succeeded => {
                            results[i] = view.result.unwrap_or(Value::Null);
                            done[i] = true;
                        }
                        p if p.is_terminal() => {
                            return Err(fail(
                                format!(
                                    "sub-task {name} ended {}: {}",
                                    p.as_str(),
                                    view.message.unwrap_or_default()
                                ),
                                false,
                            ));
                        }
                        _ => {}
                    }
                }
                if done.iter().all(|d| *d) {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = ctx.cancelled.wait_for(|c| *c) => return Err(fail("cancelled".into(), false)),
                }
            }
            Ok(json!({"subtasks": names, "results": results}))
        })
    }
}

/// Handlers by task type.
#[derive(Default)]
pub struct Registry(BTreeMap<&'static str, Box<dyn TaskHandler>>);

impl Registry {
    /// The built-in handlers.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        r.register("cogo.echo", Echo);
        r.register("cogo.sleep", Sleep);
        r.register("cogo.fail", Fail);
        r.register("cogo.fanout", Fanout);
        r
    }

    /// Registers `handler` for `task_type`.
    pub fn register(&mut self, task_type: &'static str, handler: impl TaskHandler + 'static) {
        self.0.insert(task_type, Box::new(handler));
    }

    /// The handler of `task_type`.
    pub fn get(&self, task_type: &str) -> Option<&dyn TaskHandler> {
        self.0.get(task_type).map(|h| h.as_ref())
    }

    /// The task types handled, for messages.
    pub fn types(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> (watch::Sender<bool>, TaskContext) {
        let (tx, rx) = watch::channel(false);
        (
            tx,
            TaskContext {
                cancelled: rx,
                attempt: 1,
                broker: None,
            },
        )
    }

    #[tokio::test]
    async fn echo_returns_its_input() {
        let input = json!({"message": "hi", "n": [1, 2]});
        assert_eq!(Echo.run(&input, ctx().1).await, Ok(input.clone()));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_and_stops_when_cancelled() {
        let (_tx, c) = ctx();
        assert_eq!(
            Sleep.run(&json!({"seconds": 2}), c).await,
            Ok(json!({"slept": 2.0}))
        );
        let (tx, c) = ctx();
        let input = json!({"seconds": 100});
        let run = Sleep.run(&input, c);
        tx.send(true).unwrap();
        assert_eq!(run.await.unwrap_err().message, "cancelled");
        let bad = Sleep.run(&json!({"seconds": -1}), ctx().1).await.unwrap_err();
        assert!(bad.message.contains("0 to 3600") && !bad.retryable);
    }

    #[test]
    fn unknown_types_have_no_handler() {
        let r = Registry::builtin();
        assert!(r.get("cogo.echo").is_some());
        assert!(r.get("research.query").is_none());
        assert_eq!(r.types(), ["cogo.echo", "cogo.fail", "cogo.fanout", "cogo.sleep"]);
    }

    #[tokio::test]
    async fn fail_fails_as_told_until_the_attempt_it_succeeds_from() {
        let (_tx, mut c) = ctx();
        let input = json!({"message": "flaky", "retryable": true, "succeedFromAttempt": 2});
        let e = Fail.run(&input, c.clone()).await.unwrap_err();
        assert_eq!(
            e,
            HandlerError {
                message: "flaky".into(),
                retryable: true
            }
        );
        c.attempt = 2;
        assert_eq!(Fail.run(&input, c.clone()).await.unwrap(), json!({"attempt": 2}));
        let fatal = Fail.run(&json!({}), c).await.unwrap_err();
        assert!(!fatal.retryable, "not retryable unless asked");
    }
}
