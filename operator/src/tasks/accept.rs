//! Pure decisions about AgentTasks before they are leased: is the target there, is the input
//! acceptable, and what status says so. Every later transition is in
//! [`transition`](super::transition).

use cogo_api::{
    AgentRole, AgentTask, AgentTaskStatus, TaskPhase,
    conditions::{self, ACCEPTED, SUCCEEDED, status as cs},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::workers::Availability;
use crate::validate::Invalid;

/// Reasons of the `Accepted` and `Succeeded` conditions of a task.
pub mod reason {
    /// The target exists and the task waits in its queue.
    pub const QUEUED: &str = "Queued";
    /// Not finished yet.
    pub const PENDING: &str = "Pending";
    /// `spec.agent` names no CogoAgent of the namespace.
    pub const AGENT_NOT_FOUND: &str = "AgentNotFound";
    /// No CogoAgent of the namespace has `spec.role`.
    pub const NO_AGENT_FOR_ROLE: &str = "NoAgentForRole";
    /// `spec.input` is larger than the operator accepts.
    pub const INPUT_TOO_LARGE: &str = "InputTooLarge";
    /// `spec.input` nests deeper than Cogo reads free-form JSON.
    pub const INPUT_TOO_DEEP: &str = "InputTooDeep";
    /// `spec.parent` names no AgentTask of the namespace.
    pub const PARENT_NOT_FOUND: &str = "ParentNotFound";
    /// The task needs a worker and no worker of its kind is connected to the Executor.
    pub const WAITING_FOR_WORKER: &str = "WaitingForWorker";
    /// The task needs a worker and every worker of its kind was busy.
    pub const WORKERS_BUSY: &str = "WorkersBusy";
    /// The namespace holds as many queued tasks as the operator queues for one namespace.
    pub const NAMESPACE_QUEUE_FULL: &str = "NamespaceQueueFull";
    /// `spec.items` cannot be run as it is.
    pub const INVALID_ITEMS: &str = "InvalidItems";
}

/// Why an accepted task that runs on a worker waits: no worker of its kind is connected to its
/// Executor, or every one was busy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerWait {
    /// The worker kind the task needs.
    pub kind: cogo_api::WorkerKind,
    /// The Executor named by the task; None for a task sent to any Executor.
    pub executor: Option<String>,
    /// Workers of the kind are connected, and were all busy.
    pub busy: bool,
}

impl WorkerWait {
    /// What a waiting task of `kind` for `executor` says, given its Executor's `availability`
    /// and the reason its `Accepted` condition has now (`said`). No worker connected is always
    /// said. All of them busy is said when the task's status is first written (it waited past
    /// the grace period, so the workers were busy then) and kept while it waits, but never
    /// written over the ordinary `Queued`: under load workers turn free and busy many times a
    /// second, and each flip must not cost a status write.
    pub fn decide(
        kind: cogo_api::WorkerKind,
        executor: Option<String>,
        availability: Availability,
        said: Option<&str>,
    ) -> Option<WorkerWait> {
        let busy = match (availability, said) {
            (Availability::NoneConnected, _) => false,
            (Availability::Busy, None | Some(reason::WAITING_FOR_WORKER | reason::WORKERS_BUSY)) => true,
            (Availability::Free, Some(reason::WORKERS_BUSY)) => true,
            _ => return None,
        };
        Some(WorkerWait { kind, executor, busy })
    }

    /// The reason and message of the `Accepted` condition while the task waits.
    fn explain(&self) -> (&'static str, String) {
        let executor = match &self.executor {
            Some(e) => format!("Executor {e}"),
            None => "any Executor of the namespace".into(),
        };
        let kind = self.kind;
        if self.busy {
            (
                reason::WORKERS_BUSY,
                format!("queued: every {kind} worker of {executor} was busy; the task runs when one is free"),
            )
        } else {
            (
                reason::WAITING_FOR_WORKER,
                format!(
                    "queued: no {kind} worker is connected to {executor}; the task runs when one connects"
                ),
            )
        }
    }
}

/// Where an accepted task is queued.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A named CogoAgent.
    Agent(String),
    /// Any CogoAgent of a role.
    Role(AgentRole),
}

