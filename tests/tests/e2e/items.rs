//! Indexed tasks (`spec.items`): each item runs once on the agents' pods, is retried by the
//! task's policy, and is counted in status as index ranges; its result goes to
//! `cogo_task_item_results` (a real PostgreSQL) in batches; the task succeeds when every item
//! did, or within `maxFailedItems`; status is written about once a second, not per item; an
//! operator restart runs only the items its status does not list as finished; bad items are
//! refused with a reason; items of a worker task type run on the workers, several of one task
//! at once.

use std::time::{Duration, Instant};

use cogo_e2e::{
    cluster::{
        AgentProcess, Namespace, Operator, ProcessEnv, WorkerProcess, audit_lines, audited_writes, free_port,
        kwok_agent, kwok_pod_template, wait_until,
    },
    otlp::{Receiver, Span},
    postgres::Postgres,
};
use serde_json::{Value, json};

use super::{cluster, condition};

/// The trace the indexed task of worker jobs is created in.
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

const SECRET: &str = "cogo-supabase-items";

fn create(ns: &Namespace, name: &str, spec: Value) {
    let t = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec});
    ns.apply_ok(&t.to_string());
}

fn get(ns: &Namespace, name: &str) -> Value {
    serde_json::from_str(&ns.kubectl_ok(&["get", &format!("agenttask/{name}"), "-o", "json"])).unwrap()
}

/// Waits until the database holds `count` item results of the task `name`.
fn wait_for_item_results(pg: &Postgres, name: &str, count: usize) {
    let query = format!(
        "select count(*) from public.cogo_task_item_results r \
         join public.distributed_agent_tasks d on d.id = r.id where d.name = '{name}'"
    );
    wait_until(Duration::from_secs(30), "the item results", || {
        pg.query(&query) == count.to_string()
    });
}

/// Waits until the task is finished and returns it.
fn finished(ns: &Namespace, name: &str, secs: u64) -> Value {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(secs), &format!("{name} to finish"), || {
        last = get(ns, name);
        matches!(
            last["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Cancelled")
        )
    });
    last
}

#[test]
fn an_indexed_task_runs_each_item_once_keeps_their_results_and_writes_status_about_once_a_second() {
    let c = cluster();
    let pg = Postgres::start("items");
    c.url_secret("default", SECRET, &pg.url());
    let ns = Namespace::create(&c, "e2e-items");
    let port = free_port();
    let _op = Operator::start_with(&c, "items", port, &["--supabase-secret", SECRET]);
    ns.apply_ok(&kwok_agent("many", 2, 16).to_string());
    let _a = AgentProcess::start_with(&c, &ns.name, ("many", "Research", "many-0"), port, 16);
    let _b = AgentProcess::start_with(&c, &ns.name, ("many", "Research", "many-1"), port, 16);
    ns.wait("cogoagent/many", "condition=Ready", 60);

    let log = c.audit_log();
    let mark = audit_lines(&log);
    let started = Instant::now();
    create(
        &ns,
        "pages",
        json!({"agent": "many", "type": "cogo.echo", "items": {"count": 2000},
               "input": {"page": "{{index}}", "url": "https://example.com/{{index}}.html"}}),
    );
    let mut most_running = 0;
    let mut done = Value::Null;
    wait_until(Duration::from_secs(120), "the 2,000 items to finish", || {
        done = get(&ns, "pages");
        most_running = most_running.max(done["status"]["items"]["running"].as_i64().unwrap_or(0));
        done["status"]["phase"] == "Succeeded"
    });
    let took = started.elapsed();
    let items = &done["status"]["items"];
    assert_eq!(
        items,
        &json!({"total": 2000, "pending": 0, "running": 0, "succeeded": 2000, "failed": 0,
                "succeededIndexes": "0-1999"}),
        "{done}"
    );
    assert!(
        most_running <= 32,
        "never more than the agents' 32 slots: {most_running}"
    );
    assert_eq!(
        condition(&done, "Succeeded"),
        Some(("True".into(), "Succeeded".into()))
    );
    assert_eq!(done["status"]["message"], "all 2000 items succeeded");

    // Every item's result is in the database, as the item's handler returned it.
    wait_for_item_results(&pg, "pages", 2000);
    let one = pg.query(
        "select r.result::text from public.cogo_task_item_results r \
         join public.distributed_agent_tasks d on d.id = r.id where d.name = 'pages' and r.item = 1234",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&one).unwrap(),
        json!({"page": 1234, "url": "https://example.com/1234.html"})
    );

    // Status was written about once a second while the items ran, not once per item.
    std::thread::sleep(Duration::from_secs(2));
    let writes = audited_writes(&log, mark, "cogo-operator/")
        .into_iter()
        .filter(|(verb, resource, wns, name)| {
            wns == &ns.name && name == "pages" && resource == "agenttasks/status" && verb != "get"
        })
        .count();
    eprintln!(
        "2,000 items in {:.1} s, {writes} status writes",
        took.as_secs_f64()
    );
    let most = took.as_secs() as usize + 3;
    assert!(
        (2..=most).contains(&writes),
        "{writes} status writes for 2,000 items in {took:?}"
    );
}

