//! The ring: where a key lives. A request's key is hashed to a position (MD5), the position
//! to one of Q equal partitions, the partition to its owner and the next distinct nodes
//! clockwise (the preference list), and each of those to one shard (core) of its node. The
//! coordinator asks the ring who holds a key; the cluster layer builds new rings when the
//! membership changes and gossips them; clients get a snapshot to route by themselves.
//!
//! Deliberately pure: no I/O, no clock, no randomness. A ring is a value, a new ring is a
//! deterministic function of the previous one and the new membership
//! ([`Ring::with_members`]), and two nodes that agree on those agree on every owner. The
//! ring does not know which nodes are up: skipping unreachable replicas in favour of the
//! [`Ring::extended`] fallbacks is the coordinator's business.
//!
//! Files:
//! - `position.rs`: MD5 positions and partition ranges ([`key_position`]).
//! - `md5x.rs`: many keys' positions at once in SIMD lanes ([`key_positions`]), for
//!   batches of requests.
//! - `claim.rs`: who owns what (Dynamo's strategy 3, weighted, moving as little as it can,
//!   keeping consecutive partitions on distinct nodes and zones where it can).
//! - this file: the [`Ring`] value, preference lists, shard placement, transfer plans and
//!   snapshots ([`Ring::from_parts`]).
//!
//! Guarantees a caller may rely on: each member owns its weight's share of Q to within one
//! partition (and at least one); a preference list never repeats a node, and never repeats
//! a zone while unused zones remain; a partition's shard on a node depends only on the
//! partition and that node's shard count; equal epochs in one cluster's history mean equal
//! rings.

mod claim;
mod md5x;
mod position;

use std::ops::Deref;

use smallvec::SmallVec;

use crate::constants::{
    MEMBERS_MAX, NODE_SHARDS_MAX, PARTITIONS_MAX, PREFERENCE_LIST_INLINE, ZONE_NAME_BYTES_MAX,
};

pub use md5x::{key_positions, key_positions_with, Md5Lanes};
pub use position::{
    key_position, partition_first_position, partition_of_position, ONE_BLOCK_KEY_BYTES_MAX,
};

/// A node of the cluster, stable for its life (`--node-id`); the wire carries the raw u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// One of the Q partitions, 0..Q, numbered clockwise from position 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

/// One shard (core) of a node, 0..shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

/// A member of the ring as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// The node.
    pub id: NodeId,
    /// Relative capacity, > 0: a node of weight 2 owns twice the partitions of weight 1.
    pub weight: u32,
    /// Failure domain (rack, availability zone). When members are in at least two zones,
    /// the claim and preference lists spread replicas over zones; members without a zone
    /// count as one unnamed zone.
    pub zone: Option<String>,
    /// Shards (cores) of the node, >= 1; each partition the node holds lives on one.
    pub shards: u16,
}

impl Member {
    /// A member without a zone.
    pub fn new(id: NodeId, weight: u32, shards: u16) -> Member {
        Member {
            id,
            weight,
            zone: None,
            shards,
        }
    }

    /// The same member in zone `zone`.
    pub fn with_zone(self, zone: impl Into<String>) -> Member {
        Member {
            zone: Some(zone.into()),
            ..self
        }
    }
}

/// The address of one replica: a shard of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Replica {
    /// The node holding the replica.
    pub node: NodeId,
    /// The shard of that node holding it.
    pub shard: ShardId,
}

