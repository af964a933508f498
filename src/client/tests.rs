//! The client against a fake node: a few threads that decode frames with the real codec
//! and answer them, with two shard ports and a common port, so routing, batching with
//! out-of-order replies, errors and topology refresh are checked without a server.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::*;
use crate::wire::{
    Decoded, DeleteReply, GetReply, HelloReply, NodeInfo, NodeStatus, PutReply, Role,
    Stat as WireStat, StatsReply, TopologyReply,
};

/// Shared state of the fake node.
#[derive(Default)]
struct Fake {
    /// Key -> siblings. A write with an empty context adds a sibling, any other replaces.
    data: Mutex<HashMap<Vec<u8>, Vec<Vec<u8>>>>,
    /// (shard that served it, key) of every data request.
    seen: Mutex<Vec<(u16, Vec<u8>)>>,
    /// Epoch the TOPOLOGY reply announces; before epoch 2 every partition is said to live
    /// on shard 0, which then answers WRONG_SHARD for the odd partitions. From epoch 3 the
    /// odd partitions belong to a second node, 6, whose address refuses connections.
    epoch: AtomicU64,
    /// The address of node 6.
    dead: Mutex<Option<SocketAddr>>,
    ports: Mutex<Vec<u16>>,
    common: Mutex<Option<SocketAddr>>,
    /// ADMIN_CLEAR requests still to be refused as a starting node refuses them.
    starting_refusals: AtomicU64,
}

const Q: u32 = 8;

/// Starts the fake: a common port (served as shard 0) and two shard ports.
fn start(epoch: u64) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    fake.epoch.store(epoch, Ordering::SeqCst);
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    *fake.ports.lock().unwrap() = vec![addrs[1].port(), addrs[2].port()];
    *fake.common.lock().unwrap() = Some(addrs[0]);
    // A port nobody listens on any more.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    *fake.dead.lock().unwrap() = Some(dead);
    for (i, listener) in listeners.into_iter().enumerate() {
        // The common port takes any key, as a node forwards it to its shard.
        let shard = [None, Some(0), Some(1)][i];
        let fake = fake.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let fake = fake.clone();
                thread::spawn(move || serve(&fake, stream, shard));
            }
        });
    }
    (fake, addrs[0])
}

/// Serves one connection of `shard` (`None`: the common port): decodes every frame of each
/// read, and answers them in reverse order (so clients must match by id).
fn serve(fake: &Fake, mut stream: TcpStream, shard: Option<u16>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut at = 0;
        while let Ok(Decoded::Frame { frame, consumed }) = wire::decode(&buf[at..]) {
            at += consumed;
            let mut out = Vec::new();
            answer(fake, shard, frame.request_id, &frame.message, &mut out);
            replies.push(out);
        }
        buf.drain(..at);
        for reply in replies.iter().rev() {
            if stream.write_all(reply).is_err() {
                return;
            }
        }
    }
}

