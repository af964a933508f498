//! The Merkle trees the store keeps for anti-entropy: one per partition holding keys.
//!
//! Every write of a value or tombstone swaps the key's old entry hash for the new one in
//! its partition's tree (`src/merkle/`), a purge takes it out, a partition drop drops the
//! tree, and compaction, which copies records unchanged, leaves trees alone. Hints are never
//! in trees.
//!
//! The index checkpoint saves every tree's leaves (`recovery.rs`), and [`Store::open`]
//! takes them from it, then keeps them in step while it replays the log written after the
//! checkpoint, as the write path would. A partition whose tree the replay cannot keep exact
//! (its old record does not check out, a key of the checkpoint sits in a segment compaction
//! deleted since, the partition was dropped, the saved tree does not count the partition's
//! keys) is rebuilt from the final index, and all of
//! them are when the checkpoint has no usable trees: a rebuild reads, CRC-checks and hashes
//! every record of its partitions, 0.3 to 1 s per million keys (3 to 10 s at 10M keys, as
//! against 0.6 to 1.1 s for the whole open with the saved trees).
//!
//! What a saved tree does not see: a record damaged at rest after it entered its tree (the
//! disk corrupting a sector, between runs) stays in the tree until its key is written again
//! or its partition rebuilt, as it did within one run before; reads still refuse it, and
//! reopening without the checkpoint leaves it out. Rebuilding every tree at each open would
//! catch it, for that cost at every open.
//!
//! The old entry hash comes from the old record, which the index's insert hands back and
//! whose header the accounting has just read: one more CRC check and hash of a record
//! already in cache, instead of 8 more bytes per key in the index. A tree holds the
//! records that checked out when they entered it; if the old record no longer checks out
//! (damage after it entered), its hash cannot be taken out, so the partition's tree is
//! rebuilt from the index (a scan of one partition, on damage only).

use super::format::RecordKind;
use super::index::Loc;
use super::{ReadError, Store, ValueKind};
use crate::constants::MERKLE_LEAVES;
use crate::merkle::{clip, KeyHash, MerkleTree};

/// One key of a Merkle leaf, as [`Store::bucket_entries`] gives it: key, encoded causal
/// state, and whether it is a value or a tombstone.
pub type BucketEntry = (Vec<u8>, Vec<u8>, ValueKind);

impl Store {
    /// The root hash of `partition`'s Merkle tree: 0 when it holds no key.
    pub fn merkle_root(&self, partition: u32) -> u64 {
        self.trees.get(&partition).map_or(0, MerkleTree::root)
    }

    /// Hashes of `count` buckets of `level` of `partition`'s tree from `start`, fewer if
    /// the level ends first (what a `MERKLE_RANGE_REPLY` carries; zeros for a partition
    /// without keys).
    pub fn merkle_hashes(&self, partition: u32, level: u8, start: u32, count: u32) -> Vec<u64> {
        match self.trees.get(&partition) {
            Some(tree) => tree.hashes(level, start, count),
            None => vec![0; clip(level, start, count).len()],
        }
    }

    /// `partition`'s Merkle tree, if it holds keys.
    pub fn merkle_tree(&self, partition: u32) -> Option<&MerkleTree> {
        self.trees.get(&partition)
    }

    /// Every (key, encoded state, kind) of `partition` in the given leaves (what a
    /// `MERKLE_KEYS_REPLY` carries), in no particular order. Leaves out of range are
    /// ignored.
    ///
    /// Scans the partition's index, reading each record's key (a header read and a hash)
    /// and only the wanted records whole. A damaged record is skipped and counted, as in
    /// [`Store::iter_partition`], so one bad record does not hold back the rest of its
    /// leaves; its key is then repaired by the peer's entries. The `Result` is part of the
    /// store's read contract; this scan of mapped segments has no other failure.
    pub fn bucket_entries(
        &self,
        partition: u32,
        leaves: &[u32],
    ) -> Result<Vec<BucketEntry>, ReadError> {
        let mut wanted = [0u64; MERKLE_LEAVES as usize / 64];
        for &leaf in leaves {
            if let Some(word) = wanted.get_mut(leaf as usize / 64) {
                *word |= 1 << (leaf % 64);
            }
        }
        let is_wanted = |key: &[u8]| {
            let leaf = KeyHash::of(key).leaf();
            wanted
                .get(leaf as usize / 64)
                .is_some_and(|w| w >> (leaf % 64) & 1 == 1)
        };
        let Some(index) = self.partitions.get(&partition) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (_, loc) in index.entries() {
            // An unreadable key may belong to a wanted leaf: decode it to find out.
            if super::key_at(&self.segments, loc).is_some_and(|k| !is_wanted(k)) {
                continue;
            }
            let Some(rec) = self.record(loc, is_data) else {
                continue;
            };
            if is_wanted(rec.key) {
                out.push((
                    rec.key.to_vec(),
                    rec.value.to_vec(),
                    super::value_kind(rec.meta.kind),
                ));
            }
        }
        Ok(out)
    }