/// Why a ring could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A ring needs at least one member.
    #[error("the membership is empty")]
    EmptyMembership,
    /// More members than partitions or than `MEMBERS_MAX`.
    #[error("{members} members, at most {max} allowed (and no more than Q)")]
    TooManyMembers {
        /// Members given.
        members: usize,
        /// The limit that applied.
        max: usize,
    },
    /// Two members with the same node id.
    #[error("node {0:?} appears twice in the membership")]
    DuplicateNode(NodeId),
    /// A member of weight 0.
    #[error("node {0:?} has weight 0")]
    ZeroWeight(NodeId),
    /// A member with no shards.
    #[error("node {0:?} has no shards")]
    ZeroShards(NodeId),
    /// A member with more shards than `NODE_SHARDS_MAX`.
    #[error("node {node:?} has {shards} shards, at most {max} allowed")]
    TooManyShards {
        /// The member.
        node: NodeId,
        /// Shards it declared.
        shards: u16,
        /// `NODE_SHARDS_MAX`.
        max: u16,
    },
    /// A zone name longer than `ZONE_NAME_BYTES_MAX`.
    #[error("node {node:?} has a zone name of {len} bytes, at most {max} allowed")]
    ZoneNameTooLong {
        /// The member.
        node: NodeId,
        /// Length of its zone name, in bytes.
        len: usize,
        /// `ZONE_NAME_BYTES_MAX`.
        max: usize,
    },
    /// Q is not a power of two.
    #[error("{0} partitions is not a power of two")]
    PartitionsNotPowerOfTwo(u32),
    /// Q above `PARTITIONS_MAX`.
    #[error("{q} partitions, at most {max} allowed")]
    TooManyPartitions {
        /// Q given.
        q: u32,
        /// `PARTITIONS_MAX`.
        max: u32,
    },
    /// Two rings compared or rebuilt with different Q (Q is fixed for a cluster's life).
    #[error("rings of {0} and {1} partitions cannot be compared")]
    PartitionsMismatch(u32, u32),
    /// A snapshot's owners table does not have Q entries.
    #[error("the owners table has {len} entries for {q} partitions")]
    OwnersLength {
        /// Entries given.
        len: usize,
        /// Q.
        q: u32,
    },
    /// A snapshot's owners table names a member index past the membership.
    #[error("partition {partition} is owned by member index {index} of {members}")]
    OwnerOutOfRange {
        /// The partition.
        partition: u32,
        /// The member index found.
        index: u16,
        /// Members in the snapshot.
        members: usize,
    },
    /// A snapshot's members are not sorted by node id, as [`Ring::members`] gives them.
    #[error("the snapshot's members are not sorted by node id")]
    MembersNotSorted,
    /// The epoch cannot grow any more.
    #[error("the ring epoch is exhausted")]
    EpochExhausted,
}

/// A ring: Q partitions, their owners, the members and an epoch.
///
/// Built by [`Ring::initial`], changed only through [`Ring::with_members`] (which returns a
/// new ring) or rebuilt from a gossiped snapshot with [`Ring::from_parts`].
///
/// ```
/// use rotor::ring::{Member, NodeId, Ring};
///
/// let members = |n: u64| (1..=n).map(|i| Member::new(NodeId(i), 1, 4)).collect::<Vec<_>>();
/// let ring = Ring::initial(1024, members(8))?;
/// let replicas = ring.key_preference_list(b"user:42", 3);
/// assert_eq!(replicas.len(), 3);
/// assert_eq!(replicas[0].node, ring.owner(replicas.partition()));
///
/// // A ninth node takes about a ninth of the partitions, all from the others.
/// let grown = ring.with_members(members(9))?;
/// assert_eq!(grown.epoch(), ring.epoch() + 1);
/// assert!(ring.transfers(&grown)?.iter().all(|t| t.to == NodeId(9)));
/// # Ok::<(), rotor::ring::RingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Q, a power of two.
    q: u32,
    /// Grows by one whenever the ring's content changes; equal epochs in one cluster's
    /// history mean equal rings.
    epoch: u64,
    /// Sorted by node id; owners refer to members by index into this.
    members: Vec<Member>,
    /// What the hot path needs of each member, in the same order: 16 bytes, no strings.
    slots: Vec<Slot>,
    /// Owner of each partition, as an index into `members`.
    owners: Vec<u16>,
    /// Whether members span at least two zones, so that zones are spread.
    zone_aware: bool,
    /// Members owning at least one partition: a walk stops once it has them all.
    owning_members: usize,
    /// Zones with at least one owning member.
    owning_zones: usize,
    /// The first `head_len` replicas (member and shard) of every partition's walk, so that
    /// a preference list of up to `PREFERENCE_LIST_INLINE` replicas is one copy out of a
    /// table (16 bytes per entry: 64 KiB at Q = 1024, one cache line per lookup), with no
    /// shard placement computed on the hot path.
    head_replicas: Vec<[Replica; PREFERENCE_LIST_INLINE]>,
    /// `min(PREFERENCE_LIST_INLINE, owning_members)`.
    head_len: usize,
}

