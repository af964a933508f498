//! Three `rotord` processes on loopback form a cluster through a seed, then a write through
//! one node is read back through the others with N = 3, R = 2, W = 2, and every node's
//! store ends up holding it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Rotord;
use rotor::client::{Client, ClientConfig, RequestOptions};

/// Starts node `id` with `cores` shards, joining through `seed` if given.
fn node(id: u64, cores: &str, seed: Option<SocketAddr>) -> Rotord {
    let id = id.to_string();
    let seed = seed.map(|s| s.to_string());
    let mut flags = vec!["--node-id", &id, "--gossip-interval-ms", "50"];
    if let Some(seed) = &seed {
        flags.extend(["--seeds", seed]);
    }
    Rotord::start_with(cores, &flags)
}

/// A client that sends everything to `addr` (not shard-aware), so the request is
/// coordinated or forwarded by that node.
fn through(addr: SocketAddr) -> Client {
    let config = ClientConfig {
        shard_aware: false,
        ..ClientConfig::default()
    };
    Client::connect_with(addr, config).expect("connect")
}

/// Polls `check` until it holds; fails the test after a generous minute.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stat(client: &mut Client, name: &str) -> u64 {
    client
        .stats()
        .expect("stats")
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

#[test]
fn three_nodes_replicate_a_write_to_every_node() {
    let a = node(1, "1", None);
    let b = node(2, "1", Some(a.listen));
    // Two shards here, so replica traffic also crosses this node's mailbox.
    let c = node(3, "2", Some(a.listen));
    let nodes = [&a, &b, &c];

    for node in nodes {
        let mut client = through(node.listen);
        eventually("every node lists three members", || {
            client
                .refresh_topology()
                .is_ok_and(|topology| topology.nodes.len() == 3)
        });
        let topology = client.topology().clone();
        let mut ids: Vec<u64> = topology.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
        assert!(topology.nodes.iter().all(|n| !n.ports.is_empty()));
    }

    let quorum = |q| RequestOptions {
        n: 3,
        quorum: q,
        timeout_ms: 0,
    };
    // The failure detector may still be settling right after formation: retry the first
    // write until the cluster takes it (each attempt is a blind write of the same value).
    let mut writer = through(a.listen);
    eventually("a write through node 1 succeeds", || {
        writer.put_with(b"fruit", b"apple", None, quorum(2)).is_ok()
    });
    for node in [&b, &c] {
        let mut reader = through(node.listen);
        let read = reader.get_with(b"fruit", quorum(2)).expect("read");
        assert!(
            read.siblings.contains(&b"apple".to_vec()),
            "{:?}",
            read.siblings
        );
    }
    // Every replica holds it: an R = 3 read answers, and each node's store has the key.
    let mut reader = through(c.listen);
    let read = reader.get_with(b"fruit", quorum(3)).expect("R = 3 read");
    assert!(read.siblings.contains(&b"apple".to_vec()));
    for node in nodes {
        let mut client = through(node.listen);
        eventually("the key reaches every node's store", || {
            stat(&mut client, "store.keys") >= 1
        });
        assert_eq!(stat(&mut client, "hints_held"), 0);
    }

    // An update with the read's context replaces the value everywhere.
    let mut writer = through(b.listen);
    writer
        .put_with(b"fruit", b"pear", Some(&read.context), quorum(2))
        .expect("update through node 2");
    let read = through(a.listen)
        .get_with(b"fruit", quorum(3))
        .expect("read through node 1");
    assert_eq!(read.siblings, [b"pear".to_vec()]);
}
