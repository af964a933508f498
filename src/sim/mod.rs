//! The deterministic cluster simulator: several nodes running the real coordinator,
//! gossip, failure detector and hint delivery in one thread, over a simulated network and
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
//! checker judges those final reads.

pub mod checker;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;

use crate::causal::{Actor, Context};
use crate::coordinator::{
    Action, ClientReply, ClientRequest, Config, Coordinator, MemDurability, MemStore, Options,
    Origin, PeerMessage, ReplicaStore,
};
use crate::gossip::{
    DetectorConfig, FailureDetector, Gossip, GossipConfig, GossipMessage, GossipPeer, NodeState,
    SplitMix64,
};
use crate::ring::{NodeId, Replica, Ring, ShardId};
use crate::wire::{ErrorCode, NodeStatus};
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
    /// Hinted writes sent to fallbacks.
    pub hinted_writes: u64,
    /// Simulated milliseconds the run took.
    pub sim_ms: u64,
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
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.message)?;
        writeln!(f, "config: {:?}", SimConfig::from_seed(self.seed))?;
        writeln!(f, "last events:")?;
        for line in &self.log {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: ROTOR_SIM_SEED={} cargo test --test sim_seeds -- --nocapture",
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
}

struct SimNode {
    id: NodeId,
    state: NodeRun,
    /// The persisted membership (written on every change, as the runtime would).
    gossip_file: Vec<u8>,
}

#[allow(clippy::large_enum_variant)]
enum NodeRun {
    Running {
        coordinator: Coordinator<MemStore>,
        gossip: Gossip,
        detector: FailureDetector,
        ring: Ring,
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
                        gossip,
                        detector: FailureDetector::new(detector_config()),
                        ring,
                    },
                    gossip_file,
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
        }
    }

    fn report(&self) -> SimReport {
        let mut report = SimReport {
            reads: self.history.reads,
            sibling_reads: self.history.sibling_reads,
            lossy_crashes: self.lossy_crashes,
            hinted_writes: self.hinted_writes,
            sim_ms: self.now,
            ..SimReport::default()
        };
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
        // Phase 2: the workload under faults.
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
        self.run_until(|sim| sim.workload_done(), "the workload to finish")?;
        // Phase 3: heal, restart everything, drain hints.
        self.faults_on = false;
        self.cut.clear();
        for node in 1..=self.config.nodes {
            self.restart(node);
        }
        self.note("healed".to_owned());
        self.run_until(|sim| sim.drained(), "hints to drain")?;
        // Phase 4: every node reads every key.
        let keys: Vec<Vec<u8>> = (0..self.config.keys).map(key).collect();
        for node in 1..=self.config.nodes {
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
        self.nodes.iter().all(|node| match &node.state {
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
        let nodes = self.config.nodes;
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
        match event {
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
            let mut gossip_out = Vec::new();
            if let Some(NodeRun::Running {
                coordinator,
                gossip,
                detector,
                ring,
            }) = self.running(node)
            {
                // The group-commit timer (a no-op for stores that sync every write).
                if now % GROUP_COMMIT_MS == 0 {
                    coordinator.store_mut().sync();
                }
                coordinator.tick(now, ring, detector, &mut out);
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
            for (peer, message) in gossip_out {
                self.send_gossip(node, peer, message);
            }
        }
    }

    fn send_gossip(&mut self, from: u64, peer: GossipPeer, message: GossipMessage) {
        let to = match peer {
            GossipPeer::Node(node) => node.0,
            GossipPeer::Seed(seed) => match (1..=self.config.nodes).find(|&n| address(n) == seed) {
                Some(node) => node,
                None => return,
            },
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
                        *ring = ring_of(gossip, q);
                        gossip.set_ring_epoch(ring.epoch());
                        detector.set_peers(gossip.peers());
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
            NodeRun::Running { coordinator, .. } => {
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
        let ring = ring_of(&gossip, q);
        let mut detector = FailureDetector::new(detector_config());
        detector.set_peers(gossip.peers());
        slot.state = NodeRun::Running {
            coordinator: Coordinator::new(replica(node), coordinator_config(), store),
            gossip,
            detector,
            ring,
        };
        let id = slot.id;
        self.note(format!("restart n{}", id.0));
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
        let node = 1 + self.rng.below(self.config.nodes);
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
