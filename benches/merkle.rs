//! Merkle tree benchmarks: the cost a write pays for its tree, the cost of finding 1%
//! divergence among 1M keys (time, hashes and bytes on the wire), the responder's leaf
//! scan, and the extra reopen time of rebuilding the trees.
//!
//! Targets (one core):
//! - tree update of one leaf (XOR and dirty bit; the loop's random leaf included): at
//!   most 10 ns;
//! - a write's whole tree work for a 16-byte key and 100-byte states (key hash, old and new
//!   entry hashes, leaf update): at most 150 ns;
//! - finding 1% divergence among 1M keys (1024 partitions of 1000 keys, every bucket of
//!   both trees dirty): at most 50 ms of CPU, and at most 5% of a full transfer's bytes on
//!   the wire: each differing key costs about one level-1 bucket's 32 hashes (256 bytes)
//!   and its leaf's keys (about two entries of 124 bytes), against 124 bytes per key for
//!   a full transfer;
//! - `Store::bucket_entries` of 10 leaves in a 1000-key partition: at most 100 us;
//! - rebuilding the trees of a 1M-key store at open: at most 0.5 s.
//!
//! `ROTOR_MERKLE_BENCH_KEYS` sets the size of the reopened store (default 1,048,576;
//! 10,000 when run as a test, without `--bench`). Run:
//! `cargo bench --bench merkle --no-run`, then
//! `taskset -c 1 target/release/deps/merkle-<hash> --bench --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rotor::constants::{MERKLE_FANOUT, MERKLE_LEAVES, MERKLE_LEVELS};
use rotor::merkle::{child_ranges, differing_buckets, KeyHash, MerkleTree};
use rotor::store::{Durability, Store, StoreConfig, ValueKind};
use rotor::wire::{
    self, Entry, List, MerkleKeys, MerkleKeysReply, MerkleRange, MerkleRangeReply, Message,
};

/// Partitions and keys per partition of the divergence benchmark: 1024 x 1000 = 1M keys
/// over the default ring of 1024 partitions, as one replica set would hold them.
const PARTITIONS: u32 = 1024;
const KEYS_PER_PARTITION: u32 = 1000;
/// One key in this many differs between the two replicas (1%).
const DIVERGE_EVERY: u32 = 100;
const STATE_BYTES: usize = 100;

/// Criterion runs each benchmark once, as a test, unless given `--bench`.
fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// CPU time this thread has run, from the scheduler's own count: on a shared machine the
/// wall-clock figures criterion reports include time spent waiting for the core.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn key(i: u32) -> [u8; 16] {
    let mut k = *b"key-000000000000";
    k[4..].copy_from_slice(format!("{i:012}").as_bytes());
    k
}

/// The encoded state of key `i` on a replica; `version` tells replicas' states apart.
fn state(i: u32, version: u8) -> [u8; STATE_BYTES] {
    let mut s = [version; STATE_BYTES];
    s[..4].copy_from_slice(&i.to_le_bytes());
    s
}

fn tree_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("merkle");
    group.throughput(Throughput::Elements(1));
    let mut tree = MerkleTree::new();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    group.bench_function("update_leaf", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let leaf = (x % u64::from(MERKLE_LEAVES)) as u32;
            tree.update_leaf(black_box(leaf), Some(x), Some(x.rotate_left(7)));
        })
    });
    black_box(tree.root());

    let keys: Vec<[u8; 16]> = (0..4096).map(key).collect();
    let (old, new) = (state(1, 1), state(1, 2));
    let mut tree = MerkleTree::new();
    let mut i = 0usize;
    group.bench_function("write_16b_key_100b_states", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let kh = KeyHash::of(&keys[i]);
            let (o, n) = (kh.entry_hash(&old), kh.entry_hash(&new));
            tree.update_leaf(kh.leaf(), Some(o), Some(n));
        })
    });
    group.bench_function("write_then_root", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            tree.update(&keys[i], Some(1), Some(2));
            black_box(tree.root())
        })
    });
    group.finish();
}