/// A member as lookups see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    node: NodeId,
    /// Index of the member's zone among the membership's distinct zones.
    zone: u16,
    shards: u16,
}

/// The replicas for one partition, in preference order: owner first. Holds up to
/// `PREFERENCE_LIST_INLINE` replicas without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceList {
    partition: PartitionId,
    replicas: SmallVec<[Replica; PREFERENCE_LIST_INLINE]>,
}

impl PreferenceList {
    /// The partition these replicas hold.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Whether `node` is among the replicas.
    pub fn contains_node(&self, node: NodeId) -> bool {
        self.replicas.iter().any(|r| r.node == node)
    }
}

impl Deref for PreferenceList {
    type Target = [Replica];

    fn deref(&self) -> &[Replica] {
        &self.replicas
    }
}

/// One partition changing owner between two rings: the old owner streams it to the new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// The partition.
    pub partition: PartitionId,
    /// Its owner in the older ring (possibly a node that has left).
    pub from: NodeId,
    /// Its owner in the newer ring.
    pub to: NodeId,
}

/// How one partition's replica set (its first N preference-list entries) differs between
/// two rings; a change of owner also changes the lists of the N-1 partitions before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaChange {
    /// The partition.
    pub partition: PartitionId,
    /// Replicas in the older list only: they may drop their copy once the new ones have it.
    pub removed: SmallVec<[Replica; PREFERENCE_LIST_INLINE]>,
    /// Replicas in the newer list only: they must receive a copy.
    pub added: SmallVec<[Replica; PREFERENCE_LIST_INLINE]>,
}

impl Ring {
    /// The first ring of a cluster (epoch 1): `q` partitions claimed by `members`.
    pub fn initial(q: u32, members: Vec<Member>) -> Result<Ring, RingError> {
        check_partitions(q)?;
        let members = checked_members(q, members)?;
        let (slots, zone_aware) = slots(&members);
        let zones: Vec<u16> = slots.iter().map(|s| s.zone).collect();
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        let ids: Vec<u64> = members.iter().map(|m| m.id.0).collect();
        let owners = claim::claim(&ids, &weights, &zones, zone_aware, vec![None; q as usize]);
        Ok(Ring::assemble(q, 1, members, slots, zone_aware, owners))
    }

    /// The ring after a membership change (joins, leaves, weight, zone or shard changes),
    /// a deterministic function of `self` and `members`.
    ///
    /// Each member gets partitions in proportion to its weight; partitions move only from
    /// departed members and from members now above their share, to members below it. The
    /// epoch grows by one if anything changed and stays the same otherwise.
    pub fn with_members(&self, members: Vec<Member>) -> Result<Ring, RingError> {
        let members = checked_members(self.q, members)?;
        let (slots, zone_aware) = slots(&members);
        let zones: Vec<u16> = slots.iter().map(|s| s.zone).collect();
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        // Old member index -> new member index, for the members that stay.
        let kept: Vec<Option<u16>> = self
            .members
            .iter()
            .map(|old| {
                members
                    .binary_search_by_key(&old.id, |m| m.id)
                    .ok()
                    .map(|i| i as u16)
            })
            .collect();
        let previous = self.owners.iter().map(|&o| kept[usize::from(o)]).collect();
        let ids: Vec<u64> = members.iter().map(|m| m.id.0).collect();
        let owners = claim::claim(&ids, &weights, &zones, zone_aware, previous);
        let changed = members != self.members
            || owners
                .iter()
                .zip(&self.owners)
                .any(|(&new, &old)| slots[usize::from(new)].node != self.node_of(old));
        let epoch = match changed {
            true => self.epoch.checked_add(1).ok_or(RingError::EpochExhausted)?,
            false => self.epoch,
        };
        Ok(Ring::assemble(
            self.q, epoch, members, slots, zone_aware, owners,
        ))
    }

