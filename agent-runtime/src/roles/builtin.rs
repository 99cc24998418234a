//! The built-in task types every role handles, for diagnostics and tests: `cogo.echo` (returns
//! its input), `cogo.sleep` (waits `seconds`), `cogo.fail` (fails as told) and `cogo.fanout`
//! (runs sub-tasks and returns their results).

use std::time::Duration;

use cogo_api::{TaskPhase, broker::SubtaskRequest};
use serde_json::{Value, json};

use crate::handler::{HandlerError, HandlerFuture, Registry, TaskContext, TaskHandler};

/// Registers the built-in handlers.
pub fn register(registry: &mut Registry) {
    registry.register("cogo.echo", Echo);
    registry.register("cogo.sleep", Sleep);
    registry.register("cogo.fail", Fail);
    registry.register("cogo.fanout", Fanout);
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
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let seconds = input.get("seconds").and_then(Value::as_f64).unwrap_or(1.0);
            if !(0.0..=3600.0).contains(&seconds) {
                return Err(HandlerError::fatal(format!(
                    "seconds must be 0 to 3600, not {seconds}"
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => Ok(json!({"slept": seconds})),
                _ = ctx.until_cancelled() => Err(HandlerError::cancelled()),
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
            if from.is_some_and(|n| i64::from(ctx.attempt()) >= n) {
                return Ok(json!({"attempt": ctx.attempt()}));
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
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            if ctx.broker.is_none() {
                return Err(HandlerError::fatal("cogo.fanout needs the broker"));
            }
            let count = input.get("count").and_then(Value::as_u64).unwrap_or(2);
            if !(1..=100).contains(&count) {
                return Err(HandlerError::fatal(format!(
                    "count must be 1 to 100, not {count}"
                )));
            }
            let field = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
            let role = match field("role") {
                Some(r) => Some(
                    serde_json::from_value(Value::String(r.clone()))
                        .map_err(|_| HandlerError::fatal(format!("unknown role {r:?}")))?,
                ),
                None => None,
            };
            let prefix: String = ctx.task.name.chars().take(55).collect();
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
                    retry: None,
                };
                let view = ctx
                    .create_subtask(req)
                    .await
                    .map_err(|e| HandlerError::of_broker(&format!("cannot create sub-task {i}"), e))?;
                names.push(view.name);
            }
            let mut results = vec![Value::Null; names.len()];
            let mut done = vec![false; names.len()];
            while done.iter().any(|d| !d) {
                for (i, name) in names.iter().enumerate() {
                    if done[i] {
                        continue;
                    }
                    let Ok(view) = ctx.get_task(name).await else {
                        continue;
                    };
                    match view.phase {
                        TaskPhase::Succeeded => {
                            results[i] = view.result.unwrap_or(Value::Null);
                            done[i] = true;
                        }
                        p if p.is_terminal() => {
                            return Err(HandlerError::fatal(format!(
                                "sub-task {name} ended {}: {}",
                                p.as_str(),
                                view.message.unwrap_or_default()
                            )));
                        }
                        _ => {}
                    }
                }
                if done.iter().all(|d| *d) {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = ctx.until_cancelled() => return Err(HandlerError::cancelled()),
                }
            }
            Ok(json!({"subtasks": names, "results": results}))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        broker::memory::MemoryBroker,
        handler::local_task,
        pull::testing::{Pulling, own_lane},
    };

    fn ctx() -> (tokio::sync::watch::Sender<bool>, TaskContext) {
        TaskContext::detached(local_task("t", "cogo.echo", Value::Null))
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
    fn every_role_has_the_builtins() {
        let mut r = Registry::default();
        register(&mut r);
        assert!(r.get("cogo.echo").is_some());
        assert!(r.get("research.query").is_none());
        assert_eq!(r.types(), ["cogo.echo", "cogo.fail", "cogo.fanout", "cogo.sleep"]);
    }

    #[tokio::test]
    async fn fail_fails_as_told_until_the_attempt_it_succeeds_from() {
        let input = json!({"message": "flaky", "retryable": true, "succeedFromAttempt": 2});
        let e = Fail.run(&input, ctx().1).await.unwrap_err();
        assert_eq!(e, HandlerError::retryable("flaky"));
        let mut second = local_task("t", "cogo.fail", Value::Null);
        second.attempt = 2;
        let (_tx, c) = TaskContext::detached(second);
        assert_eq!(Fail.run(&input, c.clone()).await.unwrap(), json!({"attempt": 2}));
        let fatal = Fail.run(&json!({}), c).await.unwrap_err();
        assert!(!fatal.retryable, "not retryable unless asked");
    }

    #[tokio::test]
    async fn fanout_runs_its_sub_tasks_through_the_broker() {
        let broker = Arc::new(MemoryBroker::new("p", 1));
        let mut registry = Registry::default();
        register(&mut registry);
        let registry = Arc::new(registry);
        let pull = Pulling::start(broker.clone(), registry, vec![own_lane(4)]);
        broker.submit(
            "fan",
            "cogo.fanout",
            json!({"count": 3, "role": "Research", "input": {"x": 1}}),
        );
        let done = broker.outcome("fan", Duration::from_secs(20)).await.unwrap();
        assert_eq!(
            done.result,
            Some(json!({"subtasks": ["fan-0", "fan-1", "fan-2"], "results": [{"x": 1}, {"x": 1}, {"x": 1}]}))
        );
        pull.stop().await;
    }

    /// A sub-task the broker refuses for a limit fails the fan-out at once, saying why.
    #[tokio::test]
    async fn fanout_past_the_broker_s_limit_fails_at_once() {
        let broker = Arc::new(MemoryBroker::new("p", 1));
        broker.limit_subtasks(2);
        let mut registry = Registry::default();
        register(&mut registry);
        let pull = Pulling::start(broker.clone(), Arc::new(registry), vec![own_lane(4)]);
        broker.submit("wide", "cogo.fanout", json!({"count": 5, "role": "Research"}));
        let done = broker.outcome("wide", Duration::from_secs(20)).await.unwrap();
        assert_eq!(
            (done.outcome, done.retryable),
            (cogo_api::broker::Outcome::Failed, false)
        );
        assert!(
            done.error
                .unwrap()
                .contains("cannot create sub-task 2: 422 TooManySubtasks")
        );
        pull.stop().await;
    }
}
