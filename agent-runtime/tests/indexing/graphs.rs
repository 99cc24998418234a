//! The GraphRAG handlers: ingesting, communities through the store, neighbours and paths,
//! graphs from an index, and GraphRAG's answers with a strict model stand-in.

use std::collections::BTreeMap;

use cogo_agent::roles::graphrag::{algo, generate};
use cogo_e2e::standin::{Reply, StandIn};
use serde_json::{Value, json};

use super::handlers::{Agents, openai_model, tree_files};

fn edges_json(edges: &[(&str, &str)]) -> Value {
    json!(
        edges
            .iter()
            .map(|(s, t)| json!({"source": s, "target": t, "type": "link"}))
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn ingesting_is_idempotent_and_checks_what_it_gets() {
    let a = Agents::local(None);
    let input = json!({
        "graph": "people",
        "nodes": [{"id": "ada", "label": "Ada Lovelace", "type": "person", "props": {"born": 1815}}],
        "edges": [{"source": "ada", "target": "engine", "type": "wrote_about", "weight": 2.0}]
    });
    let r = a.ok("graph.ingest", input.clone()).await;
    assert_eq!(
        (r["nodes"].as_u64(), r["edges"].as_u64()),
        (Some(2), Some(1)),
        "an edge creates the node it names"
    );
    let r = a.ok("graph.ingest", input).await;
    assert_eq!((r["nodes"].as_u64(), r["edges"].as_u64()), (Some(2), Some(1)));
    // The same triple with another type is another edge; a node ingested again is updated.
    a.ok(
        "graph.ingest",
        json!({"graph": "people", "edges": [{"source": "ada", "target": "engine", "type": "admired"}]}),
    )
    .await;
    let r = a
        .ok(
            "graph.ingest",
            json!({"graph": "people", "nodes": [{"id": "engine", "label": "Analytical Engine"}]}),
        )
        .await;
    assert_eq!((r["nodes"].as_u64(), r["edges"].as_u64()), (Some(2), Some(2)));
    let n = a
        .ok(
            "graph.query",
            json!({"graph": "people", "neighbors": {"node": "ada"}}),
        )
        .await;
    let engine = n["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "engine")
        .unwrap();
    assert_eq!(
        (engine["label"].as_str(), engine["props"]["depth"].as_u64()),
        (Some("Analytical Engine"), Some(1))
    );
    let ada = n["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "ada")
        .unwrap();
    assert_eq!(ada["props"]["born"], 1815);

    let cases = [
        (
            json!({"graph": "g"}),
            "exactly one of nodes/edges, fromIndex and text",
        ),
        (
            json!({"graph": "g", "text": "t", "nodes": [{"id": "a"}]}),
            "exactly one of",
        ),
        (
            json!({"graph": "G!", "nodes": [{"id": "a"}]}),
            "graph \"G!\" must be",
        ),
        (
            json!({"graph": "g", "nodes": [{"id": ""}]}),
            "node id \"\" must be",
        ),
        (
            json!({"graph": "g", "edges": [{"source": "a", "target": "b", "weight": -1}]}),
            "weights must be positive",
        ),
        (
            json!({"graph": "g", "edges": [{"source": "a", "target": "b", "weight": 0}]}),
            "weights must be positive",
        ),
        (json!({"graph": "g", "text": "Ada wrote notes."}), "needs a model"),
        (
            json!({"graph": "g", "fromIndex": "none"}),
            "cannot ask an Indexing agent",
        ),
    ];
    for (input, want) in cases {
        let e = a
            .run("graph.ingest", input.clone())
            .await
            .expect_err(&input.to_string());
        assert!(
            e.message.contains(want),
            "{input}: wanted {want:?} in {:?}",
            e.message
        );
    }
}

#[tokio::test]
async fn communities_of_a_planted_partition_are_found_and_kept() {
    let a = Agents::local(None);
    let (g, truth) = generate::planted_partition(8, 30, 0.4, 0.01, 5);
    let mut edges = vec![];
    for u in 0..g.node_count() as u32 {
        for (v, w) in g.adjacent(u) {
            if u < v {
                edges.push(json!({"source": format!("n{u}"), "target": format!("n{v}"), "weight": w}));
            }
        }
    }
    let r = a
        .ok("graph.ingest", json!({"graph": "planted", "edges": edges}))
        .await;
    assert_eq!(r["edges"].as_u64().unwrap() as usize, g.edge_count());
    for algorithm in ["leiden", "louvain"] {
        let input = json!({"graph": "planted", "algorithm": algorithm, "seed": 3});
        let c = a.ok("graph.communities", input.clone()).await;
        assert_eq!(
            c,
            a.ok("graph.communities", input).await,
            "the same seed, the same communities"
        );
        let mut membership = vec![u32::MAX; g.node_count()];
        for community in c["communities"].as_array().unwrap() {
            for m in community["members"].as_array().unwrap() {
                let node: usize = m.as_str().unwrap()[1..].parse().unwrap();
                membership[node] = community["id"].as_u64().unwrap() as u32;
            }
        }
        assert!(generate::nmi(&membership, &truth) > 0.99, "{algorithm}: {c}");
        let q = algo::modularity(&g, &membership, 1.0).unwrap();
        assert!(
            (c["modularity"].as_f64().unwrap() - q).abs() < 1e-9,
            "{algorithm}: reported {} vs {q}",
            c["modularity"]
        );
        assert_eq!(c["communities"][0]["size"], 30);
    }
    let e = a
        .run("graph.communities", json!({"graph": "planted", "resolution": 0}))
        .await
        .unwrap_err();
    assert!(e.message.contains("resolution is 0"), "{e:?}");
    let e = a
        .run("graph.communities", json!({"graph": "nothing"}))
        .await
        .unwrap_err();
    assert!(e.message.contains("graph \"nothing\" does not exist"), "{e:?}");
    let e = a
        .run(
            "graph.communities",
            json!({"graph": "planted", "summarize": true}),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("needs a model"), "{e:?}");
}

#[tokio::test]
async fn neighbours_and_paths_follow_edges_either_way() {
    let a = Agents::local(None);
    let edges = edges_json(&[("a", "b"), ("c", "b"), ("c", "d"), ("a", "e"), ("x", "y")]);
    a.ok("graph.ingest", json!({"graph": "chain", "edges": edges}))
        .await;
    let n = a
        .ok(
            "graph.query",
            json!({"graph": "chain", "neighbors": {"node": "a", "depth": 2}}),
        )
        .await;
    let depths: BTreeMap<&str, u64> = n["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["id"].as_str().unwrap(), x["props"]["depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(depths, BTreeMap::from([("a", 0), ("b", 1), ("e", 1), ("c", 2)]));
    assert_eq!(n["edges"].as_array().unwrap().len(), 3, "a-b, c-b, a-e: {n}");
    let p = a
        .ok(
            "graph.query",
            json!({"graph": "chain", "path": {"from": "a", "to": "d"}}),
        )
        .await;
    assert_eq!(p["path"], json!(["a", "b", "c", "d"]));
    assert_eq!(p["edges"].as_array().unwrap().len(), 3);
    let p = a
        .ok(
            "graph.query",
            json!({"graph": "chain", "path": {"from": "a", "to": "y"}}),
        )
        .await;
    assert_eq!(p["path"], json!([]), "no path between the two parts");
    for (input, want) in [
        (
            json!({"graph": "chain", "neighbors": {"node": "zz"}}),
            "node \"zz\" is not in graph \"chain\"",
        ),
        (
            json!({"graph": "chain", "neighbors": {"node": "a", "depth": 6}}),
            "depth is 6",
        ),
        (
            json!({"graph": "chain"}),
            "exactly one of neighbors, path and question",
        ),
        (json!({"graph": "chain", "question": "who?"}), "needs a model"),
    ] {
        let e = a.run("graph.query", input.clone()).await.unwrap_err();
        assert!(e.message.contains(want), "{input}: {e:?}");
    }
}

#[tokio::test]
async fn an_index_becomes_a_graph() {
    let a = Agents::local(None);
    a.index("tree", &tree_files()).await;
    let g = a.ok("index.graph", json!({"index": "tree"})).await;
    let r = a
        .ok("graph.ingest", json!({"graph": "code", "fromIndex": "tree"}))
        .await;
    assert_eq!(
        r["nodes"].as_u64().unwrap() as usize,
        g["nodes"].as_array().unwrap().len()
    );
    assert_eq!(
        r["edges"].as_u64().unwrap() as usize,
        g["edges"].as_array().unwrap().len()
    );
    let p = a
        .ok(
            "graph.query",
            json!({"graph": "code", "path": {"from": "symbol:go/uuid-v1.6.0/version4.go#New", "to": "module:io"}}),
        )
        .await;
    assert_eq!(
        p["path"],
        json!([
            "symbol:go/uuid-v1.6.0/version4.go#New",
            "file:go/uuid-v1.6.0/version4.go",
            "module:io"
        ])
    );
}

#[tokio::test]
async fn graphrag_extracts_summarizes_and_answers_with_the_model() {
    let s = StandIn::openai("key").await;
    let a = Agents::local(Some(openai_model(&s.endpoint(), "test-model", "key")));
    s.script([Reply::Text(
        json!({
            "entities": [
                {"name": "Ada Lovelace", "type": "person", "description": "Wrote the first program."},
                {"name": "Analytical  Engine", "type": "machine"},
                {"name": "Charles Babbage", "type": "person"}
            ],
            "relations": [
                {"source": "Ada Lovelace", "target": "Analytical Engine", "type": "wrote_about"},
                {"source": "charles babbage", "target": "Analytical Engine", "type": "designed"}
            ]
        })
        .to_string(),
    )]);
    let r = a
        .ok(
            "graph.ingest",
            json!({"graph": "history", "text": "Ada Lovelace wrote about Babbage's Analytical Engine."}),
        )
        .await;
    assert_eq!(
        (r["nodes"].as_u64(), r["edges"].as_u64()),
        (Some(3), Some(2)),
        "{r}"
    );
    assert_eq!(r["usage"]["model"], "test-model");
    let asked = s.requests().pop().unwrap().body;
    assert_eq!(asked["response_format"]["type"], "json_schema", "{asked}");
    assert!(asked.to_string().contains("Babbage's Analytical Engine"));

    s.script([Reply::Text(
        "Babbage designed the Analytical Engine; Lovelace wrote about it.".into(),
    )]);
    let c = a
        .ok(
            "graph.communities",
            json!({"graph": "history", "summarize": true}),
        )
        .await;
    assert_eq!(c["communities"].as_array().unwrap().len(), 1);
    assert!(
        c["communities"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Babbage designed")
    );

    s.script([Reply::Text("Charles Babbage.".into())]);
    let q = a
        .ok(
            "graph.query",
            json!({"graph": "history", "question": "Who designed the Analytical Engine?"}),
        )
        .await;
    assert_eq!(q["answer"], "Charles Babbage.");
    assert_eq!(q["communities"], json!([0]));
    let prompt = s.requests().pop().unwrap().body.to_string();
    assert!(
        prompt.contains("[community 0] Babbage designed"),
        "global context: {prompt}"
    );
    assert!(
        prompt.contains("Charles Babbage -[designed]-> Analytical Engine"),
        "local context: {prompt}"
    );
    assert!(
        prompt.contains("Wrote the first program."),
        "entity descriptions: {prompt}"
    );
    // The graph changes: the communities found before are no longer used.
    a.ok(
        "graph.ingest",
        json!({"graph": "history", "edges": [{"source": "charles babbage", "target": "london"}]}),
    )
    .await;
    s.script([Reply::Text("Charles Babbage.".into())]);
    let q = a
        .ok(
            "graph.query",
            json!({"graph": "history", "question": "Who designed the Analytical Engine?"}),
        )
        .await;
    assert!(q.get("communities").is_none(), "{q}");
    assert!(
        !s.requests()
            .pop()
            .unwrap()
            .body
            .to_string()
            .contains("[community 0]")
    );
    // A model answer that is not the JSON asked for fails the ingest so it may be retried.
    s.script([Reply::Text("Sorry, I cannot.".into())]);
    let e = a
        .run("graph.ingest", json!({"graph": "history", "text": "More."}))
        .await
        .unwrap_err();
    assert!(
        e.retryable && e.message.contains("not the JSON asked for"),
        "{e:?}"
    );
}
