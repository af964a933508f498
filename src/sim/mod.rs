//! The deterministic cluster simulator: several nodes running the real coordinator,
//! gossip, failure detector, hint delivery and anti-entropy in one thread, over a simulated network and
//! clock, with clients whose history is checked ([`checker`]).
//!
//! Place in the flow: this is the test harness of the cluster layer, nothing in the
//! server depends on it. It plays the part of the runtime: it delivers messages, fires
//! timers, carries out the state machines' actions and crashes and restarts nodes.
//!
//! Everything random comes from one seed ([`SplitMix64`]), time is a `u64` of simulated
//! milliseconds, and every collection iterates in a fixed order, so a seed replays exactly:
//! `ROTOR_SIM_SEED=1234 cargo test --test sim_seeds`.
//!
//! A run: the nodes form a cluster from one seed node by gossip; clients then put (with
//! the context of their last read of the key, or blind), get and delete a few keys while
//! the network delays, drops, duplicates and reorders messages, partitions come and go
//! (some one-way), and nodes crash (losing the writes their store had not synced, and then
//! coming back as a new incarnation) and restart. Then the faults stop, the network heals,
//! every node runs until its hints have drained, and every node reads every key; the
//! checker judges those final reads. Anti-entropy ([`crate::antientropy`]) runs on every
//! node throughout, over trees computed on demand from each node's [`MemStore`].
//!
//! The wipe scenario ([`run_wipe_seed`]) runs the same workload (without crashes), drains
//! the hints, then deletes one node's whole store (a new incarnation) and restarts it cut
//! off from the others; once the network heals, nobody reads or writes, so only
//! anti-entropy can refill it. It checks that every replica of every key ends equal to
//! the merge of all nodes' states, reports the simulated time that took, and then runs the
//! checker's final reads.
//!
//! The membership scenario ([`run_membership_seed`]) switches the formed cluster to a
//! committed ring and commits one to three changes during the workload (a join, a leave,
//! the removal of a node lost for good, a weight change), carried out as the server does
//! ([`changes`]: pending change, verified transfers, double writes, whole-change flip, drop
//! after every member serves the new ring) under the same faults. After the heal it checks
//! that every node serves the final ring, every partition has N distinct replicas, each
//! holding the merge of all states of its keys, nodes that left hold nothing, and the
//! final reads (deleted keys stay deleted: checker property 4). Tombstone purges run too.
//!
//! The purge scenario ([`run_purge_seed`]) runs few keys, many deletes, the usual faults
//! and tombstone purges confirmed by anti-entropy; after the heal every tombstone must go
//! and no deleted key may come back.

mod changes;
pub mod checker;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;

use crate::antientropy::{AntiEntropy, ExchangeAction, ExchangeConfig, ExchangeMessage};
use crate::causal::{Actor, CausalState, Context, SiblingLimits};
use crate::coordinator::{
    Action, ClientReply, ClientRequest, Config, Coordinator, MemDurability, MemStore, Options,
    Origin, PeerMessage, ReplicaStore,
};
use crate::gossip::{
    DetectorConfig, FailureDetector, Gossip, GossipConfig, GossipMessage, GossipPeer, NodeState,
    SplitMix64,
};
use crate::membership::{Change, Handoff, TransferMessage};
use crate::ring::{NodeId, Replica, Ring, ShardId};
use crate::wire::{ErrorCode, NodeStatus};
use changes::{Membership, SimPending};
use checker::{show, History, Outcome};

/// The shape of one run, drawn from its seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Distinct keys the clients use.
    pub keys: u64,
    /// Operations each client issues.
    pub ops_per_client: u64,
    /// Chance of a message being lost, percent.
    pub loss_percent: u64,
    /// Chance of a message being delivered twice, percent.
    pub duplicate_percent: u64,
    /// Largest one-way delay, milliseconds (delays are uniform from 1, so messages reorder).
    pub delay_max_ms: u64,
    /// Crashes during the run.
    pub crashes: u64,
    /// Partitions during the run.
    pub partitions: u64,
    /// How the nodes' stores sync.
    pub durability: MemDurability,
    /// Partitions of the ring.
    pub q: u32,
    /// Membership changes committed during the run (joins, leaves, removals of a node lost
    /// for good, weight changes), one at a time.
    pub changes: u64,
    /// Whether nodes purge the tombstones anti-entropy confirmed at every replica.
    pub purge: bool,
}

impl SimConfig {
    /// The configuration seed `seed` runs with.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5EED_C0F1_6000_0001);
        SimConfig {
            nodes: 3 + rng.below(3),
            clients: 2 + rng.below(3),
            keys: 1 + rng.below(3),
            ops_per_client: 10 + rng.below(15),
            loss_percent: rng.below(6),
            duplicate_percent: rng.below(4),
            delay_max_ms: 1 + rng.below(30),
            crashes: rng.below(5),
            partitions: rng.below(3),
            durability: if rng.chance(70) {
                MemDurability::Group
            } else {
                MemDurability::Always
            },
            q: 64,
            changes: 0,
            purge: false,
        }
    }
}

/// What a passing run did, for tests that check the simulator exercises what it should.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Writes acknowledged.
    pub acked_writes: u64,
    /// Writes refused or of unknown outcome.
    pub failed_writes: u64,
    /// Reads checked, final ones included.
    pub reads: u64,
    /// Final reads that had to show concurrent writes as siblings.
    pub sibling_reads: u64,
    /// Crashes that lost unsynced writes (and so renewed the incarnation).
    pub lossy_crashes: u64,
    /// Nodes in the cluster (3 is exactly N: no fallback exists, hints stay local).
    pub nodes: u64,
    /// Hinted writes sent to fallbacks.
    pub hinted_writes: u64,
    /// Hints coordinators kept for replicas themselves, having no fallback left.
    pub local_hints: u64,
    /// Simulated milliseconds the run took.
    pub sim_ms: u64,
    /// Anti-entropy exchanges started.
    pub exchanges: u64,
    /// Anti-entropy messages sent.
    pub exchange_messages: u64,
    /// Keys whose state an anti-entropy merge changed.
    pub keys_repaired: u64,
    /// Membership changes committed.
    pub changes_committed: u64,
    /// Replica moves those changes made.
    pub moves: u64,
    /// Moves whose transfer reported matching roots (a move may report again after a
    /// crash of its sender).
    pub moves_done: u64,
    /// Transfers that stalled and were started again.
    pub transfers_stalled: u64,
    /// Writes copied to new holders during moves.
    pub forwarded_writes: u64,
    /// Keys dropped by old holders after the flip.
    pub dropped_keys: u64,
    /// Keys found on a node that does not replicate them after a change, handed on as
    /// hints.
    pub orphan_keys: u64,
    /// Hints re-addressed from a node that no longer replicates their partition.
    pub hints_readdressed: u64,
    /// Tombstones purged, over all nodes.
    pub tombstones_purged: u64,
    /// Tombstones left on all nodes at the end.
    pub tombstones_left: u64,
    /// Final reads of keys whose last acknowledged write was a delete (they must stay
    /// deleted).
    pub deleted_reads: u64,
}

