//! The broker's and the chat gateway's APIs as OpenAPI 3.1 documents, built from the wire
//! types in [`crate::broker`] and [`crate::gateway`]. `make crds` writes them to
//! `docs/broker-openapi.json` and `docs/gateway-openapi.json`; a test fails when either is
//! stale.

use schemars::{SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::broker::{
    CancelSubtaskRequest, CompleteRequest, CompleteResponse, ErrorBody, HeartbeatRequest, HeartbeatResponse,
    LeaseRequest, LeaseResponse, SubtaskRequest, TaskView, WorkerKeySet, WorkerReport,
};

/// Where the broker's document is written, relative to the repository.
pub const FILE: &str = "docs/broker-openapi.json";
/// Where the gateway's document is written, relative to the repository.
pub const GATEWAY_FILE: &str = "docs/gateway-openapi.json";

/// One operation of the broker.
struct Op {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    request: Option<Value>,
    ok: (&'static str, Value),
    errors: &'static [(&'static str, &'static str)],
    /// Whether the call needs an agent token.
    authenticated: bool,
}

const AUTH_ERRORS: [(&str, &str); 2] = [
    (
        "401",
        "MissingToken, MalformedToken, TokenExpired, InvalidSignature, WrongAudience: the bearer token is missing or not valid",
    ),
    (
        "403",
        "WrongAgent: the token belongs to another agent (or namespace)",
    ),
];

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn response(description: &str, schema: &Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

/// The OpenAPI document of the broker.
pub fn broker() -> Value {
    let mut generator = generator();
    let mut schema = |f: fn(&mut SchemaGenerator) -> schemars::Schema| f(&mut generator).to_value();
    let lease_req = schema(|g| g.subschema_for::<LeaseRequest>());
    let lease_res = schema(|g| g.subschema_for::<LeaseResponse>());
    let beat_req = schema(|g| g.subschema_for::<HeartbeatRequest>());
    let beat_res = schema(|g| g.subschema_for::<HeartbeatResponse>());
    let done_req = schema(|g| g.subschema_for::<CompleteRequest>());
    let done_res = schema(|g| g.subschema_for::<CompleteResponse>());
    let sub_req = schema(|g| g.subschema_for::<SubtaskRequest>());
    let view = schema(|g| g.subschema_for::<TaskView>());
    let cancel_req = schema(|g| g.subschema_for::<CancelSubtaskRequest>());
    let report = schema(|g| g.subschema_for::<WorkerReport>());
    let key_set = schema(|g| g.subschema_for::<WorkerKeySet>());
    let error = schema(|g| g.subschema_for::<ErrorBody>());
    let ops = [
        Op {
            method: "post",
            path: "/v1/namespaces/{namespace}/agents/{agent}/lease",
            id: "lease",
            summary: "Long-poll for up to `slots` tasks; each returned task is now Running on the calling pod. Never more than the agent's replicas x concurrency run at once.",
            request: Some(body(lease_req)),
            ok: (
                "200",
                response(
                    "The leased tasks (none when the wait ended without work)",
                    &lease_res,
                ),
            ),
            errors: &[
                (
                    "400",
                    "InvalidRequest, MalformedRequest: the body is not a valid lease request",
                ),
                ("404", "AgentNotFound: no such CogoAgent"),
            ],
            authenticated: true,
        },
        Op {
            method: "post",
            path: "/v1/namespaces/{namespace}/tasks/{task}/heartbeat",
            id: "heartbeat",
            summary: "Keep the lease of a running attempt (it runs out three heartbeat intervals after the last one); the answer says whether the task was cancelled.",
            request: Some(body(beat_req)),
            ok: ("200", response("The lease is held", &beat_res)),
            errors: &[
                ("404", "TaskNotFound: the task was deleted"),
                (
                    "409",
                    "LeaseLost: this pod no longer holds this attempt; stop working on it",
                ),
            ],
            authenticated: true,
        },
        Op {
            method: "post",
            path: "/v1/namespaces/{namespace}/tasks/{task}/complete",
            id: "complete",
            summary: "Report an attempt's outcome. A retryable failure is retried by the task's policy; a repeated report of a recorded outcome is harmless.",
            request: Some(body(done_req)),
            ok: (
                "200",
                response("The outcome, and whether this call recorded it", &done_res),
            ),
            errors: &[
                ("404", "TaskNotFound: the task was deleted"),
                (
                    "409",
                    "LeaseLost: the attempt was taken away from this pod; its outcome is not recorded",
                ),
                (
                    "503",
                    "KubernetesUnavailable; ResultStoreUnavailable: a result too large for status could not be stored yet; Busy: too many large outcomes are being read at once. Offer the outcome again with backoff",
                ),
            ],
            authenticated: true,
        },
        Op {
            method: "post",
            path: "/v1/namespaces/{namespace}/tasks/{task}/subtasks",
            id: "createSubtask",
            summary: "Create a sub-task of a task the calling pod runs. It is owned by its parent and deleted with it; creating one of the same name again returns it.",
            request: Some(body(sub_req)),
            ok: (
                "201",
                response("The sub-task (200 when it existed already)", &view),
            ),
            errors: &[
                ("400", "InvalidRequest: set exactly one of agent and role"),
                (
                    "409",
                    "LeaseLost, AlreadyExists: the caller does not run the parent, or the name is taken",
                ),
                (
                    "422",
                    "InvalidTask: the API server refused the sub-task (its message says why); TooManySubtasks, SubtaskTooDeep, TooManySubtasksInNamespace: the sub-task would pass a limit of the operator; InputTooDeep: the input nests more than 64 levels",
                ),
            ],
            authenticated: true,
        },
        Op {
            method: "post",
            path: "/v1/namespaces/{namespace}/tasks/{task}/subtasks/{subtask}/cancel",
            id: "cancelSubtask",
            summary: "Cancel a sub-task of a task the calling pod runs (a workflow whose step failed stops the others). A sub-task that has ended is left as it is.",
            request: Some(body(cancel_req)),
            ok: ("200", response("The sub-task", &view)),
            errors: &[
                ("404", "TaskNotFound: the parent has no such sub-task"),
                ("409", "LeaseLost: the caller does not run the parent"),
            ],
            authenticated: true,
        },
        Op {
            method: "get",
            path: "/v1/namespaces/{namespace}/tasks/{task}",
            id: "getTask",
            summary: "Read a task of the agent's namespace: phase, attempt and result.",
            request: None,
            ok: ("200", response("The task", &view)),
            errors: &[("404", "TaskNotFound: no such task")],
            authenticated: true,
        },
        Op {
            method: "post",
            path: "/v1/namespaces/{namespace}/agents/{agent}/workers",
            id: "reportWorkers",
            summary: "An Executor pod reports the worker pods connected to it and the jobs they finished; the operator writes the CogoWorkers' connectedWorkers, activeJobs and successRatePercent from the newest report of each Executor pod.",
            request: Some(body(report)),
            ok: ("204", json!({"description": "The report is recorded"})),
            errors: &[
                (
                    "400",
                    "InvalidRequest, MalformedRequest: not a valid report, or the agent is not an Executor",
                ),
                ("404", "AgentNotFound: no such CogoAgent"),
            ],
            authenticated: true,
        },
        Op {
            method: "get",
            path: "/v1/worker-keys",
            id: "workerKeys",
            summary: "The Ed25519 public keys worker tokens are signed with, as a JSON Web Key Set; Executors verify worker tokens with them. Public: no token needed.",
            request: None,
            ok: ("200", response("The keys", &key_set)),
            errors: &[("404", "NoWorkerKeys: this operator issues no worker tokens")],
            authenticated: false,
        },
    ];
    let mut paths = Map::new();
    for op in ops {
        let mut responses = Map::new();
        responses.insert(op.ok.0.into(), op.ok.1);
        responses.insert(
            "413".into(),
            response(
                "RequestTooLarge: the body is over 64 KiB (16 MiB for complete)",
                &error,
            ),
        );
        responses.insert(
            "503".into(),
            response("KubernetesUnavailable, Busy: try again with backoff", &error),
        );
        // An operation's own description of a status replaces the general one.
        let auth: &[(&str, &str)] = if op.authenticated { &AUTH_ERRORS } else { &[] };
        for (code, description) in auth.iter().chain(op.errors) {
            responses.insert((*code).into(), response(description, &error));
        }
        let mut params = Vec::new();
        if op.path.contains("{namespace}") {
            params.push(param("namespace", "Namespace of the agent and its tasks"));
        }
        if op.path.contains("{agent}") {
            params.push(param("agent", "Name of the CogoAgent the token was issued for"));
        }
        if op.path.contains("{task}") {
            params.push(param("task", "Name of the AgentTask"));
        }
        if op.path.contains("{subtask}") {
            params.push(param("subtask", "Name of the sub-task"));
        }
        if op.id == "createSubtask" {
            params.push(json!({
                "name": "traceparent",
                "in": "header",
                "required": false,
                "description": "W3C trace context of the span the sub-task is made in; kept as the sub-task's annotation cogo.xyz/traceparent, so its attempts are traced as that span's children. A malformed value is ignored.",
                "schema": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
            }));
        }
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "parameters": params,
            "responses": responses,
        });
        if !op.authenticated {
            operation["security"] = json!([]);
        }
        add(&mut paths, (op.path, op.method), operation, op.request);
    }
    document(
        (
            "Cogo task broker",
            "The API agent pods call to lease, heartbeat and complete AgentTasks, create sub-tasks and read tasks, and Executors call to report their workers and read the keys of worker tokens. Served by the leading cogo-operator replica (port 8080). Generated by `make crds` from cogo_api::broker; do not edit by hand.",
            "http://cogo-operator.cogo-system.svc:8080",
        ),
        (
            "agentToken",
            "HS256 token the operator issues to each CogoAgent (Secret `<agent>-broker-token`), audience `cogo-broker`, subject `agent:<namespace>/<agent>`.",
        ),
        paths,
        generator,
    )
}

/// Adds `operation` (with its request body, when it has one) to `paths` at `path` and `method`.
fn add(
    paths: &mut Map<String, Value>,
    (path, method): (&str, &str),
    mut operation: Value,
    request: Option<Value>,
) {
    if let Some(request) = request {
        operation["requestBody"] = request;
    }
    paths
        .entry(path)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("path item")
        .insert(method.into(), operation);
}

/// An OpenAPI 3.1 document of `paths`, with its title, description and server, one bearer
/// security scheme (its name and description) and the schemas `generator` made.
fn document(
    (title, description, server): (&str, &str, &str),
    (scheme, scheme_description): (&str, &str),
    paths: Map<String, Value>,
    mut generator: SchemaGenerator,
) -> Value {
    let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": env!("CARGO_PKG_VERSION"), "description": description},
        "servers": [{"url": server}],
        "security": [{scheme: []}],
        "paths": paths,
        "components": {
            "securitySchemes": {scheme: {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": scheme_description,
            }},
            "schemas": schemas,
        },
    })
}

