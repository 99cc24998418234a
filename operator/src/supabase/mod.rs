//! Everything the operator keeps in Supabase's Postgres: the connection (here, with [`tls`]),
//! the mirror of AgentTasks (here), how a task becomes a row ([`row`]), the intake of rows that
//! become tasks ([`intake`]), and the result store ([`results`]).
//!
//! The mirror: every AgentTask's state, upserted into `distributed_agent_tasks` by
//! UID, in batches, asynchronously. The database being down or slow delays the mirror and
//! never the cluster: changes wait in memory (one entry per task, the newest state), writes are
//! retried with backoff, and on start every task is written again and rows of tasks that are
//! gone are marked deleted. A row is only ever updated to a newer version of its task.
//!
//! The connection string comes from a Secret (key `url`) and is read again on every connect,
//! so fixing it takes effect without a restart. Statements are sent unnamed (no prepared
//! statements), so the mirror works through a transaction-mode pooler such as PgBouncer.

pub mod intake;
pub mod results;
pub mod row;
pub use cogo_db::{ConnectError, Connection, connect_url, describe, tls};

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use cogo_api::{AgentTask, CogoAgent};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    runtime::{reflector::ObjectRef, reflector::Store, watcher},
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_postgres::types::Type;
use tracing::{info, warn};

use crate::{metrics::Metrics, tokens::auth::Keys};
use row::Row;

/// The schema the mirror writes to, applied (idempotently) on every connect: every migration
/// in `supabase/migrations/`, in order.
pub const MIGRATION: &str = concat!(
    include_str!("../../../supabase/migrations/20261125000000_cogo_tasks.sql"),
    include_str!("../../../supabase/migrations/20261129000000_cogo_task_results.sql"),
    include_str!("../../../supabase/migrations/20261130000000_cogo_indexes_graphs.sql"),
    include_str!("../../../supabase/migrations/20261201000000_cogo_gateway.sql"),
    include_str!("../../../supabase/migrations/20261202000000_cogo_trace.sql"),
    include_str!("../../../supabase/migrations/20261203000000_cogo_task_items.sql"),
);

/// The most rows one write carries.
pub const BATCH: usize = 500;

/// Tasks whose newest state may wait in memory; past this the mirror forgets the waiting
/// changes and writes every task again from the cluster (a resync), so memory stays bounded.
pub const MAX_WAITING: usize = 200_000;

const UPSERT: &str = "
insert into public.distributed_agent_tasks as t
  (id, type, agent_type, data, status, result_data, created_at, user_id, namespace, name, agent, phase,
   attempts, started_at, finished_at, updated_at, error_message, session_id, parent, priority,
   result_digest, result_size, version, cluster, task_uid, deleted_at)
select r.id, r.type, r.agent_type, r.data, r.status,
       -- A result too large for status comes from the result store, by its digest.
       case when r.result_digest is null then r.result_data
            else (select x.result from public.cogo_task_results x where x.id = r.id and x.digest = r.result_digest)
       end,
       coalesce(r.created_at, now()),
       (select u.id from auth.users u where u.id = r.user_id), r.namespace, r.name, r.agent, r.phase,
       r.attempts, r.started_at, r.finished_at, now(), r.error_message, r.session_id, r.parent, r.priority,
       r.result_digest, r.result_size, r.version, r.cluster, r.task_uid, case when r.deleted then now() end
from jsonb_to_recordset($1::jsonb) as r(id uuid, type text, agent_type text, data jsonb, status text,
  result_data jsonb, created_at timestamptz, user_id uuid, namespace text, name text, agent text, phase text,
  attempts int, started_at timestamptz, finished_at timestamptz, error_message text, session_id text,
  parent text, priority int, result_digest text, result_size bigint, version bigint, cluster text,
  task_uid uuid, deleted boolean)
