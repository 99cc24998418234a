//! The NetworkPolicies Cogo makes, enforced on the real node by kube-network-policies (run as a
//! privileged pod on the node's network): only agent pods reach the operator's broker; a
//! PythonSandbox worker reaches its Executor and DNS and nothing else; code in the sandbox
//! reaches nothing at all. Probe pods (the worker image's Python, labelled as the pods they stand
//! for) try each connection and print what got through.

use std::{process::Command, time::Duration};

use cogo_e2e::cluster::{Cluster, Namespace, wait_until};
use serde_json::{Value, json};

use super::cluster;

const RELEASE_NS: &str = "e2e-netpol-release";
const NS: &str = "e2e-netpol";

/// The netfilter queue the enforcer reads (its default `--nfqueue-id`).
const QUEUE: &str = "100";
/// The real node's pod addresses (tests/cluster/node.sh).
const POD_CIDR: &str = "10.88.0.0/16";
/// The chain that hands the pods' new connections to the enforcer.
const CHAIN: &str = "COGO-E2E-NETPOL";
/// The comment node.sh's cleanup looks for, should a test die with the jump in place.
const TAG: &str = "cogo-local-node";
/// The jump into [`CHAIN`] from the mangle table's postrouting hook (after `-I` or `-D`).
const HOOK: [&str; 7] = ["POSTROUTING", "-m", "comment", "--comment", TAG, "-j", CHAIN];

/// kube-network-policies enforcing the cluster's NetworkPolicies for the real node's pods, as
/// it is deployed: a privileged pod on the node's network with a ServiceAccount that may only
/// list and watch pods, namespaces and NetworkPolicies. It decides on the first packet of every
/// connection, which the kernel hands it through a netfilter queue.
///
/// The enforcer asks for those packets with an nftables `queue` rule, which needs the kernel's
/// `nft_queue` (`CONFIG_NFT_QUEUE`); kernels built without it (this machine's among them) refuse
/// the rule and every sync fails. The same packets reach the same queue through iptables'
/// `NFQUEUE` target (`CONFIG_NETFILTER_XT_TARGET_NFQUEUE`), so there the test installs that,
/// at the hook the enforcer uses (postrouting, before source NAT) and with its exemptions (the
/// node's root-owned traffic, established connections). The verdicts are the enforcer's own;
/// with no reader on the queue the kernel drops what is queued, as the enforcer's default
/// (not `--fail-open`) does. Removed when dropped, before the pod goes.
struct Enforcer<'a> {
    c: &'a Cluster,
}

/// The enforcer's ServiceAccount, its least-privilege ClusterRole, and its pod.
/// On the node's network the API server is at 127.0.0.1 (the `kubernetes` Service address is
/// translated for pods on the bridge only), so the pod is told so.
fn enforcer_objects(api_server_port: u16) -> Vec<Value> {
    let meta = json!({"name": "cogo-e2e-kube-network-policies", "namespace": "kube-system"});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "cogo-e2e-kube-network-policies"},
               "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
                         {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "cogo-e2e-kube-network-policies"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cogo-e2e-kube-network-policies"},
               "subjects": [{"kind": "ServiceAccount", "name": "cogo-e2e-kube-network-policies", "namespace": "kube-system"}]}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": {"nodeName": "cogo-node", "hostNetwork": true,
                        "serviceAccountName": "cogo-e2e-kube-network-policies",
                        "terminationGracePeriodSeconds": 10,
                        "containers": [{"name": "enforcer",
                                        "image": "cogo-kube-network-policies:0.8.0", "imagePullPolicy": "Never",
                                        "args": ["--hostname-override=cogo-node", "--disable-nri",
                                                 "--netfilter-bug-1766-fix=false", format!("--nfqueue-id={QUEUE}"),
                                                 "--metrics-bind-address=127.0.0.1:0", "--v=2"],
                                        "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                                                {"name": "KUBERNETES_SERVICE_PORT", "value": api_server_port.to_string()}],
                                        "securityContext": {"privileged": true, "runAsUser": 0, "runAsNonRoot": false}}]}}),
    ]
}

