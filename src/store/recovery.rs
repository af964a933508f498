//! Opening a store: the meta file (incarnation and hash seeds), the index checkpoint, and the
//! scan of the log that rebuilds the index when there is no usable checkpoint.
//!
//! Meta file `STORE` (60 bytes): magic `RTRMETA1`, version u32, reserved u32, incarnation u64,
//! four u64 hash seeds, CRC32C of the preceding bytes (u32).
//!
//! Checkpoint `index.ckpt` (format version 2; a checkpoint of another version is refused
//! and the log scanned, as for any other mismatch), all integers little-endian:
//!
//! | offset | bytes | field                                                              |
//! |-------:|------:|--------------------------------------------------------------------|
//! | 0      | 8     | magic `RTRCKPT1`                                                   |
//! | 8      | 4     | checkpoint format version (2)                                      |
//! | 12     | 4     | reserved, zero                                                     |
//! | 16     | 8     | incarnation                                                        |
//! | 24     | 8     | hash probe: the store's hash of a fixed string, so a checkpoint made by a build whose hash differs is refused |
//! | 32     | 8     | next LSN                                                           |
//! | 40     | 4     | replay segment                                                     |
//! | 44     | 4     | replay offset                                                      |
//! | 48     | 4     | `T`: Merkle trees saved                                            |
//! | 52     | 8212 T | trees: partition u32, entries u64, tombstones u64, then the 1024 leaves u64 (`MERKLE_LEAVES`) |
//! | ..     | 4     | CRC32C of the trees                                                |
//! | ..     | ..    | segment table: count u32; id u32, written end u32, live u64, markers u64 each |
//! | ..     | ..    | key index: partition count u32; partition u32, entry count u64, then entries of hash u64, segment u32, offset u32 |
//! | ..     | ..    | hint index: count u64; target u64, id u64, segment u32, offset u32 each |
//! | end-4  | 4     | CRC32C of everything but the trees and their CRC                   |
//!
//! The trees have their own CRC so that damage there costs a rebuild of the trees (0.3 to 1
//! s per million keys) and not a scan of the whole log. A saved tree is the one of its
//! partition's entries in this checkpoint: the replay after it keeps it exact (see
//! `trees.rs`), and any doubt rebuilds the tree from the index, never keeps a wrong one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::format::{
    decode_at, u32_at, u64_at, Decoded, Record, RecordKind, FORMAT_VERSION, RECORD_ALIGN,
};
use super::index::{HintIndex, Loc, PartitionIndex};
use super::segment::Segment;
use super::{
    head_at, key_at, segment_path, OpenError, RecoveryReport, SegmentInfo, Segments, Store,
    StoreConfig, WriteError,
};
use crate::constants::MERKLE_LEAVES;
use crate::merkle::MerkleTree;
use crate::store::format::{check_segment_header, padded, SEGMENT_HEADER_BYTES};

const META_FILE: &str = "STORE";
const META_MAGIC: [u8; 8] = *b"RTRMETA1";
const META_BYTES: usize = 60;
const CHECKPOINT_FILE: &str = "index.ckpt";
/// Empty file written by a clean close and removed by the next open: its presence at open
/// says every write of the previous run was synced before the process ended.
const CLEAN_FILE: &str = "CLEAN";
const CHECKPOINT_MAGIC: [u8; 8] = *b"RTRCKPT1";
/// Version of the checkpoint's layout, apart from the segments' `FORMAT_VERSION`: 2 added
/// the Merkle trees.
const CHECKPOINT_VERSION: u32 = 2;
/// Bytes of the checkpoint's fixed header, before the trees.
const CHECKPOINT_HEADER_BYTES: usize = 52;
/// Leaves of one saved tree.
const LEAVES: usize = MERKLE_LEAVES as usize;
/// Bytes of one saved tree: partition, entries, tombstones, leaves.
const TREE_RECORD_BYTES: usize = 4 + 8 + 8 + 8 * LEAVES;
const HASH_PROBE: &[u8] = b"rotor store hash probe";
/// Bytes of one key index entry in the checkpoint: hash u64, segment u32, offset u32.
const INDEX_ENTRY_BYTES: usize = 16;
/// How many entries ahead the checkpoint load prefetches a table bucket: enough misses in
/// flight to cover memory latency (a core has 10 to 16 line-fill buffers), few enough that
/// the line is still cached when its insert comes.
const INSERT_PREFETCH_AHEAD: usize = 8;

