//! The task broker: the HTTP API agent pods pull tasks from, served by the leader (see
//! [`server`]; the wire format is `cogo_api::broker`). It holds no task state of its own: it is
//! a client of [`crate::tasks`], and the tokens agents present are [`crate::tokens`].

pub mod server;
