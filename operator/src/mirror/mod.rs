//! The Supabase mirror: every AgentTask's state, upserted into `distributed_agent_tasks` by
//! UID, in batches, asynchronously. The database being down or slow delays the mirror and
//! never the cluster: changes wait in memory (one entry per task, the newest state), writes are
//! retried with backoff, and on start every task is written again and rows of tasks that are
//! gone are marked deleted. A row is only ever updated to a newer version of its task.
//!
//! The connection string comes from a Secret (key `url`) and is read again on every connect,
//! so fixing it takes effect without a restart. Statements are sent unnamed (no prepared
//! statements), so the mirror works through a transaction-mode pooler such as PgBouncer.

pub mod intake;
pub mod row;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cogo_api::{AgentTask, CogoAgent};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    runtime::{reflector::ObjectRef, reflector::Store, watcher},
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_postgres::types::Type;
use tracing::{info, warn};

use crate::metrics::Metrics;
use row::Row;

/// The schema the mirror writes to, applied (idempotently) on every connect.
pub const MIGRATION: &str = include_str!("../../../supabase/migrations/20261125000000_cogo_tasks.sql");

/// The most rows one write carries.
pub const BATCH: usize = 500;

/// Tasks whose newest state may wait in memory; past this the mirror forgets the waiting
/// changes and writes every task again from the cluster (a resync), so memory stays bounded.
pub const MAX_WAITING: usize = 200_000;

const UPSERT: &str = "
insert into public.distributed_agent_tasks as t
  (id, type, agent_type, data, status, result_data, created_at, user_id, namespace, name, agent, phase,
   attempts, started_at, finished_at, updated_at, error_message, session_id, parent, priority,
   result_digest, result_size, version, deleted_at)
select r.id, r.type, r.agent_type, r.data, r.status, r.result_data, coalesce(r.created_at, now()),
       (select u.id from auth.users u where u.id = r.user_id), r.namespace, r.name, r.agent, r.phase,
       r.attempts, r.started_at, r.finished_at, now(), r.error_message, r.session_id, r.parent, r.priority,
       r.result_digest, r.result_size, r.version, null
from jsonb_to_recordset($1::jsonb) as r(id uuid, type text, agent_type text, data jsonb, status text,
  result_data jsonb, created_at timestamptz, user_id uuid, namespace text, name text, agent text, phase text,
  attempts int, started_at timestamptz, finished_at timestamptz, error_message text, session_id text,
  parent text, priority int, result_digest text, result_size bigint, version bigint)
on conflict (id) do update set
  type = excluded.type, agent_type = excluded.agent_type, data = excluded.data, status = excluded.status,
  result_data = coalesce(excluded.result_data, t.result_data), user_id = excluded.user_id,
  namespace = excluded.namespace, name = excluded.name, agent = excluded.agent, phase = excluded.phase,
  attempts = excluded.attempts, started_at = excluded.started_at, finished_at = excluded.finished_at,
  updated_at = now(), error_message = excluded.error_message, session_id = excluded.session_id,
  parent = excluded.parent, priority = excluded.priority, result_digest = excluded.result_digest,
  result_size = excluded.result_size, version = excluded.version
where t.version < excluded.version";

const MARK_DELETED: &str = "
update public.distributed_agent_tasks set deleted_at = now(), updated_at = now()
where deleted_at is null and id in (select (jsonb_array_elements_text($1::jsonb))::uuid)";

const MARK_MISSING: &str = "
update public.distributed_agent_tasks set deleted_at = now(), updated_at = now()
where deleted_at is null and namespace is not null
  and id not in (select (jsonb_array_elements_text($1::jsonb))::uuid)";

/// A change waiting to be written.
#[derive(Clone, Debug)]
enum Change {
    Upsert(Box<Row>, Instant),
    Delete(Instant),
}

#[derive(Default)]
struct State {
    waiting: HashMap<String, Change>,
    /// The newest version written, by UID.
    written: HashMap<String, i64>,
    /// Full results too large for status, by UID, until written.
    results: HashMap<String, Value>,
    /// UIDs in the cluster after the initial list, until rows of other tasks are marked.
    listed: Option<HashSet<String>>,
}

