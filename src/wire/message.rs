//! Every message body of protocol version 1, in wire order, and the opcode table.
//!
//! Each struct lists its fields in the order they travel, each with its limit; the byte
//! tables in wire-spec/README.md say the same in prose. Keys, values, contexts and causal
//! states are slices of the receive buffer; lists are decoded into a vector only after their
//! count passed its limit, and are encoded from a borrowed slice.

use crate::constants::{
    BATCH_ENTRIES_MAX, CONTEXT_BYTES_MAX, KEY_BYTES_MAX, MERKLE_BUCKETS_MAX, NODES_MAX,
    PARTITIONS_MAX, PLAN_CHANGES_MAX, RING_MOVES_MAX, RING_STATE_BYTES_MAX, SHARDS_PER_NODE_MAX,
    SIBLINGS_MAX, STATE_BYTES_MAX, STATS_ENTRIES_MAX, TEXT_BYTES_MAX, VALUE_BYTES_MAX,
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
    /// Stages a membership change (leave, remove, reweight) on the receiving node.
    0x07 "ADMIN_STAGE" AdminStage(AdminStage),
    /// The changes now staged.
    0x87 "ADMIN_STAGE_REPLY" AdminStageReply(AdminStageReply<'a>),
    /// Asks for the preview of the staged changes.
    0x08 "ADMIN_PLAN" AdminPlan(AdminPlan),
    /// The staged changes, the moves they cause and the ownership before and after.
    0x88 "ADMIN_PLAN_REPLY" AdminPlanReply(AdminPlanReply<'a>),
    /// Commits the staged changes as the cluster's next ring.
    0x09 "ADMIN_COMMIT" AdminCommit(AdminCommit),
    /// The committed ring's epoch and its moves.
    0x89 "ADMIN_COMMIT_REPLY" AdminCommitReply(AdminCommitReply),
    /// Drops the staged changes.
    0x0a "ADMIN_CLEAR" AdminClear(AdminClear),
    /// How many changes were dropped.
    0x8a "ADMIN_CLEAR_REPLY" AdminClearReply(AdminClearReply),
    /// Asks for the ring state, the nodes and the pending change's progress.
    0x0b "ADMIN_STATUS" AdminStatus(AdminStatus),
    /// The ring state, the nodes and the pending change's progress.
    0x8b "ADMIN_STATUS_REPLY" AdminStatusReply(AdminStatusReply<'a>),
    /// Makes the receiving (new) node join the cluster of a seed.
    0x0c "ADMIN_JOIN" AdminJoin(AdminJoin<'a>),
    /// The joining node adopted the cluster's ring and staged its join.
    0x8c "ADMIN_JOIN_REPLY" AdminJoinReply(AdminJoinReply),
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
    /// Asks a peer for its ring state (committed ring and pending change).
    0x2b "RING_STATE" RingState(RingState),
    /// A node's ring state, encoded as its RING file.
    0xAB "RING_STATE_REPLY" RingStateReply(RingStateReply<'a>),
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
        /// Epoch of the sender's ring state (its pending change's ring if any); a peer with
        /// an older one, or the same one while a change is pending, asks RING_STATE.
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

// ---------------------------------------------------------------------------------------
// Membership changes: the admin requests (client role) and the ring state (peer)

wire_enum! {
    /// The kind of a staged membership change.
    ChangeKind: u8 {
        /// A new node joins (staged by ADMIN_JOIN, never by ADMIN_STAGE).
        Join = 0,
        /// The receiving node leaves, streaming its replicas away itself.
        Leave = 1,
        /// A dead node is removed; its replicas are refilled from the survivors.
        Remove = 2,
        /// A node's weight changes.
        Reweight = 3,
    }
}

body! {
    /// One staged change.
    StagedChange {
        /// What kind.
        kind: ChangeKind = (),
        /// The node it is about.
        node: u64 = (),
        /// The new weight (`Reweight`), the joiner's weight (`Join`), else 0.
        weight: u32 = (),
    }
}

body! {
    /// ADMIN_STAGE: stage a change on the receiving node (leave: `node` is 0 or the
    /// receiver's id; remove and reweight: any member).
    AdminStage {
        /// Leave, Remove or Reweight.
        kind: ChangeKind = (),
        /// The node.
        node: u64 = (),
        /// The new weight for Reweight, else 0.
        weight: u32 = (),
    }
}

body! {
    /// ADMIN_STAGE_REPLY: every change staged on the node now.
    AdminStageReply<'a> {
        /// The staged changes, in the order staged.
        staged: List<'a, StagedChange> = (PLAN_CHANGES_MAX, ()),
    }
}

body! {
    /// ADMIN_PLAN: preview the staged changes (empty body).
    AdminPlan {}
}

body! {
    /// One replica move of a plan or of the pending change.
    PlanMove {
        /// The partition.
        partition: u32 = (),
        /// The node streaming it.
        from_node: u64 = (),
        /// Its shard.
        from_shard: u16 = (),
        /// The new holder.
        to_node: u64 = (),
        /// Its shard.
        to_shard: u16 = (),
        /// Whether the sender drops its copy after the flip.
        drop_after: bool = (),
        /// Whether the move is done (always false in a plan).
        done: bool = (),
    }
}

body! {
    /// One node's share of a plan.
    PlanNode {
        /// The node.
        node: u64 = (),
        /// Partitions it owns (first replica) before the plan.
        owned_before: u32 = (),
        /// Partitions it owns after the plan.
        owned_after: u32 = (),
        /// Replicas it streams to others.
        sending: u32 = (),
        /// Replicas it receives.
        receiving: u32 = (),
    }
}

body! {
    /// ADMIN_PLAN_REPLY: what committing the staged changes would do.
    AdminPlanReply<'a> {
        /// Epoch of the serving ring the plan starts from.
        ring_epoch: u64 = (),
        /// Epoch the committed ring would have.
        next_epoch: u64 = (),
        /// The staged changes.
        staged: List<'a, StagedChange> = (PLAN_CHANGES_MAX, ()),
        /// Every replica move, in partition order.
        moves: List<'a, PlanMove> = (RING_MOVES_MAX, ()),
        /// Per node of either ring, in node order.
        nodes: List<'a, PlanNode> = (NODES_MAX, ()),
    }
}

body! {
    /// ADMIN_COMMIT: commit the staged changes (empty body).
    AdminCommit {}
}

body! {
    /// ADMIN_COMMIT_REPLY: the change is committed and gossiped.
    AdminCommitReply {
        /// Epoch of the ring serving until the change completes.
        ring_epoch: u64 = (),
        /// Epoch of the committed ring.
        next_epoch: u64 = (),
        /// Replica moves to carry out.
        moves: u32 = (),
    }
}

body! {
    /// ADMIN_CLEAR: drop the staged changes (empty body).
    AdminClear {}
}

body! {
    /// ADMIN_CLEAR_REPLY: how many were dropped.
    AdminClearReply {
        /// Changes dropped.
        cleared: u32 = (),
    }
}

body! {
    /// ADMIN_STATUS: ask for the ring state (empty body).
    AdminStatus {}
}

body! {
    /// One node as ADMIN_STATUS_REPLY lists it.
    StatusNode {
        /// Node id.
        id: u64 = (),
        /// Gossiped membership status.
        status: NodeStatus = (),
        /// Relative capacity.
        weight: u32 = (),
        /// Whether the answering node's failure detector reaches it.
        reachable: bool = (),
        /// Partitions it owns in the serving ring.
        owned: u32 = (),
        /// Partitions it owns in the pending change's ring (= `owned` with none pending).
        owned_next: u32 = (),
    }
}

body! {
    /// ADMIN_STATUS_REPLY: the answering node's ring state.
    AdminStatusReply<'a> {
        /// Epoch of the serving ring.
        ring_epoch: u64 = (),
        /// Whether a change was ever committed (else the ring is formed from gossip).
        committed: bool = (),
        /// Epoch of the pending change's ring; 0 when none is pending.
        next_epoch: u64 = (),
        /// Every known node, by id.
        nodes: List<'a, StatusNode> = (NODES_MAX, ()),
        /// The pending change's moves with their done flags (empty when none).
        moves: List<'a, PlanMove> = (RING_MOVES_MAX, ()),
        /// Changes staged on the answering node.
        staged: List<'a, StagedChange> = (PLAN_CHANGES_MAX, ()),
        /// The answering node's per-shard transfer counters (names start `transfer_`).
        transfers: List<'a, Stat<'a>> = (STATS_ENTRIES_MAX, ()),
    }
}

body! {
    /// ADMIN_JOIN: join the cluster `seed` belongs to (sent to the new node).
    AdminJoin<'a> {
        /// A member's address, `HOST:PORT`.
        seed: &'a str = TEXT_BYTES_MAX,
    }
}

body! {
    /// ADMIN_JOIN_REPLY: the ring adopted and the join staged.
    AdminJoinReply {
        /// Epoch of the adopted ring.
        ring_epoch: u64 = (),
        /// The joining node's id.
        node: u64 = (),
    }
}

body! {
    /// RING_STATE: send me your ring state.
    RingState {
        /// The asking node.
        sender: u64 = (),
        /// The epoch of the asker's own ring state (see GOSSIP_DIGEST).
        ring_epoch: u64 = (),
    }
}

body! {
    /// RING_STATE_REPLY: the answering node's ring state (src/membership/state.rs).
    RingStateReply<'a> {
        /// The encoded state, exactly as in the `<data-dir>/RING` file.
        state: &'a [u8] = RING_STATE_BYTES_MAX,
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
