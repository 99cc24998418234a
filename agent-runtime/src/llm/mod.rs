//! Language models, as every role that reasons sees them: a [`ChatModel`] (one call to a
//! provider) with two real clients, [`gemini::Gemini`] and [`openai::OpenAi`], and [`Model`],
//! which a role holds: retries with backoff that honours `Retry-After`, a timeout per call, and
//! token and call metrics per model.
//!
//! The provider-neutral [`ChatRequest`] carries a conversation, tools (each a function with a
//! JSON Schema for its arguments), an optional JSON Schema for the answer and, for Gemini,
//! Google Search grounding. API keys travel only in headers and never reach a log.

pub mod gemini;
pub mod openai;
mod sse;

use std::{fmt, sync::Arc, time::Duration};

use cogo_api::{agent::ModelProvider, catalogue::llm::Usage};
use futures::future::BoxFuture;
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use serde_json::Value;
use tracing::warn;

/// One turn of a conversation sent to a model.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatMessage {
    /// What the user said.
    User(String),
    /// What the model said before: text and the tools it called.
    Assistant {
        /// Its text.
        text: String,
        /// The tools it called.
        calls: Vec<ToolCall>,
    },
    /// The outcome of a tool the model called.
    ToolResult {
        /// The call answered.
        call_id: String,
        /// The tool's name.
        name: String,
        /// What the tool returned (or an error object).
        result: Value,
    },
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// Its name: letters, digits, `_` and `-` (OpenAI refuses dots).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object).
    pub parameters: Value,
}

/// A call of a tool, as the model asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// An id the answer refers to (the provider's, or `call_<n>`).
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its arguments.
    pub arguments: Value,
    /// An opaque token the provider attached to the call, sent back with it in the next turn
    /// (Gemini's `thoughtSignature`, which its thinking models require).
    pub signature: Option<String>,
}

/// What is asked of a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// Instructions for the whole conversation.
    pub system: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Functions the model may call.
    pub tools: Vec<ToolSpec>,
    /// A JSON Schema the answer's text must follow (the text is then JSON).
    pub response_schema: Option<Value>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// The most tokens to answer with.
    pub max_output_tokens: Option<u32>,
    /// Ground the answer in Google Search (Gemini only).
    pub search: bool,
}

impl ChatRequest {
    /// A request of one user turn.
    pub fn user(text: impl Into<String>) -> Self {
        ChatRequest {
            messages: vec![ChatMessage::User(text.into())],
            ..Default::default()
        }
    }
}

/// A web page an answer was grounded in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grounding {
    /// Its address.
    pub uri: String,
    /// Its title.
    pub title: Option<String>,
}

/// A model's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    /// The answer's text (JSON when a response schema was given).
    pub text: String,
    /// Tools the model wants called before it answers.
    pub calls: Vec<ToolCall>,
    /// Tokens spent.
    pub usage: Usage,
    /// Pages the answer rests on, when it was grounded in a search.
    pub grounding: Vec<Grounding>,
}

/// Why a model call failed. [`ModelError::retryable`] says whether trying again may help.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The provider limits calls or tokens now (429).
    #[error("the model's quota or rate limit was hit: {message}")]
    RateLimited {
        /// What the provider said.
        message: String,
        /// How long it asked to wait.
        retry_after: Option<Duration>,
    },
    /// The account has no quota left (OpenAI's `insufficient_quota`): retrying will not help.
    #[error("the model's quota is used up: {0}")]
    QuotaExhausted(String),
    /// The provider failed or is overloaded (5xx).
    #[error("the model's provider is unavailable ({status}): {message}")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// What the provider said.
        message: String,
    },
    /// The API key was refused.
    #[error("the model's API key was refused (check the Secret in spec.model.apiKeySecretRef): {0}")]
    BadKey(String),
    /// The request was refused as invalid (a bad model name, a bad schema ...).
    #[error("the model refused the request as invalid: {0}")]
    BadRequest(String),
    /// The provider's safety filters blocked the prompt or the answer.
    #[error("the model's safety filters blocked the answer: {0}")]
    Blocked(String),
    /// No answer within the time allowed.
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed, or a stream ended before the answer was complete.
    #[error("cannot reach the model: {0}")]
    Transport(String),
    /// An answer that is not what the API documents.
    #[error("the model's answer is unreadable: {0}")]
    Malformed(String),
}

