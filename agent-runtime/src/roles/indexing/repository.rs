//! `index.repository`: reads the source file by file (inline, or a shallow git checkout),
//! parses only the files whose content hash changed, removes those the source no longer has,
//! then gives the new chunks embeddings when the agent has an embedding model. Memory stays
//! bounded by one file and one batch of embeddings; progress goes to the task's status.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use cogo_api::catalogue::index::{REPOSITORY, RepositoryInput, RepositoryResult, Symbol};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Shared, check_name, git, parse, rank};
use crate::{
    handler::{HandlerError, HandlerFuture, TaskContext, TaskHandler, parse_input},
    roles::unless_cancelled,
    store::{ChunkRecord, FileRecord, SharedStore},
};

/// The biggest file indexed; bigger ones are skipped.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The most files one source may have.
pub const MAX_FILES: usize = 50_000;
/// Chunks given embeddings per call of the embedding model.
pub const EMBED_BATCH: u32 = 32;
/// Characters of a chunk given to the embedding model.
const EMBED_CHARS: usize = 2000;

/// `index.repository`.
pub struct IndexRepository(pub(super) Arc<Shared>);

impl TaskHandler for IndexRepository {
    fn run<'a>(&'a self, input: &'a Value, ctx: TaskContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let input: RepositoryInput = parse_input(REPOSITORY, input)?;
            check_name(REPOSITORY, "index", &input.index)?;
            let filter = Filter::new(&input.include, &input.exclude)?;
            let store = self.0.store().await?;
            let started = Instant::now();
            // One indexing of an index at a time, across every replica of a shared store.
            let t = &ctx.task;
            let holder = format!("{}/{} attempt {}", t.namespace, t.name, t.attempt);
            let lease = Lease {
                store: &store,
                index: &input.index,
                holder: &holder,
            };
            lease.take().await?;
            let result = unless_cancelled(&ctx, index(&self.0, &store, &input, &filter, &ctx, &lease)).await;
            if let Err(e) = store.release_index(&input.index, &holder).await {
                tracing::warn!(index = %input.index, error = %e, "cannot release the index's lease; it expires by itself");
            }
            let mut result = result?;
            result.duration_ms = started.elapsed().as_millis() as u64;
            Ok(serde_json::to_value(result).unwrap_or_default())
        })
    }
}

/// How long a lease on an index lasts unless renewed (it is renewed with every file).
const LEASE_MS: i64 = 60_000;

/// A task's lease on the index it builds.
struct Lease<'a> {
    store: &'a SharedStore,
    index: &'a str,
    holder: &'a str,
}

impl Lease<'_> {
    /// Takes or renews it; while another task holds it, fails so the task is tried again.
    async fn take(&self) -> Result<(), HandlerError> {
        let now = jiff::Timestamp::now().as_millisecond();
        if self
            .store
            .lease_index(self.index, self.holder, now, LEASE_MS)
            .await?
        {
            return Ok(());
        }
        let other = self.store.index_holder(self.index).await?;
        Err(HandlerError::retryable(format!(
            "index {:?} is being indexed by {}; this task is tried again once that ends",
            self.index,
            other.unwrap_or_else(|| "another task".into())
        )))
    }
}

/// Which paths are indexed.
struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Filter {
    fn new(include: &[String], exclude: &[String]) -> Result<Filter, HandlerError> {
        let set = |field: &str, patterns: &[String]| -> Result<GlobSet, HandlerError> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                let glob = Glob::new(p).map_err(|e| {
                    HandlerError::fatal(format!("invalid {REPOSITORY} input: {field} pattern {p:?}: {e}"))
                })?;
                b.add(glob);
            }
            b.build()
                .map_err(|e| HandlerError::fatal(format!("invalid {REPOSITORY} input: {field}: {e}")))
        };
        Ok(Filter {
            include: if include.is_empty() {
                None
            } else {
                Some(set("include", include)?)
            },
            exclude: set("exclude", exclude)?,
        })
    }

    fn wants(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(path)) && !self.exclude.is_match(path)
    }
}

