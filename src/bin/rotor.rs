//! `rotor`: the Rotor command-line client, a thin shell over [`rotor::client`].
//!
//! Contexts are printed and accepted as lowercase hexadecimal. Values come from the
//! argument, from `--file PATH`, or from stdin when the value is `-`; `get --raw` writes
//! one value's bytes to stdout unchanged. See `rotor --help` for the exit codes.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rotor::client::{Client, ClientConfig, ClientError, PlanInfo, StatusInfo};
use rotor::wire::{ChangeKind, ErrorCode, PlanMove, StagedChange};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  not found (get of a key with no live value)
  2  usage error (bad flags, unreadable --file, malformed --context)
  3  connection error (cannot connect, connection lost, timeout, protocol error)
  4  the server answered with an error (its code and message are printed)
  5  indeterminate write: the put/delete may or may not have been applied; get the key
     before retrying
  6  the key has several siblings and --raw needs one: pick it with --sibling N
  7  admin: the node refused the change (plan refused, or a change is still pending)
  8  admin status --watch: the bound passed before the pending change completed

Contexts are lowercase hexadecimal. Values in `get` output are shown with non-printable
bytes escaped (\\xNN); use --raw for the exact bytes.";

/// Command-line client for a Rotor node.
#[derive(Parser, Debug)]
#[command(name = "rotor", version, after_help = EXIT_CODES)]
struct Args {
    /// Node to talk to, HOST:PORT.
    #[arg(long, short, default_value = "127.0.0.1:7070", global = true)]
    server: String,
    /// Seconds to wait for a connection or a reply.
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a value. Prints the key's new context (hex).
    Put {
        /// The key (its UTF-8 bytes).
        key: String,
        /// The value; `-` reads it from stdin. Omit it when using --file.
        value: Option<String>,
        /// Read the value from this file (binary safe).
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Context (hex) from an earlier get; without it the write is blind and becomes a
        /// sibling of any existing value.
        #[arg(long)]
        context: Option<String>,
    },
    /// Read a key: prints each sibling and the context (hex).
    Get {
        /// The key.
        key: String,
        /// Write the value's exact bytes to stdout and nothing else.
        #[arg(long)]
        raw: bool,
        /// With --raw: which sibling to write when there are several (from 0).
        #[arg(long, requires = "raw")]
        sibling: Option<usize>,
    },
    /// Delete a key (write a tombstone) superseding what the context covers.
    Delete {
        /// The key.
        key: String,
        /// Context (hex) from an earlier get.
        #[arg(long)]
        context: String,
    },
    /// Print the node's counters, one per line: shard, name, value.
    Stats,
    /// Print the ring: epoch, partitions, nodes, ports and partitions per shard.
    Ring,
    /// Membership changes, staged on the node --server names, reviewed and committed.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
}

