use super::*;

fn state(id: u64, version: u64) -> NodeState {
    NodeState {
        id: NodeId(id),
        version,
        status: NodeStatus::Up,
        weight: 1,
        zone: String::new(),
        address: format!("10.0.0.{id}:7000"),
        ports: vec![7001],
    }
}

/// Runs gossip rounds among `gossips` with instant, lossless delivery until nothing is
/// left to send.
fn exchange(gossips: &mut [Gossip], now: u64) {
    let mut queue: Vec<(GossipPeer, GossipMessage)> = Vec::new();
    for gossip in gossips.iter_mut() {
        queue.extend(gossip.tick(now));
    }
    while let Some((to, message)) = queue.pop() {
        let index = match to {
            GossipPeer::Node(node) => gossips.iter().position(|g| g.local() == node),
            GossipPeer::Seed(address) => gossips
                .iter()
                .position(|g| g.node(g.local()).is_some_and(|s| s.address == address)),
        };
        let Some(index) = index else { continue };
        let (replies, _) = gossips[index].handle(now, message);
        queue.extend(replies);
    }
}

#[test]
fn nodes_find_each_other_through_a_seed() {
    let seed = vec!["10.0.0.1:7000".to_owned()];
    let mut gossips: Vec<Gossip> = (1..=5)
        .map(|id| Gossip::new(state(id, 1), seed.clone(), GossipConfig::default(), id))
        .collect();
    for round in 0..40 {
        exchange(&mut gossips, round * 1_000);
    }
    for gossip in &gossips {
        assert_eq!(gossip.members().len(), 5, "node {:?}", gossip.local());
    }
}

#[test]
fn the_highest_version_wins_and_a_node_owns_its_own_state() {
    let mut gossip = Gossip::new(state(1, 3), vec![], GossipConfig::default(), 1);
    let (_, changed) = gossip.handle(
        0,
        GossipMessage::State {
            sender: 2,
            ring_epoch: 0,
            nodes: vec![state(2, 5)],
        },
    );
    assert!(changed);
    let mut old = state(2, 4);
    old.weight = 9;
    gossip.handle(
        0,
        GossipMessage::State {
            sender: 2,
            ring_epoch: 0,
            nodes: vec![old],
        },
    );
    assert_eq!(gossip.node(NodeId(2)).map(|s| s.weight), Some(1));
    // A stale copy of our own state with a higher version pushes ours past it.
    let mut foreign = state(1, 7);
    foreign.weight = 42;
    gossip.handle(
        0,
        GossipMessage::State {
            sender: 2,
            ring_epoch: 0,
            nodes: vec![foreign],
        },
    );
    let own = gossip
        .node(NodeId(1))
        .cloned()
        .unwrap_or_else(|| state(0, 0));
    assert_eq!((own.weight, own.version), (1, 8));
}

#[test]
fn persisted_membership_round_trips_and_restart_bumps_the_version() {
    let mut gossip = Gossip::new(state(1, 3), vec![], GossipConfig::default(), 1);
    let mut other = state(2, 5);
    other.zone = "rack-a".to_owned();
    other.ports = vec![1, 2, 3];
    gossip.handle(
        0,
        GossipMessage::State {
            sender: 2,
            ring_epoch: 0,
            nodes: vec![other.clone()],
        },
    );
    let bytes = gossip.persist();
    let restored =
        Gossip::restore(&bytes, state(1, 1), vec![], GossipConfig::default(), 1).expect("valid");
    assert_eq!(restored.node(NodeId(2)), Some(&other));
    assert_eq!(restored.node(NodeId(1)).map(|s| s.version), Some(4));
}

#[test]
fn corrupt_persisted_membership_is_rejected() {
    let gossip = Gossip::new(state(1, 3), vec![], GossipConfig::default(), 1);
    let bytes = gossip.persist();
    for cut in 0..bytes.len() {
        assert!(persist::decode(&bytes[..cut]).is_err());
    }
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        assert!(persist::decode(&flipped).is_err(), "flip at {at}");
    }
}

proptest::proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8..=255, 0..256)) {
        let _ = persist::decode(&bytes);
        let mut framed = b"RM\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let crc = crc32c::crc32c(&framed);
        framed.extend_from_slice(&crc.to_le_bytes());
        let _ = persist::decode(&framed);
    }
}

#[test]
fn formation_members_are_the_up_nodes_only() {
    let mut gossip = Gossip::new(state(1, 1), Vec::new(), GossipConfig::default(), 1);
    let mut joining = state(2, 1);
    joining.status = NodeStatus::Joining;
    let mut removed = state(3, 1);
    removed.status = NodeStatus::Removed;
    let nodes = vec![joining, removed, state(4, 1)];
    let message = GossipMessage::State {
        sender: 4,
        ring_epoch: 1,
        nodes,
    };
    let (_, changed) = gossip.handle(0, message);
    assert!(changed);
    let ids = |members: Vec<Member>| members.iter().map(|m| m.id.0).collect::<Vec<_>>();
    assert_eq!(ids(gossip.formation_members()), vec![1, 4]);
    assert_eq!(
        ids(gossip.members()),
        vec![1, 2, 4],
        "a joiner is still a member"
    );
    gossip.update_local(|s| s.status = NodeStatus::Joining);
    assert_eq!(ids(gossip.formation_members()), vec![4]);
}

#[test]
fn a_node_started_alone_gossips_with_a_seed_added_later() {
    let mut gossip = Gossip::new(state(1, 1), Vec::new(), GossipConfig::default(), 1);
    assert!(!gossip.has_seeds());
    gossip.add_seed("10.0.0.1:7000".into());
    assert!(!gossip.has_seeds(), "its own address is no seed");
    gossip.add_seed("10.0.0.2:7000".into());
    gossip.add_seed("10.0.0.2:7000".into());
    assert!(gossip.has_seeds());
    let (peer, _) = gossip.tick(0).expect("a round is due");
    assert_eq!(peer, GossipPeer::Seed("10.0.0.2:7000".into()));
}
