//! `POST .../tasks/{parent}/subtasks`: sub-tasks of a running task, within limits.

use super::*;

/// Bounds on sub-tasks, so a task that fans out (or recurses) cannot flood the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubtaskLimits {
    /// Sub-tasks one task may have.
    pub per_task: usize,
    /// Levels of sub-tasks below a task created by a user.
    pub depth: usize,
    /// Unfinished sub-tasks in one namespace.
    pub per_namespace: usize,
}

impl Default for SubtaskLimits {
    fn default() -> Self {
        SubtaskLimits {
            per_task: 100,
            depth: 5,
            per_namespace: 10_000,
        }
    }
}

impl SubtaskLimits {
    /// Whether one more sub-task of `parent` in `ns` stays within the limits, judged from
    /// `tasks` (the tasks as cached); the error is the code of the limit it would pass and a
    /// message.
    pub fn check(
        &self,
        tasks: &[Arc<AgentTask>],
        ns: &str,
        parent: &AgentTask,
    ) -> Result<(), (&'static str, String)> {
        let in_ns = || tasks.iter().filter(|t| t.namespace().as_deref() == Some(ns));
        let parent_name = parent.name_any();
        let children = in_ns()
            .filter(|t| t.spec.parent.as_deref() == Some(parent_name.as_str()))
            .count();
        if children >= self.per_task {
            return Err((
                "TooManySubtasks",
                format!(
                    "{parent_name} has {children} sub-tasks, the most one task may have (--max-subtasks-per-task)"
                ),
            ));
        }
        let mut depth = 1;
        let mut up = parent.spec.parent.clone();
        while let Some(name) = up {
            depth += 1;
            if depth > self.depth {
                return Err((
                    "SubtaskTooDeep",
                    format!(
                        "a sub-task of {parent_name} would be {depth} levels below the task a user created; the most is {} (--max-subtask-depth)",
                        self.depth
                    ),
                ));
            }
            up = in_ns()
                .find(|t| t.name_any() == name)
                .and_then(|t| t.spec.parent.clone());
        }
        let open = in_ns()
            .filter(|t| t.spec.parent.is_some())
            .filter(|t| {
                !t.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
            })
            .count();
        if open >= self.per_namespace {
            return Err((
                "TooManySubtasksInNamespace",
                format!(
                    "{ns} has {open} unfinished sub-tasks, the most a namespace may have (--max-subtasks-per-namespace)"
                ),
            ));
        }
        Ok(())
    }
}

pub use cogo_api::task::PARENT_LABEL;

/// `POST .../tasks/{parent}/subtasks/{name}/cancel`: asks for a sub-task of a task the caller
/// runs to be cancelled (`spec.cancelRequested`), as a user would; a sub-task that has ended
/// already is left as it is.
pub(super) async fn cancel_subtask(
    State(b): State<Arc<Broker>>,
    Path((ns, parent_name, name)): Path<(String, String, String)>,
    Bearer(claims): Bearer,
    body: Result<Json<CancelSubtaskRequest>, JsonRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let Json(req) = body?;
    let (api, _) = b
        .held_task(&claims, &ns, &parent_name, Some((&req.pod, req.attempt)))
        .await?;
    let child = api
        .get_opt(&name)
        .await?
        .filter(|c| c.spec.parent.as_deref() == Some(parent_name.as_str()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "TaskNotFound",
                format!("{parent_name} has no sub-task {ns}/{name}"),
            )
        })?;
    let ended = child
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_terminal());
    if ended || child.spec.cancel_requested {
        return Ok(Json(view(&child)));
    }
    let patch = serde_json::json!({"spec": {"cancelRequested": true}});
    let patched = api
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    Ok(Json(view(&patched)))
}

/// The longest generated-name prefix: the API server appends 5 characters to it.
const MAX_GENERATE_NAME_PREFIX: usize = 58;

