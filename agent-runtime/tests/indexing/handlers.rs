//! The Indexing and GraphRAG task handlers on the real test tree (`tests/data/index`): what
//! they find, what they refuse, and that re-indexing parses only what changed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use cogo_agent::{
    handler::{HandlerError, Registry, TaskContext, local_task},
    llm::{Model, ModelConfig, ModelMetrics, SharedModel},
    roles::{graphrag, indexing},
    store::{Lazy, SharedLazy},
};
use cogo_api::agent::ModelProvider;
use serde_json::{Value, json};

/// The test tree.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/index")
}

/// Every file of the test tree, as `index.repository`'s inline files.
pub fn tree_files() -> Vec<Value> {
    let root = data_dir();
    let mut out = vec![];
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(content) = std::fs::read_to_string(&p) {
                let rel = p.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                out.push(json!({"path": rel, "content": content}));
            }
        }
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    out
}

/// Agents of both roles over one store.
pub struct Agents {
    registry: Registry,
    /// The store they share.
    pub store: SharedLazy,
    _dir: Option<tempfile::TempDir>,
}

impl Agents {
    /// Over a new local store, with `model`.
    pub fn local(model: Option<SharedModel>) -> Agents {
        let dir = tempfile::tempdir().unwrap();
        let store = Lazy::new(None, None, dir.path().to_path_buf());
        Agents::over(store, model, Some(dir))
    }

    /// Over `store`.
    pub fn over(store: SharedLazy, model: Option<SharedModel>, dir: Option<tempfile::TempDir>) -> Agents {
        let mut registry = Registry::default();
        let policy = indexing::IndexPolicy {
            git: indexing::git::Limits {
                timeout: Duration::from_secs(60),
                // The git servers of these tests are on loopback.
                allow_private: true,
                ..Default::default()
            },
            ..Default::default()
        };
        indexing::register(&mut registry, store.clone(), model.clone(), policy);
        graphrag::register(&mut registry, store.clone(), model);
        Agents {
            registry,
            store,
            _dir: dir,
        }
    }

    /// Runs a task of `task_type` with `input`.
    pub async fn run(&self, task_type: &str, input: Value) -> Result<Value, HandlerError> {
        let (_cancel, ctx) = TaskContext::detached(local_task("t", task_type, input.clone()));
        let handler = self
            .registry
            .get(task_type)
            .unwrap_or_else(|| panic!("{task_type} is registered"));
        handler.run(&input, ctx).await
    }

    /// Indexes `files` (inline) as `index`, expecting success.
    pub async fn index(&self, index: &str, files: &[Value]) -> Value {
        self.ok(
            "index.repository",
            json!({"index": index, "source": {"files": files}}),
        )
        .await
    }

    /// Runs it and expects success.
    pub async fn ok(&self, task_type: &str, input: Value) -> Value {
        self.run(task_type, input.clone())
            .await
            .unwrap_or_else(|e| panic!("{task_type}: {e:?}"))
    }
}

/// An OpenAI-compatible model at `endpoint`.
pub fn openai_model(endpoint: &str, name: &str, key: &str) -> SharedModel {
    let config = ModelConfig {
        provider: ModelProvider::OpenAICompatible,
        name: name.into(),
        endpoint: Some(endpoint.into()),
        api_key: key.into(),
        timeout: Duration::from_secs(60),
        attempts: 1,
    };
    Arc::new(Model::new(config.client().unwrap(), 1, ModelMetrics::default()))
}

