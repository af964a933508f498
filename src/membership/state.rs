//! The ring state a node serves by: the ring that owns partitions now, whether it was
//! formed from gossip or committed by an operator, and the committed change being carried
//! out ([`PendingChange`]).
//!
//! Place in the flow: shard 0's runtime holds one [`RingState`]. In *formation* mode (no
//! change was ever committed) the ring is `Ring::initial(Q, members)` over the gossiped
//! members whose status is `Up`, recomputed at each membership change
//! ([`RingState::set_formation_ring`]). `rotor admin commit` turns a staged [`Plan`] into
//! a *committed* state ([`RingState::commit`]): the serving ring stays, frozen as the
//! committed base, and the plan's next ring and its moves become the pending change. The
//! state travels between nodes whole ([`RingState::encode`], RING_STATE_REPLY, and the
//! `<data-dir>/RING` file) and is merged ([`RingState::merge`]); every move reported done
//! ([`RingState::mark_done`]) is OR-ed in, and once all are, the next ring becomes the
//! serving ring at once (the whole-change flip).
//!
//! # Merge order
//! States are ordered by a key, and a merge keeps the larger (ties OR their done flags):
//! 1. a committed state beats a formation one;
//! 2. then the higher epoch (a pending change's epoch counts, see [`RingState::epoch`]);
//! 3. then a flipped change beats the same epoch still pending;
//! 4. then, for two different states of one epoch (two operators committed different
//!    plans from different nodes at once), the larger encoding, byte by byte: arbitrary
//!    but the same on every node, so the cluster converges on one of them. Operators
//!    commit from one node at a time; the loser's change is simply dropped.
//!
//! States equal but for their done flags merge to the union of the flags. The merge is
//! commutative, associative and idempotent, so gossip order does not matter.
//!
//! # Encoding (`<data-dir>/RING`, the RING_STATE_REPLY body)
//! All integers little-endian:
//!
//! | bytes | field                                                               |
//! |-------|---------------------------------------------------------------------|
//! | 4     | magic `RRNG`                                                        |
//! | 1     | format version, 1                                                   |
//! | 1     | mode: 0 formation, 1 committed                                      |
//! | 1     | flags: bit 0 a pending change follows the ring; others 0            |
//! | ...   | serving ring (below)                                                |
//! | ...   | if pending: next ring, move count u32, moves, done bitmap           |
//! | 4     | CRC32C of everything before                                         |
//!
//! A ring: Q u32, epoch u64, member count u16, members sorted by id (id u64, weight u32,
//! shards u16, zone: u8 length + UTF-8, 0 for none), then Q owner indexes u16. A move:
//! partition u32, from node u64, from shard u16, to node u64, to shard u16, drop_after u8
//! (25 bytes), moves sorted by partition. The done bitmap has one bit per move, move `i`
//! at bit `i % 8` of byte `i / 8`; unused bits are 0.
//!
//! Decoding never panics: every malformed input is a [`RingStateError`], and counts are
//! checked against the bytes left before anything is allocated.
//!
//! # What this module deliberately does not do
//! No I/O, no clock: persisting, gossiping and fetching are the runtime's
//! (`server::ring_admin`). It does not drive transfers: the shards' `Handoff`s do, and
//! report each move done through the runtime.

use std::cmp::Ordering;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{Plan, PlanError, Preview, ReplicaMove};
use crate::constants::{MEMBERS_MAX, PARTITIONS_MAX, REPLICAS_MAX, ZONE_NAME_BYTES_MAX};
use crate::ring::{Member, NodeId, PartitionId, Replica, Ring, RingError, ShardId};

/// How the serving ring came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RingMode {
    /// No change was ever committed: the ring is computed from the gossiped members.
    Formation,
    /// An operator committed a plan: only plans change ownership from now on.
    Committed,
}

/// A committed change being carried out: the ring moved to and the replica moves it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// Epoch of `next`.
    pub epoch: u64,
    /// The committed ring being moved to.
    pub next: Arc<Ring>,
    /// `Preview::moves` of the serving ring to `next`, in partition order.
    pub moves: Arc<[ReplicaMove]>,
    /// Per move: the new holder's Merkle root matched (set by the sender's report).
    pub done: Arc<[bool]>,
}

