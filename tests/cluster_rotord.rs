//! Three real `rotord` processes on loopback (N=3, R=2, W=2), driven through the bundled
//! client: any node takes any request; concurrent writes surface as siblings; with one node
//! killed by SIGKILL writes still succeed and reads stay correct; once it is back, the hints
//! drain and every replica holds every acknowledged write; and a node of another cluster
//! never joins.
//!
//! "Every replica holds it" is checked one node at a time: the two others are frozen with
//! SIGSTOP and the key is read through the remaining one with R=1. With N=3 on three nodes
//! every node is a replica of every key, and a frozen node answers nothing, so the value
//! read can only come from that node's own store (an R=3 read would not prove it: the
//! coordinator merges the replies, so one complete replica hides two empty ones).
//!
//! Every wait is bounded (see tests/common/cluster.rs); no assertion is about time.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{quorum, wait_for, Cluster, GOSSIP_INTERVAL_MS};
use rotor::client::{Client, ClientConfig};

/// Keys written before the crash, rewritten during it.
const KEYS_BEFORE: usize = 200;

/// Keys first written while a node is down.
const KEYS_DURING: usize = 100;

/// Time the surviving nodes have to hand their hints to the restarted node.
const HINTS_DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn any_node_serves_any_key_and_concurrent_writes_become_siblings() {
    let cluster = Cluster::start(3, &[]);
    let mut via: Vec<Client> = (0..3).map(|i| cluster.client_via(i)).collect();

    // Written through each node, read back through each of the others.
    for writer in 0..3 {
        for k in 0..20 {
            let key = format!("through:{writer}:{k}").into_bytes();
            let value = format!("value {writer} {k}").into_bytes();
            via[writer]
                .put(&key, &value, None)
                .unwrap_or_else(|e| panic!("put {key:?} through node {}: {e}", writer + 1));
            for reader in (0..3).filter(|&r| r != writer) {
                let read = via[reader]
                    .get(&key)
                    .unwrap_or_else(|e| panic!("get {key:?} through node {}: {e}", reader + 1));
                assert_eq!(
                    read.siblings,
                    vec![value.clone()],
                    "{key:?} written through node {} and read through node {}",
                    writer + 1,
                    reader + 1
                );
            }
        }
    }

    // Two writers start from the same read; the second writes with a stale context, so
    // neither value supersedes the other.
    let key = b"fruit";
    via[0].put(key, b"apple", None).unwrap();
    let base = via[1].get(key).unwrap();
    assert_eq!(base.siblings, vec![b"apple".to_vec()]);
    via[1].put(key, b"pear", Some(&base.context)).unwrap();
    via[2].put(key, b"plum", Some(&base.context)).unwrap();
    for (i, client) in via.iter_mut().enumerate() {
        let mut siblings = client.get(key).unwrap().siblings;
        siblings.sort();
        assert_eq!(
            siblings,
            vec![b"pear".to_vec(), b"plum".to_vec()],
            "siblings read through node {}",
            i + 1
        );
    }
    // A write with the context of a read that saw both resolves them everywhere.
    let both = via[0].get(key).unwrap();
    via[2].put(key, b"fig", Some(&both.context)).unwrap();
    for (i, client) in via.iter_mut().enumerate() {
        assert_eq!(
            client.get(key).unwrap().siblings,
            vec![b"fig".to_vec()],
            "resolved value read through node {}",
            i + 1
        );
    }

    // The same through the client's own routing (to each key's owner shard).
    let mut routed = cluster.nodes[2].client(false);
    assert_eq!(routed.topology().nodes.len(), 3);
    for k in 0..50 {
        let key = format!("routed:{k}").into_bytes();
        routed.put(&key, b"r", None).unwrap();
        assert_eq!(via[k % 3].get(&key).unwrap().siblings, vec![b"r".to_vec()]);
    }
}

#[test]
fn writes_succeed_and_reads_stay_correct_with_a_node_killed() {
    let mut cluster = Cluster::start(3, &[]);
    let expected = write_through_a_crash(&mut cluster);
    // The two survivors each hold every write (N=3, so both are replicas of every key).
    for holder in [0, 2] {
        assert_replica_holds(&cluster, holder, &expected);
    }
}

#[test]
fn a_killed_node_misses_nothing_once_it_is_back() {
    let mut cluster = Cluster::start(3, &[]);
    let expected = write_through_a_crash(&mut cluster);
    // A write whose replica on node 2 stayed silent is hinted at its deadline (or at once
    // once the failure detector marked node 2 down): hints must appear while it is down.
    let held = wait_for(HINTS_DRAIN_TIMEOUT, || {
        match cluster.stat_sum("hints_held", 1) {
            Ok(0) => Err("no hint held for node 2".to_string()),
            Ok(n) => Ok(n),
            Err(e) => Err(e),
        }
    });
    let held = held.unwrap_or_else(|e| panic!("writes made while node 2 was down: {e}"));
    eprintln!("hints held by nodes 1 and 3 while node 2 is down: {held}");

    // Back on the same ports and data; nothing is read until the hints are delivered, so
    // read repair cannot stand in for hinted handoff.
    cluster.restart(1);
    let drained = wait_for(HINTS_DRAIN_TIMEOUT, || {
        match cluster.stat_sum("hints_held", 1) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("{n} hints still held")),
            Err(e) => Err(e),
        }
    });
    if let Err(last) = drained {
        panic!("hints held by nodes 1 and 3 did not drain within {HINTS_DRAIN_TIMEOUT:?}: {last}");
    }

    for holder in 0..3 {
        assert_replica_holds(&cluster, holder, &expected);
    }
}

