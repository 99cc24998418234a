//! `index.search`, `index.symbols` and `index.graph`: reading an index.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use cogo_api::catalogue::{
    graph::{Edge, Node},
    index::{
        GRAPH, GraphInput, GraphResult, Hit, SEARCH, SYMBOLS, SearchInput, SearchMode, SearchResult,
        SymbolsInput, SymbolsResult,
    },
};
use serde_json::{Value, json};

use super::{Shared, check_name, parse::SymbolKind, rank};
use crate::{
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    store::{ChunkRow, Store},
};

/// The most distinct words a query may have.
pub const MAX_QUERY_WORDS: usize = 64;
/// The most hits one search returns.
pub const MAX_K: u32 = 100;
/// Candidates each ranking gives to a hybrid search.
const FUSION_DEPTH: usize = 50;
/// Lines of a chunk in a hit's snippet.
const SNIPPET_LINES: usize = 12;
/// A name defined more often than this is not linked by calls (too ambiguous to help).
const MAX_CALL_TARGETS: usize = 20;

async fn require_index(store: &Store, task_type: &str, index: &str) -> Result<(), HandlerError> {
    if store.index_exists(index).await? {
        return Ok(());
    }
    Err(HandlerError::fatal(format!(
        "{task_type}: index {index:?} does not exist or is empty: build it with index.repository first"
    )))
}

/// `index.search`.
pub struct IndexSearch(pub(super) Arc<Shared>);

