//! The cluster simulator over many seeds: every run must keep the history properties of
//! `rotor::sim::checker` (acknowledged writes survive, concurrent writes become siblings,
//! no phantom values).
//!
//! - `cargo test --test sim_seeds`: seeds 0..1000 (`ROTOR_SIM_SEEDS` and
//!   `ROTOR_SIM_START` change the range; `tools/soak SEEDS` runs a long one);
//! - `ROTOR_SIM_SEED=1234 cargo test --test sim_seeds -- --nocapture`: replays one seed
//!   exactly and prints its report.
//!
//! Anti-entropy runs on every node of every seed. The wipe scenario
//! (`a_wiped_node_is_refilled_by_anti_entropy_alone`, seeds 0..30, `ROTOR_SIM_WIPE_SEEDS`
//! changes the count, `ROTOR_SIM_WIPE_SEED` replays one) wipes one node's store after the
//! workload and checks that anti-entropy alone makes every replica equal to the merge of
//! all; `-- --nocapture` prints the simulated refill times.
//!
//! Membership changes (`membership_changes_keep_every_write_and_end_with_n_replicas_per_partition`,
//! seeds 0..100, `ROTOR_SIM_MEMBERSHIP_SEEDS` / `_START` change the range,
//! `ROTOR_SIM_MEMBERSHIP_SEED` replays one): joins, leaves, removals of a node lost for good
//! and weight changes under the usual faults; every partition ends with N distinct replicas
//! holding its data, nodes that left hold nothing, deleted keys stay deleted.
//!
//! Tombstone purges (`purged_tombstones_never_bring_deleted_keys_back`, seeds 0..120,
//! `ROTOR_SIM_PURGE_SEEDS` / `_START`, `ROTOR_SIM_PURGE_SEED`): deletes and purges under
//! faults; every tombstone is gone once the cluster is healthy, and no deleted key comes
//! back.

