//! AgentTasks: acceptance, and the task path from the queue to a result.

use std::time::Duration;

use cogo_e2e::cluster::{AgentProcess, Namespace, Operator, kwok_agent, wait_until};
use serde_json::Value;

use super::{apply_examples, cluster, condition, example};

/// Tasks are accepted when their target exists, wait with a reason when it does not, and are
/// accepted as soon as it appears; an oversized input is refused with its size, and an input
/// nested deeper than any Rust client could list is refused too, while the operator (started
/// again with it in the cluster) lists, watches and serves every other task.
#[test]
fn tasks_are_accepted_or_told_why_not() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-tasks");
    let mut op = Operator::start(&c, "tasks");
    ns.apply_ok(&example("tasks.yaml"));
    let big = serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": "too-big"},
        "spec": {"agent": "orchestrator", "type": "cogo.echo", "input": {"blob": "x".repeat(300 * 1024)}},
    });
    // `create`, not `apply`: apply would copy the input into an annotation, which has its own limit.
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&big.to_string()));
    // 200 levels: past serde_json's limit of 128 for a whole list of AgentTasks.
    let deep = format!(
        r#"{{"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {{"name": "too-deep"}},
            "spec": {{"agent": "orchestrator", "type": "cogo.echo", "input": {}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&deep));
    let accepted = |name: &str| {
        c.get_json(&ns.name, &format!("agenttask/{name}"))
            .and_then(|t| condition(&t, "Accepted"))
    };
    for (name, reason) in [
        ("hello-echo", "AgentNotFound"),
        ("primes", "NoAgentForRole"),
        ("too-big", "InputTooLarge"),
        ("too-deep", "InputTooDeep"),
    ] {
        wait_until(
            Duration::from_secs(60),
            &format!("{name} to say {reason}"),
            || accepted(name) == Some(("False".into(), reason.into())),
        );
        let t = c.get_json(&ns.name, &format!("agenttask/{name}")).unwrap();
        assert_eq!(t["status"]["phase"], "Pending", "{name}");
        assert_eq!(
            condition(&t, "Succeeded").map(|(s, _)| s),
            Some("Unknown".into()),
            "{name}"
        );
    }
    wait_until(Duration::from_secs(30), "a Warning Event naming the task", || {
        let selector = "reason=AgentNotFound,type=Warning";
        let jsonpath = "jsonpath={.items[*].involvedObject.name}";
        ns.kubectl_ok(&["get", "events", "--field-selector", selector, "-o", jsonpath])
            .contains("hello-echo")
    });

    let deep = c.get_json(&ns.name, "agenttask/too-deep").unwrap();
    let message = deep["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"))
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(message.contains("nests more than 64 levels"), "{message}");

    // A restart lists every task, the deep one included, and carries on.
    op.stop();
    let op = Operator::start(&c, "tasks-again");
    // The agents appear: the waiting tasks are accepted without being touched.
    apply_examples(&ns);
    ns.wait("agenttask/hello-echo", "condition=Accepted", 60);
    ns.wait("agenttask/primes", "condition=Accepted", 60);
    assert_eq!(
        accepted("too-big"),
        Some(("False".into(), "InputTooLarge".into()))
    );
    assert!(
        !op.log_text().contains("recursion limit"),
        "every AgentTask was read"
    );
}

/// The task path end to end: 200 `cogo.echo` tasks for a role, served by two agents (runtimes
/// as local processes pulling from the operator's broker), all succeed with their input as
/// result, and both agents take part. With no result store, a result too large for status
/// fails its task with the reason instead of being kept in memory only.
#[test]
fn two_hundred_echo_tasks_across_two_agents() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-echo");
    let op = Operator::start(&c, "echo");
    for name in ["echo-a", "echo-b"] {
        let agent = kwok_agent(name, 1, 8);
        ns.apply_ok(&agent.to_string());
    }
    let _agents: Vec<AgentProcess> = ["echo-a", "echo-b"]
        .iter()
        .map(|a| AgentProcess::start(&c, &ns.name, a, "Research", &format!("{a}-local"), op.broker_port))
        .collect();
    let tasks: Vec<Value> = (0..200)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": format!("echo-{i:03}")},
                "spec": {"role": "Research", "type": "cogo.echo", "input": {"n": i, "text": format!("hello {i}")}},
            })
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": tasks});
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&list.to_string()));

    let mut items = Vec::new();
    wait_until(Duration::from_secs(180), "all 200 tasks to succeed", || {
        let out = ns.kubectl_ok(&["get", "agenttasks", "-o", "json"]);
        items = serde_json::from_str::<Value>(&out).unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        items.len() == 200 && items.iter().all(|t| t["status"]["phase"] == "Succeeded")
    });
    let mut by_agent = std::collections::BTreeMap::<String, usize>::new();
    for t in &items {
        assert_eq!(
            t["status"]["result"], t["spec"]["input"],
            "{}",
            t["metadata"]["name"]
        );
        assert_eq!(
            condition(t, "Succeeded"),
            Some(("True".into(), "Succeeded".into()))
        );
        assert_eq!(t["status"]["attempt"], 1);
        assert_eq!(
            condition(t, "Accepted").map(|(s, _)| s),
            Some("True".into()),
            "a task leased before its first status write is accepted by the lease"
        );
        *by_agent
            .entry(t["status"]["agent"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        by_agent.keys().cloned().collect::<Vec<_>>(),
        ["echo-a", "echo-b"],
        "both agents ran tasks: {by_agent:?}"
    );
    assert!(
        op.counter("cogo_operator_task_dispatch_seconds_count") >= 200,
        "each task's wait in the queue is measured:\n{}",
        op.metrics()
    );

    let big = serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": "big-result"},
        "spec": {"role": "Research", "type": "cogo.echo", "input": {"blob": "x".repeat(100 * 1024)},
                 "retry": {"limit": 3}},
    });
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&big.to_string()));
    ns.wait("agenttask/big-result", "jsonpath={.status.phase}=Failed", 60);
    let t = c.get_json(&ns.name, "agenttask/big-result").unwrap();
    let (status, reason) = condition(&t, "Succeeded").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ResultTooLarge"));
    assert!(
        t["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no result store"),
        "{t}"
    );
    assert_eq!(t["status"]["attempt"], 1, "not retried: it would fail again");
    assert!(t["status"]["result"].is_null() && t["status"]["resultRef"].is_null());
}
