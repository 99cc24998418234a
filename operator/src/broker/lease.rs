//! `POST .../agents/{agent}/lease`: the long poll that hands queued tasks to an agent's pods.

use super::*;
use cogo_api::AgentTaskStatus;

use crate::tasks::{UnwrittenLease, leases::LeaseState};

/// Lease writes one lease request makes at a time.
const LEASE_WRITES_IN_FLIGHT: usize = 16;

/// How often an unwritten lease whose attempt's outcome is being written checks whether that
/// write ended.
const OUTCOME_WAIT: Duration = Duration::from_millis(50);

impl Broker {
    /// Leases the task `name` to `pod` of `agent`, if it is still Pending. With a coalescing
    /// window the lease is held and handed out at once, and its status written only when the
    /// attempt's outcome has not come by the window's end (see [`Broker::write_lease_later`]).
    /// Otherwise it is written now: retried on write conflicts, and the task given back to the
    /// queue when the API server cannot be written.
    pub(super) async fn try_lease(
        self: &Arc<Self>,
        ns: &str,
        name: &str,
        mut seen: Option<Arc<AgentTask>>,
        agent: &str,
        pod: &str,
    ) -> Result<Option<LeasedTask>, ApiError> {
        let api: Api<AgentTask> = Api::namespaced(self.client.clone(), ns);
        let mut fresh = false;
        for _ in 0..3 {
            // The object the controller queued is the newest it knew: no read needed.
            let task = match seen.take() {
                Some(t) if !fresh => Some((*t).clone()),
                _ => self.read(&api, ns, name, fresh).await?,
            };
            let Some(task) = task else {
                return Ok(None);
            };
            let at = now();
            let Some(status) = transition::leased(&task, agent, pod, &at) else {
                if fresh {
                    return Ok(None);
                }
                fresh = true;
                continue;
            };
            if !self.coalesce_window.is_zero() {
                let lease = UnwrittenLease {
                    agent: agent.to_string(),
                    pod: pod.to_string(),
                    attempt: status.attempt,
                    at,
                };
                self.scheduler.lease_unwritten(ns, name, lease.clone());
                tokio::spawn(
                    self.clone()
                        .write_lease_later(ns.to_string(), name.to_string(), lease),
                );
                return Ok(Some(self.hand_out(&task, (agent, pod), &status)));
            }
            let rv = task.resource_version().unwrap_or_default();
            match write_task_status(&api, name, Some(&rv), &status).await {
                Ok(_) => return Ok(Some(self.hand_out(&task, (agent, pod), &status))),
                Err(e) if is_conflict(&e) => {
                    debug!(task = name, "lease conflicted; reading again");
                    fresh = true;
                }
                // Deleted since it was queued: nothing to lease, and nothing to queue again
                // (queued again, it would stand before every other task of the agent).
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    debug!(task = name, "deleted before its lease; dropped from the queue");
                    self.scheduler.dequeue(ns, name);
                    return Ok(None);
                }
                Err(e) => {
                    self.scheduler.requeue(&task, &self.agents);
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    /// Holds the lease `status` gives `pod` of `agent` on `task` and says what the pod is told.
    fn hand_out(&self, task: &AgentTask, (agent, pod): (&str, &str), status: &AgentTaskStatus) -> LeasedTask {
        let (ns, name) = (task.namespace().unwrap_or_default(), task.name_any());
        self.scheduler
            .hold(&ns, &name, agent, pod, status.attempt, std::time::Instant::now());
        crate::tasks::ended::started(&ns, &name, agent, pod, status);
        let traceparent = self
            .scheduler
            .attempts
            .start(task, (agent, pod), status.attempt, |ns, name| {
                self.scheduler.is_leased(ns, name)
            });
        let policy = Policy::of(task, self.agent(&ns, agent).as_deref());
        let deadline = policy.deadline(status).unwrap_or_else(|| {
            jiff::Timestamp::now() + jiff::SignedDuration::from_secs(policy.timeout_seconds)
        });
        LeasedTask {
            namespace: ns,
            name,
            uid: task.metadata.uid.clone().unwrap_or_default(),
            task_type: task.spec.task_type.clone(),
            input: task.spec.input.clone().unwrap_or(serde_json::Value::Null),
            attempt: status.attempt,
            heartbeat_seconds: self.heartbeat_seconds,
            deadline: deadline.to_string(),
            traceparent,
            item: None,
        }
    }

    /// What a pod is told of attempt `attempt` of item `i` of the indexed task `task`: the
    /// item's input, and its deadline, `left` from now.
    fn hand_out_item(&self, task: &AgentTask, (i, attempt): (u32, i32), left: Duration) -> LeasedTask {
        let ns = task.namespace().unwrap_or_default();
        let left = jiff::SignedDuration::try_from(left).unwrap_or(jiff::SignedDuration::ZERO);
        let deadline = jiff::Timestamp::now()
            .saturating_add(left)
            .unwrap_or(jiff::Timestamp::MAX);
        LeasedTask {
            namespace: ns,
            name: task.name_any(),
            uid: task.metadata.uid.clone().unwrap_or_default(),
            task_type: task.spec.task_type.clone(),
            input: crate::tasks::items::item_input(task, i),
            attempt,
            heartbeat_seconds: self.heartbeat_seconds,
            deadline: deadline.to_string(),
            // An item has no attempt span of its own here: the pod's spans of it join the trace
            // the task was created in, if any.
            traceparent: crate::tasks::attempts::creator_traceparent(task).map(str::to_string),
            item: Some(i),
        }
    }

    /// Writes the lease `lease` of `ns/name` once the coalescing window has passed, unless the
    /// attempt's outcome (or anything else) was written first; while the outcome is being
    /// written, it waits for that to end (checking every [`OUTCOME_WAIT`]). A conflict is read again and
    /// the lease written over the newer status while it still applies; an API server that
    /// cannot be written is tried again each second while the pod heartbeats. The lease ends
    /// here when the task was deleted, moved on without it, or its pod went quiet before it
    /// could be written (the task is then queued again: its status never left Pending).
    async fn write_lease_later(self: Arc<Self>, ns: String, name: String, lease: UnwrittenLease) {
        tokio::time::sleep(self.coalesce_window).await;
        let api: Api<AgentTask> = Api::namespaced(self.client.clone(), &ns);
        let mut fresh = false;
        loop {
            if self.scheduler.unwritten(&ns, &name).as_ref() != Some(&lease) {
                return;
            }
            // The attempt's outcome is on its way to status in the lease's place (a busy API
            // server can hold it past the window): let it land or fail first.
            if self.scheduler.is_writing_outcome(&ns, &name) {
                tokio::time::sleep(OUTCOME_WAIT).await;
                continue;
            }
            let task = match self.read_written(&api, &ns, &name, fresh).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    self.scheduler.release(&ns, &name);
                    return;
                }
                Err(e) => {
                    if self.try_again(&ns, &name, &lease, &e).await {
                        continue;
                    }
                    return;
                }
            };
            let Some(status) = transition::as_leased(&task, &lease) else {
                if !fresh {
                    fresh = true;
                    continue;
                }
                // The status moved on: to this attempt's lease or outcome (written by a
                // progress report or the completion), or past this attempt.
                let ours = transition::check_lease(&task, &lease.pod, lease.attempt).is_ok();
                self.scheduler.lease_written(&ns, &name, lease.attempt);
                if !ours {
                    // Its outcome was written (and the lease released then), or the task ended
                    // otherwise: a lease of this attempt still held is no pod's any more.
                    debug!(task = %name, "the task moved on before its lease was written");
                    self.scheduler.release_attempt(&ns, &name, lease.attempt);
                }
                return;
            };
            let rv = task.resource_version();
            match write_task_status(&api, &name, rv.as_deref(), &status).await {
                Ok(_) => {
                    self.scheduler.lease_written(&ns, &name, lease.attempt);
                    return;
                }
                Err(e) if is_conflict(&e) => fresh = true,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.scheduler.release(&ns, &name);
                    return;
                }
                Err(e) => {
                    if !self.try_again(&ns, &name, &lease, &e).await {
                        return;
                    }
                }
            }
        }
    }