fn symbols(v: &Value) -> Vec<(String, String, String, u64)> {
    v["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                s["path"].as_str().unwrap().to_string(),
                s["line"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn hit_paths(v: &Value) -> Vec<(String, Option<String>)> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["symbol"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_test_tree_is_indexed_and_its_definitions_found() {
    let a = Agents::local(None);
    let files = tree_files();
    let r = a.index("tree", &files).await;
    // Every source file of the five languages; licenses, manifests and READMEs are skipped.
    assert_eq!(
        r["languages"],
        json!({"go": 16, "javascript": 5, "python": 7, "rust": 8, "tsx": 6, "typescript": 8}),
        "{r}"
    );
    assert_eq!(r["files"], 50);
    assert_eq!(r["parsed"], 50);
    assert_eq!(r["skipped"].as_u64().unwrap() as usize, files.len() - 50);
    assert_eq!(r["store"], "local");
    assert!(
        r["symbols"].as_u64().unwrap() > 300 && r["chunks"].as_u64().unwrap() > 300,
        "{r}"
    );

    // Lookups match what the code defines.
    let s = a
        .ok(
            "index.symbols",
            json!({"index": "tree", "name": "Parse", "kind": "function"}),
        )
        .await;
    assert_eq!(
        symbols(&s),
        [(
            "Parse".into(),
            "function".into(),
            "go/uuid-v1.6.0/uuid.go".into(),
            68
        )]
    );
    let s = a
        .ok("index.symbols", json!({"index": "tree", "name": "bump_major"}))
        .await;
    assert_eq!(
        symbols(&s),
        [
            (
                "bump_major".into(),
                "function".into(),
                "python/semver-3.1.1/semver/_deprecated.py".into(),
                262
            ),
            (
                "bump_major".into(),
                "method".into(),
                "python/semver-3.1.1/semver/version.py".into(),
                333
            )
        ]
    );
    assert_eq!(s["symbols"][1]["container"], "Version");
    let s = a
        .ok("index.symbols", json!({"index": "tree", "prefix": "NewV7"}))
        .await;
    let names: Vec<String> = symbols(&s).into_iter().map(|x| x.0).collect();
    assert_eq!(names, ["NewV7", "NewV7FromReader"]);
    let s = a
        .ok(
            "index.symbols",
            json!({"index": "tree", "path": "rust/semver-1.0.28/src/lib.rs", "name": "parse"}),
        )
        .await;
    let found: Vec<(String, u64)> = symbols(&s).into_iter().map(|x| (x.1, x.3)).collect();
    let want = [("module", 96), ("method", 422), ("method", 507), ("method", 526)];
    assert_eq!(
        found,
        want.map(|(k, l)| (k.to_string(), l)),
        "`mod parse;` and three parse methods"
    );
    let s = a
        .ok(
            "index.symbols",
            json!({"index": "tree", "prefix": "", "limit": 5}),
        )
        .await;
    assert_eq!(s["symbols"].as_array().unwrap().len(), 5);
    assert_eq!(s["truncated"], true);

    // Searches find known functions.
    let hits = a
        .ok(
            "index.search",
            json!({"index": "tree", "query": "NewRandom", "k": 3}),
        )
        .await;
    assert_eq!(
        hits["mode"], "lexical",
        "no embedding model: hybrid falls back to lexical"
    );
    assert_eq!(
        hits_paths_first(&hits),
        ("go/uuid-v1.6.0/version4.go".into(), Some("NewRandom".into()))
    );
    let hits = a
        .ok(
            "index.search",
            json!({"index": "tree", "query": "bump major version", "k": 5}),
        )
        .await;
    assert!(
        hit_paths(&hits)
            .iter()
            .any(|(p, s)| p.ends_with("semver/version.py") && s.as_deref() == Some("bump_major")),
        "{hits}"
    );
    let hits = a
        .ok(
            "index.search",
            json!({"index": "tree", "query": "useToaster", "k": 3}),
        )
        .await;
    assert_eq!(
        hits_paths_first(&hits).0,
        "typescript/react-hot-toast-2.6.1/src/core/use-toaster.ts"
    );
    let top = &hits["hits"][0];
    assert!(top["snippet"].as_str().unwrap().contains("useToaster"), "{top}");
    assert!(
        top["startLine"].as_u64().unwrap() <= 8 && top["endLine"].as_u64().unwrap() >= 8,
        "{top}"
    );
}

fn hits_paths_first(v: &Value) -> (String, Option<String>) {
    hit_paths(v)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no hits: {v}"))
}

#[tokio::test]
async fn indexing_again_parses_only_what_changed() {
    let a = Agents::local(None);
    let mut files = tree_files();
    let r = a.index("tree", &files).await;
    assert_eq!(r["parsed"], 50);
    let r = a.index("tree", &files).await;
    assert_eq!(
        (r["parsed"].as_u64(), r["removed"].as_u64(), r["files"].as_u64()),
        (Some(0), Some(0), Some(50))
    );

    // One file changes, one goes away.
    let changed = files
        .iter_mut()
        .find(|f| f["path"] == "go/uuid-v1.6.0/version4.go")
        .unwrap();
    let text = changed["content"].as_str().unwrap().to_string();
    changed["content"] = json!(format!(
        "{text}\n// FreshlyAddedHelper returns nothing.\nfunc FreshlyAddedHelper() {{}}\n"
    ));
    files.retain(|f| f["path"] != "javascript/ms-2.1.3/index.js");
    let r = a.index("tree", &files).await;
    assert_eq!(
        (r["parsed"].as_u64(), r["removed"].as_u64(), r["files"].as_u64()),
        (Some(1), Some(1), Some(49))
    );
    let s = a
        .ok(
            "index.symbols",
            json!({"index": "tree", "name": "FreshlyAddedHelper"}),
        )
        .await;
    assert_eq!(s["symbols"][0]["path"], "go/uuid-v1.6.0/version4.go");
    // The old version's chunks are gone, the removed file's too.
    let s = a
        .ok(
            "index.symbols",
            json!({"index": "tree", "path": "javascript/ms-2.1.3/index.js"}),
        )
        .await;
    assert_eq!(s["symbols"], json!([]));
    let hits = a
        .ok(
            "index.search",
            json!({"index": "tree", "query": "FreshlyAddedHelper"}),
        )
        .await;
    let found: Vec<_> = hit_paths(&hits)
        .into_iter()
        .filter(|h| h.1.as_deref() == Some("FreshlyAddedHelper"))
        .collect();
    assert_eq!(found.len(), 1, "{hits}");
    assert_eq!(hits_paths_first(&hits).1.as_deref(), Some("FreshlyAddedHelper"));

    // include/exclude narrow what is indexed; another index is separate.
    let r = a
        .ok(
            "index.repository",
            json!({"index": "go-only", "source": {"files": files}, "include": ["go/**"], "exclude": ["**/node_*.go"]}),
        )
        .await;
    assert_eq!(r["languages"], json!({"go": 14}));
    let s = a
        .ok("index.symbols", json!({"index": "go-only", "name": "bump_major"}))
        .await;
    assert_eq!(s["symbols"], json!([]));
}

#[tokio::test]
async fn bad_inputs_fail_at_once_with_a_clear_reason() {
    let a = Agents::local(None);
    a.ok(
        "index.repository",
        json!({"index": "small", "source": {"files": [{"path": "a.py", "content": "def f():\n    pass\n"}]}}),
    )
    .await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "index.repository",
            json!({"index": "Bad Name", "source": {"files": []}}),
            "index \"Bad Name\" must be 1 to 63",
        ),
        (
            "index.repository",
            json!({"index": "x", "source": {}}),
            "exactly one of git and files",
        ),
        (
            "index.repository",
            json!({"index": "x", "source": {"files": [], "git": {"url": "https://example.com/r"}}}),
            "exactly one of git and files",
        ),
        (
            "index.repository",
            json!({"index": "x", "source": {"files": [{"path": "../etc/passwd", "content": ""}]}}),
            "must be relative",
        ),
        (
            "index.repository",
            json!({"index": "x", "source": {"files": [{"path": "a.rs", "content": ""}, {"path": "a.rs", "content": ""}]}}),
            "given twice",
        ),
        (
            "index.repository",
            json!({"index": "x", "source": {"files": []}, "include": ["[z"]}),
            "include pattern",
        ),
        (
            "index.repository",
            json!({"index": "x", "source": {"git": {"url": "ssh://git@example.com/r.git"}}}),
            "scheme is not allowed",
        ),
        (
            "index.repository",
            json!({"index": "x", "source": {"files": []}, "mode": 1}),
            "unknown field `mode`",
        ),
        (
            "index.search",
            json!({"index": "nope", "query": "x"}),
            "index \"nope\" does not exist",
        ),
        (
            "index.search",
            json!({"index": "small", "query": "  "}),
            "query is empty",
        ),
        (
            "index.search",
            json!({"index": "small", "query": "f", "k": 0}),
            "k is 0",
        ),
        (
            "index.search",
            json!({"index": "small", "query": "f", "mode": "semantic"}),
            "needs an embedding model",
        ),
        (
            "index.search",
            json!({"index": "small", "query": "f", "mode": "fuzzy"}),
            "unknown variant `fuzzy`",
        ),
        (
            "index.symbols",
            json!({"index": "small", "kind": "widget"}),
            "kind \"widget\" is not one of",
        ),
        (
            "index.symbols",
            json!({"index": "small", "limit": 0}),
            "limit is 0",
        ),
        ("index.graph", json!({"index": "nope"}), "does not exist"),
    ];
    for (task_type, input, want) in cases {
        let e = a
            .run(task_type, input.clone())
            .await
            .expect_err(&input.to_string());
        assert!(!e.retryable, "{input}: {e:?}");
        assert!(
            e.message.contains(want),
            "{input}: wanted {want:?} in {:?}",
            e.message
        );
    }
}

/// A git repository holding the test tree, served by `git daemon` on loopback.
pub struct TreeRepo {
    _dir: tempfile::TempDir,
    daemon: Child,
    /// The repository's `git://` URL.
    pub url: String,
    /// Its commit.
    pub commit: String,
}

impl TreeRepo {
    /// Commits the test tree and serves it.
    pub fn start() -> TreeRepo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        copy_tree(&data_dir(), &work);
        super::git::git(&work, &["init", "-q"]);
        super::git::git(&work, &["add", "-A"]);
        super::git::git(&work, &["commit", "-q", "-m", "tree"]);
        let commit = super::git::git(&work, &["rev-parse", "HEAD"]);
        let served = dir.path().join("served");
        std::fs::create_dir(&served).unwrap();
        super::git::git(
            &served,
            &["clone", "-q", "--bare", work.to_str().unwrap(), "tree.git"],
        );
        let port = super::git::free_port();
        let daemon = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                "--enable=upload-pack",
            ])
            .arg(format!("--base-path={}", served.display()))
            .arg(format!("--port={port}"))
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts (Debian's git package)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon is not listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TreeRepo {
            _dir: dir,
            daemon,
            url: format!("git://127.0.0.1:{port}/tree.git"),
            commit,
        }
    }
}