pub(super) async fn subtask(
    State(b): State<Arc<Broker>>,
    Path((ns, parent_name)): Path<(String, String)>,
    Bearer(claims): Bearer,
    headers: axum::http::HeaderMap,
    body: Result<Json<SubtaskRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let Json(req) = body?;
    let (api, parent) = b
        .held_task(&claims, &ns, &parent_name, Some((&req.pod, req.attempt)))
        .await?;
    if req.agent.is_some() == req.role.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "set exactly one of agent and role",
        ));
    }
    if let Some(why) = req
        .input
        .as_ref()
        .and_then(|i| cogo_api::json::too_deep("input", i))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InputTooDeep",
            why,
        ));
    }
    // A retried call for a sub-task that exists already is answered below, whatever the limits.
    let exists = req.name.as_ref().is_some_and(|n| {
        b.tasks
            .get()
            .and_then(|s| s.get(&ObjectRef::new(n).within(&ns)))
            .is_some_and(|t| t.spec.parent.as_deref() == Some(parent_name.as_str()))
    });
    if !exists && let Some(store) = b.tasks.get() {
        b.subtask_limits
            .check(&store.state(), &ns, &parent)
            .map_err(|(code, message)| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message))?;
    }
    // `kubectl get agenttasks -l cogo.xyz/parent=<task>` lists a task's sub-tasks (a label
    // value holds at most 63 characters; longer parents are found by spec.parent alone).
    let labels = (parent_name.len() <= 63)
        .then(|| std::collections::BTreeMap::from([(PARENT_LABEL.to_string(), parent_name.clone())]));
    let mut meta = kube::api::ObjectMeta {
        namespace: Some(ns.clone()),
        labels,
        owner_references: Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: AgentTask::api_version(&()).into(),
                kind: AgentTask::kind(&()).into(),
                name: parent_name.clone(),
                uid: parent.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    // Made inside the parent's span (the request's `traceparent`), the sub-task's attempts are
    // traced in the parent's trace.
    if let Some(tp) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| cogo_api::task::is_traceparent(t))
    {
        meta.annotations =
            Some([(cogo_api::task::TRACEPARENT_ANNOTATION.to_string(), tp.to_string())].into());
    }
    // The name is made here, not by the API server, so that a sealed parent's sub-task can be
    // sealed (the seal covers the name) before it is created.
    let mut prefix: String = parent_name.chars().take(MAX_GENERATE_NAME_PREFIX - 1).collect();
    prefix.push('-');
    meta.name = Some(req.name.clone().unwrap_or_else(|| generated_name(&prefix)));
    let mut child = AgentTask {
        metadata: meta,
        spec: cogo_api::AgentTaskSpec {
            agent: req.agent.clone(),
            role: req.role,
            task_type: req.task_type.clone(),
            input: req.input.clone(),
            priority: req.priority,
            timeout_seconds: req.timeout_seconds,
            retry: req.retry.clone(),
            ttl_seconds_after_finished: None,
            items: None,
            parallelism: None,
            max_failed_items: None,
            parent: Some(parent_name.clone()),
            requester: parent.spec.requester.clone(),
            cancel_requested: false,
        },
        status: None,
    };
    // A sub-task is its parent's user's only when the parent is (see `crate::seal`).
    let sealed = crate::seal::verify(&b.keys, &parent);
    if sealed {
        crate::seal::seal(&b.keys, &mut child);
    }
    crate::seal::seal_subtask(&b.keys, &mut child);
    let params = kube::api::PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let mut created = api.create(&params, &child).await;
    // A generated name that is taken already: another one.
    for _ in 0..3 {
        match &created {
            Err(kube::Error::Api(e)) if e.code == 409 && req.name.is_none() => {
                child.metadata.name = Some(generated_name(&prefix));
                if sealed {
                    crate::seal::seal(&b.keys, &mut child);
                }
                crate::seal::seal_subtask(&b.keys, &mut child);
                created = api.create(&params, &child).await;
            }
            _ => break,
        }
    }
    match created {
        Ok(created) => Ok((StatusCode::CREATED, Json(view(&created)))),
        // A retried call finds the sub-task it created the first time.
        Err(kube::Error::Api(e)) if e.code == 409 && req.name.is_some() => {
            let name = req.name.clone().unwrap_or_default();
            match api.get_opt(&name).await? {
                Some(existing) if existing.spec.parent.as_deref() == Some(parent_name.as_str()) => {
                    Ok((StatusCode::OK, Json(view(&existing))))
                }
                _ => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("an AgentTask {ns}/{name} exists and is not a sub-task of {parent_name}"),
                )),
            }
        }
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidTask",
            e.message,
        )),
        Err(e) => Err(e.into()),
    }
}

/// `prefix` and five random lower-case letters and digits, as the API server's `generateName`.
pub(super) fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    if getrandom_fill(&mut bytes).is_err() {
        // No random source: the time's nanoseconds are unpredictable enough for a name.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (n >> (i * 6)) as u8;
        }
    }
    let suffix: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

pub(super) fn getrandom_fill(bytes: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(bytes)
}
