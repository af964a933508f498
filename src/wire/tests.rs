//! Codec tests: the spec's vectors byte for byte, streaming behaviour, limits, and property
//! tests (arbitrary messages round-trip; arbitrary bytes never panic and re-encode exactly).
//!
//! The vectors in `wire-spec/vectors/` were first written by `regenerate_vectors` below
//! (run it with `cargo test --lib wire::tests::regenerate_vectors -- --ignored`); after that
//! they are the reference, and `vectors_decode_and_reencode` holds the codec to them.

use std::path::PathBuf;

use proptest::prelude::*;

use super::*;
use crate::constants::{FRAME_BODY_BYTES_MAX, KEY_BYTES_MAX, SIBLINGS_MAX};

// ---------------------------------------------------------------------------------------
// Vectors

/// What a vector file says decoding its bytes must give.
#[derive(Debug, PartialEq)]
enum Expect {
    Ok,
    Incomplete,
    Error(String),
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wire-spec/vectors")
}

/// Parses a vector file: `#` starts a comment, the rest is whitespace-separated hex.
fn parse_vector(text: &str) -> (Vec<u8>, Expect) {
    let mut hex = String::new();
    let mut expect = None;
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("# expect:") {
            let rest = rest.trim();
            expect = Some(match rest {
                "ok" => Expect::Ok,
                "incomplete" => Expect::Incomplete,
                _ => Expect::Error(
                    rest.strip_prefix("error ")
                        .expect("expect line: ok, incomplete or error NAME")
                        .to_string(),
                ),
            });
        }
        let data = line.split('#').next().unwrap_or("");
        hex.extend(data.chars().filter(|c| !c.is_whitespace()));
    }
    assert!(hex.len().is_multiple_of(2), "odd number of hex digits");
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect();
    (bytes, expect.expect("every vector has an `# expect:` line"))
}

/// Decodes `bytes` and checks the outcome against `expect`; an ok frame must re-encode to
/// the same bytes.
fn check(name: &str, bytes: &[u8], expect: &Expect) {
    match (decode(bytes), expect) {
        (Ok(Decoded::Frame { frame, consumed }), Expect::Ok) => {
            assert_eq!(consumed, bytes.len(), "{name}: frame must fill the vector");
            let mut out = Vec::new();
            frame.encode(&mut out).expect("decoded frame re-encodes");
            assert_eq!(out, bytes, "{name}: re-encoding differs");
            // Every prefix of a valid frame is merely incomplete, never an error.
            for cut in 0..bytes.len() {
                let result = decode(&bytes[..cut]);
                assert!(
                    matches!(result, Ok(Decoded::Incomplete { needed }) if needed > 0),
                    "{name}: prefix of {cut} bytes gave {result:?}"
                );
            }
        }
        (Ok(Decoded::Incomplete { .. }), Expect::Incomplete) => {}
        (Err(err), Expect::Error(want)) => assert_eq!(&format!("{:?}", err.error), want, "{name}"),
        (got, want) => panic!("{name}: expected {want:?}, got {got:?}"),
    }
}

