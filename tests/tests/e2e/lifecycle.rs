//! The task lifecycle past the first lease: lost pods and retries, deadlines, cancellation,
//! priority and the concurrency cap, sub-tasks, TTL deletion, an operator restart while tasks
//! run, and a leader cut off from the API server. Agents are local `cogo-agent` processes
//! pulling from the operator's broker (heartbeats every 2 s, so a lease runs out 6 s after
//! the last one).

use std::time::Duration;

use cogo_e2e::{
    cluster::{AgentProcess, Namespace, Operator, free_port, kwok_agent, wait_until},
    slow::LatencyProxy,
};
use serde_json::{Value, json};

use super::{cluster, condition};

/// Applies a CogoAgent whose pods (if any) go to the kwok nodes.
fn agent(ns: &Namespace, name: &str, replicas: i32, concurrency: i32) {
    ns.apply_ok(&kwok_agent(name, replicas, concurrency).to_string());
}

/// Creates an AgentTask with `spec`.
fn task(ns: &Namespace, name: &str, spec: Value) {
    let t = json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec,
    });
    ns.apply_ok(&t.to_string());
}

fn get(ns: &Namespace, name: &str) -> Value {
    serde_json::from_str(&ns.kubectl_ok(&["get", &format!("agenttask/{name}"), "-o", "json"])).unwrap()
}

/// Waits until the task's phase is `phase` and returns it.
fn wait_phase(ns: &Namespace, name: &str, phase: &str, secs: u64) -> Value {
    let mut last = Value::Null;
    wait_until(
        Duration::from_secs(secs),
        &format!("{name} to be {phase}"),
        || {
            last = get(ns, name);
            last["status"]["phase"] == phase
        },
    );
    last
}

fn reason(t: &Value) -> String {
    condition(t, "Succeeded").map(|(_, r)| r).unwrap_or_default()
}

