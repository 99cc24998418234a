//! The broker's HTTP API, served by the leader. See `cogo_api::broker` for the wire format.
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

use std::{
    sync::{Arc, Mutex, OnceLock, RwLock},
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
    AgentRole, AgentTask, AgentTaskStatus, CogoAgent, TaskPhase, WorkerKind,
    broker::{
        Claims, CompleteRequest, CompleteResponse, ErrorBody, HeartbeatRequest, HeartbeatResponse,
        LeaseRequest, LeaseResponse, LeasedTask, MAX_WAIT_SECONDS, Outcome, SubtaskRequest, TaskView,
        WorkerKeySet, WorkerReport,
    },
};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        events::{EventType, Recorder},
        reflector::{ObjectRef, Store},
    },
};
use tracing::{debug, warn};

use super::{
    auth::{AuthError, Keys},
    leases::{Leases, release},
    queue::TaskQueue,
    transition::{self, Fence, Policy},
    worker_keys::WorkerKeys,
    workers::WorkerReports,
};
use crate::{build::FIELD_MANAGER, controller::publish_task_event, task::Target};

/// Lease writes one lease request makes at a time.
const LEASE_WRITES_IN_FLIGHT: usize = 16;

/// Largest completion body the broker reads: results too large for status are kept whole
/// for the Supabase mirror.
pub const MAX_COMPLETE_BYTES: usize = 16 * 1024 * 1024;

/// Largest request body the broker reads (but for completions).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Memory completions may hold at once while their bodies are read and parsed: each is
/// charged [`PARSE_FACTOR`] times its declared length (16 MiB without one), so large results
/// arriving together wait for each other instead of exhausting the operator's memory.
pub const COMPLETE_BUDGET_BYTES: usize = 96 * 1024 * 1024;

/// How much more memory a parsed JSON body may take than its text.
pub const PARSE_FACTOR: usize = 4;

/// The memory budget of completions being read (see [`COMPLETE_BUDGET_BYTES`]), in KiB.
#[derive(Debug)]
pub struct CompleteBudget {
    free: Arc<tokio::sync::Semaphore>,
    total_kib: usize,
}

impl Default for CompleteBudget {
    fn default() -> Self {
        CompleteBudget::with_bytes(COMPLETE_BUDGET_BYTES)
    }
}

impl CompleteBudget {
    /// A budget of `bytes`.
    pub fn with_bytes(bytes: usize) -> Self {
        let total_kib = (bytes / 1024).max(1);
        CompleteBudget {
            free: Arc::new(tokio::sync::Semaphore::new(total_kib)),
            total_kib,
        }
    }
}

/// A completion's share of [`CompleteBudget`], taken (from its `Content-Length`) after the
/// token is checked and before the body is read; given back when the call ends.
pub struct BodyShare(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl FromRequestParts<Arc<Broker>> for BodyShare {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, b: &Arc<Broker>) -> Result<Self, ApiError> {
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_COMPLETE_BYTES) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLarge",
                format!("the body is over {} MiB", MAX_COMPLETE_BYTES >> 20),
            ));
        }
        let kib = (declared.unwrap_or(MAX_COMPLETE_BYTES) * PARSE_FACTOR)
            .div_ceil(1024)
            .max(1);
        // One body never waits for more than the whole budget.
        let kib = kib.min(b.complete_budget.total_kib) as u32;
        let free = b.complete_budget.free.clone();
        match tokio::time::timeout(Duration::from_secs(10), free.acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(BodyShare(permit)),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "too many large outcomes are being read; offer this one again",
            )),
        }
    }
}

