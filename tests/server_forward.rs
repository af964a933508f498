//! Two shards: every shard answers for every key, forwarding over the mailbox what it does
//! not own, and a shard-aware client reaches the owner directly on its per-shard port.

mod server_support;

use std::net::SocketAddr;

use server_support::{partition, total, Conn, Reply, Server};

#[test]
fn wrong_shard_requests_are_forwarded_to_the_owner() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 2, &[]);
    let (ports, owners) = server.topology();
    assert_eq!(ports.len(), 2);
    assert!(
        owners.contains(&0) && owners.contains(&1),
        "both shards own partitions"
    );

    let keys: Vec<Vec<u8>> = (0..64u32).map(|i| format!("k{i}").into_bytes()).collect();
    let owner = |key: &[u8]| owners[partition(key)];
    assert!(keys.iter().any(|k| owner(k) == 0) && keys.iter().any(|k| owner(k) == 1));

    let mut by_shard: Vec<Conn> = ports
        .iter()
        .map(|&port| {
            let mut conn = Conn::open(SocketAddr::from(([127, 0, 0, 1], port)));
            conn.hello();
            conn
        })
        .collect();
    for (shard, conn) in (0u16..).zip(by_shard.iter_mut()) {
        // The per-shard port reaches its shard.
        match conn.hello() {
            Reply::Hello {
                shard: served,
                shard_count,
                ..
            } => assert_eq!((served, shard_count), (shard, 2)),
            other => panic!("{other:?}"),
        }
    }

    // Every key written through shard 0's port and read through shard 1's (and back).
    for key in &keys {
        let ctx = by_shard[0].put(key, key, b"");
        let (values, read) = by_shard[1].get(key);
        assert_eq!(&values, std::slice::from_ref(key));
        assert_eq!(read, ctx, "the same state, whichever shard answered");
        by_shard[1].put(key, b"second", &read);
        assert_eq!(by_shard[0].get(key).0, [b"second".to_vec()]);
    }

    let stats = by_shard[0].stats();
    let of = |shard: u16, name: &str| {
        stats
            .iter()
            .find(|(s, n, _)| *s == shard && n == name)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name} for shard {shard}"))
    };
    let owned_by = |shard| keys.iter().filter(|k| owner(k) == shard).count() as u64;
    // Shard 0 forwarded its half-keys' requests it did not own: one PUT and one GET per key.
    assert_eq!(of(0, "forwarded.count"), 2 * owned_by(1));
    assert_eq!(of(1, "forwarded.count"), 2 * owned_by(0));
    // Each owner executed all four requests of each of its keys.
    assert_eq!(of(0, "put.count"), 2 * owned_by(0));
    assert_eq!(of(1, "put.count"), 2 * owned_by(1));
    assert_eq!(of(0, "store.keys"), owned_by(0));
    assert_eq!(of(1, "store.keys"), owned_by(1));
    assert_eq!(total(&stats, "get.count"), 2 * keys.len() as u64);
    assert!(server.stop().success());
}

#[test]
fn a_restart_with_another_shard_count_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), 2, &[]);
    server.connect().put(b"k", b"v", b"");
    assert!(server.stop().success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotord"))
        .args(["--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cores 2"), "{err}");
}
