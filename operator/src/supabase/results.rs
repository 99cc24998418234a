//! The result store: results too large for a task's status, written to the database before the
//! broker records the outcome, so nothing the operator acknowledged lives only in its memory.
//! The mirror copies each into the row whose `result_digest` names it.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::Value;
use tokio::sync::Mutex;
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
}

impl ResultStore {
    /// A store for the database whose connection string is key `url` of Secret `secret`.
    pub fn new(secrets: Api<Secret>, secret: String) -> ResultStore {
        ResultStore {
            secrets,
            secret,
            db: Mutex::new(None),
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
        let c = {
            let mut db = self.db.lock().await;
            match db.as_ref().filter(|c| !c.is_closed()) {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(
                        connect(&self.secrets, &self.secret)
                            .await
                            .map_err(|e| StoreError::Unavailable(e.to_string()))?,
                    );
                    info!("the result store is connected");
                    *db = Some(c.clone());
                    c
                }
            }
        };
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
        match written {
            Ok(_) => Ok(()),
            // Bad data (class 22) or a violated constraint (class 23) fails again on retry.
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
}
