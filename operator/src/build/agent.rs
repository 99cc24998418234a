//! Builders for a CogoAgent's children: Deployment, Service and PodDisruptionBudget.

use cogo_api::{AgentRole, CogoAgent, agent::StorageSpec};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentStrategy},
        core::v1::{
            EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, Secret,
            SecretKeySelector, Service, Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{DefaultResources, PodParams, Pool, env, env_from_field, pod_template, resources};
use crate::config::Config;

/// App name label of agent pods.
pub const APP: &str = "cogo-agent";

/// The seed's sizing: Indexing and GraphRAG are CPU heavy and get 1Gi, the others 512Mi.
pub fn default_resources(role: AgentRole) -> DefaultResources {
    if role.is_heavy() {
        DefaultResources {
            cpu_request: "500m",
            cpu_limit: "2",
            memory: "1Gi",
        }
    } else {
        DefaultResources {
            cpu_request: "250m",
            cpu_limit: "1",
            memory: "512Mi",
        }
    }
}

/// The image the agent runs: its own, else the operator's default.
pub fn image(agent: &CogoAgent, cfg: &Config) -> Option<String> {
    agent.spec.image.clone().or_else(|| cfg.agent_image.clone())
}

fn agent_env(agent: &CogoAgent, name: &str, cfg: &Config) -> Vec<EnvVar> {
    let spec = &agent.spec;
    let mut vars = vec![
        env("COGO_ROLE", spec.role.as_str()),
        env("COGO_AGENT_NAME", name),
        env_from_field("COGO_NAMESPACE", "metadata.namespace"),
        env_from_field("COGO_POD_NAME", "metadata.name"),
        env("COGO_LISTEN_ADDR", format!("0.0.0.0:{}", spec.role.port())),
        env("COGO_CONCURRENCY", spec.concurrency.to_string()),
        env("COGO_BROKER_URL", cfg.broker_url.clone()),
    ];
    vars.extend(cfg.trace_env.iter().map(|(k, v)| env(k, v.clone())));
    if let Some(model) = &spec.model {
        vars.push(env("COGO_MODEL_PROVIDER", format!("{:?}", model.provider)));
        vars.push(env("COGO_MODEL_NAME", model.name.clone()));
        if let Some(endpoint) = &model.endpoint {
            vars.push(env("COGO_MODEL_ENDPOINT", endpoint.clone()));
        }
        let key = &model.api_key_secret_ref;
        vars.push(env_from_secret("COGO_MODEL_API_KEY", &key.name, &key.key, false));
    }
    let keeps_a_store = matches!(spec.role, AgentRole::Indexing | AgentRole::GraphRag);
    if let Some(secret) = spec.storage.as_ref().and_then(|s| s.database_secret.as_ref())
        && keeps_a_store
    {
        vars.push(env_from_secret("COGO_DATABASE_URL", secret, "url", false));
        vars.push(env_from_secret("COGO_DATABASE_CA", secret, "ca.crt", true));
    }
    vars
}

fn env_from_secret(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }),
    }
}

/// Where an agent's pods keep their local store (indexes and graphs without a database).
pub const STORE_DIR: &str = "/var/lib/cogo";

/// The local store's volume: the agent's claim, else an `emptyDir` of its size (2Gi).
fn store_volume(storage: Option<&StorageSpec>) -> (Volume, VolumeMount) {
    let volume = match storage.and_then(|s| s.claim_name.clone()) {
        Some(claim_name) => Volume {
            name: "store".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name,
                read_only: Some(false),
            }),
            ..Default::default()
        },
        None => Volume {
            name: "store".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity(
                    storage
                        .and_then(|s| s.size.clone())
                        .unwrap_or_else(|| "2Gi".into()),
                )),
            }),
            ..Default::default()
        },
    };
    let mount = VolumeMount {
        name: "store".into(),
        mount_path: STORE_DIR.into(),
        ..Default::default()
    };
    (volume, mount)
}

