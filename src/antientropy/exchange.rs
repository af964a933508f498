//! One shard's anti-entropy: the requester side (choosing partitions and peers, walking
//! the trees down, merging and pushing) and the responder side, over one store.
//!
//! Place in the flow: the runtime calls [`AntiEntropy::tick`] on its timer,
//! [`AntiEntropy::message`] for every exchange message addressed to this shard and
//! [`AntiEntropy::set_pressure`] with its foreground latency, and carries out the
//! [`ExchangeAction`]s. The ring and the failure detector's view come in with every call,
//! as for the coordinator.

use std::collections::{BTreeMap, BTreeSet};

use super::purge::{Comparison, PeerComparisons, PurgeGrant, PurgedTombstones};
use super::rate::RateLimiter;
use super::shape::{leaf_of, level_width, FANOUT, LEAVES, LEVELS};
use super::view::MerkleView;
use super::{Entry, ExchangeAction, ExchangeConfig, ExchangeMessage, ExchangeStats};
use crate::causal::{CausalState, SiblingLimits};
use crate::constants::{BATCH_ENTRIES_MAX, FRAME_BODY_BYTES_MAX, MERKLE_BUCKETS_MAX};
use crate::coordinator::{merge_into_store, Liveness, MergeFailure, ReplicaStore};
use crate::ring::{PartitionId, Replica, Ring};
use crate::wire::ErrorCode;

/// The anti-entropy state machine of one shard.
#[derive(Debug)]
pub struct AntiEntropy {
    /// This shard.
    local: Replica,
    config: ExchangeConfig,
    rate: RateLimiter,
    sibling_limits: SiblingLimits,
    /// The next partition to consider (round-robin over the ring).
    next_partition: u32,
    /// Per partition, the index of the next peer to compare with (round-robin over the
    /// other replicas of its preference list).
    peer_turn: BTreeMap<u32, usize>,
    exchanges: BTreeMap<u64, Exchange>,
    /// Requests awaiting a reply, by request id.
    pending: BTreeMap<u32, Pending>,
    next_exchange: u64,
    next_request_id: u32,
    stats: ExchangeStats,
    /// The last two finished comparisons with each peer of each partition, by (partition,
    /// peer node, peer shard): the evidence for tombstone purges (`purge.rs`).
    comparisons: BTreeMap<(u32, u64, u16), PeerComparisons>,
    /// The grant last handed out per partition, so an unchanged one is not handed again.
    granted: BTreeMap<u32, PurgeGrant>,
    /// Tombstones purged here lately, not taken back from peers.
    purged: PurgedTombstones,
}

/// An exchange in flight with one peer about one partition.
#[derive(Debug)]
struct Exchange {
    partition: u32,
    peer: Replica,
    /// Requests of this exchange still awaiting replies.
    requests: BTreeSet<u32>,
    /// Differing leaves not asked for yet, in order.
    leaves: Vec<u32>,
    /// Whether a keys request is in flight (one at a time, so the key budget is checked
    /// before each).
    keys_in_flight: bool,
    /// When it started.
    started_at: u64,
    /// The store's last log position when the roots were compared.
    mark: Option<u64>,
    /// The partition's replica set when it started.
    replicas: Vec<(u64, u16)>,
    /// Leaves found different so far.
    differing: Vec<u32>,
}

/// A request awaiting its reply.
#[derive(Debug, Clone)]
struct Pending {
    exchange: u64,
    to: Replica,
    deadline: u64,
    asked: Asked,
}

#[derive(Debug, Clone)]
enum Asked {
    Range {
        partition: u32,
        level: u8,
        start: u32,
        count: u32,
    },
    Keys {
        partition: u32,
        buckets: Vec<u32>,
    },
}