/// An agent process killed mid-task loses its attempt once its lease runs out: the task runs
/// again on the other agent (attempt 2) and succeeds; with `retry.limit: 0` it fails saying
/// why. Retryable handler failures back off and retry; other failures and unknown task types
/// fail at once with the handler's message.
#[test]
fn lost_pods_and_failures_retry_by_policy() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-retry");
    let op = Operator::start_with(&c, "retry", free_port(), &["--log-format", "json"]);
    agent(&ns, "first", 1, 8);
    agent(&ns, "second", 1, 8);
    let mut first = AgentProcess::start(&c, &ns.name, "first", "Research", "first-0", op.broker_port);
    let slow = json!({"seconds": 3});
    task(
        &ns,
        "survivor",
        json!({"role": "Research", "type": "cogo.sleep", "input": slow}),
    );
    task(
        &ns,
        "no-retries",
        json!({"role": "Research", "type": "cogo.sleep", "input": slow, "retry": {"limit": 0}}),
    );
    for name in ["survivor", "no-retries"] {
        let t = wait_phase(&ns, name, "Running", 60);
        assert_eq!(t["status"]["pod"], "first-0");
    }
    first.kill();
    let second = AgentProcess::start(&c, &ns.name, "second", "Research", "second-0", op.broker_port);

    let t = wait_phase(&ns, "survivor", "Succeeded", 60);
    assert_eq!(t["status"]["attempt"], 2);
    assert_eq!(t["status"]["pod"], "second-0");
    let attempts = t["status"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "HeartbeatLost", "{attempts:?}");
    assert_eq!(attempts[1]["outcome"], "Succeeded");

    let t = wait_phase(&ns, "no-retries", "Failed", 60);
    assert_eq!(reason(&t), "HeartbeatLost");
    let message = t["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("first-0") && message.contains("no retries"),
        "{message}"
    );
    assert_eq!(t["status"]["attempt"], 1);

    // Handler failures.
    task(
        &ns,
        "flaky",
        json!({"agent": "second", "type": "cogo.fail", "input": {"message": "flaky backend", "retryable": true, "succeedFromAttempt": 3}}),
    );
    task(
        &ns,
        "broken",
        json!({"agent": "second", "type": "cogo.fail", "input": {"message": "bad input"}}),
    );
    task(
        &ns,
        "unknown-type",
        json!({"agent": "second", "type": "nobody.handles"}),
    );
    let t = wait_phase(&ns, "flaky", "Succeeded", 60);
    assert_eq!(t["status"]["result"], json!({"attempt": 3}));
    let attempts = t["status"]["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.iter().map(|a| a["outcome"].clone()).collect::<Vec<_>>(),
        ["HandlerFailed", "HandlerFailed", "Succeeded"]
    );
    let t = wait_phase(&ns, "broken", "Failed", 30);
    assert_eq!(
        (reason(&t), t["status"]["attempt"].clone()),
        ("HandlerFailed".into(), json!(1))
    );
    assert!(t["status"]["message"].as_str().unwrap().contains("bad input"));
    let t = wait_phase(&ns, "unknown-type", "Failed", 30);
    assert!(
        t["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no handler for task type"),
        "{t}"
    );
    wait_until(
        Duration::from_secs(30),
        "a Warning Event for the lost heartbeat",
        || {
            let selector = "reason=HeartbeatLost,type=Warning";
            let jsonpath = "jsonpath={.items[*].involvedObject.name}";
            ns.kubectl_ok(&["get", "events", "--field-selector", selector, "-o", jsonpath])
                .contains("no-retries")
        },
    );

    // JSON logs, at the specification's levels: INFO for a start and a success, WARN for an
    // attempt that is retried, ERROR for a failed task.
    let lines: Vec<Value> = op
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let logged = |task: &str, message: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["fields"]["task"] == task && l["fields"]["message"] == message)
            .cloned()
            .collect()
    };
    let started = logged("survivor", "task started");
    assert_eq!(started.len(), 2, "each attempt's start: {started:?}");
    assert_eq!(
        (&started[1]["level"], &started[1]["fields"]["pod"]),
        (&json!("INFO"), &json!("second-0"))
    );
    assert_eq!(logged("survivor", "task succeeded")[0]["level"], "INFO");
    let retried = logged("flaky", "task attempt failed; retrying");
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert_eq!(retried[0]["level"], "WARN");
    assert!(
        retried[0]["fields"]["detail"]
            .as_str()
            .unwrap()
            .contains("flaky backend"),
        "{retried:?}"
    );
    for (task, reason) in [("broken", "HandlerFailed"), ("no-retries", "HeartbeatLost")] {
        let failed = logged(task, "task failed");
        assert_eq!(failed.len(), 1, "{task}: {failed:?}");
        assert_eq!(failed[0]["level"], "ERROR", "{task}");
        assert_eq!(failed[0]["fields"]["reason"], reason, "{task}");
        assert_eq!(failed[0]["fields"]["namespace"], ns.name.as_str());
        assert!(failed[0]["fields"]["detail"].is_string(), "{task}: {failed:?}");
    }
    // The agent pod's own lines, at the same levels (text, its colours taken out).
    let mut agent_log = String::new();
    let mut escaped = false;
    for ch in second.log_text().chars() {
        match (escaped, ch) {
            (false, '\u{1b}') => escaped = true,
            (true, 'm') => escaped = false,
            (true, _) => {}
            (false, _) => agent_log.push(ch),
        }
    }
    let line_of = |what: &str, task: &str| {
        agent_log
            .lines()
            .find(|l| l.contains(what) && l.contains(&format!("task={task}")))
            .unwrap_or_else(|| panic!("no {what:?} line for {task} in:\n{agent_log}"))
            .to_string()
    };
    assert!(line_of("task started", "survivor").contains("INFO"));
    assert!(line_of("task succeeded", "survivor").contains("INFO"));
    let failed = line_of("task attempt failed", "flaky");
    assert!(
        failed.contains("WARN") && failed.contains("flaky backend"),
        "{failed}"
    );
}

