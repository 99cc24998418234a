//! Pure validation of what only the operator can judge: referenced Secrets and keys, name
//! conflicts with objects it does not own, the worker's Executor, resource bounds. The schema
//! and its CEL rules have already rejected everything they can; what fails here sets
//! `Ready=False` with the reason and a Warning Event, and the operator waits for a change.

use std::collections::{BTreeMap, BTreeSet};

use cogo_api::{AgentRole, CogoAgent, CogoWorker, PodOverrides, Resources, SecretKeyRef, conditions::reason};

use crate::build::{agent as build_agent, parse_millicores, worker as build_worker};
use crate::config::Config;

/// Why a spec cannot be carried out: a PascalCase reason and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// PascalCase reason, used in the Ready condition and the Event.
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Invalid {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            reason,
            message: message.into(),
        }
    }
}

/// An object that already has the name a child would take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingChild {
    /// Its kind, for messages.
    pub kind: &'static str,
    /// UID of its controller owner, if any.
    pub controller_uid: Option<String>,
}

/// What the operator looked up before validating.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Every Secret the spec references, with its keys; None when it does not exist.
    pub secrets: BTreeMap<String, Option<BTreeSet<String>>>,
    /// Objects that exist under the names the children would take.
    pub existing: Vec<ExistingChild>,
    /// Agents of the namespace with their roles (looked up for workers only).
    pub agents: Vec<(String, AgentRole)>,
}

