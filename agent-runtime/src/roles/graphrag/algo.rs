//! Graph algorithms behind the GraphRAG role: community detection (`graph.communities`) and
//! neighbourhood and path queries (`graph.query`).
//!
//! The graph is an undirected weighted [`Graph`] on dense node indices `0..n`, kept as a compact
//! CSR adjacency (12 bytes per adjacency slot) because graphs reach a million edges.
//!
//! Community detection comes from the `leiden-rs` crate: [`Algorithm::Leiden`] is its full
//! Leiden (local moving, refinement, aggregation) and [`Algorithm::Louvain`] is the same engine
//! with the refinement phase skipped, which is the Louvain method. Both optimise modularity with
//! a resolution parameter and are reproducible for a given seed (the crate is used without its
//! `rayon` feature, so one code path runs whatever the machine). The reported modularity is
//! always computed here by [`modularity`], with the convention of networkx's
//! `networkx.algorithms.community.modularity`, so it does not depend on the crate.
//!
//! Conventions, matching networkx:
//! - parallel edges are merged by summing their weights;
//! - self loops are kept: a loop of weight `w` counts `w` once towards the edge weight inside
//!   its node's community and `2w` towards that node's degree;
//! - `m` is the total edge weight, so `Q = Σ_c [ L_c / m − γ (d_c / 2m)² ]`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use leiden_rs::{GraphDataBuilder, Leiden, LeidenConfig, LeidenError, QualityType};

/// Why a graph could not be built or a computation could not run.
#[derive(Debug, thiserror::Error)]
pub enum AlgoError {
    /// An edge names a node outside `0..node_count`.
    #[error("edge endpoint {node} is out of range: the graph has {node_count} nodes")]
    NodeOutOfRange {
        /// The offending endpoint.
        node: u32,
        /// The number of nodes the graph was declared with.
        node_count: usize,
    },
    /// An edge weight is NaN, infinite or negative.
    #[error("edge ({u}, {v}) has weight {weight}: weights must be finite and >= 0")]
    InvalidWeight {
        /// First endpoint.
        u: u32,
        /// Second endpoint.
        v: u32,
        /// The rejected weight.
        weight: f64,
    },
    /// More nodes than `u32` can count, so that every index and the count itself fit in `u32`.
    #[error("a graph has at most {} nodes, got {node_count}", u32::MAX)]
    TooManyNodes {
        /// The requested node count.
        node_count: usize,
    },
    /// The resolution is not a finite number greater than zero.
    #[error("resolution must be a finite number > 0, got {resolution}")]
    InvalidResolution {
        /// The rejected resolution.
        resolution: f64,
    },
    /// A membership vector does not have one entry per node.
    #[error("membership has {got} entries but the graph has {expected} nodes")]
    MembershipLength {
        /// The graph's node count.
        expected: usize,
        /// The membership's length.
        got: usize,
    },
    /// The community detection crate refused the input.
    #[error("community detection failed: {source}")]
    Detection {
        /// The crate's own error.
        #[source]
        source: LeidenError,
    },
}

impl AlgoError {
    /// A stable, machine-readable code for the error, for task results and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NodeOutOfRange { .. } => "NodeOutOfRange",
            Self::InvalidWeight { .. } => "InvalidWeight",
            Self::TooManyNodes { .. } => "TooManyNodes",
            Self::InvalidResolution { .. } => "InvalidResolution",
            Self::MembershipLength { .. } => "MembershipLength",
            Self::Detection { .. } => "DetectionFailed",
        }
    }
}

/// An undirected weighted graph on the node indices `0..n`, stored as a CSR adjacency.
///
/// Each edge `{u, v}` with `u != v` appears in the rows of both `u` and `v`; a self loop appears
/// once in its node's row. Rows are sorted by neighbour index, which is what makes the
/// breadth-first searches below deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Row `u` is `targets[offsets[u]..offsets[u + 1]]`; `n + 1` entries.
    offsets: Vec<usize>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    /// Weighted degree, self loops counted twice (networkx's `G.degree(weight=...)`).
    degrees: Vec<f64>,
    /// Distinct undirected edges, self loops included.
    edge_count: usize,
    /// `m`: the sum of the distinct edges' weights.
    total_weight: f64,
}

