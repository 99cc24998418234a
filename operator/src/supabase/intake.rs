//! Intake: rows inserted into `distributed_agent_tasks` as `pending` with no Kubernetes object
//! (what the chat gateway's Edge Function does) become AgentTasks in the configured
//! namespaces, exactly once. A row naming one of them (the gateway names the namespace it
//! serves) becomes a task there; a row naming none (or an empty one) goes to the first; a row
//! naming another is left alone, for the operator that serves that namespace. The operator
//! LISTENs on `cogo_intake` (a trigger notifies on insert) and also polls every second, which
//! is what works through a transaction-mode pooler. Each row becomes
//! the AgentTask `row-<id>`, annotated with the row's id, so two operators that see the same row
//! create one object (the second gets AlreadyExists); the row is then claimed (namespace and
//! name set) and mirrored like any other task. A row that cannot become a task is marked
//! `failed` with the reason.

use std::{sync::Arc, time::Duration};

use cogo_api::{
    AgentRole, AgentTask, AgentTaskSpec,
    task::{Requester, TRACEPARENT_ANNOTATION},
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, types::Type};
use tracing::{info, warn};

use super::{ConnectError, connect_raw, describe, row::ROW_ANNOTATION};
use crate::{kube_io::FIELD_MANAGER, metrics::Metrics, tokens::auth::Keys};

const PENDING: &str = "
select id::text, type, agent_type, coalesce(data::text, 'null'), user_id::text, session_id, priority, trace_parent,
  namespace
from public.distributed_agent_tasks
where status = 'pending' and name is null and deleted_at is null
  and (nullif(namespace, '') is null or namespace = any($2::text[]))
  and id not in (select (jsonb_array_elements_text($1::jsonb))::uuid)
order by created_at
limit 100";

const CLAIM: &str = "
update public.distributed_agent_tasks set namespace = $1, name = $2, task_uid = $4::uuid, updated_at = now()
where id = $3::uuid and name is null";

const REFUSE: &str = "
update public.distributed_agent_tasks set status = 'failed', error_message = $1, updated_at = now()
where id = $2::uuid and name is null";

/// A pending row, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRow {
    /// The row's id.
    pub id: String,
    /// The task type.
    pub task_type: String,
    /// The agent role, as a role slug or name.
    pub agent_type: String,
    /// The input.
    pub data: serde_json::Value,
    /// The requester.
    pub user_id: Option<String>,
    /// The chat session the task belongs to.
    pub session_id: Option<String>,
    /// The task's priority (clamped to -1000..=1000).
    pub priority: i32,
    /// The W3C `traceparent` the row was created in; kept on the task when well formed.
    pub trace_parent: Option<String>,
    /// The namespace the row was inserted for; none: the intake's first.
    pub namespace: Option<String>,
}

/// The namespace a row's task goes to, of `namespaces` (the intake's, the first for rows that
/// name none); None when the row names a namespace this intake does not serve.
pub fn target<'a>(row: &'a PendingRow, namespaces: &'a [String]) -> Option<&'a str> {
    match row.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => namespaces.iter().any(|n| n == ns).then_some(ns),
        None => namespaces.first().map(String::as_str),
    }
}

/// The AgentTask a pending row becomes, or why it cannot become one.
pub fn task_of(row: &PendingRow, namespace: &str) -> Result<AgentTask, String> {
    let role = AgentRole::ALL
        .into_iter()
        .find(|r| {
            row.agent_type.eq_ignore_ascii_case(r.slug()) || row.agent_type.eq_ignore_ascii_case(r.as_str())
        })
        .ok_or_else(|| {
            format!(
                "agent_type {:?} names no agent role (one of {})",
                row.agent_type,
                AgentRole::ALL.map(|r| r.slug()).join(", ")
            )
        })?;
    Ok(AgentTask {
        metadata: ObjectMeta {
            name: Some(format!("row-{}", row.id.to_lowercase())),
            namespace: Some(namespace.to_string()),
            annotations: Some(
                [(ROW_ANNOTATION.to_string(), row.id.clone())]
                    .into_iter()
                    .chain(
                        row.trace_parent
                            .as_ref()
                            .filter(|t| cogo_api::task::is_traceparent(t))
                            .map(|t| (TRACEPARENT_ANNOTATION.to_string(), t.clone())),
                    )
                    .collect(),
            ),
            ..Default::default()
        },
        spec: AgentTaskSpec {
            agent: None,
            role: Some(role),
            task_type: row.task_type.clone(),
            input: (!row.data.is_null()).then(|| row.data.clone()),
            priority: row.priority.clamp(-1000, 1000),
            timeout_seconds: None,
            retry: None,
            ttl_seconds_after_finished: None,
            items: None,
            parallelism: None,
            max_failed_items: None,
            parent: None,
            requester: (row.user_id.is_some() || row.session_id.is_some()).then(|| Requester {
                user_id: row.user_id.clone(),
                // Kept within the field's limit, so a long one cannot make the task invalid.
                session_id: row.session_id.as_ref().map(|s| s.chars().take(255).collect()),
            }),
            cancel_requested: false,
        },
        status: None,
    })
}