/// `timeoutSeconds` fails a task with reason DeadlineExceeded; `cancelRequested` ends a
/// running task through its agent's next heartbeat, and a queued one at once.
#[test]
fn deadlines_and_cancellation() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-deadline");
    let op = Operator::start(&c, "deadline");
    agent(&ns, "worker", 1, 8);
    agent(&ns, "idle", 1, 8);
    let _worker = AgentProcess::start(&c, &ns.name, "worker", "Research", "worker-0", op.broker_port);
    let long = json!({"seconds": 120});
    task(
        &ns,
        "too-slow",
        json!({"agent": "worker", "type": "cogo.sleep", "input": long, "timeoutSeconds": 3}),
    );
    task(
        &ns,
        "to-cancel",
        json!({"agent": "worker", "type": "cogo.sleep", "input": long}),
    );
    task(&ns, "never-leased", json!({"agent": "idle", "type": "cogo.echo"}));
    wait_phase(&ns, "to-cancel", "Running", 60);
    wait_phase(&ns, "never-leased", "Pending", 60);
    for name in ["to-cancel", "never-leased"] {
        ns.kubectl_ok(&[
            "patch",
            &format!("agenttask/{name}"),
            "--type=merge",
            "-p",
            r#"{"spec":{"cancelRequested":true}}"#,
        ]);
    }
    let t = wait_phase(&ns, "never-leased", "Cancelled", 30);
    assert_eq!(t["status"]["attempt"], 0, "it never ran");
    let t = wait_phase(&ns, "to-cancel", "Cancelled", 30);
    assert_eq!(reason(&t), "Cancelled");
    assert_eq!(t["status"]["attempts"][0]["outcome"], "Cancelled");

    let t = wait_phase(&ns, "too-slow", "Failed", 30);
    assert_eq!(reason(&t), "DeadlineExceeded");
    ns.wait("agenttask/too-slow", "condition=Succeeded=False", 5);
}

/// Higher priority runs first and equal priorities run in creation order, and an agent never
/// runs more tasks than `replicas x concurrency` (here 1) even when its pod asks for more.
#[test]
fn priority_and_the_concurrency_cap() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-priority");
    let op = Operator::start(&c, "priority");
    agent(&ns, "single", 1, 1);
    let one = json!({"seconds": 1});
    for name in ["low-1", "low-2", "low-3"] {
        task(
            &ns,
            name,
            json!({"agent": "single", "type": "cogo.sleep", "input": one}),
        );
        // Creation times have a resolution of one second.
        std::thread::sleep(Duration::from_millis(1100));
    }
    task(
        &ns,
        "urgent",
        json!({"agent": "single", "type": "cogo.sleep", "input": one, "priority": 10}),
    );
    wait_phase(&ns, "urgent", "Pending", 30);
    // The process offers 8 slots; the agent's cap is 1.
    let _p = AgentProcess::start(&c, &ns.name, "single", "Research", "single-0", op.broker_port);
    let order = ["urgent", "low-1", "low-2", "low-3"];
    let done: Vec<Value> = order
        .iter()
        .map(|n| wait_phase(&ns, n, "Succeeded", 60))
        .collect();
    let time = |t: &Value, f: &str| t["status"][f].as_str().unwrap().to_string();
    for pair in done.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            time(b, "startTime") >= time(a, "completionTime"),
            "{} started at {} before {} finished at {}",
            b["metadata"]["name"],
            time(b, "startTime"),
            a["metadata"]["name"],
            time(a, "completionTime")
        );
    }
}

