//! Nothing that arrives on a socket harms a real `rotord`: malformed frames, oversized
//! lengths and bad magic get an `ERROR` frame (then the connection closes), unknown opcodes
//! and peer messages get an `ERROR` and the connection goes on, and 10 000 random frames
//! (seeded) leave the server serving.

mod server_support;

use rotor::wire::{self, ErrorCode, Frame, Message, Ping};
use server_support::{get, hello, total, Conn, Reply, Server};

/// The reply to `bytes` sent after a handshake, and whether the server then closed.
fn after_hello(server: &Server, bytes: &[u8]) -> (Reply, bool) {
    let mut conn = server.connect();
    conn.send_raw(bytes);
    let (_, reply) = conn.recv().expect("an error frame before the close");
    conn.finish();
    (reply, conn.recv().is_none())
}

fn code(reply: &Reply) -> ErrorCode {
    match reply {
        Reply::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn frame(id: u32, message: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(id, message, &mut out).unwrap();
    out
}

#[test]
fn malformed_frames_get_error_frames_and_the_server_survives() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), 1, &[]);

    // Bad magic: the stream is lost; MALFORMED with request id 0, then the close.
    let (reply, closed) = after_hello(&server, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(code(&reply), ErrorCode::Malformed);
    assert!(closed);

    // A length over the frame limit: TOO_LARGE before any body is read, then the close.
    let mut oversized = frame(9, &get(b"k"));
    oversized[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let (reply, closed) = after_hello(&server, &oversized);
    assert_eq!(code(&reply), ErrorCode::TooLarge);
    assert!(closed);

    // A sound header with a truncated body: MALFORMED naming the request, then the close.
    let mut truncated = frame(11, &get(b"key"));
    truncated.pop();
    let body_len = u32::try_from(truncated.len() - wire::HEADER_BYTES).unwrap();
    truncated[12..16].copy_from_slice(&body_len.to_le_bytes());
    let mut conn = server.connect();
    conn.send_raw(&truncated);
    match conn.recv() {
        Some((11, reply)) => assert_eq!(code(&reply), ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.recv(), None);

    // Another protocol version: UNSUPPORTED_VERSION, then the close.
    let mut v2 = frame(3, &get(b"k"));
    v2[4] = 2;
    let (reply, closed) = after_hello(&server, &v2);
    assert_eq!(code(&reply), ErrorCode::UnsupportedVersion);
    assert!(closed);

    // An unknown opcode has known bounds: the connection goes on.
    let mut unknown = frame(4, &get(b"k"));
    unknown[5] = 0x7e;
    let mut conn = server.connect();
    conn.send_raw(&unknown);
    match conn.recv() {
        Some((4, reply)) => assert_eq!(code(&reply), ErrorCode::UnknownOpcode),
        other => panic!("{other:?}"),
    }
    // So does a peer message on a client connection.
    let ping = Message::Ping(Ping {
        nonce: 1,
        sender: 2,
    });
    assert_eq!(code(&conn.call(&ping)), ErrorCode::Unsupported);
    assert_eq!(conn.get(b"k").0, Vec::<Vec<u8>>::new(), "still serving");

    // A peer HELLO from another cluster is refused (the node is in cluster 1 by
    // default); a HELLO of other versions too.
    for (role, min, max, want) in [
        (wire::Role::Peer, 1, 1, ErrorCode::WrongCluster),
        (wire::Role::Client, 2, 3, ErrorCode::UnsupportedVersion),
    ] {
        let mut conn = Conn::open(server.listen);
        let hello = Message::Hello(wire::Hello {
            version_min: min,
            version_max: max,
            role,
            features: 0,
            cluster_id: 7,
            node_id: 8,
        });
        assert_eq!(code(&conn.call(&hello)), want);
        assert_eq!(conn.recv(), None);
    }

    assert!(server.is_running());
    let mut conn = server.connect();
    conn.put(b"after", b"all that", b"");
    assert_eq!(conn.get(b"after").0, [b"all that".to_vec()]);
    assert!(server.stop().success());
}

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One random frame: pure noise, a valid frame of any opcode, or a valid frame with some
/// bytes flipped, its body cut short or its length field rewritten.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let seed = rng.bytes(64);
    let mut bytes = Vec::new();
    // Some arbitrary frames cannot encode (fields that must agree): use noise then.
    if wire::encode(
        rng.next() as u32,
        &Frame::arbitrary(&seed).message,
        &mut bytes,
    )
    .is_err()
    {
        bytes = seed.clone();
    }
    match rng.below(6) {
        0 => {
            let n = rng.below(80) as usize;
            rng.bytes(n)
        }
        1 | 2 => bytes,
        3 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            bytes
        }
        4 => {
            let keep = rng.below(bytes.len() as u64 + 1) as usize;
            bytes.truncate(keep);
            bytes
        }
        _ => {
            if bytes.len() >= wire::HEADER_BYTES {
                let len = rng.below(1 << 25) as u32;
                bytes[12..16].copy_from_slice(&len.to_le_bytes());
            }
            bytes
        }
    }
}

#[test]
fn ten_thousand_random_frames_never_kill_the_server() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), 1, &[]);
    let mut rng = Rng(0x005e_ed0f_4077_u64);
    let mut errors = 0u64;
    let mut frames = 0;
    while frames < 10_000 {
        let mut conn = Conn::open(server.listen);
        // Most connections handshake first, so requests get past the HELLO check.
        let mut batch = if rng.below(8) == 0 {
            Vec::new()
        } else {
            frame(0, &hello())
        };
        for _ in 0..5 {
            batch.extend(random_frame(&mut rng));
            frames += 1;
        }
        conn.send_raw(&batch);
        conn.finish();
        // Whatever comes back must be valid frames; the server ends the connection.
        while let Some((_, reply)) = conn.recv() {
            if matches!(reply, Reply::Error { .. }) {
                errors += 1;
            }
        }
    }
    assert!(errors > 1000, "most random frames are refused: {errors}");
    assert!(server.is_running());
    let mut conn = server.connect();
    conn.put(b"still", b"here", b"");
    assert_eq!(conn.get(b"still").0, [b"here".to_vec()]);
    let stats = conn.stats();
    assert!(total(&stats, "error.count") > 1000);
    assert!(server.stop().success());
}
