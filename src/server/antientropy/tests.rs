//! Two shards' anti-entropy runtimes over in-memory stores, talking through real wire
//! frames (encoded, decoded, converted) the way two nodes' links and services carry them.

use std::collections::BTreeMap;

use super::*;
use crate::causal::{Actor, CausalState, Value};
use crate::constants::{PEER_PSEUDO_SHARD_BASE, PEER_REQUEST_CLASS_COORDINATOR};
use crate::coordinator::{MemDurability, MemStore};
use crate::ring::{Member, ShardId};
use crate::wire::{Decoded, MerklePush};

const Q: u32 = 64;
const TICK_MS: u64 = 10;

struct FakeHost {
    now: Cell<u64>,
    view: Rc<SharedView>,
    store: RefCell<MemStore>,
    sent: RefCell<Vec<(Replica, Vec<u8>)>>,
    unresponsive: RefCell<Vec<NodeId>>,
}

impl ExchangeHost for FakeHost {
    type Store = MemStore;

    fn now(&self) -> u64 {
        self.now.get()
    }

    fn view(&self) -> Rc<SharedView> {
        self.view.clone()
    }

    fn with_store<R>(&self, f: impl FnOnce(&mut MemStore) -> R) -> R {
        f(&mut self.store.borrow_mut())
    }

    fn send_frame(&self, to: Replica, frame: Vec<u8>) -> bool {
        self.sent.borrow_mut().push((to, frame));
        true
    }

    fn unresponsive(&self, node: NodeId) {
        self.unresponsive.borrow_mut().push(node);
    }
}

struct Shard {
    local: Replica,
    ae: ShardAntiEntropy,
    host: FakeHost,
}

fn replica(node: u64) -> Replica {
    Replica {
        node: NodeId(node),
        shard: ShardId(0),
    }
}

fn view(nodes: &[u64]) -> Rc<SharedView> {
    let members = nodes
        .iter()
        .map(|&n| Member::new(NodeId(n), 1, 1))
        .collect();
    Rc::new(SharedView {
        ring: Arc::new(Ring::initial(Q, members).expect("ring")),
        down: Arc::new(BTreeSet::new()),
        nodes: Arc::new(Vec::new()),
        pending: None,
    })
}

fn shard(node: u64, view: Rc<SharedView>, enabled: bool) -> Shard {
    let config = ExchangeConfig {
        n: 2,
        exchange_interval_ms: TICK_MS,
        ..ExchangeConfig::default()
    };
    Shard {
        local: replica(node),
        ae: ShardAntiEntropy::with_config(replica(node), config, enabled),
        host: FakeHost {
            now: Cell::new(0),
            view,
            store: RefCell::new(MemStore::new(Actor(node), MemDurability::Always, 16)),
            sent: RefCell::new(Vec::new()),
            unresponsive: RefCell::new(Vec::new()),
        },
    }
}

/// Writes `value` over whatever the store holds for `key` (a new version by `actor`).
fn write(shard: &Shard, key: &[u8], value: &[u8], actor: u64) {
    let partition = shard.host.view.ring.partition_of(key).0;
    let mut store = shard.host.store.borrow_mut();
    let mut state = store
        .get_state(partition, key)
        .expect("get")
        .unwrap_or_default();
    let context = state.context();
    state
        .update(&context, Value::Bytes(value.to_vec()), Actor(actor))
        .expect("update");
    store.put_state(partition, key, &state).expect("put");
}

fn contents(shard: &Shard) -> BTreeMap<(u32, Vec<u8>), CausalState> {
    let store = shard.host.store.borrow();
    store
        .states()
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect()
}

fn decode_one(bytes: &[u8]) -> Frame<'_> {
    match wire::decode(bytes).expect("a valid frame") {
        Decoded::Frame { frame, consumed } => {
            assert_eq!(consumed, bytes.len(), "exactly one frame");
            frame
        }
        Decoded::Incomplete { .. } => panic!("incomplete frame"),
    }
}

