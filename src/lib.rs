//! Rotor: a Dynamo-style distributed key-value store, thread-per-core and shared-nothing.
//!
//! The modules, in the order a request meets them:
//!
//! - [`server`]: `rotord`'s runtime: configuration, one pinned glommio executor per core,
//!   listeners (a common port and one port per core), the connection loop and the
//!   cross-core mailbox.
//! - [`wire`]: frames and messages of the binary protocol (specified in `wire-spec/`);
//!   pure encode/decode, no I/O.
//! - [`coordinator`]: quorum reads and writes, read repair, forwarding and hinted handoff,
//!   as a sans-IO state machine per shard.
//! - [`ring`]: MD5 key positions, partitions, weighted claims, shard placement and
//!   preference lists; pure.
//! - [`causal`]: dotted version vector sets: how concurrent writes become siblings and
//!   how a client's context supersedes what it saw; pure.
//! - [`store`]: the per-core, memory-mapped, log-structured store with crash recovery,
//!   compaction and a hint area.
//! - [`merkle`]: the per-partition Merkle trees the store keeps for anti-entropy, and the
//!   hashes every node agrees on; pure.
//! - [`gossip`]: membership by gossip and the local failure detector; sans-IO.
//! - [`antientropy`]: replicas compare Merkle trees in the background and repair each
//!   other (range and keys exchanges, rate-limited); sans-IO.
//! - [`membership`]: staged join/leave/remove/weight plans and verified partition transfers
//!   (stream, compare Merkle roots, flip, drop); sans-IO.
//!
//! Beside the request path: [`client`] is the bundled blocking client (partition- and
//! shard-aware, pipelined) that the `rotor` CLI is built on; [`sim`] runs the sans-IO state machines of a whole cluster
//! under a seeded network and clock; [`loadgen`] is the engine of the `rotor-bench` load
//! generator; [`constants`] holds every limit and default, each with a word on its cost.

pub mod constants;

pub mod server;

pub mod wire;

pub mod coordinator;

pub mod ring;

pub mod causal;

pub mod store;

pub mod merkle;

pub mod gossip;

pub mod antientropy;

pub mod membership;

pub mod sim;

pub mod client;

pub mod loadgen;
