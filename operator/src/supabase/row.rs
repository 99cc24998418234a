//! How an AgentTask becomes a row of `distributed_agent_tasks` (pure).

use cogo_api::{AgentRole, AgentTask, TaskPhase};
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use crate::tokens::auth::Keys;

/// One row of `distributed_agent_tasks`, as the mirror writes it. Field names are the
/// table's column names; the batch travels as JSON into `jsonb_to_recordset`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Row {
    /// The AgentTask's UID.
    pub id: String,
    /// The task type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The role slug of the agent kind that runs it (`research`, `indexing`, ...).
    pub agent_type: String,
    /// The task's input.
    pub data: Option<Value>,
    /// The phase in lower case: `pending`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// The full result (also when status keeps only its digest).
    pub result_data: Option<Value>,
    /// When the AgentTask was created (RFC 3339).
    pub created_at: Option<String>,
    /// The requester's Supabase user id.
    pub user_id: Option<String>,
    /// Namespace of the AgentTask.
    pub namespace: String,
    /// Name of the AgentTask.
    pub name: String,
    /// The CogoAgent that runs or ran it, else the one it names.
    pub agent: Option<String>,
    /// The phase as Kubernetes writes it.
    pub phase: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the first attempt started.
    pub started_at: Option<String>,
    /// When the task finished.
    pub finished_at: Option<String>,
    /// Why the task failed or was cancelled.
    pub error_message: Option<String>,
    /// The requester's chat session.
    pub session_id: Option<String>,
    /// The parent task, for sub-tasks.
    pub parent: Option<String>,
    /// Queue priority.
    pub priority: i32,
    /// Digest of a result too large for status; the database takes the result itself from
    /// the result store.
    pub result_digest: Option<String>,
    /// Size of a result too large for status.
    pub result_size: Option<i64>,
    /// Orders writes: the object's resourceVersion (etcd's revision, which grows with every
    /// write in the cluster).
    pub version: i64,
    /// The task's UID: only this task may update the row.
    pub task_uid: String,
    /// The cluster the task lives in (set by the mirror).
    pub cluster: Option<String>,
    /// The task was deleted: the row keeps this final state, marked deleted.
    pub deleted: bool,
}

/// The row of `task`; `role` is the role of the agent it names (None when unknown). The row id
/// and the owner come from the task only when the operator sealed it (see [`crate::seal`]).
/// What PostgreSQL cannot store is cleaned away: NUL characters become U+FFFD, and a
/// requester's user id that is not a UUID is left out.
pub fn row(task: &AgentTask, role: Option<AgentRole>, keys: &Keys) -> Row {
    let sealed = crate::seal::verify(keys, task);
    let s = task.status.clone().unwrap_or_default();
    let phase = s.phase.unwrap_or(TaskPhase::Pending);
    let role = task.spec.role.or(role);
    let requester = task.spec.requester.clone().filter(|_| sealed);
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.map(|t| t.0.to_string());
    let mut row = Row {
        id: row_id(task, keys),
        task_type: task.spec.task_type.clone(),
        agent_type: role
            .map(|r| r.slug().to_string())
            .unwrap_or_else(|| "unknown".into()),
        data: task.spec.input.clone(),
        status: phase.as_str().to_lowercase(),
        result_data: s.result.clone(),
        created_at: time(task.metadata.creation_timestamp.as_ref()),
        user_id: requester
            .as_ref()
            .and_then(|r| r.user_id.clone())
            .filter(|u| is_uuid(u)),
        namespace: task.namespace().unwrap_or_default(),
        name: task.name_any(),
        agent: s.agent.clone().or_else(|| task.spec.agent.clone()),
        phase: phase.as_str().to_string(),
        attempts: s.attempt,
        started_at: time(s.start_time.as_ref()),
        finished_at: time(s.completion_time.as_ref()),
        error_message: matches!(phase, TaskPhase::Failed | TaskPhase::Cancelled)
            .then(|| s.message.clone())
            .flatten(),
        session_id: requester.and_then(|r| r.session_id),
        parent: task.spec.parent.clone(),
        priority: task.spec.priority,
        result_digest: s.result_ref.as_ref().map(|r| r.digest.clone()),
        result_size: s.result_ref.as_ref().map(|r| r.size_bytes),
        version: version(task),
        task_uid: task.uid().unwrap_or_default(),
        cluster: None,
        deleted: false,
    };
    for v in [&mut row.data, &mut row.result_data].into_iter().flatten() {
        super::sanitize(v);
    }
    for t in [&mut row.error_message, &mut row.session_id]
        .into_iter()
        .flatten()
    {
        super::sanitize_text(t);
    }
    row
}

