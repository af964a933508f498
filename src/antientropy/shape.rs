//! The tree's shape and hashes as anti-entropy sees them: the one indirection between the
//! exchange and whoever defines the Merkle tree.
//!
//! Place in the flow: the exchange ([`super::AntiEntropy`]) only needs to know how many
//! levels the tree has, how wide each is, and which leaf a key falls in (to check that a
//! peer's entries belong to the leaves it names). The real tree (`src/merkle/`, kept by the
//! store) defines `leaf_of` and `entry_hash` and writes them down in wire-spec; until it is
//! merged, this file holds a simple definition with the same shape (32-way, 3 levels) that
//! the simulator's on-demand trees ([`super::SparseTree`]) use. Switching to `src/merkle/`
//! means re-exporting its functions here, nothing else changes.

/// Children of every bucket above the leaves (`MERKLE_FANOUT` of ROUND2).
pub const FANOUT: u32 = 32;

/// Levels of the tree: level 0 is the root, level `LEVELS - 1` the leaves.
pub const LEVELS: u8 = 3;

/// Buckets at the leaf level.
pub const LEAVES: u32 = level_width(LEVELS - 1);

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

/// The leaf bucket a key belongs to.
pub fn leaf_of(key: &[u8]) -> u32 {
    // The top bits of a mixed 64-bit hash: uniform, whatever the keys look like.
    let h = mix(fnv1a(FNV_OFFSET, key));
    let leaves = u64::from(LEAVES);
    u32::try_from(h % leaves).unwrap_or(0)
}

/// The hash of one (key, encoded state) entry; a leaf's hash is the XOR of its entries',
/// so it does not depend on the order keys were written in.
pub fn entry_hash(key: &[u8], state: &[u8]) -> u64 {
    // The key's length goes in first so ("ab", "c") and ("a", "bc") hash apart.
    let h = fnv1a(FNV_OFFSET, &(key.len() as u64).to_le_bytes());
    let h = fnv1a(h, key);
    mix(fnv1a(h, state)).max(1)
}

/// The hash of a bucket from its children's hashes: 0 when every child is 0 (an empty
/// subtree), so the root of an empty tree is 0.
pub fn node_hash(children: &[u64]) -> u64 {
    if children.iter().all(|&h| h == 0) {
        return 0;
    }
    let mut h = FNV_OFFSET;
    for child in children {
        h = mix(h ^ child).wrapping_add(FNV_PRIME);
    }
    h.max(1)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// SplitMix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const _: () = assert!(LEVELS >= 1);
const _: () = assert!(FANOUT >= 2);
