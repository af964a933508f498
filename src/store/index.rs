//! The in-memory index: (partition, key) -> record location, and hint id -> location.
//!
//! Keys are not kept in memory at all: an entry is the key's 64-bit hash (seeded per store)
//! and where its record lies, 16 bytes. The record holds the key, so a lookup compares the
//! key there, which the read has to touch anyway. Two keys of one partition with the same
//! hash (rare; never silently merged) move to a small overflow list. This keeps the index at
//! roughly 19 to 39 bytes per key (hash table load between 7/16 and 7/8), under the 64-byte
//! target, whatever the key length.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Where a record lies: segment id and byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    /// Segment id.
    pub segment: u32,
    /// Offset of the record header in the segment.
    pub offset: u32,
}

/// Segment id that marks a main-table entry whose hash is shared by several keys: the
/// locations are in the overflow table. Real segment ids stay below it.
const OVERFLOW: u32 = u32::MAX;

/// Hasher for keys that are already ahash outputs: passes the u64 through.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else to stay total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashTable<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// The index of one partition.
#[derive(Default, Debug)]
pub struct PartitionIndex {
    main: HashTable<Loc>,
    overflow: HashTable<Vec<Loc>>,
    len: usize,
}

impl PartitionIndex {
    /// An index with room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            main: HashTable::with_capacity_and_hasher(n, Default::default()),
            ..Self::default()
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the partition holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The location of `key` (hash `hash`); `key_of` reads the key a location holds.
    pub fn find<'k>(
        &self,
        hash: u64,
        key: &[u8],
        key_of: impl Fn(Loc) -> Option<&'k [u8]>,
    ) -> Option<Loc> {
        let loc = *self.main.get(&hash)?;
        if loc.segment != OVERFLOW {
            return (key_of(loc) == Some(key)).then_some(loc);
        }
        self.overflow
            .get(&hash)?
            .iter()
            .copied()
            .find(|&l| key_of(l) == Some(key))
    }

    /// Every location filed under `hash` (one key's, or several colliding keys').
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = Loc> + '_ {
        let slot = self.main.get(&hash).copied();
        let single = slot.filter(|l| l.segment != OVERFLOW);
        let list = slot
            .filter(|l| l.segment == OVERFLOW)
            .and_then(|_| self.overflow.get(&hash))
            .map_or(&[][..], |l| &l[..]);
        single.into_iter().chain(list.iter().copied())
    }

    /// Points `key` at `loc`; returns the location it replaced.
    pub fn insert<'k>(
        &mut self,
        hash: u64,
        key: &[u8],
        loc: Loc,
        key_of: impl Fn(Loc) -> Option<&'k [u8]>,
    ) -> Option<Loc> {
        // One probe for the common case of a new key.
        let slot = match self.main.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(loc);
                self.len += 1;
                return None;
            }
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        };
        if slot.segment != OVERFLOW {
            let old = *slot;
            if key_of(old) == Some(key) {
                *slot = loc;
                return Some(old);
            }
            slot.segment = OVERFLOW;
            self.overflow.insert(hash, vec![old, loc]);
            self.len += 1;
            return None;
        }
        let list = self.overflow.entry(hash).or_default();
        if let Some(l) = list.iter_mut().find(|l| key_of(**l) == Some(key)) {
            return Some(std::mem::replace(l, loc));
        }
        list.push(loc);
        self.len += 1;
        None
    }

    /// Removes `key`; returns its location.
    pub fn remove<'k>(
        &mut self,
        hash: u64,
        key: &[u8],
        key_of: impl Fn(Loc) -> Option<&'k [u8]>,
    ) -> Option<Loc> {
        let loc = self.find(hash, key, key_of)?;
        self.remove_loc(hash, loc).then_some(loc)
    }

    /// Removes the entry at exactly `loc` (locations are unique); true if there was one.
    pub fn remove_loc(&mut self, hash: u64, loc: Loc) -> bool {
        let Some(slot) = self.main.get(&hash).copied() else {
            return false;
        };
        if slot.segment != OVERFLOW {
            if slot != loc {
                return false;
            }
            self.main.remove(&hash);
            self.len -= 1;
            return true;
        }
        let Some(list) = self.overflow.get_mut(&hash) else {
            return false;
        };
        let Some(i) = list.iter().position(|&l| l == loc) else {
            return false;
        };
        list.swap_remove(i);
        self.len -= 1;
        if let [only] = list[..] {
            self.overflow.remove(&hash);
            self.main.insert(hash, only);
        }
        true
    }

    /// Moves the entry at `old` to `new` (compaction copied the record); true if found.
    pub fn relocate(&mut self, hash: u64, old: Loc, new: Loc) -> bool {
        match self.main.get_mut(&hash) {
            Some(slot) if *slot == old => {
                *slot = new;
                true
            }
            Some(slot) if slot.segment == OVERFLOW => self
                .overflow
                .get_mut(&hash)
                .and_then(|list| list.iter_mut().find(|l| **l == old))
                .map(|l| *l = new)
                .is_some(),
            _ => false,
        }
    }

    /// True if some key's entry is exactly `loc`.
    pub fn holds(&self, hash: u64, loc: Loc) -> bool {
        match self.main.get(&hash) {
            Some(slot) if *slot == loc => true,
            Some(slot) if slot.segment == OVERFLOW => {
                self.overflow.get(&hash).is_some_and(|l| l.contains(&loc))
            }
            _ => false,
        }
    }

    /// Every (hash, location), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, Loc)> + '_ {
        let main = self
            .main
            .iter()
            .filter(|(_, l)| l.segment != OVERFLOW)
            .map(|(&h, &l)| (h, l));
        let over = self
            .overflow
            .iter()
            .flat_map(|(&h, list)| list.iter().map(move |&l| (h, l)));
        main.chain(over)
    }

    /// Heap bytes this index holds, from the tables' capacities (what the allocator gave
    /// out, not what is in use), so the per-key figure includes the load-factor slack.
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, Loc)>();
        let over_entry = std::mem::size_of::<(u64, Vec<Loc>)>();
        let lists: usize = self
            .overflow
            .values()
            .map(|l| l.capacity() * std::mem::size_of::<Loc>())
            .sum();
        table_bytes(self.main.capacity(), entry)
            + table_bytes(self.overflow.capacity(), over_entry)
            + lists
    }
}