/// Whether `s` is a UUID in its canonical text form.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The annotation naming the `distributed_agent_tasks` row a task was taken in from.
pub const ROW_ANNOTATION: &str = "cogo.xyz/supabase-row";

/// The id of the task's row: the row the intake took it in from (named by its annotation,
/// which counts only under the operator's seal), else its UID.
pub fn row_id(task: &AgentTask, keys: &Keys) -> String {
    task.annotations()
        .get(ROW_ANNOTATION)
        .filter(|id| is_uuid(id) && crate::seal::verify(keys, task))
        .cloned()
        .unwrap_or_else(|| task.uid().unwrap_or_default())
}

/// The ids a task's row may have, from its metadata alone (no seal is checked): its UID, and
/// the row its annotation names. For telling which rows still have a task.
pub fn row_ids_of(meta: &kube::api::ObjectMeta) -> impl Iterator<Item = String> + '_ {
    meta.uid.iter().cloned().chain(
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(ROW_ANNOTATION))
            .filter(|id| is_uuid(id))
            .cloned(),
    )
}

/// Bits of a row's version that hold the task's resourceVersion (etcd's revisions stay far
/// below 2^40); the bits above hold how far the task has come.
pub const REVISION_BITS: u32 = 40;

/// Orders the states of a task for its row, newest highest: first how far the task has come
/// (its attempt, and where in it: waiting for the first one, running, waiting for the next,
/// ended), then its resourceVersion. Kubernetes calls a resourceVersion opaque: where it is
/// not a number (0 is used then), rows still follow every step of their tasks, and only a
/// change within one step (a new message while running) waits for the next step.
pub fn version(task: &AgentTask) -> i64 {
    let s = task.status.as_ref();
    let attempt = i64::from(s.map(|s| s.attempt).unwrap_or(0).clamp(0, 1 << 20));
    let step = match s.and_then(|s| s.phase).unwrap_or(TaskPhase::Pending) {
        TaskPhase::Pending if attempt == 0 => 0,
        TaskPhase::Running => 1,
        TaskPhase::Pending => 2,
        TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Cancelled => 3,
    };
    let revision = revision(task.resource_version().as_deref()).unwrap_or(0);
    ((attempt * 4 + step) << REVISION_BITS) | revision
}

/// The resourceVersion of a list as a number comparable with the revision part of rows'
/// versions, or None when it is not a number.
pub fn revision(list_version: Option<&str>) -> Option<i64> {
    list_version
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|r| (0..1 << REVISION_BITS).contains(r))
}

