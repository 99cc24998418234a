//! `graph.communities` and `graph.query`.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use cogo_api::catalogue::{
    graph::{
        Algorithm, COMMUNITIES, CommunitiesInput, CommunitiesResult, Community, Edge, Node, QUERY,
        QueryInput, QueryResult,
    },
    llm::Usage,
};
use serde_json::{Value, json};

use super::{Loaded, Shared, algo};
use crate::{
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    llm::{ChatRequest, Model},
    roles::{
        ask,
        indexing::{check_name, rank},
        need_model,
    },
    store::CommunityRow,
};

/// Members listed per community.
pub const MAX_MEMBERS: usize = 1000;
/// Communities the model summarizes (the largest).
pub const SUMMARIZED: usize = 20;
/// The deepest neighbourhood.
pub const MAX_DEPTH: u32 = 5;
/// The most nodes a neighbourhood answer lists.
pub const MAX_NODES: usize = 1000;
/// Nodes a question starts its local search from.
const SEEDS: usize = 5;
/// Community summaries a question reads.
const SUMMARIES: usize = 5;
/// Relations of the local neighbourhoods a question reads.
const LOCAL_EDGES: usize = 150;

/// `graph.communities`.
pub struct Communities(pub(super) Arc<Shared>);

impl TaskHandler for Communities {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: CommunitiesInput = parse_input(COMMUNITIES, input)?;
            check_name(COMMUNITIES, "graph", &input.graph)?;
            let resolution = input.resolution.unwrap_or(1.0);
            if !resolution.is_finite() || resolution <= 0.0 {
                return Err(HandlerError::fatal(format!(
                    "invalid {COMMUNITIES} input: resolution is {resolution}, it must be a number above 0"
                )));
            }
            let model = if input.summarize {
                Some(need_model(&self.0.model, COMMUNITIES)?)
            } else {
                None
            };
            let store = self.0.store().await?;
            let g = Loaded::read(&store, COMMUNITIES, &input.graph).await?;
            let algorithm = match input.algorithm.unwrap_or_default() {
                Algorithm::Leiden => algo::Algorithm::Leiden,
                Algorithm::Louvain => algo::Algorithm::Louvain,
            };
            let seed = input.seed.unwrap_or(42);
            let loaded = Arc::new(g);
            let l2 = loaded.clone();
            let found = tokio::task::spawn_blocking(move || {
                algo::communities(&l2.graph, algorithm, resolution, seed)
            })
            .await
            .map_err(|e| HandlerError::retryable(format!("community detection stopped: {e}")))?
            .map_err(|e| HandlerError::fatal(format!("{COMMUNITIES}: {e}")))?;
            let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for (node, c) in found.membership.iter().enumerate() {
                groups.entry(*c).or_default().push(node as u32);
            }
            let mut rows: Vec<CommunityRow> = groups
                .iter()
                .map(|(id, members)| CommunityRow {
                    id: *id,
                    size: members.len() as u64,
                    members: members
                        .iter()
                        .take(MAX_MEMBERS)
                        .map(|m| loaded.nodes[*m as usize].id.clone())
                        .collect(),
                    summary: None,
                })
                .collect();
            let mut usage = None;
            if let Some(model) = model {
                let mut u = Usage {
                    model: model.name().to_string(),
                    ..Default::default()
                };
                let total = rows.len().min(SUMMARIZED);
                for (i, row) in rows.iter_mut().take(SUMMARIZED).enumerate() {
                    ctx.report_progress(format!("summarizing community {} of {total}", i + 1));
                    let text = describe(&loaded, &groups[&row.id]);
                    let (summary, used) = summarize(&ctx, &model, &text).await?;
                    u.input_tokens += used.input_tokens;
                    u.output_tokens += used.output_tokens;
                    row.summary = Some(summary);
                }
                usage = Some(u);
            }
            store.save_communities(&input.graph, &rows).await?;
            let communities = rows
                .into_iter()
                .map(|r| Community {
                    id: r.id,
                    size: r.size,
                    members: r.members,
                    summary: r.summary,
                })
                .collect();
            Ok(serde_json::to_value(CommunitiesResult {
                communities,
                modularity: found.modularity,
                usage,
            })
            .unwrap_or_default())
        })
    }
}

fn name_of(g: &Loaded, node: u32) -> String {
    let n = &g.nodes[node as usize];
    match (&n.label, &n.kind) {
        (Some(l), Some(k)) => format!("{l} ({k})"),
        (Some(l), None) => l.clone(),
        (None, Some(k)) => format!("{} ({k})", n.id),
        (None, None) => n.id.clone(),
    }
}