/// Opens the store in `dir`: see the module docs of [`crate::store`] for the rules.
pub(super) fn open(dir: &Path, config: StoreConfig) -> Result<(Store, RecoveryReport), OpenError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| OpenError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut report = RecoveryReport::default();

    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u32>().ok())
        {
            if id > 0 && id < u32::MAX {
                ids.push(id);
            }
        } else if name.ends_with(".tmp") {
            // A checkpoint or meta file whose write was cut short.
            let _ = fs::remove_file(entry.path());
        }
    }
    ids.sort_unstable();

    let meta = read_meta(dir);
    let (incarnation, seeds) = match meta {
        Some(m) if !ids.is_empty() => m,
        _ => {
            report.new_incarnation = true;
            let fresh = new_meta().map_err(io_err(dir))?;
            write_meta(dir, fresh).map_err(|e| {
                if super::error::is_no_space(&e) {
                    OpenError::NoSpace(dir.to_path_buf())
                } else {
                    OpenError::Io {
                        path: dir.join(META_FILE),
                        source: e,
                    }
                }
            })?;
            fresh
        }
    };

    // Whether the previous run closed cleanly. The marker goes away now (durably), so a
    // crash of this run is never mistaken for a clean close by the next open.
    let clean_path = dir.join(CLEAN_FILE);
    if clean_path.exists() {
        report.clean_shutdown = true;
        fs::remove_file(&clean_path).map_err(io_err(&clean_path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }

    let mut segments = Segments::new();
    for &id in &ids {
        let path = segment_path(dir, id);
        match Segment::open(id, &path) {
            Ok(seg) if check_segment_header(seg.bytes(), id) => {
                segments.insert(id, SegmentInfo::new(seg));
            }
            Ok(_) => {
                report.corrupt_segments += 1;
                eprintln!(
                    "rotor store {}: segment {id} has a damaged header; ignored",
                    dir.display()
                );
            }
            Err(e) => {
                report.corrupt_segments += 1;
                eprintln!(
                    "rotor store {}: segment {id} cannot be opened ({e}); ignored",
                    dir.display()
                );
            }
        }
    }

    let [k0, k1, k2, k3] = seeds;
    let mut store = Store {
        dir: dir.to_path_buf(),
        config,
        incarnation,
        hasher: ahash::RandomState::with_seeds(k0, k1, k2, k3),
        segments,
        active: 0,
        max_segment_id: ids.last().copied().unwrap_or(0),
        partitions: HashMap::default(),
        trees: HashMap::default(),
        hints: HintIndex::default(),
        hint_bytes: 0,
        next_lsn: 1,
        durable_lsn: 0,
        poisoned: false,
        closed: false,
        compaction: None,
        syncs: super::sync::Generations::default(),
        retired: Vec::new(),
        bytes_since_checkpoint: 0,
        corrupt_seen: std::cell::Cell::new(0),
        tombstones: HashMap::default(),
    };

    let mut pending = Pending::default();
    match load_checkpoint(&mut store, &mut pending, &mut report) {
        Ok(()) => report.used_checkpoint = true,
        Err(reason) => {
            if dir.join(CHECKPOINT_FILE).exists() {
                eprintln!(
                    "rotor store {}: checkpoint not used: {reason}; scanning the log",
                    dir.display()
                );
                report.checkpoint_rejected = Some(reason);
            }
            reset(&mut store);
            pending = Pending::default();
            report.records_scanned = 0;
            report.corrupt_records = 0;
            report.torn_tails = 0;
            let ids: Vec<u32> = store.segments.keys().copied().collect();
            for id in ids {
                scan_segment(
                    &mut store,
                    id,
                    SEGMENT_HEADER_BYTES,
                    &mut pending,
                    &mut report,
                );
            }
        }
    }
    // The index is final: trees the replay could not keep exact are rebuilt from it, all of
    // them when the checkpoint gave none.
    match pending.finish(&mut store) {
        Some(stale) => {
            report.trees_from_checkpoint = true;
            report.trees_rebuilt = store
                .partitions
                .keys()
                .filter(|p| stale.contains(p))
                .count();
            if !stale.is_empty() {
                store.rebuild_trees_where(|p| stale.contains(&p));
            }
        }
        None => {
            report.trees_rebuilt = store.partitions.len();
            store.rebuild_merkle_trees();
        }
    }

    // Appends go to a fresh segment, made by the first write, never after recovered bytes:
    // past the end a scan found there may be stale bytes (pages written back out of order
    // before a power loss), and checking a whole preallocated tail for zeros would cost a
    // read of it. So an open writes nothing, and opens on a full disk, serving reads.
    store.active = 0;
    // What was recovered may sit only in the page cache (the previous process died before
    // its fsync): sync it before calling it durable. Clean files cost next to nothing.
    if store.config.durability != super::Durability::Never {
        for info in store.segments.values() {
            info.seg.sync().map_err(io_err(info.seg.path()))?;
        }
    }
    store.durable_lsn = store.next_lsn - 1;
    store.corrupt_seen.set(report.corrupt_records);
    report.segments = store.segments.len();
    report.keys = store.partitions.values().map(|p| p.len() as u64).sum();
    report.hints = store.hints.len() as u64;
    Ok((store, report))
}

/// What the scan has seen that can only be applied once everything is read: markers cancel
/// records by LSN, wherever those lie in the log.
#[derive(Default)]
struct Pending {
    drops: HashMap<u32, u64>,
    purges: Vec<(u32, Vec<u8>, u64)>,
    deleted_hints: HashSet<u64>,
    /// Checkpoint entries (partition, key hash) whose segment compaction deleted after the
    /// checkpoint: the replay must bring each key back (its copy, a newer write) or show
    /// it gone (purge, partition drop), else the checkpoint is refused.
    missing: HashMap<(u32, u64), u32>,
    /// Checkpointed hints whose segment was deleted, awaiting their copy or deletion.
    missing_hints: HashSet<u64>,
    /// The trees (and tombstone counts) came from the checkpoint and the replay keeps them
    /// in step; when false they are all rebuilt at the end.
    follow_trees: bool,
    /// Partitions whose tree the replay cannot keep exact, rebuilt at the end: a key of the
    /// checkpoint in a deleted segment (its entry hash is gone with it), an old record that
    /// no longer checks out, a partition drop.
    stale_trees: HashSet<u32>,
}

impl Pending {
    /// Removes what the markers cancel. Returns the partitions whose trees must be rebuilt
    /// from the final index, or None for all of them.
    fn finish(mut self, store: &mut Store) -> Option<HashSet<u32>> {
        for (partition, drop_lsn) in self.drops {
            self.stale_trees.insert(partition);
            let Some(index) = store.partitions.get(&partition) else {
                continue;
            };
            let doomed: Vec<(u64, Loc)> = index
                .entries()
                .filter(|&(_, l)| head_at(&store.segments, l).is_none_or(|h| h.lsn < drop_lsn))
                .collect();
            for (hash, loc) in doomed {
                if let Some(index) = store.partitions.get_mut(&partition) {
                    index.remove_loc(hash, loc);
                }
                store.release(loc);
            }
        }
        for (partition, key, purge_lsn) in self.purges {
            let hash = store.hasher.hash_one(&key[..]);
            let segments = &store.segments;
            let Some(index) = store.partitions.get_mut(&partition) else {
                continue;
            };
            let Some(loc) = index.find(hash, &key, |l| key_at(segments, l)) else {
                continue;
            };
            if head_at(segments, loc).is_none_or(|h| h.lsn < purge_lsn) {
                index.remove_loc(hash, loc);
                store.release(loc);
                if self.follow_trees && !self.stale_trees.contains(&partition) {
                    // As `Store::purge` does.
                    let was_tombstone = store.is_tombstone_at(loc);
                    store.count_tombstone(partition, was_tombstone, false);
                    if !store.tree_swap(partition, &key, Some(loc), None) {
                        self.stale_trees.insert(partition);
                    }
                }
            }
        }
        self.follow_trees.then_some(self.stale_trees)
    }

    /// Keeps the tree and tombstone count of a replayed write's partition in step, as
    /// `Store::put` does (`old`: the record it replaced), while they come from the
    /// checkpoint; a partition whose old record does not check out is left to a rebuild.
    fn follow_write(&mut self, store: &mut Store, rec: &Record<'_>, old: Option<Loc>) {
        let partition = rec.meta.partition;
        if !self.follow_trees || self.stale_trees.contains(&partition) {
            return;
        }
        let was_tombstone = old.is_some_and(|o| store.is_tombstone_at(o));
        let is_tombstone = rec.meta.kind == RecordKind::Tombstone;
        store.count_tombstone(partition, was_tombstone, is_tombstone);
        if !store.tree_swap(partition, rec.key, old, Some(rec.value)) {
            self.stale_trees.insert(partition);
        }
    }
}

/// Empties the indexes and counters and makes every segment fully readable again, for a
/// scan from scratch after a rejected checkpoint.
fn reset(store: &mut Store) {
    store.partitions.clear();
    store.trees.clear();
    store.tombstones.clear();
    store.hints = HintIndex::default();
    store.hint_bytes = 0;
    store.next_lsn = 1;
    for info in store.segments.values_mut() {
        info.live = 0;
        info.markers = 0;
        if let Some(seg) = std::sync::Arc::get_mut(&mut info.seg) {
            seg.expose_all();
        }
    }
}

/// Scans segment `id` from `start`, applying every good record, skipping damage and
/// truncating a torn tail.
fn scan_segment(
    store: &mut Store,
    id: u32,
    start: usize,
    pending: &mut Pending,
    report: &mut RecoveryReport,
) {
    let Some(seg) = store
        .segments
        .get(&id)
        .map(|i| std::sync::Arc::clone(&i.seg))
    else {
        return;
    };
    let outcome = scan(seg.bytes(), start, |off, rec| {
        report.records_scanned += 1;
        let loc = Loc {
            segment: id,
            offset: off as u32,
        };
        apply(store, loc, &rec, pending);
    });
    drop(seg);
    report.corrupt_records += outcome.corrupt;
    if outcome.torn {
        report.torn_tails += 1;
        eprintln!(
            "rotor store {}: segment {id}: torn tail at offset {} truncated",
            store.dir.display(),
            outcome.end
        );
    }
    if let Some(info) = store.segments.get_mut(&id) {
        if let Some(seg) = std::sync::Arc::get_mut(&mut info.seg) {
            seg.truncate(outcome.end, outcome.torn);
            if outcome.torn {
                // Make the zeroing durable so a later scan does not meet the torn bytes.
                let _ = seg.sync();
            }
        }
    }
}

/// Where a scan stopped and what it met.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ScanOutcome {
    /// End of the good part: where the next record goes.
    pub end: usize,
    /// Damaged records skipped.
    pub corrupt: u64,
    /// The scan ended at bytes that are neither records nor zeros.
    pub torn: bool,
}