fn answer(fake: &Fake, port: Option<u16>, id: u32, message: &Message<'_>, out: &mut Vec<u8>) {
    let epoch = fake.epoch.load(Ordering::SeqCst);
    let partition_shard = |key: &[u8]| -> u16 {
        let p = crate::ring::partition_of_position(crate::ring::key_position(key), Q).0;
        (p % 2) as u16
    };
    let mut send = |m: Message<'_>| wire::encode(id, &m, out).unwrap();
    let key_of = |m: &Message<'_>| match m {
        Message::Get(g) => Some(g.key.to_vec()),
        Message::Put(p) => Some(p.key.to_vec()),
        Message::Delete(d) => Some(d.key.to_vec()),
        _ => None,
    };
    let shard = port.unwrap_or(0);
    if let Some(key) = key_of(message) {
        let shard = port.unwrap_or_else(|| partition_shard(&key));
        if partition_shard(&key) != shard {
            return send(Message::Error(ErrorReply {
                code: ErrorCode::WrongShard,
                answered: 0,
                needed: 0,
                ring_epoch: 2,
                message: "wrong shard",
            }));
        }
        fake.seen.lock().unwrap().push((shard, key));
    }
    let mut data = fake.data.lock().unwrap();
    match message {
        Message::Hello(_) => send(Message::HelloReply(HelloReply {
            version: 1,
            role: Role::Peer,
            features: 0,
            cluster_id: 9,
            node_id: 5,
            shard,
            shard_count: 2,
        })),
        Message::Topology(_) => {
            let ports = fake.ports.lock().unwrap().clone();
            let address = fake.common.lock().unwrap().unwrap().to_string();
            let dead = fake.dead.lock().unwrap().unwrap();
            let dead_address = dead.to_string();
            let dead_ports = [dead.port()];
            let owners: Vec<wire::Owner> = (0..Q)
                .map(|p| wire::Owner {
                    node: u16::from(epoch >= 3 && p % 2 == 1),
                    shard: if epoch >= 2 { (p % 2) as u16 } else { 0 },
                })
                .map(|o| wire::Owner {
                    shard: if o.node == 1 { 0 } else { o.shard },
                    ..o
                })
                .collect();
            let mut nodes = vec![NodeInfo {
                id: 5,
                version: 1,
                status: NodeStatus::Up,
                weight: 1,
                zone: "",
                address: &address,
                ports: ports.as_slice().into(),
            }];
            if epoch >= 3 {
                nodes.push(NodeInfo {
                    id: 6,
                    version: 1,
                    status: NodeStatus::Up,
                    weight: 1,
                    zone: "",
                    address: &dead_address,
                    ports: dead_ports.as_slice().into(),
                });
            }
            send(Message::TopologyReply(TopologyReply {
                epoch,
                nodes: nodes.as_slice().into(),
                owners: owners.into(),
            }))
        }
        Message::Get(g) if g.key == b"fail" => send(Message::Error(ErrorReply {
            code: ErrorCode::Timeout,
            answered: 1,
            needed: 2,
            ring_epoch: 0,
            message: "deadline passed",
        })),
        Message::Get(g) => {
            let siblings: Vec<&[u8]> = data
                .get(g.key)
                .map(|s| s.iter().map(|v| v.as_slice()).collect())
                .unwrap_or_default();
            let context = format!("ctx{}", siblings.len());
            send(Message::GetReply(GetReply {
                siblings: siblings.into(),
                context: context.as_bytes(),
            }))
        }
        Message::Put(p) if p.key == b"maybe" => send(Message::Error(ErrorReply {
            code: ErrorCode::Indeterminate,
            answered: 1,
            needed: 2,
            ring_epoch: 0,
            message: "quorum not confirmed",
        })),
        Message::Put(p) => {
            let entry = data.entry(p.key.to_vec()).or_default();
            if !p.context.is_empty() {
                entry.clear();
            }
            entry.push(p.value.to_vec());
            send(Message::PutReply(PutReply { context: b"ctx1" }))
        }
        Message::Delete(d) => {
            data.remove(d.key);
            send(Message::DeleteReply(DeleteReply { context: b"ctx0" }))
        }
        Message::Stats(_) => send(Message::StatsReply(StatsReply {
            stats: vec![WireStat {
                shard,
                name: "get.count",
                value: 3,
            }]
            .into(),
        })),
        Message::AdminClear(_) => {
            let refuse = fake
                .starting_refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if refuse {
                send(Message::Error(ErrorReply {
                    code: ErrorCode::Overloaded,
                    answered: 0,
                    needed: 0,
                    ring_epoch: 0,
                    message: "the node is starting",
                }))
            } else {
                send(Message::AdminClearReply(crate::wire::AdminClearReply {
                    cleared: 2,
                }))
            }
        }
        _ => {}
    }
}

/// A key whose partition lives on `shard` under the fake's epoch-2 placement.
fn key_on(shard: u16, n: usize) -> Vec<u8> {
    (0..)
        .map(|i| format!("k{i}").into_bytes())
        .filter(|k| {
            crate::ring::partition_of_position(crate::ring::key_position(k), Q).0 % 2
                == u32::from(shard)
        })
        .nth(n)
        .unwrap()
}

