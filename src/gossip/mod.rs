//! Membership by gossip and failure detection.
//!
//! Place in the flow: one [`Gossip`] per node (core 0 in the server, its view copied to the
//! other shards) keeps a versioned [`NodeState`] of every node it has heard of. Every
//! interval it sends a digest (node id and version of each state) to one random peer, or
//! to a seed while it knows no peer; the receiver answers with the states it has newer,
//! and sends its own digest back when the sender had newer ones, so one exchange updates
//! both sides. Merging keeps the highest version per node: a node bumps its own version
//! whenever its state changes (address, ports, weight, zone, status) and at every start.
//! The membership ([`Gossip::members`]) is what the ring is computed from; reachability is
//! *not* gossiped: it is each node's own [`FailureDetector`] view.
//!
//! The ring: while no membership change was ever committed (formation mode), every node
//! computes `Ring::initial(q, members)` from the gossiped members whose status is `Up`
//! ([`Gossip::formation_members`]). That is a function of the membership alone, so nodes
//! that learned members in different orders still agree. Once an operator commits a plan
//! (`crate::membership::RingState`), only plans change ownership: gossip then carries the
//! ring state's epoch in every digest, and a node seeing a newer one fetches the state
//! (RING_STATE) instead of computing a ring.
//!
//! The state survives restarts: [`Gossip::persist`] gives bytes with a CRC32C that the
//! runtime writes to the data directory, [`Gossip::restore`] reads them back.
//!
//! Deliberately no I/O, no clock, no global randomness: time is passed in, peers are
//! picked with a generator seeded by the caller.

mod detector;
mod persist;

pub use detector::{DetectorConfig, FailureDetector};
pub use persist::PersistError;

use std::collections::BTreeMap;

use crate::constants::{GOSSIP_INTERVAL_MS_DEFAULT, GOSSIP_SEED_PERCENT, NODES_MAX};
use crate::ring::{Member, NodeId};
use crate::wire::NodeStatus;

/// One node as the cluster knows it; the wire's `NodeInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Node id.
    pub id: NodeId,
    /// Version of this state: the node bumps it on every change and start; merges keep the
    /// highest.
    pub version: u64,
    /// Membership status.
    pub status: NodeStatus,
    /// Relative capacity.
    pub weight: u32,
    /// Failure zone; empty for none.
    pub zone: String,
    /// Client address of the common port, `HOST:PORT`.
    pub address: String,
    /// Per-shard ports: shard `s` listens on `ports[s]`; their count is the node's shards.
    pub ports: Vec<u16>,
}

impl NodeState {
    /// The ring member this state describes.
    pub fn member(&self) -> Member {
        let shards = u16::try_from(self.ports.len()).unwrap_or(u16::MAX).max(1);
        let member = Member::new(self.id, self.weight, shards);
        if self.zone.is_empty() {
            member
        } else {
            member.with_zone(self.zone.clone())
        }
    }
}

/// Gossip messages, mirroring the wire's GOSSIP_DIGEST, GOSSIP_STATE, PING and PONG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipMessage {
    /// What the sender knows: (node, version) pairs.
    Digest {
        /// The sending node.
        sender: u64,
        /// Epoch of the sender's ring.
        ring_epoch: u64,
        /// Version of each node state the sender holds.
        versions: Vec<(u64, u64)>,
    },
    /// Node states newer than (or missing from) a digest.
    State {
        /// The sending node.
        sender: u64,
        /// Epoch of the sender's ring.
        ring_epoch: u64,
        /// The states.
        nodes: Vec<NodeState>,
    },
    /// Are you there?
    Ping {
        /// Echoed by the pong.
        nonce: u64,
        /// The probing node.
        sender: u64,
    },
    /// Yes.
    Pong {
        /// The ping's nonce.
        nonce: u64,
        /// The answering node.
        sender: u64,
    },
}

/// Where a gossip message goes: a known node, or a seed known only by its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipPeer {
    /// A node of the membership.
    Node(NodeId),
    /// A seed address from `--seeds`.
    Seed(String),
}

/// Tuning of [`Gossip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipConfig {
    /// Interval between rounds, milliseconds.
    pub interval_ms: u64,
    /// Chance in percent that a round goes to a seed although peers are known.
    pub seed_percent: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval_ms: GOSSIP_INTERVAL_MS_DEFAULT,
            seed_percent: GOSSIP_SEED_PERCENT,
        }
    }
}

