//! Reading tasks: `get`, `tree` and `watch`, and following one task until it ends.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use cogo_api::{AgentTask, TaskPhase};
use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};

use crate::{Outcome, Target, explain, get_task, parse_duration};

/// How `get` prints tasks.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// The objects as JSON.
    Json,
    /// The objects as YAML.
    Yaml,
    /// `agenttask.cogo.xyz/<name>`, one a line.
    Name,
}

/// `kubectl cogo get [NAME]`.
#[derive(clap::Args)]
pub struct GetArgs {
    /// The task to show; without it, every task of the namespace is listed.
    name: Option<String>,
    /// Only tasks with these labels (`key=value,...`), as `kubectl get -l`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// List the tasks of every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    all_namespaces: bool,
    /// Print the objects instead of a table.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Format>,
}

/// `kubectl cogo tree NAME`.
#[derive(clap::Args)]
pub struct TreeArgs {
    /// The task at the root: a workflow, a chat, any task with sub-tasks.
    name: String,
}

/// `kubectl cogo watch [NAME]`.
#[derive(clap::Args)]
pub struct WatchArgs {
    /// The task to follow until it ends; without it, every task of the namespace is watched
    /// until interrupted.
    name: Option<String>,
    /// Only tasks with these labels (`key=value,...`).
    #[arg(short = 'l', long, conflicts_with = "name")]
    selector: Option<String>,
    /// How long to follow a named task before giving up (30s, 10m, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    timeout: Duration,
}

/// The task's phase, Pending before the operator wrote any.
pub fn phase(t: &AgentTask) -> TaskPhase {
    t.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// `agent <name>` or `role <role>`.
fn target_of(t: &AgentTask) -> String {
    match (&t.spec.agent, t.spec.role) {
        (Some(a), _) => format!("agent {a}"),
        (None, Some(r)) => format!("role {}", r.as_str()),
        (None, None) => "-".into(),
    }
}

/// A span of time as kubectl prints ages: `45s`, `3m20s`, `25m`, `7h`, `3d`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10800 => format!("{}m", s / 60),
        10800..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A short span with tenths below a minute (`0.4s`, `12.5s`), else as [`human`].
fn run_time(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        human(d)
    }
}

