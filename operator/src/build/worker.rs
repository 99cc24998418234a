//! Builders for a CogoWorker's children: Deployment, Service and NetworkPolicy.

use cogo_api::{CogoWorker, WorkerKind, common::quantity_bytes};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector, Service},
        networking::v1::{
            NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
            NetworkPolicyPort, NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{DefaultResources, PodParams, Pool, env, env_from_field, pod_template, resources};
use crate::config::Config;

/// App name label of worker pods.
pub const APP: &str = "cogo-worker";

/// Where worker pods find their token (a Secret volume, so a reissued token reaches running
/// pods, which read it on every connect).
pub const TOKEN_DIR: &str = "/var/run/cogo/executor-token";

/// Memory one PythonSandbox job may use when `sandbox.memoryLimit` is unset.
pub const DEFAULT_JOB_MEMORY: &str = "256Mi";

/// Memory the worker process itself needs beside its jobs.
const WORKER_OVERHEAD_BYTES: u64 = 256 << 20;

/// Default sizing by kind: a browser needs the most memory, the Figma client the least.
pub fn default_resources(kind: WorkerKind) -> DefaultResources {
    match kind {
        WorkerKind::PythonSandbox => DefaultResources {
            cpu_request: "250m",
            cpu_limit: "1",
            memory: "512Mi",
        },
        WorkerKind::Browser => DefaultResources {
            cpu_request: "500m",
            cpu_limit: "2",
            memory: "1Gi",
        },
        WorkerKind::FigmaMcp => DefaultResources {
            cpu_request: "100m",
            cpu_limit: "500m",
            memory: "256Mi",
        },
    }
}

/// The image the worker runs: its own, else the operator's default.
pub fn image(worker: &CogoWorker, cfg: &Config) -> Option<String> {
    worker.spec.image.clone().or_else(|| cfg.worker_image.clone())
}

/// Whether the worker's jobs may reach the network beyond the Executor and DNS.
pub fn egress_allowed(worker: &CogoWorker) -> bool {
    worker
        .spec
        .sandbox
        .as_ref()
        .and_then(|s| s.allow_egress)
        .unwrap_or_else(|| worker.spec.kind.egress_by_default())
}

/// URL of the Executor's worker endpoint, through its Service.
pub fn executor_url(executor: &str, namespace: &str) -> String {
    format!(
        "ws://{executor}.{namespace}.svc:{}/v1/workers",
        cogo_api::AgentRole::Executor.port()
    )
}

/// Name of the Secret holding a worker's Executor token.
pub fn token_secret_name(worker: &str) -> String {
    format!("{worker}-executor-token")
}

/// The Secret holding the worker's Executor token, owned by the worker.
pub fn token_secret(pool: &Pool, token: &str) -> Secret {
    super::token_secret(pool, &token_secret_name(pool.name), token)
}

/// The pod's memory when `resources.memory` is unset and `sandbox.memoryLimit` is set:
/// room for `capacity` jobs at their limit, plus the worker itself.
fn pod_memory(worker: &CogoWorker) -> Option<String> {
    let per_job = quantity_bytes(worker.spec.sandbox.as_ref()?.memory_limit.as_deref()?)?;
    let total = per_job
        .checked_mul(worker.spec.capacity.max(1) as u64)?
        .checked_add(WORKER_OVERHEAD_BYTES)?;
    Some(format!("{}Mi", total.div_ceil(1 << 20)))
}

fn worker_env(worker: &CogoWorker, name: &str, namespace: &str, executor: &str) -> Vec<EnvVar> {
    let spec = &worker.spec;
    let sandbox = spec.sandbox.clone().unwrap_or_default();
    let mut vars = vec![
        env("COGO_WORKER_KIND", spec.kind.as_str()),
        env("COGO_WORKER_NAME", name),
        env_from_field("COGO_NAMESPACE", "metadata.namespace"),
        env_from_field("COGO_POD_NAME", "metadata.name"),
        env("COGO_LISTEN_ADDR", format!("0.0.0.0:{}", spec.kind.port())),
        env("COGO_CAPACITY", spec.capacity.to_string()),
        env("COGO_EXECUTOR_URL", executor_url(executor, namespace)),
        env(
            "COGO_JOB_TIMEOUT_SECONDS",
            sandbox.timeout_seconds.max(1).to_string(),
        ),
        env("COGO_ALLOW_EGRESS", egress_allowed(worker).to_string()),
        env("COGO_EXECUTOR_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
    ];
    let limits = [
        ("COGO_JOB_MEMORY_LIMIT", sandbox.memory_limit.clone()),
        (
            "COGO_JOB_MAX_PROCESSES",
            sandbox.max_processes.map(|n| n.to_string()),
        ),
        ("COGO_JOB_MAX_FILE_SIZE", sandbox.max_file_size.clone()),
        ("COGO_JOB_WORKSPACE_SIZE", sandbox.workspace_size.clone()),
        ("COGO_JOB_MAX_OUTPUT_SIZE", sandbox.max_output_size.clone()),
        ("COGO_PACKAGE_INDEX_URL", sandbox.package_index_url.clone()),
    ];
    for (name, value) in limits {
        if let Some(value) = value {
            vars.push(env(name, value));
        }
    }
    if !sandbox.allowed_packages.is_empty() {
        vars.push(env("COGO_ALLOWED_PACKAGES", sandbox.allowed_packages.join(",")));
    }
    if let Some(token) = &spec.figma_token_secret_ref {
        vars.push(secret_env("COGO_FIGMA_TOKEN", token));
    }
    if let Some(url) = &spec.figma_api_url {
        vars.push(env("COGO_FIGMA_API_URL", url));
    }
    if !spec.mcp_servers.is_empty() {
        // The servers as JSON; each token as a variable of its own, from its Secret.
        let servers: Vec<serde_json::Value> = spec
            .mcp_servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({
                    "name": s.name,
                    "url": s.url,
                    "tokenEnv": s.token_secret_ref.as_ref().map(|_| format!("COGO_MCP_TOKEN_{i}")),
                    "timeoutSeconds": s.timeout_seconds,
                })
            })
            .collect();
        vars.push(env(
            "COGO_MCP_SERVERS",
            serde_json::Value::from(servers).to_string(),
        ));
        for (i, s) in spec.mcp_servers.iter().enumerate() {
            if let Some(token) = &s.token_secret_ref {
                vars.push(secret_env(&format!("COGO_MCP_TOKEN_{i}"), token));
            }
        }
    }
    if spec.kind == WorkerKind::Browser {
        let browser = spec.browser.clone().unwrap_or_default();
        vars.push(env_from_field("COGO_POD_IP", "status.podIP"));
        vars.push(env(
            "COGO_BROWSER_ALLOW_FILE_URLS",
            browser.allow_file_urls.to_string(),
        ));
        vars.push(env(
            "COGO_BROWSER_ALLOW_POD_ADDRESSES",
            browser.allow_pod_addresses.to_string(),
        ));
        if let Some(s) = browser.page_timeout_seconds {
            vars.push(env("COGO_BROWSER_PAGE_TIMEOUT_SECONDS", s.to_string()));
        }
        if let Some(s) = browser.step_timeout_seconds {
            vars.push(env("COGO_BROWSER_STEP_TIMEOUT_SECONDS", s.to_string()));
        }
    }
    vars
}

