//! Codec cost on the hot path: decoding and encoding a GET and a PUT with a 100-byte value.
//!
//! Target: each at most 50 ns on the 2-core development machine (a request must cost the
//! server far less in parsing than the ~30 us a loopback round trip takes). Run with
//! `cargo bench --bench wire -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rotor::wire::{decode, encode, Decoded, Get, Message, Options, Put};

fn get() -> Message<'static> {
    Get {
        options: Options {
            n: 0,
            quorum: 0,
            timeout_ms: 0,
        },
        key: b"user:0000000042",
    }
    .into()
}

fn put(value: &[u8]) -> Message<'_> {
    Put {
        options: Options {
            n: 0,
            quorum: 0,
            timeout_ms: 0,
        },
        return_context: false,
        key: b"user:0000000042",
        context: &[0x5a; 40],
        value,
    }
    .into()
}

fn bench(c: &mut Criterion, name: &str, message: &Message<'_>) {
    let mut bytes = Vec::new();
    encode(7, message, &mut bytes).expect("sample encodes");

    c.bench_function(&format!("decode {name}"), |b| {
        b.iter(|| match decode(black_box(&bytes)) {
            Ok(Decoded::Frame { frame, consumed }) => {
                black_box(&frame);
                consumed
            }
            _ => unreachable!("the sample decodes"),
        })
    });

    let mut out = Vec::with_capacity(bytes.len());
    c.bench_function(&format!("encode {name}"), |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(7), black_box(message), &mut out).expect("sample encodes");
            out.len()
        })
    });
}

fn wire(c: &mut Criterion) {
    bench(c, "GET", &get());
    let value = [0xa5u8; 100];
    bench(c, "PUT 100 B", &put(&value));
}

criterion_group!(benches, wire);
criterion_main!(benches);