/// What the broker's handlers share.
#[derive(Clone)]
pub struct Broker {
    /// Kubernetes client.
    pub client: Client,
    /// Token keys.
    pub keys: Keys,
    /// Accepted, not yet leased tasks.
    pub queue: Arc<Mutex<TaskQueue>>,
    /// Wakes the lease requests that can take a task just queued, or a slot just freed.
    pub queued: Arc<super::wake::Wakeups>,
    /// Every CogoAgent, to know an agent's role.
    pub agents: Store<CogoAgent>,
    /// Seconds between heartbeats the agents are told.
    pub heartbeat_seconds: u32,
    /// Results larger than this stay out of status.
    pub max_result_bytes: usize,
    /// Leases of running tasks, shared with the task controller.
    pub leases: Arc<Mutex<Leases>>,
    /// The result store, when a database is configured: it keeps results too large for
    /// status. Without one, such a result fails its task with reason `ResultTooLarge`.
    pub results: Option<Arc<crate::mirror::results::ResultStore>>,
    /// The task controller's cache of AgentTasks, once it runs. Reads start there and go to
    /// the API server when the cached view is missing or too old to decide.
    pub tasks: Arc<OnceLock<Store<AgentTask>>>,
    /// Publishes Events on tasks.
    pub recorder: Recorder,
    /// Keys of worker tokens, whose public halves `GET /v1/worker-keys` publishes; None when
    /// the operator issues no worker tokens.
    pub worker_keys: Option<Arc<RwLock<WorkerKeys>>>,
    /// What the Executors report about their workers.
    pub workers: Arc<Mutex<WorkerReports>>,
    /// How many sub-tasks may be made.
    pub subtask_limits: SubtaskLimits,
    /// Memory for completions being read.
    pub complete_budget: Arc<CompleteBudget>,
}

/// Bounds on sub-tasks, so a task that fans out (or recurses) cannot flood the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubtaskLimits {
    /// Sub-tasks one task may have.
    pub per_task: usize,
    /// Levels of sub-tasks below a task created by a user.
    pub depth: usize,
    /// Unfinished sub-tasks in one namespace.
    pub per_namespace: usize,
}

impl Default for SubtaskLimits {
    fn default() -> Self {
        SubtaskLimits {
            per_task: 100,
            depth: 5,
            per_namespace: 10_000,
        }
    }
}

impl SubtaskLimits {
    /// Whether one more sub-task of `parent` in `ns` stays within the limits, judged from
    /// `tasks` (the tasks as cached); the error is the code of the limit it would pass and a
    /// message.
    pub fn check(
        &self,
        tasks: &[Arc<AgentTask>],
        ns: &str,
        parent: &AgentTask,
    ) -> Result<(), (&'static str, String)> {
        let in_ns = || tasks.iter().filter(|t| t.namespace().as_deref() == Some(ns));
        let parent_name = parent.name_any();
        let children = in_ns()
            .filter(|t| t.spec.parent.as_deref() == Some(parent_name.as_str()))
            .count();
        if children >= self.per_task {
            return Err((
                "TooManySubtasks",
                format!(
                    "{parent_name} has {children} sub-tasks, the most one task may have (--max-subtasks-per-task)"
                ),
            ));
        }
        let mut depth = 1;
        let mut up = parent.spec.parent.clone();
        while let Some(name) = up {
            depth += 1;
            if depth > self.depth {
                return Err((
                    "SubtaskTooDeep",
                    format!(
                        "a sub-task of {parent_name} would be {depth} levels below the task a user created; the most is {} (--max-subtask-depth)",
                        self.depth
                    ),
                ));
            }
            up = in_ns()
                .find(|t| t.name_any() == name)
                .and_then(|t| t.spec.parent.clone());
        }
        let open = in_ns()
            .filter(|t| t.spec.parent.is_some())
            .filter(|t| {
                !t.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
            })
            .count();
        if open >= self.per_namespace {
            return Err((
                "TooManySubtasksInNamespace",
                format!(
                    "{ns} has {open} unfinished sub-tasks, the most a namespace may have (--max-subtasks-per-namespace)"
                ),
            ));
        }
        Ok(())
    }
}

/// An error answer: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn task_not_found(ns: &str, name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "TaskNotFound",
            format!("no AgentTask {ns}/{name}"),
        )
    }

    fn agent_not_found(ns: &str, agent: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "AgentNotFound",
            format!("no CogoAgent {ns}/{agent}"),
        )
    }

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
        .route(
            "/v1/namespaces/{ns}/tasks/{name}/complete",
            post(complete).layer(DefaultBodyLimit::max(MAX_COMPLETE_BYTES)),
        )
        .route("/v1/namespaces/{ns}/tasks/{name}/subtasks", post(subtask))
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
        .with_state(Arc::new(broker))
}