/// One node's membership state machine.
#[derive(Debug, Clone)]
pub struct Gossip {
    local: NodeId,
    nodes: BTreeMap<NodeId, NodeState>,
    seeds: Vec<String>,
    config: GossipConfig,
    rng: SplitMix64,
    next_round_at: u64,
    ring_epoch: u64,
    /// When a digest was last sent back to each peer: at most one per half interval, so
    /// two nodes whose states cross in flight do not answer each other's digests forever.
    digest_back_at: BTreeMap<NodeId, u64>,
}

impl Gossip {
    /// A node starting with no saved state: it knows itself and its seeds.
    pub fn new(local: NodeState, seeds: Vec<String>, config: GossipConfig, seed: u64) -> Self {
        let mut nodes = BTreeMap::new();
        let id = local.id;
        // A seed list usually names every seed, this node included: never gossip to self.
        let seeds = seeds
            .into_iter()
            .filter(|seed| *seed != local.address)
            .collect();
        nodes.insert(id, local);
        Gossip {
            local: id,
            nodes,
            seeds,
            config,
            rng: SplitMix64::new(seed),
            next_round_at: 0,
            ring_epoch: 0,
            digest_back_at: BTreeMap::new(),
        }
    }

    /// A node restarting from [`Gossip::persist`]'s bytes. Its own state is replaced by
    /// `local` with a version above every one it ever gossiped, so the restart (and any
    /// new address or ports) wins everywhere.
    pub fn restore(
        bytes: &[u8],
        local: NodeState,
        seeds: Vec<String>,
        config: GossipConfig,
        seed: u64,
    ) -> Result<Self, PersistError> {
        let saved = persist::decode(bytes)?;
        let mut gossip = Gossip::new(local.clone(), seeds, config, seed);
        let old_version = saved
            .iter()
            .find(|state| state.id == local.id)
            .map_or(0, |state| state.version);
        for state in saved {
            if state.id != local.id {
                gossip.nodes.insert(state.id, state);
            }
        }
        if let Some(own) = gossip.nodes.get_mut(&local.id) {
            own.version = own.version.max(old_version.saturating_add(1));
        }
        Ok(gossip)
    }

    /// The bytes to keep in the data directory (see [`Gossip::restore`]).
    pub fn persist(&self) -> Vec<u8> {
        persist::encode(self.nodes.values())
    }

