//! `POST .../agents/{agent}/lease`: the long poll that hands queued tasks to an agent's pods.

use super::*;

/// Lease writes one lease request makes at a time.
const LEASE_WRITES_IN_FLIGHT: usize = 16;

impl Broker {
    /// Leases the task `name` to `pod` of `agent`, if it is still Pending. Retries on write
    /// conflicts; gives the task back to the queue when the API server cannot be written.
    pub(super) async fn try_lease(
        &self,
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
            let Some(status) = transition::leased(&task, agent, pod, &now()) else {
                if fresh {
                    return Ok(None);
                }
                fresh = true;
                continue;
            };
            let rv = task.resource_version().unwrap_or_default();
            match write_task_status(&api, name, Some(&rv), &status).await {
                Ok(_) => {
                    self.scheduler
                        .hold(ns, name, agent, pod, status.attempt, std::time::Instant::now());
                    crate::tasks::ended::started(ns, name, agent, pod, &status);
                    let traceparent =
                        self.scheduler
                            .attempts
                            .start(&task, (agent, pod), status.attempt, |ns, name| {
                                self.scheduler.is_leased(ns, name)
                            });
                    let policy = Policy::of(&task, self.agent(ns, agent).as_deref());
                    let deadline = policy.deadline(&status).unwrap_or_else(|| {
                        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(policy.timeout_seconds)
                    });
                    return Ok(Some(LeasedTask {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        uid: task.metadata.uid.clone().unwrap_or_default(),
                        task_type: task.spec.task_type.clone(),
                        input: task.spec.input.clone().unwrap_or(serde_json::Value::Null),
                        attempt: status.attempt,
                        heartbeat_seconds: self.heartbeat_seconds,
                        deadline: deadline.to_string(),
                        traceparent,
                    }));
                }
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
