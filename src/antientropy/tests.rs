//! Exchanges between in-memory replicas, driven message by message.

use std::collections::VecDeque;

use super::shape::{leaf_of, LEAVES};
use super::*;
use crate::causal::{Actor, CausalState, Context, SiblingLimits, Value};
use crate::coordinator::{AllReachable, Liveness, MemDurability, MemStore, ReplicaStore};
use crate::ring::{Member, Ring, ShardId};

const P: u32 = 0;

fn replica(node: u64) -> Replica {
    Replica {
        node: NodeId(node),
        shard: ShardId(0),
    }
}

/// A two-node ring with N = 2: both nodes replicate every partition.
fn ring() -> Ring {
    let members = vec![Member::new(NodeId(1), 1, 1), Member::new(NodeId(2), 1, 1)];
    Ring::initial(4, members).expect("ring")
}

/// One exchange at a time, so each test follows exactly one.
fn config() -> ExchangeConfig {
    ExchangeConfig {
        n: 2,
        in_flight_max: 1,
        ..ExchangeConfig::default()
    }
}

fn store(actor: u64) -> MemStore {
    MemStore::new(Actor(actor), MemDurability::Always, 16)
}

fn write(store: &mut MemStore, key: &[u8], value: &[u8], actor: u64) {
    let mut state = store.get_state(P, key).expect("get").unwrap_or_default();
    let context = state.context();
    state
        .update(&context, Value::Bytes(value.to_vec()), Actor(actor))
        .expect("update");
    store.put_state(P, key, &state).expect("put");
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

struct Node {
    ae: AntiEntropy,
    store: MemStore,
}

/// Two replicas and the messages between them.
struct Pair {
    ring: Ring,
    nodes: [Node; 2],
    /// (from, to, request id, message) not yet delivered.
    wire: VecDeque<(Replica, Replica, u32, ExchangeMessage)>,
    unresponsive: Vec<NodeId>,
    messages: usize,
    bytes: usize,
}

impl Pair {
    fn new(a: MemStore, b: MemStore) -> Self {
        Pair {
            ring: ring(),
            nodes: [
                Node {
                    ae: AntiEntropy::new(replica(1), config(), SiblingLimits::default()),
                    store: a,
                },
                Node {
                    ae: AntiEntropy::new(replica(2), config(), SiblingLimits::default()),
                    store: b,
                },
            ],
            wire: VecDeque::new(),
            unresponsive: Vec::new(),
            messages: 0,
            bytes: 0,
        }
    }

    fn tick(&mut self, index: usize, now: u64, live: &dyn Liveness) {
        let mut out = Vec::new();
        let node = &mut self.nodes[index];
        node.ae.tick(now, &self.ring, live, &mut out);
        self.collect(index, out);
    }

    fn collect(&mut self, index: usize, out: Vec<ExchangeAction>) {
        let from = replica(index as u64 + 1);
        for action in out {
            match action {
                ExchangeAction::Send {
                    to,
                    request_id,
                    message,
                } => {
                    self.messages += 1;
                    self.bytes += message.wire_bytes();
                    self.wire.push_back((from, to, request_id, message));
                }
                ExchangeAction::Unresponsive { node } => self.unresponsive.push(node),
            }
        }
    }

    fn deliver(&mut self, now: u64, from: Replica, to: Replica, id: u32, m: ExchangeMessage) {
        let index = (to.node.0 - 1) as usize;
        let mut out = Vec::new();
        let node = &mut self.nodes[index];
        node.ae
            .message(now, from, id, m, &self.ring, &mut node.store, &mut out);
        self.collect(index, out);
    }

    /// Delivers every message, in order, until none is left.
    fn run(&mut self, now: u64) {
        while let Some((from, to, id, message)) = self.wire.pop_front() {
            self.deliver(now, from, to, id, message);
        }
    }

    fn root(&self, index: usize) -> u64 {
        self.nodes[index].store.merkle_hashes(P, 0, 0, 1)[0]
    }

    fn states(&self, index: usize) -> Vec<((u32, Vec<u8>), CausalState)> {
        let store = &self.nodes[index].store;
        store
            .states()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }
}

/// Two replicas of 2,000 keys, of which `diverging` differ: half missing on B, half
/// overwritten on B (so each side has something the other lacks).
fn diverged(keys: usize, diverging: usize) -> (MemStore, MemStore) {
    let (mut a, mut b) = (store(1), store(2));
    for i in 0..keys {
        let (k, v) = (key(i), format!("v{i}").into_bytes());
        if i % (keys / diverging) == 0 && (i / (keys / diverging)).is_multiple_of(2) {
            write(&mut a, &k, &v, 1); // Only on A.
            continue;
        }
        write(&mut a, &k, &v, 1);
        let state = a.get_state(P, &k).expect("get").expect("state");
        b.put_state(P, &k, &state).expect("put");
        if i % (keys / diverging) == 0 {
            write(&mut b, &k, b"newer", 2); // B saw a later write.
        }
    }
    (a, b)
}

#[test]
fn one_percent_divergence_converges_in_one_exchange_touching_only_differing_leaves() {
    let (keys, diverging) = (2_000, 20);
    let (a, b) = diverged(keys, diverging);
    let differing_leaves: std::collections::BTreeSet<u32> = (0..keys)
        .filter(|i| i % (keys / diverging) == 0)
        .map(|i| leaf_of(&key(i)))
        .collect();
    let mut pair = Pair::new(a, b);
    assert_ne!(pair.root(0), pair.root(1));

    pair.tick(0, 0, &AllReachable);
    pair.run(0);

    assert_eq!(pair.root(0), pair.root(1), "trees equal after one exchange");
    assert_eq!(pair.states(0), pair.states(1), "every key's state equal");
    let stats = pair.nodes[0].ae.stats();
    assert_eq!((stats.started, stats.completed, stats.dropped), (1, 1, 0));
    // Entries moved: only those of differing leaves (about two keys per leaf here), far
    // from the 2,000 a full copy would move.
    let in_leaves = (0..keys)
        .filter(|&i| differing_leaves.contains(&leaf_of(&key(i))))
        .count() as u64;
    let moved = stats.entries_received + stats.entries_pushed;
    assert!(stats.entries_received <= in_leaves, "{stats:?}");
    assert!(stats.entries_pushed <= in_leaves, "{stats:?}");
    assert!(moved < 4 * diverging as u64 + 20, "{moved} entries moved");
    // Messages: root, level 1, one range per run of differing level-1 buckets, one keys
    // request (20 leaves fit in one), each with its reply, plus one push.
    let level1 = differing_leaves
        .iter()
        .map(|l| l / shape::FANOUT)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        pair.messages <= 2 * (2 + level1 + 1) + 1,
        "{} messages",
        pair.messages
    );
    assert!(pair.bytes < 20_000, "{} bytes", pair.bytes);
    // The figure for the report (`cargo test --lib -- antientropy::tests::one_percent
    // --nocapture`).
    println!(
        "{diverging} of {keys} keys diverged in {} leaves: one exchange, {} messages, {} bytes, \
         {} entries received, {} pushed",
        differing_leaves.len(),
        pair.messages,
        pair.bytes,
        stats.entries_received,
        stats.entries_pushed
    );
    assert_eq!(
        pair.nodes[1].ae.stats().entries_received,
        stats.entries_pushed
    );
    assert!(differing_leaves.len() as u32 <= LEAVES);

    // A second exchange (to the same peer: the only one) finds equal roots.
    pair.messages = 0;
    pair.tick(0, 1_000, &AllReachable);
    pair.run(1_000);
    assert_eq!(pair.messages, 2);
}