/// A running task creates sub-tasks through the broker (`cogo.fanout`): they are owned by it,
/// run, and their results come back; deleting the parent deletes them. A sub-task created with
/// kubectl is adopted by its parent. `ttlSecondsAfterFinished` deletes a finished task.
#[test]
fn subtasks_cascade_and_ttl_deletes() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-subtasks");
    let op = Operator::start(&c, "subtasks");
    agent(&ns, "orchestrator", 1, 8);
    let _p = AgentProcess::start(&c, &ns.name, "orchestrator", "Research", "orch-0", op.broker_port);
    task(
        &ns,
        "fan",
        json!({"agent": "orchestrator", "type": "cogo.fanout", "input": {"count": 3, "role": "Research", "input": {"hello": "child"}}}),
    );
    let t = wait_phase(&ns, "fan", "Succeeded", 60);
    assert_eq!(
        t["status"]["result"]["results"],
        json!([{"hello": "child"}, {"hello": "child"}, {"hello": "child"}])
    );
    let uid = t["metadata"]["uid"].clone();
    for i in 0..3 {
        let child = get(&ns, &format!("fan-{i}"));
        assert_eq!(child["spec"]["parent"], "fan");
        assert_eq!(child["metadata"]["ownerReferences"][0]["uid"], uid);
        assert_eq!(child["status"]["phase"], "Succeeded");
    }
    task(
        &ns,
        "by-hand",
        json!({"agent": "orchestrator", "type": "cogo.echo", "parent": "fan"}),
    );
    wait_until(Duration::from_secs(30), "by-hand to be owned by fan", || {
        get(&ns, "by-hand")["metadata"]["ownerReferences"][0]["uid"] == uid
    });
    ns.kubectl_ok(&["delete", "agenttask/fan", "--wait=true", "--timeout=60s"]);
    wait_until(Duration::from_secs(60), "the sub-tasks to be collected", || {
        ns.kubectl_ok(&["get", "agenttasks", "-o", "name"])
            .trim()
            .is_empty()
    });

    task(
        &ns,
        "short-lived",
        json!({"agent": "orchestrator", "type": "cogo.echo", "ttlSecondsAfterFinished": 2}),
    );
    wait_until(
        Duration::from_secs(60),
        "short-lived to be deleted after its TTL",
        || {
            let out = c.kubectl(&["get", "-n", &ns.name, "agenttask/short-lived"], None);
            String::from_utf8_lossy(&out.stderr).contains("NotFound")
        },
    );
}

/// SIGKILL the operator while tasks run and start it again on the same broker address: every
/// task succeeds, none loses its lease, and none runs twice (each finishes on attempt 1).
#[test]
fn an_operator_restart_loses_no_task_and_runs_none_twice() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-op-restart");
    let mut op = Operator::start(&c, "op-restart");
    let port = op.broker_port;
    agent(&ns, "steady", 2, 8);
    let _a = AgentProcess::start(&c, &ns.name, "steady", "Research", "steady-0", port);
    let _b = AgentProcess::start(&c, &ns.name, "steady", "Research", "steady-1", port);
    let items: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": format!("job-{i:02}")},
                "spec": {"agent": "steady", "type": "cogo.sleep", "input": {"seconds": 3}},
            })
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&list.to_string()));
    let running = || {
        ns.kubectl_ok(&["get", "agenttasks", "-o", "jsonpath={.items[*].status.phase}"])
            .split_whitespace()
            .filter(|p| *p == "Running")
            .count()
    };
    wait_until(Duration::from_secs(60), "tasks to be running", || running() >= 10);
    op.kill();
    std::thread::sleep(Duration::from_secs(2));
    let op = Operator::start_on(&c, "op-restart", port);
    wait_until(Duration::from_secs(180), "all 40 tasks to succeed", || {
        ns.kubectl_ok(&["get", "agenttasks", "-o", "jsonpath={.items[*].status.phase}"])
            .split_whitespace()
            .filter(|p| *p == "Succeeded")
            .count()
            == 40
    });
    let out = ns.kubectl_ok(&["get", "agenttasks", "-o", "json"]);
    let items: Value = serde_json::from_str(&out).unwrap();
    for t in items["items"].as_array().unwrap() {
        assert_eq!(
            t["status"]["attempt"], 1,
            "{} ran more than once: {}",
            t["metadata"]["name"], t["status"]["attempts"]
        );
    }
    assert!(
        op.log_text().contains("leases of running tasks restored"),
        "the new operator restored the leases"
    );
}

