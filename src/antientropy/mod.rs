//! Anti-entropy: replicas of a partition compare Merkle trees in the background and repair
//! each other, so data lost beyond what hinted handoff and read repair cover (a wiped disk,
//! a hint area that overflowed, a key nobody reads) comes back. A sans-IO state machine per
//! shard, like the coordinator: time comes in as milliseconds, messages come in and go
//! out as values.
//!
//! # The flow of one exchange
//!
//! ```text
//!  shard A (requester)                                   shard B (a peer replica)
//!  tick: rate allows, next partition p it replicates,
//!        next reachable peer of p's preference list
//!   ── Range{p, level 0, 0..1} ───────────────────────▶  hashes of its tree
//!   ◀─ RangeReply{root} ─────────────────────────────── (MERKLE_RANGE / _REPLY)
//!   equal: done (two messages).  different: children of every differing bucket,
//!   adjacent ranges batched, level by level
//!   ── Range{p, level 1, 0..32} ─────────────────────▶
//!   ◀─ RangeReply ──────────────────────────────────────
//!   ── Range{p, level 2, b*32..b*32+32} per run ─────▶  (only under differing buckets)
//!   ◀─ RangeReply ──────────────────────────────────────
//!   ── Keys{p, differing leaves} ────────────────────▶  whole leaves, up to a byte bound
//!   ◀─ KeysReply{p, leaves, entries} ────────────────── (MERKLE_KEYS / _REPLY)
//!   merge each entry into A's store (CausalState::merge);
//!   ── Push{p, entries B lacks} ─────────────────────▶  B merges them (MERKLE_PUSH)
//!   ◀─ ack{p, repaired} ──────────────────────────────  (MERKLE_PUSH_ACK, awaited by nobody)
//! ```
//!
//! One exchange repairs both sides: A merges B's entries of the differing leaves, and
//! pushes back the merged state of every key whose state at B differs from it. Merges are
//! idempotent and commutative, so a lost, late or duplicated message costs only a
//! later exchange. Each shard is both a requester (its own round-robin over the partitions
//! it replicates and, per partition, over the other replicas) and a responder.
//!
//! # Limits
//! A shard starts at most one exchange per `exchange_interval_ms` and moves at most
//! `keys_per_sec` entries per second (received plus pushed; the requester pays for
//! both directions of the exchanges it drives). Both scale with a share that halves when
//! the runtime reports foreground latency above a threshold ([`AntiEntropy::set_pressure`])
//! and grows back by a fixed step when it is below (AIMD, [`RateLimiter`]). No exchange
//! starts with a node the failure detector says is down; every request has a deadline,
//! after which the exchange is dropped and the peer counts a failure; a reply that is not
//! the one awaited (unknown or expired request id, wrong peer, other partition, level or
//! range) is ignored. A responder that does not replicate the partition in its own ring
//! refuses ([`ExchangeMessage::Refused`]) rather than take data it does not own.
//!
//! # Tombstone purge
//! Exchanges are also the evidence for removing tombstones for good (`purge.rs`): each
//! exchange that runs to the end is kept as a comparison with its peer (when it started,
//! the store's log position at the root comparison, the leaves found different); a
//! tombstone may go once the last two comparisons with every other replica of its
//! partition, at least `settle_ms` apart and under a stable ring, found its leaf equal and
//! started after the tombstone was stored. [`AntiEntropy::take_purge_grants`] hands the
//! runtime a [`PurgeGrant`] per partition for its store's `purge_tombstones`, and
//! [`AntiEntropy::note_purged`] keeps a purged tombstone from being taken back from a
//! replica that has not purged it yet. No timer alone decides; the caveat (a hint, or a
//! replica restored from a backup, older than the purge) is in `purge.rs`.
//!
//! # What this module deliberately does not do
//! No I/O, no clock reads, no randomness, no hash-ordered iteration (a simulation replays
//! exactly). It reads trees only through [`MerkleView`] (the store keeps them) and writes
//! only through [`ReplicaStore`] (`get_state` then `put_state` of the merge), so it does
//! not know how trees are maintained. It does not encode frames: [`ExchangeMessage`]
//! mirrors the wire's MERKLE_RANGE, MERKLE_KEYS and their replies (wire-spec 9.7, 9.8)
//! field by field, plus a push (see [`ExchangeMessage::Push`] for its wire form).
//!
//! [`ReplicaStore`]: crate::coordinator::ReplicaStore