#[test]
fn identical_replicas_exchange_only_the_root() {
    let (a, _) = diverged(500, 10);
    let b = a.clone();
    let mut pair = Pair::new(a, b);
    pair.tick(0, 0, &AllReachable);
    pair.run(0);
    let stats = pair.nodes[0].ae.stats();
    assert_eq!(pair.messages, 2);
    assert_eq!((stats.equal_roots, stats.completed), (1, 1));
    assert_eq!(stats.entries_received + stats.entries_pushed, 0);

    // Empty replicas too: both roots are 0.
    let mut empty = Pair::new(store(1), store(2));
    assert_eq!(empty.root(0), 0);
    empty.tick(0, 0, &AllReachable);
    empty.run(0);
    assert_eq!(empty.messages, 2);
}

#[test]
fn a_wiped_replica_is_refilled_and_pushes_reach_the_peer() {
    let (a, _) = diverged(300, 10);
    let mut pair = Pair::new(store(9), a);
    // The empty side starts: it receives everything, pushes nothing.
    pair.tick(0, 0, &AllReachable);
    pair.run(0);
    assert_eq!(pair.states(0), pair.states(1));
    assert_eq!(pair.nodes[0].ae.stats().entries_pushed, 0);
    assert_eq!(pair.nodes[0].ae.stats().keys_repaired, 300);
    println!(
        "an empty replica of a 300-key partition refilled in one exchange: {} messages, {} bytes",
        pair.messages, pair.bytes
    );
}

