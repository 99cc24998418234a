//! Builders for a CogoAgent's children: Deployment, Service and PodDisruptionBudget.

use cogo_api::{AgentRole, CogoAgent};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{EnvVar, EnvVarSource, SecretKeySelector, Service},
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{DefaultResources, PodParams, Pool, env, env_from_field, pod_template, resources};
use crate::config::Config;

/// App name label of agent pods.
pub const APP: &str = "cogo-agent";

/// The seed's sizing: Indexing and GraphRAG are CPU heavy and get 1Gi, the others 512Mi.
pub fn default_resources(role: AgentRole) -> DefaultResources {
    if role.is_heavy() {
        DefaultResources { cpu_request: "500m", cpu_limit: "2", memory: "1Gi" }
    } else {
        DefaultResources { cpu_request: "250m", cpu_limit: "1", memory: "512Mi" }
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
    if let Some(model) = &spec.model {
        vars.push(env("COGO_MODEL_PROVIDER", format!("{:?}", model.provider)));
        vars.push(env("COGO_MODEL_NAME", model.name.clone()));
        if let Some(endpoint) = &model.endpoint {
            vars.push(env("COGO_MODEL_ENDPOINT", endpoint.clone()));
        }
        vars.push(EnvVar {
            name: "COGO_MODEL_API_KEY".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: model.api_key_secret_ref.name.clone(),
                    key: model.api_key_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        });
    }
    vars
}

/// The agent's Deployment.
pub fn deployment(agent: &CogoAgent, pool: &Pool, cfg: &Config, image: String) -> Deployment {
    let spec = &agent.spec;
    let params = PodParams {
        image,
        port: spec.role.port(),
        env: agent_env(agent, pool.name, cfg),
        resources: resources(default_resources(spec.role), spec.resources.as_ref(), None),
        overrides: spec.pod_template.as_ref(),
        default_pull_policy: if spec.image.is_none() { cfg.default_pull_policy.clone() } else { None },
        default_grace_seconds: 60,
        scratch_size: "256Mi",
    };
    super::deployment(pool, spec.replicas, pod_template(pool, params))
}

/// The agent's Service on its role's port.
pub fn service(agent: &CogoAgent, pool: &Pool) -> Service {
    super::service(pool, agent.spec.role.port())
}

/// A PodDisruptionBudget that keeps all but one pod up during voluntary disruptions, when the
/// agent has more than one pod; None otherwise.
pub fn pod_disruption_budget(agent: &CogoAgent, pool: &Pool) -> Option<PodDisruptionBudget> {
    (agent.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: pool.child_meta(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(pool.selector_labels()), match_expressions: None }),
            ..Default::default()
        }),
        status: None,
    })
}
