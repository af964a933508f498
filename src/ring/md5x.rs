//! Many keys' positions at once: MD5 of up to 16 one-block keys side by side in SIMD lanes.
//!
//! One key's MD5 is 64 dependent steps, so a single key's position costs MD5's latency
//! (~120 ns at 2 GHz) however idle the CPU's vector units are. The server sees several
//! requests at once (a read of the socket holds up to 16), so it hashes them together: lane
//! `i` of every vector holds key `i`'s state, and one pass of the 64 steps hashes 16 keys
//! (AVX-512) or 8 (AVX2). Measured (benches/ring.rs, `key_positions_16`): 16 keys in about
//! 300 ns on AVX-512 and 540 ns on AVX2, against about 2.5 us one by one.
//!
//! Only keys of at most [`ONE_BLOCK_KEY_BYTES_MAX`] bytes take the lanes: their padded
//! message is one 64-byte block, so every lane runs the same instructions. Longer keys,
//! CPUs without the instructions, and a group left with a single key take [`key_position`]
//! (the scalar path); every path gives the same digest as it (tested lane by lane).
//!
//! The compression function is written here from RFC 1321 (section 3.4): the 64 steps'
//! message words, constants and rotations are listed once in `md5_steps!` and expanded for
//! each instruction set, which supplies only its vector add, rotate and the four boolean
//! functions.

use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
use super::position::position_of_state;
use super::position::{key_position, ONE_BLOCK_KEY_BYTES_MAX};

/// Which instructions hash a batch of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Md5Lanes {
    /// AVX-512F: 16 keys per pass; rotations and the boolean functions are one instruction
    /// each (`vprold`, `vpternlogd`).
    Avx512,
    /// AVX2: 8 keys per pass; rotations are two shifts and an or.
    Avx2,
    /// One key at a time (md-5's assembly compression for one-block keys).
    Scalar,
}

impl Md5Lanes {
    /// The widest path this CPU runs, detected once and then read from a cache.
    pub fn detected() -> Md5Lanes {
        match DETECTED.load(Ordering::Relaxed) {
            DETECTED_AVX512 => Md5Lanes::Avx512,
            DETECTED_AVX2 => Md5Lanes::Avx2,
            DETECTED_SCALAR => Md5Lanes::Scalar,
            _ => {
                let lanes = [Md5Lanes::Avx512, Md5Lanes::Avx2]
                    .into_iter()
                    .find(|lanes| lanes.is_available())
                    .unwrap_or(Md5Lanes::Scalar);
                let code = match lanes {
                    Md5Lanes::Avx512 => DETECTED_AVX512,
                    Md5Lanes::Avx2 => DETECTED_AVX2,
                    Md5Lanes::Scalar => DETECTED_SCALAR,
                };
                // Racing first calls store the same value.
                DETECTED.store(code, Ordering::Relaxed);
                lanes
            }
        }
    }

    /// Whether this CPU (and OS, for the AVX registers' state) runs this path.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Md5Lanes::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Md5Lanes::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Md5Lanes::Avx512 | Md5Lanes::Avx2 => false,
            Md5Lanes::Scalar => true,
        }
    }

    /// Keys hashed per pass.
    pub fn lanes(self) -> usize {
        match self {
            Md5Lanes::Avx512 => 16,
            Md5Lanes::Avx2 => 8,
            Md5Lanes::Scalar => 1,
        }
    }
}

/// The positions of `keys` (`out[i]` = [`key_position`]`(keys[i])`), hashed several at once
/// on the widest path this CPU has ([`Md5Lanes::detected`]).
///
/// # Panics
/// If `keys` and `out` differ in length.
pub fn key_positions(keys: &[&[u8]], out: &mut [u128]) {
    key_positions_with(Md5Lanes::detected(), keys, out);
}

