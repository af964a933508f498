//! Plans over real rings, and transfers between in-memory replicas driven message by
//! message (with messages lost, duplicated and written around on purpose).

use std::collections::{BTreeSet, VecDeque};

use super::*;
use crate::antientropy::MerkleView;
use crate::causal::{Actor, CausalState, SiblingLimits, Value};
use crate::coordinator::{MemDurability, MemStore, ReplicaStore};
use crate::ring::{Member, NodeId, PartitionId, Ring, ShardId};

// --- plans ---------------------------------------------------------------------------

fn members(ids: &[u64]) -> Vec<Member> {
    ids.iter()
        .map(|&id| Member::new(NodeId(id), 1, 4))
        .collect()
}

fn ring(ids: &[u64]) -> Ring {
    Ring::initial(1024, members(ids)).expect("ring")
}

fn plan(changes: Vec<Change>) -> Plan {
    let mut plan = Plan::new();
    for change in changes {
        plan.stage(change).expect("stage");
    }
    plan
}

/// Every partition of `ring` has `n` replicas on distinct nodes.
fn assert_n_distinct(ring: &Ring, n: usize) {
    for p in (0..ring.q()).map(PartitionId) {
        let list = ring.preference_list(p, n);
        let nodes: BTreeSet<NodeId> = list.iter().map(|r| r.node).collect();
        assert_eq!((list.len(), nodes.len()), (n, n), "partition {p:?}");
    }
}

/// Applying the moves to the current replica sets gives the next ring's sets.
fn assert_moves_explain(current: &Ring, preview: &Preview, n: usize) {
    for p in (0..current.q()).map(PartitionId) {
        let mut set: BTreeSet<(u64, u16)> = current
            .preference_list(p, n)
            .iter()
            .map(|r| (r.node.0, r.shard.0))
            .collect();
        for m in preview.moves.iter().filter(|m| m.partition == p) {
            assert!(set.insert((m.to.node.0, m.to.shard.0)), "{m:?}");
        }
        let next: BTreeSet<(u64, u16)> = preview
            .ring
            .preference_list(p, n)
            .iter()
            .map(|r| (r.node.0, r.shard.0))
            .collect();
        assert!(next.is_subset(&set), "partition {p:?}");
        assert_eq!(set.len() - next.len(), {
            preview
                .moves
                .iter()
                .filter(|m| m.partition == p && m.drop_after)
                .count()
        });
    }
}

#[test]
fn a_fourth_equal_node_receives_a_quarter_of_the_replicas_and_nothing_else_moves() {
    let current = ring(&[1, 2, 3]);
    let preview = plan(vec![Change::Join(Member::new(NodeId(4), 1, 4))])
        .preview(&current, 3)
        .expect("preview");

    assert_eq!(preview.ring.epoch(), current.epoch() + 1);
    assert_n_distinct(&preview.ring, 3);
    assert_moves_explain(&current, &preview, 3);
    // Node 4 owns 256 of 1024 partitions and enters the replica sets of 767 (one short of
    // the ideal 3 x 1024 / 4 = 768, where the claim could not spread it perfectly): each
    // is one move to it, streamed by the replica it replaces, which then drops its copy.
    // Nothing moves between the old nodes.
    assert_eq!(preview.moves.len(), 767);
    assert_eq!(preview.partitions_moving, 767);
    assert!(preview
        .moves
        .iter()
        .all(|m| m.to.node == NodeId(4) && m.from.node != NodeId(4) && m.drop_after));
    let node4 = preview.per_node[3];
    assert_eq!(
        (node4.node, node4.receiving, node4.sending),
        (NodeId(4), 767, 0)
    );
    assert_eq!((node4.owned_before, node4.owned_after), (0, 256));
    let old: Vec<(u32, u32, u32, u32)> = preview.per_node[..3]
        .iter()
        .map(|n| (n.sending, n.receiving, n.owned_before, n.owned_after))
        .collect();
    assert_eq!(
        old,
        vec![(256, 0, 342, 256), (255, 0, 341, 256), (256, 0, 341, 256)]
    );
    // Committing gives the previewed ring.
    let committed = plan(vec![Change::Join(Member::new(NodeId(4), 1, 4))])
        .commit(&current, 3)
        .expect("commit");
    assert_eq!(committed, preview.ring);
}

