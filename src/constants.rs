//! Every limit and default of Rotor, in one place, each with what it costs.
//!
//! Limits on untrusted input are checked before any allocation. Compile-time asserts at the
//! bottom tie related limits together.

// ---------------------------------------------------------------------------------------
// Wire protocol
// ---------------------------------------------------------------------------------------

/// Longest key, in bytes. Keys live in every index entry and every record; 64 KiB keeps the
/// index honest and matches what Dynamo-style users store (ids, paths).
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// Largest value, in bytes. The Dynamo paper's objects are under 1 MB; larger values would
/// make one request stall a core for everyone else sharing it.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Most siblings one key may carry. Riak's hard maximum is 100; past this a write is refused
/// with a typed error instead of growing an object without bound.
pub const SIBLINGS_MAX: usize = 100;

/// Siblings at which a warning is logged (Riak warns at 25).
pub const SIBLINGS_WARN: usize = 25;

/// Largest frame body a peer may send, in bytes. A reply can carry up to `SIBLINGS_MAX`
/// siblings of `VALUE_BYTES_MAX`, but a server refuses to build anything larger than this
/// and reports `TooLarge` instead, so a receive buffer never grows past it.
pub const FRAME_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Longest client context, in bytes. A context is a version vector (one actor and counter per
/// replica incarnation that ever wrote the key): 64 KiB holds thousands of actors, while a
/// client cannot make a server hold or parse more than that per request.
pub const CONTEXT_BYTES_MAX: usize = 64 * 1024;

/// Longest causal state of one key (all its siblings with their dots), in bytes. States are
/// only ever bounded by the frame that carries them: a state that does not fit in a frame
/// cannot be replicated, so writes that would grow one past this are refused.
pub const STATE_BYTES_MAX: usize = FRAME_BODY_BYTES_MAX;

/// Longest short text on the wire (node address, zone name, statistic name, error message),
/// in bytes. These are names, not data; 1 KiB keeps a topology of `NODES_MAX` nodes small.
pub const TEXT_BYTES_MAX: usize = 1024;

/// Most nodes in one topology or gossip message. Owners refer to nodes by a u16 index; 4096
/// is far above Dynamo's few hundred nodes while a full gossip state stays under a few MiB.
pub const NODES_MAX: usize = 4096;

/// Most shards (cores, and so per-core ports) one node may announce. Each costs two bytes in
/// every topology entry; 1024 is above any machine Rotor runs on.
pub const SHARDS_PER_NODE_MAX: usize = 1024;

/// Most counters in one STATS reply. A counter costs ~30 bytes; 64 Ki of them is ~2 MiB.
pub const STATS_ENTRIES_MAX: usize = 64 * 1024;

/// Most Merkle buckets named or hashed by one message (8 bytes each in a range reply, so
/// at most 512 KiB). A tree level wider than this is compared in several requests.
pub const MERKLE_BUCKETS_MAX: usize = 64 * 1024;

/// Most key/state entries in one transfer batch or Merkle keys reply. Each entry costs at
/// least 8 bytes of lengths; the frame limit bounds the bytes, this bounds the count (and so
/// the receiver's per-entry work and allocation) for batches of tiny keys.
pub const BATCH_ENTRIES_MAX: usize = 64 * 1024;

// Lengths and counts travel as u32, node indexes and shards as u16.
const _: () = assert!(FRAME_BODY_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(NODES_MAX <= u16::MAX as usize + 1);
const _: () = assert!(SHARDS_PER_NODE_MAX <= u16::MAX as usize + 1);
const _: () = assert!(CONTEXT_BYTES_MAX < FRAME_BODY_BYTES_MAX);

// ---------------------------------------------------------------------------------------
// Ring
// ---------------------------------------------------------------------------------------

/// Default number of partitions Q, fixed for a cluster's life (a key's partition is the top
/// log2(Q) bits of its MD5, so changing Q would move almost every key).
///
/// Why 1024: ownership is balanced to within one partition per node, so with Q/nodes >= 16
/// the most loaded node holds at most ~6% more than the mean, and at 1024 a cluster of 64
/// equal nodes is exactly even (16 each) while a 9th node joining 8 takes ~1/9 of the data
/// in 114 partition-sized steps. Each partition costs a Merkle tree per replica and one
/// transfer unit during handoff, and the owners table (2 bytes a partition) travels in every
/// topology snapshot: 1024 keeps that at 2 KiB and a partition of a 1 TiB cluster at ~1 GiB,
/// small enough to stream and verify in one go. Riak's default of 64 is too coarse for
/// weighted claims; 4096+ multiplies per-partition overhead for clusters that rarely
/// exceed a few dozen nodes.
pub const PARTITIONS_DEFAULT: u32 = 1024;

/// Most partitions a ring may have (partition ids travel as u32, owners tables as Q entries).
/// The claim's cost grows with Q times the number of members, and a snapshot's owners table
/// is 2 bytes per partition (128 KiB at this bound).
pub const PARTITIONS_MAX: u32 = 1 << 16;

/// Most members (nodes) a ring may have. Owners are stored as 16-bit member indexes, and the
/// claim scans every member with spare quota for each partition it places, so a join costs
/// O(moved partitions x members): at this bound and Q = 1024 that is still well under a
/// second, while real Dynamo-style clusters stay in the hundreds. A ring also needs at
/// least one partition per member, so Q bounds the membership too.
pub const MEMBERS_MAX: usize = 4096;

/// Most shards (cores) one node may declare. Each shard is an executor with its own store
/// and peer connections; more shards than this would mean more cores than any host we
/// target, and partition placement would leave most of them with almost nothing.
pub const NODE_SHARDS_MAX: u16 = 256;

/// Longest zone name, in bytes. Zone names travel in gossip and in every topology snapshot
/// sent to clients, once per member.
pub const ZONE_NAME_BYTES_MAX: usize = 64;

/// How many consecutive partitions the claim tries to give distinct owners (and distinct
/// zones, when zones are set), so that a preference list of up to this many nodes is just
/// the next partitions clockwise. Larger values make the claim's constraint harder to meet
/// (a node whose share of the weight exceeds 1/CLAIM_SPREAD cannot satisfy it) and cost the
/// claim proportionally more checks per partition; it matches the default N.
pub const CLAIM_SPREAD: usize = REPLICAS_DEFAULT as usize;

/// Replicas a preference list holds inline before it spills to the heap. Key lookups with
/// N up to this never allocate; each list costs 16 bytes per inline slot on the stack.
pub const PREFERENCE_LIST_INLINE: usize = 4;

/// Default replication factor N and read and write quorums R and W (Dynamo's 3, 2, 2).
pub const REPLICAS_DEFAULT: u8 = 3;
/// Default read quorum R.
pub const READ_QUORUM_DEFAULT: u8 = 2;
/// Default write quorum W.
pub const WRITE_QUORUM_DEFAULT: u8 = 2;

/// Most replicas a request may ask for.
pub const REPLICAS_MAX: u8 = 16;

// The claim needs room to spread; owners are 16-bit member indexes; default lookups stay
// inline.
const _: () = assert!(CLAIM_SPREAD >= 2 && CLAIM_SPREAD <= REPLICAS_MAX as usize);
const _: () = assert!(REPLICAS_DEFAULT as usize <= PREFERENCE_LIST_INLINE);
const _: () = assert!(MEMBERS_MAX <= u16::MAX as usize);

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

/// Default size of one segment file. Segments are preallocated with fallocate and mapped, so
/// this is also the unit of compaction: 64 MiB rewrites in well under a second.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Default interval of the group-commit fsync, in milliseconds.
pub const GROUP_COMMIT_INTERVAL_MS_DEFAULT: u64 = 2;

/// Smallest segment file. Tests use small segments to exercise rotation and compaction;
/// below a few pages every record would need its own file.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Largest segment file. Record offsets are u32 in the index (16 bytes per key), so a
/// segment must stay under 4 GiB; 1 GiB also bounds one compaction job.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// A sealed segment is compacted once this share of its bytes (percent) is reclaimable.
/// Lower reclaims disk sooner but rewrites live data more often (write amplification of
/// about 1 / (1 - ratio)): at 50% each byte is rewritten at most about twice.
pub const COMPACTION_GARBAGE_PERCENT_DEFAULT: u8 = 50;

/// Bytes of records one `compact_step` call examines by default. 256 KiB is well under a
/// millisecond of copying, so a server calling it between requests keeps its tail latency.
pub const COMPACTION_STEP_BYTES_DEFAULT: usize = 256 * 1024;

/// Bytes appended after which `compact_step` writes a periodic index checkpoint. A
/// checkpoint costs 16 bytes per key written at once (160 MB for 10M keys); more frequent
/// checkpoints shorten the log a restart must replay.
pub const CHECKPOINT_INTERVAL_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;

/// Quota of one store's hint area, in record bytes. Hints pile up while a peer is down;
/// past the quota `put_hint` refuses (the coordinator then counts the replica as failed)
/// instead of filling the disk.
pub const HINT_BYTES_MAX_DEFAULT: u64 = 1024 * 1024 * 1024;
// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// Default client port of `rotord` on loopback. Per-shard ports follow it: shard `i` listens
/// on `LISTEN_PORT_DEFAULT + 1 + i` unless configured otherwise.
pub const LISTEN_PORT_DEFAULT: u16 = 7070;

/// Default cap on open client connections, shared by all shards of a node. Each connection
/// costs a socket, a receive buffer (64 KiB, growing only for large frames) and a task.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 10_000;

/// Default cap on requests of one connection that are being served at once (pipelining).
/// Past it the connection stops reading until replies go out, so one client cannot queue
/// unbounded work on a core.
pub const CONNECTION_IN_FLIGHT_MAX_DEFAULT: u32 = 128;

/// Default soft cap on reply bytes waiting to be written to one connection. Past it the
/// connection stops reading; one reply may exceed it (a reply is never split or dropped).
pub const CONNECTION_OUTPUT_BYTES_MAX_DEFAULT: u32 = 4 * 1024 * 1024;

/// Initial receive buffer of a connection. Most frames are far smaller; the buffer grows
/// only when one frame does not fit, up to `CONNECTION_INPUT_BYTES_MAX`.
pub const CONNECTION_INPUT_BYTES_INITIAL: usize = 64 * 1024;

/// Largest receive buffer of a connection: one whole frame must fit, since decoded
/// messages borrow from it. The slack covers the frame header.
pub const CONNECTION_INPUT_BYTES_MAX: usize = FRAME_BODY_BYTES_MAX + 64 * 1024;

/// Default time a connection may stay silent, with nothing in flight, before it is closed.
/// It also bounds how long a client may refuse to read its replies.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;

/// Default time a new connection has to complete its handshake. It keeps half-open or
/// port-scanning connections from holding slots of the connection cap.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Depth of each one-way queue of the cross-core mailbox (one queue per ordered pair of
/// shards and direction). A sender waits when the queue is full.
pub const MAILBOX_QUEUE_DEPTH: usize = 1024;

/// How long shutdown waits for in-flight work and open connections before it gives up on
/// them and runs the per-shard shutdown hooks anyway.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Memory each executor registers with io_uring for storage DMA. Rotor's store does its
/// own blocking I/O through memory maps, so glommio's 10 MiB default would only cost
/// locked memory (RLIMIT_MEMLOCK) per core.
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 256 * 1024;

/// Locked memory glommio requires before it creates a reactor (it refuses to start under
/// 512 KiB). `rotord` raises its soft RLIMIT_MEMLOCK to at least this plus three times
/// `EXECUTOR_IO_MEMORY_BYTES` per core (glommio registers it with each of its three
/// rings, and each registration is charged) when it may.
pub const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

const _: () = assert!(CONNECTION_INPUT_BYTES_INITIAL <= CONNECTION_INPUT_BYTES_MAX);
const _: () = assert!(CONNECTION_INPUT_BYTES_MAX > FRAME_BODY_BYTES_MAX);
const _: () = assert!(LISTEN_PORT_DEFAULT < u16::MAX - 256);

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < FRAME_BODY_BYTES_MAX);
const _: () = assert!(PARTITIONS_DEFAULT.is_power_of_two());
const _: () = assert!(PARTITIONS_MAX.is_power_of_two());
const _: () = assert!(READ_QUORUM_DEFAULT <= REPLICAS_DEFAULT);
const _: () = assert!(WRITE_QUORUM_DEFAULT <= REPLICAS_DEFAULT);
const _: () = assert!(SIBLINGS_WARN < SIBLINGS_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MAX < u32::MAX as u64);
// The largest record must fit in a default segment.
const _: () = assert!((KEY_BYTES_MAX + VALUE_BYTES_MAX + 64) as u64 <= SEGMENT_BYTES_DEFAULT);

// ---------------------------------------------------------------------------------------
// Causality
// ---------------------------------------------------------------------------------------

/// Most actors (replica incarnations) one key's causal state or context may name. Every
/// actor costs 16 bytes in each stored copy of the key and in every context a client holds,
/// and update and merge walk them linearly. Actors are replicas that coordinated a write,
/// never clients, so a key sees N of them plus one per replacement or data loss: 256 leaves
/// room for years of churn while a context stays under 4.2 KiB. Past it a write is refused
/// (typed error), never truncated, since dropping an entry could resurrect covered writes.
pub const CAUSAL_ACTORS_MAX: usize = 256;

// The causal formats carry actor and sibling counts as u16 and value lengths as u32.
const _: () = assert!(CAUSAL_ACTORS_MAX <= u16::MAX as usize);
const _: () = assert!(SIBLINGS_MAX <= u16::MAX as usize);
const _: () = assert!(VALUE_BYTES_MAX <= u32::MAX as usize);
// A causal state of the largest shape still has a length that fits its u32 field.
const _: () = assert!(
    SIBLINGS_MAX * (VALUE_BYTES_MAX + 5) + CAUSAL_ACTORS_MAX * 18 + 13 <= u32::MAX as usize
);

// ---------------------------------------------------------------------------------------
// Anti-entropy
// ---------------------------------------------------------------------------------------

/// Children of every inner bucket of a partition's Merkle tree (wire-spec/merkle.md). A
/// bucket's hash is recomputed from this many child hashes (256 bytes hashed), and the
/// exchange descends one differing bucket by asking for this many hashes (256 bytes on
/// the wire): wider means fewer levels but more hashes sent around each difference.
pub const MERKLE_FANOUT: u32 = 32;

/// Levels of a partition's Merkle tree: the root (level 0), `MERKLE_FANOUT` buckets, and
/// `MERKLE_LEAVES` leaves. Each level costs the exchange one round trip. Three levels of
/// 32 give 1024 leaves, about one key per leaf at 1M keys over 1024 partitions, so a
/// differing leaf sends few keys besides the differing one; a tree costs 8.5 KiB of memory
/// per partition replica whatever its key count.
pub const MERKLE_LEVELS: u8 = 3;

/// Leaves of a partition's Merkle tree: `MERKLE_FANOUT` to the power `MERKLE_LEVELS - 1`.
/// Each leaf is one 8-byte XOR accumulator; a write touches exactly one. A whole leaf
/// level travels in one range reply of 8 KiB.
pub const MERKLE_LEAVES: u32 = 1024;

const _: () = assert!(MERKLE_LEAVES == MERKLE_FANOUT.pow(MERKLE_LEVELS as u32 - 1));
const _: () = assert!(MERKLE_LEAVES.is_power_of_two() && MERKLE_LEAVES > 1);
// A whole level fits in one MERKLE_RANGE_REPLY or MERKLE_KEYS request.
const _: () = assert!(MERKLE_LEAVES as usize <= MERKLE_BUCKETS_MAX);

// ---------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------

/// Default deadline of a client request at its coordinator, in milliseconds. A GET that
/// misses it fails with `Timeout`, a write with `Indeterminate`. Longer deadlines ride out
/// a peer's stall instead of failing the request, at the cost of holding the request's
/// state (a few hundred bytes) that much longer.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u32 = 2_000;

/// Longest deadline a client may ask for, in milliseconds: every in-flight request holds
/// its state until then, so this bounds how long a slow peer can pin memory.
pub const REQUEST_TIMEOUT_MS_MAX: u32 = 60_000;

/// Extra time a node that forwarded a write waits beyond the request's own deadline, in
/// milliseconds, so the coordinating replica's verdict (which it sends at its deadline)
/// can still arrive before the forwarder gives up and reports `Indeterminate`.
pub const FORWARD_GRACE_MS: u32 = 500;

/// Most requests one shard coordinates at once (client requests plus forwarded ones).
/// Past it new requests are refused with `Overloaded` before any work; each costs its key,
/// the new causal state for a write and one entry per replica.
pub const COORDINATOR_REQUESTS_MAX: usize = 64 * 1024;

/// Most hints one shard holds, over all target nodes. A hint is a whole causal state of a
/// key, so this bounds the hint area's size while a node is down; past it hinted writes are
/// refused (the coordinator then counts that fallback as failed, never as a success).
pub const HINTS_MAX: usize = 1024 * 1024;

/// Interval between two hint-delivery rounds of a shard, in milliseconds. Each round sends
/// at most `HINT_BATCH_MAX` hints to every reachable target; a shorter interval drains a
/// recovered node faster at the cost of more handoff traffic next to client requests.
pub const HINT_DELIVERY_INTERVAL_MS_DEFAULT: u64 = 200;

/// Most hints in flight to one target node at once: bounds the handoff's share of the
/// target's work and the holder's bookkeeping.
pub const HINT_BATCH_MAX: usize = 64;

/// How long a delivered hint waits for its HINT_ACK before it is sent again, in
/// milliseconds. A hint is deleted only after the ack, so a lost message costs a resend,
/// never the hint.
pub const HINT_ACK_TIMEOUT_MS_DEFAULT: u64 = 2_000;

/// Default interval between two gossip rounds, in milliseconds: each round sends one
/// digest to one random peer, so membership news reaches all of `n` nodes in O(log n)
/// rounds; a shorter interval converges faster for proportionally more background traffic.
pub const GOSSIP_INTERVAL_MS_DEFAULT: u64 = 1_000;

/// Chance, in percent, that a gossip round goes to a seed instead of a random peer even
/// when peers are known: this is what joins two halves that formed apart (Cassandra's
/// "gossip to a seed" rule). Costs that share of rounds' diversity.
pub const GOSSIP_SEED_PERCENT: u64 = 10;

/// Default interval between two pings of one peer by the failure detector, in
/// milliseconds. Pings are tiny; the interval sets how fast a dead peer is noticed
/// (`FAILURE_DOWN_AFTER` of them) and how fast a recovered one is trusted again.
pub const PING_INTERVAL_MS_DEFAULT: u64 = 500;

/// How long a ping waits for its pong before it counts as a failure, in milliseconds.
/// Generous on purpose: a slow peer that answers within it is never marked down.
pub const PING_TIMEOUT_MS_DEFAULT: u64 = 1_500;

/// Consecutive failures (pings without a pong, requests that timed out) after which a
/// peer is considered unreachable. With the success threshold below this is the
/// hysteresis that keeps a slow or lossy peer from flapping.
pub const FAILURE_DOWN_AFTER: u32 = 3;

/// Consecutive answered pings after which an unreachable peer is trusted again.
pub const FAILURE_UP_AFTER: u32 = 2;

/// Default cluster id of `rotord` (`--cluster-id`): nonzero, since 0 means "any" in a
/// client's HELLO. Clusters that must never talk to each other by mistake set their own.
pub const CLUSTER_ID_DEFAULT: u64 = 1;

/// Interval of each shard's cluster timer in the server, in milliseconds: coordinator
/// deadlines and hint delivery on every shard, gossip and pings on shard 0. A deadline
/// fires up to this late; a shorter tick costs a timer wake-up per shard that often.
pub const CLUSTER_TICK_MS: u64 = 10;

/// Shard ids from this one up name incoming peer connections, not shards: a peer's HELLO
/// gives its node id but not its shard, so each incoming peer connection gets its own
/// pseudo shard id, and the coordinator's replies to it find the connection again. Real
/// shard counts stay below it (`SHARDS_PER_NODE_MAX`).
pub const PEER_PSEUDO_SHARD_BASE: u16 = 0x8000;

/// Frames waiting in one outgoing peer link (one per peer shard, per local shard) while it
/// connects or writes. Past it further messages to that replica are dropped (the
/// coordinator's deadline then reports the replica unresponsive); each frame holds one
/// replica message, so this bounds a stalled peer's memory to this many messages.
pub const PEER_LINK_QUEUE_FRAMES_MAX: usize = 4096;

/// Requests one incoming peer connection may have served at once (instead of the client
/// bound `connection_in_flight_max`): one connection carries all replica traffic from one
/// shard of a peer to this shard, so it matches the sender's link queue. Each costs a
/// request's state until its (durable) answer.
pub const PEER_CONNECTION_IN_FLIGHT_MAX: usize = PEER_LINK_QUEUE_FRAMES_MAX;

/// Longest a connect to a peer may take before it counts as failed, in milliseconds. It
/// runs on a blocking helper thread, so only that link waits.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// First and longest back-off between two connection attempts of one peer link, in
/// milliseconds (doubling in between). Messages to a link in back-off are dropped at once
/// rather than queued: they would be stale by the next attempt.
pub const PEER_BACKOFF_MS_MIN: u64 = 50;
/// See `PEER_BACKOFF_MS_MIN`.
pub const PEER_BACKOFF_MS_MAX: u64 = 2_000;

/// Peer messages one shard may have on their way to other shards of its node through the
/// mailbox at once (each a small task awaiting the queue). Past it further ones are
/// dropped and left to the coordinator's deadlines, so a stalled shard cannot make another
/// one queue without limit.
pub const CLUSTER_MAILBOX_SENDS_MAX: usize = 8192;

/// Longest a client or peer request may wait for its coordinator's answer beyond the
/// largest request deadline, in milliseconds: a safety net (the coordinator always
/// answers by its deadline) that keeps a lost answer from pinning a connection slot.
pub const CLUSTER_REPLY_GRACE_MS: u64 = 5_000;

/// Bit position of the request class in a peer frame's request id. Several state machines
/// share one link per (shard, peer shard), each with its own request-id counter; the top two
/// bits of the id name the machine a reply goes back to, the low 30 bits are its own id.
pub const PEER_REQUEST_CLASS_SHIFT: u32 = 30;
/// Request class of the coordinator and gossip (ids below 2^30, as before classes existed).
pub const PEER_REQUEST_CLASS_COORDINATOR: u32 = 0;
/// Request class of anti-entropy exchanges.
pub const PEER_REQUEST_CLASS_ANTIENTROPY: u32 = 1;
/// Request class of partition transfers.
pub const PEER_REQUEST_CLASS_TRANSFER: u32 = 2;
/// Request class of ring state and admin requests.
pub const PEER_REQUEST_CLASS_RING: u32 = 3;

const _: () = assert!(PEER_REQUEST_CLASS_RING < 1 << (32 - PEER_REQUEST_CLASS_SHIFT));

const _: () = assert!(REQUEST_TIMEOUT_MS_DEFAULT <= REQUEST_TIMEOUT_MS_MAX);
const _: () = assert!(PING_TIMEOUT_MS_DEFAULT >= PING_INTERVAL_MS_DEFAULT);
const _: () = assert!(PEER_BACKOFF_MS_MIN <= PEER_BACKOFF_MS_MAX);
const _: () = assert!(SHARDS_PER_NODE_MAX <= PEER_PSEUDO_SHARD_BASE as usize);
const _: () = assert!(FAILURE_DOWN_AFTER >= 1 && FAILURE_UP_AFTER >= 1);
const _: () = assert!(HINT_BATCH_MAX <= HINTS_MAX);

// ---------------------------------------------------------------------------------------
// Service (the protocol served by each shard)
// ---------------------------------------------------------------------------------------

/// How long a shard's background compaction sleeps when no segment needs it, in
/// milliseconds. Each check costs a scan of the shard's segment table; shorter reclaims
/// disk sooner after a burst of overwrites.
pub const COMPACTION_IDLE_MS: u64 = 200;

/// How long background compaction backs off after a store error (full disk, poisoned
/// store), in milliseconds, so a failing disk is not hammered in a loop.
pub const COMPACTION_BACKOFF_MS: u64 = 5_000;

/// Latencies above this (microseconds) are recorded at this value in the STATS histograms.
/// Each histogram costs about 20 KiB per shard at 2 significant digits up to one minute.
pub const STATS_LATENCY_US_MAX: u64 = 60_000_000;

// ---------------------------------------------------------------------------------------
// Anti-entropy exchange (src/antientropy/)
// ---------------------------------------------------------------------------------------

/// Time between the starts of two Merkle exchanges of one shard at full rate, in
/// milliseconds (10 exchanges per second). An exchange of two equal partitions costs one
/// root request and reply (about 60 bytes with headers) and a root read on each side;
/// a shard replicating 768 partitions (1024 x 3 over 4 nodes) compares each one with a
/// peer every ~77 s, which bounds how long a silent divergence lives.
pub const EXCHANGE_INTERVAL_MS_DEFAULT: u64 = 100;

/// Most entries (received from peers plus pushed to them) one shard moves per second at
/// full rate. Each entry is a key and its whole causal state (tens of bytes to a few MiB)
/// merged and written to the store: at ~1 KiB per entry this is ~20 MiB/s of repair traffic
/// and as many store writes, a fraction of one core's foreground capacity.
pub const EXCHANGE_KEYS_PER_SEC_DEFAULT: u64 = 20_000;

/// How long an exchange request waits for its reply, in milliseconds; past it the exchange
/// is dropped (the next round starts over from the root) and the peer counts one failure
/// in the failure detector. Longer than a keys reply of `EXCHANGE_REPLY_BYTES_MAX` takes on
/// a busy link, short enough that a dead peer does not hold an exchange slot for long.
pub const EXCHANGE_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Exchanges one shard runs at once. Each holds at most `MERKLE_FANOUT` range requests or
/// one keys request in flight; more exchanges repair a wiped node faster but compete with
/// foreground requests for the same core.
pub const EXCHANGES_IN_FLIGHT_MAX: usize = 2;

/// Most leaf buckets named by one keys request. A leaf of a partition holding 1 M keys over
/// 1024 leaves has ~1000 entries; 64 of them fill a reply of a few MiB, and the requester
/// asks again for leaves a reply could not include.
pub const EXCHANGE_LEAVES_PER_REQUEST_MAX: usize = 64;

/// Largest keys reply or push a shard builds, in bytes of keys and states. Whole leaves are
/// included until the next would pass it (the first always is, up to the frame limit), so a
/// reply holds at most this plus one leaf in memory on each side.
pub const EXCHANGE_REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Foreground latency (the runtime's p99.9 over its last report window, microseconds)
/// above which anti-entropy halves its rate. 10 ms is ten times a healthy local request;
/// past it repair yields to clients.
pub const EXCHANGE_PRESSURE_LATENCY_US_DEFAULT: u64 = 10_000;

/// The lowest share of the configured rates anti-entropy backs off to, out of 1024
/// (1/64: one exchange every 6.4 s). Never zero, so a cluster under constant load still
/// repairs, slowly.
pub const EXCHANGE_RATE_SHARE_MIN: u32 = 16;

/// How much of the full rate (out of 1024) each calm latency report gives back: 1/16, so
/// from the floor to full rate takes 63 calm reports.
pub const EXCHANGE_RATE_SHARE_INCREASE: u32 = 64;

const _: () = assert!(EXCHANGE_REPLY_BYTES_MAX <= FRAME_BODY_BYTES_MAX);
const _: () = assert!(EXCHANGE_LEAVES_PER_REQUEST_MAX <= MERKLE_BUCKETS_MAX);
const _: () = assert!(EXCHANGE_RATE_SHARE_MIN >= 1 && EXCHANGE_RATE_SHARE_MIN <= 1024);
const _: () = assert!(EXCHANGES_IN_FLIGHT_MAX >= 1);

// ---------------------------------------------------------------------------------------
// Membership changes (src/membership/)
// ---------------------------------------------------------------------------------------

/// Most changes one staged plan holds (joins, leaves, removals, weight changes). A plan is
/// previewed as one new ring, so this bounds the preview's work (one claim) and the list
/// an operator reviews; larger reshapes are several plans, each committed in turn.
pub const PLAN_CHANGES_MAX: usize = 64;

/// Most entries in one TRANSFER_BATCH. Whole leaf buckets are packed until the next would
/// pass this or `TRANSFER_BATCH_BYTES_MAX` (one leaf always goes, up to the wire's limits):
/// at ~1 KiB an entry a batch is ~1 MiB, merged by the receiver in a few milliseconds of
/// its core, short enough not to stall its foreground requests.
pub const TRANSFER_BATCH_ENTRIES_MAX: usize = 1024;

/// Most bytes of keys and states in one TRANSFER_BATCH (same packing rule). Each batch in
/// flight is read again from the store on a resend rather than kept, so this bounds one
/// batch's memory on each side, not the window's.
pub const TRANSFER_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Leaf buckets read from the store at once while packing a batch. A read past the point
/// where the batch fills is read again for the next batch: larger reads waste more on
/// dense partitions, smaller ones cost more calls on sparse ones.
pub const TRANSFER_LEAVES_PER_READ: u32 = 64;

/// Batches one transfer keeps unacknowledged. Four hide a round trip on a LAN behind the
/// receiver's merging without letting one transfer hold more than ~4 MiB in flight.
pub const TRANSFER_BATCHES_IN_FLIGHT_MAX: usize = 4;

/// How long a batch or a confirm waits for its answer before it is sent again, in
/// milliseconds. Longer than a receiver takes to merge and sync a full batch on a busy
/// disk; a lost message costs this much delay.
pub const TRANSFER_ACK_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Consecutive timeouts (no answer of any kind in between) after which a transfer stops as
/// stalled: the receiver is gone or cannot store, and the operator or the runtime decides
/// (retry later, remove the node). At the default timeout this is 30 s of silence.
pub const TRANSFER_RESENDS_MAX: u32 = 6;

/// Rounds (a full stream then a root comparison) a transfer runs before it stops as
/// stalled. A second round picks up writes that reached the sender after their leaves
/// were streamed; a mismatch that survives three rounds is not going to converge by
/// streaming (the receiver holds something the sender lacks) and needs anti-entropy.
pub const TRANSFER_ROUNDS_MAX: u32 = 3;

/// Transfers one shard sends at once. Each reads its partition from the store and holds a
/// window of batches in flight; two keep a leaving node's disks busy without crowding out
/// its foreground requests. The runtime queues the rest of a plan's moves.
pub const TRANSFERS_OUTGOING_MAX: usize = 2;

/// Transfers one shard expects to receive at once (its share of a join: a new node of 4
/// receives 768 replicas over its shards, queued by their senders). Bounds the receiver's
/// bookkeeping, a few dozen bytes each.
pub const TRANSFERS_INCOMING_MAX: usize = 1024;

const _: () = assert!(TRANSFER_BATCH_ENTRIES_MAX >= 1);
const _: () = assert!(TRANSFER_BATCH_ENTRIES_MAX <= BATCH_ENTRIES_MAX);
const _: () = assert!(TRANSFER_BATCH_BYTES_MAX < FRAME_BODY_BYTES_MAX);
const _: () = assert!(TRANSFER_LEAVES_PER_READ >= 1);
const _: () = assert!(TRANSFER_BATCHES_IN_FLIGHT_MAX >= 1);
const _: () = assert!(TRANSFER_RESENDS_MAX >= 1 && TRANSFER_ROUNDS_MAX >= 1);
const _: () = assert!(TRANSFERS_OUTGOING_MAX >= 1 && TRANSFERS_INCOMING_MAX >= 1);
const _: () = assert!(PLAN_CHANGES_MAX <= MEMBERS_MAX);

// ---------------------------------------------------------------------------------------
// Partition transfer runtime (src/server/transfer.rs)
// ---------------------------------------------------------------------------------------

/// How long a shard keeps a partition's old copy after the ring flipped away from it, in
/// milliseconds. Nodes that have not yet heard of the flip still route by the old ring and
/// may count the old copy's acknowledgement toward W; two gossip rounds let the flip reach
/// them, and a request timeout lets the writes they already sent finish (such a write is
/// also double-written to the new holder, since the change is still pending there).
/// Costs the old copy's disk space for this long.
pub const DROP_GRACE_MS: u64 = 2 * GOSSIP_INTERVAL_MS_DEFAULT + REQUEST_TIMEOUT_MS_DEFAULT as u64;

/// How often a sender reports a verified move to shard 0 again while the view does not
/// show it done (a report travels over the bounded mailbox and may be dropped), in
/// milliseconds. Each report is one mailbox message.
pub const MOVE_DONE_RESEND_MS: u64 = 1_000;

/// First back-off before a stalled transfer starts again, in milliseconds; it doubles with
/// each stall of the same move. A stall is most often a receiver that has not yet seen the
/// pending change (it refuses), which a gossip round or two fixes.
pub const TRANSFER_RETRY_BACKOFF_MS_MIN: u64 = 500;

/// Longest back-off before a stalled transfer starts again, in milliseconds: a receiver
/// that stays away costs one full stream attempt this often.
pub const TRANSFER_RETRY_BACKOFF_MS_MAX: u64 = 30_000;

const _: () = assert!(TRANSFER_RETRY_BACKOFF_MS_MIN >= 1);
const _: () = assert!(TRANSFER_RETRY_BACKOFF_MS_MIN <= TRANSFER_RETRY_BACKOFF_MS_MAX);
const _: () = assert!(DROP_GRACE_MS >= 2 * GOSSIP_INTERVAL_MS_DEFAULT);