impl Drop for TreeRepo {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[tokio::test]
async fn a_git_repository_is_indexed_at_its_commit() {
    let repo = TreeRepo::start();
    let a = Agents::local(None);
    let r = a
        .ok(
            "index.repository",
            json!({"index": "git-tree", "source": {"git": {"url": repo.url}}}),
        )
        .await;
    assert_eq!(r["commit"], repo.commit.as_str());
    assert_eq!(r["files"], 50);
    let inline = Agents::local(None);
    let i = inline.index("git-tree", &tree_files()).await;
    assert_eq!(
        (&r["symbols"], &r["chunks"], &r["languages"]),
        (&i["symbols"], &i["chunks"], &i["languages"])
    );
    // Nothing changed at the same commit: nothing is parsed again.
    let again = a
        .ok(
            "index.repository",
            json!({"index": "git-tree", "source": {"git": {"url": repo.url, "ref": "main"}}}),
        )
        .await;
    assert_eq!(again["parsed"], 0);
    let e = a
        .run(
            "index.repository",
            json!({"index": "git-tree", "source": {"git": {"url": repo.url, "ref": "v9"}}}),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("ref v9 not found") && !e.retryable, "{e:?}");
    // No checkout is left behind.
    let left: Vec<_> = std::fs::read_dir(a.store.dir().join("checkouts"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn the_index_graph_links_files_symbols_imports_and_calls() {
    let a = Agents::local(None);
    a.index("tree", &tree_files()).await;
    let g = a.ok("index.graph", json!({"index": "tree"})).await;
    let nodes: BTreeMap<&str, &Value> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let has_edge = |s: &str, t: &str, kind: &str| {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == s && e["target"] == t && e["type"] == kind)
    };
    let version4 = "file:go/uuid-v1.6.0/version4.go";
    let new_random = "symbol:go/uuid-v1.6.0/version4.go#NewRandom";
    assert_eq!(nodes[new_random]["type"], "function");
    assert_eq!(nodes[new_random]["props"]["line"], 39);
    assert!(has_edge(version4, new_random, "defines"));
    assert!(
        has_edge(version4, "module:io", "imports"),
        "version4.go imports io"
    );
    // NewRandom calls NewRandomFromReader, defined in the same file.
    assert!(has_edge(
        new_random,
        "symbol:go/uuid-v1.6.0/version4.go#NewRandomFromReader",
        "calls"
    ));
    // A Python method is contained in its class.
    assert!(has_edge(
        "symbol:python/semver-3.1.1/semver/version.py#Version",
        "symbol:python/semver-3.1.1/semver/version.py#Version.bump_major",
        "contains"
    ));
    // Every edge ends at a node.
    for e in g["edges"].as_array().unwrap() {
        assert!(
            nodes.contains_key(e["source"].as_str().unwrap())
                && nodes.contains_key(e["target"].as_str().unwrap()),
            "{e}"
        );
    }
}

#[tokio::test]
async fn one_indexing_of_an_index_runs_at_a_time() {
    let a = Agents::local(None);
    let store = a.store.get().await.unwrap();
    let input = json!({"index": "tree", "source": {"files": [{"path": "a.go", "content": "package a\nfunc A() {}\n"}]}});
    let now = jiff::Timestamp::now().as_millisecond();
    assert!(
        store
            .lease_index("tree", "team/other attempt 1", now, 60_000)
            .await
            .unwrap()
    );
    let e = a.run("index.repository", input.clone()).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(
        e.message
            .contains("index \"tree\" is being indexed by team/other attempt 1"),
        "{e:?}"
    );
    // The holder ends: the next try runs, and gives the lease back when done.
    store.release_index("tree", "team/other attempt 1").await.unwrap();
    a.ok("index.repository", input.clone()).await;
    assert_eq!(store.index_holder("tree").await.unwrap(), None);
    // A holder that died: its lease runs out and is taken over.
    assert!(
        store
            .lease_index("tree", "team/gone attempt 1", now - 120_000, 60_000)
            .await
            .unwrap()
    );
    a.ok("index.repository", input).await;
}

#[tokio::test]
async fn a_model_without_embeddings_leaves_the_index_built_and_says_why() {
    let gemini = cogo_e2e::standin::StandIn::gemini("key").await;
    let config = ModelConfig {
        provider: ModelProvider::Gemini,
        name: "gemini-2.5-flash-lite".into(),
        endpoint: Some(gemini.endpoint()),
        api_key: "key".into(),
        timeout: Duration::from_secs(5),
        attempts: 1,
    };
    let model = Arc::new(Model::new(config.client().unwrap(), 1, ModelMetrics::default()));
    let a = Agents::local(Some(model));
    let r = a.index("tree", &tree_files()).await;
    assert_eq!((r["files"].as_u64(), r["embedded"].as_u64()), (Some(50), Some(0)));
    assert!(
        r["embeddingError"]
            .as_str()
            .unwrap()
            .contains("gives no embeddings here"),
        "{r}"
    );
    let hits = a
        .ok("index.search", json!({"index": "tree", "query": "NewRandom"}))
        .await;
    assert_eq!(hits["mode"], "lexical");
    let e = a
        .run(
            "index.search",
            json!({"index": "tree", "query": "x", "mode": "semantic"}),
        )
        .await
        .unwrap_err();
    assert!(
        e.message.contains("has no embeddings by gemini-2.5-flash-lite"),
        "{e:?}"
    );
}
