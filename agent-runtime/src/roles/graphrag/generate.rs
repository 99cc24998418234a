//! Graphs with known communities, for tests and benchmarks: planted partitions, and the
//! normalised mutual information of two partitions.

use std::collections::HashMap;

use super::algo::Graph;

/// A planted-partition graph for tests and benchmarks: `groups` groups of `size` nodes (node
/// `i` in group `i / size`), each pair inside a group joined with probability `p_in` and each
/// pair across groups with `p_out`, all weights 1. Returns the graph and the planted groups.
///
/// Runs in time linear in nodes plus edges (geometric skipping over candidate pairs), so
/// million-edge graphs are cheap. Probabilities are clamped to `[0, 1]` (NaN counts as 0). The
/// same arguments always give the same graph.
///
/// # Panics
/// When `groups * size` exceeds `u32::MAX`.
pub fn planted_partition(groups: usize, size: usize, p_in: f64, p_out: f64, seed: u64) -> (Graph, Vec<u32>) {
    let n = groups.checked_mul(size).filter(|&n| u32::try_from(n).is_ok());
    let Some(n) = n else {
        panic!("planted_partition: {groups} x {size} nodes exceed u32::MAX")
    };
    let mut rng = SplitMix64(seed);
    let mut edges = Vec::new();
    for i in 0..n {
        let group_end = (i / size + 1) * size;
        // Pairs (i, j) with j > i: first the rest of i's group, then every later group.
        rng.sample_range(i + 1, group_end, p_in, |j| edges.push((i as u32, j as u32, 1.0)));
        rng.sample_range(group_end, n, p_out, |j| edges.push((i as u32, j as u32, 1.0)));
    }
    let truth = (0..n).map(|i| (i / size) as u32).collect();
    (Graph::from_checked(n, edges), truth)
}

/// SplitMix64: a tiny, fast generator whose output never changes across crate versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]`.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Calls `hit(j)` for each `j` in `lo..hi` independently with probability `p`.
    fn sample_range(&mut self, lo: usize, hi: usize, p: f64, mut hit: impl FnMut(usize)) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        if p == 0.0 || lo >= hi {
            return;
        }
        if p == 1.0 {
            (lo..hi).for_each(hit);
            return;
        }
        // The gap before the next success is geometric: floor(ln U / ln(1 - p)).
        let log_q = (-p).ln_1p();
        let mut j = lo;
        loop {
            let skip = (self.unit().ln() / log_q).floor();
            if skip >= (hi - j) as f64 {
                return;
            }
            j += skip as usize;
            hit(j);
            j += 1;
        }
    }
}

/// Normalised mutual information of two labelings of the same nodes, `I(a; b)` divided by the
/// arithmetic mean of their entropies (scikit-learn's default). 1 means identical partitions up
/// to renaming; two single-community labelings (or two empty ones) score 1.
///
/// # Panics
/// When the labelings have different lengths.
pub fn nmi(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "nmi: labelings of {} and {} nodes",
        a.len(),
        b.len()
    );
    let n = a.len() as f64;
    let mut count_a: HashMap<u32, f64> = HashMap::new();
    let mut count_b: HashMap<u32, f64> = HashMap::new();
    let mut joint: HashMap<(u32, u32), f64> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *count_a.entry(x).or_default() += 1.0;
        *count_b.entry(y).or_default() += 1.0;
        *joint.entry((x, y)).or_default() += 1.0;
    }
    if count_a.len() <= 1 && count_b.len() <= 1 {
        return 1.0;
    }
    let entropy =
        |counts: &HashMap<u32, f64>| -> f64 { counts.values().map(|&c| -(c / n) * (c / n).ln()).sum() };
    let (h_a, h_b) = (entropy(&count_a), entropy(&count_b));
    let mutual: f64 = joint
        .iter()
        .map(|(&(x, y), &c)| (c / n) * (c * n / (count_a[&x] * count_b[&y])).ln())
        .sum();
    let mean = (h_a + h_b) / 2.0;
    if mean <= 0.0 {
        0.0
    } else {
        (mutual / mean).clamp(0.0, 1.0)
    }
}
