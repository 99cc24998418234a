//! Builders for a CogoWorker's children: Deployment, Service and NetworkPolicy.

use cogo_api::{CogoWorker, WorkerKind};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{EnvVar, EnvVarSource, SecretKeySelector, Service},
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
    ];
    if let Some(limit) = &sandbox.memory_limit {
        vars.push(env("COGO_JOB_MEMORY_LIMIT", limit.clone()));
    }
    if !sandbox.allowed_packages.is_empty() {
        vars.push(env("COGO_ALLOWED_PACKAGES", sandbox.allowed_packages.join(",")));
    }
    if let Some(token) = &spec.figma_token_secret_ref {
        vars.push(EnvVar {
            name: "COGO_FIGMA_TOKEN".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: token.name.clone(),
                    key: token.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        });
    }
    vars
}

/// The worker's Deployment; `executor` is the resolved Executor agent's name.
pub fn deployment(
    worker: &CogoWorker,
    pool: &Pool,
    cfg: &Config,
    image: String,
    executor: &str,
) -> Deployment {
    let spec = &worker.spec;
    let memory_limit = spec.sandbox.as_ref().and_then(|s| s.memory_limit.as_deref());
    let params = PodParams {
        image,
        port: spec.kind.port(),
        env: worker_env(worker, pool.name, pool.namespace, executor),
        resources: resources(
            default_resources(spec.kind),
            spec.resources.as_ref(),
            memory_limit,
        ),
        overrides: spec.pod_template.as_ref(),
        default_pull_policy: if spec.image.is_none() {
            cfg.default_pull_policy.clone()
        } else {
            None
        },
        default_grace_seconds: 30,
        scratch_size: "1Gi",
    };
    super::deployment(pool, spec.replicas, pod_template(pool, params))
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
    fn sandbox_memory_limit_sets_the_pod_limit_unless_resources_do() {
        let w = worker("w", "kind: PythonSandbox\nsandbox: {memoryLimit: 768Mi}");
        let d = deployment(&w, &worker_pool(&w), &Config::default(), "i".into(), "exec");
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.resources.clone().unwrap().limits.unwrap()["memory"],
            Quantity("768Mi".into())
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
}
