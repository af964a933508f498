//! Every message body of protocol version 1, in wire order, and the opcode table.
//!
//! Each struct lists its fields in the order they travel, each with its limit; the byte
//! tables in wire-spec/README.md say the same in prose. Keys, values, contexts and causal
//! states are slices of the receive buffer; lists are decoded into a vector only after their
//! count passed its limit, and are encoded from a borrowed slice.

use crate::constants::{
    BATCH_ENTRIES_MAX, CONTEXT_BYTES_MAX, KEY_BYTES_MAX, MERKLE_BUCKETS_MAX, NODES_MAX,
    PARTITIONS_MAX, SHARDS_PER_NODE_MAX, SIBLINGS_MAX, STATE_BYTES_MAX, STATS_ENTRIES_MAX,
    TEXT_BYTES_MAX, VALUE_BYTES_MAX,
};

use super::{Error, ErrorCode, List};

/// Partition limit as a list bound (the ring keeps it as a u32).
const PARTITIONS_LIST_MAX: usize = PARTITIONS_MAX as usize;

messages! {
    /// Opens every connection: versions, features, role, cluster and node.
    0x01 "HELLO" Hello(Hello),
    /// Accepts a HELLO.
    0x81 "HELLO_REPLY" HelloReply(HelloReply),
    /// Reads a key.
    0x02 "GET" Get(Get<'a>),
    /// The siblings and context of a key.
    0x82 "GET_REPLY" GetReply(GetReply<'a>),
    /// Writes a value.
    0x03 "PUT" Put(Put<'a>),
    /// Acknowledges a PUT.
    0x83 "PUT_REPLY" PutReply(PutReply<'a>),
    /// Deletes a key (writes a tombstone).
    0x04 "DELETE" Delete(Delete<'a>),
    /// Acknowledges a DELETE.
    0x84 "DELETE_REPLY" DeleteReply(DeleteReply<'a>),
    /// Asks for the ring and the nodes.
    0x05 "TOPOLOGY" Topology(Topology),
    /// The ring and the nodes.
    0x85 "TOPOLOGY_REPLY" TopologyReply(TopologyReply<'a>),
    /// Asks for counters.
    0x06 "STATS" Stats(Stats),
    /// Counters per shard.
    0x86 "STATS_REPLY" StatsReply(StatsReply<'a>),
    /// Stores a replica's causal state for a key.
    0x20 "REPLICA_WRITE" ReplicaWrite(ReplicaWrite<'a>),
    /// Acknowledges a REPLICA_WRITE once it is stored.
    0xA0 "REPLICA_WRITE_REPLY" ReplicaWriteReply(ReplicaWriteReply),
    /// Reads a replica's causal state for a key.
    0x21 "REPLICA_READ" ReplicaRead(ReplicaRead<'a>),
    /// A replica's causal state, or its absence.
    0xA1 "REPLICA_READ_REPLY" ReplicaReadReply(ReplicaReadReply<'a>),
    /// Stores a write on behalf of an unreachable node (sloppy quorum).
    0x22 "HINTED_WRITE" HintedWrite(HintedWrite<'a>),
    /// Acknowledges a HINTED_WRITE once the hint is stored.
    0xA2 "HINTED_WRITE_REPLY" HintedWriteReply(HintedWriteReply),
    /// Hands a stored hint to the node it was meant for.
    0x23 "HINT_DELIVER" HintDeliver(HintDeliver<'a>),
    /// The intended node stored a delivered hint: the holder may delete it.
    0xA3 "HINT_ACK" HintAck(HintAck),
    /// Gossip: the versions of the node states the sender knows.
    0x24 "GOSSIP_DIGEST" GossipDigest(GossipDigest<'a>),
    /// Gossip: full node states (the reply to a digest, or pushed unasked).
    0xA4 "GOSSIP_STATE" GossipState(GossipState<'a>),
    /// Failure detection probe.
    0x25 "PING" Ping(Ping),
    /// Answers a PING.
    0xA5 "PONG" Pong(Pong),
    /// Asks for the hashes of a range of Merkle buckets.
    0x26 "MERKLE_RANGE" MerkleRange(MerkleRange),
    /// The hashes of a range of Merkle buckets.
    0xA6 "MERKLE_RANGE_REPLY" MerkleRangeReply(MerkleRangeReply<'a>),
    /// Asks for the keys and states in some Merkle leaf buckets.
    0x27 "MERKLE_KEYS" MerkleKeys(MerkleKeys<'a>),
    /// The keys and states of some Merkle leaf buckets.
    0xA7 "MERKLE_KEYS_REPLY" MerkleKeysReply(MerkleKeysReply<'a>),
    /// One batch of a partition being handed to its new owner.
    0x28 "TRANSFER_BATCH" TransferBatch(TransferBatch<'a>),
    /// The receiver stored a TRANSFER_BATCH.
    0xA8 "TRANSFER_ACK" TransferAck(TransferAck),
    /// Asks the receiver of a transfer to compare key count and Merkle root.
    0x29 "TRANSFER_CONFIRM" TransferConfirm(TransferConfirm),
    /// The receiver's key count and Merkle root for a transferred partition.
    0xA9 "TRANSFER_CONFIRM_REPLY" TransferConfirmReply(TransferConfirmReply),
    /// Anti-entropy's write-back: merged states the receiver lacks.
    0x2A "MERKLE_PUSH" MerklePush(MerklePush<'a>),
    /// A MERKLE_PUSH was merged.
    0xAA "MERKLE_PUSH_ACK" MerklePushAck(MerklePushAck),
    /// A request failed.
    0xFF "ERROR" Error(ErrorReply<'a>),
}

impl Opcode {
    /// Whether this opcode is a reply (high bit set). Replies are never answered.
    pub fn is_reply(self) -> bool {
        self.to_wire() & 0x80 != 0
    }

    /// Whether only peers may send it (opcodes `0x20..=0x7f` and their replies): a node
    /// answers these from a client connection with `ERROR UNSUPPORTED`.
    pub fn is_peer_only(self) -> bool {
        self != Opcode::Error && self.to_wire() & 0x7f >= 0x20
    }
}

wire_enum! {
    /// Who opened a connection.
    Role: u8 {
        /// An application: client messages only.
        Client = 0,
        /// Another Rotor node: client and peer messages.
        Peer = 1,
    }
}

wire_enum! {
    /// A node's membership status, as gossiped and as listed in a topology.
    NodeStatus: u8 {
        /// Joining: taking over partitions, not yet an owner of all it will own.
        Joining = 0,
        /// A full member.
        Up = 1,
        /// Leaving: handing its partitions away.
        Leaving = 2,
        /// Marked down by an operator (not merely unreachable: reachability is each node's
        /// own view and is never gossiped).
        Down = 3,
        /// Removed from the cluster; kept so the removal itself propagates.
        Removed = 4,
    }
}

// ---------------------------------------------------------------------------------------
// Handshake

body! {
    /// HELLO: the first frame on every connection, from the side that connected.
    Hello {
        /// Lowest protocol version the sender speaks.
        version_min: u8 = (),
        /// Highest protocol version the sender speaks.
        version_max: u8 = (),
        /// Client or peer.
        role: Role = (),
        /// Feature bits the sender supports (none are defined in version 1).
        features: u64 = (),
        /// The cluster the sender expects; 0 means "any" (clients that do not check).
        cluster_id: u64 = (),
        /// The sender's node id; 0 for clients.
        node_id: u64 = (),
    }
}

body! {
    /// HELLO_REPLY: the accepted version and features, and who answered.
    HelloReply {
        /// The version both sides now speak: the highest both support.
        version: u8 = (),
        /// Always `Peer`: the answering side is a node.
        role: Role = (),
        /// The features both sides support (the intersection).
        features: u64 = (),
        /// The answering node's cluster.
        cluster_id: u64 = (),
        /// The answering node's id.
        node_id: u64 = (),
        /// The shard (core) that serves this connection.
        shard: u16 = (),
        /// How many shards the answering node runs.
        shard_count: u16 = (),
    }
}

// ---------------------------------------------------------------------------------------
// Client messages

body! {
    /// Per-request replication settings; 0 in any field means the server's default.
    Options {
        /// Replicas N.
        n: u8 = (),
        /// Quorum: R for reads, W for writes.
        quorum: u8 = (),
        /// Deadline in milliseconds from the server's receipt.
        timeout_ms: u32 = (),
    }
}

body! {
    /// GET: read a key.
    Get<'a> {
        /// N, R and timeout.
        options: Options = (),
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
    }
}

body! {
    /// GET_REPLY: every live sibling and the context that covers them all.
    ///
    /// No siblings means the key is absent or deleted; the context may still be non-empty
    /// (a tombstone's), and writing with it supersedes the deletion.
    GetReply<'a> {
        /// The sibling values, in no particular order.
        siblings: List<'a, &'a [u8]> = (SIBLINGS_MAX, VALUE_BYTES_MAX),
        /// Opaque causal context for the next write (empty if the key never existed).
        context: &'a [u8] = CONTEXT_BYTES_MAX,
    }
}

body! {
    /// PUT: write a value, superseding the siblings the context covers.
    Put<'a> {
        /// N, W and timeout.
        options: Options = (),
        /// Whether the reply should carry the new context.
        return_context: bool = (),
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
        /// The context of a previous GET; empty for a blind write (which becomes a sibling
        /// of whatever exists).
        context: &'a [u8] = CONTEXT_BYTES_MAX,
        /// The value.
        value: &'a [u8] = VALUE_BYTES_MAX,
    }
}

body! {
    /// PUT_REPLY: the write reached its quorum.
    PutReply<'a> {
        /// The new context if the PUT asked for it, else empty.
        context: &'a [u8] = CONTEXT_BYTES_MAX,
    }
}

body! {
    /// DELETE: write a tombstone superseding the siblings the context covers.
    Delete<'a> {
        /// N, W and timeout.
        options: Options = (),
        /// Whether the reply should carry the new context.
        return_context: bool = (),
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
        /// The context of a previous GET.
        context: &'a [u8] = CONTEXT_BYTES_MAX,
    }
}

body! {
    /// DELETE_REPLY: the tombstone reached its quorum.
    DeleteReply<'a> {
        /// The new context if the DELETE asked for it, else empty.
        context: &'a [u8] = CONTEXT_BYTES_MAX,
    }
}

body! {
    /// TOPOLOGY: ask for the ring and the nodes (empty body).
    Topology {}
}

body! {
    /// TOPOLOGY_REPLY: everything a partition- and shard-aware client routes by.
    ///
    /// The partition count Q is the length of `owners`, a power of two; a key's partition
    /// is the top log2(Q) bits of MD5(key) read as a big-endian u128.
    TopologyReply<'a> {
        /// The ring's epoch; it grows with every ownership change.
        epoch: u64 = (),
        /// The nodes; owners refer to them by index in this list.
        nodes: List<'a, NodeInfo<'a>> = (NODES_MAX, ()),
        /// Owner of each partition, in partition order.
        owners: List<'a, Owner> = (PARTITIONS_LIST_MAX, ()),
    }
    check check_topology
}

body! {
    /// One node, as a topology lists it and as gossip carries it.
    NodeInfo<'a> {
        /// Node id.
        id: u64 = (),
        /// Version of this state; gossip keeps the highest.
        version: u64 = (),
        /// Membership status.
        status: NodeStatus = (),
        /// Relative capacity; partitions are claimed in proportion.
        weight: u32 = (),
        /// Failure zone (rack, room); replicas go to distinct zones first.
        zone: &'a str = TEXT_BYTES_MAX,
        /// Client address of the common port, `HOST:PORT`.
        address: &'a str = TEXT_BYTES_MAX,
        /// Per-shard ports, indexed by shard: shard `s` listens on `HOST:ports[s]`.
        ports: List<'a, u16> = (SHARDS_PER_NODE_MAX, ()),
    }
}

body! {
    /// Who owns one partition: a node (index into the topology's node list) and its shard.
    Owner {
        /// Index of the node in the node list.
        node: u16 = (),
        /// The shard of that node holding the partition.
        shard: u16 = (),
    }
}

body! {
    /// STATS: ask for counters (empty body).
    Stats {}
}

body! {
    /// STATS_REPLY: named counters per shard, so new counters need no protocol change.
    StatsReply<'a> {
        /// The counters.
        stats: List<'a, Stat<'a>> = (STATS_ENTRIES_MAX, ()),
    }
}

body! {
    /// One counter of one shard.
    Stat<'a> {
        /// The shard.
        shard: u16 = (),
        /// Counter name, e.g. `get.count` or `get.latency_us.p99`.
        name: &'a str = TEXT_BYTES_MAX,
        /// Its value.
        value: u64 = (),
    }
}

body! {
    /// ERROR: why a request failed. The request id is that of the failed request (0 if the
    /// frame's header could not be read).
    ErrorReply<'a> {
        /// What happened.
        code: ErrorCode = (),
        /// Replicas that answered (UNAVAILABLE, TIMEOUT, INDETERMINATE), else 0.
        answered: u8 = (),
        /// Replicas the request needed (R or W) (UNAVAILABLE, TIMEOUT, INDETERMINATE),
        /// else 0.
        needed: u8 = (),
        /// The ring epoch the server routed by (WRONG_SHARD, NOT_OWNER), else 0: a client
        /// whose topology is older fetches a new one.
        ring_epoch: u64 = (),
        /// A human-readable explanation.
        message: &'a str = TEXT_BYTES_MAX,
    }
}

// ---------------------------------------------------------------------------------------
// Peer messages: replication and hinted handoff

body! {
    /// REPLICA_WRITE: merge this causal state into the replica's state for the key.
    ReplicaWrite<'a> {
        /// Partition of the key.
        partition: u32 = (),
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
        /// Encoded causal state (wire-spec/causal.md).
        state: &'a [u8] = STATE_BYTES_MAX,
    }
}

body! {
    /// REPLICA_WRITE_REPLY: the merged state is stored (empty body).
    ReplicaWriteReply {}
}

body! {
    /// REPLICA_READ: send the replica's state for a key.
    ReplicaRead<'a> {
        /// Partition of the key.
        partition: u32 = (),
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
    }
}

body! {
    /// REPLICA_READ_REPLY: the replica's causal state, or none if it holds nothing.
    ReplicaReadReply<'a> {
        /// Encoded causal state, if the replica has one.
        state: Option<&'a [u8]> = STATE_BYTES_MAX,
    }
}

body! {
    /// HINTED_WRITE: keep this state for `intended`, which is unreachable, and deliver it
    /// when it answers again.
    HintedWrite<'a> {
        /// The node the write was meant for.
        intended: u64 = (),
        /// Partition of the key.
        partition: u32 = (),
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
        /// Encoded causal state.
        state: &'a [u8] = STATE_BYTES_MAX,
    }
}

body! {
    /// HINTED_WRITE_REPLY: the hint is stored (empty body).
    HintedWriteReply {}
}

body! {
    /// HINT_DELIVER: a hint, handed to the node it was meant for.
    HintDeliver<'a> {
        /// The holder's id for this hint, echoed by HINT_ACK.
        hint_id: u64 = (),
        /// Partition of the key.
        partition: u32 = (),
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
        /// Encoded causal state.
        state: &'a [u8] = STATE_BYTES_MAX,
    }
}

body! {
    /// HINT_ACK: the hint is merged and stored; the holder may delete it.
    HintAck {
        /// The hint's id from HINT_DELIVER.
        hint_id: u64 = (),
    }
}

// ---------------------------------------------------------------------------------------
// Peer messages: membership and failure detection

body! {
    /// GOSSIP_DIGEST: what the sender knows, as (node, version) pairs.
    GossipDigest<'a> {
        /// The sending node.
        sender: u64 = (),
        /// Epoch of the sender's committed ring; a peer with an older one asks TOPOLOGY.
        ring_epoch: u64 = (),
        /// Version of each node state the sender holds.
        versions: List<'a, NodeVersion> = (NODES_MAX, ()),
    }
}

body! {
    /// A node id and the version of its state.
    NodeVersion {
        /// Node id.
        node: u64 = (),
        /// State version.
        version: u64 = (),
    }
}

body! {
    /// GOSSIP_STATE: full node states, newer than (or missing from) the digest answered.
    GossipState<'a> {
        /// The sending node.
        sender: u64 = (),
        /// Epoch of the sender's committed ring.
        ring_epoch: u64 = (),
        /// The node states.
        nodes: List<'a, NodeInfo<'a>> = (NODES_MAX, ()),
    }
}

body! {
    /// PING: are you there?
    Ping {
        /// Echoed by PONG, so a late PONG is not mistaken for a fresh one.
        nonce: u64 = (),
        /// The probing node.
        sender: u64 = (),
    }
}

body! {
    /// PONG: yes.
    Pong {
        /// The PING's nonce.
        nonce: u64 = (),
        /// The answering node.
        sender: u64 = (),
    }
}

// ---------------------------------------------------------------------------------------
// Peer messages: anti-entropy and partition transfer

body! {
    /// MERKLE_RANGE: hashes of buckets `start..start + count` at one level of a partition's
    /// tree (level 0 is the root).
    MerkleRange {
        /// The partition.
        partition: u32 = (),
        /// Tree level.
        level: u8 = (),
        /// First bucket.
        start: u32 = (),
        /// Number of buckets (at most `MERKLE_BUCKETS_MAX`).
        count: u32 = (),
    }
}

body! {
    /// MERKLE_RANGE_REPLY: one hash per bucket from `start`, in bucket order.
    MerkleRangeReply<'a> {
        /// The partition.
        partition: u32 = (),
        /// Tree level.
        level: u8 = (),
        /// First bucket.
        start: u32 = (),
        /// The bucket hashes.
        hashes: List<'a, u64> = (MERKLE_BUCKETS_MAX, ()),
    }
}

body! {
    /// MERKLE_KEYS: the entries of some leaf buckets (where the hashes differed).
    MerkleKeys<'a> {
        /// The partition.
        partition: u32 = (),
        /// Leaf bucket indexes.
        buckets: List<'a, u32> = (MERKLE_BUCKETS_MAX, ()),
    }
}

body! {
    /// MERKLE_KEYS_REPLY: the entries of the buckets it lists, which are those requested
    /// that fitted in one frame; the requester asks again for the rest.
    MerkleKeysReply<'a> {
        /// The partition.
        partition: u32 = (),
        /// The buckets whose entries are all included.
        buckets: List<'a, u32> = (MERKLE_BUCKETS_MAX, ()),
        /// Key and state of every key in those buckets.
        entries: List<'a, Entry<'a>> = (BATCH_ENTRIES_MAX, ()),
    }
}

