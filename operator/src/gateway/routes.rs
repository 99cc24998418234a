//! The gateway's routes: the Edge Function route and the REST routes, each an action behind
//! [`authenticate`] and its permission.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{MethodRouter, get, post},
};
use cogo_api::{
    AgentRole, AgentTask, TaskPhase,
    catalogue::{
        self,
        workflow::{CHAT, ChatResult, GREETING, GreetingResult},
    },
    gateway::{
        AgentSummary, DEFAULT_LANGUAGE, EdgeRequest, ErrorBody, GreetingRequest, LANGUAGES, Language,
        LanguagesResponse, MessageRequest, MessageResponse, QueueDepth, StatusEvent, StatusResponse,
        TaskRequest, TaskResponse, WorkerSummary, codes, is_language, permissions as perm,
    },
};
use futures::{SinkExt, StreamExt};
use kube::{
    ResourceExt,
    runtime::{events::EventType, reflector::Store},
};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{
    Gateway,
    db::{AuditRecord, DbError},
    jwt,
    perms::{self, allows},
    tasks::Follow,
};

/// An error answer: its status, stable code and message, and when to retry.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// When to retry (429 and some 503s).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error of `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.into(),
            message: self.message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: never earlier than a token is back.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::UnknownUser => ApiError::new(
                StatusCode::FORBIDDEN,
                codes::UNKNOWN_USER,
                "the token's user is not in auth.users",
            ),
            DbError::Invalid(why) => {
                tracing::debug!(error = %why, "the database refuses a value of a request");
                ApiError::bad(
                    codes::INVALID_REQUEST,
                    "the request holds a value the database cannot store (a NUL character, say)",
                )
            }
            // The details (the server's message, names of tables and roles) go to the log only.
            DbError::Unavailable(why) | DbError::Refused(why) => {
                tracing::warn!(error = %why, "the gateway's database failed");
                unavailable(
                    codes::DATABASE_UNAVAILABLE,
                    "the database is unavailable; try again",
                )
            }
        }
    }
}

fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        retry_after: Some(Duration::from_secs(1)),
        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

/// Who is asking.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Their Supabase user id.
    pub user: String,
    /// Their email, when the token has it.
    pub email: Option<String>,
    /// What they may do.
    pub grants: Vec<String>,
    /// Where they ask from.
    pub address: IpAddr,
}

/// The action of a request, and the permission it needs.
fn action(req: &EdgeRequest) -> (&'static str, &'static str) {
    match req {
        EdgeRequest::Status => ("status", perm::AGENTS),
        EdgeRequest::Languages => ("languages", perm::CHAT_READ),
        EdgeRequest::AiGreeting(_) => ("ai_greeting", perm::CHAT_READ),
        EdgeRequest::SendMessage(_) => ("send_message", perm::CHAT_SEND),
        EdgeRequest::AgentTask(_) => ("agent_task", perm::TASKS_CREATE),
    }
}

/// The routes of `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let limit = gateway.settings.max_body_bytes;
    Router::new()
        .route("/functions/v1/chat-gateway", post(edge))
        .route("/v1/status", without_body(|| EdgeRequest::Status))
        .route("/v1/languages", without_body(|| EdgeRequest::Languages))
        .route("/v1/greeting", with_body(EdgeRequest::AiGreeting))
        .route("/v1/messages", with_body(EdgeRequest::SendMessage))
        .route("/v1/tasks", with_body(EdgeRequest::AgentTask))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                codes::METHOD_NOT_ALLOWED,
                "the route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(cogo_api::openapi::render_gateway);
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

type Body = Result<Bytes, BytesRejection>;

/// The body as JSON of type `T`, with the gateway's errors for each way it is not.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::REQUEST_TOO_LARGE,
                format!("the body is over {limit} bytes"),
            )
        } else {
            ApiError::bad(codes::MALFORMED_REQUEST, format!("cannot read the body: {e}"))
        }
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        ));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(codes::MALFORMED_REQUEST, format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad(
            codes::MALFORMED_REQUEST,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad(codes::INVALID_REQUEST, e.to_string()))
}

async fn edge(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = gw.settings.max_body_bytes;
    handle(gw, peer.ip(), headers.clone(), move || {
        json_body(&headers, body, limit)
    })
    .await
}

