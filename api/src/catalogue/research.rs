//! `research.query` and `research.summarize`: answers from the model over fetched pages or
//! Google Search, with their sources.

use serde::{Deserialize, Serialize};

use super::llm::Usage;

/// The task type answering a question.
pub const QUERY: &str = "research.query";
/// The task type summarizing a text or a page.
pub const SUMMARIZE: &str = "research.summarize";

/// Input of `research.query`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryInput {
    /// The question.
    pub question: String,
    /// Pages (http or https) to read and answer from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Search the web with Google Search grounding (Gemini models only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub search: bool,
    /// The most sources to return (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sources: Option<u32>,
}

/// Result of `research.query`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    /// The model's answer.
    pub answer: String,
    /// The pages the answer rests on.
    pub sources: Vec<Source>,
    /// Tokens spent.
    pub usage: Usage,
}

/// A page an answer rests on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Where the page is (after redirects).
    pub url: String,
    /// Its title, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The start of its text, or the passage the answer cites.
    pub excerpt: String,
}

/// Input of `research.summarize`: a `text`, or a `url` to read (exactly one).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SummarizeInput {
    /// The text to summarize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A page (http or https) to read and summarize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// About how many words the summary may have (default 150).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_words: Option<u32>,
    /// The language to write the summary in (for example `en`, `ko`); default that of the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// Result of `research.summarize`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SummarizeResult {
    /// The summary.
    pub summary: String,
    /// Tokens spent.
    pub usage: Usage,
}
