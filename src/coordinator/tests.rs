//! The coordinator's state machines driven by hand: a few shards over `MemStore`, messages
//! delivered (or dropped) explicitly, reachability set per test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::*;
use crate::causal::{Actor, Context};
use crate::ring::{Member, Ring, ShardId};

struct Unreachable(BTreeSet<u64>);

impl Liveness for Unreachable {
    fn is_reachable(&self, node: NodeId) -> bool {
        !self.0.contains(&node.0)
    }
}

struct Cluster {
    ring: Ring,
    nodes: BTreeMap<u64, Coordinator<MemStore>>,
    /// Nodes the senders believe unreachable (their failure detectors' view).
    suspected: Unreachable,
    /// Nodes whose incoming messages are dropped.
    crashed: BTreeSet<u64>,
    queue: VecDeque<(u64, Action)>,
    replies: Vec<ClientReply>,
    unresponsive: Vec<u64>,
    now: u64,
}

impl Cluster {
    fn new(nodes: u64, durability: MemDurability, config: Config) -> Self {
        let members = (1..=nodes)
            .map(|id| Member::new(NodeId(id), 1, 1))
            .collect();
        let ring = Ring::initial(64, members).expect("ring");
        let nodes = (1..=nodes)
            .map(|id| {
                let local = Replica {
                    node: NodeId(id),
                    shard: ShardId(0),
                };
                let store = MemStore::new(Actor(100 + id), durability, 1_000);
                (id, Coordinator::new(local, config, store))
            })
            .collect();
        Cluster {
            ring,
            nodes,
            suspected: Unreachable(BTreeSet::new()),
            crashed: BTreeSet::new(),
            queue: VecDeque::new(),
            replies: Vec::new(),
            unresponsive: Vec::new(),
            now: 0,
        }
    }

    fn preference(&self, key: &[u8]) -> Vec<u64> {
        self.ring
            .key_preference_list(key, 3)
            .iter()
            .map(|r| r.node.0)
            .collect()
    }

    fn extended(&self, key: &[u8]) -> Vec<u64> {
        self.ring
            .extended(self.ring.partition_of(key), 3)
            .iter()
            .map(|r| r.node.0)
            .collect()
    }

    fn request(&mut self, node: u64, request: ClientRequest) {
        let mut out = Vec::new();
        let coordinator = self.nodes.get_mut(&node).expect("node");
        coordinator.client_request(
            self.now,
            Origin::Client(7),
            request,
            &self.ring,
            &self.suspected,
            &mut out,
        );
        self.queue
            .extend(out.into_iter().map(|action| (node, action)));
    }

    /// Delivers queued actions until none is left; `drop` decides which sends are lost.
    fn run(&mut self, drop: impl Fn(&PeerMessage) -> bool) {
        while let Some((from, action)) = self.queue.pop_front() {
            match action {
                Action::Send {
                    to,
                    request_id,
                    message,
                } => {
                    if self.crashed.contains(&to.node.0) || drop(&message) {
                        continue;
                    }
                    let mut out = Vec::new();
                    let coordinator = self.nodes.get_mut(&to.node.0).expect("node");
                    let from = Replica {
                        node: NodeId(from),
                        shard: ShardId(0),
                    };
                    coordinator.peer_message(
                        self.now,
                        from,
                        request_id,
                        message,
                        &self.ring,
                        &self.suspected,
                        &mut out,
                    );
                    self.queue
                        .extend(out.into_iter().map(|action| (to.node.0, action)));
                }
                Action::Reply { reply, .. } => self.replies.push(reply),
                Action::Unresponsive { node } => self.unresponsive.push(node.0),
            }
        }
    }

    fn tick(&mut self, now: u64) {
        self.now = now;
        for (&id, coordinator) in &mut self.nodes {
            if self.crashed.contains(&id) {
                continue;
            }
            let mut out = Vec::new();
            coordinator.tick(now, &self.ring, &self.suspected, &mut out);
            self.queue
                .extend(out.into_iter().map(|action| (id, action)));
        }
    }

