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
        WorkerKind::Browser | WorkerKind::FigmaMcp => None,
    })
}
