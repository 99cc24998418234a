//! Pure status computation for agent and worker pools: from the Deployment the operator
//! applied (or found) and the validation verdict to conditions and replica counts.
//! `lastTransitionTime` is kept unless a condition flips, so an unchanged world computes an
//! identical status and the controller writes nothing.

use cogo_api::conditions::{self, DEGRADED, PROGRESSING, READY, Standing, reason, status as cs};
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

fn deployment_condition<'a>(
    d: &'a Deployment,
    type_: &str,
) -> Option<&'a k8s_openapi::api::apps::v1::DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Computes the pool's status, with kstatus' `Reconciling` (while it rolls out or waits for
/// its Deployment) and `Stalled` (while it is Degraded: it cannot become ready without a
/// change) conditions.
pub fn compute(o: Observed) -> PoolStatus {
    let mut s = compute_conditions(o);
    let find = |t: &str| {
        conditions::find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let standing = match (find(DEGRADED), find(READY), find(PROGRESSING)) {
        (Some((d, r, m)), _, _) if d == cs::TRUE => Standing::Failed(r, m),
        (_, Some((ready, r, m)), _) if ready != cs::TRUE => Standing::InProgress(r, m),
        (_, _, Some((p, r, m))) if p == cs::TRUE && r != reason::ROLLOUT_COMPLETE => {
            Standing::InProgress(r, m)
        }
        _ => Standing::Done,
    };
    conditions::set_standing(&mut s.conditions, standing, o.generation, o.now);
    s
}

fn compute_conditions(o: Observed) -> PoolStatus {
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
        set(
            &mut conds,
            READY,
            cs::FALSE,
            invalid.reason,
            invalid.message.clone(),
        );
        set(
            &mut conds,
            PROGRESSING,
            cs::FALSE,
            invalid.reason,
            "waiting for the spec or a referenced object to change".into(),
        );
        set(
            &mut conds,
            DEGRADED,
            cs::TRUE,
            invalid.reason,
            invalid.message.clone(),
        );
        return PoolStatus {
            observed_generation: gen_,
            conditions: conds,
            replicas,
            ready_replicas: ready,
        };
    }

    let Some(d) = o.deployment else {
        let m = "the Deployment has not been created yet".to_string();
        set(
            &mut conds,
            READY,
            cs::FALSE,
            reason::DEPLOYMENT_PENDING,
            m.clone(),
        );
        set(&mut conds, PROGRESSING, cs::TRUE, reason::DEPLOYMENT_PENDING, m);
        set(
            &mut conds,
            DEGRADED,
            cs::FALSE,
            reason::AS_EXPECTED,
            String::new(),
        );
        return PoolStatus {
            observed_generation: gen_,
            conditions: conds,
            ..Default::default()
        };
    };

    // Degraded: the Deployment cannot make progress.
    let deadline = deployment_condition(d, "Progressing")
        .filter(|c| c.status == cs::FALSE && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let replica_failure = deployment_condition(d, "ReplicaFailure").filter(|c| c.status == cs::TRUE);
    match (deadline, replica_failure) {
        (_, Some(c)) => set(
            &mut conds,
            DEGRADED,
            cs::TRUE,
            reason::REPLICA_FAILURE,
            c.message.clone().unwrap_or_default(),
        ),
        (Some(c), None) => set(
            &mut conds,
            DEGRADED,
            cs::TRUE,
            reason::PROGRESS_DEADLINE_EXCEEDED,
            c.message.clone().unwrap_or_default(),
        ),
        (None, None) => set(
            &mut conds,
            DEGRADED,
            cs::FALSE,
            reason::AS_EXPECTED,
            String::new(),
        ),
    }

    let desired = o.desired;
    let observed = d.metadata.generation.is_some() && d.metadata.generation == st.observed_generation;
    let rolled_out = observed && updated >= desired && replicas == desired && available >= desired;
    let counts = format!("{ready}/{desired} pods ready, {updated} up to date");

    if rolled_out && desired == 0 {
        set(
            &mut conds,
            READY,
            cs::TRUE,
            reason::SCALED_TO_ZERO,
            "scaled to zero pods".into(),
        );
    } else if rolled_out && ready >= desired {
        set(&mut conds, READY, cs::TRUE, reason::AVAILABLE, counts.clone());
    } else if !observed || updated < desired || replicas > desired {
        set(&mut conds, READY, cs::FALSE, reason::ROLLING_OUT, counts.clone());
    } else {
        set(
            &mut conds,
            READY,
            cs::FALSE,
            reason::PODS_NOT_READY,
            counts.clone(),
        );
    }
    if rolled_out {
        set(
            &mut conds,
            PROGRESSING,
            cs::FALSE,
            reason::ROLLOUT_COMPLETE,
            counts,
        );
    } else {
        set(&mut conds, PROGRESSING, cs::TRUE, reason::ROLLING_OUT, counts);
    }

    PoolStatus {
        observed_generation: gen_,
        conditions: conds,
        replicas,
        ready_replicas: ready,
    }
}

/// Sets `StoreShared` on an Indexing or GraphRAG agent's `conds`: whether every pod sees the
/// same indexes and graphs. Other roles keep none.
pub fn set_store_shared(
    conds: &mut Vec<Condition>,
    spec: &cogo_api::CogoAgentSpec,
    generation: Option<i64>,
    now: &Time,
) {
    use cogo_api::AgentRole;
    if !matches!(spec.role, AgentRole::Indexing | AgentRole::GraphRag) {
        return;
    }
    let most = spec
        .autoscaling
        .as_ref()
        .map_or(spec.replicas, |a| a.max_replicas.max(spec.replicas));
    let database = spec.storage.as_ref().is_some_and(|s| s.database_secret.is_some());
    let (status, why, message) = if database {
        (
            cs::TRUE,
            reason::DATABASE,
            "every pod keeps its indexes and graphs in the database".to_string(),
        )
    } else if most <= 1 {
        (
            cs::TRUE,
            reason::SINGLE_POD,
            "one pod keeps the indexes and graphs in its local store".to_string(),
        )
    } else {
        (
            cs::FALSE,
            reason::LOCAL_STORE,
            format!(
                "up to {most} pods each keep their own indexes and graphs in a local store: a task sees only what its own pod built; set spec.storage.databaseSecret to share them"
            ),
        )
    };
    conditions::set_condition(
        conds,
        conditions::condition(conditions::STORE_SHARED, status, why, message, generation, now),
    );
}

/// The model an agent's pods use, read from its Deployment's pod template once the rollout is
/// complete (every pod updated); until then, `previous`.
pub fn model_in_use(
    deployment: Option<&Deployment>,
    previous: Option<&cogo_api::agent::ModelInUse>,
) -> Option<cogo_api::agent::ModelInUse> {
    let Some(d) = deployment else {
        return previous.cloned();
    };
    let st = d.status.clone().unwrap_or_default();
    let rolled_out = st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) == st.replicas.unwrap_or(0)
        && st.replicas.unwrap_or(0) == d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if !rolled_out {
        return previous.cloned();
    }
    let env = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let var = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    let provider = match var("COGO_MODEL_PROVIDER")?.as_str() {
        "Gemini" => cogo_api::agent::ModelProvider::Gemini,
        "OpenAICompatible" => cogo_api::agent::ModelProvider::OpenAICompatible,
        _ => return None,
    };
    Some(cogo_api::agent::ModelInUse {
        provider,
        name: var("COGO_MODEL_NAME")?,
    })
}

