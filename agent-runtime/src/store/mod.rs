//! Where the Indexing and GraphRAG agents keep their indexes and graphs: the database every
//! replica shares (PostgreSQL, with pgvector where it has it), or a local store (SQLite) on
//! the pod's volume. The tables are those of
//! `supabase/migrations/20261130000000_cogo_indexes_graphs.sql` in both.

mod graph;
mod index;
pub mod sql;

use std::{collections::BTreeMap, path::Path, sync::Arc};

use cogo_api::catalogue::index::Symbol;
use sha2::{Digest, Sha256};

use self::sql::Db;

/// The schema, as the database migration gives it.
pub const MIGRATION: &str =
    include_str!("../../../supabase/migrations/20261130000000_cogo_indexes_graphs.sql");

/// Whether the schema is all there: its last table, and pgvector's column wherever the
/// database offers pgvector.
const SCHEMA_PRESENT: &str = "select to_regclass('public.cogo_index_locks') is not null
  and (not exists (select 1 from pg_available_extensions where name = 'vector')
       or exists (select 1 from information_schema.columns where table_schema = 'public'
                  and table_name = 'cogo_index_chunks' and column_name = 'embedding_vector'))";

/// The local store's file in its directory.
pub const LOCAL_FILE: &str = "cogo-store.sqlite";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; a later try may succeed.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database refused the statement.
    #[error("the store failed: {0}")]
    Database(String),
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The SQLite schema: the migration's tables, without what only PostgreSQL has (row-level
/// security, pgvector, the `public` schema).
fn local_schema() -> String {
    let tables = MIGRATION
        .split("-- Row-level security on")
        .next()
        .unwrap_or_default();
    tables.replace("public.", "")
}

/// A file as the store keeps it.
#[derive(Clone, Debug, Default)]
pub struct FileRecord {
    /// Its path in the index.
    pub path: String,
    /// Its language's key (`rust`, `python` ...).
    pub language: String,
    /// SHA-256 of its content, hex.
    pub hash: String,
    /// Its lines.
    pub lines: u32,
    /// Its definitions (path filled in).
    pub symbols: Vec<Symbol>,
    /// What it imports, with the line.
    pub imports: Vec<(String, u32)>,
    /// What it calls: (caller, callee, line).
    pub calls: Vec<(Option<String>, String, u32)>,
    /// Its chunks.
    pub chunks: Vec<ChunkRecord>,
}

/// A searchable piece of a file.
#[derive(Clone, Debug, Default)]
pub struct ChunkRecord {
    /// First line (1-based).
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// The definition it belongs to.
    pub symbol: Option<String>,
    /// That definition's kind.
    pub kind: Option<String>,
    /// Its text.
    pub text: String,
    /// Its words and how often each occurs.
    pub terms: Vec<(String, u32)>,
    /// How many words it has.
    pub length: u32,
}

/// A chunk read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkRow {
    /// Its id.
    pub id: i64,
    /// The file.
    pub path: String,
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// The definition it belongs to.
    pub symbol: Option<String>,
    /// That definition's kind.
    pub kind: Option<String>,
    /// Its text.
    pub text: String,
}

/// A posting: a word's count in a chunk, with the chunk's length.
#[derive(Clone, Debug, PartialEq)]
pub struct Posting {
    /// The word.
    pub term: String,
    /// The chunk.
    pub chunk: i64,
    /// How often the word occurs in it.
    pub tf: u32,
    /// The chunk's length in words.
    pub length: u32,
}

/// What an index holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexTotals {
    /// Files.
    pub files: u64,
    /// Definitions.
    pub symbols: u64,
    /// Chunks.
    pub chunks: u64,
    /// Files per language.
    pub languages: BTreeMap<String, u64>,
}

/// A node of a stored graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeRow {
    /// Its id.
    pub id: String,
    /// Its label.
    pub label: Option<String>,
    /// Its type.
    pub kind: Option<String>,
    /// Its properties, a JSON object's text.
    pub props: Option<String>,
}

