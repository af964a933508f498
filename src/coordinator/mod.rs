//! Quorum reads and writes, read repair and hinted handoff: the cluster's request path, as
//! a sans-IO state machine (no sockets, no threads, no clock: time comes in as milliseconds,
//! messages come in and go out as values).
//!
//! # How the cluster behaves
//!
//! Every key has N replicas: the first N entries of its partition's preference list
//! ([`crate::ring::Ring::preference_list`]), each a `(node, shard)`. Any node accepts any
//! client request; one [`Coordinator`] per shard runs it.
//!
//! **Writes (PUT, DELETE).** A new version needs a fresh dot from a replica of the key: the
//! DVVSet update ([`crate::causal::CausalState::update`]) takes the replica's *own* stored
//! state and its incarnation ([`crate::causal::Actor`]), so only a replica can coordinate
//! a write. A node that holds no replica of the key (or holds it on another shard)
//! therefore *forwards* the request to the first reachable replica of the preference list
//! and relays its answer; Riak does the same for the same reason. Coordinating elsewhere
//! would need either a remote read-modify-write (two round trips, and the dot would still
//! be the remote replica's) or client-side clocks, which grow with the number of clients.
//! A forwarded write is not idempotent (each run makes a new dot), so the replica ignores
//! a second copy with the same (forwarder, request id); the simulator found the anomaly a
//! duplicate causes (the copy survives as a sibling and resurfaces after a write that
//! superseded the original).
//! The coordinating replica reads its state, updates it with the client's context, stores
//! it, and sends the new state to the other N-1 replicas (REPLICA_WRITE). Its own write
//! counts once durable; the client gets its answer after W successes, and the remaining
//! replicas finish in the background. When a preference-list node is unreachable (in this
//! node's failure detector), the next reachable node of the extended list takes the write
//! as a hint naming the intended node (HINTED_WRITE: sloppy quorum); a hint counts toward
//! W. A replica that has not answered by the deadline gets a hint too, so a lost message
//! does not leave it behind; so does one whose store refused the write (not one that hit
//! the sibling cap, which would refuse every delivery too). When no fallback is left (always
//! so in a cluster of exactly N nodes) the coordinating replica keeps the hint in its own
//! hint area (see *Hinted handoff*). Fewer reachable nodes than W: `Unavailable` (answered of
//! needed), before anything is applied. A deadline passed or failures after sending:
//! `Indeterminate` (the write may or may not be in place). Too many siblings: the
//! coordinator's update refuses it (`TooManySiblings`), nothing is silently dropped.
//!
//! **Reads (GET).** Any node coordinates a read (it creates no version). It asks the
//! reachable replicas of the preference list (REPLICA_READ), and after R answers replies
//! with the causal merge of the states it got: the live siblings and the joined context.
//! Once every asked replica answered, or at the deadline, every replica whose state differs
//! from the merge of all answers gets the merge (read repair). Fewer than R reachable:
//! `Unavailable`; deadline first: `Timeout` (answered of needed).
//!
//! **Replica side.** REPLICA_WRITE and HINT_DELIVER merge the incoming state into the
//! stored one ([`crate::causal::CausalState::merge`]) and store it; REPLICA_READ returns
//! the stored state; HINTED_WRITE stores a hint in the hint area. Every acknowledgement of
//! a write waits until the store says the write is durable (group commit).
//!
//! **Hinted handoff.** A hint lives in the hint area of the shard that holds it, keyed by
//! the node it is for. The holder is a fallback node (it got a HINTED_WRITE), or, when no
//! fallback is reachable, the coordinating replica itself: as in Cassandra, it stores the
//! hint next to its own write, at most once per write and intended node, and its own
//! acknowledgement waits until that hint is durable too. A local hint does not count toward
//! W: W counts distinct nodes holding the write durably, the coordinator's own write
//! already counted once, and a second record on the same machine is lost with it. Without
//! it, a 3-node cluster with N=3 left no trace of a write made while one node was down, and
//! that node missed the write until a read or anti-entropy repaired it.
//!
//! Each shard periodically looks at the nodes it holds hints for; to
//! each one its failure detector says is reachable it sends a bounded batch of
//! HINT_DELIVERs, and deletes a hint only on its HINT_ACK (sent once the target stored it
//! durably). Unacknowledged hints are sent again after a timeout; a merge is idempotent, so
//! duplicates are harmless.
//!
//! **Membership and failure detection** live in [`crate::gossip`]: the ring is computed
//! from the gossiped membership, and reachability is each node's own view, never gossiped:
//! direct pings with hysteresis (3 consecutive failures to go down, 2 answered pings to
//! come back; request timeouts count as failures), see [`crate::gossip::FailureDetector`].
//!
//! **During a ring change.** While a committed change moves a partition's replicas (the
//! runtime's partition transfers, [`crate::membership::Handoff`]), the ring passed in stays
//! the serving (old) ring until every move is verified, and the runtime sets the moves' new
//! holders as [`ExtraWriteTargets`]: a PUT, DELETE or read repair of a moving partition
//! also sends its state to them, fire and forget (not counted toward W, failures ignored:
//! they are not owners yet, and the transfer's root comparison catches a lost one). Reads
//! ask the serving ring's replicas only.
//!
//! # Where each state machine sits
//!
//! ```text
//!  client ──PUT──▶ any node's shard ──(not a replica)──Forward──▶ first reachable replica
//!                                                                   │ Coordinator: update,
//!                                                                   │ store, fan out
//!        ◀──PUT_REPLY after W────────────────────────────────────── ├─REPLICA_WRITE──▶ replica
//!                                                                   └─HINTED_WRITE──▶ fallback
//!  client ──GET──▶ any node's shard (Coordinator) ─REPLICA_READ─▶ N replicas; R answers;
//!                                                  read repair of stale ones afterwards
//!  every shard, on tick:  deadlines ─ hint delivery (HINT_DELIVER ▶ target, HINT_ACK ◀)
//!  every node, on tick:   Gossip (digest ▶ random peer)   FailureDetector (PING ▶ peers)
//!                         └─ membership ─▶ Ring           └─ Liveness ─▶ Coordinators
//! ```
//!
//! The runtime (the server, or [`crate::sim`]) owns one [`Coordinator`] per shard, one
//! [`crate::gossip::Gossip`] and one [`crate::gossip::FailureDetector`] per node, feeds
//! them messages and ticks, and carries out the [`Action`]s they return.
//!
//! # What this module deliberately does not do
//! No I/O, no clock reads, no randomness, no hash-ordered iteration (so a simulation
//! replays exactly). It does not encode wire frames: [`PeerMessage`] mirrors the wire's
//! peer messages field by field, and the runtime converts.

