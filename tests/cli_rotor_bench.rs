//! `rotor-bench --target rotor://` against a real `rotord` with two shards: the prefill
//! writes every key, reads find them, and writes carrying the last seen context keep the
//! run free of errors (no sibling flood), over shard ports and over the common port.

mod common;

use std::process::Command;

use common::Rotord;

fn bench(node: &Rotord, extra: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_rotor-bench"))
        .arg("--target")
        .arg(format!("rotor://{}", node.listen))
        .args(["--connections", "4", "--pipeline", "8", "--keys", "200"])
        .args([
            "--read-ratio",
            "0.5",
            "--warmup",
            "100ms",
            "--duration",
            "700ms",
        ])
        .args(["--prefill", "--json"])
        .args(extra)
        .output()
        .expect("rotor-bench runs");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[test]
fn shard_aware_runs_read_what_they_wrote_without_errors() {
    let node = Rotord::start("2");
    for extra in [&[][..], &["--common-port"][..]] {
        let report = bench(&node, extra);
        assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
        assert_eq!(report["misses"].as_u64(), Some(0), "{report}");
    }
    // Few keys, many writes: contexts keep every key's siblings far below the cap.
    let mut client = rotor::client::Client::connect(node.listen).unwrap();
    let most = (0..200)
        .map(|k| {
            let key = format!("key:{k:012}");
            client.get(key.as_bytes()).unwrap().siblings.len()
        })
        .max()
        .unwrap();
    assert!(most < 10, "a key has {most} siblings");
}
