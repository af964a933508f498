//! Crash test: a child process writes with `Durability::Always` and reports each write the
//! store acknowledged; the parent kills it with SIGKILL at random moments, reopens the store
//! and checks that every acknowledged write is there, intact.
//!
//! The story it guards: a store that acknowledges before its fsync, that misreads a record
//! cut short by the kill as damage (or as data), or whose compaction deletes a segment
//! before the copies are durable, loses acknowledged writes only when a process dies at the
//! wrong moment, which no ordinary test shows. The child is this test binary itself,
//! re-executed with an environment variable and this test's name as the filter.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rotor::store::{Durability, Store, StoreConfig, ValueKind};

const CHILD_ENV: &str = "ROTOR_STORE_CRASH_CHILD";
const TEST_NAME: &str = "kill_9_at_random_moments_loses_no_acknowledged_write";
const KEYS: u64 = 400;
const ROUNDS: usize = 24;

fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 64 * 1024,
        durability: Durability::Always,
        compaction_garbage_percent: 40,
        checkpoint_interval_bytes: 192 * 1024,
        ..StoreConfig::default()
    }
}

fn key_of(seq: u64) -> (u32, Vec<u8>) {
    let k = seq % KEYS;
    ((k % 4) as u32, format!("key-{k}").into_bytes())
}

/// The value written by write `seq`: its number, then a pattern derived from it.
fn value_of(seq: u64) -> Vec<u8> {
    let len = 50 + (seq % 200) as usize;
    let mut v = seq.to_le_bytes().to_vec();
    v.extend((0..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    v
}

/// The write number a stored value claims, if the value is intact.
fn seq_of(value: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    (value == value_of(seq)).then_some(seq)
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}");
    let mut rng = seed | 1;
    // Last acknowledged write number per key, and writes that may or may not have landed.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut next = 0u64;
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let start = next;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{start}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    // libtest may print "test NAME ... " before the first line on one line.
                    let at = l.rfind("ack ")?;
                    l.get(at + 4..)?.parse::<u64>().ok()
                })
                .collect::<Vec<u64>>()
        });
        rng = xorshift(rng);
        std::thread::sleep(Duration::from_millis(30 + rng % 300));
        child.kill().unwrap();
        child.wait().unwrap();
        let seqs = reader.join().unwrap();
        let last = seqs.last().copied();
        for &seq in &seqs {
            acked.insert(seq % KEYS, seq);
        }
        total_acks += seqs.len();
        // The write after the last reported one may have reached the store unreported.
        let maybe = last.map_or(start, |l| l + 1);
        in_flight.insert(maybe);
        next = maybe + 1;

        let (store, report) = Store::open(dir.path(), config()).unwrap();
        assert_eq!(report.corrupt_records, 0, "round {round}: {report:?}");
        check(&store, &acked, &in_flight, round);
        println!(
            "round {round}: {} acknowledged, {} keys, torn tails {}, checkpoint {} {:?}",
            seqs.len(),
            report.keys,
            report.torn_tails,
            report.used_checkpoint,
            report.checkpoint_rejected
        );
        if round % 3 == 0 {
            store.close().unwrap();
        }
    }
    assert!(
        total_acks > 100,
        "the child wrote too little to test anything"
    );
}

/// Every acknowledged write (or a later one to the same key) is present and intact, and
/// nothing was invented.
fn check(store: &Store, acked: &BTreeMap<u64, u64>, in_flight: &BTreeSet<u64>, round: usize) {
    for (&k, &seq) in acked {
        let (p, key) = key_of(k);
        let found = store
            .get(p, &key)
            .unwrap_or_else(|e| panic!("round {round}: key {k}: {e}"))
            .unwrap_or_else(|| {
                panic!("round {round}: acknowledged key {k} (write {seq}) is missing")
            });
        let got = seq_of(found.value)
            .unwrap_or_else(|| panic!("round {round}: key {k} holds a damaged value"));
        assert!(
            got == seq || (got > seq && in_flight.contains(&got)),
            "round {round}: key {k} holds write {got}, acknowledged was {seq}"
        );
    }
    for p in 0..4 {
        for e in store.iter_partition(p) {
            let seq = seq_of(e.value).expect("intact value");
            let k = seq % KEYS;
            assert!(
                acked.get(&k) == Some(&seq) || in_flight.contains(&seq),
                "round {round}: write {seq} was never acknowledged"
            );
        }
    }
}

/// The child: write forever (until killed), printing `ack N` after each acknowledged write.
fn child(spec: &str) {
    let (dir, start) = spec.split_once('|').unwrap();
    let start: u64 = start.parse().unwrap();
    let (mut store, _) = Store::open(Path::new(dir), config()).unwrap();
    for seq in start.. {
        let (p, key) = key_of(seq);
        store
            .put(p, &key, ValueKind::Value, &value_of(seq))
            .unwrap();
        println!("ack {seq}");
        if seq % 16 == 0 {
            store.compact_step(64 * 1024).unwrap();
        }
        if seq > start + 1_000_000 {
            break;
        }
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
