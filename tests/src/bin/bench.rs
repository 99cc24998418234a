//! `make bench`: the task path's performance on the local control plane (kwok nodes; the
//! operator and agents as local release-built processes).
//!
//! It measures, in this order:
//! 1. the ceilings: small-object writes per second this API server takes (ConfigMap creates
//!    from 32 concurrent writers for 10 s), and the same for the writes a task makes (an
//!    AgentTask create, then one status write of its final state);
//! 2. end-to-end throughput for 1,000 and 10,000 `cogo.echo` tasks (all created at once, time
//!    from the first create to the last `Succeeded` seen on a watch), the operator's API
//!    writes per task (from the audit log), the achieved write rate against both ceilings, the
//!    CPU each process spent per task (API server, etcd, operator, agents, kwok, the
//!    benchmark) against what the machine had, the operator's peak memory with the 10,000
//!    tasks cached, and CPU profiles during the 10,000: the operator's (`perf record` with
//!    DWARF call graphs: a flame graph in `target/bench/operator-10000-tasks.svg`, and the
//!    crates and functions that took the most samples) and the API server's (its own pprof,
//!    for a cluster started with `COGO_APISERVER_PROFILING=1`, as `make bench` does: the share
//!    of each step of a request);
//! 3. lease latency (create sent -> `Running` seen on a watch) for 1,000 tasks created at
//!    100 tasks/s and at half the rate the 10,000-task run sustained: p50 and p99, split into
//!    the API server's own answer to the create (create sent -> created) and the time the task
//!    waited in the operator's queue (from `cogo_operator_task_dispatch_seconds`);
//!    `COGO_BENCH_ONLY=latency` measures only this, at the rates in `COGO_BENCH_RATES`
//!    (tasks/s, comma-separated; default 100);
//! 4. the Supabase mirror, against a real PostgreSQL directly and through PgBouncer in
//!    transaction mode: rows/s while 1,000 tasks created at once run (first create -> every
//!    row `succeeded`), and the mirror's lag (change seen -> row written, from the operator's
//!    histogram) while 1,000 tasks run at 100 tasks/s;
//! 5. `python.execute` through broker -> Executor -> worker -> sandbox, with 1 and 4 worker
//!    processes (2 slots each): jobs/s for 400 trivial jobs created at once, and for 200 jobs
//!    at 10 jobs/s the time from `Running` to `Succeeded` seen on a watch, the sandbox's own
//!    time (the result's `durationMs`: start of the sandbox to the program's exit) and the
//!    difference (dispatch to the worker and the result's way back), p50 and p99.
//!
//! 6. workflows: the Orchestrator's overhead per step, for a chain of 50 `cogo.echo` steps
//!    (each waits for the one before) and 50 steps side by side: the workflow's time from
//!    create to `Succeeded` seen on a watch, less the steps' own time (their first `Running` to
//!    `Succeeded` seen), per step; next to it, one standalone `cogo.echo` task's create to
//!    `Succeeded`, the floor a sub-task pays for its own lease and status writes;
//! 7. the model clients (Gemini and OpenAI-compatible) against a stand-in on loopback that
//!    answers at once: requests/s and p50/p99 latency with 16 calls in flight;
//! 8. the Indexing and GraphRAG handlers in this process over a local store: index throughput,
//!    search latency and community detection (see `cogo_e2e::bench_index`);
//! 9. the chat gateway under load from `wrk`: `status` and `agent_task` requests/s and p50/p99,
//!    next to a minimal axum route as the ceiling (see `cogo_e2e::bench_gateway`).
//!
//! The figures go to stdout and to `target/bench/report.md`. A benchmark, not a test: it
//! asserts nothing about speed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cogo_api::{AgentTask, TaskPhase};
use cogo_e2e::{
    cluster::{
        AgentProcess, Cluster, Operator, WorkerProcess, audit_lines, audited_writes, free_port, kwok_agent,
        kwok_pod_template,
    },
    pct,
    postgres::{PgBouncer, Postgres},
    repo,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// When each task was sent, created (the API server answered), first seen leased (Running or
/// later), and first seen finished.
#[derive(Default, Clone, Copy)]
struct Seen {
    sent: Option<Instant>,
    created: Option<Instant>,
    leased: Option<Instant>,
    done: Option<Instant>,
}

type Book = Arc<Mutex<HashMap<String, Seen>>>;

const AGENT_PODS: usize = 4;
const SLOTS_PER_POD: u32 = 64;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // COGO_BENCH_ONLY=llm needs no cluster.
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("llm") {
        let mut report = vec![format!("Machine: {}", machine())];
        report.extend(llm_clients().await?);
        return write_report(report);
    }
    // COGO_BENCH_ONLY=index needs no cluster either.
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("index") {
        let mut report = vec![format!("Machine: {}", machine())];
        report.extend(cogo_e2e::bench_index::run().await?);
        return write_report(report);
    }
    // COGO_BENCH_ONLY=browser runs the Browser and FigmaMCP job runners here, with no cluster.
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("browser") {
        let mut report = vec![format!("Machine: {}", machine())];
        report.extend(cogo_e2e::bench_browser::run().await?);
        return write_report(report);
    }
    let c = Cluster::from_env();
    c.install_crds();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&c.kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let mut report = vec![format!("Machine: {}", machine())];
    // COGO_BENCH_ONLY=gateway runs only the chat gateway under load.
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("gateway") {
        report.extend(cogo_e2e::bench_gateway::run(&c).await?);
        return write_report(report);
    }
    // COGO_BENCH_ONLY=workflow runs only the Orchestrator's overhead per step.
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("workflow") {
        let op = Operator::start(&c, "bench");
        report.extend(workflows(&c, &client, &op).await?);
        return write_report(report);
    }

    // COGO_BENCH_ONLY=memory measures the operator's memory with 100,000 tasks.
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("memory") {
        report.extend(memory(&c, &client, 100_000).await?);
        return write_report(report);
    }

    // COGO_BENCH_ONLY=mirror runs only the Supabase mirror's rows/s and lag.
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("mirror") {
        report.extend(mirrors(&c, &client).await?);
        return write_report(report);
    }

    // COGO_BENCH_ONLY=python runs only the python.execute section (and =tasks only the task
    // path, below).
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("python") {
        let op = Operator::start(&c, "bench");
        report.push("| python.execute | jobs/s (400 at once) | Running -> Succeeded p50 / p99 | sandbox p50 / p99 | dispatch and return p50 / p99 | operator writes per job | CPU per job (400 at once), by process |".into());
        report.push("|---|---|---|---|---|---|---|".into());
        for workers in [1usize, 4] {
            eprintln!("[bench] python.execute with {workers} worker process(es)");
            report.push(python(&c, &client, &op, workers).await?);
        }
        return write_report(report);
    }

    // COGO_BENCH_ONLY=latency measures only lease latency, at the rates (tasks/s) in
    // COGO_BENCH_RATES (comma-separated; default 100).
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("latency") {
        let op = Operator::start(&c, "bench");
        let rates = std::env::var("COGO_BENCH_RATES").unwrap_or_else(|_| "100".into());
        for rate in rates.split(',') {
            let rate: u64 = rate
                .trim()
                .parse()
                .map_err(|_| format!("COGO_BENCH_RATES: {rate:?} is not a rate"))?;
            eprintln!("[bench] lease latency: 1,000 tasks at {rate} tasks/s");
            report.push(latency_line(
                &format!("{rate} tasks/s"),
                latency(&c, &client, &op, 1_000, rate.max(1)).await?,
            ));
        }
        return write_report(report);
    }

    eprintln!("[bench] measuring the API server's write ceiling (10 s)");
    let ceiling = ceiling(&client).await?;
    report.push(format!(
        "API write ceiling: {ceiling:.0} small-object writes/s (ConfigMap creates, 32 concurrent writers, 10 s)"
    ));

    eprintln!("[bench] measuring the API server's ceiling for a task's writes (10 s)");
    let task_ceiling = task_ceiling(&client).await?;
    report.push(format!(
        "API write ceiling for a task's writes: {task_ceiling:.0} writes/s ({:.0} tasks/s; AgentTask creates, each followed by one status write of its final state, 32 concurrent writers, 10 s)",
        task_ceiling / 2.0
    ));

    eprintln!("[bench] API server CPU per status write: server-side apply and JSON patch");
    report.extend(write_cost(&client).await?);
    report.push(String::new());

    let mut op = Operator::start(&c, "bench");
    let mut rows = Vec::new();
    let mut cpu_rows = Vec::new();
    let mut profiles = Vec::new();
    let mut sustained = 0.0;
    for n in [1_000usize, 10_000] {
        eprintln!("[bench] {n} cogo.echo tasks, all created at once");
        let r = throughput(&c, &client, &op, n, n == 10_000).await?;
        let total: f64 = r.cpu.iter().map(|(_, ms)| ms).sum();
        let capacity = r.elapsed.as_secs_f64() * 1000.0 * machine_cores() as f64 / n as f64;
        cpu_rows.push(format!(
            "| {n} | {total:.2} | {capacity:.2} | {:.0}% | {} |",
            100.0 * total / capacity,
            cpu_line(&r.cpu)
        ));
        if let Some(p) = &r.profile {
            profiles.extend(p.report("The operator during the 10,000-task run", 15));
        }
        if !r.apiserver_profile.is_empty() {
            profiles.push(String::new());
            profiles.push(
                "| The API server during the 10,000-task run (first 30 s; `target/bench/apiserver-10000-tasks.pprof`) | share of its CPU |"
                    .into(),
            );
            profiles.push("|---|---|".into());
            for (what, share) in &r.apiserver_profile {
                profiles.push(format!("| {what} | {share:.1}% |"));
            }
        }
        sustained = n as f64 / r.elapsed.as_secs_f64();
        let achieved = r.writes_per_second();
        rows.push(format!(
            "| {n} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} | {:.2} | {} |",
            r.elapsed.as_secs_f64(),
            n as f64 / r.elapsed.as_secs_f64(),
            r.operator_writes as f64 / n as f64,
            achieved,
            achieved / ceiling,
            achieved / task_ceiling,
            r.breakdown
        ));
        if n == 10_000 {
            let hwm = op.pid().map(|p| status_kib(p, "VmHWM")).unwrap_or_default();
            report.push(format!(
                "Operator peak memory (VmHWM) with 10,000 tasks cached: {:.1} MiB",
                hwm as f64 / 1024.0
            ));
        }
        delete_namespace(&client, &r.namespace).await;
    }
    report.push(String::new());
    report.push(
        "| tasks | seconds | tasks/s | operator API writes per task | API writes/s achieved (creates + operator) | of ceiling (ConfigMap creates) | of ceiling (a task's writes) | operator writes |"
            .into(),
    );
    report.push("|---|---|---|---|---|---|---|---|".into());
    report.extend(rows);
    report.push(String::new());
    report.push(
        "| tasks | CPU ms per task, all processes | CPU ms per task the machine had (cores x elapsed / tasks) | used | CPU ms per task, by process |"
            .into(),
    );
    report.push("|---|---|---|---|---|".into());
    report.extend(cpu_rows);
    report.push(String::new());
    if !profiles.is_empty() {
        report.extend(profiles);
        report.push(String::new());
    }

    // At a fixed 100 tasks/s, and at half the rate the 10,000-task run sustained.
    let half = ((sustained / 2.0) as u64).max(1);
    for rate in [100, half] {
        eprintln!("[bench] lease latency: 1,000 tasks at {rate} tasks/s");
        let what = if rate == half {
            format!("{rate} tasks/s (half the 10,000-task run's {sustained:.0})")
        } else {
            format!("{rate} tasks/s")
        };
        report.push(latency_line(&what, latency(&c, &client, &op, 1_000, rate).await?));
    }

    op.stop();
    report.push(String::new());
    eprintln!("[bench] indexed tasks");
    report.extend(items(&c, &client).await?);

    // COGO_BENCH_ONLY=tasks stops after the task path (throughput, writes, lease latency,
    // indexed tasks).
    if std::env::var("COGO_BENCH_ONLY").as_deref() == Ok("tasks") {
        return write_report(report);
    }
    let mut op = Operator::start(&c, "bench");

    report.push(String::new());
    report.push("| python.execute | jobs/s (400 at once) | Running -> Succeeded p50 / p99 | sandbox p50 / p99 | dispatch and return p50 / p99 | operator writes per job | CPU per job (400 at once), by process |".into());
    report.push("|---|---|---|---|---|---|---|".into());
    for workers in [1usize, 4] {
        eprintln!("[bench] python.execute with {workers} worker process(es)");
        report.push(python(&c, &client, &op, workers).await?);
    }
    op.stop();

    report.push(String::new());
    let op = Operator::start(&c, "bench-workflows");
    report.extend(workflows(&c, &client, &op).await?);
    drop(op);
    report.push(String::new());
    report.extend(llm_clients().await?);
    report.push(String::new());
    report.extend(cogo_e2e::bench_index::run().await?);

    report.push(String::new());
    report.extend(mirrors(&c, &client).await?);
    report.extend(cogo_e2e::bench_gateway::run(&c).await?);

    write_report(report)
}

