//! Ring lookups and claims.
//!
//! Targets: key to preference list (N = 3, 8 nodes, Q = 1024) at most 150 ns, since every
//! request pays it once at the coordinator (and clients pay it to route). The claim for a
//! join runs once per membership change on every node, so it only needs to stay well under
//! the gossip interval (a second): target at most 10 ms for 8 -> 9 nodes at Q = 1024.
//!
//! MD5 of a short key is one 64-byte block, ~350-400 cycles: at 2 GHz that alone takes most
//! of the lookup budget, so `key_to_partition` (the MD5 part) and
//! `partition_to_preference_list` (the ring's part, a table lookup) are measured apart, and
//! `md5_one_block_compress` measures the floor: MD5's compression function run once on a
//! prepared block, with no hashing API around it. (MD5 is the `asm` build of md-5.)
//!
//! The server hashes up to 16 requests' keys together (`Ring::partitions_of`, MD5 in SIMD
//! lanes), so `key_to_preference_list_batched_16` times 16 lookups per iteration and reports
//! per-key throughput (Elements(16)): target at most 150 ns per key. Its `avx512`, `avx2` and
//! `scalar` variants force one MD5 path each (`key_positions_with`), `detected` is what the
//! server runs; `key_positions_16` times the batched MD5 alone.
//!
//! Lookups are timed in thread CPU time (`support/cpu_clock.rs`): the machine is shared,
//! and wall time would measure the neighbours.

use std::hint::black_box;

use cpu_clock::cpu_time_of;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use md5::digest::core_api::{Block, UpdateCore};
use md5::{Digest, Md5, Md5Core};
use rotor::constants::PARTITIONS_DEFAULT;
use rotor::ring::{
    key_positions_with, partition_of_position, Md5Lanes, Member, NodeId, PartitionId,
    PreferenceList, Ring,
};

#[path = "support/cpu_clock.rs"]
mod cpu_clock;

fn members(n: u64) -> Vec<Member> {
    (0..n).map(|i| Member::new(NodeId(i), 1, 4)).collect()
}

/// Keys of a typical shape, cycled so each lookup hashes a different one.
fn keys() -> Vec<Vec<u8>> {
    (0..4096)
        .map(|i| format!("user:{i:08}").into_bytes())
        .collect()
}

fn lookups(c: &mut Criterion) {
    let ring = Ring::initial(PARTITIONS_DEFAULT, members(8)).unwrap();
    let keys = keys();
    let mut i = 0;
    c.bench_function("key_to_preference_list_n3_8_nodes", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                i = (i + 1) % keys.len();
                black_box(ring.key_preference_list(black_box(&keys[i]), 3));
            })
        })
    });
    // The same lookup borrowing the replicas from the ring's table instead of copying them
    // into a `PreferenceList`: what a caller that only reads the list pays.
    c.bench_function("key_to_replicas_borrowed_n3_8_nodes", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                i = (i + 1) % keys.len();
                black_box(ring.key_replicas(black_box(&keys[i]), 3));
            })
        })
    });
    c.bench_function("key_to_partition", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                i = (i + 1) % keys.len();
                black_box(ring.partition_of(black_box(&keys[i])));
            })
        })
    });
    c.bench_function("md5_digest", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                i = (i + 1) % keys.len();
                black_box(Md5::digest(black_box(&keys[i])));
            })
        })
    });
    let block = Block::<Md5Core>::default();
    c.bench_function("md5_one_block_compress", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                let mut core = Md5Core::default();
                core.update_blocks(std::slice::from_ref(black_box(&block)));
                black_box(core);
            })
        })
    });
    let mut p = 0;
    c.bench_function("partition_to_preference_list_n3_8_nodes", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                p = (p + 1) % PARTITIONS_DEFAULT;
                black_box(ring.preference_list(black_box(PartitionId(p)), 3));
            })
        })
    });
    let zoned: Vec<Member> = (0..9)
        .map(|i| Member::new(NodeId(i), 1, 4).with_zone(format!("z{}", i % 3)))
        .collect();
    let zoned = Ring::initial(PARTITIONS_DEFAULT, zoned).unwrap();
    c.bench_function("key_to_preference_list_n3_9_nodes_3_zones", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                i = (i + 1) % keys.len();
                black_box(zoned.key_preference_list(black_box(&keys[i]), 3));
            })
        })
    });
}

/// Keys per batch: what the server's `prepare` hashes at most at once.
const BATCH: usize = 16;

fn batched_lookups(c: &mut Criterion) {
    let ring = Ring::initial(PARTITIONS_DEFAULT, members(8)).unwrap();
    let keys = keys();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let batches = keys.len() / BATCH;
    let mut i = 0;
    let mut next_batch = || {
        i = (i + 1) % batches;
        &keys[i * BATCH..(i + 1) * BATCH]
    };
    let mut group = c.benchmark_group("key_to_preference_list_batched_16");
    group.throughput(Throughput::Elements(BATCH as u64));
    // As `key_to_preference_list_n3_8_nodes`, each list copied into a `PreferenceList`.
    let mut partitions = [PartitionId(0); BATCH];
    group.bench_function("detected", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                ring.partitions_of(black_box(next_batch()), &mut partitions);
                for &p in &partitions {
                    black_box(ring.preference_list(p, 3));
                }
            })
        })
    });
    let mut replicas = Vec::with_capacity(BATCH);
    group.bench_function("detected_borrowed", |b| {
        b.iter_custom(|iters| {
            cpu_time_of(iters, || {
                ring.keys_replicas(black_box(next_batch()), 3, &mut replicas);
                black_box(&replicas);
            })
        })
    });
    for (name, lanes) in paths() {
        let mut positions = [0u128; BATCH];
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cpu_time_of(iters, || {
                    key_positions_with(lanes, black_box(next_batch()), &mut positions);
                    for &position in &positions {
                        let p = partition_of_position(position, PARTITIONS_DEFAULT);
                        black_box::<PreferenceList>(ring.preference_list(p, 3));
                    }
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("key_positions_16");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, lanes) in paths() {
        let mut positions = [0u128; BATCH];
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cpu_time_of(iters, || {
                    key_positions_with(lanes, black_box(next_batch()), &mut positions);
                    black_box(&positions);
                })
            })
        });
    }
    group.finish();
}

/// The MD5 paths this CPU runs, by bench name (a path it lacks would silently measure the
/// scalar one, so it is left out).
fn paths() -> Vec<(&'static str, Md5Lanes)> {
    [
        ("avx512", Md5Lanes::Avx512),
        ("avx2", Md5Lanes::Avx2),
        ("scalar", Md5Lanes::Scalar),
    ]
    .into_iter()
    .filter(|(_, lanes)| lanes.is_available())
    .collect()
}

fn claims(c: &mut Criterion) {
    let eight = Ring::initial(PARTITIONS_DEFAULT, members(8)).unwrap();
    c.bench_function("claim_join_8_to_9_nodes", |b| {
        b.iter(|| black_box(eight.with_members(black_box(members(9))).unwrap()))
    });
    c.bench_function("claim_initial_64_nodes", |b| {
        b.iter(|| black_box(Ring::initial(PARTITIONS_DEFAULT, black_box(members(64))).unwrap()))
    });
}

criterion_group!(benches, lookups, batched_lookups, claims);
criterion_main!(benches);
