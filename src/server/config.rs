//! Configuration of `rotord`: embedded defaults, overlaid by a TOML file, overlaid by
//! command-line flags, then validated. The server reads nothing else from its
//! environment except `RUST_LOG` for the log filter.
//!
//! Precedence: flags > file > defaults. A key the file does not know is an error (a typo
//! must not silently leave a default in force).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::constants;

/// The effective configuration of one `rotord` process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the stores of every shard.
    pub data_dir: PathBuf,
    /// Common client address, `HOST:PORT`; every shard listens on it with SO_REUSEPORT, so
    /// the kernel spreads connections over the shards. Port 0 picks a free port.
    pub listen: String,
    /// Per-shard ports (one per shard, in shard order) on the host of `listen`. When absent,
    /// shard `i` uses the listen port + 1 + `i`, or a free port when the listen port is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_ports: Option<Vec<u16>>,
    /// Cores to run one shard each on: `"all"`, a count (`2`) or a list (`"0,1"`, `"0-3"`).
    pub cores: Cores,
    /// When writes reach the disk: `always` (before the reply), `group` (a timer syncs
    /// every few milliseconds and writes are acknowledged once synced) or `never`.
    pub fsync: Fsync,
    /// Open client connections allowed on the whole node.
    pub connections_max: u32,
    /// Requests of one connection served at once.
    pub connection_in_flight_max: u32,
    /// Reply bytes waiting for one connection before it stops reading.
    pub connection_output_bytes_max: u32,
    /// Milliseconds a connection may stay silent with nothing in flight.
    pub idle_timeout_ms: u64,
    /// Milliseconds a new connection has to complete its handshake.
    pub handshake_timeout_ms: u64,
    /// This node's id (nonzero), kept in `<data-dir>/NODE`; generated on first start when
    /// absent. A given id that differs from the stored one refuses to start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// Common addresses (`HOST:PORT`) of other nodes to join through; empty: a one-node
    /// cluster until another node names this one as its seed.
    pub seeds: Vec<String>,
    /// Failure zone of this node (replicas spread over zones first); empty for none.
    pub zone: String,
    /// Relative capacity of this node (its share of partitions), at least 1.
    pub weight: u32,
    /// Default replica count N (clamped to the membership size when smaller).
    pub n: u8,
    /// Default read quorum R (at most N).
    pub r: u8,
    /// Default write quorum W (at most N).
    pub w: u8,
    /// The cluster's id: a peer with another one is refused (`WRONG_CLUSTER`). Nonzero.
    pub cluster_id: u64,
    /// Milliseconds between two gossip rounds.
    pub gossip_interval_ms: u64,
    /// Whether each shard starts Merkle exchanges with the other replicas of its
    /// partitions (flag `--anti-entropy on|off`). A node answers its peers' exchanges
    /// either way.
    pub anti_entropy: bool,
    /// Milliseconds between two exchange starts of one shard at full rate.
    pub ae_interval_ms: u64,
    /// Entries one shard's anti-entropy moves per second at full rate.
    pub ae_keys_per_sec: u64,
    /// Whether anti-entropy purges the tombstones it confirmed at every other replica
    /// (flag `--tombstone-purge on|off`; the rule is in `src/antientropy/purge.rs`).
    pub tombstone_purge: bool,
}

/// Which cores run a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CoresToml", into = "String")]
pub enum Cores {
    /// Every core this process may run on (its affinity mask).
    All,
    /// The first `n` cores of the affinity mask.
    Count(usize),
    /// Exactly these CPU ids, in this order (shard `i` runs on the `i`-th).
    List(Vec<usize>),
}

/// Durability policy of the stores (mapped onto the store's `Durability` by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fsync before acknowledging each write.
    Always,
    /// fsync on a short timer; acknowledge writes once synced.
    Group,
    /// Leave it to the kernel; sync only on shutdown.
    Never,
}