/// Checks an inline path: relative, `/`-separated, no `.` or `..` parts.
fn check_path(path: &str) -> Result<(), HandlerError> {
    let bad = path.is_empty()
        || path.len() > 1024
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path.split('/').any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        Err(HandlerError::fatal(format!(
            "invalid {REPOSITORY} input: file path {path:?} must be relative, '/'-separated, without '.' or '..' parts"
        )))
    } else {
        Ok(())
    }
}

/// Where the files come from: inline, or read from a checkout one at a time.
enum Files {
    Inline(Vec<cogo_api::catalogue::index::InlineFile>),
    Checkout(git::Checkout, Vec<String>),
}

impl Files {
    fn paths(&self) -> Vec<String> {
        match self {
            Files::Inline(f) => f.iter().map(|f| f.path.clone()).collect(),
            Files::Checkout(_, paths) => paths.clone(),
        }
    }

    /// The content of file `i`, or None when it is not UTF-8 text or too big.
    fn read(&self, i: usize) -> Option<String> {
        match self {
            Files::Inline(f) => {
                let c = &f[i].content;
                (c.len() <= MAX_FILE_BYTES).then(|| c.clone())
            }
            Files::Checkout(c, paths) => {
                let path = c.dir.join(&paths[i]);
                let meta = std::fs::symlink_metadata(&path).ok()?;
                if !meta.is_file() || meta.len() as usize > MAX_FILE_BYTES {
                    return None;
                }
                String::from_utf8(std::fs::read(path).ok()?).ok()
            }
        }
    }
}

/// Every regular file under `dir` (not `.git`), as sorted `/`-separated relative paths.
fn walk(dir: &Path) -> Result<Vec<String>, HandlerError> {
    let mut out = vec![];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = std::fs::read_dir(dir.join(&rel))
            .map_err(|e| HandlerError::retryable(format!("cannot read the checkout: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else { continue };
            let path = rel.join(&name);
            if kind.is_dir() && name != ".git" {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path.to_string_lossy().replace('\\', "/"));
            }
        }
        if out.len() > MAX_FILES * 4 {
            break;
        }
    }
    out.sort();
    Ok(out)
}

