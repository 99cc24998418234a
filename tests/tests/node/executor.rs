//! The Executor and PythonSandbox workers as pods on the real node, from the images built
//! here: `python.execute` computes real results in the workers' sandboxes, escapes are stopped
//! while the workers stay healthy, packages come from a package index served on the node's
//! address, workers and the Executor can be killed without losing a task, and the Executor
//! refuses every token that is not its own worker's.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use cogo_e2e::{
    cluster::{Cluster, NODE_ADDRESS, Namespace, Operator, token_of, wait_until},
    pyindex::PackageIndex,
};
use serde_json::{Value, json};

use super::{cluster, pids_of};

/// An Executor CogoAgent small enough for the node.
fn executor() -> Value {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "executor"},
           "spec": {"role": "Executor", "resources": {"cpuRequest": "50m", "memory": "256Mi"}}})
}

/// A PythonSandbox CogoWorker with small limits, installing packages from `index`.
fn python_worker(replicas: i32, capacity: i32, index: &str) -> Value {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python"},
           "spec": {"kind": "PythonSandbox", "replicas": replicas, "capacity": capacity,
                    "resources": {"cpuRequest": "50m"},
                    "sandbox": {"timeoutSeconds": 5, "memoryLimit": "256Mi", "maxProcesses": 16,
                                "maxFileSize": "4Mi", "workspaceSize": "16Mi", "maxOutputSize": "32Ki",
                                "allowedPackages": ["python-dateutil", "six"], "packageIndexUrl": index}}})
}

fn python_task(name: &str, input: Value) -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
           "spec": {"role": "Executor", "type": "python.execute", "input": input,
                    "retry": {"limit": 2, "backoff": {"initialSeconds": 1, "maxSeconds": 2}}}})
    .to_string()
}

/// The task once it succeeded.
fn succeeded(c: &Cluster, ns: &Namespace, name: &str) -> Value {
    ns.wait(&format!("agenttask/{name}"), "condition=Succeeded", 120);
    c.get_json(&ns.name, &format!("agenttask/{name}"))
        .expect("the task")
}

fn pod_ip(c: &Cluster, ns: &str, instance: &str) -> String {
    super::pod_of(c, ns, instance)["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn secret(c: &Cluster, ns: &str, name: &str) -> String {
    let template = "go-template={{.data.token | base64decode}}";
    c.kubectl_ok(
        &["get", "-n", ns, &format!("secret/{name}"), "-o", template],
        None,
    )
}

/// Asks the Executor at `ip` for a WebSocket with `token`; returns the HTTP status, the body,
/// and the connection.
fn upgrade(ip: &str, token: &str) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect((ip, 6005)).expect("the Executor's port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /v1/workers HTTP/1.1\r\nHost: {ip}:6005\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("an HTTP answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_default();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), s)
}

/// Sends a masked text frame.
fn send_text(s: &mut TcpStream, text: &str) {
    let mask = [7u8, 1, 9, 3];
    let mut f = vec![0x81u8];
    let len = text.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 126);
        f.extend((len as u16).to_be_bytes());
    }
    f.extend(mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f).unwrap();
}

/// Reads one frame: its opcode and payload.
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("a frame");
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        len = u16::from_be_bytes(b).into();
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).unwrap();
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).unwrap();
    (h[0] & 0x0f, payload)
}