mod engine;
mod storage;
#[cfg(test)]
mod tests;

pub use engine::Coordinator;
pub use storage::{
    merge_into_store, Hint, Lsn, MemDurability, MemStore, MergeFailure, ReplicaStore, StorageError,
};

use crate::causal::{CausalState, Dot, SiblingLimits};
use crate::constants::{
    COORDINATOR_REQUESTS_MAX, HINT_ACK_TIMEOUT_MS_DEFAULT, HINT_BATCH_MAX,
    HINT_DELIVERY_INTERVAL_MS_DEFAULT, READ_QUORUM_DEFAULT, REPLICAS_DEFAULT,
    REQUEST_TIMEOUT_MS_DEFAULT, WRITE_QUORUM_DEFAULT,
};
use std::collections::BTreeMap;

use smallvec::SmallVec;

use crate::ring::{NodeId, Replica};
use crate::wire::ErrorCode;

/// Per-request replication settings, as the wire's `Options`: 0 in any field means the
/// cluster default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Replicas N.
    pub n: u8,
    /// Quorum: R for reads, W for writes.
    pub quorum: u8,
    /// Deadline in milliseconds from receipt.
    pub timeout_ms: u32,
}

/// Cluster defaults and limits of one coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Default N.
    pub n: u8,
    /// Default R.
    pub r: u8,
    /// Default W.
    pub w: u8,
    /// Default deadline, milliseconds.
    pub timeout_ms: u32,
    /// Interval between hint-delivery rounds, milliseconds.
    pub hint_delivery_interval_ms: u64,
    /// How long a delivered hint waits for its ack before it is sent again, milliseconds.
    pub hint_ack_timeout_ms: u64,
    /// Most hints in flight to one target.
    pub hint_batch: usize,
    /// Most requests coordinated at once.
    pub requests_max: usize,
    /// Sibling limits applied to updates and merges.
    pub sibling_limits: SiblingLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            n: REPLICAS_DEFAULT,
            r: READ_QUORUM_DEFAULT,
            w: WRITE_QUORUM_DEFAULT,
            timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            hint_delivery_interval_ms: HINT_DELIVERY_INTERVAL_MS_DEFAULT,
            hint_ack_timeout_ms: HINT_ACK_TIMEOUT_MS_DEFAULT,
            hint_batch: HINT_BATCH_MAX,
            requests_max: COORDINATOR_REQUESTS_MAX,
            sibling_limits: SiblingLimits::default(),
        }
    }
}

