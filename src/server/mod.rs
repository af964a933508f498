//! The server: listeners and connections (bytes in, frames out) on a thread-per-core
//! runtime.
//!
//! A request meets, in order: [`runtime`] (one pinned glommio executor per core, each a
//! shard listening on the common SO_REUSEPORT port and on its own port), [`connection`]
//! (the bounded per-connection loop feeding a [`FrameHandler`]), then the protocol's
//! handler, which serves the frame locally or forwards it to the owning shard through the
//! [`mailbox`]. [`config`] turns defaults, a TOML file and flags into a [`Config`];
//! [`limits`] holds the little state shared across threads (connection cap, stop latch).
//! [`service`] is the Rotor protocol itself (handshake, GET/PUT/DELETE on the shard's
//! store, TOPOLOGY, STATS), with [`commit`] (group commit) and [`stats`] (counters and
//! latency percentiles); [`start_node`] starts a node. [`cluster`] is the per-shard cluster
//! runtime driving the coordinator, gossip and failure detector, with [`peer`] (outgoing
//! peer links), [`convert`] (wire messages to and from the state machines' values) and
//! [`replica_store`] (the coordinator's storage over the shard's store). [`echo`] is a
//! trivial protocol the runtime's own tests use.
//!
//! What this layer deliberately does not do: decode messages (the handler does), touch a
//! store from another core (only the mailbox crosses cores), or read a clock for anything
//! but timeouts.

pub mod cluster;
pub mod commit;
pub mod config;
pub mod connection;
pub mod convert;
pub mod echo;
pub mod limits;
pub mod mailbox;
pub mod peer;
pub mod replica_store;
pub mod runtime;
pub mod service;
pub mod stats;
pub mod transfer;

pub use config::{Args, Config, ConfigError, Cores, Fsync};
pub use connection::{CloseReason, ConnectionLimits, FrameHandler, Step};
pub use limits::{ConnectionCap, Latch};
pub use mailbox::{Mailbox, MailboxError};
pub use runtime::{start, RunningServer, ServerError, Service, ShardInfo};
pub use service::{start_node, NodeService, StartError};