    /// Rebuilds a ring from a snapshot ([`Ring::q`], [`Ring::epoch`], [`Ring::members`] and
    /// [`Ring::owner_indexes`]), as received by gossip or by a client. The membership is
    /// checked as for a claim; owners are taken as given.
    pub fn from_parts(
        q: u32,
        epoch: u64,
        members: Vec<Member>,
        owner_indexes: Vec<u16>,
    ) -> Result<Ring, RingError> {
        check_partitions(q)?;
        let sorted = checked_members(q, members.clone())?;
        // Owner indexes refer to the snapshot's member order, which must be the ring's own.
        if sorted != members {
            return Err(RingError::MembersNotSorted);
        }
        if owner_indexes.len() != q as usize {
            return Err(RingError::OwnersLength {
                len: owner_indexes.len(),
                q,
            });
        }
        if let Some((p, &index)) = owner_indexes
            .iter()
            .enumerate()
            .find(|(_, &o)| usize::from(o) >= members.len())
        {
            return Err(RingError::OwnerOutOfRange {
                partition: p as u32,
                index,
                members: members.len(),
            });
        }
        let (slots, zone_aware) = slots(&members);
        Ok(Ring::assemble(
            q,
            epoch,
            members,
            slots,
            zone_aware,
            owner_indexes,
        ))
    }

    fn assemble(
        q: u32,
        epoch: u64,
        members: Vec<Member>,
        slots: Vec<Slot>,
        zone_aware: bool,
        owners: Vec<u16>,
    ) -> Ring {
        let mut owns = vec![false; members.len()];
        for &o in &owners {
            owns[usize::from(o)] = true;
        }
        let owning_members = owns.iter().filter(|&&o| o).count();
        let mut zones: Vec<u16> = (0..members.len())
            .filter(|&m| owns[m])
            .map(|m| slots[m].zone)
            .collect();
        zones.sort_unstable();
        zones.dedup();
        let head_replicas = heads(&owners, &slots, zone_aware)
            .iter()
            .enumerate()
            .map(|(p, head)| {
                // Entries past `head_len` are never read; member 0 (or nothing) fills them.
                head.map(|m| match slots.get(usize::from(m)) {
                    Some(slot) => Replica {
                        node: slot.node,
                        shard: shard_for(PartitionId(p as u32), q, slot.shards),
                    },
                    None => Replica {
                        node: NodeId(0),
                        shard: ShardId(0),
                    },
                })
            })
            .collect();
        Ring {
            q,
            epoch,
            members,
            slots,
            owners,
            zone_aware,
            owning_members,
            owning_zones: zones.len(),
            head_replicas,
            head_len: owning_members.min(PREFERENCE_LIST_INLINE),
        }
    }

    /// Q, the number of partitions.
    pub fn q(&self) -> u32 {
        self.q
    }

    /// The epoch: starts at 1 and grows by one with every change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members, sorted by node id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The owner of each partition as an index into [`Ring::members`]: the compact form of
    /// the owners table for snapshots (2 bytes a partition).
    pub fn owner_indexes(&self) -> &[u16] {
        &self.owners
    }

    /// The owner of `partition`.
    pub fn owner(&self, partition: PartitionId) -> NodeId {
        self.node_of(self.owners[self.index(partition)])
    }

    /// Partitions owned by each member, in [`Ring::members`] order.
    pub fn ownership_counts(&self) -> Vec<u32> {
        let mut counts = vec![0; self.members.len()];
        for &o in &self.owners {
            counts[usize::from(o)] += 1;
        }
        counts
    }