/// `rotor admin ...`: stage changes on one node, review the plan, commit it.
#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Sent to a new node started without seeds: join the cluster of SEED (the node adopts
    /// its ring and stages its own join; then `plan` and `commit` on the same node).
    Join {
        /// A member's address, HOST:PORT.
        seed: String,
    },
    /// Stage the leave of the node --server names (it streams its replicas away).
    Leave,
    /// Stage the removal of a dead node (its replicas are refilled from the others).
    Remove {
        /// The node's id.
        node: u64,
    },
    /// Stage a new weight for a node.
    Weight {
        /// The node's id.
        node: u64,
        /// Its new weight, >= 1.
        weight: u32,
    },
    /// Show what committing the staged changes would do.
    Plan,
    /// Commit the staged changes as the cluster's next ring.
    Commit,
    /// Drop the staged changes.
    Clear,
    /// The ring state: epoch, mode and each node's ownership now and after the change.
    Ring,
    /// The ring state, the pending change and its progress.
    Status {
        /// Follow the pending change with a progress bar until it completes.
        #[arg(long)]
        watch: bool,
        /// With --watch: give up after this many seconds (exit code 8).
        #[arg(long, default_value_t = 600.0, requires = "watch")]
        watch_secs: f64,
    },
}

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("rotor: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(args: &Args) -> Result<u8, Failure> {
    // Check local input before connecting, so a usage error never touches the server.
    let prepared = prepare(&args.command)?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| usage("--timeout must be a positive number of seconds"))?;
    let config = ClientConfig {
        connect_timeout: timeout,
        io_timeout: Some(timeout),
        ..ClientConfig::default()
    };
    let mut client = Client::connect_with(args.server.as_str(), config).map_err(client_failure)?;
    let mut out = io::stdout().lock();
    let written = match (&args.command, prepared) {
        (Command::Put { key, .. }, Prepared::Put { value, context }) => {
            let context = client
                .put(key.as_bytes(), &value, context.as_deref())
                .map_err(client_failure)?;
            writeln!(out, "context: {}", hex_encode(&context))
        }
        (Command::Get { key, raw, sibling }, _) => {
            let read = client.get(key.as_bytes()).map_err(client_failure)?;
            if read.siblings.is_empty() {
                if !raw {
                    let _ = writeln!(out, "not found\ncontext: {}", hex_encode(&read.context));
                }
                return Err(Failure {
                    code: 1,
                    message: format!("key {key:?} not found"),
                });
            }
            if *raw {
                let value = match (sibling, read.siblings.len()) {
                    (None, 1) => &read.siblings[0],
                    (None, n) => {
                        return Err(Failure {
                            code: 6,
                            message: format!(
                                "key {key:?} has {n} siblings; choose one with --sibling 0..{}",
                                n - 1
                            ),
                        })
                    }
                    (Some(i), n) => read.siblings.get(*i).ok_or_else(|| Failure {
                        code: 6,
                        message: format!("--sibling {i} out of range: key has {n} siblings"),
                    })?,
                };
                out.write_all(value).and_then(|()| out.flush())
            } else {
                let mut text = format!("siblings: {}\n", read.siblings.len());
                for (i, value) in read.siblings.iter().enumerate() {
                    text.push_str(&format!("sibling {i}: {}\n", value.escape_ascii()));
                }
                text.push_str(&format!("context: {}\n", hex_encode(&read.context)));
                out.write_all(text.as_bytes())
            }
        }
        (Command::Delete { key, .. }, Prepared::Delete { context }) => {
            let context = client
                .delete(key.as_bytes(), &context)
                .map_err(client_failure)?;
            writeln!(out, "context: {}", hex_encode(&context))
        }
        (Command::Stats, _) => {
            let stats = client.stats().map_err(client_failure)?;
            let mut text = String::new();
            for s in stats {
                text.push_str(&format!("{}\t{}\t{}\n", s.shard, s.name, s.value));
            }
            out.write_all(text.as_bytes())
        }
        (Command::Ring, _) => out.write_all(ring_text(client.topology()).as_bytes()),
        (Command::Admin { action }, _) => {
            let text = admin(&mut client, action)?;
            out.write_all(text.as_bytes())
        }
        _ => Ok(()),
    };
    // A closed stdout (`rotor get k | head -c1`) is not the server's fault.
    match written {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Failure {
            code: 2,
            message: format!("cannot write to stdout: {e}"),
        }),
    }
}

/// Local inputs of a command, read and checked before connecting.
enum Prepared {
    Put {
        value: Vec<u8>,
        context: Option<Vec<u8>>,
    },
    Delete {
        context: Vec<u8>,
    },
    Nothing,
}

fn prepare(command: &Command) -> Result<Prepared, Failure> {
    match command {
        Command::Put {
            value,
            file,
            context,
            ..
        } => {
            let value = match (value.as_deref(), file) {
                (Some("-"), None) => {
                    let mut bytes = Vec::new();
                    io::stdin()
                        .lock()
                        .read_to_end(&mut bytes)
                        .map_err(|e| usage(&format!("cannot read the value from stdin: {e}")))?;
                    bytes
                }
                (Some(text), None) => text.as_bytes().to_vec(),
                (None, Some(path)) => std::fs::read(path)
                    .map_err(|e| usage(&format!("cannot read {}: {e}", path.display())))?,
                _ => return Err(usage("put needs a VALUE, `-` for stdin, or --file PATH")),
            };
            let context = context.as_deref().map(parse_context).transpose()?;
            Ok(Prepared::Put { value, context })
        }
        Command::Delete { context, .. } => Ok(Prepared::Delete {
            context: parse_context(context)?,
        }),
        _ => Ok(Prepared::Nothing),
    }
}

fn parse_context(text: &str) -> Result<Vec<u8>, Failure> {
    hex_decode(text.trim()).ok_or_else(|| {
        usage("--context must be hexadecimal (an even number of 0-9a-f digits, as printed by get)")
    })
}

fn usage(message: &str) -> Failure {
    Failure {
        code: 2,
        message: message.to_owned(),
    }
}

/// Maps a client error to its exit code and message.
fn client_failure(e: ClientError) -> Failure {
    let code = if e.is_indeterminate() {
        5
    } else {
        match e {
            ClientError::Server { .. } => 4,
            ClientError::Invalid(_) => 2,
            ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Protocol { .. } => {
                3
            }
        }
    };
    Failure {
        code,
        message: e.to_string(),
    }
}

