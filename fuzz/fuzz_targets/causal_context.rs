#![no_main]
//! Arbitrary bytes into the two causal decoders (`Context::decode_opaque` and
//! `CausalState::decode`): no panic, and whatever decodes re-encodes to the same bytes.
//!
//! A random mutation almost never carries a valid checksum, so every input is also tried
//! re-sealed (the state's length field set to the input's length and the trailing CRC32C
//! recomputed), which lets the fuzzer reach the structural checks behind the checksum.
//! The CRC32C here is written independently from `wire-spec/causal.md`, so a re-sealed
//! vector that decodes also checks the spec.
use libfuzzer_sys::fuzz_target;
use rotor::causal::{Actor, CausalState, Context, Value};

fuzz_target!(
    init: {
        // The standard check value: a wrong CRC here would silently stop the re-sealing.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    },
    |data: &[u8]| {
    check(data);
    let resealed = reseal(data);
    if resealed != data {
        check(&resealed);
    }
    }
);

fn check(bytes: &[u8]) {
    if let Ok(context) = Context::decode_opaque(bytes) {
        let mut out = Vec::new();
        context.encode_opaque(&mut out);
        assert_eq!(out, bytes, "context did not re-encode identically");
        assert_eq!(context.encoded_len(), bytes.len());
    }
    if let Ok(state) = CausalState::decode(bytes) {
        assert_eq!(
            state.to_bytes(),
            bytes,
            "state did not re-encode identically"
        );
        assert_eq!(state.encoded_len(), bytes.len());
        // Operations on any decodable state stay total.
        let (merged, _) = state.merge(&state).expect("merging a state with itself");
        assert_eq!(merged, state, "merge is idempotent");
        // Merge and update against a real state that shares actors with the vectors (and
        // the largest actor id): the counter arithmetic meets forged counters there.
        let real = real_state();
        if let (Ok((ab, _)), Ok((ba, _))) = (state.merge(&real), real.merge(&state)) {
            assert_eq!(ab.sibling_count(), ba.sibling_count(), "merge commutes");
            assert_eq!(ab.context(), ba.context(), "merge commutes");
        }
        let mut over_real = real.clone();
        let _ = over_real.update(&state.context(), Value::Tombstone, Actor(7));
        let mut over_state = state.clone();
        let _ = over_state.update(&real.context(), Value::Tombstone, Actor(u64::MAX));
        let view = state.read();
        assert!(view.values.len() <= state.sibling_count());
        let context = view.context;
        let mut updated = state.clone();
        if updated
            .update(&context, Value::Tombstone, Actor(u64::MAX))
            .is_ok()
        {
            assert_eq!(
                updated.sibling_count(),
                1,
                "a full context covers everything"
            );
            assert!(updated.is_tombstone_only());
        }
    }
}

/// A state with writes of actor 0x1111111111111111 and of the largest actor id.
fn real_state() -> CausalState {
    let mut state = CausalState::new();
    for actor in [0x1111_1111_1111_1111, u64::MAX, 0x1111_1111_1111_1111] {
        let value = Value::Bytes(actor.to_le_bytes().to_vec());
        let _ = state.update(&Context::empty(), value, Actor(actor));
    }
    state
}

/// The state's total length (bytes 3..7) set to the input length and the last four bytes
/// replaced by the CRC32C of the rest.
fn reseal(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() < 4 {
        return out;
    }
    if out.starts_with(b"RS") && out.len() >= 7 {
        let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
        out[3..7].copy_from_slice(&len.to_le_bytes());
    }
    let body = out.len() - 4;
    let crc = crc32c(&out[..body]);
    out[body..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78, initial and final XOR all ones),
/// bit by bit.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}
