//! The task broker: the HTTP API agent pods pull tasks from, served by the leader. See
//! `cogo_api::broker` for the wire format. It is HTTP only: the AgentTask state it reads and
//! changes is owned by the [`Scheduler`] of [`crate::tasks`], which it shares with the task
//! controller, and the tokens it checks are [`crate::tokens`].
//!
//! | Method and path | What |
//! |---|---|
//! | `POST /v1/namespaces/{ns}/agents/{agent}/lease` | long-poll for up to `slots` tasks |
//! | `POST /v1/namespaces/{ns}/tasks/{name}/heartbeat` | keep a lease; learn of cancellation |
//! | `POST /v1/namespaces/{ns}/tasks/{name}/complete` | report an attempt's outcome |
//! | `POST /v1/namespaces/{ns}/tasks/{name}/subtasks` | create a sub-task of a running task |
//! | `GET /v1/namespaces/{ns}/tasks/{name}` | read a task of the agent's namespace |
//! | `POST /v1/namespaces/{ns}/agents/{agent}/workers` | an Executor reports its workers |
//! | `GET /v1/worker-keys` | the public keys of worker tokens (no token needed) |
//!
//! Every call but the last carries `Authorization: Bearer <token>` for the agent it acts for. Errors are
//! JSON `{code, message}` with a fitting HTTP status. `docs/broker-openapi.json` describes it
//! all; `make crds` writes it from these types.
//!
//! Here: the router and what the handlers share. `extract`: the token check and a completion's
//! share of the memory budget, taken before the body is read. `lease`: the long poll.
//! `attempt`: heartbeat, complete and read, the calls about one task a pod runs. `subtask`:
//! sub-tasks, within [`SubtaskLimits`]. `executors`: what Executors call. `error`: the error
//! answers ([`ApiError`]).

use std::{
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, FromRequestParts, Path, State, rejection::JsonRejection},
    http::{StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use cogo_api::{
    AgentRole, AgentTask, CogoAgent, TaskPhase,
    broker::{
        CancelSubtaskRequest, Claims, CompleteRequest, CompleteResponse, ErrorBody, HeartbeatRequest,
        HeartbeatResponse, LeaseRequest, LeaseResponse, LeasedTask, MAX_WAIT_SECONDS, Outcome,
        SubtaskRequest, TaskView, WorkerKeySet, WorkerReport,
    },
};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        events::{EventType, Recorder},
        reflector::{ObjectRef, Store},
    },
};
use tracing::{debug, warn};

use crate::{
    kube_io::{FIELD_MANAGER, publish_task_event, write_task_status},
    tasks::{
        Scheduler,
        transition::{self, Fence, Policy},
    },
    tokens::{
        auth::{AuthError, Keys},
        worker_keys::WorkerKeys,
    },
};

mod attempt;
mod error;
mod executors;
mod extract;
mod lease;
mod subtask;

use attempt::{complete, heartbeat, read_task, view};
pub use error::ApiError;
use error::fence_error;
use executors::{report_workers, worker_keys};
pub use extract::{AgentBearer, Bearer, BodyShare, CompleteBudget};
use lease::lease;
pub use subtask::{PARENT_LABEL, SubtaskLimits};
use subtask::{cancel_subtask, subtask};

/// Largest completion body the broker reads: results too large for status are kept whole
/// for the Supabase mirror.
pub const MAX_COMPLETE_BYTES: usize = 16 * 1024 * 1024;