    fn state(&self, node: u64, key: &[u8]) -> Option<CausalState> {
        let partition = self.ring.partition_of(key).0;
        self.nodes[&node]
            .store()
            .get_state(partition, key)
            .expect("get")
    }

    /// Sends a client request to `node`, delivers everything, and returns the answer.
    fn ask(&mut self, node: u64, request: ClientRequest) -> ClientReply {
        self.request(node, request);
        self.run(|_| false);
        self.last_reply()
    }

    fn last_reply(&mut self) -> ClientReply {
        self.replies.pop().expect("a reply")
    }
}

fn put(key: &[u8], value: &[u8], context: Vec<u8>) -> ClientRequest {
    ClientRequest::Put {
        options: Options::default(),
        return_context: true,
        key: key.to_vec(),
        context,
        value: value.to_vec(),
    }
}

fn get(key: &[u8]) -> ClientRequest {
    ClientRequest::Get {
        options: Options::default(),
        key: key.to_vec(),
    }
}

fn values(reply: &ClientReply) -> Vec<Vec<u8>> {
    match reply {
        ClientReply::Get { siblings, .. } => {
            let mut siblings = siblings.clone();
            siblings.sort();
            siblings
        }
        other => panic!("not a GET reply: {other:?}"),
    }
}

fn error_of(reply: &ClientReply) -> &ClientError {
    match reply {
        ClientReply::Error(error) => error,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn a_put_reaches_every_replica_and_a_get_returns_it() {
    let mut cluster = Cluster::new(4, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    assert!(matches!(
        cluster.ask(preference[0], put(b"k", b"v1", vec![])),
        ClientReply::Put { .. }
    ));
    for node in &preference {
        assert!(cluster.state(*node, b"k").is_some(), "replica {node}");
    }
    let other = cluster.extended(b"k")[0];
    assert!(cluster.state(other, b"k").is_none());
    assert_eq!(values(&cluster.ask(other, get(b"k"))), vec![b"v1".to_vec()]);
}

#[test]
fn a_write_acknowledges_after_w_and_not_before() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    // Replica answers lost: only the coordinator's own write counts, W=2 is not met.
    cluster.request(preference[0], put(b"k", b"v1", vec![]));
    cluster.run(|message| matches!(message, PeerMessage::ReplicaWriteReply));
    assert!(cluster.replies.is_empty());
    cluster.tick(REQUEST_TIMEOUT_MS_DEFAULT.into());
    cluster.run(|_| false);
    let reply = cluster.last_reply();
    let error = error_of(&reply);
    assert_eq!(
        (error.code, error.answered, error.needed),
        (ErrorCode::Indeterminate, 1, 2)
    );
    assert_eq!(cluster.unresponsive.len(), 2);
}

#[test]
fn a_group_commit_store_acknowledges_only_synced_writes() {
    let mut cluster = Cluster::new(3, MemDurability::Group, Config::default());
    let preference = cluster.preference(b"k");
    cluster.request(preference[0], put(b"k", b"v1", vec![]));
    cluster.run(|_| false);
    assert!(cluster.replies.is_empty(), "nothing is synced yet");
    for coordinator in cluster.nodes.values_mut() {
        coordinator.store_mut().sync();
    }
    cluster.tick(1);
    cluster.run(|_| false);
    assert!(matches!(cluster.last_reply(), ClientReply::Put { .. }));
}

#[test]
fn a_down_replica_gets_a_hint_that_is_deleted_only_after_its_ack() {
    let mut cluster = Cluster::new(4, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let fallback = cluster.extended(b"k")[0];
    let down = preference[2];
    cluster.suspected.0.insert(down);
    cluster.crashed.insert(down);
    assert!(matches!(
        cluster.ask(preference[0], put(b"k", b"v1", vec![])),
        ClientReply::Put { .. }
    ));
    assert_eq!(cluster.nodes[&fallback].store().hint_count(), 1);
    assert!(cluster.state(down, b"k").is_none());

    // Still unreachable: nothing is delivered.
    cluster.tick(1_000);
    cluster.run(|_| false);
    assert_eq!(cluster.nodes[&fallback].store().hint_count(), 1);

    // Back, but the ack is lost: the hint stays and is delivered again later.
    cluster.suspected.0.clear();
    cluster.crashed.clear();
    cluster.tick(2_000);
    cluster.run(|message| matches!(message, PeerMessage::HintAck { .. }));
    assert!(cluster.state(down, b"k").is_some());
    assert_eq!(cluster.nodes[&fallback].store().hint_count(), 1);
    cluster.tick(2_100);
    cluster.run(|_| false);
    assert_eq!(
        cluster.nodes[&fallback].store().hint_count(),
        1,
        "ack pending"
    );
    cluster.tick(2_000 + HINT_ACK_TIMEOUT_MS_DEFAULT + 1_000);
    cluster.run(|_| false);
    assert_eq!(cluster.nodes[&fallback].store().hint_count(), 0);
}

#[test]
fn too_few_reachable_replicas_is_unavailable_and_changes_nothing() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    cluster.suspected.0.extend([preference[1], preference[2]]);
    let reply = cluster.ask(preference[0], put(b"k", b"v1", vec![]));
    let error = error_of(&reply);
    assert_eq!(
        (error.code, error.answered, error.needed),
        (ErrorCode::Unavailable, 1, 2)
    );
    assert!(cluster.state(preference[0], b"k").is_none());
    assert_eq!(
        error_of(&cluster.ask(preference[0], get(b"k"))).code,
        ErrorCode::Unavailable
    );
}

#[test]
fn a_read_times_out_with_what_answered() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let outsider_free = preference[0];
    cluster.crashed.extend([preference[1], preference[2]]);
    cluster.request(outsider_free, get(b"k"));
    cluster.run(|_| false);
    assert!(cluster.replies.is_empty());
    cluster.tick(REQUEST_TIMEOUT_MS_DEFAULT.into());
    cluster.run(|_| false);
    let reply = cluster.last_reply();
    let error = error_of(&reply);
    assert_eq!(
        (error.code, error.answered, error.needed),
        (ErrorCode::Timeout, 1, 2)
    );
}

#[test]
fn concurrent_blind_writes_become_siblings_and_a_covering_write_resolves_them() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    cluster.request(preference[0], put(b"k", b"a", vec![]));
    cluster.request(preference[1], put(b"k", b"b", vec![]));
    cluster.run(|_| false);
    let reply = cluster.ask(preference[2], get(b"k"));
    assert_eq!(values(&reply), vec![b"a".to_vec(), b"b".to_vec()]);
    let ClientReply::Get { context, .. } = reply else {
        unreachable!()
    };
    cluster.request(preference[1], put(b"k", b"c", context));
    cluster.run(|_| false);
    assert_eq!(
        values(&cluster.ask(preference[0], get(b"k"))),
        vec![b"c".to_vec()]
    );
}