/// Where an agent's pods find their broker token Secret (the token at `<dir>/token`).
pub const TOKEN_DIR: &str = "/var/run/cogo/broker-token";

/// Name of the Secret holding an agent's broker token.
pub fn token_secret_name(agent: &str) -> String {
    format!("{agent}-broker-token")
}

/// The Secret holding the agent's broker token, owned by the agent.
pub fn token_secret(pool: &Pool, token: &str) -> Secret {
    super::token_secret(pool, &token_secret_name(pool.name), token)
}

/// The agent's Deployment. With `token_secret`, its pods get their broker token from it.
pub fn deployment(
    agent: &CogoAgent,
    pool: &Pool,
    cfg: &Config,
    image: String,
    token_secret: Option<&str>,
) -> Deployment {
    let spec = &agent.spec;
    let mut env = agent_env(agent, pool.name, cfg);
    let mut volumes = vec![];
    if matches!(spec.role, AgentRole::Indexing | AgentRole::GraphRag) {
        volumes.push(store_volume(spec.storage.as_ref()));
        env.push(super::env("COGO_STORE_DIR", STORE_DIR));
    }
    if let Some(secret) = token_secret {
        volumes.push(super::token_volume("broker-token", secret, TOKEN_DIR));
        env.push(EnvVar {
            name: "COGO_BROKER_TOKEN_FILE".into(),
            value: Some(format!("{TOKEN_DIR}/token")),
            value_from: None,
        });
    }
    let params = PodParams {
        image,
        port: spec.role.port(),
        env,
        resources: resources(default_resources(spec.role), spec.resources.as_ref(), None),
        overrides: spec.pod_template.as_ref(),
        default_pull_policy: if spec.image.is_none() {
            cfg.default_pull_policy.clone()
        } else {
            None
        },
        default_grace_seconds: 60,
        scratch_size: "256Mi",
        volumes,
        unconfined_seccomp: false,
    };
    let mut d = super::deployment(pool, agent.desired_replicas(), pod_template(pool, params));
    // A claim is one pod's: the old pod goes before the new one starts.
    if spec.storage.as_ref().is_some_and(|s| s.claim_name.is_some())
        && let Some(ds) = d.spec.as_mut()
    {
        ds.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
    }
    d
}

/// The agent's Service on its role's port.
pub fn service(agent: &CogoAgent, pool: &Pool) -> Service {
    super::service(pool, agent.spec.role.port())
}

