//! The tree's shape and hashes as anti-entropy sees them: the one indirection between the
//! exchange and the Merkle tree definition in [`crate::merkle`].
//!
//! Place in the flow: the exchange ([`super::AntiEntropy`]) only needs to know how many
//! levels the tree has, how wide each is, and which leaf a key falls in (to check that a
//! peer's entries belong to the leaves it names). The store's trees (`src/merkle/`,
//! specified in `wire-spec/merkle.md`) and the simulator's on-demand trees
//! ([`super::SparseTree`]) both hash with the functions re-exported here, so a sparse tree
//! and a store's tree over the same entries are equal at every position.

use crate::constants::{MERKLE_FANOUT, MERKLE_LEAVES, MERKLE_LEVELS};
use crate::merkle::inner_hash;

pub use crate::merkle::{entry_hash, leaf_of};

/// Children of every bucket above the leaves.
pub const FANOUT: u32 = MERKLE_FANOUT;

/// Levels of the tree: level 0 is the root, level `LEVELS - 1` the leaves.
pub const LEVELS: u8 = MERKLE_LEVELS;

/// Buckets at the leaf level.
pub const LEAVES: u32 = MERKLE_LEAVES;

/// Buckets at `level` (1 at the root).
pub const fn level_width(level: u8) -> u32 {
    let mut width = 1;
    let mut l = 0;
    while l < level {
        width *= FANOUT;
        l += 1;
    }
    width
}

/// The hash of a bucket from its `FANOUT` children's hashes ([`inner_hash`]): 0 when
/// every child is 0, so the root of an empty tree is 0.
pub fn node_hash(children: &[u64]) -> u64 {
    match <&[u64; FANOUT as usize]>::try_from(children) {
        Ok(children) => inner_hash(children),
        Err(_) => {
            debug_assert!(
                false,
                "a bucket has {FANOUT} children, not {}",
                children.len()
            );
            0
        }
    }
}

const _: () = assert!(LEVELS >= 1);
const _: () = assert!(FANOUT >= 2);
const _: () = assert!(level_width(LEVELS - 1) == LEAVES);