on conflict (id) do update set
  type = excluded.type, agent_type = excluded.agent_type, data = excluded.data, status = excluded.status,
  -- The row keeps a large result it holds while its digest stays the same; a task that ended
  -- without one (a failure after a superseded attempt's result) holds none.
  result_data = case
    when excluded.result_digest is null or excluded.result_data is not null then excluded.result_data
    when t.result_digest = excluded.result_digest then t.result_data
  end,
  user_id = excluded.user_id,
  namespace = excluded.namespace, name = excluded.name, agent = excluded.agent, phase = excluded.phase,
  attempts = excluded.attempts, started_at = excluded.started_at, finished_at = excluded.finished_at,
  updated_at = now(), error_message = excluded.error_message, session_id = excluded.session_id,
  parent = excluded.parent, priority = excluded.priority, result_digest = excluded.result_digest,
  result_size = excluded.result_size, version = excluded.version, cluster = excluded.cluster,
  task_uid = excluded.task_uid,
  deleted_at = case when excluded.deleted_at is not null then coalesce(t.deleted_at, excluded.deleted_at) end
-- Only the row's own task writes it (a row written before task_uid existed has none yet).
where (t.task_uid is null or t.task_uid = excluded.task_uid)
  and (t.version < excluded.version
    -- The same state again clears a deletion mark a live task's row should not have, and
    -- marks a deletion the row missed.
    or (t.version = excluded.version and (t.deleted_at is null) <> (excluded.deleted_at is null)))";

/// Removes stored results that rows of final tasks hold already, or no longer name (those of
/// superseded attempts); `$1` lists the rows just written.
const FORGET_RESULTS: &str = "
delete from public.cogo_task_results x using public.distributed_agent_tasks t
where x.id = t.id and x.id in (select (jsonb_array_elements_text($1::jsonb))::uuid)
  and (t.finished_at is not null or t.deleted_at is not null)
  and (t.result_digest is distinct from x.digest or t.result_data is not null)";

/// [`FORGET_RESULTS`] for every row.
const FORGET_ALL_RESULTS: &str = "
delete from public.cogo_task_results x using public.distributed_agent_tasks t
where x.id = t.id
  and (t.finished_at is not null or t.deleted_at is not null)
  and (t.result_digest is distinct from x.digest or t.result_data is not null)";

/// Marks the rows of this cluster's tasks that the list at resourceVersion `$2` did not hold
/// (`$1`): rows written from a newer state are of tasks created since, and stay. The low
/// [`row::REVISION_BITS`] bits of a version are the resourceVersion it was written from. A row
/// with no name is no task yet (a pending row, which may name the namespace it is for).
const MARK_MISSING: &str = "
update public.distributed_agent_tasks set deleted_at = now(), updated_at = now()
where deleted_at is null and name is not null and (cluster = $3 or cluster is null)
  and (version & 1099511627775) <= $2
  and id not in (select (jsonb_array_elements_text($1::jsonb))::uuid)";

/// A row waiting to be written, and since when a change of it waits.
type Waiting = (Box<Row>, Instant);

#[derive(Default)]
struct State {
    waiting: HashMap<String, Waiting>,
    /// The newest version written, by row id.
    written: HashMap<String, i64>,
    /// Set by a (re)list of AgentTasks: rows of tasks that no longer exist are to be marked.
    sweep: bool,
    /// The most changes that may wait.
    max_waiting: usize,
    /// Rows written whose stored results could not be removed yet (the database failed
    /// between the write and the removal): removed with the next write.
    unforgotten: HashSet<String>,
}

/// Rows whose stored results wait for removal, past which every final row's are removed at
/// once instead.
const MAX_UNFORGOTTEN: usize = 10_000;

/// The mirror's shared state: the task controller's watch of AgentTasks feeds it (see
/// [`Mirror::see`]; the mirror keeps no watch of its own), the writer drains it.
pub struct Mirror {
    state: Mutex<State>,
    wake: Notify,
    /// Asks for every task to be noted again from the task cache, after waiting changes were
    /// dropped.
    resync: Notify,
    metrics: Arc<Metrics>,
    cluster: String,
    keys: Keys,
    /// Agents, for the role of a task that names its agent.
    agents: Store<CogoAgent>,
    /// The task cache the changes come from (the task controller's), for a resync.
    tasks: OnceLock<Store<AgentTask>>,
}

impl Mirror {
    /// An empty mirror of the cluster named `cluster` (see [`cluster_id`]), which trusts the
    /// seals (see [`crate::seal`]) made with `keys` and reads agents' roles from `agents`.
    pub fn new(metrics: Arc<Metrics>, cluster: String, keys: Keys, agents: Store<CogoAgent>) -> Arc<Mirror> {
        Arc::new(Mirror {
            state: Mutex::new(State {
                max_waiting: MAX_WAITING,
                ..State::default()
            }),
            wake: Notify::new(),
            resync: Notify::new(),
            metrics,
            cluster,
            keys,
            agents,
            tasks: OnceLock::new(),
        })
    }

    /// Takes `tasks`, the cache of the watch whose changes [`Mirror::see`] is given, to note
    /// every task again from after a resync.
    pub fn follow(&self, tasks: Store<AgentTask>) {
        let _ = self.tasks.set(tasks);
    }

    /// Notes what the watch of AgentTasks saw. A deleted task's final state is written with
    /// the deletion mark: a task deleted before its last change reached the table (a TTL of 0,
    /// a namespace deleted, a parent's cascade) still ends with its final phase. The end of a
    /// (re)list has the rows of tasks that are gone marked.
    pub fn see(&self, event: &watcher::Event<AgentTask>) {
        match event {
            watcher::Event::Apply(t) | watcher::Event::InitApply(t) => self.observe(self.row_of(t)),
            watcher::Event::Delete(t) => {
                let mut r = self.row_of(t);
                r.deleted = true;
                self.observe(r);
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => self.listed(),
        }
    }

    /// The row of `task`, with its agent's role.
    fn row_of(&self, task: &AgentTask) -> Row {
        let role = task.spec.agent.as_ref().and_then(|a| {
            self.agents
                .get(&ObjectRef::new(a).within(&task.namespace().unwrap_or_default()))
                .map(|a| a.spec.role)
        });
        row::row(task, role, &self.keys)
    }

    /// Every task was noted: rows of tasks that no longer exist are marked with the next write.
    fn listed(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.sweep = true;
        }
        self.wake.notify_one();
    }

    /// The id of `task`'s row (see [`row::row_id`]).
    pub fn row_id(&self, task: &AgentTask) -> String {
        row::row_id(task, &self.keys)
    }

    /// The name of the cluster whose rows this mirror writes.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Notes the newest state of a task; a deleted task's final state (`row.deleted`) is
    /// written with its deletion mark, and replaces nothing newer.
    pub fn observe(&self, mut row: Row) {
        row.cluster = Some(self.cluster.clone());
        let Ok(mut s) = self.state.lock() else { return };
        if !row.deleted && s.written.get(&row.id).is_some_and(|v| *v >= row.version) {
            return;
        }
        if let Some((old, _)) = s.waiting.get(&row.id)
            && (old.version > row.version || (old.version == row.version && (old.deleted || !row.deleted)))
        {
            return;
        }
        let since = match s.waiting.get(&row.id) {
            Some((_, t)) => *t,
            _ => Instant::now(),
        };
        if s.waiting.len() >= s.max_waiting && !s.waiting.contains_key(&row.id) {
            // Memory stays bounded; the cluster still holds every task, so a fresh list writes
            // them all again (what was written before is forgotten too, so nothing is skipped).
            warn!(
                waiting = s.waiting.len(),
                "the mirror is too far behind; dropping waiting changes and listing every task again"
            );
            s.waiting.clear();
            s.written.clear();
            self.metrics.mirror_failed();
            self.resync.notify_one();
        }
        s.waiting.insert(row.id.clone(), (Box::new(row), since));
        self.metrics.set_mirror_waiting(s.waiting.len());
        drop(s);
        self.wake.notify_one();
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

    fn take_batch(&self) -> (Vec<Row>, Vec<Instant>) {
        let Ok(mut s) = self.state.lock() else {
            return Default::default();
        };
        let keys: Vec<String> = s.waiting.keys().take(BATCH).cloned().collect();
        keys.iter()
            .filter_map(|k| s.waiting.remove(k))
            .map(|(row, t)| (*row, t))
            .unzip()
    }

    /// Puts back what a failed write took, unless a newer change arrived meanwhile.
    fn put_back(&self, rows: Vec<Row>) {
        let Ok(mut s) = self.state.lock() else { return };
        let now = Instant::now();
        for row in rows {
            s.waiting.entry(row.id.clone()).or_insert((Box::new(row), now));
        }
    }

    fn written(&self, rows: &[Row]) {
        if let Ok(mut s) = self.state.lock() {
            for r in rows {
                if r.deleted {
                    // Gone from the cluster: nothing newer will come.
                    s.written.remove(&r.id);
                    continue;
                }
                let v = s.written.entry(r.id.clone()).or_insert(0);
                *v = (*v).max(r.version);
            }
            self.metrics.set_mirror_waiting(s.waiting.len());
        }
    }

    /// Runs the mirror until `shutdown` resolves: writes the changes it is given (see
    /// [`Mirror::see`]) to the database named by the Secret `secret` (key `url`) of
    /// `namespace`. On shutdown it writes what waits, for a few seconds at most, so a clean
    /// stop loses nothing to the next leader.
    pub async fn run(
        self: Arc<Self>,
        client: Client,
        (namespace, secret): (String, String),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let tasks = Api::<AgentTask>::all(client.clone());
        let resync = {
            let mirror = self.clone();
            tokio::spawn(async move { mirror.resync().await })
        };
        let secrets: Api<Secret> = Api::namespaced(client, &namespace);
        let mut db = None;
        tokio::select! {
            _ = self.write_loop(&secrets, &secret, &tasks, &mut db) => {}
            _ = shutdown => {}
        }
        resync.abort();
        let waiting = self.waiting();
        if waiting > 0 {
            let last = async {
                let c = match db.filter(|c: &tokio_postgres::Client| !c.is_closed()) {
                    Some(c) => c,
                    None => connect(&secrets, &secret).await.map_err(|e| e.to_string())?,
                };
                self.flush(&c, None).await.map_err(|e| describe(&e))
            };
            match tokio::time::timeout(SHUTDOWN_FLUSH, last).await {
                Ok(Ok(())) => info!(rows = waiting, "the mirror wrote what waited before stopping"),
                Ok(Err(e)) => {
                    warn!(error = %e, left = self.waiting(), "the mirror stopped with changes unwritten")
                }
                Err(_) => warn!(
                    left = self.waiting(),
                    "the mirror stopped with changes unwritten (timed out)"
                ),
            }
        }
    }

    /// Notes every cached task again each time waiting changes were dropped (see
    /// [`Mirror::observe`]), no faster than the writer drains them, then has rows of tasks that
    /// are gone marked.
    async fn resync(&self) {
        loop {
            self.resync.notified().await;
            // Before the cache is taken the watch's first list notes every task anyway.
            let Some(tasks) = self.tasks.get() else { continue };
            let max = self.state.lock().map(|s| s.max_waiting).unwrap_or(MAX_WAITING);
            for t in tasks.state() {
                while self.waiting() >= (max / 2).max(1) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.observe(self.row_of(&t));
            }
            info!("the mirror noted every cached task again");
            self.listed();
        }
    }

    async fn write_loop(
        &self,
        secrets: &Api<Secret>,
        secret: &str,
        tasks: &Api<AgentTask>,
        db: &mut Option<tokio_postgres::Client>,
    ) {
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
                        self.metrics.mirror_connected();
                        *db = Some(c);
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
            if let Err(e) = self.flush(c, Some(tasks)).await {
                warn!(error = %describe(&e), retry_in = ?backoff, "the Supabase mirror cannot write");
                self.metrics.mirror_failed();
                *db = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            } else {
                backoff = Duration::from_millis(500);
            }
        }
    }

    /// Writes everything waiting, batch by batch; then, after a (re)list of AgentTasks, marks
    /// the rows of this cluster's tasks that no longer exist (when `tasks` is given).
    async fn flush(
        &self,
        c: &tokio_postgres::Client,
        tasks: Option<&Api<AgentTask>>,
    ) -> Result<(), tokio_postgres::Error> {
        loop {
            let (rows, since) = self.take_batch();
            if rows.is_empty() {
                break;
            }
            let rows = match write(c, &rows).await {
                Ok(()) => rows,
                Err(e) if refused(&e) => self.write_one_by_one(c, rows).await?,
                Err(e) => {
                    self.put_back(rows);
                    return Err(e);
                }
            };
            self.forget_results(c, &rows).await;
            let now = Instant::now();
            for t in since {
                self.metrics.mirror_lag(now.duration_since(t));
            }
            self.metrics.mirror_written(rows.len());
            self.written(&rows);
        }
        // Stored results a failed removal left behind go as soon as the database is back.
        if self.state.lock().is_ok_and(|s| !s.unforgotten.is_empty()) {
            self.forget_results(c, &[]).await;
        }
        let sweep = self.state.lock().is_ok_and(|mut s| std::mem::take(&mut s.sweep));
        if let (true, Some(tasks)) = (sweep, tasks) {
            match self.sweep(c, tasks).await {
                Ok(marked) => info!(marked, "the mirror holds every task of the cluster"),
                Err(e) => {
                    if let Ok(mut s) = self.state.lock() {
                        s.sweep = true;
                    }
                    match e {
                        SweepError::Database(e) => return Err(e),
                        SweepError::List(e) => {
                            warn!(error = %e, "cannot list AgentTasks to mark rows of deleted tasks")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `rows` one at a time after the database refused their batch: one row it refuses
    /// (bad data it could not be cleaned of) must not hold back the others. A refused row is
    /// reported and counted, and taken as written so it blocks no TTL deletion.
    async fn write_one_by_one(
        &self,
        c: &tokio_postgres::Client,
        rows: Vec<Row>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let mut done = Vec::new();
        let mut rest = rows.into_iter();
        while let Some(row) = rest.next() {
            match write(c, std::slice::from_ref(&row)).await {
                Ok(()) => done.push(row),
                Err(e) if refused(&e) => {
                    warn!(
                        row = %row.id, namespace = %row.namespace, name = %row.name, error = %describe(&e),
                        "the database refused this task's row; it is set aside and the others are written"
                    );
                    self.metrics.mirror_refused();
                    self.written(std::slice::from_ref(&row));
                }
                Err(e) => {
                    self.written(&done);
                    self.put_back(std::iter::once(row).chain(rest).collect());
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Marks the rows of this cluster's tasks that a fresh list does not hold; returns how many.
    async fn sweep(&self, c: &tokio_postgres::Client, tasks: &Api<AgentTask>) -> Result<u64, SweepError> {
        let mut params = kube::api::ListParams::default().limit(500);
        let (mut ids, mut at) = (Vec::new(), None);
        loop {
            let page = tasks.list_metadata(&params).await?;
            at = at.or(page.metadata.resource_version.clone());
            ids.extend(page.items.iter().flat_map(|m| row::row_ids_of(&m.metadata)));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let Some(at) = row::revision(at.as_deref()) else {
            // Which rows are older than the list cannot be told: leave them all.
            warn!(
                resource_version = at.as_deref().unwrap_or_default(),
                "the API server's resourceVersions are not numbers; rows of deleted tasks are not marked"
            );
            return Ok(0);
        };
        let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        let marked = c
            .execute_typed(
                MARK_MISSING,
                &[(&ids, Type::TEXT), (&at, Type::INT8), (&self.cluster, Type::TEXT)],
            )
            .await?;
        Ok(marked)
    }
}

/// The name of this cluster in the mirror's rows: `configured`, else the UID of namespace
/// kube-system (stable for the cluster's life), else `default` (said in the log).
pub async fn cluster_id(client: &Client, configured: Option<String>) -> String {
    if let Some(name) = configured.filter(|n| !n.is_empty()) {
        return name;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match namespaces.get("kube-system").await.map(|n| n.metadata.uid) {
        Ok(Some(uid)) => uid,
        Ok(None) => "default".into(),
        Err(e) => {
            warn!(error = %e, "cannot read namespace kube-system to name this cluster; using `default`");
            "default".into()
        }
    }
}

/// Why rows of deleted tasks could not be marked.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error("listing AgentTasks: {0}")]
    List(#[from] kube::Error),
    #[error("database: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
}

/// How long a stopping mirror may spend writing what waits.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Whether the database refused the data itself (SQLSTATE class 22, data exception, or 23,
/// integrity constraint violation), so the same write would fail again.
fn refused(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| matches!(&d.code().code()[..2], "22" | "23"))
}

async fn write(c: &tokio_postgres::Client, rows: &[Row]) -> Result<(), tokio_postgres::Error> {
    if !rows.is_empty() {
        let batch = serde_json::to_string(rows).unwrap_or_else(|_| "[]".into());
        c.query_typed(UPSERT, &[(&batch, Type::TEXT)]).await?;
    }
    Ok(())
}

impl Mirror {
    /// Removes stored results the rows just written no longer need, with those a failed
    /// removal left behind; a failure only delays that (the ids wait for the next write).
    async fn forget_results(&self, c: &tokio_postgres::Client, rows: &[Row]) {
        let mut ids: Vec<String> = rows
            .iter()
            .filter(|r| r.deleted || r.finished_at.is_some())
            .map(|r| r.id.clone())
            .collect();
        let waiting = self
            .state
            .lock()
            .map(|mut s| std::mem::take(&mut s.unforgotten))
            .unwrap_or_default();
        let all = waiting.len() > MAX_UNFORGOTTEN;
        ids.extend(waiting);
        if ids.is_empty() {
            return;
        }
        let done = if all {
            c.query_typed(FORGET_ALL_RESULTS, &[]).await
        } else {
            let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
            c.query_typed(FORGET_RESULTS, &[(&list, Type::TEXT)]).await
        };
        if let Err(e) = done {
            warn!(error = %describe(&e), rows = ids.len(), "cannot remove stored results that rows hold yet; trying again with the next write");
            if let Ok(mut s) = self.state.lock() {
                s.unforgotten.extend(ids);
            }
        }
    }
}

/// Replaces the NUL character, which PostgreSQL cannot store in text or jsonb, with U+FFFD in
/// every string and key of `v`; true when something changed.
pub fn sanitize(v: &mut Value) -> bool {
    let mut changed = false;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => changed |= sanitize_text(s),
            Value::Array(a) => stack.extend(a.iter_mut()),
            Value::Object(o) => {
                if o.keys().any(|k| k.contains('\0')) {
                    let old = std::mem::take(o);
                    *o = old
                        .into_iter()
                        .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v))
                        .collect();
                    changed = true;
                }
                stack.extend(o.values_mut());
            }
            _ => {}
        }
    }
    changed
}

/// [`sanitize`] for a string.
pub fn sanitize_text(s: &mut String) -> bool {
    let dirty = s.contains('\0');
    if dirty {
        *s = s.replace('\0', "\u{FFFD}");
    }
    dirty
}

/// Reads the connection string, connects, and applies the schema.
async fn connect(secrets: &Api<Secret>, secret: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let (client, connection) = connect_raw(secrets, secret).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "the Supabase connection closed");
        }
    });
    client.batch_execute(&cogo_db::locked_schema(MIGRATION)).await?;
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
    let data = s.data.unwrap_or_default();
    let url = data
        .get("url")
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .ok_or_else(|| ConnectError::Config(format!("Secret {secret} has no key `url`")))?;
    let ca = data.get("ca.crt").map(|v| v.0.as_slice());
    connect_url(&url, ca).await.map_err(|e| match e {
        ConnectError::Config(why) => ConnectError::Config(format!("Secret {secret}: {why}")),
        other => other,
    })
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
            task_uid: "00000000-0000-4000-8000-000000000001".into(),
            cluster: None,
            deleted: false,
        }
    }

    fn mirror() -> Arc<Mirror> {
        let key = crate::tokens::auth::Key {
            id: "k".into(),
            secret: vec![1; 32],
        };
        Mirror::new(
            Arc::new(Metrics::default()),
            "c1".into(),
            Keys {
                current: key,
                previous: vec![],
            },
            kube::runtime::reflector::store().0,
        )
    }

    fn task(name: &str, rv: &str, phase: &str) -> AgentTask {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                         "uid": format!("00000000-0000-4000-8000-{:0>12}", name.len())},
            "spec": {"type": "cogo.echo", "agent": "a", "input": {}},
            "status": {"phase": phase, "attempt": 1},
        }))
        .unwrap()
    }

    #[test]
    fn the_shared_watch_feeds_the_mirror_and_a_deletion_carries_the_final_state() {
        let m = mirror();
        m.see(&watcher::Event::Init);
        m.see(&watcher::Event::InitApply(task("a", "10", "Running")));
        m.see(&watcher::Event::InitDone);
        assert!(
            m.state.lock().unwrap().sweep,
            "the end of a list has gone tasks' rows marked"
        );
        m.see(&watcher::Event::Apply(task("a", "11", "Succeeded")));
        let (rows, _) = m.take_batch();
        assert_eq!(rows.len(), 1, "one row per task, its newest state");
        assert_eq!((rows[0].phase.as_str(), rows[0].deleted), ("Succeeded", false));
        m.see(&watcher::Event::Delete(task("a", "11", "Succeeded")));
        let (rows, _) = m.take_batch();
        assert!(rows[0].deleted && rows[0].phase == "Succeeded", "{rows:?}");
    }

    #[tokio::test]
    async fn a_resync_notes_every_cached_task_again_then_marks_gone_ones() {
        use kube::runtime::reflector;
        let m = mirror();
        let (store, mut writer) = reflector::store();
        for name in ["a", "bb", "ccc"] {
            writer.apply_watcher_event(&watcher::Event::Apply(task(name, "5", "Pending")));
        }
        m.follow(store);
        let resync = {
            let m = m.clone();
            tokio::spawn(async move { m.resync().await })
        };
        m.resync.notify_one();
        for _ in 0..100 {
            if m.state.lock().unwrap().sweep {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        resync.abort();
        assert!(m.state.lock().unwrap().sweep);
        let (mut rows, _) = m.take_batch();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "bb", "ccc"]);
    }

    #[test]
    fn only_the_newest_state_waits_and_older_ones_are_ignored() {
        let m = mirror();
        m.observe(row("a", 5));
        m.observe(row("a", 3));
        m.observe(row("b", 1));
        assert_eq!(m.waiting(), 2);
        let (rows, _) = m.take_batch();
        let a = rows.iter().find(|r| r.id == "a").unwrap();
        assert_eq!(a.version, 5, "the older state did not replace the newer");
        assert_eq!(a.cluster.as_deref(), Some("c1"), "rows name their cluster");
        m.written(&rows);
        assert!(m.holds("a", 5) && !m.holds("a", 6));
        m.observe(row("a", 4));
        assert_eq!(
            m.waiting(),
            0,
            "a state older than the written one is not written"
        );
    }

    #[test]
    fn the_sweep_compares_the_revision_bits_of_versions() {
        let mask = (1i64 << row::REVISION_BITS) - 1;
        assert!(MARK_MISSING.contains(&format!("version & {mask})")));
    }

    #[test]
    fn a_failed_write_puts_its_rows_back_unless_something_newer_came() {
        let m = mirror();
        m.observe(row("a", 1));
        m.observe(row("b", 1));
        let (rows, _) = m.take_batch();
        m.observe(row("a", 2));
        m.put_back(rows);
        let (rows, _) = m.take_batch();
        let version = |id: &str| rows.iter().find(|r| r.id == id).unwrap().version;
        assert_eq!((version("a"), version("b")), (2, 1));
    }

    #[test]
    fn a_deletion_keeps_the_final_state_that_waits() {
        let m = mirror();
        let mut last = row("a", 7);
        last.phase = "Succeeded".into();
        m.observe(last.clone());
        // Deleted before the final state was written: the deletion carries that state.
        let mut gone = last.clone();
        gone.deleted = true;
        m.observe(gone.clone());
        let (rows, _) = m.take_batch();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].deleted && rows[0].phase == "Succeeded");
        m.written(&rows);
        assert!(!m.holds("a", 7), "a deleted task is forgotten once written");
        // Written already, then deleted: the deletion is still written, and a late live state
        // of the same version does not undo it.
        m.observe(row("b", 3));
        let (rows, _) = m.take_batch();
        m.written(&rows);
        let mut gone = row("b", 3);
        gone.deleted = true;
        m.observe(gone);
        m.observe(row("b", 3));
        let (rows, _) = m.take_batch();
        assert!(rows.len() == 1 && rows[0].deleted, "{rows:?}");
    }

    #[tokio::test]
    async fn too_much_waiting_drops_it_all_and_asks_for_a_resync() {
        let m = mirror();
        m.state.lock().unwrap().max_waiting = 2;
        m.observe(row("written", 1));
        let (rows, _) = m.take_batch();
        m.written(&rows);
        m.observe(row("a", 1));
        m.observe(row("b", 1));
        m.observe(row("a", 2));
        assert_eq!(
            m.waiting(),
            2,
            "a newer state of a waiting task takes no more room"
        );
        m.observe(row("c", 1));
        assert_eq!(m.waiting(), 1, "the waiting changes were dropped");
        assert!(
            !m.holds("written", 1),
            "forgotten, so the fresh list writes it again"
        );
        tokio::time::timeout(std::time::Duration::from_millis(100), m.resync.notified())
            .await
            .expect("every cached task is to be noted again");
    }

    #[test]
    fn nul_characters_are_cleaned_from_strings_and_keys() {
        let mut v = serde_json::json!({"a\0b": ["x\0", 1, {"k": "ok"}]});
        assert!(sanitize(&mut v));
        assert_eq!(
            v,
            serde_json::json!({"a\u{FFFD}b": ["x\u{FFFD}", 1, {"k": "ok"}]})
        );
        assert!(!sanitize(&mut v), "clean values stay as they are");
    }
}
