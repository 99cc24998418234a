//! Fixtures for unit tests: custom resources from inline YAML, with metadata filled in.

use cogo_api::{CogoAgent, CogoWorker};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::build::Pool;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("team".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(3),
        ..Default::default()
    }
}

/// A CogoAgent named `name` in namespace `team` with the spec written in YAML.
pub fn agent(name: &str, spec_yaml: &str) -> CogoAgent {
    let spec = serde_saphyr::from_str(spec_yaml).expect("agent spec YAML");
    CogoAgent {
        metadata: meta(name),
        spec,
        status: None,
    }
}

/// A CogoWorker named `name` in namespace `team` with the spec written in YAML.
pub fn worker(name: &str, spec_yaml: &str) -> CogoWorker {
    let spec = serde_saphyr::from_str(spec_yaml).expect("worker spec YAML");
    CogoWorker {
        metadata: meta(name),
        spec,
        status: None,
    }
}

/// The pool of an agent fixture.
pub fn agent_pool(a: &CogoAgent) -> Pool<'_> {
    crate::controller::agent::pool(a).expect("fixture has namespace and uid")
}

/// The pool of a worker fixture.
pub fn worker_pool(w: &CogoWorker) -> Pool<'_> {
    crate::controller::worker::pool(w).expect("fixture has namespace and uid")
}