/// Walks the records of `buf` from `start`, calling `f(offset, record)` for each good one.
/// A bad record followed by a good one is skipped as damage; a bad record followed by
/// nothing good is a torn tail.
pub(super) fn scan<'a>(
    buf: &'a [u8],
    start: usize,
    mut f: impl FnMut(usize, Record<'a>),
) -> ScanOutcome {
    let mut off = start;
    let mut corrupt = 0;
    loop {
        match decode_at(buf, off) {
            Decoded::Record(rec) => {
                f(off, rec);
                off += rec.padded_len;
            }
            Decoded::End => {
                return ScanOutcome {
                    end: off,
                    corrupt,
                    torn: false,
                }
            }
            Decoded::Bad => match resync(buf, off) {
                Some(next) => {
                    corrupt += 1;
                    off = next;
                }
                None => {
                    return ScanOutcome {
                        end: off,
                        corrupt,
                        torn: true,
                    }
                }
            },
        }
    }
}

/// The offset of the next good record after the bad one at `off`: first where its length
/// field says, then at every aligned offset.
pub(super) fn resync(buf: &[u8], off: usize) -> Option<usize> {
    let declared = padded(u32_at(buf.get(off..)?, 0) as usize);
    let is_record = |o: usize| matches!(decode_at(buf, o), Decoded::Record(_));
    if declared > 0 && is_record(off + declared) {
        return Some(off + declared);
    }
    (off + super::format::RECORD_ALIGN..buf.len())
        .step_by(super::format::RECORD_ALIGN)
        .find(|&o| is_record(o))
}

