//! Membership changes and tombstone purges in the simulator: the runtime's part of
//! [`crate::membership`] (committed rings, their pending change, partition transfers with
//! [`Handoff`], the flip and the drop) and of [`crate::antientropy`]'s purge grants, played
//! over the simulated network so drops, delays, partitions and crashes apply.
//!
//! Place in the flow: [`super::Simulation`] calls in here from its event loop. What it
//! models, per node (one shard each):
//!
//! - **Ring state.** After formation every node switches to a committed ring. A commit
//!   (`Event::Admin`, from one node at a time, refused while a change is pending there)
//!   stages one [`Change`], previews it and installs the pending change (next ring, its
//!   [`ReplicaMove`]s, a done flag per move) on the committing node. Nodes push their
//!   state to a random node every gossip interval and whenever a move completes; a node
//!   hearing an older state answers with its own. Newer target epoch wins; within one
//!   epoch done flags are ORed; a node that sees every move done flips: its serving ring
//!   becomes the next ring, for the whole change at once. The state survives crashes (the
//!   `RING` file).
//! - **Moves.** A node that learns a pending change starts a transfer for each move it
//!   sends and expects each it receives; stalled or lost transfers are started again while
//!   the change is pending. A [`HandoffAction::Flip`] (equal roots) sets the move's done
//!   flag.
//! - **Double writes.** While a move is pending (and after the flip, until the old copy is
//!   dropped) every state the sending node stores for the partition is also sent to the
//!   move's new holder, so writes made during the move reach both (the coordinator's
//!   `extra_write_targets` do the same in the server).
//! - **Drop.** After the flip, [`Handoff::flipped`] yields the drops, carried out once
//!   every member of the ring is heard serving it (nodes still routing by the old ring may
//!   write to the old holder until then). Data of a partition a node does not replicate
//!   that is found later (a restarted sender, a write routed by an old ring) is turned into
//!   hints for the partition's replicas and dropped; hints for a node that no longer
//!   replicates their partition are addressed to its replicas instead.
//! - **Purge.** Every `PURGE_CHECK_MS` a node whose ring is stable (no pending change,
//!   every member serving it) takes anti-entropy's purge grants and purges the granted
//!   tombstones from its store.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    address, gossip_config, node_state, replica, Event, NodeRun, SimNode, Simulation, SIM_GOSSIP_MS,
};
use crate::antientropy::AntiEntropy;
use crate::causal::{Actor, SiblingLimits};
use crate::coordinator::{merge_into_store, Coordinator, MemStore, ReplicaStore};
use crate::gossip::{FailureDetector, Gossip, NodeState};
use crate::membership::{
    Change, Handoff, HandoffAction, HandoffConfig, Phase, Plan, ReplicaMove, TransferMessage,
};
use crate::ring::{Member, NodeId, PartitionId, Replica, Ring};

/// Replicas per partition in the simulation (the coordinator's default N).
pub(super) const SIM_N: usize = 3;
/// How often a node starts again the transfers of a pending change that stalled.
const RETRY_MS: u64 = 300;
/// How often a node carries out drops, turns orphaned data into hints and re-addresses
/// hints.
const CLEANUP_MS: u64 = 100;
/// How often a node takes anti-entropy's purge grants.
const PURGE_CHECK_MS: u64 = 100;
/// Least time between the two comparisons a purge needs: more than the group-commit
/// interval plus the longest message delay.
pub(super) const PURGE_SETTLE_MS: u64 = 200;
/// Tombstones purged per grant at most.
const PURGE_BATCH: usize = 1024;

/// A committed change on its way: the next ring, its moves, and which are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SimPending {
    /// Epoch of `next`.
    pub epoch: u64,
    /// The ring the change moves to.
    pub next: Ring,
    /// Every replica move, as the preview lists them.
    pub moves: Vec<ReplicaMove>,
    /// Per move: its transfer's roots matched.
    pub done: Vec<bool>,
}

impl SimPending {
    fn all_done(&self) -> bool {
        self.done.iter().all(|d| *d)
    }
}

