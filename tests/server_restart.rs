//! Restarts of a real `rotord`: a graceful stop keeps everything, a `kill -9` under
//! `--fsync always` keeps every acknowledged write, and a store that was not closed cleanly
//! under group commit coordinates new writes under a new incarnation (actor).

mod server_support;

use std::collections::BTreeMap;

use rotor::causal::Context;
use server_support::{put, Reply, Server};

#[test]
fn a_graceful_restart_keeps_the_data() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &[]);
    let mut conn = server.connect();
    let mut want = BTreeMap::new();
    for i in 0..300u32 {
        let key = format!("key-{i}").into_bytes();
        let value = format!("value-{i}").into_bytes();
        conn.put(&key, &value, b"");
        want.insert(key, vec![value]);
    }
    // Siblings and a deletion survive too.
    conn.put(b"key-1", b"sibling", b"");
    want.insert(
        b"key-1".to_vec(),
        vec![b"sibling".to_vec(), b"value-1".to_vec()],
    );
    let (_, ctx) = conn.get(b"key-2");
    conn.delete(b"key-2", &ctx);
    want.insert(b"key-2".to_vec(), vec![]);
    let (_, ctx_before) = conn.get(b"key-3");
    drop(conn);
    assert!(server.stop().success(), "SIGTERM exits 0");

    let server = Server::start(data.path(), 1, &[]);
    let mut conn = server.connect();
    for (key, values) in &want {
        assert_eq!(&conn.get(key).0, values, "{}", String::from_utf8_lossy(key));
    }
    // A clean stop keeps the incarnation: the next write names the same single actor.
    let ctx_after = conn.put(b"key-3", b"again", &ctx_before);
    assert_eq!(actors(&ctx_before), 1);
    assert_eq!(actors(&ctx_after), 1, "same incarnation after a clean stop");
    assert_eq!(conn.get(b"key-3").0, [b"again".to_vec()]);
    assert!(server.stop().success());
}

#[test]
fn kill_9_with_fsync_always_keeps_every_acknowledged_write() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &["--fsync", "always"]);
    let mut conn = server.connect();
    // Pipelined writes, 32 in flight; the kill lands while some are unanswered.
    let mut acked = Vec::new();
    let mut sent = 0u32;
    let window = 32u32;
    let total = 400u32;
    let key = |i: u32| format!("k{i}").into_bytes();
    while sent < window {
        conn.send(sent, &put(&key(sent), &key(sent), b""));
        sent += 1;
    }
    while acked.len() < 200 {
        let (id, reply) = conn.recv().expect("reply");
        assert!(matches!(reply, Reply::Put(_)), "{reply:?}");
        acked.push(id);
        if sent < total {
            conn.send(sent, &put(&key(sent), &key(sent), b""));
            sent += 1;
        }
    }
    server.kill();
    // Replies that were already in the socket count as acknowledged too.
    while let Some((id, reply)) = conn.recv() {
        if matches!(reply, Reply::Put(_)) {
            acked.push(id);
        }
    }

    let server = Server::start(data.path(), 1, &["--fsync", "always"]);
    let mut conn = server.connect();
    for &id in &acked {
        assert_eq!(
            conn.get(&key(id)).0,
            [key(id)],
            "acknowledged write {id} lost"
        );
    }
    assert!(server.stop().success());
}

#[test]
fn after_an_unclean_stop_under_group_commit_new_writes_use_a_new_actor() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 1, &["--fsync", "group"]);
    let mut conn = server.connect();
    // Acknowledged under group commit: synced before the reply.
    let ctx = conn.put(b"k", b"before", b"");
    assert_eq!(actors(&ctx), 1);
    server.kill();

    let server = Server::start(data.path(), 1, &["--fsync", "group"]);
    let mut conn = server.connect();
    let (values, read) = conn.get(b"k");
    assert_eq!(values, [b"before".to_vec()], "acknowledged, so synced");
    let ctx = conn.put(b"k", b"after", &read);
    assert_eq!(
        actors(&ctx),
        2,
        "the restarted store may have lost counters it issued: a new actor coordinates"
    );
    assert_eq!(conn.get(b"k").0, [b"after".to_vec()]);
    assert!(server.stop().success());
}

/// Actors a context names.
fn actors(context: &[u8]) -> usize {
    Context::decode_opaque(context)
        .expect("a valid context")
        .actor_count()
}
