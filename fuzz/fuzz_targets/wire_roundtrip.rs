#![no_main]
//! Structure-aware round trip: the fuzzer's bytes choose a message (opcode, then every field
//! within its limits) through `Frame::arbitrary`; it is encoded, decoded, and must come back
//! equal, filling exactly the bytes written.
use libfuzzer_sys::fuzz_target;
use rotor::wire::{decode, Decoded, Error, Frame};

fuzz_target!(|data: &[u8]| {
    let frame = Frame::arbitrary(data);
    let mut bytes = Vec::new();
    match frame.encode(&mut bytes) {
        Ok(()) => match decode(&bytes) {
            Ok(Decoded::Frame {
                frame: back,
                consumed,
            }) => {
                assert_eq!(consumed, bytes.len());
                assert_eq!(back, frame);
            }
            other => panic!("{frame:?} encoded to {bytes:02x?}, which decodes to {other:?}"),
        },
        // Only a topology whose owners name unlisted nodes, or whose Q is not a power of
        // two, can be built and then refused.
        Err(err) => {
            assert_eq!(err, Error::Inconsistent);
            assert!(bytes.is_empty(), "a refused frame leaves the buffer alone");
        }
    }
});
