//! Merkle trees of partition replicas, for anti-entropy: pure, no I/O.
//!
//! Place in the flow: the store ([`crate::store::Store`]) keeps one [`MerkleTree`] per
//! partition it holds keys of and updates it on every write; anti-entropy compares two
//! replicas' trees over `MERKLE_RANGE` from the root down, descending only where hashes
//! differ, then swaps the keys of the differing leaves with `MERKLE_KEYS` and merges them
//! causally. This module holds the tree, the hash functions every node must agree on, and
//! the pure steps of a walk ([`child_ranges`], [`differing_buckets`]). The byte-level
//! specification, with a worked example, is `wire-spec/merkle.md`.
//!
//! # Shape
//!
//! `MERKLE_LEVELS` = 3 levels of fan-out `MERKLE_FANOUT` = 32 (`src/constants.rs`): level 0
//! is the root, level 1 has 32 buckets, level 2 has 1024 leaves; bucket `b` of level `l`
//! has children `b*32 .. b*32+31` at level `l+1`.
//!
//! - A key lives in leaf [`leaf_of`]`(key)`: the top 10 bits of `XXH64(key, 0)`.
//! - A leaf is the XOR of [`entry_hash`]`(key, state)` over its keys:
//!   `XXH64(state, seed = XXH64(key, 0))`. XOR makes a leaf independent of write order and
//!   lets a write swap one entry hash for another in O(1) (Riak's Tictac trees).
//! - An inner bucket's hash is [`inner_hash`] of its 32 children: 0 if they are all 0,
//!   else XXH64 of the 32 hashes as little-endian u64s. So the root of an empty tree is 0,
//!   and two trees over the same (key, state) set are equal at every position.
//!
//! # Canonical states
//!
//! Entry hashes are over the encoded causal state. That encoding is canonical
//! (`wire-spec/causal.md`, [`crate::causal::CausalState`]: entries by increasing actor,
//! dots implied by position, no optional fields), so two replicas holding the same state
//! hold the same bytes and agree on its hash; the tests check it on states reached by
//! merges in different orders. Tombstones are entries like values (their state differs);
//! a purged key leaves the tree. Hints are never in trees.
//!
//! # What it deliberately does not do
//!
//! No I/O and no knowledge of the store's records: callers pass entry hashes in. Trees are
//! not persisted: the store rebuilds them from its index at open.

mod hash;
#[cfg(test)]
mod tests;
mod tree;

pub use hash::{entry_hash, inner_hash, leaf_of, xxh64, KeyHash};
pub use tree::{
    child_ranges, clip, differing_buckets, level_width, MerkleTree, BUCKET_LEVEL, LEAF_LEVEL,
    ROOT_LEVEL,
};