#[test]
fn a_reply_from_the_wrong_peer_or_after_the_deadline_is_ignored() {
    let (a, b) = diverged(200, 10);
    let mut pair = Pair::new(a, b);
    pair.tick(0, 0, &AllReachable);
    let (from, to, id, request) = pair.wire.pop_front().expect("root request");
    assert_eq!((from, to), (replica(1), replica(2)));
    assert!(matches!(request, ExchangeMessage::Range { level: 0, .. }));
    let reply = ExchangeMessage::RangeReply {
        partition: P,
        level: 0,
        start: 0,
        hashes: vec![pair.root(1)],
    };

    // From node 3, which was not asked: ignored, the exchange still waits.
    pair.deliver(1, replica(3), replica(1), id, reply.clone());
    assert!(pair.wire.is_empty());
    assert_eq!(pair.nodes[0].ae.stats().stale_replies, 1);
    assert_eq!(pair.nodes[0].ae.in_flight(), 1);
    // An answer to another range than asked: ignored too.
    let other = ExchangeMessage::RangeReply {
        partition: P,
        level: 1,
        start: 0,
        hashes: vec![1],
    };
    pair.deliver(1, replica(2), replica(1), id, other);
    assert_eq!(pair.nodes[0].ae.stats().stale_replies, 2);
    assert_eq!(pair.nodes[0].ae.in_flight(), 1);

    // The deadline passes: the exchange is dropped and the peer counts a failure.
    let deadline = config().request_timeout_ms;
    pair.tick(0, deadline - 1, &AllReachable);
    assert_eq!(pair.nodes[0].ae.in_flight(), 1);
    pair.tick(0, deadline, &NobodyReachable);
    assert_eq!(pair.unresponsive, vec![NodeId(2)]);
    assert_eq!(pair.nodes[0].ae.in_flight(), 0);
    assert_eq!(pair.nodes[0].ae.stats().dropped, 1);

    // The real reply, late: ignored, nothing sent.
    pair.wire.clear();
    pair.deliver(deadline + 1, replica(2), replica(1), id, reply);
    assert!(pair.wire.is_empty());
    assert_eq!(pair.nodes[0].ae.stats().stale_replies, 3);
}

struct NobodyReachable;

impl Liveness for NobodyReachable {
    fn is_reachable(&self, _node: NodeId) -> bool {
        false
    }
}

#[test]
fn no_exchange_starts_with_a_peer_the_failure_detector_says_is_down() {
    let (a, b) = diverged(100, 10);
    let mut pair = Pair::new(a, b);
    for now in 0..1_000 {
        pair.tick(0, now, &NobodyReachable);
    }
    assert_eq!(pair.messages, 0);
    assert_eq!(pair.nodes[0].ae.stats().started, 0);
}

#[test]
fn a_shard_that_does_not_replicate_the_partition_refuses() {
    let (a, b) = diverged(100, 10);
    let mut pair = Pair::new(a, b);
    // Node 2's ring says N = 1: it replicates only the partitions it owns.
    let mut out = Vec::new();
    let mut lone = AntiEntropy::new(
        replica(2),
        ExchangeConfig { n: 1, ..config() },
        SiblingLimits::default(),
    );
    let partition = (0..4)
        .find(|&p| pair.ring.owner(crate::ring::PartitionId(p)) != NodeId(2))
        .expect("a partition node 1 owns");
    let ask = ExchangeMessage::Keys {
        partition,
        buckets: vec![0, 1],
    };
    let store = &mut pair.nodes[1].store;
    lone.message(0, replica(1), 7, ask, &pair.ring, store, &mut out);
    assert_eq!(
        out,
        vec![ExchangeAction::Send {
            to: replica(1),
            request_id: 7,
            message: ExchangeMessage::Refused {
                partition,
                code: crate::wire::ErrorCode::NotOwner,
            },
        }]
    );
    // A push for it is not taken either.
    let push = ExchangeMessage::Push {
        partition,
        entries: vec![Entry {
            key: b"k".to_vec(),
            state: CausalState::new().to_bytes(),
        }],
    };
    out.clear();
    lone.message(0, replica(1), 0, push, &pair.ring, store, &mut out);
    assert!(out.is_empty());
    assert_eq!(store.get_state(partition, b"k").expect("get"), None);
}