/// A REST route without a body: always the action `req`.
fn without_body(req: fn() -> EdgeRequest) -> MethodRouter<Arc<Gateway>> {
    get(
        move |State(gw): State<Arc<Gateway>>,
              ConnectInfo(peer): ConnectInfo<SocketAddr>,
              headers: HeaderMap| async move { handle(gw, peer.ip(), headers, || Ok(req())).await },
    )
}

/// A REST route whose JSON body of type `T` is the action `wrap` makes of it.
fn with_body<T: serde::de::DeserializeOwned + Send + 'static>(
    wrap: fn(T) -> EdgeRequest,
) -> MethodRouter<Arc<Gateway>> {
    post(
        move |State(gw): State<Arc<Gateway>>,
              ConnectInfo(peer): ConnectInfo<SocketAddr>,
              headers: HeaderMap,
              body: Body| async move {
            let limit = gw.settings.max_body_bytes;
            handle(gw, peer.ip(), headers.clone(), move || {
                json_body::<T>(&headers, body, limit).map(wrap)
            })
            .await
        },
    )
}

/// The address whose bucket a request takes from: IPv4 addresses as they are, IPv6 addresses by
/// their /64 (one host usually has a whole /64 to pick from).
fn bucket_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)),
        v4 => v4,
    }
}

/// Rate-limits, authenticates, parses, checks the permission, runs the action and audits it.
async fn handle(
    gw: Arc<Gateway>,
    address: IpAddr,
    headers: HeaderMap,
    parse: impl FnOnce() -> Result<EdgeRequest, ApiError>,
) -> Response {
    if let Err(wait) = gw.addresses.take(&bucket_of(address), Instant::now()) {
        // Not audited: a flood from one address must not become a flood of audit rows.
        return limited(wait, "this address").into_response();
    }
    let mut record = AuditRecord {
        address: address.to_string(),
        action: "unknown".into(),
        ..Default::default()
    };
    let authenticated = authenticate(&gw, &headers, address, &mut record).await;
    // A task made for the request is traced as this span's child; an authenticated caller's own
    // `traceparent` makes it a child of the caller's span (an anonymous one cannot pick the
    // trace, or have it sampled).
    let span = tracing::info_span!(
        target: "cogo::trace",
        "cogo.gateway.request",
        otel.kind = "server",
        cogo.gateway.action = tracing::field::Empty,
        enduser.id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if authenticated.is_ok() {
        cogo_telemetry::follow(&span, headers.get("traceparent").and_then(|v| v.to_str().ok()));
    }
    let outcome = async {
        let caller = authenticated?;
        let req = parse()?;
        let (name, needed) = action(&req);
        record.action = name.into();
        let span = tracing::Span::current();
        span.record("cogo.gateway.action", name);
        span.record("enduser.id", caller.user.as_str());
        if !allows(&caller.grants, needed) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::PERMISSION_DENIED,
                format!("{name} needs the permission {needed}, which the user's roles do not grant"),
            ));
        }
        let stream = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let timeout = gw.settings.request_timeout;
        match req {
            EdgeRequest::Status => within(timeout, status(&gw, &caller)).await,
            EdgeRequest::Languages => Ok(axum::Json(languages()).into_response()),
            EdgeRequest::AiGreeting(r) => greeting(&gw, &caller, r, &mut record).await,
            EdgeRequest::SendMessage(r) => message(&gw, &caller, r, stream, &mut record).await,
            EdgeRequest::AgentTask(r) => agent_task(&gw, &caller, r, stream, &mut record).await,
        }
    }
    .instrument(span.clone())
    .await;
    let response = outcome.unwrap_or_else(|e| {
        record.code = Some(e.code.into());
        if e.status.is_server_error() {
            record.detail = Some(e.message.chars().take(1000).collect());
        }
        e.into_response()
    });
    record.status = response.status().as_u16();
    span.record("http.response.status_code", record.status);
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    audit(&gw.audit, record).await;
    response
}

/// Queues an audit record, waiting up to 5 s when the queue is full (the database is away);
/// past that the record is logged and dropped, so requests never wait on the audit for long.
async fn audit(queue: &tokio::sync::mpsc::Sender<AuditRecord>, record: AuditRecord) {
    if let Err(e) = queue.send_timeout(record, Duration::from_secs(5)).await {
        tracing::warn!(record = ?e.into_inner(), "the gateway's audit queue is full; a record is dropped");
    }
}