    /// The partition holding `key`.
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        partition_of_position(key_position(key), self.q)
    }

    /// The shard of `node` that holds `partition`, if `node` is a member. The same on
    /// every node's replica of a partition and independent of who owns other partitions, so
    /// a partition moves between shards only when its node's shard count changes.
    pub fn shard_of(&self, node: NodeId, partition: PartitionId) -> Option<ShardId> {
        let m = self.members.binary_search_by_key(&node, |m| m.id).ok()?;
        Some(shard_for(partition, self.q, self.slots[m].shards))
    }

    /// The first `n` replicas of `partition`: its owner, then clockwise the next distinct
    /// nodes; when members span several zones, first one node from each zone not yet
    /// present (so with at least `n` zones the `n` replicas are in distinct zones), then
    /// distinct nodes. Fewer than `n` if the ring has fewer members.
    ///
    /// Allocates nothing for `n <= PREFERENCE_LIST_INLINE`, and is then a table lookup.
    pub fn preference_list(&self, partition: PartitionId, n: usize) -> PreferenceList {
        if let Some(head) = self.replicas(partition, n) {
            return PreferenceList {
                partition,
                replicas: SmallVec::from_slice(head),
            };
        }
        let start = self.index(partition);
        let mut picks = FewPicks::default();
        self.walk(start, n, &mut picks);
        PreferenceList {
            partition,
            replicas: picks
                .members
                .iter()
                .map(|&m| self.replica(m, partition))
                .collect(),
        }
    }

    /// The first `n` replicas of `partition`, as [`Ring::preference_list`] gives them, but
    /// borrowed from the ring's precomputed table: nothing is copied, which is what a hot
    /// path that only reads the list wants. `None` when `n` is above
    /// `PREFERENCE_LIST_INLINE` (the table holds no more; use `preference_list`).
    pub fn replicas(&self, partition: PartitionId, n: usize) -> Option<&[Replica]> {
        if n > PREFERENCE_LIST_INLINE {
            return None;
        }
        self.head_replicas
            .get(self.index(partition))?
            .get(..n.min(self.head_len))
    }

    /// `key`'s partition and its first `n` replicas by reference (see [`Ring::replicas`]);
    /// `None` when `n` is above `PREFERENCE_LIST_INLINE`.
    pub fn key_replicas(&self, key: &[u8], n: usize) -> Option<(PartitionId, &[Replica])> {
        let partition = self.partition_of(key);
        Some((partition, self.replicas(partition, n)?))
    }

    /// `key`'s partition and its first `n` replicas (see [`Ring::preference_list`]).
    pub fn key_preference_list(&self, key: &[u8], n: usize) -> PreferenceList {
        self.preference_list(self.partition_of(key), n)
    }

    /// The partitions holding `keys` (`out[i]` = [`Ring::partition_of`]`(keys[i])`), their
    /// MD5s computed several at once ([`key_positions`]): a batch of 16 short keys costs
    /// about what 2-3 keys cost one by one.
    ///
    /// # Panics
    /// If `keys` and `out` differ in length.
    pub fn partitions_of(&self, keys: &[&[u8]], out: &mut [PartitionId]) {
        assert_eq!(keys.len(), out.len(), "one partition per key");
        let mut positions = [0u128; KEYS_PER_PASS];
        for (keys, out) in keys
            .chunks(KEYS_PER_PASS)
            .zip(out.chunks_mut(KEYS_PER_PASS))
        {
            let positions = &mut positions[..keys.len()];
            key_positions(keys, positions);
            for (partition, &position) in out.iter_mut().zip(positions.iter()) {
                *partition = partition_of_position(position, self.q);
            }
        }
    }

    /// The partitions of `keys` and their first `n` replicas by reference, in order, into
    /// `out` (cleared first): [`Ring::key_replicas`] for a batch, hashed as
    /// [`Ring::partitions_of`] does. `None` (with `out` empty) when `n` is above
    /// `PREFERENCE_LIST_INLINE`.
    pub fn keys_replicas<'r>(
        &'r self,
        keys: &[&[u8]],
        n: usize,
        out: &mut Vec<(PartitionId, &'r [Replica])>,
    ) -> Option<()> {
        out.clear();
        if n > PREFERENCE_LIST_INLINE {
            return None;
        }
        let mut partitions = [PartitionId(0); KEYS_PER_PASS];
        for keys in keys.chunks(KEYS_PER_PASS) {
            let partitions = &mut partitions[..keys.len()];
            self.partitions_of(keys, partitions);
            for &partition in partitions.iter() {
                let Some(replicas) = self.replicas(partition, n) else {
                    out.clear();
                    return None;
                };
                out.push((partition, replicas));
            }
        }
        Some(())
    }

    /// The fallbacks of `partition` for sloppy quorum: every member after the first `n` of
    /// its preference order, in that order (the same walk, continued).
    pub fn extended(&self, partition: PartitionId, n: usize) -> Vec<Replica> {
        let start = self.index(partition);
        let mut picks = AllPicks {
            order: Vec::with_capacity(self.owning_members),
            member_seen: vec![false; self.members.len()],
            zone_seen: vec![false; self.members.len()],
        };
        self.walk(start, usize::MAX, &mut picks);
        picks
            .order
            .iter()
            .skip(n)
            .map(|&m| self.replica(m, partition))
            .collect()
    }

    /// The transfer plan from `self` to `next`: every partition whose owner differs, in
    /// partition order.
    pub fn transfers(&self, next: &Ring) -> Result<Vec<Transfer>, RingError> {
        self.check_same_q(next)?;
        Ok((0..self.q)
            .map(PartitionId)
            .filter_map(|p| {
                let (from, to) = (self.owner(p), next.owner(p));
                (from != to).then_some(Transfer {
                    partition: p,
                    from,
                    to,
                })
            })
            .collect())
    }

    /// Every partition whose first `n` replicas differ between `self` and `next`, with the
    /// replicas that leave and join its set (a shard move on the same node counts as both).
    pub fn replica_changes(&self, next: &Ring, n: usize) -> Result<Vec<ReplicaChange>, RingError> {
        self.check_same_q(next)?;
        let mut changes = Vec::new();
        for p in (0..self.q).map(PartitionId) {
            let (old, new) = (self.preference_list(p, n), next.preference_list(p, n));
            if old == new {
                continue;
            }
            let removed: SmallVec<_> = old.iter().filter(|r| !new.contains(r)).copied().collect();
            let added: SmallVec<_> = new.iter().filter(|r| !old.contains(r)).copied().collect();
            if !removed.is_empty() || !added.is_empty() {
                changes.push(ReplicaChange {
                    partition: p,
                    removed,
                    added,
                });
            }
        }
        Ok(changes)
    }

    fn check_same_q(&self, other: &Ring) -> Result<(), RingError> {
        match self.q == other.q {
            true => Ok(()),
            false => Err(RingError::PartitionsMismatch(self.q, other.q)),
        }
    }

    /// `partition` as an index into the owners table. Partition ids come from this ring's
    /// own lookups (callers check ids from the wire against [`Ring::q`]); in release builds
    /// one out of range is wrapped rather than allowed to panic.
    fn index(&self, partition: PartitionId) -> usize {
        debug_assert!(partition.0 < self.q, "{partition:?} of {}", self.q);
        (partition.0 & (self.q - 1)) as usize
    }

    fn node_of(&self, member: u16) -> NodeId {
        self.slots[usize::from(member)].node
    }

    fn replica(&self, member: u16, partition: PartitionId) -> Replica {
        let slot = self.slots[usize::from(member)];
        Replica {
            node: slot.node,
            shard: shard_for(partition, self.q, slot.shards),
        }
    }

    /// Walks clockwise from partition `start`, adding owners to `picks` until it holds
    /// `limit` members: first one member per zone not yet picked (when zone-aware), then any
    /// member not yet picked. Each pass stops early once nothing is left to find, and is
    /// bounded by Q steps.
    fn walk(&self, start: usize, limit: usize, picks: &mut impl Picks) {
        let limit = limit.min(self.owning_members);
        let mask = self.owners.len() - 1;
        if self.zone_aware {
            let zone_limit = limit.min(self.owning_zones);
            for step in 0..self.owners.len() {
                if picks.len() >= zone_limit {
                    break;
                }
                let m = self.owners[(start + step) & mask];
                let zone = self.slots[usize::from(m)].zone;
                if !picks.has_zone(zone) {
                    picks.push(m, zone);
                }
            }
        }
        for step in 0..self.owners.len() {
            if picks.len() >= limit {
                break;
            }
            let m = self.owners[(start + step) & mask];
            if !picks.has_member(m) {
                picks.push(m, self.slots[usize::from(m)].zone);
            }
        }
    }
}