#[test]
fn a_stale_replica_is_repaired_by_a_read() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let stale = preference[2];
    cluster.crashed.insert(stale);
    cluster.request(preference[0], put(b"k", b"v1", vec![]));
    cluster.run(|_| false);
    cluster.crashed.clear();
    assert!(cluster.state(stale, b"k").is_none());
    cluster.request(preference[1], get(b"k"));
    cluster.run(|_| false);
    assert_eq!(
        cluster.state(stale, b"k"),
        cluster.state(preference[0], b"k")
    );
}

#[test]
fn a_node_outside_the_preference_list_forwards_writes_once() {
    let mut cluster = Cluster::new(4, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let outsider = cluster.extended(b"k")[0];
    cluster.suspected.0.insert(preference[0]);
    cluster.crashed.insert(preference[0]);
    cluster.request(outsider, put(b"k", b"v1", vec![]));
    // Deliver with every forwarded request duplicated.
    let mut duplicated = VecDeque::new();
    for (from, action) in cluster.queue.drain(..) {
        if let Action::Send {
            message: PeerMessage::Forward(_),
            to,
            ..
        } = &action
        {
            assert_eq!(to.node.0, preference[1], "first reachable replica");
            duplicated.push_back((from, action.clone()));
        }
        duplicated.push_back((from, action));
    }
    cluster.queue = duplicated;
    cluster.run(|_| false);
    let ClientReply::Put { dot, .. } = cluster.last_reply() else {
        panic!("forwarded write failed")
    };
    assert_eq!(dot.actor, Actor(100 + preference[1]), "the replica's dot");
    let state = cluster.state(preference[1], b"k").expect("stored");
    assert_eq!(
        state.sibling_count(),
        1,
        "the duplicate was not applied again"
    );
}

#[test]
fn the_sibling_cap_is_reported_not_swallowed() {
    let config = Config {
        sibling_limits: crate::causal::SiblingLimits::new(1, 2),
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, MemDurability::Always, config);
    let coordinator = cluster.preference(b"k")[0];
    for value in [b"a", b"b"] {
        assert!(matches!(
            cluster.ask(coordinator, put(b"k", value, vec![])),
            ClientReply::Put { .. }
        ));
    }
    cluster.request(coordinator, put(b"k", b"c", vec![]));
    cluster.run(|_| false);
    assert_eq!(
        error_of(&cluster.last_reply()).code,
        ErrorCode::TooManySiblings
    );
}

#[test]
fn bad_contexts_and_options_are_refused() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let coordinator = cluster.preference(b"k")[0];
    assert_eq!(
        error_of(&cluster.ask(coordinator, put(b"k", b"v", b"garbage".to_vec()))).code,
        ErrorCode::BadContext
    );
    let request = ClientRequest::Get {
        options: Options {
            n: 3,
            quorum: 4,
            timeout_ms: 0,
        },
        key: b"k".to_vec(),
    };
    cluster.request(coordinator, request);
    cluster.run(|_| false);
    assert_eq!(
        error_of(&cluster.last_reply()).code,
        ErrorCode::InvalidArgument
    );
    // A valid context from elsewhere decodes.
    let context = Context::empty().to_opaque();
    assert!(matches!(
        cluster.ask(coordinator, put(b"k", b"v", context)),
        ClientReply::Put { .. }
    ));
}

