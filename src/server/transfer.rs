//! One shard's partition transfers during a ring change: it turns the view's pending change
//! into [`Handoff`] starts and expectations, reports verified moves to shard 0, and drops
//! the copies this shard no longer holds once the ring has flipped.
//!
//! Place in the flow:
//!
//! ```text
//!  shard 0 publishes a view with `pending` (a committed ring being moved to)
//!   └▶ every shard: Transfers::view ─▶ Handoff::expect   for moves this shard receives
//!                                  └▶ queue              for moves this shard sends
//!  shard timer: Transfers::tick ─▶ Handoff::start (TRANSFERS_OUTGOING_MAX at once),
//!               restarts of stalled moves after a back-off, Handoff::tick, due drops
//!  TRANSFER_* on a peer connection ─▶ Transfers::request ─▶ reply frame on that connection
//!  TRANSFER_* reply on this shard's link ─▶ Transfers::reply
//!  HandoffAction::Flip ─▶ TransferAction::MoveDone ─▶ ClusterRequest::MoveDone to shard 0
//!  shard 0, every move done ─▶ view { ring: next, pending: None }
//!   └▶ Transfers::view sees the ring switch ─▶ Handoff::flipped ─▶ DropPartition
//!      ─▶ after DROP_GRACE_MS ─▶ TransferAction::DropPartition ─▶ the store drops it
//! ```
//!
//! **Who sends.** A move's `from` streams it while this node believes it reachable;
//! otherwise the first reachable replica of the partition in the serving ring that is not
//! the receiver's node does (the same rule on every node, so sender and receiver agree as
//! soon as their failure detectors do; while they disagree the receiver refuses, the
//! sender stalls and tries again after a back-off). A substitute never drops its copy: it
//! stays a holder.
//!
//! **Why a grace before the drop.** Nodes that have not yet seen the flip still route by
//! the old ring and may count a write acknowledged by the old holder toward W; the old copy
//! stays readable and writable for `DROP_GRACE_MS` (a few gossip rounds) after the flip, so
//! such a write is double-written to the new holder (the change is still pending on that
//! node) and nothing it acknowledged is lost.
//!
//! # What this module deliberately does not do
//! No sockets, no clock, no mailbox: time comes in as milliseconds and what must happen
//! goes out as [`TransferAction`]s, carried out by [`super::cluster`]. It does not decide
//! when the ring flips (shard 0 does, from the done flags) nor route client writes during
//! the change (the coordinator double-writes, see [`crate::coordinator`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::antientropy::MerkleView;
use crate::causal::SiblingLimits;
use crate::constants::{
    DROP_GRACE_MS, MOVE_DONE_RESEND_MS, TRANSFER_RETRY_BACKOFF_MS_MAX,
    TRANSFER_RETRY_BACKOFF_MS_MIN,
};
use crate::coordinator::{ExtraWriteTargets, Liveness, ReplicaStore};
use crate::membership::{
    Handoff, HandoffAction, HandoffConfig, HandoffError, ReplicaMove, TransferMessage,
};
use crate::ring::{PartitionId, Replica, Ring};
use crate::wire::ErrorCode;

/// The transfers of one shard across ring changes.
#[derive(Debug)]
pub struct Transfers {
    local: Replica,
    handoff: Handoff,
    /// The change this shard is taking part in, if any.
    change: Option<ChangeState>,
    /// Partitions to drop, with when: (due, partition).
    drops: Vec<(u64, u32)>,
    /// The serving ring of the latest view, to check a drop is still right when it is due.
    ring: Option<Arc<Ring>>,
    /// Replicas per partition the moves were planned for.
    n: usize,
    /// Epoch of the change whose new holders the coordinator double-writes to, if any.
    targets_epoch: Option<u64>,
    counters: TransferCounters,
}

