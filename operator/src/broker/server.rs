//! The broker's HTTP API, served by the leader. See `cogo_api::broker` for the wire format.
//!
//! | Method and path | What |
//! |---|---|
//! | `POST /v1/namespaces/{ns}/agents/{agent}/lease` | long-poll for up to `slots` tasks |
//! | `POST /v1/namespaces/{ns}/tasks/{name}/heartbeat` | keep a lease; learn of cancellation |
//! | `POST /v1/namespaces/{ns}/tasks/{name}/complete` | report an attempt's outcome |
//!
//! Every call carries `Authorization: Bearer <token>` for the agent it acts for. Errors are
//! JSON `{code, message}` with a fitting HTTP status.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::post,
};
use cogo_api::{
    AgentTask, AgentTaskStatus, CogoAgent, TaskPhase,
    broker::{
        CompleteRequest, CompleteResponse, ErrorBody, HeartbeatRequest, HeartbeatResponse, LeaseRequest,
        LeaseResponse, LeasedTask, MAX_WAIT_SECONDS,
    },
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        events::{Event, EventType, Recorder},
        reflector::Store,
    },
};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::{
    auth::{AuthError, Keys},
    queue::TaskQueue,
    transition::{self, Fence},
};
use crate::{build::FIELD_MANAGER, task::Target};

/// Largest request body the broker reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the broker's handlers share.
#[derive(Clone)]
pub struct Broker {
    /// Kubernetes client.
    pub client: Client,
    /// Token keys.
    pub keys: Keys,
    /// Accepted, not yet leased tasks.
    pub queue: Arc<Mutex<TaskQueue>>,
    /// Woken when a task is queued.
    pub queued: Arc<Notify>,
    /// Every CogoAgent, to know an agent's role.
    pub agents: Store<CogoAgent>,
    /// Seconds between heartbeats the agents are told.
    pub heartbeat_seconds: u32,
    /// Results larger than this stay out of status.
    pub max_result_bytes: usize,
    /// Timeout of tasks that set none.
    pub default_timeout_seconds: i64,
    /// Publishes Events on tasks.
    pub recorder: Recorder,
}

/// An error answer: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(code = self.code, message = %self.message, "broker request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                code: self.code.into(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = if e == AuthError::WrongAgent {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestTooLarge"
        } else {
            "MalformedRequest"
        };
        ApiError::new(e.status(), code, e.body_text())
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "KubernetesUnavailable",
            e.to_string(),
        )
    }
}

/// The broker's routes.
pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/v1/namespaces/{ns}/agents/{agent}/lease", post(lease))
        .route("/v1/namespaces/{ns}/tasks/{name}/heartbeat", post(heartbeat))
        .route("/v1/namespaces/{ns}/tasks/{name}/complete", post(complete))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such endpoint; see cogo_api::broker",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(broker))
}

fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)
}

