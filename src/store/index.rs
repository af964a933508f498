//! The in-memory index: (partition, key) -> record location, and hint id -> location.
//!
//! Keys are not kept in memory at all: an entry is the key's 64-bit hash (seeded per store)
//! and where its record lies, 16 bytes. The record holds the key, so a lookup compares the
//! key there, which the read has to touch anyway.
//!
//! A partition's table is open addressing over buckets of four entries, each bucket one
//! 64-byte cache line, probed bucket after bucket from the key's home bucket. The hash and
//! the location sit side by side in the slot, so a lookup reads one cache line of the index
//! (two when its home bucket is full and the key spilled to the next one) and then the
//! record: two dependent cache misses per read, where a hash map of hashes to separately
//! stored locations took three. Keys of one partition whose 64-bit hashes collide (rare;
//! never silently merged) simply take two slots with the same hash, told apart by the key in
//! their records. The table grows at 7/8 of its slots, so it holds 16 / load bytes per key:
//! about 18 to 37 bytes whatever the key length, under the 64-byte target.
//!
//! Each slot also keeps a *verified* bit: set once a read checked the record's CRC, cleared
//! whenever the slot points somewhere new. It lets [`Store::get`](super::Store::get) check a
//! record's CRC once per process instead of on every read (see the store's module docs).
//! The bit is the low bit of the offset, which is always zero since records are aligned to
//! [`RECORD_ALIGN`].

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};

use super::format::RECORD_ALIGN;

/// Where a record lies: segment id and byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    /// Segment id.
    pub segment: u32,
    /// Offset of the record header in the segment (a multiple of [`RECORD_ALIGN`]).
    pub offset: u32,
}

/// The index of one partition: an open-addressing table of [`Slot`]s in cache-line buckets.
#[derive(Default, Debug)]
pub struct PartitionIndex {
    /// A power of two of buckets, or none before the first insert.
    buckets: Vec<Bucket>,
    /// Keys held.
    len: usize,
    /// Slots that are not empty: keys plus deleted slots still on some probe path.
    used: usize,
}

/// One entry of a bucket: the key's hash and its record's location. `Cell` so that a read
/// (through `&self`) can set the verified bit; the store is not `Sync`, so this costs
/// nothing.
#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    segment: u32,
    /// The record's offset with [`VERIFIED`] or'ed in, or [`EMPTY`], or [`DELETED`].
    offset: u32,
}

/// Slots per bucket: 4 x 16 bytes fill a 64-byte cache line.
const SLOTS: usize = 4;

/// A cache line of slots. Within a bucket the empty slots always come last (an insert takes
/// the first free slot), and a probe goes on to the next bucket only past a bucket without
/// an empty slot: so a lookup stops at the first empty slot it meets.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Bucket([Cell<Slot>; SLOTS]);

/// Offset of a slot that never held an entry. Real offsets are multiples of
/// [`RECORD_ALIGN`] (with the verified bit at most), so neither marker is ever one.
const EMPTY: u32 = u32::MAX;
/// Offset of a slot whose entry was removed: probes go past it, inserts may reuse it.
const DELETED: u32 = u32::MAX - 1;
/// Bit of the offset field set once the record's CRC was checked by this process.
const VERIFIED: u32 = 1;

const _: () = assert!(RECORD_ALIGN > 1 && RECORD_ALIGN as u32 > VERIFIED);
const _: () = assert!(EMPTY % RECORD_ALIGN as u32 > VERIFIED);
const _: () = assert!(DELETED % RECORD_ALIGN as u32 > VERIFIED);
const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

/// One entry found by [`PartitionIndex::probe`]: its location, and its verified bit, which
/// the caller sets once it checked the record.
#[derive(Clone, Copy)]
pub struct SlotRef<'a>(&'a Cell<Slot>);

impl SlotRef<'_> {
    /// Where the record lies.
    pub fn loc(self) -> Loc {
        self.0.get().loc()
    }

    /// True once a read checked the record's CRC since the slot last changed.
    pub fn verified(self) -> bool {
        self.0.get().offset & VERIFIED != 0
    }

    /// Records that the record's CRC was checked: later reads may skip the check.
    pub fn set_verified(self) {
        let mut slot = self.0.get();
        slot.offset |= VERIFIED;
        self.0.set(slot);
    }
}