impl AntiEntropy {
    /// The anti-entropy of shard `local`.
    pub fn new(local: Replica, config: ExchangeConfig, sibling_limits: SiblingLimits) -> Self {
        AntiEntropy {
            local,
            rate: RateLimiter::new(&config),
            config,
            sibling_limits,
            next_partition: 0,
            peer_turn: BTreeMap::new(),
            exchanges: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_exchange: 1,
            next_request_id: 1,
            stats: ExchangeStats::default(),
            comparisons: BTreeMap::new(),
            granted: BTreeMap::new(),
            purged: PurgedTombstones::default(),
        }
    }

    /// What this shard's anti-entropy has done so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    /// Exchanges in flight.
    pub fn in_flight(&self) -> usize {
        self.exchanges.len()
    }

    /// The rate limiter (its share and key budget).
    pub fn rate(&self) -> &RateLimiter {
        &self.rate
    }

    /// The runtime's latest foreground latency, microseconds (e.g. its p99.9 over the
    /// last second): above the configured threshold the rate halves, else it grows back
    /// by a step. Returns the new share out of [`super::SHARE_FULL`].
    pub fn set_pressure(&mut self, latency_us: u64) -> u32 {
        self.rate.set_pressure(latency_us)
    }

    /// The tombstones anti-entropy has confirmed at every other replica, per partition
    /// this shard replicates in `ring`: the rule is in the module docs of `purge.rs`
    /// ([`PurgeGrant`]). Returns only grants that changed since the last call, so the
    /// runtime can call it on a slow timer (every few exchange intervals) and hand each
    /// grant to its store's `purge_tombstones`. `ring_stable` must be false while a
    /// membership change is pending (then nothing is granted); `settle_ms` is the least
    /// time between the two comparisons each peer needs (more than the group-commit
    /// interval plus a message's delay).
    pub fn take_purge_grants(
        &mut self,
        ring: &Ring,
        ring_stable: bool,
        settle_ms: u64,
    ) -> Vec<PurgeGrant> {
        let mut grants = Vec::new();
        if !ring_stable {
            self.granted.clear();
            return grants;
        }
        for partition in 0..ring.q() {
            let Some(grant) = self.purge_grant(ring, partition, settle_ms) else {
                self.granted.remove(&partition);
                continue;
            };
            if self.granted.get(&partition) != Some(&grant) {
                self.granted.insert(partition, grant.clone());
                grants.push(grant);
            }
        }
        grants
    }

    /// The runtime purged these tombstones of `partition` (key, encoded state, as the
    /// store's `purge_tombstones` returns them): the same tombstone offered back by a
    /// replica that has not purged it yet is not taken again (the last
    /// `PURGED_TOMBSTONES_MAX` are remembered).
    pub fn note_purged(&mut self, partition: u32, purged: &[(Vec<u8>, Vec<u8>)]) {
        for (key, state) in purged {
            self.purged.insert(partition, key, state);
        }
    }

    /// What the comparisons with every other replica of `partition` grant together now
    /// (the ring must be stable: see [`AntiEntropy::take_purge_grants`]).
    pub fn purge_grant(&self, ring: &Ring, partition: u32, settle_ms: u64) -> Option<PurgeGrant> {
        let list = ring.preference_list(PartitionId(partition), usize::from(self.config.n));
        if !list.contains(&self.local) {
            return None;
        }
        let replicas: Vec<(u64, u16)> = list.iter().map(|r| (r.node.0, r.shard.0)).collect();
        let mut lsn_max = u64::MAX;
        let mut excluded = BTreeSet::new();
        let mut peers = 0;
        for peer in list.iter().filter(|r| r.node != self.local.node) {
            let key = (partition, peer.node.0, peer.shard.0);
            let (mark, leaves) = self.comparisons.get(&key)?.grant(&replicas, settle_ms)?;
            lsn_max = lsn_max.min(mark);
            excluded.extend(leaves);
            peers += 1;
        }
        // A partition without another replica has nobody to confirm anything.
        (peers > 0).then(|| PurgeGrant {
            partition,
            lsn_max,
            leaves_excluded: excluded.into_iter().collect(),
        })
    }