impl Graph {
    /// Builds a graph with `n` nodes from `(u, v, weight)` edges.
    ///
    /// The direction of an edge is ignored, parallel edges are merged by summing their weights
    /// and self loops are kept (see the module doc for how they count). Fails when an endpoint is
    /// `>= n`, a weight is not finite or is negative, or `n` exceeds `u32::MAX`.
    pub fn new(n: usize, edges: impl IntoIterator<Item = (u32, u32, f64)>) -> Result<Self, AlgoError> {
        if u32::try_from(n).is_err() {
            return Err(AlgoError::TooManyNodes { node_count: n });
        }
        let edges = edges.into_iter();
        let mut list = Vec::with_capacity(edges.size_hint().0);
        for (u, v, weight) in edges {
            for node in [u, v] {
                if node as usize >= n {
                    return Err(AlgoError::NodeOutOfRange { node, node_count: n });
                }
            }
            if !weight.is_finite() || weight < 0.0 {
                return Err(AlgoError::InvalidWeight { u, v, weight });
            }
            list.push((u.min(v), u.max(v), weight));
        }
        Ok(Self::from_checked(n, list))
    }

    /// Builds the CSR from edges already checked against `n`, each given as `(min, max, w)`.
    pub(crate) fn from_checked(n: usize, mut edges: Vec<(u32, u32, f64)>) -> Self {
        edges.sort_unstable_by_key(|&(u, v, _)| (u, v));
        edges.dedup_by(|next, kept| {
            let same = next.0 == kept.0 && next.1 == kept.1;
            if same {
                kept.2 += next.2;
            }
            same
        });
        let mut offsets = vec![0usize; n + 1];
        for &(u, v, _) in &edges {
            offsets[u as usize + 1] += 1;
            if u != v {
                offsets[v as usize + 1] += 1;
            }
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let slots = offsets[n];
        let mut targets = vec![0u32; slots];
        let mut weights = vec![0.0f64; slots];
        let mut degrees = vec![0.0f64; n];
        let mut cursor = offsets[..n].to_vec();
        let mut total_weight = 0.0;
        // Edges come sorted by (u, v), so every row is filled in ascending neighbour order:
        // first the smaller neighbours (as `v` of earlier edges), then itself and larger ones.
        for &(u, v, w) in &edges {
            let (ui, vi) = (u as usize, v as usize);
            targets[cursor[ui]] = v;
            weights[cursor[ui]] = w;
            cursor[ui] += 1;
            degrees[ui] += w;
            degrees[vi] += w;
            if u != v {
                targets[cursor[vi]] = u;
                weights[cursor[vi]] = w;
                cursor[vi] += 1;
            }
            total_weight += w;
        }
        Self {
            offsets,
            targets,
            weights,
            degrees,
            edge_count: edges.len(),
            total_weight,
        }
    }

    /// The number of nodes, `n`.
    pub fn node_count(&self) -> usize {
        self.degrees.len()
    }

    /// The number of distinct undirected edges, self loops included.
    pub fn edge_count(&self) -> usize {
        self.edge_count
    }

    /// The total edge weight `m` (each undirected edge counted once).
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// The weighted degree of `node` (self loops count twice); 0 for an unknown node.
    pub fn degree(&self, node: u32) -> f64 {
        self.degrees.get(node as usize).copied().unwrap_or(0.0)
    }

    /// The `(neighbour, weight)` pairs of `node` in ascending neighbour order; empty for an
    /// unknown node. A self loop lists the node itself.
    pub fn adjacent(&self, node: u32) -> impl Iterator<Item = (u32, f64)> + '_ {
        let (targets, weights) = self.row(node);
        targets.iter().copied().zip(weights.iter().copied())
    }

