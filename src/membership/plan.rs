//! A staged membership change, Riak style: changes are staged into a [`Plan`], previewed
//! as the next ring and the replica moves it causes ([`Plan::preview`]), and committed
//! ([`Plan::commit`]) as the ring the cluster then gossips.
//!
//! Place in the flow: the admin CLI stages (`join`, `leave`, `remove`, weight changes),
//! shows the [`Preview`] (`plan`), and commits; the committed ring's [`ReplicaMove`]s are
//! what the shards' [`super::Handoff`]s carry out. A preview is a pure function of the
//! current ring, the staged changes and N, so every node computes the same one.

use std::collections::{BTreeMap, BTreeSet};

use crate::constants::PLAN_CHANGES_MAX;
use crate::ring::{Member, NodeId, PartitionId, Replica, Ring, RingError};

/// One staged membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new node joins with this state (weight, zone, shards).
    Join(Member),
    /// A live member leaves: it streams its replicas to their new holders itself.
    Leave(NodeId),
    /// A dead member is removed: its replicas are refilled from the surviving replicas.
    Remove(NodeId),
    /// A member's weight changes (heterogeneity): partitions move toward heavier nodes.
    Reweight {
        /// The member.
        node: NodeId,
        /// Its new weight, >= 1.
        weight: u32,
    },
}

impl Change {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            Change::Join(member) => member.id,
            Change::Leave(node) | Change::Remove(node) => *node,
            Change::Reweight { node, .. } => *node,
        }
    }
}

/// Why a plan was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Nothing is staged.
    #[error("no change is staged")]
    Empty,
    /// More than `PLAN_CHANGES_MAX` changes.
    #[error("at most {max} changes fit in one plan")]
    TooManyChanges {
        /// `PLAN_CHANGES_MAX`.
        max: usize,
    },
    /// Two staged changes name the same node.
    #[error("node {0:?} already has a staged change")]
    DuplicateChange(NodeId),
    /// A leave, removal or weight change names a node that is not a member.
    #[error("node {0:?} is not a member")]
    UnknownNode(NodeId),
    /// A join names a node that is already a member.
    #[error("node {0:?} is already a member")]
    AlreadyMember(NodeId),
    /// The plan would leave no member.
    #[error("the plan removes the last node")]
    LastNode,
    /// The plan shrinks the cluster below N nodes.
    #[error("{nodes} nodes would remain, fewer than N = {n}")]
    TooFewNodes {
        /// Members after the change.
        nodes: usize,
        /// Replicas per partition.
        n: usize,
    },
    /// Every replica of a partition is removed at once, so no one can stream it: remove
    /// dead nodes in separate plans, letting each one's transfers finish first.
    #[error("every replica of partition {0:?} is removed")]
    NoSource(PartitionId),
    /// The ring refused the new membership (zero weight, too many members, ...).
    #[error("ring: {0}")]
    Ring(#[from] RingError),
}

/// Membership changes staged for review, applied together by [`Plan::commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the order staged (the preview does not depend on it).
    changes: Vec<Change>,
}

/// What a plan would do: the next ring and every replica that moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The ring after the plan (the current epoch + 1).
    pub ring: Ring,
    /// Every replica move, in partition order.
    pub moves: Vec<ReplicaMove>,
    /// Partitions whose replica set changes.
    pub partitions_moving: u32,
    /// Per node of either ring, in node order: replicas it sends and receives.
    pub per_node: Vec<NodeMoves>,
}

/// One partition replica moving to a new holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The partition.
    pub partition: PartitionId,
    /// The replica that streams it: the one leaving the set if it is alive, else a
    /// surviving replica of the current ring.
    pub from: Replica,
    /// The new holder.
    pub to: Replica,
    /// Whether `from` leaves the partition's replica set, and so drops its copy once the
    /// move has flipped.
    pub drop_after: bool,
}

