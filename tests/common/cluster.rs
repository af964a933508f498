//! A local cluster of real `rotord` processes for the cluster integration tests: each node on
//! its own free loopback ports with its own temporary data directory, node 1 the seed of
//! the others; kill -9, freeze (SIGSTOP), restart on the same ports and data.
//!
//! Every wait here is bounded and fails with a message that says what was awaited and what
//! was last seen, so a broken cluster fails the tests instead of hanging them.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rotor::client::{Client, ClientConfig, RequestOptions, Stat};

use super::{spawn_on, terminate};

/// Gossip period of test clusters: short, so membership converges in a second or two.
pub const GOSSIP_INTERVAL_MS: u64 = 100;

/// Time a cluster has to list all its members in every node's TOPOLOGY.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time a stopped node's ports have to become free again before its restart.
pub const PORTS_FREE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two polls of a condition.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A running (or stopped) cluster; every node is stopped when it is dropped.
pub struct Cluster {
    /// The nodes, node `i` (from 0) having node id `i + 1`.
    pub nodes: Vec<Node>,
}

/// One node of a [`Cluster`].
pub struct Node {
    /// Node id (`--node-id`).
    pub id: u64,
    /// Common client address.
    pub listen: SocketAddr,
    /// Data directory, kept across restarts.
    pub data: tempfile::TempDir,
    /// Every flag but `--listen`, `--cores` and `--data-dir`, to restart it identically.
    flags: Vec<String>,
    cores: String,
    child: Option<Child>,
}

impl Cluster {
    /// Starts `size` nodes with N=3, R=2, W=2 and `extra` flags on every node, and waits
    /// until every node's TOPOLOGY lists `size` nodes.
    pub fn start(size: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster { nodes: Vec::new() };
        for i in 0..size {
            let seeds: Vec<SocketAddr> = cluster
                .nodes
                .first()
                .map(|n| n.listen)
                .into_iter()
                .collect();
            let node = Node::start(i as u64 + 1, &seeds, extra);
            cluster.nodes.push(node);
        }
        for node in &cluster.nodes {
            eprintln!(
                "node{}: listen {} (shard port {}), data {}",
                node.id,
                node.listen,
                node.listen.port() + 1,
                node.data.path().display()
            );
        }
        cluster.wait_converged();
        cluster
    }

    /// Starts one more node, not waiting for anything but its start (e.g. one that must not
    /// join); its seed is node 1. It is stopped with the cluster.
    pub fn start_extra(&mut self, id: u64, extra: &[&str]) -> usize {
        let seeds = [self.nodes[0].listen];
        self.nodes.push(Node::start(id, &seeds, extra));
        self.nodes.len() - 1
    }

    /// Starts one more node without seeds (it knows nobody until an admin `join`); it is
    /// stopped with the cluster.
    pub fn start_unseeded(&mut self, id: u64, extra: &[&str]) -> usize {
        self.nodes.push(Node::start(id, &[], extra));
        self.nodes.len() - 1
    }

    /// Waits until every running node lists every node of the cluster.
    pub fn wait_converged(&self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            node.wait_members(&ids);
        }
    }

    /// Kills node `i` with SIGKILL (no chance to sync or say goodbye) and reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the killed node");
    }

    /// Restarts node `i` on its ports and data directory, and waits until it lists every
    /// node again.
    pub fn restart(&mut self, i: usize) {
        let seeds: Vec<SocketAddr> = match i {
            0 => Vec::new(),
            _ => vec![self.nodes[0].listen],
        };
        self.nodes[i].respawn(&seeds);
        self.wait_converged();
    }

    /// Freezes node `i` (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn freeze(&self, i: usize) {
        self.nodes[i].signal("-STOP");
    }

    /// Resumes a node frozen by [`Cluster::freeze`].
    pub fn thaw(&self, i: usize) {
        self.nodes[i].signal("-CONT");
    }

    /// A client that sends every request through node `i` (which coordinates or forwards).
    pub fn client_via(&self, i: usize) -> Client {
        self.nodes[i].client(true)
    }

    /// The sum of `name` over every shard of every running node but `except`, or a
    /// failure naming the node that does not report it.
    pub fn stat_sum(&self, name: &str, except: usize) -> Result<u64, String> {
        let mut sum = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if i == except || !node.is_running() {
                continue;
            }
            let stats = node
                .client(true)
                .stats()
                .map_err(|e| format!("STATS of node {}: {e}", node.id))?;
            sum += stat_value(&stats, name).ok_or_else(|| {
                format!("node {} reports no `{name}` in STATS: {stats:?}", node.id)
            })?;
        }
        Ok(sum)
    }
}

impl Node {
    /// Starts node `id` on fresh ports and a fresh data directory.
    fn start(id: u64, seeds: &[SocketAddr], extra: &[&str]) -> Node {
        let mut flags: Vec<String> = [
            "--node-id",
            &id.to_string(),
            "--n",
            "3",
            "--r",
            "2",
            "--w",
            "2",
            "--gossip-interval-ms",
            &GOSSIP_INTERVAL_MS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        flags.extend(extra.iter().map(|s| s.to_string()));
        let cpus = rotor::server::config::allowed_cpus();
        let cpu = cpus[(id as usize) % cpus.len()];
        let mut node = Node {
            id,
            listen: free_ports(),
            data: tempfile::tempdir().expect("temp dir"),
            flags,
            // A one-CPU list (`c-c`), not a count, so the nodes spread over the CPUs.
            cores: format!("{cpu}-{cpu}"),
            child: None,
        };
        node.respawn(seeds);
        node
    }

    fn respawn(&mut self, seeds: &[SocketAddr]) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        self.wait_ports_free();
        let mut flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let seeds: Vec<String> = seeds.iter().map(SocketAddr::to_string).collect();
        let seeds = seeds.join(",");
        if !seeds.is_empty() {
            flags.extend(["--seeds", &seeds]);
        }
        let label = format!("node{}", self.id);
        let (child, listen) = spawn_on(
            &label,
            &self.listen.to_string(),
            self.data.path(),
            &self.cores,
            &flags,
        );
        assert_eq!(listen, self.listen, "node {} listens elsewhere", self.id);
        self.child = Some(child);
    }