/// A pending change as one view shows it.
#[derive(Debug, Clone, Copy)]
pub struct PendingMoves<'a> {
    /// Epoch of the ring being moved to.
    pub epoch: u64,
    /// Every replica move of the change, in the change's fixed order.
    pub moves: &'a [ReplicaMove],
    /// Per move: whether its sender reported the roots matched (shard 0's OR of reports).
    pub done: &'a [bool],
}

/// What the transfers ask the shard's runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferAction {
    /// Send a transfer message to a shard of a node (a request on this shard's link to it,
    /// or the reply to a request that arrived on a peer connection).
    Send {
        /// The destination.
        to: Replica,
        /// Request id (untagged: the runtime adds the transfer class to requests).
        request_id: u32,
        /// The message.
        message: TransferMessage,
    },
    /// Move `index` of the change of `epoch` is verified: tell shard 0
    /// (`ClusterRequest::MoveDone`). Repeated until the view shows it done.
    MoveDone {
        /// Epoch of the change.
        epoch: u64,
        /// The move's index in the change's moves.
        index: usize,
    },
    /// Delete this shard's copy of the partition (the grace after the flip has passed).
    DropPartition {
        /// The partition.
        partition: u32,
    },
}

/// Counters for STATS (cumulative, except `active`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferCounters {
    /// Moves this shard is streaming now (`transfer_active`).
    pub active: u64,
    /// Entries sent in batches, resends included (`transfer_keys_sent`).
    pub keys_sent: u64,
    /// Entries received in batches that were stored (`transfer_keys_received`).
    pub keys_received: u64,
    /// Moves this shard sent whose roots matched (`transfer_done`).
    pub done: u64,
    /// Transfers that stopped without a match and were queued for a retry
    /// (`transfer_stalled`).
    pub stalled: u64,
    /// Partitions whose copy this shard dropped (`partitions_dropped`).
    pub partitions_dropped: u64,
}

/// The change this shard takes part in.
#[derive(Debug)]
struct ChangeState {
    epoch: u64,
    moves: Arc<[ReplicaMove]>,
    done: Vec<bool>,
    /// Moves this shard sends, by index.
    sends: BTreeMap<usize, Send>,
    /// Moves this shard receives: index -> the sender it expects.
    receives: BTreeMap<usize, Replica>,
}

/// One move this shard sends.
#[derive(Debug, Clone, Copy)]
struct Send {
    partition: u32,
    to: Replica,
    /// Whether this shard leaves the partition's set (it is the move's own `from`).
    drop_after: bool,
    state: SendState,
    /// Stalls so far (the back-off doubles with each).
    stalls: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// Waiting for a free transfer slot.
    Queued,
    /// Streaming or comparing roots.
    Running,
    /// Stopped without a match; started again at `retry_at`.
    Stalled { retry_at: u64 },
    /// Verified and reported to shard 0 at `reported_at`; waiting for the flip.
    Verified { reported_at: u64 },
    /// Shard 0 has it as done (this shard's report, or another sender's).
    Done,
}

impl Transfers {
    /// The transfers of shard `local`.
    pub fn new(local: Replica, config: HandoffConfig, sibling_limits: SiblingLimits) -> Self {
        Transfers {
            local,
            handoff: Handoff::new(local, config, sibling_limits),
            change: None,
            drops: Vec::new(),
            ring: None,
            n: 0,
            targets_epoch: None,
            counters: TransferCounters::default(),
        }
    }

    /// What the transfers have done so far.
    pub fn counters(&self) -> TransferCounters {
        let mut counters = self.counters;
        counters.active = self.change.as_ref().map_or(0, |change| {
            let running = change.sends.values();
            running.filter(|s| s.state == SendState::Running).count() as u64
        });
        counters
    }

