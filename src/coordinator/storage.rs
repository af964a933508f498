//! What the coordinator needs of a shard's storage: the causal state of a key, the hint
//! area, the incarnation, and when writes become durable.
//!
//! Place in the flow: the coordinator (and the replica-side handlers next to it) read and
//! write through [`ReplicaStore`]; the simulator uses [`MemStore`], the server will adapt
//! `store::Store` (which keeps encoded states as opaque bytes) to the same trait. Replies
//! that promise durability are held back until [`ReplicaStore::durable_lsn`] passes the
//! write's sequence number, so a group-commit store acknowledges only synced writes.

use std::collections::BTreeMap;

use crate::causal::{Actor, CausalError, CausalState, SiblingLimits};
use crate::ring::NodeId;

/// A log sequence number: the position of a write in its store's log.
pub type Lsn = u64;

/// Why a storage operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The device failed (I/O error, disk full). The outcome of a write is unknown.
    #[error("storage I/O failed")]
    Io,
    /// Stored bytes failed their checksum or did not decode.
    #[error("stored data is corrupted")]
    Corrupted,
    /// The hint area is full.
    #[error("hint area is full")]
    Full,
}

/// A write kept for a node that was unreachable, to hand over when it answers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// This store's id for the hint, echoed by the target's HINT_ACK.
    pub hint_id: u64,
    /// The node the write was meant for.
    pub intended: NodeId,
    /// Partition of the key.
    pub partition: u32,
    /// The key.
    pub key: Vec<u8>,
    /// The causal state to merge at the target.
    pub state: CausalState,
}

/// The storage one shard's coordinator and replica handlers run on.
pub trait ReplicaStore {
    /// The actor of this store's incarnation: new whenever the store lost writes.
    fn incarnation(&self) -> Actor;
    /// The stored state of a key, `None` if the key was never written here.
    fn get_state(&self, partition: u32, key: &[u8]) -> Result<Option<CausalState>, StorageError>;
    /// Replaces the state of a key; returns the write's sequence number.
    fn put_state(
        &mut self,
        partition: u32,
        key: &[u8],
        state: &CausalState,
    ) -> Result<Lsn, StorageError>;
    /// Stores a hint for `intended`; returns the hint's id and the write's sequence number.
    fn put_hint(
        &mut self,
        intended: NodeId,
        partition: u32,
        key: &[u8],
        state: &CausalState,
    ) -> Result<(u64, Lsn), StorageError>;
    /// Up to `max` hints for `intended`, oldest first.
    fn hints_for(&self, intended: NodeId, max: usize) -> Result<Vec<Hint>, StorageError>;
    /// The nodes this store holds hints for, in increasing order.
    fn hint_targets(&self) -> Vec<NodeId>;
    /// Deletes a hint once its target acknowledged it; unknown ids are ignored (a
    /// duplicated ack).
    fn delete_hint(&mut self, intended: NodeId, hint_id: u64) -> Result<(), StorageError>;
    /// Hints held, over all targets.
    fn hint_count(&self) -> usize;
    /// Every write up to this sequence number survives a crash.
    fn durable_lsn(&self) -> Lsn;
}

/// Why [`merge_into_store`] did not merge an incoming state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeFailure {
    /// Reading or writing the store failed.
    Storage(StorageError),
    /// The merge itself was refused (the sibling cap); the stored state is unchanged.
    Refused(CausalError),
}

/// Merges `incoming` into the stored state of a key and stores the result only if it
/// changed; returns the merged state and whether it was stored. Anti-entropy and partition
/// transfer repair with it. (The coordinator's replica writes store even an unchanged
/// state: their acknowledgement waits for a sequence number of their own.)
pub fn merge_into_store<S: ReplicaStore + ?Sized>(
    store: &mut S,
    partition: u32,
    key: &[u8],
    incoming: &CausalState,
    limits: &SiblingLimits,
) -> Result<(CausalState, bool), MergeFailure> {
    let stored = store
        .get_state(partition, key)
        .map_err(MergeFailure::Storage)?
        .unwrap_or_default();
    let (merged, _) = stored
        .merge_with_limits(incoming, limits)
        .map_err(MergeFailure::Refused)?;
    if merged == stored {
        return Ok((merged, false));
    }
    store
        .put_state(partition, key, &merged)
        .map_err(MergeFailure::Storage)?;
    Ok((merged, true))
}

/// How an in-memory store loses writes at a crash, as the real store's durability
/// policies do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemDurability {
    /// Every write is durable when `put` returns (fsync per write).
    Always,
    /// Writes become durable at the next [`MemStore::sync`] (group commit).
    Group,
}