#[test]
fn failed_items_are_retried_and_max_failed_items_decides_the_task() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-items-fail");
    let port = free_port();
    let _op = Operator::start_on(&c, "items-fail", port);
    ns.apply_ok(&kwok_agent("many", 1, 8).to_string());
    let _a = AgentProcess::start_with(&c, &ns.name, ("many", "Research", "many-0"), port, 8);
    ns.wait("cogoagent/many", "condition=Ready", 60);
    let inputs = json!([
        {"succeedFromAttempt": 1},
        {"succeedFromAttempt": 1},
        {"message": "flaky", "retryable": true, "succeedFromAttempt": 2},
        {"succeedFromAttempt": 1},
        {"message": "broken item"},
        {"succeedFromAttempt": 1},
    ]);
    let retry = json!({"limit": 2, "backoff": {"initialSeconds": 1, "factor": 2, "maxSeconds": 4}});
    create(
        &ns,
        "tolerant",
        json!({"agent": "many", "type": "cogo.fail", "items": {"inputs": inputs}, "maxFailedItems": 1, "retry": retry}),
    );
    create(
        &ns,
        "strict",
        json!({"agent": "many", "type": "cogo.fail", "items": {"inputs": inputs}, "retry": retry}),
    );

    let t = finished(&ns, "tolerant", 60);
    assert_eq!(t["status"]["phase"], "Succeeded", "{t}");
    let items = &t["status"]["items"];
    assert_eq!(
        (
            &items["succeeded"],
            &items["failed"],
            &items["succeededIndexes"],
            &items["failedIndexes"]
        ),
        (&json!(5), &json!(1), &json!("0-3,5"), &json!("4")),
        "the flaky item 2 succeeded on its retry; item 4 failed: {t}"
    );
    let message = t["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("5 of 6 items succeeded, 1 failed") && message.contains("item 4: broken item"),
        "{message}"
    );

    let t = finished(&ns, "strict", 60);
    assert_eq!(t["status"]["phase"], "Failed", "{t}");
    assert_eq!(
        condition(&t, "Succeeded"),
        Some(("False".into(), "ItemsFailed".into()))
    );
    let message = t["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("more than the 0 spec.maxFailedItems allows") && message.contains("broken item"),
        "{message}"
    );
    // The failure is said in an Event too.
    let events = ns.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=strict",
        "-o",
        "json",
    ]);
    assert!(events.contains("ItemsFailed"), "{events}");
}