/// An edge of a stored graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeRow {
    /// Where it starts.
    pub source: String,
    /// Where it ends.
    pub target: String,
    /// Its type (empty when none).
    pub kind: String,
    /// Its weight.
    pub weight: f64,
}

/// A community as last found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommunityRow {
    /// Its number.
    pub id: u32,
    /// Its size.
    pub size: u64,
    /// Its first members.
    pub members: Vec<String>,
    /// The model's summary.
    pub summary: Option<String>,
}

/// The store.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Whether the database has pgvector's column.
    vector: bool,
}

/// A shared store.
pub type SharedStore = Arc<Store>;

/// A chunk's id: stable for (index, path, ordinal).
pub fn chunk_id(index: &str, path: &str, ordinal: usize) -> i64 {
    let digest = Sha256::new()
        .chain_update(index.as_bytes())
        .chain_update([0])
        .chain_update(path.as_bytes())
        .chain_update([0])
        .chain_update(ordinal.to_le_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(bytes) >> 1) as i64
}

/// Embedding bytes: float4, little-endian.
pub fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The embedding of [`vector_bytes`].
pub fn bytes_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn vector_text(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

impl Store {
    /// The local store in `dir` (created when missing).
    pub fn local(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Database(format!("cannot create the local store {}: {e}", dir.display()))
        })?;
        Ok(Store {
            db: Db::open_local(&dir.join(LOCAL_FILE), &local_schema())?,
            vector: false,
        })
    }

    /// The database at `url`, its schema applied.
    pub async fn database(url: &str, ca: Option<Vec<u8>>) -> Result<Store, StoreError> {
        let db = Db::Postgres(Arc::new(
            sql::Postgres::connect(url, ca, MIGRATION, SCHEMA_PRESENT).await?,
        ));
        let vector = !db
            .query(
                "select 1::bigint from information_schema.columns where table_name = 'cogo_index_chunks' and column_name = 'embedding_vector' and table_schema = 'public'",
                vec![],
            )
            .await?
            .is_empty();
        Ok(Store { db, vector })
    }

    /// `database` when every replica shares it, else `local`.
    pub fn kind(&self) -> &'static str {
        if self.db.is_shared() { "database" } else { "local" }
    }

    /// Whether nearest embeddings are found by pgvector in the database.
    pub fn has_pgvector(&self) -> bool {
        self.vector
    }
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Where a role's store is, and the store once opened: the database on first use (so a
/// database that is down fails tasks that may be retried, never the pod), else the local
/// store.
pub struct Lazy {
    database: Option<(String, Option<Vec<u8>>)>,
    dir: std::path::PathBuf,
    store: tokio::sync::OnceCell<SharedStore>,
}

/// A [`Lazy`] store shared by a role's handlers.
pub type SharedLazy = Arc<Lazy>;

impl Lazy {
    /// The database at `url` when given (with `ca`), else the local store in `dir`.
    pub fn new(url: Option<String>, ca: Option<Vec<u8>>, dir: std::path::PathBuf) -> SharedLazy {
        Arc::new(Lazy {
            database: url.map(|u| (u, ca)),
            dir,
            store: tokio::sync::OnceCell::new(),
        })
    }

    /// The directory of the local store (and of scratch work such as git checkouts).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store, opened on first use.
    pub async fn get(&self) -> Result<SharedStore, StoreError> {
        self.store
            .get_or_try_init(|| async {
                let store = match &self.database {
                    Some((url, ca)) => Store::database(url, ca.clone()).await?,
                    None => {
                        let dir = self.dir.clone();
                        tokio::task::spawn_blocking(move || Store::local(&dir))
                            .await
                            .map_err(|e| StoreError::Database(e.to_string()))??
                    }
                };
                tracing::info!(
                    store = store.kind(),
                    pgvector = store.has_pgvector(),
                    "store opened"
                );
                Ok(Arc::new(store))
            })
            .await
            .cloned()
    }
}