/// An in-memory [`ReplicaStore`] for the simulator and tests that models durability: a
/// crash keeps the synced writes and any prefix of the unsynced ones.
#[derive(Debug, Clone)]
pub struct MemStore {
    incarnation: Actor,
    durability: MemDurability,
    /// What a crash preserves.
    synced: MemData,
    /// What reads see.
    live: MemData,
    /// Writes since the last sync, in log order.
    unsynced: Vec<MemOp>,
    lsn: Lsn,
    durable: Lsn,
    hints_max: usize,
    /// Never reset, not even by a crash: a hint id must not be reused, or a late ack for a
    /// lost hint would delete a new hint that was never delivered.
    next_hint_id: u64,
    /// Keys whose state was written since the last [`MemStore::take_written`], when
    /// [`MemStore::track_writes`] is on (the simulator's double writes during a move).
    written: Option<Vec<(u32, Vec<u8>)>>,
}

#[derive(Debug, Clone, Default)]
struct MemData {
    states: BTreeMap<(u32, Vec<u8>), CausalState>,
    /// The sequence number of each key's current state (the store's record LSN).
    lsns: BTreeMap<(u32, Vec<u8>), Lsn>,
    /// By (target, hint id): ids grow, so each target's hints iterate oldest first.
    hints: BTreeMap<(NodeId, u64), Hint>,
}

#[derive(Debug, Clone)]
enum MemOp {
    State(u32, Vec<u8>, CausalState, Lsn),
    /// A key removed for good (a purged tombstone).
    Remove(u32, Vec<u8>),
    /// Every key of a partition removed (the partition was handed off).
    DropPartition(u32),
    PutHint(Hint),
    DeleteHint(NodeId, u64),
}

impl MemStore {
    /// An empty store of incarnation `incarnation`.
    pub fn new(incarnation: Actor, durability: MemDurability, hints_max: usize) -> Self {
        MemStore {
            incarnation,
            durability,
            synced: MemData::default(),
            live: MemData::default(),
            unsynced: Vec::new(),
            lsn: 0,
            durable: 0,
            hints_max,
            next_hint_id: 1,
            written: None,
        }
    }

    /// The sequence number of the latest write (0 before any): what
    /// [`crate::antientropy::MerkleView::write_mark`] reports.
    pub fn write_mark(&self) -> Lsn {
        self.lsn
    }

    /// The sequence number of the write that stored a key's current state.
    pub fn state_lsn(&self, partition: u32, key: &[u8]) -> Option<Lsn> {
        self.live.lsns.get(&(partition, key.to_vec())).copied()
    }

    /// Removes up to `max` tombstones of `partition` (keys whose state holds no live
    /// value) whose current state was stored at or before `lsn_max` and that `eligible`
    /// accepts: the store's `purge_tombstones`. Durable like a write (a crash may lose
    /// an unsynced purge, bringing the tombstone back, which is harmless). Returns the
    /// (key, encoded state) removed.
    pub fn purge_tombstones(
        &mut self,
        partition: u32,
        lsn_max: Lsn,
        max: usize,
        mut eligible: impl FnMut(&[u8], Lsn) -> bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let purged: Vec<(Vec<u8>, Vec<u8>)> = self
            .live
            .states
            .range((partition, Vec::new())..)
            .take_while(|((p, _), _)| *p == partition)
            .filter(|(_, state)| state.is_tombstone_only())
            .filter_map(|((p, key), state)| {
                let lsn = self.live.lsns.get(&(*p, key.clone())).copied()?;
                (lsn <= lsn_max && eligible(key, lsn)).then(|| (key.clone(), state.to_bytes()))
            })
            .take(max)
            .collect();
        for (key, _) in &purged {
            self.log(MemOp::Remove(partition, key.clone()));
        }
        purged
    }

    /// Removes every key of `partition` (its copy was handed off); returns how many.
    pub fn drop_partition(&mut self, partition: u32) -> usize {
        let count = self.partition_len(partition);
        if count > 0 {
            self.log(MemOp::DropPartition(partition));
        }
        count
    }

    /// Keys held in `partition`.
    pub fn partition_len(&self, partition: u32) -> usize {
        self.live
            .states
            .range((partition, Vec::new())..)
            .take_while(|((p, _), _)| *p == partition)
            .count()
    }

    /// Partitions holding at least one key, ascending.
    pub fn partitions(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.live.states.keys().map(|(p, _)| *p).collect();
        out.dedup();
        out
    }

    /// Starts (or stops) noting the keys whose state is written, for
    /// [`MemStore::take_written`].
    pub fn track_writes(&mut self, on: bool) {
        self.written = on.then(Vec::new);
    }

