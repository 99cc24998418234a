//! The chat gateway's API (`cogo-operator gateway`): the seed's five actions, as one Edge
//! Function route (`POST /functions/v1/chat-gateway` with `{"action": ...}`) and as REST
//! routes under `/v1/`. Every error is an [`ErrorBody`] with a stable code ([`codes`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AgentRole, TaskPhase, WorkerKind, catalogue::llm::Usage};

pub use crate::broker::ErrorBody;

/// The permission each action needs. A granted permission covers another when equal, when it
/// is `*`, or when it ends in `:*` and the other starts with what comes before the `*`
/// (`task:*` covers `task:create`).
pub mod permissions {
    /// `status`: see agents.
    pub const AGENTS: &str = "agent:read";
    /// `status`: see workers.
    pub const WORKERS: &str = "worker:read";
    /// `status`: see queue depth.
    pub const TASKS_READ: &str = "task:read";
    /// `agent_task`: create a task.
    pub const TASKS_CREATE: &str = "task:create";
    /// `languages` and `ai_greeting`.
    pub const CHAT_READ: &str = "chat:read";
    /// `send_message`.
    pub const CHAT_SEND: &str = "chat:send";
}

/// The stable error codes of the gateway's answers.
pub mod codes {
    /// 400: the body is not JSON of the asked shape.
    pub const MALFORMED_REQUEST: &str = "MalformedRequest";
    /// 400: the request is well formed but not valid (the message says which field).
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    /// 400: `agent_task` names a type the catalogue does not have for that role.
    pub const UNKNOWN_TASK_TYPE: &str = "UnknownTaskType";
    /// 400: `agent_task`'s input does not follow the type's schema.
    pub const INVALID_INPUT: &str = "InvalidInput";
    /// 403: the user's roles do not grant the action's permission.
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    /// 403: the user's row in `user_roles` is not active.
    pub const INACTIVE_USER: &str = "InactiveUser";
    /// 403: the token's user is not in `auth.users`.
    pub const UNKNOWN_USER: &str = "UnknownUser";
    /// 404: no such route or action.
    pub const NOT_FOUND: &str = "NotFound";
    /// 405: the route does not take this method.
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    /// 413: the body is over the limit.
    pub const REQUEST_TOO_LARGE: &str = "RequestTooLarge";
    /// 415: the body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UnsupportedMediaType";
    /// 429: over the caller's or the address's rate; `Retry-After` says when to retry.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// 502: the task ended without the answer the action needs (the message has its error).
    pub const TASK_FAILED: &str = "TaskFailed";
    /// 503: no agent of the role the action needs.
    pub const NO_AGENT: &str = "NoAgent";
    /// 503: the Orchestrator has no model.
    pub const NO_MODEL: &str = "NoModel";
    /// 503: the database is unreachable.
    pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
    /// 503: Kubernetes is unreachable.
    pub const KUBERNETES_UNAVAILABLE: &str = "KubernetesUnavailable";
    /// 503: the operator did not take the task in (is its intake on, for this namespace?).
    pub const INTAKE_UNAVAILABLE: &str = "IntakeUnavailable";
    /// 504: the request took longer than its limit; a task it started goes on.
    pub const TIMEOUT: &str = "Timeout";
}

/// Everything the one Edge Function route takes: the action and its fields, as the seed's
/// clients send them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum EdgeRequest {
    /// What runs, and how busy it is.
    Status,
    /// The languages chat answers in.
    Languages,
    /// A greeting from the Orchestrator's model.
    AiGreeting(GreetingRequest),
    /// A chat message, answered by a `chat.message` task.
    SendMessage(MessageRequest),
    /// A task for an agent role.
    AgentTask(TaskRequest),
}

/// The answer of `status`: only the sections the caller's permissions allow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// The namespace the gateway serves.
    pub namespace: String,
    /// The gateway's version.
    pub version: String,
    /// CogoAgents, with `agent:read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentSummary>>,
    /// CogoWorkers, with `worker:read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<WorkerSummary>>,
    /// Tasks queued and running over all agents, with `task:read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueDepth>,
}

/// One CogoAgent, as `status` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    /// The CogoAgent's name.
    pub name: String,
    /// Its role.
    pub role: AgentRole,
    /// Whether its condition `Ready` is True.
    pub ready: bool,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready to take tasks.
    pub ready_replicas: i32,
    /// Tasks waiting for it, and held by its pods.
    pub queue: QueueDepth,
    /// The model its pods use, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One CogoWorker, as `status` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSummary {
    /// The CogoWorker's name.
    pub name: String,
    /// Its kind.
    pub kind: WorkerKind,
    /// Whether its condition `Ready` is True.
    pub ready: bool,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready.
    pub ready_replicas: i32,
    /// Worker pods connected to an Executor.
    pub connected_workers: i32,
}

