//! Membership changes through `rotor admin`, on real processes: three nodes formed by
//! seeds (formation mode), a fourth started alone joins with `rotor admin join`, its plan
//! shows the replicas moving to it, `commit` turns the formation ring into a committed
//! base with a pending change that every node learns through gossip (RING_STATE), further
//! changes are refused while it is pending, and a restarted node keeps it from
//! `<data-dir>/RING`. Node 3 is frozen across the commit, so the change stays pending
//! (its moves cannot finish) whether or not partition transfers run.
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
    let cluster = Cluster::start(3, &[]);
    let interval = GOSSIP_INTERVAL_MS.to_string();
    let flags = [
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
    ];
    let fourth = Rotord::start_with("1", &flags);
    let seed = cluster.nodes[0].listen.to_string();

    // Formation mode everywhere: the seeds' ring, nothing committed.
    let before = status(cluster.nodes[0].listen).expect("status of node 1");
    assert!(!before.committed);
    assert_eq!(before.next_epoch, None);
    let formation_epoch = before.ring_epoch;

    let quiet = admin(cluster.nodes[0].listen, &["status", "--watch"]);
    assert!(quiet.status.success(), "status --watch: {}", text(&quiet));
    assert!(String::from_utf8_lossy(&quiet.stdout).contains("no change pending"));

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

    // Node 3 is frozen across the commit: its share of the moves cannot finish (a move is
    // done only on its sender's report), so the change stays pending whether or not
    // partition transfers run, and the refusals below are deterministic.
    cluster.freeze(2);
    let commit = admin(fourth.listen, &["commit"]);
    assert!(commit.status.success(), "commit: {}", text(&commit));
    let next = preview.next_epoch;

    // Every node learns the committed change through gossip; the old ring still serves.
    let addrs: Vec<(u64, SocketAddr)> = [0, 1]
        .iter()
        .map(|&i| (cluster.nodes[i].id, cluster.nodes[i].listen))
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

    // `status --watch` gives up at its bound with exit code 8 while moves are pending.
    let watched = admin(
        cluster.nodes[0].listen,
        &["status", "--watch", "--watch-secs", "0"],
    );
    assert_eq!(watched.status.code(), Some(8), "watch: {}", text(&watched));

    // `status` prints the pending change.
    let shown = admin(cluster.nodes[0].listen, &["status"]);
    assert!(shown.status.success(), "status: {}", text(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("mode: committed"), "{shown}");
    assert!(
        shown.contains(&format!("pending: ring epoch {next}")),
        "{shown}"
    );

    // A restart keeps the committed change from <data-dir>/RING (node 3 is still frozen,
    // so the change is still pending).
    assert!(fourth.data.path().join("RING").exists());
    let (stopped, data) = fourth.stop();
    assert!(stopped.success(), "node 4 stopped: {stopped:?}");
    let fourth = Rotord::start_in_with(data, "1", &flags);
    let after = status(fourth.listen).expect("status after restart");
    assert!(after.committed, "{after:?}");
    assert_eq!(after.next_epoch, Some(next), "{after:?}");
    assert_eq!(after.ring_epoch, formation_epoch);

    // Thawed, node 3 learns the change too (pending, or complete if transfers ran).
    cluster.thaw(2);
    wait_for(CONVERGE_TIMEOUT, || {
        let s = status(cluster.nodes[2].listen)?;
        match s.committed && (s.next_epoch == Some(next) || s.ring_epoch == next) {
            true => Ok(()),
            false => Err(format!("node 3 status: {s:?}")),
        }
    })
    .unwrap_or_else(|last| panic!("node 3 never learned the change: {last}"));
}
