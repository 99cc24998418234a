//! End-to-end tests against the local control plane (`tests/cluster/up`: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok nodes), with the operator as a local
//! process. Run with `make e2e`; the tests run one at a time, each in its own namespace.

use cogo_e2e::{
    cluster::{Cluster, Namespace, kwok_pod_template},
    repo,
};
use serde_json::Value;

pub(crate) fn cluster() -> Cluster {
    let c = Cluster::from_env();
    c.install_crds();
    c
}

pub(crate) fn example(name: &str) -> String {
    std::fs::read_to_string(repo().join("examples").join(name)).expect("example")
}

/// Applies the example Secrets, agents and workers, with their pods placed on the kwok nodes
/// (which a cluster with a real node taints): this suite checks the operator at kwok's scale.
pub(crate) fn apply_examples(ns: &Namespace) {
    for f in ["secrets.yaml", "agents.yaml", "workers.yaml"] {
        for mut doc in serde_saphyr::from_multiple::<Value>(&example(f)).expect("example YAML") {
            if doc["kind"] == "CogoAgent" || doc["kind"] == "CogoWorker" {
                doc["spec"]["podTemplate"] = kwok_pod_template();
            }
            ns.apply_ok(&doc.to_string());
        }
    }
}

/// Waits until every agent and worker of the namespace is Ready.
pub(crate) fn wait_all_ready(ns: &Namespace) {
    ns.kubectl_ok(&[
        "wait",
        "cogoagents",
        "--all",
        "--for=condition=Ready",
        "--timeout=120s",
    ]);
    ns.kubectl_ok(&[
        "wait",
        "cogoworkers",
        "--all",
        "--for=condition=Ready",
        "--timeout=120s",
    ]);
}

pub(crate) use cogo_e2e::cluster::condition;

mod gateway;
mod health;
mod items;
mod lifecycle;
mod mirror;
mod plugin;
mod resources;
mod tasks;
mod tenants;
mod traces;
mod workers;