fn since(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

/// How long the task has run (from its first attempt to its end, or to `now`), when it started.
fn duration_of(t: &AgentTask, now: Timestamp) -> Option<Duration> {
    let s = t.status.as_ref()?;
    let start = s.start_time.as_ref()?.0;
    let end = s.completion_time.as_ref().map(|c| c.0).unwrap_or(now);
    Some(since(start, end))
}

fn age_of(t: &AgentTask, now: Timestamp) -> String {
    t.metadata
        .creation_timestamp
        .as_ref()
        .map(|c| human(since(c.0, now)))
        .unwrap_or_else(|| "-".into())
}

/// Text cut to `max` characters on one line, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Rows as a table: each column as wide as its widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table `kubectl cogo get` prints.
pub fn list_table(tasks: &[AgentTask], with_namespace: bool, now: Timestamp) -> String {
    let mut rows = vec![];
    let mut header = vec!["NAME", "TYPE", "PHASE", "AGENT", "ATTEMPT", "DURATION", "AGE"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(String::from).collect::<Vec<_>>());
    for t in tasks {
        let s = t.status.clone().unwrap_or_default();
        let mut row = vec![
            t.name_any(),
            t.spec.task_type.clone(),
            phase(t).as_str().to_string(),
            s.agent.unwrap_or_else(|| "-".into()),
            s.attempt.to_string(),
            duration_of(t, now).map(run_time).unwrap_or_else(|| "-".into()),
            age_of(t, now),
        ];
        if with_namespace {
            row.insert(0, t.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    table(&rows)
}

/// What `kubectl cogo get NAME` prints: the task, its result in short, its sub-tasks, its
/// attempts and its conditions.
pub fn describe(t: &AgentTask, children: &[AgentTask], now: Timestamp) -> String {
    let s = t.status.clone().unwrap_or_default();
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", t.name_any()),
        ("Namespace", t.namespace().unwrap_or_default()),
        ("Type", t.spec.task_type.clone()),
        ("Target", target_of(t)),
    ];
    if let Some(p) = &t.spec.parent {
        fields.push(("Parent", p.clone()));
    }
    fields.push(("Phase", phase(t).as_str().to_string()));
    if let Some(m) = &s.message {
        fields.push(("Message", m.clone()));
    }
    if t.spec.cancel_requested && !phase(t).is_terminal() {
        fields.push(("Cancel", "requested".into()));
    }
    fields.push(("Attempt", s.attempt.to_string()));
    if let Some(a) = &s.agent {
        fields.push(("Agent", a.clone()));
    }
    if let Some(p) = &s.pod {
        fields.push(("Pod", p.clone()));
    }
    if let Some(st) = &s.start_time {
        fields.push(("Started", st.0.to_string()));
    }
    if let Some(c) = &s.completion_time {
        fields.push(("Finished", c.0.to_string()));
    }
    if let Some(d) = duration_of(t, now) {
        fields.push(("Duration", run_time(d)));
    }
    if let Some(r) = &s.retry_after {
        fields.push(("Retry after", r.0.to_string()));
    }
    match (&s.result, &s.result_ref) {
        (Some(r), _) => fields.push(("Result", clip(&r.to_string(), 200))),
        (None, Some(r)) => fields.push((
            "Result",
            format!(
                "{} bytes in {} ({}); `kubectl cogo result` reads it",
                r.size_bytes, r.location, r.digest
            ),
        )),
        _ => {}
    }
    if let Some(i) = &s.items {
        fields.push((
            "Items",
            format!(
                "{} succeeded, {} failed, {} running, {} pending, of {}",
                i.succeeded, i.failed, i.running, i.pending, i.total
            ),
        ));
        if !i.failed_indexes.is_empty() {
            fields.push(("Failed items", clip(&i.failed_indexes, 200)));
        }
    }
    if !children.is_empty() {
        let mut by_phase = BTreeMap::new();
        for c in children {
            *by_phase.entry(phase(c).as_str()).or_insert(0) += 1;
        }
        let counts: Vec<String> = by_phase.iter().map(|(p, n)| format!("{n} {p}")).collect();
        fields.push((
            "Sub-tasks",
            format!(
                "{} ({}); `kubectl cogo tree` shows them",
                children.len(),
                counts.join(", ")
            ),
        ));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 3;
    let mut out = String::new();
    for (k, v) in &fields {
        out.push_str(&format!("{:<width$}{v}\n", format!("{k}:")));
    }
    if !s.attempts.is_empty() {
        out.push_str("Attempts:\n");
        let mut rows = vec![
            ["#", "POD", "STARTED", "DURATION", "OUTCOME", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        for a in &s.attempts {
            rows.push(vec![
                a.number.to_string(),
                a.pod.clone(),
                a.start_time.0.to_string(),
                run_time(since(
                    a.start_time.0,
                    a.finish_time.as_ref().map(|f| f.0).unwrap_or(now),
                )),
                a.outcome.clone().unwrap_or_else(|| "running".into()),
                clip(a.message.as_deref().unwrap_or(""), 80),
            ]);
        }
        for line in table(&rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if !s.conditions.is_empty() {
        out.push_str("Conditions:\n");
        let mut rows = vec![["TYPE", "STATUS", "REASON", "MESSAGE"].map(String::from).to_vec()];
        for c in &s.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                clip(&c.message, 80),
            ]);
        }
        for line in table(&rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// The tree `kubectl cogo tree` prints: `root` and, under it, every task whose `spec.parent`
/// leads to it, oldest first.
pub fn render_tree(root: &AgentTask, all: &[AgentTask], now: Timestamp) -> String {
    let mut children: BTreeMap<&str, Vec<&AgentTask>> = BTreeMap::new();
    for t in all {
        if let Some(p) = &t.spec.parent {
            children.entry(p.as_str()).or_default().push(t);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|t| (t.metadata.creation_timestamp.as_ref().map(|c| c.0), t.name_any()));
    }
    let mut rows = vec![
        ["NAME", "TYPE", "PHASE", "DURATION", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    ];
    let mut seen = HashSet::new();
    fn walk<'a>(
        t: &'a AgentTask,
        prefix: &str,
        branch: &str,
        children: &BTreeMap<&str, Vec<&'a AgentTask>>,
        seen: &mut HashSet<String>,
        rows: &mut Vec<Vec<String>>,
        now: Timestamp,
    ) {
        let name = t.name_any();
        rows.push(vec![
            format!("{prefix}{branch}{name}"),
            t.spec.task_type.clone(),
            phase(t).as_str().to_string(),
            duration_of(t, now).map(run_time).unwrap_or_else(|| "-".into()),
            clip(
                t.status.as_ref().and_then(|s| s.message.as_deref()).unwrap_or(""),
                60,
            ),
        ]);
        if !seen.insert(name.clone()) {
            return;
        }
        let kids = children.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let below = match branch {
            "" => prefix.to_string(),
            "└─ " => format!("{prefix}   "),
            _ => format!("{prefix}│  "),
        };
        for (i, k) in kids.iter().enumerate() {
            let branch = if i + 1 == kids.len() { "└─ " } else { "├─ " };
            walk(k, &below, branch, children, seen, rows, now);
        }
    }
    walk(root, "", "", &children, &mut seen, &mut rows, now);
    table(&rows)
}

async fn list(api: &Api<AgentTask>, selector: Option<&str>) -> anyhow::Result<Vec<AgentTask>> {
    let mut params = ListParams::default();
    if let Some(s) = selector {
        params = params.labels(s);
    }
    let mut tasks = api
        .list(&params)
        .await
        .map_err(|e| anyhow::anyhow!("cannot list AgentTasks: {}", explain(&e)))?
        .items;
    tasks.sort_by_key(|t| {
        (
            t.namespace(),
            t.metadata.creation_timestamp.as_ref().map(|c| c.0),
            t.name_any(),
        )
    });
    Ok(tasks)
}

fn print_objects(tasks: &[AgentTask], format: Format, single: bool) -> anyhow::Result<()> {
    match format {
        Format::Name => {
            for t in tasks {
                println!("agenttask.cogo.xyz/{}", t.name_any());
            }
        }
        Format::Json if single => println!("{}", serde_json::to_string_pretty(&tasks[0])?),
        Format::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": tasks});
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Format::Yaml if single => print!("{}", serde_saphyr::to_string(&tasks[0])?),
        Format::Yaml => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": tasks});
            print!("{}", serde_saphyr::to_string(&list)?);
        }
    }
    Ok(())
}

/// `kubectl cogo get`.
pub async fn get(target: &Target, a: &GetArgs) -> anyhow::Result<Outcome> {
    let now = Timestamp::now();
    if let Some(name) = &a.name {
        let t = get_task(target, name).await?;
        if let Some(format) = a.output {
            print_objects(std::slice::from_ref(&t), format, true)?;
            return Ok(Outcome::Done);
        }
        let all = list(&target.tasks(), None).await?;
        let children: Vec<AgentTask> = all
            .into_iter()
            .filter(|c| c.spec.parent.as_deref() == Some(name.as_str()))
            .collect();
        print!("{}", describe(&t, &children, now));
        return Ok(Outcome::Done);
    }
    let api = if a.all_namespaces {
        Api::all(target.client.clone())
    } else {
        target.tasks()
    };
    let tasks = list(&api, a.selector.as_deref()).await?;
    if let Some(format) = a.output {
        print_objects(&tasks, format, false)?;
    } else if tasks.is_empty() {
        match a.all_namespaces {
            true => eprintln!("No AgentTasks found."),
            false => eprintln!("No AgentTasks found in the namespace {}.", target.namespace),
        }
    } else {
        print!("{}", list_table(&tasks, a.all_namespaces, now));
    }
    Ok(Outcome::Done)
}

/// `kubectl cogo tree`.
pub async fn tree(target: &Target, a: &TreeArgs) -> anyhow::Result<Outcome> {
    let root = get_task(target, &a.name).await?;
    let all = list(&target.tasks(), None).await?;
    print!("{}", render_tree(&root, &all, Timestamp::now()));
    Ok(Outcome::Done)
}

/// What `watch` reports a change of.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    phase: TaskPhase,
    attempt: i32,
    pod: Option<String>,
    message: Option<String>,
}

impl Seen {
    /// What a task shows now.
    pub fn of(t: &AgentTask) -> Seen {
        let s = t.status.clone().unwrap_or_default();
        Seen {
            phase: phase(t),
            attempt: s.attempt,
            pod: s.pod,
            message: s.message,
        }
    }

    /// The line printed for it.
    pub fn line(&self, name: &str, at: Timestamp) -> String {
        let time = at.strftime("%H:%M:%S");
        let mut line = format!("{time}  {name}  {}", self.phase.as_str());
        if self.attempt > 0 {
            line.push_str(&format!("  attempt {}", self.attempt));
        }
        if let Some(p) = self.pod.as_ref().filter(|_| self.phase == TaskPhase::Running) {
            line.push_str(&format!("  on {p}"));
        }
        if let Some(m) = &self.message {
            line.push_str(&format!("  {}", clip(m, 160)));
        }
        line
    }
}

/// Whether a watch error will not pass by retrying: the caller may not watch (401, 403), or
/// the namespace is not there (404).
pub fn is_fatal(e: &watcher::Error) -> Option<String> {
    let (code, message) = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => (s.code, s.message.clone()),
        watcher::Error::WatchError(s) => (s.code, s.message.clone()),
        _ => return None,
    };
    matches!(code, 401 | 403 | 404).then_some(message)
}

/// Follows the task `name` until it ends or `timeout` passes, calling `change` with each new
/// state (the first included). Returns the ended task, or an error when it was deleted or
/// did not end in time.
pub async fn follow(
    target: &Target,
    name: &str,
    timeout: Duration,
    mut change: impl FnMut(&AgentTask),
) -> anyhow::Result<AgentTask> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(target.tasks(), config).default_backoff();
    futures::pin_mut!(stream);
    let mut last: Option<Seen> = None;
    // The task seen in the current listing, by UID: a task deleted while the watch reconnects,
    // or deleted and created again under the same name, is not the one followed.
    let mut uid: Option<String> = None;
    let mut exists = false;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => anyhow::bail!(
                "the AgentTask {name} did not end within {}; it goes on (follow it with `kubectl cogo watch {name}`)",
                human(timeout)
            ),
            Ok(None) => anyhow::bail!("the watch of the AgentTask {name} ended"),
            Ok(Some(Err(e))) => {
                if let Some(why) = is_fatal(&e) {
                    anyhow::bail!("cannot watch the AgentTask {name}: {why}");
                }
                eprintln!("warning: watching the AgentTask {name}: {e}; retrying");
                continue;
            }
            Ok(Some(Ok(event))) => event,
        };
        match event {
            watcher::Event::Apply(t) | watcher::Event::InitApply(t) => {
                if uid.is_some() && t.metadata.uid != uid {
                    anyhow::bail!("the AgentTask {name} was deleted and another took its name");
                }
                uid = t.metadata.uid.clone();
                exists = true;
                let seen = Seen::of(&t);
                if last.as_ref() != Some(&seen) {
                    change(&t);
                    last = Some(seen);
                }
                if phase(&t).is_terminal() {
                    return Ok(t);
                }
            }
            watcher::Event::Delete(_) => anyhow::bail!("the AgentTask {name} was deleted before it ended"),
            watcher::Event::InitDone if !exists => anyhow::bail!(
                "the AgentTask {name} does not exist in the namespace {}",
                target.namespace
            ),
            watcher::Event::Init => exists = false,
            watcher::Event::InitDone => {}
        }
    }
}

/// `kubectl cogo watch`.
pub async fn watch(target: &Target, a: &WatchArgs) -> anyhow::Result<Outcome> {
    if let Some(name) = &a.name {
        let t = follow(target, name, a.timeout, |t| {
            println!("{}", Seen::of(t).line(name, Timestamp::now()))
        })
        .await?;
        return Ok(match phase(&t) {
            TaskPhase::Succeeded => Outcome::Done,
            _ => Outcome::TaskDidNotSucceed,
        });
    }
    let mut config = watcher::Config::default();
    if let Some(s) = &a.selector {
        config = config.labels(s);
    }
    let stream = watcher(target.tasks(), config)
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    let mut last: BTreeMap<String, Seen> = BTreeMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(t) => {
                let seen = Seen::of(&t);
                let name = t.name_any();
                if last.get(&name) != Some(&seen) {
                    println!("{}", seen.line(&name, Timestamp::now()));
                    last.insert(name, seen);
                }
            }
            Err(e) => match is_fatal(&e) {
                Some(why) => anyhow::bail!("cannot watch AgentTasks: {why}"),
                None => eprintln!("warning: watching AgentTasks: {e}; retrying"),
            },
        }
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
pub(crate) mod tests {
    use cogo_api::{AgentTaskSpec, AgentTaskStatus, task::TaskAttempt};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    pub(crate) fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    pub(crate) fn task(name: &str, parent: Option<&str>, created: i64, phase: TaskPhase) -> AgentTask {
        let spec: AgentTaskSpec = serde_json::from_value(serde_json::json!({
            "agent": "orchestrator", "type": "cogo.echo", "parent": parent,
        }))
        .unwrap();
        let mut t = AgentTask::new(name, spec);
        t.metadata.namespace = Some("ns".into());
        t.metadata.creation_timestamp = Some(Time(at(created)));
        t.status = Some(AgentTaskStatus {
            phase: Some(phase),
            attempt: 1,
            start_time: Some(Time(at(created + 1))),
            completion_time: phase.is_terminal().then(|| Time(at(created + 3))),
            ..Default::default()
        });
        t
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (1500, "25m"),
            (25_200, "7h"),
            (300_000, "3d"),
        ];
        for (s, text) in cases {
            assert_eq!(human(Duration::from_secs(s)), text);
        }
        assert_eq!(run_time(Duration::from_millis(420)), "0.4s");
        assert_eq!(run_time(Duration::from_secs(200)), "3m20s");
    }

    #[test]
    fn a_tree_nests_sub_tasks_under_their_parents_oldest_first() {
        let all = vec![
            task("wf", None, 0, TaskPhase::Running),
            task("wf-b", Some("wf"), 2, TaskPhase::Running),
            task("wf-a", Some("wf"), 1, TaskPhase::Succeeded),
            task("wf-a-0", Some("wf-a"), 1, TaskPhase::Succeeded),
            task("wf-b-0", Some("wf-b"), 3, TaskPhase::Pending),
            task("other", None, 0, TaskPhase::Succeeded),
        ];
        let text = render_tree(&all[0], &all, at(10));
        let column = text.find("TYPE").unwrap();
        let names: Vec<String> = text
            .lines()
            .map(|l| l.chars().take(column).collect::<String>().trim_end().to_string())
            .collect();
        assert_eq!(
            names,
            ["NAME", "wf", "├─ wf-a", "│  └─ wf-a-0", "└─ wf-b", "   └─ wf-b-0"],
            "{text}"
        );
        assert!(text.lines().nth(2).unwrap().contains("Succeeded"), "{text}");
        assert!(text.lines().nth(2).unwrap().contains("2.0s"), "{text}");
        assert!(
            text.lines().nth(1).unwrap().contains("9.0s"),
            "a running task runs until now: {text}"
        );
        assert!(!text.contains("other"));
    }

    #[test]
    fn a_task_that_names_itself_its_parent_does_not_loop() {
        let all = vec![task("loop", Some("loop"), 0, TaskPhase::Pending)];
        let text = render_tree(&all[0], &all, at(1));
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn a_description_holds_attempts_results_and_sub_tasks() {
        let mut t = task("wf", None, 0, TaskPhase::Failed);
        let s = t.status.as_mut().unwrap();
        s.message = Some("sub-task wf-1 ended Failed: boom".into());
        s.attempts = vec![TaskAttempt {
            number: 1,
            agent: "orchestrator".into(),
            pod: "orchestrator-abc".into(),
            start_time: Time(at(1)),
            finish_time: Some(Time(at(3))),
            outcome: Some("HandlerFailed".into()),
            message: Some("boom\nand more".into()),
        }];
        s.result_ref = Some(cogo_api::task::ResultRef {
            digest: "sha256:ab".into(),
            size_bytes: 300_000,
            location: "supabase:distributed_agent_tasks".into(),
            reason: "large".into(),
        });
        let kids = [
            task("wf-0", Some("wf"), 1, TaskPhase::Succeeded),
            task("wf-1", Some("wf"), 1, TaskPhase::Failed),
            task("wf-2", Some("wf"), 1, TaskPhase::Succeeded),
        ];
        let text = describe(&t, &kids, at(10));
        for want in [
            "Phase:      Failed",
            "Message:    sub-task wf-1 ended Failed: boom",
            "Target:     agent orchestrator",
            "Duration:   2.0s",
            "300000 bytes in supabase:distributed_agent_tasks (sha256:ab)",
            "Sub-tasks:  3 (1 Failed, 2 Succeeded)",
            "orchestrator-abc",
            "HandlerFailed",
            "boom and more",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn a_description_counts_an_indexed_task_s_items() {
        let mut t = task("pages", None, 0, TaskPhase::Running);
        t.status.as_mut().unwrap().items = Some(cogo_api::ItemsStatus {
            total: 2000,
            pending: 500,
            running: 64,
            succeeded: 1434,
            failed: 2,
            succeeded_indexes: "0-1433".into(),
            failed_indexes: "1500,1502".into(),
        });
        let text = describe(&t, &[], at(10));
        for want in [
            "Items:         1434 succeeded, 2 failed, 64 running, 500 pending, of 2000",
            "Failed items:  1500,1502",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn a_list_aligns_its_columns() {
        let all = [
            task("a", None, 0, TaskPhase::Succeeded),
            task("longer-name", None, 5, TaskPhase::Pending),
        ];
        let text = list_table(&all, false, at(65));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("TYPE"), lines[1].find("cogo.echo"), "{text}");
        assert_eq!(lines[0].find("PHASE"), lines[2].find("Pending"), "{text}");
        assert!(lines[1].ends_with("65s") && lines[2].ends_with("60s"), "{text}");
    }

    #[test]
    fn a_watch_line_says_what_changed() {
        let mut t = task("t", None, 0, TaskPhase::Running);
        t.status.as_mut().unwrap().pod = Some("agent-0".into());
        let line = Seen::of(&t).line("t", at(0));
        assert!(line.ends_with("t  Running  attempt 1  on agent-0"), "{line}");
        let before = Seen::of(&t);
        t.status.as_mut().unwrap().message = Some("retrying".into());
        assert_ne!(Seen::of(&t), before);
        t.metadata.resource_version = Some("9".into());
        assert_eq!(Seen::of(&t), Seen::of(&t.clone()));
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