#[test]
fn a_leaving_node_streams_its_own_replicas_and_a_removed_one_is_refilled_by_survivors() {
    let current = ring(&[1, 2, 3, 4]);
    let leave = plan(vec![Change::Leave(NodeId(2))])
        .preview(&current, 3)
        .expect("leave");
    assert_n_distinct(&leave.ring, 3);
    assert_moves_explain(&current, &leave, 3);
    assert_eq!(leave.moves.len(), 768);
    assert!(leave
        .moves
        .iter()
        .all(|m| m.from.node == NodeId(2) && m.drop_after));

    let remove = plan(vec![Change::Remove(NodeId(2))])
        .preview(&current, 3)
        .expect("remove");
    assert_eq!(remove.ring, leave.ring, "same ring either way");
    assert_eq!(remove.moves.len(), 768);
    assert!(remove
        .moves
        .iter()
        .all(|m| m.from.node != NodeId(2) && !m.drop_after));
    // The source is a survivor of the old set that stays in the new one.
    for m in &remove.moves {
        assert!(current.preference_list(m.partition, 3).contains(&m.from));
        assert!(remove
            .ring
            .preference_list(m.partition, 3)
            .contains(&m.from));
    }
}

#[test]
fn a_heavier_node_gains_partitions_in_proportion() {
    let current = ring(&[1, 2, 3, 4]);
    let preview = plan(vec![Change::Reweight {
        node: NodeId(4),
        weight: 2,
    }])
    .preview(&current, 3)
    .expect("preview");
    assert_n_distinct(&preview.ring, 3);
    assert_moves_explain(&current, &preview, 3);
    let owned: Vec<u32> = preview.per_node.iter().map(|n| n.owned_after).collect();
    // 1024 x 2/5 and 1024 / 5 each, to within one.
    assert!(owned[3].abs_diff(410) <= 1, "{owned:?}");
    assert!(
        owned[..3].iter().all(|&o| o.abs_diff(205) <= 1),
        "{owned:?}"
    );
    // Node 4 enters 201 more replica sets; the preference lists around the partitions it
    // takes shift too, so the old nodes trade 236 replicas among themselves: 437 moves
    // over 437 partitions, every one streamed by the replica it replaces.
    assert_eq!((preview.moves.len(), preview.partitions_moving), (437, 437));
    let node4 = preview.per_node[3];
    assert_eq!((node4.receiving, node4.sending), (201, 0));
    assert!(preview.moves.iter().all(|m| m.drop_after));
}

#[test]
fn bad_plans_are_refused_with_their_reason() {
    let three = ring(&[1, 2, 3]);
    let check = |changes: Vec<Change>, ring: &Ring, n: usize| plan(changes).preview(ring, n);
    assert_eq!(Plan::new().preview(&three, 3), Err(PlanError::Empty));
    assert_eq!(
        check(vec![Change::Leave(NodeId(9))], &three, 3),
        Err(PlanError::UnknownNode(NodeId(9)))
    );
    assert_eq!(
        check(
            vec![Change::Reweight {
                node: NodeId(9),
                weight: 2
            }],
            &three,
            3
        ),
        Err(PlanError::UnknownNode(NodeId(9)))
    );
    assert_eq!(
        check(vec![Change::Join(Member::new(NodeId(2), 1, 1))], &three, 3),
        Err(PlanError::AlreadyMember(NodeId(2)))
    );
    assert_eq!(
        check(vec![Change::Remove(NodeId(3))], &three, 3),
        Err(PlanError::TooFewNodes { nodes: 2, n: 3 })
    );
    assert_eq!(
        check(vec![Change::Leave(NodeId(1))], &ring(&[1]), 1),
        Err(PlanError::LastNode)
    );
    assert!(matches!(
        check(
            vec![Change::Reweight {
                node: NodeId(1),
                weight: 0
            }],
            &three,
            3
        ),
        Err(PlanError::Ring(_))
    ));
    // Removing both replicas of some partition at once leaves no one to stream it.
    assert!(matches!(
        check(
            vec![Change::Remove(NodeId(1)), Change::Remove(NodeId(2))],
            &ring(&[1, 2, 3, 4]),
            2
        ),
        Err(PlanError::NoSource(_))
    ));
    // A cluster smaller than N may still grow.
    assert!(check(
        vec![Change::Join(Member::new(NodeId(2), 1, 1))],
        &ring(&[1]),
        3
    )
    .is_ok());

    let mut staged = Plan::new();
    staged.stage(Change::Leave(NodeId(1))).expect("first");
    assert_eq!(
        staged.stage(Change::Remove(NodeId(1))),
        Err(PlanError::DuplicateChange(NodeId(1)))
    );
    assert_eq!(staged.changes(), &[Change::Leave(NodeId(1))]);
}

