//! Tombstone purge confirmed by anti-entropy: which tombstones of a partition every other
//! replica is known to hold, so the runtime may remove them for good.
//!
//! Place in the flow: every exchange this shard drives ends in a [`Comparison`] of its tree
//! with one peer's (the root, then the buckets under differing ones, down to the leaves).
//! [`AntiEntropy`](super::AntiEntropy) keeps the last two comparisons with each peer of
//! each partition; [`AntiEntropy::take_purge_grants`](super::AntiEntropy::take_purge_grants)
//! turns them into [`PurgeGrant`]s, and the runtime hands each grant to its store
//! (`Store::purge_tombstones`, `MemStore::purge_tombstones`).
//!
//! # The rule
//!
//! A tombstone of key `k` in partition `p` stored here at log position `lsn` may be purged
//! when, in the current ring, which must be *stable* (no membership change pending):
//!
//! 1. for every other replica of `p` (its preference list in that ring), the last two
//!    exchanges this shard drove with it both ran to the end, under that same replica
//!    set, and found `k`'s leaf equal (the root equal, or the leaf outside every differing
//!    bucket);
//! 2. the earlier of the two started after the tombstone was stored: its `mark` (the
//!    store's last log position when the roots were compared) is `>= lsn`, so the
//!    tombstone was part of both comparisons, and it is still the key's current record;
//! 3. the two comparisons are at least `settle_ms` apart.
//!
//! Equal hashes at both ends mean the peer held exactly this tombstone at both times, so
//! once every replica holds it, no replica has an older value that could come back. The
//! second comparison, `settle_ms` later, is there because a replica's copy may not be
//! durable yet when it is compared (group commit): a crash that loses it before its sync
//! and the loss going unseen by both comparisons takes two faults inside one window. No
//! timer alone decides: without the comparisons nothing is granted, however old the
//! tombstone. A dropped exchange (deadline, refusal, peer down) forgets what was known of
//! that peer, and a ring change makes the old comparisons count for nothing.
//!
//! # Caveats
//!
//! - A replica that was down, or cut off, for longer than it takes every replica to be
//!   compared twice is not a replica of the ring any more only if it was removed: while it
//!   is a member, no comparison with it succeeds, so nothing is purged. But a *hint* for a
//!   replica, or a write still sitting in a fallback's hint area, that carries a value older
//!   than the tombstone and is delivered after the purge makes that value live again; so
//!   does a replica whose disk is restored from a backup older than the purge. The purge
//!   horizon is therefore what it takes to compare every replica twice (Q / replicas per
//!   node x the exchange interval x 2 in the runtime): hints must be delivered, and backups
//!   restored, within it. This is Cassandra's `gc_grace` caveat, with the difference that
//!   here the horizon cannot be shorter than the confirmations.
//! - After a purge a key's dot counters start again at 1: a client context read before the
//!   purge (holding the tombstone's counters) covers the first writes made after it, so a
//!   write carrying such a stale context supersedes them. Clients should not keep contexts
//!   of deleted keys for longer than the horizon.
//! - The purge happens at each replica on its own evidence, so for a while some replicas
//!   have purged and others still hold the tombstone. Two things keep that window from
//!   undoing the purge: a shard does not take back a tombstone it purged
//!   ([`AntiEntropy::note_purged`](super::AntiEntropy::note_purged), the exact same state
//!   only), and a leaf whose only difference is a tombstone on one side and nothing at all
//!   on the other counts as equal for purging (no live value differs), so the replicas
//!   that have not purged yet still get their confirmations.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::causal::CausalState;
use crate::merkle::{entry_hash, leaf_of};

/// Purged tombstones remembered per shard so a replica that has not purged them yet does
/// not hand them back (24 bytes plus the key each; older ones are forgotten first, and a
/// forgotten one handed back is purged again once confirmed anew).
pub const PURGED_TOMBSTONES_MAX: usize = 4096;

/// Tombstones of one partition that every other replica was found to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeGrant {
    /// The partition.
    pub partition: u32,
    /// Tombstones whose current record was stored at or before this log position.
    pub lsn_max: u64,
    /// Leaf buckets some comparison found different: their keys stay.
    pub leaves_excluded: Vec<u32>,
}

impl PurgeGrant {
    /// Whether a tombstone of `key` stored at `lsn` may go under this grant.
    pub fn allows(&self, key: &[u8], lsn: u64) -> bool {
        lsn <= self.lsn_max && self.leaves_excluded.binary_search(&leaf_of(key)).is_err()
    }
}

/// The last [`PURGED_TOMBSTONES_MAX`] tombstones purged: (partition, key) -> entry hash
/// of the purged state.
#[derive(Debug, Default)]
pub(super) struct PurgedTombstones {
    by_key: BTreeMap<(u32, Vec<u8>), u64>,
    order: VecDeque<(u32, Vec<u8>)>,
}

impl PurgedTombstones {
    pub fn insert(&mut self, partition: u32, key: &[u8], state: &[u8]) {
        let id = (partition, key.to_vec());
        if self
            .by_key
            .insert(id.clone(), entry_hash(key, state))
            .is_none()
        {
            self.order.push_back(id);
        }
        while self.order.len() > PURGED_TOMBSTONES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }

    /// Whether `incoming` is exactly a tombstone purged here (a live value, or any other
    /// state, is always taken).
    pub fn skips(&self, partition: u32, key: &[u8], incoming: &CausalState) -> bool {
        incoming.is_tombstone_only()
            && self
                .by_key
                .get(&(partition, key.to_vec()))
                .is_some_and(|&h| h == entry_hash(key, &incoming.to_bytes()))
    }
}

/// One finished exchange with one peer about one partition: what the trees showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Comparison {
    /// When the exchange started.
    pub at: u64,
    /// The store's last log position when the roots were compared.
    pub mark: u64,
    /// The partition's replica set when the exchange started, as (node, shard).
    pub replicas: Vec<(u64, u16)>,
    /// Leaves found different, sorted.
    pub differing: Vec<u32>,
}

/// The last two comparisons with one peer: a grant needs both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PeerComparisons {
    pub previous: Option<Comparison>,
    pub last: Option<Comparison>,
}

impl PeerComparisons {
    /// Records a finished comparison, keeping the one before it.
    pub fn record(&mut self, comparison: Comparison) {
        self.previous = self.last.take();
        self.last = Some(comparison);
    }

    /// What the two comparisons grant under the current replica set: the mark of the
    /// earlier one and every leaf either found different; `None` if either is missing,
    /// ran under another replica set, or they are closer than `settle_ms`.
    pub fn grant(&self, replicas: &[(u64, u16)], settle_ms: u64) -> Option<(u64, Vec<u32>)> {
        let (previous, last) = (self.previous.as_ref()?, self.last.as_ref()?);
        if previous.replicas != replicas || last.replicas != replicas {
            return None;
        }
        if last.at < previous.at.saturating_add(settle_ms) {
            return None;
        }
        let leaves: BTreeSet<u32> = previous
            .differing
            .iter()
            .chain(&last.differing)
            .copied()
            .collect();
        Some((previous.mark, leaves.into_iter().collect()))
    }
}
