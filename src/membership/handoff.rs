//! One shard's partition transfers: the sender side (streaming leaf ranges, resending,
//! comparing roots, flipping, dropping) and the receiver side (merging, acknowledging,
//! answering confirms), over one store.
//!
//! Place in the flow: the runtime calls [`Handoff::start`] for each move of a committed
//! plan this shard sends and [`Handoff::expect`] for each it receives, [`Handoff::tick`]
//! on its timer, [`Handoff::message`] for every transfer message addressed to this shard,
//! and [`Handoff::flipped`] once it has carried out a [`HandoffAction::Flip`]; it carries
//! out the [`HandoffAction`]s.

use std::collections::BTreeMap;

use super::{
    HandoffAction, HandoffConfig, HandoffStats, Phase, StallReason, TransferMessage,
    TransferProgress,
};
use crate::antientropy::shape::{leaf_of, LEAVES};
use crate::antientropy::{Entry, MerkleView};
use crate::causal::{CausalState, SiblingLimits};
use crate::constants::{
    BATCH_ENTRIES_MAX, FRAME_BODY_BYTES_MAX, PEER_REQUEST_CLASS_SHIFT, TRANSFERS_INCOMING_MAX,
    TRANSFERS_OUTGOING_MAX, TRANSFER_LEAVES_PER_READ,
};
use crate::coordinator::{merge_into_store, MergeFailure, ReplicaStore};
use crate::ring::Replica;
use crate::wire::ErrorCode;

/// The transfer state machine of one shard, both as sender and as receiver.
#[derive(Debug)]
pub struct Handoff {
    /// This shard.
    local: Replica,
    config: HandoffConfig,
    sibling_limits: SiblingLimits,
    /// Transfers this shard sends, by (partition, receiver node, receiver shard); finished
    /// and stalled ones stay for progress reports until [`Handoff::forget_finished`].
    outgoing: BTreeMap<(u32, u64, u16), Outgoing>,
    /// Transfers this shard expects to receive, by partition.
    incoming: BTreeMap<u32, Incoming>,
    next_request_id: u32,
    stats: HandoffStats,
}

/// Why a transfer could not be started or expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// `TRANSFERS_OUTGOING_MAX` (or `TRANSFERS_INCOMING_MAX`) transfers are running: start
    /// this one when another has ended.
    #[error("too many transfers running")]
    Overloaded,
    /// This move is already running.
    #[error("this transfer is already running")]
    AlreadyRunning,
}

/// One transfer this shard sends.
#[derive(Debug)]
struct Outgoing {
    partition: u32,
    to: Replica,
    ring_epoch: u64,
    drop_after: bool,
    phase: Phase,
    round: u32,
    /// The first leaf of the next batch of this round.
    next_leaf: u32,
    next_sequence: u64,
    /// Unacknowledged batches by sequence.
    in_flight: BTreeMap<u64, Batch>,
    /// The confirm awaiting its reply.
    confirm: Option<Sent>,
    /// Timeouts since the last answer.
    timeouts: u32,
    entries_sent: u64,
    batches_acked: u64,
    resends: u64,
    /// Whether the drop of this shard's copy was asked for.
    drop_sent: bool,
}

/// A batch in flight: only its leaf range is kept; a resend reads it again.
#[derive(Debug, Clone, Copy)]
struct Batch {
    first: u32,
    end: u32,
    sent: Sent,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Sent {
    request_id: u32,
    deadline: u64,
}

/// A transfer this shard expects.
#[derive(Debug, Clone, Copy)]
struct Incoming {
    from: Replica,
    ring_epoch: u64,
}

impl Handoff {
    /// The transfers of one shard.
    pub fn new(local: Replica, config: HandoffConfig, sibling_limits: SiblingLimits) -> Self {
        Handoff {
            local,
            config,
            sibling_limits,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            next_request_id: 1,
            stats: HandoffStats::default(),
        }
    }

    /// What this shard's transfers have done so far.
    pub fn stats(&self) -> HandoffStats {
        self.stats
    }

    /// Every outgoing transfer's progress, in (partition, receiver) order.
    pub fn progress(&self) -> Vec<TransferProgress> {
        self.outgoing
            .values()
            .map(|o| TransferProgress {
                partition: o.partition,
                from: self.local,
                to: o.to,
                ring_epoch: o.ring_epoch,
                round: o.round,
                leaves_sent: o.next_leaf,
                leaves: LEAVES,
                entries_sent: o.entries_sent,
                batches_acked: o.batches_acked,
                resends: o.resends,
                phase: o.phase,
            })
            .collect()
    }

