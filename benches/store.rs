//! Store benchmarks: put and get on one core, and reopening a large store.
//!
//! Targets (one core, 100-byte values, 16-byte keys):
//! - put with `Durability::Never`: at least 1M/s;
//! - get of a present key: at least 3M/s (`get_hit`, one at a time; `get_hit_batched_16`,
//!   16 keys per `Store::get_many`, counts each key as one element);
//! - reopen of a 10M-key store: at most 5 s (index and Merkle trees from the checkpoint),
//!   resident memory reported.
//!
//! `ROTOR_STORE_BENCH_KEYS` sets the size of the reopened store (default 10,000,000; 10,000
//! when criterion runs in `--test` mode, so `cargo test --benches` stays cheap).
//! Run: `cargo bench --bench store -- --warm-up-time 1 --measurement-time 3`.
//!
//! Put and get are timed in thread CPU time (`support/cpu_clock.rs`): the machine is shared,
//! and wall time would measure the neighbours.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cpu_clock::cpu_time_of;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rotor::store::{Durability, Store, StoreConfig, ValueKind};

#[path = "support/cpu_clock.rs"]
mod cpu_clock;

const PARTITIONS: u32 = 64;

/// GETs per batch in `get_hit_batched_16`: a pipeline depth of 16.
const BATCH: usize = 16;

/// Key `i`: "key-" and `i` in 12 hex digits (16 bytes), made in registers. A server has the
/// key of a request in its receive buffer, in cache; fetching it from a keyspace-sized array
/// (16 MiB at 1M keys) would add a cache miss of the benchmark's own before each get.
fn key(i: usize) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut k = *b"key-000000000000";
    for (j, b) in k[4..].iter_mut().enumerate() {
        *b = HEX[(i >> (4 * (11 - j))) & 15];
    }
    k
}

fn config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Never,
        ..StoreConfig::default()
    }
}

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Resident memory of this process: (anonymous, file-backed) bytes, from /proc.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn fill(dir: &Path, n: usize) -> Store {
    let (mut store, _) = Store::open(dir, config()).unwrap();
    let value = [7u8; 100];
    for i in 0..n {
        store
            .put(i as u32 % PARTITIONS, &key(i), ValueKind::Value, &value)
            .unwrap();
    }
    store
}

fn put_get(c: &mut Criterion) {
    // 10k keys (2 MB of records and index) stay in the CPU's caches: the cost of the code
    // alone. 100k keys is the server benchmark's key space; 1M shows the memory-bound case
    // (index and records no longer in cache: a lone get waits on two dependent cache misses,
    // the key's index bucket and then its record, and `get_hit_batched_16` overlaps them).
    let spaces: &[usize] = if test_mode() {
        &[10_000]
    } else {
        &[10_000, 100_000, 1 << 20]
    };
    let value = [42u8; 100];
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    for &keyspace in spaces {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), config()).unwrap();
        let mut i = 0usize;
        group.bench_function(format!("put_100b_never/{keyspace}_keys"), |b| {
            b.iter_custom(|iters| {
                cpu_time_of(iters, || {
                    i += 1;
                    if i == keyspace {
                        i = 0;
                    }
                    let lsn = store
                        .put(i as u32 % PARTITIONS, &key(i), ValueKind::Value, &value)
                        .unwrap();
                    black_box(lsn);
                })
            })
        });
        drop(store);
        drop(dir);

        let dir = tempfile::tempdir().unwrap();
        let store = fill(dir.path(), keyspace);
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        group.bench_function(format!("get_hit/{keyspace}_keys"), |b| {
            b.iter_custom(|iters| {
                cpu_time_of(iters, || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x as usize) % keyspace;
                    let found = store.get(i as u32 % PARTITIONS, &key(i)).unwrap();
                    black_box(found.map(|f| f.value.len()));
                })
            })
        });
        // The same reads in batches of 16, as a connection's pipelined GETs would come:
        // `get_many` overlaps the batch's cache misses.
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("get_hit_batched_16/{keyspace}_keys"), |b| {
            b.iter_custom(|iters| {
                cpu_time_of(iters, || {
                    let mut keys = [[0u8; 16]; BATCH];
                    let mut partitions = [0u32; BATCH];
                    for (k, p) in keys.iter_mut().zip(&mut partitions) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = (x as usize) % keyspace;
                        (*k, *p) = (key(i), i as u32 % PARTITIONS);
                    }
                    let mut batch: [(u32, &[u8]); BATCH] = [(0, &[]); BATCH];
                    for (slot, (k, &p)) in batch.iter_mut().zip(keys.iter().zip(&partitions)) {
                        *slot = (p, k);
                    }
                    store.get_many(&batch, |_, found| {
                        black_box(found.unwrap().map(|f| f.value.len()));
                    });
                })
            })
        });
        group.throughput(Throughput::Elements(1));
        let stats = store.stats();
        println!(
            "index: {} keys, {} bytes, {:.1} bytes per key",
            stats.keys,
            stats.index_bytes,
            stats.index_bytes as f64 / stats.keys as f64
        );
    }
    group.finish();
}

