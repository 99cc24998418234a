//! `workflow.run`: a DAG of steps, each run as a sub-task named `<task>-<id>` once the steps it
//! depends on have succeeded.
//!
//! [`check`] refuses a bad workflow before anything runs (pure, naming the culprit); [`run`]
//! starts the steps whose dependencies succeeded, polls them, and on a failure cancels the
//! others (fail fast) or lets the independent ones finish. A new attempt of the same task first
//! reads the sub-tasks an earlier attempt created and carries on from their phases, so no step
//! runs twice to completion.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use cogo_api::{
    AgentRole, TaskPhase,
    broker::{SubtaskRequest, TaskView},
    catalogue::workflow::{RUN, RunInput, RunResult, Step, StepOutcome},
};
use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use crate::{
    broker::CallError,
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
};

/// The failure of a workflow that finds a task of a step's name that is not its sub-task.
fn not_ours(id: &str, view: &TaskView) -> HandlerError {
    HandlerError::fatal(format!(
        "step {id}: an AgentTask {} exists and is not a sub-task of this workflow ({}); rename the step or the workflow",
        view.name,
        view.parent
            .as_deref()
            .map(|p| format!("its parent is {p}"))
            .unwrap_or_else(|| "it has no parent".into())
    ))
}

/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 100;
/// The longest name a sub-task may have.
const MAX_NAME: usize = 63;
/// The first wait between two polls of the running steps, and the wait after a change.
const FIRST_POLL: Duration = Duration::from_millis(25);
/// The longest wait between two polls.
const MAX_POLL: Duration = Duration::from_secs(2);
/// How long a failed workflow waits for the steps it cancelled to end.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
/// Polls in a row at which a started step's sub-task is missing before the step counts as
/// deleted (a broker reading from a cache may briefly miss a sub-task it just made).
const MISSING_POLLS: u32 = 5;
/// The longest progress line.
const MAX_PROGRESS: usize = 200;
/// The longest failure message.
const MAX_MESSAGE: usize = 1024;

/// `workflow.run`.
pub struct RunWorkflow;

impl TaskHandler for RunWorkflow {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: RunInput = parse_input(RUN, input)?;
            check(&ctx.task.name, &input.steps)?;
            if ctx.broker.is_none() {
                return Err(HandlerError::fatal("workflow.run needs the broker"));
            }
            let result = run(&input.steps, input.fail_fast.unwrap_or(true), &ctx).await?;
            if result.phase != TaskPhase::Succeeded {
                return Err(HandlerError::fatal(failure_message(&result)));
            }
            serde_json::to_value(&result)
                .map_err(|e| HandlerError::fatal(format!("cannot write the workflow's result: {e}")))
        })
    }
}

/// The role whose agents run a task type by default: `research.*`/`llm.*` Research,
/// `python.*`/`browser.*`/`figma.*`/`mcp.*` Executor, `index.*` Indexing, `graph.*` GraphRAG,
/// `workflow.*`/`chat.*` Orchestrator; None for any other type (such as `cogo.*`, which every
/// role runs).
pub fn default_role(task_type: &str) -> Option<AgentRole> {
    Some(match task_type.split_once('.')?.0 {
        "research" | "llm" => AgentRole::Research,
        "python" | "browser" | "figma" | "mcp" => AgentRole::Executor,
        "index" => AgentRole::Indexing,
        "graph" => AgentRole::GraphRag,
        "workflow" | "chat" => AgentRole::Orchestrator,
        _ => return None,
    })
}

/// Checks the steps of the workflow task `task` before anything runs: their number, ids and
/// sub-task names, who runs each, their dependencies (known, not their own, no cycle) and
/// their references (well formed, to a step they depend on). The first problem is a fatal
/// error naming the culprit.
pub fn check(task: &str, steps: &[Step]) -> Result<(), HandlerError> {
    let bad = |message: String| Err(HandlerError::fatal(message));
    if !(1..=MAX_STEPS).contains(&steps.len()) {
        return bad(format!(
            "a workflow has 1 to {MAX_STEPS} steps, not {}",
            steps.len()
        ));
    }
    let mut index = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let id = step.id.as_str();
        if id.is_empty() {
            return bad(format!("step {} has no id", i + 1));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !id.chars().all(allowed) || id.starts_with('-') || id.ends_with('-') {
            return bad(format!(
                "step {id:?}: an id is lower-case letters, digits and '-', not starting or ending with '-'"
            ));
        }
        let name = subtask_name(task, id);
        if name.len() > MAX_NAME {
            return bad(format!(
                "step {id}: its sub-task name {name} has {} characters, more than {MAX_NAME} \
                 (sub-tasks are named <task>-<id>); shorten the id",
                name.len()
            ));
        }
        if index.insert(id, i).is_some() {
            return bad(format!("two steps have the id {id}"));
        }
        if super::WAITING_TYPES.iter().any(|p| step.task_type.starts_with(p)) {
            // It would wait in the lane its parent holds a slot of, and could wait for ever.
            return bad(format!(
                "step {id}: a step cannot be a {} task; run it as a task of its own",
                step.task_type
            ));
        }
        match (&step.agent, step.role) {
            (Some(_), Some(_)) => return bad(format!("step {id}: set agent or role, not both")),
            (None, None) if default_role(&step.task_type).is_none() => {
                return bad(format!(
                    "step {id}: set agent or role; no role runs {} by default",
                    step.task_type
                ));
            }
            _ => {}
        }
    }
    for step in steps {
        for dep in &step.depends_on {
            if *dep == step.id {
                return bad(format!("step {dep} depends on itself"));
            }
            if !index.contains_key(dep.as_str()) {
                return bad(format!("step {} depends on unknown step {dep}", step.id));
            }
        }
    }
    if let Some(cycle) = find_cycle(steps, &index) {
        return bad(format!("the steps {} form a cycle", cycle.join(" -> ")));
    }
    for (i, step) in steps.iter().enumerate() {
        let ancestors = ancestors(steps, &index, i);
        let mut refs = Vec::new();
        if let Some(input) = &step.input {
            references(input, &mut refs);
        }
        for r in refs {
            let Some(parsed) = Reference::parse(r) else {
                return bad(format!(
                    "step {}: bad reference {r} (write {{{{steps.<id>.result}}}} or \
                     {{{{steps.<id>.result.<path>}}}})",
                    step.id
                ));
            };
            if !ancestors.contains(parsed.step) {
                return bad(format!(
                    "step {} refers to steps.{1}.result but does not depend on {1}",
                    step.id, parsed.step
                ));
            }
        }
    }
    Ok(())
}