async fn within<T>(limit: Duration, work: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            codes::TIMEOUT,
            format!("the request took over {} s", limit.as_secs()),
        ))
    })
}

fn limited(wait: Duration, whose: &str) -> ApiError {
    ApiError {
        retry_after: Some(wait),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            format!(
                "too many requests from {whose}; retry after {:.1} s",
                wait.as_secs_f64()
            ),
        )
    }
}

/// Verifies the bearer token, rate-limits its user and reads what they may do.
pub async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    address: IpAddr,
    record: &mut AuditRecord,
) -> Result<Caller, ApiError> {
    let auth = |e: jwt::JwtError| {
        ApiError::new(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            e.code(),
            e.to_string(),
        )
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let token = jwt::bearer(header).map_err(auth)?;
    let claims = gw.verifier.verify(token).await.map_err(auth)?;
    record.user_id = Some(claims.sub.clone());
    gw.users
        .take(&claims.sub, Instant::now())
        .map_err(|wait| limited(wait, "this user"))?;
    let row = gw.roles(&claims.sub).await?;
    let grants =
        perms::grants(&claims.permissions, row.as_ref(), gw.settings.domain.as_deref()).map_err(|_| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                codes::INACTIVE_USER,
                "the user is not active (user_roles.is_active is false)",
            )
        })?;
    Ok(Caller {
        user: claims.sub,
        email: claims.email,
        grants,
        address,
    })
}

fn languages() -> LanguagesResponse {
    LanguagesResponse {
        default: DEFAULT_LANGUAGE.into(),
        languages: LANGUAGES
            .iter()
            .map(|(code, name, native)| Language {
                code: (*code).into(),
                name: (*name).into(),
                native_name: (*native).into(),
            })
            .collect(),
    }
}

fn is_ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The objects of `store` once its watch listed them, at most `within` from now.
async fn listed<K>(store: &Store<K>, within: Duration) -> Result<Vec<Arc<K>>, ApiError>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    // Shorter than the request's own limit, so this answer (503) is the one given.
    // Many requests may wait at once for a watch that has not listed yet.
    tokio::time::timeout(within / 2, crate::kube_io::listed(store))
        .await
        .map_err(|_| {
            unavailable(
                codes::KUBERNETES_UNAVAILABLE,
                "the gateway has not listed the namespace yet",
            )
        })?
        .map_err(|e| unavailable(codes::KUBERNETES_UNAVAILABLE, e.to_string()))?;
    let mut all = store.state();
    all.sort_by_key(|o| o.name_any());
    Ok(all)
}

async fn status(gw: &Gateway, caller: &Caller) -> Result<Response, ApiError> {
    let agents = listed(&gw.agents, gw.settings.request_timeout).await?;
    let mut queue = QueueDepth::default();
    let summaries: Vec<AgentSummary> = agents
        .iter()
        .map(|a| {
            let s = a.status.clone().unwrap_or_default();
            let q = s.queue.map(|q| QueueDepth {
                pending: q.pending,
                running: q.running,
            });
            let q = q.unwrap_or_default();
            queue.pending += q.pending;
            queue.running += q.running;
            AgentSummary {
                name: a.name_any(),
                role: a.spec.role,
                ready: is_ready(&s.conditions),
                replicas: s.replicas,
                ready_replicas: s.ready_replicas,
                queue: q,
                model: s.model.map(|m| m.name),
            }
        })
        .collect();
    let workers = if allows(&caller.grants, perm::WORKERS) {
        let list = listed(&gw.workers, gw.settings.request_timeout).await?;
        Some(
            list.iter()
                .map(|w| {
                    let s = w.status.clone().unwrap_or_default();
                    WorkerSummary {
                        name: w.name_any(),
                        kind: w.spec.kind,
                        ready: is_ready(&s.conditions),
                        replicas: s.replicas,
                        ready_replicas: s.ready_replicas,
                        connected_workers: s.connected_workers.unwrap_or(0),
                    }
                })
                .collect(),
        )
    } else {
        None
    };
    let body = StatusResponse {
        namespace: gw.settings.namespace.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        agents: Some(summaries),
        workers,
        queue: allows(&caller.grants, perm::TASKS_READ).then_some(queue),
    };
    Ok(axum::Json(body).into_response())
}