/// The first `PREFERENCE_LIST_INLINE` members of every partition's walk (see
/// [`Ring::walk`]), in one backward sweep over two laps of the ring instead of a walk per
/// partition (which, on a ring where a few members own almost nothing, could cost Q steps
/// each).
///
/// The sweep keeps, at each position, the first members of distinct nodes clockwise from
/// it (`nodes`) and the first member of each distinct zone (`zones`): each is the owner
/// at the position followed by the next position's list without that owner (or its zone),
/// truncated. Starting a lap early makes every list of the second lap exact. A walk is
/// then the zone list (when zone-aware) followed by the node list without those members.
fn heads(owners: &[u16], slots: &[Slot], zone_aware: bool) -> Vec<[u16; PREFERENCE_LIST_INLINE]> {
    let q = owners.len();
    let zone = |m: u16| slots[usize::from(m)].zone;
    let mut heads = vec![[0u16; PREFERENCE_LIST_INLINE]; q];
    let mut nodes: SmallVec<[u16; PREFERENCE_LIST_INLINE]> = SmallVec::new();
    let mut zones: SmallVec<[u16; PREFERENCE_LIST_INLINE]> = SmallVec::new();
    for i in (0..2 * q).rev() {
        let owner = owners[i % q];
        nodes.retain(|m| *m != owner);
        nodes.insert(0, owner);
        nodes.truncate(PREFERENCE_LIST_INLINE);
        if zone_aware {
            zones.retain(|m| zone(*m) != zone(owner));
            zones.insert(0, owner);
            zones.truncate(PREFERENCE_LIST_INLINE);
        }
        if i < q {
            let mut picks = FewPicks::default();
            for &m in zones.iter().chain(&nodes) {
                if picks.len() < nodes.len() && !picks.has_member(m) {
                    picks.push(m, zone(m));
                }
            }
            heads[i][..picks.len()].copy_from_slice(&picks.members);
        }
    }
    heads
}