/// A failed run: the seed, what broke, and the end of the event log.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed that fails.
    pub seed: u64,
    /// The violated property.
    pub message: String,
    /// The last events before the failure.
    pub log: Vec<String>,
    /// Whether it was a run of the wipe scenario ([`run_wipe_seed`]).
    pub wipe: bool,
    /// The family the seed belongs to.
    pub family: Family,
}

/// The seed families, each with its configuration and replay variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// [`run_seed`].
    Base,
    /// [`run_wipe_seed`].
    Wipe,
    /// [`run_membership_seed`].
    Membership,
    /// [`run_purge_seed`].
    Purge,
}

impl Family {
    /// The configuration seed `seed` of this family runs with.
    pub fn config(self, seed: u64) -> SimConfig {
        match self {
            Family::Base => SimConfig::from_seed(seed),
            Family::Wipe => wipe_config(seed),
            Family::Membership => membership_config(seed),
            Family::Purge => purge_config(seed),
        }
    }

    /// The variable that replays one seed of this family.
    pub fn variable(self) -> &'static str {
        match self {
            Family::Base => "ROTOR_SIM_SEED",
            Family::Wipe => "ROTOR_SIM_WIPE_SEED",
            Family::Membership => "ROTOR_SIM_MEMBERSHIP_SEED",
            Family::Purge => "ROTOR_SIM_PURGE_SEED",
        }
    }
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.message)?;
        writeln!(f, "config: {:?}", self.family.config(self.seed))?;
        writeln!(f, "last events:")?;
        for line in &self.log {
            writeln!(f, "  {line}")?;
        }
        let variable = self.family.variable();
        write!(
            f,
            "replay: {variable}={} cargo test --test sim_seeds -- --nocapture",
            self.seed
        )
    }
}

/// Runs seed `seed` to the end and checks its history.
pub fn run_seed(seed: u64) -> Result<SimReport, SimFailure> {
    let mut sim = Simulation::new(seed, SimConfig::from_seed(seed));
    match sim.run() {
        Ok(()) => Ok(sim.report()),
        Err(message) => Err(SimFailure {
            seed,
            message,
            log: sim.log.iter().cloned().collect(),
            wipe: false,
            family: Family::Base,
        }),
    }
}

/// The configuration of a membership run of seed `seed`: the usual faults, more keys, one
/// to three membership changes during the workload, tombstone purges on, a smaller ring.
pub fn membership_config(seed: u64) -> SimConfig {
    let base = SimConfig::from_seed(seed);
    SimConfig {
        keys: 12 + seed % 12,
        ops_per_client: 25,
        changes: 1 + seed % 3,
        purge: true,
        q: 32,
        ..base
    }
}

/// The configuration of a purge run of seed `seed`: the usual faults, a few keys deleted
/// often, purges on, a small ring (so anti-entropy compares every partition often).
pub fn purge_config(seed: u64) -> SimConfig {
    let base = SimConfig::from_seed(seed);
    SimConfig {
        keys: 4 + seed % 5,
        ops_per_client: 30,
        purge: true,
        q: 16,
        ..base
    }
}

/// Runs the membership seed `seed`: membership changes under the usual workload and
/// faults, then after the heal: every node on the final ring, N distinct replicas of
/// every partition each holding its data, nodes that left holding nothing, and the
/// checker's final reads (deleted keys included).
pub fn run_membership_seed(seed: u64) -> Result<SimReport, SimFailure> {
    run_family(seed, Family::Membership)
}

/// Runs the purge seed `seed`: deletes, purges and the usual faults; after the heal
/// every tombstone must go (anti-entropy confirms them everywhere) and no deleted key may
/// come back in the final reads.
pub fn run_purge_seed(seed: u64) -> Result<SimReport, SimFailure> {
    run_family(seed, Family::Purge)
}

fn run_family(seed: u64, family: Family) -> Result<SimReport, SimFailure> {
    let mut sim = Simulation::new(seed, family.config(seed));
    match sim.run() {
        Ok(()) => Ok(sim.report()),
        Err(message) => Err(SimFailure {
            seed,
            message,
            log: sim.log.iter().cloned().collect(),
            wipe: false,
            family,
        }),
    }
}

/// What the wipe scenario measured ([`run_wipe_seed`]).
#[derive(Debug, Clone, Default)]
pub struct WipeReport {
    /// The node whose store was wiped.
    pub wiped: u64,
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Keys with a state somewhere at the end.
    pub keys: u64,
    /// Keys the wiped node held before it lost them.
    pub keys_lost: u64,
    /// Simulated milliseconds from the network healing to every replica of every key
    /// holding the merge of all nodes' states (checked every 50 ms).
    pub refill_ms: u64,
    /// Exchanges started meanwhile, over all nodes.
    pub exchanges: u64,
    /// Anti-entropy messages sent meanwhile.
    pub messages: u64,
    /// Their wire bytes.
    pub bytes: u64,
    /// Entries received plus pushed meanwhile.
    pub entries_moved: u64,
    /// The whole run.
    pub run: SimReport,
}

/// The configuration of a wipe run of seed `seed`: the usual network faults, no crashes or
/// partitions during the workload, and more keys (so the wiped node has something to lose).
pub fn wipe_config(seed: u64) -> SimConfig {
    SimConfig {
        keys: 150,
        ops_per_client: 60,
        crashes: 0,
        partitions: 0,
        ..SimConfig::from_seed(seed)
    }
}