/// The Supabase mirror's table: against PostgreSQL directly, and through PgBouncer.
async fn mirrors(c: &Cluster, client: &Client) -> Result<Vec<String>, Error> {
    let mut rows = vec![
        "| Supabase mirror | rows/s (1,000 tasks at once) | lag p50 at 100 tasks/s | lag p99 at 100 tasks/s |".to_string(),
        "|---|---|---|---|".into(),
    ];
    let pg = Postgres::start("bench");
    let bouncer = PgBouncer::start(&pg, "bench");
    for (label, url) in [
        ("direct", pg.url()),
        ("through PgBouncer (transaction mode)", bouncer.url()),
    ] {
        eprintln!("[bench] Supabase mirror, {label}");
        rows.push(mirror(c, client, &pg, label, &url).await?);
    }
    Ok(rows)
}

fn write_report(report: Vec<String>) -> Result<(), Error> {
    let text = report.join("\n") + "\n";
    println!("\n{text}");
    let dir = repo().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), &text)?;
    eprintln!("[bench] written to target/bench/report.md");
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = machine_cores();
    let mem = status_field("/proc/meminfo", "MemTotal") / 1024 / 1024;
    format!("{cores} cores ({cpu}), {mem} GiB RAM")
}

fn machine_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn status_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    status_field(&format!("/proc/{pid}/status"), field)
}

