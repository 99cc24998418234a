//! The GraphRAG agent: knowledge graphs kept in the store, one per name. `graph.ingest` adds
//! nodes and edges given, taken from an Indexing agent's index, or extracted from a text by
//! the model; `graph.communities` finds communities with Leiden or Louvain ([`algo`]) and
//! may have the model summarize them; `graph.query` answers neighbour and path questions, and
//! questions in words from community summaries and local neighbourhoods (GraphRAG's global
//! and local search).

pub mod algo;
pub mod generate;
mod ingest;
mod query;

use std::{collections::HashMap, sync::Arc};

use crate::{
    handler::{HandlerError, Registry},
    llm::SharedModel,
    store::{EdgeRow, NodeRow, SharedLazy, SharedStore},
};

pub use ingest::Ingest;
pub use query::{Communities, Query};

/// Registers the GraphRAG task types over `store`, with `model` for text and questions.
pub fn register(registry: &mut Registry, store: SharedLazy, model: Option<SharedModel>) {
    use cogo_api::catalogue::graph::{COMMUNITIES, INGEST, QUERY};
    let shared = Arc::new(Shared { store, model });
    registry.register(INGEST, Ingest(shared.clone()));
    registry.register(COMMUNITIES, Communities(shared.clone()));
    registry.register(QUERY, Query(shared));
}

/// What the GraphRAG handlers share.
pub struct Shared {
    /// The store.
    pub store: SharedLazy,
    /// The model.
    pub model: Option<SharedModel>,
}

impl Shared {
    async fn store(&self) -> Result<SharedStore, HandlerError> {
        Ok(self.store.get().await?)
    }
}

/// A stored graph in memory: node ids by index, and the algorithms' graph.
pub struct Loaded {
    /// The nodes, by index.
    pub nodes: Vec<NodeRow>,
    /// The edges.
    pub edges: Vec<EdgeRow>,
    /// Index of each node id.
    pub index: HashMap<String, u32>,
    /// The undirected weighted graph.
    pub graph: algo::Graph,
}

impl Loaded {
    /// Reads `name` from `store`; an empty graph is an error naming it.
    pub async fn read(store: &SharedStore, task_type: &str, name: &str) -> Result<Loaded, HandlerError> {
        let (nodes, edges) = store.load_graph(name).await?;
        if nodes.is_empty() {
            return Err(HandlerError::fatal(format!(
                "{task_type}: graph {name:?} does not exist or is empty: add to it with graph.ingest first"
            )));
        }
        let index: HashMap<String, u32> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i as u32))
            .collect();
        let list: Vec<(u32, u32, f64)> = edges
            .iter()
            .filter_map(|e| Some((*index.get(&e.source)?, *index.get(&e.target)?, e.weight)))
            .collect();
        let graph = algo::Graph::new(nodes.len(), list)
            .map_err(|e| HandlerError::fatal(format!("{task_type}: graph {name:?}: {e}")))?;
        Ok(Loaded {
            nodes,
            edges,
            index,
            graph,
        })
    }

    /// The index of node `id`, or an error naming it.
    pub fn node(&self, task_type: &str, graph: &str, id: &str) -> Result<u32, HandlerError> {
        self.index
            .get(id)
            .copied()
            .ok_or_else(|| HandlerError::fatal(format!("{task_type}: node {id:?} is not in graph {graph:?}")))
    }
}
