//! Pure builders: from a custom resource and the operator's [`Config`](crate::config::Config)
//! to the Kubernetes objects the operator applies. Nothing here talks to the API server, so
//! every builder is tested with plain values.

pub mod agent;
pub mod worker;

use std::collections::BTreeMap;

use cogo_api::{PodOverrides, Resources};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SeccompProfile, Secret, SecurityContext, Service, ServicePort, ServiceSpec,
            Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};

use crate::kube_io::FIELD_MANAGER;

/// UID and GID the runtimes run as (not root).
pub const RUN_AS_USER: i64 = 65532;
/// Name of the HTTP port (health, metrics) on every pod and Service.
pub const HTTP_PORT_NAME: &str = "http";

/// Default CPU and memory of a container, overridden field by field by the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultResources {
    /// CPU request.
    pub cpu_request: &'static str,
    /// CPU limit.
    pub cpu_limit: &'static str,
    /// Memory request and limit.
    pub memory: &'static str,
}

/// What identifies one pool of pods (an agent's or a worker's).
#[derive(Clone, Debug)]
pub struct Pool<'a> {
    /// `cogo-agent` or `cogo-worker`: the app name label and the container name.
    pub app: &'static str,
    /// The custom resource's name, which is also the name of every child.
    pub name: &'a str,
    /// The custom resource's namespace.
    pub namespace: &'a str,
    /// Role or kind, lower case, for the component label.
    pub component: &'static str,
    /// The controller owner reference to the custom resource.
    pub owner: OwnerReference,
}

impl Pool<'_> {
    /// Labels that select the pool's pods. They never change, because a Deployment's selector
    /// is immutable.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), self.app.to_string()),
            ("app.kubernetes.io/instance".to_string(), self.name.to_string()),
        ])
    }

    /// Every label the operator puts on the pool's objects and pods.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert("app.kubernetes.io/component".into(), self.component.into());
        labels.insert("app.kubernetes.io/part-of".into(), "cogo".into());
        labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
        labels
    }

    /// The selector as a string, for the scale subresource (`status.selector`).
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Metadata of a child object: the pool's name, namespace, labels and owner.
    pub fn child_meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

/// The container and pod settings that differ between agents and workers.
#[derive(Clone, Debug)]
pub struct PodParams<'a> {
    /// Container image.
    pub image: String,
    /// Port the runtime listens on.
    pub port: i32,
    /// Environment the operator sets; the spec's `podTemplate.env` may replace entries.
    pub env: Vec<EnvVar>,
    /// CPU and memory.
    pub resources: ResourceRequirements,
    /// The spec's overrides.
    pub overrides: Option<&'a PodOverrides>,
    /// Pull policy when the spec sets none.
    pub default_pull_policy: Option<String>,
    /// Grace period when the spec sets none.
    pub default_grace_seconds: i64,
    /// Size limit of the writable scratch volume mounted at /tmp.
    pub scratch_size: &'static str,
    /// More volumes, each with where the container mounts it.
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// Run the container without the runtime's seccomp profile, for a runtime that applies
    /// its own filters (the Python sandbox); the pod keeps RuntimeDefault for the rest.
    pub unconfined_seccomp: bool,
}

/// A Secret `name` of the pool, owned by its resource, holding `token` under the key `token`.
pub fn token_secret(pool: &Pool, name: &str, token: &str) -> Secret {
    let mut meta = pool.child_meta();
    meta.name = Some(name.to_string());
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        string_data: Some([("token".to_string(), token.to_string())].into()),
        ..Default::default()
    }
}

/// An environment variable with a literal value.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// An environment variable from a field of the pod (downward API).
pub fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// Puts `extra` over `base`: an entry of `extra` replaces the entry of `base` with the same
/// name, the others are appended in order.
pub fn merge_env(mut base: Vec<EnvVar>, extra: &[EnvVar]) -> Vec<EnvVar> {
    for e in extra {
        match base.iter_mut().find(|b| b.name == e.name) {
            Some(b) => *b = e.clone(),
            None => base.push(e.clone()),
        }
    }
    base
}

/// Resource requirements from the defaults with the spec's values on top. Memory request and
/// limit are equal so the pod is never overcommitted on memory.
pub fn resources(
    defaults: DefaultResources,
    spec: Option<&Resources>,
    memory_override: Option<&str>,
) -> ResourceRequirements {
    let spec = spec.cloned().unwrap_or_default();
    let cpu_request = spec.cpu_request.unwrap_or_else(|| defaults.cpu_request.into());
    let cpu_limit = spec.cpu_limit.unwrap_or_else(|| defaults.cpu_limit.into());
    let memory = spec
        .memory
        .or(memory_override.map(str::to_string))
        .unwrap_or_else(|| defaults.memory.into());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity(cpu_request)),
            ("memory".into(), Quantity(memory.clone())),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".into(), Quantity(cpu_limit)),
            ("memory".into(), Quantity(memory)),
        ])),
        ..Default::default()
    }
}

