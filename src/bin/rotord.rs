//! `rotord`: the Rotor server.

use clap::Parser;

/// The Rotor server. This version only prints its version: the server arrives with the
/// thread-per-core runtime.
#[derive(Parser, Debug)]
#[command(name = "rotord", version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
    println!("rotord {}", env!("CARGO_PKG_VERSION"));
}