#[test]
fn exchanges_start_at_the_configured_rate_and_back_off_under_pressure() {
    let config = ExchangeConfig {
        exchange_interval_ms: 100,
        ..config()
    };
    // Identical replicas: every exchange ends at the root, so only the rate limits starts.
    let (a, _) = diverged(100, 10);
    let b = a.clone();
    let mut pair = Pair::new(a, b);
    pair.nodes[0].ae = AntiEntropy::new(replica(1), config, SiblingLimits::default());
    let run_for = |pair: &mut Pair, from: u64, ms: u64| {
        let before = pair.nodes[0].ae.stats().started;
        for now in from..from + ms {
            pair.tick(0, now, &AllReachable);
            pair.run(now);
        }
        pair.nodes[0].ae.stats().started - before
    };
    assert_eq!(run_for(&mut pair, 0, 1_000), 10, "one start per 100 ms");
    assert_eq!(pair.nodes[0].ae.set_pressure(u64::MAX), SHARE_FULL / 2);
    assert_eq!(
        run_for(&mut pair, 1_000, 1_000),
        5,
        "half the rate under pressure"
    );
    pair.nodes[0].ae.set_pressure(u64::MAX);
    pair.nodes[0].ae.set_pressure(u64::MAX);
    assert_eq!(
        run_for(&mut pair, 2_000, 2_000),
        3,
        "an eighth: one per 800 ms"
    );
    for _ in 0..20 {
        pair.nodes[0].ae.set_pressure(0);
    }
    assert_eq!(pair.nodes[0].ae.rate().share(), SHARE_FULL);

    // The limiter itself: interval, halving to the floor, additive increase back.
    let mut rate = RateLimiter::new(&config);
    assert!(rate.may_start(0));
    rate.started(0);
    assert!(!rate.may_start(99));
    assert!(rate.may_start(100));
    assert_eq!(
        rate.set_pressure(config.pressure_latency_us + 1),
        SHARE_FULL / 2
    );
    rate.started(100);
    assert!(!rate.may_start(299), "half the share, twice the interval");
    assert!(rate.may_start(300));
    for _ in 0..20 {
        rate.set_pressure(u64::MAX);
    }
    assert_eq!(rate.share(), config.rate_share_min);
    assert_eq!(
        rate.set_pressure(config.pressure_latency_us),
        config.rate_share_min + config.rate_share_increase
    );
    for _ in 0..100 {
        rate.set_pressure(0);
    }
    assert_eq!(rate.share(), SHARE_FULL);
}

#[test]
fn the_key_budget_holds_back_keys_requests_until_it_refills() {
    let config = ExchangeConfig {
        keys_per_sec: 1_000,
        ..config()
    };
    let mut rate = RateLimiter::new(&config);
    rate.refill(0);
    assert_eq!(rate.keys_left(), 1_000, "a second's worth to start");
    rate.charge(1_500);
    assert!(!rate.keys_ok());
    assert!(!rate.may_start(10_000), "in debt: no new exchange either");
    rate.refill(500);
    assert!(!rate.keys_ok(), "500 earned, 500 still owed");
    rate.refill(501);
    assert!(rate.keys_ok());
    rate.refill(10_000);
    assert_eq!(rate.keys_left(), 1_000, "savings capped at one second");
    // At a quarter share, a quarter of the rate.
    rate.set_pressure(u64::MAX);
    rate.set_pressure(u64::MAX);
    rate.charge(1_000);
    rate.refill(11_000);
    assert_eq!(rate.keys_left(), 250);

    // In an exchange: with a budget of one key, a diverged pair still converges, over
    // several keys requests spaced by the refill.
    let tight = ExchangeConfig {
        keys_per_sec: 10,
        leaves_per_request: 2,
        ..super::tests::config()
    };
    let (a, b) = diverged(1_000, 20);
    let mut pair = Pair::new(a, b);
    pair.nodes[0].ae = AntiEntropy::new(replica(1), tight, SiblingLimits::default());
    let mut keys_requests_at = Vec::new();
    for now in (0..60_000).step_by(100) {
        pair.tick(0, now, &AllReachable);
        while let Some((from, to, id, message)) = pair.wire.pop_front() {
            if matches!(message, ExchangeMessage::Keys { .. }) {
                keys_requests_at.push(now);
            }
            pair.deliver(now, from, to, id, message);
        }
        // (Exchanges of the other, empty, partitions run in between and end at once.)
        if pair.root(0) == pair.root(1) {
            break;
        }
    }
    assert_eq!(pair.states(0), pair.states(1));
    assert!(keys_requests_at.len() >= 10, "{keys_requests_at:?}");
    let spread = keys_requests_at.last().unwrap_or(&0) - keys_requests_at.first().unwrap_or(&0);
    assert!(spread >= 1_000, "keys requests spread over {spread} ms");
}