/// The API server stops and starts again while 60 tasks run: the operator's watches and the
/// agents' calls ride it out, and every task succeeds exactly once.
#[test]
fn an_api_server_restart_loses_no_task_and_runs_none_twice() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-api-restart");
    // The harness runs the operator without an election: this test is about the API server
    // going away, not about a leader that could not renew meanwhile (it exits, and its pod
    // restarts).
    let op = Operator::start(&c, "api-restart");
    agent(&ns, "steady", 2, 16);
    let _a = AgentProcess::start(&c, &ns.name, "steady", "Research", "steady-0", op.broker_port);
    let _b = AgentProcess::start(&c, &ns.name, "steady", "Research", "steady-1", op.broker_port);
    let items: Vec<Value> = (0..60)
        .map(|i| {
            let spec = if i % 2 == 0 {
                json!({"agent": "steady", "type": "cogo.sleep", "input": {"seconds": 2}})
            } else {
                json!({"agent": "steady", "type": "cogo.echo", "input": {"n": i}})
            };
            json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": format!("job-{i:02}")}, "spec": spec})
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&list.to_string()));
    wait_until(Duration::from_secs(60), "tasks to be running", || {
        ns.kubectl_ok(&["get", "agenttasks", "-o", "jsonpath={.items[*].status.phase}"])
            .split_whitespace()
            .any(|p| p == "Running")
    });
    let away = c.restart_api_server();
    eprintln!("the API server was away for {:.1} s", away.as_secs_f64());
    wait_until(Duration::from_secs(180), "all 60 tasks to succeed", || {
        let phases = ns.kubectl_ok(&["get", "agenttasks", "-o", "jsonpath={.items[*].status.phase}"]);
        phases.split_whitespace().filter(|p| *p == "Succeeded").count() == 60
    });
    for i in 0..60 {
        let t = get(&ns, &format!("job-{i:02}"));
        let attempts = t["status"]["attempts"].as_array().cloned().unwrap_or_default();
        let succeeded = attempts.iter().filter(|a| a["outcome"] == "Succeeded").count();
        assert_eq!(succeeded, 1, "job-{i:02} succeeded exactly once: {}", t["status"]);
        if i % 2 == 1 {
            assert_eq!(t["status"]["result"], json!({"n": i}));
        }
    }
    assert!(!op.log_text().contains("panicked"), "the operator kept running");
}

/// A leader cut off from the API server (every connection silent, as behind a partition)
/// gives the lease up after its renew deadline and exits within its stop deadline, though
/// its last API calls never answer; the standby then leads.
#[test]
fn a_leader_cut_off_from_the_api_server_exits_and_the_standby_leads() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-cut-off");
    let proxy = LatencyProxy::start(c.api_server_port(), Duration::ZERO);
    let kubeconfig = std::env::temp_dir().join(format!("cogo-e2e-cut-off-{}.kubeconfig", std::process::id()));
    let direct = std::fs::read_to_string(&c.kubeconfig).unwrap();
    std::fs::write(
        &kubeconfig,
        direct.replace(
            &format!("https://127.0.0.1:{}", c.api_server_port()),
            &format!("https://127.0.0.1:{}", proxy.port),
        ),
    )
    .unwrap();
    let lease = (ns.name.as_str(), "cut-off");
    let holder = || {
        c.get_json(&ns.name, "lease/cut-off")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
            .unwrap_or_default()
    };
    let mut cut = Operator::start_elected(&kubeconfig, "cut-off-leader", lease);
    wait_until(Duration::from_secs(30), "the proxied operator to lead", || {
        holder() == "cut-off-leader"
    });
    let standby = Operator::start_elected(&c.kubeconfig, "cut-off-standby", lease);

    proxy.freeze();
    let status = cut.wait_exit(Duration::from_secs(90));
    let log = std::fs::read_to_string(&cut.log).unwrap_or_default();
    let _ = std::fs::remove_file(&kubeconfig);
    let status = status.unwrap_or_else(|| panic!("the cut-off leader still runs; log:\n{log}"));
    assert!(
        !status.success(),
        "it exits non-zero, so it restarts as a candidate"
    );
    assert!(log.contains("lost leadership"), "{log}");
    assert!(log.contains("did not stop in time"), "{log}");
    wait_until(Duration::from_secs(60), "the standby to lead", || {
        holder() == "cut-off-standby"
    });
    assert!(standby.pid().is_some());
}