/// Keys hashed together by the batched lookups' stack buffers: the widest path's lanes
/// (AVX-512's 16), so each chunk fills one pass.
const KEYS_PER_PASS: usize = 16;

/// The shard of a node with `shards` shards that holds `partition` on a ring of `q`
/// partitions. Depends on nothing else, so a partition stays on its shard when other
/// partitions move, and only a change of the node's shard count moves it.
///
/// The partition id is scrambled by a bijection of 0..q, then scaled to the shard count:
/// the bijection makes the whole ring split exactly evenly over any shard count (to within
/// one partition), and the scrambling spreads the partitions one node owns, which follow
/// the claim's patterns, evenly over its shards.
fn shard_for(partition: PartitionId, q: u32, shards: u16) -> ShardId {
    let bits = q.trailing_zeros();
    let mask = q - 1;
    let mut x = partition.0 & mask;
    // Multiplying by an odd number modulo 2^bits, and xoring with a right shift of itself,
    // are both one-to-one on `bits`-bit numbers; two rounds mix high and low bits.
    for odd in [0x9e37_79b1u32, 0x85eb_ca6b] {
        x = x.wrapping_mul(odd) & mask;
        x ^= x >> (bits / 2 + 1);
    }
    // x < 2^bits, so (x * shards) >> bits is below shards and fits in u16.
    ShardId(((u64::from(x) * u64::from(shards)) >> bits) as u16)
}