#[test]
fn the_tree_does_not_depend_on_write_order() {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
        .map(|i| (key(i), format!("state{i}").into_bytes()))
        .collect();
    let forward = SparseTree::build(entries.iter().map(|(k, s)| (k.as_slice(), s.as_slice())));
    let backward = SparseTree::build(
        entries
            .iter()
            .rev()
            .map(|(k, s)| (k.as_slice(), s.as_slice())),
    );
    assert_eq!(forward, backward);
    assert_ne!(forward.root(), 0);
    assert_eq!(SparseTree::default().root(), 0);
    assert_eq!(SparseTree::build(std::iter::empty()).root(), 0);
    assert_eq!(
        forward.hashes(2, 1020, 10).len(),
        4,
        "the level ends at 1024"
    );
    let _ = Context::empty();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Whatever each side holds (keys on one side only, on both with the same or
    /// different histories), one exchange leaves both with the merge of the two.
    #[test]
    fn any_two_replicas_converge_in_one_exchange(
        keys in proptest::collection::vec((0usize..400, 0u8..4), 0..120),
    ) {
        let (mut a, mut b) = (store(1), store(2));
        for (i, (k, side)) in keys.iter().enumerate() {
            let value = format!("v{i}").into_bytes();
            match side {
                0 => write(&mut a, &key(*k), &value, 1),
                1 => write(&mut b, &key(*k), &value, 2),
                2 => {
                    write(&mut a, &key(*k), &value, 1);
                    let state = a.get_state(P, &key(*k)).expect("get").expect("state");
                    b.put_state(P, &key(*k), &state).expect("put");
                }
                _ => {
                    write(&mut a, &key(*k), &value, 1);
                    write(&mut b, &key(*k), &value, 2);
                }
            }
        }
        let mut expected: std::collections::BTreeMap<Vec<u8>, CausalState> = Default::default();
        for (store, _) in [(&a, 0), (&b, 1)] {
            for ((_, k), state) in store.states() {
                let merged = expected.remove(k).unwrap_or_default().merge(state).expect("merge").0;
                expected.insert(k.clone(), merged);
            }
        }
        let mut pair = Pair::new(a, b);
        pair.tick(0, 0, &AllReachable);
        pair.run(0);
        let want: Vec<((u32, Vec<u8>), CausalState)> =
            expected.into_iter().map(|(k, s)| ((P, k), s)).collect();
        proptest::prop_assert_eq!(pair.states(0), want.clone());
        proptest::prop_assert_eq!(pair.states(1), want);
        proptest::prop_assert_eq!(pair.root(0), pair.root(1));
        proptest::prop_assert_eq!(pair.nodes[0].ae.stats().completed, 1);
    }
}

#[test]
fn leaves_a_reply_could_not_hold_are_asked_for_again() {
    let (a, b) = diverged(2_000, 40);
    let mut pair = Pair::new(a, b);
    // The responder fits about one leaf's entries per reply.
    let small = ExchangeConfig {
        reply_bytes_max: 64,
        ..config()
    };
    pair.nodes[1].ae = AntiEntropy::new(replica(2), small, SiblingLimits::default());
    pair.tick(0, 0, &AllReachable);
    let mut keys_requests = 0;
    while let Some((from, to, id, message)) = pair.wire.pop_front() {
        if matches!(message, ExchangeMessage::Keys { .. }) {
            keys_requests += 1;
        }
        pair.deliver(0, from, to, id, message);
    }
    assert_eq!(pair.states(0), pair.states(1));
    let stats = pair.nodes[0].ae.stats();
    assert_eq!((stats.started, stats.completed), (1, 1));
    assert!(keys_requests > 5, "{keys_requests} keys requests");
}

fn delete(store: &mut MemStore, key: &[u8], actor: u64) {
    let mut state = store.get_state(P, key).expect("get").unwrap_or_default();
    let context = state.context();
    state
        .update(&context, Value::Tombstone, Actor(actor))
        .expect("update");
    store.put_state(P, key, &state).expect("put");
}

/// Ticks node A every 100 ms from `from` until the exchange about partition `P` it
/// starts has finished (the ring has 4 partitions, visited in turn).
fn exchange_partition_p(pair: &mut Pair, from: u64) -> u64 {
    let mut now = from;
    loop {
        let before = pair.nodes[0].ae.stats().completed;
        pair.tick(0, now, &AllReachable);
        let about_p = pair
            .wire
            .iter()
            .any(|(_, _, _, m)| matches!(m, ExchangeMessage::Range { partition: P, .. }));
        pair.run(now);
        if about_p {
            assert_eq!(pair.nodes[0].ae.stats().completed, before + 1);
            return now;
        }
        now += 100;
    }
}

#[test]
fn tombstones_are_granted_for_purge_only_after_two_settled_comparisons_found_them_everywhere() {
    let (mut a, mut b) = (store(1), store(2));
    write(&mut a, b"gone", b"v", 1);
    delete(&mut a, b"gone", 1);
    let tombstone = a.get_state(P, b"gone").unwrap().unwrap();
    b.put_state(P, b"gone", &tombstone).unwrap();
    let tombstone_lsn = a.state_lsn(P, b"gone").unwrap();
    // A key B holds differently, in another leaf: its leaf differs at the first comparison.
    let drift: &[u8] = b"drift-7";
    assert_ne!(leaf_of(drift), leaf_of(b"gone"));
    write(&mut a, drift, b"a", 1);
    write(&mut b, drift, b"b", 2);
    let mut pair = Pair::new(a, b);
    let ring = pair.ring.clone();
    let settle = 300;
    assert!(pair.nodes[0]
        .ae
        .take_purge_grants(&ring, true, settle)
        .is_empty());

    let first = exchange_partition_p(&mut pair, 0);
    assert!(
        pair.nodes[0].ae.purge_grant(&ring, P, 0).is_none(),
        "one comparison is not enough"
    );
    // Written after the first comparison: not covered by its mark.
    delete(&mut pair.nodes[0].store, b"late", 1);
    let late_lsn = pair.nodes[0].store.state_lsn(P, b"late").unwrap();

    let second = exchange_partition_p(&mut pair, first + 100);
    assert!(second - first >= settle);
    let ae = &mut pair.nodes[0].ae;
    assert!(
        ae.take_purge_grants(&ring, false, settle).is_empty(),
        "ring unstable"
    );
    assert!(
        ae.purge_grant(&ring, P, second - first + 1).is_none(),
        "not settled"
    );
    let grants = ae.take_purge_grants(&ring, true, settle);
    let grant = grants
        .iter()
        .find(|g| g.partition == P)
        .expect("partition P granted")
        .clone();
    assert!(grant.allows(b"gone", tombstone_lsn));
    assert!(
        !grant.allows(drift, 1),
        "its leaf differed at the first comparison"
    );
    assert!(
        !grant.allows(b"late", late_lsn),
        "stored after the first comparison"
    );
    assert!(
        ae.take_purge_grants(&ring, true, settle).is_empty(),
        "an unchanged grant is handed out once"
    );

    // The store purges what the grant allows, and only that.
    let store = &mut pair.nodes[0].store;
    let purged = store.purge_tombstones(P, grant.lsn_max, 100, |k, lsn| grant.allows(k, lsn));
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].0, b"gone".to_vec());
    assert!(store.get_state(P, b"late").unwrap().is_some());
    assert!(store.get_state(P, drift).unwrap().is_some(), "values stay");

    // An exchange with the peer that is dropped (no reply by the deadline) forgets it.
    let mut now = second + 100;
    loop {
        pair.tick(0, now, &AllReachable);
        let about_p = pair
            .wire
            .iter()
            .any(|(_, _, _, m)| matches!(m, ExchangeMessage::Range { partition: P, .. }));
        if about_p {
            break;
        }
        pair.run(now);
        now += 100;
    }
    pair.wire.clear();
    pair.tick(0, now + config().request_timeout_ms, &AllReachable);
    pair.wire.clear();
    assert!(pair.nodes[0].ae.purge_grant(&ring, P, settle).is_none());
}