/// Applies one scanned record to the indexes (the record with the highest LSN wins).
fn apply(store: &mut Store, loc: Loc, rec: &Record<'_>, pending: &mut Pending) {
    let meta = rec.meta;
    let len = rec.padded_len as u64;
    store.next_lsn = store.next_lsn.max(meta.lsn + 1);
    match meta.kind {
        RecordKind::Value | RecordKind::Tombstone => {
            if pending
                .drops
                .get(&meta.partition)
                .is_some_and(|&d| meta.lsn < d)
            {
                return;
            }
            let hash = store.hasher.hash_one(rec.key);
            if let Some(n) = pending.missing.get_mut(&(meta.partition, hash)) {
                *n = n.saturating_sub(1);
            }
            let segments = &store.segments;
            let index = store.partitions.entry(meta.partition).or_default();
            let Some(old) = index.insert(hash, rec.key, loc, |l| key_at(segments, l)) else {
                store.add_live(loc, len);
                pending.follow_write(store, rec, None);
                return;
            };
            // Equal LSNs are two copies of one write (compaction): the later one wins, since
            // the older copy's segment is about to be deleted. A newer write already in the
            // index (rare: only copies arrive out of order) is put back.
            if head_at(segments, old).is_some_and(|h| h.lsn > meta.lsn) {
                index.insert(hash, rec.key, old, |l| key_at(segments, l));
                return;
            }
            store.add_live(loc, len);
            store.release(old);
            pending.follow_write(store, rec, Some(old));
        }
        RecordKind::Hint => {
            pending.missing_hints.remove(&meta.lsn);
            if pending.deleted_hints.contains(&meta.lsn) {
                return;
            }
            if let Some((_, old)) = store.hints.remove(meta.lsn) {
                let old_len = store.release(old);
                store.hint_bytes = store.hint_bytes.saturating_sub(old_len);
            }
            store.hints.insert(meta.target, meta.lsn, loc);
            store.hint_bytes += len;
            store.add_live(loc, len);
        }
        RecordKind::HintDelete => {
            store.add_markers(loc, len);
            let id = u64_at(rec.value, 0);
            pending.deleted_hints.insert(id);
            pending.missing_hints.remove(&id);
            if let Some((_, old)) = store.hints.remove(id) {
                let old_len = store.release(old);
                store.hint_bytes = store.hint_bytes.saturating_sub(old_len);
            }
        }
        RecordKind::Purge => {
            store.add_markers(loc, len);
            pending
                .purges
                .push((meta.partition, rec.key.to_vec(), meta.lsn));
            let hash = store.hasher.hash_one(rec.key);
            pending.missing.remove(&(meta.partition, hash));
        }
        RecordKind::PartitionDrop => {
            store.add_markers(loc, len);
            let d = pending.drops.entry(meta.partition).or_insert(0);
            *d = (*d).max(meta.lsn);
            pending.missing.retain(|&(p, _), _| p != meta.partition);
        }
    }
}

