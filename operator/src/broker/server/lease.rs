//! `POST .../agents/{agent}/lease`: the long poll that hands queued tasks to an agent's pods.

use super::*;

/// Lease writes one lease request makes at a time.
const LEASE_WRITES_IN_FLIGHT: usize = 16;

/// Whether a lease request is an Executor's request for its workers' task types only.
pub(super) fn is_worker_lane(agent: &CogoAgent, req: &LeaseRequest) -> bool {
    agent.spec.role == AgentRole::Executor
        && !req.type_prefixes.is_empty()
        && req
            .type_prefixes
            .iter()
            .all(|p| WorkerKind::for_task_type(p).is_some())
}

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
                    if let Ok(mut l) = self.leases.lock() {
                        l.hold(ns, name, agent, pod, status.attempt, std::time::Instant::now());
                    }
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
                    }));
                }
                Err(e) if is_conflict(&e) => {
                    debug!(task = name, "lease conflicted; reading again");
                    fresh = true;
                }
                Err(e) => {
                    self.requeue(&task);
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    /// Takes up to `req.slots` queued tasks of the types `req` wants for `agent`, and reserves
    /// a lease for each. An Executor's lease of its workers' task types (all of
    /// `req.typePrefixes` name worker kinds) is bounded by the slots its workers have free,
    /// which it asks for; any other lease by the agent's free slots (`replicas x concurrency`
    /// minus the tasks its pods hold).
    pub(super) fn take(
        &self,
        ns: &str,
        agent: &CogoAgent,
        req: &LeaseRequest,
    ) -> Vec<(String, Option<Arc<AgentTask>>)> {
        let name = agent.name_any();
        let Ok(mut leases) = self.leases.lock() else {
            return Vec::new();
        };
        let worker_lane = is_worker_lane(agent, req);
        let slots = req.slots as usize;
        let free = if worker_lane {
            slots
        } else {
            let cap =
                (agent.spec.replicas.max(0) as usize).saturating_mul(agent.spec.concurrency.max(1) as usize);
            cap.saturating_sub(leases.running_for(ns, &name)).min(slots)
        };
        if free == 0 {
            return Vec::new();
        }
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let names = queue.pop_for(ns, &name, agent.spec.role, free, |t| req.wants(t));
        let now = std::time::Instant::now();
        // A task already held (being leased from an older queue entry) is not taken twice.
        let names: Vec<_> = names
            .into_iter()
            .map(|n| {
                let obj = queue.take_object(ns, &n);
                (n, obj)
            })
            .filter(|(n, _)| !leases.contains(ns, n))
            .collect();
        for (n, _) in &names {
            // Attempt 0 is a reservation: it counts against the cap until the lease is written.
            leases.hold(ns, n, &name, &req.pod, 0, now);
            leases.set_counted(ns, n, !worker_lane);
        }
        names
    }

    /// Gives back the reservation of `ns/name` (a lease not written); true when there was one.
    pub(super) fn unreserve(&self, ns: &str, name: &str) -> bool {
        let Ok(mut l) = self.leases.lock() else {
            return false;
        };
        let reserved =
            l.state(ns, name, 0, std::time::Instant::now()) != crate::broker::leases::LeaseState::Unknown;
        if reserved {
            l.release(ns, name);
        }
        reserved
    }

    pub(super) fn requeue(&self, task: &AgentTask) {
        let target = match (&task.spec.agent, task.spec.role) {
            (Some(a), _) => Target::Agent(a.clone()),
            (None, Some(r)) => Target::Role(r),
            (None, None) => return,
        };
        if let Ok(mut q) = self.queue.lock() {
            q.upsert_task(target.clone(), Arc::new(task.clone()));
        }
        self.queued
            .target(&task.namespace().unwrap_or_default(), &target, &self.agents);
    }
}

/// Tasks a lease request reserved and has not settled yet; dropped unsettled (the request was
/// dropped mid-lease), it gives their reservations back and queues them again. A task whose
/// lease was written keeps it: its pod never heard of it, so its lease runs out and the task is
/// retried by its policy.
struct Reserved<'a> {
    broker: &'a Broker,
    ns: &'a str,
    tasks: Vec<(String, Option<Arc<AgentTask>>)>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        for (name, task) in self.tasks.drain(..) {
            if self.broker.unreserve(self.ns, &name)
                && let Some(task) = task
            {
                self.broker.requeue(&task);
            }
        }
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
        let wakeup = b.queued.of(&ns, &agent);
        let woken = wakeup.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let names = b.take(&ns, &agent_obj, &req);
        // Should this request be dropped before its leases are settled (the pod went away, the
        // broker stops), the reservations are given back and the tasks queued again.
        let mut reserved = Reserved {
            broker: &b,
            ns: &ns,
            tasks: names.iter().map(|(n, t)| (n.clone(), t.clone())).collect(),
        };
        // Leased side by side: a large batch must not age the first leases before the pod
        // even receives them.
        let results: Vec<_> = futures::stream::iter(names)
            .map(|(name, seen)| {
                let (b, ns, agent, pod) = (&b, &ns, &agent, &req.pod);
                async move { (b.try_lease(ns, &name, seen, agent, pod).await, name) }
            })
            .buffer_unordered(LEASE_WRITES_IN_FLIGHT)
            .collect()
            .await;
        reserved.tasks.clear();
        let mut tasks = Vec::new();
        let mut failed = None;
        for (result, name) in results {
            match result {
                Ok(Some(t)) => tasks.push(t),
                Ok(None) => {
                    b.unreserve(&ns, &name);
                }
                // try_lease gave the task back to the queue.
                Err(e) => {
                    b.unreserve(&ns, &name);
                    failed = Some(e);
                }
            }
        }
        // The leases run from the moment the pod is told, not from the write.
        if let Ok(mut l) = b.leases.lock() {
            let now = std::time::Instant::now();
            for t in &tasks {
                l.hold(&ns, &t.name, &agent, &req.pod, t.attempt, now);
            }
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
