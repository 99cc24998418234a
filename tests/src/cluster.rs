//! Handles on the local control plane (`tests/cluster/up`) for end-to-end tests: kubectl,
//! namespaces that clean up after themselves, the operator as a local process, the audit log.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{repo, run, tool};

/// The cluster the end-to-end tests run against.
pub struct Cluster {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// The cluster named by `COGO_E2E_KUBECONFIG` (set by `make test` after `tests/cluster/up`).
    /// Panics with instructions when it is unset: these tests never skip.
    pub fn from_env() -> Cluster {
        let path = std::env::var_os("COGO_E2E_KUBECONFIG").unwrap_or_else(|| {
            panic!(
                "COGO_E2E_KUBECONFIG is not set: run the end-to-end tests with `make e2e` (or `make test`), \
                 which starts the local control plane with tests/cluster/up"
            )
        });
        let kubeconfig = PathBuf::from(path);
        assert!(
            kubeconfig.is_file(),
            "{} does not exist: is the local control plane up?",
            kubeconfig.display()
        );
        Cluster { kubeconfig }
    }

    /// The port the API server listens on (127.0.0.1), from the kubeconfig.
    pub fn api_server_port(&self) -> u16 {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("the kubeconfig names the API server at https://127.0.0.1:<port>")
    }

    /// The API server's audit log (one JSON line per write), next to the kubeconfig.
    pub fn audit_log(&self) -> PathBuf {
        self.kubeconfig
            .parent()
            .expect("kubeconfig dir")
            .join("logs/audit.log")
    }

    /// How many watches of `resource` (plural, for example `agenttasks`) across all
    /// namespaces the API server serves now, from its `apiserver_longrunning_requests` gauge.
    pub fn cluster_watches(&self, resource: &str) -> u64 {
        let metrics = self.kubectl_ok(&["get", "--raw", "/metrics"], None);
        let label = format!("resource=\"{resource}\"");
        metrics
            .lines()
            .filter(|l| l.starts_with("apiserver_longrunning_requests{"))
            .filter(|l| l.contains(&label) && l.contains("scope=\"cluster\"") && l.contains("verb=\"WATCH\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Kills the API server (SIGKILL) and starts it again with the same command line, as
    /// `tests/cluster/up` started it (its pid file updated, its log appended to); returns once
    /// it answers `/readyz` again, and how long it was away.
    pub fn restart_api_server(&self) -> std::time::Duration {
        let dir = self.kubeconfig.parent().expect("kubeconfig dir");
        let pid_file = dir.join("run/kube-apiserver.pid");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("the API server's pid file")
            .trim()
            .parse()
            .expect("a pid");
        let args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .expect("the API server's command line")
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stopped = std::time::Instant::now();
        // SIGKILL: a graceful stop drains watches for a minute first.
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        // Its threads die one by one; the port is free once the last has closed it.
        let port = self.api_server_port();
        wait_until(Duration::from_secs(60), "the API server to stop", || {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("logs/kube-apiserver.log"))
            .expect("the API server's log");
        // Detached (setsid --fork), as the cluster script starts it: it outlives this test and
        // `tests/cluster/down` stops it.
        let started = Command::new("setsid")
            .arg("--fork")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .status()
            .expect("start the API server again (setsid, from util-linux)");
        assert!(started.success(), "setsid failed");
        wait_until(
            Duration::from_secs(90),
            "the API server to be ready again",
            || self.kubectl(&["get", "--raw", "/readyz"], None).status.success(),
        );
        let cmdline = args.join("\0");
        let new_pid = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).trim_end_matches('\0') == cmdline)
            })
            .expect("the new API server's process");
        std::fs::write(&pid_file, new_pid.to_string()).expect("pid file");
        stopped.elapsed()
    }