impl<'a> Enforcer<'a> {
    fn start(c: &'a Cluster) -> Enforcer<'a> {
        unhook();
        for obj in enforcer_objects(c.api_server_port()) {
            c.kubectl_ok(&["apply", "-f", "-"], Some(&obj.to_string()));
        }
        let e = Enforcer { c };
        wait_until(Duration::from_secs(90), "the enforcer reading its queue", || {
            std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().next() == Some(QUEUE))
        });
        // A kernel with nft_queue takes the enforcer's own rules, which it synced before it
        // opened its queue: then nothing is added.
        let own_rules = Command::new("nft")
            .args(["list", "table", "inet", "kube-network-policies"])
            .output()
            .is_ok_and(|o| o.status.success());
        if own_rules {
            return e;
        }
        for rule in [
            vec!["-N", CHAIN],
            vec!["-A", CHAIN, "-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
            vec![
                "-A",
                CHAIN,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "RETURN",
            ],
            vec!["-A", CHAIN, "-s", POD_CIDR, "-j", "NFQUEUE", "--queue-num", QUEUE],
            vec!["-A", CHAIN, "-d", POD_CIDR, "-j", "NFQUEUE", "--queue-num", QUEUE],
            [&["-I"][..], &HOOK].concat(),
        ] {
            assert!(
                iptables(&rule),
                "iptables {rule:?} failed (the real-node tests run as root with iptables)"
            );
        }
        e
    }
}

/// Removes the test's hook and chain, if there.
fn unhook() {
    iptables(&[&["-D"][..], &HOOK].concat());
    iptables(&["-F", CHAIN]);
    iptables(&["-X", CHAIN]);
}

fn iptables(args: &[&str]) -> bool {
    Command::new("iptables")
        .args(["-t", "mangle"])
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Drop for Enforcer<'_> {
    fn drop(&mut self) {
        unhook();
        if std::thread::panicking() {
            let log = self.c.kubectl(
                &["logs", "-n", "kube-system", "cogo-e2e-kube-network-policies"],
                None,
            );
            eprintln!(
                "the enforcer's log:\n{}{}",
                String::from_utf8_lossy(&log.stdout),
                String::from_utf8_lossy(&log.stderr)
            );
        }
        for obj in enforcer_objects(self.c.api_server_port()).iter().rev() {
            self.c.kubectl(
                &["delete", "--ignore-not-found", "--wait=true", "-f", "-"],
                Some(&obj.to_string()),
            );
        }
    }
}

/// Tries each target (`+` or `-`, then `tcp:<ip>:<port>`, or `dns:<ip>:53` for a DNS query over
/// UDP; 3 s per try) and prints `reach <target>` or `blocked <target>`. The `+` targets, those
/// the test expects to reach, go first and are tried until reached for up to 30 s, as the
/// enforcer learns a new pod's address from the API server; once one is reached the enforcer
/// knows the pod, and each `-` target is tried once.
const PROBE: &str = r#"
import socket, sys, time
def attempt(t):
    proto, host, port = t.split(":")
    try:
        if proto == "tcp":
            socket.create_connection((host, int(port)), timeout=3).close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04cogo\x03xyz\x00\x00\x01\x00\x01", (host, int(port)))
            s.recvfrom(512)
        return None
    except Exception as e:
        return type(e).__name__
args = sys.argv[1:]
for t in [a[1:] for a in args if a[0] == "+"]:
    deadline = time.time() + 30
    why = attempt(t)
    while why and time.time() < deadline:
        time.sleep(0.5)
        why = attempt(t)
    print("blocked" if why else "reach", t, why or "", flush=True)
for t in [a[1:] for a in args if a[0] == "-"]:
    why = attempt(t)
    print("blocked" if why else "reach", t, why or "", flush=True)
"#;

/// Runs a probe pod named `name` with `labels` against the targets of `expected` (a target, and
/// whether it should be reached); what got through, in the same order.
fn probe(ns: &Namespace, name: &str, labels: &Value, expected: &[(String, bool)]) -> Vec<(String, bool)> {
    let args: Vec<String> = expected
        .iter()
        .map(|(t, reach)| format!("{}{t}", if *reach { '+' } else { '-' }))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                 "containers": [{"name": "probe", "image": format!("cogo-worker:{}", env!("CARGO_PKG_VERSION")),
                                 "imagePullPolicy": "Never", "command": ["python3", "-c", PROBE],
                                 "args": args,
                                 "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true,
                                                     "runAsUser": 65532}}]}});
    ns.apply_ok(&pod.to_string());
    ns.wait(&format!("pod/{name}"), "jsonpath={.status.phase}=Succeeded", 180);
    let out = ns.kubectl_ok(&["logs", name]);
    expected
        .iter()
        .map(|(t, _)| {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(t.as_str()))
                .unwrap_or_else(|| panic!("{name} printed nothing for {t}: {out}"));
            (t.clone(), line.starts_with("reach "))
        })
        .collect()
}

