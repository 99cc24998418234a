//! Strict local stand-ins for the LLM HTTP APIs that Cogo's clients call: the Gemini API
//! (`generateContent`, `streamGenerateContent?alt=sse`, v1beta) and OpenAI Chat Completions.
//!
//! Each stand-in checks a request the way the provider documents it (path, method, key
//! header, body fields), refuses what the provider would refuse in the provider's own error
//! format, records every request, and answers with the next scripted [`Reply`] or, when the
//! script is empty, a default answer that echoes the last user turn. A refused request does
//! not take a scripted reply.

pub mod figma;
mod gemini;
pub mod mcp;
mod openai;
mod pages;

pub use pages::Pages;

use std::{
    collections::VecDeque,
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{StatusCode, header},
    response::Response,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The longest request body a stand-in reads.
const BODY_LIMIT: usize = 32 << 20;

/// How much of the last user turn the default reply echoes, in characters.
const ECHO_LIMIT: usize = 4000;

/// A running stand-in server. Stops accepting connections when dropped.
pub struct StandIn {
    addr: SocketAddr,
    api: Api,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without the `?`.
    pub query: Option<String>,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, or `Null` when it is not JSON.
    pub body: Value,
    /// The status the stand-in answered.
    pub status: u16,
}

/// What the stand-in answers to the next request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A plain text answer.
    Text(String),
    /// Function (tool) calls: each a name and an arguments object.
    Calls(Vec<(String, Value)>),
    /// Gemini: an answer grounded by Google Search, with its sources as (uri, title).
    /// OpenAI answers the text alone.
    Grounded {
        /// The answer.
        text: String,
        /// The web sources, as (uri, title).
        sources: Vec<(String, String)>,
    },
    /// An error in the provider's format, with a `Retry-After` header (seconds) when given.
    Status {
        /// The HTTP status.
        code: u16,
        /// The `Retry-After` header, in seconds.
        retry_after: Option<u64>,
    },
    /// Gemini: the prompt is blocked (`promptFeedback.blockReason: SAFETY`, no candidates).
    /// OpenAI: `finish_reason: "content_filter"` with `content: null`.
    SafetyBlock,
    /// The inner reply, after a delay.
    Slow(Duration, Box<Reply>),
    /// A 200 whose body is not JSON.
    Malformed,
    /// What the stand-in answers when nothing is scripted (see `default_reply`); useful inside
    /// `Slow`.
    Unscripted,
    /// Streaming: part of the text as one or two events, then the connection closes without
    /// the end of the stream. Not streaming: the connection closes after half the body.
    CutStream(String),
}

impl StandIn {
    /// A Gemini API stand-in on a free port of 127.0.0.1 that accepts `api_key`. Panics when no
    /// port can be bound.
    pub async fn gemini(api_key: &str) -> StandIn {
        Self::start(Api::Gemini, localhost(), api_key)
            .await
            .expect("a stand-in binds a free port of 127.0.0.1")
    }

    /// An OpenAI Chat Completions stand-in on a free port of 127.0.0.1 that accepts `api_key`. Panics when no
    /// port can be bound.
    pub async fn openai(api_key: &str) -> StandIn {
        Self::start(Api::OpenAi, localhost(), api_key)
            .await
            .expect("a stand-in binds a free port of 127.0.0.1")
    }

    /// A Gemini API stand-in on `addr` (e.g. an address that pods can reach).
    pub async fn gemini_on(addr: SocketAddr, api_key: &str) -> io::Result<StandIn> {
        Self::start(Api::Gemini, addr, api_key).await
    }

    /// An OpenAI Chat Completions stand-in on `addr` (e.g. an address that pods can reach).
    pub async fn openai_on(addr: SocketAddr, api_key: &str) -> io::Result<StandIn> {
        Self::start(Api::OpenAi, addr, api_key).await
    }