fn check_partitions(q: u32) -> Result<(), RingError> {
    if !q.is_power_of_two() {
        return Err(RingError::PartitionsNotPowerOfTwo(q));
    }
    if q > PARTITIONS_MAX {
        return Err(RingError::TooManyPartitions {
            q,
            max: PARTITIONS_MAX,
        });
    }
    Ok(())
}

/// The membership checked against the limits and sorted by node id.
fn checked_members(q: u32, mut members: Vec<Member>) -> Result<Vec<Member>, RingError> {
    if members.is_empty() {
        return Err(RingError::EmptyMembership);
    }
    let max = MEMBERS_MAX.min(q as usize);
    if members.len() > max {
        return Err(RingError::TooManyMembers {
            members: members.len(),
            max,
        });
    }
    for m in &members {
        if m.weight == 0 {
            return Err(RingError::ZeroWeight(m.id));
        }
        if m.shards == 0 {
            return Err(RingError::ZeroShards(m.id));
        }
        if m.shards > NODE_SHARDS_MAX {
            return Err(RingError::TooManyShards {
                node: m.id,
                shards: m.shards,
                max: NODE_SHARDS_MAX,
            });
        }
        if let Some(zone) = &m.zone {
            if zone.len() > ZONE_NAME_BYTES_MAX {
                return Err(RingError::ZoneNameTooLong {
                    node: m.id,
                    len: zone.len(),
                    max: ZONE_NAME_BYTES_MAX,
                });
            }
        }
    }
    members.sort_by_key(|m| m.id);
    if let Some(pair) = members.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(RingError::DuplicateNode(pair[0].id));
    }
    Ok(members)
}

/// The hot-path view of each member, and whether there are zones to spread.
fn slots(members: &[Member]) -> (Vec<Slot>, bool) {
    let mut zones: Vec<Option<&str>> = members.iter().map(|m| m.zone.as_deref()).collect();
    zones.sort_unstable();
    zones.dedup();
    let slots = members
        .iter()
        .map(|m| Slot {
            node: m.id,
            zone: zones
                .binary_search(&m.zone.as_deref())
                .expect("every zone was collected") as u16,
            shards: m.shards,
        })
        .collect();
    (slots, zones.len() >= 2)
}

/// The members a walk has picked so far.
trait Picks {
    fn len(&self) -> usize;
    fn has_member(&self, member: u16) -> bool;
    fn has_zone(&self, zone: u16) -> bool;
    fn push(&mut self, member: u16, zone: u16);
}

/// Picks for a short walk: linear scans of a few inline entries beat any set.
#[derive(Default)]
struct FewPicks {
    members: SmallVec<[u16; PREFERENCE_LIST_INLINE]>,
    zones: SmallVec<[u16; PREFERENCE_LIST_INLINE]>,
}

impl Picks for FewPicks {
    fn len(&self) -> usize {
        self.members.len()
    }
    fn has_member(&self, member: u16) -> bool {
        self.members.contains(&member)
    }
    fn has_zone(&self, zone: u16) -> bool {
        self.zones.contains(&zone)
    }
    fn push(&mut self, member: u16, zone: u16) {
        self.members.push(member);
        self.zones.push(zone);
    }
}

/// Picks for a walk over the whole membership.
struct AllPicks {
    order: Vec<u16>,
    member_seen: Vec<bool>,
    /// Indexed by zone index; zones are never more than members.
    zone_seen: Vec<bool>,
}

impl Picks for AllPicks {
    fn len(&self) -> usize {
        self.order.len()
    }
    fn has_member(&self, member: u16) -> bool {
        self.member_seen[usize::from(member)]
    }
    fn has_zone(&self, zone: u16) -> bool {
        self.zone_seen[usize::from(zone)]
    }
    fn push(&mut self, member: u16, zone: u16) {
        self.order.push(member);
        self.member_seen[usize::from(member)] = true;
        self.zone_seen[usize::from(zone)] = true;
    }
}

#[cfg(test)]
mod tests;
