//! Two tenants, each a namespace, on one operator: each namespace's queued and running tasks
//! are bounded (and sub-tasks of running tasks never wait on their own namespace), and an
//! agent of one tenant can neither lease, read, report on, extend nor cancel the other's tasks
//! through the broker.

use std::time::{Duration, Instant};

use cogo_e2e::cluster::{AgentProcess, Namespace, Operator, free_port, kwok_agent, token_of, wait_until};
use serde_json::{Value, json};

use super::{cluster, condition};

fn task(name: &str, spec: Value) -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn phases(ns: &Namespace) -> Vec<(String, String)> {
    ns.items("agenttasks")
        .iter()
        .map(|t| {
            (
                t["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                t["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn count(ns: &Namespace, phase: &str) -> usize {
    phases(ns).iter().filter(|(_, p)| p == phase).count()
}

#[test]
fn tenants_are_bounded_per_namespace_and_kept_apart() {
    let c = cluster();
    let a = Namespace::create(&c, "e2e-tenant-a");
    let b = Namespace::create(&c, "e2e-tenant-b");
    let port = free_port();
    let limits = [
        "--max-queued-tasks-per-namespace",
        "3",
        "--max-running-tasks-per-namespace",
        "2",
    ];
    let _op = Operator::start_with(&c, "tenants", port, &limits);
    for ns in [&a, &b] {
        ns.apply_ok(&kwok_agent("worker", 1, 8).to_string());
    }

    // Tenant B has no agent running: three tasks queue, the next ones are told the queue is
    // full, with a Warning Event, and wait without being lost. A task that names a parent
    // itself is no sub-task of the broker's and waits like the others.
    for i in 0..5 {
        b.apply_ok(&task(
            &format!("b-{i}"),
            json!({"agent": "worker", "type": "cogo.echo", "input": {"i": i}}),
        ));
    }
    b.apply_ok(&task(
        "b-forged",
        json!({"agent": "worker", "type": "cogo.echo", "parent": "b-0"}),
    ));
    let names: Vec<String> = (0..5)
        .map(|i| format!("b-{i}"))
        .chain(["b-forged".to_string()])
        .collect();
    let said = |status: &str, reason: &str| {
        names
            .iter()
            .filter(|n| {
                c.get_json(&b.name, &format!("agenttask/{n}"))
                    .and_then(|t| condition(&t, "Accepted"))
                    == Some((status.into(), reason.into()))
            })
            .count()
    };
    wait_until(
        Duration::from_secs(60),
        "three of B's tasks queued and three refused",
        || said("True", "Queued") == 3 && said("False", "NamespaceQueueFull") == 3,
    );
    let forged = c.get_json(&b.name, "agenttask/b-forged").unwrap();
    assert_eq!(
        condition(&forged, "Accepted").unwrap().1,
        "NamespaceQueueFull",
        "it came last"
    );
    let refused = b
        .items("agenttasks")
        .into_iter()
        .find(|t| condition(t, "Accepted").is_some_and(|(s, _)| s == "False"))
        .unwrap();
    let message = refused["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("already has 3 queued tasks")
            && message.contains("--max-queued-tasks-per-namespace"),
        "{message}"
    );
    wait_until(
        Duration::from_secs(30),
        "a Warning Event for the full queue",
        || {
            b.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "reason=NamespaceQueueFull,type=Warning",
                "-o",
                "name",
            ])
            .lines()
            .count()
                >= 1
        },
    );

    // Tenant A's queue is its own, and it runs at most two top-level tasks at once.
    let _agent_a = AgentProcess::start(&c, &a.name, "worker", "Research", "worker-a", port);
    for i in 0..4 {
        a.apply_ok(&task(
            &format!("a-{i}"),
            json!({"agent": "worker", "type": "cogo.sleep", "input": {"seconds": 2}}),
        ));
    }
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(90);
    while count(&a, "Succeeded") < 4 {
        assert!(
            Instant::now() < until,
            "tenant A's tasks did not finish: {:?}",
            phases(&a)
        );
        most = most.max(count(&a, "Running"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most, 2, "at most and at last two of A's tasks ran at once");

    // Sub-tasks are never held back: two fan-outs fill A's two slots and their four sub-tasks
    // still run, so neither waits on its own namespace.
    for i in 0..2 {
        a.apply_ok(&task(
            &format!("fan-{i}"),
            json!({"agent": "worker", "type": "cogo.fanout", "input": {"count": 2, "agent": "worker", "type": "cogo.sleep", "input": {"seconds": 1}}}),
        ));
    }
    for i in 0..2 {
        a.wait(&format!("agenttask/fan-{i}"), "condition=Succeeded", 90);
    }

    // The broker keeps the tenants apart: A's agent token opens nothing of B's.
    let token = token_of(&c, &a.name, "worker-broker-token");
    let http = cogo_e2e::http_client(Duration::from_secs(30));
    let broker = format!("http://127.0.0.1:{port}/v1/namespaces/{}", b.name);
    let calls: Vec<(&str, String, Value)> = vec![
        (
            "lease",
            format!("{broker}/agents/worker/lease"),
            json!({"pod": "worker-a", "slots": 5, "waitSeconds": 0}),
        ),
        (
            "heartbeat",
            format!("{broker}/tasks/b-0/heartbeat"),
            json!({"pod": "worker-a", "attempt": 1}),
        ),
        (
            "complete",
            format!("{broker}/tasks/b-0/complete"),
            json!({"pod": "worker-a", "attempt": 1, "outcome": "Succeeded", "result": {"forged": true}}),
        ),
        (
            "sub-task",
            format!("{broker}/tasks/b-0/subtasks"),
            json!({"pod": "worker-a", "attempt": 1, "name": "planted", "agent": "worker", "type": "cogo.echo"}),
        ),
        (
            "cancel",
            format!("{broker}/tasks/b-0/subtasks/b-1/cancel"),
            json!({"pod": "worker-a", "attempt": 1}),
        ),
    ];
    for (what, url, body) in calls {
        let r = http.post(&url).bearer_auth(&token).json(&body).send().unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().unwrap_or_default();
        assert_eq!(
            (status, answer["code"].as_str()),
            (403, Some("WrongAgent")),
            "{what}: {answer}"
        );
    }
    let r = http
        .get(format!("{broker}/tasks/b-0"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "A's agent cannot read B's task");
    assert_eq!(
        count(&b, "Running") + count(&b, "Succeeded"),
        0,
        "nothing of B's ran: {:?}",
        phases(&b)
    );
    assert!(
        b.kubectl_ok(&["get", "agenttasks", "-o", "name"])
            .lines()
            .all(|l| !l.contains("planted"))
    );

    // B's agent comes: every task of B runs, the two that waited included.
    let _agent_b = AgentProcess::start(&c, &b.name, "worker", "Research", "worker-b", port);
    for n in &names {
        b.wait(&format!("agenttask/{n}"), "condition=Succeeded", 90);
    }
    let done = c.get_json(&b.name, "agenttask/b-4").unwrap();
    assert_eq!(done["status"]["result"], json!({"i": 4}));
    assert_eq!(done["status"]["pod"], "worker-b");
}