impl ModelError {
    /// Whether a later call may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ModelError::RateLimited { .. }
                | ModelError::Unavailable { .. }
                | ModelError::Timeout(_)
                | ModelError::Transport(_)
                | ModelError::Malformed(_)
        )
    }

    /// A short name of the failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::RateLimited { .. } => "rate_limited",
            ModelError::QuotaExhausted(_) => "quota_exhausted",
            ModelError::Unavailable { .. } => "unavailable",
            ModelError::BadKey(_) => "bad_key",
            ModelError::BadRequest(_) => "bad_request",
            ModelError::Blocked(_) => "blocked",
            ModelError::Timeout(_) => "timeout",
            ModelError::Transport(_) => "transport",
            ModelError::Malformed(_) => "malformed",
        }
    }

    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            return ModelError::Timeout(timeout);
        }
        // The error's chain says why (refused, reset ...); its URL is left out of the message.
        let e = e.without_url();
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        ModelError::Transport(why)
    }
}

/// One call to a provider, without retries.
pub trait ChatModel: Send + Sync {
    /// The model's name, as the provider knows it.
    fn name(&self) -> &str;
    /// The provider.
    fn provider(&self) -> ModelProvider;
    /// Asks for one answer.
    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ModelError>>;

    /// Embeddings of `inputs`, in their order. Only OpenAI-compatible servers give them
    /// (`/embeddings`); other clients refuse.
    fn embed<'a>(&'a self, inputs: &'a [String]) -> BoxFuture<'a, Result<Embeddings, ModelError>> {
        let _ = inputs;
        Box::pin(async move {
            Err(ModelError::BadRequest(format!(
                "{} gives no embeddings here: use an OpenAICompatible model with a /embeddings endpoint",
                self.name()
            )))
        })
    }
    /// Asks for one answer as a stream, giving `on_text` every piece of text as it comes; the
    /// answer whole at the end.
    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
        on_text: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<ChatResponse, ModelError>>;
}

/// Where a model is and how to reach it: the CogoAgent's `spec.model`, as the pod gets it.
#[derive(Clone)]
pub struct ModelConfig {
    /// The provider's API.
    pub provider: ModelProvider,
    /// The model's name.
    pub name: String,
    /// The API's base URL; the provider's public one when unset.
    pub endpoint: Option<String>,
    /// The API key.
    pub api_key: String,
    /// The most a call may take.
    pub timeout: Duration,
    /// Calls made for one answer before a retryable failure is given up on.
    pub attempts: u32,
}

impl fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelConfig")
            .field("provider", &self.provider)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl ModelConfig {
    /// The client for this configuration.
    pub fn client(&self) -> Result<Box<dyn ChatModel>, String> {
        let http = http_client()?;
        Ok(match self.provider {
            ModelProvider::Gemini => Box::new(gemini::Gemini::new(http, self)),
            ModelProvider::OpenAICompatible => Box::new(openai::OpenAi::new(http, self)?),
        })
    }
}

/// An HTTP client for model APIs: rustls with the ring provider and the system's roots, no
/// redirects (an API that redirects is misconfigured, and a key must not follow one).
pub fn http_client() -> Result<reqwest::Client, String> {
    let tls = crate::tls::client_config()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .clone();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("cogo-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Backoff between calls of one answer: doubling from `initial`, at most `max`, or what the
/// provider's `Retry-After` asks (up to [`MAX_RETRY_AFTER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait the client chooses itself.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(20),
        }
    }
}

/// The longest `Retry-After` honoured; a provider asking for more fails the call (the task's
/// own retry policy takes over).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Labels of a model metric.
type Labels = Vec<(String, String)>;