/// A variable read from a Secret's key, which must exist.
fn secret_env(name: &str, key: &cogo_api::common::SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: key.name.clone(),
                key: key.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The worker's Deployment; `executor` is the resolved Executor agent's name. Its pods read
/// their token from the worker's token Secret, mounted at [`TOKEN_DIR`].
pub fn deployment(
    worker: &CogoWorker,
    pool: &Pool,
    cfg: &Config,
    image: String,
    executor: &str,
) -> Deployment {
    let spec = &worker.spec;
    let memory = pod_memory(worker);
    let token = super::token_volume("executor-token", &token_secret_name(pool.name), TOKEN_DIR);
    let params = PodParams {
        image,
        port: spec.kind.port(),
        env: worker_env(worker, pool.name, pool.namespace, executor)
            .into_iter()
            .chain(cfg.trace_env.iter().map(|(k, v)| env(k, v.clone())))
            .collect(),
        resources: resources(
            default_resources(spec.kind),
            spec.resources.as_ref(),
            memory.as_deref(),
        ),
        overrides: spec.pod_template.as_ref(),
        default_pull_policy: if spec.image.is_none() {
            cfg.default_pull_policy.clone()
        } else {
            None
        },
        default_grace_seconds: 30,
        scratch_size: "1Gi",
        volumes: vec![token],
        // Each job gets namespaces of its own (user, mount, PID, network), which the
        // runtime's default seccomp profile forbids creating without CAP_SYS_ADMIN. The
        // container runs without the runtime's profile (still non-root, no capabilities, no
        // privilege escalation, read-only root) and the worker puts every job under a seccomp
        // filter of its own, stricter than RuntimeDefault.
        // Chromium's own sandbox likewise puts each renderer into namespaces of its own and
        // under its own seccomp filter.
        unconfined_seccomp: matches!(spec.kind, WorkerKind::PythonSandbox | WorkerKind::Browser),
    };
    super::deployment(pool, worker.desired_replicas(), pod_template(pool, params))
}

/// The worker's Service on its kind's port.
pub fn service(worker: &CogoWorker, pool: &Pool) -> Service {
    super::service(pool, worker.spec.kind.port())
}

fn port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port)),
        end_port: None,
    }
}