/// A PodDisruptionBudget that keeps all but one pod up during voluntary disruptions, when the
/// agent should run more than one pod; None otherwise.
pub fn pod_disruption_budget(agent: &CogoAgent, pool: &Pool) -> Option<PodDisruptionBudget> {
    (agent.desired_replicas() > 1).then(|| PodDisruptionBudget {
        metadata: pool.child_meta(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(pool.selector_labels()),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use cogo_api::AgentRole;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::testing::{agent, agent_pool};

    fn cfg() -> Config {
        Config {
            agent_image: Some("cogo-agent:test".into()),
            ..Config::default()
        }
    }

    #[test]
    fn pods_are_locked_down() {
        let a = agent("research", "role: Research");
        let d = deployment(&a, &agent_pool(&a), &cfg(), "img:1".into(), None);
        let pod = d.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".into()]));
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/tmp",
            "a writable /tmp despite the read-only root"
        );
        assert_eq!(c.image.as_deref(), Some("img:1"));
    }

    #[test]
    fn the_broker_token_is_a_mounted_file_never_an_environment_variable() {
        let a = agent("research", "role: Research");
        let d = deployment(
            &a,
            &agent_pool(&a),
            &cfg(),
            "img:1".into(),
            Some("research-broker-token"),
        );
        let pod = d.spec.unwrap().template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "broker-token")
            .expect("the token volume");
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("research-broker-token")
        );
        let c = &pod.containers[0];
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "broker-token")
            .expect("mounted");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (TOKEN_DIR, Some(true))
        );
        let env = c.env.as_ref().unwrap();
        let file = env.iter().find(|e| e.name == "COGO_BROKER_TOKEN_FILE").unwrap();
        assert_eq!(file.value.as_deref(), Some("/var/run/cogo/broker-token/token"));
        assert!(
            env.iter().all(|e| e.name != "COGO_BROKER_TOKEN"
                && e.value_from.as_ref().is_none_or(|v| v.secret_key_ref.is_none())),
            "no token in the environment"
        );
    }

    #[test]
    fn each_role_gets_its_seed_port_and_memory() {
        for (role, port, memory) in [
            (AgentRole::Orchestrator, 6001, "512Mi"),
            (AgentRole::Indexing, 6002, "1Gi"),
            (AgentRole::Research, 6003, "512Mi"),
            (AgentRole::GraphRag, 6004, "1Gi"),
            (AgentRole::Executor, 6005, "512Mi"),
        ] {
            let a = agent("a", &format!("role: {role}"));
            let pool = agent_pool(&a);
            let d = deployment(&a, &pool, &cfg(), "i".into(), None);
            let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
            assert_eq!(c.ports.as_ref().unwrap()[0].container_port, port, "{role}");
            let r = c.resources.clone().unwrap();
            assert_eq!(r.limits.unwrap()["memory"], Quantity(memory.into()), "{role}");
            assert_eq!(
                service(&a, &pool).spec.unwrap().ports.unwrap()[0].port,
                port,
                "{role}"
            );
        }
    }

    #[test]
    fn indexing_and_graphrag_pods_get_a_store_and_the_database_from_its_secret() {
        let pod_of = |yaml: &str| {
            let a = agent("a", yaml);
            let d = deployment(&a, &agent_pool(&a), &cfg(), "i".into(), None);
            d.spec.unwrap().template.spec.unwrap()
        };
        let store = |pod: &k8s_openapi::api::core::v1::PodSpec| {
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == "store")
                .cloned()
        };
        let env = |pod: &k8s_openapi::api::core::v1::PodSpec, name: &str| {
            pod.containers[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == name)
                .cloned()
        };
        // The local store: an emptyDir of 2Gi by default, mounted where COGO_STORE_DIR says.
        let pod = pod_of("role: Indexing");
        let v = store(&pod).expect("a store volume");
        assert_eq!(v.empty_dir.unwrap().size_limit, Some(Quantity("2Gi".into())));
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "store")
            .cloned();
        assert_eq!(mount.unwrap().mount_path, STORE_DIR);
        assert_eq!(
            env(&pod, "COGO_STORE_DIR").unwrap().value.as_deref(),
            Some(STORE_DIR)
        );
        assert!(env(&pod, "COGO_DATABASE_URL").is_none());
        // A claim instead; the database's URL and CA from its Secret, never inline.
        let pod = pod_of("role: GraphRAG\nstorage: {claimName: graphs, databaseSecret: supabase-db}");
        assert_eq!(
            store(&pod).unwrap().persistent_volume_claim.unwrap().claim_name,
            "graphs"
        );
        let url = env(&pod, "COGO_DATABASE_URL").unwrap();
        assert!(url.value.is_none());
        let key = url.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str(), key.optional),
            ("supabase-db", "url", Some(false))
        );
        let ca = env(&pod, "COGO_DATABASE_CA")
            .unwrap()
            .value_from
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!((ca.key.as_str(), ca.optional), ("ca.crt", Some(true)));
        // A claim's pod is replaced, not rolled: two pods never want it at once.
        let a = agent("a", "role: GraphRAG\nstorage: {claimName: graphs}");
        let d = deployment(&a, &agent_pool(&a), &cfg(), "i".into(), None);
        assert_eq!(
            d.spec.unwrap().strategy.unwrap().type_.as_deref(),
            Some("Recreate")
        );
        // Other roles keep nothing, and get no database.
        let research = pod_of("role: Research\nstorage: {databaseSecret: supabase-db}");
        assert!(store(&research).is_none());
        assert!(env(&research, "COGO_DATABASE_URL").is_none());
    }

    #[test]
    fn model_key_comes_from_its_secret_never_inline() {
        let a = agent(
            "research",
            "role: Research\nmodel:\n  provider: Gemini\n  name: gemini-2.5-flash-lite\n  apiKeySecretRef: {name: gemini, key: api-key}\n",
        );
        let d = deployment(&a, &agent_pool(&a), &cfg(), "i".into(), None);
        let env = d.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let key = env.iter().find(|e| e.name == "COGO_MODEL_API_KEY").unwrap();
        assert!(key.value.is_none());
        let sel = key.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("gemini", "api-key"));
        assert!(
            env.iter()
                .any(|e| e.name == "COGO_MODEL_NAME" && e.value.as_deref() == Some("gemini-2.5-flash-lite"))
        );
    }

    #[test]
    fn overrides_apply_but_cannot_steal_the_selector() {
        let a = agent(
            "research",
            r#"
role: Research
replicas: 3
resources: {cpuRequest: "1", cpuLimit: "4", memory: 3Gi}
podTemplate:
  labels: {app.kubernetes.io/instance: evil, team: ml}
  env: [{name: COGO_CONCURRENCY, value: "99"}, {name: EXTRA, value: x}]
  nodeSelector: {pool: gpu}
  imagePullSecrets: [{name: regcred}]
  imagePullPolicy: Never
  runtimeClassName: gvisor
  terminationGracePeriodSeconds: 120
"#,
        );
        let d = deployment(&a, &agent_pool(&a), &cfg(), "i".into(), None);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let tmpl = spec.template;
        let labels = tmpl.metadata.unwrap().labels.unwrap();
        assert_eq!(
            labels["app.kubernetes.io/instance"], "research",
            "the selector label wins"
        );
        assert_eq!(labels["team"], "ml");
        let pod = tmpl.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["pool"], "gpu");
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(pod.termination_grace_period_seconds, Some(120));
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        let env = c.env.clone().unwrap();
        assert_eq!(env.iter().filter(|e| e.name == "COGO_CONCURRENCY").count(), 1);
        assert!(
            env.iter()
                .any(|e| e.name == "COGO_CONCURRENCY" && e.value.as_deref() == Some("99"))
        );
        let r = c.resources.clone().unwrap();
        assert_eq!(r.limits.unwrap()["cpu"], Quantity("4".into()));
        assert_eq!(r.requests.unwrap()["memory"], Quantity("3Gi".into()));
    }

    #[test]
    fn pdb_only_for_more_than_one_pod() {
        for (replicas, expected) in [(0, false), (1, false), (2, true), (10, true)] {
            let a = agent("research", &format!("role: Research\nreplicas: {replicas}"));
            assert_eq!(
                pod_disruption_budget(&a, &agent_pool(&a)).is_some(),
                expected,
                "replicas {replicas}"
            );
        }
    }

    #[test]
    fn default_image_gets_the_configured_pull_policy_own_image_does_not() {
        let cfg = Config {
            default_pull_policy: Some("Never".into()),
            ..cfg()
        };
        let a = agent("a", "role: Indexing");
        let d = deployment(&a, &agent_pool(&a), &cfg, image(&a, &cfg).unwrap(), None);
        let c = d.spec.unwrap().template.spec.unwrap().containers[0].clone();
        assert_eq!(
            (c.image.as_deref(), c.image_pull_policy.as_deref()),
            (Some("cogo-agent:test"), Some("Never"))
        );
        let a = agent("a", "role: Indexing\nimage: mine:2");
        let d = deployment(&a, &agent_pool(&a), &cfg, image(&a, &cfg).unwrap(), None);
        let c = d.spec.unwrap().template.spec.unwrap().containers[0].clone();
        assert_eq!((c.image.as_deref(), c.image_pull_policy), (Some("mine:2"), None));
    }
}