/// Runs checked steps as sub-tasks of `ctx`'s task until every step has ended or cannot start.
/// Steps whose sub-tasks an earlier attempt created are carried on from their phase. On a
/// failure with `fail_fast`, the running steps are cancelled (and waited for, a while) and no
/// more start; without it, only the steps that depend on a failed one do not start. The
/// result's phase is `Succeeded` when every step succeeded, else `Failed`
/// ([`failure_message`] says why). Cancelling the task cancels the running steps.
pub async fn run(steps: &[Step], fail_fast: bool, ctx: &TaskContext) -> Result<RunResult, HandlerError> {
    let mut runner = Runner::new(&ctx.task.name, steps, fail_fast);
    runner.adopt(ctx).await?;
    let mut delay = FIRST_POLL;
    let mut stop_waiting_at = None;
    loop {
        let stopping = loop {
            if runner.settle() {
                break true;
            }
            match runner.start_ready(ctx).await {
                Ok(true) => {}
                Ok(false) => break false,
                Err(e) => {
                    // A retryable failure leaves the steps running: the next attempt adopts them.
                    if !e.retryable {
                        runner.cancel_started(ctx).await;
                    }
                    return Err(e);
                }
            }
        };
        ctx.report_progress(runner.progress());
        if stopping {
            runner.cancel_started(ctx).await;
            let at = *stop_waiting_at.get_or_insert_with(|| Instant::now() + CANCEL_WAIT);
            if Instant::now() >= at {
                break;
            }
        }
        if !runner.any_started() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.until_cancelled() => {
                runner.cancel_started(ctx).await;
                return Err(HandlerError::cancelled());
            }
        }
        delay = if runner.poll(ctx).await {
            FIRST_POLL
        } else {
            delay.mul_f64(1.5).min(MAX_POLL)
        };
    }
    ctx.report_progress(runner.progress());
    Ok(runner.result())
}

/// What went wrong in a workflow that did not succeed, for its task's message: each failed
/// step with its message, then the steps cancelled, not started, or still running.
pub fn failure_message(result: &RunResult) -> String {
    let mut parts = Vec::new();
    let (mut cancelled, mut not_started, mut unfinished) = (vec![], vec![], vec![]);
    for (id, o) in &result.steps {
        match o.phase {
            TaskPhase::Failed => {
                let why = o.message.as_deref().unwrap_or("no reason given");
                parts.push(format!("step {id} failed: {}", elide(why.to_string(), 300)));
            }
            TaskPhase::Cancelled => cancelled.push(id.as_str()),
            TaskPhase::Pending if o.task.is_empty() => not_started.push(id.as_str()),
            TaskPhase::Pending | TaskPhase::Running => unfinished.push(id.as_str()),
            TaskPhase::Succeeded => {}
        }
    }
    for (label, ids) in [
        ("cancelled", cancelled),
        ("not started", not_started),
        ("still running", unfinished),
    ] {
        if !ids.is_empty() {
            parts.push(format!("{label}: {}", ids.join(", ")));
        }
    }
    elide(parts.join("; "), MAX_MESSAGE)
}

fn subtask_name(task: &str, id: &str) -> String {
    format!("{task}-{id}")
}

/// A cycle of dependencies, in the order the steps would run (`a -> b` when b depends on a),
/// starting and ending with its step that comes first in the workflow.
fn find_cycle<'s>(steps: &'s [Step], index: &HashMap<&str, usize>) -> Option<Vec<&'s str>> {
    fn visit(
        i: usize,
        steps: &[Step],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for d in steps[i]
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()).copied())
        {
            match state[d] {
                // On the path: the path from d back to here is the cycle, each depending on the next.
                1 => return Some(path[path.iter().position(|&p| p == d)?..].to_vec()),
                0 => {
                    if let Some(cycle) = visit(d, steps, index, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; steps.len()];
    for i in 0..steps.len() {
        if state[i] == 0
            && let Some(mut cycle) = visit(i, steps, index, &mut state, &mut Vec::new())
        {
            cycle.reverse();
            let first = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| **s)
                .map_or(0, |(at, _)| at);
            cycle.rotate_left(first);
            cycle.push(cycle[0]);
            return Some(cycle.into_iter().map(|s| steps[s].id.as_str()).collect());
        }
    }
    None
}

/// The ids of the steps step `i` depends on, directly or not.
fn ancestors<'s>(steps: &'s [Step], index: &HashMap<&str, usize>, i: usize) -> BTreeSet<&'s str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![i];
    while let Some(j) = todo.pop() {
        for dep in &steps[j].depends_on {
            if seen.insert(dep.as_str())
                && let Some(&d) = index.get(dep.as_str())
            {
                todo.push(d);
            }
        }
    }
    seen
}