/// Largest request body the broker reads (but for completions).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the broker's handlers share.
#[derive(Clone)]
pub struct Broker {
    /// Kubernetes client.
    pub client: Client,
    /// Token keys.
    pub keys: Keys,
    /// The queue, leases and worker reports of AgentTasks, shared with the task controller.
    pub scheduler: Arc<Scheduler>,
    /// Every CogoAgent, to know an agent's role.
    pub agents: Store<CogoAgent>,
    /// Seconds between heartbeats the agents are told.
    pub heartbeat_seconds: u32,
    /// Results larger than this stay out of status.
    pub max_result_bytes: usize,
    /// The result store, when a database is configured: it keeps results too large for
    /// status. Without one, such a result fails its task with reason `ResultTooLarge`.
    pub results: Option<Arc<crate::supabase::results::ResultStore>>,
    /// The task controller's cache of AgentTasks, once it runs. Reads start there and go to
    /// the API server when the cached view is missing or too old to decide.
    pub tasks: Arc<OnceLock<Store<AgentTask>>>,
    /// Publishes Events on tasks.
    pub recorder: Recorder,
    /// Keys of worker tokens, whose public halves `GET /v1/worker-keys` publishes; None when
    /// the operator issues no worker tokens.
    pub worker_keys: Option<Arc<RwLock<WorkerKeys>>>,
    /// How many sub-tasks may be made.
    pub subtask_limits: SubtaskLimits,
    /// Memory for completions being read.
    pub complete_budget: Arc<CompleteBudget>,
    /// How long a lease's status write waits for the attempt's outcome, so a task done by
    /// then costs one status write instead of two (the outcome's); zero writes every lease at
    /// once. Until it is written, the task's status says Pending: should the operator stop
    /// meanwhile, the task runs again.
    pub coalesce_window: Duration,
    /// The operator's metrics: the broker counts its server errors there.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The broker's routes.
pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/v1/namespaces/{ns}/agents/{agent}/lease", post(lease))
        .route("/v1/namespaces/{ns}/tasks/{name}/heartbeat", post(heartbeat))
        .route(
            "/v1/namespaces/{ns}/tasks/{name}/complete",
            post(complete).layer(DefaultBodyLimit::max(MAX_COMPLETE_BYTES)),
        )
        .route("/v1/namespaces/{ns}/tasks/{name}/subtasks", post(subtask))
        .route(
            "/v1/namespaces/{ns}/tasks/{name}/subtasks/{child}/cancel",
            post(cancel_subtask),
        )
        .route("/v1/namespaces/{ns}/tasks/{name}", get(read_task))
        .route("/v1/namespaces/{ns}/agents/{agent}/workers", post(report_workers))
        .route("/v1/worker-keys", get(worker_keys))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such endpoint; see cogo_api::broker",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response_with_state(
            broker.metrics.clone(),
            error::count_server_errors,
        ))
        .with_state(Arc::new(broker))
}

