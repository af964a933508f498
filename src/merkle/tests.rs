use proptest::prelude::*;

use super::*;
use crate::causal::{Actor, CausalState, Context, Value};
use crate::constants::{MERKLE_FANOUT, MERKLE_LEAVES, MERKLE_LEVELS};

/// Every hash of every level, for comparing whole trees.
fn all_levels(tree: &MerkleTree) -> Vec<Vec<u64>> {
    (0..MERKLE_LEVELS)
        .map(|l| tree.hashes(l, 0, level_width(l)))
        .collect()
}

/// A tree holding `entries` (key, state), inserted in the given order.
fn tree_of(entries: &[(Vec<u8>, Vec<u8>)]) -> MerkleTree {
    let mut t = MerkleTree::new();
    for (k, s) in entries {
        t.update(k, None, Some(entry_hash(k, s)));
    }
    t
}

#[test]
fn xxh64_matches_the_reference_implementation() {
    // Outputs of the reference C implementation (libxxhash 0.8.1, XXH64(input, len, seed)),
    // covering every tail length path: < 4, 4..8, 8..32 and >= 32 bytes.
    let hundred: Vec<u8> = (0..100u8).collect();
    let cases: &[(&[u8], u64, u64)] = &[
        (b"", 0, 0xef46_db37_51d8_e999),
        (b"", 1, 0xd5af_ba13_36a3_be4b),
        (b"a", 0, 0xd24e_c4f1_a98c_6e5b),
        (b"abc", 0, 0x44bc_2cf5_ad77_0999),
        (b"abcd", 7, 0x7b60_af38_95a9_f4a9),
        (b"abcdefgh", 0, 0x3ad3_5177_5b46_34b7),
        (b"123456789", 0, 0x8cb8_41db_40e6_ae83),
        (
            b"0123456789abcdef0123456789abcdef",
            0,
            0x642a_9495_8e71_e6c5,
        ),
        (
            b"Nobody inspects the spammish repetition",
            0,
            0xfbce_a83c_8a37_8bf1,
        ),
        (&hundred, 0, 0x6ac1_e580_3216_6597),
        (&hundred, 0x9e37_79b9_7f4a_7c15, 0x3b97_d91e_ba03_e785),
    ];
    for &(input, seed, want) in cases {
        assert_eq!(xxh64(input, seed), want, "input {input:?} seed {seed:#x}");
    }
}

/// The worked example of wire-spec/merkle.md: if this changes, every node of a cluster
/// disagrees with every older one.
#[test]
fn worked_example_of_the_spec() {
    let mut state = CausalState::new();
    state
        .update(&Context::empty(), Value::Bytes(b"hello".to_vec()), Actor(1))
        .unwrap();
    let bytes = state.to_bytes();
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex.join(" "),
        "52 53 01 29 00 00 00 01 00 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 01 00 \
         01 05 00 00 00 68 65 6c 6c 6f 54 c3 b0 3b"
    );
    let key = b"user:42";
    let kh = KeyHash::of(key);
    assert_eq!(kh.0, 0xdc1f_ea7d_a8d2_d1c2);
    assert_eq!(leaf_of(key), 880);
    assert_eq!(entry_hash(key, &bytes), 0x15ee_75ee_5e18_901a);

    let mut tree = MerkleTree::new();
    tree.update(key, None, Some(entry_hash(key, &bytes)));
    assert_eq!(tree.hashes(2, 880, 1), vec![0x15ee_75ee_5e18_901a]);
    assert_eq!(tree.hashes(1, 27, 1), vec![0xc038_0689_b42d_4e4e]);
    assert_eq!(tree.root(), 0x3bb8_8a5c_2d95_8815);
    tree.update(key, Some(entry_hash(key, &bytes)), None);
    assert_eq!(tree.root(), 0);
}

#[test]
fn an_empty_tree_is_all_zeros() {
    let t = MerkleTree::new();
    assert_eq!(t.root(), 0);
    assert!(t.is_empty());
    for level in all_levels(&t) {
        assert!(level.iter().all(|&h| h == 0));
    }
    assert_eq!(MerkleTree::memory_bytes() / 1024, 8);
}

#[test]
fn ranges_are_cut_at_the_end_of_a_level() {
    let t = tree_of(&[(b"k".to_vec(), b"s".to_vec())]);
    assert_eq!(t.hashes(0, 0, 5).len(), 1);
    assert_eq!(t.hashes(0, 1, 5).len(), 0);
    assert_eq!(t.hashes(1, 30, 5).len(), 2);
    assert_eq!(t.hashes(2, 1000, 100).len(), 24);
    assert_eq!(t.hashes(2, u32::MAX, u32::MAX).len(), 0);
    assert_eq!(t.hashes(3, 0, 10).len(), 0);
    assert_eq!(clip(1, 31, u32::MAX), 31..32);
    assert_eq!(level_width(MERKLE_LEVELS), 0);
    assert_eq!(level_width(2), MERKLE_LEAVES);
}

#[test]
fn child_ranges_merge_adjacent_parents() {
    assert_eq!(child_ranges(0, &[7]), vec![(0, 1)]);
    assert_eq!(child_ranges(1, &[0]), vec![(0, 32)]);
    assert_eq!(child_ranges(2, &[1, 2, 5]), vec![(32, 64), (160, 32)]);
    assert_eq!(child_ranges(3, &[1]), Vec::<(u32, u32)>::new());
    assert_eq!(
        differing_buckets(10, &[1, 2, 3], &[1, 9, 3, 4]),
        vec![11, 13]
    );
}