/// Whether a string is meant as a reference: it starts with `{{` and ends with `}}`.
fn is_reference(s: &str) -> bool {
    s.starts_with("{{") && s.ends_with("}}")
}

/// Every string of `value` meant as a reference.
fn references<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::String(s) if is_reference(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// `{{steps.<step>.result}}` or `{{steps.<step>.result.<path>}}`.
struct Reference<'s> {
    step: &'s str,
    path: Vec<&'s str>,
}

impl<'s> Reference<'s> {
    fn parse(s: &'s str) -> Option<Self> {
        let mut parts = s.strip_prefix("{{")?.strip_suffix("}}")?.split('.');
        let (steps, step, result) = (parts.next()?, parts.next()?, parts.next()?);
        let path: Vec<&str> = parts.collect();
        let well_formed = steps == "steps" && !step.is_empty() && result == "result";
        (well_formed && path.iter().all(|p| !p.is_empty())).then_some(Reference { step, path })
    }
}

/// `value` with each reference replaced by what it names in the result of its step (`done`:
/// the succeeded dependencies' sub-tasks, by step id).
fn resolve(value: &Value, done: &HashMap<&str, &TaskView>) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) if is_reference(s) => {
            let r = Reference::parse(s).ok_or_else(|| format!("bad reference {s}"))?;
            let view = done
                .get(r.step)
                .ok_or_else(|| format!("cannot resolve {s}: step {} has not succeeded", r.step))?;
            if view.result.is_none() && view.result_ref.is_some() {
                return Err(format!(
                    "cannot resolve {s}: step {}'s result is too large to be kept in its status",
                    r.step
                ));
            }
            let mut at = view.result.as_ref().unwrap_or(&Value::Null);
            for key in &r.path {
                let next = match at {
                    Value::Array(items) => key.parse::<usize>().ok().and_then(|k| items.get(k)),
                    Value::Object(fields) => fields.get(*key),
                    _ => None,
                };
                at = next
                    .ok_or_else(|| format!("cannot resolve {s}: step {}'s result has no {key:?}", r.step))?;
            }
            at.clone()
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve(v, done)).collect::<Result<_, _>>()?)
        }
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, done)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Where a step is.
enum State {
    /// Its sub-task is not created yet.
    Waiting,
    /// Its sub-task exists and has not ended.
    Started(TaskView),
    /// Its sub-task ended.
    Ended(TaskView),
    /// It failed before its sub-task was created (a reference that cannot resolve).
    Refused(String),
    /// It will not start, because the step `after` failed.
    Skipped { after: usize },
}

impl State {
    fn observed(view: TaskView) -> State {
        if view.phase.is_terminal() {
            State::Ended(view)
        } else {
            State::Started(view)
        }
    }
}

/// The steps of one run and where each is.
struct Runner<'s> {
    steps: &'s [Step],
    index: HashMap<&'s str, usize>,
    names: Vec<String>,
    states: Vec<State>,
    cancelled: Vec<bool>,
    /// Polls in a row at which a started step's sub-task was not found.
    missing: Vec<u32>,
    fail_fast: bool,
}