    /// Removes the finished and stalled transfers, returning their last progress.
    pub fn forget_finished(&mut self) -> Vec<TransferProgress> {
        let progress = self.progress();
        self.outgoing.retain(|_, o| !is_finished(o.phase));
        progress
            .into_iter()
            .filter(|p| is_finished(p.phase))
            .collect()
    }

    /// Starts sending `partition` to `to` for the ring of `ring_epoch`; `drop_after` says
    /// whether this shard leaves the partition's set and drops its copy after the flip.
    #[allow(clippy::too_many_arguments)]
    pub fn start<S: MerkleView>(
        &mut self,
        now: u64,
        partition: u32,
        to: Replica,
        ring_epoch: u64,
        drop_after: bool,
        store: &S,
        out: &mut Vec<HandoffAction>,
    ) -> Result<(), HandoffError> {
        let key = key(partition, to);
        if self
            .outgoing
            .get(&key)
            .is_some_and(|o| !is_finished(o.phase))
        {
            return Err(HandoffError::AlreadyRunning);
        }
        // A transfer waiting for its flip does no more I/O, so it holds no slot: the flip
        // waits for every move of the change, so counting it would deadlock a shard that
        // sends more moves than it has slots.
        let running = self
            .outgoing
            .values()
            .filter(|o| matches!(o.phase, Phase::Streaming | Phase::Confirming))
            .count();
        if running >= TRANSFERS_OUTGOING_MAX {
            return Err(HandoffError::Overloaded);
        }
        self.outgoing.insert(
            key,
            Outgoing {
                partition,
                to,
                ring_epoch,
                drop_after,
                phase: Phase::Streaming,
                round: 1,
                next_leaf: 0,
                next_sequence: 0,
                in_flight: BTreeMap::new(),
                confirm: None,
                timeouts: 0,
                entries_sent: 0,
                batches_acked: 0,
                resends: 0,
                drop_sent: false,
            },
        );
        self.advance(now, key, store, out);
        Ok(())
    }

    /// The partition of the batch or confirm in flight to `to` with `request_id`, if any:
    /// the runtime maps an `ERROR` answer to [`TransferMessage::Refused`] with it.
    pub fn request_partition(&self, to: Replica, request_id: u32) -> Option<u32> {
        self.outgoing
            .values()
            .filter(|o| o.to == to)
            .find(|o| {
                o.confirm.is_some_and(|c| c.request_id == request_id)
                    || o.in_flight
                        .values()
                        .any(|b| b.sent.request_id == request_id)
            })
            .map(|o| o.partition)
    }

    /// Expects `partition` from `from` for the ring of `ring_epoch` (replacing an earlier
    /// expectation of the partition); anything else is refused with `NOT_OWNER`.
    pub fn expect(
        &mut self,
        partition: u32,
        from: Replica,
        ring_epoch: u64,
    ) -> Result<(), HandoffError> {
        if !self.incoming.contains_key(&partition) && self.incoming.len() >= TRANSFERS_INCOMING_MAX
        {
            return Err(HandoffError::Overloaded);
        }
        self.incoming
            .insert(partition, Incoming { from, ring_epoch });
        Ok(())
    }

    /// Stops expecting `partition` (its move flipped or was abandoned).
    pub fn unexpect(&mut self, partition: u32) {
        self.incoming.remove(&partition);
    }

    /// Time passed: batches and confirms past their deadline are sent again, and a
    /// transfer silent for `resends_max` timeouts stalls.
    pub fn tick<S: MerkleView>(&mut self, now: u64, store: &S, out: &mut Vec<HandoffAction>) {
        let keys: Vec<(u32, u64, u16)> = self.outgoing.keys().copied().collect();
        for key in keys {
            let Some(o) = self.outgoing.get_mut(&key) else {
                continue;
            };
            let expired: Vec<u64> = o
                .in_flight
                .iter()
                .filter(|(_, b)| b.sent.deadline <= now)
                .map(|(&seq, _)| seq)
                .collect();
            let confirm_expired = o.confirm.is_some_and(|c| c.deadline <= now);
            if expired.is_empty() && !confirm_expired {
                continue;
            }
            // One silent period counts once, however many messages it covered.
            o.timeouts += 1;
            if o.timeouts > self.config.resends_max {
                self.stall(key, StallReason::Unresponsive, out);
                continue;
            }
            for sequence in expired {
                self.send_batch(now, key, sequence, store, out);
            }
            if confirm_expired {
                self.send_confirm(now, key, store, out);
            }
        }
    }