#[test]
fn causal_states_merged_in_any_order_encode_and_hash_the_same() {
    // Three replicas write concurrently, then exchange in different orders.
    let write = |actor: u64, value: &[u8]| {
        let mut s = CausalState::new();
        s.update(
            &Context::empty(),
            Value::Bytes(value.to_vec()),
            Actor(actor),
        )
        .unwrap();
        s
    };
    let (a, b, c) = (write(3, b"x"), write(1, b"y"), write(2, b"z"));
    let mut deleted = a.clone();
    deleted
        .update(&a.context(), Value::Tombstone, Actor(3))
        .unwrap();
    let abc = a.merge(&b).unwrap().0.merge(&c).unwrap().0;
    let cba = c.merge(&b).unwrap().0.merge(&a).unwrap().0;
    let bca = b.merge(&c.merge(&a).unwrap().0).unwrap().0;
    assert_eq!(abc.to_bytes(), cba.to_bytes());
    assert_eq!(abc.to_bytes(), bca.to_bytes());
    let d1 = abc.merge(&deleted).unwrap().0;
    let d2 = deleted.merge(&cba).unwrap().0;
    assert_eq!(d1.to_bytes(), d2.to_bytes());
    // Canonical: decoding and re-encoding gives the same bytes, so the same hash.
    let bytes = d1.to_bytes();
    assert_eq!(CausalState::decode(&bytes).unwrap().to_bytes(), bytes);
    assert_eq!(entry_hash(b"k", &bytes), entry_hash(b"k", &d2.to_bytes()));
    assert_ne!(entry_hash(b"k", &bytes), entry_hash(b"k", &abc.to_bytes()));
}

/// Up to 200 distinct keys with a small state each.
fn entries() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    prop::collection::btree_map(
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec(any::<u8>(), 0..24),
        0..200,
    )
    .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_same_set_in_any_order_gives_the_same_tree(
        entries in entries(),
        seed in any::<u64>(),
        overwrites in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..40),
    ) {
        let forward = tree_of(&entries);
        // Another order, with detours: some keys first get another state, then theirs.
        let mut shuffled = entries.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut other = MerkleTree::new();
        let mut current: std::collections::HashMap<&[u8], u64> = Default::default();
        for (ix, byte) in &overwrites {
            if shuffled.is_empty() {
                break;
            }
            let (k, _) = &shuffled[ix.index(shuffled.len())];
            let h = entry_hash(k, &[*byte; 3]);
            other.update(k, current.insert(k, h), Some(h));
        }
        for (k, s) in &shuffled {
            let h = entry_hash(k, s);
            other.update(k, current.insert(k, h), Some(h));
        }
        prop_assert_eq!(all_levels(&forward), all_levels(&other));
        prop_assert_eq!(other.len(), entries.len() as u64);
        prop_assert!(forward == other);
        prop_assert!(forward.leaves_differing(&other).is_empty());
    }

    #[test]
    fn inserting_then_removing_leaves_an_empty_root(entries in entries()) {
        let mut t = tree_of(&entries);
        prop_assert_eq!(t.root() != 0, !entries.is_empty());
        for (k, s) in entries.iter().rev() {
            t.update(k, Some(entry_hash(k, s)), None);
        }
        prop_assert_eq!(t.root(), 0);
        prop_assert!(t.is_empty());
        prop_assert!(all_levels(&t).iter().flatten().all(|&h| h == 0));
    }

    #[test]
    fn one_differing_key_shows_in_one_leaf_and_its_ancestors(
        entries in entries(),
        key in prop::collection::vec(any::<u8>(), 0..12),
        state in prop::collection::vec(any::<u8>(), 0..24),
        removed in any::<bool>(),
    ) {
        let a = tree_of(&entries);
        let mut b = tree_of(&entries);
        let old = entries.iter().find(|(k, _)| *k == key).map(|(k, s)| entry_hash(k, s));
        let new = if removed && old.is_some() {
            None
        } else {
            Some(entry_hash(&key, &state))
        };
        prop_assume!(old != new);
        b.update(&key, old, new);
        let leaf = leaf_of(&key);
        let expect = [vec![0], vec![leaf / MERKLE_FANOUT], vec![leaf]];
        for level in 0..MERKLE_LEVELS {
            let width = level_width(level);
            let diff = differing_buckets(0, &a.hashes(level, 0, width), &b.hashes(level, 0, width));
            prop_assert_eq!(&diff, &expect[level as usize]);
        }
        prop_assert_eq!(a.leaves_differing(&b), vec![leaf]);
    }

    #[test]
    fn the_walk_finds_exactly_the_differing_leaves(
        a in entries(),
        b in entries(),
    ) {
        let (ta, tb) = (tree_of(&a), tree_of(&b));
        let width = level_width(LEAF_LEVEL);
        let brute = differing_buckets(0, &ta.hashes(2, 0, width), &tb.hashes(2, 0, width));
        prop_assert_eq!(ta.leaves_differing(&tb), brute);
    }
}