fn check_language(language: Option<&str>) -> Result<Option<String>, ApiError> {
    match language {
        None => Ok(None),
        Some(l) if is_language(l) => Ok(Some(l.to_ascii_lowercase())),
        Some(l) => Err(ApiError::bad(
            codes::INVALID_REQUEST,
            format!("language {l:?} is not one chat answers in; GET /v1/languages lists them"),
        )),
    }
}

/// Checks that an Orchestrator with a model is there to answer.
async fn orchestrator_with_model(gw: &Gateway) -> Result<(), ApiError> {
    let agents = listed(&gw.agents, gw.settings.request_timeout).await?;
    let orchestrators: Vec<_> = agents
        .iter()
        .filter(|a| a.spec.role == AgentRole::Orchestrator)
        .collect();
    if orchestrators.is_empty() {
        return Err(unavailable(
            codes::NO_AGENT,
            format!("no Orchestrator CogoAgent in namespace {}", gw.settings.namespace),
        ));
    }
    if !orchestrators.iter().any(|a| a.spec.model.is_some()) {
        return Err(unavailable(
            codes::NO_MODEL,
            "the Orchestrator has no model: set spec.model on its CogoAgent",
        ));
    }
    Ok(())
}

/// Creates a task as the caller, through the operator's intake, and waits until it exists.
async fn start(
    gw: &Gateway,
    caller: &Caller,
    (role, task_type): (AgentRole, &str),
    input: &Value,
    session: Option<&str>,
    record: &mut AuditRecord,
) -> Result<(String, Follow, Arc<AgentTask>), ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let name = format!("row-{id}");
    // Followed before the row exists, so the task's first version cannot be missed.
    let mut follow = gw.hub.follow(&name);
    let trace = cogo_telemetry::traceparent(&tracing::Span::current());
    gw.db
        .task(
            &id,
            (task_type, role.slug()),
            input,
            (&caller.user, session),
            (trace.as_deref(), &gw.settings.namespace),
        )
        .await?;
    record.task = Some(name.clone());
    record.detail = Some(task_type.to_string());
    let Some(task) = follow.next(gw.settings.intake_timeout).await else {
        return Err(unavailable(
            codes::INTAKE_UNAVAILABLE,
            format!(
                "the operator did not take the task in within {} s: is its intake on for namespace {}? \
                 The row {id} stays pending, and becomes the task {name} when it is",
                gw.settings.intake_timeout.as_secs(),
                gw.settings.namespace
            ),
        ));
    };
    let note = format!(
        "requested by user {}{} from {} through the chat gateway",
        caller.user,
        caller
            .email
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        caller.address
    );
    let (recorder, t) = (gw.recorder.clone(), task.clone());
    tokio::spawn(async move {
        crate::kube_io::publish_task_event(
            &recorder,
            &t,
            (EventType::Normal, "Requested"),
            Some(&note),
            "Request",
        )
        .await;
    });
    Ok((id, follow, task))
}

fn event_of(task: &AgentTask) -> StatusEvent {
    let s = task.status.clone().unwrap_or_default();
    StatusEvent {
        task: task.name_any(),
        phase: s.phase.unwrap_or_default(),
        attempt: s.attempt,
        message: s.message,
    }
}

type Events = futures::channel::mpsc::Sender<Event>;

/// Whom a task's progress goes to, and whether following it is still worth it once they left.
enum Progress<'a> {
    /// Nobody: the answer comes at the end.
    Silent,
    /// A stream; when its client left, following stops (nothing is left to do for it).
    Stream(&'a mut Events),
    /// A stream; following goes on when its client left (the end still has work to do).
    StreamThenFinish(&'a mut Events),
}

impl Progress<'_> {
    /// Sends a `status` event; false when following should stop.
    async fn send(&mut self, event: &StatusEvent) -> bool {
        let (tx, stop_when_gone) = match self {
            Progress::Silent => return true,
            Progress::Stream(tx) => (tx, true),
            Progress::StreamThenFinish(tx) => (tx, false),
        };
        // Bounded, so a client that does not read cannot hold the wait past its limit.
        let sent = tokio::time::timeout(Duration::from_secs(5), tx.send(sse("status", event))).await;
        !stop_when_gone || matches!(sent, Ok(Ok(())))
    }
}

