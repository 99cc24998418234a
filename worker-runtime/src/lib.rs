//! The Cogo worker runtime: one binary for every worker kind. A worker pod dials its
//! Executor ([`link`]) and runs the jobs it is sent with its kind's [`jobs::JobRunner`]:
//! [`python`] for PythonSandbox, [`browser`] for Browser, [`figma`] (with [`mcp`]) for
//! FigmaMCP. Probes, metrics and shutdown are the agent runtime's (`cogo_agent::pod`).

pub mod browser;
pub mod figma;
pub mod jobs;
pub mod link;
pub mod mcp;
pub mod python;