fn reopen(c: &mut Criterion) {
    let n = std::env::var("ROTOR_STORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if test_mode() { 10_000 } else { 10_000_000 });
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(1));
    let mut built: Option<tempfile::TempDir> = None;
    group.bench_function(format!("reopen_{n}_keys_checkpoint"), |b| {
        // Built on first use, so that a filter that skips this benchmark skips the build.
        let dir = built
            .get_or_insert_with(|| build_and_measure(n))
            .path()
            .to_path_buf();
        b.iter(|| {
            let (store, _) = Store::open(&dir, config()).unwrap();
            black_box(store.stats().keys)
        })
    });
    group.finish();
}

/// Builds an `n`-key store and prints one timed open with the checkpoint (trees taken from
/// it, with the memory it takes), the tree rebuild an open without saved trees adds, and
/// one open by scanning the log.
fn build_and_measure(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    fill(dir.path(), n).close().unwrap();
    println!("reopen: built a {n}-key store in {:.2?}", started.elapsed());

    let before = rss();
    let started = Instant::now();
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    let took = started.elapsed();
    let after = rss();
    assert!(report.used_checkpoint && report.trees_from_checkpoint);
    println!(
        "reopen with checkpoint, trees from it: {n} keys in {took:.2?} ({} trees rebuilt); \
         RSS +{} MiB anonymous (index), +{} MiB file-backed; index {:.1} bytes per key",
        report.trees_rebuilt,
        (after.0.saturating_sub(before.0)) >> 20,
        (after.1.saturating_sub(before.1)) >> 20,
        store.stats().index_bytes as f64 / n as f64
    );
    // What the open saved: the forced rebuild of every tree, as an open does when the
    // checkpoint has no usable trees.
    let mut store = store;
    let started = Instant::now();
    store.rebuild_merkle_trees();
    let rebuild = started.elapsed();
    println!(
        "forced Merkle tree rebuild: {rebuild:.2?} ({} trees, {} KiB); an open that \
         rebuilds: {:.2?}",
        store.merkle_bytes() / rotor::merkle::MerkleTree::memory_bytes().max(1),
        store.merkle_bytes() >> 10,
        took + rebuild
    );
    drop(store);

    std::fs::rename(dir.path().join("index.ckpt"), dir.path().join("saved.ckpt")).unwrap();
    let started = Instant::now();
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    println!(
        "reopen by scanning the log: {} keys in {:.2?}",
        report.keys,
        started.elapsed()
    );
    drop(store);
    std::fs::rename(dir.path().join("saved.ckpt"), dir.path().join("index.ckpt")).unwrap();
    dir
}

criterion_group!(benches, put_get, reopen);
criterion_main!(benches);
