//! The CRDs, the agents and workers the operator runs, the chart, and the operator's own
//! resilience.

use std::time::Duration;

use cogo_e2e::cluster::{
    AgentProcess, Namespace, Operator, audit_lines, audited_writes, free_port, kwok_agent, kwok_pod_template,
    wait_until,
};
use serde_json::Value;

use super::{apply_examples, cluster, condition, wait_all_ready};

#[test]
fn crds_are_served_and_documented() {
    let c = cluster();
    let explain = c.kubectl_ok(&["explain", "cogoagent.spec.role"], None);
    assert!(explain.contains("The agent's role"), "{explain}");
    let explain = c.kubectl_ok(&["explain", "agenttask.spec.input"], None);
    assert!(explain.contains("any JSON value"), "{explain}");
    let resources = c.kubectl_ok(
        &["api-resources", "--api-group", "cogo.xyz", "--no-headers"],
        None,
    );
    for (plural, short) in [
        ("cogoagents", "cga"),
        ("cogoworkers", "cgw"),
        ("agenttasks", "at"),
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.starts_with(plural) && l.contains(short)),
            "{resources}"
        );
    }
    // The category lists all three kinds (an empty cluster prints "No resources found").
    let out = c.kubectl(&["get", "cogo", "-A"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every bad resource in this table is rejected by the API server with a message naming the field.
#[test]
fn the_api_server_rejects_bad_resources_naming_the_field() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-invalid");
    let agent = |name: &str, spec: &str| {
        format!("apiVersion: cogo.xyz/v1alpha1\nkind: CogoAgent\nmetadata: {{name: {name}}}\nspec:\n{spec}")
    };
    let worker = |spec: &str| {
        format!("apiVersion: cogo.xyz/v1alpha1\nkind: CogoWorker\nmetadata: {{name: w}}\nspec:\n{spec}")
    };
    let task = |spec: &str| {
        format!("apiVersion: cogo.xyz/v1alpha1\nkind: AgentTask\nmetadata: {{name: t}}\nspec:\n{spec}")
    };
    let cases = [
        (agent("a", "  role: Janitor"), "spec.role"),
        (agent("a", "  role: Research\n  replicas: -1"), "spec.replicas"),
        (
            agent("a", "  role: Research\n  concurrency: 0"),
            "spec.concurrency",
        ),
        (
            agent(
                "a",
                "  role: Research\n  autoscaling: {minReplicas: 5, maxReplicas: 2}",
            ),
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            agent(
                "a",
                "  role: Research\n  replicas: 9\n  autoscaling: {maxReplicas: 3}",
            ),
            "spec.replicas must lie within",
        ),
        (
            agent(
                "a",
                "  role: Research\n  model: {provider: OpenAICompatible, apiKeySecretRef: {name: k, key: k}}",
            ),
            "model.endpoint is required",
        ),
        (
            agent("a", "  role: Research\n  model: {apiKeySecretRef: {name: k}}"),
            "spec.model.apiKeySecretRef.key",
        ),
        (
            agent("a", "  role: Research\n  resources: {memory: lots}"),
            "spec.resources.memory",
        ),
        (
            agent("a", "  role: Indexing\n  storage: {size: lots}"),
            "spec.storage.size",
        ),
        (
            agent("9lives", "  role: Research"),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            agent("a", "  role: Research\n  taskDefaults: {retry: {limit: 21}}"),
            "spec.taskDefaults.retry.limit",
        ),
        (
            worker("  kind: FigmaMCP"),
            "spec.figmaTokenSecretRef is required when spec.kind is FigmaMCP",
        ),
        (
            worker("  kind: Browser\n  figmaTokenSecretRef: {name: f, key: t}"),
            "spec.figmaTokenSecretRef is only valid",
        ),
        (
            worker("  kind: Browser\n  sandbox: {allowedPackages: [numpy]}"),
            "spec.sandbox.allowedPackages is only valid",
        ),
        (
            worker("  kind: PythonSandbox\n  browser: {allowFileUrls: true}"),
            "spec.browser is only valid when spec.kind is Browser",
        ),
        (
            worker("  kind: Browser\n  mcpServers: [{name: a, url: 'http://a'}]"),
            "spec.mcpServers is only valid when spec.kind is FigmaMCP",
        ),
        (
            worker(
                "  kind: FigmaMCP\n  figmaTokenSecretRef: {name: f, key: t}\n  mcpServers: [{name: a, url: 'http://a'}, {name: a, url: 'http://b'}]",
            ),
            "spec.mcpServers names must be unique",
        ),
        (
            worker(
                "  kind: FigmaMCP\n  figmaTokenSecretRef: {name: f, key: t}\n  mcpServers: [{name: A_1, url: 'http://a'}]",
            ),
            "spec.mcpServers[0].name",
        ),
        (
            worker("  kind: Browser\n  figmaApiUrl: 'https://api.figma.com'"),
            "spec.figmaApiUrl is only valid",
        ),
        (worker("  kind: PythonSandbox\n  capacity: 0"), "spec.capacity"),
        (worker("  kind: Shell"), "spec.kind"),
        (
            task("  agent: a\n  role: Research\n  type: research.query"),
            "exactly one of spec.agent and spec.role must be set",
        ),
        (
            task("  type: research.query"),
            "exactly one of spec.agent and spec.role must be set",
        ),
        (task("  role: Research\n  type: Research"), "spec.type"),
        (
            task("  role: Research\n  type: research.query\n  priority: 5000"),
            "spec.priority",
        ),
        (
            task(
                "  role: Research\n  type: research.query\n  retry: {backoff: {initialSeconds: 9, maxSeconds: 1}}",
            ),
            "backoff.initialSeconds must not exceed",
        ),
        (
            task("  role: Research\n  type: research.query\n  timeoutSeconds: 0"),
            "spec.timeoutSeconds",
        ),
    ];
    for (yaml, expected) in cases {
        let out = c.kubectl(
            &["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"],
            Some(&yaml),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        assert!(
            err.contains(expected),
            "the error for\n{yaml}\ndoes not name {expected:?}: {err}"
        );
    }

    // Transition rules: create valid objects, then change what may not change.
    ns.apply_ok(&agent("a", "  role: Research"));
    ns.apply_ok(&task(
        "  agent: a\n  type: research.query\n  cancelRequested: true",
    ));
    let updates = [
        (agent("a", "  role: Indexing"), "spec.role is immutable"),
        (
            task("  agent: a\n  type: research.other\n  cancelRequested: true"),
            "spec.type is immutable",
        ),
        (
            task("  agent: b\n  type: research.query\n  cancelRequested: true"),
            "is immutable",
        ),
        (
            task("  agent: a\n  type: research.query\n  cancelRequested: false"),
            "spec.cancelRequested cannot be set back to false",
        ),
    ];
    for (yaml, expected) in updates {
        let out = ns.apply(&yaml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected),
            "update\n{yaml}\nexpected {expected:?}: {err}"
        );
    }
}

#[test]
fn agents_and_workers_become_ready_scale_and_are_collected() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-ready");
    let _op = Operator::start(&c, "ready");
    apply_examples(&ns);
    wait_all_ready(&ns);

    // Children, as the examples ask.
    let research = c
        .get_json(&ns.name, "deployment/research")
        .expect("research Deployment");
    assert_eq!(research["spec"]["replicas"], 2);
    let svc = c
        .get_json(&ns.name, "service/research")
        .expect("research Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 6003);
    assert!(
        c.get_json(&ns.name, "poddisruptionbudget/research").is_some(),
        "2 replicas get a PDB"
    );
    assert!(
        c.get_json(&ns.name, "poddisruptionbudget/indexing").is_none(),
        "1 replica gets none"
    );
    let policy = c
        .get_json(&ns.name, "networkpolicy/python")
        .expect("sandbox NetworkPolicy");
    assert_eq!(policy["spec"]["egress"].as_array().unwrap().len(), 2);
    let agent = c.get_json(&ns.name, "cogoagent/research").unwrap();
    assert_eq!(agent["status"]["readyReplicas"], 2);
    assert_eq!(
        agent["status"]["observedGeneration"],
        agent["metadata"]["generation"]
    );

    // kubectl scale goes through the scale subresource to the Deployment.
    ns.kubectl_ok(&["scale", "cogoagent/research", "--replicas=3"]);
    wait_until(Duration::from_secs(60), "research to have 3 ready pods", || {
        let a = c.get_json(&ns.name, "cogoagent/research").unwrap();
        a["status"]["readyReplicas"] == 3 && condition(&a, "Ready").is_some_and(|(s, _)| s == "True")
    });
    let d = c.get_json(&ns.name, "deployment/research").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);

    // A spec change bumps the generation, and status follows it.
    ns.kubectl_ok(&[
        "patch",
        "cogoagent/indexing",
        "--type=merge",
        "-p",
        r#"{"spec":{"concurrency":9}}"#,
    ]);
    wait_until(
        Duration::from_secs(60),
        "indexing to observe its new generation",
        || {
            let a = c.get_json(&ns.name, "cogoagent/indexing").unwrap();
            a["metadata"]["generation"] == 2 && a["status"]["observedGeneration"] == 2
        },
    );

    // Pods that cannot come back make Ready False; when they can, it turns True again.
    let nodes = c.kubectl_ok(&["get", "nodes", "-o", "name"], None);
    let nodes: Vec<&str> = nodes.lines().collect();
    for n in &nodes {
        c.kubectl_ok(&["cordon", n], None);
    }
    ns.kubectl_ok(&[
        "delete",
        "pods",
        "-l",
        "app.kubernetes.io/instance=graphrag",
        "--wait=false",
    ]);
    wait_until(Duration::from_secs(60), "graphrag Ready=False", || {
        let a = c.get_json(&ns.name, "cogoagent/graphrag").unwrap();
        condition(&a, "Ready").is_some_and(|(s, _)| s == "False")
    });
    for n in &nodes {
        c.kubectl_ok(&["uncordon", n], None);
    }
    ns.wait("cogoagent/graphrag", "condition=Ready", 60);

    // Deleting the resource collects its children.
    ns.kubectl_ok(&["delete", "cogoagent/research", "--wait=true", "--timeout=60s"]);
    wait_until(
        Duration::from_secs(60),
        "research's children to be collected",
        || {
            c.get_json(&ns.name, "deployment/research").is_none()
                && c.get_json(&ns.name, "service/research").is_none()
                && c.get_json(&ns.name, "poddisruptionbudget/research").is_none()
        },
    );
}

