//! The Orchestrator's task types: `workflow.run` (a DAG of steps run as sub-tasks),
//! `workflow.plan` (the model plans the steps, then they run) and `chat.message` (the model
//! answers and may start catalogue tasks).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::llm::Usage;
use crate::{AgentRole, RetryPolicy, TaskPhase};

/// The task type running a DAG of steps.
pub const RUN: &str = "workflow.run";
/// The task type planning steps for a goal, then running them.
pub const PLAN: &str = "workflow.plan";
/// The task type answering a chat message.
pub const CHAT: &str = "chat.message";
/// The task type writing the chat gateway's greeting.
pub const GREETING: &str = "chat.greeting";

/// Input of `workflow.run`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunInput {
    /// The steps (1 to 100), each run as a sub-task named `<task>-<id>` once the steps it
    /// depends on have succeeded.
    pub steps: Vec<Step>,
    /// When a step fails: true (the default) cancels the running steps and starts no more;
    /// false lets the steps that do not depend on it run to their end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
}

/// One step of a workflow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// The step's id: lower-case letters, digits and '-', unique in the workflow.
    pub id: String,
    /// The sub-task's type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The sub-task's input. A string value of the exact form `{{steps.<id>.result}}` or
    /// `{{steps.<id>.result.<a.b.0>}}` becomes that JSON value of an earlier step's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The CogoAgent to run the step (default: any agent of `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The role whose agents may run the step (default: the role the type belongs to, such
    /// as Research for `research.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<AgentRole>,
    /// Ids of the steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// How the step's sub-task is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Seconds the step may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
}

/// Result of `workflow.run`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// `Succeeded` when every step did.
    pub phase: TaskPhase,
    /// Every step's outcome, by id.
    pub steps: BTreeMap<String, StepOutcome>,
}

/// How a step ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    /// The step's sub-task (empty for a step that never started).
    pub task: String,
    /// Its phase (`Pending` for a step that never started).
    pub phase: TaskPhase,
    /// Its result, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What happened, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Input of `workflow.plan`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanInput {
    /// What the workflow should achieve.
    pub goal: String,
    /// What the model should know besides the goal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The most steps the plan may have (1 to 50, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
}

/// Result of `workflow.plan`: the plan and how running it went.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanResult {
    /// The steps the model planned.
    pub plan: Vec<Step>,
    /// `Succeeded` when every step did.
    pub phase: TaskPhase,
    /// Every step's outcome, by id.
    pub steps: BTreeMap<String, StepOutcome>,
    /// Tokens spent planning.
    pub usage: Usage,
}

/// Input of `chat.message`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatInput {
    /// The conversation the message belongs to.
    pub session_id: String,
    /// The user's message.
    pub message: String,
    /// The language to answer in (for example `en`, `ko`); default that of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// Result of `chat.message`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatResult {
    /// The model's reply.
    pub reply: String,
    /// Names of the sub-tasks the model started to answer.
    pub tasks: Vec<String>,
    /// Tokens spent.
    pub usage: Usage,
}

/// Input of `chat.greeting`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GreetingInput {
    /// The language to greet in, for example `en` or `ko`.
    pub language: String,
    /// The name to greet the user by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Result of `chat.greeting`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GreetingResult {
    /// The greeting.
    pub greeting: String,
    /// Its language.
    pub language: String,
    /// Tokens spent.
    pub usage: Usage,
}