    /// Keys (values and tombstones) held in `partition`.
    pub fn partition_keys(&self, partition: u32) -> u64 {
        self.partitions
            .get(&partition)
            .map_or(0, |p| p.len() as u64)
    }

    /// Memory of the Merkle trees, in bytes (8.5 KiB per partition holding keys).
    pub fn merkle_bytes(&self) -> usize {
        self.trees.len() * MerkleTree::memory_bytes()
    }

    /// Rebuilds every Merkle tree (and tombstone count) from the index, as [`Store::open`]
    /// does when the checkpoint gives no trees: a read, CRC check and hash of every live
    /// record.
    ///
    /// Done in two sorted passes over one list of 16 bytes per key (the only memory it
    /// takes while it runs): the records are read in log order (a sequential pass over the
    /// segments, not a random access per key), and the entry hashes are then applied by
    /// tree and leaf (each tree filled in one go, not a cache miss per key among all
    /// trees' leaves). Profiles of a 1M-key rebuild: in index order most time waited on
    /// record reads; in log order alone 85% of it waited on leaf misses; with both sorts
    /// the time is in hashing, CRC checks and the sorts themselves.
    pub fn rebuild_merkle_trees(&mut self) {
        self.rebuild_trees_where(|_| true);
    }

    /// [`Store::rebuild_merkle_trees`] for the partitions `wanted` accepts only (their
    /// trees and tombstone counts are replaced; the others are left alone).
    pub(super) fn rebuild_trees_where(&mut self, wanted: impl Fn(u32) -> bool) {
        let keys = self
            .partitions
            .iter()
            .filter(|&(&p, _)| wanted(p))
            .map(|(_, index)| index.len())
            .sum::<usize>();
        let mut work: Vec<(u64, u64)> = Vec::with_capacity(keys);
        for (&partition, index) in self.partitions.iter().filter(|&(&p, _)| wanted(p)) {
            work.extend(index.entries().map(|(_, l)| {
                let at = (u64::from(l.segment) << 32) | u64::from(l.offset);
                (at, u64::from(partition))
            }));
        }
        work.sort_unstable_by_key(|&(at, _)| at);
        // Each item becomes (partition << 32 | tombstone bit | leaf, entry hash); a damaged
        // record DAMAGED.
        for item in &mut work {
            let (at, partition) = *item;
            let loc = Loc {
                segment: (at >> 32) as u32,
                offset: at as u32,
            };
            *item = match self.record(loc, is_data) {
                Some(rec) => {
                    let tombstone = if rec.meta.kind == RecordKind::Tombstone {
                        TOMBSTONE_BIT
                    } else {
                        0
                    };
                    let kh = KeyHash::of(rec.key);
                    (
                        (partition << 32) | tombstone | u64::from(kh.leaf()),
                        kh.entry_hash(rec.value),
                    )
                }
                None => (DAMAGED, 0),
            };
        }
        work.sort_unstable_by_key(|&(slot, _)| slot);
        self.trees.retain(|&p, _| !wanted(p));
        self.tombstones.retain(|&p, _| !wanted(p));
        for run in work.chunk_by(|a, b| a.0 >> 32 == b.0 >> 32) {
            let Some(&(first, _)) = run.first() else {
                continue;
            };
            if first == DAMAGED {
                continue;
            }
            let partition = (first >> 32) as u32;
            let mut tree = MerkleTree::new();
            let mut tombstones = 0;
            for &(slot, hash) in run {
                let low = slot as u32;
                tombstones += u64::from(low & TOMBSTONE_BIT as u32 != 0);
                tree.update_leaf(low & !(TOMBSTONE_BIT as u32), None, Some(hash));
            }
            self.trees.insert(partition, tree);
            self.tombstones.insert(partition, tombstones);
        }
    }

