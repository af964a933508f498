//! The per-core store: a memory-mapped, append-only log of records with an in-memory index,
//! crash recovery, compaction and a hint area.
//!
//! Place in the flow: a shard's request handler (one glommio executor per core) owns one
//! [`Store`] and calls it synchronously: `get` and `put` for client and replica traffic,
//! [`Store::merkle_hashes`] and [`Store::bucket_entries`] for anti-entropy,
//! [`Store::iter_partition`] for partition transfer, the hint area for
//! hinted handoff, and [`Store::compact_step`] between requests. The store knows nothing of
//! causality: a value is an opaque encoded causal state plus a [`ValueKind`].
//!
//! # Files
//!
//! A store owns one directory: `STORE` (incarnation and hash seeds), segment files
//! `0000000001.seg`, `0000000002.seg`, ..., and `index.ckpt` (the index checkpoint). Every
//! segment is preallocated with `fallocate` to its full size before it is mapped, so that a
//! full disk shows up as `ENOSPC` when a segment is created, never as `SIGBUS` on a store
//! into the map. All integers are little-endian.
//!
//! Segment header (32 bytes):
//!
//! | offset | bytes | field                                    |
//! |-------:|------:|------------------------------------------|
//! | 0      | 8     | magic `RTRSEG01`                         |
//! | 8      | 4     | format version (1)                       |
//! | 12     | 4     | reserved, zero                           |
//! | 16     | 4     | segment id (must match the file name)    |
//! | 20     | 8     | reserved, zero                           |
//! | 28     | 4     | CRC32C of bytes 0..28                    |
//!
//! Record (header of 40 bytes, then key and value; padded with zeros to a multiple of 8):
//!
//! | offset | bytes | field                                                        |
//! |-------:|------:|--------------------------------------------------------------|
//! | 0      | 4     | `len`: header + key + value bytes (padding excluded)         |
//! | 4      | 4     | CRC32C of bytes 8..len, then of bytes 0..4                   |
//! | 8      | 8     | LSN (log sequence number; kept when compaction copies it)    |
//! | 16     | 4     | partition                                                    |
//! | 20     | 4     | key length                                                   |
//! | 24     | 8     | target node (hints only, else 0)                             |
//! | 32     | 1     | kind: 1 value, 2 tombstone, 3 hint, 4 hint delete, 5 purge, 6 partition drop |
//! | 33     | 1     | marker `0xA7`                                                |
//! | 34     | 6     | reserved, zero                                               |
//! | 40     | key length | key                                                     |
//! | 40+key | len-40-key | value: the opaque causal state; for a hint delete, the hint id (u64) |
//!
//! Preallocated space reads as zeros, so a zero header marks the end of the written part.
//! Which record of a key wins is decided by LSN, not by position: compaction copies live
//! records forward with their LSN. A purge marker cancels the key's records with a smaller
//! LSN, a partition-drop marker every record of its partition with a smaller LSN, and a
//! hint-delete marker one hint. Markers are copied forward by compaction while any older
//! segment exists, since those may still hold what they cancel.
//!
//! # Index
//!
//! Per partition (an ahash map of partitions), an open-addressing table of 16-byte slots,
//! four to a cache line: the key's 64-bit hash (ahash with per-store random seeds kept in
//! `STORE`) beside the record's (segment, offset), so one cache line answers a lookup and
//! the record is the only other miss. 16 bytes per key plus table slack (at most 7/8 full),
//! about 18 to 37 bytes per key whatever the key length, since keys are not copied into
//! memory: a lookup compares the key stored in the record. Keys of one partition whose
//! hashes collide take one slot each, told apart by their records' keys.
//! [`Store::index_bytes`] reports the figure from the tables' capacities.
//!
//! # Durability
//!
//! Writes are stores into the mapped page cache; durability comes from `fdatasync` of the
//! segments written since the last sync (Linux writes back mapped pages like any others).
//!
//! - [`Durability::Always`]: `put` (and every other write) returns after `fdatasync`. An
//!   acknowledged write survives a process crash and a power loss. Loses nothing
//!   acknowledged; costs one fsync per write.
//! - [`Durability::Group`]: `put` returns at once with its LSN; the caller calls
//!   [`Store::sync`] on a timer (every `GROUP_COMMIT_INTERVAL_MS_DEFAULT` ms) and
//!   acknowledges a write only once [`Store::durable_lsn`] reached its LSN; a reactor thread
//!   uses [`Store::begin_sync`] instead, to run the `fdatasync`s elsewhere. What was
//!   acknowledged that way survives a power loss; writes after the last sync survive a
//!   process crash (the page cache holds them) but a power loss may lose them, and may keep
//!   some and lose others (pages are written back in any order).
//! - [`Durability::Never`]: no fsync except in [`Store::close`] (and before compaction deletes
//!   a segment, and before a checkpoint). Survives a process crash (page cache); a power loss
//!   or kernel crash may lose anything written since the last clean close.
//!
//! In every mode an fsync error makes the store refuse every later write
//! ([`WriteError::SyncFailed`], then [`WriteError::Poisoned`]): after a failed fsync the kernel
//! may have dropped the dirty pages, and a retried fsync could report success over lost data
//! ("fsyncgate"). Reads keep working; reopening recovers from what is on disk.
//!
//! # Recovery
//!
//! [`Store::open`] loads `index.ckpt` if it is valid (CRC, incarnation, the hash seeds'
//! probe, every older segment known to it) and replays only the log written after it. The
//! checkpoint is written on [`Store::close`], by [`Store::checkpoint`], and by
//! [`Store::compact_step`] every `checkpoint_interval_bytes` appended. Entries in segments
//! that compaction deleted since are dropped, and the replay must bring each of those keys
//! back (the compaction's copy, a newer write) or show it gone (a purge or partition drop);
//! if not, or if anything else does not add up, the checkpoint is refused and every segment
//! is scanned. Scanning checks each record's CRC. A bad record followed by good ones is
//! damage: it is skipped, counted and logged, and the rest is served. A bad record followed
//! by nothing valid is a torn tail (a write cut short by a crash): the segment ends there
//! and the bytes after it are zeroed. Only unacknowledged writes can sit after a torn write:
//! with `Always` each acknowledged write was synced before the next began, and with `Group`
//! everything up to `durable_lsn` was. New writes go to a fresh segment made by the first
//! write, never after recovered bytes, so an open writes nothing and works on a full disk.
//! A segment whose header is damaged is left untouched on disk and ignored (counted).
//!
//! # Reads
//!
//! A read checks that the record holds the asked key and is a value or a tombstone, and
//! checks its CRC the first time this process reads it through its index entry: the entry
//! then keeps a *verified* bit, cleared whenever it points at a new record (a write,
//! compaction's copy, a reopen). So corrupt data is never returned: a record is CRC-checked
//! at least once per process lifetime before any of its bytes are served, whether it came
//! from a scan at open (which checks every record), a checkpoint (which checks nothing) or a
//! write. Damage found that way is reported as [`ReadError::Corrupted`] and counted.
//!
//! What the bit gives up: a record already verified is not checked again, so bytes that
//! change under the mapping later (the kernel dropping the page and re-reading it from a
//! disk that corrupted it since, or another process writing into the file, which the store
//! does not allow) would be served. Disks check their own sectors, and every reopen, every
//! scan and every compaction re-checks; what is saved is a CRC32C pass over the whole record
//! on every hot read (about an eighth of a read's time), which the 3M reads/s target
//! could not afford. The structural checks (lengths within the record, marker byte, kind)
//! still run on every read, so a read can never slice outside its record.
//!
//! # Merkle trees
//!
//! The store keeps the Merkle tree (`src/merkle/`) of every partition holding keys, for
//! anti-entropy: each put, purge and partition drop updates it in O(1) (the key's leaf is
//! an XOR of entry hashes; the old entry hash comes from the replaced record), compaction
//! leaves it alone. The checkpoint saves the trees' leaves; [`Store::open`] takes them from
//! it and keeps them exact through the replay of the log after it, rebuilding from the index
//! only the trees it cannot (all of them without a checkpoint). Hints are not in trees.
//! See `trees.rs`.
//!
//! # Compaction
//!
//! [`Store::compact_step`] does a bounded slice of work: it picks the sealed segment with
//! the most reclaimable garbage once that passes the configured ratio, copies its live
//! records to the head of the log, and when done syncs and deletes the old file. Segments
//! are shared through `Arc`, so a [`SharedValue`] keeps a deleted segment's map readable.
//! A server uses [`Store::compact_step_deferred`] instead, which leaves the two slow system
//! calls of a finished compaction to it: the sync (run elsewhere with
//! [`Store::begin_sync`]) and the unmapping of the old file ([`Store::take_retired`]); each
//! took 40 to 100 ms on the shard's thread, stalling every request of the core.