impl TaskHandler for IndexSearch {
    fn run<'a>(&'a self, input: &'a Value, _ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: SearchInput = parse_input(SEARCH, input)?;
            check_name(SEARCH, "index", &input.index)?;
            if input.query.trim().is_empty() {
                return Err(HandlerError::fatal(format!(
                    "invalid {SEARCH} input: query is empty"
                )));
            }
            let k = input.k.unwrap_or(10);
            if k == 0 || k > MAX_K {
                return Err(HandlerError::fatal(format!(
                    "invalid {SEARCH} input: k is {k}, it must be 1 to {MAX_K}"
                )));
            }
            let words = rank::query_words(&input.query).len();
            if words > MAX_QUERY_WORDS {
                return Err(HandlerError::fatal(format!(
                    "invalid {SEARCH} input: the query has {words} words, the most is {MAX_QUERY_WORDS}"
                )));
            }
            let store = self.0.store().await?;
            require_index(&store, SEARCH, &input.index).await?;
            let asked = input.mode.unwrap_or_default();
            let semantic_ready = match &self.0.model {
                Some(m) => store.embedded_with(&input.index, m.name()).await? > 0,
                None => false,
            };
            let mut mode = match asked {
                SearchMode::Semantic if !semantic_ready => {
                    return Err(HandlerError::fatal(match &self.0.model {
                        None => format!(
                            "{SEARCH}: semantic search needs an embedding model, and this agent has none: set spec.model on its CogoAgent to an OpenAICompatible embeddings server"
                        ),
                        Some(m) => format!(
                            "{SEARCH}: index {:?} has no embeddings by {} yet: index it again with that model in place",
                            input.index,
                            m.name()
                        ),
                    }));
                }
                SearchMode::Hybrid if !semantic_ready => SearchMode::Lexical,
                m => m,
            };
            let k = k as usize;
            let mut rows: HashMap<i64, ChunkRow> = HashMap::new();
            let ranked: Vec<(i64, f64)> = match mode {
                SearchMode::Lexical => lexical(&store, &input.index, &input.query, k, &mut rows).await?,
                SearchMode::Semantic => semantic(&self.0, &store, &input.index, &input.query, k).await?,
                SearchMode::Hybrid => {
                    let l = lexical(&store, &input.index, &input.query, FUSION_DEPTH, &mut rows).await?;
                    match semantic(&self.0, &store, &input.index, &input.query, FUSION_DEPTH).await {
                        Ok(s) => rank::fuse(
                            &[l.iter().map(|x| x.0).collect(), s.iter().map(|x| x.0).collect()],
                            k,
                        ),
                        // The embedding model is away: the words alone answer, and `mode` says so.
                        Err(e) if e.retryable => {
                            tracing::warn!(error = %e.message, "hybrid search without embeddings");
                            mode = SearchMode::Lexical;
                            l.into_iter().take(k).collect()
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            // The hits' chunks that lexical ranking has not read already.
            let missing: Vec<i64> = ranked
                .iter()
                .map(|r| r.0)
                .filter(|id| !rows.contains_key(id))
                .collect();
            rows.extend(store.chunks(&missing).await?.into_iter().map(|c| (c.id, c)));
            let hits = ranked
                .into_iter()
                .filter_map(|(id, score)| {
                    let c = rows.get(&id)?;
                    Some(Hit {
                        path: c.path.clone(),
                        start_line: c.start_line,
                        end_line: c.end_line,
                        symbol: c.symbol.clone(),
                        kind: c.kind.clone(),
                        score,
                        snippet: snippet(&c.text),
                    })
                })
                .collect();
            Ok(serde_json::to_value(SearchResult { hits, mode }).unwrap_or_default())
        })
    }
}

fn snippet(text: &str) -> String {
    let mut out: String = text.lines().take(SNIPPET_LINES).collect::<Vec<_>>().join("\n");
    if let Some((cut, _)) = out.char_indices().nth(800) {
        out.truncate(cut);
    }
    out
}

/// BM25 over the query's words; a chunk of a definition named as a whole word of the query
/// scores double (a search for `NewRandom` wants its definition before the code that calls it).
/// The chunks it reads to rank are left in `rows`, for the hits.
async fn lexical(
    store: &Store,
    index: &str,
    query: &str,
    k: usize,
    rows: &mut HashMap<i64, ChunkRow>,
) -> Result<Vec<(i64, f64)>, HandlerError> {
    let words = rank::query_words(query);
    let postings = store.postings(index, &words).await?;
    let (n, avg) = store.chunk_stats(index).await?;
    let mut top = rank::TopK::new(k * 3 + 10);
    for (id, score) in rank::bm25(&postings, n, avg) {
        top.push(id, score);
    }
    let candidates = top.into_sorted();
    let ids: Vec<i64> = candidates.iter().map(|c| c.0).collect();
    rows.extend(store.chunks(&ids).await?.into_iter().map(|c| (c.id, c)));
    let whole: Vec<String> = query
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut best = rank::TopK::new(k);
    for (id, score) in candidates {
        let symbol = rows.get(&id).and_then(|c| c.symbol.as_deref());
        let boost = symbol.is_some_and(|s| whole.contains(&s.to_lowercase()));
        best.push(id, if boost { score * 2.0 } else { score });
    }
    Ok(best.into_sorted())
}

async fn semantic(
    shared: &Shared,
    store: &Store,
    index: &str,
    query: &str,
    k: usize,
) -> Result<Vec<(i64, f64)>, HandlerError> {
    let model = super::super::need_model(&shared.model, SEARCH)?;
    let e = model
        .embed(&[format!("{}{query}", shared.policy.prefixes.query)])
        .await
        .map_err(|e| HandlerError {
            retryable: e.retryable(),
            message: format!("embedding model {}: {e}", model.name()),
        })?;
    let v = e.vectors.into_iter().next().unwrap_or_default();
    store
        .nearest(index, model.name(), &v, k)
        .await
        .map_err(HandlerError::from)
}

/// `index.symbols`.
pub struct IndexSymbols(pub(super) Arc<Shared>);

/// The most symbols one call returns.
pub const MAX_SYMBOLS: u32 = 10_000;

impl TaskHandler for IndexSymbols {
    fn run<'a>(&'a self, input: &'a Value, _ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: SymbolsInput = parse_input(SYMBOLS, input)?;
            check_name(SYMBOLS, "index", &input.index)?;
            if let Some(kind) = &input.kind
                && SymbolKind::parse(kind).is_none()
            {
                return Err(HandlerError::fatal(format!(
                    "invalid {SYMBOLS} input: kind {kind:?} is not one of function, method, class, struct, enum, trait, interface, type, constant, module"
                )));
            }
            let limit = input.limit.unwrap_or(1000);
            if limit == 0 || limit > MAX_SYMBOLS {
                return Err(HandlerError::fatal(format!(
                    "invalid {SYMBOLS} input: limit is {limit}, it must be 1 to {MAX_SYMBOLS}"
                )));
            }
            let store = self.0.store().await?;
            require_index(&store, SYMBOLS, &input.index).await?;
            let mut symbols = store
                .symbols(
                    &input.index,
                    input.name.as_deref(),
                    input.prefix.as_deref(),
                    input.kind.as_deref(),
                    input.path.as_deref(),
                    limit + 1,
                )
                .await?;
            let truncated = symbols.len() > limit as usize;
            symbols.truncate(limit as usize);
            Ok(serde_json::to_value(SymbolsResult { symbols, truncated }).unwrap_or_default())
        })
    }
}