use rotor::sim::{
    run_membership_seed, run_purge_seed, run_seed, run_wipe_seed, SimFailure, SimReport, WipeReport,
};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs seeds `start..start + count` through `run` and returns their reports, panicking
/// with the first failure once all have run; or, when the variable `one` names a seed,
/// replays only that one, prints its report and returns `None`.
fn seeds<R: std::fmt::Debug>(
    one: &str,
    start: u64,
    count: u64,
    run: fn(u64) -> Result<R, SimFailure>,
) -> Option<Vec<R>> {
    if let Some(seed) = env(one) {
        match run(seed) {
            Ok(report) => println!("seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return None;
    }
    let mut reports = Vec::new();
    let mut failures: Vec<SimFailure> = Vec::new();
    for seed in start..start + count {
        match run(seed) {
            Ok(report) => reports.push(report),
            Err(failure) => {
                eprintln!("FAILED seed {}: {}", failure.seed, failure.message);
                failures.push(failure);
            }
        }
    }
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!(
            "{} of {count} seeds failed: {seeds:?}\n{first}",
            failures.len()
        );
    }
    Some(reports)
}

#[test]
fn every_seed_keeps_the_history_properties() {
    let start = env("ROTOR_SIM_START").unwrap_or(0);
    let count = env("ROTOR_SIM_SEEDS").unwrap_or(1_000);
    let Some(reports) = seeds("ROTOR_SIM_SEED", start, count, run_seed) else {
        return;
    };
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let (siblings, lossy, hinted, local) = (
        sum(|r| r.sibling_reads),
        sum(|r| r.lossy_crashes),
        sum(|r| r.hinted_writes),
        sum(|r| r.local_hints),
    );
    let repaired = sum(|r| r.keys_repaired);
    // N is 3: a 3-node run has no fallback, so its hints can only be local ones.
    let exactly_n = reports.iter().filter(|r| r.nodes == 3).count();
    println!(
        "{count} seeds from {start}: {} acknowledged writes, {} failed, {siblings} final reads \
         with required siblings, {lossy} crashes that lost unsynced writes, {hinted} hinted writes, \
         {local} local hints ({exactly_n} runs with exactly N nodes), \
         {} anti-entropy exchanges repairing {repaired} key states",
        sum(|r| r.acked_writes),
        sum(|r| r.failed_writes),
        sum(|r| r.exchanges),
    );
    // The runs must exercise what they check.
    if count >= 100 {
        assert!(siblings > 0, "no run required siblings");
        assert!(lossy > 0, "no crash lost unsynced writes");
        assert!(hinted > 0, "no write was hinted");
        assert!(exactly_n > 0, "no run had exactly N nodes");
        assert!(local > 0, "no coordinator kept a hint for a replica itself");
        assert!(repaired > 0, "anti-entropy never repaired anything");
    }
}

#[test]
fn a_wiped_node_is_refilled_by_anti_entropy_alone() {
    let count = env("ROTOR_SIM_WIPE_SEEDS").unwrap_or(30);
    let Some(reports) = seeds("ROTOR_SIM_WIPE_SEED", 0, count, run_wipe_seed) else {
        return;
    };
    let mut refill: Vec<u64> = reports.iter().map(|r| r.refill_ms).collect();
    refill.sort_unstable();
    let runs = reports.len().max(1) as u64;
    let sum = |f: fn(&WipeReport) -> u64| reports.iter().map(f).sum::<u64>();
    println!(
        "{count} wipe seeds: refill after heal {} / {} / {} ms (min / median / max, simulated); \
         per run on average {} keys lost by the wiped node of {} keys, {} exchanges, \
         {} messages, {} bytes, {} entries moved",
        refill.first().unwrap_or(&0),
        refill.get(refill.len() / 2).unwrap_or(&0),
        refill.last().unwrap_or(&0),
        sum(|r| r.keys_lost) / runs,
        sum(|r| r.keys) / runs,
        sum(|r| r.exchanges) / runs,
        sum(|r| r.messages) / runs,
        sum(|r| r.bytes) / runs,
        sum(|r| r.entries_moved) / runs,
    );
    // The scenario must test something: the wiped nodes held data.
    assert!(sum(|r| r.keys_lost) > 0, "no wiped node held any key");
}

/// Sums a figure over reports.
fn total(reports: &[SimReport], f: fn(&SimReport) -> u64) -> u64 {
    reports.iter().map(f).sum()
}

#[test]
fn membership_changes_keep_every_write_and_end_with_n_replicas_per_partition() {
    let start = env("ROTOR_SIM_MEMBERSHIP_START").unwrap_or(0);
    let count = env("ROTOR_SIM_MEMBERSHIP_SEEDS").unwrap_or(100);
    let Some(reports) = seeds(
        "ROTOR_SIM_MEMBERSHIP_SEED",
        start,
        count,
        run_membership_seed,
    ) else {
        return;
    };
    let sum = |f: fn(&SimReport) -> u64| total(&reports, f);
    println!(
        "{count} membership seeds from {start}: {} changes committed, {} replica moves \
         ({} transfers reported done, {} stalled and restarted), {} writes copied to new \
         holders, {} keys dropped after flips, {} orphaned keys handed on as hints, {} hints \
         re-addressed, {} tombstones purged, {} acknowledged writes, {} final reads of \
         deleted keys",
        sum(|r| r.changes_committed),
        sum(|r| r.moves),
        sum(|r| r.moves_done),
        sum(|r| r.transfers_stalled),
        sum(|r| r.forwarded_writes),
        sum(|r| r.dropped_keys),
        sum(|r| r.orphan_keys),
        sum(|r| r.hints_readdressed),
        sum(|r| r.tombstones_purged),
        sum(|r| r.acked_writes),
        sum(|r| r.deleted_reads),
    );
    if count >= 50 {
        assert!(sum(|r| r.changes_committed) > 0, "no change was committed");
        assert!(sum(|r| r.dropped_keys) > 0, "no old copy was dropped");
        assert!(
            sum(|r| r.forwarded_writes) > 0,
            "no write was copied during a move"
        );
    }
}

#[test]
fn purged_tombstones_never_bring_deleted_keys_back() {
    let start = env("ROTOR_SIM_PURGE_START").unwrap_or(0);
    let count = env("ROTOR_SIM_PURGE_SEEDS").unwrap_or(120);
    let Some(reports) = seeds("ROTOR_SIM_PURGE_SEED", start, count, run_purge_seed) else {
        return;
    };
    let sum = |f: fn(&SimReport) -> u64| total(&reports, f);
    println!(
        "{count} purge seeds from {start}: {} tombstones purged, {} left at the end, \
         {} final reads of deleted keys, {} crashes that lost unsynced writes, \
         {} acknowledged writes",
        sum(|r| r.tombstones_purged),
        sum(|r| r.tombstones_left),
        sum(|r| r.deleted_reads),
        sum(|r| r.lossy_crashes),
        sum(|r| r.acked_writes),
    );
    if count >= 50 {
        assert!(sum(|r| r.tombstones_purged) > 0, "nothing was purged");
        assert!(
            sum(|r| r.deleted_reads) > 0,
            "no final read of a deleted key"
        );
    }
}
