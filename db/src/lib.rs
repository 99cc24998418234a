//! The connection to PostgreSQL (Supabase's database) that the operator's mirror and the
//! agents' stores share: a libpq connection string with every `sslmode` ([`tls`]), a 10 s
//! connect timeout, and errors that say what the server said.

pub mod tls;

use std::time::Duration;

/// The advisory lock held while a schema is applied, by the operator's mirror and the agents
/// alike, so that processes starting together apply it one at a time.
pub const SCHEMA_LOCK: i64 = 7263010;

/// `schema` applied under [`SCHEMA_LOCK`]: one simple query, so one transaction, whose end
/// releases the lock.
pub fn locked_schema(schema: &str) -> String {
    format!("select pg_advisory_xact_lock({SCHEMA_LOCK}); {schema}")
}

/// Why a connection cannot be made.
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
pub type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, tls::TlsStream<tokio_postgres::Socket>>;

/// Connects to the database at `url` (a libpq connection string, every `sslmode` honoured;
/// see [`tls`]) with `ca` (PEM) as the roots when `sslrootcert` names none (10 s at most).
pub async fn connect_url(
    url: &str,
    ca: Option<&[u8]>,
) -> Result<(tokio_postgres::Client, Connection), ConnectError> {
    let parsed = tls::parse(url)
        .map_err(|e| ConnectError::Config(format!("the `url` is not a connection string: {e}")))?;
    let connector =
        tls::connector(&parsed, ca).map_err(|e| ConnectError::Config(format!("TLS to the database: {e}")))?;
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(10), parsed.config.connect(connector))
            .await
            .map_err(|_| ConnectError::Config("connecting timed out after 10 s".into()))??;
    Ok((client, connection))
}
