//! `graph.ingest`: nodes and edges given, from an index, or extracted from a text.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use cogo_api::{
    AgentRole,
    broker::SubtaskRequest,
    catalogue::{
        graph::{Edge, INGEST, IngestInput, IngestResult, Node},
        index::{GRAPH, GraphResult},
        llm::Usage,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use crate::{
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    llm::ChatRequest,
    roles::{
        ask,
        indexing::{check_name, index_graph},
        need_model,
    },
    store::{EdgeRow, NodeRow},
};

/// The most nodes plus edges one ingest may add.
pub const MAX_ITEMS: usize = 200_000;
/// The longest node id (a symbol's id holds its file's path, up to 1024 bytes, and names).
pub const MAX_ID: usize = 2048;
/// Characters of text the model reads at once; a longer text is read in pieces.
pub const TEXT_PIECE: usize = 12_000;
/// The longest text.
pub const MAX_TEXT: usize = 200_000;

/// `graph.ingest`.
pub struct Ingest(pub(super) Arc<Shared>);

impl TaskHandler for Ingest {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: IngestInput = parse_input(INGEST, input)?;
            check_name(INGEST, "graph", &input.graph)?;
            let explicit = !input.nodes.is_empty() || !input.edges.is_empty();
            let given = usize::from(explicit)
                + usize::from(input.from_index.is_some())
                + usize::from(input.text.is_some());
            if given != 1 {
                return Err(HandlerError::fatal(format!(
                    "invalid {INGEST} input: give exactly one of nodes/edges, fromIndex and text"
                )));
            }
            let mut usage = None;
            let (nodes, edges) = if explicit {
                (input.nodes, input.edges)
            } else if let Some(index) = &input.from_index {
                check_name(INGEST, "fromIndex", index)?;
                let g = from_index(&self.0, &ctx, index, input.index_agent.as_deref()).await?;
                (g.nodes, g.edges)
            } else {
                let text = input.text.as_deref().unwrap_or_default();
                let (n, e, u) = extract(&self.0, &ctx, text).await?;
                usage = Some(u);
                (n, e)
            };
            let most = if explicit { MAX_ITEMS } else { usize::MAX };
            let (nodes, edges) = rows(nodes, edges, most)?;
            let store = self.0.store().await?;
            for batch in nodes.chunks(5000) {
                store.upsert_graph(&input.graph, batch, &[]).await?;
            }
            for batch in edges.chunks(5000) {
                store.upsert_graph(&input.graph, &[], batch).await?;
            }
            // Communities found before no longer describe the graph.
            store.save_communities(&input.graph, &[]).await?;
            let (n, e) = store.graph_totals(&input.graph).await?;
            Ok(serde_json::to_value(IngestResult {
                graph: input.graph,
                nodes: n,
                edges: e,
                usage,
            })
            .unwrap_or_default())
        })
    }
}

/// Checks nodes and edges (at most `most` of them) and turns them into rows; a node id or an
/// edge given twice is one row, the later one's fields winning (as a second ingest would).
fn rows(
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    most: usize,
) -> Result<(Vec<NodeRow>, Vec<EdgeRow>), HandlerError> {
    if nodes.len() + edges.len() > most {
        return Err(HandlerError::fatal(format!(
            "invalid {INGEST} input: {} nodes and edges, the most at once is {most}",
            nodes.len() + edges.len()
        )));
    }
    let check_id = |what: &str, id: &str| {
        if id.is_empty() || id.len() > MAX_ID || id.contains('\0') {
            Err(HandlerError::fatal(format!(
                "invalid {INGEST} input: {what} {id:?} must be 1 to {MAX_ID} bytes"
            )))
        } else {
            Ok(())
        }
    };
    let mut node_rows: Vec<NodeRow> = Vec::with_capacity(nodes.len());
    let mut node_at: HashMap<String, usize> = HashMap::new();
    for n in nodes {
        check_id("node id", &n.id)?;
        let row = NodeRow {
            id: n.id,
            label: n.label,
            kind: n.kind,
            props: n.props.map(|p| Value::Object(p).to_string()),
        };
        match node_at.get(&row.id) {
            Some(&at) => {
                let old = &mut node_rows[at];
                old.label = row.label.or(old.label.take());
                old.kind = row.kind.or(old.kind.take());
                old.props = row.props.or(old.props.take());
            }
            None => {
                node_at.insert(row.id.clone(), node_rows.len());
                node_rows.push(row);
            }
        }
    }
    let mut edge_rows: Vec<EdgeRow> = Vec::with_capacity(edges.len());
    let mut edge_at: HashMap<(String, String, String), usize> = HashMap::new();
    for e in edges {
        check_id("edge source", &e.source)?;
        check_id("edge target", &e.target)?;
        let weight = e.weight.unwrap_or(1.0);
        if !weight.is_finite() || weight <= 0.0 {
            return Err(HandlerError::fatal(format!(
                "invalid {INGEST} input: edge {} -> {} has weight {weight}; weights must be positive numbers",
                e.source, e.target
            )));
        }
        let row = EdgeRow {
            source: e.source,
            target: e.target,
            kind: e.kind.unwrap_or_default(),
            weight,
        };
        let key = (row.source.clone(), row.target.clone(), row.kind.clone());
        match edge_at.get(&key) {
            Some(&at) => edge_rows[at].weight = row.weight,
            None => {
                edge_at.insert(key, edge_rows.len());
                edge_rows.push(row);
            }
        }
    }
    Ok((node_rows, edge_rows))
}

