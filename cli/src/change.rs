//! `kubectl cogo cancel` and `kubectl cogo retry`.

use cogo_api::AgentTask;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{Outcome, Target, explain, get_task, result, submit, view};

/// The label a retry carries: the name of the task it runs again.
pub const RETRY_OF_LABEL: &str = "cogo.xyz/retry-of";

/// `kubectl cogo cancel`.
#[derive(clap::Args)]
pub struct CancelArgs {
    /// The tasks to cancel.
    #[arg(required = true)]
    names: Vec<String>,
}

/// `kubectl cogo retry`.
#[derive(clap::Args)]
pub struct RetryArgs {
    /// The ended task to run again.
    name: String,
    /// The new task's name (by default the old one's and a random suffix).
    #[arg(long)]
    new_name: Option<String>,
    #[command(flatten)]
    wait: result::Wait,
}

/// `kubectl cogo cancel`: asks each task to stop. A queued task ends at once, a running one
/// when its agent next heartbeats; a task that has ended is left as it is.
pub async fn cancel(target: &Target, a: &CancelArgs) -> anyhow::Result<Outcome> {
    let mut failed = 0;
    for name in &a.names {
        let task = match get_task(target, name).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let phase = view::phase(&task);
        if phase.is_terminal() {
            println!(
                "agenttask.cogo.xyz/{name} has ended ({}); nothing to cancel",
                phase.as_str()
            );
            continue;
        }
        let patch = json!({"spec": {"cancelRequested": true}});
        match target
            .tasks()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => println!("agenttask.cogo.xyz/{name} cancel requested"),
            Err(e) => {
                eprintln!("error: cannot cancel the AgentTask {name}: {}", explain(&e));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} tasks could not be cancelled", a.names.len());
    }
    Ok(Outcome::Done)
}

/// A new task with the spec of the ended task `old`: the same type, target, input and
/// policies, labelled with the old task's name. Its requester is not carried over (the
/// operator vouches for a requester only on tasks it sealed itself).
pub fn again(old: &AgentTask, new_name: Option<&str>) -> anyhow::Result<AgentTask> {
    let name = old.name_any();
    let phase = view::phase(old);
    if !phase.is_terminal() {
        anyhow::bail!(
            "the AgentTask {name} is {}; only a task that has ended can be retried (cancel it first)",
            phase.as_str()
        );
    }
    if let Some(parent) = &old.spec.parent {
        anyhow::bail!(
            "the AgentTask {name} is a sub-task of {parent}, which owns its steps; retry {parent} instead"
        );
    }
    let mut spec = old.spec.clone();
    spec.cancel_requested = false;
    spec.requester = None;
    let mut task = AgentTask::new(new_name.unwrap_or_default(), spec);
    if new_name.is_none() {
        task.metadata.name = None;
        let prefix: String = name.chars().take(57).collect();
        task.metadata.generate_name = Some(format!("{prefix}-"));
    }
    let mut labels = old.labels().clone();
    labels.retain(|k, _| !k.starts_with("cogo.xyz/"));
    if name.len() <= 63 {
        labels.insert(RETRY_OF_LABEL.into(), name);
    }
    task.metadata.labels = Some(labels);
    Ok(task)
}

/// `kubectl cogo retry`.
pub async fn retry(target: &Target, a: &RetryArgs) -> anyhow::Result<Outcome> {
    let old = get_task(target, &a.name).await?;
    let task = again(&old, a.new_name.as_deref())?;
    submit::create(target, task, &a.wait).await
}

#[cfg(test)]
mod tests {
    use cogo_api::{TaskPhase, task::Requester};

    use super::*;
    use crate::view::tests::task;

    #[test]
    fn a_retry_copies_the_spec_of_an_ended_task() {
        let mut old = task("job", None, 0, TaskPhase::Failed);
        old.spec.cancel_requested = true;
        old.spec.input = Some(json!({"x": 1}));
        old.spec.requester = Some(Requester {
            user_id: Some("00000000-0000-0000-0000-00000000000a".into()),
            session_id: None,
        });
        old.metadata.labels = Some(
            [
                ("team".into(), "a".into()),
                ("cogo.xyz/parent".into(), "p".into()),
            ]
            .into(),
        );
        let new = again(&old, None).unwrap();
        assert_eq!(new.metadata.generate_name.as_deref(), Some("job-"));
        assert_eq!(new.metadata.name, None);
        assert_eq!(new.spec.input, Some(json!({"x": 1})));
        assert_eq!(new.spec.task_type, old.spec.task_type);
        assert!(!new.spec.cancel_requested && new.spec.requester.is_none());
        let labels = new.metadata.labels.unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(labels.get(RETRY_OF_LABEL).map(String::as_str), Some("job"));
        assert!(!labels.contains_key("cogo.xyz/parent"));
        assert!(new.status.is_none());
        assert_eq!(
            again(&old, Some("job-2")).unwrap().metadata.name.as_deref(),
            Some("job-2")
        );
    }

    #[test]
    fn running_tasks_and_sub_tasks_are_not_retried() {
        let e = again(&task("job", None, 0, TaskPhase::Running), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is Running; only a task that has ended"), "{e}");
        let e = again(&task("step", Some("wf"), 0, TaskPhase::Failed), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sub-task of wf") && e.contains("retry wf instead"),
            "{e}"
        );
    }
}
