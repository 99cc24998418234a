//! Real-node tests: the local control plane with `COGO_REAL_NODE=1` (containerd, runc, CNI,
//! kubelet and kube-proxy on this machine). Pods run the project's own images; the checks
//! read what the kernel enforces for them from the host's /proc and cgroup files.

use std::{path::PathBuf, time::Duration};

use cogo_e2e::cluster::{Cluster, Namespace, wait_until};
use serde_json::Value;

mod chaos;
mod designs;
mod executor;
mod gateway;
mod knowledge;
mod netpol;
mod workflows;

pub(crate) fn cluster() -> Cluster {
    let c = Cluster::from_env();
    let nodes = c.kubectl_ok(&["get", "nodes", "-l", "cogo.xyz/node=real", "-o", "name"], None);
    assert!(
        nodes.contains("node/cogo-node"),
        "no real node in the cluster: start it with COGO_REAL_NODE=1 tests/cluster/up (make e2e does)"
    );
    c.install_crds();
    c
}

/// Host PIDs of processes whose command line starts with `binary`.
pub(crate) fn pids_of(binary: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.starts_with(binary.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// The memory cgroup (v1) directory of a process.
pub(crate) fn memory_cgroup(pid: u32) -> PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .expect("a memory cgroup");
    PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
}

fn agent_yaml(name: &str, memory: &str) -> String {
    format!(
        "apiVersion: cogo.xyz/v1alpha1\nkind: CogoAgent\nmetadata: {{name: {name}}}\nspec:\n  role: Research\n  \
         resources: {{memory: {memory}, cpuRequest: 100m}}\n  podTemplate: {{terminationGracePeriodSeconds: 60}}\n"
    )
}

pub(crate) fn pod_of(c: &Cluster, ns: &str, instance: &str) -> Value {
    let pods = c.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            &format!("app.kubernetes.io/instance={instance}"),
            "-o",
            "json",
        ],
        None,
    );
    let pods: Value = serde_json::from_str(&pods).unwrap();
    pods["items"][0].clone()
}

/// The chart runs the operator as a pod with its own ServiceAccount and RBAC; it takes the
/// leader Lease and runs a CogoAgent whose pods pass their real probes on the real node.
#[test]
fn the_chart_runs_the_operator_in_the_cluster() {
    let c = cluster();
    let release_ns = "e2e-incluster";
    c.helm_install(
        release_ns,
        &[
            "image.pullPolicy=Never",
            "runtimeImages.pullPolicy=Never",
            "replicaCount=2",
        ],
    );
    let _cleanup = Namespace::adopt(&c, release_ns);

    // Two replicas: one leads, and only the leader is behind the broker Service.
    let pods: Value = serde_json::from_str(&c.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            release_ns,
            "-l",
            "app.kubernetes.io/instance=cogo",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let pods = pods["items"].as_array().unwrap().clone();
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], "cogo-node");
    }
    let mut leader = String::new();
    wait_until(
        Duration::from_secs(60),
        "an operator pod to take the leader Lease",
        || {
            leader = c
                .get_json(release_ns, "lease/cogo-cogo-operator")
                .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
                .unwrap_or_default();
            pods.iter().any(|p| p["metadata"]["name"] == leader.as_str())
        },
    );
    let leader_ip = pods
        .iter()
        .find(|p| p["metadata"]["name"] == leader.as_str())
        .and_then(|p| p["status"]["podIP"].as_str())
        .unwrap()
        .to_string();
    wait_until(
        Duration::from_secs(60),
        "the broker Service to reach the leader alone",
        || {
            let slices = c.kubectl_ok(
                &[
                    "get",
                    "endpointslices",
                    "-n",
                    release_ns,
                    "-l",
                    "kubernetes.io/service-name=cogo-cogo-operator",
                    "-o",
                    "jsonpath={.items[*].endpoints[*].addresses[*]}",
                ],
                None,
            );
            slices.split_whitespace().collect::<Vec<_>>() == [leader_ip.as_str()]
        },
    );
    // A standby that carries the label (a replica that lost the lease and could not clear
    // its own) loses it to the leader's sweep.
    let standby = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .find(|p| *p != leader)
        .unwrap()
        .to_string();
    c.kubectl_ok(
        &[
            "label",
            "pod",
            &standby,
            "-n",
            release_ns,
            "cogo.xyz/leader=true",
            "--overwrite",
        ],
        None,
    );
    wait_until(
        Duration::from_secs(60),
        "the leader to clear the standby's stale label",
        || {
            c.get_json(release_ns, &format!("pod/{standby}"))
                .is_some_and(|p| p["metadata"]["labels"]["cogo.xyz/leader"].is_null())
        },
    );

    let ns = Namespace::create(&c, "e2e-incluster-agents");
    ns.apply_ok(&agent_yaml("research", "256Mi"));
    ns.wait("cogoagent/research", "condition=Ready", 180);
    let agent_pod = pod_of(&c, &ns.name, "research");
    assert_eq!(agent_pod["spec"]["nodeName"], "cogo-node");
    let status = &agent_pod["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true);
    assert!(
        status["image"].as_str().unwrap().contains("cogo-agent:"),
        "{status}"
    );

    // The agent found the broker by its Service name, through cluster DNS.
    let service = c
        .get_json(release_ns, "service/cogo-cogo-operator")
        .expect("the operator's Service");
    let endpoint = format!(
        "{}:8080",
        service["spec"]["clusterIP"].as_str().expect("a ClusterIP")
    );
    let pod = agent_pod["metadata"]["name"].as_str().unwrap().to_string();
    wait_until(
        Duration::from_secs(60),
        "the agent to resolve the broker's Service name",
        || {
            let logs = c.kubectl(&["logs", "-n", &ns.name, &pod], None);
            let text = String::from_utf8_lossy(&logs.stdout);
            text.contains("resolved the broker's address") && text.contains(&endpoint)
        },
    );

    // And it runs tasks: the in-cluster agent leases from the in-cluster broker.
    let task = serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": "echo-in-cluster"},
        "spec": {"agent": "research", "type": "cogo.echo", "input": {"from": "the real node"}},
    });
    ns.apply_ok(&task.to_string());
    ns.wait("agenttask/echo-in-cluster", "condition=Succeeded", 120);
    let done = c.get_json(&ns.name, "agenttask/echo-in-cluster").unwrap();
    assert_eq!(
        done["status"]["result"],
        serde_json::json!({"from": "the real node"})
    );
    assert_eq!(
        done["status"]["pod"], agent_pod["metadata"]["name"],
        "the agent's pod ran it"
    );
    // `kubectl cogo logs` prints that pod's log of the attempt: the agent's lines about it.
    let out = c.kubectl_cogo(&["-n", &ns.name, "logs", "echo-in-cluster"], None);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for said in ["task started", "task succeeded"] {
        assert!(
            log.lines()
                .any(|l| l.contains(said) && l.contains("echo-in-cluster")),
            "{said} missing from:\n{log}"
        );
    }
    assert!(
        !log.lines().any(|l| l.starts_with("20") && l.contains('Z')),
        "timestamps are taken off unless asked for: {log}"
    );

    // SIGKILL the agent's process mid-task: its heartbeats stop, the lease runs out (three
    // intervals of 5 s), and the restarted container runs attempt 2 to success.
    let task = serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": "survives-a-kill"},
        "spec": {"agent": "research", "type": "cogo.sleep", "input": {"seconds": 5}},
    });
    ns.apply_ok(&task.to_string());
    ns.wait(
        "agenttask/survives-a-kill",
        "jsonpath={.status.phase}=Running",
        60,
    );
    let pids = pids_of("/usr/local/bin/cogo-agent");
    assert_eq!(pids.len(), 1, "one agent process on the node: {pids:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    ns.wait("agenttask/survives-a-kill", "condition=Succeeded", 120);
    let done = c.get_json(&ns.name, "agenttask/survives-a-kill").unwrap();
    assert_eq!(done["status"]["attempt"], 2, "{}", done["status"]);
    assert_eq!(done["status"]["attempts"][0]["outcome"], "HeartbeatLost");
    drop(ns);

    c.helm_ok(&["uninstall", "cogo", "-n", release_ns, "--wait"]);
}