    /// The state machine underneath (progress of each outgoing transfer).
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// A new view: `ring` is the serving ring, `pending` the change in progress, `n` the
    /// replicas per partition the change was planned for, `live` this node's failure
    /// detector. Starts taking part in a new change, follows changes of who sends, and
    /// on the flip (the serving ring reached the change's epoch) schedules the drops.
    /// Returns the coordinator's new [`ExtraWriteTargets`] when they changed (a change
    /// began, or ended: empty).
    pub fn view(
        &mut self,
        now: u64,
        ring: &Arc<Ring>,
        pending: Option<PendingMoves<'_>>,
        n: usize,
        live: &dyn Liveness,
    ) -> Option<Arc<ExtraWriteTargets>> {
        let pending = pending.filter(|p| ring.epoch() < p.epoch);
        let targets = self.write_targets(pending);
        self.take_part(now, ring, pending, n, live);
        targets
    }

    /// The coordinator's double-write targets for `pending`, if they changed.
    fn write_targets(
        &mut self,
        pending: Option<PendingMoves<'_>>,
    ) -> Option<Arc<ExtraWriteTargets>> {
        let epoch = pending.map(|p| p.epoch);
        if epoch == self.targets_epoch {
            return None;
        }
        self.targets_epoch = epoch;
        let moves = pending.map_or(&[][..], |p| p.moves);
        let pairs = moves.iter().map(|m| (m.partition.0, m.to));
        Some(Arc::new(ExtraWriteTargets::new(pairs)))
    }

    fn take_part(
        &mut self,
        now: u64,
        ring: &Arc<Ring>,
        pending: Option<PendingMoves<'_>>,
        n: usize,
        live: &dyn Liveness,
    ) {
        self.ring = Some(ring.clone());
        self.n = n;
        if self
            .change
            .as_ref()
            .is_some_and(|change| ring.epoch() >= change.epoch)
        {
            self.flip(now);
        }
        // (A pending change the ring already contains was filtered out by the caller.)
        let Some(pending) = pending else {
            return;
        };
        if self
            .change
            .as_ref()
            .is_some_and(|change| change.epoch != pending.epoch)
        {
            // A different change replaced the one this shard knew, without the flip this
            // shard would have seen (a view missed); the new change's moves start over.
            self.abandon();
        }
        let change = self.change.get_or_insert_with(|| ChangeState {
            epoch: pending.epoch,
            moves: pending.moves.iter().copied().collect(),
            done: vec![false; pending.moves.len()],
            sends: BTreeMap::new(),
            receives: BTreeMap::new(),
        });
        if change.moves.len() != pending.moves.len() {
            return; // Not the same change after all; ignored rather than misread.
        }
        for (done, &seen) in change.done.iter_mut().zip(pending.done) {
            *done |= seen;
        }
        let moves = change.moves.clone();
        for (index, m) in moves.iter().enumerate() {
            let done = change.done.get(index).copied().unwrap_or(false);
            let sender = sender_of(m, ring, n, live);
            let expect = sender.filter(|&sender| {
                m.to == self.local && !done && change.receives.get(&index) != Some(&sender)
            });
            if let Some(sender) = expect {
                // Refused only when TRANSFERS_INCOMING_MAX are expected: the next view
                // tries again.
                if self
                    .handoff
                    .expect(m.partition.0, sender, change.epoch)
                    .is_ok()
                {
                    change.receives.insert(index, sender);
                }
            }
            let entry = change.sends.get_mut(&index);
            match (entry, sender == Some(self.local)) {
                (Some(send), _) if done => send.state = SendState::Done,
                (Some(send), false) => {
                    // Another shard sends it now (this node thought us unreachable
                    // earlier, or the other way round): ours would only be refused.
                    if !matches!(send.state, SendState::Verified { .. }) {
                        change.sends.remove(&index);
                    }
                }
                (Some(_), true) | (None, false) => {}
                (None, true) if done => {}
                (None, true) => {
                    change.sends.insert(
                        index,
                        Send {
                            partition: m.partition.0,
                            to: m.to,
                            drop_after: m.drop_after && m.from == self.local,
                            state: SendState::Queued,
                            stalls: 0,
                        },
                    );
                }
            }
        }
    }

