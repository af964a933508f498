//! The bundled client against a real `rotord`: put, get, delete and siblings, pipelined
//! batches, shard-aware routing over two cores, and data surviving a restart.

mod common;

use common::Rotord;
use rotor::client::{Client, ClientError, Op, OpReply};
use rotor::wire::ErrorCode;

#[test]
fn put_get_delete_and_siblings() {
    let node = Rotord::start("1");
    let mut client = Client::connect(node.listen).unwrap();
    let absent = client.get(b"fruit").unwrap();
    assert!(absent.is_absent());

    let first = client.put(b"fruit", b"apple", None).unwrap();
    let read = client.get(b"fruit").unwrap();
    assert_eq!(read.siblings, vec![b"apple".to_vec()]);

    // A write with the read's context replaces the value.
    client.put(b"fruit", b"pear", Some(&read.context)).unwrap();
    assert_eq!(
        client.get(b"fruit").unwrap().siblings,
        vec![b"pear".to_vec()]
    );

    // A write with an outdated context is concurrent with the newer value: two siblings.
    client.put(b"fruit", b"plum", Some(&first)).unwrap();
    let both = client.get(b"fruit").unwrap();
    let mut siblings = both.siblings.clone();
    siblings.sort();
    assert_eq!(siblings, vec![b"pear".to_vec(), b"plum".to_vec()]);

    // Writing with the context that covers both resolves them.
    client.put(b"fruit", b"fig", Some(&both.context)).unwrap();
    let resolved = client.get(b"fruit").unwrap();
    assert_eq!(resolved.siblings, vec![b"fig".to_vec()]);

    client.delete(b"fruit", &resolved.context).unwrap();
    assert!(client.get(b"fruit").unwrap().is_absent());
}

#[test]
fn blind_writes_become_siblings_and_a_bad_context_is_refused() {
    let node = Rotord::start("1");
    let mut client = Client::connect(node.listen).unwrap();
    client.put(b"k", b"one", None).unwrap();
    client.put(b"k", b"two", None).unwrap();
    assert_eq!(client.get(b"k").unwrap().siblings.len(), 2);
    let err = client
        .put(b"k", b"three", Some(b"not a context"))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadContext), "{err}");
    assert!(!err.is_indeterminate());
    assert!(matches!(err, ClientError::Server { .. }));
    // The connection is still usable.
    assert_eq!(client.get(b"k").unwrap().siblings.len(), 2);
}

#[test]
fn batches_pipeline_many_requests() {
    let node = Rotord::start("1");
    let mut client = Client::connect(node.listen).unwrap();
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("batch:{i}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 1 + i % 300]).collect();
    let puts: Vec<Op<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| Op::Put {
            key,
            value,
            context: b"",
        })
        .collect();
    for result in client.batch(&puts) {
        assert!(matches!(result, Ok(OpReply::Written { .. })), "{result:?}");
    }
    let gets: Vec<Op<'_>> = keys.iter().map(|key| Op::Get { key }).collect();
    for (result, value) in client.batch(&gets).into_iter().zip(&values) {
        match result.unwrap() {
            OpReply::Get(read) => assert_eq!(read.siblings, vec![value.clone()]),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn requests_go_to_the_owning_shard_over_two_cores() {
    let node = Rotord::start("2");
    let mut client = Client::connect(node.listen).unwrap();
    let topology = client.topology().clone();
    assert_eq!(topology.nodes.len(), 1);
    assert_eq!(topology.nodes[0].ports.len(), 2, "{topology:?}");
    let mut shards_seen = [false; 2];
    for i in 0..200 {
        let key = format!("shard:{i}").into_bytes();
        let route = client.route(&key).unwrap();
        // The connection the client uses for this key is served by the owning shard.
        let (node_id, shard) = client.serving_shard(route.addr).unwrap();
        assert_eq!((node_id, shard), (topology.nodes[0].id, route.shard));
        shards_seen[usize::from(route.shard)] = true;
        client.put(&key, b"v", None).unwrap();
        assert_eq!(client.get(&key).unwrap().siblings, vec![b"v".to_vec()]);
    }
    assert_eq!(shards_seen, [true, true]);
    // A client on the common port only (the node forwards across cores) reads the same.
    let config = rotor::client::ClientConfig {
        shard_aware: false,
        ..Default::default()
    };
    let mut common = Client::connect_with(node.listen, config).unwrap();
    for i in 0..200 {
        let key = format!("shard:{i}").into_bytes();
        assert_eq!(common.get(&key).unwrap().siblings, vec![b"v".to_vec()]);
    }
}

#[test]
fn acknowledged_writes_survive_a_restart() {
    let node = Rotord::start("1");
    let mut client = Client::connect(node.listen).unwrap();
    for i in 0..100 {
        client
            .put(format!("keep:{i}").as_bytes(), b"kept", None)
            .unwrap();
    }
    drop(client);
    let (status, data) = node.stop();
    assert!(status.success(), "{status:?}");
    let node = Rotord::start_in(data, "1");
    let mut client = Client::connect(node.listen).unwrap();
    for i in 0..100 {
        let read = client.get(format!("keep:{i}").as_bytes()).unwrap();
        assert_eq!(read.siblings, vec![b"kept".to_vec()]);
    }
    assert!(!client.stats().unwrap().is_empty());
}