#[test]
fn missing_references_wait_with_a_reason_and_recover() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-references");
    let _op = Operator::start(&c, "references");
    ns.apply_ok(
        "apiVersion: cogo.xyz/v1alpha1\nkind: CogoAgent\nmetadata: {name: research}\nspec:\n  role: Research\n  model: {apiKeySecretRef: {name: gemini, key: api-key}}\n",
    );
    ns.apply_ok(
        "apiVersion: cogo.xyz/v1alpha1\nkind: CogoWorker\nmetadata: {name: browser}\nspec: {kind: Browser}\n",
    );
    let reason = |what: &str| c.get_json(&ns.name, what).and_then(|o| condition(&o, "Ready"));
    wait_until(Duration::from_secs(60), "ModelSecretNotFound", || {
        reason("cogoagent/research") == Some(("False".into(), "ModelSecretNotFound".into()))
    });
    wait_until(Duration::from_secs(60), "ExecutorNotFound", || {
        reason("cogoworker/browser") == Some(("False".into(), "ExecutorNotFound".into()))
    });
    assert!(
        c.get_json(&ns.name, "deployment/research").is_none(),
        "nothing is created for an invalid spec"
    );
    let events = ns.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=ModelSecretNotFound",
        "-o",
        "json",
    ]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let items = events["items"].as_array().unwrap();
    assert!(!items.is_empty(), "a Warning Event names the cause");
    assert_eq!(items[0]["type"], "Warning");

    // Creating what was missing is noticed without any change to the resources.
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "gemini",
        "--from-literal=api-key=test",
    ]);
    ns.apply_ok("apiVersion: cogo.xyz/v1alpha1\nkind: CogoAgent\nmetadata: {name: executor}\nspec: {role: Executor}\n");
    ns.wait("cogoagent/research", "condition=Ready", 60);
    ns.wait("cogoworker/browser", "condition=Ready", 60);
}