impl PartitionIndex {
    /// An index with room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buckets: empty_buckets(buckets_for(n)),
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

    /// The entries filed under `hash`, in probe order: one key's, or several colliding
    /// keys'. Reads one cache line for most keys.
    pub fn probe(&self, hash: u64) -> Probe<'_> {
        Probe {
            buckets: &self.buckets,
            hash,
            bucket: home(hash, self.buckets.len()),
            slot: 0,
            left: self.buckets.len(),
        }
    }

    /// Asks the CPU to start loading the home bucket of `hash` (one cache line) without
    /// waiting for it: [`Store::get_many`](super::Store::get_many) does this for a whole
    /// batch of keys before probing any, so their cache misses overlap.
    pub fn prefetch(&self, hash: u64) {
        if let Some(bucket) = self.buckets.get(home(hash, self.buckets.len())) {
            prefetch_line(std::ptr::from_ref(bucket).cast());
        }
    }

    /// The location of the first entry filed under `hash`, if any: where the record of a
    /// key with this hash most likely lies (only a 64-bit hash collision in one partition
    /// makes it another key's). For prefetching; lookups use [`PartitionIndex::probe`].
    pub fn first_candidate(&self, hash: u64) -> Option<Loc> {
        self.probe(hash).next().map(SlotRef::loc)
    }

    /// The location of `key` (hash `hash`); `key_of` reads the key a location holds.
    pub fn find<'k>(
        &self,
        hash: u64,
        key: &[u8],
        key_of: impl Fn(Loc) -> Option<&'k [u8]>,
    ) -> Option<Loc> {
        self.probe(hash)
            .map(SlotRef::loc)
            .find(|&l| key_of(l) == Some(key))
    }

    /// Every location filed under `hash` (one key's, or several colliding keys').
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = Loc> + '_ {
        self.probe(hash).map(SlotRef::loc)
    }

    /// Points `key` at `loc`; returns the location it replaced.
    pub fn insert<'k>(
        &mut self,
        hash: u64,
        key: &[u8],
        loc: Loc,
        key_of: impl Fn(Loc) -> Option<&'k [u8]>,
    ) -> Option<Loc> {
        debug_assert_eq!(loc.offset % RECORD_ALIGN as u32, 0, "misaligned record");
        if let Some(slot) = self.probe(hash).find(|s| key_of(s.loc()) == Some(key)) {
            let old = slot.loc();
            slot.0.set(Slot::new(hash, loc));
            return Some(old);
        }
        self.reserve_one();
        self.place(Slot::new(hash, loc));
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
        let Some((b, s)) = self.position(hash, loc) else {
            return false;
        };
        self.len -= 1;
        let bucket = &self.buckets[b].0;
        if bucket[SLOTS - 1].get().offset == EMPTY {
            // No probe ever went past this bucket (it was never full): close the gap, so the
            // empty slots stay last, and the slot is free for good.
            for i in s..SLOTS - 1 {
                bucket[i].set(bucket[i + 1].get());
            }
            bucket[SLOTS - 1].set(Slot::EMPTY);
            self.used -= 1;
        } else {
            bucket[s].set(Slot {
                offset: DELETED,
                ..Slot::EMPTY
            });
        }
        true
    }

    /// Moves the entry at `old` to `new` (compaction copied the record); true if found.
    pub fn relocate(&mut self, hash: u64, old: Loc, new: Loc) -> bool {
        let Some((b, s)) = self.position(hash, old) else {
            return false;
        };
        self.buckets[b].0[s].set(Slot::new(hash, new));
        true
    }

    /// True if some key's entry is exactly `loc`.
    pub fn holds(&self, hash: u64, loc: Loc) -> bool {
        self.probe(hash).any(|s| s.loc() == loc)
    }

    /// Every (hash, location), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, Loc)> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.0.iter())
            .map(Cell::get)
            .filter(Slot::is_live)
            .map(|s| (s.hash, s.loc()))
    }

    /// Heap bytes this index holds: the whole table, so the per-key figure includes the
    /// load-factor slack.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    /// Bucket and slot of the entry (`hash`, `loc`).
    fn position(&self, hash: u64, loc: Loc) -> Option<(usize, usize)> {
        let mut probe = self.probe(hash);
        probe.find(|s| s.loc() == loc)?;
        // `next` stepped past the slot it returned, within the same bucket.
        Some((probe.bucket, probe.slot - 1))
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// Makes room for one more used slot, growing (or, when deleted slots are most of what
    /// is used, just rebuilding) the table at 7/8 load.
    fn reserve_one(&mut self) {
        let slots = self.buckets.len() * SLOTS;
        if (self.used + 1) * 8 <= slots * 7 {
            return;
        }
        let want = buckets_for(self.len + 1).max(self.buckets.len());
        let old = std::mem::replace(&mut self.buckets, empty_buckets(want));
        self.used = 0;
        for slot in old.iter().flat_map(|b| b.0.iter()).map(Cell::get) {
            if slot.is_live() {
                self.place(slot);
            }
        }
    }

    /// Puts `slot` in the first free slot of its probe path; the table has room.
    fn place(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut b = home(slot.hash, self.buckets.len());
        loop {
            for cell in &self.buckets[b].0 {
                let offset = cell.get().offset;
                if offset == EMPTY || offset == DELETED {
                    if offset == EMPTY {
                        self.used += 1;
                    }
                    cell.set(slot);
                    return;
                }
            }
            b = (b + 1) & mask;
        }
    }
}