#[cfg(test)]
mod store_tests {
    use super::*;

    fn shared(yaml: &str) -> (String, String) {
        let spec = crate::testing::agent("a", yaml).spec;
        let mut conds = vec![];
        set_store_shared(&mut conds, &spec, Some(1), &Time(jiff::Timestamp::UNIX_EPOCH));
        conditions::find(&conds, conditions::STORE_SHARED)
            .map(|c| (c.status.clone(), c.reason.clone()))
            .unwrap_or_default()
    }

    #[test]
    fn store_shared_says_whether_pods_see_the_same_indexes() {
        assert_eq!(
            shared("role: Indexing\nreplicas: 3"),
            ("False".into(), "LocalStore".into())
        );
        assert_eq!(shared("role: GraphRAG"), ("True".into(), "SinglePod".into()));
        assert_eq!(
            shared("role: GraphRAG\nreplicas: 1\nautoscaling: {minReplicas: 1, maxReplicas: 4}"),
            ("False".into(), "LocalStore".into()),
            "autoscaling may add pods"
        );
        assert_eq!(
            shared("role: Indexing\nreplicas: 3\nstorage: {databaseSecret: db}"),
            ("True".into(), "Database".into())
        );
        assert_eq!(
            shared("role: Research\nreplicas: 3"),
            (String::new(), String::new()),
            "other roles have none"
        );
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn at(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    fn dep(generation: i64, observed: i64, replicas: i32, ready: i32, updated: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: None,
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                available_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    fn get<'a>(s: &'a PoolStatus, t: &str) -> (&'a str, &'a str) {
        let c = conditions::find(&s.conditions, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn observe(
        desired: i32,
        d: Option<&Deployment>,
        invalid: Option<&Invalid>,
        prev: &[Condition],
        now: &Time,
    ) -> PoolStatus {
        compute(Observed {
            generation: Some(7),
            desired,
            deployment: d,
            invalid,
            previous: prev,
            now,
        })
    }

    #[test]
    fn kstatus_reads_rolling_out_as_in_progress_and_degraded_as_failed() {
        let now = at(10);
        let standing = |s: &PoolStatus| {
            let r = conditions::find(&s.conditions, conditions::RECONCILING).map(|c| c.reason.clone());
            let f = conditions::find(&s.conditions, conditions::STALLED).map(|c| c.reason.clone());
            (r, f)
        };
        let s = observe(1, None, None, &[], &now);
        assert_eq!(standing(&s), (Some("DeploymentPending".into()), None));
        let s = observe(2, Some(&dep(1, 1, 2, 1, 2)), None, &s.conditions, &now);
        assert_eq!(standing(&s), (Some("PodsNotReady".into()), None));
        let ready = observe(2, Some(&dep(1, 1, 2, 2, 2)), None, &s.conditions, &now);
        assert_eq!(standing(&ready), (None, None), "rolled out and ready: Current");
        let mut stuck = dep(2, 2, 2, 1, 1);
        stuck.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet has timed out progressing".into()),
            ..Default::default()
        }]);
        let s = observe(2, Some(&stuck), None, &ready.conditions, &now);
        assert_eq!(standing(&s), (None, Some("ProgressDeadlineExceeded".into())));
        let invalid = Invalid {
            reason: reason::MODEL_SECRET_NOT_FOUND,
            message: "no Secret".into(),
        };
        let s = observe(2, None, Some(&invalid), &s.conditions, &now);
        assert_eq!(standing(&s), (None, Some("ModelSecretNotFound".into())));
    }

    #[test]
    fn table() {
        let invalid = Invalid {
            reason: reason::MODEL_SECRET_NOT_FOUND,
            message: "Secret \"k\" does not exist".into(),
        };
        type Case<'a> = (
            &'a str,
            i32,
            Option<Deployment>,
            Option<&'a Invalid>,
            [(&'a str, &'a str); 3],
        );
        let cases: Vec<Case> = vec![
            (
                "no deployment yet",
                1,
                None,
                None,
                [
                    ("False", "DeploymentPending"),
                    ("True", "DeploymentPending"),
                    ("False", "AsExpected"),
                ],
            ),
            (
                "all ready",
                2,
                Some(dep(1, 1, 2, 2, 2)),
                None,
                [
                    ("True", "Available"),
                    ("False", "RolloutComplete"),
                    ("False", "AsExpected"),
                ],
            ),
            (
                "pods starting",
                2,
                Some(dep(1, 1, 2, 1, 2)),
                None,
                [
                    ("False", "PodsNotReady"),
                    ("True", "RollingOut"),
                    ("False", "AsExpected"),
                ],
            ),
            (
                "spec not yet observed",
                2,
                Some(dep(2, 1, 2, 2, 2)),
                None,
                [
                    ("False", "RollingOut"),
                    ("True", "RollingOut"),
                    ("False", "AsExpected"),
                ],
            ),
            (
                "old pods still there",
                2,
                Some(dep(2, 2, 3, 3, 2)),
                None,
                [
                    ("False", "RollingOut"),
                    ("True", "RollingOut"),
                    ("False", "AsExpected"),
                ],
            ),
            (
                "scaled to zero",
                0,
                Some(dep(1, 1, 0, 0, 0)),
                None,
                [
                    ("True", "ScaledToZero"),
                    ("False", "RolloutComplete"),
                    ("False", "AsExpected"),
                ],
            ),
            (
                "invalid spec",
                1,
                Some(dep(1, 1, 1, 1, 1)),
                Some(&invalid),
                [
                    ("False", "ModelSecretNotFound"),
                    ("False", "ModelSecretNotFound"),
                    ("True", "ModelSecretNotFound"),
                ],
            ),
        ];
        for (what, desired, d, inv, [ready, progressing, degraded]) in cases {
            let s = observe(desired, d.as_ref(), inv, &[], &at(100));
            assert_eq!(get(&s, READY), ready, "{what}: Ready");
            assert_eq!(get(&s, PROGRESSING), progressing, "{what}: Progressing");
            assert_eq!(get(&s, DEGRADED), degraded, "{what}: Degraded");
            assert_eq!(s.observed_generation, Some(7), "{what}");
        }
    }

