//! The claim: which member owns each partition (Dynamo's strategy 3, weighted).
//!
//! Called by [`Ring::initial`](super::Ring::initial) and
//! [`Ring::with_members`](super::Ring::with_members); pure and deterministic, so every node
//! that computes a claim from the same previous ring and membership gets the same owners.
//!
//! How it works:
//! 1. Quotas: each member's exact share of Q by weight, rounded by largest remainder (ties
//!    to the lower node id), with at least one partition each. Quotas depend only on the
//!    membership, so balance never drifts over a history of joins and leaves.
//! 2. Keep: every partition whose previous owner is still a member stays put...
//! 3. Release: ...unless that owner now holds more than its quota; it then frees its
//!    surplus, preferring in turn: partitions where it breaks the spread (see below);
//!    partitions a member below quota could take without repeating a node or a zone, away
//!    from other free partitions; the same allowing a zone repeat; then next to free
//!    partitions; then any. Each pass goes in bit-reversed order, so freed partitions are
//!    spread round the ring rather than bunched.
//! 4. Fill: free partitions, in ascending order, go to members below quota: the candidate
//!    that breaks the spread least, then the one furthest behind its quota (relative to it),
//!    then a hash of (partition, node id). The hash makes each round of an initial claim a
//!    different order of the members, so a node's neighbours vary round the ring and the
//!    partitions it leaves behind can go to many members without breaking the spread
//!    (a fixed round robin would leave them between the same two pairs of nodes).
//! 5. Repair: owners of partitions that still break the spread are swapped with those of
//!    other moved partitions (free of cost: both move anyway), and, for a node owning two
//!    adjacent partitions, as a last resort with a kept partition (one extra move; at most
//!    one for every 8 moves the change needs, so a change moves at most 9/8 of the minimum).
//!
//! The spread: any [`CLAIM_SPREAD`] consecutive partitions should have distinct owners, and
//! distinct zones when zones are set, so a preference list is the next partitions clockwise
//! and fallbacks are not bunched on one node. It is a goal, not a guarantee (two equal nodes
//! cannot give three consecutive partitions distinct owners); preference lists skip
//! repeated nodes in any case.

use crate::constants::CLAIM_SPREAD;

/// Cost of one node repeated at distance 1 within the spread, relative to a zone repeated
/// at the same distance: node repeats always weigh more than any number of zone repeats.
const NODE_REPEAT_COST: u32 = 16;

/// Swap candidates the repair may look at, per partition of the ring. Bounds the claim's
/// time where the spread is impossible (a member or zone heavier than 1/CLAIM_SPREAD of the
/// ring), where repair could otherwise try every pair of partitions.
const REPAIR_EVALUATIONS_PER_PARTITION: usize = 64;

/// The repair may move one kept partition for every this many partitions that must move
/// anyway: a bound on what avoiding adjacent repeats may cost in transfers.
const REPAIR_EXTRA_MOVE_PER: usize = 8;

/// Each member's quota of partitions: its share of `q` by weight, largest remainder first
/// (ties to the lower index), and at least one each. Needs `q >= weights.len() > 0`.
pub(super) fn quotas(q: u32, weights: &[u32]) -> Vec<u32> {
    debug_assert!(!weights.is_empty() && weights.len() <= q as usize);
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut quotas = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for &w in weights {
        // q <= 2^16 and w < 2^32: the product fits in u64, the quotient is at most q.
        let exact = u64::from(q) * u64::from(w);
        quotas.push((exact / total) as u32);
        remainders.push(exact % total);
    }
    let left = q - quotas.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]).then(a.cmp(&b)));
    for &i in order.iter().take(left as usize) {
        quotas[i] += 1;
    }
    // A member too light for even one partition still gets one, from the largest quota:
    // a member owning nothing would never appear in a preference list.
    for i in 0..quotas.len() {
        if quotas[i] == 0 {
            let donor = (0..quotas.len())
                .max_by(|&a, &b| quotas[a].cmp(&quotas[b]).then(b.cmp(&a)))
                .expect("weights is not empty");
            quotas[donor] -= 1;
            quotas[i] = 1;
        }
    }
    quotas
}

