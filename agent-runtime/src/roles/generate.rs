//! `llm.generate`, which every role with a model handles: one answer, as text or as JSON
//! following a schema.

use cogo_api::catalogue::llm::{GENERATE, GenerateInput, GenerateResult, Speaker};
use serde_json::Value;

use super::{ask, need_model};
use crate::{
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    llm::{ChatMessage, ChatRequest, SharedModel},
};

/// `llm.generate`.
pub struct Generate {
    /// The agent's model.
    pub model: Option<SharedModel>,
}

impl TaskHandler for Generate {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: GenerateInput = parse_input(GENERATE, input)?;
            let model = need_model(&self.model, GENERATE)?;
            let req = request(input)?;
            let answer = ask(&ctx, &model, &req).await?;
            let result = if req.response_schema.is_some() {
                let json = serde_json::from_str(answer.text.trim()).map_err(|e| {
                    HandlerError::retryable(format!(
                        "the model's answer does not follow responseSchema (not JSON: {e})"
                    ))
                })?;
                GenerateResult {
                    text: None,
                    json: Some(json),
                    usage: answer.usage,
                }
            } else {
                GenerateResult {
                    text: Some(answer.text),
                    json: None,
                    usage: answer.usage,
                }
            };
            Ok(serde_json::to_value(result).unwrap_or_default())
        })
    }
}

/// The model request of an `llm.generate` input, checked.
fn request(input: GenerateInput) -> Result<ChatRequest, HandlerError> {
    let bad = |why: &str| HandlerError::fatal(format!("invalid llm.generate input: {why}"));
    let messages = match (input.prompt, input.messages.is_empty()) {
        (Some(p), true) => vec![ChatMessage::User(p)],
        (None, false) => {
            if input.messages.last().map(|m| m.role) != Some(Speaker::User) {
                return Err(bad("messages must end with a user turn"));
            }
            input
                .messages
                .into_iter()
                .map(|m| match m.role {
                    Speaker::User => ChatMessage::User(m.content),
                    Speaker::Assistant => ChatMessage::Assistant {
                        text: m.content,
                        calls: vec![],
                    },
                })
                .collect()
        }
        _ => return Err(bad("set exactly one of prompt and messages")),
    };
    if let Some(t) = input.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(bad(&format!("temperature must be 0 to 2, not {t}")));
    }
    if let Some(schema) = &input.response_schema
        && !schema.is_object()
    {
        return Err(bad("responseSchema must be a JSON Schema object"));
    }
    Ok(ChatRequest {
        system: input.system,
        messages,
        response_schema: input.response_schema,
        temperature: input.temperature,
        max_output_tokens: input.max_output_tokens,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inputs_are_checked_before_the_model_is_asked() {
        let parse = |v: Value| request(serde_json::from_value(v).unwrap());
        let r = parse(json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}], "system": "s"})).unwrap();
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.system.as_deref(), Some("s"));
        for (input, why) in [
            (json!({}), "set exactly one of prompt and messages"),
            (
                json!({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}),
                "exactly one",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": "b"}]}),
                "end with a user turn",
            ),
            (
                json!({"prompt": "a", "temperature": 3.0}),
                "temperature must be 0 to 2",
            ),
            (
                json!({"prompt": "a", "responseSchema": "string"}),
                "responseSchema must be",
            ),
        ] {
            let e = parse(input.clone()).unwrap_err();
            assert!(e.message.contains(why) && !e.retryable, "{input}: {e:?}");
        }
        let unknown = parse_input::<GenerateInput>(GENERATE, &json!({"promt": "a"})).unwrap_err();
        assert!(unknown.message.contains("unknown field `promt`"), "{unknown:?}");
    }
}