/// Follows the task until it ends or `within` passes, sending a `status` event to `progress`
/// on each change of its phase, attempt or message. Ok with the ended task, Err with the last
/// seen (the wait ran out, or the stream's client left).
async fn until_done(
    mut follow: Follow,
    first: Arc<AgentTask>,
    within: Duration,
    mut progress: Progress<'_>,
) -> Result<Arc<AgentTask>, Arc<AgentTask>> {
    let until = tokio::time::Instant::now() + within;
    let mut last = event_of(&first);
    if !progress.send(&last).await {
        return Err(first);
    }
    let mut task = first;
    loop {
        if last.phase.is_terminal() {
            return Ok(task);
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match follow.next(left).await {
            Some(t) => {
                let now = event_of(&t);
                task = t;
                if now != last {
                    if !progress.send(&now).await {
                        return Err(task);
                    }
                    last = now;
                }
            }
            None => return Err(task),
        }
    }
}

/// The result of an ended task, from its status or, when it was too large for status, from the
/// mirror's row.
async fn result_of(gw: &Gateway, id: &str, task: &AgentTask) -> Option<Value> {
    let s = task.status.as_ref()?;
    if let Some(r) = &s.result {
        return Some(r.clone());
    }
    s.result_ref.as_ref()?;
    for _ in 0..50 {
        if let Ok(Some(v)) = gw.db.result(id).await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn failed(task: &AgentTask) -> ApiError {
    let s = task.status.clone().unwrap_or_default();
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        codes::TASK_FAILED,
        format!(
            "the task {} ended {}: {}",
            task.name_any(),
            s.phase.unwrap_or_default().as_str(),
            s.message.unwrap_or_default()
        ),
    )
}

fn timed_out(task: &AgentTask, within: Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        codes::TIMEOUT,
        format!(
            "the task {} did not end within {} s; it goes on",
            task.name_any(),
            within.as_secs()
        ),
    )
}

async fn greeting(
    gw: &Gateway,
    caller: &Caller,
    r: GreetingRequest,
    record: &mut AuditRecord,
) -> Result<Response, ApiError> {
    let language = check_language(r.language.as_deref())?.unwrap_or_else(|| DEFAULT_LANGUAGE.into());
    if r.name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err(ApiError::bad(
            codes::INVALID_REQUEST,
            "name is over 100 characters",
        ));
    }
    within(gw.settings.request_timeout, orchestrator_with_model(gw)).await?;
    let input = serde_json::to_value(catalogue::workflow::GreetingInput {
        language: language.clone(),
        name: r.name,
    })
    .unwrap_or_default();
    let (id, follow, task) = start(
        gw,
        caller,
        (AgentRole::Orchestrator, GREETING),
        &input,
        None,
        record,
    )
    .await?;
    let within = gw.settings.answer_timeout;
    let done = until_done(follow, task, within, Progress::Silent)
        .await
        .map_err(|t| timed_out(&t, within))?;
    let result = result_of(gw, &id, &done)
        .await
        .filter(|_| is_succeeded(&done))
        .ok_or_else(|| failed(&done))?;
    let answer: GreetingResult = serde_json::from_value(result)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, codes::TASK_FAILED, e.to_string()))?;
    Ok(axum::Json(cogo_api::gateway::GreetingResponse {
        greeting: answer.greeting,
        language: answer.language,
        task: done.name_any(),
        usage: answer.usage,
    })
    .into_response())
}

fn is_succeeded(task: &AgentTask) -> bool {
    task.status.as_ref().and_then(|s| s.phase) == Some(TaskPhase::Succeeded)
}

