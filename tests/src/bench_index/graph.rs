//! Community detection: Leiden and Louvain (leiden-rs) against networkx's
//! `louvain_communities` on a planted-partition graph of about 1M edges, and the
//! `graph.ingest` then `graph.communities` handler path over the local store.

use std::{
    io::{BufWriter, Write},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cogo_agent::roles::graphrag::{
    Loaded,
    algo::{self, Algorithm, Graph},
    generate::{nmi, planted_partition},
};
use cogo_api::catalogue::graph::{CommunitiesResult, IngestResult};
use serde_json::{Value, json};

use super::{Agents, Error, thousands};
use crate::pyenv;

/// How long networkx may take.
const NETWORKX_LIMIT: Duration = Duration::from_secs(15 * 60);

/// networkx's Louvain on the edge list in `argv[1]` with `argv[2]` nodes: the seconds it took,
/// the modularity networkx computes, and each node's community (to `argv[3]`).
const NETWORKX: &str = r#"
import json, sys, time
import networkx as nx
path, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
started = time.perf_counter()
G = nx.Graph()
G.add_nodes_from(range(n))
with open(path) as f:
    G.add_edges_from((int(u), int(v)) for u, v in (line.split() for line in f))
loaded = time.perf_counter()
comms = nx.community.louvain_communities(G, seed=42)
found = time.perf_counter()
q = nx.community.modularity(G, comms)
membership = [0] * n
for i, c in enumerate(comms):
    for v in c:
        membership[v] = i
with open(out, "w") as f:
    json.dump({"load": loaded - started, "seconds": found - loaded, "modularity": q,
               "membership": membership, "version": nx.__version__}, f)
"#;

/// The section's report lines.
pub async fn run() -> Result<Vec<String>, Error> {
    let mut report = vec![];
    eprintln!("[bench] generating the planted-partition graph (1,000 groups of 100 nodes)");
    let (g, truth) = planted_partition(1000, 100, 0.15, 0.00005, 7);
    report.push(format!(
        "| communities, planted partition: {} nodes, {} edges, 1,000 groups | seconds | modularity | NMI with the planted groups | communities |",
        thousands(g.node_count() as u64),
        thousands(g.edge_count() as u64)
    ));
    report.push("|---|---|---|---|---|".into());
    for (label, algorithm) in [
        ("Leiden (leiden-rs)", Algorithm::Leiden),
        ("Louvain (leiden-rs)", Algorithm::Louvain),
    ] {
        eprintln!("[bench] {label} on {} edges", g.edge_count());
        let started = Instant::now();
        let c = algo::communities(&g, algorithm, 1.0, 42).map_err(|e| e.to_string())?;
        let secs = started.elapsed().as_secs_f64();
        report.push(format!(
            "| {label} | {secs:.2} | {:.4} | {:.4} | {} |",
            c.modularity,
            nmi(&c.membership, &truth),
            count(&c.membership)
        ));
    }
    report.push(networkx(&g, &truth).await?);

    report.push(String::new());
    report.extend(handlers().await?);
    Ok(report)
}

/// networkx's row: run on the same graph through the test virtualenv's Python.
async fn networkx(g: &Graph, truth: &[u32]) -> Result<String, Error> {
    let dir = std::env::temp_dir().join(format!("cogo-bench-networkx-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (edges, out) = (dir.join("edges.txt"), dir.join("out.json"));
    write_edges(g, &edges)?;
    let python = pyenv::python();
    eprintln!(
        "[bench] networkx louvain_communities(seed=42) on {} edges ({}; at most {} min)",
        g.edge_count(),
        python.display(),
        NETWORKX_LIMIT.as_secs() / 60
    );
    let child = Command::new(&python)
        .args(["-c", NETWORKX])
        .arg(&edges)
        .arg(g.node_count().to_string())
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let output = tokio::task::spawn_blocking(move || wait_with_timeout(child, NETWORKX_LIMIT)).await??;
    let row = match output {
        None => format!(
            "| networkx louvain_communities(seed=42) | timed out after {} min | | | |",
            NETWORKX_LIMIT.as_secs() / 60
        ),
        Some(o) if !o.status.success() => {
            return Err(format!("networkx failed ({}): its error is above", o.status).into());
        }
        Some(_) => {
            let r: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
            let membership: Vec<u32> = serde_json::from_value(r["membership"].clone())?;
            format!(
                "| networkx {} louvain_communities(seed=42) (graph built in {:.1} s, not counted) | {:.2} | {:.4} | {:.4} | {} |",
                r["version"].as_str().unwrap_or("?"),
                r["load"].as_f64().unwrap_or(f64::NAN),
                r["seconds"].as_f64().unwrap_or(f64::NAN),
                r["modularity"].as_f64().unwrap_or(f64::NAN),
                nmi(&membership, truth),
                count(&membership)
            )
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(row)
}

/// `graph.ingest` of a 100k-edge planted partition into a local store, then
/// `graph.communities` with each algorithm (load, detect, save), and the load alone.
async fn handlers() -> Result<Vec<String>, Error> {
    let (g, _) = planted_partition(100, 100, 0.192, 0.0001, 7);
    let nodes: Vec<Value> = (0..g.node_count())
        .map(|i| json!({"id": format!("n{i}")}))
        .collect();
    let edges: Vec<Value> = (0..g.node_count() as u32)
        .flat_map(|u| {
            g.adjacent(u)
                .filter(move |&(v, _)| v > u)
                .map(move |(v, _)| (u, v))
        })
        .map(|(u, v)| json!({"source": format!("n{u}"), "target": format!("n{v}")}))
        .collect();
    let agents = Agents::new("graph")?;
    eprintln!(
        "[bench] graph.ingest: {} nodes, {} edges",
        nodes.len(),
        edges.len()
    );
    let input = json!({"graph": "planted", "nodes": nodes, "edges": edges});
    let started = Instant::now();
    let r: IngestResult = serde_json::from_value(agents.run("graph.ingest", input).await?)?;
    let ingest = started.elapsed().as_secs_f64();

    let store = agents.store.get().await?;
    let started = Instant::now();
    let loaded = Loaded::read(&store, "graph.communities", "planted")
        .await
        .map_err(|e| e.message)?;
    let load = started.elapsed().as_secs_f64();
    drop(loaded);

    let mut report = vec![
        format!(
            "| graph handlers, local store: {} nodes, {} edges | seconds | modularity | communities |",
            thousands(r.nodes),
            thousands(r.edges)
        ),
        "|---|---|---|---|".into(),
        format!("| graph.ingest (one call, nodes and edges given) | {ingest:.2} | | |"),
        format!("| reading the graph from the store (part of graph.communities) | {load:.2} | | |"),
    ];
    for algorithm in ["leiden", "louvain"] {
        eprintln!("[bench] graph.communities ({algorithm})");
        let input = json!({"graph": "planted", "algorithm": algorithm});
        let started = Instant::now();
        let c: CommunitiesResult = serde_json::from_value(agents.run("graph.communities", input).await?)?;
        let secs = started.elapsed().as_secs_f64();
        report.push(format!(
            "| graph.communities ({algorithm}: load, detect, save) | {secs:.2} | {:.4} | {} |",
            c.modularity,
            c.communities.len()
        ));
    }
    Ok(report)
}

/// Each edge once, `u v` per line.
fn write_edges(g: &Graph, path: &Path) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    for u in 0..g.node_count() as u32 {
        for (v, _) in g.adjacent(u).filter(|&(v, _)| v >= u) {
            writeln!(w, "{u} {v}")?;
        }
    }
    w.flush()
}

/// Communities in a membership.
fn count(membership: &[u32]) -> usize {
    membership.iter().collect::<std::collections::HashSet<_>>().len()
}

/// Waits for `child` for at most `limit`; kills it when it takes longer (None then).
fn wait_with_timeout(
    mut child: std::process::Child,
    limit: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output().map(Some);
        }
        if started.elapsed() > limit {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
