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

/// Keys written before node 3 stops, in the purge test; every other one is then deleted.
const PURGE_KEYS: usize = 600;

/// How long node 3 stays down while nodes 1 and 2 hold the tombstones, and must not purge.
const DOWN_WATCH: Duration = Duration::from_secs(6);

/// Time every node has to purge tombstones once node 3 is back: each of the 1024
/// partitions must be compared twice with each peer (one exchange start per interval),
/// about a minute and a half on an idle machine.
const PURGE_TIMEOUT: Duration = Duration::from_secs(420);

/// How long the test then watches for every node to hold no tombstone (reported only).
const SETTLE_WATCH: Duration = Duration::from_secs(60);

/// Tombstones are purged only once anti-entropy has confirmed them at every replica:
/// three nodes (N=3) hold a few hundred keys (W=3); node 3 is killed and half the keys
/// are deleted (W=2), so nodes 1 and 2 hold tombstones that node 3 lacks (it still holds
/// the values). While node 3 is down no tombstone may go. Once it is back, anti-entropy
/// (and hinted handoff) bring it the tombstones, every node confirms them with both peers
/// and purges them, and no deleted key comes back: each reads absent through every node
/// with R=3, and each kept key still reads its value. (That all three end with no
/// tombstone is printed, not asserted: see the wait below.)
#[test]
fn tombstones_are_purged_only_once_every_replica_holds_them() {
    let mut cluster = Cluster::start(3, &["--ae-interval-ms", AE_INTERVAL_MS]);
    let keys: Vec<Vec<u8>> = (0..PURGE_KEYS)
        .map(|k| format!("purge:{k:04}").into_bytes())
        .collect();
    let value = |k: usize| format!("kept value {k}").into_bytes();
    let values: Vec<Vec<u8>> = (0..PURGE_KEYS).map(value).collect();
    let deleted = |k: usize| k.is_multiple_of(2);

    let mut writer = cluster.client_via(0);
    let mut contexts: Vec<Vec<u8>> = Vec::with_capacity(PURGE_KEYS);
    for (keys, values) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let ops: Vec<Op<'_>> = keys
            .iter()
            .zip(values)
            .map(|(key, value)| Op::Put {
                key,
                value,
                context: &[],
            })
            .collect();
        for result in writer.batch_with(&ops, quorum(3, 3)) {
            match result {
                Ok(OpReply::Written { context }) => contexts.push(context),
                other => panic!("W=3 write {} failed: {other:?}", contexts.len()),
            }
        }
    }
    assert_eq!(node_keys(&cluster, 2), Ok(PURGE_KEYS as u64), "node 3");

    cluster.kill(2);
    let doomed: Vec<usize> = (0..PURGE_KEYS).filter(|&k| deleted(k)).collect();
    for &k in &doomed {
        let mut attempt = 0;
        loop {
            match writer.delete_with(&keys[k], &contexts[k], quorum(3, 2)) {
                Ok(_) => break,
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    eprintln!("delete of key {k} failed ({e}), retrying");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("W=2 delete of key {k} failed: {e}"),
            }
        }
    }
    let tombstones = doomed.len() as u64;

    // Node 3 is down: its comparisons fail, so nothing may be purged however long it waits.
    let watch = Instant::now();
    while watch.elapsed() < DOWN_WATCH {
        for i in 0..2 {
            let held = node_stat(&cluster, i, "tombstones").unwrap();
            let purged = node_stat(&cluster, i, "ae_tombstones_purged").unwrap();
            assert_eq!(
                (held, purged),
                (tombstones, 0),
                "node {} (tombstones held, purged) while node 3 is down",
                i + 1
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let restarted = Instant::now();
    cluster.restart(2);
    let mut last = Vec::new();
    let figures = |cluster: &Cluster| -> Result<Vec<(u64, u64)>, String> {
        (0..3)
            .map(|i| {
                Ok((
                    node_stat(cluster, i, "tombstones")?,
                    node_stat(cluster, i, "ae_tombstones_purged")?,
                ))
            })
            .collect()
    };
    // Every node purges once node 3 is back and confirmed. Whether all three end with
    // none is printed, not asserted: a node that purged before a peer did gets the
    // tombstone back from that peer's next exchange (the rule's documented window), and
    // today nothing makes the three purges line up.
    let purging = wait_for(PURGE_TIMEOUT, || {
        let now = figures(&cluster)?;
        if now != last {
            eprintln!(
                "{:>8.1?}: (tombstones, purged) per node {now:?}",
                restarted.elapsed()
            );
            last = now.clone();
        }
        match now.iter().all(|&(_, purged)| purged > 0) {
            true => Ok(restarted.elapsed()),
            false => Err(format!("(tombstones, purged) per node {now:?}")),
        }
    });
    let purge_time =
        purging.unwrap_or_else(|e| panic!("not every node purged within {PURGE_TIMEOUT:?}: {e}"));
    eprintln!("every node purged tombstones {purge_time:?} after node 3's restart");
    let all_gone = wait_for(SETTLE_WATCH, || match figures(&cluster)? {
        now if now.iter().all(|&(held, _)| held == 0) => Ok(restarted.elapsed()),
        now => Err(format!("(tombstones, purged) per node {now:?}")),
    });
    eprintln!("all tombstones gone from every node: {all_gone:?}");

    let mut wrong = Vec::new();
    for i in 0..3 {
        let mut reader = cluster.client_via(i);
        for (k, key) in keys.iter().enumerate() {
            let expected: Vec<Vec<u8>> = match deleted(k) {
                true => Vec::new(),
                false => vec![value(k)],
            };
            match reader.get_with(key, quorum(3, 3)) {
                Ok(read) if read.siblings == expected => {}
                Ok(read) => wrong.push(format!(
                    "key {k} via node {} reads {:?}",
                    i + 1,
                    read.siblings
                )),
                Err(e) => wrong.push(format!("key {k} via node {}: {e}", i + 1)),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} reads wrong after the purge, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // Each node holds every kept key, and at most a tombstone per deleted key.
    let kept = (PURGE_KEYS - doomed.len()) as u64;
    for i in 0..3 {
        let held = node_keys(&cluster, i).unwrap();
        assert!(
            (kept..=kept + tombstones).contains(&held),
            "node {} holds {held} keys",
            i + 1
        );
    }
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