/// Writes keys through node 1, kills node 2 with SIGKILL, then reads every key (R=2) and
/// rewrites it with the read's context (W=2), writes new keys, and reads them all back,
/// each step asserting success. Returns the last acknowledged value of every key.
fn write_through_a_crash(cluster: &mut Cluster) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();

    let mut writer = cluster.client_via(0);
    for k in 0..KEYS_BEFORE {
        let (key, value) = (key(k), format!("first {k}").into_bytes());
        writer.put(&key, &value, None).unwrap();
        expected.insert(key, value);
    }

    // Node 2 dies without syncing or telling anyone.
    cluster.kill(1);

    // Clients opened after the crash: one reading through node 3, one routing by the ring
    // (its requests for node 2's partitions are refused and go to the next node).
    let mut reader = cluster.client_via(2);
    let mut routed = cluster.nodes[0].client(false);
    for k in 0..KEYS_BEFORE {
        let key = key(k);
        let read = reader
            .get(&key)
            .unwrap_or_else(|e| panic!("R=2 read of {key:?} with node 2 down: {e}"));
        assert_eq!(read.siblings, vec![expected[&key].clone()], "{key:?}");
        let value = format!("second {k}").into_bytes();
        routed
            .put(&key, &value, Some(&read.context))
            .unwrap_or_else(|e| panic!("W=2 write of {key:?} with node 2 down: {e}"));
        expected.insert(key, value);
    }
    for k in KEYS_BEFORE..KEYS_BEFORE + KEYS_DURING {
        let (key, value) = (key(k), format!("during {k}").into_bytes());
        routed
            .put(&key, &value, None)
            .unwrap_or_else(|e| panic!("W=2 write of {key:?} with node 2 down: {e}"));
        expected.insert(key, value);
    }
    assert!(
        routed.reroutes() > 0,
        "the routing client never had to route around node 2"
    );
    let mut other = cluster.client_via(0);
    for (key, value) in &expected {
        let read = other
            .get(key)
            .unwrap_or_else(|e| panic!("R=2 read of {key:?} with node 2 down: {e}"));
        assert_eq!(&read.siblings, &vec![value.clone()], "{key:?}");
    }
    expected
}

#[test]
fn a_node_of_another_cluster_never_joins() {
    let mut cluster = Cluster::start(2, &["--cluster-id", "7"]);
    // The intruder starts first, with node 1 as its seed; node 3, of the right cluster,
    // starts after it. That node 3 joins in the time the intruder had shows the intruder
    // had every chance to.
    let intruder = cluster.start_extra(9, &["--cluster-id", "8"]);
    let third = cluster.start_extra(3, &["--cluster-id", "7"]);
    for i in [0, 1, third] {
        cluster.nodes[i].wait_members(&[1, 2, 3]);
    }
    // Gossip keeps running; the intruder must stay out of every view for many periods.
    let rounds = 30;
    for _ in 0..rounds {
        for i in [0, 1, third] {
            let members = cluster.nodes[i].members().unwrap();
            assert_eq!(
                members,
                vec![1, 2, 3],
                "node {} lists a node of another cluster",
                cluster.nodes[i].id
            );
        }
        let alone = cluster.nodes[intruder].members().unwrap();
        assert_eq!(alone, vec![9], "the node of cluster 8 joined cluster 7");
        std::thread::sleep(Duration::from_millis(GOSSIP_INTERVAL_MS));
    }
    // A client that names cluster 7 is refused by the intruder and accepted by the others.
    let config = ClientConfig {
        cluster_id: 7,
        ..ClientConfig::default()
    };
    assert!(Client::connect_with(cluster.nodes[intruder].listen, config.clone()).is_err());
    Client::connect_with(cluster.nodes[0].listen, config).expect("node 1 is in cluster 7");
}

fn key(k: usize) -> Vec<u8> {
    format!("crash:{k}").into_bytes()
}

/// Reads every key through node `holder` with R=1 while the other running nodes are frozen,
/// so only its own store can answer, and checks the value is the last acknowledged one.
fn assert_replica_holds(cluster: &Cluster, holder: usize, expected: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut client = cluster.client_via(holder);
    let others: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| i != holder && cluster.nodes[i].is_running())
        .collect();
    for &i in &others {
        cluster.freeze(i);
    }
    let mut missing = Vec::new();
    for (key, value) in expected {
        match client.get_with(key, quorum(3, 1)) {
            Ok(read) if read.siblings == vec![value.clone()] => {}
            Ok(read) => missing.push(format!(
                "{} holds {:?}",
                String::from_utf8_lossy(key),
                read.siblings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
            )),
            Err(e) => missing.push(format!("{}: {e}", String::from_utf8_lossy(key))),
        }
    }
    for &i in &others {
        cluster.thaw(i);
    }
    assert!(
        missing.is_empty(),
        "node {} lacks {} of {} acknowledged writes, e.g. {:?}",
        cluster.nodes[holder].id,
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
}