/// Runs an admin command; returns what to print.
fn admin(client: &mut Client, action: &AdminCommand) -> Result<String, Failure> {
    let staged = |list: Vec<StagedChange>| {
        let mut text = format!("staged changes: {}\n", list.len());
        for change in &list {
            text.push_str(&format!("  {}\n", change_text(change)));
        }
        text.push_str("review with `rotor admin plan`, apply with `rotor admin commit`\n");
        text
    };
    Ok(match action {
        AdminCommand::Join { seed } => {
            let reply = client.admin_join(seed).map_err(admin_failure)?;
            format!(
                "node {} adopted ring epoch {} from {seed} and staged its join\n\
                 review with `rotor admin plan`, apply with `rotor admin commit`\n",
                reply.node, reply.ring_epoch
            )
        }
        AdminCommand::Leave => staged(client.admin_leave().map_err(admin_failure)?),
        AdminCommand::Remove { node } => staged(client.admin_remove(*node).map_err(admin_failure)?),
        AdminCommand::Weight { node, weight } => {
            staged(client.admin_weight(*node, *weight).map_err(admin_failure)?)
        }
        AdminCommand::Plan => plan_text(&client.admin_plan().map_err(admin_failure)?),
        AdminCommand::Commit => {
            let reply = client.admin_commit().map_err(admin_failure)?;
            format!(
                "committed ring epoch {} ({} replica moves); epoch {} serves until they are done\n\
                 follow it with `rotor admin status --watch`\n",
                reply.next_epoch, reply.moves, reply.ring_epoch
            )
        }
        AdminCommand::Clear => {
            let cleared = client.admin_clear().map_err(admin_failure)?;
            format!("cleared {cleared} staged changes\n")
        }
        AdminCommand::Ring => ring_state_text(&client.admin_status().map_err(admin_failure)?),
        AdminCommand::Status { watch, watch_secs } => {
            let status = client.admin_status().map_err(admin_failure)?;
            if !watch {
                return Ok(status_text(&status));
            }
            let bound = Duration::try_from_secs_f64(*watch_secs)
                .map_err(|_| usage("--watch-secs must be a non-negative number"))?;
            watch_change(client, status, bound)?
        }
    })
}