/// Why a configuration was refused. Each message names the offending key or flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has an unknown key or a wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file named by `--config` (`<inline>` for a string).
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `cores` value that is neither `all`, a count nor a list of CPU ids.
    #[error(
        "invalid cores `{0}`: expected `all`, a count like `2`, or a list like `0,1` or `0-3`"
    )]
    CoresSyntax(String),
    /// A core count or list that names cores this process may not run on.
    #[error("cores {requested} not available: this process may run on cores {available:?}")]
    CoresUnavailable {
        /// What was asked for.
        requested: String,
        /// The process's affinity mask.
        available: Vec<usize>,
    },
    /// `listen` does not resolve to a socket address.
    #[error("invalid listen address `{0}`: expected HOST:PORT, e.g. 127.0.0.1:7070")]
    Listen(String),
    /// `shard_ports` does not have one port per shard, or the derived ports overflow.
    #[error("shard ports: {0}")]
    ShardPorts(String),
    /// A cluster setting (identity, replication defaults, seeds) is refused.
    #[error("{0}")]
    Cluster(String),
    /// A numeric setting outside its allowed range.
    #[error("`{key}` must be {expected}, got {value}")]
    Range {
        /// The TOML key (the flag has the same name with dashes).
        key: &'static str,
        /// The allowed range, in words.
        expected: &'static str,
        /// The refused value.
        value: u64,
    },
}

/// Command-line flags of `rotord`. Each flag overrides the same key of the file.
#[derive(Parser, Debug, Default, Clone, PartialEq, Eq)]
#[command(name = "rotord", version, about = "The Rotor server")]
pub struct Args {
    /// TOML configuration file (unknown keys are an error).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the stores [default: ./rotor-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Common client address [default: 127.0.0.1:7070].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Cores to run on: `all`, a count (`2`), or a list (`0,1`, `0-3`) [default: all].
    #[arg(long, value_name = "N|LIST")]
    pub cores: Option<Cores>,
    /// Durability: always, group or never [default: group].
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    pub fsync: Option<Fsync>,
    /// This node's id, nonzero (kept in <data-dir>/NODE) [default: generated once].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<u64>,
    /// Common addresses of other nodes to join through, comma-separated [default: none, a
    /// one-node cluster].
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Failure zone of this node [default: none].
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,
    /// Relative capacity of this node, at least 1 [default: 1].
    #[arg(long, value_name = "W")]
    pub weight: Option<u32>,
    /// Default replica count N, clamped to the number of nodes [default: 3].
    #[arg(long, value_name = "N")]
    pub n: Option<u8>,
    /// Default read quorum R [default: 2].
    #[arg(long, value_name = "R")]
    pub r: Option<u8>,
    /// Default write quorum W [default: 2].
    #[arg(long, value_name = "W")]
    pub w: Option<u8>,
    /// Cluster id, nonzero; peers of another cluster are refused [default: 1].
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<u64>,
    /// Milliseconds between two gossip rounds [default: 1000].
    #[arg(long, value_name = "MS")]
    pub gossip_interval_ms: Option<u64>,
    /// Merkle-tree anti-entropy with the other replicas: on or off [default: on].
    #[arg(long, value_name = "on|off", value_parser = parse_switch)]
    pub anti_entropy: Option<bool>,
    /// Milliseconds between two anti-entropy exchange starts per shard [default: 100].
    #[arg(long, value_name = "MS")]
    pub ae_interval_ms: Option<u64>,
    /// Entries anti-entropy moves per second per shard at full rate [default: 20000].
    #[arg(long, value_name = "N")]
    pub ae_keys_per_sec: Option<u64>,
    /// Purge tombstones anti-entropy confirmed at every other replica: on or off
    /// [default: on].
    #[arg(long, value_name = "on|off", value_parser = parse_switch)]
    pub tombstone_purge: Option<bool>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./rotor-data"),
            listen: format!("127.0.0.1:{}", constants::LISTEN_PORT_DEFAULT),
            shard_ports: None,
            cores: Cores::All,
            fsync: Fsync::Group,
            connections_max: constants::CONNECTIONS_MAX_DEFAULT,
            connection_in_flight_max: constants::CONNECTION_IN_FLIGHT_MAX_DEFAULT,
            connection_output_bytes_max: constants::CONNECTION_OUTPUT_BYTES_MAX_DEFAULT,
            idle_timeout_ms: constants::IDLE_TIMEOUT_MS_DEFAULT,
            handshake_timeout_ms: constants::HANDSHAKE_TIMEOUT_MS_DEFAULT,
            node_id: None,
            seeds: Vec::new(),
            zone: String::new(),
            weight: 1,
            n: constants::REPLICAS_DEFAULT,
            r: constants::READ_QUORUM_DEFAULT,
            w: constants::WRITE_QUORUM_DEFAULT,
            cluster_id: constants::CLUSTER_ID_DEFAULT,
            gossip_interval_ms: constants::GOSSIP_INTERVAL_MS_DEFAULT,
            anti_entropy: true,
            ae_interval_ms: constants::EXCHANGE_INTERVAL_MS_DEFAULT,
            ae_keys_per_sec: constants::EXCHANGE_KEYS_PER_SEC_DEFAULT,
            tombstone_purge: true,
        }
    }
}