#[test]
fn a_forwarded_write_whose_coordinator_is_silent_is_indeterminate() {
    let mut cluster = Cluster::new(4, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let outsider = cluster.extended(b"k")[0];
    cluster.crashed.insert(preference[0]);
    cluster.request(outsider, put(b"k", b"v1", vec![]));
    cluster.run(|_| false);
    assert!(cluster.replies.is_empty());
    cluster.tick(u64::from(
        REQUEST_TIMEOUT_MS_DEFAULT + crate::constants::FORWARD_GRACE_MS,
    ));
    cluster.run(|_| false);
    let reply = cluster.last_reply();
    assert_eq!(error_of(&reply).code, ErrorCode::Indeterminate);
    assert_eq!(cluster.unresponsive, vec![preference[0]]);
}

#[test]
fn a_crash_keeps_synced_writes_and_renews_the_actor_only_when_it_lost_some() {
    let key = b"k".as_slice();
    let mut store = MemStore::new(Actor(1), MemDurability::Group, 10);
    let state = |value: &[u8]| {
        let mut state = CausalState::new();
        state
            .update(
                &Context::empty(),
                crate::causal::Value::Bytes(value.to_vec()),
                Actor(1),
            )
            .expect("update");
        state
    };
    store.put_state(0, key, &state(b"a")).expect("put");
    store.sync();
    assert!(!store.crash(0, Actor(2)), "nothing unsynced, nothing lost");
    assert_eq!(store.incarnation(), Actor(1));
    let (first_hint, _) = store
        .put_hint(NodeId(9), 0, key, &state(b"h"))
        .expect("hint");
    store.put_state(0, key, &state(b"b")).expect("put");
    assert!(
        store.crash(1, Actor(3)),
        "the second unsynced write is lost"
    );
    assert_eq!(store.incarnation(), Actor(3));
    assert_eq!(store.get_state(0, key).expect("get"), Some(state(b"a")));
    assert_eq!(store.hint_count(), 1, "the first unsynced write survived");
    let (second_hint, _) = store
        .put_hint(NodeId(9), 0, key, &state(b"h"))
        .expect("hint");
    assert_ne!(first_hint, second_hint, "hint ids are never reused");
}

/// Delivers hints: ticks `now`, `now + 1 000` and `now + 2 000` (past the delivery interval
/// each time), delivering every message.
fn deliver_for_a_while(cluster: &mut Cluster, now: u64) {
    for at in [now, now + 1_000, now + 2_000] {
        cluster.tick(at);
        cluster.run(|_| false);
    }
}

/// The story: with exactly N nodes the extended preference list is empty, so a write made
/// while one replica was down left no hint anywhere, and the replica missed it until a read
/// repaired it. The coordinating replica now keeps the hint itself.
#[test]
fn with_exactly_n_nodes_the_coordinator_hints_a_down_replica_itself() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    assert!(cluster.extended(b"k").is_empty());
    let (coordinator, down) = (preference[0], preference[2]);
    cluster.suspected.0.insert(down);
    cluster.crashed.insert(down);
    assert!(matches!(
        cluster.ask(coordinator, put(b"k", b"v1", vec![])),
        ClientReply::Put { .. }
    ));
    let store = cluster.nodes[&coordinator].store();
    assert_eq!(store.hint_count(), 1);
    assert_eq!(store.hint_targets(), vec![NodeId(down)]);
    let hint = &store.hints_for(NodeId(down), 10).expect("hints")[0];
    assert_eq!(Some(&hint.state), cluster.state(coordinator, b"k").as_ref());
    assert_eq!(cluster.nodes[&coordinator].local_hints(), 1);
    assert!(cluster.state(down, b"k").is_none());

    // Still unreachable: the hint stays.
    cluster.tick(1_000);
    cluster.run(|_| false);
    assert_eq!(cluster.nodes[&coordinator].store().hint_count(), 1);

    // Back: delivered, acknowledged, deleted; the replica holds the coordinator's state.
    cluster.suspected.0.clear();
    cluster.crashed.clear();
    deliver_for_a_while(&mut cluster, 2_000);
    assert_eq!(cluster.nodes[&coordinator].store().hint_count(), 0);
    assert_eq!(
        cluster.state(down, b"k"),
        cluster.state(coordinator, b"k"),
        "the hint reached its target"
    );
    assert_eq!(cluster.nodes[&coordinator].local_hints(), 1);
}

