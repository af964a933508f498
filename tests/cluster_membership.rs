//! Membership changes on real `rotord` processes (N=3, R=2, W=2): a fourth node joins a
//! loaded three-node cluster, then one of the original nodes leaves, each through
//! `rotor admin join/leave`, `plan` and `commit`, while a writer keeps writing.
//!
//! What is checked once each change has completed (every node's `admin status` shows no
//! pending change): every write acknowledged before or during the change is read back with
//! R=2; the joining node holds keys; the old holders dropped the partitions that moved
//! away (their STATS count the drops, and no node holds more than its share: the cluster
//! holds each key at most N times). Writes that failed at the client during a change are
//! counted and reported, and must stay a small part of all writes.
//!
//! Every wait is bounded (see tests/common/cluster.rs); no assertion is about time.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::{quorum, wait_for, Cluster};
use rotor::client::{Client, ClientConfig, Op};

/// Keys loaded before the first change (a debug build: the 100k-key run is
/// tools/bench-membership).
const KEYS_LOADED: usize = 3_000;

/// Keys per pipelined batch while loading.
const LOAD_BATCH: usize = 200;

/// Most writes the background writer makes during one change.
const WRITES_MAX: usize = 20_000;

/// Time a committed change has to complete (every move verified, the ring flipped).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(240);

/// Time the old holders have to drop what moved away (after the flip's grace).
const DROP_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes keep acknowledged; failures during a change stay under this share (percent).
const FAILED_WRITES_PERCENT_MAX: usize = 20;

#[test]
fn a_node_joins_and_another_leaves_under_writes_and_no_acknowledged_write_is_lost() {
    let mut cluster = Cluster::start(3, &[]);
    let mut acked = load(&cluster, KEYS_LOADED);
    let total_before: u64 = (0..3).map(|i| stat(&cluster, i, "store.keys")).sum();
    assert_eq!(
        total_before,
        3 * KEYS_LOADED as u64,
        "N=3 copies of every key"
    );

    // Join: node 4 starts alone, is told to join through node 1, and commits its plan.
    let new = cluster.start_unseeded(4, &[]);
    let seed = cluster.nodes[0].listen.to_string();
    admin(&cluster, new, &["admin", "join", &seed]);
    wait_members(&cluster, &[1, 2, 3, 4]);
    let plan = admin(&cluster, new, &["admin", "plan"]);
    eprintln!("join plan:\n{plan}");
    let writer = Writer::start(&cluster, 1, "during-join");
    admin(&cluster, new, &["admin", "commit"]);
    wait_settled(&cluster, &[0, 1, 2, 3]);
    let report = writer.stop();
    report.check("join");
    let mut failed = report.failed;
    acked.extend(report.acked);

    read_back(&cluster, 1, &acked);
    let joined = stat(&cluster, new, "store.keys");
    assert!(joined > 0, "node 4 holds keys after joining");
    wait_dropped(&cluster, &[0, 1, 2], acked.len() + failed);
    eprintln!(
        "join: node 4 holds {joined} keys; {} acknowledged keys in all",
        acked.len()
    );

    // Leave: node 3 is told to leave, plans and commits; nodes 1, 2 and 4 take over.
    let leaving = 2;
    let writer = Writer::start(&cluster, 1, "during-leave");
    admin(&cluster, leaving, &["admin", "leave"]);
    let plan = admin(&cluster, leaving, &["admin", "plan"]);
    eprintln!("leave plan:\n{plan}");
    admin(&cluster, leaving, &["admin", "commit"]);
    wait_settled(&cluster, &[0, 1, 2, 3]);
    let report = writer.stop();
    report.check("leave");
    failed += report.failed;
    acked.extend(report.acked);

    read_back(&cluster, 0, &acked);
    read_back(&cluster, 3, &acked);
    let left = wait_for(DROP_TIMEOUT, || {
        match stat(&cluster, leaving, "store.keys") {
            0 => Ok(()),
            keys => Err(format!("node 3 still holds {keys} keys")),
        }
    });
    left.unwrap_or_else(|e| panic!("the node that left did not drop its copies: {e}"));
    wait_dropped(&cluster, &[0, 1, 3], acked.len() + failed);
}

/// Writes `count` keys through node 1 (pipelined, W=2), all acknowledged.
fn load(cluster: &Cluster, count: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut client = cluster.client_via(0);
    let mut acked = BTreeMap::new();
    let keys: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
        .map(|i| {
            (
                format!("loaded:{i}").into_bytes(),
                format!("value {i}").into_bytes(),
            )
        })
        .collect();
    for chunk in keys.chunks(LOAD_BATCH) {
        let ops: Vec<Op<'_>> = chunk
            .iter()
            .map(|(key, value)| Op::Put {
                key,
                value,
                context: &[],
            })
            .collect();
        for (result, (key, value)) in client.batch_with(&ops, quorum(3, 2)).into_iter().zip(chunk) {
            result.unwrap_or_else(|e| panic!("loading {key:?}: {e}"));
            acked.insert(key.clone(), value.clone());
        }
    }
    acked
}