    #[test]
    fn deployment_failures_degrade() {
        let mut d = dep(1, 1, 2, 1, 2);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"x\" has timed out progressing.".into()),
            ..Default::default()
        }]);
        let s = observe(2, Some(&d), None, &[], &at(1));
        assert_eq!(get(&s, DEGRADED), ("True", "ProgressDeadlineExceeded"));
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some("exceeded quota".into()),
            ..Default::default()
        }]);
        let s = observe(2, Some(&d), None, &[], &at(1));
        assert_eq!(get(&s, DEGRADED), ("True", "ReplicaFailure"));
        assert_eq!(
            conditions::find(&s.conditions, DEGRADED).unwrap().message,
            "exceeded quota"
        );
    }

    #[test]
    fn same_world_computes_the_same_status_later() {
        let d = dep(1, 1, 1, 1, 1);
        let first = observe(1, Some(&d), None, &[], &at(100));
        let again = observe(1, Some(&d), None, &first.conditions, &at(500));
        assert_eq!(first, again, "nothing changed, so nothing to write");
        let lost_pod = dep(1, 1, 1, 0, 1);
        let after = observe(1, Some(&lost_pod), None, &again.conditions, &at(600));
        let ready = conditions::find(&after.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("False", at(600))
        );
        let degraded = conditions::find(&after.conditions, DEGRADED).unwrap();
        assert_eq!(degraded.last_transition_time, at(100), "Degraded did not flip");
    }

    #[test]
    fn the_model_in_use_changes_when_the_rollout_completes() {
        use cogo_api::agent::{ModelInUse, ModelProvider};
        let with_model = |name: &str, generation: i64, observed: i64, updated: i32| {
            let mut d = dep(generation, observed, 2, 2, updated);
            let spec = d.spec.get_or_insert_with(Default::default);
            spec.replicas = Some(2);
            spec.template.spec = Some(serde_json::from_value(serde_json::json!({"containers": [{
                "name": "agent",
                "env": [{"name": "COGO_MODEL_PROVIDER", "value": "Gemini"}, {"name": "COGO_MODEL_NAME", "value": name}],
            }]})).unwrap());
            d
        };
        let old = ModelInUse {
            provider: ModelProvider::Gemini,
            name: "gemini-2.5-flash-lite".into(),
        };
        // Rolling out: one pod of two updated, or the new generation not observed yet.
        assert_eq!(
            model_in_use(Some(&with_model("gemini-2.5-pro", 3, 3, 1)), Some(&old)),
            Some(old.clone())
        );
        assert_eq!(
            model_in_use(Some(&with_model("gemini-2.5-pro", 3, 2, 2)), Some(&old)),
            Some(old.clone())
        );
        let done = model_in_use(Some(&with_model("gemini-2.5-pro", 3, 3, 2)), Some(&old)).unwrap();
        assert_eq!(done.name, "gemini-2.5-pro");
        // No model configured any more, once rolled out.
        let mut plain = dep(2, 2, 2, 2, 2);
        plain.spec.get_or_insert_with(Default::default).replicas = Some(2);
        assert_eq!(model_in_use(Some(&plain), Some(&old)), None);
    }
}