/// The mirror's shared state: the watch loop and the broker feed it, the writer drains it.
pub struct Mirror {
    state: Mutex<State>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl Mirror {
    /// An empty mirror.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Mirror> {
        Arc::new(Mirror {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            metrics,
        })
    }

    /// Notes the newest state of a task.
    pub fn observe(&self, row: Row) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.written.get(&row.id).is_some_and(|v| *v >= row.version) {
            return;
        }
        if let Some(Change::Upsert(old, _)) = s.waiting.get(&row.id)
            && old.version >= row.version
        {
            return;
        }
        let since = match s.waiting.get(&row.id) {
            Some(Change::Upsert(_, t)) => *t,
            _ => Instant::now(),
        };
        if s.waiting.len() >= MAX_WAITING && !s.waiting.contains_key(&row.id) {
            warn!(
                waiting = s.waiting.len(),
                "the mirror is too far behind; dropping waiting changes"
            );
            s.waiting.clear();
            self.metrics.mirror_failed();
        }
        s.waiting
            .insert(row.id.clone(), Change::Upsert(Box::new(row), since));
        self.metrics.set_mirror_waiting(s.waiting.len());
        drop(s);
        self.wake.notify_one();
    }

    /// Notes that a task was deleted (its row stays, marked deleted).
    pub fn deleted(&self, uid: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.waiting.insert(uid.to_string(), Change::Delete(Instant::now()));
            s.written.remove(uid);
            s.results.remove(uid);
            self.metrics.set_mirror_waiting(s.waiting.len());
        }
        self.wake.notify_one();
    }

    /// Keeps a result too large for status, to be written with the task's row.
    pub fn hold_result(&self, uid: &str, result: Value) {
        if let Ok(mut s) = self.state.lock() {
            s.results.insert(uid.to_string(), result);
        }
    }

    /// A result held for `uid`, if any.
    pub fn held_result(&self, uid: &str) -> Option<Value> {
        self.state.lock().ok()?.results.get(uid).cloned()
    }

    /// Whether the database holds version `version` (or newer) of the task `uid`.
    pub fn holds(&self, uid: &str, version: i64) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.written.get(uid).is_some_and(|v| *v >= version))
    }

    /// Changes waiting to be written.
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.waiting.len()).unwrap_or(0)
    }

    fn take_batch(&self) -> (Vec<Row>, Vec<String>, Vec<Instant>) {
        let Ok(mut s) = self.state.lock() else {
            return Default::default();
        };
        let keys: Vec<String> = s.waiting.keys().take(BATCH).cloned().collect();
        let (mut rows, mut deletes, mut since) = (Vec::new(), Vec::new(), Vec::new());
        for k in keys {
            match s.waiting.remove(&k) {
                Some(Change::Upsert(mut row, t)) => {
                    if row.result_data.is_none() && row.result_digest.is_some() {
                        row.result_data = s.results.get(&k).cloned();
                    }
                    rows.push(*row);
                    since.push(t);
                }
                Some(Change::Delete(t)) => {
                    deletes.push(k);
                    since.push(t);
                }
                None => {}
            }
        }
        (rows, deletes, since)
    }

    /// Puts back what a failed write took, unless a newer change arrived meanwhile.
    fn put_back(&self, rows: Vec<Row>, deletes: Vec<String>) {
        let Ok(mut s) = self.state.lock() else { return };
        let now = Instant::now();
        for row in rows {
            let id = row.id.clone();
            s.waiting.entry(id).or_insert(Change::Upsert(Box::new(row), now));
        }
        for uid in deletes {
            s.waiting.entry(uid).or_insert(Change::Delete(now));
        }
    }

    fn written(&self, rows: &[Row], deletes: &[String]) {
        if let Ok(mut s) = self.state.lock() {
            for r in rows {
                let v = s.written.entry(r.id.clone()).or_insert(0);
                *v = (*v).max(r.version);
                if r.result_data.is_some() {
                    s.results.remove(&r.id);
                }
            }
            for uid in deletes {
                s.written.remove(uid);
            }
            self.metrics.set_mirror_waiting(s.waiting.len());
        }
    }

    /// Runs the mirror until `shutdown` resolves: watches AgentTasks and writes them to the
    /// database named by the Secret `secret` (key `url`) of `namespace`.
    pub async fn run(
        self: Arc<Self>,
        client: Client,
        agents: Store<CogoAgent>,
        (namespace, secret): (String, String),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let watch = {
            let mirror = self.clone();
            let api = Api::<AgentTask>::all(client.clone());
            tokio::spawn(async move { mirror.watch(api, agents).await })
        };
        let secrets: Api<Secret> = Api::namespaced(client, &namespace);
        tokio::select! {
            _ = self.write_loop(&secrets, &secret) => {}
            _ = shutdown => {}
        }
        watch.abort();
    }

    async fn watch(&self, api: Api<AgentTask>, agents: Store<CogoAgent>) {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        let mut listing: HashSet<String> = HashSet::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(t)) | Ok(watcher::Event::InitApply(t)) => {
                    listing.insert(row::row_id(&t));
                    let role = t.spec.agent.as_ref().and_then(|a| {
                        agents
                            .get(&ObjectRef::new(a).within(&t.namespace().unwrap_or_default()))
                            .map(|a| a.spec.role)
                    });
                    let held = self.held_result(&row::row_id(&t));
                    self.observe(row::row(&t, role, held));
                }
                Ok(watcher::Event::Delete(t)) => self.deleted(&row::row_id(&t)),
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitDone) => {
                    if let Ok(mut s) = self.state.lock() {
                        s.listed = Some(std::mem::take(&mut listing));
                    }
                    self.wake.notify_one();
                }
                Err(e) => {
                    warn!(error = %e, "the mirror's watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn write_loop(&self, secrets: &Api<Secret>, secret: &str) {
        let mut db: Option<tokio_postgres::Client> = None;
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.waiting() == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            // A short pause gathers a batch when changes trickle in.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if db.as_ref().is_none_or(|c| c.is_closed()) {
                match connect(secrets, secret).await {
                    Ok(c) => {
                        info!("connected to the Supabase database; schema applied");
                        db = Some(c);
                        backoff = Duration::from_millis(500);
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in = ?backoff, "the Supabase mirror cannot connect");
                        self.metrics.mirror_failed();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            let Some(c) = db.as_ref() else { continue };
            if let Err(e) = self.flush(c).await {
                warn!(error = %describe(&e), retry_in = ?backoff, "the Supabase mirror cannot write");
                self.metrics.mirror_failed();
                db = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            } else {
                backoff = Duration::from_millis(500);
            }
        }
    }

    /// Writes everything waiting, batch by batch; then, once after the initial list, marks
    /// the rows of tasks that no longer exist.
    async fn flush(&self, c: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        loop {
            let (rows, deletes, since) = self.take_batch();
            if rows.is_empty() && deletes.is_empty() {
                break;
            }
            let result = write(c, &rows, &deletes).await;
            if let Err(e) = result {
                self.put_back(rows, deletes);
                return Err(e);
            }
            let now = Instant::now();
            for t in since {
                self.metrics.mirror_lag(now.duration_since(t));
            }
            self.metrics.mirror_written(rows.len() + deletes.len());
            self.written(&rows, &deletes);
        }
        let listed = self.state.lock().ok().and_then(|mut s| s.listed.take());
        if let Some(listed) = listed {
            let ids = serde_json::to_string(&listed.into_iter().collect::<Vec<_>>()).unwrap_or_default();
            let missing = c.query_typed(MARK_MISSING, &[(&ids, Type::TEXT)]).await;
            if let Err(e) = missing {
                if let Ok(mut s) = self.state.lock() {
                    s.listed = Some(serde_json::from_str(&ids).unwrap_or_default());
                }
                return Err(e);
            }
            info!("the mirror holds every task of the cluster");
        }
        Ok(())
    }
}