/// A client request, as the wire's GET, PUT and DELETE. Contexts are the opaque bytes the
/// client holds; the coordinator decodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// Read a key.
    Get {
        /// N, R and timeout.
        options: Options,
        /// The key.
        key: Vec<u8>,
    },
    /// Write a value superseding what `context` covers.
    Put {
        /// N, W and timeout.
        options: Options,
        /// Whether the reply should carry the new context.
        return_context: bool,
        /// The key.
        key: Vec<u8>,
        /// Opaque context of an earlier GET; empty for a blind write.
        context: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Write a tombstone superseding what `context` covers.
    Delete {
        /// N, W and timeout.
        options: Options,
        /// Whether the reply should carry the new context.
        return_context: bool,
        /// The key.
        key: Vec<u8>,
        /// Opaque context of an earlier GET.
        context: Vec<u8>,
    },
}

/// The answer to a [`ClientRequest`], as the wire's GET_REPLY, PUT_REPLY, DELETE_REPLY and
/// ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReply {
    /// The live siblings and the context covering them; no siblings means absent.
    Get {
        /// The sibling values.
        siblings: Vec<Vec<u8>>,
        /// Opaque context for the next write (empty if the key never existed).
        context: Vec<u8>,
    },
    /// The write reached its quorum.
    Put {
        /// The new context if asked for, else empty.
        context: Vec<u8>,
        /// The new version's identity. Not on the wire: for logs and the simulator.
        dot: Dot,
    },
    /// The tombstone reached its quorum.
    Delete {
        /// The new context if asked for, else empty.
        context: Vec<u8>,
        /// The tombstone's identity. Not on the wire: for logs and the simulator.
        dot: Dot,
    },
    /// The request failed.
    Error(ClientError),
}

/// Why a request failed, as the wire's ERROR body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// What happened.
    pub code: ErrorCode,
    /// Replicas that answered (Unavailable, Timeout, Indeterminate), else 0.
    pub answered: u8,
    /// Replicas needed (R or W) (Unavailable, Timeout, Indeterminate), else 0.
    pub needed: u8,
    /// Ring epoch the request was routed by (NotOwner, WrongShard), else 0.
    pub ring_epoch: u64,
    /// A human-readable explanation.
    pub message: String,
}

impl ClientError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError {
            code,
            answered: 0,
            needed: 0,
            ring_epoch: 0,
            message: message.into(),
        }
    }

    fn quorum(code: ErrorCode, answered: usize, needed: u8, message: impl Into<String>) -> Self {
        ClientError {
            code,
            answered: u8::try_from(answered).unwrap_or(u8::MAX),
            needed,
            ring_epoch: 0,
            message: message.into(),
        }
    }
}

/// Where a request came from, so its answer goes back there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client connection of this shard; the token is the runtime's.
    Client(u64),
    /// Another node that forwarded the request; the answer is a [`PeerMessage::Reply`]
    /// with the same request id.
    Peer {
        /// The forwarding shard.
        from: Replica,
        /// Its request id.
        request_id: u32,
    },
}