/// Runs the wipe scenario of seed `seed`: a node's store is wiped after the workload and
/// must be refilled by anti-entropy alone; every replica of every key must then hold the
/// merge of all, and the final reads must pass the checker.
pub fn run_wipe_seed(seed: u64) -> Result<WipeReport, SimFailure> {
    let mut sim = Simulation::new(seed, wipe_config(seed));
    match sim.run_wipe() {
        Ok(mut report) => {
            report.run = sim.report();
            Ok(report)
        }
        Err(message) => Err(SimFailure {
            seed,
            message,
            log: sim.log.iter().cloned().collect(),
            wipe: true,
            family: Family::Wipe,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// The simulation

/// Simulated time between two timer ticks of every node, milliseconds.
const TICK_MS: u64 = 5;
/// Group-commit interval of the simulated stores: a multiple of `TICK_MS`, long enough
/// that crashes often find unsynced writes.
const GROUP_COMMIT_MS: u64 = 50;
/// Gossip interval in the simulation (the default is 1 s; formation would take longer).
const SIM_GOSSIP_MS: u64 = 100;
/// A client gives up on a request after this long and counts its outcome as unknown.
const CLIENT_TIMEOUT_MS: u64 = 3_000;
/// The coordinators' request deadline.
const SIM_REQUEST_TIMEOUT_MS: u32 = 600;
/// Longest the cluster may take to form, to drain, or to answer the final reads.
const PHASE_MS_MAX: u64 = 120_000;
/// How often the wipe scenario checks whether anti-entropy has refilled the wiped node.
const CONVERGENCE_CHECK_MS: u64 = 50;
/// Events kept for a failure report.
const LOG_LINES: usize = 400;

struct Simulation {
    config: SimConfig,
    rng: SplitMix64,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    nodes: Vec<SimNode>,
    clients: Vec<SimClient>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// Faults still allowed; cleared when the run heals.
    faults_on: bool,
    history: History,
    log: std::collections::VecDeque<String>,
    lossy_crashes: u64,
    hinted_writes: u64,
    next_value: u64,
    /// Anti-entropy figures of nodes since crashed (their machines are gone).
    exchanges_before_crashes: crate::antientropy::ExchangeStats,
    /// Local hints of coordinators since crashed or wiped.
    local_hints_before_crashes: u64,
    /// Membership changes still to commit.
    changes_left: u64,
    /// Epoch of the last committed ring (0: still in formation mode).
    last_epoch: u64,
    /// Nodes that left or were removed (not members of the final ring).
    departed: BTreeSet<u64>,
    /// Nodes lost for good: never restarted.
    dead: BTreeSet<u64>,
    changes_committed: u64,
    moves_committed: u64,
    moves_done: u64,
    transfers_stalled: u64,
    forwarded_writes: u64,
    dropped_keys: u64,
    orphan_keys: u64,
    hints_readdressed: u64,
    tombstones_purged: u64,
}

enum Event {
    Tick,
    Peer {
        from: Replica,
        to: Replica,
        request_id: u32,
        message: PeerMessage,
    },
    Gossip {
        from: NodeId,
        to: NodeId,
        message: GossipMessage,
    },
    Exchange {
        from: Replica,
        to: Replica,
        request_id: u32,
        message: ExchangeMessage,
    },
    Request {
        node: u64,
        token: u64,
        request: ClientRequest,
    },
    Reply {
        token: u64,
        reply: ClientReply,
    },
    ClientWake(u64),
    Crash(u64),
    Restart(u64),
    Cut(Vec<(u64, u64)>),
    Heal(Vec<(u64, u64)>),
    /// A node's ring state (its serving ring and pending change), pushed or answered.
    RingState {
        from: u64,
        to: u64,
        ring: Ring,
        pending: Option<SimPending>,
        reply: bool,
    },
    Transfer {
        from: Replica,
        to: Replica,
        request_id: u32,
        message: TransferMessage,
    },
    /// A write copied from an old holder to a move's new holder.
    Forward {
        from: u64,
        to: u64,
        partition: u32,
        key: Vec<u8>,
        state: CausalState,
    },
    /// The operator's next membership change.
    Admin,
    /// A change to commit (the removal of a node lost a moment ago).
    Commit(Change),
}

struct SimNode {
    id: NodeId,
    state: NodeRun,
    /// The persisted membership (written on every change, as the runtime would).
    gossip_file: Vec<u8>,
    /// The persisted committed ring and pending change (`None` in formation mode).
    ring_file: Option<(Ring, Option<SimPending>)>,
}

#[allow(clippy::large_enum_variant)]
enum NodeRun {
    Running {
        coordinator: Coordinator<MemStore>,
        antientropy: AntiEntropy,
        gossip: Gossip,
        detector: FailureDetector,
        ring: Ring,
        handoff: Handoff,
        member: Membership,
    },
    Crashed(MemStore),
}

struct SimClient {
    ops_left: u64,
    /// The request in flight: (token, what it was, sent at).
    waiting: Option<(u64, Pending, u64)>,
    next_seq: u64,
    /// Context of the last read of each key.
    contexts: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Final-phase reads still to check: (node, key).
    final_reads: Vec<(u64, Vec<u8>)>,
}

#[derive(Clone)]
enum Pending {
    Read { key: Vec<u8>, last: bool },
    Write { index: usize },
}

fn replica(node: u64) -> Replica {
    Replica {
        node: NodeId(node),
        shard: ShardId(0),
    }
}

fn address(node: u64) -> String {
    format!("10.0.0.{node}:7000")
}

fn node_state(node: u64) -> NodeState {
    NodeState {
        id: NodeId(node),
        version: 1,
        status: NodeStatus::Up,
        weight: 1,
        zone: String::new(),
        address: address(node),
        ports: vec![7001],
    }
}

fn coordinator_config() -> Config {
    Config {
        timeout_ms: SIM_REQUEST_TIMEOUT_MS,
        hint_delivery_interval_ms: 50,
        hint_ack_timeout_ms: 300,
        ..Config::default()
    }
}

/// Anti-entropy in the simulation: an exchange every 50 ms per node (the default is
/// 100 ms per shard), deadlines like the coordinator's.
fn exchange_config() -> ExchangeConfig {
    ExchangeConfig {
        exchange_interval_ms: 50,
        request_timeout_ms: u64::from(SIM_REQUEST_TIMEOUT_MS),
        ..ExchangeConfig::default()
    }
}

fn antientropy(node: u64) -> AntiEntropy {
    AntiEntropy::new(replica(node), exchange_config(), SiblingLimits::default())
}

fn detector_config() -> DetectorConfig {
    DetectorConfig {
        ping_interval_ms: 50,
        ping_timeout_ms: 150,
        ..DetectorConfig::default()
    }
}

fn gossip_config() -> GossipConfig {
    GossipConfig {
        interval_ms: SIM_GOSSIP_MS,
        ..GossipConfig::default()
    }
}

impl Simulation {
    fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = SplitMix64::new(seed);
        let nodes = (1..=config.nodes)
            .map(|id| {
                let store = MemStore::new(Actor(rng.next_u64()), config.durability, 1 << 20);
                let seeds = vec![address(1)];
                let gossip = Gossip::new(node_state(id), seeds, gossip_config(), rng.next_u64());
                let gossip_file = gossip.persist();
                let ring = ring_of(&gossip, config.q);
                SimNode {
                    id: NodeId(id),
                    state: NodeRun::Running {
                        coordinator: Coordinator::new(replica(id), coordinator_config(), store),
                        antientropy: antientropy(id),
                        gossip,
                        detector: FailureDetector::new(detector_config()),
                        ring,
                        handoff: changes::handoff(id),
                        member: Membership::default(),
                    },
                    gossip_file,
                    ring_file: None,
                }
            })
            .collect();
        let clients = (0..config.clients)
            .map(|_| SimClient {
                ops_left: config.ops_per_client,
                waiting: None,
                next_seq: 0,
                contexts: BTreeMap::new(),
                final_reads: Vec::new(),
            })
            .collect();
        Simulation {
            config,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes,
            clients,
            cut: BTreeSet::new(),
            faults_on: true,
            history: History::default(),
            log: std::collections::VecDeque::new(),
            lossy_crashes: 0,
            hinted_writes: 0,
            next_value: 0,
            exchanges_before_crashes: Default::default(),
            local_hints_before_crashes: 0,
            changes_left: 0,
            last_epoch: 0,
            departed: BTreeSet::new(),
            dead: BTreeSet::new(),
            changes_committed: 0,
            moves_committed: 0,
            moves_done: 0,
            transfers_stalled: 0,
            forwarded_writes: 0,
            dropped_keys: 0,
            orphan_keys: 0,
            hints_readdressed: 0,
            tombstones_purged: 0,
        }
    }

    fn report(&self) -> SimReport {
        let mut report = SimReport {
            reads: self.history.reads,
            sibling_reads: self.history.sibling_reads,
            lossy_crashes: self.lossy_crashes,
            nodes: self.config.nodes,
            hinted_writes: self.hinted_writes,
            local_hints: self.local_hints_before_crashes,
            sim_ms: self.now,
            ..SimReport::default()
        };
        for node in &self.nodes {
            if let NodeRun::Running { coordinator, .. } = &node.state {
                report.local_hints += coordinator.local_hints();
            }
        }
        let stats = self.exchange_stats();
        report.exchanges = stats.started;
        report.exchange_messages = stats.messages_sent;
        report.keys_repaired = stats.keys_repaired;
        report.changes_committed = self.changes_committed;
        report.moves = self.moves_committed;
        report.moves_done = self.moves_done;
        report.transfers_stalled = self.transfers_stalled;
        report.forwarded_writes = self.forwarded_writes;
        report.dropped_keys = self.dropped_keys;
        report.orphan_keys = self.orphan_keys;
        report.hints_readdressed = self.hints_readdressed;
        report.tombstones_purged = self.tombstones_purged;
        report.tombstones_left = self.tombstones();
        report.deleted_reads = self.history.deleted_reads;
        for write in self.history.writes() {
            match write.outcome {
                Outcome::Acked(_) => report.acked_writes += 1,
                _ => report.failed_writes += 1,
            }
        }
        report
    }

    fn run(&mut self) -> Result<(), String> {
        self.schedule(0, Event::Tick);
        // Phase 1: form the cluster.
        self.run_until(|sim| sim.formed(), "the cluster to form")?;
        self.note(format!("cluster formed: {:?}", self.config));
        if self.config.changes > 0 {
            self.commit_formation();
            self.changes_left = self.config.changes;
            let at = self.now + self.rng.below(500);
            self.schedule(at, Event::Admin);
        }
        // Phase 2: the workload under faults (and membership changes).
        self.workload()?;
        // Phase 3: heal, restart everything, drain hints, finish the changes.
        self.heal_and_drain()?;
        if self.config.changes > 0 {
            self.check_final_ring()?;
        }
        if self.config.changes > 0 || self.config.purge {
            // Every replica of every key holds the merge of all.
            self.converge()?;
        }
        if self.config.purge {
            // A healthy, stable cluster: anti-entropy confirms every tombstone everywhere.
            self.run_until(|sim| sim.tombstones() == 0, "every tombstone to be purged")
                .map_err(|e| {
                    format!(
                        "{e}: {} left after {} purged",
                        self.tombstones(),
                        self.tombstones_purged
                    )
                })?;
        }
        // Phase 4: every node reads every key.
        self.final_reads()
    }

    /// Runs until every replica of every key holds the merge of every node's state.
    fn converge(&mut self) -> Result<(), String> {
        let limit = self.now + PHASE_MS_MAX;
        loop {
            let (keys, divergent) = self.divergence()?;
            if divergent == 0 {
                return Ok(());
            }
            if self.now > limit {
                return Err(format!(
                    "{divergent} replica states of {keys} keys still differ from the merge \
                     after {PHASE_MS_MAX} ms"
                ));
            }
            let next = self.now + CONVERGENCE_CHECK_MS;
            self.run_until(|sim| sim.now >= next, "replicas to converge")?;
        }
    }

    /// The clients' operations, with the crashes and partitions of the configuration.
    fn workload(&mut self) -> Result<(), String> {
        let start = self.now;
        for client in 0..self.config.clients {
            let at = start + self.rng.below(20);
            self.schedule(at, Event::ClientWake(client));
        }
        let window = 1_500;
        for _ in 0..self.config.crashes {
            let node = 1 + self.rng.below(self.config.nodes);
            let at = start + self.rng.below(window);
            let down_for = 100 + self.rng.below(1_500);
            self.schedule(at, Event::Crash(node));
            self.schedule(at + down_for, Event::Restart(node));
        }
        for _ in 0..self.config.partitions {
            let links = self.random_cut();
            let at = start + self.rng.below(window);
            let lasts = 100 + self.rng.below(1_500);
            self.schedule(at, Event::Cut(links.clone()));
            self.schedule(at + lasts, Event::Heal(links));
        }
        self.run_until(|sim| sim.workload_done(), "the workload to finish")
    }

    /// Stops the faults, restarts every crashed node and runs until hints have drained.
    fn heal_and_drain(&mut self) -> Result<(), String> {
        self.faults_on = false;
        self.cut.clear();
        for node in 1..=self.nodes.len() as u64 {
            self.restart(node);
        }
        self.note("healed".to_owned());
        self.run_until(|sim| sim.drained(), "hints to drain")
            .map_err(|e| format!("{e}; {}", self.drain_status()))
    }

    /// Every node reads every key; the checker judges the answers.
    fn final_reads(&mut self) -> Result<(), String> {
        let keys: Vec<Vec<u8>> = (0..self.config.keys).map(key).collect();
        let readers: Vec<u64> = (1..=self.nodes.len() as u64)
            .filter(|&n| self.is_member(n))
            .collect();
        for node in readers {
            let client = (node - 1) % self.config.clients;
            for key in &keys {
                if let Some(client) = self.clients.get_mut(client as usize) {
                    client.final_reads.push((node, key.clone()));
                }
            }
        }
        for client in 0..self.config.clients {
            self.schedule(self.now, Event::ClientWake(client));
        }
        self.run_until(
            |sim| {
                sim.clients
                    .iter()
                    .all(|c| c.final_reads.is_empty() && c.waiting.is_none())
            },
            "the final reads",
        )
    }

    /// The wipe scenario: after the workload and the hint drain, one node loses its whole
    /// store (a new, empty incarnation), restarts cut off from the others, and once the
    /// network heals only anti-entropy can refill it (nobody writes or reads meanwhile,
    /// and the hints were delivered before the wipe).
    fn run_wipe(&mut self) -> Result<WipeReport, String> {
        self.schedule(0, Event::Tick);
        self.run_until(|sim| sim.formed(), "the cluster to form")?;
        self.note(format!("cluster formed: {:?}", self.config));
        self.workload()?;
        self.heal_and_drain()?;
        let wiped = 1 + self.rng.below(self.config.nodes);
        let keys_lost = self
            .store_of(wiped)
            .map_or(0, |store| store.states().count() as u64);
        self.wipe(wiped);
        let others: Vec<u64> = (1..=self.config.nodes).filter(|&n| n != wiped).collect();
        let links: Vec<(u64, u64)> = others
            .iter()
            .flat_map(|&other| [(wiped, other), (other, wiped)])
            .collect();
        self.cut.extend(links.iter().copied());
        let heal_at = self.now + 200 + self.rng.below(1_000);
        self.schedule(heal_at, Event::Heal(links));
        self.run_until(|sim| sim.now >= heal_at, "the heal")?;
        self.note(format!("n{wiped} reconnected"));
        let before = self.exchange_stats();
        let limit = self.now + PHASE_MS_MAX;
        loop {
            let (keys, divergent) = self.divergence()?;
            if divergent == 0 {
                let after = self.exchange_stats();
                let report = WipeReport {
                    wiped,
                    nodes: self.config.nodes,
                    keys,
                    keys_lost,
                    refill_ms: self.now - heal_at,
                    exchanges: after.started - before.started,
                    messages: after.messages_sent - before.messages_sent,
                    bytes: after.bytes_sent - before.bytes_sent,
                    entries_moved: (after.entries_received - before.entries_received)
                        + (after.entries_pushed - before.entries_pushed),
                    run: SimReport::default(),
                };
                self.note(format!("refilled: {report:?}"));
                self.final_reads()?;
                return Ok(report);
            }
            if self.now > limit {
                return Err(format!(
                    "anti-entropy left {divergent} replica states of {keys} keys different \
                     from the merge after {PHASE_MS_MAX} ms"
                ));
            }
            let next = self.now + CONVERGENCE_CHECK_MS;
            self.run_until(|sim| sim.now >= next, "anti-entropy to refill")?;
        }
    }

    /// Replaces a node's store by an empty one of a new incarnation (its data directory
    /// deleted) and restarts it. The membership file is kept: the node rejoins as itself.
    fn wipe(&mut self, node: u64) {
        let fresh = Actor(self.rng.next_u64());
        let durability = self.config.durability;
        let Some(slot) = self.nodes.get_mut((node - 1) as usize) else {
            return;
        };
        let empty = MemStore::new(fresh, durability, 1 << 20);
        if let NodeRun::Running {
            antientropy,
            coordinator,
            ..
        } = std::mem::replace(&mut slot.state, NodeRun::Crashed(empty))
        {
            self.exchanges_before_crashes.add(&antientropy.stats());
            self.local_hints_before_crashes += coordinator.local_hints();
        }
        self.note(format!("wipe n{node}"));
        self.restart(node);
    }

    /// (Keys that exist somewhere, replica states that differ from the merge of every
    /// node's state of their key.)
    fn divergence(&self) -> Result<(u64, u64), String> {
        let ring = &self.final_ring()?;
        let n = usize::from(coordinator_config().n);
        let (mut keys, mut divergent) = (0, 0);
        for index in 0..self.config.keys {
            let key = key(index);
            let partition = ring.partition_of(&key).0;
            let mut merged = CausalState::new();
            let mut states = BTreeMap::new();
            for node in (1..=self.nodes.len() as u64).filter(|n| !self.dead.contains(n)) {
                let store = self
                    .store_of(node)
                    .ok_or_else(|| format!("n{node} is not running"))?;
                let state = store
                    .get_state(partition, &key)
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                merged = merged.merge(&state).map_err(|e| e.to_string())?.0;
                states.insert(node, state);
            }
            if merged.is_empty() {
                continue;
            }
            keys += 1;
            for replica in ring
                .preference_list(crate::ring::PartitionId(partition), n)
                .iter()
            {
                if states.get(&replica.node.0) != Some(&merged) {
                    divergent += 1;
                }
            }
        }
        Ok((keys, divergent))
    }

    fn store_of(&self, node: u64) -> Option<&MemStore> {
        match &self
            .nodes
            .get(usize::try_from(node).ok()?.checked_sub(1)?)?
            .state
        {
            NodeRun::Running { coordinator, .. } => Some(coordinator.store()),
            NodeRun::Crashed(_) => None,
        }
    }

    /// Processes events until `done` holds (checked after every event).
    fn run_until(&mut self, done: impl Fn(&Simulation) -> bool, what: &str) -> Result<(), String> {
        let limit = self.now + PHASE_MS_MAX;
        while !done(self) {
            let Some(Reverse((at, id))) = self.queue.pop() else {
                return Err(format!("no events left while waiting for {what}"));
            };
            if at > limit {
                return Err(format!("waited {PHASE_MS_MAX} ms for {what}"));
            }
            self.now = at;
            if let Some(event) = self.events.remove(&id) {
                self.handle(event)?;
            }
        }
        Ok(())
    }

    fn formed(&self) -> bool {
        self.nodes.iter().all(|node| match &node.state {
            NodeRun::Running { gossip, .. } => gossip.members().len() as u64 == self.config.nodes,
            NodeRun::Crashed(_) => false,
        })
    }

    fn workload_done(&self) -> bool {
        self.clients
            .iter()
            .all(|client| client.ops_left == 0 && client.waiting.is_none())
    }

    fn drained(&self) -> bool {
        if !self.membership_settled() {
            return false;
        }
        self.nodes
            .iter()
            .enumerate()
            .all(|(i, node)| match &node.state {
                _ if self.dead.contains(&(i as u64 + 1)) => true,
                NodeRun::Running {
                    coordinator,
                    detector,
                    ..
                } => {
                    coordinator.store().hint_count() == 0
                        && coordinator.in_flight() == 0
                        && detector.unreachable().next().is_none()
                }
                NodeRun::Crashed(_) => false,
            })
    }

    /// What keeps the run from being drained, for a failure report.
    fn drain_status(&self) -> String {
        let mut out = format!(
            "changes left {}, last epoch {}; ",
            self.changes_left, self.last_epoch
        );
        for (i, node) in self.nodes.iter().enumerate() {
            let id = i as u64 + 1;
            match &node.state {
                NodeRun::Running {
                    coordinator,
                    detector,
                    ring,
                    member,
                    ..
                } => out.push_str(&format!(
                    "n{id}: epoch {} pending {:?} drops {} hints {} in flight {} \
                     unreachable {:?} partitions {:?}; ",
                    ring.epoch(),
                    member
                        .pending
                        .as_ref()
                        .map(|p| (p.epoch, p.done.iter().filter(|d| !**d).count())),
                    member.drops.len(),
                    coordinator.store().hint_count(),
                    coordinator.in_flight(),
                    detector.unreachable().collect::<Vec<_>>(),
                    coordinator.store().partitions().len(),
                )),
                NodeRun::Crashed(_) => out.push_str(&format!("n{id}: crashed; ")),
            }
        }
        out
    }

    fn schedule(&mut self, at: u64, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.queue.push(Reverse((at, id)));
        self.events.insert(id, event);
    }

    fn note(&mut self, line: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(format!("{:>7} ms  {line}", self.now));
    }

    fn random_cut(&mut self) -> Vec<(u64, u64)> {
        let nodes = self.nodes.len() as u64;
        let side: Vec<bool> = (0..nodes).map(|_| self.rng.chance(50)).collect();
        let one_way = self.rng.chance(30);
        let mut links = Vec::new();
        for a in 1..=nodes {
            for b in 1..=nodes {
                let (sa, sb) = (side[(a - 1) as usize], side[(b - 1) as usize]);
                if sa && !sb || (!one_way && !sa && sb) {
                    links.push((a, b));
                }
            }
        }
        links
    }

    /// Sends over the simulated network: maybe lost, maybe twice, after a random delay.
    fn send(&mut self, from: u64, to: u64, event: impl Fn() -> Event) {
        let faulty = self.faults_on && from != to;
        if faulty && self.rng.chance(self.config.loss_percent) {
            return;
        }
        let copies = if faulty && self.rng.chance(self.config.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.config.delay_max_ms);
            self.schedule(self.now + delay, event());
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        self.handle_event(event)?;
        self.forward_writes();
        Ok(())
    }

    fn handle_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::RingState {
                from,
                to,
                ring,
                pending,
                reply,
            } => {
                if !self.cut.contains(&(from, to)) {
                    self.ring_state_arrived(from, to, (ring, pending), reply);
                }
            }
            Event::Transfer {
                from,
                to,
                request_id,
                message,
            } => {
                if !self.cut.contains(&(from.node.0, to.node.0)) {
                    self.transfer_arrived(from, to, request_id, message);
                }
            }
            Event::Forward {
                from,
                to,
                partition,
                key,
                state,
            } => {
                if !self.cut.contains(&(from, to)) {
                    self.forward_arrived(to, partition, &key, &state);
                }
            }
            Event::Admin => self.admin(),
            Event::Commit(change) => self.commit(change),
            Event::Tick => {
                self.tick();
                self.schedule(self.now + TICK_MS, Event::Tick);
            }
            Event::Peer {
                from,
                to,
                request_id,
                message,
            } => {
                if self.cut.contains(&(from.node.0, to.node.0)) {
                    return Ok(());
                }
                self.drive(to.node.0, |now, coordinator, ring, detector, out| {
                    coordinator.peer_message(now, from, request_id, message, ring, detector, out)
                });
            }
            Event::Exchange {
                from,
                to,
                request_id,
                message,
            } => {
                if self.cut.contains(&(from.node.0, to.node.0)) {
                    return Ok(());
                }
                let now = self.now;
                let mut out = Vec::new();
                if let Some(NodeRun::Running {
                    coordinator,
                    antientropy,
                    ring,
                    ..
                }) = self.running(to.node.0)
                {
                    let store = coordinator.store_mut();
                    antientropy.message(now, from, request_id, message, ring, store, &mut out);
                }
                self.exchange_actions(to.node.0, out);
            }
            Event::Gossip { from, to, message } => {
                if self.cut.contains(&(from.0, to.0)) {
                    return Ok(());
                }
                self.gossip_message(from, to, message);
            }
            Event::Request {
                node,
                token,
                request,
            } => {
                self.drive(node, |now, coordinator, ring, detector, out| {
                    let origin = Origin::Client(token);
                    coordinator.client_request(now, origin, request, ring, detector, out)
                });
            }
            Event::Reply { token, reply } => self.client_reply(token, reply)?,
            Event::ClientWake(client) => self.client_wake(client),
            Event::Crash(node) => {
                if self.faults_on {
                    self.crash(node);
                }
            }
            Event::Restart(node) => self.restart(node),
            Event::Cut(links) => {
                if self.faults_on {
                    self.note(format!("cut {links:?}"));
                    self.cut.extend(links);
                }
            }
            Event::Heal(links) => {
                for link in links {
                    self.cut.remove(&link);
                }
            }
        }
        Ok(())
    }

    /// Runs `step` on `node`'s coordinator if the node is up, then carries out the actions.
    fn drive(
        &mut self,
        node: u64,
        step: impl FnOnce(u64, &mut Coordinator<MemStore>, &Ring, &FailureDetector, &mut Vec<Action>),
    ) {
        let now = self.now;
        let mut out = Vec::new();
        if let Some(NodeRun::Running {
            coordinator,
            detector,
            ring,
            ..
        }) = self.running(node)
        {
            step(now, coordinator, ring, detector, &mut out);
        }
        self.actions(node, out);
    }

    fn running(&mut self, node: u64) -> Option<&mut NodeRun> {
        let run = &mut self
            .nodes
            .get_mut(usize::try_from(node).ok()?.checked_sub(1)?)?
            .state;
        matches!(run, NodeRun::Running { .. }).then_some(run)
    }

    fn tick(&mut self) {
        let now = self.now;
        for index in 0..self.nodes.len() {
            let node = index as u64 + 1;
            let mut out = Vec::new();
            let mut exchange_out = Vec::new();
            let mut gossip_out = Vec::new();
            if let Some(NodeRun::Running {
                coordinator,
                antientropy,
                gossip,
                detector,
                ring,
                ..
            }) = self.running(node)
            {
                // The group-commit timer (a no-op for stores that sync every write).
                if now.is_multiple_of(GROUP_COMMIT_MS) {
                    coordinator.store_mut().sync();
                }
                coordinator.tick(now, ring, detector, &mut out);
                antientropy.tick(now, ring, detector, &mut exchange_out);
                for (peer, nonce) in detector.tick(now) {
                    let ping = GossipMessage::Ping {
                        nonce,
                        sender: node,
                    };
                    gossip_out.push((GossipPeer::Node(peer), ping));
                }
                gossip_out.extend(gossip.tick(now));
            }
            self.actions(node, out);
            self.exchange_actions(node, exchange_out);
            for (peer, message) in gossip_out {
                self.send_gossip(node, peer, message);
            }
            self.membership_tick(node);
        }
    }

    fn send_gossip(&mut self, from: u64, peer: GossipPeer, message: GossipMessage) {
        let to = match peer {
            GossipPeer::Node(node) => node.0,
            GossipPeer::Seed(seed) => {
                match (1..=self.nodes.len() as u64).find(|&n| address(n) == seed) {
                    Some(node) => node,
                    None => return,
                }
            }
        };
        self.send(from, to, || Event::Gossip {
            from: NodeId(from),
            to: NodeId(to),
            message: message.clone(),
        });
    }

    fn gossip_message(&mut self, from: NodeId, to: NodeId, message: GossipMessage) {
        let q = self.config.q;
        let now = self.now;
        let mut replies = Vec::new();
        let mut persisted = None;
        if let Some(NodeRun::Running {
            gossip,
            detector,
            ring,
            member,
            ..
        }) = self.running(to.0)
        {
            match message {
                GossipMessage::Ping { nonce, sender } => {
                    let pong = GossipMessage::Pong {
                        nonce,
                        sender: to.0,
                    };
                    replies.push((GossipPeer::Node(NodeId(sender)), pong));
                }
                GossipMessage::Pong { nonce, sender } => detector.pong(NodeId(sender), nonce),
                message => {
                    let (out, changed) = gossip.handle(now, message);
                    replies = out;
                    if changed {
                        // A committed ring no longer follows gossip membership.
                        if !member.committed {
                            *ring = ring_of(gossip, q);
                        }
                        gossip.set_ring_epoch(ring.epoch());
                        detector.set_peers(changes::detector_peers(gossip, ring, member));
                        persisted = Some(gossip.persist());
                    }
                }
            }
        }
        if let Some(bytes) = persisted {
            if let Some(node) = self.nodes.get_mut((to.0 - 1) as usize) {
                node.gossip_file = bytes;
            }
        }
        let _ = from;
        for (peer, message) in replies {
            self.send_gossip(to.0, peer, message);
        }
    }

    fn actions(&mut self, node: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send {
                    to,
                    request_id,
                    message,
                } => {
                    if let PeerMessage::HintedWrite { .. } = &message {
                        self.hinted_writes += 1;
                        self.note(format!("n{node} hinted write to n{}", to.node.0));
                    }
                    self.send(node, to.node.0, || Event::Peer {
                        from: replica(node),
                        to,
                        request_id,
                        message: message.clone(),
                    });
                }
                Action::Reply { client, reply } => {
                    // Client links are reliable; only delay applies.
                    let delay = 1 + self.rng.below(self.config.delay_max_ms);
                    self.schedule(
                        self.now + delay,
                        Event::Reply {
                            token: client,
                            reply,
                        },
                    );
                }
                Action::Unresponsive { node: silent } => {
                    if let Some(NodeRun::Running { detector, .. }) = self.running(node) {
                        detector.failed(silent);
                    }
                }
            }
        }
    }

    fn exchange_actions(&mut self, node: u64, actions: Vec<ExchangeAction>) {
        for action in actions {
            match action {
                ExchangeAction::Send {
                    to,
                    request_id,
                    message,
                } => self.send(node, to.node.0, || Event::Exchange {
                    from: replica(node),
                    to,
                    request_id,
                    message: message.clone(),
                }),
                ExchangeAction::Unresponsive { node: silent } => {
                    if let Some(NodeRun::Running { detector, .. }) = self.running(node) {
                        detector.failed(silent);
                    }
                }
            }
        }
    }

    /// Anti-entropy figures over every node, crashed machines included.
    fn exchange_stats(&self) -> crate::antientropy::ExchangeStats {
        let mut total = self.exchanges_before_crashes;
        for node in &self.nodes {
            if let NodeRun::Running { antientropy, .. } = &node.state {
                total.add(&antientropy.stats());
            }
        }
        total
    }

    fn crash(&mut self, node: u64) {
        let fresh = Actor(self.rng.next_u64());
        let keep_roll = self.rng.next_u64();
        let Some(slot) = self.nodes.get_mut((node - 1) as usize) else {
            return;
        };
        let run = std::mem::replace(
            &mut slot.state,
            NodeRun::Crashed(MemStore::new(fresh, MemDurability::Always, 0)),
        );
        match run {
            NodeRun::Running {
                coordinator,
                antientropy,
                ..
            } => {
                self.exchanges_before_crashes.add(&antientropy.stats());
                self.local_hints_before_crashes += coordinator.local_hints();
                let mut store = coordinator.into_store();
                let keep = (keep_roll % (store.unsynced_len() as u64 + 1)) as usize;
                let lost = store.crash(keep, fresh);
                slot.state = NodeRun::Crashed(store);
                if lost {
                    self.lossy_crashes += 1;
                }
                self.note(format!("crash n{node} (lost unsynced writes: {lost})"));
            }
            crashed => slot.state = crashed,
        }
    }

    fn restart(&mut self, node: u64) {
        let seed = self.rng.next_u64();
        let q = self.config.q;
        let Some(slot) = self.nodes.get_mut((node - 1) as usize) else {
            return;
        };
        if let NodeRun::Running { .. } = slot.state {
            return;
        }
        if self.dead.contains(&node) {
            return;
        }
        let run = std::mem::replace(
            &mut slot.state,
            NodeRun::Crashed(MemStore::new(Actor(0), MemDurability::Always, 0)),
        );
        let NodeRun::Crashed(store) = run else {
            return;
        };
        let gossip = Gossip::restore(
            &slot.gossip_file,
            node_state(node),
            vec![address(1)],
            gossip_config(),
            seed,
        );
        let gossip = match gossip {
            Ok(gossip) => gossip,
            // The file is written whole in the simulator; a failure here is a codec bug.
            Err(error) => panic!("persisted membership of n{node} did not decode: {error}"),
        };
        let (ring, member) = changes::restored(&slot.ring_file)
            .unwrap_or_else(|| (ring_of(&gossip, q), Membership::default()));
        let mut detector = FailureDetector::new(detector_config());
        detector.set_peers(changes::detector_peers(&gossip, &ring, &member));
        let pending = member.pending.is_some();
        slot.state = NodeRun::Running {
            coordinator: Coordinator::new(replica(node), coordinator_config(), store),
            antientropy: antientropy(node),
            gossip,
            detector,
            ring,
            handoff: changes::handoff(node),
            member,
        };
        let id = slot.id;
        self.note(format!("restart n{}", id.0));
        if pending {
            self.start_moves(node);
        }
    }

    // --- clients -----------------------------------------------------------------------

    fn client_wake(&mut self, client: u64) {
        let Some(state) = self.clients.get(client as usize) else {
            return;
        };
        if state.waiting.is_some() {
            return;
        }
        let (node, request, pending) = if let Some((node, key)) = state.final_reads.last() {
            let request = ClientRequest::Get {
                options: Options::default(),
                key: key.clone(),
            };
            let pending = Pending::Read {
                key: key.clone(),
                last: true,
            };
            (*node, request, pending)
        } else if state.ops_left > 0 {
            let (node, request, pending) = self.next_op(client);
            if let Some(state) = self.clients.get_mut(client as usize) {
                state.ops_left -= 1;
            }
            (node, request, pending)
        } else {
            return;
        };
        let Some(state) = self.clients.get_mut(client as usize) else {
            return;
        };
        let token = (client << 32) | state.next_seq;
        state.next_seq += 1;
        state.waiting = Some((token, pending, self.now));
        let delay = 1 + self.rng.below(self.config.delay_max_ms);
        self.schedule(
            self.now + delay,
            Event::Request {
                node,
                token,
                request,
            },
        );
        // The client's own timeout.
        self.schedule(
            self.now + CLIENT_TIMEOUT_MS,
            Event::Reply {
                token,
                reply: ClientReply::Error(crate::coordinator::ClientError {
                    code: ErrorCode::Internal,
                    answered: 0,
                    needed: 0,
                    ring_epoch: 0,
                    message: "client timeout".to_owned(),
                }),
            },
        );
    }

    fn next_op(&mut self, client: u64) -> (u64, ClientRequest, Pending) {
        let entries: Vec<u64> = (1..=self.nodes.len() as u64)
            .filter(|&n| self.is_member(n))
            .collect();
        let node = entries
            .get(self.rng.below(entries.len() as u64) as usize)
            .copied()
            .unwrap_or(1);
        let key = key(self.rng.below(self.config.keys));
        let roll = self.rng.below(100);
        let known = self
            .clients
            .get(client as usize)
            .and_then(|c| c.contexts.get(&key))
            .cloned();
        // Per-request options now and then: any R for reads during the run (only the
        // final reads, at the default R = 2, are held to property 1), W of 2 or 3 for
        // writes (W = 1 with R = 2 would not intersect at N = 3 without anti-entropy), and
        // shorter or longer deadlines.
        let timeout_ms = match self.rng.below(10) {
            0 => 300,
            1 => 1_500,
            _ => 0,
        };
        let read_options = Options {
            n: 0,
            quorum: [0, 0, 0, 0, 0, 0, 0, 0, 1, 3][self.rng.below(10) as usize],
            timeout_ms,
        };
        let write_options = Options {
            n: 0,
            quorum: if self.rng.chance(10) { 3 } else { 0 },
            timeout_ms,
        };
        if roll < 35 || (roll >= 85 && known.is_none()) {
            let request = ClientRequest::Get {
                options: read_options,
                key: key.clone(),
            };
            return (node, request, Pending::Read { key, last: false });
        }
        // Mostly with the context of the last read; sometimes blind, making siblings.
        let context = match known {
            Some(context) if !(80..85).contains(&roll) => context,
            _ => Vec::new(),
        };
        let decoded = Context::decode_opaque(&context).unwrap_or_default();
        if roll >= 85 {
            let index = self.history.write(&key, None, decoded);
            self.note(format!("c{client} delete {} via n{node}", show(&key)));
            let request = ClientRequest::Delete {
                options: write_options,
                return_context: false,
                key,
                context,
            };
            return (node, request, Pending::Write { index });
        }
        self.next_value += 1;
        let value = format!("c{client}v{}", self.next_value).into_bytes();
        let index = self.history.write(&key, Some(&value), decoded);
        self.note(format!(
            "c{client} put {}={} via n{node}",
            show(&key),
            show(&value)
        ));
        let request = ClientRequest::Put {
            options: write_options,
            return_context: false,
            key,
            context,
            value,
        };
        (node, request, Pending::Write { index })
    }

    fn client_reply(&mut self, token: u64, reply: ClientReply) -> Result<(), String> {
        let client = token >> 32;
        let Some(state) = self.clients.get_mut(client as usize) else {
            return Ok(());
        };
        let Some((expected, pending, _)) = state.waiting.clone() else {
            return Ok(());
        };
        if expected != token {
            return Ok(()); // A late reply after the client gave up, or its own timeout.
        }
        state.waiting = None;
        match (pending, reply) {
            (Pending::Read { key, last }, ClientReply::Get { siblings, context }) => {
                state.contexts.insert(key.clone(), context);
                if last {
                    state.final_reads.pop();
                }
                self.note(format!(
                    "c{client} read {} = {:?}",
                    show(&key),
                    siblings.iter().map(|v| show(v)).collect::<Vec<_>>()
                ));
                if last {
                    self.history.final_read(&key, &siblings)?;
                } else {
                    self.history.read(&key, &siblings)?;
                }
            }
            (Pending::Read { key, last }, ClientReply::Error(error)) => {
                self.note(format!("c{client} read {} failed: {error:?}", show(&key)));
                if last && !self.faults_on {
                    // Final reads retry until they get an answer: the network is healed.
                }
            }
            (Pending::Write { index }, ClientReply::Put { dot, .. })
            | (Pending::Write { index }, ClientReply::Delete { dot, .. }) => {
                self.note(format!("c{client} write #{index} acked {dot:?}"));
                self.history.outcome(index, Outcome::Acked(dot));
            }
            (Pending::Write { index }, ClientReply::Error(error)) => {
                let refused = matches!(
                    error.code,
                    ErrorCode::Unavailable
                        | ErrorCode::InvalidArgument
                        | ErrorCode::BadContext
                        | ErrorCode::TooManySiblings
                        | ErrorCode::TooLarge
                        | ErrorCode::Overloaded
                        | ErrorCode::NotOwner
                );
                let outcome = if refused {
                    Outcome::Refused(error.code)
                } else {
                    Outcome::Unknown
                };
                self.note(format!("c{client} write #{index} failed: {error:?}"));
                self.history.outcome(index, outcome);
            }
            (_, reply) => return Err(format!("reply of the wrong kind: {reply:?}")),
        }
        let think = self.rng.below(80);
        self.schedule(self.now + think, Event::ClientWake(client));
        Ok(())
    }
}

fn key(index: u64) -> Vec<u8> {
    format!("key{index}").into_bytes()
}

fn ring_of(gossip: &Gossip, q: u32) -> Ring {
    match Ring::initial(q, gossip.members()) {
        Ok(ring) => ring,
        // The simulator's memberships are always valid (distinct ids, weight 1, 1 shard).
        Err(error) => panic!("simulated membership makes no ring: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_exactly() {
        let a = run_seed(7).map(|r| (r.acked_writes, r.reads, r.sim_ms));
        let b = run_seed(7).map(|r| (r.acked_writes, r.reads, r.sim_ms));
        assert_eq!(a.ok(), b.ok());
    }
}