    async fn start(api: Api, addr: SocketAddr, api_key: &str) -> io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            api,
            key: api_key.to_owned(),
            script: Mutex::default(),
            log: Mutex::default(),
            ids: AtomicU64::new(1),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            // Ends only when the listener fails; the stand-in is then simply gone.
            let _ = axum::serve(listener, app).await;
        });
        Ok(StandIn {
            addr,
            api,
            shared,
            task,
        })
    }

    /// The address the stand-in listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client is configured with. Gemini: `http://127.0.0.1:PORT` (the client
    /// appends `/v1beta/models/{model}:generateContent`). OpenAI: `http://127.0.0.1:PORT/v1`
    /// (the client appends `/chat/completions`).
    pub fn endpoint(&self) -> String {
        match self.api {
            Api::Gemini => format!("http://{}", self.addr),
            Api::OpenAi => format!("http://{}/v1", self.addr),
        }
    }

    /// Queues replies: each accepted request takes the next one; when the queue is empty,
    /// the default reply.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.script).extend(replies);
    }

    /// Every request received so far (the refused ones too), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy)]
enum Api {
    Gemini,
    OpenAi,
}

struct Shared {
    api: Api,
    key: String,
    script: Mutex<VecDeque<Reply>>,
    log: Mutex<Vec<Recorded>>,
    /// Numbers for response and tool-call ids, unique per stand-in.
    ids: AtomicU64,
}

/// A request as the provider modules check it.
struct Incoming {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What an accepted request asks for, as far as the answer depends on it.
struct Call {
    model: String,
    stream: bool,
    /// OpenAI `stream_options.include_usage`.
    include_usage: bool,
    /// OpenAI `n`: how many choices.
    choices: usize,
    /// The text of the last user turn.
    last_user: String,
    prompt_tokens: u64,
    want: Want,
}

/// The output format a request asks for.
enum Want {
    Text,
    Json,
    Schema(Value),
}

/// An answer, before it becomes an HTTP response.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Payload,
    /// Close the connection before the body ends.
    cut: bool,
}

enum Payload {
    Json(Value),
    /// Server-sent events, each already framed.
    Events(Vec<String>),
    NotJson,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: Payload::Json(body),
            cut: false,
        }
    }

    fn events(events: Vec<String>, cut: bool) -> Answer {
        Answer {
            status: 200,
            retry_after: None,
            body: Payload::Events(events),
            cut,
        }
    }

    fn not_json() -> Answer {
        Answer {
            status: 200,
            retry_after: None,
            body: Payload::NotJson,
            cut: false,
        }
    }

    fn retry_after(mut self, seconds: Option<u64>) -> Answer {
        self.retry_after = seconds;
        self
    }

    fn cut(mut self) -> Answer {
        self.cut = true;
        self
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let incoming = Incoming {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default(),
    };
    let (answer, delay) = shared.answer(&incoming);
    lock(&shared.log).push(Recorded {
        body: serde_json::from_slice(&incoming.body).unwrap_or(Value::Null),
        method: incoming.method,
        path: incoming.path,
        query: incoming.query,
        headers: incoming.headers,
        status: answer.status,
    });
    tokio::time::sleep(delay).await;
    respond(answer)
}

