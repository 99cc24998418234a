//! `chat.greeting`: the model greets a user in a language (the chat gateway's `ai_greeting`).

use cogo_api::catalogue::workflow::{GREETING, GreetingInput, GreetingResult};
use serde_json::Value;

use crate::{
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    llm::{ChatRequest, SharedModel},
    roles::{ask, need_model},
};

/// `chat.greeting`.
pub struct Greeting {
    /// The agent's model.
    pub model: Option<SharedModel>,
}

impl TaskHandler for Greeting {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: GreetingInput = parse_input(GREETING, input)?;
            let model = need_model(&self.model, GREETING)?;
            let language = input.language.trim();
            if language.is_empty() {
                return Err(HandlerError::fatal(
                    "invalid chat.greeting input: language is empty",
                ));
            }
            let whom = match input.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
                Some(name) => format!("Address the user as {name}."),
                None => "You do not know the user's name.".into(),
            };
            let req = ChatRequest {
                system: Some(format!(
                    "You greet users of a cluster of AI agents that research, index code, \
                     reason over knowledge graphs and run code. Write one or two short, \
                     friendly sentences in the language with the code {language}, offering \
                     help. {whom} Answer with the greeting only."
                )),
                ..ChatRequest::user(format!("Greet me in {language}."))
            };
            let answer = ask(&ctx, &model, &req).await?;
            let greeting = answer.text.trim().to_string();
            if greeting.is_empty() {
                return Err(HandlerError::retryable(
                    "the model answered with an empty greeting",
                ));
            }
            let result = GreetingResult {
                greeting,
                language: language.to_string(),
                usage: answer.usage,
            };
            Ok(serde_json::to_value(result).unwrap_or_default())
        })
    }
}
