//! `COGO_BENCH_ONLY=index`: the Indexing and GraphRAG agents' handlers, run in this process
//! over a local store (SQLite in a temporary directory), with no cluster.
//!
//! It measures, in this order:
//! 1. `index.repository` on the test tree (`tests/data/index`, inline files): a cold index
//!    (every file parsed) and a warm one (nothing changed); then on a repository generated
//!    from it ([`corpus::generate`]: 100 renamed copies of each source file, 5,000 files and
//!    about 1M lines): files/s, lines/s, peak memory (VmHWM, reset before) and the store's size
//!    on disk;
//! 2. latency, one call at a time, of 500 `index.search` queries (half identifiers, half words
//!    taken from the defined names) and 500 `index.symbols` prefix lookups, on both indexes;
//! 3. community detection ([`graph`]): Leiden, Louvain and networkx's `louvain_communities`
//!    on a planted-partition graph of about 1M edges, and `graph.ingest` then
//!    `graph.communities` on a 100k-edge graph in the store.

pub mod corpus;
mod graph;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use cogo_agent::{
    handler::{Registry, TaskContext, local_task},
    roles::{
        graphrag,
        indexing::{self, rank::split_identifier},
    },
    store::{LOCAL_FILE, Lazy, SharedLazy},
};
use cogo_api::catalogue::index::{RepositoryResult, SymbolsResult};
use serde_json::{Value, json};

use crate::{pct, repo};
use corpus::SourceFile;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Copies of each source file of the test tree in the generated repository.
const COPIES: usize = 100;
/// Queries of each kind per index.
const QUERIES: usize = 500;

/// Runs the section; returns the report's lines.
pub async fn run() -> Result<Vec<String>, Error> {
    let mut report = vec![];
    let tree = corpus::read_tree(&repo().join("tests/data/index"))?;
    let tree_lines: usize = tree.iter().filter(|f| f.is_source()).map(SourceFile::lines).sum();

    report.push(
        "| index.repository, local store (SQLite), inline files | files | lines | seconds | files/s | lines/s | files parsed |"
            .into(),
    );
    report.push("|---|---|---|---|---|---|---|".into());
    let small = Agents::new("small")?;
    for pass in ["cold", "warm (nothing changed)"] {
        eprintln!("[bench] index.repository: test tree, {pass}");
        let (r, secs) = small.index("tree", &tree).await?;
        report.push(index_row(&format!("test tree, {pass}"), &r, tree_lines, secs));
    }

    eprintln!("[bench] generating {COPIES} renamed copies of the test tree's source files");
    let large = corpus::generate(&tree, COPIES);
    let large_lines: usize = large.iter().map(SourceFile::lines).sum();
    eprintln!(
        "[bench] index.repository: {} generated files, {large_lines} lines",
        large.len()
    );
    let big = Agents::new("large")?;
    let rss_before = status_kib("VmRSS");
    reset_peak_rss();
    let (r, secs) = big.index("large", &large).await?;
    let hwm = status_kib("VmHWM");
    let cold = r;
    report.push(index_row("generated, cold", &cold, large_lines, secs));
    eprintln!("[bench] index.repository: generated files again, nothing changed");
    let (r, secs) = big.index("large", &large).await?;
    report.push(index_row(
        "generated, warm (nothing changed)",
        &r,
        large_lines,
        secs,
    ));
    drop(large);
    report.push(String::new());
    report.push(format!(
        "Generated repository ({} files, {} lines, {} symbols, {} chunks): peak memory (VmHWM, reset before the task's \
         input is built) {:.0} MiB, resident before {:.0} MiB (the generated files); store on disk {:.1} MiB (write-ahead log included, {:.1} MiB)",
        thousands(cold.files),
        thousands(large_lines as u64),
        thousands(cold.symbols),
        thousands(cold.chunks),
        hwm as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        dir_bytes(&big.dir, "") as f64 / (1024.0 * 1024.0),
        dir_bytes(&big.dir, "-wal") as f64 / (1024.0 * 1024.0),
    ));

    report.push(String::new());
    report.push(
        "| lookups, local store, one at a time | calls | p50 (ms) | p99 (ms) | results per call |".into(),
    );
    report.push("|---|---|---|---|---|".into());
    let names = small.defined_names("tree").await?;
    for (label, agents, index, suffix) in [
        ("test tree", &small, "tree", false),
        ("generated", &big, "large", true),
    ] {
        eprintln!("[bench] {QUERIES} searches and {QUERIES} prefix lookups: {label}");
        let queries = search_queries(&names, suffix);
        report.push(
            agents
                .latency(&format!("index.search (lexical, k 10), {label}"), index, &queries)
                .await?,
        );
        let prefixes = prefix_queries(&names);
        report.push(
            agents
                .latency(
                    &format!("index.symbols by prefix (limit 100), {label}"),
                    index,
                    &prefixes,
                )
                .await?,
        );
    }
    drop((small, big));

    report.push(String::new());
    report.extend(graph::run().await?);
    Ok(report)
}