/// Iterator of [`PartitionIndex::probe`].
pub struct Probe<'a> {
    buckets: &'a [Bucket],
    hash: u64,
    bucket: usize,
    slot: usize,
    /// Buckets not yet visited, so that even a (never reached) table without an empty slot
    /// ends the probe.
    left: usize,
}

impl<'a> Iterator for Probe<'a> {
    type Item = SlotRef<'a>;

    fn next(&mut self) -> Option<SlotRef<'a>> {
        while self.left > 0 {
            let bucket = &self.buckets.get(self.bucket)?.0;
            while let Some(cell) = bucket.get(self.slot) {
                self.slot += 1;
                let slot = cell.get();
                if slot.offset == EMPTY {
                    self.left = 0;
                    return None;
                }
                if slot.hash == self.hash && slot.offset != DELETED {
                    return Some(SlotRef(cell));
                }
            }
            self.slot = 0;
            self.bucket = (self.bucket + 1) & (self.buckets.len() - 1);
            self.left -= 1;
        }
        None
    }
}

impl Slot {
    const EMPTY: Slot = Slot {
        hash: 0,
        segment: 0,
        offset: EMPTY,
    };

    /// A fresh entry: not verified, since nothing read the record through it yet.
    fn new(hash: u64, loc: Loc) -> Slot {
        Slot {
            hash,
            segment: loc.segment,
            offset: loc.offset,
        }
    }

    fn is_live(&self) -> bool {
        self.offset != EMPTY && self.offset != DELETED
    }

    fn loc(self) -> Loc {
        Loc {
            segment: self.segment,
            offset: self.offset & !VERIFIED,
        }
    }
}