mod compact;
mod error;
pub mod format;
mod index;
mod recovery;
mod segment;
mod sync;
#[cfg(test)]
mod tests;
mod trees;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use compact::{CompactProgress, RetiredSegments};
pub use error::{OpenError, ReadError, WriteError};
pub use sync::{SyncJob, Synced};
pub use trees::BucketEntry;

use crate::constants::{
    CHECKPOINT_INTERVAL_BYTES_DEFAULT, COMPACTION_GARBAGE_PERCENT_DEFAULT, HINT_BYTES_MAX_DEFAULT,
    KEY_BYTES_MAX, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, VALUE_BYTES_MAX,
};
use format::{
    decode_at, decode_verified_at, encode_header, padded, u32_at, u64_at, Decoded, Record,
    RecordKind, RecordMeta, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use index::{HintIndex, Loc, PartitionIndex};
use segment::Segment;

use crate::merkle::MerkleTree;

/// Log sequence number of a write: increases by one per write of a store.
pub type Lsn = u64;

/// Id of a hint (the LSN of its record).
pub type HintId = u64;

/// When writes reach the disk; see the module docs for what each mode guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync before every write returns.
    Always,
    /// The caller calls [`Store::sync`] on a timer and acknowledges up to
    /// [`Store::durable_lsn`].
    Group,
    /// Page cache only; synced on [`Store::close`].
    Never,
}

/// A tombstone [`Store::purge_tombstones`] removed: its key and the bytes it held.
pub type PurgedTombstone = (Vec<u8>, Vec<u8>);

/// What a stored value is: data, or a tombstone that still carries its causal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueKind {
    /// A value.
    Value,
    /// A deletion; kept until [`Store::purge`].
    Tombstone,
}