/// An SSE answer fed by `work`, which sends its events on the channel it is given.
fn streamed<F>(work: impl FnOnce(Events) -> F) -> Response
where
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = futures::channel::mpsc::channel::<Event>(16);
    tokio::spawn(work(tx));
    Sse::new(rx.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse<T: Serialize>(name: &str, body: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(body)
        .unwrap_or_else(|_| Event::default().event(name))
}

async fn message(
    gw: &Arc<Gateway>,
    caller: &Caller,
    r: MessageRequest,
    stream: bool,
    record: &mut AuditRecord,
) -> Result<Response, ApiError> {
    let session = r.session_id.trim().to_string();
    if session.is_empty() || session.chars().count() > 255 {
        return Err(ApiError::bad(
            codes::INVALID_REQUEST,
            "sessionId must have 1 to 255 characters",
        ));
    }
    if r.message.trim().is_empty() || r.message.chars().count() > 32768 {
        return Err(ApiError::bad(
            codes::INVALID_REQUEST,
            "message must have 1 to 32768 characters",
        ));
    }
    let language = check_language(r.language.as_deref())?;
    within(gw.settings.request_timeout, orchestrator_with_model(gw)).await?;
    let message_id = uuid::Uuid::new_v4().to_string();
    gw.db
        .message((&message_id, &session), &caller.user, &r.message, ("user", None))
        .await?;
    let input = serde_json::to_value(catalogue::workflow::ChatInput {
        session_id: session.clone(),
        message: r.message,
        language,
    })
    .unwrap_or_default();
    let (id, follow, task) = start(
        gw,
        caller,
        (AgentRole::Orchestrator, CHAT),
        &input,
        Some(&session),
        record,
    )
    .await?;
    let reply = Reply {
        gw: gw.clone(),
        id,
        user: caller.user.clone(),
        message_id,
        session,
        within: gw.settings.answer_timeout,
    };
    if !stream {
        let done = until_done(follow, task, reply.within, Progress::Silent).await;
        return Ok(axum::Json(reply.finish(done).await?).into_response());
    }
    // The request's audit row says the stream started; how it ended is a row of its own.
    let (queue, mut ended) = (gw.audit.clone(), record.clone());
    Ok(streamed(move |mut tx| async move {
        let done = until_done(follow, task, reply.within, Progress::StreamThenFinish(&mut tx)).await;
        let last = match reply.finish(done).await {
            Ok(answer) => sse("result", &answer),
            Err(e) => {
                (ended.status, ended.code) = (e.status.as_u16(), Some(e.code.into()));
                ended.detail = Some(e.message.chars().take(1000).collect());
                audit(&queue, ended).await;
                sse("error", &e.body())
            }
        };
        let _ = tx.send(last).await;
    }))
}

/// What `send_message` does once its task ended: the reply, stored as the assistant's message.
struct Reply {
    gw: Arc<Gateway>,
    /// The task's row.
    id: String,
    user: String,
    message_id: String,
    session: String,
    within: Duration,
}

impl Reply {
    async fn finish(self, done: Result<Arc<AgentTask>, Arc<AgentTask>>) -> Result<MessageResponse, ApiError> {
        let done = done.map_err(|t| timed_out(&t, self.within))?;
        let result = result_of(&self.gw, &self.id, &done)
            .await
            .filter(|_| is_succeeded(&done))
            .ok_or_else(|| failed(&done))?;
        let chat: ChatResult = serde_json::from_value(result)
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, codes::TASK_FAILED, e.to_string()))?;
        let reply_id = uuid::Uuid::new_v4().to_string();
        let name = done.name_any();
        self.gw
            .db
            .message(
                (&reply_id, &self.session),
                &self.user,
                &chat.reply,
                ("assistant", Some(&name)),
            )
            .await?;
        Ok(MessageResponse {
            message_id: self.message_id,
            reply_id,
            session_id: self.session,
            task: name,
            reply: chat.reply,
            tasks: chat.tasks,
            usage: chat.usage,
        })
    }
}

/// The catalogue entry of `task_type` for `role`, or why there is none.
fn entry_for(role: AgentRole, task_type: &str) -> Result<Option<catalogue::Entry>, ApiError> {
    if matches!(
        task_type,
        "cogo.echo" | "cogo.sleep" | "cogo.fail" | "cogo.fanout"
    ) {
        // Every agent runs the built-ins; their inputs are free.
        return Ok(None);
    }
    let all = catalogue::requestable();
    match all.into_iter().find(|e| e.task_type == task_type) {
        Some(e) if e.role == role => Ok(Some(e)),
        Some(e) => Err(ApiError::bad(
            codes::UNKNOWN_TASK_TYPE,
            format!(
                "{task_type} runs on {} agents, not {}",
                e.role.as_str(),
                role.as_str()
            ),
        )),
        None => Err(ApiError::bad(
            codes::UNKNOWN_TASK_TYPE,
            format!("the catalogue has no task type {task_type:?}"),
        )),
    }
}

