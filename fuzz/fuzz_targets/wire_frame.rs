#![no_main]
//! Arbitrary bytes into the streaming frame decoder, consumed the way a connection would:
//! frame after frame, skipping the bad frames whose boundary is known. Nothing may panic,
//! every decoded frame must re-encode to exactly the bytes it was decoded from, and progress
//! must always be made.
use libfuzzer_sys::fuzz_target;
use rotor::wire::{decode, Decoded};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut out = Vec::new();
    loop {
        match decode(rest) {
            Ok(Decoded::Frame { frame, consumed }) => {
                out.clear();
                frame.encode(&mut out).expect("a decoded frame encodes");
                assert_eq!(&out[..], &rest[..consumed], "re-encoding differs");
                rest = &rest[consumed..];
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed > 0, "incomplete must ask for more bytes");
                break;
            }
            Err(err) => match err.skip {
                Some(skip) => {
                    assert!(skip > 0 && skip <= rest.len(), "skip within the buffer");
                    rest = &rest[skip..];
                }
                None => break,
            },
        }
    }
});
