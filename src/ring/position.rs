//! Key positions: where a key sits on the 128-bit ring, and which of the Q equal partitions
//! that position falls in. The first step of every lookup; pure arithmetic on an MD5 digest.

use md5::{Digest, Md5};

use super::PartitionId;

/// A key's position on the ring: its MD5 digest read as a big-endian 128-bit number.
///
/// MD5 is Dynamo's choice: not for security (keys are chosen by clients, and a client who
/// wants a hot partition can have one anyway) but because it is fast, spreads any key set
/// evenly and is identical on every platform and in every client language.
///
/// A key of up to [`ONE_BLOCK_KEY_BYTES_MAX`] bytes (almost every key) fits MD5's padding in
/// a single 64-byte block: on x86 that block is built here and run through the compression
/// function directly (md-5's assembly one), which saves about a quarter of the time the
/// general hashing API spends on a short key. Longer keys, and other platforms, take
/// `Md5::digest`; both give the same digest (tested).
pub fn key_position(key: &[u8]) -> u128 {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if key.len() <= ONE_BLOCK_KEY_BYTES_MAX {
        return one_block_position(key);
    }
    u128::from_be_bytes(Md5::digest(key).into())
}

/// Longest message whose MD5 is one block: 64 bytes less the 0x80 byte and the 8-byte bit
/// length that padding appends.
pub const ONE_BLOCK_KEY_BYTES_MAX: usize = 55;

/// MD5's initial state (RFC 1321, section 3.3), as little-endian words.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const MD5_INITIAL_STATE: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// MD5 of a key of at most [`ONE_BLOCK_KEY_BYTES_MAX`] bytes, as a position: the key, the
/// 0x80 byte, zeros, and the bit length as a little-endian u64 fill one block (RFC 1321,
/// section 3.1-3.2); the digest is the final state's words in little-endian order.
///
/// Written for the lookup's budget (about 40 ns beside MD5's own ~110): the block is zeroed
/// once and filled in place by fixed-size copies (no `memcpy` call for a length known
/// only at run time), handed to the compression function without a copy, and the digest's
/// big-endian reading is four byte swaps.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn one_block_position(key: &[u8]) -> u128 {
    let mut block = [0u8; 64];
    // Callers pass at most ONE_BLOCK_KEY_BYTES_MAX bytes; the `min` tells the compiler too,
    // so the indexing below needs no bounds checks.
    let len = key.len().min(ONE_BLOCK_KEY_BYTES_MAX);
    let key = &key[..len];
    copy_short(&mut block, key);
    block[len] = 0x80;
    block[56..].copy_from_slice(&((len as u64) * 8).to_le_bytes());
    let mut state = MD5_INITIAL_STATE;
    md5_asm::compress(&mut state, std::slice::from_ref(&block));
    position_of_state(state)
}

/// The position of a digest whose final state words are `[a, b, c, d]`: the digest is their
/// little-endian bytes in that order, read here as one big-endian number (four byte swaps).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
pub(super) fn position_of_state([a, b, c, d]: [u32; 4]) -> u128 {
    (u128::from(a.swap_bytes()) << 96)
        | (u128::from(b.swap_bytes()) << 64)
        | (u128::from(c.swap_bytes()) << 32)
        | u128::from(d.swap_bytes())
}

/// Copies `src` (at most [`ONE_BLOCK_KEY_BYTES_MAX`] bytes) to the front of `block` with
/// at most two fixed-size, possibly overlapping copies, as a `memcpy` would inside, but
/// inlined.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn copy_short(block: &mut [u8; 64], src: &[u8]) {
    fn two<const W: usize>(block: &mut [u8; 64], src: &[u8]) {
        let n = src.len();
        block[..W].copy_from_slice(&src[..W]);
        block[n - W..n].copy_from_slice(&src[n - W..]);
    }
    match src.len() {
        32.. => two::<32>(block, src),
        16..=31 => two::<16>(block, src),
        8..=15 => two::<8>(block, src),
        4..=7 => two::<4>(block, src),
        _ => {
            for (to, &from) in block.iter_mut().zip(src) {
                *to = from;
            }
        }
    }
}