async fn write(
    c: &tokio_postgres::Client,
    rows: &[Row],
    deletes: &[String],
) -> Result<(), tokio_postgres::Error> {
    if !rows.is_empty() {
        let batch = serde_json::to_string(rows).unwrap_or_else(|_| "[]".into());
        c.query_typed(UPSERT, &[(&batch, Type::TEXT)]).await?;
    }
    if !deletes.is_empty() {
        let ids = serde_json::to_string(deletes).unwrap_or_else(|_| "[]".into());
        c.query_typed(MARK_DELETED, &[(&ids, Type::TEXT)]).await?;
    }
    Ok(())
}

/// Why the mirror cannot connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The Secret or its key is missing.
    #[error("{0}")]
    Config(String),
    /// The database refused or could not be reached.
    #[error("database: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
}

/// A database error with what the server said (tokio-postgres' own text is just "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A connection as tokio-postgres makes it: the client, and the connection to drive.
pub type Connection = tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>;

/// Reads the connection string, connects, and applies the schema.
async fn connect(secrets: &Api<Secret>, secret: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let (client, connection) = connect_raw(secrets, secret).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "the Supabase connection closed");
        }
    });
    client.batch_execute(MIGRATION).await?;
    Ok(client)
}

/// Reads the connection string from the Secret and connects (10 s at most).
pub async fn connect_raw(
    secrets: &Api<Secret>,
    secret: &str,
) -> Result<(tokio_postgres::Client, Connection), ConnectError> {
    let s = secrets
        .get_opt(secret)
        .await
        .map_err(|e| ConnectError::Config(format!("cannot read Secret {secret}: {e}")))?
        .ok_or_else(|| ConnectError::Config(format!("Secret {secret} does not exist")))?;
    let url = s
        .data
        .and_then(|d| d.get("url").map(|v| String::from_utf8_lossy(&v.0).into_owned()))
        .ok_or_else(|| ConnectError::Config(format!("Secret {secret} has no key `url`")))?;
    let config: tokio_postgres::Config = url.parse().map_err(|e| {
        ConnectError::Config(format!(
            "the `url` in Secret {secret} is not a connection string: {e}"
        ))
    })?;
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(10), config.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| ConnectError::Config("connecting timed out after 10 s".into()))??;
    Ok((client, connection))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, version: i64) -> Row {
        Row {
            id: id.into(),
            task_type: "cogo.echo".into(),
            agent_type: "research".into(),
            data: None,
            status: "running".into(),
            result_data: None,
            created_at: None,
            user_id: None,
            namespace: "ns".into(),
            name: id.into(),
            agent: None,
            phase: "Running".into(),
            attempts: 1,
            started_at: None,
            finished_at: None,
            error_message: None,
            session_id: None,
            parent: None,
            priority: 0,
            result_digest: None,
            result_size: None,
            version,
        }
    }

    #[test]
    fn only_the_newest_state_waits_and_older_ones_are_ignored() {
        let m = Mirror::new(Arc::new(Metrics::default()));
        m.observe(row("a", 5));
        m.observe(row("a", 3));
        m.observe(row("b", 1));
        assert_eq!(m.waiting(), 2);
        let (rows, deletes, _) = m.take_batch();
        assert!(deletes.is_empty());
        let a = rows.iter().find(|r| r.id == "a").unwrap();
        assert_eq!(a.version, 5, "the older state did not replace the newer");
        m.written(&rows, &deletes);
        assert!(m.holds("a", 5) && !m.holds("a", 6));
        m.observe(row("a", 4));
        assert_eq!(
            m.waiting(),
            0,
            "a state older than the written one is not written"
        );
    }

    #[test]
    fn a_failed_write_puts_its_rows_back_unless_something_newer_came() {
        let m = Mirror::new(Arc::new(Metrics::default()));
        m.observe(row("a", 1));
        m.observe(row("b", 1));
        let (rows, deletes, _) = m.take_batch();
        m.observe(row("a", 2));
        m.put_back(rows, deletes);
        let (rows, _, _) = m.take_batch();
        let version = |id: &str| rows.iter().find(|r| r.id == id).unwrap().version;
        assert_eq!((version("a"), version("b")), (2, 1));
    }

    #[test]
    fn large_results_travel_with_their_row_and_deletion_forgets_the_task() {
        let m = Mirror::new(Arc::new(Metrics::default()));
        m.hold_result("a", serde_json::json!({"big": 1}));
        let mut r = row("a", 3);
        r.result_digest = Some("sha256:00".into());
        m.observe(r);
        let (rows, deletes, _) = m.take_batch();
        assert_eq!(rows[0].result_data, Some(serde_json::json!({"big": 1})));
        m.written(&rows, &deletes);
        assert!(m.held_result("a").is_none(), "written, the result is let go");
        m.deleted("a");
        let (rows, deletes, _) = m.take_batch();
        assert_eq!((rows.len(), deletes), (0, vec!["a".to_string()]));
        assert!(!m.holds("a", 3));
    }
}