    /// Time passed: queued and stalled moves start when a slot is free, verified moves
    /// are reported again until the view shows them done, batches and confirms past their
    /// deadline go again, and due drops are carried out.
    pub fn tick<S: MerkleView>(&mut self, now: u64, store: &S, out: &mut Vec<TransferAction>) {
        let mut actions = Vec::new();
        self.handoff.tick(now, store, &mut actions);
        self.handoff_actions(now, actions, out);
        self.start_waiting(now, store, out);
        if let Some(change) = &mut self.change {
            for (&index, send) in change.sends.iter_mut() {
                if let SendState::Verified { reported_at } = send.state {
                    if now >= reported_at.saturating_add(MOVE_DONE_RESEND_MS) {
                        send.state = SendState::Verified { reported_at: now };
                        out.push(move_done(change.epoch, index));
                    }
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.drops.iter().partition(|(at, _)| *at <= now);
        self.drops = later;
        for (_, partition) in due {
            // Still right? A later change may have given the partition back.
            let holder = self.ring.as_ref().is_some_and(|ring| {
                ring.preference_list(PartitionId(partition), self.n)
                    .contains(&self.local)
            });
            let receiving = self.change.as_ref().is_some_and(|change| {
                change
                    .moves
                    .iter()
                    .any(|m| m.partition.0 == partition && m.to == self.local)
            });
            if !holder && !receiving {
                self.counters.partitions_dropped += 1;
                out.push(TransferAction::DropPartition { partition });
            }
        }
    }

    /// A transfer request (TRANSFER_BATCH or TRANSFER_CONFIRM) from a peer connection of
    /// `node`; `from` names that connection (its replies go back to it). The connection
    /// does not carry the sender's shard, so a request from the node this shard expects the
    /// partition from is taken as from the expected shard.
    #[allow(clippy::too_many_arguments)]
    pub fn request<S: MerkleView + ReplicaStore>(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        message: TransferMessage,
        store: &mut S,
        out: &mut Vec<TransferAction>,
    ) {
        let (partition, entries) = match &message {
            TransferMessage::Batch {
                partition, entries, ..
            } => (*partition, entries.len() as u64),
            TransferMessage::Confirm { partition, .. } => (*partition, 0),
            _ => return, // Answers come back on this shard's own links, never here.
        };
        let expected = self.change.as_ref().and_then(|change| {
            change.moves.iter().enumerate().find_map(|(index, m)| {
                let sender = change.receives.get(&index)?;
                (m.partition.0 == partition && m.to == self.local && sender.node == from.node)
                    .then_some(*sender)
            })
        });
        let sender = expected.unwrap_or(from);
        let mut actions = Vec::new();
        self.handoff
            .message(now, sender, request_id, message, store, &mut actions);
        for action in actions {
            match action {
                HandoffAction::Send {
                    to,
                    request_id: id,
                    message,
                } if to == sender && id == request_id => {
                    if matches!(message, TransferMessage::Ack { .. }) {
                        self.counters.keys_received += entries;
                    }
                    out.push(TransferAction::Send {
                        to: from,
                        request_id,
                        message,
                    });
                }
                other => self.handoff_actions(now, vec![other], out),
            }
        }
    }

    /// An answer to one of this shard's transfer requests, from shard `from` (the link's
    /// destination). `message` is `None` for an `ERROR` reply, whose `code` says why.
    #[allow(clippy::too_many_arguments)]
    pub fn reply<S: MerkleView + ReplicaStore>(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        message: Result<TransferMessage, ErrorCode>,
        store: &mut S,
        out: &mut Vec<TransferAction>,
    ) {
        let message = match message {
            Ok(message @ (TransferMessage::Ack { .. } | TransferMessage::ConfirmReply { .. })) => {
                message
            }
            Ok(_) => return, // Requests never arrive on this shard's own links.
            Err(code) => match self.handoff.request_partition(from, request_id) {
                Some(partition) => TransferMessage::Refused { partition, code },
                None => return, // Nothing of ours: an old answer.
            },
        };
        let mut actions = Vec::new();
        self.handoff
            .message(now, from, request_id, message, store, &mut actions);
        self.handoff_actions(now, actions, out);
    }

    // --- helpers ---------------------------------------------------------------------

    /// Starts queued moves, and stalled ones whose back-off has passed, while slots last.
    fn start_waiting<S: MerkleView>(&mut self, now: u64, store: &S, out: &mut Vec<TransferAction>) {
        let Some(change) = &mut self.change else {
            return;
        };
        let epoch = change.epoch;
        let mut actions = Vec::new();
        for send in change.sends.values_mut() {
            let ready = match send.state {
                SendState::Queued => true,
                SendState::Stalled { retry_at } => now >= retry_at,
                _ => false,
            };
            if !ready {
                continue;
            }
            match self.handoff.start(
                now,
                send.partition,
                send.to,
                epoch,
                send.drop_after,
                store,
                &mut actions,
            ) {
                Ok(()) => send.state = SendState::Running,
                Err(HandoffError::Overloaded) => break,
                // Still flipping from an earlier run: nothing to start.
                Err(HandoffError::AlreadyRunning) => send.state = SendState::Running,
            }
        }
        self.handoff_actions(now, actions, out);
    }

    /// Carries the handoff's actions over: sends pass through (batches counted), a flip is
    /// reported to shard 0, a stall waits for its back-off, a drop waits for its grace.
    fn handoff_actions(
        &mut self,
        now: u64,
        actions: Vec<HandoffAction>,
        out: &mut Vec<TransferAction>,
    ) {
        for action in actions {
            match action {
                HandoffAction::Send {
                    to,
                    request_id,
                    message,
                } => {
                    if let TransferMessage::Batch { entries, .. } = &message {
                        self.counters.keys_sent += entries.len() as u64;
                    }
                    out.push(TransferAction::Send {
                        to,
                        request_id,
                        message,
                    });
                }
                HandoffAction::Flip {
                    partition,
                    ring_epoch,
                    to,
                } => {
                    let Some(change) = self.change.as_mut().filter(|c| c.epoch == ring_epoch)
                    else {
                        continue;
                    };
                    let found = change
                        .sends
                        .iter_mut()
                        .find(|(_, s)| s.partition == partition && s.to == to);
                    if let Some((&index, send)) = found {
                        self.counters.done += 1;
                        send.state = SendState::Verified { reported_at: now };
                        out.push(move_done(ring_epoch, index));
                    }
                }
                HandoffAction::Stalled { partition, to, .. } => {
                    self.counters.stalled += 1;
                    let Some(change) = self.change.as_mut() else {
                        continue;
                    };
                    let found = change
                        .sends
                        .values_mut()
                        .find(|s| s.partition == partition && s.to == to);
                    if let Some(send) = found {
                        if send.state == SendState::Running {
                            send.state = SendState::Stalled {
                                retry_at: now + backoff(send.stalls),
                            };
                            send.stalls = send.stalls.saturating_add(1);
                        }
                    }
                }
                HandoffAction::DropPartition { partition } => {
                    if !self.drops.iter().any(|&(_, p)| p == partition) {
                        self.drops.push((now + DROP_GRACE_MS, partition));
                    }
                }
            }
        }
    }

    /// The serving ring reached the change's epoch: every verified move flipped. Drops
    /// follow for the partitions this shard left (through [`Handoff::flipped`], and for a
    /// move of ours that a substitute streamed, directly: the flip proves every move of
    /// the change verified).
    fn flip(&mut self, now: u64) {
        let Some(change) = self.change.take() else {
            return;
        };
        let mut actions = Vec::new();
        for send in change.sends.values() {
            self.handoff.flipped(send.partition, send.to, &mut actions);
        }
        for m in change.moves.iter() {
            if m.from == self.local && m.drop_after {
                actions.push(HandoffAction::DropPartition {
                    partition: m.partition.0,
                });
            }
        }
        for &index in change.receives.keys() {
            if let Some(m) = change.moves.get(index) {
                self.handoff.unexpect(m.partition.0);
            }
        }
        self.handoff.forget_finished();
        let mut ignored = Vec::new();
        self.handoff_actions(now, actions, &mut ignored);
    }

    /// Forgets a change that was replaced without a flip: receivers stop expecting, and
    /// sends still running end by themselves (their receivers refuse them).
    fn abandon(&mut self) {
        if let Some(change) = self.change.take() {
            for &index in change.receives.keys() {
                if let Some(m) = change.moves.get(index) {
                    self.handoff.unexpect(m.partition.0);
                }
            }
        }
        self.handoff.forget_finished();
    }
}

/// Who streams move `m`: its `from` while reachable, else the first reachable replica of
/// the partition in the serving ring that is not on the receiver's node.
fn sender_of(m: &ReplicaMove, ring: &Ring, n: usize, live: &dyn Liveness) -> Option<Replica> {
    if live.is_reachable(m.from.node) {
        return Some(m.from);
    }
    ring.preference_list(m.partition, n)
        .iter()
        .copied()
        .find(|r| r.node != m.to.node && r.node != m.from.node && live.is_reachable(r.node))
}

fn move_done(epoch: u64, index: usize) -> TransferAction {
    TransferAction::MoveDone { epoch, index }
}

/// Back-off before the restart of a move that stalled `stalls` times before: doubling from
/// the minimum up to the maximum.
fn backoff(stalls: u32) -> u64 {
    TRANSFER_RETRY_BACKOFF_MS_MIN
        .saturating_mul(1u64 << stalls.min(16))
        .min(TRANSFER_RETRY_BACKOFF_MS_MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use super::*;
    use crate::causal::{Actor, CausalState, Context, Value};
    use crate::coordinator::{MemDurability, MemStore};
    use crate::membership::{Change, Plan, Preview};
    use crate::ring::{Member, NodeId, ShardId};

    /// The pseudo shard the receiving side sees a request come from (a peer connection).
    const PSEUDO: u16 = 999;

    fn replica(node: u64) -> Replica {
        Replica {
            node: NodeId(node),
            shard: ShardId(0),
        }
    }

    struct Down(BTreeSet<u64>);

    impl Liveness for Down {
        fn is_reachable(&self, node: NodeId) -> bool {
            !self.0.contains(&node.0)
        }
    }

    /// One-shard nodes exchanging transfer messages by hand, with shard 0's done flags
    /// kept here.
    struct Net {
        ring: Arc<Ring>,
        preview: Preview,
        done: Vec<bool>,
        nodes: BTreeMap<u64, (Transfers, MemStore)>,
        /// Nodes that have seen the pending change.
        informed: BTreeSet<u64>,
        queue: VecDeque<(Replica, TransferAction)>,
        drops: BTreeSet<(u64, u32)>,
        down: Down,
        now: u64,
    }

    impl Net {
        /// Members 1..=`members` over 64 partitions (node 4 exists either way), `keys`
        /// keys written to their replicas, and a plan of `change`.
        fn new(members: u64, keys: usize, change: Change) -> Net {
            let members = (1..=members)
                .map(|id| Member::new(NodeId(id), 1, 1))
                .collect();
            let ring = Ring::initial(64, members).unwrap();
            let mut plan = Plan::new();
            plan.stage(change).unwrap();
            let preview = plan.preview(&ring, 3).unwrap();
            let mut nodes: BTreeMap<u64, (Transfers, MemStore)> = (1..=4)
                .map(|id| {
                    let transfers = Transfers::new(
                        replica(id),
                        HandoffConfig::default(),
                        SiblingLimits::default(),
                    );
                    let store = MemStore::new(Actor(id), MemDurability::Always, 100);
                    (id, (transfers, store))
                })
                .collect();
            for k in 0..keys {
                let key = format!("key-{k}").into_bytes();
                let mut state = CausalState::new();
                state
                    .update(&Context::default(), Value::Bytes(key.clone()), Actor(1))
                    .unwrap();
                let partition = ring.partition_of(&key);
                for r in ring.preference_list(partition, 3).iter() {
                    let store = &mut nodes.get_mut(&r.node.0).unwrap().1;
                    store.put_state(partition.0, &key, &state).unwrap();
                }
            }
            Net {
                done: vec![false; preview.moves.len()],
                ring: Arc::new(ring),
                preview,
                nodes,
                informed: BTreeSet::new(),
                queue: VecDeque::new(),
                drops: BTreeSet::new(),
                down: Down(BTreeSet::new()),
                now: 0,
            }
        }

        /// Shows node `id` the serving ring and the pending change (with its done flags).
        fn show(&mut self, id: u64) {
            self.informed.insert(id);
            let pending = PendingMoves {
                epoch: self.preview.ring.epoch(),
                moves: &self.preview.moves,
                done: &self.done,
            };
            let (transfers, _) = self.nodes.get_mut(&id).unwrap();
            let _ = transfers.view(self.now, &self.ring, Some(pending), 3, &self.down);
        }

        fn step(&mut self) {
            self.now += 10;
            for (&id, (transfers, store)) in self.nodes.iter_mut() {
                let mut out = Vec::new();
                transfers.tick(self.now, store, &mut out);
                self.queue.extend(out.into_iter().map(|a| (replica(id), a)));
            }
            while let Some((from, action)) = self.queue.pop_front() {
                self.deliver(from, action);
            }
            for id in self.informed.clone() {
                self.show(id);
            }
        }

        fn deliver(&mut self, from: Replica, action: TransferAction) {
            match action {
                TransferAction::Send {
                    to,
                    request_id,
                    message,
                } => {
                    // A reply to a pseudo shard goes back to the node's only shard.
                    let node = to.node.0;
                    if self.down.0.contains(&node) && from.node.0 != node {
                        return;
                    }
                    let (transfers, store) = self.nodes.get_mut(&node).unwrap();
                    let mut out = Vec::new();
                    match message {
                        TransferMessage::Batch { .. } | TransferMessage::Confirm { .. } => {
                            let pseudo = Replica {
                                node: from.node,
                                shard: ShardId(PSEUDO),
                            };
                            transfers
                                .request(self.now, pseudo, request_id, message, store, &mut out);
                        }
                        TransferMessage::Refused { code, .. } => {
                            transfers.reply(self.now, from, request_id, Err(code), store, &mut out)
                        }
                        reply => {
                            transfers.reply(self.now, from, request_id, Ok(reply), store, &mut out)
                        }
                    }
                    let me = replica(node);
                    self.queue.extend(out.into_iter().map(|a| (me, a)));
                }
                TransferAction::MoveDone { epoch, index } => {
                    assert_eq!(epoch, self.preview.ring.epoch());
                    self.done[index] = true;
                }
                TransferAction::DropPartition { partition } => {
                    assert!(self.drops.insert((from.node.0, partition)), "dropped once");
                }
            }
        }

        /// Runs until every move is done (bounded), then flips every node to the next ring
        /// and runs past the drop grace.
        fn run_to_flip(&mut self) {
            for _ in 0..100_000 {
                if self.done.iter().all(|&d| d) {
                    break;
                }
                self.step();
            }
            assert!(
                self.done.iter().all(|&d| d),
                "every move verified: {:?}",
                self.done
            );
            self.ring = Arc::new(self.preview.ring.clone());
            for (transfers, _) in self.nodes.values_mut() {
                let targets = transfers.view(self.now, &self.ring, None, 3, &self.down);
                assert_eq!(
                    targets.map(|t| t.is_empty()),
                    Some(true),
                    "double writes end"
                );
            }
            let end = self.now + DROP_GRACE_MS + 10;
            while self.now < end {
                self.step();
            }
        }

        fn holds(&self, node: u64, partition: u32, key: &[u8]) -> bool {
            self.nodes[&node]
                .1
                .get_state(partition, key)
                .unwrap()
                .is_some()
        }

        /// Every key is at every replica of the next ring.
        fn assert_next_ring_complete(&self, keys: usize) {
            for k in 0..keys {
                let key = format!("key-{k}").into_bytes();
                let partition = self.ring.partition_of(&key);
                for r in self.ring.preference_list(partition, 3).iter() {
                    assert!(self.holds(r.node.0, partition.0, &key), "{key:?} at {r:?}");
                }
            }
        }

        fn counters(&self, node: u64) -> TransferCounters {
            self.nodes[&node].0.counters()
        }
    }

    #[test]
    fn a_join_streams_every_moved_replica_flips_and_drops_the_old_copies() {
        let keys = 400;
        let mut net = Net::new(3, keys, Change::Join(Member::new(NodeId(4), 1, 1)));
        for id in 1..=4 {
            net.show(id);
        }
        net.run_to_flip();
        net.assert_next_ring_complete(keys);

        let expected: BTreeSet<(u64, u32)> = net
            .preview
            .moves
            .iter()
            .filter(|m| m.drop_after)
            .map(|m| (m.from.node.0, m.partition.0))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(net.drops, expected, "exactly the partitions left behind");
        let done: u64 = (1..=4).map(|id| net.counters(id).done).sum();
        assert_eq!(done, net.preview.moves.len() as u64);
        assert_eq!(net.counters(4).done, 0, "the newcomer sends nothing");
        assert!(net.counters(4).keys_received > 0);
        let sent: u64 = (1..=3).map(|id| net.counters(id).keys_sent).sum();
        assert_eq!(sent, net.counters(4).keys_received);
        let dropped: u64 = (1..=4).map(|id| net.counters(id).partitions_dropped).sum();
        assert_eq!(dropped, expected.len() as u64);
        assert!((1..=4).all(|id| net.counters(id).active == 0));
    }

    #[test]
    fn a_receiver_that_learns_of_the_change_late_is_streamed_to_after_a_back_off() {
        let keys = 100;
        let mut net = Net::new(3, keys, Change::Join(Member::new(NodeId(4), 1, 1)));
        for id in 1..=3 {
            net.show(id);
        }
        for _ in 0..50 {
            net.step();
        }
        assert!(
            net.done.iter().all(|&d| !d),
            "node 4 refuses what it does not expect"
        );
        let stalled: u64 = (1..=3).map(|id| net.counters(id).stalled).sum();
        assert!(stalled > 0);
        net.show(4);
        net.run_to_flip();
        net.assert_next_ring_complete(keys);
    }

    #[test]
    fn a_move_whose_sender_is_unreachable_is_streamed_by_another_holder() {
        let keys = 200;
        // Node 3 leaves but every node believes it unreachable: its replicas come from the
        // other holders, and it drops its copies after the flip all the same.
        let mut net = Net::new(4, keys, Change::Leave(NodeId(3)));
        net.down.0.insert(3);
        for id in 1..=4 {
            net.show(id);
        }
        net.run_to_flip();
        net.assert_next_ring_complete(keys);
        assert_eq!(
            net.counters(3).keys_sent,
            0,
            "the unreachable node sent nothing"
        );
        assert!(net.preview.moves.iter().all(|m| m.from.node.0 == 3));
        let dropped_by_3 = net.drops.iter().filter(|(node, _)| *node == 3).count();
        assert_eq!(dropped_by_3, net.preview.moves.len());
    }
}
