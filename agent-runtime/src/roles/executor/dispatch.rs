//! Running a leased worker task: hand it to a worker of its kind, wait for its result, and
//! hand it to another worker when the first one goes away (the same attempt, while the lease
//! holds). A cancelled task is taken back from its worker. Each item of an indexed task is a
//! job of its own, `<task>[<index>]` ([`job_id`]).

use std::{sync::Arc, time::Duration};

use cogo_api::{
    WorkerKind,
    broker::LeasedTask,
    worker::message::{ErrorData, ExecuteData, MAX_ID_CHARS, MessageType, WorkerMessage},
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

/// The job's id on the wire (`taskId`) and in the registry: the task's name, or for an item of
/// an indexed task `<name>[<index>]`, so the items of one task that run at once are jobs of
/// their own. A name too long for the frame's ids gives way to the task's UID.
pub fn job_id(task: &LeasedTask) -> String {
    let Some(i) = task.item else {
        return task.name.clone();
    };
    let id = format!("{}[{i}]", task.name);
    if id.chars().count() <= MAX_ID_CHARS {
        id
    } else {
        format!("{}[{i}]", task.uid)
    }
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
            let job_id = job_id(&ctx.task);
            let task = job_id.as_str();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(name: &str, item: Option<u32>) -> LeasedTask {
        serde_json::from_value(serde_json::json!({
            "namespace": "ns", "name": name, "uid": "6f0c1b8e-0000-4000-8000-000000000001",
            "type": "python.execute", "input": {}, "attempt": 1, "heartbeatSeconds": 5,
            "deadline": "2030-01-01T00:00:00Z", "item": item,
        }))
        .unwrap()
    }

    #[test]
    fn each_item_is_a_job_of_its_own_and_ids_fit_in_a_frame() {
        assert_eq!(job_id(&leased("pages", None)), "pages");
        assert_eq!(job_id(&leased("pages", Some(0))), "pages[0]");
        assert_ne!(
            job_id(&leased("pages", Some(1))),
            job_id(&leased("pages", Some(0)))
        );
        let long = "a".repeat(253);
        assert_eq!(job_id(&leased(&long, None)), long);
        let id = job_id(&leased(&long, Some(99_999)));
        assert_eq!(id, "6f0c1b8e-0000-4000-8000-000000000001[99999]");
        assert!(id.chars().count() <= MAX_ID_CHARS);
    }
}