/// The ring state of a node: its serving ring, mode and pending change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingState {
    mode: RingMode,
    /// The ring requests are routed by (the old one while a change is pending).
    ring: Arc<Ring>,
    pending: Option<Arc<PendingChange>>,
}

/// Why a commit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// A previous change is still being carried out.
    #[error("the change to ring epoch {epoch} is still pending ({done} of {moves} moves done)")]
    ChangePending {
        /// Epoch of the pending change.
        epoch: u64,
        /// Moves done.
        done: usize,
        /// Moves in all.
        moves: usize,
    },
    /// The plan leaves the ring as it is.
    #[error("the plan changes nothing")]
    Unchanged,
    /// The plan does not fit the ring.
    #[error("{0}")]
    Plan(#[from] PlanError),
}

/// Why ring state bytes were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingStateError {
    /// Not ring state bytes.
    #[error("not a ring state")]
    Foreign,
    /// A format version this build does not know.
    #[error("unsupported ring state format version {0}")]
    UnsupportedVersion(u8),
    /// The bytes end early.
    #[error("truncated ring state")]
    Truncated,
    /// The checksum does not match.
    #[error("ring state checksum mismatch")]
    Checksum,
    /// A field is out of range (mode, flags, count, text, move order, epoch order).
    #[error("invalid ring state: {0}")]
    Invalid(&'static str),
    /// A ring does not rebuild.
    #[error("invalid ring in ring state: {0}")]
    Ring(#[from] RingError),
    /// Bytes after the end.
    #[error("trailing bytes in ring state")]
    TrailingBytes,
}

impl PendingChange {
    /// A change to `next` by `moves` (in partition order), none done yet.
    pub fn new(next: Ring, moves: Vec<ReplicaMove>) -> PendingChange {
        let done = vec![false; moves.len()];
        PendingChange {
            epoch: next.epoch(),
            next: Arc::new(next),
            moves: moves.into(),
            done: done.into(),
        }
    }

    /// The moves of `partition`, with their indexes (what `MoveDone` names).
    pub fn moves_of(&self, partition: u32) -> impl Iterator<Item = (usize, &ReplicaMove)> {
        // Moves are sorted by partition (checked when decoded).
        let start = self.moves.partition_point(|m| m.partition.0 < partition);
        self.moves
            .iter()
            .enumerate()
            .skip(start)
            .take_while(move |(_, m)| m.partition.0 == partition)
    }

    /// Whether every move is done (then the next ring serves).
    pub fn all_done(&self) -> bool {
        self.done.iter().all(|&d| d)
    }

    /// Moves done so far.
    pub fn done_count(&self) -> usize {
        self.done.iter().filter(|&&d| d).count()
    }

    /// Where writes of `partition` also go while the change is pending: the new holder of
    /// each of its moves that is among the first `n` replicas of the next ring. They do not
    /// count toward W: they are not owners yet.
    pub fn extra_write_targets(&self, partition: u32, n: usize) -> SmallVec<[Replica; 4]> {
        let mut out = SmallVec::new();
        let mut list = None;
        for (_, m) in self.moves_of(partition) {
            let list = list
                .get_or_insert_with(|| self.next.preference_list(PartitionId(partition), n.max(1)));
            if list.contains(&m.to) && !out.contains(&m.to) {
                out.push(m.to);
            }
        }
        out
    }

    /// This change with move `index` done; `None` if it already was or there is no such
    /// move.
    fn with_done(&self, index: usize) -> Option<PendingChange> {
        if *self.done.get(index)? {
            return None;
        }
        let mut done = self.done.to_vec();
        *done.get_mut(index)? = true;
        Some(PendingChange {
            done: done.into(),
            ..self.clone()
        })
    }
}

impl RingState {
    /// A formation state serving `ring`.
    pub fn formation(ring: Ring) -> RingState {
        RingState {
            mode: RingMode::Formation,
            ring: Arc::new(ring),
            pending: None,
        }
    }

    /// A committed state serving `ring`, with no change pending (e.g. a simulator's start).
    pub fn committed(ring: Ring) -> RingState {
        RingState {
            mode: RingMode::Committed,
            ring: Arc::new(ring),
            pending: None,
        }
    }

    /// How the serving ring came to be.
    pub fn mode(&self) -> RingMode {
        self.mode
    }

    /// The serving ring.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The change being carried out, if any.
    pub fn pending(&self) -> Option<&Arc<PendingChange>> {
        self.pending.as_ref()
    }

    /// The newest epoch this state knows: the pending change's, else the serving ring's.
    /// Gossip digests carry it; a peer with a higher one has a newer state.
    pub fn epoch(&self) -> u64 {
        self.pending.as_ref().map_or(self.ring.epoch(), |p| p.epoch)
    }

    /// Replaces the serving ring of a formation state (gossip membership changed); a
    /// committed state ignores it. Returns whether anything changed.
    pub fn set_formation_ring(&mut self, ring: Ring) -> bool {
        if self.mode != RingMode::Formation || *self.ring == ring {
            return false;
        }
        self.ring = Arc::new(ring);
        true
    }

    /// What committing `plan` would do from the serving ring (`rotor admin plan`).
    pub fn preview(&self, plan: &Plan, n: usize) -> Result<Preview, PlanError> {
        plan.preview(&self.ring, n)
    }

    /// Commits `plan` (with N = `n`): the serving ring is frozen as the committed base and
    /// the plan's ring becomes the pending change (flipped at once if nothing moves).
    /// Refused while a change is pending.
    pub fn commit(&mut self, plan: &Plan, n: usize) -> Result<Preview, CommitError> {
        if let Some(p) = &self.pending {
            return Err(CommitError::ChangePending {
                epoch: p.epoch,
                done: p.done_count(),
                moves: p.moves.len(),
            });
        }
        let preview = plan.preview(&self.ring, n)?;
        if preview.ring.epoch() <= self.ring.epoch() {
            return Err(CommitError::Unchanged);
        }
        self.mode = RingMode::Committed;
        self.pending = Some(Arc::new(PendingChange::new(
            preview.ring.clone(),
            preview.moves.clone(),
        )));
        self.flip_if_done();
        Ok(preview)
    }

    /// Move `index` of the change to `epoch` is done. Returns whether the state changed
    /// (a new flag, and perhaps the flip); stale or unknown reports change nothing.
    pub fn mark_done(&mut self, epoch: u64, index: usize) -> bool {
        let Some(p) = &self.pending else {
            return false;
        };
        if p.epoch != epoch {
            return false;
        }
        let Some(next) = p.with_done(index) else {
            return false;
        };
        self.pending = Some(Arc::new(next));
        self.flip_if_done();
        true
    }

    /// Merges a peer's state into this one (see the module's merge order). Returns whether
    /// this state changed.
    pub fn merge(&mut self, other: &RingState) -> bool {
        match self.order(other) {
            Ordering::Greater => false,
            Ordering::Less => {
                *self = other.clone();
                true
            }
            Ordering::Equal => {
                let (Some(mine), Some(theirs)) = (&self.pending, &other.pending) else {
                    return false;
                };
                if mine
                    .done
                    .iter()
                    .zip(theirs.done.iter())
                    .all(|(a, b)| a | !b)
                {
                    return false;
                }
                let done: Vec<bool> = mine
                    .done
                    .iter()
                    .zip(theirs.done.iter())
                    .map(|(a, b)| a | b)
                    .collect();
                self.pending = Some(Arc::new(PendingChange {
                    done: done.into(),
                    ..(**mine).clone()
                }));
                self.flip_if_done();
                true
            }
        }
    }

    /// Whether `other` would change this state if merged (a fetch is worth it).
    pub fn would_merge(&self, other: &RingState) -> bool {
        self.clone().merge(other)
    }

    /// The merge order: `Equal` means equal but perhaps for done flags.
    fn order(&self, other: &RingState) -> Ordering {
        let rank = |s: &RingState| (s.mode, s.epoch(), s.pending.is_none());
        rank(self)
            .cmp(&rank(other))
            .then_with(|| self.content().cmp(&other.content()))
    }

    /// The encoding without done flags: what the tie-break compares.
    fn content(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_ring(&self.ring, &mut out);
        if let Some(p) = &self.pending {
            encode_ring(&p.next, &mut out);
            encode_moves(&p.moves, &mut out);
        }
        out
    }

    fn flip_if_done(&mut self) {
        if let Some(p) = self.pending.take_if(|p| p.all_done()) {
            self.ring = p.next.clone();
        }
    }

    /// Appends the encoding (module docs) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(match self.mode {
            RingMode::Formation => 0,
            RingMode::Committed => 1,
        });
        out.push(u8::from(self.pending.is_some()));
        encode_ring(&self.ring, out);
        if let Some(p) = &self.pending {
            encode_ring(&p.next, out);
            encode_moves(&p.moves, out);
            let mut bits = vec![0u8; p.done.len().div_ceil(8)];
            for (i, _) in p.done.iter().enumerate().filter(|(_, &d)| d) {
                if let Some(byte) = bits.get_mut(i / 8) {
                    *byte |= 1 << (i % 8);
                }
            }
            out.extend_from_slice(&bits);
        }
        let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes [`RingState::encode`]'s bytes, checking every field.
    pub fn decode(bytes: &[u8]) -> Result<RingState, RingStateError> {
        if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(RingStateError::Foreign);
        }
        let body_len = bytes
            .len()
            .checked_sub(CRC_BYTES)
            .ok_or(RingStateError::Truncated)?;
        let (body, crc) = bytes.split_at(body_len);
        let mut r = Reader { bytes: body, at: 0 };
        r.take::<4>()?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(RingStateError::UnsupportedVersion(version));
        }
        let crc = u32::from_le_bytes(crc.try_into().map_err(|_| RingStateError::Truncated)?);
        if crc32c::crc32c(body) != crc {
            return Err(RingStateError::Checksum);
        }
        let mode = match r.u8()? {
            0 => RingMode::Formation,
            1 => RingMode::Committed,
            _ => return Err(RingStateError::Invalid("mode")),
        };
        let has_pending = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(RingStateError::Invalid("flags")),
        };
        let ring = decode_ring(&mut r)?;
        let pending = match has_pending {
            false => None,
            true => {
                if mode == RingMode::Formation {
                    return Err(RingStateError::Invalid("a formation state with a change"));
                }
                let next = decode_ring(&mut r)?;
                if next.q() != ring.q() {
                    return Err(RingStateError::Invalid("rings of different Q"));
                }
                if next.epoch() <= ring.epoch() {
                    return Err(RingStateError::Invalid("next epoch not above serving"));
                }
                let moves = decode_moves(&mut r, next.q())?;
                let bits = r.slice(moves.len().div_ceil(8))?;
                let done: Vec<bool> = (0..moves.len())
                    .map(|i| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
                    .collect();
                let used = done.iter().filter(|&&d| d).count();
                let set: u32 = bits.iter().map(|b| b.count_ones()).sum();
                if usize::try_from(set).ok() != Some(used) {
                    return Err(RingStateError::Invalid("unused done bits set"));
                }
                Some(Arc::new(PendingChange {
                    epoch: next.epoch(),
                    next: Arc::new(next),
                    moves: moves.into(),
                    done: done.into(),
                }))
            }
        };
        if r.at != body.len() {
            return Err(RingStateError::TrailingBytes);
        }
        let mut state = RingState {
            mode,
            ring: Arc::new(ring),
            pending,
        };
        // A change whose moves are all done has flipped; keep the one canonical form.
        state.flip_if_done();
        Ok(state)
    }
}