/// The CogoAgent a task was leased to (empty before its first lease).
fn assigned_agent(task: &AgentTask) -> String {
    task.status
        .as_ref()
        .and_then(|s| s.agent.clone())
        .unwrap_or_default()
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

impl Broker {
    /// The task as cached, or as the API server has it when `fresh` or when not cached, with
    /// its lease in its status when the lease is not written yet (see [`Broker::as_leased`]).
    async fn read(
        &self,
        api: &Api<AgentTask>,
        ns: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<AgentTask>, ApiError> {
        Ok(self
            .read_written(api, ns, name, fresh)
            .await?
            .map(|t| self.as_leased(ns, t)))
    }

    /// The task as cached, or as the API server has it when `fresh` or when not cached.
    async fn read_written(
        &self,
        api: &Api<AgentTask>,
        ns: &str,
        name: &str,
        fresh: bool,
    ) -> kube::Result<Option<AgentTask>> {
        if !fresh
            && let Some(t) = self
                .tasks
                .get()
                .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
        {
            return Ok(Some((*t).clone()));
        }
        api.get_opt(name).await
    }

    /// `task` as its pod knows it: Running, when its lease was handed out and is not written
    /// yet. Every check of a lease, and the status a completion writes, start from this.
    fn as_leased(&self, ns: &str, mut task: AgentTask) -> AgentTask {
        if let Some(lease) = self.scheduler.unwritten(ns, &task.name_any())
            && let Some(status) = transition::as_leased(&task, &lease)
        {
            task.status = Some(status);
        }
        task
    }

    fn agent(&self, ns: &str, name: &str) -> Option<Arc<CogoAgent>> {
        self.agents.get(&ObjectRef::new(name).within(ns))
    }

    /// Reads a task and checks that the bearer acts for the agent it is assigned to, and that
    /// `pod` holds the lease of `attempt`. The cached view is tried first; when it fails a
    /// check (it may predate the lease), the API server's view decides.
    async fn held_task(
        &self,
        claims: &Claims,
        ns: &str,
        name: &str,
        lease: Option<(&str, i32)>,
    ) -> Result<(Api<AgentTask>, AgentTask), ApiError> {
        let cached = self
            .assigned_task(claims, ns, name, false)
            .await
            .and_then(|(api, t)| {
                if let Some((pod, attempt)) = lease {
                    transition::check_lease(&t, pod, attempt).map_err(fence_error)?;
                }
                Ok((api, t))
            });
        match cached {
            Ok(found) => Ok(found),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(e),
            Err(_) => {
                let (api, t) = self.assigned_task(claims, ns, name, true).await?;
                if let Some((pod, attempt)) = lease {
                    transition::check_lease(&t, pod, attempt).map_err(fence_error)?;
                }
                Ok((api, t))
            }
        }
    }

    /// Reads a task and checks that the bearer acts for the agent it is assigned to.
    async fn assigned_task(
        &self,
        claims: &Claims,
        ns: &str,
        name: &str,
        fresh: bool,
    ) -> Result<(Api<AgentTask>, AgentTask), ApiError> {
        let api: Api<AgentTask> = Api::namespaced(self.client.clone(), ns);
        let Some(task) = self.read(&api, ns, name, fresh).await? else {
            // Deleted while it ran: its slot is free again.
            self.scheduler.release(ns, name);
            return Err(ApiError::task_not_found(ns, name));
        };
        if claims.sub != Claims::subject(ns, &assigned_agent(&task)) {
            return Err(AuthError::WrongAgent.into());
        }
        Ok((api, task))
    }
}

#[cfg(test)]
mod tests {
    use cogo_api::AgentTaskStatus;

    use super::*;

    fn task(name: &str, parent: Option<&str>, phase: Option<TaskPhase>) -> Arc<AgentTask> {
        let mut t: AgentTask = serde_json::from_value(serde_json::json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"agent": "a", "type": "cogo.echo", "parent": parent},
        }))
        .unwrap();
        t.status = phase.map(|p| AgentTaskStatus {
            phase: Some(p),
            ..Default::default()
        });
        Arc::new(t)
    }

    /// Each limit refuses the sub-task that would pass it, naming it; finished sub-tasks do
    /// not count against the namespace.
    #[test]
    fn subtask_limits() {
        let limits = SubtaskLimits {
            per_task: 2,
            depth: 2,
            per_namespace: 3,
        };
        let root = task("root", None, Some(TaskPhase::Running));
        let child = task("child", Some("root"), Some(TaskPhase::Running));
        let grandchild = task("grandchild", Some("child"), Some(TaskPhase::Running));
        let elsewhere = {
            let mut t = (*task("x", Some("root"), None)).clone();
            t.metadata.namespace = Some("other".into());
            Arc::new(t)
        };
        let all = vec![root.clone(), child.clone(), grandchild.clone(), elsewhere];
        assert_eq!(
            limits.check(&all, "team", &root),
            Ok(()),
            "one child of two, another namespace's aside"
        );
        let (code, message) = limits.check(&all, "team", &grandchild).unwrap_err();
        assert_eq!(code, "SubtaskTooDeep");
        assert!(message.contains("3 levels below"), "{message}");
        let mut full = all.clone();
        full.push(task("child-2", Some("root"), Some(TaskPhase::Succeeded)));
        let (code, message) = limits.check(&full, "team", &root).unwrap_err();
        assert_eq!(code, "TooManySubtasks");
        assert!(message.contains("root has 2 sub-tasks"), "{message}");
        let loose = SubtaskLimits {
            per_task: 10,
            ..limits
        };
        assert_eq!(
            loose.check(&full, "team", &child),
            Ok(()),
            "finished sub-tasks are not counted"
        );
        full.push(task("child-3", Some("root"), None));
        let (code, _) = loose.check(&full, "team", &child).unwrap_err();
        assert_eq!(code, "TooManySubtasksInNamespace");
    }
}