/// Owner (member index) of every partition: `previous[p]` is the index, in the new
/// membership, of partition p's previous owner if that owner is still a member. `zones[m]`
/// is member m's zone index; `zone_aware` says whether zones are to be spread at all.
pub(super) fn claim(
    ids: &[u64],
    weights: &[u32],
    zones: &[u16],
    zone_aware: bool,
    previous: Vec<Option<u16>>,
) -> Vec<u16> {
    let q = previous.len();
    let quotas = quotas(q as u32, weights);
    let mut claim = Claim {
        ids,
        zones,
        zone_aware,
        counts: vec![0; weights.len()],
        moved: previous.iter().map(Option::is_none).collect(),
        owners: previous,
        quotas,
    };
    for m in claim.owners.iter().flatten() {
        claim.counts[usize::from(*m)] += 1;
    }
    claim.release();
    claim.fill();
    claim.repair();
    claim
        .owners
        .into_iter()
        .map(|o| o.expect("fill gives every partition an owner"))
        .collect()
}

/// The claim in progress.
struct Claim<'a> {
    ids: &'a [u64],
    zones: &'a [u16],
    zone_aware: bool,
    quotas: Vec<u32>,
    /// Partitions each member owns now.
    counts: Vec<u32>,
    /// Owner of each partition; `None` while free.
    owners: Vec<Option<u16>>,
    /// Partitions whose owner changes: freed, released or swapped.
    moved: Vec<bool>,
}