async fn create_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    delete_namespace(client, name).await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Deletes a namespace and waits until it is gone (at most two minutes).
async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
    for _ in 0..600 {
        if matches!(api.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("[bench] namespace {name} is still terminating; going on");
}

async fn ceiling(client: &Client) -> Result<f64, Error> {
    let ns = "bench-ceiling";
    create_namespace(client, ns).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let stop = Instant::now() + Duration::from_secs(10);
    let start = Instant::now();
    let workers = (0..32).map(|w| {
        let api = api.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("w{w}-{n}")}, "data": {"k": "v"},
                }))
                .expect("configmap");
                if api.create(&PostParams::default(), &cm).await.is_ok() {
                    n += 1;
                }
            }
            n
        })
    });
    let mut total = 0;
    for w in futures::future::join_all(workers).await {
        total += w?;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    delete_namespace(client, ns).await;
    Ok(rate)
}

/// The ceiling for the writes a task makes, measured like [`ceiling`]: 32 concurrent writers
/// for 10 s, each creating an AgentTask and then writing its final status once (the JSON patch
/// fenced on resourceVersion the operator writes for a task that finishes within the coalescing
/// window, built by the operator's own transitions), with no operator running. Returns the
/// writes per second (two per task).
async fn task_ceiling(client: &Client) -> Result<f64, Error> {
    use cogo_operator::{
        kube_io,
        tasks::transition::{self, Policy, ResultRoom},
    };
    let ns = "bench-task-ceiling";
    create_namespace(client, ns).await?;
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    let stop = Instant::now() + Duration::from_secs(10);
    let start = Instant::now();
    let workers = (0..32).map(|w| {
        let api = api.clone();
        tokio::spawn(async move {
            let mut writes = 0u64;
            let mut n = 0;
            while Instant::now() < stop {
                n += 1;
                let Ok(task) = api
                    .create(&PostParams::default(), &echo(&format!("w{w}-{n}"), n)?)
                    .await
                else {
                    continue;
                };
                writes += 1;
                let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
                let mut leased = task.clone();
                leased.status = transition::leased(&task, "bench", "bench-0", &now);
                let req = cogo_api::broker::CompleteRequest {
                    pod: "bench-0".into(),
                    attempt: 1,
                    outcome: cogo_api::broker::Outcome::Succeeded,
                    result: Some(json!({"n": n})),
                    error: None,
                    retryable: false,
                    item: None,
                };
                let room = ResultRoom {
                    status_bytes: 64 * 1024,
                    store: false,
                };
                let status = transition::completed(&leased, &req, &Policy::of(&task, None), &now, room)
                    .map_err(|e| format!("{e:?}"))?;
                let rv = task.resource_version();
                if kube_io::replace_status(&api, &task.name_any(), &status, rv.as_deref())
                    .await
                    .is_ok()
                {
                    writes += 1;
                }
            }
            Ok::<_, Error>(writes)
        })
    });
    let mut total = 0;
    for w in futures::future::join_all(workers).await {
        total += w??;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    delete_namespace(client, ns).await;
    Ok(rate)
}

/// Where the API server's CPU went in the profile `file`: the cumulative share of the functions
/// that stand for each step of a request (`go tool pprof -top -cum` over the API server's
/// binary), from reading the request to the watch events it sends.
fn apiserver_shares(file: &std::path::Path) -> Result<Vec<(&'static str, f64)>, Error> {
    const STEPS: &[(&str, &str)] = &[
        (
            "creates (from admission to the etcd write)",
            "registry.(*Store).Create",
        ),
        (
            "status writes (from reading the stored object to the etcd write)",
            "registry.(*Store).Update",
        ),
        (
            "  applying the patch to the stored object",
            "(*patcher).applyPatch",
        ),
        (
            "  schema validation of the updated object",
            "(*RatchetingSchemaValidator).ValidateUpdate",
        ),
        ("  CEL rules (creates and updates)", "cel.(*Validator).Validate"),
        (
            "  managedFields (creates and updates)",
            "internal.(*FieldManager).Update",
        ),
        (
            "decoding objects read from etcd (writes and watch events)",
            "etcd3.decodeObj",
        ),
        ("sending watch events to watchers", "(*WatchServer).HandleHTTP"),
        ("writing the audit log", "log.(*backend).ProcessEvents"),
        ("Go garbage collector (background)", "runtime.gcBgMarkWorker"),
        (
            "Go garbage collector (assists in allocations)",
            "runtime.gcAssistAlloc",
        ),
    ];
    let binary = cogo_e2e::tool("kube-apiserver");
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-cum", "-nodecount=2000"])
        .arg(&binary)
        .arg(file)
        .output()?;
    if !out.status.success() {
        return Err(format!("go tool pprof failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines: flat flat% sum% cum cum% function
    let cum = |function: &str| {
        text.lines().find_map(|l| {
            let cols: Vec<_> = l.split_whitespace().collect();
            (cols.len() >= 6 && cols[5..].join(" ").ends_with(function))
                .then(|| cols[4].trim_end_matches('%').parse::<f64>().ok())
                .flatten()
        })
    };
    Ok(STEPS
        .iter()
        .map(|(what, function)| (*what, cum(function).unwrap_or(0.0)))
        .collect())
}

/// Starts the bench agent (one CogoAgent, `AGENT_PODS` local pods) in `ns`.
fn agents(c: &Cluster, ns: &str, op: &Operator) -> Vec<AgentProcess> {
    let agent = kwok_agent("bench", AGENT_PODS as i32, SLOTS_PER_POD as i32);
    c.kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&agent.to_string()));
    (0..AGENT_PODS)
        .map(|i| {
            AgentProcess::start_with(
                c,
                ns,
                ("bench", "Research", &format!("bench-{i}")),
                op.broker_port,
                SLOTS_PER_POD,
            )
        })
        .collect()
}

/// Watches the tasks of `ns`, noting when each is first seen leased and finished.
fn watch(client: &Client, ns: &str, book: Book) -> tokio::task::JoinHandle<()> {
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(t)) = stream.try_next().await {
            let now = Instant::now();
            let phase = t.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            let mut b = book.lock().expect("book");
            let seen = b.entry(t.name_any()).or_default();
            if phase != TaskPhase::Pending {
                seen.leased.get_or_insert(now);
            }
            if phase.is_terminal() {
                seen.done.get_or_insert(now);
            }
        }
    })
}

