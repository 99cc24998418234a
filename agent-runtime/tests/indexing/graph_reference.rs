//! The GraphRAG graph algorithms checked against networkx, the reference implementation.
//!
//! Each networkx test writes the graph as an edge list to a temporary directory, runs an inline
//! Python snippet on it and compares the JSON it prints. The interpreter is `python3`, or the one
//! named by `COGO_PYTHON`; networkx must be importable there (`python3 -m pip install networkx`).
//! A missing networkx fails these tests: it never skips them.

use std::path::PathBuf;
use std::process::Command;

use cogo_agent::roles::graphrag::{
    algo::{self, AlgoError, Algorithm, Graph},
    generate,
};
use serde_json::{Value, json};

const SEED: u64 = 42;
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Leiden, Algorithm::Louvain];

// ---------------------------------------------------------------------------------------------
// Harness: temporary files and the Python reference.

/// Imports networkx or exits with status 3, which `python` turns into a clear failure.
const PRELUDE: &str = r#"
import json, sys
try:
    import networkx as nx
except ImportError as err:
    sys.stderr.write(f"cannot import networkx: {err}\n")
    sys.exit(3)

def read_graph(path, n):
    G = nx.Graph()
    G.add_nodes_from(range(n))
    with open(path) as f:
        for line in f:
            u, v, w = line.split()
            G.add_edge(int(u), int(v), weight=float(w))
    return G

def groups(membership):
    by_id = {}
    for node, c in enumerate(membership):
        by_id.setdefault(c, set()).add(node)
    return list(by_id.values())
"#;

fn interpreter() -> String {
    std::env::var("COGO_PYTHON").unwrap_or_else(|_| cogo_e2e::pyenv::python().to_string_lossy().into_owned())
}

/// Runs `PRELUDE + script` with `args` and parses the last line it prints as JSON.
fn python(script: &str, args: &[&str]) -> Value {
    let python = interpreter();
    let install = format!(
        "these tests need networkx as the reference: install it with \
         `{python} -m pip install networkx` (or `apt-get install python3-networkx`), \
         or point COGO_PYTHON at an interpreter that has it"
    );
    let output = Command::new(&python)
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run `{python}` ({err}); {install}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        panic!("{}; {install}", stderr.trim());
    }
    assert!(output.status.success(), "the networkx reference failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|err| panic!("bad JSON from Python ({err}): {last}"))
}