impl Config {
    /// The effective configuration for these flags: defaults, then the file named by
    /// `--config` if any, then the other flags; validated.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file over the defaults (not yet validated).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses TOML text over the defaults (not yet validated); `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Overrides the keys given as flags.
    pub fn apply(&mut self, args: &Args) {
        if let Some(dir) = &args.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(listen) = &args.listen {
            self.listen = listen.clone();
        }
        if let Some(cores) = &args.cores {
            self.cores = cores.clone();
        }
        if let Some(fsync) = args.fsync {
            self.fsync = fsync;
        }
        if let Some(id) = args.node_id {
            self.node_id = Some(id);
        }
        if let Some(seeds) = &args.seeds {
            self.seeds = seeds
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(zone) = &args.zone {
            self.zone = zone.clone();
        }
        let numbers = [
            (args.n, &mut self.n),
            (args.r, &mut self.r),
            (args.w, &mut self.w),
        ];
        for (flag, key) in numbers {
            if let Some(value) = flag {
                *key = value;
            }
        }
        if let Some(weight) = args.weight {
            self.weight = weight;
        }
        if let Some(id) = args.cluster_id {
            self.cluster_id = id;
        }
        if let Some(ms) = args.gossip_interval_ms {
            self.gossip_interval_ms = ms;
        }
        if let Some(on) = args.anti_entropy {
            self.anti_entropy = on;
        }
        if let Some(ms) = args.ae_interval_ms {
            self.ae_interval_ms = ms;
        }
        if let Some(keys) = args.ae_keys_per_sec {
            self.ae_keys_per_sec = keys;
        }
        if let Some(on) = args.tombstone_purge {
            self.tombstone_purge = on;
        }
    }

    /// Checks every key on its own; [`Config::cpus`] and [`Config::shard_ports_for`] check
    /// what depends on the machine and on the number of shards.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listen = self.listen_addr()?;
        check_range("connections_max", self.connections_max.into(), 1, 1 << 20)?;
        check_range(
            "connection_in_flight_max",
            self.connection_in_flight_max.into(),
            1,
            1 << 16,
        )?;
        check_range(
            "connection_output_bytes_max",
            self.connection_output_bytes_max.into(),
            4096,
            1 << 30,
        )?;
        check_range("idle_timeout_ms", self.idle_timeout_ms, 1, 86_400_000)?;
        check_range(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            1,
            3_600_000,
        )?;
        self.validate_cluster()?;
        if let Cores::Count(0) = self.cores {
            return Err(ConfigError::CoresSyntax("0".into()));
        }
        if let Some(ports) = &self.shard_ports {
            if ports.is_empty() {
                return Err(ConfigError::ShardPorts("the list is empty".into()));
            }
            if listen.port() != 0 && ports.contains(&listen.port()) {
                return Err(ConfigError::ShardPorts(format!(
                    "port {} is also the listen port",
                    listen.port()
                )));
            }
        }
        Ok(())
    }

