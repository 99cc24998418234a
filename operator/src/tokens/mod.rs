//! The tokens the operator issues and the keys that sign them, shared by everything that
//! issues or checks one: the agent controller (agents' broker tokens, [`auth`]), the worker
//! controller (workers' Executor tokens, [`worker_keys`]), the broker that verifies agents'
//! tokens and publishes the workers' public keys, and the Supabase rows and seals, which are
//! keyed with the same secret. [`keys`] keeps the key sets in Secrets of the operator's
//! namespace.

pub mod auth;
pub mod keys;
pub mod worker_keys;