/// Bytes of a swiss table with `capacity` usable slots of `entry` bytes: buckets are the
/// capacity over the 7/8 load factor, each with one control byte, plus one group of
/// trailing control bytes.
fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (entry + 1) + 16
}

/// The hint area's index: hints by (target node, hint id), and the target of each id.
#[derive(Default, Debug)]
pub struct HintIndex {
    by_target: BTreeMap<(u64, u64), Loc>,
    target_of: HashMap<u64, u64, ahash::RandomState>,
}

impl HintIndex {
    /// Adds hint `id` for `target` at `loc`.
    pub fn insert(&mut self, target: u64, id: u64, loc: Loc) {
        self.by_target.insert((target, id), loc);
        self.target_of.insert(id, target);
    }

    /// Removes hint `id`; returns its target and location.
    pub fn remove(&mut self, id: u64) -> Option<(u64, Loc)> {
        let target = self.target_of.remove(&id)?;
        let loc = self.by_target.remove(&(target, id))?;
        Some((target, loc))
    }

    /// The location of hint `id`.
    pub fn get(&self, id: u64) -> Option<Loc> {
        let target = self.target_of.get(&id)?;
        self.by_target.get(&(*target, id)).copied()
    }

    /// Moves hint `id` to `new` if it is at `old`.
    pub fn relocate(&mut self, id: u64, old: Loc, new: Loc) -> bool {
        let Some(&target) = self.target_of.get(&id) else {
            return false;
        };
        match self.by_target.get_mut(&(target, id)) {
            Some(l) if *l == old => {
                *l = new;
                true
            }
            _ => false,
        }
    }

    /// Hints for `target`, oldest first: (id, location).
    pub fn for_target(&self, target: u64) -> impl Iterator<Item = (u64, Loc)> + '_ {
        self.by_target
            .range((target, 0)..=(target, u64::MAX))
            .map(|(&(_, id), &l)| (id, l))
    }

    /// Every (target, id, location).
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64, Loc)> + '_ {
        self.by_target.iter().map(|(&(t, id), &l)| (t, id, l))
    }

    /// Distinct targets with at least one hint.
    pub fn targets(&self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for &(t, _) in self.by_target.keys() {
            if out.last() != Some(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Number of hints.
    pub fn len(&self) -> usize {
        self.target_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(offset: u32) -> Loc {
        Loc { segment: 1, offset }
    }

    #[test]
    fn colliding_keys_stay_apart() {
        // Keys live "on disk": location offset n holds key n.
        let keys: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i]).collect();
        let key_of = |l: Loc| keys.get(l.offset as usize).map(|k| &k[..]);
        let mut p = PartitionIndex::default();
        assert_eq!(p.insert(5, &[0], loc(0), key_of), None);
        assert_eq!(p.insert(5, &[1], loc(1), key_of), None);
        assert_eq!(p.insert(5, &[2], loc(2), key_of), None);
        assert_eq!(p.len(), 3);
        assert_eq!(p.find(5, &[1], key_of), Some(loc(1)));
        assert_eq!(p.find(5, &[3], key_of), None);
        assert!(p.relocate(5, loc(2), loc(4)));
        // After relocation, location 4 holds key [4] in this toy store: look it up by that.
        assert_eq!(p.find(5, &[4], key_of), Some(loc(4)));
        assert!(p.remove_loc(5, loc(0)));
        assert!(p.remove_loc(5, loc(4)));
        assert_eq!(p.len(), 1);
        assert_eq!(p.find(5, &[1], key_of), Some(loc(1)));
        assert_eq!(p.entries().count(), 1);
        assert_eq!(p.remove(5, &[1], key_of), Some(loc(1)));
        assert!(p.is_empty());
    }

    #[test]
    fn index_memory_per_key_is_under_64_bytes() {
        let mut p = PartitionIndex::default();
        let none = |_: Loc| -> Option<&[u8]> { None };
        for n in [1_000u32, 10_000, 100_000, 200_000] {
            while (p.len() as u32) < n {
                let i = p.len() as u32;
                let h = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                p.insert(h, &[], loc(i), none);
            }
            let per_key = p.heap_bytes() as f64 / f64::from(n);
            println!("{n} keys: {per_key:.1} index bytes per key");
            assert!(per_key <= 64.0, "{per_key} bytes per key");
        }
    }

    #[test]
    fn hints_group_by_target() {
        let mut h = HintIndex::default();
        h.insert(7, 1, loc(1));
        h.insert(3, 2, loc(2));
        h.insert(7, 3, loc(3));
        assert_eq!(h.targets(), vec![3, 7]);
        let ids: Vec<u64> = h.for_target(7).map(|(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(h.remove(1), Some((7, loc(1))));
        assert_eq!(h.remove(1), None);
        assert!(h.relocate(3, loc(3), loc(9)));
        assert_eq!(h.get(3), Some(loc(9)));
        assert_eq!(h.len(), 2);
    }
}