impl<'s> Runner<'s> {
    fn new(task: &str, steps: &'s [Step], fail_fast: bool) -> Self {
        Runner {
            steps,
            index: steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str(), i))
                .collect(),
            names: steps.iter().map(|s| subtask_name(task, &s.id)).collect(),
            states: steps.iter().map(|_| State::Waiting).collect(),
            cancelled: vec![false; steps.len()],
            missing: vec![0; steps.len()],
            fail_fast,
        }
    }

    /// Takes over the sub-tasks an earlier attempt created. One not found (404) is not created
    /// yet; one that cannot be read now is adopted when it is created, which returns it. A
    /// task of a step's name that is not this workflow's sub-task (another workflow's, or one
    /// a user made) is never taken for the step: the workflow fails, naming it.
    async fn adopt(&mut self, ctx: &TaskContext) -> Result<(), HandlerError> {
        for i in 0..self.steps.len() {
            if let Ok(view) = ctx.get_task(&self.names[i]).await {
                if view.parent.as_deref() != Some(ctx.task.name.as_str()) {
                    return Err(not_ours(&self.steps[i].id, &view));
                }
                self.states[i] = State::observed(view);
            }
        }
        Ok(())
    }

    fn deps(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.steps[i]
            .depends_on
            .iter()
            .filter_map(|d| self.index.get(d.as_str()).copied())
    }

    fn succeeded(&self, i: usize) -> Option<&TaskView> {
        match &self.states[i] {
            State::Ended(v) if v.phase == TaskPhase::Succeeded => Some(v),
            _ => None,
        }
    }

    fn failed(&self, i: usize) -> bool {
        match &self.states[i] {
            State::Ended(v) => v.phase != TaskPhase::Succeeded,
            State::Refused(_) => true,
            _ => false,
        }
    }

    fn any_started(&self) -> bool {
        self.states.iter().any(|s| matches!(s, State::Started(_)))
    }

    /// Marks the waiting steps that will never start; true when the workflow stops starting
    /// steps (fail fast, and a step failed).
    fn settle(&mut self) -> bool {
        let n = self.steps.len();
        if self.fail_fast {
            let Some(after) = (0..n).find(|&i| self.failed(i)) else {
                return false;
            };
            for s in &mut self.states {
                if matches!(s, State::Waiting) {
                    *s = State::Skipped { after };
                }
            }
            return true;
        }
        loop {
            let mut changed = false;
            for i in 0..n {
                if !matches!(self.states[i], State::Waiting) {
                    continue;
                }
                let after = self.deps(i).find_map(|d| match self.states[d] {
                    State::Skipped { after } => Some(after),
                    _ => self.failed(d).then_some(d),
                });
                if let Some(after) = after {
                    self.states[i] = State::Skipped { after };
                    changed = true;
                }
            }
            if !changed {
                return false;
            }
        }
    }

    /// Creates the sub-task of every waiting step whose dependencies succeeded; true when a
    /// step changed. A refusal of the broker for what the request is fails the workflow.
    async fn start_ready(&mut self, ctx: &TaskContext) -> Result<bool, HandlerError> {
        let steps = self.steps;
        let mut changed = false;
        for (i, step) in steps.iter().enumerate() {
            if self.fail_fast && (0..steps.len()).any(|j| self.failed(j)) {
                break;
            }
            if !matches!(self.states[i], State::Waiting) || !self.deps(i).all(|d| self.succeeded(d).is_some())
            {
                continue;
            }
            let done: HashMap<&str, &TaskView> = self
                .deps(i)
                .filter_map(|d| Some((steps[d].id.as_str(), self.succeeded(d)?)))
                .collect();
            let input = match step.input.as_ref().map(|v| resolve(v, &done)).transpose() {
                Ok(input) => input,
                Err(message) => {
                    self.states[i] = State::Refused(message);
                    changed = true;
                    continue;
                }
            };
            let name = &self.names[i];
            let req = SubtaskRequest {
                pod: String::new(),
                attempt: 0,
                name: Some(name.clone()),
                agent: step.agent.clone(),
                role: step.role.or_else(|| {
                    step.agent
                        .is_none()
                        .then(|| default_role(&step.task_type))
                        .flatten()
                }),
                task_type: step.task_type.clone(),
                input,
                priority: 0,
                timeout_seconds: step.timeout_seconds,
                retry: step.retry.clone(),
            };
            let view = ctx.create_subtask(req).await.map_err(|e| {
                HandlerError::of_broker(&format!("step {}: cannot create sub-task {name}", step.id), e)
            })?;
            if view.parent.as_deref() != Some(ctx.task.name.as_str()) {
                return Err(not_ours(&step.id, &view));
            }
            self.states[i] = State::observed(view);
            changed = true;
        }
        Ok(changed)
    }

    /// Reads the started steps' sub-tasks; true when one changed phase. One that cannot be
    /// read now is read again at the next poll; one missing at [`MISSING_POLLS`] polls in a
    /// row was deleted, and its step failed.
    async fn poll(&mut self, ctx: &TaskContext) -> bool {
        let mut changed = false;
        for i in 0..self.steps.len() {
            let State::Started(seen) = &self.states[i] else {
                continue;
            };
            let before = seen.phase;
            match ctx.get_task(&self.names[i]).await {
                Ok(view) => {
                    self.missing[i] = 0;
                    if view.phase != before {
                        self.states[i] = State::observed(view);
                        changed = true;
                    }
                }
                Err(CallError::Refused(404, _)) => {
                    self.missing[i] += 1;
                    if self.missing[i] >= MISSING_POLLS {
                        let message = format!("its sub-task {} was deleted", self.names[i]);
                        self.states[i] = State::Refused(message);
                        changed = true;
                    }
                }
                Err(_) => {}
            }
        }
        changed
    }

    /// Cancels every started step not cancelled yet.
    async fn cancel_started(&mut self, ctx: &TaskContext) {
        for i in 0..self.steps.len() {
            if !matches!(self.states[i], State::Started(_)) || self.cancelled[i] {
                continue;
            }
            match ctx.cancel_subtask(&self.names[i]).await {
                Ok(()) => self.cancelled[i] = true,
                Err(e) => warn!(task = %self.names[i], error = %e, "cannot cancel a workflow step"),
            }
        }
    }

    /// A line such as `2/5 steps done (a, b); running: c, d`.
    fn progress(&self) -> String {
        let ids = |want: fn(&State) -> bool| {
            let ids = self.steps.iter().zip(&self.states).filter(|(_, s)| want(s));
            ids.map(|(step, _)| step.id.as_str()).collect::<Vec<_>>()
        };
        let done = ids(|s| matches!(s, State::Ended(_) | State::Refused(_)));
        let running = ids(|s| matches!(s, State::Started(_)));
        let failed: Vec<&str> = (0..self.steps.len())
            .filter(|&i| self.failed(i))
            .map(|i| self.steps[i].id.as_str())
            .collect();
        let mut line = format!("{}/{} steps done", done.len(), self.steps.len());
        if !done.is_empty() {
            line += &format!(" ({})", done.join(", "));
        }
        for (label, ids) in [("running", running), ("failed", failed)] {
            if !ids.is_empty() {
                line += &format!("; {label}: {}", ids.join(", "));
            }
        }
        elide(line, MAX_PROGRESS)
    }

    fn outcome(&self, i: usize) -> StepOutcome {
        let said = |s: &str| Some(s.to_string());
        let (task, phase, result, message) = match &self.states[i] {
            State::Waiting => (String::new(), TaskPhase::Pending, None, said("not started")),
            State::Skipped { after } => {
                let after = &self.steps[*after].id;
                let message = if self.fail_fast {
                    format!("not started: the workflow stopped when step {after} failed")
                } else {
                    format!("not started: depends on failed step {after}")
                };
                (String::new(), TaskPhase::Pending, None, Some(message))
            }
            State::Refused(m) => (String::new(), TaskPhase::Failed, None, Some(m.clone())),
            State::Started(v) => {
                let message = match self.cancelled[i] {
                    true => "cancelled, but it had not ended when the workflow stopped waiting",
                    false => "still running",
                };
                (v.name.clone(), v.phase, None, said(message))
            }
            State::Ended(v) if v.phase == TaskPhase::Succeeded => {
                (v.name.clone(), v.phase, v.result.clone(), None)
            }
            State::Ended(v) => {
                let message = match (&v.message, self.cancelled[i]) {
                    (Some(m), _) => Some(m.clone()),
                    (None, true) => said("cancelled by the workflow"),
                    (None, false) => said(v.phase.as_str()),
                };
                (v.name.clone(), v.phase, None, message)
            }
        };
        StepOutcome {
            task,
            phase,
            result,
            message,
        }
    }

    fn result(&self) -> RunResult {
        let every = 0..self.steps.len();
        let phase = match every.clone().all(|i| self.succeeded(i).is_some()) {
            true => TaskPhase::Succeeded,
            false => TaskPhase::Failed,
        };
        let steps = every
            .map(|i| (self.steps[i].id.clone(), self.outcome(i)))
            .collect();
        RunResult { phase, steps }
    }
}

