//! The coordinator's storage on a real shard: [`ReplicaStore`] over `store::Store`.
//!
//! Place in the flow: each shard's [`crate::coordinator::Coordinator`] reads and writes
//! through a [`StoreReplicas`]; the store keeps encoded causal states as opaque bytes with
//! a Value/Tombstone kind, and its hint area keyed by target node. The store is shared with
//! the shard's one-node fast path, its compaction task and its shutdown hook, hence the
//! `Rc<RefCell<Option<Store>>>` (`None` once closed): every method borrows it for one
//! synchronous call and never across an `.await`.
//!
//! Durability: under `group` the store's durable LSN moves at each sync, and the coordinator
//! holds acknowledgements until then; under `always` every put syncs; under `never` writes
//! are acknowledged at once, so the adapter reports every write as durable.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::antientropy::{MerkleView, PurgeGrant};
use crate::causal::{Actor, CausalState};
use crate::coordinator::{Hint, Lsn, ReplicaStore, StorageError};
use crate::ring::NodeId;
use crate::store::{Durability, ReadError, Store, ValueKind, WriteError};

/// A shard's store as the coordinator sees it.
pub struct StoreReplicas {
    store: Rc<RefCell<Option<Store>>>,
    durability: Durability,
    /// LSN of the latest write through this adapter (for `never` and for sync requests).
    written: Cell<Lsn>,
    /// Reused buffer for encoding states.
    scratch: RefCell<Vec<u8>>,
}

impl StoreReplicas {
    /// The adapter over `store`, whose policy is `durability`.
    pub fn new(store: Rc<RefCell<Option<Store>>>, durability: Durability) -> Self {
        StoreReplicas {
            store,
            durability,
            written: Cell::new(0),
            scratch: RefCell::new(Vec::new()),
        }
    }

    /// Whether a write through this adapter waits for a sync (group commit).
    pub fn needs_sync(&self) -> bool {
        self.durability == Durability::Group && self.written.get() > self.store_durable()
    }

    /// Purges up to `max` tombstones of the grant's partition that it allows
    /// ([`Store::purge_tombstones`]: the store keeps its Merkle tree in step). Returns the
    /// purged (key, state) entries; none if the store is closed or the purge failed (a
    /// failed purge leaves tombstones, which is harmless: a later grant takes them).
    pub fn purge_tombstones(&self, grant: &PurgeGrant, max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut store = self.store.borrow_mut();
        let Some(store) = store.as_mut() else {
            return Vec::new();
        };
        store
            .purge_tombstones(grant.partition, grant.lsn_max, max, |key, lsn| {
                grant.allows(key, lsn)
            })
            .unwrap_or_default()
    }

    /// Deletes the shard's copy of `partition` (its keys and its tree): a ring change moved
    /// it away and the grace after the flip has passed. Its LSN joins the group commit
    /// like any write.
    pub fn drop_partition(&mut self, partition: u32) -> Result<Lsn, StorageError> {
        let mut store = self.store.borrow_mut();
        let store = store.as_mut().ok_or(StorageError::Io)?;
        let lsn = store.drop_partition(partition).map_err(storage_error)?;
        Ok(self.wrote(lsn))
    }

    fn store_durable(&self) -> Lsn {
        self.store.borrow().as_ref().map_or(0, Store::durable_lsn)
    }

    fn wrote(&self, lsn: Lsn) -> Lsn {
        self.written.set(self.written.get().max(lsn));
        lsn
    }

    fn encode(&self, state: &CausalState) -> std::cell::RefMut<'_, Vec<u8>> {
        let mut scratch = self.scratch.borrow_mut();
        scratch.clear();
        state.encode(&mut scratch);
        scratch
    }
}

impl ReplicaStore for StoreReplicas {
    fn incarnation(&self) -> Actor {
        Actor(self.store.borrow().as_ref().map_or(0, Store::incarnation))
    }

    fn get_state(&self, partition: u32, key: &[u8]) -> Result<Option<CausalState>, StorageError> {
        let store = self.store.borrow();
        let store = store.as_ref().ok_or(StorageError::Io)?;
        match store.get(partition, key) {
            Ok(None) => Ok(None),
            Ok(Some(found)) => CausalState::decode(found.value)
                .map(Some)
                .map_err(|_| StorageError::Corrupted),
            Err(ReadError::Corrupted { .. }) => Err(StorageError::Corrupted),
        }
    }

    fn put_state(
        &mut self,
        partition: u32,
        key: &[u8],
        state: &CausalState,
    ) -> Result<Lsn, StorageError> {
        let kind = if state.is_tombstone_only() {
            ValueKind::Tombstone
        } else {
            ValueKind::Value
        };
        let encoded = self.encode(state);
        let mut store = self.store.borrow_mut();
        let store = store.as_mut().ok_or(StorageError::Io)?;
        let lsn = store
            .put(partition, key, kind, &encoded)
            .map_err(storage_error)?;
        drop(encoded);
        Ok(self.wrote(lsn))
    }