/// Reads every acknowledged key through node `via` with R=2 and compares.
fn read_back(cluster: &Cluster, via: usize, acked: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut client = cluster.client_via(via);
    let mut lost = Vec::new();
    for (key, value) in acked {
        match client.get_with(key, quorum(3, 2)) {
            Ok(read) if read.siblings == [value.clone()] => {}
            Ok(read) => lost.push(format!("{key:?}: read {:?}", read.siblings)),
            Err(e) => lost.push(format!("{key:?}: {e}")),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes not read back through node {}: {:?}",
        lost.len(),
        acked.len(),
        via + 1,
        &lost[..lost.len().min(10)]
    );
}

/// Runs `rotor ARGS` against node `i`; fails the test with its output if it fails.
fn admin(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = cluster.nodes[i]
        .rotor(args)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("node{} {args:?}: {}", i + 1, out.trim_end());
    out
}

fn stat(cluster: &Cluster, i: usize, name: &str) -> u64 {
    cluster.nodes[i]
        .stat(name)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn wait_members(cluster: &Cluster, ids: &[u64]) {
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        node.wait_members(ids);
    }
}

/// Waits until every node of `nodes` reports no pending change and the same ring epoch.
fn wait_settled(cluster: &Cluster, nodes: &[usize]) {
    let settled = wait_for(CHANGE_TIMEOUT, || {
        let mut epochs = Vec::new();
        for &i in nodes {
            let status = cluster.nodes[i].rotor(&["admin", "status"])?;
            match settled_epoch(&status) {
                Some(epoch) => epochs.push(epoch),
                None => return Err(format!("node {} status:\n{status}", i + 1)),
            }
        }
        match epochs.windows(2).all(|w| w[0] == w[1]) {
            true => Ok(()),
            false => Err(format!("ring epochs differ: {epochs:?}")),
        }
    });
    settled.unwrap_or_else(|e| panic!("the change did not complete in {CHANGE_TIMEOUT:?}: {e}"));
    let sent: u64 = nodes
        .iter()
        .map(|&i| stat(cluster, i, "transfer_keys_sent"))
        .sum();
    let done: u64 = nodes
        .iter()
        .map(|&i| stat(cluster, i, "transfer_done"))
        .sum();
    let stalled: u64 = nodes
        .iter()
        .map(|&i| stat(cluster, i, "transfer_stalled"))
        .sum();
    eprintln!("change complete: {done} moves verified, {sent} keys sent, {stalled} stalls");
}

/// The ring epoch `rotor admin status` shows when no change is pending; `None` while one is.
fn settled_epoch(status: &str) -> Option<u64> {
    if status.to_lowercase().contains("pending change: none") || !status.contains("pending") {
        let epoch = status
            .lines()
            .find_map(|line| line.trim().strip_prefix("ring epoch"))?;
        let digits: String = epoch
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        return digits.parse().ok();
    }
    None
}

/// Waits until the old holders `nodes` have dropped what moved away: each key is held at
/// most N=3 times across the cluster (`written` keys were written, acknowledged or not),
/// and some partition was dropped.
fn wait_dropped(cluster: &Cluster, nodes: &[usize], written: usize) {
    let dropped = wait_for(DROP_TIMEOUT, || {
        let held: u64 = (0..cluster.nodes.len())
            .filter(|&i| cluster.nodes[i].is_running())
            .map(|i| stat(cluster, i, "store.keys"))
            .sum();
        let dropped: u64 = nodes
            .iter()
            .map(|&i| stat(cluster, i, "partitions_dropped"))
            .sum();
        // Keys whose writes failed at the client may exist too, on N replicas or fewer:
        // N copies of every key written is the bound that old copies would pass.
        match (dropped > 0, held <= 3 * written as u64) {
            (true, true) => Ok((dropped, held)),
            _ => Err(format!("{dropped} partitions dropped, {held} keys held")),
        }
    });
    let (dropped, held) = dropped.unwrap_or_else(|e| panic!("old copies not dropped: {e}"));
    eprintln!("{dropped} partitions dropped by the old holders; {held} key copies held");
}

/// A thread writing fresh keys through one node until stopped, recording which writes
/// were acknowledged and how many failed.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<WriterReport>,
}

/// What a [`Writer`] did.
struct WriterReport {
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    failed: usize,
    errors: Vec<String>,
}

impl Writer {
    fn start(cluster: &Cluster, via: usize, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = cluster.nodes[via].listen;
        let prefix = prefix.to_owned();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let config = ClientConfig {
                pin_to_seed: true,
                ..ClientConfig::default()
            };
            let mut client = Client::connect_with(addr, config).expect("writer connects");
            let mut report = WriterReport {
                acked: BTreeMap::new(),
                failed: 0,
                errors: Vec::new(),
            };
            for i in 0..WRITES_MAX {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("{prefix}:{i}").into_bytes();
                let value = format!("{prefix} value {i}").into_bytes();
                match client.put_with(&key, &value, None, quorum(3, 2)) {
                    Ok(_) => {
                        report.acked.insert(key, value);
                    }
                    Err(e) => {
                        report.failed += 1;
                        if report.errors.len() < 10 {
                            report.errors.push(e.to_string());
                        }
                    }
                }
            }
            report
        });
        Writer { stop, thread }
    }

    fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer thread")
    }
}

impl WriterReport {
    /// Reports the failures and checks they stay a small part of all writes.
    fn check(&self, change: &str) {
        let attempts = self.acked.len() + self.failed;
        eprintln!(
            "{change}: {} writes acknowledged, {} failed at the client; first errors: {:?}",
            self.acked.len(),
            self.failed,
            self.errors
        );
        assert!(attempts > 0, "the writer wrote during the {change}");
        assert!(
            self.failed * 100 <= attempts * FAILED_WRITES_PERCENT_MAX,
            "{} of {attempts} writes failed during the {change}: {:?}",
            self.failed,
            self.errors
        );
    }
}
