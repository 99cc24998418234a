//! Cogo's API: the custom resources of group `cogo.xyz` (`CogoAgent`, `CogoWorker`,
//! `AgentTask`) and the types shared by the operator and the runtimes.
//!
//! This crate knows nothing of a Kubernetes client; it only describes data. The CRD YAML in
//! `crds/` is generated from these types by the `crdgen` binary (`make crds`).

// kube's `printcolumn(...)` attributes repeat keys such as `type_` by design.
#![allow(clippy::duplicated_attributes)]

pub mod agent;
pub mod broker;
pub mod catalogue;
pub mod common;
pub mod conditions;
pub mod crdgen;
pub mod gateway;
pub mod json;
pub mod openapi;
pub mod task;
pub mod worker;

pub use agent::{
    AutoscalingSpec, AutoscalingStatus, CogoAgent, CogoAgentSpec, CogoAgentStatus, ModelProvider, ModelSpec,
    TaskDefaults,
};
pub use common::{AgentRole, Backoff, PodOverrides, PullPolicy, Resources, RetryPolicy, SecretKeyRef};
pub use task::{AgentTask, AgentTaskSpec, AgentTaskStatus, ItemsStatus, TaskItems, TaskPhase};
pub use worker::{CogoWorker, CogoWorkerSpec, CogoWorkerStatus, SandboxPolicy, WorkerKind};

/// The API group of every Cogo resource.
pub const GROUP: &str = "cogo.xyz";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