    /// Time passed: deadlines, exchanges with peers gone down, leaves waiting for key
    /// budget, and a new exchange if the rate allows.
    pub fn tick(
        &mut self,
        now: u64,
        ring: &Ring,
        live: &dyn Liveness,
        out: &mut Vec<ExchangeAction>,
    ) {
        self.rate.refill(now);
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            out.push(ExchangeAction::Unresponsive {
                node: pending.to.node,
            });
            self.drop_exchange(pending.exchange);
        }
        let gone: Vec<u64> = self
            .exchanges
            .iter()
            .filter(|(_, e)| !live.is_reachable(e.peer.node))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.drop_exchange(id);
        }
        let waiting: Vec<u64> = self.exchanges.keys().copied().collect();
        for id in waiting {
            self.advance(now, id, out);
        }
        if self.exchanges.len() < self.config.in_flight_max && self.rate.may_start(now) {
            self.start_exchange(now, ring, live, out);
        }
    }

    /// An exchange message from shard `from` arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn message<S: MerkleView + ReplicaStore>(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        message: ExchangeMessage,
        ring: &Ring,
        store: &mut S,
        out: &mut Vec<ExchangeAction>,
    ) {
        match message {
            ExchangeMessage::Range {
                partition,
                level,
                start,
                count,
            } => {
                let reply = if !self.replicates(ring, partition) {
                    refused(partition)
                } else {
                    let count = count.min(u32::try_from(MERKLE_BUCKETS_MAX).unwrap_or(u32::MAX));
                    let hashes = if level < LEVELS {
                        store.merkle_hashes(partition, level, start, count)
                    } else {
                        Vec::new()
                    };
                    ExchangeMessage::RangeReply {
                        partition,
                        level,
                        start,
                        hashes,
                    }
                };
                self.send(from, request_id, reply, out);
            }
            ExchangeMessage::Keys { partition, buckets } => {
                let reply = if self.replicates(ring, partition) {
                    self.keys_reply(partition, &buckets, store)
                } else {
                    refused(partition)
                };
                self.send(from, request_id, reply, out);
            }
            ExchangeMessage::Push { partition, entries } => {
                // Data for a partition this shard does not replicate is not taken.
                if self.replicates(ring, partition) {
                    self.stats.entries_received += entries.len() as u64;
                    for entry in &entries {
                        let Ok(incoming) = CausalState::decode(&entry.state) else {
                            self.stats.bad_entries += 1;
                            continue;
                        };
                        let _ = self.merge_into(store, partition, &entry.key, &incoming);
                    }
                }
            }
            ExchangeMessage::RangeReply {
                partition,
                level,
                start,
                hashes,
            } => self.on_range_reply(
                now,
                from,
                request_id,
                (partition, level, start, hashes),
                store,
                out,
            ),
            ExchangeMessage::KeysReply {
                partition,
                buckets,
                entries,
            } => self.on_keys_reply(
                now, from, request_id, partition, buckets, entries, store, out,
            ),
            ExchangeMessage::Refused { partition, .. } => {
                let about = |asked: &Asked| match asked {
                    Asked::Range { partition: p, .. } | Asked::Keys { partition: p, .. } => {
                        *p == partition
                    }
                };
                if let Some(pending) = self.take_pending(from, request_id, about) {
                    self.drop_exchange(pending.exchange);
                }
            }
        }
    }

    // --- requester -------------------------------------------------------------------

    /// Starts an exchange about the next partition this shard replicates that has a
    /// reachable peer.
    fn start_exchange(
        &mut self,
        now: u64,
        ring: &Ring,
        live: &dyn Liveness,
        out: &mut Vec<ExchangeAction>,
    ) {
        let q = ring.q();
        if q == 0 {
            return;
        }
        for _ in 0..q {
            let partition = self.next_partition % q;
            self.next_partition = (partition + 1) % q;
            let replicas = ring.preference_list(PartitionId(partition), usize::from(self.config.n));
            if !replicas.contains(&self.local) {
                continue;
            }
            if self.exchanges.values().any(|e| e.partition == partition) {
                continue;
            }
            let peers: Vec<Replica> = replicas
                .iter()
                .copied()
                .filter(|r| r.node != self.local.node)
                .collect();
            if peers.is_empty() {
                continue;
            }
            let turn = self.peer_turn.get(&partition).copied().unwrap_or(0);
            let chosen = (0..peers.len())
                .map(|i| (turn + i) % peers.len())
                .find(|&i| peers.get(i).is_some_and(|p| live.is_reachable(p.node)));
            let Some(index) = chosen else { continue };
            let Some(&peer) = peers.get(index) else {
                continue;
            };
            self.peer_turn.insert(partition, index + 1);
            self.rate.started(now);
            self.stats.started += 1;
            let id = self.next_exchange;
            self.next_exchange += 1;
            self.exchanges.insert(
                id,
                Exchange {
                    partition,
                    peer,
                    requests: BTreeSet::new(),
                    leaves: Vec::new(),
                    keys_in_flight: false,
                    started_at: now,
                    mark: None,
                    replicas: replicas.iter().map(|r| (r.node.0, r.shard.0)).collect(),
                    differing: Vec::new(),
                },
            );
            self.ask(
                now,
                id,
                Asked::Range {
                    partition,
                    level: 0,
                    start: 0,
                    count: 1,
                },
                out,
            );
            return;
        }
        // Nothing to compare (no reachable peer anywhere): look again an interval later,
        // not on every tick (the scan costs a preference list per partition).
        self.rate.started(now);
    }

    fn on_range_reply<S: MerkleView>(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        (partition, level, start, hashes): (u32, u8, u32, Vec<u64>),
        store: &S,
        out: &mut Vec<ExchangeAction>,
    ) {
        let answers = |asked: &Asked| match *asked {
            Asked::Range {
                partition: p,
                level: l,
                start: s,
                count,
            } => p == partition && l == level && s == start && hashes.len() <= count as usize,
            Asked::Keys { .. } => false,
        };
        let Some(pending) = self.take_pending(from, request_id, answers) else {
            return;
        };
        let id = pending.exchange;
        let count = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
        let mine = store.merkle_hashes(partition, level, start, count);
        let differing: Vec<u32> = hashes
            .iter()
            .enumerate()
            .filter(|&(i, theirs)| mine.get(i).copied().unwrap_or(0) != *theirs)
            .filter_map(|(i, _)| start.checked_add(u32::try_from(i).ok()?))
            .collect();
        if level == 0 && differing.is_empty() {
            self.stats.equal_roots += 1;
        }
        if level == 0 {
            if let Some(exchange) = self.exchanges.get_mut(&id) {
                exchange.mark = Some(store.write_mark());
            }
        }
        if level + 1 >= LEVELS {
            if let Some(exchange) = self.exchanges.get_mut(&id) {
                exchange.differing.extend_from_slice(&differing);
                exchange.leaves.extend(differing);
            }
        } else {
            for (first, count) in child_ranges(&differing, level + 1) {
                self.ask(
                    now,
                    id,
                    Asked::Range {
                        partition,
                        level: level + 1,
                        start: first,
                        count,
                    },
                    out,
                );
            }
        }
        self.advance(now, id, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_keys_reply<S: MerkleView + ReplicaStore>(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        partition: u32,
        buckets: Vec<u32>,
        entries: Vec<Entry>,
        store: &mut S,
        out: &mut Vec<ExchangeAction>,
    ) {
        let answers = |asked: &Asked| match asked {
            Asked::Keys {
                partition: p,
                buckets: asked,
            } => *p == partition && buckets.iter().all(|b| asked.contains(b)),
            Asked::Range { .. } => false,
        };
        let Some(pending) = self.take_pending(from, request_id, answers) else {
            return;
        };
        let Asked::Keys { buckets: asked, .. } = pending.asked else {
            return;
        };
        let id = pending.exchange;
        if let Some(exchange) = self.exchanges.get_mut(&id) {
            exchange.keys_in_flight = false;
            // Leaves the reply could not hold are asked again, unless it held none (a
            // leaf too large for one reply: left to the next exchange, not retried in a
            // loop).
            if !buckets.is_empty() {
                let rest = asked.iter().filter(|b| !buckets.contains(b));
                let mut leaves: Vec<u32> = rest.copied().collect();
                leaves.append(&mut exchange.leaves);
                exchange.leaves = leaves;
            }
        }
        self.stats.entries_received += entries.len() as u64;
        // The peer's states of the listed leaves, then ours; every key of either side.
        let mut theirs: BTreeMap<Vec<u8>, Option<CausalState>> = BTreeMap::new();
        let mut bad_leaves = BTreeSet::new();
        for entry in entries {
            if !buckets.contains(&leaf_of(&entry.key)) {
                self.stats.bad_entries += 1; // Not in a leaf it claims to include.
                continue;
            }
            match CausalState::decode(&entry.state) {
                Ok(state) => {
                    theirs.insert(entry.key, Some(state));
                }
                Err(_) => {
                    // Unknown to us: neither merged nor pushed over.
                    self.stats.bad_entries += 1;
                    bad_leaves.insert(leaf_of(&entry.key));
                }
            }
        }
        let mut keys: BTreeSet<Vec<u8>> = theirs.keys().cloned().collect();
        keys.extend(
            store
                .bucket_entries(partition, &buckets)
                .into_iter()
                .map(|(key, _)| key),
        );
        // Leaves whose only differences are tombstones one side holds and the other does
        // not hold at all: no live value differs, which is all a purge needs (`purge.rs`).
        let mut purge_blocking: BTreeSet<u32> = bad_leaves;
        for key in &keys {
            let ours = store.get_state(partition, key).ok().flatten();
            let incoming = theirs.get(key).cloned().flatten();
            let compatible = match (&ours, &incoming) {
                (Some(a), Some(b)) => a == b,
                (Some(a), None) | (None, Some(a)) => a.is_tombstone_only(),
                (None, None) => true,
            };
            if !compatible {
                purge_blocking.insert(leaf_of(key));
            }
        }
        if let Some(exchange) = self.exchanges.get_mut(&id) {
            exchange
                .differing
                .retain(|leaf| !buckets.contains(leaf) || purge_blocking.contains(leaf));
        }
        let mut push = Vec::new();
        let mut charged = theirs.len();
        for key in keys {
            let incoming = theirs.get(&key).cloned().flatten();
            let merged = match &incoming {
                Some(state) => self.merge_into(store, partition, &key, state),
                None => store.get_state(partition, &key).ok().flatten(),
            };
            let Some(merged) = merged else { continue };
            if incoming.as_ref() != Some(&merged) && !merged.is_empty() {
                push.push(Entry {
                    key,
                    state: merged.to_bytes(),
                });
            }
        }
        charged += push.len();
        self.stats.entries_pushed += push.len() as u64;
        for batch in batches(push, self.config.reply_bytes_max) {
            let message = ExchangeMessage::Push {
                partition,
                entries: batch,
            };
            self.send(from, 0, message, out);
        }
        self.rate.charge(charged);
        self.advance(now, id, out);
    }

    /// Sends the next keys request if leaves wait and the budget allows; finishes the
    /// exchange once nothing is left.
    fn advance(&mut self, now: u64, id: u64, out: &mut Vec<ExchangeAction>) {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        if !exchange.keys_in_flight && !exchange.leaves.is_empty() && self.rate.keys_ok() {
            let take = exchange
                .leaves
                .len()
                .min(self.config.leaves_per_request.max(1));
            let buckets: Vec<u32> = exchange.leaves.drain(..take).collect();
            exchange.keys_in_flight = true;
            let partition = exchange.partition;
            self.ask(now, id, Asked::Keys { partition, buckets }, out);
            return;
        }
        if exchange.requests.is_empty() && exchange.leaves.is_empty() {
            if let Some(exchange) = self.exchanges.remove(&id) {
                self.record_comparison(exchange);
            }
            self.stats.completed += 1;
        }
    }

    /// Keeps what a finished exchange showed, for tombstone purges.
    fn record_comparison(&mut self, exchange: Exchange) {
        let Some(mark) = exchange.mark else { return };
        let mut differing = exchange.differing;
        differing.sort_unstable();
        differing.dedup();
        let peer = (
            exchange.partition,
            exchange.peer.node.0,
            exchange.peer.shard.0,
        );
        self.comparisons
            .entry(peer)
            .or_default()
            .record(Comparison {
                at: exchange.started_at,
                mark,
                replicas: exchange.replicas,
                differing,
            });
    }

    fn ask(&mut self, now: u64, id: u64, asked: Asked, out: &mut Vec<ExchangeAction>) {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        let request_id = loop {
            // Skips ids still pending after a wrap-around; 0 is kept for pushes.
            let candidate = self.next_request_id;
            self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
            if !self.pending.contains_key(&candidate) {
                break candidate;
            }
        };
        exchange.requests.insert(request_id);
        let to = exchange.peer;
        let message = match &asked {
            Asked::Range {
                partition,
                level,
                start,
                count,
            } => ExchangeMessage::Range {
                partition: *partition,
                level: *level,
                start: *start,
                count: *count,
            },
            Asked::Keys { partition, buckets } => ExchangeMessage::Keys {
                partition: *partition,
                buckets: buckets.clone(),
            },
        };
        self.pending.insert(
            request_id,
            Pending {
                exchange: id,
                to,
                deadline: now + self.config.request_timeout_ms,
                asked,
            },
        );
        self.send(to, request_id, message, out);
    }

    /// Removes the request a reply answers if it came from the shard it was sent to and
    /// `answers` what was asked; counts anything else as stale (the request still waits).
    fn take_pending(
        &mut self,
        from: Replica,
        request_id: u32,
        answers: impl Fn(&Asked) -> bool,
    ) -> Option<Pending> {
        match self.pending.get(&request_id) {
            Some(pending) if pending.to == from && answers(&pending.asked) => {
                let pending = self.pending.remove(&request_id)?;
                if let Some(exchange) = self.exchanges.get_mut(&pending.exchange) {
                    exchange.requests.remove(&request_id);
                }
                Some(pending)
            }
            _ => {
                self.stats.stale_replies += 1;
                None
            }
        }
    }

    fn drop_exchange(&mut self, id: u64) {
        if let Some(exchange) = self.exchanges.remove(&id) {
            for request in exchange.requests {
                self.pending.remove(&request);
            }
            // Whatever was known of this peer's copy may be stale now (it may have lost
            // data and come back): purges need two fresh comparisons.
            let peer = (
                exchange.partition,
                exchange.peer.node.0,
                exchange.peer.shard.0,
            );
            self.comparisons.remove(&peer);
            self.stats.dropped += 1;
        }
    }

    // --- both sides ------------------------------------------------------------------

    /// Merges `incoming` into the stored state of a key, storing the result if it changed;
    /// returns the merged state (`None` if the store failed or the merge was refused: the
    /// key is left for a later exchange).
    fn merge_into<S: ReplicaStore>(
        &mut self,
        store: &mut S,
        partition: u32,
        key: &[u8],
        incoming: &CausalState,
    ) -> Option<CausalState> {
        // The tombstone this shard purged, coming back from a replica that has not purged
        // it yet: taking it would only start the purge over.
        if self.purged.skips(partition, key, incoming)
            && store.get_state(partition, key).ok().flatten().is_none()
        {
            return None;
        }
        match merge_into_store(store, partition, key, incoming, &self.sibling_limits) {
            Ok((merged, changed)) => {
                if changed {
                    self.stats.keys_repaired += 1;
                }
                Some(merged)
            }
            Err(MergeFailure::Refused(_)) => {
                self.stats.bad_entries += 1;
                None
            }
            Err(MergeFailure::Storage(_)) => None,
        }
    }

    /// A keys reply: whole leaves in the order asked, until the byte or entry bound (the
    /// first leaf always, if the frame can hold it).
    fn keys_reply<S: MerkleView>(
        &self,
        partition: u32,
        asked: &[u32],
        store: &S,
    ) -> ExchangeMessage {
        let mut wanted: Vec<u32> = asked.iter().copied().filter(|&b| b < LEAVES).collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted.truncate(self.config.leaves_per_request.max(1));
        let mut by_leaf: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
        for (key, state) in store.bucket_entries(partition, &wanted) {
            by_leaf
                .entry(leaf_of(&key))
                .or_default()
                .push(Entry { key, state });
        }
        let (mut buckets, mut entries, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        for leaf in wanted {
            let leaf_entries = by_leaf.remove(&leaf).unwrap_or_default();
            let leaf_bytes: usize = leaf_entries.iter().map(entry_bytes).sum();
            let fits = bytes + leaf_bytes <= self.config.reply_bytes_max
                && entries.len() + leaf_entries.len() <= BATCH_ENTRIES_MAX;
            let first_fits = buckets.is_empty()
                && leaf_bytes + KEYS_REPLY_FIXED_BYTES <= FRAME_BODY_BYTES_MAX
                && leaf_entries.len() <= BATCH_ENTRIES_MAX;
            if !(fits || first_fits) {
                break;
            }
            bytes += leaf_bytes;
            buckets.push(leaf);
            entries.extend(leaf_entries);
        }
        ExchangeMessage::KeysReply {
            partition,
            buckets,
            entries,
        }
    }

    fn send(
        &mut self,
        to: Replica,
        request_id: u32,
        message: ExchangeMessage,
        out: &mut Vec<ExchangeAction>,
    ) {
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += message.wire_bytes() as u64;
        out.push(ExchangeAction::Send {
            to,
            request_id,
            message,
        });
    }

    fn replicates(&self, ring: &Ring, partition: u32) -> bool {
        partition < ring.q()
            && ring
                .preference_list(PartitionId(partition), usize::from(self.config.n))
                .contains(&self.local)
    }
}

/// The body of a keys reply besides its entries when it lists one leaf: partition, the
/// bucket list's count and one bucket, the entry list's count.
const KEYS_REPLY_FIXED_BYTES: usize = 4 + 4 + 4 + 4;

fn refused(partition: u32) -> ExchangeMessage {
    ExchangeMessage::Refused {
        partition,
        code: ErrorCode::NotOwner,
    }
}

/// The ranges of `level` under the differing buckets of the level above: each parent's
/// `FANOUT` children, adjacent runs joined into one request (bounded by the wire's bucket
/// limit and the level's width).
fn child_ranges(parents: &[u32], level: u8) -> Vec<(u32, u32)> {
    let width = level_width(level);
    let max = u32::try_from(MERKLE_BUCKETS_MAX).unwrap_or(u32::MAX);
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &parent in parents {
        let Some(first) = parent.checked_mul(FANOUT).filter(|&f| f < width) else {
            continue;
        };
        let count = FANOUT.min(width - first);
        match ranges.last_mut() {
            Some((start, len)) if *start + *len == first && *len + count <= max => *len += count,
            _ => ranges.push((first, count)),
        }
    }
    ranges
}

fn entry_bytes(entry: &Entry) -> usize {
    8 + entry.key.len() + entry.state.len()
}

/// Splits entries into pushes of at most `bytes_max` bytes (and `BATCH_ENTRIES_MAX`
/// entries) each; an entry larger than the bound goes alone.
fn batches(entries: Vec<Entry>, bytes_max: usize) -> Vec<Vec<Entry>> {
    let mut out: Vec<Vec<Entry>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry_bytes(&entry);
        match out.last_mut() {
            Some(batch) if bytes + size <= bytes_max && batch.len() < BATCH_ENTRIES_MAX => {
                bytes += size;
                batch.push(entry);
            }
            _ => {
                bytes = size;
                out.push(vec![entry]);
            }
        }
    }
    out
}
