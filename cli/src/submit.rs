//! `kubectl cogo submit`: an AgentTask from flags or from a file, checked against the task
//! catalogue before it is created, and optionally followed to its result.

use std::{io::Read, path::PathBuf};

use cogo_api::{AgentRole, AgentTask, AgentTaskSpec, TaskPhase};
use kube::{ResourceExt, api::PostParams};
use serde_json::Value;

use crate::{Outcome, Target, explain, result, view};

/// `kubectl cogo submit`.
#[derive(clap::Args)]
pub struct Args {
    /// The task type, for example `research.query` or `cogo.echo` (not with --file).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    task_type: Option<String>,
    /// An AgentTask manifest, YAML or JSON (`-` reads standard input).
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// The CogoAgent that must run the task.
    #[arg(long, conflicts_with_all = ["role", "file"], required_unless_present_any = ["role", "file"])]
    agent: Option<String>,
    /// Any agent of this role may run it: Orchestrator, Indexing, Research, GraphRAG or Executor.
    #[arg(long, value_parser = parse_role, conflicts_with = "file")]
    role: Option<AgentRole>,
    /// The input, as JSON text.
    #[arg(long, conflicts_with_all = ["input_file", "file"])]
    input: Option<String>,
    /// A file holding the input as JSON (`-` reads standard input).
    #[arg(long, conflicts_with = "file")]
    input_file: Option<PathBuf>,
    /// The task's name (by default the type, dashed, and a random suffix).
    #[arg(long)]
    name: Option<String>,
    /// Higher runs first among the tasks queued for the same agents (-1000 to 1000).
    #[arg(long, allow_hyphen_values = true, conflicts_with = "file")]
    priority: Option<i32>,
    /// Seconds the task may run across all its attempts (spec.timeoutSeconds).
    #[arg(long, conflicts_with = "file")]
    timeout_seconds: Option<i64>,
    /// Seconds after the task ends when it is deleted (spec.ttlSecondsAfterFinished).
    #[arg(long, conflicts_with = "file")]
    ttl_seconds_after_finished: Option<i64>,
    /// Create the task even when its input does not follow the catalogue's schema for its type.
    #[arg(long)]
    no_check: bool,
    #[command(flatten)]
    wait: result::Wait,
}

/// A role by the name the CRDs use (case-insensitive).
pub fn parse_role(text: &str) -> Result<AgentRole, String> {
    let roles = [
        AgentRole::Orchestrator,
        AgentRole::Indexing,
        AgentRole::Research,
        AgentRole::GraphRag,
        AgentRole::Executor,
    ];
    roles
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            format!("{text:?} is not a role; the roles are {}", names.join(", "))
        })
}

/// The text of a file, or of standard input for `-`.
pub fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// An AgentTask from a manifest: one YAML or JSON document of kind AgentTask.
pub fn from_manifest(text: &str) -> anyhow::Result<AgentTask> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| anyhow::anyhow!("the file is not YAML or JSON: {e}"))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let [doc] = docs.as_slice() else {
        anyhow::bail!(
            "the file holds {} documents; submit takes one AgentTask",
            docs.len()
        );
    };
    if doc["kind"] != "AgentTask" || doc["apiVersion"] != "cogo.xyz/v1alpha1" {
        anyhow::bail!(
            "the file holds a {} of {}, not an AgentTask of cogo.xyz/v1alpha1",
            doc["kind"].as_str().unwrap_or("document without a kind"),
            doc["apiVersion"].as_str().unwrap_or("no apiVersion"),
        );
    }
    let mut task: AgentTask = serde_json::from_value(doc.clone())
        .map_err(|e| anyhow::anyhow!("the AgentTask in the file is not valid: {e}"))?;
    // What the API server sets (a manifest saved with `get -o yaml` has it) is left out.
    let meta = std::mem::take(&mut task.metadata);
    task.metadata = kube::api::ObjectMeta {
        name: meta.name,
        generate_name: meta.generate_name,
        namespace: meta.namespace,
        labels: meta.labels,
        annotations: meta.annotations,
        ..Default::default()
    };
    task.status = None;
    Ok(task)
}