/// Serves a request frame at `to` as its service would (the sender is an incoming
/// connection, named by a pseudo shard) and returns the reply frame's bytes.
fn serve(to: &Shard, from_node: u64, request: &[u8]) -> Vec<u8> {
    let frame = decode_one(request);
    let message = convert::exchange_request(&frame.message).expect("an exchange request");
    let pseudo = Replica {
        node: NodeId(from_node),
        shard: ShardId(PEER_PSEUDO_SHARD_BASE),
    };
    let mut out = Vec::new();
    to.ae
        .serve(&to.host, pseudo, frame.request_id, message, &mut out);
    out
}

/// Carries every frame `a` sent to `b` and the replies back; returns how many.
fn deliver(a: &Shard, b: &Shard) -> usize {
    let sent = std::mem::take(&mut *a.host.sent.borrow_mut());
    for (to, request) in &sent {
        assert_eq!(*to, b.local, "sent to the peer replica");
        let reply = serve(b, a.local.node.0, request);
        let frame = decode_one(&reply);
        assert_eq!(frame.request_id, decode_one(request).request_id);
        assert_eq!(
            request_class(frame.request_id).0,
            PEER_REQUEST_CLASS_ANTIENTROPY
        );
        assert!(a.ae.on_reply(&a.host, *to, &frame), "a reply it awaits");
    }
    sent.len()
}

fn step(a: &Shard, b: &Shard) {
    for s in [a, b] {
        s.host.now.set(s.host.now.get() + TICK_MS);
        s.ae.tick(&s.host);
    }
    deliver(a, b);
    deliver(b, a);
}

#[test]
fn two_diverged_shards_converge_over_wire_frames_and_count_it() {
    let view = view(&[1, 2]);
    let (a, b) = (shard(1, view.clone(), true), shard(2, view, true));
    for i in 0..300 {
        write(&a, format!("a-{i}").as_bytes(), b"from a", 1);
    }
    for i in 0..100 {
        write(&b, format!("b-{i}").as_bytes(), b"from b", 2);
    }
    // Concurrent versions of the same keys: both sides must end with both siblings.
    for i in 0..50 {
        let key = format!("both-{i}");
        write(&a, key.as_bytes(), b"a's", 1);
        write(&b, key.as_bytes(), b"b's", 2);
    }
    let mut rounds = 0;
    while contents(&a) != contents(&b) {
        rounds += 1;
        assert!(rounds < 5_000, "no convergence after {rounds} rounds");
        step(&a, &b);
    }
    let all = contents(&a);
    assert_eq!(all.len(), 450);
    for i in 0..50 {
        let key = format!("both-{i}").into_bytes();
        let partition = a.host.view.ring.partition_of(&key).0;
        let state = &all[&(partition, key)];
        assert_eq!(
            state.read().values.len(),
            2,
            "concurrent writes stay siblings"
        );
    }
    let (sa, sb) = (a.ae.stats(), b.ae.stats());
    assert_eq!(sa.bad_entries + sb.bad_entries, 0);
    assert!(sa.keys_repaired > 0 && sb.keys_repaired > 0);
    // Keep exchanging until every partition was seen in sync by both sides.
    let mut rounds = 0;
    while a.ae.coverage() != (u64::from(Q), u64::from(Q))
        || b.ae.coverage() != (u64::from(Q), u64::from(Q))
    {
        rounds += 1;
        assert!(rounds < 5_000, "partitions never all seen in sync");
        step(&a, &b);
    }
    assert_eq!(
        contents(&a),
        contents(&b),
        "in sync exchanges change nothing"
    );
    assert!(a.host.unresponsive.borrow().is_empty());
    let mut entries = Vec::new();
    a.ae.stat_entries(0, &mut entries);
    let stat = |name: &str| entries.iter().find(|e| e.name == name).map(|e| e.value);
    assert_eq!(stat("ae_partitions_in_sync"), Some(u64::from(Q)));
    assert_eq!(stat("ae_keys_repaired"), Some(sa.keys_repaired));
    assert!(stat("ae_exchanges").unwrap_or(0) >= u64::from(Q));
    assert_eq!(stat("ae_replies_unknown"), Some(0));
}