#[test]
fn helm_installs_the_chart_with_least_privilege() {
    let c = cluster();
    let release_ns = "e2e-helm";
    c.helm_install(release_ns, &["image.pullPolicy=Never"]);
    let _cleanup = Namespace::adopt(&c, release_ns);
    for what in [
        "deployment/cogo-cogo-operator",
        "serviceaccount/cogo-cogo-operator",
        "service/cogo-cogo-operator",
        "role/cogo-cogo-operator-leader",
        "rolebinding/cogo-cogo-operator-leader",
    ] {
        assert!(
            c.get_json(release_ns, what).is_some(),
            "helm did not create {what}"
        );
    }
    assert!(c.get_json("", "clusterrole/cogo-cogo-operator").is_some());
    let sa = format!("system:serviceaccount:{release_ns}:cogo-cogo-operator");
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i", "--as", sa.as_str()];
        full.extend_from_slice(args);
        c.kubectl(&full, None).status.success()
    };
    assert!(can(&["watch", "cogoagents.cogo.xyz", "-A"]));
    assert!(can(&[
        "patch",
        "cogoagents.cogo.xyz",
        "--subresource=status",
        "-n",
        "default"
    ]));
    assert!(can(&["patch", "deployments.apps", "-n", "default"]));
    assert!(can(&["update", "leases.coordination.k8s.io", "-n", release_ns]));
    assert!(
        !can(&["update", "leases.coordination.k8s.io", "-n", "default"]),
        "leases only in the release namespace"
    );
    assert!(!can(&["delete", "secrets", "-n", "default"]));
    assert!(!can(&["update", "secrets", "-n", "default"]));
    assert!(
        !can(&["patch", "cogoagents.cogo.xyz", "-n", "default"]),
        "the operator never writes spec"
    );
    assert!(!can(&["delete", "deployments.apps", "-n", "default"]));
    c.helm_ok(&["uninstall", "cogo", "-n", release_ns, "--wait"]);
}