fn echo(name: &str, i: usize) -> Result<AgentTask, Error> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
        "spec": {"agent": "bench", "type": "cogo.echo", "input": {"n": i}},
    }))?)
}

/// When the last task of the book was seen finished.
fn last_done(book: &Book) -> Instant {
    book.lock()
        .expect("book")
        .values()
        .filter_map(|s| s.done)
        .max()
        .unwrap_or_else(Instant::now)
}

async fn wait_done(book: &Book, n: usize, what: &str) -> Result<(), Error> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let done = book
            .lock()
            .expect("book")
            .values()
            .filter(|s| s.done.is_some())
            .count();
        if done >= n {
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[bench] {what}: {done}/{n} finished after {:.0}s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(format!("{what}: only {done} of {n} tasks finished in 30 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Run {
    namespace: String,
    elapsed: Duration,
    operator_writes: usize,
    creates: usize,
    breakdown: String,
    /// CPU milliseconds per task, by process, most first.
    cpu: Vec<(String, f64)>,
    /// The operator's profile, when one was taken.
    profile: Option<cogo_e2e::profile::Profile>,
    /// Where the API server's CPU went, when it was profiled: what, and its share.
    apiserver_profile: Vec<(&'static str, f64)>,
}

impl Run {
    fn writes_per_second(&self) -> f64 {
        (self.operator_writes + self.creates) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `n` echo tasks created at once; with `profile`, samples the operator's CPU meanwhile.
async fn throughput(
    c: &Cluster,
    client: &Client,
    op: &Operator,
    n: usize,
    profile: bool,
) -> Result<Run, Error> {
    let ns = format!("bench-{n}");
    create_namespace(client, &ns).await?;
    let _agents = agents(c, &ns, op);
    let book: Book = Default::default();
    let watching = watch(client, &ns, book.clone());
    let log = c.audit_log();
    let from = audit_lines(&log);
    let api: Api<AgentTask> = Api::namespaced(client.clone(), &ns);
    let dir = repo().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let recording = match (profile, op.pid()) {
        (true, Some(pid)) => Some(cogo_e2e::profile::Recording::start(
            pid,
            &dir.join("operator.perf.data"),
        )?),
        _ => None,
    };
    // The API server's own CPU profile (Go's pprof) for the first 30 s of the run.
    let apiserver = profile.then(|| {
        let c = Cluster {
            kubeconfig: c.kubeconfig.clone(),
        };
        tokio::task::spawn_blocking(move || {
            c.kubectl(&["get", "--raw", "/debug/pprof/profile?seconds=30"], None)
        })
    });
    let cpu_before = cpu_by_process();
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let t = echo(&format!("echo-{i:05}"), i)?;
                api.create(&PostParams::default(), &t).await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    wait_done(&book, n, &format!("{n} tasks")).await?;
    let last = last_done(&book);
    let cpu = cpu_spent(&cpu_before, &cpu_by_process(), n);
    let profile = match recording {
        Some(r) => {
            eprintln!("[bench] folding the operator's profile");
            Some(r.finish(&dir, "operator-10000-tasks")?)
        }
        None => None,
    };
    let apiserver_profile = match apiserver {
        Some(fetch) => {
            let out = fetch.await?;
            if !out.status.success() {
                return Err(format!(
                    "cannot profile the API server (start the cluster with COGO_APISERVER_PROFILING=1): {}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            let file = dir.join("apiserver-10000-tasks.pprof");
            std::fs::write(&file, &out.stdout)?;
            apiserver_shares(&file)?
        }
        None => Vec::new(),
    };
    watching.abort();
    let failed = api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.phase) != Some(TaskPhase::Succeeded))
        .count();
    if failed > 0 {
        return Err(format!("{failed} of {n} tasks did not succeed").into());
    }
    // The audit log is written asynchronously: let it catch up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes: Vec<_> = audited_writes(&log, from, "cogo-operator")
        .into_iter()
        .filter(|(_, _, wns, _)| *wns == ns)
        .collect();
    let mut by_kind = BTreeMap::<String, usize>::new();
    for (verb, resource, _, _) in &writes {
        *by_kind.entry(format!("{verb} {resource}")).or_default() += 1;
    }
    let breakdown = by_kind
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Run {
        namespace: ns,
        elapsed: last - start,
        operator_writes: writes.len(),
        creates: n,
        breakdown,
        cpu,
        profile,
        apiserver_profile,
    })
}

async fn latency(
    c: &Cluster,
    client: &Client,
    op: &Operator,
    n: usize,
    rate: u64,
) -> Result<(Percentiles, Percentiles, (f64, f64)), Error> {
    let ns = "bench-latency";
    create_namespace(client, ns).await?;
    let _agents = agents(c, ns, op);
    let book: Book = Default::default();
    let watching = watch(client, ns, book.clone());
    // Let the agents' first long-polls arrive before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    let dispatch = "cogo_operator_task_dispatch_seconds";
    let before = buckets(&op.metrics(), dispatch);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut sends = Vec::new();
    for i in 0..n {
        tick.tick().await;
        let name = format!("lat-{i:05}");
        let t = echo(&name, i)?;
        book.lock().expect("book").entry(name).or_default().sent = Some(Instant::now());
        let api = api.clone();
        let book = book.clone();
        sends.push(tokio::spawn(async move {
            let created = api.create(&PostParams::default(), &t).await;
            let now = Instant::now();
            book.lock()
                .expect("book")
                .entry(t.name_any())
                .or_default()
                .created = Some(now);
            created
        }));
    }
    for s in sends {
        s.await??;
    }
    wait_done(&book, n, "latency run").await?;
    watching.abort();
    let after = buckets(&op.metrics(), dispatch);
    let queued = (
        quantile(&before, &after, 0.5) * 1000.0,
        quantile(&before, &after, 0.99) * 1000.0,
    );
    let (leased, created) = {
        let book = book.lock().expect("book");
        (
            percentiles(book.values().filter_map(|s| Some(s.leased? - s.sent?))),
            percentiles(book.values().filter_map(|s| Some(s.created? - s.sent?))),
        )
    };
    delete_namespace(client, ns).await;
    Ok((leased, created, queued))
}

/// The report's line for a [`latency`] run at `what` (a rate).
fn latency_line(what: &str, (leased, created, queued): (Percentiles, Percentiles, (f64, f64))) -> String {
    format!(
        "Lease latency (create sent -> Running seen), 1,000 tasks at {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; of which the create's own answer (create sent -> created): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; and the wait in the operator's queue (`cogo_operator_task_dispatch_seconds`, interpolated in its bucket): p50 {:.1} ms, p99 {:.1} ms",
        leased.p50, leased.p99, leased.max, created.p50, created.p99, created.max, queued.0, queued.1
    )
}

/// p50, p99 and max of `spans`, in milliseconds.
fn percentiles(spans: impl Iterator<Item = Duration>) -> Percentiles {
    let mut ms: Vec<f64> = spans.map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len().max(1)) - 1)
            .copied()
    };
    Percentiles {
        p50: pct(0.50).unwrap_or_default(),
        p99: pct(0.99).unwrap_or_default(),
        max: ms.last().copied().unwrap_or_default(),
    }
}

/// A latency's distribution, in milliseconds.
#[derive(Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

/// CPU seconds spent so far by each kind of process on the machine (own time plus that of the
/// children it reaped, so a worker includes its sandboxes), by the name it runs as (the
/// control plane's multi-call binary by its component).
fn cpu_by_process() -> HashMap<String, f64> {
    let tick = 100.0; // USER_HZ
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(stat), Ok(cmd)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| {
                String::from_utf8_lossy(a)
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let name = match args.first().map(String::as_str) {
            Some("kube") => args.get(1).cloned().unwrap_or_else(|| "kube".into()),
            Some(n) if n.starts_with("cogo-") || n == "kwok" || n == "etcd" || n.starts_with("kube-") => {
                n.to_string()
            }
            _ => continue,
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<f64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        // utime, stime, cutime, cstime are fields 14 to 17 (11 to 14 after the command).
        let spent: f64 = f.get(10..14).map(|v| v.iter().sum()).unwrap_or(0.0);
        *out.entry(name).or_insert(0.0) += spent / tick;
    }
    out
}

/// CPU milliseconds per unit of work (`per` of them) each kind of process spent between two
/// readings of [`cpu_by_process`], most first; under 0.05 ms left out.
fn cpu_spent(before: &HashMap<String, f64>, after: &HashMap<String, f64>, per: usize) -> Vec<(String, f64)> {
    let mut spent: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)) * 1000.0 / per as f64,
            )
        })
        .filter(|(_, ms)| *ms >= 0.05)
        .collect();
    spent.sort_by(|a, b| b.1.total_cmp(&a.1));
    spent
}