/// What the operator looked up about a task's namespace.
#[derive(Clone, Debug, Default)]
pub struct TaskFacts {
    /// The namespace's CogoAgents and their roles.
    pub agents: Vec<(String, AgentRole)>,
    /// Whether the parent named in `spec.parent` exists (None when there is no parent).
    pub parent_exists: Option<bool>,
}

/// Decides whether a task can be queued, and where.
pub fn validate(task: &AgentTask, facts: &TaskFacts, max_input_bytes: usize) -> Result<Target, Invalid> {
    let spec = &task.spec;
    if let Some(why) = spec
        .input
        .as_ref()
        .and_then(|i| cogo_api::json::too_deep("spec.input", i))
    {
        return Err(Invalid {
            reason: reason::INPUT_TOO_DEEP,
            message: format!("{why}; flatten it or store it elsewhere and pass a reference"),
        });
    }
    if let Some(input) = &spec.input {
        let size = serde_json::to_vec(input).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > max_input_bytes {
            return Err(Invalid {
                reason: reason::INPUT_TOO_LARGE,
                message: format!(
                    "spec.input is {size} bytes, more than the {max_input_bytes} bytes the operator accepts; \
                     store large data elsewhere and pass a reference"
                ),
            });
        }
    }
    if let Some(items) = &spec.items {
        check_items(task, items, max_input_bytes)?;
    }
    if facts.parent_exists == Some(false) {
        return Err(Invalid {
            reason: reason::PARENT_NOT_FOUND,
            message: format!(
                "spec.parent names AgentTask {:?}, which does not exist",
                spec.parent.as_deref().unwrap_or("")
            ),
        });
    }
    let target = match (&spec.agent, spec.role) {
        (Some(agent), _) => {
            if facts.agents.iter().any(|(n, _)| n == agent) {
                Ok(Target::Agent(agent.clone()))
            } else {
                Err(Invalid {
                    reason: reason::AGENT_NOT_FOUND,
                    message: format!(
                        "spec.agent names CogoAgent {agent:?}, which does not exist in this namespace"
                    ),
                })
            }
        }
        (None, Some(role)) => {
            if facts.agents.iter().any(|(_, r)| *r == role) {
                Ok(Target::Role(role))
            } else {
                Err(Invalid {
                    reason: reason::NO_AGENT_FOR_ROLE,
                    message: format!(
                        "no CogoAgent of this namespace has role {role}; create one to run this task"
                    ),
                })
            }
        }
        // The schema's CEL rule makes this impossible; treat it like an unknown agent.
        (None, None) => Err(Invalid {
            reason: reason::AGENT_NOT_FOUND,
            message: "the task names neither spec.agent nor spec.role".into(),
        }),
    }?;
    Ok(target)
}

/// Whether `items` can be run: one of `inputs` and `count` (the schema says so too), no
/// `spec.input` beside `inputs`, and inputs within the operator's limits. Items of worker task
/// types run like any other: the Executor leases them and hands each to a worker as a job.
fn check_items(task: &AgentTask, items: &cogo_api::TaskItems, max_input_bytes: usize) -> Result<(), Invalid> {
    let invalid = |message: String| Invalid {
        reason: reason::INVALID_ITEMS,
        message,
    };
    match (&items.inputs, items.count) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid(
                "set exactly one of spec.items.count and spec.items.inputs".into(),
            ));
        }
        (Some(inputs), None) => {
            if task.spec.input.is_some() {
                return Err(invalid(
                    "spec.input must be unset when spec.items.inputs gives each item its input".into(),
                ));
            }
            if inputs.is_empty() || inputs.len() as i64 > cogo_api::task::MAX_ITEMS {
                return Err(invalid(format!(
                    "spec.items.inputs has {} entries; 1 to {} are run",
                    inputs.len(),
                    cogo_api::task::MAX_ITEMS
                )));
            }
            let size = serde_json::to_vec(inputs).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > max_input_bytes {
                return Err(Invalid {
                    reason: reason::INPUT_TOO_LARGE,
                    message: format!(
                        "spec.items.inputs is {size} bytes, more than the {max_input_bytes} bytes the operator \
                         accepts; use spec.items.count with a template in spec.input, or pass references"
                    ),
                });
            }
            if let Some(why) = inputs
                .iter()
                .enumerate()
                .find_map(|(i, v)| cogo_api::json::too_deep(&format!("spec.items.inputs[{i}]"), v))
            {
                return Err(Invalid {
                    reason: reason::INPUT_TOO_DEEP,
                    message: why,
                });
            }
        }
        (None, Some(count)) => {
            if !(1..=cogo_api::task::MAX_ITEMS).contains(&count) {
                return Err(invalid(format!(
                    "spec.items.count is {count}; 1 to {} are run",
                    cogo_api::task::MAX_ITEMS
                )));
            }
        }
    }
    Ok(())
}