    /// After the API server failed to read or write the unwritten `lease` of `ns/name` with
    /// `e`: waits a second and says to try again, unless the pod went quiet meanwhile (see
    /// [`Broker::lease_went_quiet`]).
    async fn try_again(&self, ns: &str, name: &str, lease: &UnwrittenLease, e: &kube::Error) -> bool {
        if self.lease_went_quiet(ns, name, lease) {
            return false;
        }
        debug!(task = %name, error = %e, "the lease could not be read or written; trying again");
        tokio::time::sleep(Duration::from_secs(1)).await;
        true
    }

    /// Whether the pod holding the unwritten `lease` of `ns/name` stopped heartbeating; if so
    /// the lease ends and the task, whose status still says Pending, is queued again.
    fn lease_went_quiet(&self, ns: &str, name: &str, lease: &UnwrittenLease) -> bool {
        let state = self
            .scheduler
            .lease_state(ns, name, lease.attempt, std::time::Instant::now());
        if state != LeaseState::Expired {
            return false;
        }
        warn!(task = %name, pod = %lease.pod, "the pod went quiet before its lease could be written; queued again");
        self.scheduler.release(ns, name);
        if let Some(t) = self
            .tasks
            .get()
            .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
        {
            self.scheduler.requeue(&t, &self.agents);
        }
        true
    }
}