    /// Whether the node's process is running (not killed or stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A client of this node: pinned (every request through this node) or routing by the
    /// topology from it.
    pub fn client(&self, pinned: bool) -> Client {
        let config = ClientConfig {
            pin_to_seed: pinned,
            ..ClientConfig::default()
        };
        Client::connect_with(self.listen, config).unwrap_or_else(|e| {
            panic!("cannot connect to node {} at {}: {e}", self.id, self.listen)
        })
    }

    /// The node ids this node's TOPOLOGY lists, sorted.
    pub fn members(&self) -> Result<Vec<u64>, String> {
        let client = Client::connect_with(self.listen, ClientConfig::default())
            .map_err(|e| e.to_string())?;
        let mut ids: Vec<u64> = client.topology().nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Waits until this node's TOPOLOGY lists exactly `ids` (in any order).
    pub fn wait_members(&self, ids: &[u64]) {
        let mut want = ids.to_vec();
        want.sort_unstable();
        let last = wait_for(CONVERGE_TIMEOUT, || match self.members() {
            Ok(seen) if seen == want => Ok(()),
            Ok(seen) => Err(format!("lists {seen:?}")),
            Err(e) => Err(e),
        });
        if let Err(last) = last {
            panic!(
                "node {} ({}) did not list nodes {want:?} within {CONVERGE_TIMEOUT:?}: {last}",
                self.id, self.listen
            );
        }
    }

    /// Waits until the node's ports can be bound again as rotord checks them first (a plain
    /// bind, with SO_REUSEADDR): a killed node's listening sockets can outlive its process
    /// for a moment (its io_uring rings are torn down by the kernel asynchronously), and a
    /// restart in that window fails with "address in use".
    fn wait_ports_free(&self) {
        let shard_port = SocketAddr::new(self.listen.ip(), self.listen.port() + 1);
        let free = wait_for(PORTS_FREE_TIMEOUT, || {
            for addr in [self.listen, shard_port] {
                TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
            }
            Ok(())
        });
        if let Err(last) = free {
            panic!(
                "the ports of node {} are still taken {PORTS_FREE_TIMEOUT:?} after it stopped: {last}",
                self.id
            );
        }
    }

    /// Runs `rotor --server <this node> ARGS` (e.g. `admin status`) and returns its
    /// standard output, or a failure with its exit status and both outputs.
    pub fn rotor(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .arg("--server")
            .arg(self.listen.to_string())
            .args(args)
            .output()
            .map_err(|e| format!("cannot run rotor: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        Err(format!(
            "rotor {args:?} via node {}: {}\nstdout: {stdout}\nstderr: {}",
            self.id,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// The sum of `name` over this node's shards from its STATS.
    pub fn stat(&self, name: &str) -> Result<u64, String> {
        let stats = Client::connect_with(self.listen, ClientConfig::default())
            .and_then(|mut client| client.stats())
            .map_err(|e| format!("STATS of node {}: {e}", self.id))?;
        stat_value(&stats, name)
            .ok_or_else(|| format!("node {} reports no `{name}` in STATS", self.id))
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("node is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} node {}", self.id);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // A frozen node would ignore SIGTERM until resumed.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            terminate(child);
        }
    }
}

/// The sum of `name` over every shard in `stats` (a name may carry a dotted prefix), or
/// `None` when no shard reports it.
pub fn stat_value(stats: &[Stat], name: &str) -> Option<u64> {
    let dotted = format!(".{name}");
    let values: Vec<u64> = stats
        .iter()
        .filter(|s| s.name == name || s.name.ends_with(&dotted))
        .map(|s| s.value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Polls `check` until it returns `Ok` or `timeout` passes; then the last error.
pub fn wait_for<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(POLL_EVERY),
        }
    }
}

/// Request options with `n` replicas and quorum `quorum` (R or W).
pub fn quorum(n: u8, quorum: u8) -> RequestOptions {
    RequestOptions {
        n,
        quorum,
        timeout_ms: 0,
    }
}

/// A common address on 127.0.0.1 whose port and the next one (the shard port of a
/// one-shard node) are free right now, below the kernel's ephemeral range.
///
/// Why not a port the kernel picks: those come from the ephemeral range, and while a node
/// is down its peers keep connecting to it from ephemeral ports of their own; one of those
/// can be handed the dead node's very port and connect to itself (TCP simultaneous open),
/// holding the port so that the node cannot restart on it.
fn free_ports() -> SocketAddr {
    use std::sync::atomic::{AtomicU64, Ordering};
    /// Spreads the search of concurrent tests and test processes.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    const LOW: u64 = 20_000;
    const SPAN: u64 = 12_000;
    let start = u64::from(std::process::id()) * 7919 + NEXT.fetch_add(2, Ordering::Relaxed);
    for step in 0..SPAN / 2 {
        let port = (LOW + (start + step * 2) % SPAN) as u16;
        let taken = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_err();
        if !taken(port) && !taken(port + 1) {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
    panic!(
        "no two consecutive free ports on 127.0.0.1 in {LOW}..{}",
        LOW + SPAN
    );
}
