//! `workflow.plan`: the model plans steps over the task catalogue with function calling (each
//! catalogue type a tool taking a step's id, dependencies and that type's input), the plan is
//! checked (each input read as its handler will, then the graph as `workflow.run` checks it),
//! recorded, and run as `workflow.run`.
//!
//! The plan is recorded as the input of a sub-task `<task>--plan` (a `cogo.echo`) before any
//! step starts, so an attempt that follows an Orchestrator's death runs the same plan rather
//! than asking the model again.

use cogo_api::{
    AgentRole,
    broker::SubtaskRequest,
    catalogue::{
        llm::Usage,
        workflow::{PLAN, PlanInput, PlanResult, Step},
    },
};
use serde_json::{Map, Value, json};

use super::{tools, workflow};
use crate::{
    broker::CallError,
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    llm::{ChatMessage, ChatRequest, SharedModel, ToolSpec},
    roles::{ask, need_model},
};

/// Times the model may correct a plan that does not pass the checks.
pub const CORRECTIONS: usize = 2;

/// `workflow.plan`.
pub struct Plan {
    /// The agent's model.
    pub model: Option<SharedModel>,
}

impl TaskHandler for Plan {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: PlanInput = parse_input(PLAN, input)?;
            let max_steps = input.max_steps.unwrap_or(10) as usize;
            if !(1..=50).contains(&max_steps) {
                return Err(HandlerError::fatal(format!(
                    "invalid workflow.plan input: maxSteps must be 1 to 50, not {max_steps}"
                )));
            }
            // Step ids never start with '-', so no step's sub-task `<task>-<id>` takes this name.
            let record = format!("{}--plan", ctx.task.name);
            let (steps, usage) = match recorded(&ctx, &record).await? {
                Some(steps) => (steps, Usage::default()),
                None => {
                    let model = need_model(&self.model, PLAN)?;
                    let (steps, usage) = plan(&model, &input, max_steps, &ctx).await?;
                    let req = SubtaskRequest {
                        pod: String::new(),
                        attempt: 0,
                        name: Some(record.clone()),
                        agent: None,
                        role: Some(AgentRole::Orchestrator),
                        task_type: "cogo.echo".into(),
                        input: Some(json!({ "steps": steps })),
                        priority: 0,
                        timeout_seconds: None,
                        retry: None,
                    };
                    let view = ctx
                        .create_subtask(req)
                        .await
                        .map_err(|e| HandlerError::of_broker("cannot record the plan", e))?;
                    // Another attempt may have recorded its plan first: that one runs.
                    match view.input.as_ref().and_then(steps_of) {
                        Some(kept) => (kept, usage),
                        None => (steps, usage),
                    }
                }
            };
            ctx.report_progress(format!("planned {} steps", steps.len()));
            let run = workflow::run(&steps, true, &ctx).await?;
            if run.phase != cogo_api::TaskPhase::Succeeded {
                return Err(HandlerError::fatal(workflow::failure_message(&run)));
            }
            let result = PlanResult {
                plan: steps,
                phase: run.phase,
                steps: run.steps,
                usage,
            };
            Ok(serde_json::to_value(result).unwrap_or_default())
        })
    }
}

/// The plan an earlier attempt recorded.
async fn recorded(ctx: &TaskContext, record: &str) -> Result<Option<Vec<Step>>, HandlerError> {
    match ctx.get_task(record).await {
        Ok(view) => Ok(view.input.as_ref().and_then(steps_of)),
        Err(CallError::Refused(404, _)) => Ok(None),
        Err(e) => Err(HandlerError::of_broker("cannot read the recorded plan", e)),
    }
}

fn steps_of(input: &Value) -> Option<Vec<Step>> {
    serde_json::from_value(input.get("steps")?.clone()).ok()
}

/// A catalogue entry's tool for planning: a step of that type, with its id, dependencies and
/// input (the entry's schema, whose `$defs` move to the top).
fn step_tool(spec: &ToolSpec) -> ToolSpec {
    let mut input = spec.parameters.clone();
    let defs = input.as_object_mut().and_then(|o| o.remove("$defs"));
    let mut schema = json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The step's id: lower-case letters, digits and '-', unique in the plan."},
            "dependsOn": {"type": "array", "items": {"type": "string"}, "description": "Ids of the steps whose results this step needs."},
            "input": input,
        },
        "required": ["id", "input"],
        "additionalProperties": false,
    });
    if let Some(defs) = defs {
        schema["$defs"] = defs;
    }
    ToolSpec {
        name: spec.name.clone(),
        description: format!(
            "Add a step that runs this task: {} A string in the input of the exact form \
             {{{{steps.<id>.result}}}} or {{{{steps.<id>.result.<field>}}}} is replaced by an \
             earlier step's result (list that step in dependsOn).",
            spec.description
        ),
        parameters: schema,
    }
}