    /// The cluster keys: identities nonzero, N/R/W consistent, seeds `HOST:PORT`.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if self.node_id == Some(0) {
            return Err(ConfigError::Cluster("`node_id` must be nonzero".into()));
        }
        if self.cluster_id == 0 {
            return Err(ConfigError::Cluster("`cluster_id` must be nonzero".into()));
        }
        check_range("weight", self.weight.into(), 1, u64::from(u16::MAX))?;
        check_range("n", self.n.into(), 1, u64::from(constants::REPLICAS_MAX))?;
        for (key, quorum) in [("r", self.r), ("w", self.w)] {
            if quorum == 0 || quorum > self.n {
                return Err(ConfigError::Cluster(format!(
                    "`{key}` must be between 1 and n = {}, got {quorum}",
                    self.n
                )));
            }
        }
        check_range("gossip_interval_ms", self.gossip_interval_ms, 10, 600_000)?;
        check_range("ae_interval_ms", self.ae_interval_ms, 1, 3_600_000)?;
        check_range("ae_keys_per_sec", self.ae_keys_per_sec, 1, 100_000_000)?;
        if self.zone.len() > constants::TEXT_BYTES_MAX {
            return Err(ConfigError::Cluster("`zone` is too long".into()));
        }
        if self.seeds.len() > constants::NODES_MAX {
            return Err(ConfigError::Cluster("too many `seeds`".into()));
        }
        for seed in &self.seeds {
            let port = seed
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty())
                .and_then(|(_, port)| port.parse::<u16>().ok());
            if port.is_none_or(|port| port == 0) || seed.len() > constants::TEXT_BYTES_MAX {
                return Err(ConfigError::Cluster(format!(
                    "seed `{seed}` is not HOST:PORT (e.g. 127.0.0.2:7070)"
                )));
            }
        }
        Ok(())
    }

    /// The common client address, resolved.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| ConfigError::Listen(self.listen.clone()))
    }

    /// The CPU ids to run one shard each on, checked against `available` (the process's
    /// affinity mask, see [`allowed_cpus`]).
    pub fn cpus(&self, available: &[usize]) -> Result<Vec<usize>, ConfigError> {
        let unavailable = || ConfigError::CoresUnavailable {
            requested: self.cores.to_string(),
            available: available.to_vec(),
        };
        let cpus = match &self.cores {
            Cores::All => available.to_vec(),
            Cores::Count(n) => available.get(..*n).ok_or_else(unavailable)?.to_vec(),
            Cores::List(list) => {
                if list.iter().any(|cpu| !available.contains(cpu)) {
                    return Err(unavailable());
                }
                list.clone()
            }
        };
        if cpus.is_empty() || cpus.len() > usize::from(u16::MAX) {
            return Err(unavailable());
        }
        Ok(cpus)
    }

    /// The per-shard port of each of `shards` shards (0 means a free port).
    pub fn shard_ports_for(&self, shards: usize) -> Result<Vec<u16>, ConfigError> {
        if let Some(ports) = &self.shard_ports {
            if ports.len() != shards {
                return Err(ConfigError::ShardPorts(format!(
                    "{} ports configured for {shards} shards",
                    ports.len()
                )));
            }
            return Ok(ports.clone());
        }
        let base = self.listen_addr()?.port();
        if base == 0 {
            return Ok(vec![0; shards]);
        }
        (0..shards)
            .map(|i| {
                u16::try_from(usize::from(base) + 1 + i).map_err(|_| {
                    ConfigError::ShardPorts(format!(
                        "listen port {base} + 1 + shard {i} is past 65535"
                    ))
                })
            })
            .collect()
    }

    /// The configuration as TOML, as `--print-config` shows it.
    pub fn to_toml(&self) -> String {
        // Serialising plain strings, integers and lists cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

impl FromStr for Cores {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Cores, ConfigError> {
        let text = text.trim();
        let syntax = || ConfigError::CoresSyntax(text.to_string());
        if text.eq_ignore_ascii_case("all") {
            return Ok(Cores::All);
        }
        if !text.contains([',', '-']) {
            let n: usize = text.parse().map_err(|_| syntax())?;
            if n == 0 {
                return Err(syntax());
            }
            return Ok(Cores::Count(n));
        }
        let list = parse_cpu_list(text).ok_or_else(syntax)?;
        let mut seen = list.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != list.len() {
            return Err(syntax());
        }
        Ok(Cores::List(list))
    }
}

impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cores::All => f.write_str("all"),
            Cores::Count(n) => write!(f, "{n}"),
            Cores::List(list) => {
                let parts: Vec<String> = list.iter().map(|c| c.to_string()).collect();
                // A one-element list is written as a range so it reads back as a list.
                match list.as_slice() {
                    [only] => write!(f, "{only}-{only}"),
                    _ => f.write_str(&parts.join(",")),
                }
            }
        }
    }
}

impl From<Cores> for String {
    fn from(cores: Cores) -> String {
        cores.to_string()
    }
}

/// `cores` as written in TOML: a string, or a bare count.
#[derive(Deserialize)]
#[serde(untagged)]
enum CoresToml {
    Count(u64),
    Text(String),
}