// ---- meta file ---------------------------------------------------------------------------

type Meta = (u64, [u64; 4]);

fn read_meta(dir: &Path) -> Option<Meta> {
    let bytes = fs::read(dir.join(META_FILE)).ok()?;
    if bytes.len() != META_BYTES
        || bytes.get(..8)? != META_MAGIC
        || u32_at(&bytes, 8) != FORMAT_VERSION
        || crc32c::crc32c(bytes.get(..META_BYTES - 4)?) != u32_at(&bytes, META_BYTES - 4)
    {
        eprintln!(
            "rotor store {}: meta file missing or damaged",
            dir.display()
        );
        return None;
    }
    let seeds = [24, 32, 40, 48].map(|at| u64_at(&bytes, at));
    Some((u64_at(&bytes, 16), seeds))
}

fn new_meta() -> io::Result<Meta> {
    let mut random = [0u8; 40];
    File::open("/dev/urandom")?.read_exact(&mut random)?;
    let incarnation = u64_at(&random, 0).max(1);
    let seeds = [8, 16, 24, 32].map(|at| u64_at(&random, at));
    Ok((incarnation, seeds))
}

fn write_meta(dir: &Path, (incarnation, seeds): Meta) -> io::Result<()> {
    let mut b = Vec::with_capacity(META_BYTES);
    b.extend_from_slice(&META_MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&incarnation.to_le_bytes());
    for s in seeds {
        b.extend_from_slice(&s.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    write_atomically(dir, META_FILE, |w| w.write_all(&b))
}

/// Writes `name` in `dir` through a temporary file, fsync, rename and a directory fsync, so
/// that a crash leaves the old file or the new one, never a mix.
fn write_atomically(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let tmp: PathBuf = dir.join(format!("{name}.tmp"));
    let res = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Records that the store was closed cleanly (after its final sync and checkpoint).
pub(super) fn mark_clean(dir: &Path) -> io::Result<()> {
    write_atomically(dir, CLEAN_FILE, |_| Ok(()))
}

/// Gives the store a new random incarnation, keeping its hash seeds and data, and persists
/// it before returning.
pub(super) fn renew_incarnation(dir: &Path) -> io::Result<u64> {
    let (_, seeds) = read_meta(dir)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "meta file unreadable"))?;
    let (incarnation, _) = new_meta()?;
    write_meta(dir, (incarnation, seeds))?;
    Ok(incarnation)
}

// ---- checkpoint --------------------------------------------------------------------------

/// Writes `index.ckpt` for the current state; the caller synced the log first.
pub(super) fn write_checkpoint(store: &Store) -> Result<(), WriteError> {
    write_atomically(&store.dir, CHECKPOINT_FILE, |w| {
        let mut out = CrcWriter { w, crc: 0 };
        out.put(&CHECKPOINT_MAGIC)?;
        out.put(&CHECKPOINT_VERSION.to_le_bytes())?;
        out.put(&0u32.to_le_bytes())?;
        out.put(&store.incarnation.to_le_bytes())?;
        out.put(&store.hasher.hash_one(HASH_PROBE).to_le_bytes())?;
        out.put(&store.next_lsn.to_le_bytes())?;
        // Replay starts where the next write goes: the active segment's end, or the start
        // of the segment the next write will create.
        let (replay_seg, replay_off) = match store.segments.get(&store.active) {
            Some(info) => (store.active, info.seg.published()),
            None => (store.max_segment_id + 1, SEGMENT_HEADER_BYTES),
        };
        out.put(&replay_seg.to_le_bytes())?;
        out.put(&(replay_off as u32).to_le_bytes())?;
        out.put(&(store.trees.len() as u32).to_le_bytes())?;
        // The trees, under a CRC of their own, kept out of the file's.
        let file_crc = std::mem::replace(&mut out.crc, 0);
        let mut record = Vec::with_capacity(TREE_RECORD_BYTES);
        for (&partition, tree) in &store.trees {
            record.clear();
            record.extend_from_slice(&partition.to_le_bytes());
            record.extend_from_slice(&tree.len().to_le_bytes());
            let tombstones = store.tombstones.get(&partition).copied().unwrap_or(0);
            record.extend_from_slice(&tombstones.to_le_bytes());
            for leaf in tree.leaves() {
                record.extend_from_slice(&leaf.to_le_bytes());
            }
            debug_assert_eq!(record.len(), TREE_RECORD_BYTES);
            out.put(&record)?;
        }
        let trees_crc = std::mem::replace(&mut out.crc, file_crc);
        out.w.write_all(&trees_crc.to_le_bytes())?;
        out.put(&(store.segments.len() as u32).to_le_bytes())?;
        for (&id, info) in &store.segments {
            out.put(&id.to_le_bytes())?;
            out.put(&(info.seg.published() as u32).to_le_bytes())?;
            out.put(&info.live.to_le_bytes())?;
            out.put(&info.markers.to_le_bytes())?;
        }
        out.put(&(store.partitions.len() as u32).to_le_bytes())?;
        for (&partition, index) in &store.partitions {
            out.put(&partition.to_le_bytes())?;
            out.put(&(index.len() as u64).to_le_bytes())?;
            for (hash, loc) in index.entries() {
                out.put(&hash.to_le_bytes())?;
                out.put(&loc.segment.to_le_bytes())?;
                out.put(&loc.offset.to_le_bytes())?;
            }
        }
        out.put(&(store.hints.len() as u64).to_le_bytes())?;
        for (target, id, loc) in store.hints.entries() {
            out.put(&target.to_le_bytes())?;
            out.put(&id.to_le_bytes())?;
            out.put(&loc.segment.to_le_bytes())?;
            out.put(&loc.offset.to_le_bytes())?;
        }
        let crc = out.crc;
        out.w.write_all(&crc.to_le_bytes())
    })
    .map_err(WriteError::from_io)
}

struct CrcWriter<'a, 'f> {
    w: &'a mut BufWriter<&'f File>,
    crc: u32,
}

impl CrcWriter<'_, '_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.w.write_all(bytes)
    }
}