/// One node's ring state besides its serving ring.
#[derive(Debug, Default)]
pub(super) struct Membership {
    /// Whether the node routes by a committed ring (else by its gossip membership).
    pub committed: bool,
    /// The change being carried out.
    pub pending: Option<SimPending>,
    /// The serving epoch last heard from each node.
    pub epochs: BTreeMap<u64, u64>,
    /// Partitions to drop once every member serves the current ring.
    pub drops: BTreeSet<u32>,
    /// Moves out of this node whose new holder gets copies of its writes.
    pub forwarding: Vec<ReplicaMove>,
}

/// How far a ring state has come: target epoch, flipped, moves done.
fn version(ring: &Ring, pending: Option<&SimPending>) -> (u64, u8, usize) {
    match pending {
        Some(p) => (p.epoch, 0, p.done.iter().filter(|d| **d).count()),
        None => (ring.epoch(), 1, 0),
    }
}

fn replicates(ring: &Ring, node: u64, partition: u32) -> bool {
    partition < ring.q()
        && ring
            .preference_list(PartitionId(partition), SIM_N)
            .contains_node(NodeId(node))
}

pub(super) fn handoff(node: u64) -> Handoff {
    let config = HandoffConfig {
        ack_timeout_ms: 600,
        ..HandoffConfig::default()
    };
    Handoff::new(replica(node), config, SiblingLimits::default())
}

/// The nodes a node's failure detector watches: its gossip peers, narrowed in committed
/// mode to the members of its serving and next rings.
pub(super) fn detector_peers(gossip: &Gossip, ring: &Ring, member: &Membership) -> Vec<NodeId> {
    let peers = gossip.peers();
    if !member.committed {
        return peers;
    }
    let in_rings = |id: &NodeId| {
        ring.members().iter().any(|m| m.id == *id)
            || member
                .pending
                .as_ref()
                .is_some_and(|p| p.next.members().iter().any(|m| m.id == *id))
    };
    peers.into_iter().filter(in_rings).collect()
}

/// Whether every other member of `ring` was heard serving it.
fn all_on_epoch(node: u64, ring: &Ring, member: &Membership) -> bool {
    ring.members()
        .iter()
        .filter(|m| m.id.0 != node)
        .all(|m| member.epochs.get(&m.id.0).copied().unwrap_or(0) >= ring.epoch())
}

impl Simulation {
    /// Every node switches to its current (formation) ring as a committed one.
    pub(super) fn commit_formation(&mut self) {
        for index in 0..self.nodes.len() {
            let node = index as u64 + 1;
            if let Some(NodeRun::Running { member, .. }) = self.running(node) {
                member.committed = true;
            }
            self.persist_ring(node);
        }
        self.last_epoch = self
            .nodes
            .first()
            .and_then(|n| match &n.state {
                NodeRun::Running { ring, .. } => Some(ring.epoch()),
                NodeRun::Crashed(_) => None,
            })
            .unwrap_or(0);
    }

    /// Keeps the node's ring state for its restart.
    fn persist_ring(&mut self, node: u64) {
        let Some(slot) = self.nodes.get_mut((node - 1) as usize) else {
            return;
        };
        if let NodeRun::Running { ring, member, .. } = &slot.state {
            if member.committed {
                slot.ring_file = Some((ring.clone(), member.pending.clone()));
            }
        }
    }

    /// Sends `node`'s ring state to `to`.
    fn send_ring_state(&mut self, node: u64, to: u64, reply: bool) {
        let Some(NodeRun::Running { ring, member, .. }) = self.running(node) else {
            return;
        };
        let (ring, pending) = (ring.clone(), member.pending.clone());
        self.send(node, to, || Event::RingState {
            from: node,
            to,
            ring: ring.clone(),
            pending: pending.clone(),
            reply,
        });
    }

    /// The nodes `node` tells about ring changes: members of its rings but itself.
    fn ring_peers(&mut self, node: u64) -> Vec<u64> {
        let Some(NodeRun::Running { ring, member, .. }) = self.running(node) else {
            return Vec::new();
        };
        let mut peers: BTreeSet<u64> = ring.members().iter().map(|m| m.id.0).collect();
        if let Some(p) = &member.pending {
            peers.extend(p.next.members().iter().map(|m| m.id.0));
        }
        peers.remove(&node);
        peers.into_iter().collect()
    }

