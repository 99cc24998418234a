//! Leader election against a scripted API server: take a missing or expired lease, renew our
//! own, and leave a fresh lease of another replica alone.

use cogo_operator::leader::{LeaderElection, Timing};
use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::{Value, json};

mod support;
use support::{Reply, run, step};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/cogo-system/leases/cogo-operator";

fn lease(holder: &str, renewed_secs_ago: i64, transitions: i32) -> Value {
    lease_at(holder, renewed_secs_ago, transitions, "42", 15)
}

/// A lease record of `holder` as of resourceVersion `rv`, lasting `duration` seconds.
fn lease_at(holder: &str, renewed_secs_ago: i64, transitions: i32, rv: &str, duration: i32) -> Value {
    let renew = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago);
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "cogo-operator", "namespace": "cogo-system", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": renew.to_string(),
                 "acquireTime": renew.to_string(), "leaseTransitions": transitions}
    })
}

async fn attempt(steps: Vec<support::Step>) -> (bool, Vec<support::Seen>) {
    let (won, seen) = attempts(steps, 1, std::time::Duration::ZERO).await;
    (won[0], seen)
}

/// `n` tries of one candidate, `apart` from each other.
async fn attempts(
    steps: Vec<support::Step>,
    n: usize,
    apart: std::time::Duration,
) -> (Vec<bool>, Vec<support::Seen>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = run(steps, |ctx| async move {
        let api: Api<Lease> = Api::namespaced(ctx.client.clone(), "cogo-system");
        let e = LeaderElection::new(api, "cogo-operator", "me", Timing::default());
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(apart).await;
            }
            tx.send(e.try_acquire_or_renew().await?).unwrap();
        }
        Ok(())
    })
    .await;
    (rx.try_iter().collect(), seen)
}

#[tokio::test]
async fn creates_a_missing_lease() {
    let created = lease("me", 0, 0);
    let (won, seen) = attempt(vec![
        step(Method::GET, PATH, Reply::NotFound),
        step(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/cogo-system/leases",
            Reply::Json(created),
        ),
    ])
    .await;
    assert!(won);
    assert_eq!(seen[1].body["spec"]["holderIdentity"], "me");
    assert_eq!(seen[1].body["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn leaves_a_fresh_lease_of_another_replica_alone() {
    let (won, seen) = attempt(vec![step(Method::GET, PATH, Reply::Json(lease("other", 2, 3)))]).await;
    assert!(!won);
    assert_eq!(seen.len(), 1, "no write while another replica leads");
}

/// A lease that stays the same for its whole duration, on this candidate's clock, ran out.
#[tokio::test]
async fn takes_over_an_expired_lease_and_counts_the_transition() {
    let stale = lease_at("other", 60, 3, "42", 1);
    let (won, seen) = attempts(
        vec![
            step(Method::GET, PATH, Reply::Json(stale.clone())),
            step(Method::GET, PATH, Reply::Json(stale)),
            step(Method::PUT, PATH, Reply::Json(lease("me", 0, 4))),
        ],
        2,
        std::time::Duration::from_millis(1100),
    )
    .await;
    assert_eq!(won, [false, true], "first seen, then unchanged for its duration");
    let spec = &seen[2].body["spec"];
    assert_eq!(spec["holderIdentity"], "me");
    assert_eq!(spec["leaseTransitions"], 4);
    assert_eq!(
        seen[2].body["metadata"]["resourceVersion"], "42",
        "optimistic concurrency on takeover"
    );
}

#[tokio::test]
async fn renews_its_own_lease_without_a_transition() {
    let (won, seen) = attempt(vec![
        step(Method::GET, PATH, Reply::Json(lease("me", 5, 7))),
        step(Method::PUT, PATH, Reply::Json(lease("me", 0, 7))),
    ])
    .await;
    assert!(won);
    assert_eq!(seen[1].body["spec"]["leaseTransitions"], 7);
}

/// The holder's clock runs a minute behind, so its `renewTime` looks old; it keeps renewing
/// (the record changes), so the lease is never taken from it.
#[tokio::test]
async fn a_holder_with_a_slow_clock_keeps_its_lease() {
    let (won, seen) = attempts(
        vec![
            step(Method::GET, PATH, Reply::Json(lease_at("other", 60, 1, "42", 1))),
            step(Method::GET, PATH, Reply::Json(lease_at("other", 60, 1, "43", 1))),
            step(Method::GET, PATH, Reply::Json(lease_at("other", 60, 1, "44", 1))),
        ],
        3,
        std::time::Duration::from_millis(700),
    )
    .await;
    assert_eq!(won, [false, false, false]);
    assert_eq!(seen.len(), 3, "no takeover was even tried");
}

#[tokio::test]
async fn losing_a_race_is_not_an_error() {
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"});
    let stale = lease_at("other", 60, 1, "42", 1);
    let (won, _) = attempts(
        vec![
            step(Method::GET, PATH, Reply::Json(stale.clone())),
            step(Method::GET, PATH, Reply::Json(stale)),
            step(Method::PUT, PATH, Reply::Status(409, conflict)),
        ],
        2,
        std::time::Duration::from_millis(1100),
    )
    .await;
    assert_eq!(won, [false, false]);
}

/// A candidate is sure it leads only just after it took or renewed the lease (within the
/// lease duration less the renew deadline), so it never clears another replica's leader label
/// on old news.
#[tokio::test]
async fn a_candidate_is_sure_it_leads_only_after_a_fresh_renewal() {
    let (tx, rx) = std::sync::mpsc::channel();
    run(
        vec![
            step(Method::GET, PATH, Reply::Json(lease("other", 0, 1))),
            step(Method::GET, PATH, Reply::Json(lease("me", 1, 7))),
            step(Method::PUT, PATH, Reply::Json(lease("me", 0, 7))),
        ],
        |ctx| async move {
            let api: Api<Lease> = Api::namespaced(ctx.client.clone(), "cogo-system");
            let timing = Timing {
                lease_duration: std::time::Duration::from_millis(1500),
                renew_deadline: std::time::Duration::from_millis(1000),
                retry_period: std::time::Duration::from_millis(100),
            };
            let e = LeaderElection::new(api, "cogo-operator", "me", timing);
            tx.send(("before", e.surely_leads())).unwrap();
            let held = e.try_acquire_or_renew().await?;
            tx.send(("another holds it", held || e.surely_leads())).unwrap();
            let held = e.try_acquire_or_renew().await?;
            tx.send(("renewed", held && e.surely_leads())).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            tx.send(("half a second later", e.surely_leads())).unwrap();
            Ok(())
        },
    )
    .await;
    let told: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        told,
        [
            ("before", false),
            ("another holds it", false),
            ("renewed", true),
            ("half a second later", false),
        ]
    );
}