/// The broker's document as written to [`FILE`].
pub fn render() -> String {
    pretty(&broker())
}

/// The gateway's document as written to [`GATEWAY_FILE`].
pub fn render_gateway() -> String {
    pretty(&gateway())
}

fn pretty(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).expect("JSON values always serialize");
    text.push('\n');
    text
}

fn generator() -> SchemaGenerator {
    SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    }))
}

/// One route of the gateway.
struct Route {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    request: Option<Value>,
    ok: (&'static str, Value),
    /// Also answers with `text/event-stream` when asked to.
    streams: bool,
    errors: &'static [(&'static str, &'static str)],
}

const GATEWAY_AUTH_ERRORS: [(&str, &str); 4] = [
    (
        "401",
        "MissingToken, TokenTooLarge, MalformedToken, AlgorithmNotAllowed, UnknownKey, InvalidSignature, TokenExpired, TokenNotYetValid, WrongAudience, WrongIssuer, InvalidSubject: the bearer token is missing or not a valid Supabase user token",
    ),
    (
        "403",
        "PermissionDenied: the user's roles do not grant the action's permission; InactiveUser: user_roles.is_active is false; UnknownUser: the user is not in auth.users",
    ),
    (
        "429",
        "RateLimited: over the user's or the address's rate; Retry-After says when to retry",
    ),
    (
        "503",
        "KeysUnavailable: the JWKS cannot be fetched; DatabaseUnavailable, KubernetesUnavailable: try again with backoff",
    ),
];

const STREAM_NOTE: &str = " With `Accept: text/event-stream` the answer is a stream of Server-Sent Events: `status` (a StatusEvent) on each change of the task, then `result` (the answer below) or `error` (an ErrorBody).";

/// The OpenAPI document of the chat gateway.
pub fn gateway() -> Value {
    use crate::gateway::{
        EdgeRequest, GreetingRequest, GreetingResponse, LanguagesResponse, MessageRequest, MessageResponse,
        StatusEvent, StatusResponse, TaskRequest, TaskResponse,
    };
    let mut generator = generator();
    let mut schema = |f: fn(&mut SchemaGenerator) -> schemars::Schema| f(&mut generator).to_value();
    let edge = schema(|g| g.subschema_for::<EdgeRequest>());
    let status = schema(|g| g.subschema_for::<StatusResponse>());
    let languages = schema(|g| g.subschema_for::<LanguagesResponse>());
    let greeting_req = schema(|g| g.subschema_for::<GreetingRequest>());
    let greeting = schema(|g| g.subschema_for::<GreetingResponse>());
    let message_req = schema(|g| g.subschema_for::<MessageRequest>());
    let message = schema(|g| g.subschema_for::<MessageResponse>());
    let task_req = schema(|g| g.subschema_for::<TaskRequest>());
    let task = schema(|g| g.subschema_for::<TaskResponse>());
    let _event = schema(|g| g.subschema_for::<StatusEvent>());
    let error = schema(|g| g.subschema_for::<ErrorBody>());
    let any_answer = json!({"oneOf": [status, languages, greeting, message, task]});
    const TASK_ERRORS: [(&str, &str); 3] = [
        (
            "502",
            "TaskFailed: the task ended without an answer (the message has its error)",
        ),
        (
            "503",
            "NoAgent, NoModel: no Orchestrator, or one without a model; IntakeUnavailable: the operator did not take the task in (the row stays pending); KeysUnavailable, DatabaseUnavailable, KubernetesUnavailable: try again with backoff",
        ),
        ("504", "Timeout: the task did not end in time; it goes on"),
    ];
    let routes = [
        Route {
            method: "post",
            path: "/functions/v1/chat-gateway",
            id: "chatGateway",
            summary: "The seed's Edge Function: one route, the action in the body (`status`, `languages`, `ai_greeting`, `send_message`, `agent_task`) with the fields of its REST route. Each action needs the permission its REST route names.",
            request: Some(body(edge)),
            ok: (
                "200",
                response(
                    "The action's answer (201 for agent_task without wait)",
                    &any_answer,
                ),
            ),
            streams: true,
            errors: &[
                (
                    "400",
                    "MalformedRequest, InvalidRequest, UnknownTaskType, InvalidInput: the body is not a valid action",
                ),
                TASK_ERRORS[0],
                TASK_ERRORS[1],
                TASK_ERRORS[2],
            ],
        },
        Route {
            method: "get",
            path: "/v1/status",
            id: "status",
            summary: "Agents (needs agent:read), and workers (with worker:read) and queue depth (with task:read) when the user may see them.",
            request: None,
            ok: ("200", response("What runs", &status)),
            streams: false,
            errors: &[("504", "Timeout: Kubernetes took too long")],
        },
        Route {
            method: "get",
            path: "/v1/languages",
            id: "languages",
            summary: "The languages chat answers in (needs chat:read).",
            request: None,
            ok: ("200", response("The languages", &languages)),
            streams: false,
            errors: &[],
        },
        Route {
            method: "post",
            path: "/v1/greeting",
            id: "aiGreeting",
            summary: "A greeting from the Orchestrator's model in the asked language, written by a chat.greeting task (needs chat:read).",
            request: Some(body(greeting_req)),
            ok: ("200", response("The greeting", &greeting)),
            streams: false,
            errors: &[
                (
                    "400",
                    "MalformedRequest, InvalidRequest: not a valid greeting request (an unknown language, say)",
                ),
                TASK_ERRORS[0],
                TASK_ERRORS[1],
                TASK_ERRORS[2],
            ],
        },
        Route {
            method: "post",
            path: "/v1/messages",
            id: "sendMessage",
            summary: "Store the message in chat_messages_realtime, answer it with a chat.message task, store the reply (needs chat:send).",
            request: Some(body(message_req)),
            ok: ("200", response("The reply", &message)),
            streams: true,
            errors: &[
                ("400", "MalformedRequest, InvalidRequest: not a valid message"),
                TASK_ERRORS[0],
                TASK_ERRORS[1],
                TASK_ERRORS[2],
            ],
        },
        Route {
            method: "post",
            path: "/v1/tasks",
            id: "agentTask",
            summary: "Create an AgentTask of a catalogue type for a role, its input checked against the type's schema, with the caller as requester (needs task:create). Answers 201 at once, or with `wait` the task's result (the phase it has when the wait runs out).",
            request: Some(body(task_req)),
            ok: (
                "200",
                response(
                    "The task, ended or as it is when the wait ran out (201 without wait)",
                    &task,
                ),
            ),
            streams: true,
            errors: &[
                (
                    "400",
                    "MalformedRequest, InvalidRequest, UnknownTaskType, InvalidInput: not a valid task request",
                ),
                TASK_ERRORS[1],
            ],
        },
    ];
    let mut paths = Map::new();
    for route in routes {
        let mut responses = Map::new();
        let (code, mut ok) = route.ok;
        if route.streams {
            ok["content"]["text/event-stream"] = json!({"schema": {"type": "string"}});
        }
        responses.insert(code.into(), ok);
        if route.id == "agentTask" || route.id == "chatGateway" {
            responses.insert(
                "201".into(),
                response("The task was created (without wait)", &task),
            );
        }
        for (code, description) in [
            ("413", "RequestTooLarge: the body is over the gateway's limit"),
            ("415", "UnsupportedMediaType: send the body as application/json"),
        ] {
            if route.request.is_some() {
                responses.insert(code.into(), response(description, &error));
            }
        }
        for (code, description) in GATEWAY_AUTH_ERRORS.iter().chain(route.errors) {
            responses.insert((*code).into(), response(description, &error));
        }
        let summary = if route.streams {
            format!("{}{STREAM_NOTE}", route.summary)
        } else {
            route.summary.to_string()
        };
        let operation = json!({
            "operationId": route.id,
            "summary": summary,
            "responses": responses,
        });
        add(&mut paths, (route.path, route.method), operation, route.request);
    }
    document(
        (
            "Cogo chat gateway",
            "The seed's chat gateway actions behind Supabase user JWTs, permissions and rate limits. Served by `cogo-operator gateway` (port 8090). Generated by `make crds` from cogo_api::gateway; do not edit by hand.",
            "http://cogo-operator-gateway.cogo-system.svc:8090",
        ),
        (
            "userToken",
            "A Supabase Auth user's access token: HS256 with the project's JWT secret, or RS256/ES256 with a key of the project's JWKS; audience `authenticated`.",
        ),
        paths,
        generator,
    )
}
