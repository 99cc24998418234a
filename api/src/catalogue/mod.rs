//! The task catalogue: the input and result of every task type whose handler lives outside
//! the `cogo.*` built-ins, as Rust types. Inputs refuse unknown fields, so a misspelt field
//! fails the task at once with a message naming it.

pub mod browser;
pub mod figma;
pub mod graph;
pub mod index;
pub mod llm;
pub mod mcp;
pub mod python;
pub mod research;
pub mod workflow;

/// How a file's `content` is written: as UTF-8 text or base64.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The content is the file's text.
    #[default]
    Utf8,
    /// The content is the file's bytes in standard base64.
    Base64,
}

/// A task type the Orchestrator's model may start: its role, what it does and the JSON
/// Schema of its input, generated from the same Rust type the handler reads.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The task type.
    pub task_type: &'static str,
    /// The role whose agents run it.
    pub role: crate::AgentRole,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON Schema of its input.
    pub input_schema: serde_json::Value,
    /// Reads an input as the handler will, or says why it cannot (naming the field).
    pub check_input: fn(&serde_json::Value) -> Result<(), String>,
}

/// Every catalogue type a model may start as a sub-task (those whose handlers exist).
pub fn entries() -> Vec<Entry> {
    use crate::AgentRole::{Executor, GraphRag, Indexing, Research};
    vec![
        entry::<research::QueryInput>(
            research::QUERY,
            Research,
            "Answer a question from web pages (urls) or Google Search, with sources.",
        ),
        entry::<research::SummarizeInput>(research::SUMMARIZE, Research, "Summarize a text or a web page."),
        entry::<llm::GenerateInput>(
            llm::GENERATE,
            Research,
            "Ask a language model for text, or for JSON following a schema.",
        ),
        entry::<python::ExecuteInput>(
            python::EXECUTE,
            Executor,
            "Run a Python 3 program in a sandbox (no network) and get its output and files.",
        ),
        entry::<browser::ScreenshotInput>(
            browser::SCREENSHOT,
            Executor,
            "Load a web page in headless Chromium and take a PNG screenshot of it.",
        ),
        entry::<browser::RunInput>(
            browser::RUN,
            Executor,
            "Load a web page in headless Chromium and click, type, press keys, wait, run JavaScript, read elements and take screenshots.",
        ),
        entry::<figma::FileInput>(
            figma::FILE,
            Executor,
            "Read a Figma file as a tree of pages, frames, components and styles.",
        ),
        entry::<figma::ComponentsInput>(
            figma::COMPONENTS,
            Executor,
            "List a Figma file's components, component sets and styles.",
        ),
        entry::<figma::GenerateUiInput>(
            figma::GENERATE_UI,
            Executor,
            "Turn a Figma frame into HTML and CSS or a React component.",
        ),
        entry::<mcp::ToolsInput>(
            mcp::TOOLS,
            Executor,
            "List the tools of an MCP server the FigmaMCP workers know.",
        ),
        entry::<mcp::CallInput>(
            mcp::CALL,
            Executor,
            "Call a tool of an MCP server the FigmaMCP workers know, with arguments checked against its schema.",
        ),
        entry::<index::RepositoryInput>(
            index::REPOSITORY,
            Indexing,
            "Index a git repository or files: definitions, imports and calls with tree-sitter, searchable chunks.",
        ),
        entry::<index::SearchInput>(
            index::SEARCH,
            Indexing,
            "Search an index for code: BM25 words, embeddings, or both fused.",
        ),
        entry::<index::SymbolsInput>(
            index::SYMBOLS,
            Indexing,
            "List an index's definitions by name, prefix, kind or file.",
        ),
        entry::<index::GraphInput>(
            index::GRAPH,
            Indexing,
            "Give an index as a graph of files, symbols, imports and calls.",
        ),
        entry::<graph::IngestInput>(
            graph::INGEST,
            GraphRag,
            "Add nodes and edges to a knowledge graph: given, from an index, or extracted from a text.",
        ),
        entry::<graph::CommunitiesInput>(
            graph::COMMUNITIES,
            GraphRag,
            "Find a graph's communities (Leiden or Louvain) with their modularity, optionally summarized.",
        ),
        entry::<graph::QueryInput>(
            graph::QUERY,
            GraphRag,
            "Query a graph: a node's neighbours, the shortest path between two nodes, or a question answered from it.",
        ),
    ]
}

