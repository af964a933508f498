//! The request stream: which key each operation touches and whether it reads or writes.
//! Deterministic given a seed, and allocation-free per operation: keys are formatted into a
//! fixed array and every write sends the same value buffer.

use super::config::Distribution;

/// Bytes of every key: `key:` and 12 decimal digits, so all keys have one length and sort by
/// number.
pub const KEY_BYTES: usize = 16;

/// Keys beyond this cannot be written in 12 digits.
pub const KEYS_MAX: u64 = 999_999_999_999;

/// One operation of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a key.
    Get(u64),
    /// Write the value buffer under a key.
    Put(u64),
}

/// Draws operations for one thread: a key from the distribution, then a read or a write.
#[derive(Clone, Debug)]
pub struct Workload {
    rng: Rng,
    keys: KeyChooser,
    /// `next_u64() < read_threshold` means a read; `u64::MAX` plus a check of ratio 1.0
    /// keeps "all reads" exact.
    read_threshold: u64,
    all_reads: bool,
}

impl Workload {
    /// A stream over `0..keys` with the given share of reads.
    pub fn new(seed: u64, keys: u64, distribution: Distribution, read_ratio: f64) -> Self {
        let read_ratio = read_ratio.clamp(0.0, 1.0);
        Self {
            rng: Rng::new(seed),
            keys: KeyChooser::new(keys, distribution),
            // Saturating float-to-int conversion: 1.0 maps to u64::MAX.
            read_threshold: (read_ratio * u64::MAX as f64) as u64,
            all_reads: read_ratio >= 1.0,
        }
    }

    /// The next operation.
    #[inline]
    pub fn next_op(&mut self) -> Op {
        let key = self.keys.sample(&mut self.rng);
        if self.all_reads || self.rng.next_u64() < self.read_threshold {
            Op::Get(key)
        } else {
            Op::Put(key)
        }
    }
}

/// Draws key numbers from `0..n` according to a distribution.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform {
        /// Number of keys.
        n: u64,
    },
    /// Zipfian ranks: key `r` is the `r`-th most popular.
    Zipf(Zipf),
}

impl KeyChooser {
    /// A chooser over `0..n` (`n >= 1`).
    pub fn new(n: u64, distribution: Distribution) -> Self {
        let n = n.max(1);
        match distribution {
            Distribution::Uniform => Self::Uniform { n },
            Distribution::Zipf { theta } => Self::Zipf(Zipf::new(n, theta)),
        }
    }

    /// One key number.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            Self::Uniform { n } => rng.below(*n),
            Self::Zipf(z) => z.sample(rng),
        }
    }
}

/// Zipfian sampler after Gray et al., "Quickly generating billion-record synthetic
/// databases" (SIGMOD 1994): O(n) setup to sum the harmonic series once, then O(1) per
/// sample with one `powf`, exact for ranks 0 and 1 and a close approximation beyond.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
    /// `1 + 0.5^theta`: the cumulative mass (times `zeta_n`) of ranks 0 and 1.
    two_ranks: f64,
}

impl Zipf {
    /// A sampler over ranks `0..n` with skew `theta` in `(0, 1)`.
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let eta = if n <= 2 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Self {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
            two_ranks: 1.0 + 0.5f64.powf(theta),
        }
    }

    /// Probability of rank `r` under the exact distribution, for tests and reports.
    pub fn probability(&self, r: u64) -> f64 {
        1.0 / ((r + 1) as f64).powf(self.theta) / self.zeta_n
    }

    /// One rank in `0..n`.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.two_ranks || self.n <= 2 {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }
}

/// The generalised harmonic number `sum_{i=1..n} 1/i^theta`.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// A small, fast pseudo-random generator (wyrand): one multiply per draw, 2^64 period,
/// good enough for choosing keys, and reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from a seed; nearby seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        Self {
            state: splitmix64(seed),
        }
    }

    /// 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` by multiply-and-shift (bias below 2^-32 for the key counts used
    /// here, and no division).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Mixes a seed so that seeds 0, 1, 2... start far apart.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes key number `k` as `key:` and 12 zero-padded digits (keys above [`KEYS_MAX`] wrap
/// modulo 10^12; the configuration refuses them).
pub fn format_key(k: u64, out: &mut [u8; KEY_BYTES]) {
    out[..4].copy_from_slice(b"key:");
    let mut k = k;
    for slot in out[4..].iter_mut().rev() {
        *slot = b'0' + (k % 10) as u8;
        k /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_fixed_width() {
        let mut buf = [0u8; KEY_BYTES];
        format_key(42, &mut buf);
        assert_eq!(&buf, b"key:000000000042");
        format_key(KEYS_MAX, &mut buf);
        assert_eq!(&buf, b"key:999999999999");
    }

    #[test]
    fn uniform_covers_range_evenly() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let k = rng.below(10);
            counts[k as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    /// The sampler must follow the Zipf law it claims: rank 0 near its exact probability,
    /// rank 0 about 2^theta times rank 1, the head heavier than the tail, nothing out of
    /// range.
    #[test]
    fn zipf_has_zipf_shape() {
        let n = 1000;
        let theta = 0.99;
        let z = Zipf::new(n, theta);
        let mut rng = Rng::new(1);
        let samples = 400_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..samples {
            let r = z.sample(&mut rng);
            assert!(r < n);
            counts[r as usize] += 1;
        }
        let freq = |r: usize| counts[r] as f64 / samples as f64;
        let p0 = z.probability(0);
        assert!(
            (freq(0) - p0).abs() < 0.05 * p0,
            "rank 0: {} vs {p0}",
            freq(0)
        );
        let ratio = freq(0) / freq(1);
        assert!((ratio - 2f64.powf(theta)).abs() < 0.1, "ratio {ratio}");
        // Top 1% of keys take far more than 1% of the accesses (about 40% for theta 0.99).
        let head: u64 = counts[..10].iter().sum();
        let head_share = head as f64 / samples as f64;
        let expect: f64 = (0..10).map(|r| z.probability(r)).sum();
        assert!(
            (head_share - expect).abs() < 0.03,
            "{head_share} vs {expect}"
        );
        // The tail decays: the second hundred ranks get less than the first hundred.
        let first: u64 = counts[..100].iter().sum();
        let second: u64 = counts[100..200].iter().sum();
        assert!(first > 3 * second);
        // And is still reached.
        assert!(counts[500..].iter().sum::<u64>() > 0);
    }

    #[test]
    fn zipf_handles_tiny_ranges() {
        let mut rng = Rng::new(3);
        for n in 1..4 {
            let z = Zipf::new(n, 0.5);
            for _ in 0..1000 {
                assert!(z.sample(&mut rng) < n);
            }
        }
    }

    #[test]
    fn read_ratio_is_respected() {
        let mut w = Workload::new(9, 100, Distribution::Uniform, 0.9);
        let reads = (0..100_000)
            .filter(|_| matches!(w.next_op(), Op::Get(_)))
            .count();
        assert!((89_000..91_000).contains(&reads), "{reads}");
        let mut all = Workload::new(9, 100, Distribution::Uniform, 1.0);
        assert!((0..10_000).all(|_| matches!(all.next_op(), Op::Get(_))));
        let mut none = Workload::new(9, 100, Distribution::Uniform, 0.0);
        assert!((0..10_000).all(|_| matches!(none.next_op(), Op::Put(_))));
    }
}