impl Shared {
    /// Checks the request, takes the next reply and renders it; also returns the delay of
    /// a `Slow` reply.
    fn answer(&self, incoming: &Incoming) -> (Answer, Duration) {
        let checked = match self.api {
            Api::Gemini => gemini::check(incoming, &self.key),
            Api::OpenAi => openai::check(incoming, &self.key),
        };
        let call = match checked {
            Ok(call) => call,
            Err(refusal) => return (refusal, Duration::ZERO),
        };
        let mut reply = lock(&self.script)
            .pop_front()
            .unwrap_or_else(|| default_reply(&call));
        let mut delay = Duration::ZERO;
        while let Reply::Slow(pause, inner) = reply {
            delay += pause;
            reply = *inner;
        }
        if let Reply::Unscripted = reply {
            reply = default_reply(&call);
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let answer = match (&reply, self.api) {
            (Reply::Malformed, _) => Answer::not_json(),
            (Reply::CutStream(text), api) if !call.stream => {
                render(api, &Reply::Text(text.clone()), &call, id, &self.ids).cut()
            }
            (reply, api) => render(api, reply, &call, id, &self.ids),
        };
        (answer, delay)
    }
}

fn render(api: Api, reply: &Reply, call: &Call, id: u64, ids: &AtomicU64) -> Answer {
    match api {
        Api::Gemini => gemini::render(reply, call, id),
        Api::OpenAi => openai::render(reply, call, id, ids),
    }
}

fn respond(answer: Answer) -> Response {
    let (content_type, chunks): (&str, Vec<Bytes>) = match answer.body {
        Payload::Json(body) => ("application/json; charset=UTF-8", vec![body.to_string().into()]),
        Payload::Events(events) => ("text/event-stream", events.into_iter().map(Bytes::from).collect()),
        Payload::NotJson => (
            "text/html; charset=UTF-8",
            vec!["<html><body>stand-in: not JSON</body></html>".into()],
        ),
    };
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(seconds) = answer.retry_after {
        response = response.header(header::RETRY_AFTER, seconds);
    }
    let streamed = content_type == "text/event-stream";
    let body = if !answer.cut && !streamed {
        Body::from(chunks.concat())
    } else if !answer.cut {
        let events = chunks.into_iter().map(Ok::<_, io::Error>);
        Body::from_stream(futures::stream::iter(events))
    } else {
        let mut chunks = chunks;
        if let (false, [whole]) = (streamed, chunks.as_slice()) {
            // A whole body: announce its full length, send half, then close.
            response = response.header(header::CONTENT_LENGTH, whole.len());
            chunks = vec![whole.slice(..whole.len() / 2)];
        }
        let sent = futures::stream::iter(chunks.into_iter().map(Ok));
        // The pause lets the server flush what was sent before the error closes the connection.
        let close = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(io::Error::other("the stand-in cuts the connection"))
        });
        Body::from_stream(sent.chain(close))
    };
    response
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The reply to a request when the script is empty: an echo of the last user turn, as JSON
/// when the request asks for JSON, shaped by the schema when it gives one.
fn default_reply(call: &Call) -> Reply {
    let echoed: String = call.last_user.chars().take(ECHO_LIMIT).collect();
    let text = format!("stand-in answer: {echoed}");
    Reply::Text(match &call.want {
        Want::Text => text,
        Want::Json => json!({ "answer": text }).to_string(),
        Want::Schema(schema) => minimal(schema, schema, 0).to_string(),
    })
}

/// A small value that satisfies `schema` (JSON Schema or Gemini's OpenAPI subset): objects
/// with their required properties, "stand-in" strings, zero numbers, false booleans, empty
/// arrays, the first enum value; `$ref`s are followed into `root`.
fn minimal(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > 32 {
        return Value::Null;
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let target = target.strip_prefix('#').and_then(|pointer| root.pointer(pointer));
        return target.map_or(Value::Null, |s| minimal(s, root, depth + 1));
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    for key in ["anyOf", "oneOf", "allOf", "any_of"] {
        if let Some(first) = schema.get(key).and_then(|s| s.get(0)) {
            return minimal(first, root, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).find(|k| *k != "null"),
        Some(kind) => kind.as_str(),
        None if schema.get("properties").is_some() => Some("object"),
        None if schema.get("items").is_some() => Some("array"),
        None => None,
    };
    let at_least = |key: &str| schema.get(key).and_then(Value::as_f64).unwrap_or(0.0).max(0.0);
    match kind.map(str::to_ascii_lowercase).as_deref() {
        Some("object") => {
            let properties = schema.get("properties");
            let required = schema.get("required").and_then(Value::as_array);
            let fields = required
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|name| {
                    let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                    (name.to_owned(), minimal(property, root, depth + 1))
                });
            Value::Object(fields.collect())
        }
        Some("array") => {
            let item = minimal(schema.get("items").unwrap_or(&Value::Null), root, depth + 1);
            let count = schema
                .get("minItems")
                .and_then(|n| n.as_u64().or_else(|| n.as_str()?.parse().ok()));
            Value::Array(vec![item; count.unwrap_or(0) as usize])
        }
        Some("integer") => json!(at_least("minimum").ceil() as i64),
        Some("number") => json!(at_least("minimum")),
        Some("boolean") => Value::Bool(false),
        Some("null") => Value::Null,
        _ => json!("stand-in"),
    }
}

/// A stable rough token count: a quarter of the characters, rounded up, at least 1.
fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4).max(1) as u64
}