body! {
    /// MERKLE_PUSH: the requester's merged states of keys the responder's keys reply showed
    /// stale or missing, for the receiver to merge (anti-entropy's write-back).
    MerklePush<'a> {
        /// The partition.
        partition: u32 = (),
        /// Key and merged state of every key to merge.
        entries: List<'a, Entry<'a>> = (BATCH_ENTRIES_MAX, ()),
    }
}

body! {
    /// MERKLE_PUSH_ACK: the push was taken (merged, or refused entry by entry: a push is
    /// advisory, and what it could not repair a later exchange will).
    MerklePushAck {
        /// The partition.
        partition: u32 = (),
        /// Entries of the push that changed the receiver's store.
        repaired: u32 = (),
    }
}

body! {
    /// A key and its replica's causal state.
    Entry<'a> {
        /// The key.
        key: &'a [u8] = KEY_BYTES_MAX,
        /// Encoded causal state.
        state: &'a [u8] = STATE_BYTES_MAX,
    }
}

body! {
    /// TRANSFER_BATCH: part of a partition streamed to its new owner, in sequence.
    TransferBatch<'a> {
        /// The partition.
        partition: u32 = (),
        /// Epoch of the ring whose ownership change this transfer serves.
        ring_epoch: u64 = (),
        /// Batch number, from 0, consecutive.
        sequence: u64 = (),
        /// Whether this is the last batch.
        last: bool = (),
        /// The entries.
        entries: List<'a, Entry<'a>> = (BATCH_ENTRIES_MAX, ()),
    }
}