/// `python.execute` on worker pods: real results, packages from an index, a table of escapes
/// (each stopped and reported, the workers never restarting), tasks that wait for a worker
/// say so, CogoWorker status and the Executor's metrics count the workers, and bad tokens and
/// frames are refused.
#[test]
fn python_runs_in_sandboxes_on_worker_pods() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-python");
    let _op = Operator::start_for_pods(&c, "python");
    let index = PackageIndex::serve(NODE_ADDRESS);
    ns.apply_ok(&executor().to_string());
    ns.wait("cogoagent/executor", "condition=Ready", 180);

    // No worker yet: the task waits, and says why.
    ns.apply_ok(&python_task("waits", json!({"code": "print('ran')"})));
    wait_until(
        Duration::from_secs(60),
        "the task to say it waits for a worker",
        || {
            c.get_json(&ns.name, "agenttask/waits").is_some_and(|t| {
                t["status"]["phase"] == "Pending"
                    && t["status"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no PythonSandbox worker is connected"))
            })
        },
    );

    ns.apply_ok(&python_worker(2, 2, &index.url).to_string());
    ns.wait("cogoworker/python", "condition=Ready", 180);
    assert_eq!(succeeded(&c, &ns, "waits")["status"]["result"]["stdout"], "ran\n");
    wait_until(
        Duration::from_secs(30),
        "CogoWorker status to count two connected workers",
        || {
            c.get_json(&ns.name, "cogoworker/python")
                .is_some_and(|w| w["status"]["connectedWorkers"] == 2)
        },
    );

    // Real results: stdin, files in and out, the exit code.
    let code = "import sys, json\nnums = [int(x) for x in open('nums.txt').read().split()]\n\
                open('out.json', 'w').write(json.dumps({'sum': sum(nums), 'stdin': sys.stdin.read()}))\n\
                print(sum(nums))\nsys.exit(3)";
    ns.apply_ok(&python_task(
        "computes",
        json!({"code": code, "stdin": "piped", "files": [{"path": "nums.txt", "content": "1 2 3 4 5"}]}),
    ));
    ns.apply_ok(&python_task(
        "packages",
        json!({"code": "import dateutil.parser\nprint(dateutil.parser.parse('2026-11-29').day)", "packages": ["python-dateutil"]}),
    ));
    let r = &succeeded(&c, &ns, "computes")["status"]["result"];
    assert_eq!(
        (r["exitCode"].as_i64(), r["stdout"].as_str()),
        (Some(3), Some("15\n")),
        "{r}"
    );
    assert_eq!(r["files"][0]["path"], "out.json");
    let out: Value = serde_json::from_str(r["files"][0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(out, json!({"sum": 15, "stdin": "piped"}));
    let r = &succeeded(&c, &ns, "packages")["status"]["result"];
    assert_eq!(r["stdout"], "29\n", "{r}");

    // Escapes, all at once across the two workers; each is stopped and reported.
    type Check = fn(&Value) -> bool;
    let escapes: Vec<(&str, &str, Check)> = vec![
        ("loop", "while True: pass", |r| r["killed"] == "timeout"),
        ("alloc", "x = bytearray(8 * 1024**3)", |r| r["killed"] == "memory"),
        (
            "forkbomb",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            |r| r["killed"] == "processes",
        ),
        (
            "bigfile",
            "open('big', 'wb').write(b'x' * (64 * 1024 * 1024))",
            |r| {
                r["exitCode"] == 1
                    && r["stderr"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("File too large")
            },
        ),
        (
            "output",
            "import sys\nfor _ in range(50):\n    sys.stdout.write('y' * 1024 * 1024)",
            |r| {
                r["killed"] == "output"
                    && r["truncated"] == true
                    && r["stdout"].as_str().unwrap_or_default().len() <= 32768
            },
        ),
        (
            "socket",
            "import socket\nfor host in ['10.88.0.1', '10.96.0.1', '1.1.1.1']:\n    try:\n        socket.create_connection((host, 443), timeout=2); print('reached', host)\n    except OSError as e:\n        print('refused', host)",
            |r| {
                let out = r["stdout"].as_str().unwrap_or_default();
                !out.contains("reached") && out.matches("refused").count() == 3
            },
        ),
        (
            "files",
            "import os\nfor p in ['/proc/1/environ', '/var/run/cogo/executor-token/token']:\n    try:\n        open(p, 'rb').read(); print('read', p)\n    except OSError:\n        print('no', p)\nprint(os.path.exists('/tmp/cogo-jobs'), [k for k in os.environ if k.startswith('COGO')])",
            |r| {
                let out = r["stdout"].as_str().unwrap_or_default();
                !out.contains("read ") && out.ends_with("False []\n")
            },
        ),
        (
            "pid1",
            "import os, signal\ntry:\n    os.kill(1, signal.SIGKILL)\nexcept OSError:\n    pass\nprint('alive')",
            |r| r["stdout"] == "alive\n",
        ),
    ];
    for (name, code, _) in &escapes {
        ns.apply_ok(&python_task(&format!("escape-{name}"), json!({"code": code})));
    }
    for (name, _, check) in &escapes {
        let t = succeeded(&c, &ns, &format!("escape-{name}"));
        let r = &t["status"]["result"];
        assert!(check(r), "{name}: {r}");
        assert_eq!(t["status"]["attempt"], 1, "{name} ran once: the worker stayed up");
    }
    // The workers stayed healthy: never restarted, and they run the next jobs.
    for i in 0..4 {
        ns.apply_ok(&python_task(
            &format!("after-{i}"),
            json!({"code": "print('fine')"}),
        ));
    }
    for i in 0..4 {
        assert_eq!(
            succeeded(&c, &ns, &format!("after-{i}"))["status"]["result"]["stdout"],
            "fine\n"
        );
    }
    let restarts = c.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            &ns.name,
            "-l",
            "app.kubernetes.io/instance=python",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
        ],
        None,
    );
    assert_eq!(restarts.trim(), "0 0", "no worker pod restarted");

    // The Executor's metrics, under the system's names.
    let ip = pod_ip(&c, &ns.name, "executor");
    let metrics = cogo_e2e::cluster::http_get_at(&ip, 6005, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("cogo_total_workers{kind=\"PythonSandbox\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cogo_success_rate{kind=\"PythonSandbox\"}"),
        "{metrics}"
    );

    // Tokens: only this namespace's worker tokens for this Executor get in.
    let other = Namespace::create(&c, "e2e-python-other");
    other.apply_ok(&executor().to_string());
    other.apply_ok(&python_worker(0, 1, &index.url).to_string());
    // Issued by the operator once it sees the worker: waited for, not assumed.
    let foreign = token_of(&c, &other.name, "python-executor-token");
    let good = secret(&c, &ns.name, "python-executor-token");
    let agent = secret(&c, &ns.name, "executor-broker-token");
    // A real token with one character of its signature changed.
    let forged = {
        let mut chars: Vec<char> = good.chars().collect();
        let i = chars.len() - 20;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    for (what, token, status, code) in [
        (
            "another namespace's worker",
            foreign.as_str(),
            403,
            "WrongNamespace",
        ),
        ("an agent's broker token", agent.as_str(), 401, "MalformedToken"),
        ("a forged token", forged.as_str(), 401, "InvalidSignature"),
        ("no token at all", "", 401, "MissingToken"),
    ] {
        let (got, body, _) = upgrade(&ip, token);
        assert_eq!(got, status, "{what}: {body}");
        assert!(body.contains(code), "{what}: {body}");
    }
    // The good token gets in; a malformed first frame is refused with an error frame and a
    // close, and the Executor goes on serving.
    let (got, _, mut ws) = upgrade(&ip, &good);
    assert_eq!(got, 101);
    send_text(&mut ws, "{not json");
    let (op, payload) = read_frame(&mut ws);
    assert_eq!(op, 1, "a text frame");
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(frame["type"], "error");
    assert!(
        frame["data"]["message"]
            .as_str()
            .unwrap()
            .contains("MalformedFrame"),
        "{frame}"
    );
    let (op, payload) = read_frame(&mut ws);
    assert_eq!(
        (op, &payload[..2]),
        (8, &1008u16.to_be_bytes()[..]),
        "a close with 1008"
    );
    ns.apply_ok(&python_task("still-serving", json!({"code": "print(1)"})));
    assert_eq!(
        succeeded(&c, &ns, "still-serving")["status"]["result"]["stdout"],
        "1\n"
    );
}

/// The host PID of the process of `binary` whose cgroup names the pod `uid`.
fn process_of_pod(binary: &str, uid: &str) -> Option<u32> {
    let underscored = uid.replace('-', "_");
    pids_of(binary).into_iter().find(|p| {
        let cg = super::memory_cgroup(*p).to_string_lossy().into_owned();
        cg.contains(uid) || cg.contains(&underscored)
    })
}

/// The pod running the job of `task`: the worker whose sandbox runs `main.py`.
fn worker_running_a_job(c: &Cluster, ns: &str) -> Option<(String, u32)> {
    let pods: Value = serde_json::from_str(&c.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/instance=python",
            "-o",
            "json",
        ],
        None,
    ))
    .ok()?;
    let jobs: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("/.cogo/main.py"))
        })
        .collect();
    for pod in pods["items"].as_array()? {
        let uid = pod["metadata"]["uid"].as_str()?;
        let underscored = uid.replace('-', "_");
        let runs = jobs.iter().any(|p| {
            let cg = super::memory_cgroup(*p).to_string_lossy().into_owned();
            cg.contains(uid) || cg.contains(&underscored)
        });
        if runs {
            let worker = process_of_pod("/usr/local/bin/cogo-worker", uid)?;
            return Some((pod["metadata"]["name"].as_str()?.to_string(), worker));
        }
    }
    None
}

