//! Rotor: a Dynamo-style distributed key-value store, thread-per-core and shared-nothing.
//!
//! The modules, in the order a request meets them:
//!
//! - [`wire`]: frames and messages of the binary protocol (specified in `wire-spec/`);
//!   pure encode/decode, no I/O.
//! - [`ring`]: MD5 key positions, partitions, weighted claims, shard placement and
//!   preference lists; pure.
//! - [`causal`]: dotted version vector sets: how concurrent writes become siblings and
//!   how a client's context supersedes what it saw; pure.
//! - [`store`]: the per-core, memory-mapped, log-structured store with crash recovery,
//!   compaction and a hint area.
//!
//! [`constants`] holds every limit and default, each with a word on its cost.

pub mod constants;

pub mod wire;

pub mod ring;

pub mod causal;

pub mod client;
pub mod loadgen;
pub mod server;
pub mod store;