/// Why a valid task waits outside a namespace's full queue of `limit` tasks.
pub fn queue_full(limit: usize) -> Invalid {
    Invalid {
        reason: reason::NAMESPACE_QUEUE_FULL,
        message: format!(
            "the namespace already has {limit} queued tasks, the most the operator queues for one \
             namespace (--max-queued-tasks-per-namespace); this task is accepted, oldest first, when \
             one of them is leased"
        ),
    }
}

/// Whether the task's `Accepted` condition is True: it was admitted once, so a limit on new
/// tasks no longer applies to it (a retry goes back to the queue whatever its length).
pub fn was_accepted(task: &AgentTask) -> bool {
    task.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == ACCEPTED && c.status == cs::TRUE)
    })
}

/// The status of a task that is not leased yet: `phase: Pending`, `Accepted` from the
/// verdict (and, for a task that waits for a worker, why), `Succeeded: Unknown`. Returns None
/// once the broker owns the task (it is Running or finished), so the controller leaves such a
/// status alone.
pub fn compute_pending(
    task: &AgentTask,
    verdict: &Result<Target, Invalid>,
    wait: Option<&WorkerWait>,
    now: &Time,
) -> Option<AgentTaskStatus> {
    let previous = task.status.clone().unwrap_or_default();
    if matches!(previous.phase, Some(p) if p != TaskPhase::Pending) {
        return None;
    }
    let gen_ = task.metadata.generation;
    let mut next = AgentTaskStatus {
        phase: Some(TaskPhase::Pending),
        observed_generation: gen_,
        ..previous
    };
    let waiting = wait.filter(|_| verdict.is_ok()).map(WorkerWait::explain);
    let accepted = match verdict {
        Ok(_) if waiting.is_some() => {
            let (reason, message) = waiting.clone().unwrap_or_default();
            conditions::condition(ACCEPTED, cs::TRUE, reason, message, gen_, now)
        }
        Ok(Target::Agent(a)) => conditions::condition(
            ACCEPTED,
            cs::TRUE,
            reason::QUEUED,
            format!("queued for agent {a}"),
            gen_,
            now,
        ),
        Ok(Target::Role(r)) => conditions::condition(
            ACCEPTED,
            cs::TRUE,
            reason::QUEUED,
            format!("queued for any {r} agent"),
            gen_,
            now,
        ),
        Err(invalid) => conditions::condition(
            ACCEPTED,
            cs::FALSE,
            invalid.reason,
            invalid.message.clone(),
            gen_,
            now,
        ),
    };
    conditions::set_condition(&mut next.conditions, accepted);
    conditions::set_condition(
        &mut next.conditions,
        conditions::condition(
            SUCCEEDED,
            cs::UNKNOWN,
            reason::PENDING,
            "the task has not run yet",
            gen_,
            now,
        ),
    );
    next.message = Some(match (verdict, waiting) {
        (Ok(_), Some((_, message))) => message,
        (Ok(_), None) => "waiting for an agent to lease it".into(),
        (Err(invalid), _) => invalid.message.clone(),
    });
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(yaml: &str) -> AgentTask {
        let spec = serde_saphyr::from_str(yaml).unwrap();
        let mut t = AgentTask::new("t", spec);
        t.metadata.namespace = Some("team".into());
        t.metadata.generation = Some(1);
        t
    }

    fn at(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    fn facts(agents: &[(&str, AgentRole)]) -> TaskFacts {
        TaskFacts {
            agents: agents.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
            parent_exists: None,
        }
    }

    /// Every bad task input the operator judges, with its reason and a fragment of the message.
    #[test]
    fn bad_tasks() {
        let big = format!(
            "agent: research\ntype: cogo.echo\ninput: {{blob: \"{}\"}}",
            "x".repeat(300)
        );
        let cases: Vec<(&str, String, TaskFacts, &str, &str)> = vec![
            (
                "unknown agent",
                "agent: nobody\ntype: cogo.echo".into(),
                facts(&[("research", AgentRole::Research)]),
                reason::AGENT_NOT_FOUND,
                "CogoAgent \"nobody\"",
            ),
            (
                "no agent of the role",
                "role: GraphRAG\ntype: graph.query".into(),
                facts(&[("research", AgentRole::Research)]),
                reason::NO_AGENT_FOR_ROLE,
                "role GraphRAG",
            ),
            (
                "input over the limit",
                big,
                facts(&[("research", AgentRole::Research)]),
                reason::INPUT_TOO_LARGE,
                "more than the 256 bytes",
            ),
            (
                "missing parent",
                "agent: research\ntype: cogo.echo\nparent: gone".into(),
                TaskFacts {
                    parent_exists: Some(false),
                    ..facts(&[("research", AgentRole::Research)])
                },
                reason::PARENT_NOT_FOUND,
                "AgentTask \"gone\"",
            ),
        ];
        for (what, yaml, facts, reason, fragment) in cases {
            let err = validate(&task(&yaml), &facts, 256).expect_err(what);
            assert_eq!(err.reason, reason, "{what}");
            assert!(err.message.contains(fragment), "{what}: {}", err.message);
        }
    }

    #[test]
    fn only_tasks_never_accepted_are_new() {
        let mut t = task("agent: r\ntype: cogo.echo");
        assert!(!was_accepted(&t));
        let refused = Err(queue_full(500));
        assert!(
            refused
                .as_ref()
                .unwrap_err()
                .message
                .contains("already has 500 queued tasks")
        );
        t.status = compute_pending(&t, &refused, None, &at(1));
        assert!(!was_accepted(&t));
        t.status = compute_pending(&t, &Ok(Target::Agent("r".into())), None, &at(2));
        assert!(was_accepted(&t));
    }

    #[test]
    fn items_of_any_task_type_are_accepted_and_ill_formed_items_refused() {
        let f = facts(&[("x", AgentRole::Executor)]);
        for yaml in [
            "role: Executor\ntype: python.execute\nitems: {count: 3}\ninput: {code: 'print({{index}})'}",
            "agent: x\ntype: browser.screenshot\nitems: {inputs: [{url: 'https://a.example'}]}",
            "agent: x\ntype: cogo.echo\nitems: {count: 2}",
        ] {
            assert!(validate(&task(yaml), &f, 1024).is_ok(), "{yaml}");
        }
        for (yaml, fragment) in [
            (
                "role: Executor\ntype: python.execute\nitems: {count: 3, inputs: [{code: 'pass'}]}",
                "exactly one of",
            ),
            (
                "role: Executor\ntype: python.execute\nitems: {inputs: [{code: 'pass'}]}\ninput: {code: 'pass'}",
                "spec.input must be unset",
            ),
        ] {
            let err = validate(&task(yaml), &f, 1024).expect_err(yaml);
            assert_eq!(err.reason, reason::INVALID_ITEMS, "{yaml}");
            assert!(err.message.contains(fragment), "{yaml}: {}", err.message);
        }
    }

    #[test]
    fn targets_resolve_by_name_or_role() {
        let f = facts(&[("r1", AgentRole::Research), ("x", AgentRole::Executor)]);
        assert_eq!(
            validate(&task("agent: x\ntype: cogo.echo"), &f, 1024),
            Ok(Target::Agent("x".into()))
        );
        assert_eq!(
            validate(&task("role: Research\ntype: research.query"), &f, 1024),
            Ok(Target::Role(AgentRole::Research))
        );
    }

    #[test]
    fn pending_status_is_stable_and_left_alone_once_leased() {
        let mut t = task("agent: r\ntype: cogo.echo");
        let ok = Ok(Target::Agent("r".into()));
        let first = compute_pending(&t, &ok, None, &at(10)).unwrap();
        assert_eq!(first.phase, Some(TaskPhase::Pending));
        let accepted = conditions::find(&first.conditions, ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("True", reason::QUEUED)
        );
        assert_eq!(
            conditions::find(&first.conditions, SUCCEEDED).unwrap().status,
            "Unknown"
        );
        t.status = Some(first.clone());
        assert_eq!(
            compute_pending(&t, &ok, None, &at(99)).unwrap(),
            first,
            "nothing changed, nothing to write"
        );

        t.status.as_mut().unwrap().phase = Some(TaskPhase::Running);
        assert!(
            compute_pending(&t, &ok, None, &at(100)).is_none(),
            "the broker owns a running task"
        );
    }

    #[test]
    fn a_rejected_task_says_why_and_flips_when_fixed() {
        let mut t = task("role: Research\ntype: research.query");
        let bad = validate(&t, &facts(&[]), 1024);
        let s = compute_pending(&t, &bad, None, &at(10)).unwrap();
        let accepted = conditions::find(&s.conditions, ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", reason::NO_AGENT_FOR_ROLE)
        );
        t.status = Some(s);
        let good = validate(&t, &facts(&[("r", AgentRole::Research)]), 1024);
        let s = compute_pending(&t, &good, None, &at(20)).unwrap();
        let accepted = conditions::find(&s.conditions, ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.last_transition_time.clone()),
            ("True", at(20))
        );
    }

    #[test]
    fn a_task_for_a_worker_says_why_it_waits() {
        let t = task("agent: executor\ntype: python.execute");
        let ok = Ok(Target::Agent("executor".into()));
        let kind = cogo_api::WorkerKind::PythonSandbox;
        let none = WorkerWait {
            kind,
            executor: Some("executor".into()),
            busy: false,
        };
        let s = compute_pending(&t, &ok, Some(&none), &at(10)).unwrap();
        let accepted = conditions::find(&s.conditions, ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("True", reason::WAITING_FOR_WORKER),
            "still accepted: kubectl wait for Accepted works"
        );
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("no PythonSandbox worker is connected to Executor executor"),
            "{:?}",
            s.message
        );
        let busy = WorkerWait {
            kind,
            executor: None,
            busy: true,
        };
        let s = compute_pending(&t, &ok, Some(&busy), &at(10)).unwrap();
        assert_eq!(
            conditions::find(&s.conditions, ACCEPTED).unwrap().reason,
            reason::WORKERS_BUSY
        );
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("every PythonSandbox worker of any Executor of the namespace was busy")
        );
        let bad = validate(&t, &facts(&[]), 1024);
        let s = compute_pending(&t, &bad, Some(&none), &at(10)).unwrap();
        assert_eq!(
            conditions::find(&s.conditions, ACCEPTED).unwrap().reason,
            reason::AGENT_NOT_FOUND,
            "a rejection says why it is rejected"
        );
    }

    #[test]
    fn busy_workers_are_said_once_and_never_flap() {
        use Availability::*;
        let kind = cogo_api::WorkerKind::PythonSandbox;
        let busy = |a, said| WorkerWait::decide(kind, None, a, said).map(|w| w.busy);
        let cases = [
            (NoneConnected, None, Some(false)),
            (NoneConnected, Some(reason::QUEUED), Some(false)),
            (NoneConnected, Some(reason::WORKERS_BUSY), Some(false)),
            (Busy, None, Some(true)),
            (Busy, Some(reason::WAITING_FOR_WORKER), Some(true)),
            (Busy, Some(reason::WORKERS_BUSY), Some(true)),
            (Busy, Some(reason::QUEUED), None),
            (Free, Some(reason::WORKERS_BUSY), Some(true)),
            (Free, Some(reason::WAITING_FOR_WORKER), None),
            (Free, None, None),
        ];
        for (availability, said, expected) in cases {
            assert_eq!(
                busy(availability, said),
                expected,
                "{availability:?} after {said:?}"
            );
        }
    }
}