/// [`key_positions`] on the path `lanes`, or on the scalar path if this CPU lacks it: for
/// tests and benches that compare the paths.
///
/// # Panics
/// If `keys` and `out` differ in length.
pub fn key_positions_with(lanes: Md5Lanes, keys: &[&[u8]], out: &mut [u128]) {
    assert_eq!(keys.len(), out.len(), "one position per key");
    match lanes {
        #[cfg(target_arch = "x86_64")]
        Md5Lanes::Avx512 if lanes.is_available() => in_groups(keys, out, avx512::digests),
        #[cfg(target_arch = "x86_64")]
        Md5Lanes::Avx2 if lanes.is_available() => in_groups(keys, out, avx2::digests),
        _ => {
            for (position, key) in out.iter_mut().zip(keys) {
                *position = key_position(key);
            }
        }
    }
}

/// `DETECTED` before the first detection.
const DETECTED_UNKNOWN: u8 = 0;
const DETECTED_AVX512: u8 = 1;
const DETECTED_AVX2: u8 = 2;
const DETECTED_SCALAR: u8 = 3;

/// The path [`Md5Lanes::detected`] chose: `is_x86_feature_detected!` is cheap but not free,
/// and a batch is only a few hundred cycles.
static DETECTED: AtomicU8 = AtomicU8::new(DETECTED_UNKNOWN);

/// One-block messages of `L` lanes, word-major: `blocks[w][lane]` is word `w` (little-endian,
/// RFC 1321 section 3.4) of that lane's padded key, so word `w` of all lanes is one vector.
type Blocks<const L: usize> = [[u32; L]; 16];

/// Hashes `keys` into `out`, one-block keys `L` at a time through `digests` (which returns
/// each lane's position), longer keys and a last lone one-block key one by one.
///
/// A last group of two or more keys still takes the lanes, the spare ones hashing an empty
/// block whose digest is ignored: a pass's compression costs about one scalar hash and
/// its setup grows with the keys in it, so two keys already gain.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn in_groups<const L: usize>(
    keys: &[&[u8]],
    out: &mut [u128],
    digests: impl Fn(&Blocks<L>) -> [u128; L],
) {
    let mut group = [0usize; L];
    let mut filled = 0;
    for (i, key) in keys.iter().enumerate() {
        if key.len() > ONE_BLOCK_KEY_BYTES_MAX {
            out[i] = key_position(key);
            continue;
        }
        group[filled] = i;
        filled += 1;
        if filled == L {
            hash_group(keys, out, &group, &digests);
            filled = 0;
        }
    }
    match group.get(..filled) {
        Some([]) | None => {}
        Some(&[i]) => out[i] = key_position(keys[i]),
        Some(rest) => hash_group(keys, out, rest, &digests),
    }
}

/// Hashes the one-block keys `keys[group[..]]`, one per lane, into `out`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hash_group<const L: usize>(
    keys: &[&[u8]],
    out: &mut [u128],
    group: &[usize],
    digests: &impl Fn(&Blocks<L>) -> [u128; L],
) {
    debug_assert!(group.len() <= L);
    let mut blocks: Blocks<L> = [[0; L]; 16];
    for (lane, &i) in group.iter().enumerate() {
        put_key(&mut blocks, lane, keys[i]);
    }
    let positions = digests(&blocks);
    for (&i, &position) in group.iter().zip(&positions) {
        out[i] = position;
    }
}

/// Writes `key` padded as MD5 pads it (RFC 1321, sections 3.1-3.2: the key, a 0x80 byte,
/// zeros, the bit length as a little-endian u64) into lane `lane` of `blocks`, whose words
/// in that lane are zero.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn put_key<const L: usize>(blocks: &mut Blocks<L>, lane: usize, key: &[u8]) {
    assert!(key.len() <= ONE_BLOCK_KEY_BYTES_MAX, "a one-block key");
    let mut words = key.chunks_exact(4);
    for (word, bytes) in blocks.iter_mut().zip(words.by_ref()) {
        let mut le = [0u8; 4];
        le.copy_from_slice(bytes);
        word[lane] = u32::from_le_bytes(le);
    }
    // The last 0-3 bytes and the 0x80 byte, assembled in a register: built in a byte array
    // and read back as a word, it stalled on store forwarding (about 15 cycles a key).
    let rest = words.remainder();
    let mut last = 0x80u32 << (8 * rest.len());
    for (i, &byte) in rest.iter().enumerate() {
        last |= u32::from(byte) << (8 * i);
    }
    blocks[key.len() / 4][lane] = last;
    // At most 55 * 8 bits: the length's high word (15) stays zero.
    blocks[14][lane] = (key.len() * 8) as u32;
}