impl Claim<'_> {
    fn q(&self) -> usize {
        self.owners.len()
    }

    /// Partition `p + offset`, clockwise, wrapping round the ring.
    fn at(&self, p: usize, offset: isize) -> usize {
        let q = self.q() as isize;
        (p as isize + offset).rem_euclid(q) as usize
    }

    /// Step 3: members above quota free their surplus.
    fn release(&mut self) {
        let mut surplus: Vec<u32> = self
            .counts
            .iter()
            .zip(&self.quotas)
            .map(|(&c, &quota)| c.saturating_sub(quota))
            .collect();
        if surplus.iter().all(|&s| s == 0) {
            return;
        }
        let order = bit_reversed(self.q());
        // Pass 0 frees partitions that repeat a node within the spread (fixing them for
        // free); pass 1 those some member below quota could take without repeating a node
        // or a zone, with no free partition nearby (two free partitions close together
        // would likely go to the same joining node); pass 2 lets the taker repeat a zone;
        // pass 3 allows free partitions nearby; pass 4 takes whatever is left.
        for pass in 0..5 {
            for &p in &order {
                let Some(m) = self.owners[p] else { continue };
                if surplus[usize::from(m)] == 0 {
                    continue;
                }
                let eligible = match pass {
                    0 => self.cost(p, m).0 > 0,
                    1 => !self.free_nearby(p) && self.clean_taker(p, true),
                    2 => !self.free_nearby(p) && self.clean_taker(p, false),
                    3 => self.clean_taker(p, false),
                    _ => true,
                };
                if eligible {
                    self.owners[p] = None;
                    self.moved[p] = true;
                    self.counts[usize::from(m)] -= 1;
                    surplus[usize::from(m)] -= 1;
                }
            }
        }
    }

    /// Whether a partition within the spread of `p` is free.
    fn free_nearby(&self, p: usize) -> bool {
        (1..CLAIM_SPREAD as isize)
            .any(|d| self.owners[self.at(p, d)].is_none() || self.owners[self.at(p, -d)].is_none())
    }

    /// Whether a member below quota could take partition `p` without repeating a node
    /// within the spread (nor a zone, if `zones_too`).
    fn clean_taker(&self, p: usize, zones_too: bool) -> bool {
        (0..self.quotas.len()).any(|m| {
            let (node, zone) = self.cost(p, m as u16);
            self.counts[m] < self.quotas[m] && node == 0 && (zone == 0 || !zones_too)
        })
    }

    /// Step 4: every free partition goes to a member below quota.
    fn fill(&mut self) {
        for p in 0..self.q() {
            if self.owners[p].is_some() {
                continue;
            }
            let mut best: Option<(u16, (u32, u32))> = None;
            for m in 0..self.quotas.len() {
                if self.counts[m] >= self.quotas[m] {
                    continue;
                }
                let m = m as u16;
                let cost = self.cost(p, m);
                let better = match best {
                    None => true,
                    Some((b, best_cost)) => {
                        cost < best_cost || (cost == best_cost && self.before(p, m, b))
                    }
                };
                if better {
                    best = Some((m, cost));
                }
            }
            let (m, _) = best.expect("quotas sum to q, so a free partition has a taker");
            self.owners[p] = Some(m);
            self.counts[usize::from(m)] += 1;
        }
    }

    /// Whether member `a` should take free partition `p` before `b` at equal cost: the one
    /// further behind its quota relative to it ((quota - count) / quota, compared by
    /// cross-multiplication), then the lower hash of (partition, node id).
    fn before(&self, p: usize, a: u16, b: u16) -> bool {
        let (a, b) = (usize::from(a), usize::from(b));
        let lag_a = u64::from(self.quotas[a] - self.counts[a]) * u64::from(self.quotas[b]);
        let lag_b = u64::from(self.quotas[b] - self.counts[b]) * u64::from(self.quotas[a]);
        lag_a > lag_b
            || (lag_a == lag_b && (tiebreak(p, self.ids[a]), a) < (tiebreak(p, self.ids[b]), b))
    }

    /// What giving partition `p` to member `m` costs against the spread, as (node repeats,
    /// zone repeats), each weighted by closeness: a repeat at distance d costs
    /// `CLAIM_SPREAD - d`. Free partitions cost nothing.
    fn cost(&self, p: usize, m: u16) -> (u32, u32) {
        let (mut node, mut zone) = (0, 0);
        for d in 1..CLAIM_SPREAD {
            let weight = (CLAIM_SPREAD - d) as u32;
            for neighbour in [self.at(p, d as isize), self.at(p, -(d as isize))] {
                if neighbour == p {
                    continue; // a ring smaller than the spread
                }
                let Some(other) = self.owners[neighbour] else {
                    continue;
                };
                if other == m {
                    node += weight;
                } else if self.zone_aware
                    && self.zones[usize::from(other)] == self.zones[usize::from(m)]
                {
                    zone += weight;
                }
            }
        }
        (node, zone)
    }

    /// Cost of partition `p` as it stands, node repeats weighing more than zone repeats.
    fn total_cost(&self, p: usize) -> u32 {
        match self.owners[p] {
            Some(m) => {
                let (node, zone) = self.cost(p, m);
                node * NODE_REPEAT_COST + zone
            }
            None => 0,
        }
    }

    /// Step 5: swap owners to take out what the greedy fill could not avoid.
    fn repair(&mut self) {
        let mut budget = self.q() * REPAIR_EVALUATIONS_PER_PARTITION;
        let mut moved: Vec<usize> = (0..self.q()).filter(|&p| self.moved[p]).collect();
        let mut extra_moves = moved.len() / REPAIR_EXTRA_MOVE_PER;
        let kept: Vec<usize> = (0..self.q()).filter(|&p| !self.moved[p]).collect();
        for p in 0..self.q() {
            if budget == 0 {
                break;
            }
            let Some(owner) = self.owners[p] else {
                continue;
            };
            // A member with more than half the ring repeats next to itself whatever we do.
            let hopeless = 2 * self.quotas[usize::from(owner)] as usize > self.q();
            if !self.moved[p] || hopeless || self.total_cost(p) == 0 {
                continue;
            }
            // First among partitions that move anyway, then, only for a node owning two
            // adjacent partitions, among kept ones, where a swap costs one more move.
            if self.swap_best(p, &moved, &mut budget).is_some() {
                continue;
            }
            if self.adjacent_repeat(p) && extra_moves > 0 {
                if let Some(h) = self.swap_best(p, &kept, &mut budget) {
                    extra_moves -= 1;
                    self.moved[h] = true;
                    moved.push(h);
                }
            }
        }
    }

    /// Whether `p`'s owner also owns a partition next to it.
    fn adjacent_repeat(&self, p: usize) -> bool {
        let owner = self.owners[p];
        owner.is_some()
            && (self.owners[self.at(p, 1)] == owner || self.owners[self.at(p, -1)] == owner)
    }

    fn cost_of_owner(&self, p: usize) -> (u32, u32) {
        self.owners[p].map_or((0, 0), |m| self.cost(p, m))
    }

    /// Swaps `p`'s owner with that of the candidate partition that lowers their combined
    /// cost the most, if any does; a kept candidate must also lower node repeats. Every
    /// candidate looked at is charged to `budget`. Returns the partition swapped with.
    fn swap_best(&mut self, p: usize, candidates: &[usize], budget: &mut usize) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for &h in candidates {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            if h == p || self.owners[h] == self.owners[p] || self.owners[h].is_none() {
                continue;
            }
            let before = self.total_cost(p) + self.total_cost(h);
            let node_before = self.cost_of_owner(p).0 + self.cost_of_owner(h).0;
            self.owners.swap(p, h);
            let after = self.total_cost(p) + self.total_cost(h);
            let node_after = self.cost_of_owner(p).0 + self.cost_of_owner(h).0;
            self.owners.swap(p, h);
            let gain = before.saturating_sub(after);
            // Only a node repeat justifies moving a kept partition.
            let worth = after < before && (self.moved[h] || node_after < node_before);
            if worth && best.is_none_or(|(_, g)| gain > g) {
                best = Some((h, gain));
            }
        }
        let (h, _) = best?;
        self.owners.swap(p, h);
        Some(h)
    }
}