/// Settings of one store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Size of each segment file, `SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX`.
    pub segment_bytes: u64,
    /// Durability policy.
    pub durability: Durability,
    /// A sealed segment is compacted once this percentage of it is reclaimable (1..=100).
    pub compaction_garbage_percent: u8,
    /// A checkpoint is written by `compact_step` once this many bytes were appended since the
    /// last one; 0 disables periodic checkpoints (close still writes one).
    pub checkpoint_interval_bytes: u64,
    /// Quota of the hint area, in record bytes.
    pub hint_bytes_max: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            durability: Durability::Group,
            compaction_garbage_percent: COMPACTION_GARBAGE_PERCENT_DEFAULT,
            checkpoint_interval_bytes: CHECKPOINT_INTERVAL_BYTES_DEFAULT,
            hint_bytes_max: HINT_BYTES_MAX_DEFAULT,
        }
    }
}

/// What [`Store::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The directory held no data, so a new incarnation was generated.
    pub new_incarnation: bool,
    /// The previous run ended with [`Store::close`]: every write it made was synced. When
    /// false (a crash, a kill, a power loss) and the durability was not `Always`, writes
    /// that used counters of this incarnation may be lost: see [`Store::renew_incarnation`].
    pub clean_shutdown: bool,
    /// The index came from `index.ckpt` (then only the log after it was scanned).
    pub used_checkpoint: bool,
    /// Why the checkpoint was not used, if there was one.
    pub checkpoint_rejected: Option<String>,
    /// The Merkle trees came from the checkpoint (kept exact through the replay after it),
    /// apart from the `trees_rebuilt` ones.
    pub trees_from_checkpoint: bool,
    /// Partitions whose Merkle tree was rebuilt from the index (a read of each of their
    /// records): all of them when the trees did not come from the checkpoint.
    pub trees_rebuilt: usize,
    /// Segments opened.
    pub segments: usize,
    /// Records read while scanning.
    pub records_scanned: u64,
    /// Damaged records skipped (the rest of their segment was served).
    pub corrupt_records: u64,
    /// Segments ignored whole because their header or file is damaged.
    pub corrupt_segments: u64,
    /// Torn tails truncated (at most one per segment).
    pub torn_tails: u64,
    /// Keys in the index after recovery.
    pub keys: u64,
    /// Hints after recovery.
    pub hints: u64,
}

/// Counters of a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys (values and tombstones).
    pub keys: u64,
    /// Partitions holding at least one key.
    pub partitions: u64,
    /// Hints.
    pub hints: u64,
    /// Keys whose current state is a tombstone (counted at open, kept by every write).
    pub tombstones: u64,
    /// Bytes of records the index points at (values, tombstones, hints), padding included.
    pub live_bytes: u64,
    /// Written bytes that are not live: overwritten or deleted records, markers, damage.
    pub garbage_bytes: u64,
    /// Segment files in use.
    pub segments: u64,
    /// Damaged records skipped at recovery or detected on read since open.
    pub corrupt_records_skipped: u64,
    /// Heap bytes of the key index (own accounting from table capacities).
    pub index_bytes: u64,
    /// Next LSN to be given out.
    pub next_lsn: Lsn,
    /// Everything up to this LSN is on disk.
    pub durable_lsn: Lsn,
}

/// A value read by [`Store::get`], borrowed from the segment map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// Value or tombstone.
    pub kind: ValueKind,
    /// The stored bytes (CRC-checked).
    pub value: &'a [u8],
    /// LSN of the write that stored it.
    pub lsn: Lsn,
}

/// A value that owns a handle on its segment, so it stays readable across compaction (and
/// can be kept between requests or across `.await` points).
#[derive(Clone, Debug)]
pub struct SharedValue {
    segment: Arc<Segment>,
    start: usize,
    end: usize,
    /// Value or tombstone.
    pub kind: ValueKind,
    /// LSN of the write that stored it.
    pub lsn: Lsn,
}

impl SharedValue {
    /// The stored bytes.
    pub fn value(&self) -> &[u8] {
        self.segment
            .bytes()
            .get(self.start..self.end)
            .unwrap_or(&[])
    }
}

/// One key of a partition, as [`Store::iter_partition`] yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Value or tombstone.
    pub kind: ValueKind,
    /// The stored bytes.
    pub value: &'a [u8],
    /// LSN of the write that stored it.
    pub lsn: Lsn,
}

/// One hint, as [`Store::hints`] yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint<'a> {
    /// Id to pass to [`Store::delete_hint`] once the target acknowledged it.
    pub id: HintId,
    /// The node the write was meant for.
    pub target: u64,
    /// Partition of the key.
    pub partition: u32,
    /// The key.
    pub key: &'a [u8],
    /// The causal state to deliver.
    pub value: &'a [u8],
}

/// Keys [`Store::get_many`] prefetches together. Each one in flight holds a CPU line-fill
/// buffer while its miss is outstanding (a core has 10 to 16), so more than this would only
/// queue; fewer leaves misses unoverlapped.
pub const GET_BATCH_KEYS_MAX: usize = 16;

