//! `llm.generate`: one answer from the agent's language model, and the token usage every
//! model-backed result reports.

use serde::{Deserialize, Serialize};

/// The task type.
pub const GENERATE: &str = "llm.generate";

/// Input of `llm.generate`: a `prompt`, or a conversation in `messages` (not both).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateInput {
    /// A single user turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The conversation so far, oldest first, ending with a user turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Instructions the model follows for the whole conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// A JSON Schema the answer must follow; the result then carries `json` instead of `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<serde_json::Value>,
    /// Sampling temperature (0 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The most tokens the answer may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

/// One turn of a conversation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Message {
    /// Who spoke.
    pub role: Speaker,
    /// What was said.
    pub content: String,
}

/// Who spoke a turn.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The person (or program) asking.
    User,
    /// The model.
    Assistant,
}

/// Result of `llm.generate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResult {
    /// The answer, when no `responseSchema` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The answer as JSON following `responseSchema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// Tokens spent.
    pub usage: Usage,
}

/// Tokens a model call spent, summed over every call a task made.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The model that answered.
    pub model: String,
    /// Tokens of the prompts.
    pub input_tokens: u64,
    /// Tokens of the answers.
    pub output_tokens: u64,
}

impl Usage {
    /// Adds `other`'s tokens to these.
    pub fn add(&mut self, other: &Usage) {
        if self.model.is_empty() {
            self.model = other.model.clone();
        }
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}
