//! The Cogo agent runtime: one binary for every agent role.
//!
//! A pod serves its probes and metrics ([`pod`], shared with the worker runtime), pulls tasks
//! from the operator's [`broker`] in lanes ([`pull`]) and runs each with the [`handler`] its
//! [`roles`] registered for the task's type.
//!
//! Direction: `main` → [`roles`] → [`pull`] → [`handler`] → [`broker`] → `cogo_api`.

pub mod app;
pub mod broker;
pub mod handler;
pub mod llm;
pub mod pod;
pub mod pull;
pub mod roles;
pub mod store;
pub mod tls;