#[test]
fn put_get_delete_and_siblings() {
    let (_fake, addr) = start(2);
    let mut client = Client::connect(addr).unwrap();
    assert_eq!(client.topology().partitions(), Q);
    assert!(client.get(b"a").unwrap().is_absent());
    assert_eq!(client.put(b"a", b"one", None).unwrap(), b"ctx1");
    client.put(b"a", b"two", None).unwrap();
    let read = client.get(b"a").unwrap();
    assert_eq!(read.siblings, vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(read.context, b"ctx2");
    client.put(b"a", b"merged", Some(&read.context)).unwrap();
    assert_eq!(client.get(b"a").unwrap().siblings, vec![b"merged".to_vec()]);
    client.delete(b"a", b"ctx1").unwrap();
    assert!(client.get(b"a").unwrap().is_absent());
    let stats = client.stats().unwrap();
    assert_eq!(stats[0].name, "get.count");
}

#[test]
fn requests_go_to_the_owning_shard_port() {
    let (fake, addr) = start(2);
    let mut client = Client::connect(addr).unwrap();
    let (k0, k1) = (key_on(0, 0), key_on(1, 0));
    let (r0, r1) = (client.route(&k0).unwrap(), client.route(&k1).unwrap());
    assert_eq!((r0.shard, r1.shard), (0, 1));
    assert_ne!(r0.addr, r1.addr);
    assert_ne!(r1.addr, addr);
    assert_eq!(client.serving_shard(r1.addr).unwrap(), (5, 1));
    client.put(&k0, b"x", None).unwrap();
    client.put(&k1, b"y", None).unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(0, k0), (1, k1)]);
}

#[test]
fn wrong_shard_refreshes_the_topology_and_retries() {
    let (fake, addr) = start(1);
    let mut client = Client::connect(addr).unwrap();
    assert_eq!(client.topology().epoch, 1);
    fake.epoch.store(2, Ordering::SeqCst);
    let key = key_on(1, 3);
    client.put(&key, b"v", None).unwrap();
    assert_eq!(client.topology().epoch, 2);
    assert_eq!(client.get(&key).unwrap().siblings, vec![b"v".to_vec()]);
}

#[test]
fn batch_matches_out_of_order_replies() {
    let (_fake, addr) = start(2);
    let mut client = Client::connect(addr).unwrap();
    let keys: Vec<Vec<u8>> = (0..300).map(|i| format!("key{i}").into_bytes()).collect();
    let values: Vec<Vec<u8>> = (0..300).map(|i| format!("value{i}").into_bytes()).collect();
    let puts: Vec<Op<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| Op::Put {
            key,
            value,
            context: b"",
        })
        .collect();
    assert!(client.batch(&puts).iter().all(|r| r.is_ok()));
    let gets: Vec<Op<'_>> = keys.iter().map(|key| Op::Get { key }).collect();
    for (result, value) in client.batch(&gets).into_iter().zip(&values) {
        match result.unwrap() {
            OpReply::Get(r) => assert_eq!(r.siblings, std::slice::from_ref(value)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn errors_carry_code_counts_and_indeterminacy() {
    let (_fake, addr) = start(2);
    let mut client = Client::connect(addr).unwrap();
    let err = client.get(b"fail").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Timeout));
    assert!(!err.is_indeterminate());
    assert!(matches!(
        err,
        ClientError::Server {
            answered: 1,
            needed: 2,
            ..
        }
    ));
    let err = client.put(b"maybe", b"v", None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Indeterminate));
    assert!(err.is_indeterminate());
    // The connection stays usable after an ERROR.
    client.put(b"fine", b"v", None).unwrap();
    let too_long = vec![0u8; crate::constants::KEY_BYTES_MAX + 1];
    assert!(matches!(
        client.get(&too_long),
        Err(ClientError::Invalid(_))
    ));
}

#[test]
fn admin_requests_refused_by_a_starting_node_are_retried() {
    let (fake, addr) = start(2);
    let mut client = Client::connect(addr).unwrap();
    fake.starting_refusals.store(3, Ordering::SeqCst);
    assert_eq!(client.admin_clear().unwrap(), 2);
    assert_eq!(fake.starting_refusals.load(Ordering::SeqCst), 0);
    // A node that stays overloaded is reported once the wait is over.
    fake.starting_refusals.store(u64::MAX, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = client.admin_clear().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Overloaded));
    assert!(started.elapsed() >= ADMIN_OVERLOADED_WAIT);
}