/// The per-core store. `Send`, not `Sync`: one thread owns it.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    config: StoreConfig,
    incarnation: u64,
    hasher: ahash::RandomState,
    segments: Segments,
    /// Segment appended to.
    active: u32,
    /// Highest segment id ever seen (damaged files included), so new ids never collide.
    max_segment_id: u32,
    partitions: HashMap<u32, PartitionIndex, ahash::RandomState>,
    /// Merkle tree of each partition holding keys (values and tombstones), kept by every
    /// write and rebuilt at open: see `trees.rs`.
    trees: HashMap<u32, MerkleTree, ahash::RandomState>,
    hints: HintIndex,
    hint_bytes: u64,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    poisoned: bool,
    closed: bool,
    compaction: Option<compact::Job>,
    /// Syncs begun and finished, so compaction knows when its copies are durable.
    syncs: sync::Generations,
    /// Segments compaction deleted whose maps are still to be released: unmapping 64 MiB
    /// takes tens of milliseconds, so a server hands them to another thread
    /// ([`Store::take_retired`]).
    retired: Vec<Arc<Segment>>,
    bytes_since_checkpoint: u64,
    corrupt_seen: Cell<u64>,
    /// Keys whose current record is a tombstone, per partition: saved with the trees in
    /// the checkpoint (or counted by a tree rebuild at open), kept by put, purge and
    /// partition drop (compaction copies records unchanged). Per partition so that an open
    /// that rebuilds some trees recounts only their partitions.
    tombstones: HashMap<u32, u64, ahash::RandomState>,
}

/// Open segments by id, with their accounting.
type Segments = BTreeMap<u32, SegmentInfo>;

#[derive(Debug)]
struct SegmentInfo {
    seg: Arc<Segment>,
    /// Bytes of records the indexes point at.
    live: u64,
    /// Bytes of marker records (purge, drop, hint delete).
    markers: u64,
    /// Written since the last fdatasync.
    dirty: bool,
}

impl SegmentInfo {
    fn new(seg: Segment) -> Self {
        Self {
            seg: Arc::new(seg),
            live: 0,
            markers: 0,
            dirty: false,
        }
    }

