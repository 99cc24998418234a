//! What a worker kind runs: a [`JobRunner`] takes a job (a task's type, input and deadline) and
//! returns the task's result, or why it failed.

use std::sync::Arc;

use cogo_api::WorkerKind;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::watch;

/// One job, as the Executor sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The task's name (the frame's `taskId`).
    pub id: String,
    /// The task type.
    pub task_type: String,
    /// The task's input.
    pub input: Value,
    /// When the task's deadline passes.
    pub deadline: jiff::Timestamp,
}

impl Job {
    /// A job of `task_type` on `input`, named `id`, whose deadline is `within` from now (a
    /// worker's own checks, and tests).
    pub fn new(id: &str, task_type: &str, input: Value, within: std::time::Duration) -> Job {
        Job {
            id: id.into(),
            task_type: task_type.into(),
            input,
            deadline: jiff::Timestamp::now() + within,
        }
    }

    /// Time left until the deadline (zero once it passed).
    pub fn time_left(&self) -> std::time::Duration {
        self.deadline
            .duration_since(jiff::Timestamp::now())
            .try_into()
            .unwrap_or_default()
    }

    /// The input read as `T`, or a failure naming the field that does not fit.
    pub fn read_input<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.input.clone())
            .map_err(|e| fatal(format!("bad input for {}: {e}", self.task_type)))
    }
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// What went wrong.
    pub message: String,
    /// Whether running it again may succeed.
    pub retryable: bool,
}

impl JobError {
    /// A failure that may not happen again (the worker, not the job, was at fault).
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError {
            message: message.into(),
            retryable: true,
        }
    }
}

/// A failure that will happen again (the job, not the worker, is at fault).
pub fn fatal(message: impl Into<String>) -> JobError {
    JobError {
        message: message.into(),
        retryable: false,
    }
}

/// The value of the variable `name` read by `parse`, or `default` when it is unset or empty.
pub(crate) fn env_or<T>(name: &str, parse: impl Fn(&str) -> Option<T>, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => parse(&v).ok_or_else(|| format!("{name}={v:?} is not a valid value")),
        _ => Ok(default),
    }
}

/// Runs the jobs of one worker kind.
pub trait JobRunner: Send + Sync {
    /// Runs `job` until it ends or `cancel` turns true.
    fn run<'a>(&'a self, job: Job, cancel: watch::Receiver<bool>) -> BoxFuture<'a, Result<Value, JobError>>;

    /// Checks that jobs can run here at all (a trivial job); the worker connects only then.
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The runner of `kind`, when this version has one.
pub fn runner_for(kind: WorkerKind) -> Result<Option<Arc<dyn JobRunner>>, String> {
    Ok(match kind {
        WorkerKind::PythonSandbox => {
            let runner = crate::python::PythonRunner::new(crate::python::PythonConfig::from_env()?);
            runner.clear_leftovers();
            Some(Arc::new(runner))
        }
        WorkerKind::Browser => Some(Arc::new(crate::browser::BrowserRunner::new(
            crate::browser::BrowserConfig::from_env()?,
        ))),
        WorkerKind::FigmaMcp => Some(Arc::new(crate::figma::FigmaRunner::new(
            crate::figma::FigmaConfig::from_env()?,
        )?)),
    })
}