/// Token and call metrics of the models a pod uses.
#[derive(Clone)]
pub struct ModelMetrics {
    agent: String,
    tokens: Family<Labels, Counter>,
    calls: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for ModelMetrics {
    /// Metrics registered nowhere.
    fn default() -> Self {
        ModelMetrics {
            agent: String::new(),
            tokens: Family::default(),
            calls: Family::default(),
            seconds: Family::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
            }),
        }
    }
}

impl ModelMetrics {
    /// Metrics of the CogoAgent `agent`, registered in `metrics`:
    /// `cogo_model_tokens_total{agent,model,direction}`, `cogo_model_calls_total{agent,model,outcome}`
    /// and `cogo_model_call_seconds{agent,model}`.
    pub fn new(metrics: &crate::pod::Metrics, agent: &str) -> Self {
        let m = ModelMetrics {
            agent: agent.to_string(),
            ..ModelMetrics::default()
        };
        metrics.register(
            "model_tokens",
            "Tokens the agent's model calls spent, by direction (input or output)",
            m.tokens.clone(),
        );
        metrics.register(
            "model_calls",
            "Calls to the agent's model, by outcome (ok or the kind of failure)",
            m.calls.clone(),
        );
        metrics.register(
            "model_call_seconds",
            "How long calls to the agent's model took",
            m.seconds.clone(),
        );
        m
    }
}

/// Embeddings of some texts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    /// One vector per text, in the texts' order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read.
    pub usage: Usage,
}

/// A model as a role uses it: a client, with retries, a timeout and metrics.
pub struct Model {
    client: Box<dyn ChatModel>,
    attempts: u32,
    backoff: Backoff,
    metrics: ModelMetrics,
}

/// A model shared by a role's handlers.
pub type SharedModel = Arc<Model>;

impl Model {
    /// `client` called up to `attempts` times for one answer.
    pub fn new(client: Box<dyn ChatModel>, attempts: u32, metrics: ModelMetrics) -> Self {
        Model {
            client,
            attempts: attempts.max(1),
            backoff: Backoff::default(),
            metrics,
        }
    }