/// A well-mixed hash of (partition, node id) for tie-breaking: a fixed pseudo-random order
/// of the members at each partition.
fn tiebreak(p: usize, id: u64) -> u64 {
    // The finaliser of SplitMix64 over the two inputs.
    let mut z = (p as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Partitions 0..q (q a power of two) in bit-reversed order: 0, q/2, q/4, 3q/4, ... Any
/// prefix of it is spread evenly round the ring.
fn bit_reversed(q: usize) -> Vec<usize> {
    let bits = q.trailing_zeros();
    (0..q)
        .map(|i| {
            i.reverse_bits()
                .checked_shr(usize::BITS - bits)
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_largest_remainder_shares() {
        assert_eq!(quotas(1024, &[1, 1, 1]), vec![342, 341, 341]);
        assert_eq!(quotas(1024, &[1; 8]), vec![128; 8]);
        assert_eq!(
            quotas(1024, &[2, 1, 1, 1, 1, 1]),
            vec![293, 147, 146, 146, 146, 146]
        );
        assert_eq!(quotas(8, &[1000, 1, 1]), vec![6, 1, 1]);
        assert_eq!(quotas(1, &[7]), vec![1]);
    }

    #[test]
    fn bit_reversed_order_is_a_permutation() {
        assert_eq!(bit_reversed(8), vec![0, 4, 2, 6, 1, 5, 3, 7]);
        assert_eq!(bit_reversed(1), vec![0]);
        let mut all = bit_reversed(1024);
        all.sort_unstable();
        assert_eq!(all, (0..1024).collect::<Vec<_>>());
    }

    #[test]
    fn initial_claim_of_equal_nodes_goes_in_rounds() {
        let owners = claim(&[10, 11, 12, 13], &[1; 4], &[0; 4], false, vec![None; 16]);
        for round in owners.chunks(4) {
            let mut sorted = round.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
        }
    }
}