/// `name ms, name ms, ...`.
fn cpu_line(spent: &[(String, f64)]) -> String {
    spent
        .iter()
        .map(|(k, ms)| format!("{k} {ms:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Slots of each benchmark worker.
const WORKER_SLOTS: u32 = 2;

fn python_task(name: &str) -> Result<AgentTask, Error> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
        "spec": {"agent": "executor", "type": "python.execute", "input": {"code": "pass"}},
    }))?)
}

/// `python.execute` through an Executor and `workers` local worker processes.
async fn python(c: &Cluster, client: &Client, op: &Operator, workers: usize) -> Result<String, Error> {
    let ns = format!("bench-python-{workers}");
    create_namespace(client, &ns).await?;
    let executor = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "executor"},
        "spec": {"role": "Executor", "podTemplate": kwok_pod_template()}});
    let worker = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python"},
        "spec": {"kind": "PythonSandbox", "replicas": workers, "capacity": WORKER_SLOTS, "podTemplate": kwok_pod_template()}});
    for obj in [executor, worker] {
        c.kubectl_ok(&["apply", "-n", &ns, "-f", "-"], Some(&obj.to_string()));
    }
    let exec = AgentProcess::start_with(c, &ns, ("executor", "Executor", "executor-0"), op.broker_port, 4);
    let _workers: Vec<WorkerProcess> = (0..workers)
        .map(|i| {
            WorkerProcess::start(
                c,
                &ns,
                ("python", &format!("python-{i}")),
                exec.port,
                WORKER_SLOTS,
                &[],
            )
        })
        .collect();
    let api: Api<AgentTask> = Api::namespaced(client.clone(), &ns);
    let workers_api: Api<cogo_api::CogoWorker> = Api::namespaced(client.clone(), &ns);
    let connected = Instant::now();
    loop {
        let n = workers_api
            .get("python")
            .await?
            .status
            .and_then(|s| s.connected_workers)
            .unwrap_or(0);
        if n as usize == workers {
            break;
        }
        if connected.elapsed() > Duration::from_secs(60) {
            return Err(format!("only {n} of {workers} workers connected").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Throughput: 400 jobs at once, and the CPU each process spent on them.
    let book: Book = Default::default();
    let watching = watch(client, &ns, book.clone());
    let cpu_before = cpu_by_process();
    let log = c.audit_log();
    let from = audit_lines(&log);
    let start = Instant::now();
    futures::stream::iter(0..400)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &python_task(&format!("burst-{i:04}"))?)
                    .await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    wait_done(&book, 400, "python burst").await?;
    let last = last_done(&book);
    let rate = 400.0 / (last - start).as_secs_f64();
    watching.abort();
    let spent = cpu_spent(&cpu_before, &cpu_by_process(), 400);
    let total: f64 = spent.iter().map(|(_, ms)| ms).sum();
    let cpu = cpu_line(&spent);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = audited_writes(&log, from, "cogo-operator")
        .into_iter()
        .filter(|(_, _, wns, _)| *wns == ns)
        .count() as f64
        / 400.0;
    eprintln!(
        "[bench] CPU per job with {workers} worker(s): {total:.1} ms ({cpu}); operator writes per job {writes:.2}"
    );

    // Latency: 200 jobs at 10 jobs/s.
    let book: Book = Default::default();
    let watching = watch(client, &ns, book.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for i in 0..200 {
        tick.tick().await;
        let (api, t) = (api.clone(), python_task(&format!("paced-{i:04}"))?);
        tokio::spawn(async move { api.create(&PostParams::default(), &t).await });
    }
    let paced_done = || {
        book.lock()
            .expect("book")
            .iter()
            .filter(|(n, s)| n.starts_with("paced-") && s.done.is_some())
            .count()
    };
    let waited = Instant::now();
    while paced_done() < 200 {
        if waited.elapsed() > Duration::from_secs(600) {
            return Err("the paced python jobs did not finish in 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watching.abort();
    let tasks = api.list(&Default::default()).await?.items;
    let failed = tasks
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.phase) != Some(TaskPhase::Succeeded))
        .count();
    if failed > 0 {
        return Err(format!("{failed} python jobs did not succeed").into());
    }
    let sandbox: HashMap<String, f64> = tasks
        .iter()
        .filter_map(|t| {
            let ms = t.status.as_ref()?.result.as_ref()?.get("durationMs")?.as_f64()?;
            Some((t.name_any(), ms))
        })
        .collect();
    let seen = book.lock().expect("book").clone();
    let mut run = Vec::new();
    let mut own = Vec::new();
    let mut rest = Vec::new();
    for (name, s) in seen.iter().filter(|(n, _)| n.starts_with("paced-")) {
        let (Some(leased), Some(done), Some(ms)) = (s.leased, s.done, sandbox.get(name)) else {
            continue;
        };
        let total = (done - leased).as_secs_f64() * 1000.0;
        run.push(total);
        own.push(*ms);
        rest.push((total - ms).max(0.0));
    }
    for v in [&mut run, &mut own, &mut rest] {
        v.sort_by(f64::total_cmp);
    }
    drop(exec);
    delete_namespace(client, &ns).await;
    Ok(format!(
        "| {workers} worker(s) x {WORKER_SLOTS} slots | {rate:.1} | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {writes:.2} | {total:.1} ms: {cpu} |",
        pct(&run, 0.5),
        pct(&run, 0.99),
        pct(&own, 0.5),
        pct(&own, 0.99),
        pct(&rest, 0.5),
        pct(&rest, 0.99)
    ))
}

/// The cumulative buckets of a Prometheus histogram in the operator's metrics text.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// A quantile from the difference of two snapshots of cumulative buckets, interpolated
/// linearly inside its bucket.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before.iter().find(|(l, _)| l == le).map_or(0.0, |(_, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, n)| *n);
    let target = total * q;
    let mut lower = (0.0, 0.0);
    for (le, n) in counts {
        if n >= target {
            if !le.is_finite() {
                return lower.0;
            }
            let span = (n - lower.1).max(1.0);
            return lower.0 + (le - lower.0) * ((target - lower.1) / span);
        }
        lower = (le, n);
    }
    lower.0
}

async fn mirror(
    c: &Cluster,
    client: &Client,
    pg: &Postgres,
    label: &str,
    url: &str,
) -> Result<String, Error> {
    let secret = "cogo-bench-supabase";
    c.url_secret("default", secret, url);
    let mut op = Operator::start_with(c, "bench-mirror", free_port(), &["--supabase-secret", secret]);
    let ns = "bench-mirror";
    create_namespace(client, ns).await?;
    let _agents = agents(c, ns, &op);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    let succeeded = |prefix: &str| {
        pg.query(&format!(
            "select count(*) from distributed_agent_tasks where namespace = '{ns}' and name like '{prefix}-%' and status = 'succeeded'"
        ))
        .parse::<usize>()
        .unwrap_or(0)
    };

    // Throughput: 1,000 tasks at once, until every row says succeeded.
    let start = Instant::now();
    futures::stream::iter(0..1000)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &echo(&format!("burst-{i:05}"), i)?)
                    .await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    while succeeded("burst") < 1000 {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("mirror {label}: rows did not catch up in 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows_per_second = 1000.0 / start.elapsed().as_secs_f64();

    // Lag at 100 tasks/s, from the operator's histogram.
    let before = buckets(&op.metrics(), "cogo_operator_mirror_lag_seconds");
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sends = Vec::new();
    for i in 0..1000 {
        tick.tick().await;
        let (api, t) = (api.clone(), echo(&format!("paced-{i:05}"), i)?);
        sends.push(tokio::spawn(async move {
            api.create(&PostParams::default(), &t).await
        }));
    }
    for s in sends {
        s.await??;
    }
    let waited = Instant::now();
    while succeeded("paced") < 1000 {
        if waited.elapsed() > Duration::from_secs(300) {
            return Err(format!("mirror {label}: paced rows did not catch up").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = buckets(&op.metrics(), "cogo_operator_mirror_lag_seconds");
    let (p50, p99) = (quantile(&before, &after, 0.5), quantile(&before, &after, 0.99));
    op.stop();
    delete_namespace(client, ns).await;
    pg.query(&format!(
        "delete from distributed_agent_tasks where namespace = '{ns}'"
    ));
    c.kubectl(&["delete", "secret", secret, "-n", "default"], None);
    Ok(format!(
        "| {label} | {rows_per_second:.0} | {:.0} ms | {:.0} ms |",
        p50 * 1000.0,
        p99 * 1000.0
    ))
}

/// The Orchestrator's overhead per step, for a chain of 50 echo steps and 50 side by side.
async fn workflows(c: &Cluster, client: &Client, op: &Operator) -> Result<Vec<String>, Error> {
    let ns = "bench-workflows";
    create_namespace(client, ns).await?;
    for (name, role) in [("orchestrator", "Orchestrator"), ("research", "Research")] {
        let agent = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": name},
            "spec": {"role": role, "replicas": 1, "concurrency": 64, "podTemplate": kwok_pod_template()}});
        c.kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&agent.to_string()));
    }
    let _agents: Vec<AgentProcess> = [("orchestrator", "Orchestrator"), ("research", "Research")]
        .iter()
        .map(|(a, r)| AgentProcess::start_with(c, ns, (a, r, &format!("{a}-0")), op.broker_port, 64))
        .collect();
    let book: Book = Arc::default();
    let watcher = watch(client, ns, book.clone());
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    let run = |name: &str, task_type: &str, input: serde_json::Value| -> Result<AgentTask, Error> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
            "spec": {"agent": if task_type == "workflow.run" { "orchestrator" } else { "research" },
                     "type": task_type, "input": input, "timeoutSeconds": 3600}}))?)
    };
    // The floor: standalone echo tasks, one at a time.
    let mut single = Vec::new();
    for i in 0..20 {
        let name = format!("single-{i}");
        book.lock().expect("book").entry(name.clone()).or_default().sent = Some(Instant::now());
        api.create(&PostParams::default(), &run(&name, "cogo.echo", json!({"i": i}))?)
            .await?;
        wait_for(&book, &name).await?;
        let s = book.lock().expect("book")[&name];
        single.push(ms(s.done, s.sent));
    }
    single.sort_by(f64::total_cmp);
    let mut rows = vec![
        "| workflow of 50 cogo.echo steps | seconds | overhead per step (ms) | steps' own time, sum (s) | one standalone cogo.echo, create -> Succeeded p50 (ms) |".to_string(),
        "|---|---|---|---|---|".into(),
    ];
    for (shape, chained) in [
        ("a chain (each after the one before)", true),
        ("side by side", false),
    ] {
        let wf = if chained { "chain" } else { "wide" };
        let steps: Vec<serde_json::Value> = (0..50)
            .map(|i| {
                let mut step = json!({"id": format!("s{i}"), "type": "cogo.echo", "agent": "research", "input": {"i": i}});
                if chained && i > 0 {
                    step["dependsOn"] = json!([format!("s{}", i - 1)]);
                }
                step
            })
            .collect();
        eprintln!("[bench] workflow of 50 echo steps, {shape}");
        book.lock().expect("book").entry(wf.into()).or_default().sent = Some(Instant::now());
        api.create(
            &PostParams::default(),
            &run(wf, "workflow.run", json!({"steps": steps}))?,
        )
        .await?;
        wait_for(&book, wf).await?;
        let b = book.lock().expect("book").clone();
        let total = ms(b[wf].done, b[wf].sent) / 1000.0;
        let own: f64 = (0..50)
            .filter_map(|i| b.get(&format!("{wf}-s{i}")))
            .map(|s| ms(s.done, s.leased) / 1000.0)
            .sum();
        // Side by side, the steps' own times overlap: only the longest counts.
        let own_wall = if chained {
            own
        } else {
            (0..50)
                .filter_map(|i| b.get(&format!("{wf}-s{i}")))
                .map(|s| ms(s.done, s.leased) / 1000.0)
                .fold(0.0, f64::max)
        };
        rows.push(format!(
            "| {shape} | {total:.2} | {:.0} | {own:.2} | {:.0} |",
            (total - own_wall) * 1000.0 / 50.0,
            pct(&single, 0.5)
        ));
    }
    watcher.abort();
    delete_namespace(client, ns).await;
    Ok(rows)
}