/// The task's spec from the flags.
fn from_flags(a: &Args) -> anyhow::Result<AgentTaskSpec> {
    let input = match (&a.input, &a.input_file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(path)) => Some(read_text(path)?),
        (None, None) => None,
    };
    let input = input
        .map(|text| serde_json::from_str::<Value>(&text))
        .transpose()
        .map_err(|e| anyhow::anyhow!("the input is not JSON: {e}"))?;
    Ok(AgentTaskSpec {
        agent: a.agent.clone(),
        role: a.role,
        task_type: a.task_type.clone().unwrap_or_default(),
        input,
        priority: a.priority.unwrap_or(0),
        timeout_seconds: a.timeout_seconds,
        retry: None,
        ttl_seconds_after_finished: a.ttl_seconds_after_finished,
        items: None,
        parallelism: None,
        max_failed_items: None,
        parent: None,
        requester: None,
        cancel_requested: false,
    })
}

/// Whether `spec` fits the catalogue: a catalogue type must be sent to its own role and its
/// input must read as its handler reads it. Types outside the catalogue pass (the `cogo.*`
/// built-ins, and any type an agent image of the user's own handles).
pub fn check(spec: &AgentTaskSpec) -> Result<(), String> {
    if let Some(parent) = &spec.parent {
        return Err(format!(
            "spec.parent makes the task a sub-task of {parent}; sub-tasks are made by the agent running their parent"
        ));
    }
    let Some(entry) = cogo_api::catalogue::requestable()
        .into_iter()
        .find(|e| e.task_type == spec.task_type)
    else {
        return Ok(());
    };
    if let Some(role) = spec.role
        && role != entry.role
    {
        return Err(format!(
            "{} runs on {} agents, not on {} agents",
            spec.task_type,
            entry.role.as_str(),
            role.as_str()
        ));
    }
    (entry.check_input)(spec.input.as_ref().unwrap_or(&Value::Null))
        .map_err(|e| format!("the input does not fit {}: {e}", spec.task_type))
}

/// The prefix of generated names: the type with dots and underscores as dashes.
pub fn name_prefix(task_type: &str) -> String {
    let mut prefix: String = task_type
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect();
    prefix.push('-');
    prefix
}

/// Creates `task` and, with `wait`, follows it; prints as `submit` and `retry` do.
pub async fn create(target: &Target, mut task: AgentTask, wait: &result::Wait) -> anyhow::Result<Outcome> {
    if task.metadata.name.is_none() && task.metadata.generate_name.is_none() {
        task.metadata.generate_name = Some(name_prefix(&task.spec.task_type));
    }
    task.metadata.namespace = Some(target.namespace.clone());
    let created = target
        .tasks()
        .create(&PostParams::default(), &task)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the AgentTask: {}", explain(&e)))?;
    let name = created.name_any();
    let Some(timeout) = wait.timeout() else {
        println!("agenttask.cogo.xyz/{name} created");
        return Ok(Outcome::Done);
    };
    eprintln!("agenttask.cogo.xyz/{name} created");
    let ended = view::follow(target, &name, timeout, |t| {
        eprintln!("{}", view::Seen::of(t).line(&name, jiff::Timestamp::now()))
    })
    .await?;
    if view::phase(&ended) == TaskPhase::Succeeded {
        result::print(&ended, &wait.database, false).await?;
        return Ok(Outcome::Done);
    }
    Ok(Outcome::TaskDidNotSucceed)
}