/// `index.graph`.
pub struct IndexGraph(pub(super) Arc<Shared>);

impl TaskHandler for IndexGraph {
    fn run<'a>(&'a self, input: &'a Value, _ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: GraphInput = parse_input(GRAPH, input)?;
            check_name(GRAPH, "index", &input.index)?;
            let store = self.0.store().await?;
            require_index(&store, GRAPH, &input.index).await?;
            Ok(serde_json::to_value(index_graph(&store, &input.index).await?).unwrap_or_default())
        })
    }
}

/// The id of a symbol's node.
pub fn symbol_id(path: &str, container: Option<&str>, name: &str) -> String {
    match container {
        Some(c) => format!("symbol:{path}#{c}.{name}"),
        None => format!("symbol:{path}#{name}"),
    }
}

/// `index`'s files, symbols and imported modules as nodes; `defines`, `contains`, `imports`
/// and `calls` as edges. A call links its caller (or its file, at top level) to every
/// definition of the called name in the index (none when the name is defined more than 20
/// times, or only outside the index).
pub async fn index_graph(store: &Store, index: &str) -> Result<GraphResult, crate::store::StoreError> {
    let (files, symbols, imports, calls) = store.index_graph(index).await?;
    let mut nodes = vec![];
    let mut edges = vec![];
    let edge = |s: String, t: String, kind: &str| Edge {
        source: s,
        target: t,
        kind: Some(kind.into()),
        weight: None,
    };
    for f in &files {
        nodes.push(Node {
            id: format!("file:{f}"),
            label: Some(f.clone()),
            kind: Some("file".into()),
            props: None,
        });
    }
    // Definitions by name, and by (path, name) for containers and callers.
    let mut by_name: HashMap<&str, Vec<String>> = HashMap::new();
    let mut in_file: HashMap<(&str, &str), String> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for s in &symbols {
        let id = symbol_id(&s.path, s.container.as_deref(), &s.name);
        // A name defined twice in one container (a property's getter and setter) is one node.
        if !seen.insert(id.clone()) {
            continue;
        }
        by_name.entry(s.name.as_str()).or_default().push(id.clone());
        in_file
            .entry((s.path.as_str(), s.name.as_str()))
            .or_insert(id.clone());
        let mut props = serde_json::Map::new();
        props.insert("path".into(), json!(s.path));
        props.insert("line".into(), json!(s.line));
        props.insert("endLine".into(), json!(s.end_line));
        nodes.push(Node {
            id: id.clone(),
            label: Some(s.name.clone()),
            kind: Some(s.kind.clone()),
            props: Some(props),
        });
        edges.push(edge(format!("file:{}", s.path), id, "defines"));
    }
    for s in &symbols {
        if let Some(c) = &s.container
            && let Some(cid) = in_file.get(&(s.path.as_str(), c.as_str()))
        {
            edges.push(edge(
                cid.clone(),
                symbol_id(&s.path, Some(c), &s.name),
                "contains",
            ));
        }
    }
    let mut modules = BTreeMap::new();
    for (path, module) in &imports {
        modules.entry(module.clone()).or_insert(());
        edges.push(edge(
            format!("file:{path}"),
            format!("module:{module}"),
            "imports",
        ));
    }
    for m in modules.into_keys() {
        nodes.push(Node {
            id: format!("module:{m}"),
            label: Some(m),
            kind: Some("module".into()),
            props: None,
        });
    }
    let mut call_edges: BTreeMap<(String, String), u32> = BTreeMap::new();
    for (path, caller, callee) in &calls {
        let Some(targets) = by_name.get(callee.as_str()) else {
            continue;
        };
        if targets.len() > MAX_CALL_TARGETS {
            continue;
        }
        let source = caller
            .as_deref()
            .and_then(|c| in_file.get(&(path.as_str(), c)).cloned())
            .unwrap_or_else(|| format!("file:{path}"));
        for t in targets {
            *call_edges.entry((source.clone(), t.clone())).or_insert(0) += 1;
        }
    }
    for ((s, t), n) in call_edges {
        edges.push(Edge {
            source: s,
            target: t,
            kind: Some("calls".into()),
            weight: Some(f64::from(n)),
        });
    }
    edges.sort_by(|a, b| (&a.source, &a.target, &a.kind).cmp(&(&b.source, &b.target, &b.kind)));
    edges.dedup_by(|a, b| a.source == b.source && a.target == b.target && a.kind == b.kind);
    Ok(GraphResult { nodes, edges })
}