    /// Runs kubectl with this cluster's kubeconfig.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut full = vec!["--kubeconfig", self.kubeconfig.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        run(&tool("kubectl"), &full, stdin.map(str::as_bytes))
    }

    /// `kubectl cogo <args>`, ready to start: kubectl finds the plugin `kubectl-cogo` of this
    /// workspace on the `PATH`, as it would once installed.
    pub fn kubectl_cogo_command(&self, args: &[&str]) -> Command {
        let plugin = workspace_binary("kubectl-cogo");
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(plugin.parent().expect("bin dir").to_path_buf())
            .chain(std::env::split_paths(&inherited));
        let path = std::env::join_paths(dirs).expect("PATH");
        let mut cmd = Command::new(tool("kubectl"));
        // kubectl hands every argument after the plugin's name to the plugin, and the plugin
        // reads KUBECONFIG as kubectl does.
        cmd.arg("cogo")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", path)
            .env_remove("COGO_DATABASE_URL");
        cmd
    }

    /// Runs `kubectl cogo <args>`, feeding `stdin`, and returns its output.
    pub fn kubectl_cogo(&self, args: &[&str], stdin: Option<&str>) -> Output {
        crate::run_command(self.kubectl_cogo_command(args), stdin.map(str::as_bytes))
    }

    /// Runs kubectl and returns stdout; panics with its output when it fails.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs helm against this cluster; panics with its output when it fails.
    pub fn helm_ok(&self, args: &[&str]) {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--kubeconfig", self.kubeconfig.to_str().expect("utf-8 path")]);
        let out = run(&tool("helm"), &full, None);
        assert!(
            out.status.success(),
            "helm {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Installs the chart as release `cogo` into `ns` (created), with extra `--set` values, and
    /// waits for it. What an earlier, failed run may have left (the namespace, the release's
    /// cluster-scoped RBAC) is removed first.
    pub fn helm_install(&self, ns: &str, sets: &[&str]) {
        self.helm_install_with(ns, sets, "");
    }

    /// [`Cluster::helm_install`], with `objects` (YAML, such as the Secrets the release's pods
    /// read) applied in the release namespace before the chart is installed.
    pub fn helm_install_with(&self, ns: &str, sets: &[&str], objects: &str) {
        self.kubectl(
            &[
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=90s",
            ],
            None,
        );
        self.kubectl(
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                "cogo-cogo-operator",
                "--ignore-not-found",
            ],
            None,
        );
        if !objects.is_empty() {
            self.kubectl_ok(&["create", "namespace", ns], None);
            self.kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(objects));
        }
        let chart = repo().join("charts/cogo-operator");
        let mut args = vec![
            "install",
            "cogo",
            chart.to_str().expect("utf-8 path"),
            "-n",
            ns,
            "--create-namespace",
        ];
        for set in sets {
            args.extend_from_slice(&["--set", set]);
        }
        args.extend_from_slice(&["--wait", "--timeout", "180s"]);
        self.helm_ok(&args);
    }

    /// Replaces the Secret `name` of `ns` with one whose key `url` is `url` (a database's
    /// connection string, as the operator and the gateway read it).
    pub fn url_secret(&self, ns: &str, name: &str, url: &str) {
        self.kubectl(&["delete", "secret", name, "-n", ns, "--ignore-not-found"], None);
        self.kubectl_ok(
            &[
                "create",
                "secret",
                "generic",
                name,
                "-n",
                ns,
                &format!("--from-literal=url={url}"),
            ],
            None,
        );
    }

    /// `kubectl get -o json` of one object, or None when it does not exist. Read as the
    /// operator reads free JSON (at most `cogo_api::json::MAX_DEPTH` + 1 levels), so an object
    /// nested past serde_json's limit can be looked at too.
    pub fn get_json(&self, ns: &str, what: &str) -> Option<Value> {
        let out = self.kubectl(&["get", "-n", ns, what, "-o", "json", "--ignore-not-found"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || text.trim().is_empty() {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(&text);
        Some(cogo_api::json::bounded_value(&mut de).expect("kubectl JSON"))
    }

    /// Installs the CRDs from `crds/` and waits until they are served.
    pub fn install_crds(&self) {
        let crds = repo().join("crds");
        self.kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                crds.to_str().unwrap(),
            ],
            None,
        );
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/cogoagents.cogo.xyz",
                "crd/cogoworkers.cogo.xyz",
                "crd/agenttasks.cogo.xyz",
            ],
            None,
        );
    }
}

/// A namespace created for one test and deleted when dropped.
pub struct Namespace<'a> {
    cluster: &'a Cluster,
    /// Its name.
    pub name: String,
}