/// The worker's NetworkPolicy. Ingress only to its HTTP port. Egress to cluster DNS and the
/// Executor's pods always; to anything else only when egress is allowed.
pub fn network_policy(worker: &CogoWorker, pool: &Pool, executor: &str) -> NetworkPolicy {
    let egress = if egress_allowed(worker) {
        vec![NetworkPolicyEgressRule::default()]
    } else {
        let executor_pods = Pool {
            app: super::agent::APP,
            name: executor,
            ..pool.clone()
        }
        .selector_labels();
        vec![
            NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some([("k8s-app".to_string(), "kube-dns".to_string())].into()),
                        match_expressions: None,
                    }),
                    ip_block: None,
                }]),
                ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
            },
            NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(executor_pods),
                        match_expressions: None,
                    }),
                    namespace_selector: None,
                    ip_block: None,
                }]),
                ports: Some(vec![port("TCP", cogo_api::AgentRole::Executor.port())]),
            },
        ]
    };
    NetworkPolicy {
        metadata: pool.child_meta(),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(pool.selector_labels()),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![port("TCP", worker.spec.kind.port())]),
            }]),
            egress: Some(egress),
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::testing::{worker, worker_pool};

    #[test]
    fn agent_and_worker_pods_send_their_spans_where_the_operator_sends_its_own() {
        let cfg = Config {
            trace_env: crate::config::trace_env(|k| match k {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".into()),
                "OTEL_TRACES_SAMPLER" => Some("parentbased_traceidratio".into()),
                "OTEL_EXPORTER_OTLP_HEADERS" => Some("authorization=secret".into()),
                "OTEL_TRACES_SAMPLER_ARG" => Some(String::new()),
                _ => None,
            }),
            ..Config::default()
        };
        let env_of = |d: k8s_openapi::api::apps::v1::Deployment| -> Vec<(String, Option<String>)> {
            d.spec.unwrap().template.spec.unwrap().containers[0]
                .env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.name.starts_with("OTEL_"))
                .map(|e| (e.name, e.value))
                .collect()
        };
        let expected = vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                Some("http://collector:4318".to_string()),
            ),
            (
                "OTEL_TRACES_SAMPLER".to_string(),
                Some("parentbased_traceidratio".to_string()),
            ),
        ];
        let w = worker("w", "kind: PythonSandbox");
        assert_eq!(
            env_of(deployment(&w, &worker_pool(&w), &cfg, "i".into(), "exec")),
            expected
        );
        let a = crate::testing::agent("a", "role: Executor");
        let pool = crate::testing::agent_pool(&a);
        assert_eq!(
            env_of(crate::build::agent::deployment(&a, &pool, &cfg, "i".into(), None)),
            expected,
            "headers (credentials) and empty values are not passed on"
        );
        let none = Config::default();
        assert!(env_of(deployment(&w, &worker_pool(&w), &none, "i".into(), "exec")).is_empty());
    }

    #[test]
    fn egress_defaults_by_kind_and_follows_the_spec() {
        for (spec, allowed) in [
            ("kind: PythonSandbox", false),
            ("kind: Browser", true),
            ("kind: FigmaMCP\nfigmaTokenSecretRef: {name: f, key: t}", true),
            ("kind: PythonSandbox\nsandbox: {allowEgress: true}", true),
            ("kind: Browser\nsandbox: {allowEgress: false}", false),
        ] {
            let w = worker("w", spec);
            assert_eq!(egress_allowed(&w), allowed, "{spec}");
            let np = network_policy(&w, &worker_pool(&w), "exec").spec.unwrap();
            let egress = np.egress.unwrap();
            let open = egress.len() == 1 && egress[0] == NetworkPolicyEgressRule::default();
            assert_eq!(open, allowed, "{spec}: {egress:?}");
            assert_eq!(np.policy_types.unwrap(), ["Ingress", "Egress"]);
        }
    }

    #[test]
    fn sandbox_memory_limit_sizes_the_pod_for_its_jobs_unless_resources_do() {
        let w = worker(
            "w",
            "kind: PythonSandbox\ncapacity: 2\nsandbox: {memoryLimit: 768Mi}",
        );
        let d = deployment(&w, &worker_pool(&w), &Config::default(), "i".into(), "exec");
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.resources.clone().unwrap().limits.unwrap()["memory"],
            Quantity("1792Mi".into()),
            "two jobs of 768Mi and the worker's 256Mi"
        );
        let env = c.env.clone().unwrap();
        assert_eq!(
            env.iter()
                .find(|e| e.name == "COGO_JOB_MEMORY_LIMIT")
                .unwrap()
                .value
                .as_deref(),
            Some("768Mi")
        );
        let w = worker("w", "kind: PythonSandbox");
        let d = deployment(&w, &worker_pool(&w), &Config::default(), "i".into(), "exec");
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.resources.clone().unwrap().limits.unwrap()["memory"],
            Quantity("512Mi".into()),
            "the kind's default"
        );
        let w = worker(
            "w",
            "kind: PythonSandbox\nsandbox: {memoryLimit: 768Mi}\nresources: {memory: 2Gi}",
        );
        let d = deployment(&w, &worker_pool(&w), &Config::default(), "i".into(), "exec");
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.resources.clone().unwrap().limits.unwrap()["memory"],
            Quantity("2Gi".into())
        );
    }

    #[test]
    fn each_kind_gets_its_seed_port_and_env() {
        for (spec, port) in [
            (
                "kind: PythonSandbox\nsandbox: {allowedPackages: [numpy, pandas]}",
                3001,
            ),
            (
                "kind: FigmaMCP\nfigmaTokenSecretRef: {name: figma, key: token}",
                3002,
            ),
            ("kind: Browser", 3003),
        ] {
            let w = worker("w", spec);
            let pool = worker_pool(&w);
            assert_eq!(service(&w, &pool).spec.unwrap().ports.unwrap()[0].port, port);
            let d = deployment(&w, &pool, &Config::default(), "i".into(), "exec");
            let c = d.spec.unwrap().template.spec.unwrap().containers[0].clone();
            assert_eq!(c.ports.unwrap()[0].container_port, port);
            let env = c.env.unwrap();
            let get = |n: &str| env.iter().find(|e| e.name == n).cloned();
            assert_eq!(
                get("COGO_WORKER_KIND").unwrap().value.as_deref(),
                Some(w.spec.kind.as_str())
            );
            match w.spec.kind {
                WorkerKind::PythonSandbox => {
                    assert_eq!(
                        get("COGO_ALLOWED_PACKAGES").unwrap().value.as_deref(),
                        Some("numpy,pandas")
                    )
                }
                WorkerKind::FigmaMcp => {
                    let token = get("COGO_FIGMA_TOKEN").unwrap();
                    assert!(token.value.is_none(), "the token is never inline");
                    assert_eq!(token.value_from.unwrap().secret_key_ref.unwrap().name, "figma");
                }
                WorkerKind::Browser => assert!(get("COGO_FIGMA_TOKEN").is_none()),
            }
        }
    }

    #[test]
    fn browser_policy_and_mcp_servers_reach_the_pod_as_env() {
        let env_of = |spec: &str| {
            let w = worker("w", spec);
            let d = deployment(&w, &worker_pool(&w), &Config::default(), "i".into(), "exec");
            d.spec.unwrap().template.spec.unwrap().containers[0]
                .env
                .clone()
                .unwrap()
        };
        let env = env_of(
            "kind: FigmaMCP\nfigmaTokenSecretRef: {name: f, key: t}\nfigmaApiUrl: 'http://figma.local'\nmcpServers: [{name: dev, url: 'http://mcp:3845/mcp', tokenSecretRef: {name: m, key: k}}, {name: open, url: 'http://o/mcp', timeoutSeconds: 5}]",
        );
        let get = |n: &str| env.iter().find(|e| e.name == n).cloned();
        assert_eq!(
            get("COGO_FIGMA_API_URL").unwrap().value.as_deref(),
            Some("http://figma.local")
        );
        let servers: serde_json::Value =
            serde_json::from_str(get("COGO_MCP_SERVERS").unwrap().value.as_deref().unwrap()).unwrap();
        assert_eq!(
            servers,
            serde_json::json!([
                {"name": "dev", "url": "http://mcp:3845/mcp", "tokenEnv": "COGO_MCP_TOKEN_0", "timeoutSeconds": null},
                {"name": "open", "url": "http://o/mcp", "tokenEnv": null, "timeoutSeconds": 5},
            ])
        );
        let token = get("COGO_MCP_TOKEN_0")
            .unwrap()
            .value_from
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!((token.name.as_str(), token.key.as_str()), ("m", "k"));
        assert!(get("COGO_MCP_TOKEN_1").is_none() && get("COGO_POD_IP").is_none());

        let env = env_of("kind: Browser\nbrowser: {allowFileUrls: true, stepTimeoutSeconds: 3}");
        let get = |n: &str| env.iter().find(|e| e.name == n).cloned();
        assert_eq!(
            get("COGO_BROWSER_ALLOW_FILE_URLS").unwrap().value.as_deref(),
            Some("true")
        );
        assert_eq!(
            get("COGO_BROWSER_ALLOW_POD_ADDRESSES").unwrap().value.as_deref(),
            Some("false")
        );
        assert_eq!(
            get("COGO_BROWSER_STEP_TIMEOUT_SECONDS").unwrap().value.as_deref(),
            Some("3")
        );
        assert!(get("COGO_BROWSER_PAGE_TIMEOUT_SECONDS").is_none());
        assert_eq!(
            get("COGO_JOB_TIMEOUT_SECONDS").unwrap().value.as_deref(),
            Some("60"),
            "no spec.sandbox means the schema's default job timeout"
        );
        let ip = get("COGO_POD_IP").unwrap().value_from.unwrap().field_ref.unwrap();
        assert_eq!(ip.field_path, "status.podIP");
    }

    #[test]
    fn workers_read_their_token_from_a_volume_and_only_sandboxes_leave_the_runtime_profile() {
        for (spec, unconfined) in [
            ("kind: PythonSandbox", true),
            ("kind: Browser", true),
            ("kind: FigmaMCP\nfigmaTokenSecretRef: {name: f, key: t}", false),
        ] {
            let w = worker("w", spec);
            let d = deployment(&w, &worker_pool(&w), &Config::default(), "i".into(), "exec");
            let pod = d.spec.unwrap().template.spec.unwrap();
            let c = &pod.containers[0];
            let volume = pod
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == "executor-token")
                .expect("token volume");
            assert_eq!(
                volume.secret.as_ref().unwrap().secret_name.as_deref(),
                Some("w-executor-token")
            );
            let mount = c
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.name == "executor-token")
                .unwrap();
            assert_eq!(
                (mount.mount_path.as_str(), mount.read_only),
                (TOKEN_DIR, Some(true))
            );
            let env = c.env.clone().unwrap();
            let file = env.iter().find(|e| e.name == "COGO_EXECUTOR_TOKEN_FILE").unwrap();
            assert_eq!(file.value.as_deref(), Some("/var/run/cogo/executor-token/token"));
            let sc = c.security_context.clone().unwrap();
            let profile = sc.seccomp_profile.map(|p| p.type_);
            assert_eq!(profile.as_deref() == Some("Unconfined"), unconfined, "{spec}");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{spec}");
            assert_eq!(sc.run_as_non_root, Some(true), "{spec}");
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{spec}");
            assert_eq!(
                sc.capabilities.unwrap().drop,
                Some(vec!["ALL".to_string()]),
                "{spec}"
            );
        }
    }
}