    /// A transfer message from shard `from` arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn message<S: MerkleView + ReplicaStore>(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        message: TransferMessage,
        store: &mut S,
        out: &mut Vec<HandoffAction>,
    ) {
        match message {
            TransferMessage::Batch {
                partition,
                ring_epoch,
                sequence,
                entries,
                ..
            } => {
                if !self.expects(partition, from, ring_epoch) {
                    return self.refuse(from, request_id, partition, out);
                }
                if self.merge_batch(partition, &entries, store) {
                    self.stats.batches_received += 1;
                    let ack = TransferMessage::Ack {
                        partition,
                        sequence,
                    };
                    out.push(send(from, request_id, ack));
                }
                // A batch not fully stored is not acknowledged: the sender sends it again.
            }
            TransferMessage::Confirm {
                partition,
                ring_epoch,
                ..
            } => {
                if !self.expects(partition, from, ring_epoch) {
                    return self.refuse(from, request_id, partition, out);
                }
                let reply = TransferMessage::ConfirmReply {
                    partition,
                    key_count: key_count(store, partition),
                    merkle_root: root(store, partition),
                };
                out.push(send(from, request_id, reply));
            }
            TransferMessage::Ack {
                partition,
                sequence,
            } => {
                let key = key(partition, from);
                let acked = self
                    .outgoing
                    .get_mut(&key)
                    .filter(|o| o.phase == Phase::Streaming)
                    .and_then(|o| {
                        let batch = o.in_flight.remove(&sequence)?;
                        o.batches_acked += 1;
                        o.timeouts = 0;
                        Some(batch)
                    });
                match acked {
                    Some(_) => self.advance(now, key, store, out),
                    None => self.stats.stale += 1,
                }
            }
            TransferMessage::ConfirmReply {
                partition,
                merkle_root,
                ..
            } => self.on_confirm_reply(now, from, request_id, partition, merkle_root, store, out),
            TransferMessage::Refused { partition, code } => {
                let key = key(partition, from);
                let ours = self.outgoing.get(&key).is_some_and(|o| {
                    o.confirm.is_some_and(|c| c.request_id == request_id)
                        || o.in_flight
                            .values()
                            .any(|b| b.sent.request_id == request_id)
                });
                match ours {
                    true => self.stall(key, StallReason::Refused(code), out),
                    false => self.stats.stale += 1,
                }
            }
        }
    }

    /// The runtime carried out the [`HandoffAction::Flip`] of `partition` to `to`: the
    /// transfer is done, and once every move of the partition out of this shard is done,
    /// a shard leaving the set gets [`HandoffAction::DropPartition`].
    pub fn flipped(&mut self, partition: u32, to: Replica, out: &mut Vec<HandoffAction>) {
        let Some(o) = self.outgoing.get_mut(&key(partition, to)) else {
            return;
        };
        if o.phase != Phase::Flipping {
            return;
        }
        o.phase = Phase::Done;
        let mut moves = self
            .outgoing
            .range((partition, 0, 0)..=(partition, u64::MAX, u16::MAX))
            .map(|(_, o)| o);
        let all_done = moves.clone().all(|o| o.phase == Phase::Done);
        let drop = moves.any(|o| o.drop_after && !o.drop_sent);
        if all_done && drop {
            for (_, o) in self
                .outgoing
                .range_mut((partition, 0, 0)..=(partition, u64::MAX, u16::MAX))
            {
                o.drop_sent = true;
            }
            out.push(HandoffAction::DropPartition { partition });
        }
    }

    // --- sender ----------------------------------------------------------------------

    /// Fills the window with new batches; once the round's last batch is acknowledged,
    /// sends the confirm.
    fn advance<S: MerkleView>(
        &mut self,
        now: u64,
        key: (u32, u64, u16),
        store: &S,
        out: &mut Vec<HandoffAction>,
    ) {
        loop {
            let Some(o) = self.outgoing.get_mut(&key) else {
                return;
            };
            if o.phase != Phase::Streaming {
                return;
            }
            if o.next_leaf >= LEAVES {
                if o.in_flight.is_empty() {
                    o.phase = Phase::Confirming;
                    self.send_confirm(now, key, store, out);
                }
                return;
            }
            if o.in_flight.len() >= self.config.batches_in_flight.max(1) {
                return;
            }
            let first = o.next_leaf;
            let end = match pack(store, o.partition, first, &self.config) {
                Ok(end) => end,
                Err(leaf) => return self.stall(key, StallReason::LeafTooLarge { leaf }, out),
            };
            let sequence = o.next_sequence;
            o.next_sequence += 1;
            o.next_leaf = end;
            let sent = Sent {
                request_id: 0,
                deadline: 0,
            };
            o.in_flight.insert(sequence, Batch { first, end, sent });
            self.send_batch(now, key, sequence, store, out);
        }
    }