mod exchange;
mod purge;
mod rate;
pub mod shape;
#[cfg(test)]
mod tests;
mod view;

pub use exchange::AntiEntropy;
pub use purge::PurgeGrant;
pub use rate::{RateLimiter, SHARE_FULL};
pub use view::{MerkleView, SparseTree};

use crate::constants::{
    EXCHANGES_IN_FLIGHT_MAX, EXCHANGE_INTERVAL_MS_DEFAULT, EXCHANGE_KEYS_PER_SEC_DEFAULT,
    EXCHANGE_LEAVES_PER_REQUEST_MAX, EXCHANGE_PRESSURE_LATENCY_US_DEFAULT,
    EXCHANGE_RATE_SHARE_INCREASE, EXCHANGE_RATE_SHARE_MIN, EXCHANGE_REPLY_BYTES_MAX,
    EXCHANGE_REQUEST_TIMEOUT_MS_DEFAULT, REPLICAS_DEFAULT,
};
use crate::ring::{NodeId, Replica};
use crate::wire::ErrorCode;

/// Rates and limits of one shard's anti-entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Replicas per partition (the cluster's N): whose trees are compared.
    pub n: u8,
    /// Milliseconds between exchange starts at full rate.
    pub exchange_interval_ms: u64,
    /// Entries moved per second at full rate.
    pub keys_per_sec: u64,
    /// Deadline of every request, milliseconds.
    pub request_timeout_ms: u64,
    /// Exchanges run at once.
    pub in_flight_max: usize,
    /// Leaves named by one keys request.
    pub leaves_per_request: usize,
    /// Bytes of keys and states in one keys reply or push.
    pub reply_bytes_max: usize,
    /// Foreground latency (microseconds) above which the rate halves.
    pub pressure_latency_us: u64,
    /// Lowest share of the rate, out of [`SHARE_FULL`].
    pub rate_share_min: u32,
    /// Share given back per calm latency report, out of [`SHARE_FULL`].
    pub rate_share_increase: u32,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            n: REPLICAS_DEFAULT,
            exchange_interval_ms: EXCHANGE_INTERVAL_MS_DEFAULT,
            keys_per_sec: EXCHANGE_KEYS_PER_SEC_DEFAULT,
            request_timeout_ms: EXCHANGE_REQUEST_TIMEOUT_MS_DEFAULT,
            in_flight_max: EXCHANGES_IN_FLIGHT_MAX,
            leaves_per_request: EXCHANGE_LEAVES_PER_REQUEST_MAX,
            reply_bytes_max: EXCHANGE_REPLY_BYTES_MAX,
            pressure_latency_us: EXCHANGE_PRESSURE_LATENCY_US_DEFAULT,
            rate_share_min: EXCHANGE_RATE_SHARE_MIN,
            rate_share_increase: EXCHANGE_RATE_SHARE_INCREASE,
        }
    }
}

/// A key and one replica's encoded causal state of it (the wire's `Entry` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The encoded causal state (`wire-spec/causal.md`).
    pub state: Vec<u8>,
}

/// A message between the anti-entropy machines of two shards, mirroring the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeMessage {
    /// MERKLE_RANGE: hashes of buckets `start..start + count` of `level`.
    Range {
        /// The partition.
        partition: u32,
        /// Tree level (0 is the root).
        level: u8,
        /// First bucket.
        start: u32,
        /// Number of buckets.
        count: u32,
    },
    /// MERKLE_RANGE_REPLY: one hash per bucket from `start` (fewer if the level ends).
    RangeReply {
        /// The partition.
        partition: u32,
        /// Tree level.
        level: u8,
        /// First bucket.
        start: u32,
        /// The hashes.
        hashes: Vec<u64>,
    },
    /// MERKLE_KEYS: the entries of some leaves.
    Keys {
        /// The partition.
        partition: u32,
        /// Leaf bucket numbers.
        buckets: Vec<u32>,
    },
    /// MERKLE_KEYS_REPLY: every entry of the leaves listed (those requested that fitted);
    /// the requester asks again for the rest.
    KeysReply {
        /// The partition.
        partition: u32,
        /// The leaves whose entries are all included.
        buckets: Vec<u32>,
        /// Their entries.
        entries: Vec<Entry>,
    },
    /// The requester's merged states of keys the responder's reply showed stale or
    /// missing, for the receiver to merge. On the wire it is MERKLE_PUSH (`0x2a`,
    /// wire-spec 9.11: `partition` and a list of entries, the body of MERKLE_KEYS_REPLY
    /// without `buckets`), sent with a request id of anti-entropy's class like the
    /// exchange's requests, and answered by MERKLE_PUSH_ACK (`0xaa`: the partition and how
    /// many entries changed the receiver's store) or `ERROR NOT_OWNER` from a receiver
    /// that does not replicate the partition. The push is advisory: the state machine
    /// awaits no answer (the runtime only counts acks), and a lost push or ack is
    /// repaired by a later exchange, never resent.
    Push {
        /// The partition.
        partition: u32,
        /// The entries to merge.
        entries: Vec<Entry>,
    },
    /// ERROR: the responder does not replicate the partition in its ring (`NotOwner`);
    /// the requester drops the exchange. The runtime maps a wire ERROR of any code that
    /// answers an exchange request here.
    Refused {
        /// The partition asked about.
        partition: u32,
        /// Why.
        code: ErrorCode,
    },
}