async fn index(
    shared: &Shared,
    store: &SharedStore,
    input: &RepositoryInput,
    filter: &Filter,
    ctx: &TaskContext,
    lease: &Lease<'_>,
) -> Result<RepositoryResult, HandlerError> {
    let name = input.index.as_str();
    let mut commit = None;
    let mut skipped = 0u64;
    let files = match (&input.source.git, &input.source.files) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(HandlerError::fatal(format!(
                "invalid {REPOSITORY} input: source must have exactly one of git and files"
            )));
        }
        (None, Some(files)) => {
            let mut seen = BTreeSet::new();
            for f in files {
                check_path(&f.path)?;
                if !seen.insert(f.path.as_str()) {
                    return Err(HandlerError::fatal(format!(
                        "invalid {REPOSITORY} input: file {:?} is given twice",
                        f.path
                    )));
                }
            }
            if files.len() > MAX_FILES {
                return Err(HandlerError::fatal(format!(
                    "invalid {REPOSITORY} input: {} files, the most is {MAX_FILES}",
                    files.len()
                )));
            }
            Files::Inline(files.clone())
        }
        (Some(source), None) => {
            let (url, reference) = (source.url.clone(), source.reference.clone());
            ctx.report_progress(format!("fetching {}", git::redact(&url)));
            let limits = shared.policy.git.clone();
            let parent = shared.store.dir().join("checkouts");
            std::fs::create_dir_all(&parent)
                .map_err(|e| HandlerError::retryable(format!("cannot make {}: {e}", parent.display())))?;
            let progress = ctx.progress.clone();
            let checkout = tokio::task::spawn_blocking(move || {
                git::fetch(&url, reference.as_deref(), &parent, &limits, &|line: &str| {
                    progress.send_replace(Some(line.to_string()));
                })
            })
            .await
            .map_err(|e| HandlerError::retryable(format!("the git fetch stopped: {e}")))?
            .map_err(|e| {
                if e.retryable() {
                    HandlerError::retryable(e.to_string())
                } else {
                    HandlerError::fatal(e.to_string())
                }
            })?;
            commit = Some(checkout.commit.clone());
            skipped += checkout.skipped_large;
            let dir = checkout.dir.clone();
            let paths = tokio::task::spawn_blocking(move || walk(&dir))
                .await
                .map_err(|e| HandlerError::retryable(e.to_string()))??;
            Files::Checkout(checkout, paths)
        }
    };

    let known = store.file_hashes(name).await?;
    let paths = files.paths();
    let mut present = BTreeSet::new();
    let (mut parsed, mut seen) = (0u64, 0u64);
    let candidates: Vec<usize> = (0..paths.len())
        .filter(|i| filter.wants(&paths[*i]) && parse::Language::of_path(&paths[*i]).is_some())
        .collect();
    if candidates.len() > MAX_FILES {
        return Err(HandlerError::fatal(format!(
            "{} files to index, the most is {MAX_FILES}: narrow it with include or exclude",
            candidates.len()
        )));
    }
    skipped += (paths.len() - candidates.len()) as u64;
    let total = candidates.len();
    let mut last_report = Instant::now();
    let files = Arc::new(files);
    for (n, i) in candidates.into_iter().enumerate() {
        if *ctx.cancelled.borrow() {
            return Err(HandlerError::cancelled());
        }
        let path = paths[i].clone();
        if last_report.elapsed() > Duration::from_secs(2) {
            ctx.report_progress(format!("indexed {n} of {total} files ({parsed} parsed)"));
            lease.take().await?;
            last_report = Instant::now();
        }
        let files2 = files.clone();
        let known_hash = known.get(&path).cloned();
        let path2 = path.clone();
        let record =
            tokio::task::spawn_blocking(move || -> Result<Option<Option<FileRecord>>, HandlerError> {
                let Some(content) = files2.read(i) else {
                    return Ok(None);
                };
                let hash = hex(&Sha256::digest(content.as_bytes()));
                if known_hash.as_deref() == Some(hash.as_str()) {
                    return Ok(Some(None));
                }
                Ok(Some(Some(record_of(&path2, &content, hash)?)))
            })
            .await
            .map_err(|e| HandlerError::retryable(format!("parsing {path} stopped: {e}")))??;
        match record {
            None => skipped += 1,
            Some(None) => {
                present.insert(path);
                seen += 1;
            }
            Some(Some(record)) => {
                store.put_file(name, &record).await?;
                present.insert(path);
                parsed += 1;
                seen += 1;
            }
        }
    }
    let gone: Vec<String> = known.keys().filter(|p| !present.contains(*p)).cloned().collect();
    store.remove_files(name, &gone).await?;
    drop(files);
    ctx.report_progress(format!(
        "indexed {seen} files ({parsed} parsed, {} removed)",
        gone.len()
    ));

    lease.take().await?;
    let (embedded, embedding_error) = match &shared.model {
        Some(model) => embed_all(store, model, &shared.policy.prefixes.passage, name, ctx, lease).await?,
        None => (0, None),
    };
    let totals = store.index_totals(name).await?;
    Ok(RepositoryResult {
        index: name.to_string(),
        files: totals.files,
        symbols: totals.symbols,
        chunks: totals.chunks,
        languages: totals.languages,
        parsed,
        removed: gone.len() as u64,
        skipped,
        embedded,
        embedding_error,
        commit,
        store: store.kind().to_string(),
        duration_ms: 0,
    })
}

