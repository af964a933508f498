//! The Merkle tree of one partition replica, and the pure steps of walking two trees.

use std::cell::Cell;
use std::ops::Range;

use super::hash::{inner_hash, KeyHash, FANOUT};
use crate::constants::{MERKLE_FANOUT, MERKLE_LEAVES, MERKLE_LEVELS};

/// Leaves, as an array length.
const LEAVES: usize = MERKLE_LEAVES as usize;

// The dirty set of level-1 buckets is one bit each in a u32, and the code below knows the
// shape is root, buckets, leaves.
const _: () = assert!(MERKLE_FANOUT == 32 && MERKLE_LEVELS == 3);

/// Level of the root (one hash).
pub const ROOT_LEVEL: u8 = 0;
/// Level of the inner buckets (`MERKLE_FANOUT` hashes).
pub const BUCKET_LEVEL: u8 = 1;
/// Level of the leaves (`MERKLE_LEAVES` XOR accumulators).
pub const LEAF_LEVEL: u8 = MERKLE_LEVELS - 1;

/// The Merkle tree of one partition replica: a fixed shape of 1 root, 32 buckets and 1024
/// leaves (wire-spec/merkle.md).
///
/// A leaf is the XOR of the entry hashes of its keys, so a write changes one leaf in O(1)
/// whatever the order of writes: XOR the key's old entry hash out and the new one in.
/// Inner hashes are recomputed lazily: a write only marks its level-1 bucket dirty, and the
/// first read of level 0 or 1 rehashes the dirty buckets (256 bytes each) and the root.
/// Those hashes sit in `Cell`s so that reads take `&self` (a tree belongs to one shard's
/// thread, like the store that keeps it).
#[derive(Clone)]
pub struct MerkleTree {
    leaves: Box<[u64; LEAVES]>,
    buckets: [Cell<u64>; FANOUT],
    root: Cell<u64>,
    /// Bit `b` set: bucket `b`'s hash (and so the root) is stale.
    dirty: Cell<u32>,
    /// Entries in the tree (inserts minus removals), for a partition's key count.
    entries: u64,
}

impl MerkleTree {
    /// An empty tree: every hash is 0.
    pub fn new() -> Self {
        Self {
            leaves: Box::new([0; LEAVES]),
            buckets: Default::default(),
            root: Cell::new(0),
            dirty: Cell::new(0),
            entries: 0,
        }
    }

    /// Replaces `key`'s entry hash `old` (None: the key was absent) by `new` (None: the key
    /// is removed).
    pub fn update(&mut self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        self.update_leaf(KeyHash::of(key).leaf(), old, new);
    }

    /// Like [`MerkleTree::update`] for a key whose leaf is known (see
    /// [`super::KeyHash::leaf`]). A leaf out of range is ignored (none comes from
    /// `leaf_of`).
    pub fn update_leaf(&mut self, leaf: u32, old: Option<u64>, new: Option<u64>) {
        let Some(slot) = self.leaves.get_mut(leaf as usize) else {
            return;
        };
        *slot ^= old.unwrap_or(0) ^ new.unwrap_or(0);
        match (old, new) {
            (None, Some(_)) => self.entries += 1,
            (Some(_), None) => self.entries = self.entries.saturating_sub(1),
            _ => {}
        }
        self.dirty
            .set(self.dirty.get() | 1 << (leaf / MERKLE_FANOUT));
    }

    /// A tree from leaves and an entry count saved by [`MerkleTree::leaves`] and
    /// [`MerkleTree::len`] (the store's checkpoint); its inner hashes are computed on first
    /// read.
    pub fn from_leaves(leaves: [u64; LEAVES], entries: u64) -> Self {
        Self {
            leaves: Box::new(leaves),
            buckets: Default::default(),
            root: Cell::new(0),
            dirty: Cell::new(u32::MAX),
            entries,
        }
    }

    /// The leaves (the XOR accumulators): with [`MerkleTree::len`], all a saved tree needs.
    pub fn leaves(&self) -> &[u64; LEAVES] {
        &self.leaves
    }

    /// The root hash: 0 for an empty tree.
    pub fn root(&self) -> u64 {
        self.refresh();
        self.root.get()
    }

