//! Per-shard counters and latency histograms, reported by `STATS` as (shard, name, value)
//! entries.
//!
//! Each shard owns its own [`ShardStats`] (plain cells, no atomics: only the shard's thread
//! touches them); a `STATS` request gathers every shard's entries through the mailbox.
//! Latencies are microseconds from the moment the frame was decoded to the moment its reply
//! was ready, so a write under group commit includes its wait for the sync.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::constants::STATS_LATENCY_US_MAX;
use crate::store::StoreStats;
use crate::wire::Stat;

/// One reported counter: the shard it belongs to, its dotted name and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatEntry {
    /// The shard.
    pub shard: u16,
    /// The counter's name, e.g. `get.count` or `get.latency_us.p99`.
    pub name: &'static str,
    /// Its value.
    pub value: u64,
}

/// The wire form of `entries` (STATS_REPLY's and ADMIN_STATUS_REPLY's counters).
pub fn wire_stats(entries: &[StatEntry]) -> Vec<Stat<'_>> {
    entries
        .iter()
        .map(|e| Stat {
            shard: e.shard,
            name: e.name,
            value: e.value,
        })
        .collect()
}

/// Which latency histogram a request is recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A GET.
    Read,
    /// A PUT or DELETE.
    Write,
}

/// The counters of one shard.
pub struct ShardStats {
    shard: u16,
    gets: Cell<u64>,
    puts: Cell<u64>,
    deletes: Cell<u64>,
    errors: Cell<u64>,
    forwarded: Cell<u64>,
    connections: Cell<u64>,
    read_latency: RefCell<Histogram<u64>>,
    write_latency: RefCell<Histogram<u64>>,
}

impl ShardStats {
    /// Zeroed counters of shard `shard`.
    pub fn new(shard: u16) -> ShardStats {
        ShardStats {
            shard,
            gets: Cell::new(0),
            puts: Cell::new(0),
            deletes: Cell::new(0),
            errors: Cell::new(0),
            forwarded: Cell::new(0),
            connections: Cell::new(0),
            read_latency: RefCell::new(histogram()),
            write_latency: RefCell::new(histogram()),
        }
    }

    /// A GET was executed here.
    pub fn get(&self) {
        bump(&self.gets);
    }

    /// A PUT was executed here.
    pub fn put(&self) {
        bump(&self.puts);
    }

    /// A DELETE was executed here.
    pub fn delete(&self) {
        bump(&self.deletes);
    }

    /// An `ERROR` reply was sent (or produced for another shard's client).
    pub fn error(&self) {
        bump(&self.errors);
    }

    /// A request received here was forwarded to its owning shard.
    pub fn forwarded(&self) {
        bump(&self.forwarded);
    }

    /// A client connection opened on this shard.
    pub fn connection_opened(&self) {
        bump(&self.connections);
    }

    /// A client connection of this shard closed.
    pub fn connection_closed(&self) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
    }

    /// Records the latency of a request that started at `started`; returns it in
    /// microseconds, for whoever else watches latency (anti-entropy's back-off).
    pub fn record(&self, kind: OpKind, started: Instant) -> u64 {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let histogram = match kind {
            OpKind::Read => &self.read_latency,
            OpKind::Write => &self.write_latency,
        };
        histogram
            .borrow_mut()
            .saturating_record(us.clamp(1, STATS_LATENCY_US_MAX));
        us
    }

    /// Every counter of this shard, with the store's figures.
    pub fn entries(&self, store: Option<&StoreStats>) -> Vec<StatEntry> {
        let mut out = Vec::with_capacity(24);
        let mut push = |name, value| {
            out.push(StatEntry {
                shard: self.shard,
                name,
                value,
            })
        };
        push("get.count", self.gets.get());
        push("put.count", self.puts.get());
        push("delete.count", self.deletes.get());
        push("error.count", self.errors.get());
        push("forwarded.count", self.forwarded.get());
        push("connections", self.connections.get());
        if let Some(store) = store {
            push("store.keys", store.keys);
            push("store.tombstones", store.tombstones);
            push("store.live_bytes", store.live_bytes);
            push("store.garbage_bytes", store.garbage_bytes);
            push("store.segments", store.segments);
            push("store.durable_lsn", store.durable_lsn);
        }
        for (names, histogram) in [
            (READ_LATENCY_NAMES, &self.read_latency),
            (WRITE_LATENCY_NAMES, &self.write_latency),
        ] {
            let h = histogram.borrow();
            let values = [
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.len(),
            ];
            for (name, value) in names.into_iter().zip(values) {
                push(name, value);
            }
        }
        out
    }
}

/// Names of the read latency entries: p50, p99, p99.9, max, and the sample count.
const READ_LATENCY_NAMES: [&str; 5] = [
    "get.latency_us.p50",
    "get.latency_us.p99",
    "get.latency_us.p999",
    "get.latency_us.max",
    "get.latency.samples",
];

/// Names of the write (PUT and DELETE) latency entries, in the same order.
const WRITE_LATENCY_NAMES: [&str; 5] = [
    "put.latency_us.p50",
    "put.latency_us.p99",
    "put.latency_us.p999",
    "put.latency_us.max",
    "put.latency.samples",
];

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, STATS_LATENCY_US_MAX, 2)
        .expect("constant bounds: 1 <= low, high >= 2 * low, 2 significant digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(entries: &[StatEntry], name: &str) -> Option<u64> {
        entries.iter().find(|e| e.name == name).map(|e| e.value)
    }

    #[test]
    fn counters_and_percentiles_are_reported_by_name() {
        let stats = ShardStats::new(3);
        stats.get();
        stats.get();
        stats.put();
        stats.error();
        stats.connection_opened();
        stats.connection_opened();
        stats.connection_closed();
        stats.record(OpKind::Read, Instant::now());
        let store = StoreStats {
            keys: 7,
            ..StoreStats::default()
        };
        let entries = stats.entries(Some(&store));
        assert!(entries.iter().all(|e| e.shard == 3));
        assert_eq!(value(&entries, "get.count"), Some(2));
        assert_eq!(value(&entries, "put.count"), Some(1));
        assert_eq!(value(&entries, "delete.count"), Some(0));
        assert_eq!(value(&entries, "error.count"), Some(1));
        assert_eq!(value(&entries, "connections"), Some(1));
        assert_eq!(value(&entries, "store.keys"), Some(7));
        assert_eq!(value(&entries, "get.latency.samples"), Some(1));
        assert!(value(&entries, "get.latency_us.p99").is_some_and(|v| v >= 1));
        assert_eq!(value(&entries, "put.latency.samples"), Some(0));
    }
}