    fn broadcast_ring_state(&mut self, node: u64) {
        for peer in self.ring_peers(node) {
            self.send_ring_state(node, peer, false);
        }
    }

    /// A ring state from `from` arrived at `to`: the newer target epoch wins, done flags
    /// of one epoch are ORed, and a pushed state is answered with the receiver's own (so
    /// a node that left the ring still hears the others serve it).
    pub(super) fn ring_state_arrived(
        &mut self,
        from: u64,
        to: u64,
        theirs: (Ring, Option<SimPending>),
        reply: bool,
    ) {
        self.merge_ring_state(from, to, theirs);
        if !reply {
            self.send_ring_state(to, from, true);
        }
    }

    fn merge_ring_state(&mut self, from: u64, to: u64, theirs: (Ring, Option<SimPending>)) {
        let (ring_in, pending_in) = theirs;
        let Some(NodeRun::Running { ring, member, .. }) = self.running(to) else {
            return;
        };
        member.epochs.insert(from, ring_in.epoch());
        if !member.committed {
            return;
        }
        let mine = version(ring, member.pending.as_ref());
        let other = version(&ring_in, pending_in.as_ref());
        if other.0 < mine.0 || (other.0 == mine.0 && other.1 < mine.1) {
            return;
        }
        if other.0 == mine.0 && other.1 == 1 && mine.1 == 1 {
            return;
        }
        // Theirs targets a later epoch, or the same one flipped, or the same change with
        // (maybe) other moves done.
        if let Some(epoch) = member.pending.as_ref().map(|p| p.epoch) {
            if epoch < other.0 || pending_in.is_none() {
                // My change flipped elsewhere (a later state exists).
                self.flip_local(to);
            }
        }
        let Some(NodeRun::Running { ring, member, .. }) = self.running(to) else {
            return;
        };
        if ring_in.epoch() > ring.epoch() {
            *ring = ring_in;
        }
        let mut changed = false;
        if let Some(p) = pending_in.filter(|p| p.epoch > ring.epoch()) {
            match &mut member.pending {
                Some(mine) if mine.epoch == p.epoch => {
                    for (d, theirs) in mine.done.iter_mut().zip(&p.done) {
                        if *theirs && !*d {
                            *d = true;
                            changed = true;
                        }
                    }
                }
                _ => {
                    member.pending = Some(p);
                    changed = true;
                }
            }
        }
        let all_done = member.pending.as_ref().is_some_and(SimPending::all_done);
        let epoch = ring.epoch();
        member.epochs.insert(to, epoch);
        if all_done {
            self.flip_local(to);
        } else if changed {
            self.start_moves(to);
        }
        self.refresh_peers(to);
        self.persist_ring(to);
    }

    /// The failure detector follows the rings.
    fn refresh_peers(&mut self, node: u64) {
        if let Some(NodeRun::Running {
            gossip,
            detector,
            ring,
            member,
            ..
        }) = self.running(node)
        {
            detector.set_peers(detector_peers(gossip, ring, member));
        }
    }

    /// Starts the transfers `node` sends and expects those it receives for its pending
    /// change (again for those that stalled or were lost with a crash).
    pub(super) fn start_moves(&mut self, node: u64) {
        let now = self.now;
        let mut out = Vec::new();
        if let Some(NodeRun::Running {
            coordinator,
            handoff,
            member,
            ..
        }) = self.running(node)
        {
            let Some(p) = &member.pending else { return };
            let progress = handoff.progress();
            for (i, m) in p.moves.iter().enumerate() {
                if m.to.node.0 == node {
                    let _ = handoff.expect(m.partition.0, m.from, p.epoch);
                }
                let done = p.done.get(i).copied().unwrap_or(true);
                if m.from.node.0 != node || done {
                    continue;
                }
                let running = progress.iter().any(|t| {
                    t.partition == m.partition.0
                        && t.to == m.to
                        && t.ring_epoch == p.epoch
                        && matches!(
                            t.phase,
                            Phase::Streaming | Phase::Confirming | Phase::Flipping
                        )
                });
                if !running {
                    let store = coordinator.store();
                    let _ = handoff.start(
                        now,
                        m.partition.0,
                        m.to,
                        p.epoch,
                        m.drop_after,
                        store,
                        &mut out,
                    );
                }
            }
            member.forwarding = p
                .moves
                .iter()
                .filter(|m| m.from.node.0 == node)
                .copied()
                .collect();
            coordinator
                .store_mut()
                .track_writes(!member.forwarding.is_empty());
        }
        self.handoff_actions(node, out);
    }

