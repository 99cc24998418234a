//! The pull loop: lease as many tasks as there are free slots (long-polling the broker), run
//! each with its handler while heartbeating, report the outcome. The broker being unreachable
//! only delays work: the loop retries with backoff. On shutdown it stops leasing and lets the
//! tasks it holds finish, within the grace period.

use std::{sync::Arc, time::Duration};

use cogo_api::broker::{
    CompleteRequest, ErrorBody, HeartbeatRequest, HeartbeatResponse, LeaseRequest, LeaseResponse, LeasedTask,
    Outcome, SubtaskRequest, TaskView,
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use crate::handlers::{Parent, Registry, TaskContext};

/// How the agent reaches the broker and who it is.
#[derive(Clone)]
pub struct BrokerClient {
    http: reqwest::Client,
    base: String,
    token: String,
    namespace: String,
    agent: String,
    pub(crate) pod: String,
}

/// A failed broker call.
#[derive(Debug)]
pub enum CallError {
    /// The broker answered with an error body.
    Refused(u16, ErrorBody),
    /// No answer (connection, timeout, unreadable body).
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(status, body) => write!(f, "{status} {}: {}", body.code, body.message),
            CallError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl BrokerClient {
    /// A client of the broker at `base` (for example `http://cogo-operator.cogo-system.svc:8080`).
    pub fn new(base: &str, token: String, namespace: String, agent: String, pod: String) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("cogo-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client without TLS builds");
        BrokerClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            namespace,
            agent,
            pod,
        }
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let res = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        answer(res).await
    }

    /// Leases up to `slots` tasks, waiting up to `wait_seconds` for one.
    pub async fn lease(&self, slots: u32, wait_seconds: u32) -> Result<Vec<LeasedTask>, CallError> {
        let path = format!("/v1/namespaces/{}/agents/{}/lease", self.namespace, self.agent);
        let req = LeaseRequest {
            pod: self.pod.clone(),
            slots,
            wait_seconds,
        };
        let res: LeaseResponse = self
            .call(&path, &req, Duration::from_secs(u64::from(wait_seconds) + 15))
            .await?;
        Ok(res.tasks)
    }

    /// Heartbeats a leased task; true when it was cancelled.
    pub async fn heartbeat(&self, task: &LeasedTask) -> Result<bool, CallError> {
        let path = format!("/v1/namespaces/{}/tasks/{}/heartbeat", task.namespace, task.name);
        let req = HeartbeatRequest {
            pod: self.pod.clone(),
            attempt: task.attempt,
        };
        let res: HeartbeatResponse = self.call(&path, &req, Duration::from_secs(10)).await?;
        Ok(res.cancelled)
    }

    /// Creates a sub-task of `parent`, which this pod runs.
    pub async fn create_subtask(
        &self,
        parent: &LeasedTask,
        req: &SubtaskRequest,
    ) -> Result<TaskView, CallError> {
        let path = format!(
            "/v1/namespaces/{}/tasks/{}/subtasks",
            parent.namespace, parent.name
        );
        self.call(&path, req, Duration::from_secs(15)).await
    }

    /// Reads a task of the agent's namespace.
    pub async fn get_task(&self, name: &str) -> Result<TaskView, CallError> {
        let url = format!("{}/v1/namespaces/{}/tasks/{name}", self.base, self.namespace);
        let res = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        answer(res).await
    }

    /// Reports an attempt's outcome.
    pub async fn complete(&self, task: &LeasedTask, req: &CompleteRequest) -> Result<(), CallError> {
        let path = format!("/v1/namespaces/{}/tasks/{}/complete", task.namespace, task.name);
        let _: serde_json::Value = self.call(&path, req, Duration::from_secs(15)).await?;
        Ok(())
    }
}

/// The body of a successful answer, or the broker's error.
async fn answer<R: DeserializeOwned>(res: reqwest::Response) -> Result<R, CallError> {
    let status = res.status();
    if status.is_success() {
        return res
            .json()
            .await
            .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")));
    }
    let body = res.json::<ErrorBody>().await.unwrap_or_else(|e| ErrorBody {
        code: "Unknown".into(),
        message: format!("an error without a readable body ({e})"),
    });
    Err(CallError::Refused(status.as_u16(), body))
}