/// Loads `index.ckpt` and replays the log after it. Any inconsistency is an `Err` with the
/// reason; the caller then scans from scratch.
fn load_checkpoint(
    store: &mut Store,
    pending: &mut Pending,
    report: &mut RecoveryReport,
) -> Result<(), String> {
    let bytes = fs::read(store.dir.join(CHECKPOINT_FILE)).map_err(|e| e.to_string())?;
    let header = bytes.get(..CHECKPOINT_HEADER_BYTES).ok_or("too short")?;
    let mut h = Cursor { buf: header, at: 0 };
    if h.take(8)? != CHECKPOINT_MAGIC {
        return Err("bad magic".into());
    }
    let version = h.u32()?;
    if version != CHECKPOINT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {CHECKPOINT_VERSION}"
        ));
    }
    h.u32()?;
    let (incarnation, probe, next_lsn) = (h.u64()?, h.u64()?, h.u64()?);
    let replay_seg = h.u32()?;
    let replay_off = h.u32()? as usize;
    let trees = h.u32()? as usize;
    // The file's CRC covers the header and the body, not the trees (they have their own).
    let trees_end = trees
        .checked_mul(TREE_RECORD_BYTES)
        .and_then(|n| n.checked_add(CHECKPOINT_HEADER_BYTES + 4))
        .ok_or("tree count overflow")?;
    let body_end = bytes.len().checked_sub(4).ok_or("too short")?;
    let (Some(saved_trees), Some(body), Some(crc)) = (
        bytes.get(CHECKPOINT_HEADER_BYTES..trees_end),
        bytes.get(trees_end..body_end),
        bytes.get(body_end..),
    ) else {
        return Err("tree count larger than the file".into());
    };
    if crc32c::crc32c_append(crc32c::crc32c(header), body) != u32_at(crc, 0) {
        return Err("checksum mismatch".into());
    }
    if incarnation != store.incarnation {
        return Err("made for another incarnation".into());
    }
    if probe != store.hasher.hash_one(HASH_PROBE) {
        return Err("made with another key hash".into());
    }
    store.next_lsn = next_lsn.max(1);
    let mut r = Cursor { buf: body, at: 0 };

    let listed = r.count(false, 24)?;
    let mut sealed = BTreeMap::new();
    for _ in 0..listed {
        let (id, end, live, markers) = (r.u32()?, r.u32()? as usize, r.u64()?, r.u64()?);
        sealed.insert(id, (end, live, markers));
    }
    // Every segment before the replay point must be one the checkpoint knows, and still
    // within its file; segments it lists that are gone were compacted after it.
    // The replay segment itself gets its counters (for the part before the replay point)
    // but keeps its whole length, since the scan finds its end.
    for (&id, info) in store.segments.range_mut(..=replay_seg) {
        let Some(&(end, live, markers)) = sealed.get(&id) else {
            if id == replay_seg {
                continue;
            }
            return Err(format!("segment {id} unknown to it"));
        };
        if end > info.seg.capacity() || end < SEGMENT_HEADER_BYTES {
            return Err(format!("segment {id} end out of range"));
        }
        info.live = live;
        info.markers = markers;
        if id < replay_seg {
            let seg = std::sync::Arc::get_mut(&mut info.seg).ok_or("segment shared")?;
            seg.truncate(end, false);
        }
    }

    // The key index is most of the file and of the open's time: per entry a table insert
    // (a cache miss, overlapped with the next ones' by prefetching their buckets ahead) and
    // a check that its segment exists (a hash set: a lookup in the segment map was 28% of
    // a 10M-key open).
    let present: HashSet<u32, ahash::RandomState> = store.segments.keys().copied().collect();
    let partitions = r.u32()?;
    for _ in 0..partitions {
        let partition = r.u32()?;
        let n = r.count(true, INDEX_ENTRY_BYTES)?;
        let entries = r.take(n * INDEX_ENTRY_BYTES)?;
        let mut index = PartitionIndex::with_capacity(n);
        for (i, entry) in entries.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
            let ahead = (i + INSERT_PREFETCH_AHEAD) * INDEX_ENTRY_BYTES;
            if let Some(later) = entries.get(ahead..ahead + 8) {
                index.prefetch(u64_at(later, 0));
            }
            let (hash, segment, offset) = (u64_at(entry, 0), u32_at(entry, 8), u32_at(entry, 12));
            if !(offset as usize).is_multiple_of(RECORD_ALIGN) {
                return Err("misaligned record offset".into());
            }
            if !present.contains(&segment) {
                *pending.missing.entry((partition, hash)).or_default() += 1;
                continue;
            }
            // Entries are unique keys: insert without comparing keys.
            index.insert(hash, &[], Loc { segment, offset }, |_| None);
        }
        store.partitions.insert(partition, index);
    }
    let hints = r.count(true, 24)?;
    for _ in 0..hints {
        let (target, id, segment, offset) = (r.u64()?, r.u64()?, r.u32()?, r.u32()?);
        let loc = Loc { segment, offset };
        if !store.segments.contains_key(&segment) {
            pending.missing_hints.insert(id);
            continue;
        }
        store.hints.insert(target, id, loc);
        store.hint_bytes += head_at(&store.segments, loc).map_or(0, |h| h.padded_len);
    }
    if r.at != body.len() {
        return Err("trailing bytes".into());
    }
    match load_trees(store, saved_trees) {
        Ok(()) => {
            pending.follow_trees = true;
            // A key whose segment is gone took its entry hash with it. A tree that does not
            // count its partition's keys is not one to guess about: it left out a damaged
            // record, or does not belong to this index.
            pending
                .stale_trees
                .extend(pending.missing.keys().map(|&(p, _)| p));
            let doubtful = store.partitions.iter().filter(|&(p, index)| {
                store.trees.get(p).map_or(0, MerkleTree::len) != index.len() as u64
            });
            pending.stale_trees.extend(doubtful.map(|(&p, _)| p));
        }
        Err(reason) => {
            eprintln!(
                "rotor store {}: Merkle trees of the checkpoint not used: {reason}; \
                 rebuilding them",
                store.dir.display()
            );
            store.trees.clear();
            store.tombstones.clear();
        }
    }

    // Replay what was written after the checkpoint.
    let replay: Vec<u32> = store
        .segments
        .range(replay_seg..)
        .map(|(&id, _)| id)
        .collect();
    for id in replay {
        let start = if id == replay_seg {
            replay_off
        } else {
            SEGMENT_HEADER_BYTES
        };
        scan_segment(store, id, start, pending, report);
        let end = store.segments.get(&id).map_or(0, |i| i.seg.published());
        if id == replay_seg && end < replay_off {
            return Err("log ends before the checkpoint's replay point".into());
        }
    }
    if pending.missing.values().any(|&n| n > 0) || !pending.missing_hints.is_empty() {
        return Err("keys in compacted segments did not reappear in the log".into());
    }
    // No entry can point at a deleted segment: those were never loaded (see `missing`),
    // and the replay only adds locations it just read.
    Ok(())
}