/// A per-test directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cogo-graph-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write scratch file");
        path.to_string_lossy().into_owned()
    }

    /// The graph as `u v weight` lines, each undirected edge once.
    fn edge_list(&self, g: &Graph) -> String {
        self.file("edges.txt", &edge_lines(g))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn edge_lines(g: &Graph) -> String {
    let mut out = String::new();
    for u in 0..g.node_count() as u32 {
        for (v, w) in g.adjacent(u).filter(|&(v, _)| v >= u) {
            out.push_str(&format!("{u} {v} {w:?}\n"));
        }
    }
    out
}

/// Builds a graph from a networkx generator expression, e.g. `nx.karate_club_graph()`.
fn graph_from_networkx(expression: &str) -> Graph {
    let exported = python(
        r#"
G = nx.convert_node_labels_to_integers(eval(sys.argv[1]))
edges = [[u, v, d.get("weight", 1.0)] for u, v, d in G.edges(data=True)]
print(json.dumps({"n": G.number_of_nodes(), "edges": edges}))
"#,
        &[expression],
    );
    let n = exported["n"].as_u64().expect("n") as usize;
    let edges = exported["edges"].as_array().expect("edges").iter().map(|e| {
        (
            e[0].as_u64().expect("u") as u32,
            e[1].as_u64().expect("v") as u32,
            e[2].as_f64().expect("w"),
        )
    });
    Graph::new(n, edges).expect("networkx exports a valid graph")
}

fn u32s(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("membership")
        .iter()
        .map(|c| c.as_u64().expect("id") as u32)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Communities on known graphs.

/// Runs both algorithms and networkx's Louvain on `g`, then checks that ours are at least as
/// modular (within `tolerance`) and that both sides compute the same modularity for a partition.
fn assert_matches_networkx(name: &str, g: &Graph, resolution: f64, tolerance: f64) {
    let ours: Vec<algo::Communities> = ALGORITHMS
        .iter()
        .map(|&a| algo::communities(g, a, resolution, SEED).expect("communities"))
        .collect();
    let scratch = Scratch::new(name);
    let edges = scratch.edge_list(g);
    let partitions = json!([ours[0].membership, ours[1].membership]).to_string();
    let partitions = scratch.file("ours.json", &partitions);
    let reference = python(
        r#"
edges, n, resolution, seed, ours = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
G = read_graph(edges, n)
comms = nx.community.louvain_communities(G, weight="weight", resolution=resolution, seed=seed)
membership = [0] * n
for i, c in enumerate(comms):
    for u in c:
        membership[u] = i
with open(ours) as f:
    ours = json.load(f)
print(json.dumps({
    "membership": membership,
    "modularity": nx.community.modularity(G, comms, weight="weight", resolution=resolution),
    "ours": [nx.community.modularity(G, groups(m), weight="weight", resolution=resolution) for m in ours],
}))
"#,
        &[
            &edges,
            &g.node_count().to_string(),
            &resolution.to_string(),
            &SEED.to_string(),
            &partitions,
        ],
    );
    let nx_q = reference["modularity"].as_f64().expect("modularity");
    let nx_membership = u32s(&reference["membership"]);

    let ours_of_nx = algo::modularity(g, &nx_membership, resolution).expect("same length");
    assert!(
        (ours_of_nx - nx_q).abs() < 1e-9,
        "{name}: our modularity of networkx's partition is {ours_of_nx}, networkx says {nx_q}"
    );
    for (found, (algorithm, nx_of_ours)) in ours
        .iter()
        .zip(ALGORITHMS.iter().zip(reference["ours"].as_array().expect("ours")))
    {
        let nx_of_ours = nx_of_ours.as_f64().expect("modularity");
        assert!(
            (found.modularity - nx_of_ours).abs() < 1e-9,
            "{name}: {algorithm:?} reports modularity {}, networkx computes {nx_of_ours}",
            found.modularity
        );
        assert!(
            found.modularity >= nx_q - tolerance,
            "{name}: {algorithm:?} modularity {} is below networkx louvain's {nx_q} - {tolerance}",
            found.modularity
        );
        eprintln!(
            "{name} (gamma {resolution}): {algorithm:?} {:.6} vs networkx {nx_q:.6}",
            found.modularity
        );
    }
}

#[test]
fn karate_club_is_as_modular_as_networkx() {
    let g = graph_from_networkx("nx.karate_club_graph()");
    assert_eq!((g.node_count(), g.edge_count()), (34, 78));
    assert_matches_networkx("karate", &g, 1.0, 0.02);
}

#[test]
fn resolution_follows_the_networkx_convention() {
    let g = graph_from_networkx("nx.karate_club_graph()");
    assert_matches_networkx("karate-0.5", &g, 0.5, 0.02);
    assert_matches_networkx("karate-2.0", &g, 2.0, 0.02);
}

#[test]
fn random_partition_graph_is_as_modular_as_networkx() {
    let g = graph_from_networkx("nx.random_partition_graph([40, 50, 60, 70, 80], 0.25, 0.02, seed=3)");
    assert_matches_networkx("random-partition", &g, 1.0, 0.02);
}

#[test]
fn ring_of_cliques_is_split_into_its_cliques() {
    let (cliques, size) = (8u32, 6u32);
    let mut edges = Vec::new();
    for c in 0..cliques {
        let base = c * size;
        for i in 0..size {
            for j in i + 1..size {
                edges.push((base + i, base + j, 1.0));
            }
        }
        edges.push((base, (base + size) % (cliques * size), 1.0));
    }
    let g = Graph::new((cliques * size) as usize, edges).expect("valid graph");
    assert_matches_networkx("ring-of-cliques", &g, 1.0, 1e-9);
    let expected: Vec<u32> = (0..cliques * size).map(|i| i / size).collect();
    for algorithm in ALGORITHMS {
        let found = algo::communities(&g, algorithm, 1.0, SEED).expect("communities");
        assert_eq!(found.membership, expected, "{algorithm:?}");
    }
}

#[test]
fn self_loops_parallel_edges_and_weights_count_as_in_networkx() {
    let (planted, _) = generate::planted_partition(4, 30, 0.3, 0.03, 11);
    // Re-weight, double some edges (they merge by summing) and add self loops.
    let mut edges = Vec::new();
    for u in 0..planted.node_count() as u32 {
        for (v, _) in planted.adjacent(u).filter(|&(v, _)| v > u) {
            let w = 0.5 + f64::from((u * 7 + v * 13) % 5);
            edges.push((v, u, w));
            if (u + v) % 4 == 0 {
                edges.push((u, v, 0.25));
            }
        }
        if u % 9 == 0 {
            edges.push((u, u, 1.5));
        }
    }
    let g = Graph::new(planted.node_count(), edges).expect("valid graph");
    assert!(
        g.adjacent(0).any(|(v, w)| v == 0 && w == 1.5),
        "self loops are kept"
    );
    assert_eq!(
        g.degree(0),
        g.adjacent(0).map(|(_, w)| w).sum::<f64>() + 1.5,
        "a loop counts twice"
    );
    assert_matches_networkx("weighted-loops", &g, 1.0, 0.02);
}

// ---------------------------------------------------------------------------------------------
// 2. Planted partition recovery.

#[test]
fn strong_planted_partitions_are_recovered() {
    let (g, truth) = generate::planted_partition(10, 100, 0.3, 0.002, 5);
    for algorithm in ALGORITHMS {
        let found = algo::communities(&g, algorithm, 1.0, SEED).expect("communities");
        let score = generate::nmi(&found.membership, &truth);
        assert!(
            score >= 0.99,
            "{algorithm:?} recovered the planted groups with NMI {score}"
        );
    }
}

#[test]
fn planted_partition_has_the_expected_density() {
    let (g, truth) = generate::planted_partition(10, 100, 0.3, 0.002, 5);
    let inside = 10.0 * 100.0 * 99.0 / 2.0 * 0.3;
    let across = 45.0 * 100.0 * 100.0 * 0.002;
    let expected = inside + across;
    let got = g.edge_count() as f64;
    assert!(
        (got - expected).abs() < 4.0 * expected.sqrt(),
        "{got} edges, expected ~{expected}"
    );
    assert_eq!(truth.len(), 1000);
    assert_eq!(
        generate::planted_partition(10, 100, 0.3, 0.002, 5).0,
        g,
        "same seed, same graph"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Paths and neighbourhoods.

#[test]
fn paths_and_neighbourhoods_match_networkx() {
    let (g, _) = generate::planted_partition(1, 1500, 0.0025, 0.0, 9);
    let nodes: Vec<u32> = (0..1500).step_by(97).collect();
    let depths = [1u32, 2, 3, 6];
    let mut pairs = Vec::new();
    let mut paths = Vec::new();
    for &s in &nodes {
        for &t in &nodes {
            pairs.push((s, t));
            paths.push(algo::shortest_path(&g, s, t));
        }
    }
    let scratch = Scratch::new("paths");
    let edges = scratch.edge_list(&g);
    let query = json!({"nodes": nodes, "depths": depths, "pairs": pairs, "paths": paths}).to_string();
    let query = scratch.file("query.json", &query);
    let reference = python(
        r#"
G = read_graph(sys.argv[1], int(sys.argv[2]))
with open(sys.argv[3]) as f:
    q = json.load(f)
def length(s, t):
    try:
        return nx.shortest_path_length(G, s, t)
    except nx.NetworkXNoPath:
        return None
def valid(path, s, t):
    return path[0] == s and path[-1] == t and all(G.has_edge(a, b) for a, b in zip(path, path[1:]))
print(json.dumps({
    "lengths": [length(s, t) for s, t in q["pairs"]],
    "valid": [p is None or valid(p, s, t) for p, (s, t) in zip(q["paths"], q["pairs"])],
    "neighbours": [[sorted([v, d] for v, d in nx.single_source_shortest_path_length(G, s, cutoff=depth).items() if v != s)
                    for depth in q["depths"]] for s in q["nodes"]],
}))
"#,
        &[&edges, "1500", &query],
    );
    let mut reachable = 0;
    for (i, ((s, t), path)) in pairs.iter().zip(&paths).enumerate() {
        let expected = reference["lengths"][i].as_u64();
        assert_eq!(
            path.as_ref().map(|p| p.len() as u64 - 1),
            expected,
            "hops from {s} to {t}"
        );
        assert_eq!(
            reference["valid"][i],
            json!(true),
            "path {path:?} from {s} to {t} uses a missing edge"
        );
        reachable += usize::from(expected.is_some_and(|l| l > 2));
    }
    assert!(
        reachable > pairs.len() / 2,
        "the graph must make most pairs a few hops apart"
    );
    for (i, &s) in nodes.iter().enumerate() {
        for (j, &depth) in depths.iter().enumerate() {
            let ours = algo::neighbors(&g, s, depth);
            let expected: Vec<(u32, u32)> = reference["neighbours"][i][j]
                .as_array()
                .expect("neighbour list")
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().expect("node") as u32,
                        p[1].as_u64().expect("depth") as u32,
                    )
                })
                .collect();
            let mut by_node = ours.clone();
            by_node.sort_unstable();
            assert_eq!(by_node, expected, "neighbours of {s} within {depth}");
            assert!(
                ours.windows(2).all(|w| (w[0].1, w[0].0) < (w[1].1, w[1].0)),
                "ordered by hop, node"
            );
        }
    }
}

#[test]
fn shortest_paths_break_ties_by_lowest_index() {
    let g = graph_from_networkx("nx.grid_2d_graph(4, 4)");
    let reference = python(
        r#"
G = nx.convert_node_labels_to_integers(nx.grid_2d_graph(4, 4))
print(json.dumps([[min(nx.all_shortest_paths(G, s, t)) for t in G] for s in G]))
"#,
        &[],
    );
    for s in 0..16u32 {
        for t in 0..16u32 {
            let expected: Vec<u32> = u32s(&reference[s as usize][t as usize]);
            assert_eq!(algo::shortest_path(&g, s, t), Some(expected), "{s} -> {t}");
        }
    }
}

#[test]
fn queries_outside_the_graph_find_nothing() {
    let g = Graph::new(4, [(0, 1, 1.0), (2, 3, 1.0)]).expect("valid graph");
    assert_eq!(algo::shortest_path(&g, 0, 3), None, "different components");
    assert_eq!(algo::shortest_path(&g, 0, 9), None, "unknown node");
    assert_eq!(algo::shortest_path(&g, 2, 2), Some(vec![2]));
    assert_eq!(algo::neighbors(&g, 9, 3), vec![]);
    assert_eq!(algo::neighbors(&g, 0, 0), vec![]);
    assert_eq!(algo::neighbors(&g, 0, 5), vec![(1, 1)]);
}

// ---------------------------------------------------------------------------------------------
// 4. Memory on a 100,000-edge graph, measured in a child process.

const RSS_BOUND_MIB: f64 = 64.0;
const CHILD: &str = "graph_reference::communities_on_100k_edges_stay_within_memory_bound";
/// Set in the child process that does the measured work.
const CHILD_ENV: &str = "COGO_GRAPH_MEMORY_CHILD";

fn vm_hwm_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib / 1024.0
}