// --- transfers -------------------------------------------------------------------------

const P: u32 = 5;
const EPOCH: u64 = 8;

fn replica(node: u64) -> Replica {
    Replica {
        node: NodeId(node),
        shard: ShardId(1),
    }
}

fn store(actor: u64) -> MemStore {
    MemStore::new(Actor(actor), MemDurability::Always, 16)
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// A coordinator's write at `store`: a new version on top of what it holds.
fn write(store: &mut MemStore, key: &[u8], value: &[u8]) -> CausalState {
    let mut state = store.get_state(P, key).expect("get").unwrap_or_default();
    let context = state.context();
    let actor = store.incarnation();
    state
        .update(&context, Value::Bytes(value.to_vec()), actor)
        .expect("update");
    store.put_state(P, key, &state).expect("put");
    state
}

/// The same write reaching both holders, as the coordinator's double write does.
fn write_both(link: &mut Link, key: &[u8], value: &[u8]) {
    let state = write(&mut link.sides[0].store, key, value);
    link.sides[1].store.put_state(P, key, &state).expect("put");
}

fn root(store: &MemStore) -> u64 {
    store.merkle_hashes(P, 0, 0, 1)[0]
}

struct Side {
    handoff: Handoff,
    store: MemStore,
}

/// A sender (index 0, node 1) and a receiver (index 1, node 2), and the messages between.
struct Link {
    sides: [Side; 2],
    wire: VecDeque<(usize, u32, TransferMessage)>,
    /// Actions other than sends, in order, with the side that emitted them.
    actions: Vec<(usize, HandoffAction)>,
    /// Every message sent, in order.
    log: Vec<TransferMessage>,
}

impl Link {
    fn new(keys: usize, config: HandoffConfig) -> Self {
        let mut sender = store(1);
        for i in 0..keys {
            write(&mut sender, &key(i), format!("v{i}").as_bytes());
        }
        let side = |node, store| Side {
            handoff: Handoff::new(replica(node), config, SiblingLimits::default()),
            store,
        };
        let mut link = Link {
            sides: [side(1, sender), side(2, store(2))],
            wire: VecDeque::new(),
            actions: Vec::new(),
            log: Vec::new(),
        };
        link.sides[1]
            .handoff
            .expect(P, replica(1), EPOCH)
            .expect("expect");
        link
    }

    fn start(&mut self, now: u64) {
        let mut out = Vec::new();
        let side = &mut self.sides[0];
        side.handoff
            .start(now, P, replica(2), EPOCH, true, &side.store, &mut out)
            .expect("start");
        self.collect(0, out);
    }

    fn collect(&mut self, index: usize, out: Vec<HandoffAction>) {
        for action in out {
            match action {
                HandoffAction::Send {
                    to,
                    request_id,
                    message,
                } => {
                    assert_eq!(to, replica(2 - index as u64));
                    self.log.push(message.clone());
                    self.wire.push_back((1 - index, request_id, message));
                }
                other => self.actions.push((index, other)),
            }
        }
    }

    fn deliver(&mut self, now: u64, to: usize, request_id: u32, message: TransferMessage) {
        let mut out = Vec::new();
        let side = &mut self.sides[to];
        let from = replica(2 - to as u64);
        side.handoff
            .message(now, from, request_id, message, &mut side.store, &mut out);
        self.collect(to, out);
    }

    /// Delivers the next message; returns false once none is left.
    fn step(&mut self, now: u64) -> bool {
        match self.wire.pop_front() {
            Some((to, id, message)) => {
                self.deliver(now, to, id, message);
                true
            }
            None => false,
        }
    }

    fn run(&mut self, now: u64) {
        while self.step(now) {}
    }

    fn tick(&mut self, index: usize, now: u64) {
        let mut out = Vec::new();
        let side = &mut self.sides[index];
        side.handoff.tick(now, &side.store, &mut out);
        self.collect(index, out);
    }

    /// The runtime's flip, then the drop it unlocks.
    fn flip(&mut self) {
        let mut out = Vec::new();
        self.sides[0].handoff.flipped(P, replica(2), &mut out);
        self.collect(0, out);
    }

    fn progress(&self) -> TransferProgress {
        self.sides[0].handoff.progress()[0]
    }

    fn count(&self, wanted: fn(&TransferMessage) -> bool) -> usize {
        self.log.iter().filter(|m| wanted(m)).count()
    }

    fn states(&self, index: usize) -> Vec<((u32, Vec<u8>), CausalState)> {
        let store = &self.sides[index].store;
        store
            .states()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }
}

fn is_batch(m: &TransferMessage) -> bool {
    matches!(m, TransferMessage::Batch { .. })
}

fn is_confirm(m: &TransferMessage) -> bool {
    matches!(m, TransferMessage::Confirm { .. })
}

/// Batches of at most 100 entries, so a 1,000-key partition takes about ten.
fn small_batches() -> HandoffConfig {
    HandoffConfig {
        batch_entries_max: 100,
        ..HandoffConfig::default()
    }
}

fn flip_action() -> HandoffAction {
    HandoffAction::Flip {
        partition: P,
        ring_epoch: EPOCH,
        to: replica(2),
    }
}

#[test]
fn a_thousand_key_partition_moves_completely_flips_on_equal_roots_then_drops() {
    let mut link = Link::new(1_000, small_batches());
    link.start(0);
    // The window: four batches before any ack.
    assert_eq!(link.wire.len(), 4);
    link.run(0);

    assert_eq!(root(&link.sides[0].store), root(&link.sides[1].store));
    assert_eq!(link.states(0), link.states(1));
    // Only the flip so far: the old copy stays until the runtime reports the flip done.
    assert_eq!(link.actions, vec![(0, flip_action())]);
    let progress = link.progress();
    assert_eq!(progress.phase, Phase::Flipping);
    link.flip();
    assert_eq!(
        link.actions,
        vec![
            (0, flip_action()),
            (0, HandoffAction::DropPartition { partition: P })
        ]
    );

    let batches = link.count(is_batch);
    let progress = link.progress();
    assert_eq!(progress.phase, Phase::Done);
    assert_eq!(
        (progress.round, progress.entries_sent, progress.resends),
        (1, 1_000, 0)
    );
    assert_eq!(progress.batches_acked, batches as u64);
    assert_eq!(progress.leaves_sent, progress.leaves);
    // 1,000 keys in batches of at most 100 whole leaves: at least 10, a few more where a
    // leaf did not fit; each within the bound, the last one marked.
    assert!((10..=14).contains(&batches), "{batches} batches");
    let sizes: Vec<(usize, bool)> = link
        .log
        .iter()
        .filter_map(|m| match m {
            TransferMessage::Batch { entries, last, .. } => Some((entries.len(), *last)),
            _ => None,
        })
        .collect();
    assert!(sizes.iter().all(|&(n, _)| n <= 100), "{sizes:?}");
    assert_eq!(sizes.iter().filter(|&&(_, last)| last).count(), 1);
    assert_eq!(sizes.last().map(|s| s.1), Some(true));
    assert_eq!(link.count(is_confirm), 1);
    let stats = link.sides[1].handoff.stats();
    assert_eq!(
        (stats.batches_received, stats.keys_changed),
        (batches as u64, 1_000)
    );
    // A second flip report changes nothing (no second drop).
    link.flip();
    assert_eq!(link.actions.len(), 2);
}

#[test]
fn writes_reaching_both_sides_during_the_transfer_end_with_equal_roots_in_one_round() {
    let mut link = Link::new(1_000, small_batches());
    link.start(0);
    // A few batches and acks go through, then writes land on both holders: new keys and
    // overwrites, in leaves already streamed and not yet streamed.
    for _ in 0..6 {
        link.step(0);
    }
    for i in (0..1_000).step_by(50) {
        write_both(&mut link, &key(i), b"overwritten");
    }
    for i in 1_000..1_040 {
        write_both(&mut link, &key(i), b"new");
    }
    link.run(0);

    assert_eq!(link.actions, vec![(0, flip_action())]);
    assert_eq!(root(&link.sides[0].store), root(&link.sides[1].store));
    assert_eq!(link.states(0), link.states(1));
    assert_eq!(link.states(1).len(), 1_040);
    assert_eq!(link.progress().round, 1);
}

#[test]
fn a_write_reaching_only_the_sender_after_its_leaf_streamed_is_taken_by_a_second_round() {
    let mut link = Link::new(1_000, small_batches());
    link.start(0);
    // Everything streamed and acknowledged, the confirm not yet delivered.
    while !link.wire.front().is_some_and(|(_, _, m)| is_confirm(m)) {
        assert!(link.step(0));
    }
    write(&mut link.sides[0].store, &key(3), b"late");
    link.run(0);

    assert_eq!(link.actions, vec![(0, flip_action())]);
    assert_eq!(link.states(0), link.states(1));
    let progress = link.progress();
    assert_eq!(progress.round, 2);
    assert_eq!(
        progress.entries_sent, 2_000,
        "the second round streams it all again"
    );
    assert_eq!(link.count(is_confirm), 2);
}

#[test]
fn a_lost_batch_and_a_lost_ack_are_resent_and_the_result_is_the_same() {
    let mut reference = Link::new(1_000, small_batches());
    reference.start(0);
    reference.run(0);

    let mut link = Link::new(1_000, small_batches());
    link.start(0);
    // The first batch is lost on the way.
    let (_, _, lost) = link.wire.pop_front().expect("batch");
    assert!(is_batch(&lost));
    link.run(0);
    assert!(link.actions.is_empty(), "no confirm without every ack");
    // The second batch's ack is lost: deliver the resent batch, drop its ack.
    link.tick(0, 4_999);
    assert!(link.wire.is_empty(), "not yet due");
    link.tick(0, 5_000);
    assert_eq!(link.wire.len(), 1, "the lost batch, sent again");
    link.step(5_000);
    let (_, _, ack) = link.wire.pop_front().expect("ack");
    assert!(matches!(ack, TransferMessage::Ack { sequence: 0, .. }));
    link.tick(0, 10_000);
    assert_eq!(link.wire.len(), 1, "sent a third time");
    link.run(10_000);

    assert_eq!(link.actions, vec![(0, flip_action())]);
    assert_eq!(link.states(1), reference.states(1));
    assert_eq!(root(&link.sides[1].store), root(&reference.sides[1].store));
    let progress = link.progress();
    assert_eq!(progress.resends, 2);
    assert_eq!(
        progress.batches_acked,
        reference.progress().batches_acked,
        "each batch acknowledged once"
    );
}

#[test]
fn a_duplicated_batch_is_merged_harmlessly_and_its_second_ack_ignored() {
    let mut link = Link::new(1_000, small_batches());
    link.start(0);
    let first = link.wire.front().cloned().expect("batch");
    link.wire.push_back(first);
    link.run(0);

    assert_eq!(link.actions, vec![(0, flip_action())]);
    assert_eq!(link.states(0), link.states(1));
    let (receiver, sender) = (link.sides[1].handoff.stats(), link.sides[0].handoff.stats());
    assert_eq!(receiver.keys_changed, 1_000, "the copy changed nothing");
    assert_eq!(receiver.batches_received, sender.batches_sent + 1);
    assert_eq!(sender.stale, 1, "the second ack");
}

#[test]
fn a_receiver_expecting_another_epoch_refuses_and_the_sender_stops() {
    let mut link = Link::new(100, small_batches());
    link.sides[1]
        .handoff
        .expect(P, replica(1), EPOCH + 1)
        .expect("expect");
    link.start(0);
    link.run(0);

    assert_eq!(
        link.actions,
        vec![(
            0,
            HandoffAction::Stalled {
                partition: P,
                to: replica(2),
                reason: StallReason::Refused(crate::wire::ErrorCode::NotOwner),
            }
        )]
    );
    assert_eq!(link.states(1), vec![], "nothing taken");
    assert_eq!(link.sides[1].handoff.stats().refused, 1);
    // Stalled for good: timeouts resend nothing, a flip report drops nothing.
    link.tick(0, 60_000);
    link.flip();
    assert!(link.wire.is_empty());
    assert_eq!(link.actions.len(), 1);
    let finished = link.sides[0].handoff.forget_finished();
    assert_eq!(finished.len(), 1);
    assert!(link.sides[0].handoff.progress().is_empty());
}

#[test]
fn roots_that_still_differ_after_the_round_bound_stall_instead_of_flipping() {
    let mut link = Link::new(200, small_batches());
    // The receiver holds a key the sender lacks: streaming never fixes that.
    write(&mut link.sides[1].store, b"only-here", b"x");
    link.start(0);
    link.run(0);

    assert_eq!(
        link.actions,
        vec![(
            0,
            HandoffAction::Stalled {
                partition: P,
                to: replica(2),
                reason: StallReason::RootsDiffer { rounds: 3 },
            }
        )]
    );
    assert_eq!(link.count(is_confirm), 3);
    assert_eq!(link.progress().entries_sent, 600);
    assert_ne!(root(&link.sides[0].store), root(&link.sides[1].store));
    link.flip();
    assert_eq!(link.actions.len(), 1, "no drop without a flip");
}

#[test]
fn a_silent_receiver_stalls_the_transfer_after_the_resend_bound() {
    let mut link = Link::new(100, small_batches());
    link.start(0);
    let resends_max = HandoffConfig::default().resends_max;
    for t in 1..=u64::from(resends_max) + 1 {
        link.wire.clear();
        link.tick(0, t * 5_000);
    }
    assert_eq!(
        link.actions,
        vec![(
            0,
            HandoffAction::Stalled {
                partition: P,
                to: replica(2),
                reason: StallReason::Unresponsive,
            }
        )]
    );
    assert_eq!(link.progress().resends, u64::from(resends_max));
}

#[test]
fn an_empty_partition_moves_in_one_batch_and_flips() {
    let mut link = Link::new(0, HandoffConfig::default());
    link.start(0);
    link.run(0);
    assert_eq!(link.count(is_batch), 1);
    assert_eq!(link.actions, vec![(0, flip_action())]);
}

#[test]
fn the_copy_is_dropped_only_once_every_move_out_of_the_shard_flipped() {
    let mut link = Link::new(50, small_batches());
    // A second move of the same partition, to node 3, driven by hand.
    let third = replica(3);
    let mut node3 = Side {
        handoff: Handoff::new(third, small_batches(), SiblingLimits::default()),
        store: store(3),
    };
    node3.handoff.expect(P, replica(1), EPOCH).expect("expect");
    let mut to_node3 = Vec::new();
    let sender = &mut link.sides[0];
    sender
        .handoff
        .start(0, P, third, EPOCH, true, &sender.store, &mut to_node3)
        .expect("start");
    assert_eq!(
        sender
            .handoff
            .start(0, P, third, EPOCH, true, &sender.store, &mut Vec::new()),
        Err(HandoffError::AlreadyRunning)
    );
    link.start(0);
    link.run(0);
    link.flip();
    assert_eq!(
        link.actions,
        vec![(0, flip_action())],
        "node 3's move still runs: no drop yet"
    );

    // Node 3's move runs to its flip.
    let mut flips = Vec::new();
    while !to_node3.is_empty() {
        let mut back = Vec::new();
        for (request_id, message) in sends(std::mem::take(&mut to_node3)) {
            let side = &mut node3;
            let from = replica(1);
            side.handoff
                .message(0, from, request_id, message, &mut side.store, &mut back);
        }
        let sender = &mut link.sides[0];
        let mut out = Vec::new();
        for (request_id, message) in sends(back) {
            sender
                .handoff
                .message(0, third, request_id, message, &mut sender.store, &mut out);
        }
        for action in out {
            match action {
                HandoffAction::Send { .. } => to_node3.push(action),
                other => flips.push(other),
            }
        }
    }
    assert_eq!(
        flips,
        vec![HandoffAction::Flip {
            partition: P,
            ring_epoch: EPOCH,
            to: third
        }]
    );
    let mut out = Vec::new();
    link.sides[0].handoff.flipped(P, third, &mut out);
    assert_eq!(out, vec![HandoffAction::DropPartition { partition: P }]);
    let phases: Vec<Phase> = link.sides[0]
        .handoff
        .progress()
        .iter()
        .map(|p| p.phase)
        .collect();
    assert_eq!(phases, vec![Phase::Done, Phase::Done]);
}

/// The (request id, message) of every send among `actions`.
fn sends(actions: Vec<HandoffAction>) -> Vec<(u32, TransferMessage)> {
    actions
        .into_iter()
        .filter_map(|action| match action {
            HandoffAction::Send {
                request_id,
                message,
                ..
            } => Some((request_id, message)),
            _ => None,
        })
        .collect()
}