/// `s` cut to at most `max` bytes, ending with `...` when cut.
fn elide(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cogo_api::broker::Outcome;
    use serde_json::json;
    use tokio::sync::watch;

    use super::*;
    use crate::{
        broker::{BrokerApi, SharedBroker, memory::MemoryBroker},
        handler::{Registry, local_task},
        pull::testing::{Pulling, own_lane},
        roles::builtin,
    };

    const SECONDS: Duration = Duration::from_secs(10);

    fn steps(v: Value) -> Vec<Step> {
        serde_json::from_value(v).unwrap()
    }

    /// A step of `task_type` run by any Research agent.
    fn step(id: &str, task_type: &str, deps: &[&str], input: Value) -> Value {
        json!({"id": id, "type": task_type, "role": "Research", "dependsOn": deps, "input": input})
    }

    /// A memory broker with a pull loop running the built-ins and `workflow.run`.
    fn pulling() -> (Arc<MemoryBroker>, Pulling) {
        let broker = Arc::new(MemoryBroker::new("p", 1));
        let mut registry = Registry::default();
        builtin::register(&mut registry);
        registry.register(RUN, RunWorkflow);
        let pull = Pulling::start(broker.clone(), Arc::new(registry), vec![own_lane(8)]);
        (broker, pull)
    }

    /// A context running the workflow `name` outside the pull loop: its cancellation, the
    /// context and its progress lines.
    fn direct(
        broker: SharedBroker,
        name: &str,
    ) -> (watch::Sender<bool>, TaskContext, watch::Receiver<Option<String>>) {
        let (cancel, mut ctx) = TaskContext::detached(local_task(name, RUN, Value::Null));
        ctx.broker = Some(broker);
        let progress = ctx.progress.subscribe();
        (cancel, ctx, progress)
    }

    #[test]
    fn bad_workflows_fail_at_once_naming_the_culprit() {
        let echo = |id: &str, deps: &[&str]| step(id, "cogo.echo", deps, Value::Null);
        let refers = |r: &str| step("b", "cogo.echo", &["a"], json!({"v": [1, {"w": r}]}));
        let cases = [
            (json!([]), "a workflow has 1 to 100 steps, not 0"),
            (
                json!([
                    echo("a", &["c"]),
                    echo("b", &["a"]),
                    echo("c", &["b"]),
                    echo("d", &[])
                ]),
                "the steps a -> b -> c -> a form a cycle",
            ),
            (
                json!([echo("x", &[]), echo("c", &["b"]), echo("b", &["c", "x"])]),
                "the steps c -> b -> c form a cycle",
            ),
            (
                json!([echo("a", &[]), echo("b", &["zz"])]),
                "step b depends on unknown step zz",
            ),
            (json!([echo("a", &["a"])]), "step a depends on itself"),
            (json!([echo("a", &[]), echo("a", &[])]), "two steps have the id a"),
            (json!([echo("", &[])]), "step 1 has no id"),
            (
                json!([echo("Fetch_1", &[])]),
                "step \"Fetch_1\": an id is lower-case letters",
            ),
            (json!([echo("a-", &[])]), "not starting or ending with '-'"),
            (
                json!([echo(&"x".repeat(61), &[])]),
                "has 64 characters, more than 63 (sub-tasks are named <task>-<id>)",
            ),
            (
                json!([{"id": "a", "type": "cogo.echo"}]),
                "step a: set agent or role; no role runs cogo.echo by default",
            ),
            (
                json!([{"id": "a", "type": "llm.generate", "agent": "x", "role": "Research"}]),
                "step a: set agent or role, not both",
            ),
            (
                json!([echo("a", &[]), refers("{{steps.a}}")]),
                "step b: bad reference {{steps.a}}",
            ),
            (
                json!([echo("a", &[]), refers("{{steps.a.results}}")]),
                "bad reference {{steps.a.results}}",
            ),
            (
                json!([echo("a", &[]), refers("{{steps.a.result.}}")]),
                "bad reference {{steps.a.result.}}",
            ),
            (
                json!([echo("a", &[]), refers("{{ steps.a.result }}")]),
                "bad reference {{ steps.a.result }}",
            ),
            (
                json!([echo("a", &[]), refers("{{}}")]),
                "step b: bad reference {{}}",
            ),
            (
                json!([
                    echo("a", &[]),
                    echo("x", &[]),
                    refers("{{steps.x.result.list.0}}")
                ]),
                "step b refers to steps.x.result but does not depend on x",
            ),
        ];
        for (workflow, want) in cases {
            let e = check("wf", &steps(workflow.clone())).unwrap_err();
            assert!(!e.retryable, "{workflow}");
            assert!(e.message.contains(want), "{want:?} is not in {:?}", e.message);
        }
    }

    #[test]
    fn good_workflows_pass_and_text_with_braces_is_left_alone() {
        let workflow = steps(json!([
            {"id": "a", "type": "research.query", "input": {"question": "q"}},
            step("b", "cogo.echo", &["a"], json!({"t": "say {{hi}} to {{steps.a.result}}", "open": "{{ x"})),
            {"id": "c", "type": "python.execute", "dependsOn": ["b"],
             "input": {"code": ["{{steps.a.result.sources.0.url}}", "{{steps.b.result}}"]}},
        ]));
        check("wf", &workflow).unwrap();
        let done = HashMap::new();
        let text = json!({"t": "say {{hi}} to {{steps.a.result}}", "n": [1, "}}"]});
        assert_eq!(resolve(&text, &done), Ok(text.clone()));
    }

    #[test]
    fn types_have_default_roles() {
        let cases = [
            ("research.query", Some(AgentRole::Research)),
            ("llm.generate", Some(AgentRole::Research)),
            ("python.execute", Some(AgentRole::Executor)),
            ("browser.run", Some(AgentRole::Executor)),
            ("figma.export", Some(AgentRole::Executor)),
            ("mcp.call", Some(AgentRole::Executor)),
            ("index.search", Some(AgentRole::Indexing)),
            ("graph.query", Some(AgentRole::GraphRag)),
            ("workflow.run", Some(AgentRole::Orchestrator)),
            ("chat.message", Some(AgentRole::Orchestrator)),
            ("cogo.echo", None),
            ("research", None),
        ];
        for (task_type, role) in cases {
            assert_eq!(default_role(task_type), role, "{task_type}");
        }
    }

    #[test]
    fn references_resolve_into_a_dependency_s_result_or_say_why_not() {
        let view = |result: Option<Value>| TaskView {
            namespace: "ns".into(),
            name: "wf-a".into(),
            uid: "u".into(),
            task_type: "cogo.echo".into(),
            parent: Some("wf".into()),
            input: None,
            phase: TaskPhase::Succeeded,
            attempt: 1,
            result,
            result_ref: None,
            message: None,
        };
        let a = view(Some(json!({"x": {"list": [1, {"k": "v"}]}})));
        let done = HashMap::from([("a", &a)]);
        let input = json!({"all": "{{steps.a.result}}", "k": ["{{steps.a.result.x.list.1.k}}"]});
        let want = json!({"all": {"x": {"list": [1, {"k": "v"}]}}, "k": ["v"]});
        assert_eq!(resolve(&input, &done), Ok(want));
        for (missing, why) in [
            ("{{steps.a.result.y}}", "step a's result has no \"y\""),
            ("{{steps.a.result.x.list.2}}", "step a's result has no \"2\""),
            ("{{steps.a.result.x.list.k}}", "step a's result has no \"k\""),
        ] {
            let e = resolve(&json!({"v": missing}), &done).unwrap_err();
            assert_eq!(e, format!("cannot resolve {missing}: {why}"));
        }
        let mut big = view(None);
        big.result_ref = Some(cogo_api::task::ResultRef {
            digest: "sha256:00".into(),
            size_bytes: 1 << 20,
            location: "store".into(),
            reason: "too large".into(),
        });
        let done = HashMap::from([("a", &big)]);
        let e = resolve(&json!("{{steps.a.result}}"), &done).unwrap_err();
        assert!(
            e.contains("step a's result is too large to be kept in its status"),
            "{e}"
        );
    }

    /// a -> (b, c) -> d: b and c run at once, and each step's input takes its dependencies'
    /// results.
    #[tokio::test]
    async fn a_diamond_runs_its_branches_together_and_feeds_results_forward() {
        let (broker, pull) = pulling();
        let d = json!({"b": "{{steps.b.result}}", "c": "{{steps.c.result.slept}}", "note": "keep {{this}}"});
        let input = json!({"steps": [
            step("a", "cogo.echo", &[], json!({"x": 0.4, "list": [0.1, 0.6]})),
            step("b", "cogo.sleep", &["a"], json!({"seconds": "{{steps.a.result.x}}"})),
            step("c", "cogo.sleep", &["a"], json!({"seconds": "{{steps.a.result.list.1}}"})),
            step("d", "cogo.echo", &["b", "c"], d),
        ]});
        let together = {
            let broker = broker.clone();
            tokio::spawn(async move {
                loop {
                    let b = broker.get_task("wf-b").await.map(|v| v.phase);
                    let c = broker.get_task("wf-c").await.map(|v| v.phase);
                    if matches!((b, c), (Ok(TaskPhase::Running), Ok(TaskPhase::Running))) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let (_cancel, ctx, mut progress) = direct(broker.clone(), "wf");
        let lines = tokio::spawn(async move {
            let mut lines = vec![];
            while progress.changed().await.is_ok() {
                lines.extend(progress.borrow_and_update().clone());
            }
            lines
        });
        let result = RunWorkflow.run(&input, ctx).await.unwrap();
        assert_eq!(result["phase"], "Succeeded");
        assert_eq!(result["steps"]["b"]["result"], json!({"slept": 0.4}));
        assert_eq!(
            result["steps"]["d"],
            json!({"task": "wf-d", "phase": "Succeeded",
                   "result": {"b": {"slept": 0.4}, "c": 0.6, "note": "keep {{this}}"}})
        );
        tokio::time::timeout(SECONDS, together).await.unwrap().unwrap();
        let lines = lines.await.unwrap();
        assert!(
            lines.contains(&"1/4 steps done (a); running: b, c".to_string()),
            "{lines:?}"
        );
        assert_eq!(lines.last().unwrap(), "4/4 steps done (a, b, c, d)");
        pull.stop().await;
    }

    /// Fail fast: the failed step's sibling is cancelled and its dependent never starts.
    #[tokio::test]
    async fn a_failed_step_stops_the_workflow_when_failing_fast() {
        let (broker, pull) = pulling();
        let input = json!({"steps": [
            step("a", "cogo.fail", &[], json!({"message": "boom"})),
            step("s", "cogo.sleep", &[], json!({"seconds": 30})),
            step("d", "cogo.echo", &["a"], json!({})),
        ]});
        broker.submit("wf", RUN, input);
        let done = broker.outcome("wf", SECONDS).await.unwrap();
        assert_eq!((done.outcome, done.retryable), (Outcome::Failed, false));
        assert_eq!(
            done.error.unwrap(),
            "step a failed: boom; cancelled: s; not started: d"
        );
        let sibling = broker.outcome("wf-s", SECONDS).await.unwrap();
        assert_eq!(sibling.outcome, Outcome::Cancelled);
        assert_eq!(broker.subtasks_of("wf"), ["wf-a", "wf-s"]);
        pull.stop().await;
    }

    /// Without fail fast, the branch that does not depend on the failure runs to its end; a
    /// reference that names nothing fails its step without creating it.
    #[tokio::test]
    async fn without_failing_fast_independent_steps_finish() {
        let (broker, pull) = pulling();
        let input = json!({"failFast": false, "steps": [
            step("a", "cogo.fail", &[], json!({"message": "boom"})),
            step("b", "cogo.sleep", &[], json!({"seconds": 0.3})),
            step("d", "cogo.echo", &["a"], json!({})),
            step("e", "cogo.echo", &["d"], json!({})),
            step("f", "cogo.echo", &["b"], json!({"b": "{{steps.b.result}}"})),
            step("g", "cogo.echo", &["b"], json!({"v": "{{steps.b.result.nope}}"})),
        ]});
        broker.submit("wf", RUN, input);
        let done = broker.outcome("wf", SECONDS).await.unwrap();
        assert_eq!(done.outcome, Outcome::Failed);
        assert_eq!(
            done.error.unwrap(),
            "step a failed: boom; step g failed: cannot resolve {{steps.b.result.nope}}: \
             step b's result has no \"nope\"; not started: d, e"
        );
        let f = broker.outcome("wf-f", SECONDS).await.unwrap();
        assert_eq!(f.result, Some(json!({"b": {"slept": 0.3}})));
        assert_eq!(broker.subtasks_of("wf"), ["wf-a", "wf-b", "wf-f"]);
        pull.stop().await;
    }

    /// The direct result of a failed run says what became of every step.
    #[tokio::test]
    async fn a_failed_run_reports_every_step() {
        let (broker, pull) = pulling();
        let workflow = steps(json!([
            step("a", "cogo.fail", &[], json!({"message": "boom"})),
            step("d", "cogo.echo", &["a"], json!({})),
        ]));
        let (_cancel, ctx, _) = direct(broker.clone(), "wf");
        let result = run(&workflow, false, &ctx).await.unwrap();
        assert_eq!(result.phase, TaskPhase::Failed);
        let outcome = |task: &str, phase, message: &str| StepOutcome {
            task: task.into(),
            phase,
            result: None,
            message: Some(message.into()),
        };
        assert_eq!(result.steps["a"], outcome("wf-a", TaskPhase::Failed, "boom"));
        let not_started = "not started: depends on failed step a";
        assert_eq!(result.steps["d"], outcome("", TaskPhase::Pending, not_started));
        pull.stop().await;
    }

    /// The broker refusing a sub-task for what it is fails the workflow at once, naming the step.
    #[tokio::test]
    async fn a_refused_sub_task_fails_the_workflow_naming_the_step() {
        let (broker, pull) = pulling();
        broker.limit_subtasks(1);
        let input = json!({"steps": [step("a", "cogo.sleep", &[], json!({"seconds": 30})),
                                     step("b", "cogo.echo", &[], json!({}))]});
        broker.submit("wf", RUN, input);
        let done = broker.outcome("wf", SECONDS).await.unwrap();
        assert_eq!((done.outcome, done.retryable), (Outcome::Failed, false));
        let error = done.error.unwrap();
        assert!(
            error.starts_with("step b: cannot create sub-task wf-b: 422 TooManySubtasks"),
            "{error}"
        );
        assert_eq!(
            broker.outcome("wf-a", SECONDS).await.unwrap().outcome,
            Outcome::Cancelled
        );
        pull.stop().await;
    }

    #[tokio::test]
    async fn cancelling_the_workflow_cancels_its_running_steps() {
        let (broker, pull) = pulling();
        let input = json!({"steps": [step("s", "cogo.sleep", &[], json!({"seconds": 30})),
                                     step("t", "cogo.echo", &["s"], json!({}))]});
        broker.submit("wf", RUN, input);
        tokio::time::timeout(SECONDS, async {
            while broker.get_task("wf-s").await.map(|v| v.phase).ok() != Some(TaskPhase::Running) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        broker.cancel("wf");
        assert_eq!(
            broker.outcome("wf", SECONDS).await.unwrap().outcome,
            Outcome::Cancelled
        );
        assert_eq!(
            broker.outcome("wf-s", SECONDS).await.unwrap().outcome,
            Outcome::Cancelled
        );
        assert_eq!(broker.subtasks_of("wf"), ["wf-s"]);
        pull.stop().await;
    }

    #[tokio::test]
    async fn a_new_attempt_carries_on_from_the_steps_already_run() {
        let (broker, pull) = pulling();
        let earlier = local_task("wf", RUN, Value::Null);
        let a = SubtaskRequest {
            pod: "p".into(),
            attempt: 1,
            name: Some("wf-a".into()),
            agent: None,
            role: Some(AgentRole::Research),
            task_type: "cogo.echo".into(),
            input: Some(json!({"x": 7})),
            priority: 0,
            timeout_seconds: None,
            retry: None,
        };
        broker.create_subtask(&earlier, &a).await.unwrap();
        broker.outcome("wf-a", SECONDS).await.unwrap();
        let before = broker.subtask_creates().len();
        let input = json!({"steps": [
            step("a", "cogo.echo", &[], json!({"x": 1})),
            step("b", "cogo.echo", &["a"], json!({"y": "{{steps.a.result.x}}"})),
        ]});
        let (_cancel, ctx, _) = direct(broker.clone(), "wf");
        let result = RunWorkflow.run(&input, ctx).await.unwrap();
        assert_eq!(
            result["steps"]["a"]["result"],
            json!({"x": 7}),
            "the earlier a, adopted"
        );
        assert_eq!(result["steps"]["b"]["result"], json!({"y": 7}));
        assert_eq!(broker.subtask_creates()[before..], ["wf-b"]);
        let (_cancel, ctx, _) = direct(broker.clone(), "wf");
        assert_eq!(RunWorkflow.run(&input, ctx).await.unwrap(), result);
        assert_eq!(
            broker.subtask_creates()[before..],
            ["wf-b"],
            "nothing created again"
        );
        pull.stop().await;
    }

    #[test]
    fn a_step_cannot_wait_for_sub_tasks_itself() {
        for t in ["workflow.run", "workflow.plan", "chat.message"] {
            let workflow = steps(json!([step("inner", t, &[], json!({}))]));
            let e = check("wf", &workflow).unwrap_err();
            assert!(
                e.message
                    .contains(&format!("step inner: a step cannot be a {t} task")),
                "{}",
                e.message
            );
        }
    }

    /// A task of a step's name that is not the workflow's own (another workflow's step, or one
    /// a user made) is never taken for the step.
    #[tokio::test]
    async fn a_task_of_a_step_s_name_that_is_not_a_sub_task_fails_the_workflow() {
        let (broker, pull) = pulling();
        broker.submit("wf-a", "cogo.echo", json!({"someone": "else"}));
        broker.outcome("wf-a", SECONDS).await.unwrap();
        let input = json!({"steps": [step("a", "cogo.echo", &[], json!({"x": 1}))]});
        let (_cancel, ctx, _) = direct(broker.clone(), "wf");
        let e = RunWorkflow.run(&input, ctx).await.unwrap_err();
        assert!(!e.retryable);
        assert!(
            e.message.contains(
                "step a: an AgentTask wf-a exists and is not a sub-task of this workflow (it has no parent)"
            ),
            "{}",
            e.message
        );
        pull.stop().await;
    }

    /// A step whose sub-task is deleted while it runs fails, rather than being waited for
    /// for ever.
    #[tokio::test]
    async fn a_step_whose_sub_task_disappears_fails() {
        let (broker, pull) = pulling();
        let input =
            json!({"failFast": false, "steps": [step("a", "cogo.sleep", &[], json!({"seconds": 60}))]});
        let (_cancel, ctx, _) = direct(broker.clone(), "gone");
        let run = tokio::spawn(async move { RunWorkflow.run(&input, ctx).await });
        while broker.get_task("gone-a").await.ok().map(|v| v.phase) != Some(TaskPhase::Running) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        broker.delete("gone-a");
        let e = run.await.unwrap().unwrap_err();
        assert!(
            e.message.contains("its sub-task gone-a was deleted"),
            "{}",
            e.message
        );
        pull.stop().await;
    }

    #[test]
    fn progress_lines_are_short() {
        let many: Vec<Value> = (0..60)
            .map(|i| step(&format!("step-{i}"), "cogo.echo", &[], json!({})))
            .collect();
        let workflow = steps(Value::Array(many));
        let mut runner = Runner::new("wf", &workflow, true);
        assert_eq!(runner.progress(), "0/60 steps done");
        for s in &mut runner.states {
            *s = State::Refused("no".into());
        }
        let line = runner.progress();
        assert!(line.len() <= MAX_PROGRESS && line.ends_with("..."), "{line}");
    }
}
