//! Causality costs on the request path: a replica merge (every replicated write, read
//! repair and handoff), a coordinator update (every write), and the context codec (every
//! read and write).
//!
//! Targets: merging two states of 3 siblings each at most 500 ns; an update and a context
//! encode or decode well under that (they touch one state and a few actors).
//!
//! Run: `cargo bench --bench causal -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rotor::causal::{Actor, CausalState, Context, Value};

/// A 100-byte value, the size of the project's reference measurements.
fn value(tag: u8) -> Value {
    Value::Bytes(vec![tag; 100])
}

/// Two replicas' states of one key with 3 siblings each, as replication produces them:
/// both hold the concurrent writes of x and y; `left` still holds z's write, which `right`
/// has seen superseded by w's write.
fn three_sibling_states() -> (CausalState, CausalState) {
    let (x, y, z, w) = (Actor(0x11), Actor(0x22), Actor(0x33), Actor(0x44));
    let mut base = CausalState::new();
    base.update(&Context::empty(), value(0), x).unwrap();
    let mut left = base.clone();
    left.update(&Context::empty(), value(1), y).unwrap();
    let mut concurrent = CausalState::new();
    concurrent.update(&Context::empty(), value(2), z).unwrap();
    left.merge_from(&concurrent).unwrap();
    assert_eq!(left.sibling_count(), 3);

    let mut right = left.clone();
    let saw_z = concurrent.read().context;
    right.update(&saw_z, value(3), w).unwrap();
    assert_eq!(right.sibling_count(), 3);
    (left, right)
}

fn bench_causal(c: &mut Criterion) {
    let (left, right) = three_sibling_states();
    assert_eq!(left.merge(&right).unwrap().1.siblings, 3);

    // Target: <= 500 ns.
    c.bench_function("causal/merge_3x3_siblings", |b| {
        b.iter(|| black_box(&left).merge(black_box(&right)).unwrap())
    });

    // One sibling, one actor: the common key.
    let mut single = CausalState::new();
    single
        .update(&Context::empty(), value(9), Actor(0x11))
        .unwrap();
    let single_context = single.read().context;
    c.bench_function("causal/update_1_sibling", |b| {
        b.iter_batched(
            || (single.clone(), value(10)),
            |(mut state, new)| {
                state
                    .update(black_box(&single_context), new, Actor(0x22))
                    .unwrap();
                state
            },
            BatchSize::SmallInput,
        )
    });

    let context = left.merge(&right).unwrap().0.read().context;
    let opaque = context.to_opaque();
    let mut out = Vec::with_capacity(opaque.len());
    c.bench_function("causal/context_encode_4_actors", |b| {
        b.iter(|| {
            out.clear();
            black_box(&context).encode_opaque(&mut out);
            black_box(out.len())
        })
    });
    c.bench_function("causal/context_decode_4_actors", |b| {
        b.iter(|| Context::decode_opaque(black_box(&opaque)).unwrap())
    });

    let state_bytes = left.to_bytes();
    c.bench_function("causal/state_decode_3_siblings", |b| {
        b.iter(|| CausalState::decode(black_box(&state_bytes)).unwrap())
    });
}

criterion_group!(benches, bench_causal);
criterion_main!(benches);