    /// Sends (or sends again) batch `sequence`, reading its leaf range afresh.
    fn send_batch<S: MerkleView>(
        &mut self,
        now: u64,
        key: (u32, u64, u16),
        sequence: u64,
        store: &S,
        out: &mut Vec<HandoffAction>,
    ) {
        let request_id = self.fresh_request_id();
        let deadline = now + self.config.ack_timeout_ms;
        let Some(o) = self.outgoing.get_mut(&key) else {
            return;
        };
        let Some(batch) = o.in_flight.get_mut(&sequence) else {
            return;
        };
        if batch.sent.request_id != 0 {
            o.resends += 1;
        }
        batch.sent = Sent {
            request_id,
            deadline,
        };
        let leaves: Vec<u32> = (batch.first..batch.end).collect();
        let entries: Vec<Entry> = store
            .bucket_entries(o.partition, &leaves)
            .into_iter()
            .map(|(key, state)| Entry { key, state })
            .collect();
        o.entries_sent += entries.len() as u64;
        self.stats.batches_sent += 1;
        let message = TransferMessage::Batch {
            partition: o.partition,
            ring_epoch: o.ring_epoch,
            sequence,
            last: batch.end >= LEAVES,
            entries,
        };
        out.push(send(o.to, request_id, message));
    }