#[test]
fn the_operator_survives_a_crash_and_a_restart_writes_nothing() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-restart");
    let mut op = Operator::start(&c, "crash");
    apply_examples(&ns);
    // Crash while the first reconciles are under way.
    wait_until(Duration::from_secs(30), "the first reconcile", || {
        op.counter("cogo_operator_reconciles_total") > 0
    });
    op.kill();
    let mut op = Operator::start(&c, "after-crash");
    wait_all_ready(&ns);
    assert!(
        op.stop().success(),
        "a clean exit on SIGTERM; log:\n{}",
        op.log_text()
    );

    // A second start over an unchanged world makes no write in the namespace.
    let mark = audit_lines(&c.audit_log());
    let op = Operator::start(&c, "restart");
    // Its first reconcile of everything it watches is over when the count stops growing.
    let mut last = 0;
    wait_until(
        Duration::from_secs(120),
        "the restarted operator's first reconciles to finish",
        || {
            let now = op.counter("cogo_operator_reconciles_total");
            let settled = now >= 8 && now == last;
            last = now;
            if !settled {
                std::thread::sleep(Duration::from_secs(3));
            }
            settled
        },
    );
    let writes: Vec<_> = audited_writes(&c.audit_log(), mark, "cogo-operator/")
        .into_iter()
        .filter(|(_, _, namespace, _)| namespace == &ns.name)
        .collect();
    assert!(writes.is_empty(), "spurious writes after a restart: {writes:#?}");
    // (The operator's own write counters cover every namespace, including ones earlier tests are
    // still deleting, so the audit log, filtered to this namespace, is the measure here.)
}