#[test]
fn a_local_hint_does_not_count_toward_w() {
    // W=3 with one of exactly 3 nodes down: 2 reachable, the local hint is no third.
    let config = Config {
        w: 3,
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, MemDurability::Always, config);
    let preference = cluster.preference(b"k");
    cluster.suspected.0.insert(preference[2]);
    let reply = cluster.ask(preference[0], put(b"k", b"v1", vec![]));
    let error = error_of(&reply);
    assert_eq!(
        (error.code, error.answered, error.needed),
        (ErrorCode::Unavailable, 2, 3)
    );
    assert_eq!(cluster.nodes[&preference[0]].store().hint_count(), 0);
}

#[test]
fn with_exactly_n_nodes_a_replica_silent_at_the_deadline_is_hinted_by_the_coordinator() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let (coordinator, silent) = (preference[0], preference[2]);
    // Believed reachable, but everything sent to it is lost.
    cluster.crashed.insert(silent);
    assert!(matches!(
        cluster.ask(coordinator, put(b"k", b"v1", vec![])),
        ClientReply::Put { .. }
    ));
    assert_eq!(cluster.nodes[&coordinator].store().hint_count(), 0);

    let deadline = u64::from(REQUEST_TIMEOUT_MS_DEFAULT);
    cluster.tick(deadline);
    cluster.run(|_| false);
    assert_eq!(cluster.unresponsive, vec![silent]);
    assert_eq!(cluster.nodes[&coordinator].store().hint_count(), 1);
    assert_eq!(
        cluster.nodes[&coordinator].store().hint_targets(),
        vec![NodeId(silent)]
    );

    cluster.crashed.clear();
    deliver_for_a_while(&mut cluster, deadline + HINT_ACK_TIMEOUT_MS_DEFAULT + 1);
    assert_eq!(cluster.nodes[&coordinator].store().hint_count(), 0);
    assert_eq!(
        cluster.state(silent, b"k"),
        cluster.state(coordinator, b"k")
    );
    assert_eq!(cluster.nodes[&coordinator].local_hints(), 1);
}

