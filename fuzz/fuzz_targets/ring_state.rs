#![no_main]
//! `RingState::decode` (the `<data-dir>/RING` file and the RING_STATE reply) on arbitrary
//! bytes: it never panics, and whatever decodes encodes again to bytes that decode equal.
//! Random bytes rarely carry a valid CRC32C, so each input is also tried with its checksum
//! appended, and from the first "RRNG" magic on (a state inside a frame).
//! Seeds: fuzz/seeds/ring_state (kept decodable by a unit test in src/membership/state.rs).
use libfuzzer_sys::fuzz_target;
use rotor::membership::RingState;

fn check(bytes: &[u8]) {
    if let Ok(state) = RingState::decode(bytes) {
        let again = state.to_bytes();
        assert_eq!(
            RingState::decode(&again).as_ref(),
            Ok(&state),
            "{bytes:02x?} decoded to {state:?}, which encodes to {again:02x?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    check(&sealed);
    if let Some(at) = data.windows(4).position(|w| w == b"RRNG") {
        if let Some(tail) = data.get(at..) {
            check(tail);
            let mut sealed = tail.to_vec();
            sealed.extend_from_slice(&crc32c::crc32c(tail).to_le_bytes());
            check(&sealed);
        }
    }
});
