//! The chaos suite: the chart with two operator replicas on the real node, the Supabase mirror
//! on a real PostgreSQL behind PgBouncer, real agent pods, and waves of tasks while, in turn:
//! the leader is killed (more than once, by SIGKILL and by pod deletion) while indexed tasks'
//! items run too, a burst of tasks
//! arrives at once, the API server answers slowly (a proxy adds latency), the replicas' clocks
//! disagree, the API server restarts, PgBouncer restarts, the database's disk fills up and is
//! freed, and the database goes away while finished tasks are deleted. It checks invariants,
//! not counts: every task ends exactly once within its retry limit, every item of an indexed
//! task succeeds with its result kept, every row says what its task's status says, no result
//! is lost, one replica leads at a time, and the operators stay
//! under the chart's memory limit.
//!
//! `make test` runs it at a small scale; `make chaos` runs the soak (`COGO_CHAOS_TASKS`,
//! `COGO_CHAOS_KILLS`, `COGO_CHAOS_BURST`, `COGO_CHAOS_OUTAGE_SECONDS`).

use std::{collections::BTreeMap, time::Duration};

use cogo_e2e::{
    cluster::{Cluster, Namespace, wait_until},
    postgres::{PgBouncer, Postgres},
    skew::SkewedClocks,
    slow::SlowApiServer,
};
use serde_json::{Value, json};

use super::{cluster, memory_cgroup, pids_of};

fn tasks(ns: &Namespace) -> Vec<Value> {
    ns.items("agenttasks")
}

fn rows(pg: &Postgres, ns: &str) -> BTreeMap<String, Value> {
    pg.task_rows(ns)
}

const RELEASE_NS: &str = "e2e-chaos";
const DEPLOYMENT: &str = "cogo-cogo-operator";

/// Reports progress, with the time since the suite started.
fn say(what: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    eprintln!("chaos [{:>5.1} s]: {what}", start.elapsed().as_secs_f64());
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The operator's leader Lease: who holds it, when it was last renewed, and how many times it
/// changed hands.
fn leader(c: &Cluster) -> (String, String, i64) {
    let lease = c
        .get_json(RELEASE_NS, &format!("lease/{DEPLOYMENT}"))
        .unwrap_or_default();
    let field = |f: &str| lease["spec"][f].as_str().unwrap_or_default().to_string();
    let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap_or_default();
    (field("holderIdentity"), field("renewTime"), transitions)
}

/// The operator's pods, by name, with whether each carries the leader label the broker
/// Service selects (only the leader serves).
fn operator_pods(c: &Cluster) -> Vec<(String, bool)> {
    let out = c.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            RELEASE_NS,
            "-l",
            "app.kubernetes.io/name=cogo-operator",
            "-o",
            "json",
        ],
        None,
    );
    let pods: Value = serde_json::from_str(&out).unwrap();
    pods["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let serves = p["metadata"]["labels"]["cogo.xyz/leader"] == "true";
            (
                p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                serves,
            )
        })
        .collect()
}

/// Prints the operator replicas' logs (and their previous containers') if the suite fails
/// while it lives.
struct LogsOnFailure<'a>(&'a Cluster);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (pod, serves) in operator_pods(self.0) {
            for previous in ["--previous=false", "--previous=true"] {
                let out = self
                    .0
                    .kubectl(&["logs", "-n", RELEASE_NS, &pod, previous, "--tail=60"], None);
                eprintln!(
                    "--- {pod} (serves: {serves}, {previous}) ---\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
}

/// The host PID of the operator process in the pod with UID `uid`.
fn process_of_pod(uid: &str) -> u32 {
    let marks = [uid.to_string(), uid.replace('-', "_")];
    pids_of("/usr/local/bin/cogo-operator")
        .into_iter()
        .find(|pid| {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            marks.iter().any(|m| cgroup.contains(m.as_str()))
        })
        .unwrap_or_else(|| panic!("no operator process of pod {uid}"))
}

/// Creates `n` tasks named `chaos-<i>` from `*made` on: sleeps, echoes (some with results too
/// large for status, kept by the result store) and failures with one retry.
fn wave(c: &Cluster, ns: &Namespace, made: &mut usize, n: usize) {
    // Hex of a simple generator: compresses about as well as real data, so it takes room.
    let mut seed = *made as u64 + 1;
    let blob: String = (0..50 * 1024)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            format!("{:02x}", (seed >> 56) as u8)
        })
        .collect();
    let big = json!({"blob": blob});
    let items: Vec<Value> = (*made..*made + n)
        .map(|i| {
            let mut spec = match i % 10 {
                0 => json!({"type": "cogo.echo", "input": big}),
                1 => json!({"type": "cogo.fail", "input": {"message": format!("planned {i}")}, "retry": {"limit": 1}}),
                2..=4 => json!({"type": "cogo.echo", "input": {"n": i}}),
                _ => json!({"type": "cogo.sleep", "input": {"seconds": 2 + i % 5}}),
            };
            spec["agent"] = json!("research");
            json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": format!("chaos-{i:05}")}, "spec": spec})
        })
        .collect();
    *made += n;
    create(c, ns, items);
}