/// Writes a task's status with server-side apply, only if the task is still at
/// `resource_version` (409 otherwise), so a stale view never overwrites a newer state.
async fn write_status(
    api: &Api<AgentTask>,
    name: &str,
    rv: &str,
    status: &AgentTaskStatus,
) -> kube::Result<AgentTask> {
    let body = serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1",
        "kind": "AgentTask",
        "metadata": {"resourceVersion": rv},
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

impl Broker {
    /// Leases the task `name` to `pod` of `agent`, if it is still Pending. Retries on write
    /// conflicts; gives the task back to the queue when the API server cannot be written.
    async fn try_lease(
        &self,
        ns: &str,
        name: &str,
        agent: &str,
        pod: &str,
    ) -> Result<Option<LeasedTask>, ApiError> {
        let api: Api<AgentTask> = Api::namespaced(self.client.clone(), ns);
        for _ in 0..3 {
            let Some(task) = api.get_opt(name).await? else {
                return Ok(None);
            };
            let Some(status) = transition::leased(&task, agent, pod, &now()) else {
                return Ok(None);
            };
            let rv = task.resource_version().unwrap_or_default();
            match write_status(&api, name, &rv, &status).await {
                Ok(_) => {
                    let timeout = task.spec.timeout_seconds.unwrap_or(self.default_timeout_seconds);
                    let started = status
                        .start_time
                        .clone()
                        .map(|t| t.0)
                        .unwrap_or_else(jiff::Timestamp::now);
                    let deadline = started + jiff::SignedDuration::from_secs(timeout);
                    return Ok(Some(LeasedTask {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        uid: task.metadata.uid.clone().unwrap_or_default(),
                        task_type: task.spec.task_type.clone(),
                        input: task.spec.input.clone().unwrap_or(serde_json::Value::Null),
                        attempt: status.attempt,
                        heartbeat_seconds: self.heartbeat_seconds,
                        deadline: deadline.to_string(),
                    }));
                }
                Err(e) if is_conflict(&e) => debug!(task = name, "lease conflicted; reading again"),
                Err(e) => {
                    self.requeue(&task);
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    fn requeue(&self, task: &AgentTask) {
        let (Some(ns), name) = (task.namespace(), task.name_any()) else {
            return;
        };
        let target = match (&task.spec.agent, task.spec.role) {
            (Some(a), _) => Target::Agent(a.clone()),
            (None, Some(r)) => Target::Role(r),
            (None, None) => return,
        };
        let created = task
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or_default();
        if let Ok(mut q) = self.queue.lock() {
            q.upsert(&ns, &name, target, task.spec.priority, created);
        }
        self.queued.notify_waiters();
    }

    /// Reads a task and checks that the bearer acts for the agent it is assigned to.
    async fn assigned_task(
        &self,
        headers: &HeaderMap,
        ns: &str,
        name: &str,
    ) -> Result<(Api<AgentTask>, AgentTask), ApiError> {
        let claims = self.keys.verify_signature(bearer(headers)?)?;
        let api: Api<AgentTask> = Api::namespaced(self.client.clone(), ns);
        let task = api.get_opt(name).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "TaskNotFound",
                format!("no AgentTask {ns}/{name}"),
            )
        })?;
        let agent = task
            .status
            .as_ref()
            .and_then(|s| s.agent.clone())
            .unwrap_or_default();
        if claims.sub != cogo_api::broker::Claims::subject(ns, &agent) {
            return Err(AuthError::WrongAgent.into());
        }
        Ok((api, task))
    }
}

async fn lease(
    State(b): State<Arc<Broker>>,
    Path((ns, agent)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Json<LeaseResponse>, ApiError> {
    b.keys.verify(bearer(&headers)?, &ns, &agent)?;
    let Json(req) = body?;
    if req.slots == 0 || req.slots > 256 || req.pod.is_empty() || req.wait_seconds > MAX_WAIT_SECONDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("slots must be 1 to 256, pod must be set, and waitSeconds at most {MAX_WAIT_SECONDS}"),
        ));
    }
    let role = b
        .agents
        .state()
        .iter()
        .find(|a| a.namespace().as_deref() == Some(ns.as_str()) && a.name_any() == agent)
        .map(|a| a.spec.role)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "AgentNotFound",
                format!("no CogoAgent {ns}/{agent}"),
            )
        })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds.into());
    loop {
        // Register for wake-ups before looking, so a task queued in between is not missed.
        let woken = b.queued.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let names = b
            .queue
            .lock()
            .map(|mut q| q.pop_for(&ns, &agent, role, req.slots as usize))
            .unwrap_or_default();
        let mut tasks = Vec::new();
        for name in names {
            if let Some(t) = b.try_lease(&ns, &name, &agent, &req.pod).await? {
                tasks.push(t);
            }
        }
        if !tasks.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(LeaseResponse { tasks }));
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn heartbeat(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let (_, task) = b.assigned_task(&headers, &ns, &name).await?;
    let Json(req) = body?;
    transition::check_lease(&task, &req.pod, req.attempt).map_err(fence_error)?;
    Ok(Json(HeartbeatResponse {
        cancelled: task.spec.cancel_requested,
    }))
}

fn fence_error(f: Fence) -> ApiError {
    match f {
        Fence::LeaseLost { current } => ApiError::new(
            StatusCode::CONFLICT,
            "LeaseLost",
            format!("this pod does not hold the lease of that attempt (the task's attempt is {current})"),
        ),
        Fence::AlreadyRecorded(phase) => ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyRecorded",
            format!("the attempt already ended as {}", phase.as_str()),
        ),
    }
}

async fn complete(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Json<CompleteResponse>, ApiError> {
    let (api, mut task) = b.assigned_task(&headers, &ns, &name).await?;
    let Json(req) = body?;
    for _ in 0..3 {
        let status = match transition::completed(&task, &req, &now(), b.max_result_bytes) {
            Ok(s) => s,
            Err(Fence::AlreadyRecorded(phase)) => {
                return Ok(Json(CompleteResponse {
                    phase,
                    applied: false,
                }));
            }
            Err(f) => return Err(fence_error(f)),
        };
        let rv = task.resource_version().unwrap_or_default();
        match write_status(&api, &name, &rv, &status).await {
            Ok(_) => {
                let phase = status.phase.unwrap_or(TaskPhase::Running);
                let (type_, reason) = match phase {
                    TaskPhase::Succeeded => (EventType::Normal, "Succeeded"),
                    TaskPhase::Cancelled => (EventType::Normal, "Cancelled"),
                    _ => (EventType::Warning, "Failed"),
                };
                let event = Event {
                    type_,
                    reason: reason.into(),
                    note: status.message.clone().map(|m| m.chars().take(1000).collect()),
                    action: "Complete".into(),
                    secondary: None,
                };
                if let Err(e) = b.recorder.publish(&event, &task.object_ref(&())).await {
                    warn!(error = %e, "cannot publish the task's Event");
                }
                return Ok(Json(CompleteResponse { phase, applied: true }));
            }
            Err(e) if is_conflict(&e) => {
                task = api.get_opt(&name).await?.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "TaskNotFound",
                        format!("no AgentTask {ns}/{name}"),
                    )
                })?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        "the task kept changing; try again",
    ))
}