    /// The (partition, key) of every state written since the last call, in write order.
    pub fn take_written(&mut self) -> Vec<(u32, Vec<u8>)> {
        match &mut self.written {
            Some(written) => std::mem::take(written),
            None => Vec::new(),
        }
    }

    /// Makes every write so far durable (the group-commit timer's fsync).
    pub fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            self.synced.apply(op);
        }
        self.durable = self.lsn;
    }

    /// Writes not yet synced.
    pub fn unsynced_len(&self) -> usize {
        self.unsynced.len()
    }

    /// A crash that keeps the first `keep` unsynced writes (a torn log tail) and loses the
    /// rest. If anything was lost the store comes back as a new incarnation `fresh`: its
    /// old actor may have issued counters that are now forgotten here and must never be
    /// issued again (wire-spec/causal.md, "Operational note"). Returns whether it was.
    pub fn crash(&mut self, keep: usize, fresh: Actor) -> bool {
        let lost = keep < self.unsynced.len();
        self.unsynced.truncate(keep);
        self.sync();
        self.live = self.synced.clone();
        if lost {
            self.incarnation = fresh;
        }
        lost
    }

    /// Every key's state, for checks.
    pub fn states(&self) -> impl Iterator<Item = (&(u32, Vec<u8>), &CausalState)> {
        self.live.states.iter()
    }

    fn log(&mut self, op: MemOp) -> Lsn {
        self.live.apply(op.clone());
        self.lsn += 1;
        if let (Some(written), MemOp::State(partition, key, ..)) = (&mut self.written, &op) {
            written.push((*partition, key.clone()));
        }
        match self.durability {
            MemDurability::Always => {
                self.synced.apply(op);
                self.durable = self.lsn;
            }
            MemDurability::Group => self.unsynced.push(op),
        }
        self.lsn
    }
}

impl MemData {
    fn apply(&mut self, op: MemOp) {
        match op {
            MemOp::State(partition, key, state, lsn) => {
                self.lsns.insert((partition, key.clone()), lsn);
                self.states.insert((partition, key), state);
            }
            MemOp::Remove(partition, key) => {
                let key = (partition, key);
                self.states.remove(&key);
                self.lsns.remove(&key);
            }
            MemOp::DropPartition(partition) => {
                self.states.retain(|(p, _), _| *p != partition);
                self.lsns.retain(|(p, _), _| *p != partition);
            }
            MemOp::PutHint(hint) => {
                self.hints.insert((hint.intended, hint.hint_id), hint);
            }
            MemOp::DeleteHint(intended, id) => {
                self.hints.remove(&(intended, id));
            }
        }
    }
}

impl ReplicaStore for MemStore {
    fn incarnation(&self) -> Actor {
        self.incarnation
    }

    fn get_state(&self, partition: u32, key: &[u8]) -> Result<Option<CausalState>, StorageError> {
        Ok(self.live.states.get(&(partition, key.to_vec())).cloned())
    }

    fn put_state(
        &mut self,
        partition: u32,
        key: &[u8],
        state: &CausalState,
    ) -> Result<Lsn, StorageError> {
        let lsn = self.lsn + 1;
        Ok(self.log(MemOp::State(partition, key.to_vec(), state.clone(), lsn)))
    }

    fn put_hint(
        &mut self,
        intended: NodeId,
        partition: u32,
        key: &[u8],
        state: &CausalState,
    ) -> Result<(u64, Lsn), StorageError> {
        if self.live.hints.len() >= self.hints_max {
            return Err(StorageError::Full);
        }
        let hint_id = self.next_hint_id;
        self.next_hint_id += 1;
        let lsn = self.log(MemOp::PutHint(Hint {
            hint_id,
            intended,
            partition,
            key: key.to_vec(),
            state: state.clone(),
        }));
        Ok((hint_id, lsn))
    }

    fn hints_for(&self, intended: NodeId, max: usize) -> Result<Vec<Hint>, StorageError> {
        Ok(self
            .live
            .hints
            .range((intended, 0)..=(intended, u64::MAX))
            .take(max)
            .map(|(_, hint)| hint.clone())
            .collect())
    }

    fn hint_targets(&self) -> Vec<NodeId> {
        let mut targets: Vec<NodeId> = self.live.hints.keys().map(|&(node, _)| node).collect();
        targets.dedup();
        targets
    }

    fn delete_hint(&mut self, intended: NodeId, hint_id: u64) -> Result<(), StorageError> {
        if self.live.hints.contains_key(&(intended, hint_id)) {
            self.log(MemOp::DeleteHint(intended, hint_id));
        }
        Ok(())
    }

    fn hint_count(&self) -> usize {
        self.live.hints.len()
    }

    fn durable_lsn(&self) -> Lsn {
        self.durable
    }
}