/// Whether a lease request is an Executor's request for its workers' task types only.
fn is_worker_lane(agent: &CogoAgent, req: &LeaseRequest) -> bool {
    agent.spec.role == AgentRole::Executor
        && !req.type_prefixes.is_empty()
        && req
            .type_prefixes
            .iter()
            .all(|p| WorkerKind::for_task_type(p).is_some())
}

/// The verified claims of the request's bearer token. As an extractor it runs before the body
/// is read: a request without a valid token is refused without reading a byte of its body.
pub struct Bearer(pub Claims);

impl FromRequestParts<Arc<Broker>> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, b: &Arc<Broker>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        Ok(Bearer(b.keys.verify_signature(token)?))
    }
}

/// The verified claims of a token that acts for the agent the path names
/// (`.../namespaces/{ns}/agents/{agent}/...`), checked, like [`Bearer`], before the body.
pub struct AgentBearer(pub Claims);

impl FromRequestParts<Arc<Broker>> for AgentBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, b: &Arc<Broker>) -> Result<Self, ApiError> {
        let Bearer(claims) = Bearer::from_request_parts(parts, b).await?;
        let Path((ns, agent)) = Path::<(String, String)>::from_request_parts(parts, b)
            .await
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "NotFound", e.body_text()))?;
        if claims.sub != Claims::subject(&ns, &agent) {
            return Err(AuthError::WrongAgent.into());
        }
        Ok(AgentBearer(claims))
    }
}

