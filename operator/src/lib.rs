//! The Cogo operator: controllers that turn `CogoAgent` and `CogoWorker` resources into
//! Deployments, Services, PodDisruptionBudgets and NetworkPolicies, with leader election,
//! metrics and health endpoints; the AgentTask controller and the task broker; and the Supabase
//! mirror; and the chat gateway ([`gateway`], `cogo-operator gateway`), a service of its own.
//!
//! Each reconcile runs *dereference → validate → build → apply → update_status*:
//! [`controller`] talks to the API server through [`kube_io`]; [`validate`], [`build`] and
//! [`status`] are pure.
//!
//! The modules depend one way: the binary's wiring (`main.rs`, `app.rs`) starts the
//! [`controller`]s and the [`broker`]; those two are clients of the shared pieces and never of
//! each other. AgentTask state has one owner, [`tasks`] (the queue, leases and transitions
//! behind its [`Scheduler`](tasks::Scheduler)); [`kube_io`] writes to the API server the one
//! way the operator does; [`tokens`] holds the keys of agent and worker tokens; [`supabase`]
//! is the database. Below them all are the pure [`validate`], [`build`] and [`status`], and
//! `cogo_api`.

pub mod broker;
pub mod build;
pub mod config;
pub mod controller;
pub mod error;
pub mod gateway;
pub mod kube_io;
pub mod leader;
pub mod metrics;
pub mod scaler;
pub mod seal;
pub mod server;
pub mod status;
pub mod supabase;
pub mod tasks;
pub mod tokens;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;

pub use error::{Error, Result};
