//! One small SQL surface over the two places a store can live: PostgreSQL (the database every
//! replica shares) and SQLite (the local store on the pod's volume). Statements are written
//! once, in the SQL both understand: `$1`, `$2` ... numbered in the order they first appear
//! (SQLite numbers named parameters that way), `on conflict ... do update`, and integer
//! columns as `bigint`. PostgreSQL gets them unnamed (`query_typed`, no prepared statement
//! kept on the server), so they also pass Supabase's transaction-mode pooler.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use tokio_postgres::types::{ToSql, Type};

use super::StoreError;

/// A value bound to a parameter or read from a column.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// SQL null (bind it only to text columns: PostgreSQL types a null by its Rust type).
    Null,
    /// An integer (`bigint`).
    Int(i64),
    /// A float (`double precision`).
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes (`bytea`, a SQLite blob).
    Bytes(Vec<u8>),
}

impl Val {
    /// The integer, or 0.
    pub fn int(&self) -> i64 {
        match self {
            Val::Int(i) => *i,
            Val::Real(f) => *f as i64,
            _ => 0,
        }
    }
    /// The float, or 0.
    pub fn real(&self) -> f64 {
        match self {
            Val::Real(f) => *f,
            Val::Int(i) => *i as f64,
            _ => 0.0,
        }
    }
    /// The text, or empty.
    pub fn text(&self) -> String {
        match self {
            Val::Text(s) => s.clone(),
            _ => String::new(),
        }
    }
    /// The text, or `None` for null.
    pub fn opt_text(&self) -> Option<String> {
        match self {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
    /// The bytes, or `None`.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Val::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Text(s.into())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Text(s)
    }
}
impl From<Option<String>> for Val {
    fn from(s: Option<String>) -> Val {
        s.map_or(Val::Null, Val::Text)
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Val {
        Val::Int(i)
    }
}
impl From<u32> for Val {
    fn from(i: u32) -> Val {
        Val::Int(i64::from(i))
    }
}
impl From<f64> for Val {
    fn from(f: f64) -> Val {
        Val::Real(f)
    }
}

/// A statement and its parameters.
pub type Statement = (String, Vec<Val>);

/// Where the SQL runs.
#[derive(Clone)]
pub enum Db {
    /// SQLite, the local store (calls run on the blocking pool).
    Local(Arc<Mutex<rusqlite::Connection>>),
    /// PostgreSQL, shared by every replica.
    Postgres(Arc<Postgres>),
}

/// A PostgreSQL connection, made again when it broke.
pub struct Postgres {
    url: String,
    ca: Option<Vec<u8>>,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

/// The longest a statement or transaction may take before the connection is dropped and the
/// call fails as unavailable (a lock wait, a half-open connection).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Postgres {
    /// Connects to `url` (with `ca` as the roots when the URL names none) and applies
    /// `schema` unless `present` (a query) says its tables are there already: a role that
    /// does not own the tables (the operator's mirror made them) then still opens the store.
    pub async fn connect(
        url: &str,
        ca: Option<Vec<u8>>,
        schema: &str,
        present: &str,
    ) -> Result<Postgres, StoreError> {
        let pg = Postgres {
            url: url.into(),
            ca,
            client: tokio::sync::Mutex::new(None),
        };
        let mut guard = pg.client.lock().await;
        let client = pg.open(&mut guard).await?;
        let there = client
            .query_typed(present, &[])
            .await
            .map_err(pg_error)?
            .first()
            .is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true));
        if !there {
            // Replicas starting together apply the schema one at a time, as the operator does.
            client
                .batch_execute(&cogo_db::locked_schema(schema))
                .await
                .map_err(pg_error)?;
        }
        drop(guard);
        Ok(pg)
    }

    async fn open<'a>(
        &self,
        guard: &'a mut Option<tokio_postgres::Client>,
    ) -> Result<&'a mut tokio_postgres::Client, StoreError> {
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = cogo_db::connect_url(&self.url, self.ca.as_deref())
                .await
                .map_err(|e| match e {
                    // A connection string that cannot work will not work later either.
                    cogo_db::ConnectError::Config(why) => {
                        StoreError::Database(format!("the database: {why}"))
                    }
                    cogo_db::ConnectError::Database(e) => pg_error(e),
                })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "the store's database connection closed");
                }
            });
            *guard = Some(client);
        }
        guard
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }
}

/// The error of a call that took longer than [`CALL_TIMEOUT`]; the connection is dropped, so
/// a stuck one is not used again.
fn timed_out(guard: &mut Option<tokio_postgres::Client>) -> StoreError {
    *guard = None;
    StoreError::Unavailable(format!(
        "the database did not answer within {} s",
        CALL_TIMEOUT.as_secs()
    ))
}

