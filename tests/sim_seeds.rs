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

use rotor::sim::{run_seed, run_wipe_seed, SimFailure, WipeReport};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn every_seed_keeps_the_history_properties() {
    if let Some(seed) = env("ROTOR_SIM_SEED") {
        match run_seed(seed) {
            Ok(report) => println!("seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let start = env("ROTOR_SIM_START").unwrap_or(0);
    let count = env("ROTOR_SIM_SEEDS").unwrap_or(1_000);
    let mut failures: Vec<SimFailure> = Vec::new();
    let (mut acked, mut failed, mut siblings, mut lossy, mut hinted) = (0, 0, 0, 0, 0);
    let (mut exchanges, mut repaired) = (0, 0);
    for seed in start..start + count {
        match run_seed(seed) {
            Ok(report) => {
                acked += report.acked_writes;
                failed += report.failed_writes;
                siblings += report.sibling_reads;
                lossy += report.lossy_crashes;
                hinted += report.hinted_writes;
                exchanges += report.exchanges;
                repaired += report.keys_repaired;
            }
            Err(failure) => {
                eprintln!("FAILED seed {}: {}", failure.seed, failure.message);
                failures.push(failure);
            }
        }
    }
    println!(
        "{count} seeds from {start}: {acked} acknowledged writes, {failed} failed, {siblings} final reads \
         with required siblings, {lossy} crashes that lost unsynced writes, {hinted} hinted writes, \
         {exchanges} anti-entropy exchanges repairing {repaired} key states"
    );
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!(
            "{} of {count} seeds failed: {seeds:?}\n{first}",
            failures.len()
        );
    }
    // The runs must exercise what they check.
    if count >= 100 {
        assert!(siblings > 0, "no run required siblings");
        assert!(lossy > 0, "no crash lost unsynced writes");
        assert!(hinted > 0, "no write was hinted");
        assert!(repaired > 0, "anti-entropy never repaired anything");
    }
}

#[test]
fn a_wiped_node_is_refilled_by_anti_entropy_alone() {
    if let Some(seed) = env("ROTOR_SIM_WIPE_SEED") {
        match run_wipe_seed(seed) {
            Ok(report) => println!("wipe seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let count = env("ROTOR_SIM_WIPE_SEEDS").unwrap_or(30);
    let mut reports: Vec<WipeReport> = Vec::new();
    let mut failures: Vec<SimFailure> = Vec::new();
    for seed in 0..count {
        match run_wipe_seed(seed) {
            Ok(report) => reports.push(report),
            Err(failure) => {
                eprintln!("FAILED wipe seed {}: {}", failure.seed, failure.message);
                failures.push(failure);
            }
        }
    }
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!(
            "{} of {count} wipe seeds failed: {seeds:?}\n{first}",
            failures.len()
        );
    }
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
