//! The chart's Grafana dashboard and alert rules name only metrics that exist: the operator's
//! (from its registry) and the few the agent pods export.

use std::collections::BTreeSet;

use cogo_operator::metrics::{Metrics, PoolFigures};

/// Metrics of the agent pods the dashboard shows (registered by the agent runtime's model
/// clients).
const AGENT_POD_METRICS: &[&str] = &["cogo_model_tokens_total"];

/// Every series name the operator exports: gauges as named, counters with `_total`, histograms
/// with `_bucket`, `_sum` and `_count`.
fn exported() -> BTreeSet<String> {
    // Families show in the text once they hold a label set: give each one.
    let m = Metrics::default();
    let _ = m.reconcile_started("CogoAgent");
    m.reconcile_failed("CogoAgent", &cogo_operator::Error::Broker("x".into()));
    m.status_written("CogoAgent");
    m.child_writes("CogoAgent", 1);
    m.broker_error("KubernetesUnavailable");
    m.set_pool(("CogoAgent", "team", "research"), PoolFigures::default());
    m.set_worker(("team", "python"), 1, Some(100));
    m.task_finished(("team", "research", "Research"), "Succeeded", Some(1.0));
    let text = m.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names.extend(AGENT_POD_METRICS.iter().map(|n| n.to_string()));
    names
}

/// The `cogo_...` names in `text`.
fn named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cogo_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn chart_file(path: &str) -> String {
    let at = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/cogo-operator")
        .join(path);
    std::fs::read_to_string(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()))
}

#[test]
fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let exported = exported();
    assert!(
        exported.contains("cogo_operator_tasks_finished_total"),
        "{exported:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&chart_file("dashboards/cogo.json")).expect("dashboard JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    exprs.push_str(&dashboard["templating"].to_string());
    let rules = chart_file("templates/monitoring.yaml");
    for (what, text) in [("the dashboard", exprs.as_str()), ("the alerts", rules.as_str())] {
        let used = named(text);
        assert!(used.len() > 4, "{what} names metrics: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics nothing exports: {unknown:?}"
        );
    }
}
