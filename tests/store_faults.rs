//! Damaged and full disks: byte flips in closed segments, and a file system that runs out of
//! space under the store.

use std::path::{Path, PathBuf};
use std::process::Command;

use rotor::store::{Durability, ReadError, Store, StoreConfig, ValueKind, WriteError};

/// Keys of 8 bytes and values of 56 make 104-byte records: no padding, so every byte after
/// a segment header up to the written end is covered by some record's CRC.
fn key(i: u32) -> Vec<u8> {
    format!("k{i:07}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(56);
    while v.len() < 56 {
        v.extend_from_slice(&key(i));
    }
    v.truncate(56);
    v
}

fn config(segment_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_bytes,
        durability: Durability::Never,
        ..StoreConfig::default()
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Story: a bit flipped on disk must never come back as a value. Each trial writes a store,
/// closes it, flips a few bytes of one closed segment (header included), and reopens with
/// and without the checkpoint: open succeeds, the damage is reported at open or on read,
/// and every key reads back exactly, or as absent or corrupted, never as other bytes.
#[test]
fn byte_flips_in_a_closed_segment_are_detected_and_never_returned() {
    const KEYS: u32 = 600;
    let mut rng = 0x5EED_1234_u64;
    for trial in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), config(16 * 1024)).unwrap();
        for i in 0..KEYS {
            s.put(i % 5, &key(i), ValueKind::Value, &value(i)).unwrap();
        }
        s.close().unwrap();

        rng = xorshift(rng);
        let segment = dir.path().join(format!("{:010}.seg", 1 + rng % 3));
        let mut bytes = std::fs::read(&segment).unwrap();
        let written = 32 + (16 * 1024 - 32) / 104 * 104;
        let flips = 1 + rng % 4;
        for _ in 0..flips {
            rng = xorshift(rng);
            let at = (rng % written as u64) as usize;
            rng = xorshift(rng);
            bytes[at] ^= 1 << (rng % 8);
        }
        std::fs::write(&segment, &bytes).unwrap();
        if trial % 2 == 1 {
            std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
        }

        let (mut s, report) = Store::open(dir.path(), config(16 * 1024)).unwrap();
        let mut lost = 0;
        for i in 0..KEYS {
            match s.get(i % 5, &key(i)) {
                Ok(Some(found)) => assert_eq!(found.value, &value(i)[..], "trial {trial} key {i}"),
                Ok(None) | Err(ReadError::Corrupted { .. }) => lost += 1,
            }
        }
        let detected = report.corrupt_records
            + report.corrupt_segments
            + report.torn_tails
            + s.stats().corrupt_records_skipped;
        assert!(
            detected > 0,
            "trial {trial}: damage went unnoticed: {report:?}"
        );
        assert!(
            lost > 0,
            "trial {trial}: a flip in a record must cost that record"
        );
        // The store keeps working.
        s.put(0, b"after", ValueKind::Value, b"x").unwrap();
        assert_eq!(s.get(0, b"after").unwrap().unwrap().value, b"x");
    }
}

/// Unmounts the test's tmpfs whatever happens.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(at.to_path_buf()))
}

/// A full disk: puts fail with a typed "no space" error (never a SIGBUS), reads are still
/// served, nothing is poisoned, and writes resume once space is freed.
#[test]
fn a_full_disk_refuses_writes_clearly_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let Some(mount) = mount_tmpfs(root.path(), "2m") else {
        println!(
            "SKIPPED a_full_disk_refuses_writes_clearly_and_recovers: mounting a tmpfs needs \
             root (CAP_SYS_ADMIN); run the tests as root to check disk-full behaviour"
        );
        return;
    };
    let dir = mount.0.join("store");
    let ballast = mount.0.join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 * 1024]).unwrap();

    let (mut s, _) = Store::open(&dir, config(256 * 1024)).unwrap();
    let mut written = 0;
    let err = loop {
        match s.put(0, &key(written), ValueKind::Value, &value(written)) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100_000, "the disk never filled up");
    };
    assert!(matches!(err, WriteError::NoSpace), "{err:?}");
    assert!(err.to_string().contains("no space"), "{err}");
    println!("disk full after {written} puts: {err}");
    assert!(written > 1000);
    // Reads are served while the disk is full; writes keep failing the same clear way.
    for i in (0..written).step_by(97) {
        assert_eq!(s.get(0, &key(i)).unwrap().unwrap().value, &value(i)[..]);
    }
    assert!(matches!(
        s.put_hint(1, 0, &key(0), &value(0)),
        Err(WriteError::NoSpace)
    ));
    s.sync().unwrap();
    // A restart while the disk is still full opens for reads.
    drop(s);
    let (mut s, report) = Store::open(&dir, config(256 * 1024)).unwrap();
    assert_eq!(report.keys, u64::from(written));
    assert_eq!(
        s.get(0, &key(written - 1)).unwrap().unwrap().value,
        &value(written - 1)[..]
    );
    assert!(matches!(
        s.put(0, &key(written), ValueKind::Value, &value(written)),
        Err(WriteError::NoSpace)
    ));

    std::fs::remove_file(&ballast).unwrap();
    for i in written..written + 100 {
        s.put(0, &key(i), ValueKind::Value, &value(i)).unwrap();
    }
    s.close().unwrap();
    let (s, report) = Store::open(&dir, config(256 * 1024)).unwrap();
    assert_eq!(report.keys, u64::from(written) + 100);
    assert_eq!(
        s.get(0, &key(written + 99)).unwrap().unwrap().value,
        &value(written + 99)[..]
    );
    drop(s);
    drop(mount);
}