#[test]
fn an_operator_restart_runs_only_the_items_not_yet_finished_and_bad_items_are_refused() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-items-restart");
    let port = free_port();
    let mut op = Operator::start_on(&c, "items-restart", port);
    ns.apply_ok(&kwok_agent("many", 1, 4).to_string());
    let _a = AgentProcess::start_with(&c, &ns.name, ("many", "Research", "many-0"), port, 4);
    ns.wait("cogoagent/many", "condition=Ready", 60);
    create(
        &ns,
        "slow",
        json!({"agent": "many", "type": "cogo.sleep", "items": {"count": 24}, "parallelism": 3,
               "input": {"seconds": 1}}),
    );
    let mut seen = Value::Null;
    wait_until(
        Duration::from_secs(60),
        "some items to be written finished",
        || {
            seen = get(&ns, "slow");
            seen["status"]["phase"] == "Running"
                && seen["status"]["items"]["succeeded"].as_i64().unwrap_or(0) >= 6
        },
    );
    assert!(
        seen["status"]["items"]["running"].as_i64().unwrap() <= 3,
        "parallelism: {seen}"
    );
    op.kill();
    let before = seen["status"]["items"]["succeededIndexes"]
        .as_str()
        .unwrap()
        .to_string();
    let _op = Operator::start_on(&c, "items-restart-2", port);
    let t = finished(&ns, "slow", 90);
    assert_eq!(t["status"]["phase"], "Succeeded", "{t}");
    assert_eq!(t["status"]["items"]["succeededIndexes"], "0-23", "{t}");
    assert!(!before.is_empty());
    // What the items are is fixed at creation.
    let patch = r#"{"spec": {"items": {"count": 30}}}"#;
    let out = c.kubectl(
        &[
            "patch",
            "-n",
            &ns.name,
            "agenttask/slow",
            "--type",
            "merge",
            "-p",
            patch,
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("immutable"), "{err}");

    // Refused with a reason, and never run: inputs beside an input, both ways of giving items.
    create(
        &ns,
        "both",
        json!({"agent": "many", "type": "cogo.echo", "items": {"inputs": [1, 2]}, "input": {"n": 1}}),
    );
    create(
        &ns,
        "neither",
        json!({"agent": "many", "type": "cogo.echo", "items": {"count": 2, "inputs": [1, 2]}}),
    );
    for (name, said) in [
        ("both", "spec.input must be unset"),
        (
            "neither",
            "set exactly one of spec.items.count and spec.items.inputs",
        ),
    ] {
        let mut t = Value::Null;
        wait_until(Duration::from_secs(30), &format!("{name} to be refused"), || {
            t = get(&ns, name);
            condition(&t, "Accepted").is_some_and(|(s, _)| s == "False")
        });
        assert_eq!(condition(&t, "Accepted").unwrap().1, "InvalidItems", "{t}");
        let c = t["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .unwrap();
        assert!(c["message"].as_str().unwrap().contains(said), "{c}");
    }
    // The API server itself refuses what the schema says cannot be.
    for (spec, said) in [
        (
            json!({"agent": "many", "type": "cogo.echo", "parallelism": 2}),
            "need spec.items",
        ),
        (
            json!({"agent": "many", "type": "cogo.echo", "items": {"count": 0}}),
            "spec.items.count",
        ),
    ] {
        let t = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": "refused"}, "spec": spec});
        let out = ns.apply(&t.to_string());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(said), "{spec}: {err}");
    }
}