    /// The whole change flips at `node`: its serving ring becomes the next ring.
    fn flip_local(&mut self, node: u64) {
        let mut out = Vec::new();
        let Some(NodeRun::Running {
            ring,
            member,
            handoff,
            ..
        }) = self.running(node)
        else {
            return;
        };
        let Some(p) = member.pending.take() else {
            return;
        };
        *ring = p.next.clone();
        for m in &p.moves {
            if m.from.node.0 == node {
                handoff.flipped(m.partition.0, m.to, &mut out);
            }
            if m.to.node.0 == node {
                handoff.unexpect(m.partition.0);
            }
        }
        member.forwarding.retain(|m| m.drop_after);
        member.epochs.insert(node, p.epoch);
        self.note(format!("n{node} flips to epoch {}", p.epoch));
        self.handoff_actions(node, out);
        self.refresh_peers(node);
        self.persist_ring(node);
        self.broadcast_ring_state(node);
    }

    /// Carries out what a node's transfers ask for.
    pub(super) fn handoff_actions(&mut self, node: u64, actions: Vec<HandoffAction>) {
        for action in actions {
            match action {
                HandoffAction::Send {
                    to,
                    request_id,
                    message,
                } => self.send(node, to.node.0, || Event::Transfer {
                    from: replica(node),
                    to,
                    request_id,
                    message: message.clone(),
                }),
                HandoffAction::Flip {
                    partition,
                    ring_epoch,
                    to,
                } => self.move_done(node, partition, ring_epoch, to),
                HandoffAction::DropPartition { partition } => {
                    if let Some(NodeRun::Running { member, .. }) = self.running(node) {
                        member.drops.insert(partition);
                    }
                }
                HandoffAction::Stalled {
                    partition,
                    to,
                    reason,
                } => {
                    self.transfers_stalled += 1;
                    self.note(format!(
                        "n{node} transfer of p{partition} to n{} stalled: {reason:?}",
                        to.node.0
                    ));
                }
            }
        }
    }

    /// A transfer message arrived at `to`.
    pub(super) fn transfer_arrived(
        &mut self,
        from: Replica,
        to: Replica,
        request_id: u32,
        message: TransferMessage,
    ) {
        let now = self.now;
        let mut out = Vec::new();
        if let Some(NodeRun::Running {
            coordinator,
            handoff,
            ..
        }) = self.running(to.node.0)
        {
            handoff.message(
                now,
                from,
                request_id,
                message,
                coordinator.store_mut(),
                &mut out,
            );
        }
        self.handoff_actions(to.node.0, out);
    }

    /// The move of `partition` from `node` to `to` has matching roots.
    fn move_done(&mut self, node: u64, partition: u32, epoch: u64, to: Replica) {
        let Some(NodeRun::Running { member, .. }) = self.running(node) else {
            return;
        };
        let Some(p) = member.pending.as_mut().filter(|p| p.epoch == epoch) else {
            return;
        };
        for (m, done) in p.moves.iter().zip(p.done.iter_mut()) {
            if m.partition.0 == partition && m.from.node.0 == node && m.to == to {
                *done = true;
            }
        }
        let all_done = p.all_done();
        self.moves_done += 1;
        self.persist_ring(node);
        if all_done {
            self.flip_local(node);
        } else {
            self.broadcast_ring_state(node);
        }
    }