const MAGIC: [u8; 4] = *b"RRNG";
const VERSION: u8 = 1;
const CRC_BYTES: usize = 4;
/// Bytes of one encoded move.
const MOVE_BYTES: usize = 25;
/// Fewest bytes of one encoded member (empty zone).
const MEMBER_BYTES_MIN: usize = 15;

fn encode_ring(ring: &Ring, out: &mut Vec<u8>) {
    out.extend_from_slice(&ring.q().to_le_bytes());
    out.extend_from_slice(&ring.epoch().to_le_bytes());
    // A ring holds at most MEMBERS_MAX (< 2^16) members, zones at most ZONE_NAME_BYTES_MAX
    // (< 2^8) bytes: both checked when the ring was built.
    let members = ring.members();
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    for m in members {
        out.extend_from_slice(&m.id.0.to_le_bytes());
        out.extend_from_slice(&m.weight.to_le_bytes());
        out.extend_from_slice(&m.shards.to_le_bytes());
        let zone = m.zone.as_deref().unwrap_or_default().as_bytes();
        out.push(zone.len() as u8);
        out.extend_from_slice(zone);
    }
    for &owner in ring.owner_indexes() {
        out.extend_from_slice(&owner.to_le_bytes());
    }
}

fn encode_moves(moves: &[ReplicaMove], out: &mut Vec<u8>) {
    // At most Q x REPLICAS_MAX moves, far below 2^32.
    out.extend_from_slice(&(moves.len() as u32).to_le_bytes());
    for m in moves {
        out.extend_from_slice(&m.partition.0.to_le_bytes());
        for replica in [m.from, m.to] {
            out.extend_from_slice(&replica.node.0.to_le_bytes());
            out.extend_from_slice(&replica.shard.0.to_le_bytes());
        }
        out.push(u8::from(m.drop_after));
    }
}

