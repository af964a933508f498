//! What anti-entropy reads of a shard's trees ([`MerkleView`]), and a tree computed on
//! demand from a partition's entries ([`SparseTree`]) for stores that keep none (the
//! simulator's [`MemStore`]).
//!
//! Place in the flow: the exchange asks the view for bucket hashes and leaf entries, both
//! when it compares its own tree with a peer's reply and when it answers a peer. The real
//! store keeps its trees up to date on every write (`src/merkle/`); the simulator needs
//! consistency, not speed, so it rebuilds the few non-empty buckets of a partition on every
//! call.

use std::collections::BTreeMap;

use super::shape::{entry_hash, leaf_of, level_width, node_hash, FANOUT, LEVELS};
use crate::coordinator::MemStore;

/// What one shard offers anti-entropy about the partitions it replicates.
pub trait MerkleView {
    /// Hashes of `count` buckets of `level` from `start` (fewer if the level ends).
    fn merkle_hashes(&self, partition: u32, level: u8, start: u32, count: u32) -> Vec<u64>;
    /// Every (key, encoded state) in the given leaf buckets.
    fn bucket_entries(&self, partition: u32, leaves: &[u32]) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// The log position of the store's latest write (a number that grows with every
    /// write): anti-entropy notes it when it compares roots, and a tombstone purge may
    /// only take tombstones stored at or before it (see `purge.rs`). The default, 0,
    /// grants no purge at all: a view whose store has no log positions never purges.
    fn write_mark(&self) -> u64 {
        0
    }
}

/// A partition's Merkle tree holding only its non-zero buckets: with few keys most
/// buckets are empty, and an empty bucket hashes to 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseTree {
    /// Per level, the non-zero bucket hashes by bucket number.
    levels: Vec<BTreeMap<u32, u64>>,
}

impl SparseTree {
    /// The tree over some (key, encoded state) entries, in any order.
    pub fn build<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut leaves: BTreeMap<u32, u64> = BTreeMap::new();
        for (key, state) in entries {
            *leaves.entry(leaf_of(key)).or_default() ^= entry_hash(key, state);
        }
        leaves.retain(|_, h| *h != 0);
        let mut levels = vec![leaves];
        for _ in 1..LEVELS {
            let Some(below) = levels.last() else { break };
            let mut level: BTreeMap<u32, u64> = BTreeMap::new();
            let parents: Vec<u32> = below.keys().map(|b| b / FANOUT).collect();
            for parent in parents {
                if level.contains_key(&parent) {
                    continue;
                }
                let first = parent * FANOUT;
                let children: Vec<u64> = (first..first + FANOUT)
                    .map(|b| below.get(&b).copied().unwrap_or(0))
                    .collect();
                let h = node_hash(&children);
                if h != 0 {
                    level.insert(parent, h);
                }
            }
            levels.push(level);
        }
        levels.reverse();
        SparseTree { levels }
    }

    /// The root hash (0 for an empty tree).
    pub fn root(&self) -> u64 {
        self.hash(0, 0)
    }

    /// The hash of one bucket (0 outside the tree).
    pub fn hash(&self, level: u8, bucket: u32) -> u64 {
        self.levels
            .get(usize::from(level))
            .and_then(|l| l.get(&bucket))
            .copied()
            .unwrap_or(0)
    }

    /// [`MerkleView::merkle_hashes`] over this tree.
    pub fn hashes(&self, level: u8, start: u32, count: u32) -> Vec<u64> {
        if level >= LEVELS {
            return Vec::new();
        }
        let end = start.saturating_add(count).min(level_width(level));
        (start.min(end)..end).map(|b| self.hash(level, b)).collect()
    }
}

/// The simulator's store: trees computed on demand from its map.
impl MerkleView for MemStore {
    fn merkle_hashes(&self, partition: u32, level: u8, start: u32, count: u32) -> Vec<u64> {
        let entries = encoded_entries(self, partition, |_| true);
        let tree = SparseTree::build(entries.iter().map(|(k, s)| (k.as_slice(), s.as_slice())));
        tree.hashes(level, start, count)
    }

    fn bucket_entries(&self, partition: u32, leaves: &[u32]) -> Vec<(Vec<u8>, Vec<u8>)> {
        encoded_entries(self, partition, |key| leaves.contains(&leaf_of(key)))
    }

    fn write_mark(&self) -> u64 {
        MemStore::write_mark(self)
    }
}

/// The partition's (key, encoded state) entries whose key passes `wanted`, in key order.
fn encoded_entries(
    store: &MemStore,
    partition: u32,
    wanted: impl Fn(&[u8]) -> bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .states()
        .filter(|((p, key), _)| *p == partition && wanted(key))
        .map(|((_, key), state)| (key.clone(), state.to_bytes()))
        .collect()
}