    /// This node's id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Every known node state, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.values()
    }

    /// The state of `node`, if known.
    pub fn node(&self, node: NodeId) -> Option<&NodeState> {
        self.nodes.get(&node)
    }

    /// The ring members: every known node not removed, by id.
    pub fn members(&self) -> Vec<Member> {
        self.nodes
            .values()
            .filter(|state| state.status != NodeStatus::Removed)
            .map(NodeState::member)
            .collect()
    }

    /// The members a formation ring is built from: every known node whose status is `Up`
    /// (a `Joining` node enters the ring only through a committed plan), by id.
    pub fn formation_members(&self) -> Vec<Member> {
        self.nodes
            .values()
            .filter(|state| state.status == NodeStatus::Up)
            .map(NodeState::member)
            .collect()
    }

    /// Adds a seed to gossip with (`rotor admin join SEED` on a node started alone);
    /// ignored if known or if it is this node's own address.
    pub fn add_seed(&mut self, seed: String) {
        let own = self.nodes.get(&self.local).map(|s| s.address.as_str());
        if own != Some(seed.as_str()) && !self.seeds.contains(&seed) {
            self.seeds.push(seed);
        }
    }

    /// Whether any seed is known.
    pub fn has_seeds(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// The other nodes of the membership (what the failure detector watches).
    pub fn peers(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|state| state.id != self.local && state.status != NodeStatus::Removed)
            .map(|state| state.id)
            .collect()
    }

    /// Tells gossip the epoch of the ring this node now routes by.
    pub fn set_ring_epoch(&mut self, epoch: u64) {
        self.ring_epoch = epoch;
    }

    /// Changes this node's own state (status, weight, ...) and bumps its version.
    pub fn update_local(&mut self, change: impl FnOnce(&mut NodeState)) {
        if let Some(own) = self.nodes.get_mut(&self.local) {
            change(own);
            own.version += 1;
        }
    }

    /// A gossip round, if one is due at `now`: the digest to send and where.
    pub fn tick(&mut self, now: u64) -> Option<(GossipPeer, GossipMessage)> {
        if now < self.next_round_at {
            return None;
        }
        self.next_round_at = now + self.config.interval_ms;
        let peers = self.peers();
        let to_seed = peers.is_empty() || self.rng.below(100) < self.config.seed_percent;
        let peer = if to_seed && !self.seeds.is_empty() {
            let index = self.rng.below(self.seeds.len() as u64) as usize;
            GossipPeer::Seed(self.seeds.get(index)?.clone())
        } else {
            let index = self.rng.below(peers.len() as u64) as usize;
            GossipPeer::Node(*peers.get(index)?)
        };
        Some((peer, self.digest()))
    }

    /// A gossip message arrived at `now`. Returns the answers to send and whether the
    /// membership changed (then the caller recomputes the ring and the detector's peers).
    /// Ping and pong are the failure detector's and are not handled here.
    pub fn handle(
        &mut self,
        now: u64,
        message: GossipMessage,
    ) -> (Vec<(GossipPeer, GossipMessage)>, bool) {
        let mut out = Vec::new();
        let mut changed = false;
        match message {
            GossipMessage::Digest {
                sender, versions, ..
            } => {
                let theirs: BTreeMap<u64, u64> = versions.into_iter().collect();
                let newer: Vec<NodeState> = self
                    .nodes
                    .values()
                    .filter(|state| theirs.get(&state.id.0).is_none_or(|&v| v < state.version))
                    .cloned()
                    .collect();
                let they_know_more = theirs.iter().any(|(&id, &version)| {
                    self.nodes
                        .get(&NodeId(id))
                        .is_none_or(|state| state.version < version)
                });
                let to = GossipPeer::Node(NodeId(sender));
                if !newer.is_empty() {
                    let state = GossipMessage::State {
                        sender: self.local.0,
                        ring_epoch: self.ring_epoch,
                        nodes: newer,
                    };
                    out.push((to.clone(), state));
                }
                let sender_id = NodeId(sender);
                let quiet = self
                    .digest_back_at
                    .get(&sender_id)
                    .is_none_or(|&at| now >= at + self.config.interval_ms / 2);
                if they_know_more && sender_id != self.local && quiet {
                    if self.digest_back_at.len() >= NODES_MAX {
                        self.digest_back_at.clear();
                    }
                    self.digest_back_at.insert(sender_id, now);
                    out.push((to, self.digest()));
                }
            }
            GossipMessage::State { nodes, .. } => {
                for state in nodes {
                    changed |= self.merge(state);
                }
            }
            GossipMessage::Ping { .. } | GossipMessage::Pong { .. } => {}
        }
        (out, changed)
    }

    /// Keeps `state` if it is newer than what is known; never takes a foreign version of
    /// this node's own state (this node alone versions it).
    fn merge(&mut self, state: NodeState) -> bool {
        if state.id == self.local {
            // Someone holds a version of us from before a restart that lost it: jump past.
            if let Some(own) = self.nodes.get_mut(&self.local) {
                if state.version >= own.version {
                    own.version = state.version + 1;
                }
            }
            return false;
        }
        if !self.nodes.contains_key(&state.id) && self.nodes.len() >= NODES_MAX {
            return false; // A membership this large is not one Rotor forms: ignore the rest.
        }
        match self.nodes.get(&state.id) {
            Some(known) if known.version >= state.version => false,
            _ => {
                let membership_changed = self.nodes.get(&state.id).is_none_or(|known| {
                    known.member() != state.member() || known.status != state.status
                });
                self.nodes.insert(state.id, state);
                membership_changed
            }
        }
    }

    fn digest(&self) -> GossipMessage {
        GossipMessage::Digest {
            sender: self.local.0,
            ring_epoch: self.ring_epoch,
            versions: self
                .nodes
                .values()
                .map(|state| (state.id.0, state.version))
                .collect(),
        }
    }
}

/// A small, fast, seedable generator (SplitMix64): deterministic peer choice in gossip and
/// every random decision of the simulator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests;