impl TryFrom<CoresToml> for Cores {
    type Error = ConfigError;

    fn try_from(raw: CoresToml) -> Result<Cores, ConfigError> {
        match raw {
            CoresToml::Count(n) => n.to_string().parse(),
            CoresToml::Text(text) => text.parse(),
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fsync::Always => "always",
            Fsync::Group => "group",
            Fsync::Never => "never",
        })
    }
}

/// The CPUs this process may run on (its affinity mask as the kernel reports it in
/// `/proc/self/status`, so `taskset -c 1 rotord` runs on CPU 1), or `0..n` from the
/// available parallelism if that file cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_cpu_list(list.trim()))
        });
    match from_proc {
        Some(list) if !list.is_empty() => list,
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Parses a Linux CPU list (`0,2-4`) in order of appearance; `None` if malformed.
fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    /// Refuses absurd ranges before allocating them.
    const CPU_ID_MAX: usize = 1 << 16;
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: usize = lo.trim().parse().ok()?;
                let hi: usize = hi.trim().parse().ok()?;
                if lo > hi || hi > CPU_ID_MAX {
                    return None;
                }
                cpus.extend(lo..=hi);
            }
            None => {
                let cpu: usize = part.parse().ok()?;
                if cpu > CPU_ID_MAX {
                    return None;
                }
                cpus.push(cpu);
            }
        }
    }
    Some(cpus)
}

fn parse_fsync(text: &str) -> Result<Fsync, String> {
    match text {
        "always" => Ok(Fsync::Always),
        "group" => Ok(Fsync::Group),
        "never" => Ok(Fsync::Never),
        _ => Err(format!("`{text}` is not one of always, group, never")),
    }
}