#[test]
fn a_wiped_replica_is_refilled_from_its_peer_alone() {
    let view = view(&[1, 2]);
    // Only the empty side runs exchanges: its keys requests and merges do the refill.
    let (full, empty) = (shard(1, view.clone(), false), shard(2, view, true));
    for i in 0..500 {
        write(&full, format!("key-{i}").as_bytes(), b"value", 1);
    }
    let mut rounds = 0;
    while contents(&empty) != contents(&full) {
        rounds += 1;
        assert!(rounds < 5_000, "no refill after {rounds} rounds");
        step(&full, &empty);
    }
    assert_eq!(empty.ae.stats().keys_repaired, 500);
    assert_eq!(
        full.ae.stats().started,
        0,
        "a disabled shard starts nothing"
    );
}

#[test]
fn a_one_node_ring_or_a_disabled_shard_sends_nothing() {
    let alone = shard(1, view(&[1]), true);
    let off = shard(1, view(&[1, 2]), false);
    for _ in 0..200 {
        for s in [&alone, &off] {
            s.host.now.set(s.host.now.get() + TICK_MS);
            s.ae.tick(&s.host);
        }
    }
    assert!(alone.host.sent.borrow().is_empty());
    assert!(off.host.sent.borrow().is_empty());
    assert_eq!(alone.ae.stats().started + off.ae.stats().started, 0);
    // A disabled shard still answers its peers.
    let mut request = Vec::new();
    let range = ExchangeMessage::Range {
        partition: 3,
        level: 0,
        start: 0,
        count: 1,
    };
    convert::encode_exchange(tag_request_id(1, 5), &range, &mut request).unwrap();
    let reply = serve(&off, 2, &request);
    assert!(matches!(
        decode_one(&reply).message,
        Message::MerkleRangeReply(r) if r.partition == 3 && r.hashes.len() == 1
    ));
}

#[test]
fn bad_pushes_get_an_error_or_skip_their_bad_entries() {
    let node = shard(1, view(&[1, 2]), true);
    let push = |partition: u32, state: &[u8]| {
        let entries = [wire::Entry { key: b"k", state }];
        let mut bytes = Vec::new();
        let message = Message::MerklePush(MerklePush {
            partition,
            entries: wire::List::Borrowed(&entries),
        });
        wire::encode(tag_request_id(1, 9), &message, &mut bytes).unwrap();
        serve(&node, 2, &bytes)
    };
    // A partition outside the ring, and one this shard holds.
    let refused = push(Q + 7, b"whatever");
    assert!(matches!(
        decode_one(&refused).message,
        Message::Error(e) if e.code == ErrorCode::NotOwner
    ));
    let garbage = push(1, b"not a causal state");
    assert!(matches!(
        decode_one(&garbage).message,
        Message::MerklePushAck(ack) if ack.partition == 1 && ack.repaired == 0
    ));
    assert_eq!(node.ae.stats().bad_entries, 1);
    let mut state = CausalState::new();
    let context = state.context();
    state
        .update(&context, Value::Bytes(b"v".to_vec()), Actor(7))
        .unwrap();
    let good = push(1, &state.to_bytes());
    assert!(matches!(
        decode_one(&good).message,
        Message::MerklePushAck(ack) if ack.repaired == 1
    ));
    assert_eq!(
        node.host.store.borrow().get_state(1, b"k").unwrap(),
        Some(state)
    );
}