fn decode_ring(r: &mut Reader<'_>) -> Result<Ring, RingStateError> {
    let q = r.u32()?;
    if q > PARTITIONS_MAX {
        return Err(RingStateError::Invalid("Q over PARTITIONS_MAX"));
    }
    let epoch = r.u64()?;
    let count = usize::from(r.u16()?);
    if count > MEMBERS_MAX {
        return Err(RingStateError::Invalid("member count"));
    }
    r.check_room(count, MEMBER_BYTES_MIN)?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = NodeId(r.u64()?);
        let weight = r.u32()?;
        let shards = r.u16()?;
        let zone_len = usize::from(r.u8()?);
        if zone_len > ZONE_NAME_BYTES_MAX {
            return Err(RingStateError::Invalid("zone name length"));
        }
        let zone = std::str::from_utf8(r.slice(zone_len)?)
            .map_err(|_| RingStateError::Invalid("zone name not UTF-8"))?;
        let member = Member::new(id, weight, shards);
        members.push(match zone.is_empty() {
            true => member,
            false => member.with_zone(zone),
        });
    }
    let q_len = usize::try_from(q).map_err(|_| RingStateError::Invalid("Q"))?;
    r.check_room(q_len, 2)?;
    let mut owners = Vec::with_capacity(q_len);
    for _ in 0..q_len {
        owners.push(r.u16()?);
    }
    Ok(Ring::from_parts(q, epoch, members, owners)?)
}

