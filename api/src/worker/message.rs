//! The protocol between the Executor agent and its worker pods: JSON text frames over a
//! WebSocket, field for field the system's `WorkerMessage`:
//!
//! ```text
//! {id, type: execute|ping|pong|heartbeat|status|result|error, workerId, taskId?, data?, timestamp}
//! ```
//!
//! A worker dials the Executor's Service (port 6005, path [`WORKERS_PATH`]) with its own token
//! (`Authorization: Bearer`, an EdDSA JWT the operator issues per CogoWorker, see
//! [`WorkerClaims`]). Its first frame is `status {capacity, active}`; from then on:
//!
//! | Type | From | `taskId` | `data` |
//! |---|---|---|---|
//! | `status` | worker | none | `{capacity, active}`: capacity 0 means the worker drains |
//! | `heartbeat` | worker | none | `{capacity, active}` (optional) |
//! | `ping` | Executor | none | none; answered with `pong` carrying the ping's `id` |
//! | `pong` | worker | none | none |
//! | `execute` | Executor | the job | `{type, input, deadline, traceparent?}` |
//! | `result` | worker | the job | the task's result |
//! | `error` | worker | the job, or none | `{message, retryable}`: the job failed, or the frame was refused |
//! | `error` | Executor | the job, or none | `{message, retryable}`: stop that job (cancelled, lease lost), or the frame was refused |
//!
//! [`decode`] is the one place a frame is read: it checks the size, the JSON, every field and
//! the data of each type, and says what is wrong with a [`FrameError`].

/// The header of a worker's WebSocket upgrade naming the optional parts of the protocol it
/// takes, comma-separated. An Executor sends such a part only to a worker that named it, so an
/// older worker (which refuses frames with fields it does not know) is never sent one.
pub const FEATURES_HEADER: &str = "cogo-worker-features";

/// The feature: `execute` frames may carry `traceparent`.
pub const TRACEPARENT_FEATURE: &str = "traceparent";

/// Whether a [`FEATURES_HEADER`] value names `feature`.
pub fn has_feature(header: &str, feature: &str) -> bool {
    header.split(',').any(|f| f.trim().eq_ignore_ascii_case(feature))
}

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::WorkerKind;

/// Path of the Executor's worker endpoint.
pub const WORKERS_PATH: &str = "/v1/workers";
/// Audience of worker tokens.
pub const TOKEN_AUDIENCE: &str = "cogo-executor";
/// The largest frame either side reads (a result carries a job's output and files).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// The longest `id`, `workerId` or `taskId`.
pub const MAX_ID_CHARS: usize = 256;

/// The type of a frame.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Executor → worker: run a job.
    Execute,
    /// Executor → worker: are you there?
    Ping,
    /// Worker → Executor: the answer to a ping.
    Pong,
    /// Worker → Executor: still alive, with the current load.
    Heartbeat,
    /// Worker → Executor: capacity and load; the first frame of a connection.
    Status,
    /// Worker → Executor: a job's result.
    Result,
    /// Either way: a job failed or must stop, or a frame was refused.
    Error,
}

impl MessageType {
    /// The type as written in frames.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Execute => "execute",
            MessageType::Ping => "ping",
            MessageType::Pong => "pong",
            MessageType::Heartbeat => "heartbeat",
            MessageType::Status => "status",
            MessageType::Result => "result",
            MessageType::Error => "error",
        }
    }
}

/// One frame, as it travels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerMessage {
    /// Unique id of this frame; a `pong` carries the id of the `ping` it answers.
    pub id: String,
    /// What the frame is.
    #[serde(rename = "type")]
    pub message_type: MessageType,
    /// The worker the frame is from or for (its pod name).
    pub worker_id: String,
    /// The job (the AgentTask's name) the frame is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The payload; its shape depends on `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// When the frame was sent, RFC 3339.
    pub timestamp: String,
}