/// The measured work of `communities_on_100k_edges_stay_within_memory_bound`, run alone in a
/// fresh process (the test binary again, with `CHILD_ENV` set) so that no other test's
/// allocations blur the peak.
fn communities_on_100k_edges_in_this_process() {
    let before = vm_hwm_mib();
    let (g, truth) = generate::planted_partition(50, 400, 0.022, 0.00006, 3);
    let mut modularity = Vec::new();
    for algorithm in ALGORITHMS {
        let found = algo::communities(&g, algorithm, 1.0, SEED).expect("communities");
        modularity.push((found.modularity, generate::nmi(&found.membership, &truth)));
    }
    let report = json!({
        "edges": g.edge_count(),
        "growth_mib": vm_hwm_mib() - before,
        "modularity": modularity.iter().map(|m| m.0).collect::<Vec<_>>(),
        "nmi": modularity.iter().map(|m| m.1).collect::<Vec<_>>(),
    });
    // A line of its own: the harness prints the test name before it.
    println!("\nRSS_REPORT {report}");
}

#[test]
fn communities_on_100k_edges_stay_within_memory_bound() {
    if std::env::var_os(CHILD_ENV).is_some() {
        communities_on_100k_edges_in_this_process();
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new(exe)
        .args([CHILD, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RSS_REPORT "))
        .expect("child report");
    let report: Value = serde_json::from_str(line).expect("report JSON");
    let edges = report["edges"].as_u64().expect("edges");
    assert!(
        (90_000..=110_000).contains(&edges),
        "{edges} edges, wanted about 100,000"
    );
    let growth = report["growth_mib"].as_f64().expect("growth");
    assert!(
        growth < RSS_BOUND_MIB,
        "peak RSS grew {growth:.1} MiB (bound {RSS_BOUND_MIB} MiB)"
    );
    for (algorithm, q) in ALGORITHMS.iter().zip(report["modularity"].as_array().expect("q")) {
        let q = q.as_f64().expect("modularity");
        assert!(
            q > 0.3,
            "{algorithm:?} modularity {q} on a strongly clustered graph"
        );
    }
    eprintln!("100k edges: {report}");
}

// ---------------------------------------------------------------------------------------------
// 5. Reproducibility, ordering and clear errors.

#[test]
fn the_same_seed_gives_the_same_membership() {
    let (g, _) = generate::planted_partition(20, 60, 0.15, 0.01, 8);
    for algorithm in ALGORITHMS {
        let first = algo::communities(&g, algorithm, 1.0, 7).expect("communities");
        let again = algo::communities(&g, algorithm, 1.0, 7).expect("communities");
        assert_eq!(first, again, "{algorithm:?}");
    }
}

#[test]
fn community_ids_are_ordered_by_size_then_smallest_member() {
    // A triangle {5, 6, 7}, a 5-clique {0..5}, an isolated node 8 and an edge {9, 10}.
    let mut edges = vec![(5, 6, 1.0), (6, 7, 1.0), (5, 7, 1.0), (9, 10, 1.0)];
    for i in 0..5 {
        for j in i + 1..5 {
            edges.push((i, j, 1.0));
        }
    }
    let g = Graph::new(11, edges).expect("valid graph");
    for algorithm in ALGORITHMS {
        let found = algo::communities(&g, algorithm, 1.0, SEED).expect("communities");
        assert_eq!(
            found.membership,
            vec![0, 0, 0, 0, 0, 1, 1, 1, 3, 2, 2],
            "{algorithm:?}"
        );
    }
}

#[test]
fn empty_and_edgeless_graphs_have_trivial_communities() {
    let empty = Graph::new(0, []).expect("valid graph");
    let found = algo::communities(&empty, Algorithm::Leiden, 1.0, SEED).expect("communities");
    assert_eq!(
        found,
        algo::Communities {
            membership: vec![],
            modularity: 0.0
        }
    );
    let edgeless = Graph::new(3, []).expect("valid graph");
    let found = algo::communities(&edgeless, Algorithm::Louvain, 1.0, SEED).expect("communities");
    assert_eq!(
        found,
        algo::Communities {
            membership: vec![0, 1, 2],
            modularity: 0.0
        }
    );
}

#[test]
fn bad_resolutions_are_refused_clearly() {
    let (g, _) = generate::planted_partition(2, 5, 1.0, 0.0, 1);
    for resolution in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        for algorithm in ALGORITHMS {
            let err = algo::communities(&g, algorithm, resolution, SEED).expect_err("refused");
            assert!(matches!(err, AlgoError::InvalidResolution { .. }), "{err:?}");
            assert_eq!(err.code(), "InvalidResolution");
            let message = err.to_string();
            assert!(
                message.contains("resolution must be a finite number > 0"),
                "{message}"
            );
            assert!(message.contains(&resolution.to_string()), "{message}");
        }
    }
}

#[test]
fn bad_graphs_are_refused_clearly() {
    type Case = (&'static str, Vec<(u32, u32, f64)>, &'static str, &'static str);
    let cases: [Case; 4] = [
        (
            "endpoint past n",
            vec![(0, 3, 1.0)],
            "NodeOutOfRange",
            "edge endpoint 3 is out of range: the graph has 3 nodes",
        ),
        (
            "NaN weight",
            vec![(0, 1, f64::NAN)],
            "InvalidWeight",
            "edge (0, 1) has weight NaN",
        ),
        (
            "negative weight",
            vec![(1, 2, -0.5)],
            "InvalidWeight",
            "weights must be finite and >= 0",
        ),
        (
            "infinite weight",
            vec![(2, 2, f64::INFINITY)],
            "InvalidWeight",
            "edge (2, 2) has weight inf",
        ),
    ];
    for (case, edges, code, fragment) in cases {
        let err = Graph::new(3, edges).expect_err(case);
        assert_eq!(err.code(), code, "{case}");
        assert!(err.to_string().contains(fragment), "{case}: {err}");
    }
}

#[test]
fn graphs_beyond_u32_indices_are_refused_before_allocating() {
    let err = Graph::new(u32::MAX as usize + 1, []).expect_err("refused");
    assert_eq!(err.code(), "TooManyNodes");
    assert_eq!(
        err.to_string(),
        "a graph has at most 4294967295 nodes, got 4294967296"
    );
}

#[test]
fn membership_of_the_wrong_length_is_refused() {
    let g = Graph::new(3, [(0, 1, 1.0)]).expect("valid graph");
    let err = algo::modularity(&g, &[0, 0], 1.0).expect_err("refused");
    assert_eq!(err.code(), "MembershipLength");
    assert_eq!(
        err.to_string(),
        "membership has 2 entries but the graph has 3 nodes"
    );
}

#[test]
fn nmi_scores_renamings_as_identical_and_independence_as_zero() {
    assert_eq!(generate::nmi(&[0, 0, 1, 1], &[7, 7, 3, 3]), 1.0);
    assert!(generate::nmi(&[0, 0, 1, 1], &[0, 1, 0, 1]).abs() < 1e-12);
    assert_eq!(generate::nmi(&[], &[]), 1.0);
}