    fn row(&self, node: u32) -> (&[u32], &[f64]) {
        let u = node as usize;
        if u >= self.node_count() {
            return (&[], &[]);
        }
        let range = self.offsets[u]..self.offsets[u + 1];
        (&self.targets[range.clone()], &self.weights[range])
    }
}

/// The community detection method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Leiden (Traag, Waltman, van Eck 2019): communities are guaranteed to be connected.
    Leiden,
    /// Louvain (Blondel et al. 2008): Leiden's engine without the refinement phase.
    Louvain,
}

/// A partition of the nodes into communities.
#[derive(Debug, Clone, PartialEq)]
pub struct Communities {
    /// The community of each node. Ids are `0..k`, ordered by community size (largest first),
    /// ties broken by the community's smallest member.
    pub membership: Vec<u32>,
    /// The partition's modularity at the requested resolution, computed by [`modularity`].
    pub modularity: f64,
}

/// Detects communities with `algorithm`, optimising modularity at `resolution` (higher values
/// give smaller communities; 1.0 is classic modularity).
///
/// The same graph, algorithm, resolution and seed always give the same membership. Nodes
/// without edges end up alone in their own community. Fails when `resolution` is not a finite
/// number greater than zero.
pub fn communities(
    g: &Graph,
    algorithm: Algorithm,
    resolution: f64,
    seed: u64,
) -> Result<Communities, AlgoError> {
    if !resolution.is_finite() || resolution <= 0.0 {
        return Err(AlgoError::InvalidResolution { resolution });
    }
    let n = g.node_count();
    let raw = if n == 0 {
        Vec::new()
    } else {
        let data = leiden_graph(g)?;
        let config = LeidenConfig::builder()
            .quality(QualityType::Modularity)
            .resolution(resolution)
            .seed(seed)
            .skip_refinement(algorithm == Algorithm::Louvain)
            .build();
        let output = Leiden::new(config)
            .run(&data)
            .map_err(|source| AlgoError::Detection { source })?;
        output.partition.as_slice().to_vec()
    };
    let membership = canonical_membership(&raw);
    let modularity = modularity(g, &membership, resolution)?;
    Ok(Communities {
        membership,
        modularity,
    })
}

/// Copies the graph into `leiden-rs`'s own CSR (each edge given once, self loops included).
fn leiden_graph(g: &Graph) -> Result<leiden_rs::GraphData, AlgoError> {
    let detection = |source| AlgoError::Detection { source };
    let mut builder = GraphDataBuilder::new(g.node_count());
    for u in 0..g.node_count() as u32 {
        for (v, w) in g.adjacent(u).filter(|&(v, _)| v >= u) {
            builder.add_edge(u as usize, v as usize, w).map_err(detection)?;
        }
    }
    builder.build().map_err(detection)
}

/// Renames community ids to `0..k` by size (largest first), then by smallest member.
fn canonical_membership(raw: &[usize]) -> Vec<u32> {
    // (size, smallest member) per raw id, in order of first appearance.
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut stats: Vec<(usize, usize)> = Vec::new();
    for (node, &c) in raw.iter().enumerate() {
        match index.entry(c) {
            Entry::Occupied(e) => stats[*e.get()].0 += 1,
            Entry::Vacant(e) => {
                e.insert(stats.len());
                stats.push((1, node));
            }
        }
    }
    let mut order: Vec<usize> = (0..stats.len()).collect();
    order.sort_unstable_by_key(|&i| (std::cmp::Reverse(stats[i].0), stats[i].1));
    let mut new_id = vec![0u32; stats.len()];
    for (rank, &i) in order.iter().enumerate() {
        new_id[i] = rank as u32;
    }
    raw.iter().map(|c| new_id[index[c]]).collect()
}

