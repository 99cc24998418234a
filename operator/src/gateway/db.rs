//! The gateway's database: Supabase's Postgres, through a few shared connections. It reads
//! `user_roles`, writes chat messages, task rows for the operator's intake, and the audit.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OnceCell, RwLock, mpsc};
use tokio_postgres::{Client, error::SqlState, types::Type};
use tracing::warn;

use super::perms::RoleRow;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached, or refused the query.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The user is not in `auth.users`.
    #[error("the user is not in auth.users")]
    UnknownUser,
    /// The database cannot store a value of the request (a NUL character, say).
    #[error("the database refuses a value of the request: {0}")]
    Invalid(String),
    /// The database answered the statement with an error of its own (a missing grant, say):
    /// trying again will not help.
    #[error("the database refuses the statement: {0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> DbError {
        match e.code() {
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => DbError::UnknownUser,
            // Class 22, data exceptions: the value, not the database, is at fault.
            Some(c) if c.code().starts_with("22") => DbError::Invalid(cogo_db::describe(&e)),
            Some(_) => DbError::Refused(cogo_db::describe(&e)),
            // No SQLSTATE: the connection failed.
            None => DbError::Unavailable(cogo_db::describe(&e)),
        }
    }
}

/// How long one statement may take; a connection that does not answer in time is dropped.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed connect, requests fail at once for this long instead of each trying again.
const CONNECT_BACKOFF: Duration = Duration::from_secs(2);

/// A few connections, used round robin; one that closed is made again on next use.
pub struct Db {
    url: String,
    ca: Option<Vec<u8>>,
    slots: Vec<RwLock<Option<Arc<Client>>>>,
    next: AtomicUsize,
    migrated: OnceCell<()>,
    /// When a connect last failed.
    failed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A row of the audit: who asked for what, and how it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditRecord {
    /// The user, once the token was verified.
    pub user_id: Option<String>,
    /// The caller's address.
    pub address: String,
    /// The action (`status`, `agent_task`, ...).
    pub action: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The error code, when it failed.
    pub code: Option<String>,
    /// The task it created.
    pub task: Option<String>,
    /// More, such as the task type.
    pub detail: Option<String>,
}

const ROLES: &str = "select role::text, permissions::text[], domain::text, coalesce(is_active, true)
from public.user_roles where user_id = $1::uuid";

const MESSAGE: &str =
    "insert into public.chat_messages_realtime (id, session_id, user_id, content, sender, task)
values ($1::uuid, $2, $3::uuid, $4, $5, $6)";

const TASK: &str =
    "insert into public.distributed_agent_tasks (id, type, agent_type, data, status, user_id, session_id, trace_parent, namespace)
values ($1::uuid, $2, $3, $4::jsonb, 'pending', $5::uuid, $6, $7, $8)";

const AUDIT: &str = "insert into public.cogo_gateway_audit (user_id, address, action, status, code, task, detail)
select u::uuid, a, ac, s, c, t, d from unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[])
as x(u, a, ac, s, c, t, d)";

