//! The store's knowledge graphs: nodes, edges, and the communities last found.

use super::{
    CommunityRow, EdgeRow, NodeRow, Store, StoreError,
    sql::{Statement, Val, in_list, insert_rows},
};

impl Store {
    /// Adds or updates nodes, then edges (creating the nodes they name), in one transaction.
    pub async fn upsert_graph(
        &self,
        graph: &str,
        nodes: &[NodeRow],
        edges: &[EdgeRow],
    ) -> Result<(), StoreError> {
        let mut st = insert_rows(
            "cogo_graph_nodes",
            &["graph", "id", "label", "type", "props"],
            nodes
                .iter()
                .map(|n| {
                    vec![
                        graph.into(),
                        n.id.clone().into(),
                        n.label.clone().into(),
                        n.kind.clone().into(),
                        n.props.clone().into(),
                    ]
                })
                .collect(),
            "on conflict (graph, id) do update set label = coalesce(excluded.label, cogo_graph_nodes.label), type = coalesce(excluded.type, cogo_graph_nodes.type), props = coalesce(excluded.props, cogo_graph_nodes.props)",
        );
        let mut ends: Vec<&str> = edges
            .iter()
            .flat_map(|e| [e.source.as_str(), e.target.as_str()])
            .collect();
        ends.sort_unstable();
        ends.dedup();
        st.extend(insert_rows(
            "cogo_graph_nodes",
            &["graph", "id"],
            ends.into_iter().map(|id| vec![graph.into(), id.into()]).collect(),
            "on conflict (graph, id) do nothing",
        ));
        st.extend(insert_rows(
            "cogo_graph_edges",
            &["graph", "source", "target", "type", "weight"],
            edges
                .iter()
                .map(|e| {
                    vec![
                        graph.into(),
                        e.source.clone().into(),
                        e.target.clone().into(),
                        e.kind.clone().into(),
                        e.weight.into(),
                    ]
                })
                .collect(),
            "on conflict (graph, source, target, type) do update set weight = excluded.weight",
        ));
        self.db.transaction(st).await
    }

    /// The node and edge counts of `graph`.
    pub async fn graph_totals(&self, graph: &str) -> Result<(u64, u64), StoreError> {
        Ok((
            self.count("select count(*) from cogo_graph_nodes where graph = $1", graph)
                .await?,
            self.count("select count(*) from cogo_graph_edges where graph = $1", graph)
                .await?,
        ))
    }

    /// Every node (without props) and edge of `graph`.
    pub async fn load_graph(&self, graph: &str) -> Result<(Vec<NodeRow>, Vec<EdgeRow>), StoreError> {
        let nodes = self
            .db
            .query(
                "select id, label, type from cogo_graph_nodes where graph = $1 order by id",
                vec![graph.into()],
            )
            .await?
            .into_iter()
            .map(|r| NodeRow {
                id: r[0].text(),
                label: r[1].opt_text(),
                kind: r[2].opt_text(),
                props: None,
            })
            .collect();
        let edges = self
            .db
            .query(
                "select source, target, type, weight from cogo_graph_edges where graph = $1 order by source, target, type",
                vec![graph.into()],
            )
            .await?
            .into_iter()
            .map(|r| EdgeRow {
                source: r[0].text(),
                target: r[1].text(),
                kind: r[2].text(),
                weight: r[3].real(),
            })
            .collect();
        Ok((nodes, edges))
    }

    /// The nodes `ids` of `graph`, with their props.
    pub async fn nodes(&self, graph: &str, ids: &[String]) -> Result<Vec<NodeRow>, StoreError> {
        let mut out = vec![];
        for batch in ids.chunks(500) {
            let sql = format!(
                "select id, label, type, props from cogo_graph_nodes where graph = $1 and id in ({})",
                in_list(batch.len(), 2)
            );
            let mut params: Vec<Val> = vec![graph.into()];
            params.extend(batch.iter().map(|i| Val::from(i.as_str())));
            out.extend(self.db.query(&sql, params).await?.into_iter().map(|r| NodeRow {
                id: r[0].text(),
                label: r[1].opt_text(),
                kind: r[2].opt_text(),
                props: r[3].opt_text(),
            }));
        }
        Ok(out)
    }

    /// Replaces the communities kept for `graph`.
    pub async fn save_communities(
        &self,
        graph: &str,
        communities: &[CommunityRow],
    ) -> Result<(), StoreError> {
        let mut st: Vec<Statement> = vec![(
            "delete from cogo_graph_communities where graph = $1".into(),
            vec![graph.into()],
        )];
        st.extend(insert_rows(
            "cogo_graph_communities",
            &["graph", "id", "size", "members", "summary"],
            communities
                .iter()
                .map(|c| {
                    vec![
                        graph.into(),
                        c.id.into(),
                        (c.size as i64).into(),
                        serde_json::to_string(&c.members).unwrap_or_default().into(),
                        c.summary.clone().into(),
                    ]
                })
                .collect(),
            "",
        ));
        self.db.transaction(st).await
    }

    /// The communities last found in `graph`, largest first.
    pub async fn communities(&self, graph: &str) -> Result<Vec<CommunityRow>, StoreError> {
        let rows = self
            .db
            .query(
                "select id, size, members, summary from cogo_graph_communities where graph = $1 order by id",
                vec![graph.into()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| CommunityRow {
                id: r[0].int() as u32,
                size: r[1].int() as u64,
                members: serde_json::from_str(&r[2].text()).unwrap_or_default(),
                summary: r[3].opt_text(),
            })
            .collect())
    }
}