/// Every catalogue type a client may ask for by role and type (the chat gateway's
/// `agent_task`): [`entries`] and the Orchestrator's own types, which wait for sub-tasks and so
/// are not the model's tools.
pub fn requestable() -> Vec<Entry> {
    use crate::AgentRole::Orchestrator;
    let mut all = entries();
    all.extend([
        entry::<workflow::RunInput>(
            workflow::RUN,
            Orchestrator,
            "Run a workflow of steps, each a task, in the order their dependencies allow.",
        ),
        entry::<workflow::PlanInput>(
            workflow::PLAN,
            Orchestrator,
            "Have the model plan a workflow for a goal, then run it.",
        ),
        entry::<workflow::ChatInput>(
            workflow::CHAT,
            Orchestrator,
            "Answer a chat message; the model may start catalogue tasks to answer.",
        ),
        entry::<workflow::GreetingInput>(workflow::GREETING, Orchestrator, "Greet a user in a language."),
    ]);
    all
}

fn entry<T: schemars::JsonSchema + serde::de::DeserializeOwned>(
    task_type: &'static str,
    role: crate::AgentRole,
    description: &'static str,
) -> Entry {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    Entry {
        task_type,
        role,
        description,
        input_schema: schema,
        check_input: |v| {
            serde_json::from_value::<T>(v.clone())
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    fn refused<T: DeserializeOwned>(input: Value, field: &str) {
        let e = serde_json::from_value::<T>(input.clone())
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains(&format!("unknown field `{field}`"))),
            "{input}: {e:?}"
        );
    }

    #[test]
    fn every_input_refuses_an_unknown_field_by_name() {
        refused::<super::llm::GenerateInput>(json!({"prompt": "a", "temprature": 1}), "temprature");
        refused::<super::research::QueryInput>(json!({"question": "q", "url": "x"}), "url");
        refused::<super::research::SummarizeInput>(json!({"text": "t", "words": 3}), "words");
        refused::<super::workflow::RunInput>(json!({"steps": [], "fail_fast": true}), "fail_fast");
        refused::<super::workflow::RunInput>(
            json!({"steps": [{"id": "a", "type": "cogo.echo", "depends": ["b"]}]}),
            "depends",
        );
        refused::<super::workflow::PlanInput>(json!({"goal": "g", "steps": 3}), "steps");
        refused::<super::workflow::GreetingInput>(json!({"language": "ko", "lang": "ko"}), "lang");
        refused::<super::workflow::ChatInput>(
            json!({"sessionId": "s", "message": "m", "lang": "ko"}),
            "lang",
        );
        refused::<super::index::RepositoryInput>(
            json!({"index": "i", "source": {"files": []}, "includes": ["*"]}),
            "includes",
        );
        refused::<super::index::RepositoryInput>(
            json!({"index": "i", "source": {"git": {"url": "https://x", "branch": "main"}}}),
            "branch",
        );
        refused::<super::index::SearchInput>(json!({"index": "i", "query": "q", "limit": 3}), "limit");
        refused::<super::index::SymbolsInput>(json!({"index": "i", "names": "x"}), "names");
        refused::<super::graph::IngestInput>(
            json!({"graph": "g", "edges": [{"source": "a", "target": "b", "label": "x"}]}),
            "label",
        );
        refused::<super::graph::CommunitiesInput>(json!({"graph": "g", "algo": "leiden"}), "algo");
        refused::<super::graph::QueryInput>(
            json!({"graph": "g", "neighbors": {"node": "a", "hops": 2}}),
            "hops",
        );
        refused::<super::browser::ScreenshotInput>(json!({"url": "https://a", "wait": "#x"}), "wait");
        refused::<super::browser::RunInput>(
            json!({"url": "https://a", "steps": [{"action": "click", "target": "#x"}]}),
            "target",
        );
        refused::<super::figma::FileInput>(json!({"fileKey": "k", "deep": 2}), "deep");
        refused::<super::figma::GenerateUiInput>(
            json!({"fileKey": "k", "nodeId": "1:2", "lang": "html"}),
            "lang",
        );
        refused::<super::mcp::CallInput>(json!({"server": "s", "tool": "t", "args": {}}), "args");
    }

    #[test]
    fn every_entry_has_an_object_schema_from_its_type() {
        let entries = super::entries();
        assert!(entries.len() >= 4);
        for e in entries {
            assert_eq!(e.input_schema["type"], "object", "{}", e.task_type);
            assert!(e.input_schema.get("$schema").is_none());
        }
        let query = super::entries()
            .into_iter()
            .find(|e| e.task_type == "research.query")
            .unwrap();
        assert_eq!(query.input_schema["required"], serde_json::json!(["question"]));
        assert_eq!(query.input_schema["additionalProperties"], false);
        assert!((query.check_input)(&serde_json::json!({"question": "why?"})).is_ok());
        let bad = (query.check_input)(&serde_json::json!({"question": "why?", "url": "x"})).unwrap_err();
        assert!(bad.contains("unknown field `url`"), "{bad}");
    }
}