#[test]
fn replies_are_taken_by_opcode_or_by_class_and_unknown_ones_are_ignored() {
    let node = shard(1, view(&[1, 2]), true);
    let peer = replica(2);
    let encode = |id: u32, message: &Message<'_>| {
        let mut bytes = Vec::new();
        wire::encode(id, message, &mut bytes).unwrap();
        bytes
    };
    let error = |id| {
        encode(
            id,
            &Message::Error(ErrorReply {
                code: ErrorCode::NotOwner,
                answered: 0,
                needed: 0,
                ring_epoch: 0,
                message: "",
            }),
        )
    };
    // The coordinator's errors are not anti-entropy's.
    let coordinator_error = error(tag_request_id(PEER_REQUEST_CLASS_COORDINATOR, 4));
    assert!(!node
        .ae
        .on_reply(&node.host, peer, &decode_one(&coordinator_error)));
    // Anti-entropy's are, even when nothing awaits them.
    let late_error = error(tag_request_id(PEER_REQUEST_CLASS_ANTIENTROPY, 4));
    assert!(node.ae.on_reply(&node.host, peer, &decode_one(&late_error)));
    let ack = encode(
        77,
        &Message::MerklePushAck(MerklePushAck {
            partition: 0,
            repaired: 0,
        }),
    );
    assert!(node.ae.on_reply(&node.host, peer, &decode_one(&ack)));
    let pong = encode(
        3,
        &Message::Pong(wire::Pong {
            nonce: 1,
            sender: 2,
        }),
    );
    assert!(!node.ae.on_reply(&node.host, peer, &decode_one(&pong)));
    let mut entries = Vec::new();
    node.ae.stat_entries(0, &mut entries);
    let unknown = entries.iter().find(|e| e.name == "ae_replies_unknown");
    assert_eq!(unknown.map(|e| e.value), Some(2));
}

#[test]
fn a_silent_peer_is_reported_and_its_exchange_dropped() {
    let view = view(&[1, 2]);
    let node = shard(1, view, true);
    let deadline = ExchangeConfig::default().request_timeout_ms;
    let mut now = 0;
    while now <= deadline + 10 * TICK_MS {
        now += TICK_MS;
        node.host.now.set(now);
        node.ae.tick(&node.host);
    }
    assert!(!node.host.sent.borrow().is_empty(), "it asked");
    assert!(node.host.unresponsive.borrow().contains(&NodeId(2)));
    assert!(node.ae.stats().dropped >= 1);
}

#[test]
fn wire_ids_stay_in_30_bits_skip_those_in_use_and_are_bounded() {
    let asked = |sent_at| Asked {
        machine_id: Some(1),
        partition: 0,
        root: false,
        sent_at,
    };
    let mut ids = WireRequests {
        next: (1 << PEER_REQUEST_CLASS_SHIFT) - 2,
        ..WireRequests::default()
    };
    let first = ids.insert(asked(0)).unwrap();
    assert_eq!(first, (1 << PEER_REQUEST_CLASS_SHIFT) - 1);
    assert_eq!(ids.insert(asked(0)), Some(1), "wraps past 0");
    ids.next = 0;
    assert_eq!(ids.insert(asked(0)), Some(2), "1 is in use");
    while ids.in_flight.len() < EXCHANGE_WIRE_REQUESTS_MAX {
        ids.insert(asked(100)).unwrap();
    }
    assert_eq!(ids.insert(asked(100)), None, "bounded");
    ids.prune(150, 100);
    assert_eq!(ids.in_flight.len(), EXCHANGE_WIRE_REQUESTS_MAX - 3);
    assert!(ids.take(1).is_none(), "pruned");
}

#[test]
fn the_latency_window_reports_its_p999_once_per_window() {
    let mut window = LatencyWindow::new();
    assert_eq!(window.report(0), None, "the first window has not ended");
    assert_eq!(
        window.report(EXCHANGE_PRESSURE_WINDOW_MS),
        Some(0),
        "idle: calm"
    );
    for _ in 0..999 {
        window.record(100);
    }
    window.record(50_000);
    assert_eq!(window.report(EXCHANGE_PRESSURE_WINDOW_MS + 1), None);
    let p999 = window.report(2 * EXCHANGE_PRESSURE_WINDOW_MS).unwrap();
    assert!((99..=101).contains(&p999), "{p999}");
    for _ in 0..10 {
        window.record(50_000);
    }
    let p999 = window.report(3 * EXCHANGE_PRESSURE_WINDOW_MS).unwrap();
    assert!(p999 >= 49_000, "{p999}");
}