impl<'a> Namespace<'a> {
    /// Every object of `resource` (for example `agenttasks`) in the namespace, as JSON.
    pub fn items(&self, resource: &str) -> Vec<Value> {
        let out = self.kubectl_ok(&["get", resource, "-o", "json"]);
        serde_json::from_str::<Value>(&out).expect("kubectl JSON")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Creates the namespace `name`.
    pub fn create(cluster: &'a Cluster, name: &str) -> Self {
        cluster.kubectl(
            &[
                "delete",
                "namespace",
                name,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        );
        cluster.kubectl_ok(&["create", "namespace", name], None);
        Namespace {
            cluster,
            name: name.to_string(),
        }
    }

    /// Takes charge of an existing namespace: it is deleted when dropped.
    pub fn adopt(cluster: &'a Cluster, name: &str) -> Self {
        Namespace {
            cluster,
            name: name.to_string(),
        }
    }

    /// Applies YAML into the namespace.
    pub fn apply(&self, yaml: &str) -> Output {
        self.cluster
            .kubectl(&["apply", "-n", &self.name, "-f", "-"], Some(yaml))
    }

    /// Applies YAML into the namespace; panics when kubectl fails.
    pub fn apply_ok(&self, yaml: &str) {
        self.cluster
            .kubectl_ok(&["apply", "-n", &self.name, "-f", "-"], Some(yaml));
    }

    /// Runs kubectl with `-n <namespace>` appended.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let mut full = args.to_vec();
        full.extend_from_slice(&["-n", &self.name]);
        self.cluster.kubectl_ok(&full, None)
    }

    /// Waits for `condition` on `what` (for example `cogoagent/research`).
    pub fn wait(&self, what: &str, condition: &str, timeout_secs: u64) {
        self.kubectl_ok(&[
            "wait",
            what,
            &format!("--for={condition}"),
            &format!("--timeout={timeout_secs}s"),
        ]);
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        self.cluster.kubectl(
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// The operator running as a local process against the cluster. Killed when dropped.
pub struct Operator {
    child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
    /// Port of its /metrics, /livez, /readyz.
    pub health_port: u16,
    /// Port of its task broker.
    pub broker_port: u16,
}

/// The real node's address: the host side of the pod bridge, which pods reach.
pub const NODE_ADDRESS: &str = "10.88.0.1";

/// Pod overrides that place pods on the kwok nodes (which a cluster with a real node taints).
pub fn kwok_pod_template() -> Value {
    serde_json::json!({
        "nodeSelector": {"type": "kwok"},
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
    })
}

/// A Research CogoAgent named `name` whose pods go to the kwok nodes.
pub fn kwok_agent(name: &str, replicas: i32, concurrency: i32) -> Value {
    serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": name},
        "spec": {"role": "Research", "replicas": replicas, "concurrency": concurrency,
                 "podTemplate": kwok_pod_template()},
    })
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A binary of this workspace: `target/debug/<name>`, or from `$COGO_BIN_DIR` when set
/// (the benchmark runs release builds).
pub fn workspace_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("COGO_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debug"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p {name}`",
        path.display()
    );
    path
}

/// The operator binary: `$COGO_OPERATOR_BIN`, else `target/debug/cogo-operator`.
pub fn operator_binary() -> PathBuf {
    std::env::var_os("COGO_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_binary("cogo-operator"))
}

/// An agent runtime running as a local process, pulling from a local operator's broker with
/// the token the operator issued to its CogoAgent. Killed when dropped.
pub struct AgentProcess {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// The port of its probes, metrics and (for an Executor) worker endpoint.
    pub port: u16,
}

/// Environment variables every process a test starts gets on top of its own (an OTLP
/// endpoint, say), while the [`ProcessEnv`] that set them lives.
static PROCESS_ENV: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Gives every process started while it lives (operators, gateways, agents, workers) these
/// environment variables. Tests that use it run one at a time, as the e2e suite does.
pub struct ProcessEnv(());

impl ProcessEnv {
    /// Sets `vars` for the processes started from now on.
    pub fn set(vars: &[(&str, &str)]) -> ProcessEnv {
        *PROCESS_ENV.lock().unwrap() = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProcessEnv(())
    }

    /// Adds what is set to `cmd`.
    pub fn apply(cmd: &mut Command) -> &mut Command {
        let vars = PROCESS_ENV.lock().map(|v| v.clone()).unwrap_or_default();
        cmd.envs(vars)
    }
}

impl Drop for ProcessEnv {
    fn drop(&mut self) {
        if let Ok(mut v) = PROCESS_ENV.lock() {
            v.clear();
        }
    }
}

/// Starts `cmd` with its output in the file `log` and its `RUST_LOG` from the variable named
/// in `filter` (or that pair's default).
fn spawn_logged(cmd: &mut Command, log: &Path, (filter, default): (&str, &str)) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    ProcessEnv::apply(cmd)
        .env("RUST_LOG", std::env::var(filter).unwrap_or(default.into()))
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()))
}

/// The value of key `token` of the Secret `name` in `ns`, once the operator has written it.
pub fn token_of(cluster: &Cluster, ns: &str, name: &str) -> String {
    let secret = format!("secret/{name}");
    let mut token = String::new();
    wait_until(
        Duration::from_secs(60),
        &format!("the operator to issue {secret}"),
        || {
            let template = "go-template={{.data.token | base64decode}}";
            let out = cluster.kubectl(&["get", "-n", ns, &secret, "-o", template], None);
            token = String::from_utf8_lossy(&out.stdout).trim().to_string();
            out.status.success() && !token.is_empty()
        },
    );
    token
}

/// A worker runtime running as a local process, connected to a local Executor process with the
/// token the operator issued to its CogoWorker. Killed when dropped.
pub struct WorkerProcess {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    jobs: PathBuf,
}

impl WorkerProcess {
    /// Starts `cogo-worker` as pod `pod` of the PythonSandbox CogoWorker `worker` of `ns`,
    /// with `capacity` slots, dialing the Executor on 127.0.0.1:`executor_port`; `env` adds
    /// to its environment (the sandbox's limits).
    pub fn start(
        cluster: &Cluster,
        ns: &str,
        (worker, pod): (&str, &str),
        executor_port: u16,
        capacity: u32,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let token = token_of(cluster, ns, &format!("{worker}-executor-token"));
        let log = std::env::temp_dir().join(format!("cogo-e2e-worker-{pod}-{}.log", std::process::id()));
        let jobs = std::env::temp_dir().join(format!("cogo-e2e-jobs-{pod}-{}", std::process::id()));
        let mut cmd = Command::new(workspace_binary("cogo-worker"));
        cmd.env("COGO_WORKER_KIND", "PythonSandbox")
            .env("COGO_POD_NAME", pod)
            .env("COGO_CAPACITY", capacity.to_string())
            .env("COGO_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .env(
                "COGO_EXECUTOR_URL",
                format!("ws://127.0.0.1:{executor_port}/v1/workers"),
            )
            .env("COGO_EXECUTOR_TOKEN", token)
            .env("COGO_JOBS_DIR", &jobs)
            .envs(env.iter().copied());
        let child = spawn_logged(&mut cmd, &log, ("COGO_E2E_WORKER_LOG", "info,cogo_worker=debug"));
        WorkerProcess { child, log, jobs }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.jobs);
    }
}

impl AgentProcess {
    /// Starts `cogo-agent` as pod `pod` of the CogoAgent `agent` (role `role`) of `ns`, with 8
    /// slots.
    pub fn start(
        cluster: &Cluster,
        ns: &str,
        agent: &str,
        role: &str,
        pod: &str,
        broker_port: u16,
    ) -> AgentProcess {
        AgentProcess::start_with(cluster, ns, (agent, role, pod), broker_port, 8)
    }

    /// Starts `cogo-agent` as pod `pod` of the CogoAgent `agent` (role `role`) of `ns`, with
    /// `concurrency` slots.
    pub fn start_with(
        cluster: &Cluster,
        ns: &str,
        (agent, role, pod): (&str, &str, &str),
        broker_port: u16,
        concurrency: u32,
    ) -> AgentProcess {
        AgentProcess::start_env(cluster, ns, (agent, role, pod), broker_port, concurrency, &[])
    }

    /// As [`AgentProcess::start_with`], with more environment variables (a model's settings,
    /// say).
    pub fn start_env(
        cluster: &Cluster,
        ns: &str,
        (agent, role, pod): (&str, &str, &str),
        broker_port: u16,
        concurrency: u32,
        env: &[(&str, &str)],
    ) -> AgentProcess {
        let token = token_of(cluster, ns, &format!("{agent}-broker-token"));
        let port = free_port();
        let log = std::env::temp_dir().join(format!("cogo-e2e-agent-{pod}-{}.log", std::process::id()));
        let mut cmd = Command::new(workspace_binary("cogo-agent"));
        cmd.env("COGO_ROLE", role)
            .env("COGO_AGENT_NAME", agent)
            .env("COGO_NAMESPACE", ns)
            .env("COGO_POD_NAME", pod)
            .env("COGO_CONCURRENCY", concurrency.to_string())
            .env("COGO_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("COGO_BROKER_URL", format!("http://127.0.0.1:{broker_port}"))
            .env("COGO_BROKER_TOKEN", token)
            .envs(env.iter().copied());
        let child = spawn_logged(&mut cmd, &log, ("COGO_E2E_AGENT_LOG", "info,cogo_agent=debug"));
        AgentProcess { child, log, port }
    }
}

impl AgentProcess {
    /// Kills the process at once (SIGKILL), as a node failure would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    /// Starts the operator without leader election and waits until it serves /readyz.
    pub fn start(cluster: &Cluster, log_name: &str) -> Operator {
        Operator::start_on(cluster, log_name, free_port())
    }

    /// Starts the operator with its broker on `broker_port` (to restart one in place); its
    /// log is appended to.
    pub fn start_on(cluster: &Cluster, log_name: &str, broker_port: u16) -> Operator {
        Operator::start_with(cluster, log_name, broker_port, &[])
    }

    /// Starts the operator with its broker on `broker_port` and `extra` arguments.
    pub fn start_with(cluster: &Cluster, log_name: &str, broker_port: u16, extra: &[&str]) -> Operator {
        Operator::spawn(&cluster.kubeconfig, log_name, ("127.0.0.1", broker_port), extra)
    }

    /// Starts the operator as a candidate for the Lease `name` of namespace `ns`, reaching
    /// the API server through `kubeconfig`, and waits until it leads and serves /readyz.
    pub fn start_elected(kubeconfig: &Path, log_name: &str, (ns, name): (&str, &str)) -> Operator {
        Operator::spawn(
            kubeconfig,
            log_name,
            ("127.0.0.1", free_port()),
            &[
                "--leader-elect=true",
                "--lease-namespace",
                ns,
                "--lease-name",
                name,
                "--identity",
                log_name,
            ],
        )
    }

    /// Waits up to `limit` for the process to exit; its status, or None.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Starts the operator with its broker on the real node's address (10.88.0.1), where pods
    /// reach it, and tells agents so.
    pub fn start_for_pods(cluster: &Cluster, log_name: &str) -> Operator {
        let port = TcpListener::bind((NODE_ADDRESS, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on the node's address: is the real node up?");
        let url = format!("http://{NODE_ADDRESS}:{port}");
        Operator::spawn(
            &cluster.kubeconfig,
            log_name,
            (NODE_ADDRESS, port),
            &["--broker-url", &url],
        )
    }

    /// Starts it with `kubeconfig`; without an election unless `extra` asks for one.
    fn spawn(
        kubeconfig: &Path,
        log_name: &str,
        (host, broker_port): (&str, u16),
        extra: &[&str],
    ) -> Operator {
        let elect: &[&str] = if extra.contains(&"--leader-elect=true") {
            &[]
        } else {
            &["--leader-elect=false"]
        };
        let health_port = free_port();
        let log = std::env::temp_dir().join(format!("cogo-e2e-{log_name}-{}.log", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = ProcessEnv::apply(&mut Command::new(operator_binary()))
            .args(["run", "--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--resync-seconds", "30", "--image-pull-policy", "Never"])
            .args([
                "--broker-addr",
                &format!("{host}:{broker_port}"),
                "--heartbeat-seconds",
                "2",
            ])
            .args(elect)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("COGO_E2E_OPERATOR_LOG").unwrap_or("info,cogo_operator=debug".into()),
            )
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the operator");
        let op = Operator {
            child: Some(child),
            log,
            health_port,
            broker_port,
        };
        wait_until(Duration::from_secs(30), "the operator to serve /readyz", || {
            http_get(health_port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        });
        op
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The operator's Prometheus metrics.
    pub fn metrics(&self) -> String {
        http_get(self.health_port, "/metrics").unwrap_or_default()
    }

    /// A counter's value summed over its label sets.
    pub fn counter(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| {
                l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        self.wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the operator ignored SIGTERM; log: {}", self.log.display()))
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP GET to 127.0.0.1:port.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_at("127.0.0.1", port, path)
}

/// A plain HTTP GET to host:port.
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Polls `f` every 200 ms until it returns true; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes recorded in the audit log at or after line `from` by clients whose User-Agent starts
/// with `agent`, as `(verb, resource, namespace, name)`.
pub fn audited_writes(log: &Path, from: usize, agent: &str) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .skip(from)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["userAgent"].as_str().is_some_and(|u| u.starts_with(agent)))
        .map(|e| {
            let o = &e["objectRef"];
            let res = match o["subresource"].as_str() {
                Some(sub) => format!("{}/{sub}", o["resource"].as_str().unwrap_or_default()),
                None => o["resource"].as_str().unwrap_or_default().to_string(),
            };
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&e["verb"]), res, s(&o["namespace"]), s(&o["name"]))
        })
        .collect()
}

/// The number of lines in the audit log now.
pub fn audit_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The (status, reason) of `obj`'s condition `type_`, if it has one.
pub fn condition(obj: &serde_json::Value, type_: &str) -> Option<(String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}
