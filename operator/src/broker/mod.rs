//! The task broker's building blocks: the in-memory queue of accepted tasks, the leases of
//! running ones, the status transitions, and the tokens agents present. The HTTP endpoints that use them are described in `cogo_api::broker`.

pub mod auth;
pub mod keys;
pub mod leases;
pub mod queue;
pub mod server;
pub mod transition;