fn create(c: &Cluster, ns: &Namespace, items: Vec<Value>) {
    for chunk in items.chunks(500) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk});
        c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&list.to_string()));
    }
}

/// Says, every 30 s, which tasks have not ended: how many by phase and type, and the first
/// one's conditions.
fn report_waiting(ts: &[Value]) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap();
    if last.is_some_and(|at| at.elapsed() < Duration::from_secs(30)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    let waiting: Vec<&Value> = ts
        .iter()
        .filter(|t| {
            !matches!(
                t["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed" | "Cancelled")
            )
        })
        .collect();
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for t in &waiting {
        *by.entry(format!("{} {}", t["status"]["phase"], t["spec"]["type"]))
            .or_default() += 1;
    }
    let first = waiting.first().map(|t| {
        format!(
            "{}: attempt {} {}",
            t["metadata"]["name"], t["status"]["attempt"], t["status"]["conditions"]
        )
    });
    say(&format!("{} tasks not ended {by:?}; {first:?}", waiting.len()));
}

fn running(ns: &Namespace) -> usize {
    tasks(ns)
        .iter()
        .filter(|t| t["status"]["phase"] == "Running")
        .count()
}

/// Kills the leader, by SIGKILL of its process (no goodbye: the standby takes over once the
/// lease runs out) when `hard`, else by deleting its pod (it gives the lease up as it stops),
/// and waits until a live replica leads.
fn kill_leader(c: &Cluster, ns: &Namespace, hard: bool) {
    let (was, renewed, _) = leader(c);
    assert!(!was.is_empty(), "a leader");
    if hard {
        let uid = c
            .get_json(RELEASE_NS, &format!("pod/{was}"))
            .and_then(|p| p["metadata"]["uid"].as_str().map(String::from))
            .unwrap();
        let pid = process_of_pod(&uid);
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    } else {
        c.kubectl_ok(
            &[
                "delete",
                "pod",
                &was,
                "-n",
                RELEASE_NS,
                "--grace-period=0",
                "--force",
            ],
            None,
        );
    }
    // Someone alive leads again: the standby, or the killed pod's restarted container (which
    // has the pod's name, so it takes its own record back).
    let killed = std::time::Instant::now();
    let mut now = String::new();
    wait_until(Duration::from_secs(90), "a live replica to lead", || {
        let (holder, at, _) = leader(c);
        now = holder;
        !now.is_empty() && (now != was || at != renewed)
    });
    say(&format!(
        "killed leader {was}; {now} leads after {:.1} s; {} tasks running",
        killed.elapsed().as_secs_f64(),
        running(ns)
    ));
}