/// `kubectl cogo submit`.
pub async fn run(target: &Target, a: &Args) -> anyhow::Result<Outcome> {
    let mut task = match &a.file {
        Some(path) => from_manifest(&read_text(path)?)?,
        None => AgentTask {
            metadata: Default::default(),
            spec: from_flags(a)?,
            status: None,
        },
    };
    if let Some(ns) = &task.metadata.namespace
        && *ns != target.namespace
    {
        anyhow::bail!(
            "the file's task is in the namespace {ns}, and the command works in {}; pass -n {ns}",
            target.namespace
        );
    }
    if let Some(name) = &a.name {
        task.metadata.name = Some(name.clone());
    }
    task.status = None;
    if !a.no_check {
        check(&task.spec).map_err(|e| anyhow::anyhow!("{e} (--no-check creates it anyway)"))?;
    }
    create(target, task, &a.wait).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(role: Option<AgentRole>, task_type: &str, input: Value) -> AgentTaskSpec {
        AgentTaskSpec {
            agent: role.is_none().then(|| "a".into()),
            role,
            task_type: task_type.into(),
            input: Some(input),
            priority: 0,
            timeout_seconds: None,
            retry: None,
            ttl_seconds_after_finished: None,
            items: None,
            parallelism: None,
            max_failed_items: None,
            parent: None,
            requester: None,
            cancel_requested: false,
        }
    }

    #[test]
    fn roles_read_by_their_names_in_any_case() {
        assert_eq!(parse_role("GraphRAG"), Ok(AgentRole::GraphRag));
        assert_eq!(parse_role("research"), Ok(AgentRole::Research));
        let e = parse_role("chef").unwrap_err();
        assert!(
            e.contains("Orchestrator, Indexing, Research, GraphRAG, Executor"),
            "{e}"
        );
    }

    #[test]
    fn catalogue_types_are_checked_and_others_pass() {
        assert_eq!(check(&spec(None, "cogo.echo", json!({"any": 1}))), Ok(()));
        assert_eq!(check(&spec(None, "mine.custom", json!(1))), Ok(()));
        let ok = json!({"code": "print(1)"});
        assert_eq!(
            check(&spec(Some(AgentRole::Executor), "python.execute", ok.clone())),
            Ok(())
        );
        let e = check(&spec(Some(AgentRole::Research), "python.execute", ok)).unwrap_err();
        assert_eq!(
            e,
            "python.execute runs on Executor agents, not on Research agents"
        );
        let e = check(&spec(
            None,
            "python.execute",
            json!({"code": "print(1)", "cod": 2}),
        ))
        .unwrap_err();
        assert!(
            e.starts_with("the input does not fit python.execute: ") && e.contains("cod"),
            "{e}"
        );
        let e = check(&spec(None, "python.execute", json!({}))).unwrap_err();
        assert!(e.contains("code"), "{e}");
        let mut child = spec(None, "cogo.echo", json!(1));
        child.parent = Some("wf".into());
        assert!(check(&child).unwrap_err().contains("sub-task of wf"));
    }

    #[test]
    fn manifests_hold_exactly_one_agent_task() {
        let yaml = "apiVersion: cogo.xyz/v1alpha1\nkind: AgentTask\nmetadata:\n  name: hi\nspec:\n  agent: a\n  type: cogo.echo\n  input: {x: 1}\n";
        let t = from_manifest(yaml).unwrap();
        assert_eq!(
            (t.name_any(), t.spec.input),
            ("hi".to_string(), Some(json!({"x": 1})))
        );
        let json_text = r#"{"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {}, "spec": {"role": "Research", "type": "cogo.echo"}}"#;
        assert_eq!(
            from_manifest(json_text).unwrap().spec.role,
            Some(AgentRole::Research)
        );
        let saved = format!("{yaml}status: {{phase: Failed}}\n").replace(
            "  name: hi\n",
            "  name: hi\n  uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427\n  resourceVersion: \"7\"\n  creationTimestamp: \"2026-11-30T10:00:00Z\"\n",
        );
        let t = from_manifest(&saved).unwrap();
        assert_eq!(
            (t.metadata.uid, t.metadata.resource_version, t.status),
            (None, None, None)
        );
        assert_eq!(t.metadata.name.as_deref(), Some("hi"));
        let e = from_manifest("apiVersion: v1\nkind: ConfigMap\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the file holds a ConfigMap of v1, not an AgentTask of cogo.xyz/v1alpha1"
        );
        let e = from_manifest(&format!("{yaml}---\n{yaml}"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the file holds 2 documents; submit takes one AgentTask");
        let e = from_manifest("apiVersion: cogo.xyz/v1alpha1\nkind: AgentTask\nspec: {type: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the AgentTask in the file is not valid"), "{e}");
        assert!(from_manifest("a: [").is_err());
    }

    #[test]
    fn generated_names_come_from_the_type() {
        assert_eq!(name_prefix("research.query"), "research-query-");
        assert_eq!(name_prefix("my_area.do_it"), "my-area-do-it-");
    }
}