/// MD5's initial state (RFC 1321, section 3.3).
#[cfg(target_arch = "x86_64")]
const INITIAL_STATE: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The positions of `L` lanes' final states, `state[word][lane]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn positions_of_states<const L: usize>(state: &[[u32; L]; 4]) -> [u128; L] {
    std::array::from_fn(|lane| position_of_state(state.map(|word| word[lane])))
}

/// MD5's 64 steps (RFC 1321, section 3.4), in order: `$step!(function, a, b, c, d, message
/// word, constant, rotation)` for `a = b + ((a + function(b, c, d) + word + constant) <<<
/// rotation)`. The constants are `floor(2^32 * abs(sin(i)))` for step i = 1..64.
macro_rules! md5_steps {
    ($step:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
        $step!(F, $a, $b, $c, $d, 0, 0xd76aa478, 7);
        $step!(F, $d, $a, $b, $c, 1, 0xe8c7b756, 12);
        $step!(F, $c, $d, $a, $b, 2, 0x242070db, 17);
        $step!(F, $b, $c, $d, $a, 3, 0xc1bdceee, 22);
        $step!(F, $a, $b, $c, $d, 4, 0xf57c0faf, 7);
        $step!(F, $d, $a, $b, $c, 5, 0x4787c62a, 12);
        $step!(F, $c, $d, $a, $b, 6, 0xa8304613, 17);
        $step!(F, $b, $c, $d, $a, 7, 0xfd469501, 22);
        $step!(F, $a, $b, $c, $d, 8, 0x698098d8, 7);
        $step!(F, $d, $a, $b, $c, 9, 0x8b44f7af, 12);
        $step!(F, $c, $d, $a, $b, 10, 0xffff5bb1, 17);
        $step!(F, $b, $c, $d, $a, 11, 0x895cd7be, 22);
        $step!(F, $a, $b, $c, $d, 12, 0x6b901122, 7);
        $step!(F, $d, $a, $b, $c, 13, 0xfd987193, 12);
        $step!(F, $c, $d, $a, $b, 14, 0xa679438e, 17);
        $step!(F, $b, $c, $d, $a, 15, 0x49b40821, 22);
        $step!(G, $a, $b, $c, $d, 1, 0xf61e2562, 5);
        $step!(G, $d, $a, $b, $c, 6, 0xc040b340, 9);
        $step!(G, $c, $d, $a, $b, 11, 0x265e5a51, 14);
        $step!(G, $b, $c, $d, $a, 0, 0xe9b6c7aa, 20);
        $step!(G, $a, $b, $c, $d, 5, 0xd62f105d, 5);
        $step!(G, $d, $a, $b, $c, 10, 0x02441453, 9);
        $step!(G, $c, $d, $a, $b, 15, 0xd8a1e681, 14);
        $step!(G, $b, $c, $d, $a, 4, 0xe7d3fbc8, 20);
        $step!(G, $a, $b, $c, $d, 9, 0x21e1cde6, 5);
        $step!(G, $d, $a, $b, $c, 14, 0xc33707d6, 9);
        $step!(G, $c, $d, $a, $b, 3, 0xf4d50d87, 14);
        $step!(G, $b, $c, $d, $a, 8, 0x455a14ed, 20);
        $step!(G, $a, $b, $c, $d, 13, 0xa9e3e905, 5);
        $step!(G, $d, $a, $b, $c, 2, 0xfcefa3f8, 9);
        $step!(G, $c, $d, $a, $b, 7, 0x676f02d9, 14);
        $step!(G, $b, $c, $d, $a, 12, 0x8d2a4c8a, 20);
        $step!(H, $a, $b, $c, $d, 5, 0xfffa3942, 4);
        $step!(H, $d, $a, $b, $c, 8, 0x8771f681, 11);
        $step!(H, $c, $d, $a, $b, 11, 0x6d9d6122, 16);
        $step!(H, $b, $c, $d, $a, 14, 0xfde5380c, 23);
        $step!(H, $a, $b, $c, $d, 1, 0xa4beea44, 4);
        $step!(H, $d, $a, $b, $c, 4, 0x4bdecfa9, 11);
        $step!(H, $c, $d, $a, $b, 7, 0xf6bb4b60, 16);
        $step!(H, $b, $c, $d, $a, 10, 0xbebfbc70, 23);
        $step!(H, $a, $b, $c, $d, 13, 0x289b7ec6, 4);
        $step!(H, $d, $a, $b, $c, 0, 0xeaa127fa, 11);
        $step!(H, $c, $d, $a, $b, 3, 0xd4ef3085, 16);
        $step!(H, $b, $c, $d, $a, 6, 0x04881d05, 23);
        $step!(H, $a, $b, $c, $d, 9, 0xd9d4d039, 4);
        $step!(H, $d, $a, $b, $c, 12, 0xe6db99e5, 11);
        $step!(H, $c, $d, $a, $b, 15, 0x1fa27cf8, 16);
        $step!(H, $b, $c, $d, $a, 2, 0xc4ac5665, 23);
        $step!(I, $a, $b, $c, $d, 0, 0xf4292244, 6);
        $step!(I, $d, $a, $b, $c, 7, 0x432aff97, 10);
        $step!(I, $c, $d, $a, $b, 14, 0xab9423a7, 15);
        $step!(I, $b, $c, $d, $a, 5, 0xfc93a039, 21);
        $step!(I, $a, $b, $c, $d, 12, 0x655b59c3, 6);
        $step!(I, $d, $a, $b, $c, 3, 0x8f0ccc92, 10);
        $step!(I, $c, $d, $a, $b, 10, 0xffeff47d, 15);
        $step!(I, $b, $c, $d, $a, 1, 0x85845dd1, 21);
        $step!(I, $a, $b, $c, $d, 8, 0x6fa87e4f, 6);
        $step!(I, $d, $a, $b, $c, 15, 0xfe2ce6e0, 10);
        $step!(I, $c, $d, $a, $b, 6, 0xa3014314, 15);
        $step!(I, $b, $c, $d, $a, 13, 0x4e0811a1, 21);
        $step!(I, $a, $b, $c, $d, 4, 0xf7537e82, 6);
        $step!(I, $d, $a, $b, $c, 11, 0xbd3af235, 10);
        $step!(I, $c, $d, $a, $b, 2, 0x2ad7d2bb, 15);
        $step!(I, $b, $c, $d, $a, 9, 0xeb86d391, 21);
    };
}