    /// Sends (or sends again) the confirm with this shard's current count and root.
    fn send_confirm<S: MerkleView>(
        &mut self,
        now: u64,
        key: (u32, u64, u16),
        store: &S,
        out: &mut Vec<HandoffAction>,
    ) {
        let request_id = self.fresh_request_id();
        let deadline = now + self.config.ack_timeout_ms;
        let Some(o) = self.outgoing.get_mut(&key) else {
            return;
        };
        o.confirm = Some(Sent {
            request_id,
            deadline,
        });
        let message = TransferMessage::Confirm {
            partition: o.partition,
            ring_epoch: o.ring_epoch,
            key_count: key_count(store, o.partition),
            merkle_root: root(store, o.partition),
        };
        out.push(send(o.to, request_id, message));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_confirm_reply<S: MerkleView>(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        partition: u32,
        their_root: u64,
        store: &S,
        out: &mut Vec<HandoffAction>,
    ) {
        let key = key(partition, from);
        let rounds_max = self.config.rounds_max;
        let Some(o) = self
            .outgoing
            .get_mut(&key)
            .filter(|o| o.confirm.is_some_and(|c| c.request_id == request_id))
        else {
            self.stats.stale += 1;
            return;
        };
        o.confirm = None;
        o.timeouts = 0;
        // Compared with the root as it is now: a write that reached both sides since the
        // confirm was sent changed both.
        if their_root == root(store, partition) {
            o.phase = Phase::Flipping;
            out.push(HandoffAction::Flip {
                partition,
                ring_epoch: o.ring_epoch,
                to: o.to,
            });
        } else if o.round < rounds_max {
            o.round += 1;
            o.next_leaf = 0;
            o.phase = Phase::Streaming;
            self.advance(now, key, store, out);
        } else {
            let rounds = o.round;
            self.stall(key, StallReason::RootsDiffer { rounds }, out);
        }
    }

    fn stall(&mut self, key: (u32, u64, u16), reason: StallReason, out: &mut Vec<HandoffAction>) {
        let Some(o) = self.outgoing.get_mut(&key) else {
            return;
        };
        o.phase = Phase::Stalled(reason);
        o.in_flight.clear();
        o.confirm = None;
        out.push(HandoffAction::Stalled {
            partition: o.partition,
            to: o.to,
            reason,
        });
    }

    fn fresh_request_id(&mut self) -> u32 {
        // 0 marks a batch not sent yet.
        // Ids stay below 2^30: the runtime puts the transfer class in the top two bits.
        let id = self.next_request_id;
        self.next_request_id = (self.next_request_id.wrapping_add(1) & REQUEST_ID_MASK).max(1);
        id
    }

    // --- receiver --------------------------------------------------------------------

    fn expects(&self, partition: u32, from: Replica, ring_epoch: u64) -> bool {
        self.incoming
            .get(&partition)
            .is_some_and(|i| i.from == from && i.ring_epoch == ring_epoch)
    }

    fn refuse(
        &mut self,
        from: Replica,
        request_id: u32,
        partition: u32,
        out: &mut Vec<HandoffAction>,
    ) {
        self.stats.refused += 1;
        let refusal = TransferMessage::Refused {
            partition,
            code: ErrorCode::NotOwner,
        };
        out.push(send(from, request_id, refusal));
    }

    /// Merges every entry into the store; false if the store failed (nothing is
    /// acknowledged then). An entry that does not decode or merge is counted and skipped:
    /// sending it again would not help, and the root comparison will show it.
    fn merge_batch<S: ReplicaStore>(
        &mut self,
        partition: u32,
        entries: &[Entry],
        store: &mut S,
    ) -> bool {
        for entry in entries {
            let Ok(incoming) = CausalState::decode(&entry.state) else {
                self.stats.bad_entries += 1;
                continue;
            };
            match merge_into_store(
                store,
                partition,
                &entry.key,
                &incoming,
                &self.sibling_limits,
            ) {
                Ok((_, changed)) => {
                    if changed {
                        self.stats.keys_changed += 1;
                    }
                }
                Err(MergeFailure::Refused(_)) => self.stats.bad_entries += 1,
                Err(MergeFailure::Storage(_)) => return false,
            }
        }
        true
    }
}

fn key(partition: u32, to: Replica) -> (u32, u64, u16) {
    (partition, to.node.0, to.shard.0)
}

fn is_finished(phase: Phase) -> bool {
    matches!(phase, Phase::Done | Phase::Stalled(_))
}

fn send(to: Replica, request_id: u32, message: TransferMessage) -> HandoffAction {
    HandoffAction::Send {
        to,
        request_id,
        message,
    }
}

/// The end (exclusive) of the batch starting at leaf `first`: whole leaves until the next
/// would pass the configured entry or byte bound; the first leaf always, unless it alone
/// passes the wire's limits (`Err(leaf)`).
fn pack<S: MerkleView>(
    store: &S,
    partition: u32,
    first: u32,
    config: &HandoffConfig,
) -> Result<u32, u32> {
    let (mut entries, mut bytes) = (0usize, 0usize);
    let mut start = first;
    while start < LEAVES {
        let end = start.saturating_add(TRANSFER_LEAVES_PER_READ).min(LEAVES);
        let leaves: Vec<u32> = (start..end).collect();
        let mut per_leaf: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for (key, state) in store.bucket_entries(partition, &leaves) {
            let leaf = per_leaf.entry(leaf_of(&key)).or_default();
            leaf.0 += 1;
            leaf.1 += ENTRY_FIXED_BYTES + key.len() + state.len();
        }
        for leaf in start..end {
            let (n, b) = per_leaf.get(&leaf).copied().unwrap_or_default();
            if leaf == first {
                if n > BATCH_ENTRIES_MAX || b + BATCH_FIXED_BYTES > FRAME_BODY_BYTES_MAX {
                    return Err(leaf);
                }
            } else if entries + n > config.batch_entries_max || bytes + b > config.batch_bytes_max {
                return Ok(leaf);
            }
            entries += n;
            bytes += b;
        }
        start = end;
    }
    Ok(LEAVES)
}

/// Request ids use the bits below the runtime's request class.
const REQUEST_ID_MASK: u32 = (1 << PEER_REQUEST_CLASS_SHIFT) - 1;

/// Bytes of an `Entry` record besides its key and state: the two length prefixes.
const ENTRY_FIXED_BYTES: usize = 8;

/// Bytes of a TRANSFER_BATCH body besides its entries: partition, epoch, sequence, last
/// and the entry list's count.
const BATCH_FIXED_BYTES: usize = 4 + 8 + 8 + 1 + 4;

/// The partition's Merkle root in `store`.
fn root<S: MerkleView>(store: &S, partition: u32) -> u64 {
    store
        .merkle_hashes(partition, 0, 0, 1)
        .first()
        .copied()
        .unwrap_or(0)
}

/// Keys the store holds in the partition, read leaf range by leaf range (a full read: it
/// runs once per round on each side, after a full stream).
fn key_count<S: MerkleView>(store: &S, partition: u32) -> u64 {
    let mut count = 0u64;
    let mut start = 0;
    while start < LEAVES {
        let end = start.saturating_add(TRANSFER_LEAVES_PER_READ).min(LEAVES);
        let leaves: Vec<u32> = (start..end).collect();
        count += store.bucket_entries(partition, &leaves).len() as u64;
        start = end;
    }
    count
}
