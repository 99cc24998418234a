//! The result store: results too large for a task's status, written to the database before the
//! broker records the outcome, so nothing the operator acknowledged lives only in its memory.
//! The mirror copies each into the row whose `result_digest` names it. Also the results of
//! indexed tasks' items, in `cogo_task_item_results`, written in batches (one statement for up
//! to [`super::BATCH`] items) before the broker records the items' outcomes.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::Type;
use tracing::{info, warn};

use super::{connect, describe, sanitize};

const PUT: &str = "
insert into public.cogo_task_results (id, digest, size_bytes, result)
values ($1::uuid, $2, $3, $4::jsonb)
on conflict (id, digest) do nothing";

/// The longest a write may take before the broker answers that the store is unavailable.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a result could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or configured; the agent is told to offer again later.
    #[error("the result store is unavailable: {0}")]
    Unavailable(String),
    /// The database refused this result and would refuse it again.
    #[error("the result store refused the result: {0}")]
    Refused(String),
}

/// Writes results to `public.cogo_task_results` of the database named by a Secret.
pub struct ResultStore {
    secrets: Api<Secret>,
    secret: String,
    db: Mutex<Option<Arc<tokio_postgres::Client>>>,
    items: OnceLock<mpsc::Sender<ItemResult>>,
}

/// An item's result waiting for its batch.
struct ItemResult {
    id: String,
    item: i32,
    attempt: i32,
    result: String,
    done: oneshot::Sender<Result<(), StoreError>>,
}

const PUT_ITEMS: &str = "
insert into public.cogo_task_item_results as r (id, item, attempt, result)
select u.id::uuid, u.item, u.attempt, u.result::jsonb
from unnest($1::text[], $2::int4[], $3::int4[], $4::text[]) as u(id, item, attempt, result)
on conflict (id, item) do update set attempt = excluded.attempt, result = excluded.result, recorded_at = now()
where r.attempt <= excluded.attempt";

impl ResultStore {
    /// A store for the database whose connection string is key `url` of Secret `secret`.
    pub fn new(secrets: Api<Secret>, secret: String) -> ResultStore {
        ResultStore {
            secrets,
            secret,
            db: Mutex::new(None),
            items: OnceLock::new(),
        }
    }

    /// Stores `result` of attempt `attempt` of item `item` of the task whose row is `row_id`,
    /// in a batch with the other items' results that come meanwhile; returns once the batch is
    /// written (idempotent: a newer attempt's result replaces an older one's).
    pub async fn put_item(
        self: &Arc<Self>,
        row_id: &str,
        (item, attempt): (u32, i32),
        result: &Value,
    ) -> Result<(), StoreError> {
        let mut clean = result.clone();
        sanitize(&mut clean);
        let text = serde_json::to_string(&clean).map_err(|e| StoreError::Refused(e.to_string()))?;
        let tx = self.items.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * super::BATCH);
            tokio::spawn(self.clone().write_items(rx));
            tx
        });
        let (done, answer) = oneshot::channel();
        let pending = ItemResult {
            id: row_id.to_string(),
            item: item.min(i32::MAX as u32) as i32,
            attempt,
            result: text,
            done,
        };
        tx.send(pending)
            .await
            .map_err(|_| StoreError::Unavailable("the item result writer stopped".into()))?;
        match tokio::time::timeout(PUT_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Unavailable("the item result writer stopped".into())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer in {} s",
                PUT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Writes the item results sent to `rx`, as many as wait (up to a batch) per statement.
    async fn write_items(self: Arc<Self>, mut rx: mpsc::Receiver<ItemResult>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < super::BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let answer = self.write_batch(&batch).await;
            // A refused batch is written item by item, so only the bad result is refused.
            if matches!(answer, Err(StoreError::Refused(_))) && batch.len() > 1 {
                for one in batch {
                    let answer = self.write_batch(std::slice::from_ref(&one)).await;
                    let _ = one.done.send(answer);
                }
                continue;
            }
            for pending in batch {
                let _ = pending.done.send(match &answer {
                    Ok(()) => Ok(()),
                    Err(StoreError::Refused(why)) => Err(StoreError::Refused(why.clone())),
                    Err(StoreError::Unavailable(why)) => Err(StoreError::Unavailable(why.clone())),
                });
            }
        }
    }

    /// Writes one batch of item results in one statement (the newest attempt of each item).
    async fn write_batch(&self, batch: &[ItemResult]) -> Result<(), StoreError> {
        let mut newest: HashMap<(&str, i32), &ItemResult> = HashMap::new();
        for r in batch {
            let slot = newest.entry((r.id.as_str(), r.item)).or_insert(r);
            if r.attempt > slot.attempt {
                *slot = r;
            }
        }
        let rows: Vec<&ItemResult> = newest.into_values().collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let items: Vec<i32> = rows.iter().map(|r| r.item).collect();
        let attempts: Vec<i32> = rows.iter().map(|r| r.attempt).collect();
        let results: Vec<&str> = rows.iter().map(|r| r.result.as_str()).collect();
        let c = self.client().await?;
        let written = c
            .query_typed(
                PUT_ITEMS,
                &[
                    (&ids, Type::TEXT_ARRAY),
                    (&items, Type::INT4_ARRAY),
                    (&attempts, Type::INT4_ARRAY),
                    (&results, Type::TEXT_ARRAY),
                ],
            )
            .await;
        self.judge(written.map(|_| ())).await
    }

    /// The connection, made when there is none.
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, StoreError> {
        let mut db = self.db.lock().await;
        if let Some(c) = db.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            connect(&self.secrets, &self.secret)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        );
        info!("the result store is connected");
        *db = Some(c.clone());
        Ok(c)
    }

    /// What a write's answer means: bad data (class 22) or a violated constraint (class 23)
    /// fails again on retry; anything else may not, and drops the connection.
    async fn judge(&self, written: Result<(), tokio_postgres::Error>) -> Result<(), StoreError> {
        match written {
            Ok(()) => Ok(()),
            Err(e)
                if e.as_db_error()
                    .is_some_and(|d| matches!(&d.code().code()[..2], "22" | "23")) =>
            {
                Err(StoreError::Refused(describe(&e)))
            }
            Err(e) => {
                warn!(error = %describe(&e), "the result store cannot write");
                *self.db.lock().await = None;
                Err(StoreError::Unavailable(describe(&e)))
            }
        }
    }

    /// Stores `result` of the task whose row is `row_id` under `digest` (idempotent).
    pub async fn put(&self, row_id: &str, digest: &str, result: &Value) -> Result<(), StoreError> {
        let mut clean = result.clone();
        sanitize(&mut clean);
        let text = serde_json::to_string(&clean).map_err(|e| StoreError::Refused(e.to_string()))?;
        match tokio::time::timeout(PUT_TIMEOUT, self.put_text(row_id, digest, &text)).await {
            Ok(r) => r,
            Err(_) => {
                *self.db.lock().await = None;
                Err(StoreError::Unavailable(format!(
                    "no answer in {} s",
                    PUT_TIMEOUT.as_secs()
                )))
            }
        }
    }

    async fn put_text(&self, row_id: &str, digest: &str, text: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        let size = text.len() as i64;
        let written = c
            .query_typed(
                PUT,
                &[
                    (&row_id, Type::TEXT),
                    (&digest, Type::TEXT),
                    (&size, Type::INT8),
                    (&text, Type::TEXT),
                ],
            )
            .await;
        self.judge(written.map(|_| ())).await
    }
}