/// 16 lanes in 512-bit registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{positions_of_states, Blocks, Md5Lanes, INITIAL_STATE};

    /// The positions of the 16 one-block messages in `blocks`.
    ///
    /// # Panics
    /// If the CPU lacks AVX-512F (callers check first; this keeps the function safe).
    #[inline(always)]
    pub(super) fn digests(blocks: &Blocks<16>) -> [u128; 16] {
        assert!(Md5Lanes::Avx512.is_available());
        // SAFETY: the CPU runs AVX-512F (asserted just above).
        unsafe { compress(blocks) }
    }

    #[target_feature(enable = "avx512f")]
    fn compress(blocks: &Blocks<16>) -> [u128; 16] {
        let mut m = [_mm512_setzero_si512(); 16];
        for (vector, words) in m.iter_mut().zip(blocks) {
            // SAFETY: `words` is 16 u32s, the 64 bytes an unaligned 512-bit load reads.
            *vector = unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
        }
        let [a0, b0, c0, d0] = INITIAL_STATE.map(|w| _mm512_set1_epi32(w as i32));
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        // The boolean functions as `vpternlogd` truth tables over (b, c, d) = (0xf0,
        // 0xcc, 0xaa): F = (b & c) | (!b & d), G = (b & d) | (c & !d), H = b ^ c ^ d,
        // I = c ^ (b | !d).
        macro_rules! boolean {
            (F, $b:ident, $c:ident, $d:ident) => {
                _mm512_ternarylogic_epi32::<0xca>($b, $c, $d)
            };
            (G, $b:ident, $c:ident, $d:ident) => {
                _mm512_ternarylogic_epi32::<0xe4>($b, $c, $d)
            };
            (H, $b:ident, $c:ident, $d:ident) => {
                _mm512_ternarylogic_epi32::<0x96>($b, $c, $d)
            };
            (I, $b:ident, $c:ident, $d:ident) => {
                _mm512_ternarylogic_epi32::<0x39>($b, $c, $d)
            };
        }
        macro_rules! step {
            ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $w:expr, $k:expr, $s:expr) => {
                let k: u32 = $k;
                let f = boolean!($f, $b, $c, $d);
                let sum = _mm512_add_epi32(
                    _mm512_add_epi32($a, f),
                    _mm512_add_epi32(m[$w], _mm512_set1_epi32(k as i32)),
                );
                $a = _mm512_add_epi32($b, _mm512_rol_epi32::<{ $s }>(sum));
            };
        }
        md5_steps!(step, a, b, c, d);
        let mut state = [[0u32; 16]; 4];
        for (words, (v, v0)) in state.iter_mut().zip([(a, a0), (b, b0), (c, c0), (d, d0)]) {
            // SAFETY: `words` is 16 u32s, the 64 bytes an unaligned 512-bit store writes.
            unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), _mm512_add_epi32(v, v0)) };
        }
        positions_of_states(&state)
    }
}

