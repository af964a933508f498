//! The `rotor` CLI against a real `rotord`: exit codes, binary values through stdin and
//! `--raw`, siblings and contexts, stats and ring.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Rotord;

fn rotor(node: &Rotord, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .arg("--server")
        .arg(node.listen.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rotor runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The hex context printed on a `context: ...` line.
fn context_of(output: &Output) -> String {
    stdout(output)
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .expect("a context line")
        .to_owned()
}

#[test]
fn binary_values_round_trip_through_stdin_and_raw() {
    let node = Rotord::start("1");
    let value: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let put = rotor(&node, &["put", "bin", "-"], Some(&value));
    assert_eq!(code(&put), 0, "{put:?}");
    let get = rotor(&node, &["get", "bin", "--raw"], None);
    assert_eq!(code(&get), 0, "{get:?}");
    assert_eq!(get.stdout, value);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("value");
    std::fs::write(&path, b"\x00from a file\xff").unwrap();
    let put = rotor(
        &node,
        &["put", "file", "--file", path.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&put), 0, "{put:?}");
    let get = rotor(&node, &["get", "file", "--raw"], None);
    assert_eq!(get.stdout, b"\x00from a file\xff");
}

#[test]
fn siblings_contexts_and_exit_codes() {
    let node = Rotord::start("1");
    let missing = rotor(&node, &["get", "nothing"], None);
    assert_eq!(code(&missing), 1, "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    assert_eq!(code(&rotor(&node, &["put", "k", "one"], None)), 0);
    assert_eq!(code(&rotor(&node, &["put", "k", "two"], None)), 0);
    let get = rotor(&node, &["get", "k"], None);
    assert_eq!(code(&get), 0);
    let text = stdout(&get);
    assert!(text.contains("siblings: 2"), "{text}");
    assert!(text.contains("one") && text.contains("two"), "{text}");

    // --raw needs one sibling.
    let raw = rotor(&node, &["get", "k", "--raw"], None);
    assert_eq!(code(&raw), 6, "{raw:?}");
    assert!(raw.stdout.is_empty());
    let chosen = rotor(&node, &["get", "k", "--raw", "--sibling", "1"], None);
    assert_eq!(code(&chosen), 0);
    assert!(chosen.stdout == b"one" || chosen.stdout == b"two");

    // Writing with the read's context resolves the siblings.
    let context = context_of(&get);
    let put = rotor(&node, &["put", "k", "merged", "--context", &context], None);
    assert_eq!(code(&put), 0, "{put:?}");
    let get = rotor(&node, &["get", "k", "--raw"], None);
    assert_eq!(get.stdout, b"merged");

    // Delete needs a context; with one, the key is gone.
    assert_eq!(code(&rotor(&node, &["delete", "k"], None)), 2);
    let context = context_of(&rotor(&node, &["get", "k"], None));
    assert_eq!(
        code(&rotor(&node, &["delete", "k", "--context", &context], None)),
        0
    );
    assert_eq!(code(&rotor(&node, &["get", "k"], None)), 1);

    // A context that is not hex is a usage error; hex that is no context, a server error.
    assert_eq!(
        code(&rotor(&node, &["put", "k", "v", "--context", "xyz"], None)),
        2
    );
    let bad = rotor(&node, &["put", "k", "v", "--context", "abcd"], None);
    assert_eq!(code(&bad), 4, "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BadContext"));
}

#[test]
fn stats_ring_and_connection_errors() {
    let node = Rotord::start("2");
    let ring = rotor(&node, &["ring"], None);
    assert_eq!(code(&ring), 0, "{ring:?}");
    let text = stdout(&ring);
    assert!(
        text.contains("partitions: ") && text.contains("shard 1:"),
        "{text}"
    );
    let stats = rotor(&node, &["stats"], None);
    assert_eq!(code(&stats), 0, "{stats:?}");
    assert!(!stats.stdout.is_empty());

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["--server", &closed.to_string(), "get", "k"])
        .output()
        .unwrap();
    assert_eq!(code(&refused), 3, "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot connect"));
    let usage = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(code(&usage), 2);
}