/// The leader's wall clock `skew` behind the truth and the standby's `skew` ahead, for
/// `span`: the holder's renewTime then looks long past to the standby, which must still not
/// take over (it counts from when it saw the record change), so one replica leads and serves
/// throughout.
fn skew_clocks(c: &Cluster, clocks: &SkewedClocks, skew: Duration, span: Duration) {
    wait_until(Duration::from_secs(240), "a leader and a standby", || {
        let pods = operator_pods(c);
        pods.len() == 2 && pods.iter().filter(|(_, serves)| *serves).count() == 1
    });
    // The lease has settled (nothing earlier is still changing hands).
    let mut settled = leader(c);
    wait_until(
        Duration::from_secs(90),
        "the lease to stay with one holder",
        || {
            std::thread::sleep(Duration::from_secs(6));
            let now = leader(c);
            let same = (&now.0, now.2) == (&settled.0, settled.2);
            settled = now;
            same
        },
    );
    let (holder, _, transitions) = settled;
    for (pod, _) in operator_pods(c) {
        clocks.set(&pod, skew, pod != holder);
    }
    let until = std::time::Instant::now() + span;
    while std::time::Instant::now() < until {
        let (now, _, t) = leader(c);
        assert_eq!(
            (now.as_str(), t),
            (holder.as_str(), transitions),
            "the lease changed hands while clocks disagreed by {} s",
            2 * skew.as_secs()
        );
        let serving: Vec<_> = operator_pods(c)
            .into_iter()
            .filter(|(_, serves)| *serves)
            .map(|(p, _)| p)
            .collect();
        assert!(serving.len() <= 1, "two replicas serve at once: {serving:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    clocks.reset();
    say(&format!(
        "clocks {} s apart for {} s; {holder} led throughout",
        2 * skew.as_secs(),
        span.as_secs()
    ));
}

#[test]
fn two_replicas_lose_no_task_through_failovers_slowness_skew_and_database_trouble() {
    say("starting");
    let c = cluster();
    let total = env_or("COGO_CHAOS_TASKS", 240);
    let kills = env_or("COGO_CHAOS_KILLS", 2);
    let burst = env_or("COGO_CHAOS_BURST", 1000);
    let outage = env_or("COGO_CHAOS_OUTAGE_SECONDS", 15) as u64;
    let per_wave = total.div_ceil(7);
    let mut pg = Postgres::start_for_pods_on_disk("chaos", 512);
    let mut bouncer = PgBouncer::start_for_pods(&pg, "chaos");
    c.helm_install(
        RELEASE_NS,
        &[
            "image.pullPolicy=Never",
            "runtimeImages.pullPolicy=Never",
            "replicaCount=2",
            "supabase.secretName=chaos-db",
        ],
    );
    let _release = Namespace::adopt(&c, RELEASE_NS);
    let _logs = LogsOnFailure(&c);
    // The mirror reads its Secret at every connect, so it may come after the install.
    c.kubectl_ok(
        &[
            "create",
            "secret",
            "generic",
            "chaos-db",
            "-n",
            RELEASE_NS,
            &format!("--from-literal=url={}", bouncer.pod_url()),
        ],
        None,
    );
    let clocks = SkewedClocks::install(&c, RELEASE_NS, DEPLOYMENT);
    let ns = Namespace::create(&c, "e2e-chaos-agents");
    ns.apply_ok(
        "apiVersion: cogo.xyz/v1alpha1\nkind: CogoAgent\nmetadata: {name: research}\nspec:\n  role: Research\n  \
         replicas: 2\n  concurrency: 16\n  resources: {memory: 256Mi, cpuRequest: 50m}\n",
    );
    ns.wait("cogoagent/research", "condition=Ready", 180);
    let mut made = 0;
    say("installed, clocks settable, agents ready");

    // The leader dies while tasks and the items of indexed tasks run and complete, `kills`
    // times, by SIGKILL and by pod deletion in turn.
    wave(&c, &ns, &mut made, per_wave);
    let indexed = [
        (
            "items-echo",
            600,
            json!({"type": "cogo.echo", "items": {"count": 600}, "parallelism": 24,
                                   "input": {"page": "{{index}}"}}),
        ),
        (
            "items-sleep",
            40,
            json!({"type": "cogo.sleep", "items": {"count": 40}, "parallelism": 8,
                                   "input": {"seconds": 2}}),
        ),
    ];
    create(
        &c,
        &ns,
        indexed
            .iter()
            .map(|(name, _, spec)| {
                let mut spec = spec.clone();
                spec["agent"] = json!("research");
                json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                       "metadata": {"name": name}, "spec": spec})
            })
            .collect(),
    );
    for k in 0..kills {
        std::thread::sleep(Duration::from_secs(3));
        kill_leader(&c, &ns, k % 2 == 0);
    }

    // A burst: `burst` tasks at once (10,000 in `make chaos`).
    let started = std::time::Instant::now();
    let items = (0..burst)
        .map(|i| {
            json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": format!("burst-{i:05}")},
                   "spec": {"agent": "research", "type": "cogo.echo", "input": {"burst": i}}})
        })
        .collect();
    create(&c, &ns, items);
    say(&format!(
        "{burst} tasks created in {:.1} s; {} running",
        started.elapsed().as_secs_f64(),
        running(&ns)
    ));

    // The API server answers slowly: 300 ms more each way on every connection of the pods.
    {
        let slow = SlowApiServer::start(&c, Duration::from_millis(300));
        wave(&c, &ns, &mut made, per_wave);
        std::thread::sleep(Duration::from_secs(20));
        assert!(
            slow.connections() > 0,
            "the operator pods reached the API server through the slow proxy"
        );
        say(&format!(
            "a slow API server for 20 s ({} connections through it); {} tasks running",
            slow.connections(),
            running(&ns)
        ));
    }

    // The replicas' clocks disagree by three minutes.
    wave(&c, &ns, &mut made, per_wave);
    skew_clocks(&c, &clocks, Duration::from_secs(90), Duration::from_secs(20));

    // The API server is killed and started again.
    wave(&c, &ns, &mut made, per_wave);
    std::thread::sleep(Duration::from_secs(2));
    let away = c.restart_api_server();
    say(&format!(
        "the API server was away {:.1} s; {} tasks running",
        away.as_secs_f64(),
        running(&ns)
    ));

    // PgBouncer restarts, cutting every connection through it.
    wave(&c, &ns, &mut made, per_wave);
    std::thread::sleep(Duration::from_secs(2));
    bouncer.restart();
    say("PgBouncer restarted");

    // The database's disk fills up while a wave runs, then is freed.
    let before = pg.log().matches("No space left on device").count();
    pg.fill_disk();
    wave(&c, &ns, &mut made, per_wave);
    std::thread::sleep(Duration::from_secs(15));
    let refused = pg.log().matches("No space left on device").count() - before;
    pg.free_disk();
    say(&format!(
        "the database's disk was full for 15 s ({refused} writes refused for lack of room, the probe's included)"
    ));

    // The database goes away; tasks finish, and some finished tasks are deleted, meanwhile.
    wave(&c, &ns, &mut made, total.saturating_sub(6 * per_wave));
    pg.stop();
    std::thread::sleep(Duration::from_secs(outage));
    let finished: Vec<String> = tasks(&ns)
        .iter()
        .filter(|t| t["status"]["phase"] == "Succeeded" && t["spec"]["type"] == "cogo.echo")
        .filter(|t| t["spec"]["items"].is_null())
        .filter_map(|t| t["metadata"]["name"].as_str().map(String::from))
        .take(3)
        .collect();
    for name in &finished {
        ns.kubectl_ok(&["delete", "agenttask", name]);
    }
    pg.resume();
    say(&format!("the database was away for {outage} s"));

    let left = made + burst + indexed.len() - finished.len();
    let patience = Duration::from_secs(600 + (left / 20) as u64);
    // Listing thousands of tasks is not free: look every few seconds.
    wait_until(patience, "every task to end", || {
        let ts = tasks(&ns);
        let ended = ts.len() == left
            && ts.iter().all(|t| {
                matches!(
                    t["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed" | "Cancelled")
                )
            });
        if !ended {
            report_waiting(&ts);
            std::thread::sleep(Duration::from_secs(3));
        }
        ended
    });
    say("every task ended");

    // Every task ended exactly once, within its retry limit, as its type says; every item of
    // an indexed task succeeded, and its result is kept.
    let ts = tasks(&ns);
    for (name, count, _) in &indexed {
        let t = ts.iter().find(|t| t["metadata"]["name"] == *name).unwrap();
        let last = count - 1;
        assert_eq!(t["status"]["phase"], "Succeeded", "{name}: {t}");
        assert_eq!(
            t["status"]["items"],
            json!({"total": count, "pending": 0, "running": 0, "succeeded": count, "failed": 0,
                   "succeededIndexes": format!("0-{last}")}),
            "{name}"
        );
        let kept = pg.query(&format!(
            "select count(*) from public.cogo_task_item_results r join public.distributed_agent_tasks d \
             on d.id = r.id where d.namespace = '{}' and d.name = '{name}'",
            ns.name
        ));
        assert_eq!(kept, count.to_string(), "{name}: every item's result is kept");
    }
    let page = pg.query(&format!(
        "select r.result::text from public.cogo_task_item_results r join public.distributed_agent_tasks d \
         on d.id = r.id where d.namespace = '{}' and d.name = 'items-echo' and r.item = 321",
        ns.name
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&page).unwrap(),
        json!({"page": 321})
    );
    for t in ts.iter().filter(|t| t["spec"]["items"].is_null()) {
        let name = t["metadata"]["name"].as_str().unwrap();
        let s = &t["status"];
        let attempts = s["attempts"].as_array().cloned().unwrap_or_default();
        let succeeded = attempts.iter().filter(|a| a["outcome"] == "Succeeded").count();
        let limit = t["spec"]["retry"]["limit"].as_i64().unwrap_or(3);
        assert!(
            s["attempt"].as_i64().unwrap() <= limit + 1,
            "{name} ran past its retry limit: {s}"
        );
        if t["spec"]["type"] == "cogo.fail" {
            assert_eq!(s["phase"], "Failed", "{name}: {s}");
            assert_eq!(succeeded, 0, "{name}");
        } else {
            assert_eq!(s["phase"], "Succeeded", "{name}: {s}");
            assert_eq!(succeeded, 1, "{name} succeeded exactly once: {s}");
            assert_eq!(
                attempts.last().unwrap()["outcome"],
                "Succeeded",
                "{name}: the success is the last attempt"
            );
        }
    }

    // Every row says what its task's status says, with no result lost.
    wait_until(Duration::from_secs(180), "every row to match its task", || {
        let rs = rows(&pg, &ns.name);
        ts.iter().all(|t| {
            let name = t["metadata"]["name"].as_str().unwrap();
            rs.get(name).is_some_and(|r| {
                r["phase"] == t["status"]["phase"]
                    && r["attempts"] == t["status"]["attempt"]
                    && r["result_digest"] == t["status"]["resultRef"]["digest"]
            })
        }) && finished.iter().all(|n| {
            rs.get(n)
                .is_some_and(|r| r["deleted_at"].is_string() && r["phase"] == "Succeeded")
        })
    });
    say("every row matches its task");
    let rs = rows(&pg, &ns.name);
    for t in &ts {
        let name = t["metadata"]["name"].as_str().unwrap();
        let r = &rs[name];
        let expected = if t["status"]["resultRef"].is_object() {
            &t["spec"]["input"]
        } else {
            &t["status"]["result"]
        };
        if t["status"]["phase"] == "Succeeded" {
            assert_eq!(&r["result_data"], expected, "{name}: the row holds the result");
        } else {
            assert!(
                r["result_data"].is_null(),
                "{name}: a failed task's row holds no result"
            );
        }
        assert!(r["deleted_at"].is_null(), "{name} is not deleted");
    }
    assert_eq!(
        pg.query("select count(*) from cogo_task_results"),
        "0",
        "every stored result reached its row"
    );

    // The operators stayed under the chart's memory limit (256Mi).
    for pid in pids_of("/usr/local/bin/cogo-operator") {
        let peak: u64 = std::fs::read_to_string(memory_cgroup(pid).join("memory.max_usage_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(peak < 256 << 20, "an operator peaked at {} MiB", peak >> 20);
    }
    drop(ns);
    c.helm_ok(&["uninstall", "cogo", "-n", RELEASE_NS, "--wait"]);
    drop(clocks);
}