fn kill(pid: u32) {
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// A worker pod killed mid-job loses the job to the other worker (the same attempt); an
/// Executor killed mid-job loses its lease, and the task runs again by its retry policy.
#[test]
fn killed_workers_and_executors_lose_no_task() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-python-kill");
    let _op = Operator::start_for_pods(&c, "python-kill");
    ns.apply_ok(&executor().to_string());
    ns.apply_ok(&python_worker(2, 1, "http://127.0.0.1:9/simple").to_string());
    ns.wait("cogoagent/executor", "condition=Ready", 180);
    ns.wait("cogoworker/python", "condition=Ready", 180);
    wait_until(Duration::from_secs(30), "both workers connected", || {
        c.get_json(&ns.name, "cogoworker/python")
            .is_some_and(|w| w["status"]["connectedWorkers"] == 2)
    });

    let slow = json!({"code": "import time\ntime.sleep(3)\nprint('done')"});
    ns.apply_ok(&python_task("moves", slow.clone()));
    let mut victim = None;
    wait_until(Duration::from_secs(60), "a worker pod to run the job", || {
        victim = worker_running_a_job(&c, &ns.name);
        victim.is_some()
    });
    let (pod, pid) = victim.unwrap();
    kill(pid);
    let t = succeeded(&c, &ns, "moves");
    assert_eq!(t["status"]["result"]["stdout"], "done\n");
    assert_eq!(
        t["status"]["attempt"], 1,
        "the same attempt, on the other worker: {}",
        t["status"]
    );
    let restarted = c.kubectl_ok(
        &[
            "get",
            "pod",
            "-n",
            &ns.name,
            &pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        None,
    );
    assert_eq!(restarted.trim(), "1", "the killed worker restarted");

    ns.apply_ok(&python_task("retried", slow));
    ns.wait("agenttask/retried", "jsonpath={.status.phase}=Running", 60);
    let executor_pod = super::pod_of(&c, &ns.name, "executor");
    let uid = executor_pod["metadata"]["uid"].as_str().unwrap();
    let pid = process_of_pod("/usr/local/bin/cogo-agent", uid).expect("the Executor's process");
    kill(pid);
    let t = succeeded(&c, &ns, "retried");
    assert_eq!(t["status"]["result"]["stdout"], "done\n");
    assert_eq!(t["status"]["attempt"], 2, "{}", t["status"]);
    assert_eq!(t["status"]["attempts"][0]["outcome"], "HeartbeatLost");
}