    /// The same model with another backoff (tests use short ones).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        self.client.name()
    }

    /// The provider.
    pub fn provider(&self) -> ModelProvider {
        self.client.provider()
    }

    /// One answer, retrying what may succeed later.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.retrying(|| self.client.chat(req), |r| &r.usage).await
    }

    /// One answer as a stream of text pieces given to `on_text`, retrying what may succeed
    /// later (`on_text` then sees the text again from the start of the new call).
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ChatResponse, ModelError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = self.client.chat_stream(req, on_text).await;
            self.record(result.as_ref().map(|r| &r.usage), started);
            match self.next_wait(result.as_ref().err(), attempt) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return result,
            }
        }
    }

    /// Embeddings of `inputs`, in their order, retrying what may succeed later.
    pub async fn embed(&self, inputs: &[String]) -> Result<Embeddings, ModelError> {
        self.retrying(|| self.client.embed(inputs), |e| &e.usage).await
    }

    /// `call` until it succeeds or fails for good, recording each call's outcome and the
    /// tokens `usage` reads from an answer.
    async fn retrying<'a, T>(
        &'a self,
        call: impl Fn() -> BoxFuture<'a, Result<T, ModelError>>,
        usage: impl Fn(&T) -> &Usage,
    ) -> Result<T, ModelError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = call().await;
            self.record(result.as_ref().map(&usage), started);
            match self.next_wait(result.as_ref().err(), attempt) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return result,
            }
        }
    }

    /// How long to wait before calling again after `result`, or None to return it.
    fn next_wait(&self, err: Option<&ModelError>, attempt: u32) -> Option<Duration> {
        let err = err?;
        if !err.retryable() || attempt >= self.attempts {
            return None;
        }
        let doubling = self.backoff.initial * 2u32.saturating_pow(attempt - 1);
        let wait = match err {
            ModelError::RateLimited {
                retry_after: Some(asked),
                ..
            } => {
                if *asked > MAX_RETRY_AFTER {
                    return None;
                }
                *asked
            }
            _ => doubling.min(self.backoff.max),
        };
        warn!(model = self.name(), attempt, error = %err, retry_in = ?wait, "model call failed; calling again");
        Some(wait)
    }

    fn record(&self, result: Result<&Usage, &ModelError>, started: std::time::Instant) {
        let base = vec![
            ("agent".to_string(), self.metrics.agent.clone()),
            ("model".to_string(), self.name().to_string()),
        ];
        let label = |k: &str, v: &str| {
            let mut l = base.clone();
            l.push((k.to_string(), v.to_string()));
            l
        };
        let outcome = match result {
            Ok(usage) => {
                self.metrics
                    .tokens
                    .get_or_create(&label("direction", "input"))
                    .inc_by(usage.input_tokens);
                self.metrics
                    .tokens
                    .get_or_create(&label("direction", "output"))
                    .inc_by(usage.output_tokens);
                "ok"
            }
            Err(e) => e.kind(),
        };
        self.metrics.calls.get_or_create(&label("outcome", outcome)).inc();
        self.metrics
            .seconds
            .get_or_create(&base)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Sends `req`; an answer that is not a success becomes the provider's error, which
/// `error_of` reads from its status, `Retry-After` and body (its first 64 KiB, as far as it
/// says what is wrong).
async fn send(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    error_of: impl FnOnce(u16, Option<Duration>, &str) -> ModelError,
) -> Result<reqwest::Response, ModelError> {
    let res = req
        .send()
        .await
        .map_err(|e| ModelError::from_reqwest(e, timeout))?;
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status().as_u16();
    let wait = retry_after(res.headers());
    let body = read_body(res, 64 << 10, timeout).await.unwrap_or_default();
    Err(error_of(status, wait, &String::from_utf8_lossy(&body)))
}

/// The JSON of a successful answer, read up to [`MAX_ANSWER_BYTES`].
async fn json_answer(res: reqwest::Response, timeout: Duration) -> Result<Value, ModelError> {
    let body = read_body(res, MAX_ANSWER_BYTES, timeout).await?;
    serde_json::from_slice(&body).map_err(|e| ModelError::Malformed(format!("not JSON: {e}")))
}

/// `work`, or [`ModelError::Timeout`] once `timeout` has passed (a stream as a whole).
async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, ModelError>>,
) -> Result<T, ModelError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ModelError::Timeout(timeout))?
}