/// `data` of `execute`: the job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecuteData {
    /// The task type, for example `python.execute`.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The task's input.
    pub input: Value,
    /// When the job must have ended, RFC 3339.
    pub deadline: String,
    /// The W3C `traceparent` of the Executor's span for the task, when it is traced: the
    /// worker's span for the job is its child. Sent only when set, and only to a worker that
    /// named [`TRACEPARENT_FEATURE`] in its [`FEATURES_HEADER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `data` of `error`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorData {
    /// What went wrong.
    pub message: String,
    /// Whether running the job again may succeed.
    #[serde(default)]
    pub retryable: bool,
}

/// `data` of `status` and `heartbeat`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusData {
    /// Jobs the worker takes at once; 0 while it drains before stopping.
    pub capacity: u32,
    /// Jobs it runs now.
    pub active: u32,
}

/// A frame's payload, typed by its `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Run this job.
    Execute(ExecuteData),
    /// Are you there?
    Ping,
    /// Here I am.
    Pong,
    /// Alive, with the load when given.
    Heartbeat(Option<StatusData>),
    /// Capacity and load.
    Status(StatusData),
    /// A job's result.
    Result(Value),
    /// A failure, or an order to stop a job.
    Error(ErrorData),
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// A stable PascalCase code: `FrameTooLarge`, `MalformedFrame`, `InvalidFrame`.
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for FrameError {}

impl FrameError {
    fn invalid(message: impl Into<String>) -> Self {
        FrameError {
            code: "InvalidFrame",
            message: message.into(),
        }
    }
}

fn check_id(field: &str, value: &str) -> Result<(), FrameError> {
    if value.is_empty() || value.chars().count() > MAX_ID_CHARS || value.chars().any(char::is_control) {
        return Err(FrameError::invalid(format!(
            "{field} must be 1 to {MAX_ID_CHARS} printable characters"
        )));
    }
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(t: MessageType, data: Option<Value>) -> Result<T, FrameError> {
    let data = data.ok_or_else(|| FrameError::invalid(format!("a {} frame needs data", t.as_str())))?;
    serde_json::from_value(data)
        .map_err(|e| FrameError::invalid(format!("data of a {} frame: {e}", t.as_str())))
}

/// Reads one text frame: at most `max_bytes`, a JSON `WorkerMessage` with no unknown field,
/// ids of printable characters, an RFC 3339 timestamp, `taskId` where the type needs one and
/// `data` of the type's shape.
pub fn decode(text: &str, max_bytes: usize) -> Result<(WorkerMessage, Payload), FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError {
            code: "FrameTooLarge",
            message: format!("the frame is {} bytes, more than {max_bytes}", text.len()),
        });
    }
    let msg: WorkerMessage = serde_json::from_str(text).map_err(|e| FrameError {
        code: "MalformedFrame",
        message: format!("not a WorkerMessage: {e}"),
    })?;
    check_id("id", &msg.id)?;
    check_id("workerId", &msg.worker_id)?;
    if let Some(task) = &msg.task_id {
        check_id("taskId", task)?;
    }
    if msg.timestamp.parse::<jiff::Timestamp>().is_err() {
        return Err(FrameError::invalid(format!(
            "timestamp {:?} is not an RFC 3339 time",
            msg.timestamp.chars().take(64).collect::<String>()
        )));
    }
    let t = msg.message_type;
    let needs_task = matches!(t, MessageType::Execute | MessageType::Result);
    if needs_task && msg.task_id.is_none() {
        return Err(FrameError::invalid(format!(
            "a {} frame needs a taskId",
            t.as_str()
        )));
    }
    let no_task = matches!(
        t,
        MessageType::Ping | MessageType::Pong | MessageType::Heartbeat | MessageType::Status
    );
    if no_task && msg.task_id.is_some() {
        return Err(FrameError::invalid(format!(
            "a {} frame takes no taskId",
            t.as_str()
        )));
    }
    let data = msg.data.clone();
    let payload = match t {
        MessageType::Execute => {
            let e: ExecuteData = typed(t, data)?;
            if e.deadline.parse::<jiff::Timestamp>().is_err() {
                return Err(FrameError::invalid("data.deadline is not an RFC 3339 time"));
            }
            Payload::Execute(e)
        }
        MessageType::Ping => Payload::Ping,
        MessageType::Pong => Payload::Pong,
        MessageType::Heartbeat => Payload::Heartbeat(match data {
            Some(_) => Some(typed(t, data)?),
            None => None,
        }),
        MessageType::Status => Payload::Status(typed(t, data)?),
        MessageType::Result => Payload::Result(data.unwrap_or(Value::Null)),
        MessageType::Error => Payload::Error(typed(t, data)?),
    };
    Ok((msg, payload))
}