#[test]
fn vectors_decode_and_reencode() {
    let mut count = 0;
    for entry in std::fs::read_dir(vectors_dir()).expect("wire-spec/vectors exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|ext| ext != "hex") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Frame vectors are `ok-*` and `bad-*`; `causal-*` hold the causal module's byte
        // formats and are checked by its own tests.
        if !(name.starts_with("ok-") || name.starts_with("bad-")) {
            continue;
        }
        let (bytes, expect) = parse_vector(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(
            name.starts_with("ok-"),
            expect == Expect::Ok,
            "{name}: ok-* files and only they expect ok"
        );
        check(&name, &bytes, &expect);
        count += 1;
    }
    assert!(count >= Opcode::ALL.len(), "only {count} vectors found");
}

#[test]
fn every_message_has_a_vector() {
    for opcode in Opcode::ALL {
        let path = vectors_dir().join(format!("ok-{}.hex", file_name(*opcode)));
        assert!(path.exists(), "missing {}", path.display());
        let (bytes, _) = parse_vector(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(bytes.get(5), Some(&opcode.to_wire()), "{}", path.display());
    }
}

fn file_name(opcode: Opcode) -> String {
    opcode.name().to_ascii_lowercase().replace('_', "-")
}

// ---------------------------------------------------------------------------------------
// Streaming

#[test]
fn every_prefix_is_incomplete_with_the_right_count() {
    let frame = sample_put();
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    for cut in 0..bytes.len() {
        match decode(&bytes[..cut]) {
            Ok(Decoded::Incomplete { needed }) if cut >= HEADER_BYTES => {
                assert_eq!(needed, bytes.len() - cut)
            }
            Ok(Decoded::Incomplete { needed }) => assert_eq!(needed, HEADER_BYTES - cut),
            other => panic!("prefix of {cut} bytes: {other:?}"),
        }
    }
}

#[test]
fn pipelined_frames_decode_one_after_another() {
    let mut buf = Vec::new();
    let frames = [sample_get(), sample_put(), sample_get()];
    for frame in &frames {
        frame.encode(&mut buf).unwrap();
    }
    let mut rest = &buf[..];
    for want in &frames {
        let Ok(Decoded::Frame { frame, consumed }) = decode(rest) else {
            panic!("expected a frame")
        };
        assert_eq!(&frame, want);
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty());
}

#[test]
fn stream_errors_say_whether_the_connection_survives() {
    // A stranger's protocol: refused from the first byte, stream lost.
    let err = decode(b"G").unwrap_err();
    assert_eq!((err.error, err.must_close()), (Error::BadMagic, true));

    // An oversized length: refused from the header alone, before any body is buffered.
    let mut bytes = Vec::new();
    sample_get().encode(&mut bytes).unwrap();
    let too_long = u32::try_from(FRAME_BODY_BYTES_MAX + 1).unwrap();
    bytes[12..16].copy_from_slice(&too_long.to_le_bytes());
    let err = decode(&bytes[..HEADER_BYTES]).unwrap_err();
    assert_eq!(err.error, Error::FrameTooLarge);
    assert_eq!(err.request_id, Some(1));
    assert!(err.must_close());

    // A bad body inside a well-framed frame: skippable, and the id is known for the reply.
    let mut bytes = Vec::new();
    sample_get().encode(&mut bytes).unwrap();
    bytes.push(0);
    bytes[12] += 1;
    let err = decode(&bytes).unwrap_err();
    assert_eq!(err.error, Error::TrailingBytes);
    assert_eq!(err.error.code(), ErrorCode::Malformed);
    assert_eq!((err.request_id, err.skip), (Some(1), Some(bytes.len())));

    // The answer names the request and the code, and is itself a valid frame.
    let reply = err.reply();
    assert_eq!(reply.request_id, 1);
    let Message::Error(body) = &reply.message else {
        panic!("an ERROR reply")
    };
    assert_eq!(body.code, ErrorCode::Malformed);
    let mut out = Vec::new();
    reply.encode(&mut out).unwrap();
    assert!(matches!(decode(&out), Ok(Decoded::Frame { consumed, .. }) if consumed == out.len()));
}

#[test]
fn opcode_classes_follow_the_numbering() {
    for op in Opcode::ALL {
        let code = op.to_wire();
        assert_eq!(op.is_reply(), code >= 0x80, "{op:?}");
        if *op != Opcode::Error && op.is_reply() {
            // Every reply answers the request numbered without the high bit.
            let request = Opcode::from_wire(code & 0x7f).expect("its request exists");
            assert!(!request.is_reply());
            assert_eq!(request.is_peer_only(), op.is_peer_only());
        }
    }
    assert!(!Opcode::Get.is_peer_only() && !Opcode::Error.is_peer_only());
    assert!(Opcode::ReplicaWrite.is_peer_only() && Opcode::Pong.is_peer_only());
}

// ---------------------------------------------------------------------------------------
// Limits

#[test]
fn encode_refuses_what_decode_would_refuse_and_leaves_the_buffer_alone() {
    let key = vec![0u8; KEY_BYTES_MAX + 1];
    let mut out = vec![1, 2, 3];
    let get = Get {
        options: Options {
            n: 0,
            quorum: 0,
            timeout_ms: 0,
        },
        key: &key,
    };
    assert_eq!(encode(7, &get.into(), &mut out), Err(Error::TooLarge));
    assert_eq!(out, [1, 2, 3]);

    let value: &[u8] = b"v";
    let siblings = vec![value; SIBLINGS_MAX + 1];
    let reply = GetReply {
        siblings: List::Borrowed(&siblings),
        context: b"",
    };
    assert_eq!(encode(7, &reply.into(), &mut out), Err(Error::TooMany));
    assert_eq!(out, [1, 2, 3]);

    let topology = TopologyReply {
        epoch: 1,
        nodes: List::Borrowed(&[]),
        owners: List::Borrowed(&[Owner { node: 0, shard: 0 }]),
    };
    assert_eq!(
        encode(7, &topology.into(), &mut out),
        Err(Error::Inconsistent)
    );
}

#[test]
fn limits_are_inclusive() {
    let key = vec![b'k'; KEY_BYTES_MAX];
    let value = vec![b'v'; crate::constants::VALUE_BYTES_MAX];
    let put = Frame {
        request_id: 3,
        message: Put {
            options: Options {
                n: 0,
                quorum: 0,
                timeout_ms: 0,
            },
            return_context: false,
            key: &key,
            context: b"",
            value: &value,
        }
        .into(),
    };
    let mut bytes = Vec::new();
    put.encode(&mut bytes)
        .expect("a key and a value at their limits encode");
    let Ok(Decoded::Frame { frame, consumed }) = decode(&bytes) else {
        panic!("a key and a value at their limits decode")
    };
    assert_eq!((frame, consumed), (put, bytes.len()));
}

#[test]
fn encode_refuses_a_body_over_the_frame_limit() {
    let value = vec![7u8; crate::constants::VALUE_BYTES_MAX];
    let siblings = vec![&value[..]; SIBLINGS_MAX];
    let reply = GetReply {
        siblings: List::Borrowed(&siblings),
        context: b"",
    };
    let mut out = Vec::new();
    assert_eq!(
        encode(7, &reply.into(), &mut out),
        Err(Error::FrameTooLarge)
    );
    assert!(out.is_empty());
}

#[test]
fn error_codes_are_stable() {
    let numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.to_wire()).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4, 5, 16, 17, 18, 19, 20, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42]
    );
    assert!(ErrorCode::Overloaded.retry_safe());
    assert!(!ErrorCode::Indeterminate.retry_safe());
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_messages_round_trip(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let frame = Frame::arbitrary(&data);
        let mut bytes = Vec::new();
        match frame.encode(&mut bytes) {
            Ok(()) => {
                let decoded = decode(&bytes);
                prop_assert_eq!(
                    decoded,
                    Ok(Decoded::Frame { frame, consumed: bytes.len() })
                );
            }
            // Only a topology's owners can disagree with its node list.
            Err(err) => prop_assert_eq!(err, Error::Inconsistent),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        check_no_panic_and_exact(&data);
    }

    #[test]
    fn arbitrary_bodies_never_panic(
        opcode in proptest::sample::select(Opcode::ALL),
        body in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        // A valid header in front of random bytes reaches every body decoder.
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC);
        data.extend_from_slice(&[VERSION, opcode.to_wire(), 0, 0, 9, 0, 0, 0]);
        data.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        data.extend_from_slice(&body);
        check_no_panic_and_exact(&data);
    }
}

