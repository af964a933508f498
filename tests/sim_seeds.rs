//! The cluster simulator over many seeds: every run must keep the history properties of
//! `rotor::sim::checker` (acknowledged writes survive, concurrent writes become siblings,
//! no phantom values).
//!
//! - `cargo test --test sim_seeds`: seeds 0..1000 (`ROTOR_SIM_SEEDS` and
//!   `ROTOR_SIM_START` change the range; `tools/soak SEEDS` runs a long one);
//! - `ROTOR_SIM_SEED=1234 cargo test --test sim_seeds -- --nocapture`: replays one seed
//!   exactly and prints its report.

use rotor::sim::{run_seed, SimFailure};

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
    for seed in start..start + count {
        match run_seed(seed) {
            Ok(report) => {
                acked += report.acked_writes;
                failed += report.failed_writes;
                siblings += report.sibling_reads;
                lossy += report.lossy_crashes;
                hinted += report.hinted_writes;
            }
            Err(failure) => {
                eprintln!("FAILED seed {}: {}", failure.seed, failure.message);
                failures.push(failure);
            }
        }
    }
    println!(
        "{count} seeds from {start}: {acked} acknowledged writes, {failed} failed, {siblings} final reads \
         with required siblings, {lossy} crashes that lost unsynced writes, {hinted} hinted writes"
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
    }
}