/// Names of every Secret a pod override references.
fn pull_secrets(o: Option<&PodOverrides>) -> Vec<String> {
    o.map(|o| {
        cogo_api::common::image_pull_secret_names(o)
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Secrets a CogoAgent references: its model key and its image pull secrets.
pub fn agent_secret_names(agent: &CogoAgent) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = pull_secrets(agent.spec.pod_template.as_ref())
        .into_iter()
        .collect();
    if let Some(m) = &agent.spec.model {
        names.insert(m.api_key_secret_ref.name.clone());
    }
    if let Some(db) = agent
        .spec
        .storage
        .as_ref()
        .and_then(|s| s.database_secret.clone())
    {
        names.insert(db);
    }
    names
}

/// Secrets a CogoWorker references: its Figma token and its image pull secrets.
pub fn worker_secret_names(worker: &CogoWorker) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = pull_secrets(worker.spec.pod_template.as_ref())
        .into_iter()
        .collect();
    if let Some(t) = &worker.spec.figma_token_secret_ref {
        names.insert(t.name.clone());
    }
    for s in &worker.spec.mcp_servers {
        if let Some(t) = &s.token_secret_ref {
            names.insert(t.name.clone());
        }
    }
    names
}

fn check_secret_key(
    facts: &Facts,
    r: &SecretKeyRef,
    field: &str,
    why: &'static str,
    ns: &str,
) -> Result<(), Invalid> {
    match facts.secrets.get(&r.name) {
        Some(Some(keys)) if keys.contains(&r.key) => Ok(()),
        Some(Some(_)) => Err(Invalid::new(
            why,
            format!(
                "Secret {:?} ({field}) in namespace {ns:?} has no key {:?}",
                r.name, r.key
            ),
        )),
        _ => Err(Invalid::new(
            why,
            format!("Secret {:?} ({field}) does not exist in namespace {ns:?}", r.name),
        )),
    }
}

fn check_pull_secrets(facts: &Facts, o: Option<&PodOverrides>, ns: &str) -> Result<(), Invalid> {
    for name in pull_secrets(o) {
        if !matches!(facts.secrets.get(&name), Some(Some(_))) {
            return Err(Invalid::new(
                reason::IMAGE_PULL_SECRET_NOT_FOUND,
                format!(
                    "image pull Secret {name:?} (spec.podTemplate.imagePullSecrets) does not exist in namespace {ns:?}"
                ),
            ));
        }
    }
    Ok(())
}

fn check_cpu(r: Option<&Resources>) -> Result<(), Invalid> {
    let Some(r) = r else { return Ok(()) };
    if let (Some(req), Some(lim)) = (&r.cpu_request, &r.cpu_limit)
        && let (Some(a), Some(b)) = (parse_millicores(req), parse_millicores(lim))
        && b < a
    {
        return Err(Invalid::new(
            reason::INVALID_SPEC,
            format!("spec.resources.cpuLimit ({lim}) is below spec.resources.cpuRequest ({req})"),
        ));
    }
    Ok(())
}

fn check_conflicts(
    facts: &Facts,
    owner_uid: Option<&str>,
    name: &str,
    owner_kind: &str,
) -> Result<(), Invalid> {
    for child in &facts.existing {
        if child.controller_uid.as_deref() != owner_uid || owner_uid.is_none() {
            return Err(Invalid::new(
                reason::NAME_CONFLICT,
                format!(
                    "a {} named {name:?} already exists and is not owned by this {owner_kind}; rename one of them",
                    child.kind
                ),
            ));
        }
    }
    Ok(())
}

fn require_image(image: Option<String>, what: &str) -> Result<String, Invalid> {
    image.ok_or_else(|| {
        Invalid::new(
            reason::NO_IMAGE,
            format!("spec.image is not set and the operator has no default {what} image"),
        )
    })
}

/// Validates a CogoAgent; on success returns the image its pods run.
pub fn agent(agent: &CogoAgent, facts: &Facts, cfg: &Config) -> Result<String, Invalid> {
    let ns = agent.metadata.namespace.as_deref().unwrap_or_default();
    let name = agent.metadata.name.as_deref().unwrap_or_default();
    check_conflicts(facts, agent.metadata.uid.as_deref(), name, "CogoAgent")?;
    let image = require_image(build_agent::image(agent, cfg), "agent")?;
    check_claim(&agent.spec)?;
    if let Some(m) = &agent.spec.model {
        check_secret_key(
            facts,
            &m.api_key_secret_ref,
            "spec.model.apiKeySecretRef",
            reason::MODEL_SECRET_NOT_FOUND,
            ns,
        )?;
    }
    if let Some(db) = agent
        .spec
        .storage
        .as_ref()
        .and_then(|s| s.database_secret.clone())
    {
        check_secret_key(
            facts,
            &cogo_api::SecretKeyRef {
                name: db,
                key: "url".into(),
            },
            "spec.storage.databaseSecret",
            reason::DATABASE_SECRET_NOT_FOUND,
            ns,
        )?;
    }
    check_pull_secrets(facts, agent.spec.pod_template.as_ref(), ns)?;
    check_cpu(agent.spec.resources.as_ref())?;
    Ok(image)
}

/// A claim holds one pod's local store: an agent that may run more pods cannot share it.
fn check_claim(spec: &cogo_api::CogoAgentSpec) -> Result<(), Invalid> {
    let Some(claim) = spec.storage.as_ref().and_then(|s| s.claim_name.as_ref()) else {
        return Ok(());
    };
    let most = spec
        .autoscaling
        .as_ref()
        .map_or(spec.replicas, |a| a.max_replicas.max(spec.replicas));
    if most > 1 {
        return Err(Invalid::new(
            reason::INVALID_SPEC,
            format!(
                "spec.storage.claimName {claim:?} holds one pod's local store, and this agent may run {most} pods: set spec.storage.databaseSecret to share indexes and graphs between pods, or run one pod"
            ),
        ));
    }
    Ok(())
}

/// A valid worker's image and the Executor agent it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidWorker {
    /// Image its pods run.
    pub image: String,
    /// Name of its Executor agent.
    pub executor: String,
}

