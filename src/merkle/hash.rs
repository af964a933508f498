//! The hash functions every node must agree on byte for byte: XXH64, the leaf of a key,
//! the hash of an entry and the hash of an inner bucket (all specified in
//! `wire-spec/merkle.md`).
//!
//! XXH64 is written out here rather than taken from a crate so that its definition cannot
//! change under us with a dependency update, and it is checked against vectors of the
//! reference implementation. It is fast (several bytes per cycle on long inputs, a few
//! nanoseconds on keys) and its output is the same on every platform: it reads its input
//! as little-endian words. It is not a cryptographic hash; anti-entropy compares replicas
//! of one cluster, which trust each other, so only accidental collisions matter (2^-64 per
//! comparison).

use crate::constants::{MERKLE_FANOUT, MERKLE_LEAVES};

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// Children per inner bucket, as an array length.
pub(super) const FANOUT: usize = MERKLE_FANOUT as usize;

/// Bits of a key hash that pick its leaf (10 for 1024 leaves).
const LEAF_BITS: u32 = MERKLE_LEAVES.trailing_zeros();

/// The XXH64 hash of `input` with `seed` (Yann Collet's xxHash, 64-bit variant).
pub fn xxh64(input: &[u8], seed: u64) -> u64 {
    let mut stripes = input.chunks_exact(32);
    let mut acc = if input.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        for stripe in &mut stripes {
            for (lane, v) in stripe.chunks_exact(8).zip(v.iter_mut()) {
                *v = round(*v, le64(lane));
            }
        }
        let mut acc = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for v in v {
            acc = (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4);
        }
        acc
    } else {
        seed.wrapping_add(P5)
    };
    acc = acc.wrapping_add(input.len() as u64);
    // Under 32 bytes no stripe was taken and the remainder is the whole input.
    let mut words = stripes.remainder().chunks_exact(8);
    for word in &mut words {
        acc ^= round(0, le64(word));
        acc = acc.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    let mut tail = words.remainder();
    if tail.len() >= 4 {
        let (word, rest) = tail.split_at(4);
        acc ^= u64::from(le32(word)).wrapping_mul(P1);
        acc = acc.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        tail = rest;
    }
    for &byte in tail {
        acc ^= u64::from(byte).wrapping_mul(P5);
        acc = acc.rotate_left(11).wrapping_mul(P1);
    }
    acc ^= acc >> 33;
    acc = acc.wrapping_mul(P2);
    acc ^= acc >> 29;
    acc = acc.wrapping_mul(P3);
    acc ^ (acc >> 32)
}

/// A key's hash, computed once and used for both its leaf and its entry hashes (a write
/// needs the leaf, the old entry hash and the new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash(pub u64);

impl KeyHash {
    /// `XXH64(key, seed 0)`.
    pub fn of(key: &[u8]) -> Self {
        KeyHash(xxh64(key, 0))
    }

    /// The key's leaf: the top `log2(MERKLE_LEAVES)` bits of its hash.
    pub fn leaf(self) -> u32 {
        // The shift leaves at most LEAF_BITS (< 32) bits, so the value fits.
        (self.0 >> (64 - LEAF_BITS)) as u32
    }

    /// The hash of this key holding the encoded causal state `state`:
    /// `XXH64(state, seed = key hash)`.
    pub fn entry_hash(self, state: &[u8]) -> u64 {
        xxh64(state, self.0)
    }
}

/// The leaf bucket (`0..MERKLE_LEAVES`) that holds `key` in its partition's tree.
pub fn leaf_of(key: &[u8]) -> u32 {
    KeyHash::of(key).leaf()
}

/// The hash a (key, encoded causal state) entry adds to its leaf's XOR accumulator.
///
/// `state` must be the canonical encoding (`wire-spec/causal.md`: equal states encode to
/// equal bytes), which is what replicas store and send, so two replicas holding the same
/// state for a key produce the same hash.
pub fn entry_hash(key: &[u8], state: &[u8]) -> u64 {
    KeyHash::of(key).entry_hash(state)
}

/// The hash of an inner bucket from its `MERKLE_FANOUT` children's hashes: 0 when every
/// child is 0 (an empty subtree), else XXH64 of the children as little-endian u64s, seed 0.
pub fn inner_hash(children: &[u64; FANOUT]) -> u64 {
    if children.iter().all(|&h| h == 0) {
        return 0;
    }
    let mut bytes = [0u8; FANOUT * 8];
    for (out, h) in bytes.chunks_exact_mut(8).zip(children) {
        out.copy_from_slice(&h.to_le_bytes());
    }
    xxh64(&bytes, 0)
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

/// A little-endian u64 from exactly 8 bytes (chunks_exact guarantees the length).
fn le64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

/// A little-endian u32 from exactly 4 bytes.
fn le32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(bytes);
    u32::from_le_bytes(b)
}