fn parse_switch(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{text}` is not one of on, off")),
    }
}

fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let expected = match key {
        "connections_max" => "between 1 and 1048576",
        "connection_in_flight_max" => "between 1 and 65536",
        "connection_output_bytes_max" => "between 4096 and 1073741824",
        "idle_timeout_ms" => "between 1 and 86400000 (one day)",
        "weight" => "between 1 and 65535",
        "n" => "between 1 and 16",
        "gossip_interval_ms" => "between 10 and 600000",
        "ae_keys_per_sec" => "between 1 and 100000000",
        _ => "between 1 and 3600000 (one hour)",
    };
    Err(ConfigError::Range {
        key,
        expected,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Args {
        let mut argv = vec!["rotord"];
        argv.extend_from_slice(flags);
        Args::try_parse_from(argv).expect("flags parse")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::from_toml(text, Path::new("<inline>"))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = Config::from_args(&args(&[])).expect("defaults are valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, "127.0.0.1:7070");
        assert_eq!(config.data_dir, PathBuf::from("./rotor-data"));
        assert_eq!(config.cores, Cores::All);
        assert_eq!(config.fsync, Fsync::Group);
        assert_eq!(config.shard_ports_for(3).unwrap(), vec![7071, 7072, 7073]);
    }

    #[test]
    fn printed_config_reads_back_identically() {
        for config in [
            Config::default(),
            Config {
                cores: Cores::List(vec![3]),
                shard_ports: Some(vec![9001]),
                fsync: Fsync::Never,
                ..Config::default()
            },
            Config {
                cores: Cores::List(vec![0, 2, 3]),
                ..Config::default()
            },
            Config {
                cores: Cores::Count(2),
                ..Config::default()
            },
        ] {
            let text = config.to_toml();
            assert_eq!(parse(&text).expect(&text), config, "{text}");
        }
    }

    #[test]
    fn file_keys_override_defaults() {
        let config = parse(
            r#"
            data_dir = "/var/lib/rotor"
            listen = "0.0.0.0:9000"
            cores = 2
            fsync = "always"
            shard_ports = [9100, 9101]
            connections_max = 7
            idle_timeout_ms = 1000
            "#,
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/rotor"));
        assert_eq!(config.listen_addr().unwrap().port(), 9000);
        assert_eq!(config.cores, Cores::Count(2));
        assert_eq!(config.fsync, Fsync::Always);
        assert_eq!(config.shard_ports_for(2).unwrap(), vec![9100, 9101]);
        assert_eq!(config.connections_max, 7);
        assert_eq!(config.idle_timeout_ms, 1000);
        assert_eq!(
            config.handshake_timeout_ms,
            constants::HANDSHAKE_TIMEOUT_MS_DEFAULT
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rotor.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nfsync = \"never\"\ncores = \"0-1\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let config = Config::from_args(&args(&["--config", file])).unwrap();
        assert_eq!(config.fsync, Fsync::Never);
        assert_eq!(config.cores, Cores::List(vec![0, 1]));

        let config = Config::from_args(&args(&[
            "--config",
            file,
            "--fsync",
            "always",
            "--listen",
            "127.0.0.1:9500",
            "--cores",
            "1",
            "--data-dir",
            "/tmp/x",
        ]))
        .unwrap();
        assert_eq!(config.fsync, Fsync::Always);
        assert_eq!(config.listen, "127.0.0.1:9500");
        assert_eq!(config.cores, Cores::Count(1));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn cores_syntax() {
        let ok = [
            ("all", Cores::All),
            ("ALL", Cores::All),
            ("2", Cores::Count(2)),
            ("0,1", Cores::List(vec![0, 1])),
            ("0-3", Cores::List(vec![0, 1, 2, 3])),
            ("3-3", Cores::List(vec![3])),
            ("1,4-5", Cores::List(vec![1, 4, 5])),
        ];
        for (text, want) in ok {
            assert_eq!(text.parse::<Cores>().unwrap(), want, "{text}");
        }
        for bad in ["", "0", "-1", "a", "1,", "3-1", "1,1", "0-99999999", "1.5"] {
            assert!(
                matches!(bad.parse::<Cores>(), Err(ConfigError::CoresSyntax(_))),
                "{bad}"
            );
        }
        assert!(Args::try_parse_from(["rotord", "--cores", "x"]).is_err());
    }

    #[test]
    fn cores_resolve_against_the_affinity_mask() {
        let available = [1, 3];
        let with = |cores| Config {
            cores,
            ..Config::default()
        };
        assert_eq!(with(Cores::All).cpus(&available).unwrap(), vec![1, 3]);
        assert_eq!(with(Cores::Count(1)).cpus(&available).unwrap(), vec![1]);
        assert_eq!(
            with(Cores::List(vec![3])).cpus(&available).unwrap(),
            vec![3]
        );
        let err = with(Cores::Count(3)).cpus(&available).unwrap_err();
        assert!(err.to_string().contains("not available"), "{err}");
        assert!(with(Cores::List(vec![0])).cpus(&available).is_err());
        assert!(!allowed_cpus().is_empty());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_rejected_with_the_key_named() {
        let err = parse("listen = \"127.0.0.1:1\"\nfsinc = \"always\"\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(text.contains("fsinc"), "{text}");
        assert!(text.contains("line 2"), "{text}");

        let err = parse("fsync = \"sometimes\"").unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        let err = parse("connections_max = \"many\"").unwrap_err().to_string();
        assert!(err.contains("connections_max"), "{err}");
        let err = parse("cores = \"0-\"").unwrap_err().to_string();
        assert!(err.contains("cores"), "{err}");
        let err = parse("this is not toml").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
    }

    #[test]
    fn invalid_values_are_rejected() {
        let err = parse("connections_max = 0").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Range {
                key: "connections_max",
                ..
            }
        ));
        assert!(err.to_string().contains("connections_max"));
        assert!(matches!(
            parse("idle_timeout_ms = 0").unwrap_err(),
            ConfigError::Range { .. }
        ));
        assert!(matches!(
            parse("listen = \"nowhere\"").unwrap_err(),
            ConfigError::Listen(_)
        ));
        assert!(matches!(
            parse("listen = \"127.0.0.1:7000\"\nshard_ports = [7000]").unwrap_err(),
            ConfigError::ShardPorts(_)
        ));
        let config = parse("shard_ports = [1, 2]").unwrap();
        assert!(config.shard_ports_for(3).is_err());
        let config = parse("listen = \"127.0.0.1:65535\"").unwrap();
        assert!(config.shard_ports_for(1).is_err());
        let err = Config::from_args(&args(&["--config", "/nonexistent/rotor.toml"])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(Args::try_parse_from(["rotord", "--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn cluster_flags_and_keys() {
        let config = Config::from_args(&args(&[])).unwrap();
        assert_eq!((config.n, config.r, config.w), (3, 2, 2));
        assert!(config.seeds.is_empty());
        assert_eq!(config.cluster_id, constants::CLUSTER_ID_DEFAULT);
        let config = Config::from_args(&args(&[
            "--node-id",
            "7",
            "--seeds",
            "127.0.0.2:7070,127.0.0.3:7070",
            "--zone",
            "a",
            "--weight",
            "2",
            "--n",
            "5",
            "--r",
            "3",
            "--w",
            "4",
            "--cluster-id",
            "9",
            "--gossip-interval-ms",
            "50",
        ]))
        .unwrap();
        assert_eq!(config.node_id, Some(7));
        assert_eq!(config.seeds, ["127.0.0.2:7070", "127.0.0.3:7070"]);
        assert_eq!(config.zone, "a");
        assert_eq!((config.weight, config.n, config.r, config.w), (2, 5, 3, 4));
        assert_eq!((config.cluster_id, config.gossip_interval_ms), (9, 50));
        let text = config.to_toml();
        assert_eq!(parse(&text).expect(&text), config, "{text}");

        let file = parse("seeds = [\"10.0.0.1:7070\"]\nn = 1\nr = 1\nw = 1\n").unwrap();
        assert_eq!(file.seeds, ["10.0.0.1:7070"]);
    }

    #[test]
    fn cluster_values_are_checked_with_clear_errors() {
        let refused = |flags: &[&str]| {
            Config::from_args(&args(flags))
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&["--node-id", "0"]).contains("node_id"));
        assert!(refused(&["--cluster-id", "0"]).contains("cluster_id"));
        assert!(refused(&["--weight", "0"]).contains("weight"));
        assert!(refused(&["--n", "0"]).contains("`n`"));
        assert!(refused(&["--n", "17"]).contains("`n`"));
        assert!(refused(&["--n", "2", "--r", "3"]).contains("`r`"));
        assert!(refused(&["--w", "0"]).contains("`w`"));
        assert!(refused(&["--gossip-interval-ms", "1"]).contains("gossip_interval_ms"));
        for bad in ["nohost", ":7070", "host:", "host:0", "host:99999"] {
            assert!(refused(&["--seeds", bad]).contains("seed"), "{bad}");
        }
        assert!(Args::try_parse_from(["rotord", "--node-id", "-1"]).is_err());
        assert!(parse("seeds = \"one\"").is_err());
    }

    #[test]
    fn anti_entropy_flags_and_keys() {
        let config = Config::from_args(&args(&[])).unwrap();
        assert!(config.anti_entropy);
        assert!(config.tombstone_purge);
        assert_eq!(
            (config.ae_interval_ms, config.ae_keys_per_sec),
            (
                constants::EXCHANGE_INTERVAL_MS_DEFAULT,
                constants::EXCHANGE_KEYS_PER_SEC_DEFAULT
            )
        );
        let config = Config::from_args(&args(&[
            "--anti-entropy",
            "off",
            "--ae-interval-ms",
            "20",
            "--ae-keys-per-sec",
            "500",
            "--tombstone-purge",
            "off",
        ]))
        .unwrap();
        assert!(!config.anti_entropy);
        assert!(!config.tombstone_purge);
        assert_eq!((config.ae_interval_ms, config.ae_keys_per_sec), (20, 500));
        let text = config.to_toml();
        assert_eq!(parse(&text).expect(&text), config, "{text}");
        let file = parse("anti_entropy = false\nae_interval_ms = 50\n").unwrap();
        assert!(!file.anti_entropy);
        assert_eq!(file.ae_interval_ms, 50);
        assert!(Args::try_parse_from(["rotord", "--anti-entropy", "maybe"]).is_err());
        assert!(Args::try_parse_from(["rotord", "--tombstone-purge", "maybe"]).is_err());
        let refused = |flags: &[&str]| {
            Config::from_args(&args(flags))
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&["--ae-interval-ms", "0"]).contains("ae_interval_ms"));
        assert!(refused(&["--ae-keys-per-sec", "0"]).contains("ae_keys_per_sec"));
    }

    #[test]
    fn an_ephemeral_listen_port_gives_ephemeral_shard_ports() {
        let config = parse("listen = \"127.0.0.1:0\"").unwrap();
        assert_eq!(config.shard_ports_for(2).unwrap(), vec![0, 0]);
    }
}