/// Validates a CogoWorker and resolves its Executor.
pub fn worker(worker: &CogoWorker, facts: &Facts, cfg: &Config) -> Result<ValidWorker, Invalid> {
    let ns = worker.metadata.namespace.as_deref().unwrap_or_default();
    let name = worker.metadata.name.as_deref().unwrap_or_default();
    check_conflicts(facts, worker.metadata.uid.as_deref(), name, "CogoWorker")?;
    let image = require_image(build_worker::image(worker, cfg), "worker")?;
    let executor = resolve_executor(worker.spec.executor.as_deref(), &facts.agents, ns)?;
    if let Some(t) = &worker.spec.figma_token_secret_ref {
        check_secret_key(
            facts,
            t,
            "spec.figmaTokenSecretRef",
            reason::FIGMA_SECRET_NOT_FOUND,
            ns,
        )?;
    }
    for (i, s) in worker.spec.mcp_servers.iter().enumerate() {
        if let Some(t) = &s.token_secret_ref {
            let field = format!("spec.mcpServers[{i}].tokenSecretRef");
            check_secret_key(facts, t, &field, reason::MCP_SECRET_NOT_FOUND, ns)?;
        }
    }
    check_pull_secrets(facts, worker.spec.pod_template.as_ref(), ns)?;
    check_cpu(worker.spec.resources.as_ref())?;
    Ok(ValidWorker { image, executor })
}

