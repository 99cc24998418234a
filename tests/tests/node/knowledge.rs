//! The Indexing and GraphRAG agents as pods on the real node: two Indexing pods share one
//! index in PostgreSQL (their `StoreShared` condition says so), a GraphRAG pod with its own
//! local store asks an Indexing pod for an index's graph by a sub-task, finds its communities
//! and answers path questions, all through AgentTasks.

use std::{path::Path, time::Duration};

use cogo_e2e::{
    cluster::{Cluster, Namespace, Operator, wait_until},
    postgres::Postgres,
};
use serde_json::{Value, json};

use super::cluster;

/// Files of the test tree under `dir`, as inline files.
fn files(dir: &str, names: &[&str]) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/index");
    names
        .iter()
        .map(|n| {
            let path = format!("{dir}/{n}");
            let content = std::fs::read_to_string(root.join(&path)).unwrap();
            json!({"path": path, "content": content})
        })
        .collect()
}

/// An AgentTask for the agent named `agent`.
fn task(name: &str, agent: &str, task_type: &str, input: Value) -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
           "spec": {"agent": agent, "type": task_type, "input": input}})
    .to_string()
}

fn succeeded(c: &Cluster, ns: &Namespace, name: &str) -> Value {
    super::workflows::ended(c, ns, name, "Succeeded")["status"]["result"].clone()
}

/// The (status, reason) of condition `type_` of CogoAgent `agent`.
fn condition(c: &Cluster, ns: &Namespace, agent: &str, type_: &str) -> (String, String) {
    let obj = c.get_json(&ns.name, &format!("cogoagent/{agent}")).unwrap();
    cogo_e2e::cluster::condition(&obj, type_).unwrap_or_default()
}

#[test]
fn indexing_and_graphrag_pods_share_indexes_and_build_graphs() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-knowledge");
    let _op = Operator::start_for_pods(&c, "knowledge");
    let pg = Postgres::start_for_pods("knowledge");
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "index-db",
        &format!("--from-literal=url={}", pg.pod_url()),
    ]);
    let agent = |name: &str, role: &str, replicas: i32, storage: Value| {
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": name},
               "spec": {"role": role, "replicas": replicas, "storage": storage,
                        "resources": {"cpuRequest": "50m", "memory": "256Mi"}}})
        .to_string()
    };
    ns.apply_ok(&agent(
        "indexing",
        "Indexing",
        2,
        json!({"databaseSecret": "index-db"}),
    ));
    ns.apply_ok(&agent("graphrag", "GraphRAG", 1, json!({})));
    ns.wait("cogoagent/indexing", "condition=Ready", 180);
    ns.wait("cogoagent/graphrag", "condition=Ready", 180);
    assert_eq!(
        condition(&c, &ns, "indexing", "StoreShared"),
        ("True".into(), "Database".into())
    );
    assert_eq!(
        condition(&c, &ns, "graphrag", "StoreShared"),
        ("True".into(), "SinglePod".into())
    );
    // Two pods with only local stores: the agent says they do not share (the tasks below name
    // their agent, so none lands on these pods, which do not hold the index).
    ns.apply_ok(&agent("apart", "Indexing", 2, json!({})));
    wait_until(Duration::from_secs(60), "apart's StoreShared", || {
        condition(&c, &ns, "apart", "StoreShared") == ("False".into(), "LocalStore".into())
    });

    let go = files(
        "go/uuid-v1.6.0",
        &["uuid.go", "version4.go", "hash.go", "util.go"],
    );
    ns.apply_ok(&task(
        "index",
        "indexing",
        "index.repository",
        json!({"index": "uuid", "source": {"files": go}}),
    ));
    let r = succeeded(&c, &ns, "index");
    assert_eq!(
        (r["files"].as_u64(), r["store"].as_str()),
        (Some(4), Some("database")),
        "{r}"
    );
    assert_eq!(r["languages"], json!({"go": 4}));
    let rows = pg.query("select count(*) from cogo_index_files where index_name = 'uuid'");
    assert_eq!(rows, "4", "the index is in the database");
    // Searches land on either pod; both see the index.
    for i in 0..4 {
        let name = format!("search-{i}");
        ns.apply_ok(&task(
            &name,
            "indexing",
            "index.search",
            json!({"index": "uuid", "query": "NewRandom", "k": 1}),
        ));
        let hits = succeeded(&c, &ns, &name);
        assert_eq!(hits["hits"][0]["symbol"], "NewRandom", "{hits}");
    }

    // The GraphRAG pod has its own store: it asks an Indexing pod for the graph.
    ns.apply_ok(&task(
        "ingest",
        "graphrag",
        "graph.ingest",
        json!({"graph": "uuid", "fromIndex": "uuid", "indexAgent": "indexing"}),
    ));
    let g = succeeded(&c, &ns, "ingest");
    assert!(
        g["nodes"].as_u64().unwrap() > 30 && g["edges"].as_u64().unwrap() > 30,
        "{g}"
    );
    let child = c.get_json(&ns.name, "agenttask/ingest-index-graph-1").unwrap();
    assert_eq!(child["metadata"]["labels"]["cogo.xyz/parent"], "ingest");
    assert_eq!(child["status"]["phase"], "Succeeded");
    ns.apply_ok(&task(
        "communities",
        "graphrag",
        "graph.communities",
        json!({"graph": "uuid", "seed": 1}),
    ));
    let cm = succeeded(&c, &ns, "communities");
    assert!(cm["modularity"].as_f64().unwrap() > 0.2, "{cm}");
    assert!(cm["communities"].as_array().unwrap().len() >= 2, "{cm}");
    ns.apply_ok(&task(
        "path",
        "graphrag",
        "graph.query",
        json!({"graph": "uuid", "path": {"from": "symbol:go/uuid-v1.6.0/version4.go#New", "to": "module:io"}}),
    ));
    let p = succeeded(&c, &ns, "path");
    assert_eq!(
        p["path"],
        json!([
            "symbol:go/uuid-v1.6.0/version4.go#New",
            "file:go/uuid-v1.6.0/version4.go",
            "module:io"
        ])
    );
}