#[test]
fn a_replica_write_that_fails_is_hinted_by_the_coordinator_once() {
    let mut cluster = Cluster::new(3, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let (coordinator, failing) = (preference[0], preference[2]);
    cluster.request(coordinator, put(b"k", b"v1", vec![]));
    // The failing replica's store refuses the REPLICA_WRITE.
    let at = cluster
        .queue
        .iter()
        .position(|(_, action)| {
            matches!(action, Action::Send { to, message: PeerMessage::ReplicaWrite { .. }, .. }
                if to.node.0 == failing)
        })
        .expect("a REPLICA_WRITE to the failing replica");
    let Some((_, Action::Send { request_id, .. })) = cluster.queue.remove(at) else {
        unreachable!("found above");
    };
    let mut out = Vec::new();
    let from = Replica {
        node: NodeId(failing),
        shard: ShardId(0),
    };
    let error = PeerMessage::Error {
        code: ErrorCode::StoreFailed,
    };
    let (ring, live) = (&cluster.ring, &cluster.suspected);
    let node = cluster.nodes.get_mut(&coordinator).expect("node");
    node.peer_message(0, from, request_id, error.clone(), ring, live, &mut out);
    // A duplicate of the refusal changes nothing.
    node.peer_message(0, from, request_id, error, ring, live, &mut out);
    cluster
        .queue
        .extend(out.into_iter().map(|action| (coordinator, action)));
    cluster.run(|_| false);
    assert!(matches!(cluster.last_reply(), ClientReply::Put { .. }));
    assert_eq!(cluster.nodes[&coordinator].store().hint_count(), 1);
    assert!(cluster.state(failing, b"k").is_none());

    // The deadline passes with nothing silent: still the one hint; then it is delivered.
    deliver_for_a_while(&mut cluster, u64::from(REQUEST_TIMEOUT_MS_DEFAULT));
    assert_eq!(cluster.nodes[&coordinator].local_hints(), 1);
    assert_eq!(cluster.nodes[&coordinator].store().hint_count(), 0);
    assert_eq!(
        cluster.state(failing, b"k"),
        cluster.state(coordinator, b"k")
    );
}

// --- double writes during a ring change ---------------------------------------------

/// A cluster of 4 whose key `k` moves to the node outside its preference list: that node
/// is set as the extra write target of the key's partition on every coordinator.
fn moving_cluster() -> (Cluster, Vec<u64>, u64) {
    let (cluster, preference, newcomer, _) = moving_cluster_with_targets();
    (cluster, preference, newcomer)
}

fn moving_cluster_with_targets() -> (Cluster, Vec<u64>, u64, Arc<ExtraWriteTargets>) {
    let mut cluster = Cluster::new(4, MemDurability::Always, Config::default());
    let preference = cluster.preference(b"k");
    let newcomer = cluster.extended(b"k")[0];
    let partition = cluster.ring.partition_of(b"k").0;
    let to = Replica {
        node: NodeId(newcomer),
        shard: ShardId(0),
    };
    let targets = Arc::new(ExtraWriteTargets::new([(partition, to)]));
    for coordinator in cluster.nodes.values_mut() {
        coordinator.set_extra_write_targets(targets.clone());
    }
    (cluster, preference, newcomer, targets)
}

#[test]
fn a_write_of_a_moving_partition_also_reaches_its_new_holder() {
    let (mut cluster, preference, newcomer) = moving_cluster();
    // Through a non-replica too: the write is forwarded, and its coordinator double-writes.
    for (via, value) in [(preference[0], b"v1"), (newcomer, b"v2")] {
        let context = match cluster.ask(via, get(b"k")) {
            ClientReply::Get { context, .. } => context,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            cluster.ask(via, put(b"k", value, context)),
            ClientReply::Put { .. }
        ));
        assert_eq!(
            cluster.state(newcomer, b"k"),
            cluster.state(preference[0], b"k"),
            "the new holder has the write made through node {via}"
        );
    }
    // A key of another partition does not go there.
    let other = (0..1000)
        .map(|i| format!("other-{i}").into_bytes())
        .find(|key| {
            cluster.ring.partition_of(key) != cluster.ring.partition_of(b"k")
                && !cluster.preference(key).contains(&newcomer)
        })
        .expect("a key elsewhere");
    cluster.ask(cluster.preference(&other)[0], put(&other, b"x", vec![]));
    assert!(cluster.state(newcomer, &other).is_none());
}