/// Asks the model for a plan until one passes the checks (or the corrections run out).
async fn plan(
    model: &SharedModel,
    input: &PlanInput,
    max_steps: usize,
    ctx: &TaskContext,
) -> Result<(Vec<Step>, Usage), HandlerError> {
    let tools = tools();
    let mut goal = format!("Goal: {}", input.goal);
    if let Some(c) = &input.context {
        goal.push_str(&format!("\n\nContext: {c}"));
    }
    let mut req = ChatRequest {
        system: Some(format!(
            "You plan workflows. Reach the user's goal with at most {max_steps} steps, each a \
             call of one of the tools (every call adds one step; steps without dependencies \
             run in parallel). Call the tools only; do not answer in text."
        )),
        tools: tools.iter().map(|(spec, _)| step_tool(spec)).collect(),
        ..ChatRequest::user(goal)
    };
    let mut usage = Usage::default();
    for round in 0..=CORRECTIONS {
        let answer = ask(ctx, model, &req).await?;
        usage.add(&answer.usage);
        if answer.calls.is_empty() {
            return Err(HandlerError::fatal(format!(
                "the model planned no steps; it said: {}",
                answer.text.chars().take(300).collect::<String>()
            )));
        }
        let mut steps = Vec::new();
        let mut problems: Vec<Option<String>> = Vec::new();
        for call in &answer.calls {
            let checked = tools
                .iter()
                .find(|(spec, _)| spec.name == call.name)
                .ok_or_else(|| format!("there is no tool {}", call.name))
                .and_then(|(_, entry)| step_of(entry, &call.arguments));
            match checked {
                Ok(step) => {
                    steps.push(step);
                    problems.push(None);
                }
                Err(why) => problems.push(Some(why)),
            }
        }
        let mut whole = None;
        if problems.iter().all(Option::is_none) {
            if steps.len() > max_steps {
                whole = Some(format!("{} steps, the most is {max_steps}", steps.len()));
            } else if let Err(e) = workflow::check(&ctx.task.name, &steps) {
                whole = Some(e.message);
            } else {
                return Ok((steps, usage));
            }
        }
        let summary: Vec<String> = problems.iter().flatten().cloned().chain(whole.clone()).collect();
        if round == CORRECTIONS {
            return Err(HandlerError::fatal(format!(
                "the model's plan does not pass the checks: {}",
                summary.join("; ")
            )));
        }
        // The model sees what is wrong with each call, and plans again.
        req.messages.push(ChatMessage::Assistant {
            text: answer.text.clone(),
            calls: answer.calls.clone(),
        });
        for (call, problem) in answer.calls.iter().zip(&problems) {
            let result = match (problem, &whole) {
                (Some(why), _) => json!({"error": why}),
                (None, Some(why)) => json!({"error": format!("the plan as a whole: {why}")}),
                (None, None) => json!({"ok": true}),
            };
            req.messages.push(ChatMessage::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                result,
            });
        }
        req.messages.push(ChatMessage::User(
            "Some steps do not pass the checks (see the errors). Plan the whole workflow again, calling the tools for every step.".into(),
        ));
    }
    Err(HandlerError::fatal("the model's plan does not pass the checks"))
}

/// The step a tool call describes, its input read as the handler will.
fn step_of(entry: &cogo_api::catalogue::Entry, args: &Value) -> Result<Step, String> {
    let empty = Map::new();
    let o = args.as_object().unwrap_or(&empty);
    let id = o
        .get("id")
        .and_then(Value::as_str)
        .ok_or("a step needs an id")?
        .to_string();
    let input = o.get("input").cloned().unwrap_or(Value::Object(Map::new()));
    // References stand for values known only later; the rest is read as the handler will.
    if !has_reference(&input) {
        (entry.check_input)(&input)
            .map_err(|e| format!("step {id}: invalid {} input: {e}", entry.task_type))?;
    }
    let depends_on = match o.get("dependsOn") {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| format!("step {id}: dependsOn must be a list of ids"))?,
    };
    if let Some(extra) = o
        .keys()
        .find(|k| !["id", "dependsOn", "input"].contains(&k.as_str()))
    {
        return Err(format!("step {id}: unknown field `{extra}`"));
    }
    Ok(Step {
        id,
        task_type: entry.task_type.to_string(),
        input: Some(input),
        agent: None,
        role: Some(entry.role),
        depends_on,
        retry: None,
        timeout_seconds: None,
    })
}

fn has_reference(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("{{") && s.ends_with("}}"),
        Value::Array(a) => a.iter().any(has_reference),
        Value::Object(o) => o.values().any(has_reference),
        _ => false,
    }
}
