//! Leader election with a coordination.k8s.io Lease. Only the leader runs the controllers;
//! a standby takes over once the leader stops renewing for `lease_duration`. A leader that
//! cannot renew within `renew_deadline` steps down (the process exits and restarts as a
//! candidate), so two replicas never write at the same time for long.
//!
//! Whether a lease ran out is judged, as client-go does, by the candidate's own clock: from
//! when it first saw the lease record as it is now (its resourceVersion changes with every
//! renewal), never from the holder's `renewTime`, so clocks that disagree cannot make two
//! leaders.

use std::{sync::Mutex, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, api::PostParams};
use tracing::{debug, info, warn};

use crate::{Error, Result};

/// Timing of the election.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate in the election.
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The lease record last seen (its resourceVersion) and when, on this candidate's clock.
    observed: Mutex<Option<(String, tokio::time::Instant)>>,
    /// When this candidate last took or renewed the lease, on its clock.
    renewed: Mutex<Option<tokio::time::Instant>>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElection {
    /// A candidate for the Lease `name` in the Api's namespace.
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: Timing,
    ) -> Self {
        LeaderElection {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: Mutex::new(None),
            renewed: Mutex::new(None),
        }
    }

    /// Whether this candidate surely holds the lease now: it renewed it less than
    /// `lease_duration - renew_deadline` ago, so no other replica can have taken it yet even
    /// if this one is about to find out it lost it.
    pub fn surely_leads(&self) -> bool {
        let margin = self
            .timing
            .lease_duration
            .saturating_sub(self.timing.renew_deadline);
        self.renewed
            .lock()
            .ok()
            .and_then(|r| *r)
            .is_some_and(|at| at.elapsed() < margin)
    }

    fn note_renewal(&self, at: tokio::time::Instant) {
        if let Ok(mut r) = self.renewed.lock() {
            *r = Some(at);
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, acquire: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: Some(acquire),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes or renews the lease once. True when this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let asked = tokio::time::Instant::now();
        let held = self.acquire_or_renew_once().await?;
        if held {
            // Counted from when it asked: the API server may have written it any time since.
            self.note_renewal(asked);
        }
        Ok(held)
    }

    async fn acquire_or_renew_once(&self) -> Result<bool> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now(), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            LeaseSpec {
                renew_time: Some(now()),
                ..spec
            }
        } else {
            let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(1) as u64);
            let record = lease.metadata.resource_version.clone().unwrap_or_default();
            let expired = self.unchanged_for(record) >= duration;
            if !holder.is_empty() && !expired {
                debug!(%holder, "lease is held");
                return Ok(false);
            }
            self.spec(now(), transitions + 1)
        };
        lease.spec = Some(next);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// How long the lease record has been `record`, on this candidate's clock (zero when it
    /// has just changed, or is seen for the first time).
    fn unchanged_for(&self, record: String) -> Duration {
        let now = tokio::time::Instant::now();
        let Ok(mut seen) = self.observed.lock() else {
            return Duration::ZERO;
        };
        match &*seen {
            Some((r, at)) if *r == record => now.saturating_duration_since(*at),
            _ => {
                *seen = Some((record, now));
                Duration::ZERO
            }
        }
    }

    /// Waits until this candidate holds the lease.
    pub async fn acquire(&self) {
        let mut waiting_logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) if !waiting_logged => {
                    info!(lease = %self.name, "another replica leads; waiting to take over");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot reach the leader lease; retrying"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the lease until renewal fails for longer than the renew deadline or another
    /// replica took it; returns the reason leadership was lost. No attempt outlasts the renew
    /// deadline, so the loss is known within it, before a standby may take over.
    pub async fn hold(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            let left = self
                .timing
                .renew_deadline
                .saturating_sub(last_renewal.elapsed())
                .max(Duration::from_millis(100));
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renewal = tokio::time::Instant::now(),
                Ok(Ok(false)) => return Error::Leader("another replica took the lease".into()),
                Ok(Err(e)) => warn!(error = %e, "lease renewal failed"),
                Err(_) => warn!("lease renewal timed out"),
            }
            if last_renewal.elapsed() > self.timing.renew_deadline {
                return Error::Leader(format!(
                    "could not renew the lease for {:?}",
                    self.timing.renew_deadline
                ));
            }
        }
    }

    /// Gives the lease up so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.name, "released the leader lease"),
            Err(e) => warn!(error = %e, "could not release the leader lease"),
        }
    }
}

/// The label the leading replica sets on its own pod, which the broker Service selects.
pub const LEADER_LABEL: &str = "cogo.xyz/leader";

/// Sets (`leads`) or clears the leader label on the pod `name` of `api`'s namespace.
pub async fn label_pod(api: &Api<k8s_openapi::api::core::v1::Pod>, name: &str, leads: bool) -> Result<()> {
    let value = if leads {
        serde_json::json!("true")
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Clears the leader label from every pod of `api`'s namespace that carries it, is one of
/// this release's replicas (same `app.kubernetes.io/name` and `app.kubernetes.io/instance` as
/// `own`) and is not `own`: a replica that lost the lease and could not clear its own label
/// (it hung, or the API server was away as it stopped) must not keep receiving the broker's
/// traffic. Sets `own`'s label again should anyone have removed it. Returns the pods it
/// cleared. Call it only while this replica surely leads.
pub async fn clear_stale_labels(
    api: &Api<k8s_openapi::api::core::v1::Pod>,
    own: &str,
) -> Result<Vec<String>> {
    let me = api.get_metadata(own).await?;
    let labels = me.metadata.labels.unwrap_or_default();
    if labels.get(LEADER_LABEL).map(String::as_str) != Some("true") {
        label_pod(api, own, true).await?;
    }
    let mut selector = format!("{LEADER_LABEL}=true");
    for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance"] {
        if let Some(value) = labels.get(key) {
            selector.push_str(&format!(",{key}={value}"));
        }
    }
    let labelled = api
        .list_metadata(&kube::api::ListParams::default().labels(&selector))
        .await?;
    let mut cleared = Vec::new();
    for pod in labelled.items {
        let Some(name) = pod.metadata.name else { continue };
        if name != own {
            label_pod(api, &name, false).await?;
            cleared.push(name);
        }
    }
    Ok(cleared)
}