/// Takes pending rows in until `shutdown` resolves.
pub async fn run(
    client: Client,
    (secret_ns, secret): (String, String),
    namespaces: Vec<String>,
    (metrics, keys): (Arc<Metrics>, Keys),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &secret_ns);
    tokio::select! {
        _ = intake_loop(&secrets, &secret, &client, &namespaces, (&metrics, &keys)) => {}
        _ = shutdown => {}
    }
}

async fn intake_loop(
    secrets: &Api<Secret>,
    secret: &str,
    client: &Client,
    namespaces: &[String],
    (metrics, keys): (&Metrics, &Keys),
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let result = async {
            let (db, mut connection) = connect_raw(secrets, secret).await?;
            let woken = Arc::new(Notify::new());
            let notify = woken.clone();
            let driver = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(AsyncMessage::Notification(_)) => notify.notify_one(),
                        Ok(_) => {}
                        Err(e) => {
                            warn!(error = %e, "the intake connection closed");
                            break;
                        }
                    }
                }
            });
            // Through a transaction-mode pooler LISTEN has no effect; polling still works.
            db.batch_execute("listen cogo_intake").await?;
            metrics.set_realtime_connected(true);
            info!(namespaces = %namespaces.join(","), "taking in pending Supabase rows");
            let mut later = Later::default();
            loop {
                take_in(&db, client, namespaces, keys, &mut later).await?;
                tokio::select! {
                    _ = woken.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if driver.is_finished() {
                    return Err(ConnectError::Config("the connection closed".into()));
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), ConnectError>(())
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, retry_in = ?backoff, "the Supabase intake cannot read the database");
            metrics.set_realtime_connected(false);
            metrics.mirror_failed();
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Pending rows whose task could not be created for a reason that may pass (the API server
/// answered 5xx, a quota refused it): each waits, with backoff, while the poll goes on to the
/// rows behind it.
#[derive(Default, Debug)]
pub struct Later {
    rows: std::collections::HashMap<String, (std::time::Instant, u32)>,
}

impl Later {
    /// The most rows set aside at once.
    pub const MAX: usize = 10_000;

    /// Sets `id` aside: 2 s after its first failure, doubling up to 5 min.
    pub fn defer(&mut self, id: &str, now: std::time::Instant) {
        if self.rows.len() >= Self::MAX && !self.rows.contains_key(id) {
            return;
        }
        let failures = self.rows.get(id).map_or(0, |(_, n)| *n) + 1;
        let wait = Duration::from_secs(1 << failures.min(9)).min(Duration::from_secs(300));
        self.rows.insert(id.to_string(), (now + wait, failures));
    }

    /// Forgets `id` (its task exists).
    pub fn done(&mut self, id: &str) {
        self.rows.remove(id);
    }

    /// The rows still set aside at `now`.
    pub fn waiting(&self, now: std::time::Instant) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|(_, (at, _))| *at > now)
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

/// Rows taken in at once: their AgentTasks are created and their rows claimed concurrently.
const CONCURRENCY: usize = 16;

/// What became of a pending row.
enum Taken {
    /// Its task exists and the row is claimed.
    Done,
    /// Its task could not be created for a reason that may pass: try again later.
    Later,
    /// Refused, or left for another round.
    Skipped,
}

/// Turns every pending row into an AgentTask and claims it, [`CONCURRENCY`] rows at a time.
async fn take_in(
    db: &tokio_postgres::Client,
    client: &Client,
    namespaces: &[String],
    keys: &Keys,
    later: &mut Later,
) -> Result<(), ConnectError> {
    let skipped =
        serde_json::to_string(&later.waiting(std::time::Instant::now())).unwrap_or_else(|_| "[]".into());
    let rows = db
        .query_typed(
            PENDING,
            &[(&skipped, Type::TEXT), (&namespaces, Type::TEXT_ARRAY)],
        )
        .await?;
    let rows = rows.into_iter().map(|r| PendingRow {
        id: r.get(0),
        task_type: r.get(1),
        agent_type: r.get(2),
        data: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or(serde_json::Value::Null),
        user_id: r.get(4),
        session_id: r.get(5),
        priority: r.get(6),
        trace_parent: r.get(7),
        namespace: r.get(8),
    });
    let outcomes: Vec<_> = futures::stream::iter(rows.map(|row| take_one(db, client, namespaces, keys, row)))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    // Every outcome is recorded, and the first error (the connection failed) returned after.
    let now = std::time::Instant::now();
    let mut failed = None;
    for outcome in outcomes {
        match outcome {
            Ok((id, Taken::Done)) => later.done(&id),
            Ok((id, Taken::Later)) => later.defer(&id, now),
            Ok((_, Taken::Skipped)) => {}
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Turns one pending row into an AgentTask and claims the row.
async fn take_one(
    db: &tokio_postgres::Client,
    client: &Client,
    namespaces: &[String],
    keys: &Keys,
    row: PendingRow,
) -> Result<(String, Taken), ConnectError> {
    // The query reads only this intake's rows; one that names another namespace is not ours.
    let Some(namespace) = target(&row, namespaces) else {
        return Ok((row.id, Taken::Skipped));
    };
    let namespace = namespace.to_string();
    let tasks: Api<AgentTask> = Api::namespaced(client.clone(), &namespace);
    let task = match task_of(&row, &namespace) {
        Ok(mut t) => {
            // The seal binds the task to this row and its owner: only the intake makes it.
            crate::seal::seal(keys, &mut t);
            t
        }
        Err(why) => {
            refuse(db, &row.id, &why).await?;
            return Ok((row.id, Taken::Skipped));
        }
    };
    let name = task.metadata.name.clone().unwrap_or_default();
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let uid = match tasks.create(&params, &task).await {
        Ok(created) => {
            info!(row = %row.id, task = %name, "took in a pending row");
            created.metadata.uid
        }
        // Another operator (or an earlier try) made it: one object per row. A task of that
        // name that the intake did not make for this row gets no row.
        Err(kube::Error::Api(e)) if e.code == 409 => match tasks.get_opt(&name).await {
            Ok(Some(existing)) if crate::seal::verify(keys, &existing) => {
                info!(row = %row.id, task = %name, "the row's AgentTask exists already");
                existing.metadata.uid
            }
            Ok(Some(_)) => {
                let why = format!("an AgentTask {namespace}/{name} exists that was not made from this row");
                refuse(db, &row.id, &why).await?;
                return Ok((row.id, Taken::Skipped));
            }
            Ok(None) => return Ok((row.id, Taken::Skipped)),
            Err(e) => {
                warn!(row = %row.id, error = %e, "cannot read the AgentTask of a pending row; trying later");
                return Ok((row.id, Taken::Skipped));
            }
        },
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => {
            refuse(db, &row.id, &format!("not a valid AgentTask: {}", e.message)).await?;
            return Ok((row.id, Taken::Skipped));
        }
        Err(e) => {
            warn!(row = %row.id, error = %e, "cannot create the AgentTask of a pending row; trying later");
            return Ok((row.id, Taken::Later));
        }
    };
    let uid = uid.unwrap_or_default();
    db.query_typed(
        CLAIM,
        &[
            (&namespace, Type::TEXT),
            (&name, Type::TEXT),
            (&row.id, Type::TEXT),
            (&uid, Type::TEXT),
        ],
    )
    .await?;
    Ok((row.id, Taken::Done))
}

async fn refuse(db: &tokio_postgres::Client, id: &str, why: &str) -> Result<(), ConnectError> {
    warn!(row = %id, reason = %why, "a pending row cannot become an AgentTask");
    db.query_typed(REFUSE, &[(&why, Type::TEXT), (&id, Type::TEXT)])
        .await
        .map_err(|e| ConnectError::Config(describe(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_that_cannot_be_created_yet_wait_with_backoff_and_hold_back_no_other() {
        let t0 = std::time::Instant::now();
        let mut later = Later::default();
        later.defer("a", t0);
        later.defer("b", t0);
        assert_eq!(later.waiting(t0).len(), 2);
        assert!(
            later.waiting(t0 + Duration::from_secs(2)).is_empty(),
            "2 s after a first failure"
        );
        later.defer("a", t0);
        later.defer("a", t0);
        let mut waiting = later.waiting(t0 + Duration::from_secs(3));
        waiting.sort();
        assert_eq!(waiting, ["a"], "8 s after a third");
        for _ in 0..20 {
            later.defer("a", t0);
        }
        assert!(
            later.waiting(t0 + Duration::from_secs(301)).is_empty(),
            "at most 5 min"
        );
        later.done("a");
        assert!(later.waiting(t0).iter().all(|id| *id != "a"));
    }

    fn pending(agent_type: &str) -> PendingRow {
        PendingRow {
            id: "0B5F6A8E-0000-4000-8000-000000000001".into(),
            task_type: "research.query".into(),
            agent_type: agent_type.into(),
            data: json!({"q": "rust"}),
            user_id: Some("00000000-0000-0000-0000-00000000000a".into()),
            session_id: None,
            priority: 0,
            trace_parent: None,
            namespace: None,
        }
    }

    #[test]
    fn a_row_s_traceparent_is_kept_only_when_well_formed() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let row = PendingRow {
            trace_parent: Some(tp.into()),
            ..pending("research")
        };
        let annotations = task_of(&row, "ns").unwrap().metadata.annotations.unwrap();
        assert_eq!(
            annotations.get(TRACEPARENT_ANNOTATION).map(String::as_str),
            Some(tp)
        );
        let row = PendingRow {
            trace_parent: Some("00-not-a-traceparent".into()),
            ..pending("research")
        };
        let annotations = task_of(&row, "ns").unwrap().metadata.annotations.unwrap();
        assert!(!annotations.contains_key(TRACEPARENT_ANNOTATION));
        assert!(annotations.contains_key(ROW_ANNOTATION));
    }

    #[test]
    fn a_pending_row_becomes_one_named_task() {
        let t = task_of(&pending("research"), "intake").unwrap();
        assert_eq!(
            t.metadata.name.as_deref(),
            Some("row-0b5f6a8e-0000-4000-8000-000000000001"),
            "the name comes from the row, so every operator picks the same"
        );
        assert_eq!(
            t.metadata.annotations.unwrap()[ROW_ANNOTATION],
            "0B5F6A8E-0000-4000-8000-000000000001"
        );
        assert_eq!(t.spec.role, Some(AgentRole::Research));
        assert_eq!(t.spec.input, Some(json!({"q": "rust"})));
        assert_eq!(
            t.spec.requester.unwrap().user_id.as_deref(),
            Some("00000000-0000-0000-0000-00000000000a")
        );
        assert_eq!(
            task_of(&pending("GraphRAG"), "ns").unwrap().spec.role,
            Some(AgentRole::GraphRag)
        );
    }

    #[test]
    fn a_row_s_session_and_priority_go_with_its_task() {
        let mut row = pending("orchestrator");
        row.session_id = Some("s".repeat(300));
        row.priority = 5000;
        row.user_id = None;
        let t = task_of(&row, "ns").unwrap();
        assert_eq!(t.spec.priority, 1000, "clamped to the field's range");
        let requester = t.spec.requester.unwrap();
        assert_eq!(requester.user_id, None);
        assert_eq!(requester.session_id.unwrap().len(), 255);
        row.session_id = None;
        assert_eq!(task_of(&row, "ns").unwrap().spec.requester, None);
    }

    #[test]
    fn a_row_goes_to_the_namespace_it_names_when_served_and_else_to_the_first() {
        let served = ["tenant-a".to_string(), "tenant-b".to_string()];
        let mut row = pending("research");
        assert_eq!(target(&row, &served), Some("tenant-a"), "no namespace: the first");
        row.namespace = Some(String::new());
        assert_eq!(target(&row, &served), Some("tenant-a"), "an empty one is none");
        row.namespace = Some("tenant-b".into());
        assert_eq!(target(&row, &served), Some("tenant-b"));
        assert_eq!(
            task_of(&row, target(&row, &served).unwrap())
                .unwrap()
                .metadata
                .namespace
                .as_deref(),
            Some("tenant-b")
        );
        row.namespace = Some("tenant-c".into());
        assert_eq!(target(&row, &served), None, "another operator's");
        assert_eq!(target(&pending("research"), &[]), None, "no intake");
    }

    #[test]
    fn an_unknown_agent_type_is_refused_with_the_roles() {
        let why = task_of(&pending("astrology"), "ns").unwrap_err();
        assert!(why.contains("astrology") && why.contains("research"), "{why}");
    }
}