/// The partition holding `position` on a ring of `q` partitions: its top log2(q) bits.
///
/// `q` must be a power of two (a [`Ring`](super::Ring) guarantees it); partition `p` covers
/// the positions from [`partition_first_position`]`(p)` up to the next partition's first.
pub fn partition_of_position(position: u128, q: u32) -> PartitionId {
    debug_assert!(q.is_power_of_two());
    let bits = q.trailing_zeros();
    // A ring of one partition has no bits to take (and a shift by 128 would overflow).
    let top = position.checked_shr(128 - bits).unwrap_or(0);
    // At most 16 bits survive the shift (q <= PARTITIONS_MAX), so this cannot truncate.
    PartitionId(top as u32)
}

/// The first (lowest) position of partition `p` on a ring of `q` partitions.
pub fn partition_first_position(p: PartitionId, q: u32) -> u128 {
    debug_assert!(q.is_power_of_two() && p.0 < q);
    let bits = q.trailing_zeros();
    u128::from(p.0).checked_shl(128 - bits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_md5(input: &[u8], hex: &str) {
        let want = u128::from_str_radix(hex, 16).unwrap();
        assert_eq!(
            key_position(input),
            want,
            "MD5({:?})",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn positions_are_rfc_1321_test_vectors() {
        check_md5(b"", "d41d8cd98f00b204e9800998ecf8427e");
        check_md5(b"a", "0cc175b9c0f1b6a831c399e269772661");
        check_md5(b"abc", "900150983cd24fb0d6963f7d28e17f72");
        check_md5(b"message digest", "f96b697d7cb7938d525a2f31aaf161d0");
        check_md5(
            b"abcdefghijklmnopqrstuvwxyz",
            "c3fcd3d76192e4007dfb496cca67e13b",
        );
        check_md5(
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        );
    }

    #[test]
    fn one_block_keys_hash_as_the_general_api_does() {
        // Every length around the one-block limit, with bytes that vary by position.
        for len in 0..=130usize {
            let key: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            assert_eq!(
                key_position(&key),
                u128::from_be_bytes(Md5::digest(&key).into()),
                "length {len}"
            );
        }
    }

    #[test]
    fn partition_is_the_top_bits() {
        let check = |position: u128, q: u32, want: u32| {
            assert_eq!(
                partition_of_position(position, q),
                PartitionId(want),
                "q = {q}"
            );
        };
        // d41d8cd9...: the top 10 bits of 0xd41d are 1101 0100 00 = 848.
        check(key_position(b""), 1024, 848);
        // 90015098...: the top 10 bits of 0x9001 are 1001 0000 00 = 576; the top bit is 1.
        check(key_position(b"abc"), 1024, 576);
        check(key_position(b"abc"), 2, 1);
        check(key_position(b"abc"), 1, 0);
        check(u128::MAX, 1 << 16, (1 << 16) - 1);
    }

    #[test]
    fn partition_boundaries_are_equal_ranges() {
        for q in [1u32, 2, 8, 1024, 1 << 16] {
            // Every partition spans 2^(128 - log2 q) positions.
            let span_minus_one = u128::MAX >> q.trailing_zeros();
            for p in [0, q / 3, q / 2, q - 1] {
                let first = partition_first_position(PartitionId(p), q);
                assert_eq!(first, u128::from(p) * (span_minus_one / 2 + 1) * 2);
                assert_eq!(partition_of_position(first, q), PartitionId(p));
                let last = first + span_minus_one;
                assert_eq!(partition_of_position(last, q), PartitionId(p));
                if p > 0 {
                    assert_eq!(partition_of_position(first - 1, q), PartitionId(p - 1));
                }
            }
        }
        assert_eq!(
            partition_first_position(PartitionId(512), 1024),
            1u128 << 127
        );
    }
}