impl WorkerMessage {
    /// A frame of `message_type` from or for `worker_id`, stamped now.
    pub fn new(
        id: impl Into<String>,
        message_type: MessageType,
        worker_id: impl Into<String>,
        task_id: Option<String>,
        data: Option<Value>,
    ) -> Self {
        WorkerMessage {
            id: id.into(),
            message_type,
            worker_id: worker_id.into(),
            task_id,
            data,
            timestamp: jiff::Timestamp::now().to_string(),
        }
    }

    /// The frame as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a WorkerMessage always serializes")
    }
}

/// Claims of a worker token: which CogoWorker the bearer is, of which kind, serving which
/// Executor. Signed by the operator with EdDSA (Ed25519); Executors verify them with the
/// public keys the broker publishes at `GET /v1/worker-keys`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WorkerClaims {
    /// `worker:<namespace>/<name>`.
    pub sub: String,
    /// Always [`TOKEN_AUDIENCE`].
    pub aud: String,
    /// The worker's kind: the only jobs the Executor sends it.
    pub kind: WorkerKind,
    /// Name of the Executor CogoAgent the worker serves.
    pub executor: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

impl WorkerClaims {
    /// The subject naming a CogoWorker.
    pub fn subject(namespace: &str, worker: &str) -> String {
        format!("worker:{namespace}/{worker}")
    }

