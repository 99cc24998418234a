//! OpenAI-compatible chat completions (`POST {endpoint}/chat/completions`), as OpenAI, Ollama,
//! vLLM and llama.cpp's server speak it: tools, JSON Schema answers and streaming, with the
//! key as a bearer token; and embeddings (`POST {endpoint}/embeddings`).

use std::{collections::BTreeMap, time::Duration};

use cogo_api::{agent::ModelProvider, catalogue::llm::Usage};
use futures::{StreamExt, future::BoxFuture};
use serde_json::{Map, Value, json};

use super::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, Embeddings, ModelConfig, ModelError, ToolCall,
    arguments_object, sse,
};

/// An OpenAI-compatible model.
pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    /// `{endpoint}/embeddings`.
    embeddings_url: String,
    model: String,
    key: String,
    timeout: Duration,
    /// Whether the endpoint is OpenAI's own API.
    openai_itself: bool,
}

impl OpenAi {
    /// A client of `config`'s model at its endpoint, the API's base URL (for example
    /// `http://ollama:11434/v1`).
    pub fn new(http: reqwest::Client, config: &ModelConfig) -> Result<Self, String> {
        let endpoint = config
            .endpoint
            .as_deref()
            .ok_or("an OpenAI-compatible model needs spec.model.endpoint")?;
        Ok(OpenAi {
            http,
            url: format!("{}/chat/completions", endpoint.trim_end_matches('/')),
            embeddings_url: format!("{}/embeddings", endpoint.trim_end_matches('/')),
            model: config.name.clone(),
            key: config.api_key.clone(),
            timeout: config.timeout,
            openai_itself: crate::broker::host_port(endpoint).as_deref() == Some("api.openai.com:443"),
        })
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, ModelError> {
        self.post(&self.url, body).await
    }

    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, ModelError> {
        let mut req = self.http.post(url).json(body).timeout(self.timeout);
        if !self.key.is_empty() {
            req = req.bearer_auth(&self.key);
        }
        super::send(req, self.timeout, |status, wait, text| {
            error_of(status, wait, text, &self.model)
        })
        .await
    }

    fn usage(&self, v: &Value) -> Usage {
        let n = |k: &str| {
            v.pointer(&format!("/usage/{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Usage {
            model: self.model.clone(),
            input_tokens: n("prompt_tokens"),
            output_tokens: n("completion_tokens"),
        }
    }
}

impl ChatModel for OpenAi {
    fn name(&self) -> &str {
        &self.model
    }

    fn provider(&self) -> ModelProvider {
        ModelProvider::OpenAICompatible
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ModelError>> {
        Box::pin(async move {
            let res = self
                .send(&body(req, &self.model, false, self.openai_itself))
                .await?;
            let v = super::json_answer(res, self.timeout).await?;
            let choice = v
                .pointer("/choices/0")
                .ok_or_else(|| ModelError::Malformed("an answer without choices".into()))?;
            blocked(choice.get("finish_reason"))?;
            let message = choice.get("message").unwrap_or(&Value::Null);
            let mut calls = Vec::new();
            for (i, call) in message
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let id = call.get("id").and_then(Value::as_str).map(str::to_string);
                let name = call.pointer("/function/name").and_then(Value::as_str);
                let args = call.pointer("/function/arguments").and_then(Value::as_str);
                calls.push(tool_call(i, id, name, args)?);
            }
            Ok(ChatResponse {
                text: message
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                calls,
                usage: self.usage(&v),
                grounding: vec![],
            })
        })
    }

    fn embed<'a>(&'a self, inputs: &'a [String]) -> BoxFuture<'a, Result<Embeddings, ModelError>> {
        Box::pin(async move {
            let body = json!({"model": self.model, "input": inputs, "encoding_format": "float"});
            let res = self.post(&self.embeddings_url, &body).await?;
            let v = super::json_answer(res, self.timeout).await?;
            let data = v
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| ModelError::Malformed("an embeddings answer without data".into()))?;
            let mut vectors: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
            for (i, item) in data.iter().enumerate() {
                let at = item
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(i, |x| x as usize);
                let values = item.get("embedding").and_then(Value::as_array).ok_or_else(|| {
                    ModelError::Malformed(format!("embedding {at} is not a list of numbers"))
                })?;
                let vector: Option<Vec<f32>> = values.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
                let slot = vectors.get_mut(at).ok_or_else(|| {
                    ModelError::Malformed(format!("embedding {at} of {} texts", inputs.len()))
                })?;
                *slot = Some(vector.ok_or_else(|| {
                    ModelError::Malformed(format!("embedding {at} is not a list of numbers"))
                })?);
            }
            let vectors = vectors
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| ModelError::Malformed(format!("no embedding for text {i}"))))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(first) = vectors.first()
                && vectors.iter().any(|v| v.len() != first.len() || v.is_empty())
            {
                return Err(ModelError::Malformed("embeddings of different dimensions".into()));
            }
            Ok(Embeddings {
                vectors,
                usage: self.usage(&v),
            })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
        on_text: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<ChatResponse, ModelError>> {
        Box::pin(async move {
            let streamed = async {
                let res = self
                    .send(&body(req, &self.model, true, self.openai_itself))
                    .await?;
                let mut events = std::pin::pin!(sse::events(res, self.timeout));
                let (mut text, mut usage, mut done) = (String::new(), Usage::default(), false);
                // Tool calls arrive in pieces, by index: id and name first, arguments in parts.
                let mut calls: BTreeMap<u64, (Option<String>, String, String)> = BTreeMap::new();
                while let Some(data) = events.next().await {
                    let data = data?;
                    if data.trim() == "[DONE]" {
                        done = true;
                        break;
                    }
                    let v: Value = serde_json::from_str(&data)
                        .map_err(|e| ModelError::Malformed(format!("an event that is not JSON: {e}")))?;
                    if let Some(e) = v.get("error") {
                        return Err(error_of(
                            500,
                            None,
                            &json!({ "error": e }).to_string(),
                            &self.model,
                        ));
                    }
                    if v.get("usage").is_some_and(|u| !u.is_null()) {
                        usage = self.usage(&v);
                    }
                    let Some(choice) = v.pointer("/choices/0") else {
                        continue;
                    };
                    blocked(choice.get("finish_reason"))?;
                    if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str)
                        && !piece.is_empty()
                    {
                        text.push_str(piece);
                        on_text(piece);
                    }
                    for d in choice
                        .pointer("/delta/tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let index = d.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let entry = calls.entry(index).or_default();
                        if let Some(id) = d.get("id").and_then(Value::as_str) {
                            entry.0 = Some(id.to_string());
                        }
                        if let Some(n) = d.pointer("/function/name").and_then(Value::as_str) {
                            entry.1.push_str(n);
                        }
                        if let Some(a) = d.pointer("/function/arguments").and_then(Value::as_str) {
                            entry.2.push_str(a);
                        }
                    }
                }
                if !done {
                    return Err(ModelError::Transport(
                        "the answer's stream ended before the answer was complete".into(),
                    ));
                }
                let calls = calls
                    .into_values()
                    .enumerate()
                    .map(|(i, (id, name, args))| tool_call(i, id, Some(&name), Some(&args)))
                    .collect::<Result<_, _>>()?;
                Ok(ChatResponse {
                    text,
                    calls,
                    usage,
                    grounding: vec![],
                })
            };
            super::within(self.timeout, streamed).await
        })
    }
}

/// A content filter stopped the answer.
fn blocked(finish_reason: Option<&Value>) -> Result<(), ModelError> {
    match finish_reason.and_then(Value::as_str) {
        Some("content_filter") => Err(ModelError::Blocked(
            "the answer was stopped by the content filter".into(),
        )),
        _ => Ok(()),
    }
}

fn tool_call(
    i: usize,
    id: Option<String>,
    name: Option<&str>,
    args: Option<&str>,
) -> Result<ToolCall, ModelError> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ModelError::Malformed("a tool call without a name".into()))?;
    let arguments = match args.map(str::trim).filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(serde_json::from_str(a).map_err(|e| {
            ModelError::Malformed(format!("the arguments of a call of {name} are not JSON: {e}"))
        })?),
    };
    Ok(ToolCall {
        id: id.unwrap_or_else(|| format!("call_{}", i + 1)),
        name: name.to_string(),
        arguments: arguments_object(arguments),
        signature: None,
    })
}

