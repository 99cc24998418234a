//! The chaos suite: the chart with two operator replicas on the real node, the Supabase mirror
//! on a real PostgreSQL, real agent pods, and a burst of tasks while the leader is killed (more
//! than once) and the database goes away for a while with tasks deleted meanwhile. It checks
//! invariants, not counts: every task ends exactly once within its retry limit, every row says
//! what its task's status says, no result is lost, and the operators stay under the chart's
//! memory limit.
//!
//! `make test` runs it at a small scale; `make chaos` runs the soak (`COGO_CHAOS_TASKS`,
//! `COGO_CHAOS_KILLS`).

use std::{collections::BTreeMap, time::Duration};

use cogo_e2e::{
    cluster::{Cluster, Namespace, wait_until},
    postgres::Postgres,
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

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pod holding the operator's leader Lease, and when it last renewed it.
fn leader(c: &Cluster) -> (String, String) {
    let lease = c
        .get_json(RELEASE_NS, "lease/cogo-cogo-operator")
        .unwrap_or_default();
    let field = |f: &str| lease["spec"][f].as_str().unwrap_or_default().to_string();
    (field("holderIdentity"), field("renewTime"))
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

#[test]
fn two_replicas_lose_no_task_through_leader_kills_and_a_database_outage() {
    let c = cluster();
    let total = env_or("COGO_CHAOS_TASKS", 200);
    let kills = env_or("COGO_CHAOS_KILLS", 2);
    let mut pg = Postgres::start_for_pods("chaos");
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
    // The mirror reads its Secret at every connect, so it may come after the install.
    c.kubectl_ok(
        &[
            "create",
            "secret",
            "generic",
            "chaos-db",
            "-n",
            RELEASE_NS,
            &format!("--from-literal=url={}", pg.pod_url()),
        ],
        None,
    );
    let ns = Namespace::create(&c, "e2e-chaos-agents");
    ns.apply_ok(
        "apiVersion: cogo.xyz/v1alpha1\nkind: CogoAgent\nmetadata: {name: research}\nspec:\n  role: Research\n  \
         replicas: 2\n  concurrency: 16\n  resources: {memory: 256Mi, cpuRequest: 50m}\n",
    );
    ns.wait("cogoagent/research", "condition=Ready", 180);

    // The burst: sleeps, echoes (some with results too large for status, kept by the result
    // store) and failures with one retry.
    let big = json!({"blob": "x".repeat(100 * 1024)});
    let items: Vec<Value> = (0..total)
        .map(|i| {
            let spec = match i % 10 {
                0 => json!({"type": "cogo.echo", "input": big}),
                1 => json!({"type": "cogo.fail", "input": {"message": format!("planned {i}")}, "retry": {"limit": 1}}),
                2..=4 => json!({"type": "cogo.echo", "input": {"n": i}}),
                _ => json!({"type": "cogo.sleep", "input": {"seconds": 3 + i % 7}}),
            };
            let mut spec = spec;
            spec["agent"] = json!("research");
            json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": format!("chaos-{i:05}")}, "spec": spec})
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&list.to_string()));

    // Kill the leader while tasks run and complete, `kills` times: by SIGKILL of its process
    // (no goodbye: the standby takes over once the lease runs out) and by deleting its pod
    // (it gives the lease up as it stops), in turn.
    for k in 0..kills {
        std::thread::sleep(Duration::from_secs(3));
        let (was, renewed) = leader(&c);
        assert!(!was.is_empty(), "a leader");
        if k % 2 == 0 {
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
        // Someone alive leads again: the standby, or the killed pod's restarted container
        // (which has the pod's name, so it takes its own record back).
        let killed = std::time::Instant::now();
        let mut now = String::new();
        wait_until(Duration::from_secs(90), "a live replica to lead", || {
            let (holder, at) = leader(&c);
            now = holder;
            !now.is_empty() && (now != was || at != renewed)
        });
        let running = tasks(&ns)
            .iter()
            .filter(|t| t["status"]["phase"] == "Running")
            .count();
        eprintln!(
            "chaos: killed leader {was}; {now} leads after {:.1} s; {running} tasks running",
            killed.elapsed().as_secs_f64()
        );
    }

    // The database goes away; tasks finish, and some finished tasks are deleted, meanwhile.
    pg.stop();
    std::thread::sleep(Duration::from_secs(15));
    let finished: Vec<String> = tasks(&ns)
        .iter()
        .filter(|t| t["status"]["phase"] == "Succeeded" && t["spec"]["type"] == "cogo.echo")
        .filter_map(|t| t["metadata"]["name"].as_str().map(String::from))
        .take(3)
        .collect();
    for name in &finished {
        ns.kubectl_ok(&["delete", "agenttask", name]);
    }
    pg.resume();

    let left = total - finished.len();
    wait_until(Duration::from_secs(600), "every task to end", || {
        let ts = tasks(&ns);
        ts.len() == left
            && ts.iter().all(|t| {
                matches!(
                    t["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed" | "Cancelled")
                )
            })
    });

    // Every task ended exactly once, within its retry limit, as its type says.
    let ts = tasks(&ns);
    for t in &ts {
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
    wait_until(Duration::from_secs(120), "every row to match its task", || {
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
}
