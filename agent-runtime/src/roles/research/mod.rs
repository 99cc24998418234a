//! The Research agent: `research.query` answers a question from pages it reads ([`fetch`],
//! [`html`]) or from Google Search, with the sources; `research.summarize` summarizes a text or
//! a page. Both ask the agent's model.

pub mod fetch;
pub mod html;

use cogo_api::{
    agent::ModelProvider,
    catalogue::research::{
        QUERY, QueryInput, QueryResult, SUMMARIZE, Source, SummarizeInput, SummarizeResult,
    },
};
use serde_json::Value;

use self::fetch::{FetchPolicy, Page};
use super::{ask, need_model, unless_cancelled};
use crate::{
    handler::{HandlerError, HandlerFuture, Registry, TaskContext, TaskHandler, parse_input},
    llm::{ChatRequest, SharedModel},
};

/// Pages one query may read.
pub const MAX_URLS: usize = 10;
/// Characters of page text given to the model for one query, shared by its pages.
pub const TEXT_BUDGET: usize = 60_000;
/// Characters of a source's excerpt in the result.
const EXCERPT: usize = 300;

/// Registers `research.query` and `research.summarize`, reading pages under `policy`.
pub fn register(registry: &mut Registry, model: Option<SharedModel>, policy: FetchPolicy) {
    registry.register(
        QUERY,
        Query {
            model: model.clone(),
            policy: policy.clone(),
        },
    );
    registry.register(SUMMARIZE, Summarize { model, policy });
}

fn fetch_error(url: &str, e: fetch::FetchError) -> HandlerError {
    let message = format!("cannot read {url}: {e}");
    if e.retryable() {
        HandlerError::retryable(message)
    } else {
        HandlerError::fatal(message)
    }
}

fn excerpt(text: &str, chars: usize) -> String {
    let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = out.char_indices().nth(chars) {
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// `research.query`.
pub struct Query {
    model: Option<SharedModel>,
    policy: FetchPolicy,
}

impl TaskHandler for Query {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: QueryInput = parse_input(QUERY, input)?;
            let model = need_model(&self.model, QUERY)?;
            if input.question.trim().is_empty() {
                return Err(HandlerError::fatal(
                    "invalid research.query input: question is empty",
                ));
            }
            if input.urls.len() > MAX_URLS {
                return Err(HandlerError::fatal(format!(
                    "invalid research.query input: {} urls, the most is {MAX_URLS}",
                    input.urls.len()
                )));
            }
            let max_sources = input.max_sources.unwrap_or(5) as usize;
            if !(1..=20).contains(&max_sources) {
                return Err(HandlerError::fatal(format!(
                    "invalid research.query input: maxSources must be 1 to 20, not {max_sources}"
                )));
            }
            if input.search && model.provider() != ModelProvider::Gemini {
                return Err(HandlerError::fatal(format!(
                    "research.query with search needs a Gemini model (Google Search grounding); this agent uses {} ({:?})",
                    model.name(),
                    model.provider()
                )));
            }
            let pages = unless_cancelled(&ctx, read_all(&input.urls, &self.policy)).await?;
            let req = ChatRequest {
                system: Some(
                    "You are a careful research assistant. Answer the question. When numbered \
                     sources are given, rely on them, cite them as [n], and say so when they do \
                     not answer the question."
                        .into(),
                ),
                search: input.search,
                ..ChatRequest::user(query_prompt(&input.question, &pages))
            };
            let answer = ask(&ctx, &model, &req).await?;
            let mut sources: Vec<Source> = pages
                .iter()
                .map(|p| Source {
                    url: p.final_url.clone(),
                    title: p.title.clone(),
                    excerpt: excerpt(&p.text, EXCERPT),
                })
                .collect();
            sources.extend(answer.grounding.iter().map(|g| Source {
                url: g.uri.clone(),
                title: g.title.clone(),
                excerpt: String::new(),
            }));
            sources.truncate(max_sources);
            let result = QueryResult {
                answer: answer.text,
                sources,
                usage: answer.usage,
            };
            Ok(serde_json::to_value(result).unwrap_or_default())
        })
    }
}

/// Reads `urls` at once. A page that cannot be read fails the query: an answer must not
/// silently rest on fewer sources than asked for.
async fn read_all(urls: &[String], policy: &FetchPolicy) -> Result<Vec<Page>, HandlerError> {
    let reads = urls
        .iter()
        .map(|u| async move { fetch::fetch(u, policy).await.map_err(|e| fetch_error(u, e)) });
    futures::future::join_all(reads).await.into_iter().collect()
}

/// The question, and each page's text within the budget.
fn query_prompt(question: &str, pages: &[Page]) -> String {
    let mut prompt = format!("Question: {question}\n");
    if pages.is_empty() {
        return prompt;
    }
    let share = TEXT_BUDGET / pages.len();
    prompt.push_str("\nSources:\n");
    for (i, p) in pages.iter().enumerate() {
        let title = p.title.as_deref().unwrap_or("untitled");
        let text: String = p.text.chars().take(share).collect();
        prompt.push_str(&format!("\n[{}] {title} ({})\n{text}\n", i + 1, p.final_url));
    }
    prompt
}

/// `research.summarize`.
pub struct Summarize {
    model: Option<SharedModel>,
    policy: FetchPolicy,
}

impl TaskHandler for Summarize {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: SummarizeInput = parse_input(SUMMARIZE, input)?;
            let model = need_model(&self.model, SUMMARIZE)?;
            let max_words = input.max_words.unwrap_or(150);
            if !(1..=2000).contains(&max_words) {
                return Err(HandlerError::fatal(format!(
                    "invalid research.summarize input: maxWords must be 1 to 2000, not {max_words}"
                )));
            }
            let text = match (input.text, input.url) {
                (Some(t), None) if !t.trim().is_empty() => t,
                (None, Some(url)) => {
                    let page = unless_cancelled(&ctx, async {
                        fetch::fetch(&url, &self.policy)
                            .await
                            .map_err(|e| fetch_error(&url, e))
                    })
                    .await?;
                    page.text
                }
                _ => {
                    return Err(HandlerError::fatal(
                        "invalid research.summarize input: set exactly one of text and url, not empty",
                    ));
                }
            };
            let language = input
                .language
                .map(|l| format!(" Write it in the language {l}."))
                .unwrap_or_else(|| " Write it in the language of the text.".into());
            let req = ChatRequest {
                system: Some(format!(
                    "Summarize the text the user gives in at most {max_words} words, keeping its key facts.{language} Answer with the summary only."
                )),
                ..ChatRequest::user(text.chars().take(TEXT_BUDGET).collect::<String>())
            };
            let answer = ask(&ctx, &model, &req).await?;
            let result = SummarizeResult {
                summary: answer.text.trim().to_string(),
                usage: answer.usage,
            };
            Ok(serde_json::to_value(result).unwrap_or_default())
        })
    }
}