/// Tasks queued and running.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    /// Accepted and not yet leased.
    pub pending: i64,
    /// Leased by a pod.
    pub running: i64,
}

/// The answer of `languages`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LanguagesResponse {
    /// The language used when a request names none.
    pub default: String,
    /// The languages `chat.message` and `ai_greeting` answer in.
    pub languages: Vec<Language>,
}

/// A language chat answers in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Language {
    /// Its BCP 47 code, for example `ko`.
    pub code: String,
    /// Its name in English.
    pub name: String,
    /// Its name in itself.
    pub native_name: String,
}

/// The languages chat answers in: `(code, English name, native name)`.
pub const LANGUAGES: [(&str, &str, &str); 12] = [
    ("en", "English", "English"),
    ("ko", "Korean", "한국어"),
    ("ja", "Japanese", "日本語"),
    ("zh", "Chinese", "中文"),
    ("es", "Spanish", "Español"),
    ("fr", "French", "Français"),
    ("de", "German", "Deutsch"),
    ("pt", "Portuguese", "Português"),
    ("it", "Italian", "Italiano"),
    ("ru", "Russian", "Русский"),
    ("vi", "Vietnamese", "Tiếng Việt"),
    ("id", "Indonesian", "Bahasa Indonesia"),
];

/// The language used when a request names none.
pub const DEFAULT_LANGUAGE: &str = "en";

/// Whether chat answers in the language `code` (one of [`LANGUAGES`], case-insensitive).
pub fn is_language(code: &str) -> bool {
    LANGUAGES.iter().any(|(c, _, _)| c.eq_ignore_ascii_case(code))
}

/// The body of `ai_greeting`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GreetingRequest {
    /// One of `languages`' codes; default `en`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The name to greet the user by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub name: Option<String>,
}

/// The answer of `ai_greeting`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GreetingResponse {
    /// The greeting.
    pub greeting: String,
    /// Its language.
    pub language: String,
    /// The `chat.greeting` task that wrote it.
    pub task: String,
    /// Tokens spent.
    pub usage: Usage,
}

/// The body of `send_message`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageRequest {
    /// The conversation (`session_id` also accepted).
    #[serde(alias = "session_id")]
    #[schemars(length(min = 1, max = 255))]
    pub session_id: String,
    /// The user's message (`content` also accepted).
    #[serde(alias = "content")]
    #[schemars(length(min = 1, max = 32768))]
    pub message: String,
    /// One of `languages`' codes; default that of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// The answer of `send_message` (without `Accept: text/event-stream`; with it, the last event).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageResponse {
    /// The user's message's row in `chat_messages_realtime`.
    pub message_id: String,
    /// The reply's row in `chat_messages_realtime`.
    pub reply_id: String,
    /// The conversation.
    pub session_id: String,
    /// The `chat.message` task that answered.
    pub task: String,
    /// The model's reply.
    pub reply: String,
    /// Tasks the model started to answer.
    pub tasks: Vec<String>,
    /// Tokens spent.
    pub usage: Usage,
}

/// The body of `agent_task`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRequest {
    /// The role whose agents run the task (`agentType`, or a role slug such as `research`,
    /// also accepted).
    #[serde(alias = "agentType", alias = "agent_type")]
    pub role: String,
    /// The task type, one of the catalogue's for that role.
    #[serde(rename = "type", alias = "taskType", alias = "task_type")]
    pub task_type: String,
    /// The task's input, checked against the type's schema (`data` also accepted).
    #[serde(default, alias = "data")]
    pub input: Option<Value>,
    /// Wait for the task to end and answer with its result (streamed with
    /// `Accept: text/event-stream`).
    #[serde(default)]
    pub wait: bool,
    /// How long to wait, in seconds (1 to 300, default 60); the task goes on after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub wait_seconds: Option<u64>,
    /// The conversation the task belongs to.
    #[serde(default, alias = "session_id", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub session_id: Option<String>,
}

/// The answer of `agent_task`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskResponse {
    /// The task's row in `distributed_agent_tasks`.
    pub id: String,
    /// The AgentTask's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its phase when the answer was written.
    pub phase: TaskPhase,
    /// Its result, once it succeeded (with `wait`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed, when it did (with `wait`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An event of a streamed answer (`text/event-stream`): `event: status` with this body each
/// time the task's phase or message changes, then one `event: result` with the action's answer,
/// or `event: error` with an [`ErrorBody`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// The task.
    pub task: String,
    /// Its phase.
    pub phase: TaskPhase,
    /// Its attempt (1 for the first).
    pub attempt: i32,
    /// What it is doing, as its agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
