//! `rotor`: the Rotor command-line client.

use clap::Parser;

/// The Rotor command-line client. This version only prints its version: commands arrive
/// with the server.
#[derive(Parser, Debug)]
#[command(name = "rotor", version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
    println!("rotor {}", env!("CARGO_PKG_VERSION"));
}