/// Parameters with their types: statements are sent unnamed with `query_typed`, as
/// Supabase's transaction-mode pooler (PgBouncer) requires.
fn pg_params(params: &[Val]) -> Vec<(Box<dyn ToSql + Sync + Send>, Type)> {
    params
        .iter()
        .map(|v| -> (Box<dyn ToSql + Sync + Send>, Type) {
            match v {
                Val::Null => (Box::new(None::<String>), Type::TEXT),
                Val::Int(i) => (Box::new(*i), Type::INT8),
                Val::Real(f) => (Box::new(*f), Type::FLOAT8),
                Val::Text(s) => (Box::new(s.clone()), Type::TEXT),
                Val::Bytes(b) => (Box::new(b.clone()), Type::BYTEA),
            }
        })
        .collect()
}

fn typed(boxed: &[(Box<dyn ToSql + Sync + Send>, Type)]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    boxed
        .iter()
        .map(|(b, t)| (b.as_ref() as &(dyn ToSql + Sync), t.clone()))
        .collect()
}

/// Whether a failure with SQLSTATE `code` may pass: a lost or refused connection (class 08),
/// a serialization failure or deadlock (40), too many connections or no room (53), a
/// server shutting down (57P01 to 57P03), a lock not available (55P03), a statement
/// cancelled (57014), a row another writer inserted at the same time (23505).
pub fn transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("40")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "55P03" | "57014" | "23505")
}

/// A lost connection, a socket error or a transient SQLSTATE may pass; what the server or
/// the driver refused otherwise will not.
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let passing = e.as_db_error().is_some_and(|db| transient(db.code().code()));
    if e.is_closed() || io || passing {
        StoreError::Unavailable(cogo_db::describe(&e))
    } else {
        StoreError::Database(cogo_db::describe(&e))
    }
}

fn pg_row(row: &tokio_postgres::Row) -> Vec<Val> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let v = if *ty == Type::INT8 {
                row.get::<_, Option<i64>>(i).map(Val::Int)
            } else if *ty == Type::INT4 {
                row.get::<_, Option<i32>>(i).map(|x| Val::Int(x.into()))
            } else if *ty == Type::FLOAT8 {
                row.get::<_, Option<f64>>(i).map(Val::Real)
            } else if *ty == Type::FLOAT4 {
                row.get::<_, Option<f32>>(i).map(|x| Val::Real(x.into()))
            } else if *ty == Type::BYTEA {
                row.get::<_, Option<Vec<u8>>>(i).map(Val::Bytes)
            } else if *ty == Type::BOOL {
                row.get::<_, Option<bool>>(i).map(|b| Val::Int(b.into()))
            } else {
                row.try_get::<_, Option<String>>(i).ok().flatten().map(Val::Text)
            };
            v.unwrap_or(Val::Null)
        })
        .collect()
}

fn sqlite_params(params: Vec<Val>) -> Vec<rusqlite::types::Value> {
    params
        .into_iter()
        .map(|v| match v {
            Val::Null => rusqlite::types::Value::Null,
            Val::Int(i) => rusqlite::types::Value::Integer(i),
            Val::Real(f) => rusqlite::types::Value::Real(f),
            Val::Text(s) => rusqlite::types::Value::Text(s),
            Val::Bytes(b) => rusqlite::types::Value::Blob(b),
        })
        .collect()
}

fn sqlite_val(v: rusqlite::types::Value) -> Val {
    match v {
        rusqlite::types::Value::Null => Val::Null,
        rusqlite::types::Value::Integer(i) => Val::Int(i),
        rusqlite::types::Value::Real(f) => Val::Real(f),
        rusqlite::types::Value::Text(s) => Val::Text(s),
        rusqlite::types::Value::Blob(b) => Val::Bytes(b),
    }
}

/// A busy or locked database file (another process writing it) may pass; the rest will not.
fn sqlite_error(e: rusqlite::Error) -> StoreError {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        StoreError::Unavailable(format!("local store: {e}"))
    } else {
        StoreError::Database(format!("local store: {e}"))
    }
}

fn sqlite_query(
    c: &rusqlite::Connection,
    sql: &str,
    params: Vec<Val>,
) -> Result<Vec<Vec<Val>>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(sqlite_params(params)))?;
    let mut out = vec![];
    while let Some(row) = rows.next()? {
        let mut vals = Vec::with_capacity(columns);
        for i in 0..columns {
            vals.push(sqlite_val(row.get(i)?));
        }
        out.push(vals);
    }
    Ok(out)
}

impl Db {
    /// Opens (creating) the SQLite file at `path` and applies `schema`.
    pub fn open_local(path: &Path, schema: &str) -> Result<Db, StoreError> {
        let c = rusqlite::Connection::open(path).map_err(|e| {
            StoreError::Database(format!("cannot open the local store {}: {e}", path.display()))
        })?;
        c.execute_batch(&format!(
            "pragma journal_mode = wal; pragma synchronous = normal; pragma busy_timeout = 5000; {schema}"
        ))
        .map_err(sqlite_error)?;
        Ok(Db::Local(Arc::new(Mutex::new(c))))
    }