    fn put_hint(
        &mut self,
        intended: NodeId,
        partition: u32,
        key: &[u8],
        state: &CausalState,
    ) -> Result<(u64, Lsn), StorageError> {
        let encoded = self.encode(state);
        let mut store = self.store.borrow_mut();
        let store = store.as_mut().ok_or(StorageError::Io)?;
        // A hint's id is the LSN of its record.
        let id = store
            .put_hint(intended.0, partition, key, &encoded)
            .map_err(storage_error)?;
        drop(encoded);
        Ok((id, self.wrote(id)))
    }

    fn hints_for(&self, intended: NodeId, max: usize) -> Result<Vec<Hint>, StorageError> {
        let store = self.store.borrow();
        let store = store.as_ref().ok_or(StorageError::Io)?;
        let mut hints = Vec::new();
        for hint in store.hints(intended.0).take(max) {
            // A hint whose state no longer decodes is skipped, like a damaged record; it
            // stays in the store for an operator to look at.
            if let Ok(state) = CausalState::decode(hint.value) {
                hints.push(Hint {
                    hint_id: hint.id,
                    intended,
                    partition: hint.partition,
                    key: hint.key.to_vec(),
                    state,
                });
            }
        }
        Ok(hints)
    }

    fn hint_targets(&self) -> Vec<NodeId> {
        let store = self.store.borrow();
        store.as_ref().map_or_else(Vec::new, |store| {
            store.hint_targets().into_iter().map(NodeId).collect()
        })
    }

    fn delete_hint(&mut self, _intended: NodeId, hint_id: u64) -> Result<(), StorageError> {
        let mut store = self.store.borrow_mut();
        let store = store.as_mut().ok_or(StorageError::Io)?;
        store.delete_hint(hint_id).map_err(storage_error)?;
        // The delete's own LSN is not reported; it needs no acknowledgement.
        Ok(())
    }

    fn hint_count(&self) -> usize {
        let store = self.store.borrow();
        store.as_ref().map_or(0, |store| {
            usize::try_from(store.stats().hints).unwrap_or(usize::MAX)
        })
    }

    fn durable_lsn(&self) -> Lsn {
        match self.durability {
            Durability::Never => self.written.get().max(self.store_durable()),
            Durability::Always | Durability::Group => self.store_durable(),
        }
    }
}

/// Anti-entropy reads the trees the store keeps up to date on every write
/// ([`Store::merkle_hashes`], [`Store::bucket_entries`]). A closed store offers empty
/// trees: an exchange against it finds nothing to take and is answered again later.
impl MerkleView for StoreReplicas {
    fn merkle_hashes(&self, partition: u32, level: u8, start: u32, count: u32) -> Vec<u64> {
        match self.store.borrow().as_ref() {
            Some(store) => store.merkle_hashes(partition, level, start, count),
            None => Vec::new(),
        }
    }

