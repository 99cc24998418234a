//! Running a leased worker task: hand it to a worker of its kind, wait for its result, and
//! hand it to another worker when the first one goes away (the same attempt, while the lease
//! holds). A cancelled task is taken back from its worker.

use std::{sync::Arc, time::Duration};

use cogo_api::{
    WorkerKind,
    worker::message::{ErrorData, ExecuteData, MessageType, WorkerMessage},
};
use serde_json::Value;
use tracing::{debug, info};

use super::{
    endpoint::Endpoint,
    registry::{JobOutcome, Outbound, WorkerRegistry},
};
use crate::handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler};

/// The handler of every task type of one worker kind.
pub struct Dispatch {
    /// The kind whose workers run the tasks.
    pub kind: WorkerKind,
    /// The endpoint the workers are connected to.
    pub endpoint: Arc<Endpoint>,
    /// How long a job waits while no worker of its kind is connected before it goes back to
    /// the broker (as a retryable failure, so the task's retry policy decides).
    pub no_worker_for: Duration,
}

/// Takes a job back from its worker if its run ends some other way than by the worker's answer.
struct Running<'a> {
    registry: &'a WorkerRegistry,
    endpoint: &'a Endpoint,
    task: &'a str,
    done: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some((worker, tx)) = self.registry.abort(self.task) {
            let data = serde_json::to_value(ErrorData {
                message: "the job was cancelled or its lease lost; stop it".into(),
                retryable: false,
            })
            .ok();
            let stop = WorkerMessage::new(
                self.endpoint.next_id(),
                MessageType::Error,
                worker,
                Some(self.task.to_string()),
                data,
            );
            let _ = tx.send(Outbound::frame(stop));
        }
    }
}

impl TaskHandler for Dispatch {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let registry = &self.endpoint.registry;
            let task = ctx.task.name.as_str();
            let mut job_data = ExecuteData {
                task_type: ctx.task.task_type.clone(),
                input: input.clone(),
                deadline: ctx.task.deadline.clone(),
                traceparent: None,
            };
            let traceparent = cogo_telemetry::traceparent(&tracing::Span::current());
            let mut tries = 0u32;
            loop {
                // A worker with a free slot, waiting for one while the task is not cancelled
                // and workers of the kind are connected.
                let mut alone_since: Option<tokio::time::Instant> = None;
                let job = loop {
                    let changed = registry.on_change();
                    if let Some(job) = registry.assign(task, self.kind) {
                        break job;
                    }
                    let now = tokio::time::Instant::now();
                    alone_since = match registry.connected(self.kind) {
                        0 => Some(alone_since.unwrap_or(now)),
                        _ => None,
                    };
                    let give_up = alone_since.map(|t| t + self.no_worker_for);
                    tokio::select! {
                        _ = changed => {}
                        _ = ctx.until_cancelled() => return Err(HandlerError::cancelled()),
                        _ = tokio::time::sleep_until(give_up.unwrap_or(now + Duration::from_secs(3600))), if give_up.is_some() => {
                            return Err(HandlerError::retryable(format!(
                                "no {} worker has been connected to this Executor for {}s; the task goes back to the queue",
                                self.kind,
                                self.no_worker_for.as_secs()
                            )));
                        }
                    }
                };
                tries += 1;
                let mut running = Running {
                    registry,
                    endpoint: &self.endpoint,
                    task,
                    done: false,
                };
                debug!(task, worker = %job.worker_id, tries, "dispatching");
                // Only workers that said they take it get the trace context (older ones refuse it).
                job_data.traceparent = traceparent.clone().filter(|_| job.traces);
                let data = serde_json::to_value(&job_data)
                    .map_err(|e| HandlerError::fatal(format!("cannot encode the job: {e}")))?;
                let execute = WorkerMessage::new(
                    self.endpoint.next_id(),
                    MessageType::Execute,
                    job.worker_id.clone(),
                    Some(task.to_string()),
                    Some(data),
                );
                let _ = job.tx.send(Outbound::frame(execute));
                let outcome = tokio::select! {
                    o = job.outcome => o.unwrap_or(JobOutcome::Lost),
                    _ = ctx.until_cancelled() => return Err(HandlerError::cancelled()),
                };
                running.done = true;
                match outcome {
                    JobOutcome::Result(v) => return Ok(v),
                    JobOutcome::Failed(e) => {
                        return Err(HandlerError {
                            message: e.message,
                            retryable: e.retryable,
                        });
                    }
                    JobOutcome::Lost => {
                        info!(task, worker = %job.worker_id, "the worker went away mid-job; running it on another");
                    }
                }
            }
        })
    }
}