fn decode_moves(r: &mut Reader<'_>, q: u32) -> Result<Vec<ReplicaMove>, RingStateError> {
    let count = usize::try_from(r.u32()?).map_err(|_| RingStateError::Invalid("moves"))?;
    let max = usize::try_from(q)
        .unwrap_or(usize::MAX)
        .saturating_mul(usize::from(REPLICAS_MAX));
    if count > max {
        return Err(RingStateError::Invalid("move count"));
    }
    r.check_room(count, MOVE_BYTES)?;
    let mut moves: Vec<ReplicaMove> = Vec::with_capacity(count);
    for _ in 0..count {
        let partition = r.u32()?;
        if partition >= q {
            return Err(RingStateError::Invalid("move partition"));
        }
        if moves
            .last()
            .is_some_and(|last| last.partition.0 > partition)
        {
            return Err(RingStateError::Invalid("moves not in partition order"));
        }
        let from = Replica {
            node: NodeId(r.u64()?),
            shard: ShardId(r.u16()?),
        };
        let to = Replica {
            node: NodeId(r.u64()?),
            shard: ShardId(r.u16()?),
        };
        let drop_after = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(RingStateError::Invalid("move flag")),
        };
        moves.push(ReplicaMove {
            partition: PartitionId(partition),
            from,
            to,
            drop_after,
        });
    }
    Ok(moves)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, len: usize) -> Result<&'a [u8], RingStateError> {
        let end = self.at.checked_add(len).ok_or(RingStateError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(RingStateError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], RingStateError> {
        self.slice(N)?
            .try_into()
            .map_err(|_| RingStateError::Truncated)
    }

    /// Fails unless `count` items of at least `each` bytes can still follow, so a forged
    /// count allocates nothing.
    fn check_room(&self, count: usize, each: usize) -> Result<(), RingStateError> {
        let left = self.bytes.len().saturating_sub(self.at);
        match count.checked_mul(each) {
            Some(need) if need <= left => Ok(()),
            _ => Err(RingStateError::Truncated),
        }
    }

    fn u8(&mut self) -> Result<u8, RingStateError> {
        Ok(u8::from_le_bytes(self.take()?))
    }

    fn u16(&mut self) -> Result<u16, RingStateError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, RingStateError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, RingStateError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Change;
    use proptest::prelude::*;

    const Q: u32 = 64;

    fn members(ids: &[u64]) -> Vec<Member> {
        ids.iter().map(|&i| Member::new(NodeId(i), 1, 2)).collect()
    }

    fn formation(ids: &[u64]) -> RingState {
        RingState::formation(Ring::initial(Q, members(ids)).unwrap())
    }

    fn plan(change: Change) -> Plan {
        let mut plan = Plan::new();
        plan.stage(change).unwrap();
        plan
    }

    /// Three nodes formed by gossip, and a fourth's join committed from it.
    fn joined() -> RingState {
        let mut state = formation(&[1, 2, 3]);
        let join = plan(Change::Join(Member::new(NodeId(4), 1, 2)));
        state.commit(&join, 3).unwrap();
        state
    }

    fn mark_all(state: &mut RingState) {
        let p = state.pending().unwrap().clone();
        for i in 0..p.moves.len() {
            assert!(state.mark_done(p.epoch, i));
        }
    }

    #[test]
    fn a_commit_freezes_the_formation_ring_and_keeps_serving_it() {
        let base = formation(&[1, 2, 3]);
        let state = joined();
        assert_eq!(state.mode(), RingMode::Committed);
        assert_eq!(
            state.ring(),
            base.ring(),
            "the old ring serves until the flip"
        );
        let p = state.pending().unwrap();
        assert_eq!(p.epoch, base.ring().epoch() + 1);
        assert_eq!(state.epoch(), p.epoch);
        assert!(!p.moves.is_empty());
        assert!(p.moves.iter().all(|m| m.to.node == NodeId(4)));
        assert_eq!(p.done_count(), 0);
        assert!(!p.all_done());
    }

    #[test]
    fn a_second_commit_is_refused_while_a_change_is_pending() {
        let mut state = joined();
        let before = state.clone();
        let leave = plan(Change::Leave(NodeId(1)));
        assert!(matches!(
            state.commit(&leave, 3),
            Err(CommitError::ChangePending { done: 0, .. })
        ));
        assert_eq!(state, before);
        assert!(matches!(
            formation(&[1, 2, 3]).commit(&Plan::new(), 3),
            Err(CommitError::Plan(PlanError::Empty))
        ));
    }

    #[test]
    fn the_whole_change_flips_when_the_last_move_is_done() {
        let mut state = joined();
        let p = state.pending().unwrap().clone();
        let last = p.moves.len() - 1;
        for i in 0..last {
            assert!(state.mark_done(p.epoch, i));
            assert!(
                state.pending().is_some(),
                "nothing flips before every move is done"
            );
            assert_eq!(state.ring().epoch(), p.epoch - 1);
        }
        assert!(
            !state.mark_done(p.epoch, 0),
            "a repeated report changes nothing"
        );
        assert!(
            !state.mark_done(p.epoch + 1, last),
            "another epoch's report is stale"
        );
        assert!(!state.mark_done(p.epoch, p.moves.len()), "no such move");
        assert!(state.mark_done(p.epoch, last));
        assert!(state.pending().is_none());
        assert_eq!(**state.ring(), *p.next);
        assert_eq!(state.epoch(), p.epoch);
        // The next change starts from the new ring.
        let leave = plan(Change::Leave(NodeId(1)));
        state.commit(&leave, 3).unwrap();
        assert_eq!(state.epoch(), p.epoch + 1);
    }

    #[test]
    fn a_plan_that_changes_nothing_is_refused() {
        let mut state = formation(&[1, 2, 3]);
        // Weights 1 -> 1 change nothing at all.
        let same = plan(Change::Reweight {
            node: NodeId(1),
            weight: 1,
        });
        assert_eq!(state.commit(&same, 3), Err(CommitError::Unchanged));
        assert_eq!(state.mode(), RingMode::Formation);
    }

    #[test]
    fn committed_beats_formation_and_higher_epochs_win() {
        let committed = joined();
        let mut other = formation(&[1, 2, 3, 5]);
        assert!(other.merge(&committed));
        assert_eq!(other, committed);
        let mut newer = committed.clone();
        mark_all(&mut newer);
        let mut later = newer.clone();
        later.commit(&plan(Change::Leave(NodeId(2))), 3).unwrap();
        let mut a = committed.clone();
        assert!(a.merge(&later));
        assert_eq!(a, later);
        assert!(!a.merge(&committed), "an older state changes nothing");
        assert!(!a.merge(&formation(&[1, 2, 3])));
        // A flipped change beats the same change still pending.
        let mut b = committed.clone();
        assert!(b.merge(&newer));
        assert_eq!(b, newer);
    }

    #[test]
    fn formation_rings_follow_gossip_until_a_commit() {
        let mut state = formation(&[1, 2]);
        let three = Ring::initial(Q, members(&[1, 2, 3])).unwrap();
        assert!(state.set_formation_ring(three.clone()));
        assert!(!state.set_formation_ring(three));
        let mut committed = joined();
        let before = committed.clone();
        assert!(!committed.set_formation_ring(Ring::initial(Q, members(&[9])).unwrap()));
        assert_eq!(committed, before);
    }

    #[test]
    fn done_flags_merge_by_union_and_flip_together() {
        let base = joined();
        let p = base.pending().unwrap().clone();
        let (mut a, mut b) = (base.clone(), base.clone());
        let half = p.moves.len() / 2;
        for i in 0..half {
            a.mark_done(p.epoch, i);
        }
        for i in half..p.moves.len() {
            b.mark_done(p.epoch, i);
        }
        let mut ab = a.clone();
        assert!(ab.merge(&b));
        assert!(ab.pending().is_none(), "the union is every move: flipped");
        assert_eq!(**ab.ring(), *p.next);
        let mut a2 = a.clone();
        assert!(!a2.merge(&base), "fewer flags change nothing");
    }

    #[test]
    fn concurrent_commits_of_one_epoch_converge_on_the_same_one() {
        let base = formation(&[1, 2, 3]);
        let mut x = base.clone();
        x.commit(&plan(Change::Join(Member::new(NodeId(4), 1, 2))), 3)
            .unwrap();
        let mut y = base.clone();
        y.commit(&plan(Change::Join(Member::new(NodeId(5), 1, 2))), 3)
            .unwrap();
        assert_eq!(x.epoch(), y.epoch());
        let (mut xy, mut yx) = (x.clone(), y.clone());
        xy.merge(&y);
        yx.merge(&x);
        assert_eq!(xy, yx);
        assert!(xy == x || xy == y);
    }

    #[test]
    fn extra_write_targets_are_the_new_holders_of_a_partition() {
        let state = joined();
        let p = state.pending().unwrap();
        let m = p.moves.first().copied().unwrap();
        let targets = p.extra_write_targets(m.partition.0, 3);
        assert!(targets.contains(&m.to));
        let quiet = (0..Q).find(|&q| p.moves_of(q).next().is_none()).unwrap();
        assert!(p.extra_write_targets(quiet, 3).is_empty());
        let of: Vec<usize> = p.moves_of(m.partition.0).map(|(i, _)| i).collect();
        assert_eq!(of.first(), Some(&0));
        assert!(of
            .iter()
            .all(|&i| p.moves.get(i).unwrap().partition == m.partition));
    }

    #[test]
    fn states_round_trip_through_their_encoding() {
        let zoned = Ring::initial(
            Q,
            vec![
                Member::new(NodeId(1), 2, 1).with_zone("a"),
                Member::new(NodeId(2), 1, 3).with_zone("b"),
            ],
        )
        .unwrap();
        let mut partial = joined();
        let epoch = partial.epoch();
        partial.mark_done(epoch, 1);
        let mut flipped = joined();
        mark_all(&mut flipped);
        for state in [
            formation(&[1]),
            RingState::formation(zoned),
            joined(),
            partial,
            flipped,
        ] {
            let bytes = state.to_bytes();
            assert_eq!(RingState::decode(&bytes), Ok(state));
        }
    }

    #[test]
    fn bad_bytes_are_errors() {
        let bytes = joined().to_bytes();
        assert_eq!(RingState::decode(b""), Err(RingStateError::Foreign));
        assert_eq!(RingState::decode(b"RRN"), Err(RingStateError::Foreign));
        for len in 0..bytes.len() {
            assert!(RingState::decode(bytes.get(..len).unwrap()).is_err());
        }
        let mut flipped = bytes.clone();
        *flipped.get_mut(40).unwrap() ^= 1;
        assert_eq!(RingState::decode(&flipped), Err(RingStateError::Checksum));
        let mut version = bytes.clone();
        *version.get_mut(4).unwrap() = 9;
        assert_eq!(
            RingState::decode(&version),
            Err(RingStateError::UnsupportedVersion(9))
        );
        // A forged move count with a valid checksum allocates nothing and fails.
        let mut forged = Vec::new();
        forged.extend_from_slice(&MAGIC);
        forged.extend_from_slice(&[VERSION, 1, 1]);
        let ring = Ring::initial(Q, members(&[1, 2])).unwrap();
        encode_ring(&ring, &mut forged);
        encode_ring(
            &ring.with_members(members(&[1, 2, 3])).unwrap(),
            &mut forged,
        );
        forged.extend_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&forged);
        forged.extend_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            RingState::decode(&forged),
            Err(RingStateError::Invalid(_))
        ));
    }

    /// States a cluster can reach: formations of a few memberships, and commits of a
    /// join, a leave or a reweight from them with some moves done.
    fn any_state() -> impl Strategy<Value = RingState> {
        (
            0..3usize,
            0..4usize,
            proptest::collection::vec(any::<bool>(), 0..64),
        )
            .prop_map(|(base, change, done)| {
                let ids: &[u64] = [&[1, 2, 3][..], &[1, 2, 3, 4], &[2, 3, 4]][base];
                let mut state = formation(ids);
                let change = match change {
                    0 => return state,
                    1 => Change::Join(Member::new(NodeId(7), 1, 2)),
                    2 => Change::Leave(NodeId(3)),
                    _ => Change::Reweight {
                        node: NodeId(2),
                        weight: 3,
                    },
                };
                if state.commit(&plan(change), 2).is_ok() {
                    let epoch = state.epoch();
                    for (i, d) in done.into_iter().enumerate() {
                        if d {
                            state.mark_done(epoch, i);
                        }
                    }
                }
                state
            })
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in any_state(), b in any_state(), c in any_state()
        ) {
            let merged = |x: &RingState, y: &RingState| {
                let mut out = x.clone();
                out.merge(y);
                out
            };
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&a, &a), a.clone());
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            let ab = merged(&a, &b);
            prop_assert!(!ab.clone().merge(&a) && !ab.clone().merge(&b));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = RingState::decode(&bytes);
        }
    }
}