    fn bucket_entries(&self, partition: u32, leaves: &[u32]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let store = self.store.borrow();
        let Some(store) = store.as_ref() else {
            return Vec::new();
        };
        // Damaged records are left out (and counted) by the store; the rest still repair.
        match store.bucket_entries(partition, leaves) {
            Ok(entries) => entries
                .into_iter()
                .map(|(key, state, _kind)| (key, state))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The store's latest LSN: a tombstone stored at or before it was in the tree the
    /// exchange compared (0 for a closed store, which grants nothing).
    fn write_mark(&self) -> u64 {
        self.store.borrow().as_ref().map_or(0, Store::last_lsn)
    }
}

fn storage_error(error: WriteError) -> StorageError {
    match error {
        WriteError::HintQuota { .. } => StorageError::Full,
        _ => StorageError::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Context, Value};
    use crate::store::StoreConfig;

    fn open(dir: &std::path::Path, durability: Durability) -> StoreReplicas {
        let config = StoreConfig {
            durability,
            ..StoreConfig::default()
        };
        let (store, _) = Store::open(dir, config).expect("store opens");
        StoreReplicas::new(Rc::new(RefCell::new(Some(store))), durability)
    }

    fn state(value: &[u8], actor: Actor) -> CausalState {
        let mut state = CausalState::new();
        state
            .update(&Context::default(), Value::Bytes(value.to_vec()), actor)
            .expect("update");
        state
    }

    #[test]
    fn the_store_trees_match_the_simulators_trees_over_the_same_states() {
        use crate::coordinator::{MemDurability, MemStore};
        let dir = tempfile::tempdir().unwrap();
        let mut real = open(dir.path(), Durability::Never);
        let mut model = MemStore::new(Actor(7), MemDurability::Always, 16);
        for i in 0..300u32 {
            let partition = i % 3;
            let key = format!("key-{i}").into_bytes();
            let value = state(format!("value-{i}").as_bytes(), Actor(u64::from(i % 5) + 1));
            real.put_state(partition, &key, &value).unwrap();
            model.put_state(partition, &key, &value).unwrap();
        }
        for partition in 0..4 {
            for (level, width) in [(0u8, 1u32), (1, 32), (2, 1024)] {
                assert_eq!(
                    real.merkle_hashes(partition, level, 0, width),
                    model.merkle_hashes(partition, level, 0, width),
                    "partition {partition} level {level}"
                );
            }
            let leaves: Vec<u32> = (0..1024).collect();
            let mut from_real = real.bucket_entries(partition, &leaves);
            let mut from_model = model.bucket_entries(partition, &leaves);
            from_real.sort();
            from_model.sort();
            assert_eq!(from_real, from_model, "partition {partition}");
            assert_eq!(from_real.len(), if partition < 3 { 100 } else { 0 });
        }
        assert_ne!(real.merkle_hashes(0, 0, 0, 1), vec![0]);
    }

    #[test]
    fn states_round_trip_and_tombstones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = open(dir.path(), Durability::Always);
        let actor = replicas.incarnation();
        assert_ne!(actor, Actor(0));
        assert_eq!(replicas.get_state(3, b"k").unwrap(), None);
        let written = state(b"v", actor);
        let lsn = replicas.put_state(3, b"k", &written).unwrap();
        assert!(
            replicas.durable_lsn() >= lsn,
            "always: durable when put returns"
        );
        assert_eq!(replicas.get_state(3, b"k").unwrap(), Some(written.clone()));
        assert_eq!(
            replicas.get_state(4, b"k").unwrap(),
            None,
            "partitions apart"
        );

        let mut deleted = written;
        let context = deleted.context();
        deleted.update(&context, Value::Tombstone, actor).unwrap();
        replicas.put_state(3, b"k", &deleted).unwrap();
        assert_eq!(replicas.get_state(3, b"k").unwrap(), Some(deleted));
    }

    #[test]
    fn group_commit_writes_become_durable_at_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = open(dir.path(), Durability::Group);
        let lsn = replicas.put_state(1, b"k", &state(b"v", Actor(5))).unwrap();
        assert!(replicas.durable_lsn() < lsn);
        assert!(replicas.needs_sync());
        let synced = replicas
            .store
            .borrow_mut()
            .as_mut()
            .map(|store| store.sync().unwrap())
            .unwrap();
        assert!(synced >= lsn);
        assert!(replicas.durable_lsn() >= lsn);
        assert!(!replicas.needs_sync());

        let other = tempfile::tempdir().unwrap();
        let mut never = open(other.path(), Durability::Never);
        let lsn = never.put_state(1, b"k", &state(b"v", Actor(5))).unwrap();
        assert!(never.durable_lsn() >= lsn, "never: acknowledged at once");
    }

    #[test]
    fn hints_are_kept_per_target_and_deleted_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = open(dir.path(), Durability::Always);
        let s = state(b"h", Actor(9));
        let (first, _) = replicas.put_hint(NodeId(7), 2, b"a", &s).unwrap();
        let (second, _) = replicas.put_hint(NodeId(7), 2, b"b", &s).unwrap();
        replicas.put_hint(NodeId(8), 5, b"c", &s).unwrap();
        assert_ne!(first, second);
        assert_eq!(replicas.hint_targets(), [NodeId(7), NodeId(8)]);
        assert_eq!(replicas.hint_count(), 3);
        let hints = replicas.hints_for(NodeId(7), 10).unwrap();
        assert_eq!(hints.len(), 2);
        assert_eq!(hints[0].hint_id, first);
        assert_eq!(hints[0].key, b"a");
        assert_eq!(hints[0].partition, 2);
        assert_eq!(hints[0].state, s);
        assert_eq!(replicas.hints_for(NodeId(7), 1).unwrap().len(), 1);

        replicas.delete_hint(NodeId(7), first).unwrap();
        replicas.delete_hint(NodeId(7), first).unwrap(); // a duplicated ack
        assert_eq!(replicas.hint_count(), 2);
        assert_eq!(
            replicas.hints_for(NodeId(7), 10).unwrap()[0].hint_id,
            second
        );
    }

    #[test]
    fn a_closed_store_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = open(dir.path(), Durability::Always);
        let taken = replicas.store.borrow_mut().take();
        drop(taken);
        assert_eq!(replicas.get_state(1, b"k"), Err(StorageError::Io));
        assert_eq!(
            replicas.put_state(1, b"k", &CausalState::new()),
            Err(StorageError::Io)
        );
        assert!(replicas.hint_targets().is_empty());
    }
}
