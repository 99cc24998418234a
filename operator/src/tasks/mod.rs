//! The one owner of AgentTask state, and the pure decisions about tasks. The task controller
//! and the broker are its two clients: they call the [`Scheduler`] and the pure functions
//! here, and lock nothing themselves.
//!
//! - [`accept`]: is a task's target there, is its input acceptable, and what its Pending
//!   status says (also while it waits for a worker).
//! - [`transition`]: every later transition (lease, completion, retry, heartbeat lost,
//!   deadline, cancellation), fenced by the attempt number.
//! - [`standing`]: kstatus' `Reconciling` and `Stalled`, settled on every status write.
//! - [`ended`]: what is logged and counted when a task starts and ends.
//! - [`items`]: the items of indexed tasks (`spec.items`), leased one by one in memory.
//! - [`queue`], [`leases`], [`wake`], [`workers`]: the state kept in memory (the queue of
//!   accepted tasks, the leases of running ones, the wake-ups of waiting lease requests, what
//!   Executors report about their workers). None of it is worth keeping: it is rebuilt from
//!   the cluster on start.
//! - [`scheduler`]: the [`Scheduler`] that owns that state behind its locks and keeps the
//!   queue gauges current.

pub mod accept;
pub mod attempts;
pub mod ended;
pub mod items;
pub mod leases;
pub mod queue;
pub mod scheduler;
pub mod standing;
pub mod transition;
pub mod wake;
pub mod workers;

pub use accept::Target;
pub use scheduler::{
    BoardStatus, NamespaceLimits, Reservation, Scheduler, UnwrittenLease, counts_against_agent,
};
pub use standing::settle_standing;