/// Writes a task's status with server-side apply, only if the task is still at
/// `resource_version` (409 otherwise), so a stale view never overwrites a newer state.
async fn write_status(
    api: &Api<AgentTask>,
    name: &str,
    rv: &str,
    status: &AgentTaskStatus,
) -> kube::Result<AgentTask> {
    let mut status = status.clone();
    crate::task::settle_standing(&mut status, &now());
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
    /// Leases the task `name` to `pod` of `agent`, if it is still Pending. Retries on write
    /// conflicts; gives the task back to the queue when the API server cannot be written.
    async fn try_lease(
        &self,
        ns: &str,
        name: &str,
        mut seen: Option<Arc<AgentTask>>,
        agent: &str,
        pod: &str,
    ) -> Result<Option<LeasedTask>, ApiError> {
        let api: Api<AgentTask> = Api::namespaced(self.client.clone(), ns);
        let mut fresh = false;
        for _ in 0..3 {
            // The object the controller queued is the newest it knew: no read needed.
            let task = match seen.take() {
                Some(t) if !fresh => Some((*t).clone()),
                _ => self.read(&api, ns, name, fresh).await?,
            };
            let Some(task) = task else {
                return Ok(None);
            };
            let Some(status) = transition::leased(&task, agent, pod, &now()) else {
                if fresh {
                    return Ok(None);
                }
                fresh = true;
                continue;
            };
            let rv = task.resource_version().unwrap_or_default();
            match write_status(&api, name, &rv, &status).await {
                Ok(_) => {
                    if let Ok(mut l) = self.leases.lock() {
                        l.hold(ns, name, agent, pod, status.attempt, std::time::Instant::now());
                    }
                    let policy = Policy::of(&task, self.agent(ns, agent).as_deref());
                    let deadline = policy.deadline(&status).unwrap_or_else(|| {
                        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(policy.timeout_seconds)
                    });
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
                Err(e) if is_conflict(&e) => {
                    debug!(task = name, "lease conflicted; reading again");
                    fresh = true;
                }
                Err(e) => {
                    self.requeue(&task);
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    /// The task as cached, or as the API server has it when `fresh` or when not cached.
    async fn read(
        &self,
        api: &Api<AgentTask>,
        ns: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<AgentTask>, ApiError> {
        if !fresh
            && let Some(t) = self
                .tasks
                .get()
                .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
        {
            return Ok(Some((*t).clone()));
        }
        Ok(api.get_opt(name).await?)
    }

    fn agent(&self, ns: &str, name: &str) -> Option<Arc<CogoAgent>> {
        self.agents.get(&ObjectRef::new(name).within(ns))
    }

    /// Takes up to `req.slots` queued tasks of the types `req` wants for `agent`, and reserves
    /// a lease for each. An Executor's lease of its workers' task types (all of
    /// `req.typePrefixes` name worker kinds) is bounded by the slots its workers have free,
    /// which it asks for; any other lease by the agent's free slots (`replicas x concurrency`
    /// minus the tasks its pods hold).
    fn take(&self, ns: &str, agent: &CogoAgent, req: &LeaseRequest) -> Vec<(String, Option<Arc<AgentTask>>)> {
        let name = agent.name_any();
        let Ok(mut leases) = self.leases.lock() else {
            return Vec::new();
        };
        let worker_lane = is_worker_lane(agent, req);
        let slots = req.slots as usize;
        let free = if worker_lane {
            slots
        } else {
            let cap =
                (agent.spec.replicas.max(0) as usize).saturating_mul(agent.spec.concurrency.max(1) as usize);
            cap.saturating_sub(leases.running_for(ns, &name)).min(slots)
        };
        if free == 0 {
            return Vec::new();
        }
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let names = queue.pop_for(ns, &name, agent.spec.role, free, |t| req.wants(t));
        let now = std::time::Instant::now();
        // A task already held (being leased from an older queue entry) is not taken twice.
        let names: Vec<_> = names
            .into_iter()
            .map(|n| {
                let obj = queue.take_object(ns, &n);
                (n, obj)
            })
            .filter(|(n, _)| !leases.contains(ns, n))
            .collect();
        for (n, _) in &names {
            // Attempt 0 is a reservation: it counts against the cap until the lease is written.
            leases.hold(ns, n, &name, &req.pod, 0, now);
            leases.set_counted(ns, n, !worker_lane);
        }
        names
    }

    /// Gives back the reservation of `ns/name` (a lease not written); true when there was one.
    fn unreserve(&self, ns: &str, name: &str) -> bool {
        let Ok(mut l) = self.leases.lock() else {
            return false;
        };
        let reserved = l.state(ns, name, 0, std::time::Instant::now()) != super::leases::LeaseState::Unknown;
        if reserved {
            l.release(ns, name);
        }
        reserved
    }

    fn requeue(&self, task: &AgentTask) {
        let target = match (&task.spec.agent, task.spec.role) {
            (Some(a), _) => Target::Agent(a.clone()),
            (None, Some(r)) => Target::Role(r),
            (None, None) => return,
        };
        if let Ok(mut q) = self.queue.lock() {
            q.upsert_task(target.clone(), Arc::new(task.clone()));
        }
        self.queued
            .target(&task.namespace().unwrap_or_default(), &target, &self.agents);
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
            release(&self.leases, &self.queued, ns, name);
            return Err(ApiError::task_not_found(ns, name));
        };
        if claims.sub != Claims::subject(ns, &assigned_agent(&task)) {
            return Err(AuthError::WrongAgent.into());
        }
        Ok((api, task))
    }
}

/// Tasks a lease request reserved and has not settled yet; dropped unsettled (the request was
/// dropped mid-lease), it gives their reservations back and queues them again. A task whose
/// lease was written keeps it: its pod never heard of it, so its lease runs out and the task is
/// retried by its policy.
struct Reserved<'a> {
    broker: &'a Broker,
    ns: &'a str,
    tasks: Vec<(String, Option<Arc<AgentTask>>)>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        for (name, task) in self.tasks.drain(..) {
            if self.broker.unreserve(self.ns, &name)
                && let Some(task) = task
            {
                self.broker.requeue(&task);
            }
        }
    }
}

async fn lease(
    State(b): State<Arc<Broker>>,
    Path((ns, agent)): Path<(String, String)>,
    _: AgentBearer,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Json<LeaseResponse>, ApiError> {
    let Json(req) = body?;
    if req.slots == 0 || req.slots > 256 || req.pod.is_empty() || req.wait_seconds > MAX_WAIT_SECONDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("slots must be 1 to 256, pod must be set, and waitSeconds at most {MAX_WAIT_SECONDS}"),
        ));
    }
    let prefixes = req.type_prefixes.iter().chain(&req.exclude_type_prefixes);
    if req.type_prefixes.len() + req.exclude_type_prefixes.len() > 16
        || prefixes.clone().any(|p| p.is_empty() || p.len() > 128)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "typePrefixes and excludeTypePrefixes take at most 16 prefixes of 1 to 128 characters",
        ));
    }
    let agent_obj = b
        .agent(&ns, &agent)
        .ok_or_else(|| ApiError::agent_not_found(&ns, &agent))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds.into());
    loop {
        // Register for wake-ups before looking, so a task queued in between is not missed.
        let wakeup = b.queued.of(&ns, &agent);
        let woken = wakeup.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let names = b.take(&ns, &agent_obj, &req);
        // Should this request be dropped before its leases are settled (the pod went away, the
        // broker stops), the reservations are given back and the tasks queued again.
        let mut reserved = Reserved {
            broker: &b,
            ns: &ns,
            tasks: names.iter().map(|(n, t)| (n.clone(), t.clone())).collect(),
        };
        // Leased side by side: a large batch must not age the first leases before the pod
        // even receives them.
        let results: Vec<_> = futures::stream::iter(names)
            .map(|(name, seen)| {
                let (b, ns, agent, pod) = (&b, &ns, &agent, &req.pod);
                async move { (b.try_lease(ns, &name, seen, agent, pod).await, name) }
            })
            .buffer_unordered(LEASE_WRITES_IN_FLIGHT)
            .collect()
            .await;
        reserved.tasks.clear();
        let mut tasks = Vec::new();
        let mut failed = None;
        for (result, name) in results {
            match result {
                Ok(Some(t)) => tasks.push(t),
                Ok(None) => {
                    b.unreserve(&ns, &name);
                }
                // try_lease gave the task back to the queue.
                Err(e) => {
                    b.unreserve(&ns, &name);
                    failed = Some(e);
                }
            }
        }
        // The leases run from the moment the pod is told, not from the write.
        if let Ok(mut l) = b.leases.lock() {
            let now = std::time::Instant::now();
            for t in &tasks {
                l.hold(&ns, &t.name, &agent, &req.pod, t.attempt, now);
            }
        }
        // Tasks already leased are handed out even if a later lease failed.
        if let Some(e) = failed
            && tasks.is_empty()
        {
            return Err(e);
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
    Bearer(claims): Bearer,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let Json(req) = body?;
    let (_, mut task) = b
        .held_task(&claims, &ns, &name, Some((&req.pod, req.attempt)))
        .await?;
    let renewed = b
        .leases
        .lock()
        .ok()
        .and_then(|mut l| l.renew(&ns, &name, &req.pod, req.attempt, std::time::Instant::now()));
    if renewed.is_none() {
        // Not in the table (released, or held by another operator before this one led): only
        // the task's status at the API server may say this pod still runs it.
        task = b.assigned_task(&claims, &ns, &name, true).await?.1;
        transition::check_lease(&task, &req.pod, req.attempt).map_err(fence_error)?;
        let counted = crate::controller::task::counts_against_agent(&b.agents, &ns, &task);
        if let Ok(mut l) = b.leases.lock() {
            l.hold(
                &ns,
                &name,
                &assigned_agent(&task),
                &req.pod,
                req.attempt,
                std::time::Instant::now(),
            );
            l.set_counted(&ns, &name, counted);
        }
    }
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
    Bearer(claims): Bearer,
    _share: BodyShare,
    body: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Json<CompleteResponse>, ApiError> {
    let Json(mut req) = body?;
    let (api, mut task) = b.held_task(&claims, &ns, &name, None).await?;
    let room = transition::ResultRoom {
        status_bytes: b.max_result_bytes,
        store: b.results.is_some(),
    };
    let mut fresh = false;
    for _ in 0..3 {
        let policy = Policy::of(&task, b.agent(&ns, &assigned_agent(&task)).as_deref());
        let status = match transition::completed(&task, &req, &policy, &now(), room) {
            Ok(s) => s,
            Err(Fence::AlreadyRecorded(phase)) => {
                return Ok(Json(CompleteResponse {
                    phase,
                    applied: false,
                }));
            }
            // The cached view may predate the lease: ask the API server.
            Err(Fence::LeaseLost { .. }) if !fresh => {
                fresh = true;
                task = b.assigned_task(&claims, &ns, &name, true).await?.1;
                continue;
            }
            Err(f) => return Err(fence_error(f)),
        };
        let rv = task.resource_version().unwrap_or_default();
        // A result too large for status is stored before the outcome is recorded, so an
        // acknowledged result survives any restart; until the store takes it, the agent offers
        // the outcome again.
        if let (Some(store), Some(r), Some(result)) = (&b.results, &status.result_ref, &req.result) {
            use crate::mirror::results::StoreError;
            match store
                .put(&crate::mirror::row::row_id(&task, &b.keys), &r.digest, result)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Unavailable(why)) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ResultStoreUnavailable",
                        format!("the result store cannot take the result now ({why}); offer it again"),
                    ));
                }
                Err(e @ StoreError::Refused(_)) => {
                    req = CompleteRequest {
                        outcome: Outcome::Failed,
                        result: None,
                        error: Some(format!("{}: {e}", transition::reason::INVALID_RESULT)),
                        retryable: false,
                        ..req
                    };
                    continue;
                }
            }
        }
        match write_status(&api, &name, &rv, &status).await {
            Ok(_) => {
                release(&b.leases, &b.queued, &ns, &name);
                let phase = status.phase.unwrap_or(TaskPhase::Running);
                // Success is in status; an Event for it would be one more write per task.
                let event = match phase {
                    TaskPhase::Succeeded => None,
                    TaskPhase::Cancelled => Some((EventType::Normal, "Cancelled")),
                    TaskPhase::Pending => Some((EventType::Warning, "BackingOff")),
                    _ => Some((EventType::Warning, "Failed")),
                };
                if let Some(event) = event {
                    publish_task_event(&b.recorder, &task, event, status.message.as_deref(), "Complete")
                        .await;
                }
                return Ok(Json(CompleteResponse { phase, applied: true }));
            }
            Err(e) if is_conflict(&e) => {
                fresh = true;
                task = b.assigned_task(&claims, &ns, &name, true).await?.1;
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

fn view(task: &AgentTask) -> TaskView {
    let s = task.status.clone().unwrap_or_default();
    TaskView {
        namespace: task.namespace().unwrap_or_default(),
        name: task.name_any(),
        uid: task.metadata.uid.clone().unwrap_or_default(),
        task_type: task.spec.task_type.clone(),
        parent: task.spec.parent.clone(),
        phase: s.phase.unwrap_or_default(),
        attempt: s.attempt,
        result: s.result,
        result_ref: s.result_ref,
        message: s.message,
    }
}

/// The longest generated-name prefix: the API server appends 5 characters to it.
const MAX_GENERATE_NAME_PREFIX: usize = 58;

async fn subtask(
    State(b): State<Arc<Broker>>,
    Path((ns, parent_name)): Path<(String, String)>,
    Bearer(claims): Bearer,
    body: Result<Json<SubtaskRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let Json(req) = body?;
    let (api, parent) = b
        .held_task(&claims, &ns, &parent_name, Some((&req.pod, req.attempt)))
        .await?;
    if req.agent.is_some() == req.role.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "set exactly one of agent and role",
        ));
    }
    if let Some(why) = req
        .input
        .as_ref()
        .and_then(|i| cogo_api::json::too_deep("input", i))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InputTooDeep",
            why,
        ));
    }
    // A retried call for a sub-task that exists already is answered below, whatever the limits.
    let exists = req.name.as_ref().is_some_and(|n| {
        b.tasks
            .get()
            .and_then(|s| s.get(&ObjectRef::new(n).within(&ns)))
            .is_some_and(|t| t.spec.parent.as_deref() == Some(parent_name.as_str()))
    });
    if !exists && let Some(store) = b.tasks.get() {
        b.subtask_limits
            .check(&store.state(), &ns, &parent)
            .map_err(|(code, message)| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message))?;
    }
    let mut meta = kube::api::ObjectMeta {
        namespace: Some(ns.clone()),
        owner_references: Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: AgentTask::api_version(&()).into(),
                kind: AgentTask::kind(&()).into(),
                name: parent_name.clone(),
                uid: parent.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    // The name is made here, not by the API server, so that a sealed parent's sub-task can be
    // sealed (the seal covers the name) before it is created.
    let mut prefix: String = parent_name.chars().take(MAX_GENERATE_NAME_PREFIX - 1).collect();
    prefix.push('-');
    meta.name = Some(req.name.clone().unwrap_or_else(|| generated_name(&prefix)));
    let mut child = AgentTask {
        metadata: meta,
        spec: cogo_api::AgentTaskSpec {
            agent: req.agent.clone(),
            role: req.role,
            task_type: req.task_type.clone(),
            input: req.input.clone(),
            priority: req.priority,
            timeout_seconds: req.timeout_seconds,
            retry: None,
            ttl_seconds_after_finished: None,
            parent: Some(parent_name.clone()),
            requester: parent.spec.requester.clone(),
            cancel_requested: false,
        },
        status: None,
    };
    // A sub-task is its parent's user's only when the parent is (see `crate::seal`).
    let sealed = crate::seal::verify(&b.keys, &parent);
    if sealed {
        crate::seal::seal(&b.keys, &mut child);
    }
    let params = kube::api::PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let mut created = api.create(&params, &child).await;
    // A generated name that is taken already: another one.
    for _ in 0..3 {
        match &created {
            Err(kube::Error::Api(e)) if e.code == 409 && req.name.is_none() => {
                child.metadata.name = Some(generated_name(&prefix));
                if sealed {
                    crate::seal::seal(&b.keys, &mut child);
                }
                created = api.create(&params, &child).await;
            }
            _ => break,
        }
    }
    match created {
        Ok(created) => Ok((StatusCode::CREATED, Json(view(&created)))),
        // A retried call finds the sub-task it created the first time.
        Err(kube::Error::Api(e)) if e.code == 409 && req.name.is_some() => {
            let name = req.name.clone().unwrap_or_default();
            match api.get_opt(&name).await? {
                Some(existing) if existing.spec.parent.as_deref() == Some(parent_name.as_str()) => {
                    Ok((StatusCode::OK, Json(view(&existing))))
                }
                _ => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("an AgentTask {ns}/{name} exists and is not a sub-task of {parent_name}"),
                )),
            }
        }
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidTask",
            e.message,
        )),
        Err(e) => Err(e.into()),
    }
}