impl Db {
    /// Connections to `url` (a libpq connection string, `ca` its CA), `size` of them.
    pub fn new(url: String, ca: Option<Vec<u8>>, size: usize) -> Db {
        Db {
            url,
            ca,
            slots: (0..size.max(1)).map(|_| RwLock::new(None)).collect(),
            next: AtomicUsize::new(0),
            migrated: OnceCell::new(),
            failed_at: std::sync::Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Arc<Client>, DbError> {
        let (client, connection) = cogo_db::connect_url(&self.url, self.ca.as_deref())
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "the gateway's database connection ended");
            }
        });
        // The schema, once per process (idempotent, and locked against other writers of it).
        self.migrated
            .get_or_try_init(|| async {
                client
                    .batch_execute(&cogo_db::locked_schema(crate::supabase::MIGRATION))
                    .await
                    .map_err(DbError::from)
            })
            .await?;
        Ok(Arc::new(client))
    }

    /// A live connection, and its slot.
    async fn client(&self) -> Result<(usize, Arc<Client>), DbError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[index];
        if let Some(c) = slot.read().await.as_ref().filter(|c| !c.is_closed()) {
            return Ok((index, c.clone()));
        }
        let mut held = slot.write().await;
        if let Some(c) = held.as_ref().filter(|c| !c.is_closed()) {
            return Ok((index, c.clone()));
        }
        let failed = *self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_some_and(|at| at.elapsed() < CONNECT_BACKOFF) {
            return Err(DbError::Unavailable("the last connect failed moments ago".into()));
        }
        let fresh = tokio::time::timeout(QUERY_TIMEOUT, self.connect())
            .await
            .unwrap_or_else(|_| Err(DbError::Unavailable("connecting took over 10 s".into())));
        let fresh = fresh.inspect_err(|_| {
            *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        })?;
        *held = Some(fresh.clone());
        Ok((index, fresh))
    }

    /// Runs `statement` on a live connection within [`QUERY_TIMEOUT`]; a connection that did
    /// not answer in time is dropped, so the next use of its slot connects again.
    async fn run<T, F>(&self, statement: impl FnOnce(Arc<Client>) -> F) -> Result<T, DbError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let (index, client) = self.client().await?;
        match tokio::time::timeout(QUERY_TIMEOUT, statement(client.clone())).await {
            Ok(result) => Ok(result?),
            Err(_) => {
                let mut held = self.slots[index].write().await;
                if held.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                    *held = None;
                }
                Err(DbError::Unavailable(format!(
                    "the database did not answer within {} s",
                    QUERY_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// The user's row in `user_roles`, if any.
    pub async fn roles(&self, user_id: &str) -> Result<Option<RoleRow>, DbError> {
        let row = self
            .run(|db| async move { db.query_typed_opt(ROLES, &[(&user_id, Type::TEXT)]).await })
            .await?;
        Ok(row.map(|r| RoleRow {
            role: r.get(0),
            permissions: r
                .get::<_, Option<Vec<Option<String>>>>(1)
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .collect(),
            domain: r.get(2),
            is_active: r.get(3),
        }))
    }

    /// Stores a chat message (`sender` `user` or `assistant`).
    pub async fn message(
        &self,
        (id, session_id): (&str, &str),
        user_id: &str,
        content: &str,
        (sender, task): (&str, Option<&str>),
    ) -> Result<(), DbError> {
        self.run(|db| async move {
            db.query_typed(
                MESSAGE,
                &[
                    (&id, Type::TEXT),
                    (&session_id, Type::VARCHAR),
                    (&user_id, Type::TEXT),
                    (&content, Type::TEXT),
                    (&sender, Type::TEXT),
                    (&task, Type::TEXT),
                ],
            )
            .await
        })
        .await?;
        Ok(())
    }

    /// Inserts a pending task row for the operator's intake, made by `user_id` in the chat
    /// session `session_id`, inside the span `trace_parent` names, for the intake of
    /// `namespace` (the one the gateway serves).
    pub async fn task(
        &self,
        id: &str,
        (task_type, agent_type): (&str, &str),
        input: &serde_json::Value,
        (user_id, session_id): (&str, Option<&str>),
        (trace_parent, namespace): (Option<&str>, &str),
    ) -> Result<(), DbError> {
        let data = input.to_string();
        let data = &data;
        self.run(|db| async move {
            db.query_typed(
                TASK,
                &[
                    (&id, Type::TEXT),
                    (&task_type, Type::VARCHAR),
                    (&agent_type, Type::VARCHAR),
                    (data, Type::TEXT),
                    (&user_id, Type::TEXT),
                    (&session_id, Type::TEXT),
                    (&trace_parent, Type::TEXT),
                    (&namespace, Type::TEXT),
                ],
            )
            .await
        })
        .await?;
        Ok(())
    }

    /// The result the mirror copied into a task's row, once it has.
    pub async fn result(&self, id: &str) -> Result<Option<serde_json::Value>, DbError> {
        let row = self
            .run(|db| async move {
                db.query_typed_opt(
                    "select result_data::text from public.distributed_agent_tasks where id = $1::uuid",
                    &[(&id, Type::TEXT)],
                )
                .await
            })
            .await?;
        Ok(row
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn audit(&self, batch: &[AuditRecord]) -> Result<(), DbError> {
        // PostgreSQL's text holds no NUL.
        let clean = |s: &str| s.replace('\0', "\u{fffd}");
        let col =
            |f: fn(&AuditRecord) -> Option<&str>| batch.iter().map(|r| f(r).map(clean)).collect::<Vec<_>>();
        let users = col(|r| r.user_id.as_deref());
        let addresses = col(|r| Some(&r.address));
        let actions = col(|r| Some(&r.action));
        let statuses: Vec<i32> = batch.iter().map(|r| i32::from(r.status)).collect();
        let codes = col(|r| r.code.as_deref());
        let tasks = col(|r| r.task.as_deref());
        let details = col(|r| r.detail.as_deref());
        let columns = (&users, &addresses, &actions, &statuses, &codes, &tasks, &details);
        self.run(|db| async move {
            let (users, addresses, actions, statuses, codes, tasks, details) = columns;
            db.query_typed(
                AUDIT,
                &[
                    (users, Type::TEXT_ARRAY),
                    (addresses, Type::TEXT_ARRAY),
                    (actions, Type::TEXT_ARRAY),
                    (statuses, Type::INT4_ARRAY),
                    (codes, Type::TEXT_ARRAY),
                    (tasks, Type::TEXT_ARRAY),
                    (details, Type::TEXT_ARRAY),
                ],
            )
            .await
        })
        .await?;
        Ok(())
    }
}

/// The audit's writer: records queue (at most `capacity`) and are written in batches of up to
/// 500. While the database is away a batch is retried with backoff; a batch the database
/// refuses is written row by row, and a row it still refuses is logged and dropped, so no row
/// can stop the writer.
pub fn audit_writer(db: Arc<Db>, capacity: usize) -> mpsc::Sender<AuditRecord> {
    let (tx, mut rx) = mpsc::channel::<AuditRecord>(capacity);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 500).await > 0 {
            write_audit(&db, &batch).await;
            batch.clear();
        }
    });
    tx
}

async fn write_audit(db: &Db, batch: &[AuditRecord]) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match db.audit(batch).await {
            Ok(()) => return,
            Err(DbError::Unavailable(e)) => {
                warn!(error = %e, records = batch.len(), "cannot write the gateway's audit; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) if batch.len() > 1 => {
                warn!(error = %e, records = batch.len(), "the database refuses a batch of the audit; writing it row by row");
                for record in batch {
                    Box::pin(write_audit(db, std::slice::from_ref(record))).await;
                }
                return;
            }
            Err(e) => {
                warn!(error = %e, record = ?batch[0], "the database refuses a row of the audit; it is dropped");
                return;
            }
        }
    }
}