/// Agents of both roles over a local store in a directory of their own, removed on drop.
struct Agents {
    registry: Registry,
    store: SharedLazy,
    dir: PathBuf,
}

impl Agents {
    fn new(name: &str) -> Result<Agents, Error> {
        let dir = std::env::temp_dir().join(format!("cogo-bench-{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let store = Lazy::new(None, None, dir.clone());
        let mut registry = Registry::default();
        indexing::register(
            &mut registry,
            store.clone(),
            None,
            indexing::IndexPolicy::default(),
        );
        graphrag::register(&mut registry, store.clone(), None);
        Ok(Agents { registry, store, dir })
    }

    /// Runs a task of `task_type`, printing its progress lines while it runs.
    async fn run(&self, task_type: &str, input: Value) -> Result<Value, Error> {
        let handler = self
            .registry
            .get(task_type)
            .ok_or_else(|| format!("{task_type} is not registered"))?;
        let (_cancel, ctx) = TaskContext::detached(local_task("bench", task_type, Value::Null));
        let mut progress = ctx.progress.subscribe();
        let printer = tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                if let Some(line) = progress.borrow_and_update().clone() {
                    eprintln!("[bench]   {line}");
                }
            }
        });
        let result = handler.run(&input, ctx).await;
        printer.abort();
        result.map_err(|e| format!("{task_type}: {}", e.message).into())
    }

    /// Indexes `files` as `index`; the result and the seconds it took.
    async fn index(&self, index: &str, files: &[SourceFile]) -> Result<(RepositoryResult, f64), Error> {
        let files: Vec<Value> = files
            .iter()
            .map(|f| json!({"path": f.path, "content": f.content}))
            .collect();
        let input = json!({"index": index, "source": {"files": files}});
        drop(files);
        let started = Instant::now();
        let r = self.run("index.repository", input).await?;
        let secs = started.elapsed().as_secs_f64();
        Ok((serde_json::from_value(r)?, secs))
    }

    /// The distinct names `index` defines, sorted.
    async fn defined_names(&self, index: &str) -> Result<Vec<String>, Error> {
        let r = self
            .run(
                "index.symbols",
                json!({"index": index, "prefix": "", "limit": 10_000}),
            )
            .await?;
        let r: SymbolsResult = serde_json::from_value(r)?;
        let mut names: Vec<String> = r.symbols.into_iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Runs `calls` one at a time against `index`: a table row with p50 and p99 latency.
    async fn latency(&self, label: &str, index: &str, calls: &[Call]) -> Result<String, Error> {
        let mut took = Vec::with_capacity(calls.len());
        let mut results = 0usize;
        for call in calls {
            let (task_type, mut input) = match call {
                Call::Search(q) => ("index.search", json!({"query": q, "k": 10, "mode": "lexical"})),
                Call::Prefix(p) => ("index.symbols", json!({"prefix": p, "limit": 100})),
            };
            input["index"] = json!(index);
            let started = Instant::now();
            let r = self.run(task_type, input).await?;
            took.push(started.elapsed().as_secs_f64() * 1000.0);
            results += ["hits", "symbols"]
                .iter()
                .filter_map(|k| r[k].as_array())
                .map(Vec::len)
                .sum::<usize>();
        }
        took.sort_by(f64::total_cmp);
        Ok(format!(
            "| {label} | {} | {:.2} | {:.2} | {:.1} |",
            calls.len(),
            pct(&took, 0.5),
            pct(&took, 0.99),
            results as f64 / calls.len() as f64
        ))
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One timed lookup.
enum Call {
    Search(String),
    Prefix(String),
}

/// [`QUERIES`] searches drawn from `names`: identifiers (with a copy's suffix on the generated
/// index, `suffixed`) and, alternating with them, words (the parts of one name of two or more
/// words and the last part of another, `bump major version`).
fn search_queries(names: &[String], suffixed: bool) -> Vec<Call> {
    let mut rng = 0x5EED_u64;
    let worded: Vec<Vec<String>> = names
        .iter()
        .map(|n| split_identifier(n))
        .filter(|p| p.len() >= 2)
        .collect();
    (0..QUERIES)
        .map(|i| {
            if i % 2 == 0 {
                let name = &names[next(&mut rng, names.len())];
                Call::Search(if suffixed {
                    format!("{name}_c{}", next(&mut rng, COPIES))
                } else {
                    name.clone()
                })
            } else {
                let mut words = worded[next(&mut rng, worded.len())].clone();
                let other = &worded[next(&mut rng, worded.len())];
                words.extend(other.last().cloned());
                Call::Search(words.join(" "))
            }
        })
        .collect()
}

/// [`QUERIES`] prefix lookups: the first three characters of names drawn from `names`.
fn prefix_queries(names: &[String]) -> Vec<Call> {
    let mut rng = 0xF1C5_u64;
    (0..QUERIES)
        .map(|_| Call::Prefix(names[next(&mut rng, names.len())].chars().take(3).collect()))
        .collect()
}

/// A number in `0..n` from a SplitMix64 stream: the same queries on every run.
fn next(state: &mut u64, n: usize) -> usize {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % n as u64) as usize
}

fn index_row(label: &str, r: &RepositoryResult, lines: usize, secs: f64) -> String {
    format!(
        "| {label} | {} | {} | {secs:.3} | {} | {} | {} |",
        thousands(r.files),
        thousands(lines as u64),
        thousands((r.files as f64 / secs) as u64),
        thousands((lines as f64 / secs) as u64),
        thousands(r.parsed)
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current resident size (Linux 4.0 and later), so the next reading is
/// the peak of what follows.
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("[bench] cannot reset the peak memory ({e}): VmHWM includes what came before");
    }
}

/// The bytes of the store's files in `dir` (SQLite's file, its write-ahead log and shared
/// memory) whose names end with `suffix`.
fn dir_bytes(dir: &Path, suffix: &str) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(LOCAL_FILE) && name.ends_with(suffix)
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        for (n, want) in [(0, "0"), (999, "999"), (1000, "1,000"), (1_015_420, "1,015,420")] {
            assert_eq!(thousands(n), want);
        }
    }

    #[test]
    fn queries_are_the_same_on_every_run() {
        let names: Vec<String> = ["NewRandom", "bump_major", "useToaster", "parse"]
            .map(String::from)
            .into();
        let words = |calls: Vec<Call>| -> Vec<String> {
            calls
                .into_iter()
                .map(|c| match c {
                    Call::Search(q) | Call::Prefix(q) => q,
                })
                .collect()
        };
        let a = words(search_queries(&names, true));
        assert_eq!(a, words(search_queries(&names, true)));
        assert_eq!(a.len(), QUERIES);
        assert!(
            a.iter().step_by(2).all(|q| q.contains("_c")),
            "identifiers carry a copy's suffix"
        );
        assert!(
            a.iter().skip(1).step_by(2).all(|q| q.contains(' ')),
            "word queries have words"
        );
    }
}
