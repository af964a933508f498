//! How fast a shard may run exchanges: a start interval and a key budget, both scaled by a
//! share that halves when foreground latency is high and grows back slowly (AIMD).
//!
//! Place in the flow: [`super::AntiEntropy`] asks [`RateLimiter::may_start`] before it
//! starts an exchange and [`RateLimiter::keys_ok`] before it asks for leaf entries, charges
//! every entry received or pushed, and passes the runtime's latency reports to
//! [`RateLimiter::set_pressure`]. Repair is never urgent (reads and hints cover the short
//! term), so it gives way to client traffic quickly and comes back cautiously, as TCP does.

use super::ExchangeConfig;

/// The full share: rates are scaled by `share / SHARE_FULL`.
pub const SHARE_FULL: u32 = 1024;

/// The exchange start and key budgets of one shard.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    interval_ms: u64,
    keys_per_sec: u64,
    pressure_latency_us: u64,
    share_min: u32,
    share_increase: u32,
    /// Current fraction of the configured rates, out of [`SHARE_FULL`].
    share: u32,
    /// When the next exchange may start.
    next_start_at: u64,
    /// Key budget in thousandths of a key (so short intervals still add up); negative
    /// after a reply larger than what was left: the debt is paid before anything else.
    key_millis: i64,
    last_refill: u64,
}

impl RateLimiter {
    /// A limiter at full share with a full key budget.
    pub fn new(config: &ExchangeConfig) -> Self {
        RateLimiter {
            interval_ms: config.exchange_interval_ms.max(1),
            keys_per_sec: config.keys_per_sec.max(1),
            pressure_latency_us: config.pressure_latency_us,
            share_min: config.rate_share_min.clamp(1, SHARE_FULL),
            share_increase: config.rate_share_increase.max(1),
            share: SHARE_FULL,
            next_start_at: 0,
            key_millis: burst_millis(config.keys_per_sec.max(1), SHARE_FULL),
            last_refill: 0,
        }
    }

    /// The current share of the configured rates, out of [`SHARE_FULL`].
    pub fn share(&self) -> u32 {
        self.share
    }

    /// The key budget left (negative: in debt), in keys.
    pub fn keys_left(&self) -> i64 {
        self.key_millis / 1000
    }

    /// Adds the key budget earned since the last call.
    pub fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last_refill);
        self.last_refill = self.last_refill.max(now);
        // keys/s * ms = thousandths of keys.
        let earned = self
            .keys_per_sec
            .saturating_mul(elapsed)
            .saturating_mul(u64::from(self.share))
            / u64::from(SHARE_FULL);
        let earned = i64::try_from(earned).unwrap_or(i64::MAX);
        let cap = burst_millis(self.keys_per_sec, self.share);
        self.key_millis = self.key_millis.saturating_add(earned).min(cap);
    }

    /// Whether an exchange may start at `now`.
    pub fn may_start(&self, now: u64) -> bool {
        now >= self.next_start_at && self.keys_ok()
    }

    /// An exchange started at `now`: the next one waits a full interval at this share.
    pub fn started(&mut self, now: u64) {
        let wait = self.interval_ms.saturating_mul(u64::from(SHARE_FULL)) / u64::from(self.share);
        self.next_start_at = now.saturating_add(wait);
    }

    /// Whether the key budget allows asking for more entries.
    pub fn keys_ok(&self) -> bool {
        self.key_millis > 0
    }

    /// Entries received or pushed.
    pub fn charge(&mut self, keys: usize) {
        let millis = i64::try_from(keys).unwrap_or(i64::MAX).saturating_mul(1000);
        self.key_millis = self.key_millis.saturating_sub(millis);
    }

    /// The runtime's latest foreground latency (e.g. p99.9 over its last window), in
    /// microseconds: above the threshold the share halves (multiplicative decrease), at or
    /// below it the share grows by a fixed step (additive increase). Returns the new share.
    pub fn set_pressure(&mut self, latency_us: u64) -> u32 {
        self.share = if latency_us > self.pressure_latency_us {
            (self.share / 2).max(self.share_min)
        } else {
            self.share
                .saturating_add(self.share_increase)
                .min(SHARE_FULL)
        };
        self.share
    }
}

/// The most budget that can be saved up: one second's worth at this share, at least one key.
fn burst_millis(keys_per_sec: u64, share: u32) -> i64 {
    let keys = (keys_per_sec.saturating_mul(u64::from(share)) / u64::from(SHARE_FULL)).max(1);
    i64::try_from(keys.saturating_mul(1000)).unwrap_or(i64::MAX)
}
