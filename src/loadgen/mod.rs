//! `rotor-bench`'s engine: a load generator that drives Rotor or Redis with one workload, so
//! both are measured by the same code in the same run. It sits outside the request path; it
//! is a client of the servers, never linked into them.
//!
//! The parts, in the order a run meets them:
//!
//! - [`config`]: flags turned into a validated [`Config`] (target, load shape, workload).
//! - [`workload`]: the deterministic request stream (uniform or Zipfian keys, read ratio).
//! - [`target`]: the [`Target`] trait, a sans-IO protocol per connection;
//!   [`resp`] speaks Redis, [`rotor`] the Rotor wire protocol (shard-aware).
//! - [`driver`]: one thread per `--threads`, each an epoll loop over its share of
//!   nonblocking connections, closed loop or open loop with coordinated-omission correction.
//! - [`report`]: HdrHistogram percentiles and counts as a table or one JSON object.

pub mod config;
pub mod driver;
pub mod report;
pub mod resp;
pub mod rotor;
pub mod target;
pub mod workload;

#[cfg(test)]
mod e2e_tests;

use std::fmt;
use std::time::{Duration, Instant};

pub use config::{parse_duration, Config, Distribution, Mode, TargetSpec};
pub use report::Report;

use target::{RedisTarget, Target};

/// Deepest pipeline a connection may use. Every slot holds a send time and the send buffer
/// holds `pipeline` requests, so this bounds a connection's memory.
pub const PIPELINE_MAX: usize = 4096;

/// Largest value a run may write: a RESP bulk reply of this size still fits a receive
/// buffer, and 1 MiB matches Rotor's own value limit.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// How long a prefill may take before it gives up: 100k keys take about a second on
/// loopback, so this only trips on a server that stopped answering.
pub const PREFILL_TIMEOUT: Duration = Duration::from_secs(300);

/// A prefill that gets no reply for this long gives up (the measured phase still runs and
/// counts the failures), so a dead server costs seconds, not the whole prefill timeout.
pub const PREFILL_STALL: Duration = Duration::from_secs(5);

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchError {
    /// A flag or combination of flags is invalid.
    Config(String),
    /// The target's protocol is not implemented yet.
    Unsupported(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(msg) | Self::Unsupported(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for BenchError {}

/// Runs the benchmark described by `config`: the prefill if asked, then warmup and
/// measurement. Progress lines go to `progress` once a second (stderr in the binary). Always
/// returns by `warmup + duration` after the measured phase starts.
pub fn run(config: &Config, progress: &mut dyn std::io::Write) -> Result<Report, BenchError> {
    config.validate()?;
    if config.keys > workload::KEYS_MAX {
        return Err(BenchError::Config(format!(
            "--keys must be at most {}",
            workload::KEYS_MAX
        )));
    }
    match config.target {
        TargetSpec::Redis(addr) => Ok(run_with(&RedisTarget::new(addr), config, progress)),
        TargetSpec::Rotor(addr) => {
            let target = rotor::RotorTarget::discover(addr, config.keys, config.rotor)?;
            if !target.down_nodes().is_empty() {
                let _ = writeln!(
                    progress,
                    "nodes {:?} do not answer: their partitions go to the next node",
                    target.down_nodes()
                );
            }
            Ok(run_with(&target, config, progress))
        }
    }
}

/// [`run`] for a concrete target.
pub fn run_with<T: Target>(
    target: &T,
    config: &Config,
    progress: &mut dyn std::io::Write,
) -> Report {
    let prefill = config.prefill.then(|| {
        let started = Instant::now();
        let stats = driver::run_phase(target, config, driver::PhaseKind::Prefill, progress);
        let _ = writeln!(
            progress,
            "prefill: {} keys written, {} errors in {:.2} s",
            stats.counts.ok,
            stats.counts.errors,
            started.elapsed().as_secs_f64()
        );
        stats
    });
    let stats = driver::run_phase(target, config, driver::PhaseKind::Measure, progress);
    Report::new(config, &stats, prefill.as_ref())
}