async fn agent_task(
    gw: &Arc<Gateway>,
    caller: &Caller,
    r: TaskRequest,
    stream: bool,
    record: &mut AuditRecord,
) -> Result<Response, ApiError> {
    let role = AgentRole::ALL
        .into_iter()
        .find(|x| r.role.eq_ignore_ascii_case(x.slug()) || r.role.eq_ignore_ascii_case(x.as_str()))
        .ok_or_else(|| {
            ApiError::bad(
                codes::INVALID_REQUEST,
                format!(
                    "role {:?} is not one of {}",
                    r.role,
                    AgentRole::ALL.map(|x| x.as_str()).join(", ")
                ),
            )
        })?;
    let input = r.input.unwrap_or(Value::Null);
    if let Some(entry) = entry_for(role, &r.task_type)? {
        let given = if input.is_null() { json!({}) } else { input.clone() };
        (entry.check_input)(&given).map_err(|why| {
            ApiError::bad(
                codes::INVALID_INPUT,
                format!("the input of {} does not follow its schema: {why}", r.task_type),
            )
        })?;
    }
    if r.session_id.as_ref().is_some_and(|s| s.chars().count() > 255) {
        return Err(ApiError::bad(
            codes::INVALID_REQUEST,
            "sessionId is over 255 characters",
        ));
    }
    let wait = match r.wait_seconds {
        None => Duration::from_secs(60),
        Some(s @ 1..=300) => Duration::from_secs(s),
        Some(s) => {
            return Err(ApiError::bad(
                codes::INVALID_REQUEST,
                format!("waitSeconds must be 1 to 300, not {s}"),
            ));
        }
    };
    let (id, follow, task) = start(
        gw,
        caller,
        (role, &r.task_type),
        &input,
        r.session_id.as_deref(),
        record,
    )
    .await?;
    let answer = Answer { gw: gw.clone(), id };
    if !r.wait {
        return Ok((StatusCode::CREATED, axum::Json(answer.of(task).await)).into_response());
    }
    if !stream {
        // A wait that runs out answers with the phase the task has then.
        let done = until_done(follow, task, wait, Progress::Silent)
            .await
            .unwrap_or_else(|t| t);
        return Ok(axum::Json(answer.of(done).await).into_response());
    }
    Ok(streamed(move |mut tx| async move {
        let done = until_done(follow, task, wait, Progress::Stream(&mut tx))
            .await
            .unwrap_or_else(|t| t);
        let _ = tx.send(sse("result", &answer.of(done).await)).await;
    }))
}

/// The answer of `agent_task` for a task as it is.
struct Answer {
    gw: Arc<Gateway>,
    /// The task's row.
    id: String,
}

impl Answer {
    async fn of(self, task: Arc<AgentTask>) -> TaskResponse {
        let s = task.status.clone().unwrap_or_default();
        let phase = s.phase.unwrap_or_default();
        let result = if phase == TaskPhase::Succeeded {
            result_of(&self.gw, &self.id, &task).await
        } else {
            None
        };
        TaskResponse {
            id: self.id,
            name: task.name_any(),
            namespace: self.gw.settings.namespace.clone(),
            phase,
            result,
            error: matches!(phase, TaskPhase::Failed | TaskPhase::Cancelled)
                .then(|| s.message.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::bucket_of;

    #[test]
    fn addresses_share_a_bucket_by_ipv4_address_and_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(bucket_of(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(bucket_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            bucket_of(ip("2001:db8:1:2:ffff::9")),
            bucket_of(ip("2001:db8:1:2::1")),
            "one /64, one bucket"
        );
        assert_ne!(bucket_of(ip("2001:db8:1:3::1")), bucket_of(ip("2001:db8:1:2::1")));
        assert_eq!(
            bucket_of(ip("::ffff:10.1.2.3")),
            ip("10.1.2.3"),
            "IPv4 as IPv6 is IPv4"
        );
    }
}