/// kwok's scale: two agents of 1,000 pods each become Ready, and scale back down.
#[test]
fn two_thousand_pods_on_kwok_nodes() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-scale");
    let _op = Operator::start(&c, "scale");
    for name in ["wide-a", "wide-b"] {
        let agent = serde_json::json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": name},
            "spec": {
                "role": "Research", "replicas": 1000, "resources": {"cpuRequest": "10m", "memory": "16Mi"},
                "podTemplate": kwok_pod_template(),
            },
        });
        ns.apply_ok(&agent.to_string());
    }
    for name in ["wide-a", "wide-b"] {
        ns.wait(&format!("cogoagent/{name}"), "condition=Ready", 600);
        let a = c.get_json(&ns.name, &format!("cogoagent/{name}")).unwrap();
        assert_eq!(a["status"]["readyReplicas"], 1000, "{name}");
    }
    ns.kubectl_ok(&["scale", "cogoagent/wide-a", "--replicas=10"]);
    wait_until(
        Duration::from_secs(300),
        "wide-a to scale down to 10 ready pods",
        || {
            let a = c.get_json(&ns.name, "cogoagent/wide-a").unwrap();
            a["status"]["replicas"] == 10 && condition(&a, "Ready").is_some_and(|(s, _)| s == "True")
        },
    );
    // The namespace's deletion removes the pods; nothing waits for it.
}

