//! Google's Gemini API (the Generative Language API, `v1beta`): `models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse`, with the key in the `x-goog-api-key` header.
//!
//! Tools are sent as function declarations whose `parametersJsonSchema` is the JSON Schema
//! itself, and an answer's schema as `responseJsonSchema`, so schemas generated from Rust types
//! (with `$ref`, `additionalProperties`) need no translation into the older OpenAPI subset.

use std::time::Duration;

use cogo_api::{agent::ModelProvider, catalogue::llm::Usage};
use futures::{StreamExt, future::BoxFuture};
use serde_json::{Map, Value, json};

use super::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, Grounding, ModelConfig, ModelError, ToolCall,
    arguments_object, sse,
};

/// Google's endpoint, used when the CogoAgent's `model.endpoint` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://generativelanguage.googleapis.com";

/// Finish reasons that mean a filter stopped the answer.
const BLOCKED: [&str; 6] = [
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

/// A Gemini model.
pub struct Gemini {
    http: reqwest::Client,
    base: String,
    model: String,
    key: String,
    timeout: Duration,
}

impl Gemini {
    /// A client of `config`'s model; the endpoint may name the API version (`.../v1beta`) or
    /// not (then `v1beta`).
    pub fn new(http: reqwest::Client, config: &ModelConfig) -> Self {
        let endpoint = config.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let endpoint = endpoint.trim_end_matches('/');
        let base = if endpoint.ends_with("/v1beta") || endpoint.ends_with("/v1") {
            endpoint.to_string()
        } else {
            format!("{endpoint}/v1beta")
        };
        Gemini {
            http,
            base,
            model: config.name.trim_start_matches("models/").to_string(),
            key: config.api_key.clone(),
            timeout: config.timeout,
        }
    }

    fn post(&self, method: &str, body: &Value) -> reqwest::RequestBuilder {
        let url = format!("{}/models/{}:{method}", self.base, self.model);
        self.http.post(url).header("x-goog-api-key", &self.key).json(body)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ModelError> {
        super::send(req, self.timeout, |status, wait, text| {
            error_of(status, wait, text, &self.model)
        })
        .await
    }

    fn usage(&self, v: &Value) -> Usage {
        let n = |k: &str| {
            v.pointer(&format!("/usageMetadata/{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Usage {
            model: self.model.clone(),
            input_tokens: n("promptTokenCount"),
            output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        }
    }
}

impl ChatModel for Gemini {
    fn name(&self) -> &str {
        &self.model
    }

    fn provider(&self) -> ModelProvider {
        ModelProvider::Gemini
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ModelError>> {
        Box::pin(async move {
            let res = self
                .send(self.post("generateContent", &body(req)).timeout(self.timeout))
                .await?;
            let v = super::json_answer(res, self.timeout).await?;
            let mut answer = Answer::default();
            answer.add(&v)?;
            answer.finish(self.usage(&v))
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
                    .send(self.post("streamGenerateContent?alt=sse", &body(req)))
                    .await?;
                let mut events = std::pin::pin!(sse::events(res, self.timeout));
                let mut answer = Answer::default();
                let mut usage = Usage::default();
                while let Some(data) = events.next().await {
                    let v: Value = serde_json::from_str(&data?)
                        .map_err(|e| ModelError::Malformed(format!("an event that is not JSON: {e}")))?;
                    if let Some(e) = v.get("error") {
                        let code = e.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
                        return Err(error_of(code, None, &v.to_string(), &self.model));
                    }
                    let before = answer.text.len();
                    answer.add(&v)?;
                    if answer.text.len() > before {
                        on_text(&answer.text[before..]);
                    }
                    if v.get("usageMetadata").is_some() {
                        usage = self.usage(&v);
                    }
                }
                if answer.finish_reason.is_none() {
                    return Err(ModelError::Transport(
                        "the answer's stream ended before the answer was complete".into(),
                    ));
                }
                answer.finish(usage)
            };
            super::within(self.timeout, streamed).await
        })
    }
}

/// The request body of `req`.
pub fn body(req: &ChatRequest) -> Value {
    let mut contents: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, part: Value| match contents.last_mut() {
        // Turns of one speaker in a row are one content (parallel function responses, say).
        Some((r, parts)) if *r == role => parts.push(part),
        _ => contents.push((role, vec![part])),
    };
    for m in &req.messages {
        match m {
            ChatMessage::User(text) => push("user", json!({ "text": text })),
            ChatMessage::Assistant { text, calls } => {
                if !text.is_empty() || calls.is_empty() {
                    push("model", json!({ "text": text }));
                }
                for c in calls {
                    let mut part = json!({"functionCall": {"name": c.name, "args": c.arguments}});
                    if let Some(sig) = &c.signature {
                        part["thoughtSignature"] = json!(sig);
                    }
                    push("model", part);
                }
            }
            ChatMessage::ToolResult { name, result, .. } => {
                let response = match result {
                    Value::Object(_) => result.clone(),
                    other => json!({ "result": other }),
                };
                push(
                    "user",
                    json!({"functionResponse": {"name": name, "response": response}}),
                );
            }
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        contents
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect(),
    );
    if let Some(system) = &req.system {
        body.insert("systemInstruction".into(), json!({"parts": [{"text": system}]}));
    }
    let mut config = Map::new();
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(n) = req.max_output_tokens {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(schema) = &req.response_schema {
        config.insert("responseMimeType".into(), json!("application/json"));
        config.insert("responseJsonSchema".into(), schema.clone());
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    let mut tools = Vec::new();
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters})
            })
            .collect();
        tools.push(json!({ "functionDeclarations": declarations }));
    }
    if req.search {
        tools.push(json!({ "googleSearch": {} }));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    Value::Object(body)
}

/// An answer put together from one response, or from the events of a stream.
#[derive(Default)]
struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    grounding: Vec<Grounding>,
    finish_reason: Option<String>,
}

impl Answer {
    fn add(&mut self, v: &Value) -> Result<(), ModelError> {
        if let Some(reason) = v.pointer("/promptFeedback/blockReason").and_then(Value::as_str) {
            return Err(ModelError::Blocked(format!("the prompt was blocked ({reason})")));
        }
        let Some(candidate) = v.pointer("/candidates/0") else {
            // A stream's last event may carry only the usage.
            if v.get("usageMetadata").is_some() {
                return Ok(());
            }
            return Err(ModelError::Malformed("an answer without candidates".into()));
        };
        let parts = candidate
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for part in parts {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                self.text.push_str(t);
            }
            if let Some(call) = part.get("functionCall") {
                let name = call
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ModelError::Malformed("a function call without a name".into()))?;
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{}", self.calls.len() + 1));
                self.calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments: arguments_object(call.get("args").cloned()),
                    signature: part
                        .get("thoughtSignature")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        let chunks = candidate
            .pointer("/groundingMetadata/groundingChunks")
            .and_then(Value::as_array);
        for chunk in chunks.into_iter().flatten() {
            if let Some(uri) = chunk.pointer("/web/uri").and_then(Value::as_str)
                && !self.grounding.iter().any(|g| g.uri == uri)
            {
                self.grounding.push(Grounding {
                    uri: uri.to_string(),
                    title: chunk
                        .pointer("/web/title")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(())
    }

    fn finish(self, usage: Usage) -> Result<ChatResponse, ModelError> {
        match self.finish_reason.as_deref() {
            Some(r) if BLOCKED.contains(&r) => {
                return Err(ModelError::Blocked(format!("the answer was stopped ({r})")));
            }
            Some("MALFORMED_FUNCTION_CALL") => {
                return Err(ModelError::Malformed(
                    "the model made a malformed function call".into(),
                ));
            }
            _ => {}
        }
        Ok(ChatResponse {
            text: self.text,
            calls: self.calls,
            usage,
            grounding: self.grounding,
        })
    }
}

/// The error of an answer with `status` and body `text` (`{"error": {code, message, status,
/// details}}`).
fn error_of(status: u16, wait: Option<Duration>, text: &str, model: &str) -> ModelError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let err = v.get("error").unwrap_or(&Value::Null);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()));
    let details = err.get("details").and_then(Value::as_array);
    let detail = |key: &str| {
        details
            .into_iter()
            .flatten()
            .find_map(|d| d.get(key).and_then(Value::as_str).map(str::to_string))
    };
    match status {
        400 if detail("reason").as_deref() == Some("API_KEY_INVALID") || message.contains("API key") => {
            ModelError::BadKey(message)
        }
        401 | 403 => ModelError::BadKey(message),
        404 => ModelError::BadRequest(format!("model {model:?}: {message}")),
        429 => ModelError::RateLimited {
            message,
            // The header, or the RetryInfo detail ("37s").
            retry_after: wait
                .or_else(|| detail("retryDelay").and_then(|d| super::seconds(d.trim_end_matches('s')))),
        },
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
                    calls: vec![
                        ToolCall {
                            id: "call_1".into(),
                            name: "lookup".into(),
                            arguments: json!({"city": "Seoul"}),
                            signature: Some("sig-1".into()),
                        },
                        ToolCall {
                            id: "call_2".into(),
                            name: "lookup".into(),
                            arguments: json!({"city": "Busan"}),
                            signature: None,
                        },
                    ],
                },
                ChatMessage::ToolResult {
                    call_id: "call_1".into(),
                    name: "lookup".into(),
                    result: json!({"c": 3}),
                },
                ChatMessage::ToolResult {
                    call_id: "call_2".into(),
                    name: "lookup".into(),
                    result: json!("rain"),
                },
            ],
            tools: vec![ToolSpec {
                name: "lookup".into(),
                description: "weather of a city".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            response_schema: Some(json!({"type": "object"})),
            temperature: Some(0.5),
            max_output_tokens: Some(100),
            search: true,
        };
        let b = body(&req);
        assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
        assert_eq!(b["contents"].as_array().unwrap().len(), 3, "{b}");
        assert_eq!(
            b["contents"][1]["parts"][1]["functionCall"]["args"]["city"],
            "Busan"
        );
        // Both answers in one user turn; a value that is not an object is wrapped.
        assert_eq!(
            b["contents"][2]["parts"][1]["functionResponse"],
            json!({"name": "lookup", "response": {"result": "rain"}})
        );
        assert_eq!(b["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(
            b["generationConfig"]["responseJsonSchema"],
            json!({"type": "object"})
        );
        assert_eq!(
            b["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["type"],
            "object"
        );
        assert_eq!(b["tools"][1], json!({"googleSearch": {}}));
    }

    #[test]
    fn errors_say_what_went_wrong() {
        let key = r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}"#;
        assert!(matches!(error_of(400, None, key, "m"), ModelError::BadKey(_)));
        let quota = r#"{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}"#;
        assert_eq!(
            error_of(429, None, quota, "m"),
            ModelError::RateLimited {
                message: "Resource has been exhausted".into(),
                retry_after: Some(Duration::from_secs(37))
            }
        );
        let negative = r#"{"error": {"code": 429, "message": "slow", "details": [{"retryDelay": "-1s"}]}}"#;
        assert!(matches!(
            error_of(429, None, negative, "m"),
            ModelError::RateLimited {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            error_of(503, None, "<html>", "m"),
            ModelError::Unavailable { status: 503, .. }
        ));
        let missing = error_of(404, None, r#"{"error": {"message": "not found"}}"#, "gemini-9");
        assert_eq!(
            missing.to_string(),
            "the model refused the request as invalid: model \"gemini-9\": not found"
        );
    }
}