    /// Moves `key` of `partition` in its tree from the record at `old` (None: the key was
    /// absent) to the state `new` (None: the key is gone).
    pub(super) fn tree_write(
        &mut self,
        partition: u32,
        key: &[u8],
        old: Option<Loc>,
        new: Option<&[u8]>,
    ) {
        if !self.tree_swap(partition, key, old, new) {
            self.rebuild_tree(partition);
        }
    }

    /// [`Store::tree_write`] without the fallback: false, and the tree untouched, when the
    /// record at `old` no longer checks out (its entry hash cannot be taken out). The log
    /// replay at open uses it to leave such a partition to one rebuild at the end.
    pub(super) fn tree_swap(
        &mut self,
        partition: u32,
        key: &[u8],
        old: Option<Loc>,
        new: Option<&[u8]>,
    ) -> bool {
        let kh = KeyHash::of(key);
        let old_hash = match old {
            None => None,
            Some(loc) => match self.decode(loc) {
                Some(rec) if rec.key == key && is_data(rec.meta.kind) => {
                    Some(kh.entry_hash(rec.value))
                }
                _ => return false,
            },
        };
        let new_hash = new.map(|state| kh.entry_hash(state));
        let tree = self.trees.entry(partition).or_default();
        tree.update_leaf(kh.leaf(), old_hash, new_hash);
        if tree.is_empty() {
            self.trees.remove(&partition);
        }
        true
    }

    /// Builds `partition`'s tree from its index: every record that checks out.
    fn rebuild_tree(&mut self, partition: u32) {
        let mut tree = MerkleTree::new();
        if let Some(index) = self.partitions.get(&partition) {
            for (_, loc) in index.entries() {
                if let Some(rec) = self.record(loc, is_data) {
                    let kh = KeyHash::of(rec.key);
                    tree.update_leaf(kh.leaf(), None, Some(kh.entry_hash(rec.value)));
                }
            }
        }
        if tree.is_empty() {
            self.trees.remove(&partition);
        } else {
            self.trees.insert(partition, tree);
        }
    }
}

/// The rebuild's mark of a record that did not check out: no (partition, tombstone bit,
/// leaf) triple has it, since a leaf is below `MERKLE_LEAVES`.
const DAMAGED: u64 = u64::MAX;

/// The rebuild's mark of a tombstone, between a work item's partition and its leaf.
const TOMBSTONE_BIT: u64 = 1 << 31;
const _: () = assert!((MERKLE_LEAVES as u64) < TOMBSTONE_BIT);

