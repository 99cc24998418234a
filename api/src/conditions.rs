//! Condition types and reasons shared by the operator and clients, and the one function that
//! sets a condition while keeping `lastTransitionTime` stable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// All desired pods are ready and up to date (CogoAgent, CogoWorker).
pub const READY: &str = "Ready";
/// A rollout or scale is under way (CogoAgent, CogoWorker).
pub const PROGRESSING: &str = "Progressing";
/// The spec cannot be carried out, or pods keep failing (CogoAgent, CogoWorker).
pub const DEGRADED: &str = "Degraded";
/// The task's target exists and its input is valid (AgentTask).
pub const ACCEPTED: &str = "Accepted";
/// The task finished successfully; Unknown until it finishes (AgentTask).
pub const SUCCEEDED: &str = "Succeeded";

/// PascalCase reasons used in conditions and Events.
pub mod reason {
    /// Every desired pod is ready and runs the current spec.
    pub const AVAILABLE: &str = "Available";
    /// The resource is scaled to zero pods, as asked.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// Pods are starting or being replaced.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Fewer pods are ready than desired.
    pub const PODS_NOT_READY: &str = "PodsNotReady";
    /// The rollout finished.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Nothing is wrong.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The Deployment has not been created or observed yet.
    pub const DEPLOYMENT_PENDING: &str = "DeploymentPending";
    /// The Deployment's rollout exceeded its progress deadline.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// The Deployment cannot create pods (quota, admission ...).
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// A Secret the spec references does not exist.
    pub const MODEL_SECRET_NOT_FOUND: &str = "ModelSecretNotFound";
    /// An image pull Secret the spec references does not exist.
    pub const IMAGE_PULL_SECRET_NOT_FOUND: &str = "ImagePullSecretNotFound";
    /// The database Secret of `spec.storage` does not exist or lacks its `url`.
    pub const DATABASE_SECRET_NOT_FOUND: &str = "DatabaseSecretNotFound";
    /// Every pod keeps its store in the database (`StoreShared`).
    pub const DATABASE: &str = "Database";
    /// One pod, one local store: nothing to share (`StoreShared`).
    pub const SINGLE_POD: &str = "SinglePod";
    /// Several pods, each with its own local store (`StoreShared` False).
    pub const LOCAL_STORE: &str = "LocalStore";
    /// The Figma token Secret does not exist or lacks its key.
    pub const FIGMA_SECRET_NOT_FOUND: &str = "FigmaSecretNotFound";
    /// An MCP server's token Secret does not exist or lacks its key.
    pub const MCP_SECRET_NOT_FOUND: &str = "McpSecretNotFound";
    /// The worker's Executor agent does not exist, is not unique, or is not an Executor.
    pub const EXECUTOR_NOT_FOUND: &str = "ExecutorNotFound";
    /// An object the operator would create exists and belongs to someone else.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// A field holds a value only the operator can reject (for example a bad quantity).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// No image was given and the operator has no default image.
    pub const NO_IMAGE: &str = "NoImage";
}

/// Condition status values.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known yet.
    pub const UNKNOWN: &str = "Unknown";
}

/// Builds a condition with the given fields; `lastTransitionTime` is `now` until
/// [`set_condition`] keeps an older one.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: now.clone(),
    }
}

/// Puts `new` into `conditions`, replacing the condition of the same type. The old
/// `lastTransitionTime` is kept unless the status changes, so a condition's age says how long
/// it has held.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
    }
}

/// An Indexing or GraphRAG agent's condition: True when every pod sees the same indexes and
/// graphs (they are in the database, or there is one pod), False when several pods each keep
/// their own local store.
pub const STORE_SHARED: &str = "StoreShared";

/// kstatus' condition: True while the object is on its way to what its spec asks (a task
/// that has not ended, a pool rolling out). kstatus, Flux and `kpt live` read it as
/// InProgress.
pub const RECONCILING: &str = "Reconciling";
/// kstatus' condition: True when the object cannot get where its spec asks without a change
/// (a failed task, a pool that cannot become ready). Read as Failed.
pub const STALLED: &str = "Stalled";

/// Where an object stands, as kstatus reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Still working: `Reconciling` True, with this reason and message.
    InProgress(String, String),
    /// Cannot go on: `Stalled` True, with this reason and message.
    Failed(String, String),
    /// Done: neither condition.
    Done,
}

/// Sets kstatus' `Reconciling` and `Stalled` conditions for `standing` (and removes the one
/// that does not apply), keeping transition times as [`set_condition`] does.
pub fn set_standing(
    conditions: &mut Vec<Condition>,
    standing: Standing,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let (keep, (reason, message)) = match standing {
        Standing::InProgress(r, m) => (RECONCILING, (r, m)),
        Standing::Failed(r, m) => (STALLED, (r, m)),
        Standing::Done => {
            conditions.retain(|c| c.type_ != RECONCILING && c.type_ != STALLED);
            return;
        }
    };
    conditions.retain(|c| c.type_ == keep || (c.type_ != RECONCILING && c.type_ != STALLED));
    set_condition(
        conditions,
        condition(keep, status::TRUE, &reason, message, observed_generation, now),
    );
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let mut cs = vec![];
        set_condition(
            &mut cs,
            condition(
                READY,
                status::FALSE,
                reason::ROLLING_OUT,
                "starting",
                Some(1),
                &at(10),
            ),
        );
        set_condition(
            &mut cs,
            condition(
                READY,
                status::FALSE,
                reason::PODS_NOT_READY,
                "0/1 ready",
                Some(2),
                &at(20),
            ),
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(
            cs[0].last_transition_time,
            at(10),
            "same status keeps the old time"
        );
        assert_eq!(
            cs[0].reason,
            reason::PODS_NOT_READY,
            "reason and message still update"
        );
        assert_eq!(cs[0].observed_generation, Some(2));

        set_condition(
            &mut cs,
            condition(
                READY,
                status::TRUE,
                reason::AVAILABLE,
                "1/1 ready",
                Some(2),
                &at(30),
            ),
        );
        assert_eq!(cs[0].last_transition_time, at(30), "a flip takes the new time");
    }

    #[test]
    fn other_types_are_left_alone() {
        let mut cs = vec![];
        set_condition(
            &mut cs,
            condition(READY, status::TRUE, reason::AVAILABLE, "", None, &at(1)),
        );
        set_condition(
            &mut cs,
            condition(DEGRADED, status::FALSE, reason::AS_EXPECTED, "", None, &at(2)),
        );
        assert_eq!(cs.len(), 2);
        assert_eq!(find(&cs, READY).unwrap().last_transition_time, at(1));
        assert_eq!(find(&cs, DEGRADED).unwrap().status, status::FALSE);
        assert!(find(&cs, PROGRESSING).is_none());
    }
}
