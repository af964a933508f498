//! `rotor-bench`: measures Rotor and Redis with the same workload, closed or open loop.
//!
//! ```text
//! rotor-bench --target redis://127.0.0.1:6390 --connections 50 --pipeline 16 --prefill
//! rotor-bench --target rotor://127.0.0.1:7070 --rate 200000 --duration 10s --json
//! rotor-bench --target rotor://127.0.0.1:7070 --n 3 --r 2 --w 2 --prefill
//! ```
//!
//! Exit codes: 0 when the run completed with at least one successful request, 1 when no
//! request succeeded, 2 for invalid flags or an unsupported target.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rotor::loadgen::rotor::RotorOptions;
use rotor::loadgen::{self, parse_duration, Config, Distribution, Mode, TargetSpec};

/// Load generator for Rotor and Redis: one workload, one histogram, both servers.
#[derive(Parser, Debug)]
#[command(name = "rotor-bench", version)]
struct Args {
    /// Server to measure: rotor://HOST:PORT or redis://HOST:PORT.
    #[arg(long, value_parser = parse_target)]
    target: TargetSpec,
    /// Connections in total.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Threads driving the connections (each drives connections/threads of them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Open loop at this total rate in ops/s (latency from the intended send time);
    /// without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Key distribution.
    #[arg(long, value_enum, default_value_t = DistributionArg::Uniform)]
    distribution: DistributionArg,
    /// Zipf skew, strictly between 0 and 1.
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Share of reads, 0 to 1.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Time before measuring (e.g. 1s, 500ms).
    #[arg(long, value_parser = parse_duration_arg, default_value = "1s")]
    warmup: Duration,
    /// Measured time (e.g. 10s); the run stops by itself after warmup + duration.
    #[arg(long, value_parser = parse_duration_arg, default_value = "10s")]
    duration: Duration,
    /// Seed of the request stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write every key once before the warmup.
    #[arg(long)]
    prefill: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Rotor only: send every request to the node's common port instead of the owning
    /// shard's own port (the node then forwards across cores).
    #[arg(long)]
    common_port: bool,
    /// Rotor only: write with empty contexts (blind writes). Each blind write becomes a
    /// sibling of what the key holds, so hot keys reach the sibling cap (100) and further
    /// writes fail with TOO_MANY_SIBLINGS. By default a PUT carries the last context seen
    /// for its key in this run (from a GET or PUT reply), which keeps siblings few.
    #[arg(long)]
    blind_writes: bool,
    /// Rotor only: replicas N of every request (0: the node's default).
    #[arg(long, default_value_t = 0)]
    n: u8,
    /// Rotor only: read quorum R of every GET (0: the node's default).
    #[arg(long, default_value_t = 0)]
    r: u8,
    /// Rotor only: write quorum W of every PUT (0: the node's default).
    #[arg(long, default_value_t = 0)]
    w: u8,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DistributionArg {
    Uniform,
    Zipf,
}

fn parse_target(text: &str) -> Result<TargetSpec, String> {
    TargetSpec::parse(text).map_err(|e| e.to_string())
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config {
        target: args.target,
        connections: args.connections,
        pipeline: args.pipeline,
        threads: args.threads,
        mode: match args.rate {
            Some(rate) => Mode::Open { rate },
            None => Mode::Closed,
        },
        keys: args.keys,
        distribution: match args.distribution {
            DistributionArg::Uniform => Distribution::Uniform,
            DistributionArg::Zipf => Distribution::Zipf {
                theta: args.zipf_theta,
            },
        },
        value_size: args.value_size,
        read_ratio: args.read_ratio,
        warmup: args.warmup,
        duration: args.duration,
        seed: args.seed,
        prefill: args.prefill,
        rotor: RotorOptions {
            shard_aware: !args.common_port,
            blind_writes: args.blind_writes,
            n: args.n,
            r: args.r,
            w: args.w,
        },
    };
    let report = match loadgen::run(&config, &mut std::io::stderr()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("rotor-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if report.ok == 0 {
        eprintln!("rotor-bench: no request succeeded");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