    /// Whether this is the shared database.
    pub fn is_shared(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Runs a query and returns its rows.
    pub async fn query(&self, sql: &str, params: Vec<Val>) -> Result<Vec<Vec<Val>>, StoreError> {
        match self {
            Db::Local(c) => {
                let (c, sql) = (c.clone(), sql.to_string());
                blocking(move || {
                    let c = c
                        .lock()
                        .map_err(|_| StoreError::Database("local store poisoned".into()))?;
                    sqlite_query(&c, &sql, params).map_err(sqlite_error)
                })
                .await
            }
            Db::Postgres(pg) => {
                let mut guard = pg.client.lock().await;
                let boxed = pg_params(&params);
                let outcome = {
                    let client = pg.open(&mut guard).await?;
                    tokio::time::timeout(CALL_TIMEOUT, async {
                        let rows = client.query_typed(sql, &typed(&boxed)).await.map_err(pg_error)?;
                        Ok(rows.iter().map(pg_row).collect())
                    })
                    .await
                };
                outcome.unwrap_or_else(|_| Err(timed_out(&mut guard)))
            }
        }
    }

    /// Runs statements in one transaction: all or none.
    pub async fn transaction(&self, statements: Vec<Statement>) -> Result<(), StoreError> {
        match self {
            Db::Local(c) => {
                let c = c.clone();
                blocking(move || {
                    let mut c = c
                        .lock()
                        .map_err(|_| StoreError::Database("local store poisoned".into()))?;
                    let tx = c.transaction().map_err(sqlite_error)?;
                    for (sql, params) in statements {
                        let mut stmt = tx.prepare_cached(&sql).map_err(sqlite_error)?;
                        stmt.execute(rusqlite::params_from_iter(sqlite_params(params)))
                            .map_err(sqlite_error)?;
                    }
                    tx.commit().map_err(sqlite_error)
                })
                .await
            }
            Db::Postgres(pg) => {
                let mut guard = pg.client.lock().await;
                let outcome = {
                    let client = pg.open(&mut guard).await?;
                    tokio::time::timeout(CALL_TIMEOUT, async {
                        let tx = client.transaction().await.map_err(pg_error)?;
                        for (sql, params) in statements {
                            let boxed = pg_params(&params);
                            tx.query_typed(sql.as_str(), &typed(&boxed))
                                .await
                                .map_err(pg_error)?;
                        }
                        tx.commit().await.map_err(pg_error)
                    })
                    .await
                };
                outcome.unwrap_or_else(|_| Err(timed_out(&mut guard)))
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Database(format!("local store: {e}")))?
}

/// Rows in a parameter list: `($1,$2),($3,$4)` for `rows` rows of `columns` columns from
/// parameter `first`.
fn values_list(rows: usize, columns: usize, first: usize) -> String {
    let mut out = String::new();
    let mut n = first;
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push(',');
            }
            out.push_str(&format!("${n}"));
            n += 1;
        }
        out.push(')');
    }
    out
}

/// Rows to insert, as statements of at most 500 rows: `insert into {table} ({columns})
/// values ... {tail}`.
pub fn insert_rows(table: &str, columns: &[&str], rows: Vec<Vec<Val>>, tail: &str) -> Vec<Statement> {
    let mut out = vec![];
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<Vec<Val>> = rows.by_ref().take(500).collect();
        let sql = format!(
            "insert into {table} ({}) values {} {tail}",
            columns.join(", "),
            values_list(batch.len(), columns.len(), 1)
        );
        out.push((sql, batch.into_iter().flatten().collect()));
    }
    out
}

/// `$first, $first+1, ...` for `n` parameters, for an `in (...)` list.
pub fn in_list(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_told_from_lasting_ones() {
        for code in [
            "08006", "08001", "40001", "40P01", "53300", "57P01", "55P03", "57014", "23505",
        ] {
            assert!(transient(code), "{code}");
        }
        for code in ["42P01", "42703", "28P01", "21000", "22P02", "42501"] {
            assert!(!transient(code), "{code}");
        }
    }

    #[test]
    fn parameters_are_numbered_in_the_order_they_appear() {
        assert_eq!(values_list(2, 2, 1), "($1,$2),($3,$4)");
        assert_eq!(in_list(3, 2), "$2,$3,$4");
        let s = insert_rows(
            "t",
            &["a", "b"],
            vec![vec![1i64.into(), "x".into()]; 501],
            "on conflict do nothing",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1.len(), 1000);
        assert_eq!(
            s[1].0,
            "insert into t (a, b) values ($1,$2) on conflict do nothing"
        );
    }
}