/// 8 lanes in 256-bit registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{positions_of_states, Blocks, Md5Lanes, INITIAL_STATE};

    /// The positions of the 8 one-block messages in `blocks`.
    ///
    /// # Panics
    /// If the CPU lacks AVX2 (callers check first; this keeps the function safe).
    #[inline(always)]
    pub(super) fn digests(blocks: &Blocks<8>) -> [u128; 8] {
        assert!(Md5Lanes::Avx2.is_available());
        // SAFETY: the CPU runs AVX2 (asserted just above).
        unsafe { compress(blocks) }
    }

    #[target_feature(enable = "avx2")]
    fn compress(blocks: &Blocks<8>) -> [u128; 8] {
        let mut m = [_mm256_setzero_si256(); 16];
        for (vector, words) in m.iter_mut().zip(blocks) {
            // SAFETY: `words` is 8 u32s, the 32 bytes an unaligned 256-bit load reads.
            *vector = unsafe { _mm256_loadu_si256(words.as_ptr().cast()) };
        }
        let [a0, b0, c0, d0] = INITIAL_STATE.map(|w| _mm256_set1_epi32(w as i32));
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        let ones = _mm256_set1_epi32(-1);
        // F and G in their three-operation forms: F = d ^ (b & (c ^ d)),
        // G = c ^ (d & (b ^ c)).
        macro_rules! boolean {
            (F, $b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
            };
            (G, $b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
            };
            (H, $b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256($b, _mm256_xor_si256($c, $d))
            };
            (I, $b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256($c, _mm256_or_si256($b, _mm256_xor_si256($d, ones)))
            };
        }
        macro_rules! step {
            ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $w:expr, $k:expr, $s:expr) => {
                let k: u32 = $k;
                let f = boolean!($f, $b, $c, $d);
                let sum = _mm256_add_epi32(
                    _mm256_add_epi32($a, f),
                    _mm256_add_epi32(m[$w], _mm256_set1_epi32(k as i32)),
                );
                let rotated = _mm256_or_si256(
                    _mm256_slli_epi32::<{ $s }>(sum),
                    _mm256_srli_epi32::<{ 32 - $s }>(sum),
                );
                $a = _mm256_add_epi32($b, rotated);
            };
        }
        md5_steps!(step, a, b, c, d);
        let mut state = [[0u32; 8]; 4];
        for (words, (v, v0)) in state.iter_mut().zip([(a, a0), (b, b0), (c, c0), (d, d0)]) {
            // SAFETY: `words` is 8 u32s, the 32 bytes an unaligned 256-bit store writes.
            unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), _mm256_add_epi32(v, v0)) };
        }
        positions_of_states(&state)
    }
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};
    use proptest::prelude::*;

    use super::*;

    const ALL: [Md5Lanes; 3] = [Md5Lanes::Avx512, Md5Lanes::Avx2, Md5Lanes::Scalar];

    /// Checks every path this CPU runs against `key_position` and md-5's general API.
    fn check(keys: &[Vec<u8>]) {
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let want: Vec<u128> = keys
            .iter()
            .map(|key| u128::from_be_bytes(Md5::digest(key).into()))
            .collect();
        for lanes in ALL.into_iter().filter(|lanes| lanes.is_available()) {
            let mut got = vec![0; keys.len()];
            key_positions_with(lanes, &keys, &mut got);
            assert_eq!(got, want, "{lanes:?}, key lengths {:?}", lengths(&keys));
        }
        let mut got = vec![0; keys.len()];
        key_positions(&keys, &mut got);
        assert_eq!(got, want, "detected path");
        for (key, &want) in keys.iter().zip(&want) {
            assert_eq!(key_position(key), want);
        }
    }

    fn lengths(keys: &[&[u8]]) -> Vec<usize> {
        keys.iter().map(|key| key.len()).collect()
    }

    #[test]
    fn paths_report_their_width_and_the_detected_one_runs() {
        let detected = Md5Lanes::detected();
        assert!(detected.is_available());
        assert_eq!(Md5Lanes::detected(), detected, "cached");
        assert!(Md5Lanes::Scalar.is_available());
        assert_eq!(ALL.map(Md5Lanes::lanes), [16, 8, 1], "lanes per pass");
        // The widest available path is chosen.
        let widest = ALL.into_iter().find(|lanes| lanes.is_available());
        assert_eq!(Some(detected), widest);
    }

    #[test]
    fn rfc_1321_vectors_in_every_lane() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        // 40 keys: every vector visits every lane of a 16- and an 8-lane pass, and the
        // batch ends in a partial group.
        let keys: Vec<&[u8]> = (0..40).map(|i| vectors[i % vectors.len()].0).collect();
        for lanes in ALL.into_iter().filter(|lanes| lanes.is_available()) {
            let mut got = vec![0; keys.len()];
            key_positions_with(lanes, &keys, &mut got);
            for (i, position) in got.into_iter().enumerate() {
                let (key, hex) = vectors[i % vectors.len()];
                assert_eq!(
                    position,
                    u128::from_str_radix(hex, 16).unwrap(),
                    "{lanes:?}, key {:?} in slot {i}",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }

    #[test]
    fn every_one_block_length_in_every_lane() {
        // Lengths 0..=56 rotate through the lanes, crossing the one-block limit.
        for shift in 0..16 {
            let keys: Vec<Vec<u8>> = (0..=56usize)
                .map(|i| {
                    let len = (i + shift) % 57;
                    (0..len)
                        .map(|j| (j * 131 + len * 7 + shift) as u8)
                        .collect()
                })
                .collect();
            check(&keys);
        }
    }

    #[test]
    fn batches_of_every_size_up_to_two_passes() {
        for n in 0..=33 {
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("user:{i:08}").into_bytes())
                .collect();
            check(&keys);
        }
    }

    #[test]
    #[should_panic(expected = "one position per key")]
    fn lengths_must_match() {
        key_positions(&[b"a".as_slice()], &mut [0; 2]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random batches mixing one-block and longer keys hash as one key at a time does.
        #[test]
        fn batches_hash_as_single_keys(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..=80), 0..=40)
        ) {
            check(&keys);
        }
    }
}