/// Runs the pull loop until `shutdown` turns true, then waits up to `grace` for held tasks.
pub async fn run(
    client: BrokerClient,
    registry: Arc<Registry>,
    concurrency: u32,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let mut backoff = Duration::from_millis(500);
    info!(concurrency, "pulling tasks from the broker");
    while !*shutdown.borrow() {
        let free = slots.available_permits() as u32;
        if free == 0 {
            tokio::select! {
                permit = slots.acquire() => drop(permit),
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let leased = tokio::select! {
            r = client.lease(free, 20) => r,
            _ = shutdown.changed() => break,
        };
        match leased {
            Ok(tasks) => {
                backoff = Duration::from_millis(500);
                for task in tasks {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let (client, registry) = (client.clone(), registry.clone());
                    tokio::spawn(async move {
                        run_task(&client, &registry, task).await;
                        drop(permit);
                    });
                }
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "cannot lease tasks");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    info!("stopped leasing; finishing the tasks held");
    let all = concurrency;
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("tasks were still running when the grace period ended");
    }
}

/// Runs one leased task: heartbeats while the handler works, then reports the outcome.
async fn run_task(client: &BrokerClient, registry: &Registry, task: LeasedTask) {
    debug!(task = %task.name, attempt = task.attempt, r#type = %task.task_type, "running");
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let beat = {
        let (client, task) = (client.clone(), task.clone());
        tokio::spawn(async move {
            let every = Duration::from_secs(task.heartbeat_seconds.max(1).into());
            loop {
                tokio::time::sleep(every).await;
                match client.heartbeat(&task).await {
                    Ok(true) => {
                        let _ = cancel_tx.send(true);
                        return;
                    }
                    Ok(false) => {}
                    Err(CallError::Refused(409 | 404, body)) => {
                        warn!(task = %task.name, code = %body.code, "the lease was lost or the task deleted; stopping the task");
                        let _ = cancel_tx.send(true);
                        return;
                    }
                    Err(e) => warn!(task = %task.name, error = %e, "heartbeat failed"),
                }
            }
        })
    };
    let ctx = TaskContext {
        cancelled: cancel_rx.clone(),
        attempt: task.attempt,
        broker: Some(Arc::new(Parent {
            client: client.clone(),
            task: task.clone(),
        })),
    };
    let outcome = match registry.get(&task.task_type) {
        None => Err((
            format!(
                "this agent has no handler for task type {:?}; it handles {}",
                task.task_type,
                registry.types().join(", ")
            ),
            false,
        )),
        Some(handler) => handler
            .run(&task.input, ctx)
            .await
            .map_err(|e| (e.message, e.retryable)),
    };
    let cancelled = *cancel_rx.borrow();
    let req = match outcome {
        Ok(result) => CompleteRequest {
            pod: client.pod.clone(),
            attempt: task.attempt,
            outcome: Outcome::Succeeded,
            result: Some(result),
            error: None,
            retryable: false,
        },
        Err(_) if cancelled => CompleteRequest {
            pod: client.pod.clone(),
            attempt: task.attempt,
            outcome: Outcome::Cancelled,
            result: None,
            error: None,
            retryable: false,
        },
        Err((message, retryable)) => CompleteRequest {
            pod: client.pod.clone(),
            attempt: task.attempt,
            outcome: Outcome::Failed,
            result: None,
            error: Some(message),
            retryable,
        },
    };
    // The heartbeats go on until the outcome is reported, so a broker that is away for a
    // while (an operator restart) finds the lease still held when it is back.
    let mut delay = Duration::from_millis(200);
    for _ in 0..COMPLETE_TRIES {
        match client.complete(&task, &req).await {
            Ok(()) => break,
            Err(CallError::Refused(409 | 404, body)) => {
                debug!(task = %task.name, code = %body.code, "the broker has this attempt's outcome, or the task is gone");
                break;
            }
            Err(e) => {
                warn!(task = %task.name, error = %e, "cannot report the outcome; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    beat.abort();
}

/// How often an outcome is offered to the broker before it is given up (about 30 s): the
/// attempt then ends by its lease running out, and is retried by the task's policy.
const COMPLETE_TRIES: usize = 18;
