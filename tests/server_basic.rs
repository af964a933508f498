//! A real `rotord` serving the protocol: handshake, put/get/delete with contexts, siblings
//! and their resolution, pipelining by request id, request validation, TOPOLOGY and STATS.

mod server_support;

use rotor::wire::{ErrorCode, Get, Message, Options, Put};
use server_support::{get, put, total, Conn, Reply, Server};

#[test]
fn hello_then_put_get_delete() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &[]);
    let mut conn = Conn::open(server.listen);
    match conn.hello() {
        Reply::Hello {
            node_id,
            shard,
            shard_count,
        } => {
            assert_ne!(node_id, 0);
            assert_eq!((shard, shard_count), (0, 1));
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(conn.get(b"k"), (vec![], vec![]), "a key never written");
    let ctx = conn.put(b"k", b"v1", b"");
    assert!(!ctx.is_empty());
    let (values, read_ctx) = conn.get(b"k");
    assert_eq!(values, [b"v1".to_vec()]);
    assert_eq!(read_ctx, ctx);

    let ctx = conn.put(b"k", b"v2", &read_ctx);
    assert_eq!(
        conn.get(b"k").0,
        [b"v2".to_vec()],
        "the context superseded v1"
    );

    let deleted = conn.delete(b"k", &ctx);
    let (values, tomb_ctx) = conn.get(b"k");
    assert!(values.is_empty(), "deleted");
    assert_eq!(tomb_ctx, deleted, "a tombstone still has a context");
    conn.put(b"k", b"v3", &tomb_ctx);
    assert_eq!(
        conn.get(b"k").0,
        [b"v3".to_vec()],
        "a write after the delete"
    );

    // Empty keys and values are keys and values.
    conn.put(b"", b"", b"");
    assert_eq!(conn.get(b"").0, [Vec::<u8>::new()]);
    assert!(server.stop().success());
}

#[test]
fn concurrent_puts_become_siblings_and_a_put_with_the_read_context_resolves_them() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &[]);
    let mut alice = server.connect();
    let mut bob = server.connect();
    let base = alice.put(b"cart", b"base", b"");
    let (_, seen) = bob.get(b"cart");
    assert_eq!(seen, base);

    // Both write from the same context: neither saw the other.
    alice.put(b"cart", b"alice", &base);
    bob.put(b"cart", b"bob", &seen);
    let (values, ctx) = alice.get(b"cart");
    assert_eq!(values, [b"alice".to_vec(), b"bob".to_vec()]);

    // A blind write (empty context) is one more sibling.
    bob.put(b"cart", b"blind", b"");
    assert_eq!(bob.get(b"cart").0.len(), 3);

    // Writing with the context of the two-sibling read keeps only what it did not see.
    alice.put(b"cart", b"merged", &ctx);
    assert_eq!(
        alice.get(b"cart").0,
        [b"blind".to_vec(), b"merged".to_vec()]
    );
    let (_, all) = alice.get(b"cart");
    alice.put(b"cart", b"final", &all);
    assert_eq!(bob.get(b"cart").0, [b"final".to_vec()]);
    assert!(server.stop().success());
}

#[test]
fn pipelined_requests_are_answered_by_request_id() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &[]);
    let mut conn = Conn::open(server.listen);
    // HELLO and requests right behind it, without waiting.
    let mut batch = Vec::new();
    rotor::wire::encode(7, &server_support::hello(), &mut batch).unwrap();
    let keys: Vec<Vec<u8>> = (0..200u32)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    for (i, key) in (1000u32..).zip(&keys) {
        rotor::wire::encode(i, &put(key, key, b""), &mut batch).unwrap();
    }
    conn.send_raw(&batch);
    let (id, reply) = conn.recv().unwrap();
    assert_eq!(id, 7);
    assert!(matches!(reply, Reply::Hello { .. }));
    let mut ids: Vec<u32> = (0..keys.len())
        .map(|_| {
            let (id, reply) = conn.recv().unwrap();
            assert!(matches!(reply, Reply::Put(_)), "{reply:?}");
            id
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1000..1200).collect::<Vec<u32>>());

    // Gets of every key, pipelined, each reply names its key's request.
    for (i, key) in (0u32..).zip(&keys) {
        conn.send(i * 3 + 1, &get(key));
    }
    for _ in 0..keys.len() {
        let (id, reply) = conn.recv().unwrap();
        let key = &keys[((id - 1) / 3) as usize];
        match reply {
            Reply::Get { siblings, .. } => assert_eq!(&siblings, std::slice::from_ref(key)),
            other => panic!("{other:?}"),
        }
    }
    assert!(server.stop().success());
}