/// `prefix` and five random lower-case letters and digits, as the API server's `generateName`.
fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    if getrandom_fill(&mut bytes).is_err() {
        // No random source: the time's nanoseconds are unpredictable enough for a name.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (n >> (i * 6)) as u8;
        }
    }
    let suffix: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn getrandom_fill(bytes: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(bytes)
}

async fn read_task(
    State(b): State<Arc<Broker>>,
    Path((ns, name)): Path<(String, String)>,
    Bearer(claims): Bearer,
) -> Result<Json<TaskView>, ApiError> {
    if !claims
        .sub
        .starts_with(&cogo_api::broker::Claims::subject(&ns, ""))
    {
        return Err(AuthError::WrongAgent.into());
    }
    let task = Api::<AgentTask>::namespaced(b.client.clone(), &ns)
        .get_opt(&name)
        .await?
        .ok_or_else(|| ApiError::task_not_found(&ns, &name))?;
    Ok(Json(view(&task)))
}

/// The most workers and job totals one report may list.
const MAX_REPORTED: usize = 4096;

async fn report_workers(
    State(b): State<Arc<Broker>>,
    Path((ns, agent)): Path<(String, String)>,
    _: AgentBearer,
    body: Result<Json<WorkerReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(report) = body?;
    let executor = b
        .agent(&ns, &agent)
        .ok_or_else(|| ApiError::agent_not_found(&ns, &agent))?;
    if executor.spec.role != AgentRole::Executor {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!(
                "{agent} is a {} agent; only Executors report workers",
                executor.spec.role
            ),
        ));
    }
    if report.pod.is_empty() || report.workers.len() > MAX_REPORTED || report.jobs.len() > MAX_REPORTED {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("pod must be set, and workers and jobs list at most {MAX_REPORTED} entries"),
        ));
    }
    if let Ok(mut w) = b.workers.lock() {
        w.record(&ns, &agent, report, std::time::Instant::now());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn worker_keys(State(b): State<Arc<Broker>>) -> Result<Json<WorkerKeySet>, ApiError> {
    let keys = b.worker_keys.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NoWorkerKeys",
            "this operator issues no worker tokens",
        )
    })?;
    let set = keys.read().map(|k| k.key_set()).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "the key table is poisoned",
        )
    })?;
    Ok(Json(set))
}

#[cfg(test)]
mod tests {
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