/// The request body of `req` for `model`; `openai_itself` for OpenAI's own API
/// (`api.openai.com`), which names a few fields its own way.
pub fn body(req: &ChatRequest, model: &str, stream: bool, openai_itself: bool) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in &req.messages {
        messages.push(match m {
            ChatMessage::User(text) => json!({"role": "user", "content": text}),
            ChatMessage::Assistant { text, calls } if calls.is_empty() => {
                json!({"role": "assistant", "content": text})
            }
            ChatMessage::Assistant { text, calls } => {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                    })
                    .collect();
                let content = if text.is_empty() { Value::Null } else { json!(text) };
                json!({"role": "assistant", "content": content, "tool_calls": calls})
            }
            ChatMessage::ToolResult { call_id, result, .. } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": result.to_string()})
            }
        });
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(schema) = &req.response_schema {
        body.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}),
        );
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(n) = req.max_output_tokens {
        // OpenAI's own API wants `max_completion_tokens` (its reasoning models refuse
        // `max_tokens`); `max_tokens` is what every other compatible server reads.
        let field = if openai_itself {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body.insert(field.into(), json!(n));
    }
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

/// The error of an answer with `status` and body `text` (`{"error": {message, type, param,
/// code}}`).
fn error_of(status: u16, wait: Option<Duration>, text: &str, model: &str) -> ModelError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let err = v.get("error").unwrap_or(&Value::Null);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()));
    let code = err.get("code").and_then(Value::as_str).unwrap_or_default();
    match status {
        401 | 403 => ModelError::BadKey(message),
        429 if code == "insufficient_quota" => ModelError::QuotaExhausted(message),
        429 => ModelError::RateLimited {
            message,
            retry_after: wait,
        },
        404 => ModelError::BadRequest(format!("model {model:?}: {message}")),
        400 if code == "content_filter" || code == "content_policy_violation" => ModelError::Blocked(message),
        408 | 500..=599 => ModelError::Unavailable { status, message },
        _ => ModelError::BadRequest(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolSpec;

    #[test]
    fn bodies_follow_the_api() {
        let req = ChatRequest {
            system: Some("be brief".into()),
            messages: vec![
                ChatMessage::User("weather?".into()),
                ChatMessage::Assistant {
                    text: String::new(),
                    calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "lookup".into(),
                        arguments: json!({"city": "Seoul"}),
                        signature: None,
                    }],
                },
                ChatMessage::ToolResult {
                    call_id: "call_1".into(),
                    name: "lookup".into(),
                    result: json!({"c": 3}),
                },
            ],
            tools: vec![ToolSpec {
                name: "lookup".into(),
                description: "weather".into(),
                parameters: json!({"type": "object"}),
            }],
            response_schema: Some(json!({"type": "object"})),
            max_output_tokens: Some(10),
            ..Default::default()
        };
        let b = body(&req, "llama3", true, false);
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(b["messages"][2]["content"], Value::Null);
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            json!(r#"{"city":"Seoul"}"#),
            "arguments travel as a string"
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": r#"{"c":3}"#})
        );
        assert_eq!(
            b["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        assert_eq!(
            (b["max_tokens"].clone(), b["stream"].clone()),
            (json!(10), json!(true))
        );
    }

    #[test]
    fn errors_say_what_went_wrong() {
        let quota = r#"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
        assert!(matches!(
            error_of(429, None, quota, "m"),
            ModelError::QuotaExhausted(_)
        ));
        let rate = r#"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#;
        assert_eq!(
            error_of(429, Some(Duration::from_secs(2)), rate, "m"),
            ModelError::RateLimited {
                message: "Rate limit reached".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(error_of(401, None, "{}", "m"), ModelError::BadKey(_)));
        assert!(matches!(
            error_of(400, None, "{}", "m"),
            ModelError::BadRequest(_)
        ));
        assert!(
            tool_call(0, None, Some("f"), Some("{not json"))
                .unwrap_err()
                .to_string()
                .contains("arguments of a call of f are not JSON")
        );
    }
}