    /// Hashes of `count` buckets of `level` from `start`, fewer if the level ends first
    /// (none for a level past the leaves).
    pub fn hashes(&self, level: u8, start: u32, count: u32) -> Vec<u64> {
        let range = clip(level, start, count);
        let range = range.start as usize..range.end as usize;
        match level {
            ROOT_LEVEL if !range.is_empty() => vec![self.root()],
            BUCKET_LEVEL => {
                self.refresh();
                self.buckets
                    .get(range)
                    .map_or_else(Vec::new, |b| b.iter().map(Cell::get).collect())
            }
            LEAF_LEVEL => self
                .leaves
                .get(range)
                .map_or_else(Vec::new, <[u64]>::to_vec),
            _ => Vec::new(),
        }
    }

    /// The leaves where this tree and `other` differ, ascending, found as an exchange
    /// would find them: from the root down, descending only into differing buckets.
    pub fn leaves_differing(&self, other: &MerkleTree) -> Vec<u32> {
        let mut differing = vec![0];
        for level in ROOT_LEVEL..MERKLE_LEVELS {
            let mut next = Vec::new();
            for (start, count) in child_ranges(level, &differing) {
                let mine = self.hashes(level, start, count);
                let theirs = other.hashes(level, start, count);
                next.extend(differing_buckets(start, &mine, &theirs));
            }
            differing = next;
        }
        differing
    }

    /// Entries in the tree (keys of the partition it covers).
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// True when the tree holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Heap and inline bytes of one tree (the same for every tree: 8.5 KiB).
    pub fn memory_bytes() -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of::<[u64; LEAVES]>()
    }

    /// Rehashes the dirty buckets and the root, if any bucket is dirty.
    fn refresh(&self) {
        let mut dirty = self.dirty.get();
        if dirty == 0 {
            return;
        }
        while dirty != 0 {
            let b = dirty.trailing_zeros() as usize;
            dirty &= dirty - 1;
            let mut children = [0u64; FANOUT];
            if let Some(leaves) = self.leaves.get(b * FANOUT..(b + 1) * FANOUT) {
                children.copy_from_slice(leaves);
            }
            if let Some(bucket) = self.buckets.get(b) {
                bucket.set(inner_hash(&children));
            }
        }
        let buckets = std::array::from_fn(|b| self.buckets[b].get());
        self.root.set(inner_hash(&buckets));
        self.dirty.set(0);
    }
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new()
    }
}

/// The root and size only: 1024 leaves would drown whatever prints a store.
impl std::fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerkleTree")
            .field("root", &format_args!("{:#018x}", self.root()))
            .field("entries", &self.entries)
            .finish()
    }
}

/// Two trees are equal when their leaves are: every inner hash follows from them.
impl PartialEq for MerkleTree {
    fn eq(&self, other: &Self) -> bool {
        self.leaves == other.leaves
    }
}

impl Eq for MerkleTree {}

/// Buckets at `level`: 1, `MERKLE_FANOUT`, `MERKLE_LEAVES`; 0 past the leaves.
pub fn level_width(level: u8) -> u32 {
    if level < MERKLE_LEVELS {
        MERKLE_FANOUT.pow(u32::from(level))
    } else {
        0
    }
}

/// The buckets of `level` that a request for `count` from `start` names, cut at the end of
/// the level (what a MERKLE_RANGE_REPLY carries).
pub fn clip(level: u8, start: u32, count: u32) -> Range<u32> {
    let width = level_width(level);
    let start = start.min(width);
    start..start.saturating_add(count).min(width)
}

/// The buckets, numbered from `start`, whose hashes differ between two replies for the
/// same range. A bucket one side lacks (a shorter reply) counts as differing.
pub fn differing_buckets(start: u32, mine: &[u64], theirs: &[u64]) -> Vec<u32> {
    let n = mine.len().max(theirs.len());
    (0..n)
        .filter(|&i| mine.get(i) != theirs.get(i))
        .filter_map(|i| start.checked_add(u32::try_from(i).ok()?))
        .collect()
}

/// The (start, count) ranges to request at `level` to see the children of the differing
/// buckets of the level above (`parents`, ascending); adjacent parents share one range.
/// At the root level, `parents` is ignored: the one range is the root.
pub fn child_ranges(level: u8, parents: &[u32]) -> Vec<(u32, u32)> {
    if level == ROOT_LEVEL {
        return vec![(0, 1)];
    }
    if level >= MERKLE_LEVELS {
        return Vec::new();
    }
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &p in parents {
        let start = p.saturating_mul(MERKLE_FANOUT);
        match ranges.last_mut() {
            Some((s, c)) if s.saturating_add(*c) == start => *c += MERKLE_FANOUT,
            _ => ranges.push((start, MERKLE_FANOUT)),
        }
    }
    ranges
}