/// One node's share of a plan's moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMoves {
    /// The node.
    pub node: NodeId,
    /// Replicas it streams to others.
    pub sending: u32,
    /// Replicas it receives.
    pub receiving: u32,
    /// Partitions it owns (first in the preference list) before the plan.
    pub owned_before: u32,
    /// Partitions it owns after the plan.
    pub owned_after: u32,
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Self {
        Plan::default()
    }

    /// The staged changes, in the order staged.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Stages a change; refuses a second change about the same node and more than
    /// `PLAN_CHANGES_MAX`. Whether the change fits the ring is checked by the preview.
    pub fn stage(&mut self, change: Change) -> Result<(), PlanError> {
        if self.changes.iter().any(|c| c.node() == change.node()) {
            return Err(PlanError::DuplicateChange(change.node()));
        }
        if self.changes.len() >= PLAN_CHANGES_MAX {
            return Err(PlanError::TooManyChanges {
                max: PLAN_CHANGES_MAX,
            });
        }
        self.changes.push(change);
        Ok(())
    }

    /// Drops every staged change (`rotor admin clear`).
    pub fn clear(&mut self) {
        self.changes.clear();
    }

    /// The next ring and the moves from `current` to it, for N replicas per partition.
    pub fn preview(&self, current: &Ring, n: usize) -> Result<Preview, PlanError> {
        let (members, removed) = self.next_members(current, n)?;
        let ring = current.with_members(members)?;
        let changes = current.replica_changes(&ring, n)?;
        let mut moves = Vec::new();
        for change in &changes {
            let old = current.preference_list(change.partition, n);
            // A source must be alive: a surviving replica of the current ring, preferring
            // one that stays in the set.
            let survivor = old
                .iter()
                .filter(|r| !removed.contains(&r.node))
                .min_by_key(|r| change.removed.contains(r))
                .copied();
            for (leaving, to) in pairs(&change.removed, &change.added) {
                let (from, drop_after) = match leaving {
                    Some(r) if !removed.contains(&r.node) => (r, true),
                    _ => (
                        survivor.ok_or(PlanError::NoSource(change.partition))?,
                        false,
                    ),
                };
                moves.push(ReplicaMove {
                    partition: change.partition,
                    from,
                    to,
                    drop_after,
                });
            }
        }
        let per_node = per_node(current, &ring, &moves);
        Ok(Preview {
            partitions_moving: u32::try_from(changes.len()).unwrap_or(u32::MAX),
            ring,
            moves,
            per_node,
        })
    }

    /// The ring to gossip: the preview's, once more checked against `current`.
    pub fn commit(self, current: &Ring, n: usize) -> Result<Ring, PlanError> {
        Ok(self.preview(current, n)?.ring)
    }

    /// The membership after the plan, and the nodes removed as dead.
    fn next_members(
        &self,
        current: &Ring,
        n: usize,
    ) -> Result<(Vec<Member>, BTreeSet<NodeId>), PlanError> {
        if self.changes.is_empty() {
            return Err(PlanError::Empty);
        }
        let mut members: BTreeMap<NodeId, Member> = current
            .members()
            .iter()
            .map(|m| (m.id, m.clone()))
            .collect();
        let mut seen = BTreeSet::new();
        let mut removed = BTreeSet::new();
        for change in &self.changes {
            let node = change.node();
            if !seen.insert(node) {
                return Err(PlanError::DuplicateChange(node));
            }
            match change {
                Change::Join(member) => {
                    if members.insert(node, member.clone()).is_some() {
                        return Err(PlanError::AlreadyMember(node));
                    }
                }
                Change::Leave(_) | Change::Remove(_) => {
                    members.remove(&node).ok_or(PlanError::UnknownNode(node))?;
                    if matches!(change, Change::Remove(_)) {
                        removed.insert(node);
                    }
                }
                Change::Reweight { weight, .. } => {
                    let member = members.get_mut(&node).ok_or(PlanError::UnknownNode(node))?;
                    member.weight = *weight;
                }
            }
        }
        let (before, after) = (current.members().len(), members.len());
        if after == 0 {
            return Err(PlanError::LastNode);
        }
        // A cluster smaller than N (N is clamped to it) may grow, but none may shrink
        // below N: partitions would lose replicas.
        if after < n && after < before {
            return Err(PlanError::TooFewNodes { nodes: after, n });
        }
        Ok((members.into_values().collect(), removed))
    }
}

/// Pairs each replica leaving a partition's set with one joining it: a shard move on the
/// same node first, then in preference order. A joiner without a leaver (the set grows)
/// gets `None`; a leaver without a joiner cannot happen, as a plan never shrinks the
/// cluster below N, and would need no move anyway.
fn pairs(removed: &[Replica], added: &[Replica]) -> Vec<(Option<Replica>, Replica)> {
    let mut leavers: Vec<Replica> = removed.to_vec();
    let mut out = Vec::with_capacity(added.len());
    let mut rest = Vec::new();
    for &to in added {
        match leavers.iter().position(|r| r.node == to.node) {
            Some(i) => out.push((Some(leavers.remove(i)), to)),
            None => rest.push(to),
        }
    }
    let mut leavers = leavers.into_iter();
    out.extend(rest.into_iter().map(|to| (leavers.next(), to)));
    out.sort_by_key(|&(_, to)| added.iter().position(|a| *a == to));
    out
}

fn per_node(current: &Ring, next: &Ring, moves: &[ReplicaMove]) -> Vec<NodeMoves> {
    let mut nodes: BTreeMap<NodeId, NodeMoves> = BTreeMap::new();
    for (ring, before) in [(current, true), (next, false)] {
        for (member, &owned) in ring.members().iter().zip(&ring.ownership_counts()) {
            let entry = nodes.entry(member.id).or_insert(NodeMoves {
                node: member.id,
                sending: 0,
                receiving: 0,
                owned_before: 0,
                owned_after: 0,
            });
            match before {
                true => entry.owned_before = owned,
                false => entry.owned_after = owned,
            }
        }
    }
    for m in moves {
        if let Some(entry) = nodes.get_mut(&m.from.node) {
            entry.sending += 1;
        }
        if let Some(entry) = nodes.get_mut(&m.to.node) {
            entry.receiving += 1;
        }
    }
    nodes.into_values().collect()
}