/// Starts loading the cache line holding `ptr` into every cache level, without waiting and
/// without faulting (a prefetch of any address is harmless); nothing on other platforms.
pub fn prefetch_line(ptr: *const u8) {
    // SAFETY: a prefetch is a hint: it reads nothing into the program, writes nothing, and
    // never faults, whatever the address (here always inside a live table or segment map).
    // `sse` is part of the x86_64 baseline, so the instruction always exists.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Buckets for `n` keys at most 7/8 full: a power of two.
fn buckets_for(n: usize) -> usize {
    (n * 8).div_ceil(7 * SLOTS).max(1).next_power_of_two()
}

fn empty_buckets(n: usize) -> Vec<Bucket> {
    vec![Bucket([const { Cell::new(Slot::EMPTY) }; SLOTS]); n]
}

/// Home bucket of `hash` in a table of `buckets` (a power of two): the top bits of a
/// multiplicative mix, so that any bits of the hash spread keys.
fn home(hash: u64, buckets: usize) -> usize {
    let bits = buckets.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
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

    /// Location number `n` of a toy store: aligned like a record.
    fn loc(n: u32) -> Loc {
        Loc {
            segment: 1,
            offset: n * RECORD_ALIGN as u32,
        }
    }

    fn nth(l: Loc) -> usize {
        l.offset as usize / RECORD_ALIGN
    }

    #[test]
    fn colliding_keys_stay_apart() {
        // Keys live "on disk": location offset n holds key n.
        let keys: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i]).collect();
        let key_of = |l: Loc| keys.get(nth(l)).map(|k| &k[..]);
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
    fn the_verified_bit_lasts_until_the_entry_moves() {
        let keys: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i]).collect();
        let key_of = |l: Loc| keys.get(nth(l) % 4).map(|k| &k[..]);
        let mut p = PartitionIndex::default();
        p.insert(9, &[1], loc(1), key_of);
        let slot = p.probe(9).next().unwrap();
        assert!(!slot.verified());
        slot.set_verified();
        assert!(p.probe(9).next().unwrap().verified());
        assert_eq!(
            p.find(9, &[1], key_of),
            Some(loc(1)),
            "the bit is not in the location"
        );
        assert!(p.holds(9, loc(1)));
        assert_eq!(p.entries().collect::<Vec<_>>(), vec![(9, loc(1))]);
        // Overwrite: location 5 holds key [1] too.
        assert_eq!(p.insert(9, &[1], loc(5), key_of), Some(loc(1)));
        assert!(!p.probe(9).next().unwrap().verified());
        p.probe(9).next().unwrap().set_verified();
        assert!(p.relocate(9, loc(5), loc(9)));
        assert!(!p.probe(9).next().unwrap().verified());
    }

    #[test]
    fn a_full_table_of_colliding_buckets_keeps_every_key() {
        // Every key has the same home bucket: they spill over many buckets and wrap around.
        let mut p = PartitionIndex::with_capacity(3);
        let none = |_: Loc| -> Option<&[u8]> { None };
        for i in 0..100 {
            p.insert(7, &[], loc(i), none);
        }
        assert_eq!(p.candidates(7).count(), 100);
        for i in (0..100).step_by(2) {
            assert!(p.remove_loc(7, loc(i)));
        }
        for i in 0..100 {
            assert_eq!(p.holds(7, loc(i)), i % 2 == 1, "{i}");
        }
        assert_eq!(p.len(), 50);
    }

    proptest::proptest! {
        /// The table agrees with a map from key to location under inserts, overwrites,
        /// removals and relocations, with few distinct hashes so that keys collide, spill
        /// into later buckets and leave deleted slots behind.
        #[test]
        fn the_table_agrees_with_a_map(
            ops in proptest::collection::vec((0u8..4, 0u8..40, 0u64..6), 1..400)
        ) {
            // Location n holds key keys[n]; a new location per write.
            let mut keys: Vec<u8> = Vec::new();
            let mut model: HashMap<u8, (u64, Loc)> = HashMap::new();
            let mut p = PartitionIndex::default();
            for (op, key, hash) in ops {
                // A key always has the same hash.
                let hash = model.get(&key).map_or(hash, |&(h, _)| h);
                let snapshot = keys.clone();
                let key_of = |l: Loc| snapshot.get(nth(l)).map(std::slice::from_ref);
                match op {
                    0 | 1 => {
                        let at = loc(keys.len() as u32);
                        keys.push(key);
                        let key_of = |l: Loc| keys.get(nth(l)).map(std::slice::from_ref);
                        let old = p.insert(hash, &[key], at, key_of);
                        proptest::prop_assert_eq!(old, model.insert(key, (hash, at)).map(|e| e.1));
                    }
                    2 => {
                        let old = p.remove(hash, &[key], key_of);
                        proptest::prop_assert_eq!(old, model.remove(&key).map(|e| e.1));
                    }
                    _ => {
                        if let Some(&(h, old)) = model.get(&key) {
                            let at = loc(keys.len() as u32);
                            keys.push(key);
                            proptest::prop_assert!(p.relocate(h, old, at));
                            model.insert(key, (h, at));
                        }
                    }
                }
                proptest::prop_assert_eq!(p.len(), model.len());
            }
            let key_of = |l: Loc| keys.get(nth(l)).map(std::slice::from_ref);
            for (&key, &(hash, at)) in &model {
                proptest::prop_assert_eq!(p.find(hash, &[key], key_of), Some(at));
            }
            let mut got: Vec<(u64, Loc)> = p.entries().collect();
            let mut want: Vec<(u64, Loc)> = model.values().copied().collect();
            got.sort_by_key(|&(h, l)| (h, l.offset));
            want.sort_by_key(|&(h, l)| (h, l.offset));
            proptest::prop_assert_eq!(got, want);
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
