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