body! {
    /// TRANSFER_ACK: the batch is stored.
    TransferAck {
        /// The partition.
        partition: u32 = (),
        /// The batch's sequence number.
        sequence: u64 = (),
    }
}

body! {
    /// TRANSFER_CONFIRM: the sender's key count and Merkle root after the last batch;
    /// ownership flips only if the receiver's match.
    TransferConfirm {
        /// The partition.
        partition: u32 = (),
        /// Epoch of the ring whose ownership change this transfer serves.
        ring_epoch: u64 = (),
        /// Keys the sender holds in the partition.
        key_count: u64 = (),
        /// The sender's Merkle root hash.
        merkle_root: u64 = (),
    }
}

body! {
    /// TRANSFER_CONFIRM_REPLY: the receiver's key count and Merkle root.
    TransferConfirmReply {
        /// The partition.
        partition: u32 = (),
        /// Keys the receiver holds in the partition.
        key_count: u64 = (),
        /// The receiver's Merkle root hash.
        merkle_root: u64 = (),
    }
}

/// A topology is usable only if Q is a power of two and every owner names a listed node.
fn check_topology(topology: &TopologyReply<'_>) -> Result<(), Error> {
    let nodes = topology.nodes.len();
    if !topology.owners.len().is_power_of_two()
        || topology
            .owners
            .iter()
            .any(|owner| usize::from(owner.node) >= nodes)
    {
        return Err(Error::Inconsistent);
    }
    Ok(())
}