/// Follows the pending change with a progress bar of done moves until it completes or
/// `bound` passes.
fn watch_change(
    client: &mut Client,
    mut status: StatusInfo,
    bound: Duration,
) -> Result<String, Failure> {
    let Some(epoch) = status.next_epoch else {
        return Ok(format!(
            "no change pending; ring epoch {} serves\n",
            status.ring_epoch
        ));
    };
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(status.moves.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} moves",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("ring epoch {epoch}"));
    loop {
        match status.next_epoch {
            Some(next) if next == epoch => bar.set_position(status.moves_done() as u64),
            // Flipped (or a newer change replaced it): this change is over.
            _ => {
                bar.set_position(bar.length().unwrap_or(0));
                bar.finish();
                return Ok(format!(
                    "change complete: ring epoch {} serves\n",
                    status.ring_epoch
                ));
            }
        }
        if started.elapsed() >= bound {
            bar.abandon();
            return Err(Failure {
                code: 8,
                message: format!(
                    "ring epoch {epoch} still pending after {:.0?}: {} of {} moves done",
                    bound,
                    status.moves_done(),
                    status.moves.len()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        status = client.admin_status().map_err(admin_failure)?;
    }
}

/// Like [`client_failure`], with the node's refusals of a change as exit code 7.
fn admin_failure(e: ClientError) -> Failure {
    match e.code() {
        Some(ErrorCode::PlanRefused | ErrorCode::ChangePending) => Failure {
            code: 7,
            message: e.to_string(),
        },
        _ => client_failure(e),
    }
}

fn change_text(change: &StagedChange) -> String {
    match change.kind {
        ChangeKind::Join => format!("join node {} (weight {})", change.node, change.weight),
        ChangeKind::Leave => format!("leave node {}", change.node),
        ChangeKind::Remove => format!("remove node {}", change.node),
        ChangeKind::Reweight => format!("weight of node {} -> {}", change.node, change.weight),
    }
}

fn plan_text(plan: &PlanInfo) -> String {
    let mut text = format!(
        "plan: ring epoch {} -> {}\nstaged changes: {}\n",
        plan.ring_epoch,
        plan.next_epoch,
        plan.staged.len()
    );
    for change in &plan.staged {
        text.push_str(&format!("  {}\n", change_text(change)));
    }
    text.push_str(&format!("replica moves: {}\n", plan.moves.len()));
    text.push_str("node\towned before\towned after\tsending\treceiving\n");
    for n in &plan.nodes {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            n.node, n.owned_before, n.owned_after, n.sending, n.receiving
        ));
    }
    text.push_str("moves (partition: from node/shard -> to node/shard):\n");
    for m in &plan.moves {
        let note = if m.drop_after {
            " (sender drops its copy)"
        } else {
            ""
        };
        text.push_str(&move_text(m, note));
    }
    text
}

/// One move as a line: `partition: from node/shard -> to node/shard` and `note`.
fn move_text(m: &PlanMove, note: &str) -> String {
    format!(
        "  {}: {}/{} -> {}/{}{note}\n",
        m.partition, m.from_node, m.from_shard, m.to_node, m.to_shard
    )
}

fn ring_state_text(status: &StatusInfo) -> String {
    let mode = if status.committed {
        "committed"
    } else {
        "formation"
    };
    let mut text = format!("ring epoch: {}\nmode: {mode}\n", status.ring_epoch);
    match status.next_epoch {
        Some(next) => text.push_str(&format!(
            "pending: ring epoch {next}, {} of {} moves done\n",
            status.moves_done(),
            status.moves.len()
        )),
        None => text.push_str("pending: none\n"),
    }
    text.push_str("node\tstatus\tweight\treachable\towned\towned next\n");
    for n in &status.nodes {
        text.push_str(&format!(
            "{}\t{:?}\t{}\t{}\t{}\t{}\n",
            n.id, n.status, n.weight, n.reachable, n.owned, n.owned_next
        ));
    }
    text
}

fn status_text(status: &StatusInfo) -> String {
    let mut text = ring_state_text(status);
    text.push_str(&format!("staged changes: {}\n", status.staged.len()));
    for change in &status.staged {
        text.push_str(&format!("  {}\n", change_text(change)));
    }
    if !status.moves.is_empty() {
        text.push_str("moves (partition: from node/shard -> to node/shard, done):\n");
        for m in &status.moves {
            text.push_str(&move_text(m, if m.done { " done" } else { " pending" }));
        }
    }
    for (shard, name, value) in &status.transfers {
        text.push_str(&format!("shard {shard}\t{name}\t{value}\n"));
    }
    text
}

fn ring_text(topology: &rotor::client::Topology) -> String {
    let mut text = format!(
        "epoch: {}\npartitions: {}\nnodes: {}\n",
        topology.epoch,
        topology.partitions(),
        topology.nodes.len()
    );
    for (index, node) in topology.nodes.iter().enumerate() {
        let shards = node.ports.len().max(1);
        let mut per_shard = vec![0usize; shards];
        for owner in topology
            .owners
            .iter()
            .filter(|o| usize::from(o.node) == index)
        {
            if let Some(count) = per_shard.get_mut(usize::from(owner.shard)) {
                *count += 1;
            }
        }
        let ports: Vec<String> = node.ports.iter().map(u16::to_string).collect();
        text.push_str(&format!(
            "node {} status {:?} weight {} zone {:?} address {} shard-ports [{}]\n",
            node.id,
            node.status,
            node.weight,
            node.zone,
            node.address,
            ports.join(", ")
        ));
        for (shard, count) in per_shard.iter().enumerate() {
            text.push_str(&format!("  shard {shard}: {count} partitions\n"));
        }
    }
    text
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    digits
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)).unwrap(), bytes);
        assert_eq!(hex_decode("00FFab").unwrap(), vec![0, 255, 0xab]);
        assert_eq!(hex_decode(""), Some(vec![]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn the_command_line_parses() {
        Args::command_for_tests().debug_assert();
        let args = Args::try_parse_from(["rotor", "put", "k", "-", "--context", "ab"]).unwrap();
        assert!(matches!(args.command, Command::Put { .. }));
        assert!(Args::try_parse_from(["rotor", "get", "k", "--sibling", "1"]).is_err());
        assert!(Args::try_parse_from(["rotor", "delete", "k"]).is_err());
        let args = Args::try_parse_from(["rotor", "admin", "weight", "3", "2"]).unwrap();
        assert!(matches!(
            args.command,
            Command::Admin {
                action: AdminCommand::Weight { node: 3, weight: 2 }
            }
        ));
        assert!(Args::try_parse_from(["rotor", "admin", "status", "--watch-secs", "5"]).is_err());
        assert!(Args::try_parse_from(["rotor", "admin", "join"]).is_err());
    }

    impl Args {
        fn command_for_tests() -> clap::Command {
            <Args as clap::CommandFactory>::command()
        }
    }
}
