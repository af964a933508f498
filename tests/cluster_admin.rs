//! Membership changes through `rotor admin`, on real processes: three nodes formed by
//! seeds (formation mode), a fourth started alone joins with `rotor admin join`, its plan
//! shows the replicas moving to it, `commit` turns the formation ring into a committed
//! base with a pending change that every node learns through gossip (RING_STATE), further
//! changes are refused while it is pending, and a restarted node keeps it from
//! `<data-dir>/RING`.
//!
//! Completing the moves is the partition transfer's job; this test stops at the pending
//! change every node agrees on.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};

use common::cluster::{wait_for, Cluster, CONVERGE_TIMEOUT, GOSSIP_INTERVAL_MS};
use common::Rotord;
use rotor::client::{Client, ClientConfig, StatusInfo};
use rotor::wire::ErrorCode;

/// Runs `rotor --server SERVER admin ARGS...`.
fn admin(server: SocketAddr, args: &[&str]) -> Output {
    let server = server.to_string();
    Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["--server", &server, "admin"])
        .args(args)
        .output()
        .expect("run rotor")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn status(addr: SocketAddr) -> Result<StatusInfo, String> {
    let mut client = Client::connect_with(addr, ClientConfig::default())
        .map_err(|e| format!("connect {addr}: {e}"))?;
    client.admin_status().map_err(|e| e.to_string())
}

#[test]
fn a_joining_node_commits_a_change_every_node_learns_and_keeps() {
    let mut cluster = Cluster::start(3, &[]);
    let interval = GOSSIP_INTERVAL_MS.to_string();
    let fourth = Rotord::start_with(
        "1",
        &[
            "--node-id",
            "4",
            "--n",
            "3",
            "--r",
            "2",
            "--w",
            "2",
            "--gossip-interval-ms",
            &interval,
        ],
    );
    let seed = cluster.nodes[0].listen.to_string();

    // Formation mode everywhere: the seeds' ring, nothing committed.
    let before = status(cluster.nodes[0].listen).expect("status of node 1");
    assert!(!before.committed);
    assert_eq!(before.next_epoch, None);
    let formation_epoch = before.ring_epoch;

    let joined = admin(fourth.listen, &["join", &seed]);
    assert!(joined.status.success(), "join: {}", text(&joined));

    let plan = admin(fourth.listen, &["plan"]);
    assert!(plan.status.success(), "plan: {}", text(&plan));
    let mut client = Client::connect_with(fourth.listen, ClientConfig::default()).expect("connect");
    let preview = client.admin_plan().expect("plan");
    assert_eq!(preview.ring_epoch, formation_epoch);
    assert!(!preview.moves.is_empty(), "a join moves replicas");
    assert!(preview.moves.iter().all(|m| m.to_node == 4), "{preview:?}");
    let four = preview.nodes.iter().find(|n| n.node == 4).expect("node 4");
    assert_eq!(four.owned_before, 0);
    assert!(four.owned_after > 0);
    assert_eq!(four.receiving as usize, preview.moves.len());

    let commit = admin(fourth.listen, &["commit"]);
    assert!(commit.status.success(), "commit: {}", text(&commit));
    let next = preview.next_epoch;

    // Every node learns the committed change through gossip; the old ring still serves.
    let addrs: Vec<(u64, SocketAddr)> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.listen))
        .chain([(4, fourth.listen)])
        .collect();
    for &(id, addr) in &addrs {
        let seen = wait_for(CONVERGE_TIMEOUT, || {
            let s = status(addr)?;
            match (s.committed, s.next_epoch, s.ring_epoch) {
                (true, Some(e), serving) if e == next && serving == formation_epoch => Ok(s),
                _ => Err(format!("node {id} status: {s:?}")),
            }
        })
        .unwrap_or_else(|last| panic!("node {id} never showed the pending change: {last}"));
        assert_eq!(seen.moves.len(), preview.moves.len(), "node {id}");
        let topology = Client::connect(addr).expect("connect");
        assert_eq!(
            topology.topology().epoch,
            formation_epoch,
            "node {id} serves"
        );
    }

    // While the change is pending, further changes are refused with exit code 7.
    let leave = admin(cluster.nodes[0].listen, &["leave"]);
    assert_eq!(leave.status.code(), Some(7), "leave: {}", text(&leave));
    let remove = admin(cluster.nodes[0].listen, &["remove", "3"]);
    assert_eq!(remove.status.code(), Some(7), "remove: {}", text(&remove));
    let mut client = Client::connect(cluster.nodes[1].listen).expect("connect");
    let refused = client.admin_commit().expect_err("commit while pending");
    assert_eq!(refused.code(), Some(ErrorCode::ChangePending));

    // `status` prints the pending change.
    let shown = admin(cluster.nodes[2].listen, &["status"]);
    assert!(shown.status.success(), "status: {}", text(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("mode: committed"), "{shown}");
    assert!(
        shown.contains(&format!("pending: ring epoch {next}")),
        "{shown}"
    );

    // A restart keeps the committed change from <data-dir>/RING.
    assert!(cluster.nodes[1].data.path().join("RING").exists());
    cluster.kill(1);
    cluster.restart(1);
    let after = status(cluster.nodes[1].listen).expect("status after restart");
    assert!(after.committed, "{after:?}");
    assert_eq!(after.next_epoch, Some(next));
    assert_eq!(after.ring_epoch, formation_epoch);
}