#[test]
fn the_new_holder_neither_counts_toward_w_nor_fails_a_write() {
    let (mut cluster, preference, newcomer) = moving_cluster();
    // The preference list's replicas answer nothing: the new holder's ack must not make W.
    cluster.request(preference[0], put(b"k", b"v1", vec![]));
    let replicas = [preference[1], preference[2]];
    cluster.run(|message| matches!(message, PeerMessage::ReplicaWriteReply));
    assert!(cluster.state(newcomer, b"k").is_some(), "it got the write");
    assert!(
        cluster.replies.is_empty(),
        "W=2 is not met by the new holder"
    );
    cluster.tick(REQUEST_TIMEOUT_MS_DEFAULT.into());
    cluster.run(|_| false);
    let reply = cluster.last_reply();
    assert_eq!(error_of(&reply).code, ErrorCode::Indeterminate);
    assert!(replicas.iter().all(|r| cluster.state(*r, b"k").is_some()));

    // The new holder is gone: writes still succeed with the replicas' W.
    cluster.crashed.insert(newcomer);
    let context = match cluster.ask(preference[0], get(b"k")) {
        ClientReply::Get { context, .. } => context,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        cluster.ask(preference[0], put(b"k", b"v2", context)),
        ClientReply::Put { .. }
    ));
    assert!(
        !cluster.unresponsive.contains(&newcomer),
        "nothing waits for the new holder, so nothing times out on it"
    );
}

#[test]
fn reads_ask_only_the_serving_replicas_and_repairs_reach_the_new_holder() {
    let (mut cluster, preference, newcomer, targets) = moving_cluster_with_targets();
    for coordinator in cluster.nodes.values_mut() {
        coordinator.set_extra_write_targets(Arc::default());
    }
    // Written before the change began, while one replica missed it: the new holder has
    // nothing yet.
    let stale = preference[2];
    cluster.crashed.insert(stale);
    cluster.ask(preference[0], put(b"k", b"v1", vec![]));
    cluster.crashed.clear();
    assert!(cluster.state(newcomer, b"k").is_none());
    for coordinator in cluster.nodes.values_mut() {
        coordinator.set_extra_write_targets(targets.clone());
    }
    // The read asks the serving replicas only (the new holder, empty, would count toward
    // R with nothing to say).
    cluster.request(preference[1], get(b"k"));
    let asked: BTreeSet<u64> = cluster
        .queue
        .iter()
        .filter_map(|(_, action)| match action {
            Action::Send {
                to,
                message: PeerMessage::ReplicaRead { .. },
                ..
            } => Some(to.node.0),
            _ => None,
        })
        .collect();
    assert!(!asked.contains(&newcomer), "asked {asked:?}");
    cluster.run(|_| false);
    assert_eq!(values(&cluster.last_reply()), vec![b"v1".to_vec()]);
    // The stale replica was repaired, and the repair reached the new holder too.
    let full = cluster.state(preference[0], b"k");
    assert_eq!(cluster.state(stale, b"k"), full);
    assert_eq!(cluster.state(newcomer, b"k"), full);
}

#[test]
fn extra_targets_are_kept_once_per_partition() {
    let r = |node| Replica {
        node: NodeId(node),
        shard: ShardId(0),
    };
    let targets = ExtraWriteTargets::new([(3, r(4)), (3, r(4)), (3, r(5)), (9, r(4))]);
    assert_eq!(targets.of(3), [r(4), r(5)]);
    assert_eq!(targets.of(9), [r(4)]);
    assert!(targets.of(1).is_empty());
    assert!(!targets.is_empty());
    assert!(ExtraWriteTargets::default().is_empty());
}
