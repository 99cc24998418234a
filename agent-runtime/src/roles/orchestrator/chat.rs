//! `chat.message`: the model answers a user's message and may call catalogue task types as
//! tools. Each call runs as a sub-task (`<task>-c<n>`) whose result goes back to the model,
//! within [`MAX_CALLS`] calls over [`MAX_ROUNDS`] rounds.

use cogo_api::{
    broker::SubtaskRequest,
    catalogue::{
        llm::Usage,
        workflow::{CHAT, ChatInput, ChatResult},
    },
};
use serde_json::{Value, json};

use super::{outcome_json, tools, wait_for};
use crate::{
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    llm::{ChatMessage, ChatRequest, SharedModel},
    roles::{ask, need_model},
};

/// Tool calls one message may make in all.
pub const MAX_CALLS: usize = 8;
/// Rounds of tool calls before the model must answer.
pub const MAX_ROUNDS: usize = 4;

/// `chat.message`.
pub struct Chat {
    /// The agent's model.
    pub model: Option<SharedModel>,
}

impl TaskHandler for Chat {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: ChatInput = parse_input(CHAT, input)?;
            let model = need_model(&self.model, CHAT)?;
            if input.message.trim().is_empty() {
                return Err(HandlerError::fatal(
                    "invalid chat.message input: message is empty",
                ));
            }
            let tools = tools();
            let language = input
                .language
                .as_deref()
                .map(|l| format!("Answer in the language {l}."))
                .unwrap_or_else(|| "Answer in the language of the message.".into());
            let mut req = ChatRequest {
                system: Some(format!(
                    "You are the assistant of a cluster of AI agents. {language} When a tool \
                     helps, call it: each call runs a task in the cluster and gives you its \
                     result. Call at most {MAX_CALLS} tools in all."
                )),
                tools: tools.iter().map(|(spec, _)| spec.clone()).collect(),
                ..ChatRequest::user(input.message.clone())
            };
            let (mut usage, mut started) = (Usage::default(), Vec::<String>::new());
            let mut next = 1;
            for round in 0..=MAX_ROUNDS {
                if round == MAX_ROUNDS || started.len() >= MAX_CALLS {
                    // Enough tasks: the model answers with what it has.
                    req.tools.clear();
                }
                let answer = ask(&ctx, &model, &req).await?;
                usage.add(&answer.usage);
                if answer.calls.is_empty() || req.tools.is_empty() {
                    let result = ChatResult {
                        reply: answer.text,
                        tasks: started,
                        usage,
                    };
                    return Ok(serde_json::to_value(result).unwrap_or_default());
                }
                let mut results = Vec::new();
                for call in &answer.calls {
                    let Some((_, entry)) = tools.iter().find(|(spec, _)| spec.name == call.name) else {
                        results.push(json!({"error": format!("there is no tool {}", call.name)}));
                        continue;
                    };
                    if started.len() >= MAX_CALLS {
                        results.push(
                            json!({"error": format!("no more than {MAX_CALLS} tool calls per message")}),
                        );
                        continue;
                    }
                    let view = start(&ctx, &mut next, entry, &call.arguments).await?;
                    started.push(view.name.clone());
                    let done = wait_for(&ctx, &view.name).await?;
                    results.push(outcome_json(&done));
                }
                req.messages.push(ChatMessage::Assistant {
                    text: answer.text.clone(),
                    calls: answer.calls.clone(),
                });
                for (call, result) in answer.calls.iter().zip(results) {
                    req.messages.push(ChatMessage::ToolResult {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        result,
                    });
                }
            }
            Err(HandlerError::fatal("the model did not answer"))
        })
    }
}

/// Starts the call of `entry` with `arguments` as the sub-task `<task>-c<n>`, `n` counting from
/// `next`. A sub-task of that name that an earlier attempt made for the same call is taken
/// again; one made for another call (the model chose differently this time) keeps its name,
/// and the call takes the next.
async fn start(
    ctx: &TaskContext,
    next: &mut usize,
    entry: &cogo_api::catalogue::Entry,
    arguments: &Value,
) -> Result<cogo_api::broker::TaskView, HandlerError> {
    for _ in 0..4 * MAX_CALLS {
        let name = format!("{}-c{next}", ctx.task.name);
        *next += 1;
        let sub = SubtaskRequest {
            pod: String::new(),
            attempt: 0,
            name: Some(name),
            agent: None,
            role: Some(entry.role),
            task_type: entry.task_type.to_string(),
            input: Some(arguments.clone()),
            priority: 0,
            timeout_seconds: None,
            retry: None,
        };
        let view = ctx
            .create_subtask(sub)
            .await
            .map_err(|e| HandlerError::of_broker(&format!("cannot start {}", entry.task_type), e))?;
        if view.task_type == entry.task_type && view.input.as_ref() == Some(arguments) {
            return Ok(view);
        }
    }
    Err(HandlerError::fatal(format!(
        "cannot start {}: the names {}-c1 to -c{} are taken",
        entry.task_type,
        ctx.task.name,
        *next - 1
    )))
}