/// A community as text for the model: its members and the relations among them.
fn describe(g: &Loaded, members: &[u32]) -> String {
    let inside: HashSet<u32> = members.iter().copied().collect();
    let mut text = String::from("Members:\n");
    for m in members.iter().take(60) {
        text.push_str(&format!("- {}\n", name_of(g, *m)));
    }
    text.push_str("Relations:\n");
    let mut n = 0;
    for e in &g.edges {
        let (Some(s), Some(t)) = (g.index.get(&e.source), g.index.get(&e.target)) else {
            continue;
        };
        if inside.contains(s) && inside.contains(t) {
            text.push_str(&format!(
                "- {} -[{}]-> {}\n",
                name_of(g, *s),
                e.kind,
                name_of(g, *t)
            ));
            n += 1;
            if n >= 80 {
                break;
            }
        }
    }
    text
}

async fn summarize(ctx: &TaskContext, model: &Model, text: &str) -> Result<(String, Usage), HandlerError> {
    let req = ChatRequest {
        system: Some(
            "Summarize this community of a knowledge graph in two or three sentences: what its members \
             have in common and how they relate. Use only what is given."
                .into(),
        ),
        temperature: Some(0.0),
        ..ChatRequest::user(text.to_string())
    };
    let answer = ask(ctx, model, &req).await?;
    Ok((answer.text.trim().to_string(), answer.usage))
}

/// `graph.query`.
pub struct Query(pub(super) Arc<Shared>);

impl TaskHandler for Query {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: QueryInput = parse_input(QUERY, input)?;
            check_name(QUERY, "graph", &input.graph)?;
            let given = usize::from(input.neighbors.is_some())
                + usize::from(input.path.is_some())
                + usize::from(input.question.is_some());
            if given != 1 {
                return Err(HandlerError::fatal(format!(
                    "invalid {QUERY} input: give exactly one of neighbors, path and question"
                )));
            }
            let store = self.0.store().await?;
            let result = if let Some(q) = &input.neighbors {
                let depth = q.depth.unwrap_or(1);
                if depth == 0 || depth > MAX_DEPTH {
                    return Err(HandlerError::fatal(format!(
                        "invalid {QUERY} input: neighbors.depth is {depth}, it must be 1 to {MAX_DEPTH}"
                    )));
                }
                let g = Loaded::read(&store, QUERY, &input.graph).await?;
                let start = g.node(QUERY, &input.graph, &q.node)?;
                let found = algo::neighbors(&g.graph, start, depth);
                let truncated = found.len() > MAX_NODES;
                let mut depths: BTreeMap<u32, u32> = found.into_iter().take(MAX_NODES).collect();
                depths.insert(start, 0);
                let mut r = subgraph(&store, &input.graph, &g, &depths).await?;
                r.truncated = truncated;
                r
            } else if let Some(p) = &input.path {
                let g = Loaded::read(&store, QUERY, &input.graph).await?;
                let (from, to) = (
                    g.node(QUERY, &input.graph, &p.from)?,
                    g.node(QUERY, &input.graph, &p.to)?,
                );
                match algo::shortest_path(&g.graph, from, to) {
                    Some(path) => {
                        let depths: BTreeMap<u32, u32> =
                            path.iter().enumerate().map(|(i, n)| (*n, i as u32)).collect();
                        let mut r = subgraph(&store, &input.graph, &g, &depths).await?;
                        let on_path: HashSet<(u32, u32)> = path
                            .windows(2)
                            .map(|w| (w[0].min(w[1]), w[0].max(w[1])))
                            .collect();
                        r.edges.retain(|e| {
                            let (s, t) = (g.index[&e.source], g.index[&e.target]);
                            on_path.contains(&(s.min(t), s.max(t)))
                        });
                        r.path = Some(path.iter().map(|n| g.nodes[*n as usize].id.clone()).collect());
                        r
                    }
                    None => QueryResult {
                        path: Some(vec![]),
                        ..Default::default()
                    },
                }
            } else {
                let question = input.question.as_deref().unwrap_or_default();
                if question.trim().is_empty() {
                    return Err(HandlerError::fatal(format!(
                        "invalid {QUERY} input: question is empty"
                    )));
                }
                let model = need_model(&self.0.model, QUERY)?;
                let g = Loaded::read(&store, QUERY, &input.graph).await?;
                let summaries = store.communities(&input.graph).await?;
                answer(&ctx, &model, &store, &input.graph, &g, &summaries, question).await?
            };
            Ok(serde_json::to_value(result).unwrap_or_default())
        })
    }
}