/// The graph of `index`: from this agent's store when it holds the index (a database shared
/// with the Indexing agents), else from an Indexing agent by an `index.graph` sub-task.
async fn from_index(
    shared: &Shared,
    ctx: &TaskContext,
    index: &str,
    agent: Option<&str>,
) -> Result<GraphResult, HandlerError> {
    let store = shared.store().await?;
    if store.index_exists(index).await? {
        return index_graph(&store, index).await.map_err(HandlerError::from);
    }
    // A retried ingest asks again rather than reading a failed earlier answer.
    let name = format!("{}-index-graph-{}", ctx.task.name, ctx.task.attempt);
    ctx.create_subtask(SubtaskRequest {
        name: Some(name.clone()),
        agent: agent.map(str::to_string),
        role: agent.is_none().then_some(AgentRole::Indexing),
        task_type: GRAPH.into(),
        input: Some(json!({"index": index})),
        ..Default::default()
    })
    .await
    .map_err(|e| HandlerError::of_broker("cannot ask an Indexing agent for the index", e))?;
    let view = crate::roles::orchestrator::wait_for(ctx, &name).await?;
    if view.phase != cogo_api::TaskPhase::Succeeded {
        return Err(HandlerError::fatal(format!(
            "{INGEST}: the Indexing agent could not give index {index:?}: {}",
            view.message.unwrap_or_default()
        )));
    }
    let result = view.result.ok_or_else(|| {
        HandlerError::fatal(format!(
            "{INGEST}: the graph of index {index:?} is too large to pass between agents; give the GraphRAG and Indexing agents the same spec.storage.databaseSecret so the graph is read from the database"
        ))
    })?;
    serde_json::from_value(result).map_err(|e| {
        HandlerError::fatal(format!(
            "{INGEST}: the Indexing agent's graph is not readable: {e}"
        ))
    })
}

#[derive(Deserialize)]
struct Extracted {
    #[serde(default)]
    entities: Vec<Entity>,
    #[serde(default)]
    relations: Vec<Relation>,
}

#[derive(Deserialize)]
struct Entity {
    name: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct Relation {
    source: String,
    target: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// The id of an entity named `name`: lowercased, spaces collapsed.
pub fn entity_id(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn extraction_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "entities": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "type": {"type": "string"}, "description": {"type": "string"}
            }, "required": ["name", "type"]}},
            "relations": {"type": "array", "items": {"type": "object", "properties": {
                "source": {"type": "string"}, "target": {"type": "string"}, "type": {"type": "string"}
            }, "required": ["source", "target", "type"]}}
        },
        "required": ["entities", "relations"]
    })
}

/// Entities and relations of `text`, by the model (a piece of the text at a time).
async fn extract(
    shared: &Shared,
    ctx: &TaskContext,
    text: &str,
) -> Result<(Vec<Node>, Vec<Edge>, Usage), HandlerError> {
    let model = need_model(&shared.model, INGEST)?;
    if text.trim().is_empty() {
        return Err(HandlerError::fatal(format!(
            "invalid {INGEST} input: text is empty"
        )));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(HandlerError::fatal(format!(
            "invalid {INGEST} input: text has more than {MAX_TEXT} characters"
        )));
    }
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars.chunks(TEXT_PIECE).map(|c| c.iter().collect()).collect();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String, String), Edge> = BTreeMap::new();
    let mut usage = Usage {
        model: model.name().to_string(),
        ..Default::default()
    };
    for (i, piece) in pieces.iter().enumerate() {
        if pieces.len() > 1 {
            ctx.report_progress(format!("extracting from piece {} of {}", i + 1, pieces.len()));
        }
        let req = ChatRequest {
            system: Some(
                "Extract a knowledge graph from the text: the entities (people, organisations, places, \
                 products, concepts, events) with a type and a one-sentence description, and the relations \
                 between them as (source, target, type) with entity names exactly as in `entities`. \
                 Use short snake_case relation types such as works_at, located_in, part_of."
                    .into(),
            ),
            response_schema: Some(extraction_schema()),
            temperature: Some(0.0),
            ..ChatRequest::user(piece.clone())
        };
        let answer = ask(ctx, &model, &req).await?;
        usage.input_tokens += answer.usage.input_tokens;
        usage.output_tokens += answer.usage.output_tokens;
        let got: Extracted = serde_json::from_str(answer.text.trim()).map_err(|e| {
            HandlerError::retryable(format!("the model's entities are not the JSON asked for: {e}"))
        })?;
        for e in got.entities {
            let id = entity_id(&e.name);
            // A name the model made up past any sense is left out, not the whole text.
            if id.is_empty() || id.len() > MAX_ID {
                continue;
            }
            let props = e.description.map(|d| {
                let mut m = serde_json::Map::new();
                m.insert("description".into(), Value::String(d));
                m
            });
            nodes.entry(id.clone()).or_insert(Node {
                id,
                label: Some(e.name.split_whitespace().collect::<Vec<_>>().join(" ")),
                kind: e.kind,
                props,
            });
        }
        for r in got.relations {
            let (s, t) = (entity_id(&r.source), entity_id(&r.target));
            if s.is_empty() || t.is_empty() || s.len() > MAX_ID || t.len() > MAX_ID {
                continue;
            }
            let kind = r.kind.unwrap_or_else(|| "related_to".into());
            edges.entry((s.clone(), t.clone(), kind.clone())).or_insert(Edge {
                source: s,
                target: t,
                kind: Some(kind),
                weight: None,
            });
        }
    }
    Ok((
        nodes.into_values().collect(),
        edges.into_values().collect(),
        usage,
    ))
}
