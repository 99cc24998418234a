//! The Indexing and GraphRAG agents: the parser against independent references on a real
//! multi-language tree, git fetches from real servers on loopback, the graph algorithms against
//! networkx, and the task handlers over the local store, PostgreSQL (with and without
//! pgvector), a real embedding model and a strict model stand-in.

#[path = "indexing/git.rs"]
mod git;
#[path = "indexing/graph_reference.rs"]
mod graph_reference;
#[path = "indexing/graphs.rs"]
mod graphs;
#[path = "indexing/handlers.rs"]
mod handlers;
#[path = "indexing/parse_reference.rs"]
mod parse_reference;
#[path = "indexing/stores.rs"]
mod stores;
