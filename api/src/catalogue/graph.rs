//! `graph.ingest`, `graph.communities` and `graph.query`: the GraphRAG agent's knowledge
//! graphs, their communities and the questions answered from them.

use serde::{Deserialize, Serialize};

use super::llm::Usage;

/// The task type adding nodes and edges to a graph.
pub const INGEST: &str = "graph.ingest";
/// The task type finding a graph's communities.
pub const COMMUNITIES: &str = "graph.communities";
/// The task type querying a graph.
pub const QUERY: &str = "graph.query";

/// A node of a graph.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Its id, unique in the graph; ingesting it again updates it.
    pub id: String,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What it is (`file`, `function`, `person`, ...).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Anything else, as a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An edge of a graph; one per (source, target, type).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Edge {
    /// The id of the node it leaves.
    pub source: String,
    /// The id of the node it reaches.
    pub target: String,
    /// What it means (`calls`, `works_at`, ...).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its weight for community detection (default 1, must be positive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// Input of `graph.ingest`: explicit `nodes`/`edges`, an Indexing agent's index
/// (`fromIndex`), or a `text` whose entities and relations the model extracts (exactly one
/// of the three). Nodes named only by an edge are created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngestInput {
    /// The graph's name: lowercase letters, digits, `-`, `_` and `.`, at most 63 characters.
    pub graph: String,
    /// Nodes to add or update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    /// Edges to add or update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<Edge>,
    /// The name of an index whose files, symbols, imports and calls to ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_index: Option<String>,
    /// With `fromIndex`: the Indexing agent (CogoAgent name) that holds the index, when the
    /// namespace has several; default any Indexing agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_agent: Option<String>,
    /// A text whose entities and relations the model extracts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Result of `graph.ingest`: the graph's totals after it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestResult {
    /// The graph's name.
    pub graph: String,
    /// Nodes in the graph.
    pub nodes: u64,
    /// Edges in the graph.
    pub edges: u64,
    /// Tokens spent extracting from `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The community detection algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Leiden: communities that are well connected inside.
    #[default]
    Leiden,
    /// Louvain.
    Louvain,
}

/// Input of `graph.communities`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunitiesInput {
    /// The graph.
    pub graph: String,
    /// The algorithm (default `leiden`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// The resolution: above 1 gives more, smaller communities (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<f64>,
    /// The random seed; the same seed on the same graph gives the same communities (default 42).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Have the model summarize each community (the largest 20), for `graph.query`'s questions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub summarize: bool,
}

/// Result of `graph.communities`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunitiesResult {
    /// The communities, largest first.
    pub communities: Vec<Community>,
    /// The partition's modularity (weighted, at the resolution asked).
    pub modularity: f64,
    /// Tokens spent on summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A community of a graph.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Community {
    /// Its number (0 is the largest).
    pub id: u32,
    /// How many nodes it has.
    pub size: u64,
    /// Its node ids (the first 1000).
    pub members: Vec<String>,
    /// The model's summary of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Input of `graph.query`: `neighbors`, `path` or `question`, exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryInput {
    /// The graph.
    pub graph: String,
    /// The nodes around one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbors: Option<NeighborsQuery>,
    /// The shortest path between two nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathQuery>,
    /// A question the model answers from the graph: from community summaries (global) and
    /// from the neighbourhoods of the nodes it names (local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

/// The nodes within `depth` edges of `node` (either direction).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NeighborsQuery {
    /// The node's id.
    pub node: String,
    /// How many edges away (default 1, at most 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
}

/// The path with the fewest edges (either direction) from one node to another.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathQuery {
    /// The first node's id.
    pub from: String,
    /// The last node's id.
    pub to: String,
}

/// Result of `graph.query`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    /// The nodes found (for `neighbors`, with their `depth` in `props`), or those the answer
    /// rests on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    /// The edges between them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<Edge>,
    /// For `path`: the node ids from `from` to `to` (empty when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Vec<String>>,
    /// For `neighbors`: whether more nodes were within reach than the 1000 listed (the nearest).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// For `question`: the model's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// For `question`: the communities whose summaries it used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<u32>,
    /// Tokens spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}
