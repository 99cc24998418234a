//! `index.repository`, `index.search`, `index.symbols` and `index.graph`: the Indexing agent's
//! code index, built with tree-sitter and searched with BM25 and embeddings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The task type indexing a repository or inline files.
pub const REPOSITORY: &str = "index.repository";
/// The task type searching an index.
pub const SEARCH: &str = "index.search";
/// The task type listing an index's symbols.
pub const SYMBOLS: &str = "index.symbols";
/// The task type giving an index as a graph of files and symbols.
pub const GRAPH: &str = "index.graph";

/// Input of `index.repository`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryInput {
    /// The index's name: lowercase letters, digits, `-`, `_` and `.`, at most 63 characters.
    /// Indexing again under the same name parses only the files whose content changed.
    pub index: String,
    /// What to index: a git repository or inline files (exactly one).
    pub source: Source,
    /// Glob patterns of paths to index (`src/**/*.rs`); default every file of a known
    /// language.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Glob patterns of paths to leave out (`vendor/**`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// What `index.repository` reads: `git` or `files`, exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// A git repository, fetched shallow at one ref.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// Files given inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<InlineFile>>,
}

/// A git repository to index.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSource {
    /// Where it is: an `https://`, `http://` or `git://` URL.
    pub url: String,
    /// A branch, tag or commit; default the repository's default branch.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A file given inline.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineFile {
    /// Its path in the index (relative, `/`-separated).
    pub path: String,
    /// Its text.
    pub content: String,
}

/// Result of `index.repository`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryResult {
    /// The index's name.
    pub index: String,
    /// Files in the index.
    pub files: u64,
    /// Definitions in the index.
    pub symbols: u64,
    /// Searchable chunks in the index.
    pub chunks: u64,
    /// Files per language (`rust`, `python`, `typescript`, `tsx`, `javascript`, `go`).
    pub languages: BTreeMap<String, u64>,
    /// Files parsed this time (new or changed); the others were unchanged.
    pub parsed: u64,
    /// Files removed from the index because the source no longer has them.
    pub removed: u64,
    /// Files left out: too big, not UTF-8, or of no known language.
    pub skipped: u64,
    /// Chunks given embeddings this time (0 when the agent has no embedding model).
    pub embedded: u64,
    /// Why the model gave no embeddings, when it cannot (not an embeddings model, say); the
    /// index is built, and lexical search works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_error: Option<String>,
    /// The commit indexed, for a git source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Where the index is kept: `database` (shared by every replica) or `local` (this pod's
    /// volume only).
    pub store: String,
    /// How long indexing took.
    pub duration_ms: u64,
}

/// How `index.search` ranks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Both rankings fused (reciprocal rank fusion) when the index has embeddings, else
    /// lexical.
    #[default]
    Hybrid,
    /// BM25 over the chunks' words; needs no model.
    Lexical,
    /// Cosine similarity of embeddings; needs the agent's embedding model.
    Semantic,
}

/// Input of `index.search`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchInput {
    /// The index to search.
    pub index: String,
    /// What to look for: words, identifiers or a question.
    pub query: String,
    /// How many hits to return (default 10, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,
    /// How to rank (default `hybrid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SearchMode>,
}

/// Result of `index.search`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    /// The best chunks first.
    pub hits: Vec<Hit>,
    /// The ranking used (`lexical`, `semantic` or `hybrid`).
    pub mode: SearchMode,
}

/// A chunk that matched.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    /// The file.
    pub path: String,
    /// First line of the chunk (1-based).
    pub start_line: u32,
    /// Last line of the chunk.
    pub end_line: u32,
    /// The definition the chunk belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// That definition's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The score: BM25, cosine similarity, or the fused rank score.
    pub score: f64,
    /// The chunk's first lines.
    pub snippet: String,
}

/// Input of `index.symbols`: every filter given must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SymbolsInput {
    /// The index.
    pub index: String,
    /// The exact name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The start of the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The kind: function, method, class, struct, enum, trait, interface, type, constant or
    /// module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The most symbols to return (default 1000, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Result of `index.symbols`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SymbolsResult {
    /// The matching definitions, by path and line.
    pub symbols: Vec<Symbol>,
    /// Whether more matched than `limit`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A definition in a file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Symbol {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// The file.
    pub path: String,
    /// Its first line (1-based).
    pub line: u32,
    /// Its last line.
    pub end_line: u32,
    /// The class, impl, trait or type it is defined in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Input of `index.graph`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphInput {
    /// The index.
    pub index: String,
}

/// Result of `index.graph`: nodes and edges in the shape `graph.ingest` takes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphResult {
    /// Files (`file:<path>`), symbols (`symbol:<path>#<container.>name`) and imported modules
    /// (`module:<name>`).
    pub nodes: Vec<super::graph::Node>,
    /// `defines` (file to symbol), `contains` (container to member), `imports` (file to
    /// module) and `calls` (symbol to the symbols of that name).
    pub edges: Vec<super::graph::Edge>,
}