/// A message between shards of the cluster, mirroring the wire's peer messages (same
/// names, same fields), with causal states decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// A client write forwarded to a replica of its key (a client PUT or DELETE frame on a
    /// peer connection).
    Forward(ClientRequest),
    /// The answer to a forwarded write (PUT_REPLY, DELETE_REPLY or ERROR).
    Reply(ClientReply),
    /// REPLICA_WRITE: merge this state into the replica's.
    ReplicaWrite {
        /// Partition of the key.
        partition: u32,
        /// The key.
        key: Vec<u8>,
        /// The state.
        state: CausalState,
    },
    /// REPLICA_WRITE_REPLY: merged and durable.
    ReplicaWriteReply,
    /// REPLICA_READ: send your state of a key.
    ReplicaRead {
        /// Partition of the key.
        partition: u32,
        /// The key.
        key: Vec<u8>,
    },
    /// REPLICA_READ_REPLY: the replica's state, if it has one.
    ReplicaReadReply {
        /// The state.
        state: Option<CausalState>,
    },
    /// HINTED_WRITE: keep this state for `intended`.
    HintedWrite {
        /// The node the write was meant for.
        intended: u64,
        /// Partition of the key.
        partition: u32,
        /// The key.
        key: Vec<u8>,
        /// The state.
        state: CausalState,
    },
    /// HINTED_WRITE_REPLY: the hint is durable.
    HintedWriteReply,
    /// HINT_DELIVER: a hint handed to its intended node.
    HintDeliver {
        /// The holder's id for the hint.
        hint_id: u64,
        /// Partition of the key.
        partition: u32,
        /// The key.
        key: Vec<u8>,
        /// The state.
        state: CausalState,
    },
    /// HINT_ACK: the hint is merged and durable; the holder may delete it.
    HintAck {
        /// The hint's id.
        hint_id: u64,
    },
    /// ERROR: a replica-side operation failed.
    Error {
        /// What happened.
        code: ErrorCode,
    },
}

/// What the coordinator asks its runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message to a shard of a node (possibly this node).
    Send {
        /// The destination.
        to: Replica,
        /// Request id: fresh for requests, echoed for replies.
        request_id: u32,
        /// The message.
        message: PeerMessage,
    },
    /// Answer a client of this shard.
    Reply {
        /// The runtime's token from [`Origin::Client`].
        client: u64,
        /// The answer.
        reply: ClientReply,
    },
    /// A request to this node timed out: a verdict for the failure detector.
    Unresponsive {
        /// The silent node.
        node: NodeId,
    },
}

/// The new holders of the partitions a pending ring change moves: while a partition's
/// replicas move, every write of it (PUT, DELETE, read repair) also goes to them, so the
/// moved copy misses nothing written during the transfer. They are not owners yet: their
/// answers do not count toward W and their failures fail nothing; reads never ask them.
/// Built by the runtime from the pending change's moves (`to` of each move).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraWriteTargets {
    by_partition: BTreeMap<u32, SmallVec<[Replica; 4]>>,
}

impl ExtraWriteTargets {
    /// The targets of `(partition, new holder)` pairs (duplicates kept once).
    pub fn new(pairs: impl IntoIterator<Item = (u32, Replica)>) -> Self {
        let mut by_partition: BTreeMap<u32, SmallVec<[Replica; 4]>> = BTreeMap::new();
        for (partition, replica) in pairs {
            let targets = by_partition.entry(partition).or_default();
            if !targets.contains(&replica) {
                targets.push(replica);
            }
        }
        ExtraWriteTargets { by_partition }
    }

    /// The extra targets of `partition` (empty when it does not move).
    pub fn of(&self, partition: u32) -> &[Replica] {
        self.by_partition
            .get(&partition)
            .map_or(&[], |t| t.as_slice())
    }

    /// Whether no partition moves.
    pub fn is_empty(&self) -> bool {
        self.by_partition.is_empty()
    }
}

/// Which nodes this shard may send to: the local failure detector's view.
pub trait Liveness {
    /// Whether `node` is believed reachable.
    fn is_reachable(&self, node: NodeId) -> bool;
}

/// Every node reachable: for tests and a one-node cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllReachable;

impl Liveness for AllReachable {
    fn is_reachable(&self, _node: NodeId) -> bool {
        true
    }
}