/// What one walk exchanged.
#[derive(Default, Debug)]
struct Cost {
    frames: u64,
    bytes: u64,
    hashes: u64,
    leaves: u64,
    keys: u64,
}

impl Cost {
    fn frame(&mut self, message: &Message<'_>, buf: &mut Vec<u8>) {
        buf.clear();
        wire::encode(0, message, buf).expect("encodable");
        self.frames += 1;
        self.bytes += buf.len() as u64;
    }
}

/// Two replicas of `PARTITIONS` partitions whose states differ in 1% of keys.
struct Replicas {
    a: Vec<MerkleTree>,
    b: Vec<MerkleTree>,
    /// Leaf of every key, by key number.
    leaf: Vec<u16>,
}

fn replicas() -> Replicas {
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut leaf = Vec::new();
    for p in 0..PARTITIONS {
        let (mut ta, mut tb) = (MerkleTree::new(), MerkleTree::new());
        for j in 0..KEYS_PER_PARTITION {
            let i = p * KEYS_PER_PARTITION + j;
            let k = key(i);
            let kh = KeyHash::of(&k);
            leaf.push(kh.leaf() as u16);
            ta.update_leaf(kh.leaf(), None, Some(kh.entry_hash(&state(i, 1))));
            let version = if i.is_multiple_of(DIVERGE_EVERY) {
                2
            } else {
                1
            };
            tb.update_leaf(kh.leaf(), None, Some(kh.entry_hash(&state(i, version))));
        }
        a.push(ta);
        b.push(tb);
    }
    Replicas { a, b, leaf }
}

/// A walks its tree of partition `p` against B's as the wire messages would: range
/// requests level by level (encoded, both directions), then the keys of the differing
/// leaves from B (encoded with B's states).
fn walk(r: &Replicas, p: u32, buf: &mut Vec<u8>, cost: &mut Cost) {
    let (a, b) = (&r.a[p as usize], &r.b[p as usize]);
    let mut differing = vec![0];
    for level in 0..MERKLE_LEVELS {
        let mut next = Vec::new();
        for (start, count) in child_ranges(level, &differing) {
            let request = MerkleRange {
                partition: p,
                level,
                start,
                count,
            };
            cost.frame(&Message::MerkleRange(request), buf);
            let theirs = b.hashes(level, start, count);
            cost.hashes += theirs.len() as u64;
            let reply = MerkleRangeReply {
                partition: p,
                level,
                start,
                hashes: List::from(&theirs[..]),
            };
            cost.frame(&Message::MerkleRangeReply(reply), buf);
            next.extend(differing_buckets(
                start,
                &a.hashes(level, start, count),
                &theirs,
            ));
        }
        differing = next;
    }
    if differing.is_empty() {
        return;
    }
    cost.leaves += differing.len() as u64;
    let request = MerkleKeys {
        partition: p,
        buckets: List::from(&differing[..]),
    };
    cost.frame(&Message::MerkleKeys(request), buf);
    // B's side: the keys of its partition in those leaves, with their states.
    let first = p * KEYS_PER_PARTITION;
    let mut found: Vec<([u8; 16], [u8; STATE_BYTES])> = Vec::new();
    for i in first..first + KEYS_PER_PARTITION {
        let leaf = u32::from(r.leaf[i as usize]);
        if differing.binary_search(&leaf).is_ok() {
            let version = if i % DIVERGE_EVERY == 0 { 2 } else { 1 };
            found.push((key(i), state(i, version)));
        }
    }
    cost.keys += found.len() as u64;
    let entries: Vec<Entry<'_>> = found
        .iter()
        .map(|(k, s)| Entry { key: k, state: s })
        .collect();
    let reply = MerkleKeysReply {
        partition: p,
        buckets: List::from(&differing[..]),
        entries: List::from(entries),
    };
    cost.frame(&Message::MerkleKeysReply(reply), buf);
}

/// Marks every bucket of a tree dirty without changing it (XOR of the same hash twice),
/// as after writes to every bucket since the last exchange.
fn dirty_all(tree: &mut MerkleTree) {
    for bucket in 0..MERKLE_FANOUT {
        tree.update_leaf(bucket * MERKLE_FANOUT, Some(1), Some(1));
    }
}