/// Takes the saved trees and tombstone counts, checked against their CRC and the index
/// just loaded; on `Err` the caller discards whatever was taken.
fn load_trees(store: &mut Store, saved: &[u8]) -> Result<(), String> {
    let records_len = saved.len().checked_sub(4).ok_or("truncated")?;
    let (records, crc) = saved.split_at(records_len);
    if crc32c::crc32c(records) != u32_at(crc, 0) {
        return Err("checksum mismatch".into());
    }
    for record in records.chunks_exact(TREE_RECORD_BYTES) {
        let mut r = Cursor { buf: record, at: 0 };
        let (partition, entries, tombstones) = (r.u32()?, r.u64()?, r.u64()?);
        let mut leaves = [0u64; LEAVES];
        for leaf in &mut leaves {
            *leaf = r.u64()?;
        }
        // A saved tree holds at least one key, of a partition the index knows.
        if entries == 0 || tombstones > entries || !store.partitions.contains_key(&partition) {
            return Err(format!(
                "tree of partition {partition} does not fit the index"
            ));
        }
        let tree = MerkleTree::from_leaves(leaves, entries);
        if store.trees.insert(partition, tree).is_some() {
            return Err(format!("two trees of partition {partition}"));
        }
        store.tombstones.insert(partition, tombstones);
    }
    Ok(())
}

/// A bounds-checked reader over checkpoint bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self.buf.get(self.at..self.at + n).ok_or("truncated")?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64_at(self.take(8)?, 0))
    }
    /// A count (u32 or u64 wide) of items of `item` bytes each, checked against what is
    /// left before anyone allocates for it.
    fn count(&mut self, wide: bool, item: usize) -> Result<usize, String> {
        let n = if wide {
            self.u64()?
        } else {
            u64::from(self.u32()?)
        };
        let n = usize::try_from(n).map_err(|_| "count overflow")?;
        if n.checked_mul(item)
            .is_none_or(|b| b > self.buf.len() - self.at)
        {
            return Err("count larger than the file".into());
        }
        Ok(n)
    }
}