#[cfg(test)]
mod tests {
    use cogo_api::{AgentTaskStatus, task::ResultRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn task() -> AgentTask {
        let mut t: AgentTask = serde_json::from_value(json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "t", "namespace": "team", "uid": "0b5f6a8e-0000-4000-8000-000000000001",
                         "resourceVersion": "4711", "creationTimestamp": "2026-11-25T10:00:00Z"},
            "spec": {"agent": "research", "type": "research.query", "input": {"q": "rust"}, "priority": 5,
                     "requester": {"userId": "00000000-0000-0000-0000-00000000000a", "sessionId": "s1"}},
        }))
        .unwrap();
        t.status = Some(AgentTaskStatus {
            phase: Some(TaskPhase::Failed),
            agent: Some("research".into()),
            attempt: 2,
            start_time: Some(Time(jiff::Timestamp::from_second(1_764_064_800).unwrap())),
            message: Some("boom".into()),
            ..Default::default()
        });
        t
    }

    fn keys() -> Keys {
        Keys {
            current: crate::tokens::auth::Key {
                id: "k1".into(),
                secret: vec![3; 32],
            },
            previous: vec![],
        }
    }

    fn sealed(mut t: AgentTask) -> AgentTask {
        crate::seal::seal(&keys(), &mut t);
        t
    }

    #[test]
    fn a_task_maps_to_its_row() {
        let r = row(&sealed(task()), Some(AgentRole::Research), &keys());
        assert_eq!(r.id, "0b5f6a8e-0000-4000-8000-000000000001");
        assert_eq!((r.status.as_str(), r.phase.as_str()), ("failed", "Failed"));
        assert_eq!(r.agent_type, "research");
        assert_eq!(r.user_id.as_deref(), Some("00000000-0000-0000-0000-00000000000a"));
        assert_eq!(r.session_id.as_deref(), Some("s1"));
        assert_eq!(r.data, Some(json!({"q": "rust"})));
        assert_eq!(r.error_message.as_deref(), Some("boom"));
        assert_eq!((r.attempts, r.priority), (2, 5));
        assert_eq!(r.version, ((2 * 4 + 3) << REVISION_BITS) | 4711);
        assert_eq!(r.created_at.as_deref(), Some("2026-11-25T10:00:00Z"));
        assert!(r.started_at.is_some() && r.finished_at.is_none());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["type"], "research.query", "the column is named type");
    }

    #[test]
    fn versions_follow_the_steps_of_a_task_whatever_its_resource_version() {
        let at = |phase: TaskPhase, attempt: i32, rv: &str| {
            let mut t = task();
            t.metadata.resource_version = Some(rv.into());
            let s = t.status.as_mut().unwrap();
            (s.phase, s.attempt) = (Some(phase), attempt);
            version(&t)
        };
        use TaskPhase::*;
        for rvs in [["9", "8", "7", "6", "5"], ["a", "b", "c", "d", "e"]] {
            // Waiting, running, waiting for a retry, running again, done: each step outranks
            // the one before, even with an older (or no numeric) resourceVersion.
            let steps = [
                at(Pending, 0, rvs[0]),
                at(Running, 1, rvs[1]),
                at(Pending, 1, rvs[2]),
                at(Running, 2, rvs[3]),
                at(Succeeded, 2, rvs[4]),
            ];
            assert!(steps.windows(2).all(|w| w[0] < w[1]), "{rvs:?}: {steps:?}");
        }
        // Within one step, the resourceVersion orders.
        assert!(at(Running, 1, "10") < at(Running, 1, "11"));
        assert_eq!(at(Running, 1, "x"), at(Running, 1, "y"));
        assert_eq!(at(Running, 1, "x") & ((1 << REVISION_BITS) - 1), 0);
        assert_eq!(revision(Some("4711")), Some(4711));
        assert_eq!((revision(Some("abc")), revision(None)), (None, None));
    }

    #[test]
    fn large_results_are_named_by_digest_and_messages_come_only_from_failures() {
        let mut t = task();
        let s = t.status.as_mut().unwrap();
        s.phase = Some(TaskPhase::Succeeded);
        s.result_ref = Some(ResultRef {
            digest: "sha256:ab".into(),
            size_bytes: 70_000,
            location: "supabase:distributed_agent_tasks".into(),
            reason: "too large".into(),
        });
        let r = row(&t, None, &keys());
        assert_eq!(r.result_data, None, "the database takes it from the result store");
        assert_eq!(
            (r.result_digest.as_deref(), r.result_size),
            (Some("sha256:ab"), Some(70_000))
        );
        assert_eq!(r.error_message, None);
        assert_eq!(r.agent_type, "unknown", "no role known for the named agent");
    }

    #[test]
    fn only_a_sealed_task_names_its_row_and_owner() {
        let theirs = "7c0e4a55-0000-4000-8000-0000000000aa";
        let mut t = task();
        t.annotations_mut().insert(ROW_ANNOTATION.into(), theirs.into());
        // Written by anyone who may create AgentTasks: neither counts.
        let r = row(&t, None, &keys());
        assert_eq!(
            r.id, "0b5f6a8e-0000-4000-8000-000000000001",
            "its own row, by UID"
        );
        assert_eq!((r.user_id, r.session_id), (None, None), "no owner");
        assert_eq!(r.task_uid, "0b5f6a8e-0000-4000-8000-000000000001");
        // Sealed by the operator (the intake): both count.
        let t = sealed(t);
        let r = row(&t, None, &keys());
        assert_eq!(r.id, theirs);
        assert_eq!(r.user_id.as_deref(), Some("00000000-0000-0000-0000-00000000000a"));
        // Another owner written over a sealed task breaks the seal.
        let mut forged = t.clone();
        forged.spec.requester.as_mut().unwrap().user_id = Some("00000000-0000-0000-0000-00000000000b".into());
        let r = row(&forged, None, &keys());
        assert_eq!(
            (r.id.as_str(), r.user_id),
            ("0b5f6a8e-0000-4000-8000-000000000001", None)
        );
        // A row id that is not a UUID is never used.
        let mut bad = task();
        bad.annotations_mut()
            .insert(ROW_ANNOTATION.into(), "not-a-uuid".into());
        let bad = sealed(bad);
        assert_eq!(row_id(&bad, &keys()), "0b5f6a8e-0000-4000-8000-000000000001");
        assert!(is_uuid(theirs) && !is_uuid("0b5f6a8e-0000-4000-8000-00000000000g"));
    }
}