/// Gives every chunk of `index` without an embedding of the model one, a batch at a time;
/// returns how many it embedded, and why it stopped when the model cannot give embeddings
/// (the index is built all the same; lexical search works without them).
async fn embed_all(
    store: &SharedStore,
    model: &crate::llm::Model,
    passage: &str,
    index: &str,
    ctx: &TaskContext,
    lease: &Lease<'_>,
) -> Result<(u64, Option<String>), HandlerError> {
    let mut done = 0u64;
    loop {
        let chunks = store.unembedded(index, model.name(), EMBED_BATCH).await?;
        if chunks.is_empty() {
            return Ok((done, None));
        }
        let texts: Vec<String> = chunks
            .iter()
            .map(|c| {
                let mut t = format!("{passage}{}\n{}", c.path, c.text);
                if let Some((cut, _)) = t.char_indices().nth(EMBED_CHARS) {
                    t.truncate(cut);
                }
                t
            })
            .collect();
        let e = match model.embed(&texts).await {
            Ok(e) => e,
            Err(e) if e.retryable() => {
                return Err(HandlerError::retryable(format!(
                    "embedding model {}: {e}",
                    model.name()
                )));
            }
            Err(e) => return Ok((done, Some(format!("embedding model {}: {e}", model.name())))),
        };
        let pairs: Vec<(i64, Vec<f32>)> = chunks.iter().map(|c| c.id).zip(e.vectors).collect();
        store.set_embeddings(model.name(), &pairs).await?;
        done += pairs.len() as u64;
        ctx.report_progress(format!("embedded {done} chunks"));
        lease.take().await?;
    }
}

/// What the store keeps of one file.
fn record_of(path: &str, content: &str, hash: String) -> Result<FileRecord, HandlerError> {
    let language = parse::Language::of_path(path)
        .ok_or_else(|| HandlerError::fatal(format!("{path}: no known language")))?;
    let parsed = parse::parse(language, content).map_err(|e| HandlerError::fatal(format!("{path}: {e}")))?;
    let symbols = parsed
        .symbols
        .iter()
        .map(|s| Symbol {
            name: s.name.clone(),
            kind: s.kind.as_str().to_string(),
            path: path.to_string(),
            line: s.line,
            end_line: s.end_line,
            container: s.container.clone(),
        })
        .collect();
    let chunks = parsed
        .chunks
        .iter()
        .map(|c| {
            let (counts, length) = rank::words(&format!("{path}\n{}", c.text));
            ChunkRecord {
                start_line: c.start_line,
                end_line: c.end_line,
                symbol: c.symbol.clone(),
                kind: c.kind.map(|k| k.as_str().to_string()),
                text: c.text.clone(),
                terms: counts.into_iter().collect(),
                length,
            }
        })
        .collect();
    Ok(FileRecord {
        path: path.to_string(),
        language: language.name().to_string(),
        hash,
        lines: content.lines().count() as u32,
        symbols,
        imports: parsed
            .imports
            .iter()
            .map(|i| (i.module.clone(), i.line))
            .collect(),
        calls: parsed
            .calls
            .iter()
            .map(|c| (c.caller.clone(), c.callee.clone(), c.line))
            .collect(),
        chunks,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_and_patterns_are_refused_by_name() {
        for bad in ["", "/etc/passwd", "a/../b", "./a", "a//b", "a\\b"] {
            let e = check_path(bad).unwrap_err();
            assert!(
                e.message.contains("must be relative") && !e.retryable,
                "{bad}: {e:?}"
            );
        }
        check_path("src/lib.rs").unwrap();
        let e = Filter::new(&["src/[".into()], &[]).err().unwrap();
        assert!(e.message.contains("include pattern \"src/[\""), "{e:?}");
        let f = Filter::new(&["src/**".into()], &["src/gen/**".into()]).unwrap();
        assert!(f.wants("src/a/b.rs") && !f.wants("src/gen/x.rs") && !f.wants("tests/t.rs"));
    }
}