/// `text` in `n` pieces of about equal length (fewer when it is shorter than `n`).
fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn localhost() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A tiny HTTP/1.1 client for the tests: it sees exactly what went over the wire,
/// including a body cut short.
#[cfg(test)]
mod testing {
    use std::{
        io::{Read, Write},
        net::{SocketAddr, TcpStream},
        time::Duration,
    };

    /// A response as it arrived.
    pub(super) struct Raw {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: String,
        /// Whether the body arrived whole.
        pub complete: bool,
    }

    impl Raw {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        /// The `data:` payloads of a server-sent event stream.
        pub fn events(&self) -> Vec<String> {
            let data = self.body.lines().filter_map(|line| line.strip_prefix("data: "));
            data.map(str::to_owned).collect()
        }
    }

    /// `body` with the value at `pointer` set (replaced, or added to its parent object).
    pub(super) fn with(
        mut body: serde_json::Value,
        pointer: &str,
        value: serde_json::Value,
    ) -> serde_json::Value {
        if let Some(slot) = body.pointer_mut(pointer) {
            *slot = value;
        } else {
            let (parent, name) = pointer.rsplit_once('/').expect("a pointer");
            body.pointer_mut(parent).expect("the parent")[name] = value;
        }
        body
    }

    /// Sends one request on a fresh connection and reads until the server closes it.
    pub(super) async fn send(
        addr: SocketAddr,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Raw {
        let mut request = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        tokio::task::spawn_blocking(move || exchange(addr, &request))
            .await
            .expect("the client thread")
    }

    fn exchange(addr: SocketAddr, request: &str) -> Raw {
        let mut stream = TcpStream::connect(addr).expect("connect to the stand-in");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a timeout");
        stream.write_all(request.as_bytes()).expect("send the request");
        let mut raw = Vec::new();
        let mut buffer = [0u8; 8192];
        // A reset ends the read like a close: both are what a cut looks like.
        while let Ok(n @ 1..) = stream.read(&mut buffer) {
            raw.extend_from_slice(&buffer[..n]);
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let (body, complete) = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            dechunk(rest)
        } else if let Some(length) = find("content-length").and_then(|l| l.parse::<usize>().ok()) {
            (rest.to_owned(), rest.len() >= length)
        } else {
            (rest.to_owned(), true)
        };
        Raw {
            status,
            headers,
            body,
            complete,
        }
    }

    fn dechunk(mut rest: &str) -> (String, bool) {
        let mut body = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if size == 0 {
                return (body, true);
            }
            let Some(chunk) = after.get(..size) else { break };
            body.push_str(chunk);
            rest = after.get(size + 2..).unwrap_or_default();
        }
        (body, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_value_satisfies_the_schema() {
        let schema = json!({
            "type": "object",
            "required": ["name", "tags", "kind", "size", "ok", "nested"],
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"type": "string", "enum": ["first", "second"]},
                "size": {"type": ["integer", "null"], "minimum": 2},
                "ok": {"type": "boolean"},
                "nested": {"$ref": "#/$defs/Nested"},
                "optional": {"type": "string"}
            },
            "$defs": {"Nested": {"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}}}}
        });
        assert_eq!(
            minimal(&schema, &schema, 0),
            json!({"name": "stand-in", "tags": [], "kind": "first", "size": 2, "ok": false, "nested": {"n": 0.0}})
        );
        let gemini = json!({"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}, "required": ["a"]});
        assert_eq!(minimal(&gemini, &gemini, 0), json!({"a": 0}));
    }

    #[test]
    fn token_counts_are_a_quarter_of_the_characters() {
        assert_eq!((tokens(0), tokens(4), tokens(5)), (1, 1, 2));
        assert_eq!(pieces("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(pieces("ab", 3), ["a", "b"]);
    }
}