    /// Bytes written after the segment header.
    fn used(&self) -> u64 {
        self.seg.published().saturating_sub(SEGMENT_HEADER_BYTES) as u64
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering what is on disk.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<(Store, RecoveryReport), OpenError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&config.segment_bytes) {
            return Err(OpenError::Config("segment_bytes out of range"));
        }
        if !(1..=100).contains(&config.compaction_garbage_percent) {
            return Err(OpenError::Config(
                "compaction_garbage_percent must be 1..=100",
            ));
        }
        recovery::open(dir, config)
    }

    /// The random id of this store's incarnation: generated and persisted when the store
    /// was created without data, kept across restarts, renewed if the data is lost.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Replaces the incarnation with a new random one, persisted before this returns; the
    /// data stays. For a store that may have lost acknowledged writes (the unsynced tail
    /// under `Group` or `Never` after an unclean stop): its old incarnation may have issued
    /// counters that no longer exist here, and reusing them would let a new write be taken
    /// for one other replicas already saw superseded (wire-spec/causal.md).
    pub fn renew_incarnation(&mut self) -> Result<u64, WriteError> {
        self.check_writable()?;
        let incarnation = recovery::renew_incarnation(&self.dir).map_err(WriteError::from_io)?;
        self.incarnation = incarnation;
        Ok(incarnation)
    }

    /// The durability policy.
    pub fn durability(&self) -> Durability {
        self.config.durability
    }

    /// Reads the value of `key` in `partition`; `Ok(None)` if absent.
    pub fn get(&self, partition: u32, key: &[u8]) -> Result<Option<Found<'_>>, ReadError> {
        Ok(self.lookup(partition, key)?.map(Located::found))
    }

    /// Reads `keys` (partition, key) as [`Store::get`] would, one after the other, and hands
    /// each result to `each` with the key's position in `keys`, in order.
    ///
    /// Faster than as many `get`s once the index and the records no longer sit in the CPU's
    /// caches: a lone `get` waits for two dependent cache misses (the key's index bucket,
    /// then its record), one after the other. Here, for up to [`GET_BATCH_KEYS_MAX`] keys
    /// at a time, the buckets of all of them are requested first, then their records, and
    /// only then is any read, so the batch's misses overlap instead of adding up.
    pub fn get_many<'s>(
        &'s self,
        keys: &[(u32, &[u8])],
        mut each: impl FnMut(usize, Result<Option<Found<'s>>, ReadError>),
    ) {
        for (chunk_index, chunk) in keys.chunks(GET_BATCH_KEYS_MAX).enumerate() {
            let found = self.prefetch_batch(chunk);
            for (i, (slot, &(_, key))) in found.iter().zip(chunk).enumerate() {
                let result = match *slot {
                    Some((index, hash)) => self
                        .lookup_in(index, hash, key)
                        .map(|located| located.map(Located::found)),
                    None => Ok(None),
                };
                each(chunk_index * GET_BATCH_KEYS_MAX + i, result);
            }
        }
    }

    /// Starts loading into the CPU's caches what reading the first [`GET_BATCH_KEYS_MAX`]
    /// of `keys` will touch (index buckets, then records), without reading anything: for a
    /// caller that will `get` (or `put`) those keys one by one soon, as [`Store::get_many`]
    /// does in one call.
    pub fn prefetch(&self, keys: &[(u32, &[u8])]) {
        self.prefetch_batch(keys);
    }

    /// The two prefetch passes of a batch of at most [`GET_BATCH_KEYS_MAX`] keys (the rest
    /// are ignored); returns each key's partition index and hash, for the reads.
    fn prefetch_batch(
        &self,
        keys: &[(u32, &[u8])],
    ) -> [Option<(&PartitionIndex, u64)>; GET_BATCH_KEYS_MAX] {
        let mut found = [None; GET_BATCH_KEYS_MAX];
        // Pass 1: hash every key and start loading its home bucket.
        for (slot, &(partition, key)) in found.iter_mut().zip(keys) {
            if let Some(index) = self.partitions.get(&partition) {
                let hash = self.hasher.hash_one(key);
                index.prefetch(hash);
                *slot = Some((index, hash));
            }
        }
        // Pass 2: the buckets are arriving; start loading each key's record (its first
        // cache line holds the header and the key, the next the value's start).
        for &(index, hash) in found.iter().flatten() {
            let Some(loc) = index.first_candidate(hash) else {
                continue;
            };
            if let Some(info) = self.segments.get(&loc.segment) {
                if let Some(head) = info.seg.bytes().get(loc.offset as usize..) {
                    index::prefetch_line(head.as_ptr());
                    if let Some(next) = head.get(64..) {
                        index::prefetch_line(next.as_ptr());
                    }
                }
            }
        }
        found
    }

    /// Like [`Store::get`], but the result keeps its segment mapped, so it outlives later
    /// writes and compaction.
    pub fn get_shared(&self, partition: u32, key: &[u8]) -> Result<Option<SharedValue>, ReadError> {
        let Some(Located { rec, seg, loc }) = self.lookup(partition, key)? else {
            return Ok(None);
        };
        let start = loc.offset as usize + RECORD_HEADER_BYTES + rec.key.len();
        Ok(Some(SharedValue {
            segment: Arc::clone(seg),
            start,
            end: start + rec.value.len(),
            kind: value_kind(rec.meta.kind),
            lsn: rec.meta.lsn,
        }))
    }

    /// Stores `value` as the state of `key` in `partition`, replacing what was there.
    ///
    /// On `Err(SyncFailed)` (under `Always`) the write reached the page cache and may be
    /// visible to reads, but it was not made durable: treat it as indeterminate.
    pub fn put(
        &mut self,
        partition: u32,
        key: &[u8],
        kind: ValueKind,
        value: &[u8],
    ) -> Result<Lsn, WriteError> {
        check_sizes(key, value)?;
        let record_kind = match kind {
            ValueKind::Value => RecordKind::Value,
            ValueKind::Tombstone => RecordKind::Tombstone,
        };
        let (lsn, loc, len) = self.append(record_kind, partition, 0, key, value)?;
        let old = self.index_insert(partition, key, loc, len);
        let was_tombstone = old.is_some_and(|old| self.is_tombstone_at(old));
        self.count_tombstone(partition, was_tombstone, kind == ValueKind::Tombstone);
        self.tree_write(partition, key, old, Some(value));
        self.after_write(lsn)
    }

    /// Drops every key of `partition` (after it was handed off). Durable like a put.
    pub fn drop_partition(&mut self, partition: u32) -> Result<Lsn, WriteError> {
        let (lsn, loc, len) = self.append(RecordKind::PartitionDrop, partition, 0, &[], &[])?;
        self.add_markers(loc, len);
        self.trees.remove(&partition);
        self.tombstones.remove(&partition);
        if let Some(index) = self.partitions.remove(&partition) {
            for (_, old) in index.entries() {
                self.release(old);
            }
        }
        self.after_write(lsn)
    }

    /// Removes `key` for good if its current state is a tombstone; the cluster layer calls
    /// this once every replica holds the tombstone. Returns whether it was purged.
    pub fn purge(&mut self, partition: u32, key: &[u8]) -> Result<bool, WriteError> {
        match self.get(partition, key) {
            Ok(Some(f)) if f.kind == ValueKind::Tombstone => {}
            _ => return Ok(false),
        }
        check_sizes(key, &[])?;
        let (lsn, loc, len) = self.append(RecordKind::Purge, partition, 0, key, &[])?;
        self.add_markers(loc, len);
        let hash = self.hasher.hash_one(key);
        let segments = &self.segments;
        let old = self
            .partitions
            .get_mut(&partition)
            .and_then(|p| p.remove(hash, key, |l| key_at(segments, l)));
        if let Some(old) = old {
            self.count_tombstone(partition, true, false);
            self.tree_write(partition, key, Some(old), None);
            self.release(old);
        }
        self.after_write(lsn)?;
        Ok(true)
    }

    /// Purges up to `max` tombstones of `partition` whose current record was stored at or
    /// before `lsn_max` and that `eligible(key, lsn)` accepts (anti-entropy's
    /// `PurgeGrant::allows`), each as [`Store::purge`] does: a purge marker in the log and
    /// the key out of the index and its Merkle tree. The cluster layer calls it with what
    /// anti-entropy confirmed every replica holds (`AntiEntropy::take_purge_grants`);
    /// no age alone makes a tombstone go. Returns the (key, stored bytes) purged, for
    /// `AntiEntropy::note_purged`; `max` bounds the work of one call (call again while it
    /// returns `max`).
    pub fn purge_tombstones(
        &mut self,
        partition: u32,
        lsn_max: Lsn,
        max: usize,
        mut eligible: impl FnMut(&[u8], Lsn) -> bool,
    ) -> Result<Vec<PurgedTombstone>, WriteError> {
        let found: Vec<PurgedTombstone> = self
            .iter_partition(partition)
            .filter(|e| e.kind == ValueKind::Tombstone && e.lsn <= lsn_max)
            .filter(|e| eligible(e.key, e.lsn))
            .take(max)
            .map(|e| (e.key.to_vec(), e.value.to_vec()))
            .collect();
        let mut purged = Vec::with_capacity(found.len());
        for (key, value) in found {
            if self.purge(partition, &key)? {
                purged.push((key, value));
            }
        }
        Ok(purged)
    }

    /// The LSN of the latest write (0 before any): anti-entropy's `MerkleView::write_mark`
    /// for this store.
    pub fn last_lsn(&self) -> Lsn {
        self.next_lsn.saturating_sub(1)
    }

    /// Every key of `partition` with its value, in no particular order. Damaged records are
    /// skipped (and counted in [`StoreStats::corrupt_records_skipped`]).
    pub fn iter_partition(&self, partition: u32) -> impl Iterator<Item = Entry<'_>> + '_ {
        self.partitions
            .get(&partition)
            .into_iter()
            .flat_map(|p| p.entries())
            .filter_map(move |(_, loc)| {
                let rec = self.record(loc, |k| {
                    matches!(k, RecordKind::Value | RecordKind::Tombstone)
                })?;
                Some(Entry {
                    key: rec.key,
                    kind: value_kind(rec.meta.kind),
                    value: rec.value,
                    lsn: rec.meta.lsn,
                })
            })
    }

    /// Partitions holding at least one key, ascending.
    pub fn partitions(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .partitions
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(&id, _)| id)
            .collect();
        out.sort_unstable();
        out
    }

    /// Stores a hint: a write meant for node `target` that this node holds until delivery.
    pub fn put_hint(
        &mut self,
        target: u64,
        partition: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<HintId, WriteError> {
        check_sizes(key, value)?;
        let len = padded(RECORD_HEADER_BYTES + key.len() + value.len()) as u64;
        if self.hint_bytes + len > self.config.hint_bytes_max {
            return Err(WriteError::HintQuota {
                max: self.config.hint_bytes_max,
            });
        }
        let (lsn, loc, len) = self.append(RecordKind::Hint, partition, target, key, value)?;
        self.hints.insert(target, lsn, loc);
        self.hint_bytes += len;
        self.add_live(loc, len);
        self.after_write(lsn)
    }

    /// Hints for `target`, oldest first. Damaged ones are skipped and counted.
    pub fn hints(&self, target: u64) -> impl Iterator<Item = Hint<'_>> + '_ {
        self.hints.for_target(target).filter_map(move |(id, loc)| {
            let rec = self.record(loc, |k| k == RecordKind::Hint)?;
            Some(Hint {
                id,
                target,
                partition: rec.meta.partition,
                key: rec.key,
                value: rec.value,
            })
        })
    }

    /// Nodes that have hints waiting, ascending.
    pub fn hint_targets(&self) -> Vec<u64> {
        self.hints.targets()
    }

    /// Deletes hint `id` (after its target acknowledged it); false if there is no such hint.
    pub fn delete_hint(&mut self, id: HintId) -> Result<bool, WriteError> {
        if self.hints.get(id).is_none() {
            return Ok(false);
        }
        let (lsn, loc, len) = self.append(RecordKind::HintDelete, 0, 0, &[], &id.to_le_bytes())?;
        self.add_markers(loc, len);
        if let Some((_, old)) = self.hints.remove(id) {
            let old_len = self.release(old);
            self.hint_bytes = self.hint_bytes.saturating_sub(old_len);
        }
        self.after_write(lsn)?;
        Ok(true)
    }

    /// Makes every write so far durable (fdatasync of the segments written since the last
    /// sync) and returns the new [`Store::durable_lsn`]. An error poisons the store.
    ///
    /// The synchronous form of [`Store::begin_sync`], [`SyncJob::run`] and
    /// [`Store::finish_sync`], which let the `fdatasync`s run on another thread.
    pub fn sync(&mut self) -> Result<Lsn, WriteError> {
        let done = self.begin_sync()?.run();
        self.finish_sync(done)
    }

    /// Every write with an LSN up to this one is on disk.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// Writes the index checkpoint now (after a sync), so the next open replays only what
    /// follows. Costs time in proportion to the number of keys.
    pub fn checkpoint(&mut self) -> Result<(), WriteError> {
        self.sync()?;
        recovery::write_checkpoint(self)?;
        self.bytes_since_checkpoint = 0;
        Ok(())
    }

    /// Syncs everything and writes the checkpoint. Dropping a store without `close` syncs
    /// (best effort) but leaves no checkpoint, so the next open scans.
    pub fn close(mut self) -> Result<(), WriteError> {
        let res = self
            .checkpoint()
            .and_then(|()| recovery::mark_clean(&self.dir).map_err(WriteError::from_io));
        self.closed = true;
        res
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let mut s = StoreStats {
            keys: self.partitions.values().map(|p| p.len() as u64).sum(),
            partitions: self.partitions.values().filter(|p| !p.is_empty()).count() as u64,
            hints: self.hints.len() as u64,
            tombstones: self.tombstones.values().sum(),
            segments: self.segments.len() as u64,
            corrupt_records_skipped: self.corrupt_seen.get(),
            index_bytes: self.index_bytes() as u64,
            next_lsn: self.next_lsn,
            durable_lsn: self.durable_lsn,
            ..StoreStats::default()
        };
        for info in self.segments.values() {
            s.live_bytes += info.live;
            s.garbage_bytes += info.used().saturating_sub(info.live);
        }
        s
    }

    /// Heap bytes of the key index (tables and the per-partition map).
    pub fn index_bytes(&self) -> usize {
        let per_partition = std::mem::size_of::<(u32, PartitionIndex)>() + 1;
        self.partitions
            .values()
            .map(|p| p.heap_bytes())
            .sum::<usize>()
            + self.partitions.capacity() * per_partition
    }

    // ---- helpers ------------------------------------------------------------------------

    /// The value record of `key`, with its segment and location. The index entry's hash
    /// and location come from one cache line, the record from a second; its CRC is checked
    /// on the first read through this entry only (see "Reads" in the module docs). When the
    /// key's hash is filed but no record there holds the key, a damaged record (say, a
    /// flipped key length) may be hiding it: report that rather than a plain miss.
    fn lookup(&self, partition: u32, key: &[u8]) -> Result<Option<Located<'_>>, ReadError> {
        let Some(index) = self.partitions.get(&partition) else {
            return Ok(None);
        };
        self.lookup_in(index, self.hasher.hash_one(key), key)
    }

    /// [`Store::lookup`] in a partition's index, with the key's hash already computed.
    fn lookup_in<'s>(
        &'s self,
        index: &'s PartitionIndex,
        hash: u64,
        key: &[u8],
    ) -> Result<Option<Located<'s>>, ReadError> {
        for slot in index.probe(hash) {
            let loc = slot.loc();
            let Some(info) = self.segments.get(&loc.segment) else {
                continue;
            };
            let verified = slot.verified();
            let decoded = if verified {
                decode_verified_at(info.seg.bytes(), loc.offset as usize)
            } else {
                decode_at(info.seg.bytes(), loc.offset as usize)
            };
            let Decoded::Record(rec) = decoded else {
                continue;
            };
            if rec.key != key {
                continue;
            }
            if !matches!(rec.meta.kind, RecordKind::Value | RecordKind::Tombstone) {
                return Err(self.corrupted(loc));
            }
            if !verified {
                slot.set_verified();
            }
            return Ok(Some(Located {
                rec,
                seg: &info.seg,
                loc,
            }));
        }
        match index.candidates(hash).find(|&l| self.decode(l).is_none()) {
            Some(damaged) => Err(self.corrupted(damaged)),
            None => Ok(None),
        }
    }

    /// Decodes the record at `loc` if it checks out and has a wanted kind, else counts it.
    fn record(&self, loc: Loc, want: impl Fn(RecordKind) -> bool) -> Option<Record<'_>> {
        match self.decode(loc) {
            Some(r) if want(r.meta.kind) => Some(r),
            _ => {
                self.corrupted(loc);
                None
            }
        }
    }

    fn decode(&self, loc: Loc) -> Option<Record<'_>> {
        let info = self.segments.get(&loc.segment)?;
        match decode_at(info.seg.bytes(), loc.offset as usize) {
            Decoded::Record(r) => Some(r),
            _ => None,
        }
    }

    fn corrupted(&self, loc: Loc) -> ReadError {
        self.corrupt_seen.set(self.corrupt_seen.get() + 1);
        eprintln!(
            "rotor store {}: corrupted record at segment {} offset {}",
            self.dir.display(),
            loc.segment,
            loc.offset
        );
        ReadError::Corrupted {
            segment: loc.segment,
            offset: loc.offset,
        }
    }

    fn check_writable(&self) -> Result<(), WriteError> {
        if self.poisoned {
            Err(WriteError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Appends one record with the next LSN; returns (lsn, location, padded length).
    fn append(
        &mut self,
        kind: RecordKind,
        partition: u32,
        target: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<(Lsn, Loc, u64), WriteError> {
        let meta = RecordMeta {
            kind,
            lsn: self.next_lsn,
            partition,
            target,
        };
        let (loc, len) = self.append_record(&meta, key, value)?;
        self.next_lsn += 1;
        Ok((meta.lsn, loc, len))
    }

    /// Appends a record as given (compaction keeps the LSN), rotating to a new segment when
    /// the active one is full.
    fn append_record(
        &mut self,
        meta: &RecordMeta,
        key: &[u8],
        value: &[u8],
    ) -> Result<(Loc, u64), WriteError> {
        self.check_writable()?;
        let len = RECORD_HEADER_BYTES + key.len() + value.len();
        let total = padded(len);
        let room = self.config.segment_bytes as usize - SEGMENT_HEADER_BYTES;
        if total > room {
            return Err(WriteError::TooLarge {
                bytes: total,
                max: room,
            });
        }
        let fits = self
            .segments
            .get(&self.active)
            .is_some_and(|i| i.seg.published() + total <= i.seg.capacity());
        if !fits {
            self.rotate()?;
        }
        let header = encode_header(meta, key, value);
        let info = self
            .segments
            .get_mut(&self.active)
            .ok_or(WriteError::NoSpace)?;
        let offset = info.seg.published();
        info.seg.append(&[&header, key, value], total);
        info.dirty = true;
        self.bytes_since_checkpoint += total as u64;
        let loc = Loc {
            segment: self.active,
            offset: offset as u32,
        };
        Ok((loc, total as u64))
    }

    /// Creates the next segment and makes it the active one.
    fn rotate(&mut self) -> Result<(), WriteError> {
        let id = self.max_segment_id + 1;
        let path = segment_path(&self.dir, id);
        let seg = Segment::create(id, &path, self.config.segment_bytes as u32)
            .map_err(WriteError::from_io)?;
        self.max_segment_id = id;
        self.segments.insert(id, SegmentInfo::new(seg));
        self.active = id;
        if self.config.durability != Durability::Never {
            // The new file's directory entry must be durable before anything in it is.
            self.sync_dir()?;
        }
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), WriteError> {
        let res = std::fs::File::open(&self.dir).and_then(|d| d.sync_all());
        res.map_err(|e| {
            self.poisoned = true;
            WriteError::SyncFailed(e)
        })
    }

    /// Finishes a write: syncs under `Always`.
    fn after_write(&mut self, lsn: Lsn) -> Result<Lsn, WriteError> {
        if self.config.durability == Durability::Always {
            self.sync()?;
        }
        Ok(lsn)
    }

    /// Points `key` at `loc` in the index and moves the accounting; returns the location
    /// it replaced (its record is still readable: only compaction deletes segments).
    fn index_insert(&mut self, partition: u32, key: &[u8], loc: Loc, len: u64) -> Option<Loc> {
        let hash = self.hasher.hash_one(key);
        let segments = &self.segments;
        let old = self
            .partitions
            .entry(partition)
            .or_default()
            .insert(hash, key, loc, |l| key_at(segments, l));
        self.add_live(loc, len);
        if let Some(old) = old {
            self.release(old);
        }
        old
    }

    fn add_live(&mut self, loc: Loc, len: u64) {
        if let Some(info) = self.segments.get_mut(&loc.segment) {
            info.live += len;
        }
    }

    fn add_markers(&mut self, loc: Loc, len: u64) {
        if let Some(info) = self.segments.get_mut(&loc.segment) {
            info.markers += len;
        }
    }

    /// Whether the record at `loc` is a tombstone, from its header's kind byte without a
    /// CRC check (the record entered the index checked; the count is a figure, not data).
    fn is_tombstone_at(&self, loc: Loc) -> bool {
        let Some(info) = self.segments.get(&loc.segment) else {
            return false;
        };
        let kind_at = loc.offset as usize + 32;
        info.seg.bytes().get(kind_at).copied() == Some(RecordKind::Tombstone as u8)
    }

    /// Moves `partition`'s tombstone count for a key whose record was (`was`) and now is
    /// (`now`) a tombstone.
    fn count_tombstone(&mut self, partition: u32, was: bool, now: bool) {
        if was != now {
            let n = self.tombstones.entry(partition).or_default();
            *n = if now { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    /// The record at `old` is no longer live: take its bytes off its segment's live count.
    /// Returns its padded length (0 if unknown).
    fn release(&mut self, old: Loc) -> u64 {
        let len = head_at(&self.segments, old).map_or(0, |h| h.padded_len);
        if let Some(info) = self.segments.get_mut(&old.segment) {
            info.live = info.live.saturating_sub(len);
        }
        len
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.closed && !self.poisoned {
            // Best effort, as documented on `close`: an error here poisons nothing since
            // the store is going away, and the next open recovers from disk.
            let _ = self.sync();
        }
    }
}

/// A key's current record, as [`Store::get`] and [`Store::get_shared`] find it.
struct Located<'a> {
    rec: Record<'a>,
    seg: &'a Arc<Segment>,
    loc: Loc,
}

impl<'a> Located<'a> {
    /// What a read returns of the record.
    fn found(self) -> Found<'a> {
        Found {
            kind: value_kind(self.rec.meta.kind),
            value: self.rec.value,
            lsn: self.rec.meta.lsn,
        }
    }
}

/// Header fields of a record that was checked when it entered the index.
#[derive(Clone, Copy, Debug)]
struct Head {
    lsn: Lsn,
    padded_len: u64,
}

/// The key of the record at `loc`, from its header, without a CRC check: used to compare
/// keys in the index (a read checks the CRC of the record it returns).
fn key_at(segments: &Segments, loc: Loc) -> Option<&[u8]> {
    let bytes = segments.get(&loc.segment)?.seg.bytes();
    let off = loc.offset as usize;
    let key_len = u32_at(bytes.get(off..off + RECORD_HEADER_BYTES)?, 20) as usize;
    bytes.get(off + RECORD_HEADER_BYTES..off + RECORD_HEADER_BYTES + key_len)
}

/// LSN and length of the record at `loc`, from its header.
fn head_at(segments: &Segments, loc: Loc) -> Option<Head> {
    let bytes = segments.get(&loc.segment)?.seg.bytes();
    let off = loc.offset as usize;
    let header = bytes.get(off..off + RECORD_HEADER_BYTES)?;
    Some(Head {
        lsn: u64_at(header, 8),
        padded_len: padded(u32_at(header, 0) as usize) as u64,
    })
}

fn value_kind(kind: RecordKind) -> ValueKind {
    if kind == RecordKind::Tombstone {
        ValueKind::Tombstone
    } else {
        ValueKind::Value
    }
}

fn check_sizes(key: &[u8], value: &[u8]) -> Result<(), WriteError> {
    if key.len() > KEY_BYTES_MAX {
        return Err(WriteError::TooLarge {
            bytes: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(WriteError::TooLarge {
            bytes: value.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

/// Path of segment `id` in `dir`.
fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}