    /// A node's periodic membership work: transfer deadlines, ring gossip, restarts of
    /// stalled transfers, drops and clean-up, purges.
    pub(super) fn membership_tick(&mut self, node: u64) {
        let now = self.now;
        let mut out = Vec::new();
        let committed = match self.running(node) {
            Some(NodeRun::Running {
                coordinator,
                handoff,
                member,
                ..
            }) => {
                handoff.tick(now, coordinator.store(), &mut out);
                member.committed
            }
            _ => return,
        };
        self.handoff_actions(node, out);
        if committed {
            if now.is_multiple_of(SIM_GOSSIP_MS) {
                let peers = self.ring_peers(node);
                if !peers.is_empty() {
                    let peer = peers[self.rng.below(peers.len() as u64) as usize];
                    self.send_ring_state(node, peer, false);
                }
            }
            if now.is_multiple_of(RETRY_MS) {
                self.start_moves(node);
            }
            if now.is_multiple_of(CLEANUP_MS) {
                self.clean_up(node);
            }
        }
        if self.config.purge && now.is_multiple_of(PURGE_CHECK_MS) {
            self.purge(node);
        }
    }

    /// Once the ring is stable at `node` and every member serves it: drops, orphaned data
    /// turned into hints, hints re-addressed.
    fn clean_up(&mut self, node: u64) {
        let Some(NodeRun::Running {
            coordinator,
            ring,
            member,
            ..
        }) = self.running(node)
        else {
            return;
        };
        if member.pending.is_some() || !all_on_epoch(node, ring, member) {
            return;
        }
        let store = coordinator.store_mut();
        let mut dropped = 0;
        for partition in std::mem::take(&mut member.drops) {
            if !replicates(ring, node, partition) {
                dropped += store.drop_partition(partition);
            }
        }
        member.forwarding.clear();
        store.track_writes(false);
        let mut orphans = 0;
        for partition in store.partitions() {
            if replicates(ring, node, partition) {
                continue;
            }
            let states: Vec<(Vec<u8>, crate::causal::CausalState)> = store
                .states()
                .filter(|((p, _), _)| *p == partition)
                .map(|((_, k), s)| (k.clone(), s.clone()))
                .collect();
            for replica in ring.preference_list(PartitionId(partition), SIM_N).iter() {
                for (key, state) in &states {
                    let _ = store.put_hint(replica.node, partition, key, state);
                }
            }
            orphans += states.len();
            store.drop_partition(partition);
        }
        let mut readdressed = 0;
        for target in store.hint_targets() {
            let Ok(hints) = store.hints_for(target, usize::MAX) else {
                continue;
            };
            for hint in hints {
                let list = ring.preference_list(PartitionId(hint.partition), SIM_N);
                if list.contains_node(target) {
                    continue;
                }
                for replica in list.iter() {
                    if replica.node.0 == node {
                        let limits = SiblingLimits::default();
                        let _ = merge_into_store(
                            store,
                            hint.partition,
                            &hint.key,
                            &hint.state,
                            &limits,
                        );
                    } else {
                        let _ =
                            store.put_hint(replica.node, hint.partition, &hint.key, &hint.state);
                    }
                }
                let _ = store.delete_hint(target, hint.hint_id);
                readdressed += 1;
            }
        }
        self.dropped_keys += dropped as u64;
        self.orphan_keys += orphans as u64;
        self.hints_readdressed += readdressed;
        if dropped + orphans > 0 {
            self.note(format!(
                "n{node} dropped {dropped} keys, turned {orphans} orphaned keys into hints"
            ));
        }
    }

