#![no_main]
//! A store directory whose files hold arbitrary bytes opens without panicking, and whatever
//! it then serves (reads, iteration, hints, compaction, writes, close) does not panic either.
//!
//! Each input starts from a small valid store (built once) and damages it: the first byte
//! picks how (replace a segment whole, replace its records, XOR bytes into it, or replace
//! the checkpoint) and whether the checkpoint is kept; the rest are the bytes.

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rotor::store::{format::SEGMENT_HEADER_BYTES, Durability, Store, StoreConfig, ValueKind};

fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 8192,
        durability: Durability::Never,
        compaction_garbage_percent: 10,
        checkpoint_interval_bytes: 0,
        hint_bytes_max: 1 << 20,
    }
}

/// Files of a small valid store: two segments of values, tombstones, hints and markers.
fn template() -> &'static Vec<(String, Vec<u8>)> {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Store::open(dir.path(), config()).expect("open");
        for i in 0..120u32 {
            let kind = if i % 7 == 0 {
                ValueKind::Tombstone
            } else {
                ValueKind::Value
            };
            s.put(
                i % 3,
                &i.to_le_bytes(),
                kind,
                &vec![i as u8; (i % 100) as usize],
            )
            .unwrap();
        }
        let hint = s.put_hint(5, 1, b"hinted", b"state").unwrap();
        s.put_hint(6, 2, b"other", b"state").unwrap();
        s.delete_hint(hint).unwrap();
        s.purge(0, &0u32.to_le_bytes()).unwrap();
        s.drop_partition(2).unwrap();
        s.close().unwrap();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(entry.path()).unwrap()));
        }
        files.sort();
        files
    })
}

fn scratch() -> tempfile::TempDir {
    // A tmpfs keeps the fsyncs of open and close cheap.
    if Path::new("/dev/shm").is_dir() {
        if let Ok(dir) = tempfile::tempdir_in("/dev/shm") {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    for (name, contents) in template() {
        let mut contents = contents.clone();
        let is_segment = name.ends_with(".seg");
        let first_segment = name == "0000000001.seg";
        match mode % 4 {
            0 if first_segment => contents = bytes.to_vec(),
            1 if first_segment => {
                let end = contents.len().min(SEGMENT_HEADER_BYTES + bytes.len());
                contents[SEGMENT_HEADER_BYTES..end]
                    .copy_from_slice(&bytes[..end - SEGMENT_HEADER_BYTES]);
            }
            2 if is_segment => {
                for (c, b) in contents.iter_mut().skip(SEGMENT_HEADER_BYTES).zip(bytes) {
                    *c ^= b;
                }
            }
            3 if name == "index.ckpt" => contents = bytes.to_vec(),
            _ => {}
        }
        if name == "index.ckpt" && mode & 4 != 0 {
            continue;
        }
        std::fs::write(dir.path().join(name), contents).unwrap();
    }

    let Ok((mut s, _)) = Store::open(dir.path(), config()) else {
        return;
    };
    for p in 0..3 {
        for i in 0..120u32 {
            let _ = s.get(p, &i.to_le_bytes());
        }
        let _ = s.iter_partition(p).count();
    }
    for t in s.hint_targets() {
        let _ = s.hints(t).count();
    }
    let _ = s.stats();
    for _ in 0..64 {
        match s.compact_step(4096) {
            Ok(rotor::store::CompactProgress::Idle) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = s.put(1, b"new", ValueKind::Value, b"value");
    let _ = s.get(1, b"new");
    let _ = s.close();
});
