//! A task's standing for kstatus (Flux, `kpt live`): the `Reconciling` and `Stalled`
//! conditions, settled from its phase and other conditions on every status write.

use cogo_api::{
    AgentTaskStatus, TaskPhase,
    conditions::{self, ACCEPTED, SUCCEEDED, status as cs},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::accept::reason;

/// Sets kstatus' `Reconciling` and `Stalled` conditions of a task's status `s` from its phase
/// and conditions, so kstatus (Flux, `kpt live`) reads a task that has not ended as
/// InProgress, a failed one (or one whose input can never be accepted) as Failed, and a
/// succeeded or cancelled one as Current. Every status write of a task passes through it.
pub fn settle_standing(s: &mut AgentTaskStatus, now: &Time) {
    use cogo_api::conditions::Standing;
    let find = |t: &str| {
        conditions::find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let standing = match s.phase.unwrap_or(TaskPhase::Pending) {
        TaskPhase::Succeeded | TaskPhase::Cancelled => Standing::Done,
        TaskPhase::Failed => {
            let (_, r, m) = find(SUCCEEDED).unwrap_or_default();
            Standing::Failed(r, m)
        }
        TaskPhase::Pending | TaskPhase::Running => match find(ACCEPTED) {
            Some((st, r, m))
                if st == cs::FALSE && (r == reason::INPUT_TOO_LARGE || r == reason::INPUT_TOO_DEEP) =>
            {
                Standing::Failed(r, m)
            }
            Some((st, r, m)) if st == cs::FALSE => Standing::InProgress(r, m),
            _ => match find(SUCCEEDED) {
                Some((_, r, m)) => Standing::InProgress(r, m),
                None => Standing::InProgress(reason::PENDING.into(), "the task has not run yet".into()),
            },
        },
    };
    conditions::set_standing(&mut s.conditions, standing, s.observed_generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn a_task_reads_in_progress_until_it_ends_and_failed_when_it_failed() {
        use cogo_api::conditions::{RECONCILING, STALLED, condition};
        let standing =
            |phase: TaskPhase, conds: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>| {
                let mut s = AgentTaskStatus {
                    phase: Some(phase),
                    conditions: conds,
                    ..Default::default()
                };
                settle_standing(&mut s, &at(9));
                (
                    conditions::find(&s.conditions, RECONCILING).map(|c| c.reason.clone()),
                    conditions::find(&s.conditions, STALLED).map(|c| c.reason.clone()),
                )
            };
        let c = |t: &str, st: &str, r: &str| condition(t, st, r, "m", Some(1), &at(1));
        assert_eq!(
            standing(
                TaskPhase::Pending,
                vec![c(ACCEPTED, "True", "Queued"), c(SUCCEEDED, "Unknown", "Queued")]
            ),
            (Some("Queued".into()), None)
        );
        assert_eq!(
            standing(
                TaskPhase::Pending,
                vec![c(ACCEPTED, "False", reason::AGENT_NOT_FOUND)]
            ),
            (Some("AgentNotFound".into()), None),
            "waits for its agent"
        );
        assert_eq!(
            standing(
                TaskPhase::Pending,
                vec![c(ACCEPTED, "False", reason::INPUT_TOO_DEEP)]
            ),
            (None, Some("InputTooDeep".into())),
            "never accepted as it is"
        );
        assert_eq!(
            standing(TaskPhase::Running, vec![c(SUCCEEDED, "Unknown", "Running")]),
            (Some("Running".into()), None)
        );
        assert_eq!(
            standing(
                TaskPhase::Failed,
                vec![
                    c(RECONCILING, "True", "Running"),
                    c(SUCCEEDED, "False", "HandlerFailed")
                ]
            ),
            (None, Some("HandlerFailed".into()))
        );
        assert_eq!(
            standing(TaskPhase::Succeeded, vec![c(RECONCILING, "True", "Running")]),
            (None, None)
        );
        assert_eq!(standing(TaskPhase::Cancelled, vec![]), (None, None));
    }
}