/// The modularity of `membership` (one community id per node, any `u32` values) at
/// `resolution`, with networkx's convention: `Q = Σ_c [ L_c / m − γ (d_c / 2m)² ]` where `L_c`
/// is the weight of the edges inside `c` (self loops once), `d_c` the summed weighted degree
/// of its nodes (self loops twice) and `m` the total edge weight.
///
/// A graph without edge weight has modularity 0 (networkx divides by zero there). Fails when
/// `membership` does not have one entry per node.
pub fn modularity(g: &Graph, membership: &[u32], resolution: f64) -> Result<f64, AlgoError> {
    let n = g.node_count();
    if membership.len() != n {
        return Err(AlgoError::MembershipLength {
            expected: n,
            got: membership.len(),
        });
    }
    let m = g.total_weight();
    if m <= 0.0 {
        return Ok(0.0);
    }
    // Dense community slots: ids are usually 0..k, but any u32 is accepted.
    let mut slot: HashMap<u32, usize> = HashMap::new();
    let mut inside: Vec<f64> = Vec::new();
    let mut degree: Vec<f64> = Vec::new();
    for (u, &c) in membership.iter().enumerate() {
        let s = *slot.entry(c).or_insert_with(|| {
            inside.push(0.0);
            degree.push(0.0);
            inside.len() - 1
        });
        degree[s] += g.degrees[u];
    }
    for (u, &c) in membership.iter().enumerate() {
        let s = slot[&c];
        for (v, w) in g.adjacent(u as u32) {
            if v as usize >= u && membership[v as usize] == c {
                inside[s] += w;
            }
        }
    }
    let two_m = 2.0 * m;
    Ok(inside
        .iter()
        .zip(&degree)
        .map(|(l, d)| l / m - resolution * (d / two_m) * (d / two_m))
        .sum())
}

/// The nodes within `depth` hops of `start` with their hop distance, `start` excluded, ordered
/// by distance then node index. Empty when `start` is not a node or `depth` is 0.
pub fn neighbors(g: &Graph, start: u32, depth: u32) -> Vec<(u32, u32)> {
    let n = g.node_count();
    if start as usize >= n || depth == 0 {
        return Vec::new();
    }
    let mut seen = vec![false; n];
    seen[start as usize] = true;
    let mut frontier = vec![start];
    let mut found = Vec::new();
    for hop in 1..=depth {
        let mut next = Vec::new();
        for &u in &frontier {
            for &v in g.row(u).0 {
                if !seen[v as usize] {
                    seen[v as usize] = true;
                    next.push(v);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        next.sort_unstable();
        found.extend(next.iter().map(|&v| (v, hop)));
        frontier = next;
    }
    found
}

/// A path with the fewest hops from `from` to `to` (edge weights ignored), or `None` when there
/// is none or either end is not a node. Among the shortest paths it returns the
/// lexicographically smallest sequence of node indices; `from == to` gives `[from]`.
pub fn shortest_path(g: &Graph, from: u32, to: u32) -> Option<Vec<u32>> {
    let n = g.node_count();
    if from as usize >= n || to as usize >= n {
        return None;
    }
    // Breadth-first from `to` until `from` is reached: every node closer to `to` than `from`
    // then has its exact distance.
    const UNSEEN: u32 = u32::MAX;
    let mut dist = vec![UNSEEN; n];
    dist[to as usize] = 0;
    let mut queue = std::collections::VecDeque::from([to]);
    'search: while let Some(u) = queue.pop_front() {
        if u == from {
            break;
        }
        for &v in g.row(u).0 {
            if dist[v as usize] == UNSEEN {
                dist[v as usize] = dist[u as usize] + 1;
                if v == from {
                    break 'search;
                }
                queue.push_back(v);
            }
        }
    }
    if dist[from as usize] == UNSEEN {
        return None;
    }
    // Walk down the distances, always taking the lowest-index neighbour one hop closer.
    let mut path = vec![from];
    let mut cur = from;
    while cur != to {
        let want = dist[cur as usize] - 1;
        cur = *g.row(cur).0.iter().find(|&&v| dist[v as usize] == want)?;
        path.push(cur);
    }
    Some(path)
}