/// Parses a CPU quantity (`250m`, `1`, `0.5`) into millicores.
pub fn parse_millicores(q: &str) -> Option<i64> {
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    let v: f64 = q.parse().ok()?;
    v.is_finite().then(|| (v * 1000.0).round() as i64)
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The pod template of a pool: secure by default (non-root, read-only root filesystem, no
/// privilege escalation, all capabilities dropped, seccomp RuntimeDefault, no API token),
/// with the spec's overrides applied where they cannot weaken that.
pub fn pod_template(pool: &Pool, params: PodParams) -> PodTemplateSpec {
    let o = params.overrides.cloned().unwrap_or_default();
    let mut labels = o.labels.clone();
    labels.extend(pool.labels());
    let container = Container {
        name: pool.app.trim_start_matches("cogo-").into(),
        image: Some(params.image),
        image_pull_policy: o
            .image_pull_policy
            .map(|p| p.as_str().to_string())
            .or(params.default_pull_policy),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: params.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(merge_env(params.env, &o.env)),
        resources: Some(params.resources),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/livez", 10, 6)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: params.unconfined_seccomp.then(|| SeccompProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(
            std::iter::once(VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            })
            .chain(params.volumes.iter().map(|(_, m)| m.clone()))
            .collect(),
        ),
        ..Default::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!o.annotations.is_empty()).then(|| o.annotations.clone()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            automount_service_account_token: Some(false),
            service_account_name: o.service_account_name.clone(),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS_USER),
                run_as_group: Some(RUN_AS_USER),
                fs_group: Some(RUN_AS_USER),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            node_selector: (!o.node_selector.is_empty()).then(|| o.node_selector.clone()),
            tolerations: (!o.tolerations.is_empty()).then(|| o.tolerations.clone()),
            affinity: o.affinity.clone(),
            image_pull_secrets: (!o.image_pull_secrets.is_empty()).then(|| o.image_pull_secrets.clone()),
            priority_class_name: o.priority_class_name.clone(),
            runtime_class_name: o.runtime_class_name.clone(),
            termination_grace_period_seconds: Some(
                o.termination_grace_period_seconds
                    .unwrap_or(params.default_grace_seconds),
            ),
            volumes: Some(
                std::iter::once(Volume {
                    name: "tmp".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        size_limit: Some(Quantity(params.scratch_size.into())),
                        medium: None,
                    }),
                    ..Default::default()
                })
                .chain(params.volumes.into_iter().map(|(v, _)| v))
                .collect(),
            ),
            ..Default::default()
        }),
    }
}

/// The pool's Deployment.
pub fn deployment(pool: &Pool, replicas: i32, template: PodTemplateSpec) -> Deployment {
    Deployment {
        metadata: pool.child_meta(),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(pool.selector_labels()),
                match_expressions: None,
            },
            template,
            revision_history_limit: Some(3),
            ..Default::default()
        }),
        status: None,
    }
}

/// The pool's ClusterIP Service on its port.
pub fn service(pool: &Pool, port: i32) -> Service {
    Service {
        metadata: pool.child_meta(),
        spec: Some(ServiceSpec {
            selector: Some(pool.selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// A token Secret mounted read-only at `dir` (its key `token` at `<dir>/token`): the kubelet
/// updates the file when the operator renews the token, without restarting the pod.
pub fn token_volume(name: &str, secret: &str, dir: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.into(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(secret.into()),
                default_mode: Some(0o440),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: name.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millicores() {
        for (q, m) in [
            ("250m", Some(250)),
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("2.25", Some(2250)),
            ("x", None),
            ("m", None),
        ] {
            assert_eq!(parse_millicores(q), m, "{q}");
        }
    }

    #[test]
    fn user_env_replaces_ours_by_name_and_appends_the_rest() {
        let merged = merge_env(
            vec![env("A", "1"), env("B", "2")],
            &[env("B", "user"), env("C", "3")],
        );
        let pairs: Vec<_> = merged
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
            .collect();
        assert_eq!(pairs, [("A", "1"), ("B", "user"), ("C", "3")]);
    }

    #[test]
    fn resources_take_spec_values_over_defaults() {
        let d = DefaultResources {
            cpu_request: "250m",
            cpu_limit: "1",
            memory: "512Mi",
        };
        let r = resources(
            d,
            Some(&Resources {
                memory: Some("2Gi".into()),
                ..Default::default()
            }),
            None,
        );
        assert_eq!(r.requests.as_ref().unwrap()["memory"], Quantity("2Gi".into()));
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("2Gi".into()));
        assert_eq!(r.requests.as_ref().unwrap()["cpu"], Quantity("250m".into()));
        let r = resources(d, None, Some("768Mi"));
        assert_eq!(
            r.limits.as_ref().unwrap()["memory"],
            Quantity("768Mi".into()),
            "override beats default"
        );
    }
}
