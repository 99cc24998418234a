//! Pure status computation for agent and worker pools: from the Deployment the operator
//! applied (or found) and the validation verdict to conditions and replica counts.
//! `lastTransitionTime` is kept unless a condition flips, so an unchanged world computes an
//! identical status and the controller writes nothing.

use cogo_api::conditions::{self, DEGRADED, PROGRESSING, READY, reason, status as cs};
use k8s_openapi::{
    api::apps::v1::Deployment,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};

use crate::validate::Invalid;

/// The parts of status an agent and a worker share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolStatus {
    /// Generation the status describes.
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded.
    pub conditions: Vec<Condition>,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods that are ready.
    pub ready_replicas: i32,
}

/// What a pool's status is computed from.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The custom resource's `metadata.generation`.
    pub generation: Option<i64>,
    /// Desired pods (`spec.replicas`).
    pub desired: i32,
    /// The pool's Deployment as last seen, if it exists.
    pub deployment: Option<&'a Deployment>,
    /// Why the spec cannot be carried out, if it cannot.
    pub invalid: Option<&'a Invalid>,
    /// The conditions currently in status.
    pub previous: &'a [Condition],
    /// The time a flipped condition gets.
    pub now: &'a Time,
}

fn deployment_condition<'a>(d: &'a Deployment, type_: &str) -> Option<&'a k8s_openapi::api::apps::v1::DeploymentCondition> {
    d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Computes the pool's status.
pub fn compute(o: Observed) -> PoolStatus {
    let gen_ = o.generation;
    let mut conds = o.previous.to_vec();
    let set = |conds: &mut Vec<Condition>, t: &str, s: &str, r: &str, m: String| {
        conditions::set_condition(conds, conditions::condition(t, s, r, m, gen_, o.now));
    };

    let st = o.deployment.and_then(|d| d.status.clone()).unwrap_or_default();
    let (replicas, ready) = (st.replicas.unwrap_or(0), st.ready_replicas.unwrap_or(0));
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);

    if let Some(invalid) = o.invalid {
        set(&mut conds, READY, cs::FALSE, invalid.reason, invalid.message.clone());
        set(&mut conds, PROGRESSING, cs::FALSE, invalid.reason, "waiting for the spec or a referenced object to change".into());
        set(&mut conds, DEGRADED, cs::TRUE, invalid.reason, invalid.message.clone());
        return PoolStatus { observed_generation: gen_, conditions: conds, replicas, ready_replicas: ready };
    }

    let Some(d) = o.deployment else {
        let m = "the Deployment has not been created yet".to_string();
        set(&mut conds, READY, cs::FALSE, reason::DEPLOYMENT_PENDING, m.clone());
        set(&mut conds, PROGRESSING, cs::TRUE, reason::DEPLOYMENT_PENDING, m);
        set(&mut conds, DEGRADED, cs::FALSE, reason::AS_EXPECTED, String::new());
        return PoolStatus { observed_generation: gen_, conditions: conds, ..Default::default() };
    };

    // Degraded: the Deployment cannot make progress.
    let deadline = deployment_condition(d, "Progressing")
        .filter(|c| c.status == cs::FALSE && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let replica_failure = deployment_condition(d, "ReplicaFailure").filter(|c| c.status == cs::TRUE);
    match (deadline, replica_failure) {
        (_, Some(c)) => set(&mut conds, DEGRADED, cs::TRUE, reason::REPLICA_FAILURE, c.message.clone().unwrap_or_default()),
        (Some(c), None) => set(
            &mut conds,
            DEGRADED,
            cs::TRUE,
            reason::PROGRESS_DEADLINE_EXCEEDED,
            c.message.clone().unwrap_or_default(),
        ),
        (None, None) => set(&mut conds, DEGRADED, cs::FALSE, reason::AS_EXPECTED, String::new()),
    }

    let desired = o.desired;
    let observed = d.metadata.generation.is_some() && d.metadata.generation == st.observed_generation;
    let rolled_out = observed && updated >= desired && replicas == desired && available >= desired;
    let counts = format!("{ready}/{desired} pods ready, {updated} up to date");

    if rolled_out && desired == 0 {
        set(&mut conds, READY, cs::TRUE, reason::SCALED_TO_ZERO, "scaled to zero pods".into());
    } else if rolled_out && ready >= desired {
        set(&mut conds, READY, cs::TRUE, reason::AVAILABLE, counts.clone());
    } else if !observed || updated < desired || replicas > desired {
        set(&mut conds, READY, cs::FALSE, reason::ROLLING_OUT, counts.clone());
    } else {
        set(&mut conds, READY, cs::FALSE, reason::PODS_NOT_READY, counts.clone());
    }
    if rolled_out {
        set(&mut conds, PROGRESSING, cs::FALSE, reason::ROLLOUT_COMPLETE, counts);
    } else {
        set(&mut conds, PROGRESSING, cs::TRUE, reason::ROLLING_OUT, counts);
    }

    PoolStatus { observed_generation: gen_, conditions: conds, replicas, ready_replicas: ready }
}
