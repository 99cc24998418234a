//! The Orchestrator: workflows of sub-tasks ([`workflow`], `workflow.run`), workflows the
//! model plans ([`plan`], `workflow.plan`), chat that may start tasks ([`chat`],
//! `chat.message`) and the chat gateway's greeting ([`greeting`], `chat.greeting`). The catalogue's task types are the model's tools ([`tools`]), their
//! schemas generated from the Rust types the handlers read.

pub mod chat;
pub mod greeting;
pub mod plan;
pub mod workflow;

use std::time::Duration;

use cogo_api::{
    TaskPhase,
    broker::TaskView,
    catalogue::{self, workflow as wf},
};

use super::{RoleConfig, RoleParts};
use crate::{
    broker::CallError,
    handler::{HandlerError, Registry, TaskContext},
    llm::ToolSpec,
    pull::{FixedSlots, Lane},
};

/// Type prefixes of the tasks that wait for sub-tasks: they run in a lane of their own.
pub const WAITING_TYPES: [&str; 2] = ["workflow.", "chat."];

/// Registers the Orchestrator's task types. Workflows and chats run in a lane of their own
/// with `concurrency` slots, next to the role's own lane: a pod full of workflows still has
/// slots for the steps they wait for that run on the Orchestrator, so they never wait on
/// each other.
pub fn register(config: &RoleConfig, registry: &mut Registry) -> RoleParts {
    let model = config.model.clone();
    registry.register(wf::RUN, workflow::RunWorkflow);
    registry.register(wf::PLAN, plan::Plan { model: model.clone() });
    registry.register(wf::CHAT, chat::Chat { model: model.clone() });
    registry.register(wf::GREETING, greeting::Greeting { model });
    let prefixes: Vec<String> = WAITING_TYPES.iter().map(|p| p.to_string()).collect();
    RoleParts {
        routes: axum::Router::new(),
        lanes: vec![Lane {
            name: "workflows".into(),
            type_prefixes: prefixes.clone(),
            exclude_type_prefixes: vec![],
            slots: std::sync::Arc::new(FixedSlots::new(config.concurrency)),
            wait_seconds: crate::pull::OWN_LANE_WAIT_SECONDS,
        }],
        own_lane_excludes: prefixes,
        background: vec![],
    }
}

/// The catalogue types as a model's tools: each tool's name (the type with `_` for `.`, which
/// OpenAI refuses in names) and the catalogue entry, made once.
pub fn tools() -> &'static [(ToolSpec, catalogue::Entry)] {
    static TOOLS: std::sync::OnceLock<Vec<(ToolSpec, catalogue::Entry)>> = std::sync::OnceLock::new();
    TOOLS.get_or_init(|| {
        catalogue::entries()
            .into_iter()
            .map(|e| {
                let spec = ToolSpec {
                    name: tool_name(e.task_type),
                    description: e.description.to_string(),
                    parameters: e.input_schema.clone(),
                };
                (spec, e)
            })
            .collect()
    })
}

/// The tool name of a task type.
pub fn tool_name(task_type: &str) -> String {
    task_type.replace('.', "_")
}

/// Waits until the task `name` has ended, polling it with backoff; the task's cancellation
/// stops the wait.
pub(crate) async fn wait_for(ctx: &TaskContext, name: &str) -> Result<TaskView, HandlerError> {
    // Short at first, so a quick sub-task is seen done soon after it is.
    let mut delay = Duration::from_millis(25);
    let mut missing = 0;
    loop {
        match ctx.get_task(name).await {
            Ok(view) if view.phase.is_terminal() => return Ok(view),
            Ok(_) => missing = 0,
            // A broker reading from a cache may not see a sub-task it just made; one that
            // stays missing was deleted.
            Err(CallError::Refused(404, _)) => {
                missing += 1;
                if missing >= 5 {
                    return Err(HandlerError::fatal(format!("sub-task {name} was deleted")));
                }
            }
            // Transport trouble: the next poll may pass.
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.until_cancelled() => return Err(HandlerError::cancelled()),
        }
        delay = (delay * 3 / 2).min(Duration::from_secs(2));
    }
}

/// What a finished sub-task gives back to the model: its result, or why it has none.
pub(crate) fn outcome_json(view: &TaskView) -> serde_json::Value {
    match (view.phase, &view.result) {
        (TaskPhase::Succeeded, Some(r)) => r.clone(),
        (TaskPhase::Succeeded, None) => serde_json::json!({
            "note": "the result is too large to show",
            "digest": view.result_ref.as_ref().map(|r| r.digest.clone()),
        }),
        (phase, _) => serde_json::json!({
            "error": format!("the task ended {}: {}", phase.as_str(), view.message.clone().unwrap_or_default()),
        }),
    }
}