/// Non-root, no new privileges, seccomp, a read-only root filesystem and the memory limit are
/// what the kernel applies to the agent's process, not just what the pod spec says.
#[test]
fn security_settings_are_enforced_by_the_kernel() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-enforced");
    let mut operator = cogo_e2e::cluster::Operator::start(&c, "enforced");
    ns.apply_ok(&agent_yaml("locked", "320Mi"));
    ns.wait("cogoagent/locked", "condition=Ready", 180);

    // The pod's own process: the one whose memory cgroup carries this pod's UID. On a busy
    // node it can still be starting (or restarting) when the agent first reads Ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (pod, pid) = loop {
        let pod = pod_of(&c, &ns.name, "locked");
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let found = (!uid.is_empty())
            .then(|| {
                pids_of("/usr/local/bin/cogo-agent").into_iter().find(|p| {
                    let cg = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
                    cg.contains(&uid.replace('-', "_")) || cg.contains(&uid)
                })
            })
            .flatten();
        if let Some(pid) = found {
            break (pod, pid);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agent process of this pod within 60 s; the pod: {}",
            pod["status"]
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    assert_eq!(status_field(pid, "Uid"), "65532", "runs as UID 65532");
    assert_eq!(status_field(pid, "Gid"), "65532");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1", "no privilege escalation");
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "a seccomp filter (RuntimeDefault) is active"
    );
    assert_eq!(
        status_field(pid, "CapEff"),
        "0000000000000000",
        "all capabilities dropped"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("root mount");
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "root is read-only: {root}"
    );
    // A write to the container's root filesystem fails even for root on the host; its /tmp
    // (a size-limited emptyDir) takes one.
    let denied = std::fs::write(format!("/proc/{pid}/root/cogo-write-probe"), b"x").unwrap_err();
    assert_eq!(denied.raw_os_error(), Some(30), "EROFS expected, got {denied}");
    std::fs::write(format!("/proc/{pid}/root/tmp/cogo-write-probe"), b"x").expect("/tmp is writable");
    let limit = std::fs::read_to_string(memory_cgroup(pid).join("memory.limit_in_bytes")).unwrap();
    assert_eq!(
        limit.trim(),
        (320u64 * 1024 * 1024).to_string(),
        "the memory limit is in the pod's cgroup"
    );

    // Deleting the pod sends SIGTERM; the runtime exits at once, well inside its 60 s grace.
    let started = std::time::Instant::now();
    ns.kubectl_ok(&[
        "delete",
        "pod",
        pod["metadata"]["name"].as_str().unwrap(),
        "--wait=false",
    ]);
    wait_until(
        Duration::from_secs(30),
        "the agent process to exit after SIGTERM",
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the runtime was not killed at the end of its grace period"
    );
    let _ = operator.stop();
}
