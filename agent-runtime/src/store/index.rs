//! The store's code indexes: files, definitions, imports, calls, chunks with their BM25
//! postings and embeddings.

use std::collections::BTreeMap;

use cogo_api::catalogue::index::Symbol;

use super::{
    ChunkRow, FileRecord, IndexTotals, Posting, Store, StoreError, bytes_vector, chunk_id, cosine,
    sql::{Statement, Val, in_list, insert_rows},
    vector_bytes, vector_text,
};

impl Store {
    /// Path to content hash of every file of `index`.
    pub async fn file_hashes(&self, index: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = self
            .db
            .query(
                "select path, hash from cogo_index_files where index_name = $1",
                vec![index.into()],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r[0].text(), r[1].text())).collect())
    }

    /// Replaces what `index` holds of `file.path` with `file`, in one transaction.
    pub async fn put_file(&self, index: &str, file: &FileRecord) -> Result<(), StoreError> {
        let mut st = delete_file(index, &file.path);
        st.extend(insert_rows(
            "cogo_index_files",
            &["index_name", "path", "language", "hash", "lines"],
            vec![vec![
                index.into(),
                file.path.clone().into(),
                file.language.clone().into(),
                file.hash.clone().into(),
                file.lines.into(),
            ]],
            "",
        ));
        st.extend(insert_rows(
            "cogo_index_symbols",
            &[
                "index_name",
                "path",
                "name",
                "kind",
                "line",
                "end_line",
                "container",
            ],
            file.symbols
                .iter()
                .map(|s| {
                    vec![
                        index.into(),
                        file.path.clone().into(),
                        s.name.clone().into(),
                        s.kind.clone().into(),
                        s.line.into(),
                        s.end_line.into(),
                        s.container.clone().into(),
                    ]
                })
                .collect(),
            "",
        ));
        st.extend(insert_rows(
            "cogo_index_imports",
            &["index_name", "path", "module", "line"],
            file.imports
                .iter()
                .map(|(m, l)| {
                    vec![
                        index.into(),
                        file.path.clone().into(),
                        m.clone().into(),
                        (*l).into(),
                    ]
                })
                .collect(),
            "",
        ));
        st.extend(insert_rows(
            "cogo_index_calls",
            &["index_name", "path", "caller", "callee", "line"],
            file.calls
                .iter()
                .map(|(caller, callee, l)| {
                    vec![
                        index.into(),
                        file.path.clone().into(),
                        caller.clone().into(),
                        callee.clone().into(),
                        (*l).into(),
                    ]
                })
                .collect(),
            "",
        ));
        let mut chunks = vec![];
        let mut postings = vec![];
        for (ordinal, c) in file.chunks.iter().enumerate() {
            let id = chunk_id(index, &file.path, ordinal);
            chunks.push(vec![
                id.into(),
                index.into(),
                file.path.clone().into(),
                c.start_line.into(),
                c.end_line.into(),
                c.symbol.clone().into(),
                c.kind.clone().into(),
                c.text.clone().into(),
                c.length.into(),
            ]);
            for (term, tf) in &c.terms {
                postings.push(vec![
                    index.into(),
                    term.clone().into(),
                    id.into(),
                    file.path.clone().into(),
                    (*tf).into(),
                ]);
            }
        }
        st.extend(insert_rows(
            "cogo_index_chunks",
            &[
                "id",
                "index_name",
                "path",
                "start_line",
                "end_line",
                "symbol",
                "kind",
                "text",
                "length",
            ],
            chunks,
            "",
        ));
        st.extend(insert_rows(
            "cogo_index_postings",
            &["index_name", "term", "chunk_id", "path", "tf"],
            postings,
            "",
        ));
        self.db.transaction(st).await
    }

    /// Removes `paths` from `index`.
    pub async fn remove_files(&self, index: &str, paths: &[String]) -> Result<(), StoreError> {
        for batch in paths.chunks(200) {
            let st = batch.iter().flat_map(|p| delete_file(index, p)).collect();
            self.db.transaction(st).await?;
        }
        Ok(())
    }

    /// Whether `index` has a file.
    pub async fn index_exists(&self, index: &str) -> Result<bool, StoreError> {
        let rows = self
            .db
            .query(
                "select 1 from cogo_index_files where index_name = $1 limit 1",
                vec![index.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// What `index` holds (all zero when it does not exist).
    pub async fn index_totals(&self, index: &str) -> Result<IndexTotals, StoreError> {
        let mut t = IndexTotals::default();
        for r in self
            .db
            .query(
                "select language, count(*) from cogo_index_files where index_name = $1 group by language",
                vec![index.into()],
            )
            .await?
        {
            let n = r[1].int() as u64;
            t.files += n;
            t.languages.insert(r[0].text(), n);
        }
        let count = |table: &str| format!("select count(*) from {table} where index_name = $1");
        t.symbols = self.count(&count("cogo_index_symbols"), index).await?;
        t.chunks = self.count(&count("cogo_index_chunks"), index).await?;
        Ok(t)
    }

    /// The first column of the first row of a count `sql` whose `$1` is `key`.
    pub(super) async fn count(&self, sql: &str, key: &str) -> Result<u64, StoreError> {
        let rows = self.db.query(sql, vec![key.into()]).await?;
        Ok(rows.first().map_or(0, |r| r[0].int()) as u64)
    }

    /// Definitions of `index` matching every filter given, by path and line; at most
    /// `limit`.
    pub async fn symbols(
        &self,
        index: &str,
        name: Option<&str>,
        prefix: Option<&str>,
        kind: Option<&str>,
        path: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Symbol>, StoreError> {
        let mut sql = "select name, kind, path, line, end_line, container from cogo_index_symbols where index_name = $1".to_string();
        let mut params: Vec<Val> = vec![index.into()];
        let mut filter = |clause: &str, v: Val| {
            params.push(v);
            sql.push_str(&format!(" and {clause}${}", params.len()));
        };
        if let Some(n) = name {
            filter("name = ", n.into());
        }
        if let Some(p) = prefix {
            // substr keeps `_` and `%` literal, unlike `like`.
            filter(&format!("substr(name, 1, {}) = ", p.chars().count()), p.into());
        }
        if let Some(k) = kind {
            filter("kind = ", k.into());
        }
        if let Some(p) = path {
            filter("path = ", p.into());
        }
        params.push(i64::from(limit).into());
        sql.push_str(&format!(" order by path, line, name limit ${}", params.len()));
        let rows = self.db.query(&sql, params).await?;
        Ok(rows
            .into_iter()
            .map(|r| Symbol {
                name: r[0].text(),
                kind: r[1].text(),
                path: r[2].text(),
                line: r[3].int() as u32,
                end_line: r[4].int() as u32,
                container: r[5].opt_text(),
            })
            .collect())
    }

    /// The chunk count and average length of `index`, for BM25.
    pub async fn chunk_stats(&self, index: &str) -> Result<(u64, f64), StoreError> {
        let rows = self
            .db
            .query(
                "select count(*), cast(coalesce(avg(length), 0) as double precision) from cogo_index_chunks where index_name = $1",
                vec![index.into()],
            )
            .await?;
        Ok(rows
            .first()
            .map_or((0, 0.0), |r| (r[0].int() as u64, r[1].real())))
    }

    /// The postings of `terms` in `index`.
    pub async fn postings(&self, index: &str, terms: &[String]) -> Result<Vec<Posting>, StoreError> {
        if terms.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "select p.term, p.chunk_id, p.tf, c.length from cogo_index_postings p join cogo_index_chunks c on c.id = p.chunk_id where p.index_name = $1 and p.term in ({})",
            in_list(terms.len(), 2)
        );
        let mut params: Vec<Val> = vec![index.into()];
        params.extend(terms.iter().map(|t| Val::from(t.as_str())));
        let rows = self.db.query(&sql, params).await?;
        Ok(rows
            .into_iter()
            .map(|r| Posting {
                term: r[0].text(),
                chunk: r[1].int(),
                tf: r[2].int() as u32,
                length: r[3].int() as u32,
            })
            .collect())
    }

    /// The chunks `ids`.
    pub async fn chunks(&self, ids: &[i64]) -> Result<Vec<ChunkRow>, StoreError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "select id, path, start_line, end_line, symbol, kind, text from cogo_index_chunks where id in ({})",
            in_list(ids.len(), 1)
        );
        let rows = self
            .db
            .query(&sql, ids.iter().map(|i| Val::Int(*i)).collect())
            .await?;
        Ok(rows.into_iter().map(chunk_row).collect())
    }

    /// Takes or renews the lease on `index` for `holder` until `now_ms + ttl_ms`: true when
    /// `holder` has it, false while another holder's lease runs.
    pub async fn lease_index(
        &self,
        index: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let rows = self
            .db
            .query(
                "insert into cogo_index_locks (index_name, holder, expires_at) values ($1, $2, $3) \
                 on conflict (index_name) do update set holder = excluded.holder, expires_at = excluded.expires_at \
                 where cogo_index_locks.expires_at < $4 or cogo_index_locks.holder = excluded.holder \
                 returning holder",
                vec![index.into(), holder.into(), (now_ms + ttl_ms).into(), now_ms.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Who holds the lease on `index`, if anyone does.
    pub async fn index_holder(&self, index: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .db
            .query(
                "select holder from cogo_index_locks where index_name = $1",
                vec![index.into()],
            )
            .await?;
        Ok(rows.first().map(|r| r[0].text()))
    }

    /// Gives up `holder`'s lease on `index`.
    pub async fn release_index(&self, index: &str, holder: &str) -> Result<(), StoreError> {
        self.db
            .transaction(vec![(
                "delete from cogo_index_locks where index_name = $1 and holder = $2".into(),
                vec![index.into(), holder.into()],
            )])
            .await
    }

    /// Chunks of `index` with an embedding of `model` (and, with pgvector, its vector).
    pub async fn embedded_with(&self, index: &str, model: &str) -> Result<u64, StoreError> {
        let vector = if self.vector {
            " and embedding_vector is not null"
        } else {
            ""
        };
        let rows = self
            .db
            .query(
                &format!(
                    "select count(*) from cogo_index_chunks where index_name = $1 and embedding_model = $2{vector}"
                ),
                vec![index.into(), model.into()],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r[0].int()) as u64)
    }

    /// Up to `limit` chunks of `index` without an embedding of `model`: none yet, another
    /// model's, or (with pgvector) one written before the database had it.
    pub async fn unembedded(
        &self,
        index: &str,
        model: &str,
        limit: u32,
    ) -> Result<Vec<ChunkRow>, StoreError> {
        let vector = if self.vector {
            " or embedding_vector is null"
        } else {
            ""
        };
        let rows = self
            .db
            .query(
                &format!(
                    "select id, path, start_line, end_line, symbol, kind, text from cogo_index_chunks \
                     where index_name = $1 and (embedding is null or embedding_model is null or embedding_model <> $2{vector}) \
                     order by id limit $3"
                ),
                vec![index.into(), model.into(), i64::from(limit).into()],
            )
            .await?;
        Ok(rows.into_iter().map(chunk_row).collect())
    }

    /// Stores embeddings of chunks made by `model`.
    pub async fn set_embeddings(
        &self,
        model: &str,
        embeddings: &[(i64, Vec<f32>)],
    ) -> Result<(), StoreError> {
        let st: Vec<Statement> = embeddings
            .iter()
            .map(|(id, v)| {
                if self.vector {
                    (
                        "update cogo_index_chunks set embedding = $1, embedding_model = $2, embedding_vector = cast($3::text as vector) where id = $4".into(),
                        vec![Val::Bytes(vector_bytes(v)), model.into(), vector_text(v).into(), Val::Int(*id)],
                    )
                } else {
                    (
                        "update cogo_index_chunks set embedding = $1, embedding_model = $2 where id = $3".into(),
                        vec![Val::Bytes(vector_bytes(v)), model.into(), Val::Int(*id)],
                    )
                }
            })
            .collect();
        self.db.transaction(st).await
    }

    /// The `k` chunks of `index` whose embeddings by `model` are nearest `query` (cosine),
    /// with their similarity: by pgvector in the database, else by reading the embeddings in
    /// pages.
    pub async fn nearest(
        &self,
        index: &str,
        model: &str,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        if query.iter().all(|x| *x == 0.0) {
            return Ok(vec![]);
        }
        if self.vector {
            let rows = self
                .db
                .query(
                    "select id, cast(1 - (embedding_vector <=> cast($1::text as vector)) as double precision) from cogo_index_chunks \
                     where index_name = $2 and embedding_model = $3 and embedding_vector is not null and vector_dims(embedding_vector) = $4::bigint \
                     order by embedding_vector <=> cast($1::text as vector) limit $5",
                    vec![
                        vector_text(query).into(),
                        index.into(),
                        model.into(),
                        (query.len() as i64).into(),
                        (k as i64).into(),
                    ],
                )
                .await?;
            return Ok(rows.into_iter().map(|r| (r[0].int(), r[1].real())).collect());
        }
        let mut best = crate::roles::indexing::rank::TopK::new(k);
        let mut after = i64::MIN;
        loop {
            let rows = self
                .db
                .query(
                    "select id, embedding from cogo_index_chunks where index_name = $1 and embedding_model = $2 and embedding is not null and id > $3 order by id limit 2000",
                    vec![index.into(), model.into(), after.into()],
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after = last[0].int();
            for r in &rows {
                if let Some(b) = r[1].bytes() {
                    let v = bytes_vector(b);
                    if v.len() == query.len() {
                        best.push(r[0].int(), cosine(query, &v));
                    }
                }
            }
        }
        Ok(best.into_sorted())
    }

    /// Every (path, symbol) and (path, import) and call of `index`, for its graph.
    pub async fn index_graph(
        &self,
        index: &str,
    ) -> Result<
        (
            Vec<String>,
            Vec<Symbol>,
            Vec<(String, String)>,
            Vec<(String, Option<String>, String)>,
        ),
        StoreError,
    > {
        let files = self
            .db
            .query(
                "select path from cogo_index_files where index_name = $1 order by path",
                vec![index.into()],
            )
            .await?
            .into_iter()
            .map(|r| r[0].text())
            .collect();
        let symbols = self.symbols(index, None, None, None, None, u32::MAX >> 1).await?;
        let imports = self
            .db
            .query(
                "select path, module from cogo_index_imports where index_name = $1 order by path, line",
                vec![index.into()],
            )
            .await?
            .into_iter()
            .map(|r| (r[0].text(), r[1].text()))
            .collect();
        let calls = self
            .db
            .query(
                "select path, caller, callee from cogo_index_calls where index_name = $1 order by path, line",
                vec![index.into()],
            )
            .await?
            .into_iter()
            .map(|r| (r[0].text(), r[1].opt_text(), r[2].text()))
            .collect();
        Ok((files, symbols, imports, calls))
    }
}

fn chunk_row(r: Vec<Val>) -> ChunkRow {
    ChunkRow {
        id: r[0].int(),
        path: r[1].text(),
        start_line: r[2].int() as u32,
        end_line: r[3].int() as u32,
        symbol: r[4].opt_text(),
        kind: r[5].opt_text(),
        text: r[6].text(),
    }
}

fn delete_file(index: &str, path: &str) -> Vec<Statement> {
    [
        "cogo_index_postings",
        "cogo_index_chunks",
        "cogo_index_calls",
        "cogo_index_imports",
        "cogo_index_symbols",
        "cogo_index_files",
    ]
    .iter()
    .map(|t| {
        (
            format!("delete from {t} where index_name = $1 and path = $2"),
            vec![index.into(), path.into()],
        )
    })
    .collect()
}
