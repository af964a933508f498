//! Anti-entropy refills a wiped replica: three real `rotord` processes (N=3), a few thousand
//! keys written to all three (W=3), then node 3 is killed, its data directory deleted, and
//! it is restarted with the same node id on the same ports. Nothing reads the keys and no
//! hint exists for it (nothing was written while it was down), so neither read repair nor
//! hinted handoff can bring them back: only the Merkle exchanges between replicas can.
//!
//! "Node 3 holds every key" is checked twice: its own STATS count every key (with N=3 on
//! three nodes every node is a replica of every key), and, with nodes 1 and 2 frozen by
//! SIGSTOP, every key read through node 3 with R=1 (which only its own store can answer)
//! has the value written. The refill time is printed, never asserted: the machine is
//! shared and noisy, so the bound below is only there to fail instead of hanging.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{quorum, stat_value, wait_for, Cluster};
use rotor::client::{Op, OpReply};

/// Keys written before the wipe.
const KEYS: usize = 3_000;

/// Keys per pipelined batch of writes.
const BATCH: usize = 250;

/// Time node 3 has to be refilled by anti-entropy alone.
const REFILL_TIMEOUT: Duration = Duration::from_secs(120);

/// Exchange interval of the test cluster: shorter than the default so the 1024 partitions
/// are all compared within seconds, not a minute.
const AE_INTERVAL_MS: &str = "20";

#[test]
fn a_wiped_node_is_refilled_by_anti_entropy_alone() {
    let mut cluster = Cluster::start(3, &["--ae-interval-ms", AE_INTERVAL_MS]);
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|k| format!("ae:{k:05}").into_bytes())
        .collect();
    let value = |k: usize| format!("value of {k}").into_bytes();
    let values: Vec<Vec<u8>> = (0..KEYS).map(value).collect();

    let mut writer = cluster.client_via(0);
    for (chunk, (keys, values)) in keys.chunks(BATCH).zip(values.chunks(BATCH)).enumerate() {
        let ops: Vec<Op<'_>> = keys
            .iter()
            .zip(values)
            .map(|(key, value)| Op::Put {
                key,
                value,
                context: &[],
            })
            .collect();
        for (i, result) in writer
            .batch_with(&ops, quorum(3, 3))
            .into_iter()
            .enumerate()
        {
            match result {
                Ok(OpReply::Written { .. }) => {}
                other => panic!("W=3 write {} failed: {other:?}", chunk * BATCH + i),
            }
        }
    }
    assert_eq!(
        node_keys(&cluster, 2),
        Ok(KEYS as u64),
        "node 3 before the wipe"
    );

    // Node 3 loses everything: process and data directory.
    cluster.kill(2);
    let data = cluster.nodes[2].data.path().to_path_buf();
    for entry in std::fs::read_dir(&data).expect("read node 3's data directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("delete a store directory");
        } else {
            std::fs::remove_file(&path).expect("delete a file");
        }
    }
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0, "wiped");
    let restarted = Instant::now();
    cluster.restart(2);
    eprintln!(
        "node 3 restarted empty and rejoined in {:?}",
        restarted.elapsed()
    );

    let mut last_seen = 0;
    let refilled = wait_for(REFILL_TIMEOUT, || {
        let held = node_keys(&cluster, 2)?;
        if held != last_seen {
            eprintln!("{:>8.1?}: node 3 holds {held} keys", restarted.elapsed());
            last_seen = held;
        }
        match held {
            n if n >= KEYS as u64 => Ok(restarted.elapsed()),
            n => Err(format!("node 3 holds {n} of {KEYS} keys")),
        }
    });
    let refill_time = refilled
        .unwrap_or_else(|e| panic!("node 3 was not refilled within {REFILL_TIMEOUT:?}: {e}"));
    eprintln!("anti-entropy refilled node 3 ({KEYS} keys) in {refill_time:?} after its restart");

    // The refill was anti-entropy's: node 3 merged at least every key.
    let repaired = node_stat(&cluster, 2, "ae_keys_repaired").unwrap();
    assert!(
        repaired >= KEYS as u64,
        "node 3 counts {repaired} keys repaired by anti-entropy, fewer than {KEYS}"
    );
    for (i, node) in cluster.nodes.iter().enumerate() {
        let stats = node.client(true).stats().expect("STATS");
        let figures: Vec<String> = stats
            .iter()
            .filter(|s| s.name.starts_with("ae_") || s.name == "peers_down")
            .map(|s| format!("{}={}", s.name.trim_start_matches("ae_"), s.value))
            .collect();
        eprintln!("node {} anti-entropy: {}", i + 1, figures.join(" "));
    }

    // Read every key from node 3's own store: the others are frozen, R=1.
    cluster.freeze(0);
    cluster.freeze(1);
    let mut reader = cluster.client_via(2);
    let mut wrong = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        match reader.get_with(key, quorum(3, 1)) {
            Ok(read) if read.siblings == vec![value(k)] => {}
            Ok(read) => wrong.push(format!("key {k} reads {:?}", read.siblings)),
            Err(e) => wrong.push(format!("key {k}: {e}")),
        }
    }
    cluster.thaw(0);
    cluster.thaw(1);
    assert!(
        wrong.is_empty(),
        "{} keys read wrong from node 3 alone, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// The keys held by node `i`'s own stores (the sum over its shards).
fn node_keys(cluster: &Cluster, i: usize) -> Result<u64, String> {
    node_stat(cluster, i, "keys")
}

fn node_stat(cluster: &Cluster, i: usize, name: &str) -> Result<u64, String> {
    let node = &cluster.nodes[i];
    let stats = node
        .client(true)
        .stats()
        .map_err(|e| format!("STATS of node {}: {e}", node.id))?;
    stat_value(&stats, name).ok_or_else(|| format!("node {} reports no `{name}`", node.id))
}