/// Coalescing: a task done within the window after its lease gets one status write, its
/// outcome's, and is never seen Running; one that runs longer is written Running when the
/// window ends. An operator killed within the window has written nothing: the task is still
/// Pending, the next operator leases it again, and it succeeds on attempt 1.
#[test]
fn a_quick_task_gets_one_status_write_and_a_crash_before_its_lease_is_written_loses_nothing() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-coalesce");
    let port = free_port();
    // A wide window, so the test does not depend on how fast this machine is.
    let mut op = Operator::start_with(&c, "coalesce", port, &["--coalesce-millis", "2000"]);
    agent(&ns, "quick", 1, 8);
    let _a = AgentProcess::start(&c, &ns.name, "quick", "Research", "quick-0", port);
    ns.wait("cogoagent/quick", "condition=Ready", 60);
    // The agent's long poll is waiting before the tasks come.
    std::thread::sleep(Duration::from_secs(2));
    let log = c.audit_log();
    let mark = cogo_e2e::cluster::audit_lines(&log);
    for i in 0..4 {
        task(
            &ns,
            &format!("echo-{i}"),
            json!({"agent": "quick", "type": "cogo.echo", "input": {"n": i}}),
        );
    }
    task(
        &ns,
        "slow",
        json!({"agent": "quick", "type": "cogo.sleep", "input": {"seconds": 4}}),
    );
    let running = wait_phase(&ns, "slow", "Running", 30);
    assert_eq!(running["status"]["attempt"], 1);
    let slow = wait_phase(&ns, "slow", "Succeeded", 30);
    for i in 0..4 {
        let t = wait_phase(&ns, &format!("echo-{i}"), "Succeeded", 30);
        assert_eq!(t["status"]["result"]["n"], i, "{t}");
        let attempt = &t["status"]["attempts"][0];
        assert!(
            attempt["startTime"].is_string() && attempt["outcome"] == "Succeeded",
            "the attempt is recorded whole: {t}"
        );
        assert_eq!(condition(&t, "Accepted").map(|(s, _)| s).as_deref(), Some("True"));
    }
    assert_eq!(slow["status"]["attempts"].as_array().map(Vec::len), Some(1));
    // The audit log is written asynchronously: let it catch up.
    std::thread::sleep(Duration::from_secs(2));
    let writes = |name: &str| {
        cogo_e2e::cluster::audited_writes(&log, mark, "cogo-operator/")
            .into_iter()
            .filter(|(verb, resource, wns, wname)| {
                wns == &ns.name && wname == name && resource == "agenttasks/status" && verb != "get"
            })
            .count()
    };
    for i in 0..4 {
        assert_eq!(
            writes(&format!("echo-{i}")),
            1,
            "echo-{i}: its outcome alone is written"
        );
    }
    assert_eq!(
        writes("slow"),
        2,
        "the sleep: its lease after the window, then its outcome"
    );
    op.kill();

    // Killed within the window: the lease was handed out but never written.
    let mut op = Operator::start_with(&c, "coalesce-crash", port, &["--coalesce-millis", "10000"]);
    task(
        &ns,
        "crash",
        json!({"agent": "quick", "type": "cogo.sleep", "input": {"seconds": 3}}),
    );
    wait_until(Duration::from_secs(30), "the task to be leased", || {
        op.log_text().contains("task started")
    });
    let t = get(&ns, "crash");
    assert_ne!(
        t["status"]["phase"], "Running",
        "the lease is not written yet: {t}"
    );
    op.kill();
    let _op = Operator::start_on(&c, "coalesce-after-crash", port);
    let t = wait_phase(&ns, "crash", "Succeeded", 60);
    assert_eq!(t["status"]["attempt"], 1, "{t}");
    assert_eq!(t["status"]["attempts"].as_array().map(Vec::len), Some(1), "{t}");
}