impl ExchangeMessage {
    /// The size of this message as a wire frame (16-byte header included), for the
    /// runtime's and the tests' byte counts.
    pub fn wire_bytes(&self) -> usize {
        const HEADER: usize = 16;
        let entries = |entries: &[Entry]| -> usize {
            4 + entries
                .iter()
                .map(|e| 8 + e.key.len() + e.state.len())
                .sum::<usize>()
        };
        HEADER
            + match self {
                ExchangeMessage::Range { .. } => 13,
                ExchangeMessage::RangeReply { hashes, .. } => 13 + 8 * hashes.len(),
                ExchangeMessage::Keys { buckets, .. } => 8 + 4 * buckets.len(),
                ExchangeMessage::KeysReply {
                    buckets,
                    entries: e,
                    ..
                } => 8 + 4 * buckets.len() + entries(e),
                ExchangeMessage::Push { entries: e, .. } => 4 + entries(e),
                // An ERROR body: code, counts, epoch and a short message.
                ExchangeMessage::Refused { .. } => 24,
            }
    }

    /// Whether this message answers a request (and so is matched by request id).
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            ExchangeMessage::RangeReply { .. }
                | ExchangeMessage::KeysReply { .. }
                | ExchangeMessage::Refused { .. }
        )
    }
}

/// What anti-entropy asks its runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeAction {
    /// Send a message to a shard of a node.
    Send {
        /// The destination.
        to: Replica,
        /// Request id: fresh for requests, echoed for replies, 0 for pushes (the machine
        /// awaits no answer; the runtime gives each MERKLE_PUSH a wire id of its own, which
        /// its MERKLE_PUSH_ACK echoes).
        request_id: u32,
        /// The message.
        message: ExchangeMessage,
    },
    /// A request to this node timed out: a verdict for the failure detector.
    Unresponsive {
        /// The silent node.
        node: NodeId,
    },
}

/// What a shard's anti-entropy has done, for STATS and the tests' figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Exchanges started.
    pub started: u64,
    /// Exchanges that ended with every differing leaf compared.
    pub completed: u64,
    /// Exchanges dropped (deadline, refusal, peer down).
    pub dropped: u64,
    /// Exchanges whose roots were equal at once.
    pub equal_roots: u64,
    /// Messages sent, replies to peers included.
    pub messages_sent: u64,
    /// Wire bytes of those messages ([`ExchangeMessage::wire_bytes`]).
    pub bytes_sent: u64,
    /// Entries received in keys replies and pushes.
    pub entries_received: u64,
    /// Entries pushed to peers.
    pub entries_pushed: u64,
    /// Keys whose local state a received entry changed.
    pub keys_repaired: u64,
    /// Replies ignored as stale, unexpected or from the wrong peer.
    pub stale_replies: u64,
    /// Received entries that did not decode or could not be merged (sibling cap).
    pub bad_entries: u64,
}

impl ExchangeStats {
    /// Adds another shard's figures to these (totals over a cluster).
    pub fn add(&mut self, other: &ExchangeStats) {
        self.started += other.started;
        self.completed += other.completed;
        self.dropped += other.dropped;
        self.equal_roots += other.equal_roots;
        self.messages_sent += other.messages_sent;
        self.bytes_sent += other.bytes_sent;
        self.entries_received += other.entries_received;
        self.entries_pushed += other.entries_pushed;
        self.keys_repaired += other.keys_repaired;
        self.stale_replies += other.stale_replies;
        self.bad_entries += other.bad_entries;
    }
}