/// Milliseconds from `from` to `to`.
/// API server CPU per status write, fenced by resourceVersion: server-side apply (the
/// operator's write until the JSON patch was measured cheaper) against the JSON patch that
/// replaces the status, each moving the same 1,000 tasks to a new Running status, 16 at once,
/// two rounds each, alternating. No operator runs meanwhile.
async fn write_cost(client: &Client) -> Result<Vec<String>, Error> {
    use cogo_operator::{kube_io, tasks::transition};
    const N: usize = 1_000;
    let ns = "bench-writes";
    create_namespace(client, ns).await?;
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    let mut tasks: Vec<AgentTask> = futures::stream::iter(0..N)
        .map(|i| {
            let api = api.clone();
            async move {
                Ok::<_, Error>(
                    api.create(&PostParams::default(), &echo(&format!("w-{i:04}"), i)?)
                        .await?,
                )
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let mut out = vec![
        "| status write, fenced by resourceVersion (1,000 tasks, 16 at once) | writes/s | API server CPU ms per write | etcd CPU ms per write |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for (round, attempt) in (0..4).zip(1..) {
        let json_patch = round % 2 == 1;
        let before = cpu_by_process();
        let start = Instant::now();
        tasks = futures::stream::iter(tasks)
            .map(|t| {
                let api = api.clone();
                async move {
                    let mut pending = t.clone();
                    pending.status = Some(cogo_api::AgentTaskStatus {
                        phase: Some(TaskPhase::Pending),
                        attempt: attempt - 1,
                        ..t.status.clone().unwrap_or_default()
                    });
                    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
                    let status =
                        transition::leased(&pending, "bench", "bench-0", &now).ok_or("not leasable")?;
                    let rv = t.resource_version();
                    let name = t.name_any();
                    let written = if json_patch {
                        kube_io::replace_status(&api, &name, &status, rv.as_deref()).await?
                    } else {
                        kube_io::apply_status(&api, &name, &status, rv.as_deref()).await?
                    };
                    Ok::<_, Error>(written)
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let elapsed = start.elapsed().as_secs_f64();
        let spent = cpu_spent(&before, &cpu_by_process(), N);
        let of = |p: &str| spent.iter().find(|(k, _)| k == p).map_or(0.0, |(_, ms)| *ms);
        out.push(format!(
            "| {} (round {}) | {:.0} | {:.2} | {:.2} |",
            if json_patch {
                "JSON patch, whole status"
            } else {
                "server-side apply"
            },
            round / 2 + 1,
            N as f64 / elapsed,
            of("kube-apiserver"),
            of("etcd")
        ));
    }
    delete_namespace(client, ns).await;
    Ok(out)
}

/// Indexed tasks, with the result store (PostgreSQL) taking every item's result: one task of
/// 20,000 `cogo.echo` items on the four agents (items/s, status writes, CPU per item, rows),
/// then 100 tasks of 20 items created at 5 tasks/s, with slots to spare (dispatch latency).
async fn items(c: &Cluster, client: &Client) -> Result<Vec<String>, Error> {
    const N: usize = 20_000;
    const SECRET: &str = "cogo-bench-items";
    let pg = Postgres::start("bench-items");
    c.url_secret("default", SECRET, &pg.url());
    let op = Operator::start_with(
        c,
        "bench-items",
        cogo_e2e::cluster::free_port(),
        &["--supabase-secret", SECRET],
    );
    let ns = "bench-items";
    create_namespace(client, ns).await?;
    let _agents = agents(c, ns, &op);
    let book: Book = Default::default();
    let watching = watch(client, ns, book.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    let log = c.audit_log();
    let from = audit_lines(&log);
    let indexed = |name: &str, count: usize| -> Result<AgentTask, Error> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
            "spec": {"agent": "bench", "type": "cogo.echo", "items": {"count": count}, "input": {"n": "{{index}}"}},
        }))?)
    };
    let cpu_before = cpu_by_process();
    let start = Instant::now();
    api.create(&PostParams::default(), &indexed("many", N)?).await?;
    wait_done(&book, 1, "20,000 items").await?;
    let elapsed = last_done(&book) - start;
    let cpu = cpu_spent(&cpu_before, &cpu_by_process(), N);
    let done = api.get("many").await?;
    let items = done
        .status
        .as_ref()
        .and_then(|s| s.items.clone())
        .unwrap_or_default();
    if done.status.as_ref().and_then(|s| s.phase) != Some(TaskPhase::Succeeded) || items.succeeded != N as i64
    {
        return Err(format!("the indexed task did not succeed: {:?}", done.status).into());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = audited_writes(&log, from, "cogo-operator")
        .into_iter()
        .filter(|(verb, resource, wns, name)| {
            wns == ns && name == "many" && resource == "agenttasks/status" && verb != "get"
        })
        .count();
    let rows = pg.query(&format!(
        "select count(*) from public.cogo_task_item_results r join public.distributed_agent_tasks d on d.id = r.id \
         where d.namespace = '{ns}' and d.name = 'many'"
    ));
    let mut out = vec![
        "| indexed task | items | seconds | items/s | status writes | writes per item | item results in the database | CPU ms per item, by process |".to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
        format!(
            "| one task, 20,000 `cogo.echo` items, 4 agents x 64 slots | {N} | {:.1} | **{:.0}** | {writes} | {:.5} | {rows} | {} |",
            elapsed.as_secs_f64(),
            N as f64 / elapsed.as_secs_f64(),
            writes as f64 / N as f64,
            cpu_line(&cpu)
        ),
    ];
    let hwm = op.pid().map(|p| status_kib(p, "VmHWM")).unwrap_or_default();

    // Dispatch: 100 tasks of 20 items at 5 tasks/s, 256 slots free.
    let before = buckets(&op.metrics(), "cogo_operator_item_dispatch_seconds");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for i in 0..100 {
        tick.tick().await;
        api.create(&PostParams::default(), &indexed(&format!("small-{i:03}"), 20)?)
            .await?;
    }
    wait_done(&book, 101, "100 small indexed tasks").await?;
    let after = buckets(&op.metrics(), "cogo_operator_item_dispatch_seconds");
    watching.abort();
    out.push(String::new());
    out.push(format!(
        "Item dispatch (ready to leased), 100 tasks of 20 items created at 5 tasks/s (100 items/s), slots to spare: p50 {:.1} ms, p99 {:.1} ms. Operator peak memory (VmHWM) after the 20,000 items: {:.1} MiB.",
        quantile(&before, &after, 0.5) * 1000.0,
        quantile(&before, &after, 0.99) * 1000.0,
        hwm as f64 / 1024.0
    ));
    delete_namespace(client, ns).await;
    Ok(out)
}

/// The operator's memory with `n` AgentTasks cached: created for an agent with no pods, so they
/// stay queued; peak (VmHWM) and current (VmRSS) once every one is accepted.
async fn memory(c: &Cluster, client: &Client, n: usize) -> Result<Vec<String>, Error> {
    let op = Operator::start(c, "bench-memory");
    let ns = "bench-memory";
    create_namespace(client, ns).await?;
    c.kubectl_ok(
        &["apply", "-n", ns, "-f", "-"],
        Some(&kwok_agent("bench", 0, 1).to_string()),
    );
    let api: Api<AgentTask> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let mut last_report = Instant::now();
    let created = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &echo(&format!("m-{i:06}"), i)?)
                    .await
                    .map_err(Error::from)
            }
        })
        .buffer_unordered(32)
        .try_fold(0usize, |k, _| {
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("[bench] memory: {k} of {n} tasks created");
                last_report = Instant::now();
            }
            futures::future::ready(Ok(k + 1))
        })
        .await?;
    // Every task is queued once the operator reconciled it.
    loop {
        let queued = op.counter("cogo_operator_tasks_queued") as usize;
        if queued >= created {
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            return Err(format!("only {queued} of {created} tasks queued after an hour").into());
        }
        eprintln!("[bench] memory: {queued} of {created} tasks queued");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let pid = op.pid().ok_or("the operator is not running")?;
    let (hwm, rss) = (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"));
    // Deleting 100,000 tasks takes minutes: asked for, not waited on (the cluster goes anyway).
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::background())
        .await;
    Ok(vec![format!(
        "Operator memory with {created} tasks cached and queued: peak (VmHWM) {:.0} MiB, resident (VmRSS) {:.0} MiB; created and queued in {:.0} s",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
        start.elapsed().as_secs_f64()
    )])
}