#[test]
fn requests_are_validated() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &[]);

    // Anything before HELLO: HANDSHAKE_REQUIRED, then the connection closes.
    let mut early = Conn::open(server.listen);
    early.send(5, &get(b"k"));
    match early.recv() {
        Some((5, Reply::Error { code, .. })) => assert_eq!(code, ErrorCode::HandshakeRequired),
        other => panic!("{other:?}"),
    }
    assert_eq!(early.recv(), None);

    let mut conn = server.connect();
    let with = |n, quorum| Options {
        n,
        quorum,
        timeout_ms: 0,
    };
    let refused =
        |conn: &mut Conn, options| match conn.call(&Message::Get(Get { options, key: b"k" })) {
            Reply::Error {
                code,
                answered,
                needed,
                ..
            } => (code, answered, needed),
            other => panic!("{other:?}"),
        };
    assert_eq!(
        refused(&mut conn, with(3, 0)),
        (ErrorCode::Unavailable, 1, 3),
        "N above the node count"
    );
    assert_eq!(
        refused(&mut conn, with(17, 1)).0,
        ErrorCode::InvalidArgument
    );
    assert_eq!(refused(&mut conn, with(1, 2)).0, ErrorCode::InvalidArgument);
    // N = R = 1 explicitly is what a one-node server serves.
    assert!(matches!(
        conn.call(&Message::Get(Get {
            options: with(1, 1),
            key: b"k"
        })),
        Reply::Get { .. }
    ));

    // A corrupt context is refused, and nothing is written.
    match conn.call(&Message::Put(Put {
        options: with(0, 0),
        return_context: false,
        key: b"k",
        context: b"not a context",
        value: b"v",
    })) {
        Reply::Error { code, .. } => assert_eq!(code, ErrorCode::BadContext),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.get(b"k").0, Vec::<Vec<u8>>::new());

    // Without return_context the reply carries an empty context.
    match conn.call(&Message::Put(Put {
        options: with(0, 0),
        return_context: false,
        key: b"k",
        context: b"",
        value: b"v",
    })) {
        Reply::Put(context) => assert!(context.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(server.stop().success());
}

#[test]
fn too_many_siblings_are_refused_until_resolved() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &[]);
    let mut conn = server.connect();
    for i in 0..rotor::constants::SIBLINGS_MAX {
        conn.put(b"hot", format!("{i}").as_bytes(), b"");
    }
    match conn.call(&put(b"hot", b"one too many", b"")) {
        Reply::Error { code, .. } => assert_eq!(code, ErrorCode::TooManySiblings),
        other => panic!("{other:?}"),
    }
    let (values, ctx) = conn.get(b"hot");
    assert_eq!(values.len(), rotor::constants::SIBLINGS_MAX);
    conn.put(b"hot", b"resolved", &ctx);
    assert_eq!(conn.get(b"hot").0, [b"resolved".to_vec()]);
    assert!(server.stop().success());
}

#[test]
fn topology_and_stats_describe_the_node() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &[]);
    let (ports, owners) = server.topology();
    assert_eq!(ports.len(), 1);
    assert_ne!(ports[0], 0);
    assert_eq!(owners.len(), rotor::constants::PARTITIONS_DEFAULT as usize);
    assert!(owners.iter().all(|&s| s == 0));

    let mut conn = server.connect();
    conn.put(b"a", b"1", b"");
    let ctx = conn.put(b"b", b"2", b"");
    conn.delete(b"b", &ctx);
    conn.get(b"a");
    let _ = conn.call(&Message::Get(Get {
        options: Options {
            n: 9,
            quorum: 0,
            timeout_ms: 0,
        },
        key: b"a",
    }));
    let stats = conn.stats();
    assert_eq!(total(&stats, "put.count"), 2);
    assert_eq!(total(&stats, "delete.count"), 1);
    assert_eq!(total(&stats, "get.count"), 1);
    assert_eq!(total(&stats, "error.count"), 1);
    assert_eq!(total(&stats, "store.keys"), 2, "a tombstone is still a key");
    assert!(total(&stats, "store.live_bytes") > 0);
    // The TOPOLOGY connection may not have been seen closing yet.
    assert!(total(&stats, "connections") >= 1);
    assert_eq!(total(&stats, "put.latency.samples"), 3);
    assert!(total(&stats, "put.latency_us.p99") >= 1);
    assert!(stats.iter().any(|(_, n, _)| n == "get.latency_us.p999"));
    assert!(server.stop().success());
}