#[test]
fn items_of_a_worker_task_type_run_on_the_workers_each_as_a_job_of_its_own_in_the_task_s_trace() {
    let c = cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(Receiver::start());
    // Every process started below sends its spans to the receiver, in batches 100 ms apart.
    let _env = ProcessEnv::set(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let pg = Postgres::start("items-workers");
    let secret = "cogo-supabase-items-workers";
    c.url_secret("default", secret, &pg.url());
    let ns = Namespace::create(&c, "e2e-items-workers");
    let port = free_port();
    let _op = Operator::start_with(&c, "items-workers", port, &["--supabase-secret", secret]);
    for obj in [
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "executor"},
               "spec": {"role": "Executor", "podTemplate": kwok_pod_template()}}),
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python"},
               "spec": {"kind": "PythonSandbox", "replicas": 1, "capacity": 3, "podTemplate": kwok_pod_template()}}),
    ] {
        ns.apply_ok(&obj.to_string());
    }
    let executor = AgentProcess::start(&c, &ns.name, "executor", "Executor", "executor-0", port);
    let _worker = WorkerProcess::start(&c, &ns.name, ("python", "python-0"), executor.port, 3, &[]);
    ns.kubectl_ok(&[
        "wait",
        "cogoworker/python",
        "--for=jsonpath={.status.connectedWorkers}=1",
        "--timeout=60s",
    ]);

    // Nine items, three at a time on the worker's three slots: each item's job is its own
    // (the worker refuses a second job of the same id, and the Executor would take the first
    // one's result for the second), so every item's output is its own square.
    // The task is created inside a trace: its items' spans join it.
    let t = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "squares", "annotations": {"cogo.xyz/traceparent": format!("00-{TRACE}-00f067aa0ba902b7-01")}},
        "spec": {"role": "Executor", "type": "python.execute", "items": {"count": 9}, "parallelism": 3,
                 "input": {"code": "import time\ntime.sleep(0.5)\nprint({{index}} * {{index}})"}}});
    ns.apply_ok(&t.to_string());
    let t = finished(&ns, "squares", 180);
    assert_eq!(t["status"]["phase"], "Succeeded", "{t:#}");
    assert_eq!(t["status"]["items"]["succeeded"], 9, "{t:#}");
    assert_eq!(t["status"]["items"]["succeededIndexes"], "0-8", "{t:#}");
    wait_for_item_results(&pg, "squares", 9);
    let outputs = pg.query(
        "select string_agg(r.item || '=' || (r.result->>'stdout'), ',' order by r.item) \
         from public.cogo_task_item_results r \
         join public.distributed_agent_tasks d on d.id = r.id where d.name = 'squares'",
    );
    assert_eq!(
        outputs.replace('\n', ""),
        "0=0,1=1,2=4,3=9,4=16,5=25,6=36,7=49,8=64",
        "each item's own result"
    );

    // Each item's run is a span of the agent (with its index) and a job span of the worker
    // (with the item's job id) below it, all in the task's trace.
    let of = |spans: &[Span], service: &str, name: &str| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| {
                s.service == service && s.name == name && s.attr("cogo.task.name").starts_with("squares")
            })
            .cloned()
            .collect()
    };
    wait_until(Duration::from_secs(30), "the items' spans", || {
        let spans = receiver.spans();
        of(&spans, "cogo-agent", "cogo.task.handle").len() >= 9
            && of(&spans, "cogo-worker", "cogo.worker.job").len() >= 9
    });
    let spans = receiver.spans();
    let handled = of(&spans, "cogo-agent", "cogo.task.handle");
    let jobs = of(&spans, "cogo-worker", "cogo.worker.job");
    let mut items: Vec<String> = handled
        .iter()
        .map(|s| s.attr("cogo.task.item").to_string())
        .collect();
    items.sort_by_key(|i| i.parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(
        items,
        (0..9).map(|i| i.to_string()).collect::<Vec<_>>(),
        "{handled:#?}"
    );
    for h in &handled {
        assert_eq!(h.trace, TRACE, "{h:#?}");
        let job_id = format!("squares[{}]", h.attr("cogo.task.item"));
        let job = jobs
            .iter()
            .find(|j| j.attr("cogo.task.name") == job_id)
            .unwrap_or_else(|| panic!("a worker span of job {job_id}: {jobs:#?}"));
        assert_eq!(
            (job.trace.as_str(), job.parent.as_str()),
            (TRACE, h.id.as_str()),
            "{job:#?}"
        );
    }
}