    /// Takes anti-entropy's purge grants and purges what they allow.
    fn purge(&mut self, node: u64) {
        let Some(NodeRun::Running {
            coordinator,
            antientropy,
            ring,
            member,
            ..
        }) = self.running(node)
        else {
            return;
        };
        let stable =
            !member.committed || (member.pending.is_none() && all_on_epoch(node, ring, member));
        let grants = antientropy.take_purge_grants(ring, stable, PURGE_SETTLE_MS);
        let mut purged = Vec::new();
        for grant in grants {
            let store = coordinator.store_mut();
            let gone =
                store.purge_tombstones(grant.partition, grant.lsn_max, PURGE_BATCH, |k, lsn| {
                    grant.allows(k, lsn)
                });
            antientropy.note_purged(grant.partition, &gone);
            purged.extend(gone.into_iter().map(|(key, _)| key));
        }
        if !purged.is_empty() {
            self.tombstones_purged += purged.len() as u64;
            let shown: Vec<String> = purged.iter().map(|k| super::show(k)).collect();
            self.note(format!("n{node} purged tombstones {shown:?}"));
        }
    }

    /// Copies of the writes made at old holders to the new holders of their moves.
    pub(super) fn forward_writes(&mut self) {
        if self.last_epoch == 0 {
            return;
        }
        for node in 1..=self.nodes.len() as u64 {
            let mut sends = Vec::new();
            if let Some(NodeRun::Running {
                coordinator,
                member,
                ..
            }) = self.running(node)
            {
                if member.forwarding.is_empty() {
                    continue;
                }
                for (partition, key) in coordinator.store_mut().take_written() {
                    let Ok(Some(state)) = coordinator.store().get_state(partition, &key) else {
                        continue;
                    };
                    for m in member
                        .forwarding
                        .iter()
                        .filter(|m| m.partition.0 == partition)
                    {
                        sends.push((m.to, partition, key.clone(), state.clone()));
                    }
                }
            }
            for (to, partition, key, state) in sends {
                self.forwarded_writes += 1;
                self.send(node, to.node.0, || Event::Forward {
                    from: node,
                    to: to.node.0,
                    partition,
                    key: key.clone(),
                    state: state.clone(),
                });
            }
        }
    }

    /// A copied write arrived at the new holder.
    pub(super) fn forward_arrived(
        &mut self,
        to: u64,
        partition: u32,
        key: &[u8],
        state: &crate::causal::CausalState,
    ) {
        if let Some(NodeRun::Running { coordinator, .. }) = self.running(to) {
            let limits = SiblingLimits::default();
            let _ = merge_into_store(coordinator.store_mut(), partition, key, state, &limits);
        }
    }

    // --- the operator -----------------------------------------------------------------