    /// The namespace and CogoWorker name of the subject, when it names one.
    pub fn worker(&self) -> Option<(&str, &str)> {
        let rest = self.sub.strip_prefix("worker:")?;
        let (ns, name) = rest.split_once('/')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then_some((ns, name))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frame(v: Value) -> String {
        v.to_string()
    }

    const TS: &str = "2026-11-29T10:00:00Z";

    #[test]
    fn every_type_decodes_with_its_data() {
        let cases = [
            (
                json!({"id": "1", "type": "status", "workerId": "w", "data": {"capacity": 2, "active": 0}, "timestamp": TS}),
                Payload::Status(StatusData {
                    capacity: 2,
                    active: 0,
                }),
            ),
            (
                json!({"id": "2", "type": "heartbeat", "workerId": "w", "timestamp": TS}),
                Payload::Heartbeat(None),
            ),
            (
                json!({"id": "3", "type": "ping", "workerId": "w", "timestamp": TS}),
                Payload::Ping,
            ),
            (
                json!({"id": "3", "type": "pong", "workerId": "w", "timestamp": TS}),
                Payload::Pong,
            ),
            (
                json!({"id": "4", "type": "execute", "workerId": "w", "taskId": "t", "timestamp": TS,
                       "data": {"type": "python.execute", "input": {"code": "print(1)"}, "deadline": TS}}),
                Payload::Execute(ExecuteData {
                    task_type: "python.execute".into(),
                    input: json!({"code": "print(1)"}),
                    deadline: TS.into(),
                    traceparent: None,
                }),
            ),
            (
                json!({"id": "4", "type": "execute", "workerId": "w", "taskId": "t", "timestamp": TS,
                       "data": {"type": "python.execute", "input": {}, "deadline": TS,
                                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}),
                Payload::Execute(ExecuteData {
                    task_type: "python.execute".into(),
                    input: json!({}),
                    deadline: TS.into(),
                    traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                }),
            ),
            (
                json!({"id": "5", "type": "result", "workerId": "w", "taskId": "t", "data": {"exitCode": 0}, "timestamp": TS}),
                Payload::Result(json!({"exitCode": 0})),
            ),
            (
                json!({"id": "6", "type": "error", "workerId": "w", "data": {"message": "boom", "retryable": true}, "timestamp": TS}),
                Payload::Error(ErrorData {
                    message: "boom".into(),
                    retryable: true,
                }),
            ),
        ];
        for (v, expected) in cases {
            let (_, payload) =
                decode(&frame(v.clone()), MAX_FRAME_BYTES).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(payload, expected, "{v}");
        }
    }

    /// Every malformed frame is refused with its code and a message naming what is wrong.
    #[test]
    fn bad_frames() {
        let cases: Vec<(&str, String, &str, &str)> = vec![
            (
                "not JSON",
                "hello".into(),
                "MalformedFrame",
                "not a WorkerMessage",
            ),
            (
                "a JSON array",
                "[1,2]".into(),
                "MalformedFrame",
                "not a WorkerMessage",
            ),
            (
                "unknown type",
                frame(json!({"id": "1", "type": "launch", "workerId": "w", "timestamp": TS})),
                "MalformedFrame",
                "unknown variant `launch`",
            ),
            (
                "unknown field",
                frame(json!({"id": "1", "type": "ping", "workerId": "w", "timestamp": TS, "extra": 1})),
                "MalformedFrame",
                "unknown field `extra`",
            ),
            (
                "missing workerId",
                frame(json!({"id": "1", "type": "ping", "timestamp": TS})),
                "MalformedFrame",
                "missing field `workerId`",
            ),
            (
                "empty id",
                frame(json!({"id": "", "type": "ping", "workerId": "w", "timestamp": TS})),
                "InvalidFrame",
                "id must be",
            ),
            (
                "control characters in workerId",
                frame(json!({"id": "1", "type": "ping", "workerId": "w\u{7}", "timestamp": TS})),
                "InvalidFrame",
                "workerId must be",
            ),
            (
                "bad timestamp",
                frame(json!({"id": "1", "type": "ping", "workerId": "w", "timestamp": "yesterday"})),
                "InvalidFrame",
                "timestamp \"yesterday\"",
            ),
            (
                "result without taskId",
                frame(json!({"id": "1", "type": "result", "workerId": "w", "data": 1, "timestamp": TS})),
                "InvalidFrame",
                "needs a taskId",
            ),
            (
                "status with a taskId",
                frame(
                    json!({"id": "1", "type": "status", "workerId": "w", "taskId": "t", "data": {"capacity": 1, "active": 0}, "timestamp": TS}),
                ),
                "InvalidFrame",
                "takes no taskId",
            ),
            (
                "status without data",
                frame(json!({"id": "1", "type": "status", "workerId": "w", "timestamp": TS})),
                "InvalidFrame",
                "needs data",
            ),
            (
                "status with a negative capacity",
                frame(
                    json!({"id": "1", "type": "status", "workerId": "w", "data": {"capacity": -1, "active": 0}, "timestamp": TS}),
                ),
                "InvalidFrame",
                "data of a status frame",
            ),
            (
                "error with an unknown data field",
                frame(
                    json!({"id": "1", "type": "error", "workerId": "w", "data": {"message": "x", "code": 3}, "timestamp": TS}),
                ),
                "InvalidFrame",
                "unknown field `code`",
            ),
            (
                "execute with a bad deadline",
                frame(
                    json!({"id": "1", "type": "execute", "workerId": "w", "taskId": "t", "timestamp": TS,
                        "data": {"type": "python.execute", "input": {}, "deadline": "soon"}}),
                ),
                "InvalidFrame",
                "deadline",
            ),
            (
                "too large",
                format!("{{\"pad\": \"{}\"}}", "x".repeat(2000)),
                "FrameTooLarge",
                "more than 1024",
            ),
        ];
        for (what, text, code, fragment) in cases {
            let err = decode(&text, 1024).expect_err(what);
            assert_eq!(err.code, code, "{what}: {err}");
            assert!(err.message.contains(fragment), "{what}: {err}");
        }
    }

    #[test]
    fn frames_round_trip() {
        let m = WorkerMessage::new(
            "abc",
            MessageType::Error,
            "w-1",
            Some("task".into()),
            Some(
                serde_json::to_value(ErrorData {
                    message: "no".into(),
                    retryable: false,
                })
                .unwrap(),
            ),
        );
        let (back, payload) = decode(&m.encode(), MAX_FRAME_BYTES).unwrap();
        assert_eq!(back, m);
        assert!(matches!(payload, Payload::Error(e) if e.message == "no"));
        let v: Value = serde_json::from_str(&m.encode()).unwrap();
        assert_eq!(v["workerId"], "w-1");
        assert_eq!(v["taskId"], "task");
        assert_eq!(v["type"], "error");
    }

    #[test]
    fn claims_name_their_worker() {
        let c = WorkerClaims {
            sub: WorkerClaims::subject("team", "python"),
            aud: TOKEN_AUDIENCE.into(),
            kind: WorkerKind::PythonSandbox,
            executor: "executor".into(),
            iat: 0,
            exp: 1,
        };
        assert_eq!(c.worker(), Some(("team", "python")));
        for sub in ["agent:team/python", "worker:team", "worker:/x", "worker:a/b/c"] {
            let c = WorkerClaims {
                sub: sub.into(),
                ..c.clone()
            };
            assert_eq!(c.worker(), None, "{sub}");
        }
    }

    #[test]
    fn task_types_map_to_worker_kinds() {
        for (t, kind) in [
            ("python.execute", Some(WorkerKind::PythonSandbox)),
            ("browser.screenshot", Some(WorkerKind::Browser)),
            ("figma.file", Some(WorkerKind::FigmaMcp)),
            ("mcp.call", Some(WorkerKind::FigmaMcp)),
            ("cogo.echo", None),
            ("pythonic.x", None),
        ] {
            assert_eq!(WorkerKind::for_task_type(t), kind, "{t}");
        }
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                ".{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("id".to_string()),
                            Just("type".to_string()),
                            Just("workerId".to_string()),
                            Just("taskId".to_string()),
                            Just("data".to_string()),
                            Just("timestamp".to_string()),
                            Just("capacity".to_string()),
                            Just("message".to_string()),
                            "[a-z]{1,6}",
                        ],
                        inner,
                        0..7
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any text at all: decoded or refused with a code, never a panic.
            #[test]
            fn any_text_is_decoded_or_refused(text in ".{0,300}") {
                if let Err(e) = decode(&text, 256) {
                    prop_assert!(["FrameTooLarge", "MalformedFrame", "InvalidFrame"].contains(&e.code));
                }
            }

            /// JSON shaped like frames (the fields, the types, nested data): the same.
            #[test]
            fn frame_shaped_json_is_decoded_or_refused(v in json_value(), t in prop_oneof![
                Just("execute"), Just("ping"), Just("pong"), Just("heartbeat"),
                Just("status"), Just("result"), Just("error"), Just("other")]) {
                let mut v = v;
                if let Value::Object(m) = &mut v {
                    m.insert("type".into(), json!(t));
                }
                match decode(&v.to_string(), MAX_FRAME_BYTES) {
                    Ok((msg, _)) => {
                        prop_assert_eq!(msg.message_type.as_str(), t);
                        prop_assert!(!msg.id.is_empty() && !msg.worker_id.is_empty());
                    }
                    Err(e) => prop_assert!(["MalformedFrame", "InvalidFrame"].contains(&e.code)),
                }
            }

            /// Every frame a peer builds decodes to itself.
            #[test]
            fn built_frames_round_trip(id in "[a-zA-Z0-9-]{1,40}", worker in "[a-z0-9-]{1,40}",
                                       capacity in 0u32..64, active in 0u32..64) {
                let m = WorkerMessage::new(id, MessageType::Status, worker, None,
                    Some(json!({"capacity": capacity, "active": active})));
                let (back, payload) = decode(&m.encode(), MAX_FRAME_BYTES).unwrap();
                prop_assert_eq!(back, m);
                prop_assert_eq!(payload, Payload::Status(StatusData { capacity, active }));
            }
        }
    }
}