/// The nodes of `depths` (with their depth in `props`) and the edges among them.
async fn subgraph(
    store: &crate::store::Store,
    graph: &str,
    g: &Loaded,
    depths: &BTreeMap<u32, u32>,
) -> Result<QueryResult, HandlerError> {
    let ids: Vec<String> = depths.keys().map(|n| g.nodes[*n as usize].id.clone()).collect();
    let rows = store.nodes(graph, &ids).await?;
    let mut nodes: Vec<Node> = rows
        .into_iter()
        .map(|r| {
            let mut props: serde_json::Map<String, Value> = r
                .props
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            props.insert("depth".into(), json!(depths[&g.index[&r.id]]));
            Node {
                id: r.id,
                label: r.label,
                kind: r.kind,
                props: Some(props),
            }
        })
        .collect();
    nodes.sort_by_key(|n| (n.props.as_ref().and_then(|p| p["depth"].as_u64()), n.id.clone()));
    let edges = g
        .edges
        .iter()
        .filter(|e| {
            matches!((g.index.get(&e.source), g.index.get(&e.target)),
                (Some(s), Some(t)) if depths.contains_key(s) && depths.contains_key(t))
        })
        .map(|e| Edge {
            source: e.source.clone(),
            target: e.target.clone(),
            kind: (!e.kind.is_empty()).then(|| e.kind.clone()),
            weight: Some(e.weight),
        })
        .collect();
    Ok(QueryResult {
        nodes,
        edges,
        ..Default::default()
    })
}

/// How many of `words` a text has.
fn overlap(words: &BTreeSet<String>, text: &str) -> usize {
    rank::query_words(text)
        .iter()
        .filter(|w| words.contains(*w))
        .count()
}

/// GraphRAG's answer: the community summaries nearest the question (global) and the
/// neighbourhoods of the nodes it names (local), given to the model as context.
async fn answer(
    ctx: &TaskContext,
    model: &Model,
    store: &crate::store::Store,
    graph: &str,
    g: &Loaded,
    summaries: &[CommunityRow],
    question: &str,
) -> Result<QueryResult, HandlerError> {
    let words: BTreeSet<String> = rank::query_words(question).into_iter().collect();
    // Local: the nodes whose names share the most words with the question.
    let mut scored: Vec<(usize, u32)> = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let text = format!("{} {}", n.id, n.label.as_deref().unwrap_or_default());
            (overlap(&words, &text), i as u32)
        })
        .filter(|(s, _)| *s > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let seeds: Vec<u32> = scored.iter().take(SEEDS).map(|s| s.1).collect();
    let mut depths: BTreeMap<u32, u32> = seeds.iter().map(|s| (*s, 0)).collect();
    for s in &seeds {
        for (n, d) in algo::neighbors(&g.graph, *s, 1).into_iter().take(30) {
            depths.entry(n).or_insert(d);
        }
    }
    let local = subgraph(store, graph, g, &depths).await?;
    // Global: the summaries sharing the most words with the question (the largest when none do).
    let mut ranked: Vec<(usize, &CommunityRow)> = summaries
        .iter()
        .filter(|c| c.summary.is_some())
        .map(|c| (overlap(&words, c.summary.as_deref().unwrap_or_default()), c))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    let used: Vec<&CommunityRow> = ranked.iter().take(SUMMARIES).map(|r| r.1).collect();
    if used.is_empty() && local.nodes.is_empty() {
        return Err(HandlerError::fatal(format!(
            "{QUERY}: graph {graph:?} has nothing about this question: no node shares a word with it and no community is summarized (run graph.communities with summarize: true)"
        )));
    }
    let mut context = String::new();
    if !used.is_empty() {
        context.push_str("Community summaries:\n");
        for c in &used {
            context.push_str(&format!(
                "[community {}] {}\n",
                c.id,
                c.summary.as_deref().unwrap_or_default()
            ));
        }
    }
    if !local.nodes.is_empty() {
        context.push_str("Entities:\n");
        for n in &local.nodes {
            let description = n
                .props
                .as_ref()
                .and_then(|p| p.get("description"))
                .and_then(Value::as_str)
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            context.push_str(&format!(
                "- {}{description}\n",
                n.label.as_deref().unwrap_or(&n.id)
            ));
        }
        context.push_str("Relations:\n");
        for e in local.edges.iter().take(LOCAL_EDGES) {
            let label = |id: &str| {
                g.index
                    .get(id)
                    .map(|i| {
                        g.nodes[*i as usize]
                            .label
                            .clone()
                            .unwrap_or_else(|| id.to_string())
                    })
                    .unwrap_or_else(|| id.to_string())
            };
            context.push_str(&format!(
                "- {} -[{}]-> {}\n",
                label(&e.source),
                e.kind.as_deref().unwrap_or("related_to"),
                label(&e.target)
            ));
        }
    }
    let req = ChatRequest {
        system: Some(
            "Answer the question from the knowledge graph context only. Say so when the context does not \
             hold the answer."
                .into(),
        ),
        temperature: Some(0.0),
        ..ChatRequest::user(format!("{context}\nQuestion: {question}"))
    };
    let reply = ask(ctx, model, &req).await?;
    Ok(QueryResult {
        nodes: local
            .nodes
            .into_iter()
            .filter(|n| n.props.as_ref().is_some_and(|p| p["depth"] == 0))
            .collect(),
        answer: Some(reply.text.trim().to_string()),
        communities: used.iter().map(|c| c.id).collect(),
        usage: Some(reply.usage),
        ..Default::default()
    })
}