fn ms(to: Option<Instant>, from: Option<Instant>) -> f64 {
    match (to, from) {
        (Some(t), Some(f)) => t.saturating_duration_since(f).as_secs_f64() * 1000.0,
        _ => 0.0,
    }
}

async fn wait_for(book: &Book, name: &str) -> Result<(), Error> {
    let started = Instant::now();
    while book
        .lock()
        .expect("book")
        .get(name)
        .and_then(|s| s.done)
        .is_none()
    {
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("{name} did not finish in 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The model clients against a stand-in that answers at once: requests/s and latency.
async fn llm_clients() -> Result<Vec<String>, Error> {
    use cogo_agent::llm::{ChatRequest, Model, ModelConfig, ModelMetrics};
    use cogo_api::agent::ModelProvider;
    use cogo_e2e::standin::StandIn;

    const CALLS: usize = 4000;
    const IN_FLIGHT: usize = 16;
    let mut rows = vec![
        format!(
            "| model client, {CALLS} calls, {IN_FLIGHT} in flight, stand-in on loopback | calls/s | p50 (ms) | p99 (ms) |"
        ),
        "|---|---|---|---|".into(),
    ];
    for provider in [ModelProvider::Gemini, ModelProvider::OpenAICompatible] {
        let standin = match provider {
            ModelProvider::Gemini => StandIn::gemini("bench").await,
            ModelProvider::OpenAICompatible => StandIn::openai("bench").await,
        };
        let config = ModelConfig {
            provider,
            name: "bench-model".into(),
            endpoint: Some(standin.endpoint()),
            api_key: "bench".into(),
            timeout: Duration::from_secs(30),
            attempts: 1,
        };
        let model = Arc::new(Model::new(config.client()?, 1, ModelMetrics::default()));
        eprintln!("[bench] {provider:?} client: {CALLS} calls");
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (model, next) = (model.clone(), next.clone());
                tokio::spawn(async move {
                    let mut took = Vec::new();
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < CALLS {
                        let t = Instant::now();
                        model
                            .chat(&ChatRequest::user("a short question about the weather in Seoul"))
                            .await
                            .map_err(|e| e.to_string())?;
                        took.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok::<_, String>(took)
                })
            })
            .collect();
        let mut took = Vec::new();
        for w in workers {
            took.extend(w.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        took.sort_by(f64::total_cmp);
        rows.push(format!(
            "| {provider:?} | {:.0} | {:.2} | {:.2} |",
            CALLS as f64 / elapsed,
            pct(&took, 0.5),
            pct(&took, 0.99)
        ));
    }
    Ok(rows)
}