fn resolve_executor(
    wanted: Option<&str>,
    agents: &[(String, AgentRole)],
    ns: &str,
) -> Result<String, Invalid> {
    let not_found = |m: String| Invalid::new(reason::EXECUTOR_NOT_FOUND, m);
    match wanted {
        Some(name) => match agents.iter().find(|(n, _)| n == name) {
            Some((_, AgentRole::Executor)) => Ok(name.to_string()),
            Some((_, role)) => Err(not_found(format!(
                "spec.executor names CogoAgent {name:?}, whose role is {role}, not Executor"
            ))),
            None => Err(not_found(format!(
                "spec.executor names CogoAgent {name:?}, which does not exist in namespace {ns:?}"
            ))),
        },
        None => {
            let executors: Vec<_> = agents
                .iter()
                .filter(|(_, r)| *r == AgentRole::Executor)
                .map(|(n, _)| n)
                .collect();
            match executors.as_slice() {
                [one] => Ok(one.to_string()),
                [] => Err(not_found(format!(
                    "namespace {ns:?} has no CogoAgent with role Executor; create one or set spec.executor"
                ))),
                many => Err(not_found(format!(
                    "namespace {ns:?} has {} Executor agents ({}); set spec.executor to choose one",
                    many.len(),
                    many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{agent, worker};

    fn cfg() -> Config {
        Config::default()
    }

    fn secrets(list: &[(&str, &[&str])]) -> BTreeMap<String, Option<BTreeSet<String>>> {
        list.iter()
            .map(|(n, keys)| (n.to_string(), Some(keys.iter().map(|k| k.to_string()).collect())))
            .collect()
    }

    const MODEL: &str = "role: Research\nmodel: {apiKeySecretRef: {name: gemini, key: api-key}}\n";

    /// Every bad CogoAgent input the operator judges, with the reason and a fragment of the message.
    #[test]
    fn bad_agents() {
        let no_images = Config {
            agent_image: None,
            ..cfg()
        };
        let foreign = vec![ExistingChild {
            kind: "Deployment",
            controller_uid: None,
        }];
        let other_owner = vec![ExistingChild {
            kind: "Service",
            controller_uid: Some("uid-other".into()),
        }];
        let cases: Vec<(&str, String, Facts, Config, &str, &str)> = vec![
            (
                "no image anywhere",
                "role: Research".into(),
                Facts::default(),
                no_images,
                reason::NO_IMAGE,
                "no default agent image",
            ),
            (
                "model Secret missing",
                MODEL.into(),
                Facts::default(),
                cfg(),
                reason::MODEL_SECRET_NOT_FOUND,
                "Secret \"gemini\" (spec.model.apiKeySecretRef) does not exist in namespace \"team\"",
            ),
            (
                "model Secret lacks the key",
                MODEL.into(),
                Facts {
                    secrets: secrets(&[("gemini", &["token"])]),
                    ..Default::default()
                },
                cfg(),
                reason::MODEL_SECRET_NOT_FOUND,
                "has no key \"api-key\"",
            ),
            (
                "a claim for several pods",
                "role: Indexing\nreplicas: 2\nstorage: {claimName: indexes}".into(),
                Facts::default(),
                cfg(),
                reason::INVALID_SPEC,
                "spec.storage.claimName \"indexes\" holds one pod's local store, and this agent may run 2 pods",
            ),
            (
                "database Secret missing",
                "role: Indexing\nstorage: {databaseSecret: supabase-db}".into(),
                Facts::default(),
                cfg(),
                reason::DATABASE_SECRET_NOT_FOUND,
                "Secret \"supabase-db\" (spec.storage.databaseSecret) does not exist in namespace \"team\"",
            ),
            (
                "database Secret lacks its url",
                "role: GraphRAG\nstorage: {databaseSecret: supabase-db}".into(),
                Facts {
                    secrets: secrets(&[("supabase-db", &["ca.crt"])]),
                    ..Default::default()
                },
                cfg(),
                reason::DATABASE_SECRET_NOT_FOUND,
                "has no key \"url\"",
            ),
            (
                "image pull Secret missing",
                "role: Research\npodTemplate: {imagePullSecrets: [{name: regcred}]}".into(),
                Facts::default(),
                cfg(),
                reason::IMAGE_PULL_SECRET_NOT_FOUND,
                "image pull Secret \"regcred\"",
            ),
            (
                "CPU limit below request",
                "role: Research\nresources: {cpuRequest: \"2\", cpuLimit: 500m}".into(),
                Facts::default(),
                cfg(),
                reason::INVALID_SPEC,
                "spec.resources.cpuLimit (500m) is below spec.resources.cpuRequest (2)",
            ),
            (
                "Deployment of the same name, unowned",
                "role: Research".into(),
                Facts {
                    existing: foreign,
                    ..Default::default()
                },
                cfg(),
                reason::NAME_CONFLICT,
                "a Deployment named \"research\" already exists",
            ),
            (
                "Service owned by another object",
                "role: Research".into(),
                Facts {
                    existing: other_owner,
                    ..Default::default()
                },
                cfg(),
                reason::NAME_CONFLICT,
                "a Service named \"research\"",
            ),
        ];
        for (what, spec, facts, cfg, reason, fragment) in cases {
            let a = agent("research", &spec);
            let err = super::agent(&a, &facts, &cfg).expect_err(what);
            assert_eq!(err.reason, reason, "{what}");
            assert!(
                err.message.contains(fragment),
                "{what}: {:?} lacks {fragment:?}",
                err.message
            );
        }
    }

    #[test]
    fn good_agents() {
        let facts = Facts {
            secrets: secrets(&[("gemini", &["api-key"]), ("regcred", &[".dockerconfigjson"])]),
            existing: vec![ExistingChild {
                kind: "Deployment",
                controller_uid: Some("uid-research".into()),
            }],
            agents: vec![],
        };
        let spec = format!(
            "{MODEL}podTemplate: {{imagePullSecrets: [{{name: regcred}}]}}\nresources: {{cpuRequest: 500m, cpuLimit: \"1\"}}"
        );
        let a = agent("research", &spec);
        assert_eq!(
            super::agent(&a, &facts, &cfg()).unwrap(),
            cfg().agent_image.unwrap()
        );
        assert_eq!(
            agent_secret_names(&a).into_iter().collect::<Vec<_>>(),
            ["gemini", "regcred"]
        );
    }

    fn agents(list: &[(&str, AgentRole)]) -> Vec<(String, AgentRole)> {
        list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    /// Every bad CogoWorker input the operator judges.
    #[test]
    fn bad_workers() {
        let one_exec = agents(&[("exec", AgentRole::Executor)]);
        let cases: Vec<(&str, &str, Facts, &str, &str)> = vec![
            (
                "no Executor in the namespace",
                "kind: Browser",
                Facts {
                    agents: agents(&[("r", AgentRole::Research)]),
                    ..Default::default()
                },
                reason::EXECUTOR_NOT_FOUND,
                "has no CogoAgent with role Executor",
            ),
            (
                "two Executors and none chosen",
                "kind: Browser",
                Facts {
                    agents: agents(&[("e1", AgentRole::Executor), ("e2", AgentRole::Executor)]),
                    ..Default::default()
                },
                reason::EXECUTOR_NOT_FOUND,
                "has 2 Executor agents (e1, e2); set spec.executor",
            ),
            (
                "named Executor missing",
                "kind: Browser\nexecutor: gone",
                Facts {
                    agents: one_exec.clone(),
                    ..Default::default()
                },
                reason::EXECUTOR_NOT_FOUND,
                "names CogoAgent \"gone\", which does not exist",
            ),
            (
                "named agent is not an Executor",
                "kind: Browser\nexecutor: r",
                Facts {
                    agents: agents(&[("r", AgentRole::Research)]),
                    ..Default::default()
                },
                reason::EXECUTOR_NOT_FOUND,
                "whose role is Research, not Executor",
            ),
            (
                "Figma token Secret missing",
                "kind: FigmaMCP\nfigmaTokenSecretRef: {name: figma, key: token}",
                Facts {
                    agents: one_exec.clone(),
                    ..Default::default()
                },
                reason::FIGMA_SECRET_NOT_FOUND,
                "Secret \"figma\" (spec.figmaTokenSecretRef) does not exist",
            ),
            (
                "MCP token Secret lacks its key",
                "kind: FigmaMCP\nfigmaTokenSecretRef: {name: figma, key: token}\nmcpServers: [{name: a, url: 'http://a'}, {name: b, url: 'http://b', tokenSecretRef: {name: figma, key: mcp}}]",
                Facts {
                    agents: one_exec.clone(),
                    secrets: [("figma".to_string(), Some(["token".to_string()].into()))].into(),
                    ..Default::default()
                },
                reason::MCP_SECRET_NOT_FOUND,
                "Secret \"figma\" (spec.mcpServers[1].tokenSecretRef) in namespace \"team\" has no key \"mcp\"",
            ),
            (
                "image pull Secret missing",
                "kind: Browser\npodTemplate: {imagePullSecrets: [{name: regcred}]}",
                Facts {
                    agents: one_exec.clone(),
                    ..Default::default()
                },
                reason::IMAGE_PULL_SECRET_NOT_FOUND,
                "\"regcred\"",
            ),
            (
                "Deployment of the same name, unowned",
                "kind: Browser",
                Facts {
                    agents: one_exec,
                    existing: vec![ExistingChild {
                        kind: "Deployment",
                        controller_uid: Some("uid-x".into()),
                    }],
                    ..Default::default()
                },
                reason::NAME_CONFLICT,
                "not owned by this CogoWorker",
            ),
        ];
        for (what, spec, facts, reason, fragment) in cases {
            let w = worker("w", spec);
            let err = super::worker(&w, &facts, &cfg()).expect_err(what);
            assert_eq!(err.reason, reason, "{what}");
            assert!(
                err.message.contains(fragment),
                "{what}: {:?} lacks {fragment:?}",
                err.message
            );
        }
    }

    #[test]
    fn worker_resolves_its_executor() {
        let facts = Facts {
            agents: agents(&[("r", AgentRole::Research), ("exec", AgentRole::Executor)]),
            ..Default::default()
        };
        let w = worker("w", "kind: Browser");
        assert_eq!(super::worker(&w, &facts, &cfg()).unwrap().executor, "exec");
        let facts = Facts {
            agents: agents(&[("e1", AgentRole::Executor), ("e2", AgentRole::Executor)]),
            ..Default::default()
        };
        let w = worker("w", "kind: Browser\nexecutor: e2");
        assert_eq!(super::worker(&w, &facts, &cfg()).unwrap().executor, "e2");
    }
}