pub(super) async fn lease(
    State(b): State<Arc<Broker>>,
    Path((ns, agent)): Path<(String, String)>,
    _: AgentBearer,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Json<LeaseResponse>, ApiError> {
    let Json(req) = body?;
    if req.slots == 0 || req.slots > 256 || req.pod.is_empty() || req.wait_seconds > MAX_WAIT_SECONDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("slots must be 1 to 256, pod must be set, and waitSeconds at most {MAX_WAIT_SECONDS}"),
        ));
    }
    let prefixes = req.type_prefixes.iter().chain(&req.exclude_type_prefixes);
    if req.type_prefixes.len() + req.exclude_type_prefixes.len() > 16
        || prefixes.clone().any(|p| p.is_empty() || p.len() > 128)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "typePrefixes and excludeTypePrefixes take at most 16 prefixes of 1 to 128 characters",
        ));
    }
    let agent_obj = b
        .agent(&ns, &agent)
        .ok_or_else(|| ApiError::agent_not_found(&ns, &agent))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds.into());
    loop {
        // Register for wake-ups before looking, so a task queued in between is not missed.
        let wakeup = b.scheduler.wakeup(&ns, &agent);
        let woken = wakeup.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // Should this request be dropped before its leases are settled (the pod went away, the
        // broker stops), the reservations are given back and the tasks queued again.
        let reserved = b.scheduler.reserve(&ns, &agent_obj, &req, &b.agents);
        // Leased side by side: a large batch must not age the first leases before the pod
        // even receives them.
        let results: Vec<_> = futures::stream::iter(reserved.tasks().to_vec())
            .map(|(name, seen)| {
                let (b, ns, agent, pod) = (&b, &ns, &agent, &req.pod);
                async move { (b.try_lease(ns, &name, seen, agent, pod).await, name) }
            })
            .buffer_unordered(LEASE_WRITES_IN_FLIGHT)
            .collect()
            .await;
        reserved.settle();
        let mut tasks = Vec::new();
        let mut failed = None;
        for (result, name) in results {
            match result {
                Ok(Some(t)) => tasks.push(t),
                Ok(None) => {
                    b.scheduler.unreserve(&ns, &name);
                }
                // try_lease gave the task back to the queue.
                Err(e) => {
                    b.scheduler.unreserve(&ns, &name);
                    failed = Some(e);
                }
            }
        }
        // The leases run from the moment the pod is told, not from the write.
        b.scheduler
            .hold_leased(&ns, &agent, &req.pod, &tasks, std::time::Instant::now());
        // Items of indexed tasks fill the slots the tasks left.
        for (task, i, attempt, left) in b.scheduler.take_items(&ns, &agent_obj, &req, tasks.len()) {
            tasks.push(b.hand_out_item(&task, (i, attempt), left));
        }
        // Tasks already leased are handed out even if a later lease failed.
        if let Some(e) = failed
            && tasks.is_empty()
        {
            return Err(e);
        }
        if !tasks.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(LeaseResponse { tasks }));
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
