//! `rotord`: the Rotor server. Reads its configuration (defaults, `--config FILE`, flags),
//! starts one shard per core (each with its store under the data directory) and serves the
//! Rotor protocol until SIGINT or SIGTERM, then stops gracefully (in-flight requests
//! answered, every store synced and closed) and exits 0. A second signal during the graceful
//! stop exits at once with status 130; a panic anywhere exits with status 101.

use std::process::ExitCode;

use clap::Parser;
use rotor::server::{self, Args, Config};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rotord: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging();
    // A panic is a bug that may have left a shard's state half-updated, and a dead shard
    // would leave its port and partitions unserved while the others run on: stop the whole
    // process (fail-stop), after the default hook printed where it happened.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));

    // Signals are caught before any shard starts, so an early Ctrl-C is not lost.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let running = match server::start_node(&config) {
        Ok(running) => running,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = running.stop_handle();
    std::thread::Builder::new()
        .name("rotor-signals".into())
        .spawn(move || {
            let mut received = signals.forever();
            if let Some(signal) = received.next() {
                info!(signal, "stopping gracefully");
                stop.count_down();
            }
            if let Some(signal) = received.next() {
                warn!(signal, "second signal: exiting now");
                std::process::exit(130);
            }
        })
        .ok();
    match running.join() {
        Ok(()) => {
            info!("rotord stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
