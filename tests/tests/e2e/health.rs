//! How GitOps tools read Cogo's objects: Argo CD (the chart's health checks, run by Argo CD's
//! own Lua VM) and kstatus (as Flux and `kpt live` read status), against live objects in every
//! state. A task must read in progress until it ends, a pool while it rolls out, and failed
//! when it failed or cannot become ready.

use std::{collections::BTreeMap, time::Duration};

use cogo_e2e::{
    cluster::{AgentProcess, Namespace, Operator, kwok_agent, kwok_pod_template},
    repo, run, tool,
};
use serde_json::{Value, json};

use super::cluster;

/// `kind/name` -> (Argo CD health, kstatus status), as cogo-health reads the namespace.
fn judged(ns: &Namespace) -> BTreeMap<String, (String, String)> {
    let objects = ns.kubectl_ok(&["get", "agenttasks,cogoagents,cogoworkers", "-o", "json"]);
    let patch = repo().join("charts/cogo-operator/argocd/argocd-cm-patch.yaml");
    let out = run(
        &tool("cogo-health"),
        &[patch.to_str().unwrap()],
        Some(objects.as_bytes()),
    );
    assert!(
        out.status.success(),
        "cogo-health: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                format!("{}/{}", v["kind"].as_str().unwrap(), v["name"].as_str().unwrap()),
                (
                    v["argocd"]["status"].as_str().unwrap().to_string(),
                    v["kstatus"]["status"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn argo_cd_and_kstatus_read_every_state_as_a_user_would() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-health");
    let op = Operator::start(&c, "health");
    // Pools: ready, scaled to zero, rolling out (its pods fit no node, so they stay Pending),
    // and one that cannot become ready (its model Secret is missing).
    ns.apply_ok(&kwok_agent("ready", 1, 4).to_string());
    let mut rolling = kwok_agent("rolling", 1, 4);
    rolling["spec"]["podTemplate"]["nodeSelector"] = json!({"type": "no-such-node"});
    ns.apply_ok(&rolling.to_string());
    ns.apply_ok(&kwok_agent("idle", 0, 4).to_string());
    let mut broken = kwok_agent("broken", 1, 4);
    broken["spec"]["model"] = json!({"provider": "Gemini", "name": "gemini-2.5-flash-lite",
                                     "apiKeySecretRef": {"name": "missing", "key": "api-key"}});
    ns.apply_ok(&broken.to_string());
    ns.apply_ok(
        &json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "orphan"},
                "spec": {"kind": "PythonSandbox", "executor": "nowhere", "podTemplate": kwok_pod_template()}})
        .to_string(),
    );
    ns.wait("cogoagent/ready", "condition=Ready", 120);
    let _agent = AgentProcess::start(&c, &ns.name, "ready", "Research", "ready-local", op.broker_port);

    let create = |name: &str, spec: Value| {
        let t = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec});
        c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&t.to_string()));
    };
    create(
        "succeeds",
        json!({"agent": "ready", "type": "cogo.echo", "input": {"x": 1}}),
    );
    create(
        "fails",
        json!({"agent": "ready", "type": "cogo.fail", "retry": {"limit": 0}}),
    );
    create(
        "runs",
        json!({"agent": "ready", "type": "cogo.sleep", "input": {"seconds": 600}}),
    );
    create("waits", json!({"agent": "nobody", "type": "cogo.echo"}));
    create("cancelled", json!({"agent": "nobody", "type": "cogo.echo"}));
    create(
        "too-big",
        json!({"agent": "ready", "type": "cogo.echo", "input": {"blob": "x".repeat(300 * 1024)}}),
    );
    ns.wait("agenttask/succeeds", "jsonpath={.status.phase}=Succeeded", 60);
    ns.wait("agenttask/fails", "jsonpath={.status.phase}=Failed", 60);
    ns.wait("agenttask/runs", "jsonpath={.status.phase}=Running", 60);
    ns.kubectl_ok(&[
        "patch",
        "agenttask/cancelled",
        "--type=merge",
        "-p",
        r#"{"spec":{"cancelRequested":true}}"#,
    ]);
    ns.wait("agenttask/cancelled", "jsonpath={.status.phase}=Cancelled", 60);

    let expected: BTreeMap<String, (String, String)> = [
        ("AgentTask/succeeds", "Healthy", "Current"),
        ("AgentTask/fails", "Degraded", "Failed"),
        ("AgentTask/runs", "Progressing", "InProgress"),
        ("AgentTask/waits", "Progressing", "InProgress"),
        ("AgentTask/cancelled", "Suspended", "Current"),
        ("AgentTask/too-big", "Degraded", "Failed"),
        ("CogoAgent/ready", "Healthy", "Current"),
        ("CogoAgent/idle", "Suspended", "Current"),
        ("CogoAgent/rolling", "Progressing", "InProgress"),
        ("CogoAgent/broken", "Degraded", "Failed"),
        ("CogoWorker/orphan", "Degraded", "Failed"),
    ]
    .into_iter()
    .map(|(k, a, s)| (k.to_string(), (a.to_string(), s.to_string())))
    .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = judged(&ns);
    while seen != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        seen = judged(&ns);
    }
    assert_eq!(seen, expected, "(Argo CD health, kstatus) of each object");
}
