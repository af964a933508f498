//! Membership changes: staging a new ring ([`Plan`]) and moving partition replicas to
//! their new holders ([`Handoff`]), verified by Merkle roots before ownership flips.
//!
//! # Place in the flow
//!
//! ```text
//!  rotor admin join/leave/remove/weight ─▶ Plan::stage ─▶ Plan::preview (review: `plan`)
//!        ─▶ Plan::commit ─▶ next ring (epoch + 1), gossiped by the runtime
//!  every node, seeing the committed ring: Preview::moves ─▶ for each ReplicaMove
//!        sender shard:   Handoff::start(partition, to, epoch)
//!        receiver shard: Handoff::expect(partition, from, epoch)
//!
//!  sender shard (old holder)                               receiver shard (new holder)
//!   ── Batch{p, epoch, seq 0, leaves 0..k} ─────────────▶  merge each entry causally
//!   ◀─ Ack{p, seq 0} ───────────────────────────────────   (after the merges are stored)
//!   ... up to TRANSFER_BATCHES_IN_FLIGHT_MAX unacknowledged, resent on timeout ...
//!   ── Batch{p, epoch, seq k, leaves ..1024, last} ─────▶
//!   ◀─ Ack ──────────────────────────────────────────────
//!   ── Confirm{p, epoch, key count, root} ──────────────▶  its own count and root
//!   ◀─ ConfirmReply{p, key count, root} ─────────────────
//!   roots equal:  Flip{p, epoch, to} ─▶ runtime makes the new holder authoritative,
//!                 then calls Handoff::flipped ─▶ DropPartition{p} (only if the sender
//!                 leaves the set) ─▶ runtime drops the old copy
//!   roots differ: another round (a full stream, then Confirm), up to
//!                 TRANSFER_ROUNDS_MAX, then Stalled
//! ```
//!
//! A batch is a range of consecutive Merkle leaf buckets read through
//! [`MerkleView::bucket_entries`], packed up to `TRANSFER_BATCH_ENTRIES_MAX` entries and
//! `TRANSFER_BATCH_BYTES_MAX` bytes; the sender remembers only the range, so a resend
//! reads it again (merges are idempotent, so a duplicate or a resend with newer states is
//! harmless). A receiver not expecting the (partition, sender, epoch) answers `NOT_OWNER`
//! ([`TransferMessage::Refused`]) and the sender stops.
//!
//! # Why roots, not acks, decide
//! Acks say every batch arrived; they do not say the receiver holds what the sender holds
//! *now*: writes keep arriving during a transfer. The coordinator writes to both holders
//! while a move is pending, so in the common case the roots match after one round; a
//! write that reached only the sender after its leaves were streamed is picked up by the
//! next round. A receiver holding something the sender lacks never converges by
//! streaming: after `TRANSFER_ROUNDS_MAX` rounds the transfer stops as
//! [`StallReason::RootsDiffer`], and an anti-entropy exchange between the two (which
//! repairs both sides) has to run before a retry.
//!
//! The sender compares the receiver's root with its own root *at the reply* (a write that
//! reached both holders since the confirm changed both); key counts travel for the
//! operator's report, the roots alone decide. A receiver that has not yet seen the
//! committed ring refuses like any receiver not expecting the transfer: the runtime starts
//! the move again once both sides run the ring (a stalled transfer keeps no state but its
//! progress; [`Handoff::forget_finished`] clears it).
//!
//! # What this module deliberately does not do
//! No I/O, no clock reads, no randomness, no hash-ordered iteration: time comes in as
//! milliseconds, messages in and out as values ([`TransferMessage`] mirrors the wire's
//! TRANSFER_BATCH, TRANSFER_ACK, TRANSFER_CONFIRM, TRANSFER_CONFIRM_REPLY and an ERROR,
//! wire-spec 9.9-9.10, field by field; the runtime encodes them). It reads through
//! [`MerkleView`] and writes through [`ReplicaStore`] only. It does not gossip the ring,
//! nor decide when a flip is visible: the runtime does both. Double writes to the old and
//! new holders during a transfer are the coordinator's and runtime's job (the pending
//! ring's preference list plus the current one), not this module's. It does not drop data
//! itself: [`HandoffAction::DropPartition`] asks the runtime to, and only after the
//! runtime reported the flip done ([`Handoff::flipped`]).
//!
//! [`MerkleView`]: crate::antientropy::MerkleView
//! [`MerkleView::bucket_entries`]: crate::antientropy::MerkleView::bucket_entries
//! [`ReplicaStore`]: crate::coordinator::ReplicaStore

mod handoff;
mod plan;
mod state;
#[cfg(test)]
mod tests;

pub use handoff::{Handoff, HandoffError};
pub use plan::{Change, NodeMoves, Plan, PlanError, Preview, ReplicaMove};
pub use state::{CommitError, PendingChange, RingMode, RingState, RingStateError};

use crate::antientropy::Entry;
use crate::constants::{
    TRANSFER_ACK_TIMEOUT_MS_DEFAULT, TRANSFER_BATCHES_IN_FLIGHT_MAX, TRANSFER_BATCH_BYTES_MAX,
    TRANSFER_BATCH_ENTRIES_MAX, TRANSFER_RESENDS_MAX, TRANSFER_ROUNDS_MAX,
};
use crate::ring::Replica;
use crate::wire::ErrorCode;

