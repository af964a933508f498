//! Key positions: where a key sits on the 128-bit ring, and which of the Q equal partitions
//! that position falls in. The first step of every lookup; pure arithmetic on an MD5 digest.

use md5::{Digest, Md5};

use super::PartitionId;

/// A key's position on the ring: its MD5 digest read as a big-endian 128-bit number.
///
/// MD5 is Dynamo's choice: not for security (keys are chosen by clients, and a client who
/// wants a hot partition can have one anyway) but because it is fast, spreads any key set
/// evenly and is identical on every platform and in every client language.
pub fn key_position(key: &[u8]) -> u128 {
    u128::from_be_bytes(Md5::digest(key).into())
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
