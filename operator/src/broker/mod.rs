//! The task broker's building blocks: the in-memory queue of accepted tasks, the leases of
//! running ones, the status transitions, and what Executors report about their workers. The
//! HTTP endpoints that use them are described in `cogo_api::broker`; the tokens agents present
//! are [`crate::tokens`].

pub mod leases;
pub mod queue;
pub mod server;
pub mod transition;
pub mod wake;
pub mod workers;