/// Limits of one shard's transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffConfig {
    /// Most entries in one batch.
    pub batch_entries_max: usize,
    /// Most bytes of keys and states in one batch.
    pub batch_bytes_max: usize,
    /// Batches kept unacknowledged per transfer.
    pub batches_in_flight: usize,
    /// How long a batch or confirm waits for its answer, milliseconds.
    pub ack_timeout_ms: u64,
    /// Consecutive timeouts before a transfer stalls.
    pub resends_max: u32,
    /// Stream-and-compare rounds before a transfer stalls.
    pub rounds_max: u32,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            batch_entries_max: TRANSFER_BATCH_ENTRIES_MAX,
            batch_bytes_max: TRANSFER_BATCH_BYTES_MAX,
            batches_in_flight: TRANSFER_BATCHES_IN_FLIGHT_MAX,
            ack_timeout_ms: TRANSFER_ACK_TIMEOUT_MS_DEFAULT,
            resends_max: TRANSFER_RESENDS_MAX,
            rounds_max: TRANSFER_ROUNDS_MAX,
        }
    }
}

/// A message between the transfer machines of two shards, mirroring the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferMessage {
    /// TRANSFER_BATCH: the entries of a range of leaf buckets.
    Batch {
        /// The partition.
        partition: u32,
        /// Epoch of the ring whose change this transfer serves.
        ring_epoch: u64,
        /// Batch number, from 0, consecutive over the transfer's rounds.
        sequence: u64,
        /// Whether this batch ends a round (its range reaches the last leaf).
        last: bool,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// TRANSFER_ACK: the batch is merged and stored.
    Ack {
        /// The partition.
        partition: u32,
        /// The batch's sequence number.
        sequence: u64,
    },
    /// TRANSFER_CONFIRM: the sender's key count and Merkle root.
    Confirm {
        /// The partition.
        partition: u32,
        /// Epoch of the ring whose change this transfer serves.
        ring_epoch: u64,
        /// Keys the sender holds in the partition.
        key_count: u64,
        /// The sender's root hash.
        merkle_root: u64,
    },
    /// TRANSFER_CONFIRM_REPLY: the receiver's key count and Merkle root.
    ConfirmReply {
        /// The partition.
        partition: u32,
        /// Keys the receiver holds in the partition.
        key_count: u64,
        /// The receiver's root hash.
        merkle_root: u64,
    },
    /// ERROR answering a batch or confirm (`NotOwner`: the receiver does not expect this
    /// transfer). The runtime maps a wire ERROR answering a transfer request here, with
    /// the partition of the request it answers.
    Refused {
        /// The partition.
        partition: u32,
        /// Why.
        code: ErrorCode,
    },
}

/// What a shard's transfers ask the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffAction {
    /// Send a message to a shard of a node.
    Send {
        /// The destination.
        to: Replica,
        /// Request id: fresh for batches and confirms, echoed for their answers.
        request_id: u32,
        /// The message.
        message: TransferMessage,
    },
    /// The receiver's root matched: make `to` an authoritative holder of `partition` in
    /// the ring of `ring_epoch`, then call [`Handoff::flipped`].
    Flip {
        /// The partition.
        partition: u32,
        /// The ring epoch the move belongs to.
        ring_epoch: u64,
        /// The new holder.
        to: Replica,
    },
    /// Every move of the partition out of this shard has flipped and this shard is no
    /// longer a holder: delete its copy.
    DropPartition {
        /// The partition.
        partition: u32,
    },
    /// A transfer stopped without flipping; the old holder keeps its copy.
    Stalled {
        /// The partition.
        partition: u32,
        /// The receiver.
        to: Replica,
        /// Why.
        reason: StallReason,
    },
}

/// Why a transfer stopped without flipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallReason {
    /// The roots still differed after this many rounds.
    RootsDiffer {
        /// Rounds run.
        rounds: u32,
    },
    /// The receiver refused (it does not expect this transfer).
    Refused(ErrorCode),
    /// `resends_max` consecutive timeouts.
    Unresponsive,
    /// A single leaf bucket does not fit in one wire frame.
    LeafTooLarge {
        /// The leaf.
        leaf: u32,
    },
}

/// Where one transfer stands, for `rotor admin status` and its progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferProgress {
    /// The partition.
    pub partition: u32,
    /// The sender.
    pub from: Replica,
    /// The receiver.
    pub to: Replica,
    /// The ring epoch the move belongs to.
    pub ring_epoch: u64,
    /// Stream rounds started.
    pub round: u32,
    /// Leaf buckets streamed in the current round, out of [`TransferProgress::leaves`].
    pub leaves_sent: u32,
    /// Leaf buckets of a partition.
    pub leaves: u32,
    /// Entries sent, resends included.
    pub entries_sent: u64,
    /// Batches acknowledged.
    pub batches_acked: u64,
    /// Batches sent again after a timeout.
    pub resends: u64,
    /// Where it is.
    pub phase: Phase,
}

/// The phase of one outgoing transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Batches are being streamed.
    Streaming,
    /// The last batch is acknowledged; the roots are being compared.
    Confirming,
    /// The roots matched; the runtime is flipping ownership.
    Flipping,
    /// Flipped (and the copy dropped if this shard left the set).
    Done,
    /// Stopped without flipping.
    Stalled(StallReason),
}

/// What a shard's transfers have done, as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Batches sent, resends included.
    pub batches_sent: u64,
    /// Batches received and stored.
    pub batches_received: u64,
    /// Keys whose stored state a received entry changed.
    pub keys_changed: u64,
    /// Received entries that did not decode or could not be merged.
    pub bad_entries: u64,
    /// Batches and confirms refused (not expected here).
    pub refused: u64,
    /// Answers ignored as not matching anything in flight.
    pub stale: u64,
}