    /// The node an admin command goes to: running, in its own ring, on the last committed
    /// epoch, with no change pending.
    fn admin_node(&mut self) -> Option<u64> {
        let last = self.last_epoch;
        // The operator waits until the last change shows finished everywhere.
        let finished = self.nodes.iter().enumerate().all(|(i, n)| {
            let id = i as u64 + 1;
            self.dead.contains(&id)
                || matches!(&n.state, NodeRun::Running { ring, member, .. }
                    if member.pending.is_none() && ring.epoch() == last)
        });
        if !finished {
            return None;
        }
        let candidates: Vec<u64> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let id = i as u64 + 1;
                match &n.state {
                    NodeRun::Running { ring, member, .. }
                        if member.committed
                            && member.pending.is_none()
                            && ring.epoch() == last
                            && ring.members().iter().any(|m| m.id.0 == id) =>
                    {
                        Some(id)
                    }
                    _ => None,
                }
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len() as u64) as usize])
    }

    /// The operator's next change: chosen from the seed, staged and committed.
    pub(super) fn admin(&mut self) {
        if self.changes_left == 0 {
            return;
        }
        let Some(at) = self.admin_node() else {
            self.schedule(self.now + 100, Event::Admin);
            return;
        };
        let Some(NodeRun::Running { ring, .. }) = self.running(at) else {
            return;
        };
        let members: Vec<Member> = ring.members().to_vec();
        let kind = if members.len() <= SIM_N {
            [0, 3][self.rng.below(2) as usize]
        } else {
            self.rng.below(4)
        };
        let others: Vec<&Member> = members.iter().filter(|m| m.id.0 != at).collect();
        let pick = others[self.rng.below(others.len() as u64) as usize].clone();
        match kind {
            0 => {
                let id = self.add_node(at);
                self.commit(Change::Join(Member::new(NodeId(id), 1, 1)));
            }
            1 => self.commit(Change::Leave(pick.id)),
            2 => {
                // Permanent loss: the node dies for good, then the operator removes it.
                self.crash(pick.id.0);
                self.dead.insert(pick.id.0);
                self.note(format!("n{} is lost for good", pick.id.0));
                let at = self.now + 200 + self.rng.below(600);
                self.schedule(at, Event::Commit(Change::Remove(pick.id)));
            }
            _ => {
                let weight = if pick.weight == 1 { 2 } else { 1 };
                self.commit(Change::Reweight {
                    node: pick.id,
                    weight,
                });
            }
        }
    }

    /// Commits `change` at an admin node (retrying until one is ready).
    pub(super) fn commit(&mut self, change: Change) {
        let Some(at) = self.admin_node() else {
            self.schedule(self.now + 100, Event::Commit(change));
            return;
        };
        let Some(NodeRun::Running { ring, .. }) = self.running(at) else {
            return;
        };
        let current = ring.clone();
        let mut plan = Plan::new();
        let preview = plan
            .stage(change.clone())
            .and_then(|()| plan.preview(&current, SIM_N));
        self.changes_left -= 1;
        match preview {
            Ok(preview) if !preview.moves.is_empty() => {
                let epoch = preview.ring.epoch();
                let done = vec![false; preview.moves.len()];
                self.note(format!(
                    "n{at} commits {change:?}: epoch {epoch}, {} moves",
                    preview.moves.len()
                ));
                self.moves_committed += preview.moves.len() as u64;
                if let Change::Leave(node) | Change::Remove(node) = change {
                    self.departed.insert(node.0);
                }
                if let Some(NodeRun::Running { member, .. }) = self.running(at) {
                    member.pending = Some(SimPending {
                        epoch,
                        next: preview.ring,
                        moves: preview.moves,
                        done,
                    });
                }
                self.last_epoch = epoch;
                self.changes_committed += 1;
                self.persist_ring(at);
                self.start_moves(at);
                self.refresh_peers(at);
                self.broadcast_ring_state(at);
            }
            other => {
                let what = other
                    .map(|_| "no moves".to_owned())
                    .map_err(|e| e.to_string());
                self.note(format!("n{at} plan {change:?} not committed: {what:?}"));
            }
        }
        if self.changes_left > 0 {
            let at = self.now + 200 + self.rng.below(1_500);
            self.schedule(at, Event::Admin);
        }
    }

    /// Starts a new, empty node that fetched its ring state from `seed` (`rotor admin
    /// join SEED`); returns its id.
    fn add_node(&mut self, seed: u64) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let store = MemStore::new(Actor(self.rng.next_u64()), self.config.durability, 1 << 20);
        let state = NodeState {
            status: crate::wire::NodeStatus::Joining,
            ..node_state(id)
        };
        let gossip = Gossip::new(
            state,
            vec![address(seed)],
            gossip_config(),
            self.rng.next_u64(),
        );
        let Some(NodeRun::Running { ring, member, .. }) = self.running(seed) else {
            return id;
        };
        let ring = ring.clone();
        let membership = Membership {
            committed: true,
            pending: member.pending.clone(),
            ..Membership::default()
        };
        let mut detector = FailureDetector::new(super::detector_config());
        detector.set_peers(detector_peers(&gossip, &ring, &membership));
        let gossip_file = gossip.persist();
        self.nodes.push(SimNode {
            id: NodeId(id),
            state: NodeRun::Running {
                coordinator: Coordinator::new(replica(id), super::coordinator_config(), store),
                antientropy: AntiEntropy::new(
                    replica(id),
                    super::exchange_config(),
                    SiblingLimits::default(),
                ),
                gossip,
                detector,
                ring,
                handoff: handoff(id),
                member: membership,
            },
            gossip_file,
            ring_file: None,
        });
        self.persist_ring(id);
        self.note(format!("n{id} starts and joins through n{seed}"));
        id
    }

    /// Whether the membership side is at rest: no change left or pending, every live node
    /// serving the last ring with its drops done and holding only what it replicates.
    pub(super) fn membership_settled(&self) -> bool {
        if self.last_epoch == 0 {
            return true;
        }
        if self.changes_left > 0 {
            return false;
        }
        self.nodes.iter().enumerate().all(|(i, n)| {
            let id = i as u64 + 1;
            if self.dead.contains(&id) {
                return true;
            }
            match &n.state {
                NodeRun::Running {
                    coordinator,
                    ring,
                    member,
                    ..
                } => {
                    member.pending.is_none()
                        && ring.epoch() == self.last_epoch
                        && member.drops.is_empty()
                        && coordinator
                            .store()
                            .partitions()
                            .iter()
                            .all(|&p| replicates(ring, id, p))
                }
                NodeRun::Crashed(_) => false,
            }
        })
    }

    /// The end-of-run checks of a run with membership changes: the final ring has N
    /// distinct replicas per partition over exactly the expected members, and nodes that
    /// left hold nothing.
    pub(super) fn check_final_ring(&self) -> Result<(), String> {
        let ring = self.final_ring()?;
        let expected: BTreeSet<u64> = (1..=self.nodes.len() as u64)
            .filter(|n| !self.departed.contains(n) && !self.dead.contains(n))
            .collect();
        let members: BTreeSet<u64> = ring.members().iter().map(|m| m.id.0).collect();
        if members != expected {
            return Err(format!(
                "final ring members {members:?}, expected {expected:?}"
            ));
        }
        let n = SIM_N.min(members.len());
        for partition in 0..ring.q() {
            let list = ring.preference_list(PartitionId(partition), SIM_N);
            let nodes: BTreeSet<u64> = list.iter().map(|r| r.node.0).collect();
            if list.len() != n || nodes.len() != n {
                return Err(format!(
                    "partition {partition} has replicas {:?}, not {n} distinct nodes",
                    list.iter().map(|r| r.node.0).collect::<Vec<_>>()
                ));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let id = i as u64 + 1;
            if !self.departed.contains(&id) || self.dead.contains(&id) {
                continue;
            }
            if let NodeRun::Running { coordinator, .. } = &node.state {
                let store = coordinator.store();
                let keys = store.states().count();
                if keys > 0 || store.hint_count() > 0 {
                    return Err(format!(
                        "n{id} left but holds {keys} keys and {} hints",
                        store.hint_count()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ring every live member serves at the end (they must agree).
    pub(super) fn final_ring(&self) -> Result<Ring, String> {
        let mut found: Option<Ring> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let id = i as u64 + 1;
            if self.dead.contains(&id) {
                continue;
            }
            let NodeRun::Running { ring, .. } = &node.state else {
                return Err(format!("n{id} is not running at the end"));
            };
            match &found {
                Some(r) if r != ring => {
                    return Err(format!(
                        "n{id} serves epoch {}, another node epoch {}",
                        ring.epoch(),
                        r.epoch()
                    ))
                }
                Some(_) => {}
                None => found = Some(ring.clone()),
            }
        }
        found.ok_or_else(|| "no node is running".to_owned())
    }

    /// Tombstones held over every live node.
    pub(super) fn tombstones(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| match &n.state {
                NodeRun::Running { coordinator, .. } => Some(
                    coordinator
                        .store()
                        .states()
                        .filter(|(_, s)| s.is_tombstone_only())
                        .count() as u64,
                ),
                NodeRun::Crashed(_) => None,
            })
            .sum()
    }

    /// Whether `node` may serve clients: not gone from the cluster.
    pub(super) fn is_member(&self, node: u64) -> bool {
        !self.departed.contains(&node) && !self.dead.contains(&node)
    }
}

/// Reads the restart state of a node from its ring file.
pub(super) fn restored(
    ring_file: &Option<(Ring, Option<SimPending>)>,
) -> Option<(Ring, Membership)> {
    let (ring, pending) = ring_file.as_ref()?;
    Some((
        ring.clone(),
        Membership {
            committed: true,
            pending: pending.clone(),
            ..Membership::default()
        },
    ))
}