fn divergence(c: &mut Criterion) {
    let started = Instant::now();
    let mut r = replicas();
    println!(
        "divergence: built 2 x {PARTITIONS} trees of {KEYS_PER_PARTITION} keys in {:.2?}",
        started.elapsed()
    );
    let mut buf = Vec::new();
    let mut cost = Cost::default();
    let (wall, cpu) = (Instant::now(), cpu_time());
    for p in 0..PARTITIONS {
        dirty_all(&mut r.a[p as usize]);
        dirty_all(&mut r.b[p as usize]);
        walk(&r, p, &mut buf, &mut cost);
    }
    println!(
        "divergence: one walk of every partition took {:.2?} ({:.2?} of CPU)",
        wall.elapsed(),
        cpu_time() - cpu
    );
    let keys = u64::from(PARTITIONS * KEYS_PER_PARTITION);
    let full = keys * (4 + 16 + 4 + STATE_BYTES as u64);
    println!(
        "divergence: {keys} keys, {} differ; walk exchanged {} hashes ({} KiB), {} frames, \
         {} KiB of frames in all; {} leaves differ, {} keys transferred; a full transfer's \
         entries alone are {} KiB ({:.2}% of it)",
        keys / u64::from(DIVERGE_EVERY),
        cost.hashes,
        cost.hashes * 8 / 1024,
        cost.frames,
        cost.bytes / 1024,
        cost.leaves,
        cost.keys,
        full / 1024,
        cost.bytes as f64 * 100.0 / full as f64
    );
    let mut group = c.benchmark_group("merkle");
    group.sample_size(10);
    group.bench_function("find_1pct_divergence_1m_keys", |b| {
        b.iter(|| {
            let mut cost = Cost::default();
            for p in 0..PARTITIONS {
                dirty_all(&mut r.a[p as usize]);
                dirty_all(&mut r.b[p as usize]);
                walk(&r, p, &mut buf, &mut cost);
            }
            black_box(cost.bytes)
        })
    });
    group.finish();
}

fn config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Never,
        ..StoreConfig::default()
    }
}

fn bucket_entries(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    for i in 0..KEYS_PER_PARTITION {
        store
            .put(7, &key(i), ValueKind::Value, &state(i, 1))
            .unwrap();
    }
    let leaves: Vec<u32> = (0..10).map(|n| n * 100).collect();
    let mut group = c.benchmark_group("merkle");
    group.bench_function("bucket_entries_10_leaves_of_1000_keys", |b| {
        b.iter(|| black_box(store.bucket_entries(7, &leaves).unwrap().len()))
    });
    group.finish();
}

fn reopen(c: &mut Criterion) {
    let n: u32 = std::env::var("ROTOR_MERKLE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if test_mode() { 10_000 } else { 1 << 20 });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    for i in 0..n {
        store
            .put(i % PARTITIONS, &key(i), ValueKind::Value, &state(i, 1))
            .unwrap();
    }
    store.close().unwrap();
    println!("reopen: built a {n}-key store in {:.2?}", started.elapsed());
    let started = Instant::now();
    let (mut store, report) = Store::open(dir.path(), config()).unwrap();
    let open = started.elapsed();
    assert!(report.used_checkpoint);
    let (started, cpu) = (Instant::now(), cpu_time());
    store.rebuild_merkle_trees();
    println!(
        "reopen: {n} keys with the checkpoint in {open:.2?}, of which rebuilding the trees \
         ~{:.2?} ({:.2?} of CPU; timed again after open); trees {} KiB",
        started.elapsed(),
        cpu_time() - cpu,
        store.merkle_bytes() / 1024
    );
    let mut group = c.benchmark_group("merkle");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    group.bench_function(format!("rebuild_trees_{n}_keys"), |b| {
        b.iter(|| {
            store.rebuild_merkle_trees();
            black_box(store.merkle_root(0))
        })
    });
    group.finish();
}

criterion_group!(benches, tree_update, divergence, bucket_entries, reopen);
criterion_main!(benches);
