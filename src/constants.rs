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

// ---------------------------------------------------------------------------------------
// Ring
// ---------------------------------------------------------------------------------------

/// Default number of partitions Q. 1024 keeps ownership within 5% of even for clusters of up
/// to ~64 nodes (16 partitions each) while a ring snapshot stays a few KiB.
pub const PARTITIONS_DEFAULT: u32 = 1024;

/// Most partitions a ring may have (partition ids travel as u32, owners tables as Q entries).
pub const PARTITIONS_MAX: u32 = 1 << 16;

/// Default replication factor N and read and write quorums R and W (Dynamo's 3, 2, 2).
pub const REPLICAS_DEFAULT: u8 = 3;
/// Default read quorum R.
pub const READ_QUORUM_DEFAULT: u8 = 2;
/// Default write quorum W.
pub const WRITE_QUORUM_DEFAULT: u8 = 2;

/// Most replicas a request may ask for.
pub const REPLICAS_MAX: u8 = 16;

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

/// Default size of one segment file. Segments are preallocated with fallocate and mapped, so
/// this is also the unit of compaction: 64 MiB rewrites in well under a second.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Default interval of the group-commit fsync, in milliseconds.
pub const GROUP_COMMIT_INTERVAL_MS_DEFAULT: u64 = 2;

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

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < FRAME_BODY_BYTES_MAX);
const _: () = assert!(PARTITIONS_DEFAULT.is_power_of_two());
const _: () = assert!(PARTITIONS_MAX.is_power_of_two());
const _: () = assert!(READ_QUORUM_DEFAULT <= REPLICAS_DEFAULT);
const _: () = assert!(WRITE_QUORUM_DEFAULT <= REPLICAS_DEFAULT);
const _: () = assert!(SIBLINGS_WARN < SIBLINGS_MAX);
const _: () = assert!(CONNECTION_INPUT_BYTES_INITIAL <= CONNECTION_INPUT_BYTES_MAX);
const _: () = assert!(CONNECTION_INPUT_BYTES_MAX > FRAME_BODY_BYTES_MAX);
const _: () = assert!(LISTEN_PORT_DEFAULT < u16::MAX - 256);