fn pod(c: &Cluster, ns: &str, selector: &str) -> Value {
    let pods: Value = serde_json::from_str(&c.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            selector,
            "--field-selector=status.phase=Running",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    pods["items"][0].clone()
}

fn ip(pod: &Value) -> String {
    pod["status"]["podIP"]
        .as_str()
        .expect("a pod address")
        .to_string()
}

#[test]
fn policies_hold_on_the_real_node_broker_for_agents_workers_to_their_executor_sandbox_to_nothing() {
    let c = cluster();
    c.helm_install_with(
        RELEASE_NS,
        &["image.pullPolicy=Never", "runtimeImages.pullPolicy=Never"],
        "",
    );
    let _release = Namespace::adopt(&c, RELEASE_NS);
    let ns = Namespace::create(&c, NS);
    for obj in [
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "executor"},
               "spec": {"role": "Executor", "resources": {"cpuRequest": "50m", "memory": "256Mi"}}}),
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python"},
               "spec": {"kind": "PythonSandbox", "replicas": 1, "capacity": 1, "resources": {"cpuRequest": "50m"}}}),
    ] {
        ns.apply_ok(&obj.to_string());
    }
    ns.wait("cogoagent/executor", "condition=Ready", 180);
    ns.wait("cogoworker/python", "condition=Ready", 180);

    let operator = pod(
        &c,
        RELEASE_NS,
        "app.kubernetes.io/name=cogo-operator,cogo.xyz/leader=true",
    );
    let executor = pod(&c, NS, "app.kubernetes.io/name=cogo-agent");
    let worker = pod(&c, NS, "app.kubernetes.io/name=cogo-worker");
    let dns = pod(&c, "kube-system", "k8s-app=kube-dns");
    let worker_labels: Value = serde_json::from_str(&ns.kubectl_ok(&[
        "get",
        "deployment",
        "-l",
        "app.kubernetes.io/name=cogo-worker",
        "-o",
        "jsonpath={.items[0].spec.selector.matchLabels}",
    ]))
    .unwrap();
    let broker = format!("tcp:{}:8080", ip(&operator));
    let to_executor = format!("tcp:{}:6005", ip(&executor));
    let to_worker = format!("tcp:{}:3001", ip(&worker));
    let dns_udp = format!("dns:{}:53", ip(&dns));
    let dns_tcp = format!("tcp:{}:53", ip(&dns));

    // Without an enforcer the policies are words: any pod reaches the broker. (A hook left by
    // a run that was killed is removed first.)
    unhook();
    let open = vec![(broker.clone(), true)];
    assert_eq!(
        probe(&ns, "before", &json!({}), &open),
        open,
        "the broker is up and reachable"
    );

    let _enforcer = Enforcer::start(&c);
    let agent_labels =
        json!({"app.kubernetes.io/name": "cogo-agent", "app.kubernetes.io/managed-by": "cogo-operator"});
    let agent = vec![(broker.clone(), true), (to_worker.clone(), true)];
    assert_eq!(
        probe(&ns, "agent", &agent_labels, &agent),
        agent,
        "an agent pod reaches the broker and a worker's port"
    );
    let stranger = vec![(to_executor.clone(), true), (broker.clone(), false)];
    assert_eq!(
        probe(&ns, "stranger", &json!({}), &stranger),
        stranger,
        "a pod that is no agent does not reach the broker"
    );
    let from_worker = vec![
        (to_executor.clone(), true),
        (dns_udp.clone(), true),
        (dns_tcp.clone(), true),
        (broker.clone(), false),
        (to_worker.clone(), false),
    ];
    assert_eq!(
        probe(&ns, "worker", &worker_labels, &from_worker),
        from_worker,
        "a PythonSandbox worker reaches its Executor and DNS only"
    );

    // Code in the sandbox has no network at all, not even its own Executor: it runs in a
    // network namespace of its own, which the worker's policy backs.
    let (host, port) = (ip(&executor), 6005);
    ns.apply_ok(
        &json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": "reach-out"},
                "spec": {"role": "Executor", "type": "python.execute", "input": {"code": format!(
                    "import socket\ntry:\n    socket.create_connection(('{host}', {port}), timeout=3).close()\n    print('reach')\nexcept OSError as e:\n    print('blocked', type(e).__name__)\n")}}})
        .to_string(),
    );
    ns.wait("agenttask/reach-out", "jsonpath={.status.phase}=Succeeded", 120);
    let result: Value = serde_json::from_str(&ns.kubectl_ok(&[
        "get",
        "agenttask",
        "reach-out",
        "-o",
        "jsonpath={.status.result}",
    ]))
    .unwrap();
    assert!(
        result["stdout"]
            .as_str()
            .is_some_and(|s| s.starts_with("blocked")),
        "{result}"
    );
}
