//! Task handlers, keyed by task type. Each role registers its own; every agent has the
//! built-in `cogo.echo` (returns its input) and `cogo.sleep` (waits `seconds`, for tests).

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use serde_json::{Value, json};
use tokio::sync::watch;

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

/// Handlers by task type.
#[derive(Default)]
pub struct Registry(BTreeMap<&'static str, Box<dyn TaskHandler>>);

impl Registry {
    /// The built-in handlers.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        r.register("cogo.echo", Echo);
        r.register("cogo.sleep", Sleep);
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
        (tx, TaskContext { cancelled: rx })
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
        assert_eq!(r.types(), ["cogo.echo", "cogo.sleep"]);
    }
}