/// `spec.autoscaling` sizes the pool from the queue: a pod per `targetQueuedTasksPerPod` tasks
/// at once, fewer only after the scale-down window, none when idle with `minReplicas: 0`, and
/// one again for the first task; a worker pool likewise on the jobs of its kind. The status
/// shows the queue, the decision and the finished tasks, and changes are Events.
#[test]
fn autoscaling_follows_the_queue_to_zero_and_back() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-autoscale");
    let op = Operator::start_with(
        &c,
        "autoscale",
        free_port(),
        &["--scale-down-stabilization-seconds", "8"],
    );
    let mut agent = kwok_agent("elastic", 1, 2);
    agent["spec"]["autoscaling"] =
        serde_json::json!({"minReplicas": 0, "maxReplicas": 3, "targetQueuedTasksPerPod": 2});
    ns.apply_ok(&agent.to_string());
    ns.wait("cogoagent/elastic", "condition=Ready", 120);
    let state = || {
        let a = c.get_json(&ns.name, "cogoagent/elastic").unwrap_or_default();
        let d = c.get_json(&ns.name, "deployment/elastic").unwrap_or_default();
        (
            a["status"]["autoscaling"]["desiredReplicas"].as_i64(),
            d["spec"]["replicas"].as_i64(),
            a["status"]["queue"]["pending"].as_i64(),
        )
    };
    let task = |name: &str| {
        serde_json::json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
                           "spec": {"agent": "elastic", "type": "cogo.echo", "input": {}}})
        .to_string()
    };

    // No agent process pulls, so five tasks stay queued: three pods (the maximum).
    let five: Vec<serde_json::Value> = (0..5)
        .map(|i| serde_json::from_str(&task(&format!("queued-{i}"))).unwrap())
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": five});
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&list.to_string()));
    wait_until(
        Duration::from_secs(60),
        "three pods for five queued tasks",
        || state() == (Some(3), Some(3), Some(5)),
    );
    ns.wait("cogoagent/elastic", "condition=Ready", 120);
    let pool = |what: &str| {
        format!(
            r#"cogo_operator_{what}{{kind="CogoAgent",namespace="{}",name="elastic"}}"#,
            ns.name
        )
    };
    let metrics = op.metrics();
    for line in [
        format!("{} 5", pool("pool_pending_tasks")),
        format!("{} 3", pool("pool_desired_replicas")),
    ] {
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }

    // The queue empties (the deleted tasks leave it), and after the scale-down window (the
    // unit tests time it) the pool goes to zero.
    ns.kubectl_ok(&["delete", "agenttasks", "--all", "--wait=false"]);
    wait_until(Duration::from_secs(60), "no pods for an empty queue", || {
        state() == (Some(0), Some(0), Some(0))
    });
    wait_until(Duration::from_secs(60), "Ready with reason ScaledToZero", || {
        let a = c.get_json(&ns.name, "cogoagent/elastic").unwrap_or_default();
        condition(&a, "Ready").is_some_and(|(_, why)| why == "ScaledToZero")
    });

    // The first task brings one pod back.
    ns.apply_ok(&task("first"));
    wait_until(Duration::from_secs(60), "a pod for the first task", || {
        state() == (Some(1), Some(1), Some(1))
    });
    // An agent runs it: the status counts it, and the queue is empty again.
    let _runner = AgentProcess::start(&c, &ns.name, "elastic", "Research", "elastic-0", op.broker_port);
    ns.wait("agenttask/first", "condition=Succeeded", 60);
    wait_until(Duration::from_secs(30), "the finished task counted", || {
        let a = c.get_json(&ns.name, "cogoagent/elastic").unwrap_or_default();
        a["status"]["tasks"]["succeeded"] == 1
            && a["status"]["tasks"]["failed"] == 0
            && a["status"]["tasks"]["averageDurationMs"].is_i64()
            && a["status"]["queue"] == serde_json::json!({"pending": 0, "running": 0})
    });
    let finished = format!(
        r#"cogo_operator_tasks_finished_total{{namespace="{}",agent="elastic",role="Research",outcome="Succeeded"}} 1"#,
        ns.name
    );
    let metrics = op.metrics();
    assert!(metrics.contains(&finished), "{finished} in:\n{metrics}");
    assert!(metrics.contains(r#"cogo_operator_task_duration_seconds_count{role="Research"}"#));

    // A worker pool scales on the jobs of its kind waiting for the Executor.
    ns.apply_ok(
        &kwok_agent("executor", 1, 4)
            .to_string()
            .replace("\"Research\"", "\"Executor\""),
    );
    ns.apply_ok(
        &serde_json::json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python"},
            "spec": {"kind": "PythonSandbox", "replicas": 0, "podTemplate": kwok_pod_template(),
                     "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "targetQueuedTasksPerPod": 1}},
        })
        .to_string(),
    );
    ns.wait("cogoworker/python", "condition=Ready", 120);
    for i in 0..3 {
        ns.apply_ok(
            &serde_json::json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                                "metadata": {"name": format!("job-{i}")},
                                "spec": {"agent": "executor", "type": "python.execute", "input": {"code": "print(1)"}}})
            .to_string(),
        );
    }
    let workers = || {
        let w = c.get_json(&ns.name, "cogoworker/python").unwrap_or_default();
        let d = c.get_json(&ns.name, "deployment/python").unwrap_or_default();
        (
            w["status"]["autoscaling"]["desiredReplicas"].as_i64(),
            d["spec"]["replicas"].as_i64(),
            w["status"]["queue"]["pending"].as_i64(),
        )
    };
    wait_until(
        Duration::from_secs(60),
        "two worker pods (the maximum) for three jobs",
        || workers() == (Some(2), Some(2), Some(3)),
    );
    ns.wait("cogoworker/python", "condition=Ready", 120);
    for i in 0..3 {
        ns.kubectl_ok(&["delete", "agenttask", &format!("job-{i}"), "--wait=false"]);
    }
    wait_until(Duration::from_secs(60), "no worker pods without jobs", || {
        workers() == (Some(0), Some(0), Some(0))
    });

    for (reason, change) in [("ScaledUp", "to 3 pods"), ("ScaledDown", "from 3 to")] {
        let events = ns.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("reason={reason},involvedObject.name=elastic"),
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        assert!(events.contains(change), "{reason} says {change:?}: {events}");
    }
}