/// Values and tombstones: the records trees and reads are about.
fn is_data(kind: RecordKind) -> bool {
    matches!(kind, RecordKind::Value | RecordKind::Tombstone)
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::{CompactProgress, Durability, StoreConfig};
    use super::*;
    use crate::constants::MERKLE_LEVELS;
    use crate::merkle::{entry_hash, leaf_of, level_width};

    fn config() -> StoreConfig {
        StoreConfig {
            segment_bytes: 4096,
            durability: Durability::Never,
            compaction_garbage_percent: 30,
            checkpoint_interval_bytes: 0,
            hint_bytes_max: 1 << 20,
        }
    }

    fn open(dir: &Path) -> Store {
        Store::open(dir, config()).expect("open").0
    }

    /// (partition, key) -> (kind, state), as a test expects the store to hold it.
    pub(in crate::store) type TreeModel = BTreeMap<(u32, Vec<u8>), (ValueKind, Vec<u8>)>;

    /// Every hash of every level of `partition`'s tree.
    fn levels(s: &Store, partition: u32) -> Vec<Vec<u64>> {
        (0..MERKLE_LEVELS)
            .map(|l| s.merkle_hashes(partition, l, 0, level_width(l)))
            .collect()
    }

    /// The tree a set of (key, state) entries must give.
    fn tree_of<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> MerkleTree {
        let mut t = MerkleTree::new();
        for (k, v) in entries {
            t.update(k, None, Some(entry_hash(k, v)));
        }
        t
    }

    /// Checks that the store's trees of partitions `0..partitions` are those of the model's
    /// (key, state) entries, and that `bucket_entries` of every leaf gives the model back.
    /// Used by the store's model test.
    pub(in crate::store) fn check_trees(s: &Store, partitions: u32, model: &TreeModel) {
        let all_leaves: Vec<u32> = (0..MERKLE_LEAVES).collect();
        for p in 0..partitions {
            let want: Vec<BucketEntry> = model
                .iter()
                .filter(|((mp, _), _)| *mp == p)
                .map(|((_, k), (kind, v))| (k.clone(), v.clone(), *kind))
                .collect();
            let tree = tree_of(want.iter().map(|(k, v, _)| (&k[..], &v[..])));
            let expect: Vec<Vec<u64>> = (0..MERKLE_LEVELS)
                .map(|l| tree.hashes(l, 0, level_width(l)))
                .collect();
            assert_eq!(levels(s, p), expect, "tree of partition {p}");
            assert_eq!(s.merkle_tree(p).is_some(), !want.is_empty());
            let mut got = s.bucket_entries(p, &all_leaves).unwrap();
            got.sort();
            assert_eq!(got, want, "entries of partition {p}");
            assert_eq!(s.partition_keys(p), want.len() as u64);
        }
    }

    #[test]
    fn the_same_writes_in_another_order_give_the_same_trees() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, mut b) = (open(d1.path()), open(d2.path()));
        let writes: Vec<(u32, Vec<u8>, Vec<u8>)> = (0..300u32)
            .map(|i| (i % 4, format!("key{i}").into_bytes(), vec![i as u8; 20]))
            .collect();
        for (p, k, v) in &writes {
            a.put(*p, k, ValueKind::Value, v).unwrap();
        }
        // b sees other states first, tombstones, and the final writes in reverse order.
        for (p, k, _) in writes.iter().step_by(3) {
            b.put(*p, k, ValueKind::Tombstone, b"older state").unwrap();
        }
        for (p, k, v) in writes.iter().rev() {
            b.put(*p, k, ValueKind::Value, v).unwrap();
        }
        for p in 0..4 {
            assert_ne!(a.merkle_root(p), 0);
            assert_eq!(levels(&a, p), levels(&b, p), "partition {p}");
        }
        // One key more on one side: one leaf differs, found by the walk.
        b.put(2, b"extra", ValueKind::Value, b"x").unwrap();
        let (ta, tb) = (a.merkle_tree(2).unwrap(), b.merkle_tree(2).unwrap());
        assert_eq!(ta.leaves_differing(tb), vec![leaf_of(b"extra")]);
        let entries = b.bucket_entries(2, &[leaf_of(b"extra")]).unwrap();
        assert!(entries.contains(&(b"extra".to_vec(), b"x".to_vec(), ValueKind::Value)));
        assert!(entries
            .iter()
            .all(|(k, _, _)| leaf_of(k) == leaf_of(b"extra")));
        // Hints are not in trees.
        let root = b.merkle_root(2);
        b.put_hint(9, 2, b"hinted", b"h").unwrap();
        assert_eq!(b.merkle_root(2), root);
        assert_eq!(b.merkle_hashes(77, 1, 0, 100), vec![0; 32]);
    }

    #[test]
    fn trees_are_rebuilt_equal_at_reopen_and_compaction_leaves_them_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        // Overwrites fill small segments with garbage for compaction to collect.
        for round in 0..6u8 {
            for i in 0..60u32 {
                let kind = if (i + u32::from(round)) % 7 == 0 {
                    ValueKind::Tombstone
                } else {
                    ValueKind::Value
                };
                s.put(i % 3, &i.to_le_bytes(), kind, &[round; 40]).unwrap();
            }
        }
        let before: Vec<Vec<Vec<u64>>> = (0..3).map(|p| levels(&s, p)).collect();
        let segments = s.stats().segments;
        let mut finished = 0;
        loop {
            match s.compact_step(1 << 20).unwrap() {
                CompactProgress::Idle => break,
                CompactProgress::Finished { .. } => finished += 1,
                _ => {}
            }
        }
        assert!(finished > 0, "compaction ran ({segments} segments)");
        let after: Vec<Vec<Vec<u64>>> = (0..3).map(|p| levels(&s, p)).collect();
        assert_eq!(before, after);
        s.close().unwrap();
        let s = open(dir.path());
        assert_eq!((0..3).map(|p| levels(&s, p)).collect::<Vec<_>>(), before);
        drop(s);
        // And by a scan of the log, without the checkpoint.
        std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
        let s = open(dir.path());
        assert_eq!((0..3).map(|p| levels(&s, p)).collect::<Vec<_>>(), before);
    }

    #[test]
    fn drop_partition_and_purge_take_keys_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        for i in 0..50u32 {
            s.put(i % 2, &i.to_le_bytes(), ValueKind::Value, b"v")
                .unwrap();
        }
        let kept = levels(&s, 0);
        let root = s.merkle_root(1);
        s.drop_partition(1).unwrap();
        assert_eq!(s.merkle_root(1), 0);
        assert!(s.merkle_tree(1).is_none());
        assert_eq!(levels(&s, 0), kept);
        // A tombstone enters the tree like a value; its purge takes it out again.
        s.put(1, b"gone", ValueKind::Tombstone, b"t").unwrap();
        assert_ne!(s.merkle_root(1), 0);
        assert!(s.purge(1, b"gone").unwrap());
        assert_eq!(s.merkle_root(1), 0);
        // Writing the same states back gives the same root as before the drop.
        for i in (1..50u32).step_by(2) {
            s.put(1, &i.to_le_bytes(), ValueKind::Value, b"v").unwrap();
        }
        assert_eq!(s.merkle_root(1), root);
        assert_eq!(s.merkle_bytes(), 2 * MerkleTree::memory_bytes());
    }

    #[test]
    fn an_old_record_damaged_in_place_makes_the_tree_rebuild() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        for i in 0..5u8 {
            s.put(0, &[i], ValueKind::Value, &[i; 8]).unwrap();
        }
        // Damage the value of the third record (56 bytes each after the 32-byte header)
        // under the open store: its hash can no longer be taken out of the tree.
        let seg = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("0000000001.seg"))
            .unwrap();
        seg.write_at(&[0xFF], 32 + 2 * 56 + 45).unwrap();
        s.put(0, &[2], ValueKind::Value, b"new").unwrap();
        let mut model = BTreeMap::new();
        for i in [0u8, 1, 3, 4] {
            model.insert((0, vec![i]), (ValueKind::Value, vec![i; 8]));
        }
        model.insert((0, vec![2]), (ValueKind::Value, b"new".to_vec()));
        check_trees(&s, 1, &model);

        // A record damaged at rest between two runs stays in the tree the checkpoint saved
        // (only a rebuild reads every record: see the module docs), while reads refuse it.
        s.close().unwrap();
        let damage = |record: u64| {
            let seg = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.path().join("0000000001.seg"))
                .unwrap();
            seg.write_at(&[0xFF], 32 + record * 56 + 45).unwrap();
        };
        damage(3);
        let (mut s, report) = Store::open(dir.path(), config()).unwrap();
        assert!(
            report.used_checkpoint && report.trees_from_checkpoint,
            "{report:?}"
        );
        assert_eq!(report.trees_rebuilt, 0);
        let saved = tree_of(model.iter().map(|((_, k), (_, v))| (&k[..], &v[..])));
        assert_eq!(s.merkle_tree(0), Some(&saved));
        assert!(s.get(0, &[3]).is_err());
        // Writing the key again cannot take the old hash out: the tree is rebuilt.
        s.put(0, &[3], ValueKind::Value, b"three").unwrap();
        model.insert((0, vec![3]), (ValueKind::Value, b"three".to_vec()));
        check_trees(&s, 1, &model);

        // The replay after the checkpoint meets that write over the damaged record again
        // (a crash: no new checkpoint), and rebuilds the tree as well.
        drop(s);
        let (s, report) = Store::open(dir.path(), config()).unwrap();
        assert!(report.trees_from_checkpoint, "{report:?}");
        assert_eq!(report.trees_rebuilt, 1);
        check_trees(&s, 1, &model);

        // Without a checkpoint, the scan leaves a damaged record out, as reads do.
        drop(s);
        damage(4);
        std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
        let (s, report) = Store::open(dir.path(), config()).unwrap();
        assert!(!report.trees_from_checkpoint);
        model.remove(&(0, vec![4]));
        let want = tree_of(model.iter().map(|((_, k), (_, v))| (&k[..], &v[..])));
        assert_eq!(s.merkle_tree(0), Some(&want));
        assert_eq!(s.bucket_entries(0, &[leaf_of(&[4])]).unwrap().len(), 0);
    }
}