/// Decoding never panics, and whatever decodes re-encodes to exactly the bytes consumed.
fn check_no_panic_and_exact(data: &[u8]) {
    if let Ok(Decoded::Frame { frame, consumed }) = decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out).expect("a decoded frame encodes");
        assert_eq!(&out[..], &data[..consumed]);
    }
}

// ---------------------------------------------------------------------------------------
// Samples, and the generator of the spec's vectors

fn sample_get() -> Frame<'static> {
    Frame {
        request_id: 1,
        message: Get {
            options: Options {
                n: 0,
                quorum: 0,
                timeout_ms: 0,
            },
            key: b"user:42",
        }
        .into(),
    }
}

fn sample_put() -> Frame<'static> {
    Frame {
        request_id: 2,
        message: Put {
            options: Options {
                n: 3,
                quorum: 2,
                timeout_ms: 500,
            },
            return_context: true,
            key: b"user:42",
            context: b"ctx1",
            value: b"carol",
        }
        .into(),
    }
}

mod generate;

#[test]
#[ignore = "rewrites wire-spec/vectors; run by hand when the protocol changes"]
fn regenerate_vectors() {
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for vector in generate::vectors() {
        std::fs::write(dir.join(format!("{}.hex", vector.name)), vector.render()).unwrap();
    }
}