/// The most bytes of an answer a client reads: its body, or the text and calls of a stream.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// The body of `res`, or an error once it passes `limit` bytes (a provider, or something posing
/// as one, cannot make the pod hold more).
async fn read_body(
    mut res: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ModelError> {
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| ModelError::from_reqwest(e, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ModelError::Malformed(format!("an answer over {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `Retry-After` of an answer, in seconds (the HTTP-date form is not used by these APIs).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    seconds(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// A count of seconds a provider sent (`"37"`, `"1.5"`), or None for anything else (negative,
/// not a number, infinite); a day at most.
fn seconds(text: &str) -> Option<Duration> {
    let s = text.trim().parse::<f64>().ok()?;
    (s.is_finite() && s >= 0.0)
        .then(|| Duration::try_from_secs_f64(s.min(86_400.0)).ok())
        .flatten()
}

/// A tool's arguments from the model: an object, or `{}` when it sent none.
fn arguments_object(v: Option<Value>) -> Value {
    match v {
        Some(Value::Object(o)) => Value::Object(o),
        Some(Value::Null) | None => Value::Object(Default::default()),
        Some(other) => serde_json::json!({ "value": other }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A model whose answers are scripted.
    struct Scripted(Mutex<Vec<Result<ChatResponse, ModelError>>>);

    impl ChatModel for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn provider(&self) -> ModelProvider {
            ModelProvider::Gemini
        }
        fn chat<'a>(&'a self, _: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ModelError>> {
            Box::pin(async move { self.0.lock().unwrap().remove(0) })
        }
        fn chat_stream<'a>(
            &'a self,
            req: &'a ChatRequest,
            _: &'a mut (dyn FnMut(&str) + Send),
        ) -> BoxFuture<'a, Result<ChatResponse, ModelError>> {
            self.chat(req)
        }
    }

    fn model(script: Vec<Result<ChatResponse, ModelError>>) -> Model {
        Model::new(Box::new(Scripted(Mutex::new(script))), 3, ModelMetrics::default())
    }

    fn ok(text: &str) -> Result<ChatResponse, ModelError> {
        Ok(ChatResponse {
            text: text.into(),
            usage: Usage {
                model: "scripted".into(),
                input_tokens: 3,
                output_tokens: 2,
            },
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_may_pass_and_honours_retry_after() {
        let m = model(vec![
            Err(ModelError::RateLimited {
                message: "slow down".into(),
                retry_after: Some(Duration::from_secs(7)),
            }),
            Err(ModelError::Unavailable {
                status: 503,
                message: "overloaded".into(),
            }),
            ok("fine"),
        ]);
        let started = tokio::time::Instant::now();
        assert_eq!(m.chat(&ChatRequest::user("hi")).await.unwrap().text, "fine");
        // 7 s as asked, then the second backoff step (1 s).
        assert_eq!(started.elapsed(), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_once_on_what_would_fail_again() {
        for err in [
            ModelError::BadKey("no".into()),
            ModelError::BadRequest("bad schema".into()),
            ModelError::Blocked("SAFETY".into()),
            ModelError::QuotaExhausted("no credit".into()),
        ] {
            let m = model(vec![Err(err.clone()), ok("never")]);
            assert_eq!(m.chat(&ChatRequest::user("hi")).await, Err(err));
        }
        // A provider asking to wait longer than a task should: the task's retry takes over.
        let long = ModelError::RateLimited {
            message: "daily quota".into(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        let m = model(vec![Err(long.clone()), ok("never")]);
        assert_eq!(m.chat(&ChatRequest::user("hi")).await, Err(long));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_its_attempts() {
        let down = || Err(ModelError::Transport("connection refused".into()));
        let m = model(vec![down(), down(), down(), ok("late")]);
        assert!(matches!(
            m.chat(&ChatRequest::user("hi")).await,
            Err(ModelError::Transport(_))
        ));
    }

    #[test]
    fn only_sensible_waits_are_read() {
        assert_eq!(seconds(" 37 "), Some(Duration::from_secs(37)));
        assert_eq!(seconds("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(seconds("1e30"), Some(Duration::from_secs(86_400)));
        for bad in ["inf", "NaN", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", ""] {
            assert_eq!(seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let c = ModelConfig {
            provider: ModelProvider::Gemini,
            name: "gemini-2.5-flash-lite".into(),
            endpoint: None,
            api_key: "AIza-secret".into(),
            timeout: Duration::from_secs(1),
            attempts: 1,
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("AIza-secret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn metrics_count_tokens_and_outcomes_per_model() {
        let registry = crate::pod::Metrics::new("agent", "role", "research");
        let m = Model::new(
            Box::new(Scripted(Mutex::new(vec![
                ok("a"),
                Err(ModelError::BadKey("no".into())),
            ]))),
            1,
            ModelMetrics::new(&registry, "research"),
        );
        m.chat(&ChatRequest::user("x")).await.unwrap();
        m.chat(&ChatRequest::user("x")).await.unwrap_err();
        let text = registry.render();
        for line in [
            r#"cogo_model_tokens_total{agent="research",model="scripted",direction="input"} 3"#,
            r#"cogo_model_tokens_total{agent="research",model="scripted",direction="output"} 2"#,
            r#"cogo_model_calls_total{agent="research",model="scripted",outcome="ok"} 1"#,
            r#"cogo_model_calls_total{agent="research",model="scripted",outcome="bad_key"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
