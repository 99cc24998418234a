//! The Cogo operator: controllers that turn `CogoAgent` and `CogoWorker` resources into
//! Deployments, Services, PodDisruptionBudgets and NetworkPolicies, with leader election,
//! metrics and health endpoints; the AgentTask controller and the task broker; and the Supabase
//! mirror.
//!
//! Each reconcile runs *dereference → validate → build → apply → update_status*:
//! [`controller`] talks to the API server; [`validate`], [`build`] and [`status`] are pure.

pub mod broker;
pub mod build;
pub mod config;
pub mod controller;
pub mod error;
pub mod kube_io;
pub mod leader;
pub mod metrics;
pub mod seal;
pub mod server;
pub mod status;
pub mod supabase;
pub mod task;
pub mod tokens;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;

pub use error::{Error, Result};