#[test]
fn keys_of_an_unreachable_node_go_to_the_next_node() {
    let (fake, addr) = start(3);
    // Node 6 stays routed around for the whole test, however slow the machine.
    let config = ClientConfig {
        node_retry_after: Duration::from_secs(3600),
        ..ClientConfig::default()
    };
    let mut client = Client::connect_with(addr, config.clone()).unwrap();
    assert_eq!(client.topology().nodes.len(), 2);
    let (mine, theirs) = (key_on(0, 0), key_on(1, 0));
    assert_eq!(client.route(&theirs).unwrap().node, 6);
    client.put(&mine, b"a", None).unwrap();
    // Node 6 refuses: the write cannot have been applied, so it goes to node 5's common
    // port, and so do the next requests for node 6's keys while it stays down.
    client.put(&theirs, b"b", None).unwrap();
    assert_eq!(client.unreachable_nodes(), vec![6]);
    assert_eq!(client.reroutes(), 1);
    let route = client.route(&theirs).unwrap();
    assert_eq!((route.node, route.via, route.addr), (6, Some(5), addr));
    assert_eq!(client.get(&theirs).unwrap().siblings, vec![b"b".to_vec()]);
    assert_eq!(client.reroutes(), 1);
    let keys: Vec<Vec<u8>> = (1..20).map(|n| key_on(1, n)).collect();
    let ops: Vec<Op<'_>> = keys
        .iter()
        .map(|key| Op::Put {
            key,
            value: b"c",
            context: b"",
        })
        .collect();
    // A batch from a client that does not know yet goes around node 6 the same way.
    let mut fresh = Client::connect_with(addr, config).unwrap();
    let results = fresh.batch(&ops);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fresh.unreachable_nodes(), vec![6]);
    assert_eq!(fresh.reroutes(), ops.len() as u64);
    assert_eq!(fake.seen.lock().unwrap().len(), 3 + ops.len());

    // Pinned to its seed, a client sends everything there and never reroutes.
    let config = ClientConfig {
        pin_to_seed: true,
        ..ClientConfig::default()
    };
    let mut pinned = Client::connect_with(addr, config).unwrap();
    assert_eq!(pinned.route(&theirs).unwrap().addr, addr);
    assert_eq!(pinned.get(&theirs).unwrap().siblings, vec![b"b".to_vec()]);
    assert!(pinned.unreachable_nodes().is_empty());
    assert_eq!(pinned.reroutes(), 0);
}

#[test]
fn the_fallback_walks_clockwise_past_unreachable_nodes() {
    let node = |id: u64, status| NodeEntry {
        id,
        version: 1,
        status,
        weight: 1,
        zone: String::new(),
        address: format!("127.0.0.{id}:7070"),
        ports: vec![7071],
    };
    let topology = Topology {
        epoch: 1,
        nodes: vec![
            node(1, NodeStatus::Up),
            node(2, NodeStatus::Up),
            node(3, NodeStatus::Down),
        ],
        owners: [0u16, 0, 2, 1, 0, 1, 2, 0]
            .iter()
            .map(|&node| Owner { node, shard: 0 })
            .collect(),
    };
    let seed: SocketAddr = "127.0.0.9:7070".parse().unwrap();
    let addr = |id: u64| -> SocketAddr { format!("127.0.0.{id}:7070").parse().unwrap() };
    // Node 3 is marked down in the topology, so partition 1 falls back to node 2.
    assert_eq!(
        topology.fallback_addr(1, seed, |_| false),
        Some((2, addr(2)))
    );
    assert_eq!(
        topology.fallback_addr(3, seed, |_| false),
        Some((1, addr(1)))
    );
    // Wrapping around the ring.
    assert_eq!(
        topology.fallback_addr(7, seed, |_| false),
        Some((2, addr(2)))
    );
    // Nothing left once node 2 is unreachable too.
    assert_eq!(topology.fallback_addr(1, seed, |n| n == 1), None);
    assert_eq!(topology.fallback_addr(8, seed, |_| false), None);
    assert_eq!(topology.node_index(3), Some(2));
}

#[test]
fn a_refused_connection_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Client::connect(port).err().unwrap();
    assert!(matches!(err, ClientError::Connect { .. }));
    assert!(err.is_connection());
}
