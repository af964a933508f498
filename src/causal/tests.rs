//! Scenario tests (the Dynamo paper's example, deletes, stale contexts, the doomstone bug,
//! limits), byte-format tests against the spec and its vectors, and property tests that
//! model-check the DVVSet against a reference that tracks which writes each context saw.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::constants::{CAUSAL_ACTORS_MAX, SIBLINGS_MAX, SIBLINGS_WARN, VALUE_BYTES_MAX};

fn bytes(text: &str) -> Value {
    Value::Bytes(text.as_bytes().to_vec())
}

/// Live values as strings, by dot.
fn live(state: &CausalState) -> Vec<String> {
    state
        .read()
        .values
        .iter()
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .collect()
}

fn vv(context: &Context) -> Vec<(u64, u64)> {
    context.iter().map(|(Actor(a), c)| (a, c)).collect()
}

fn dot(actor: Actor, counter: u64) -> Dot {
    Dot { actor, counter }
}

fn merged(left: &CausalState, right: &CausalState) -> CausalState {
    left.merge(right).expect("within limits").0
}

fn put(state: &mut CausalState, context: &Context, text: &str, actor: Actor) -> Dot {
    state
        .update(context, bytes(text), actor)
        .expect("within limits")
        .dot
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// The version evolution of figure 3 of the Dynamo paper, replicas Sx, Sy, Sz.
#[test]
fn dynamo_paper_version_evolution() {
    let (sx, sy, sz) = (Actor(0x5a), Actor(0x5b), Actor(0x5c));
    let (mut x, mut y, mut z) = (CausalState::new(), CausalState::new(), CausalState::new());

    // D1([Sx,1]): a client writes a new object; Sx coordinates.
    assert_eq!(put(&mut x, &Context::empty(), "D1", sx), dot(sx, 1));
    assert_eq!(live(&x), ["D1"]);
    assert_eq!(vv(&x.context()), [(0x5a, 1)]);
    let d1_copy = x.clone();

    // D2([Sx,2]): the client reads D1 and updates it; Sx again. D2 overwrites D1.
    let read_d1 = x.read().context;
    assert_eq!(put(&mut x, &read_d1, "D2", sx), dot(sx, 2));
    assert_eq!(live(&x), ["D2"]);
    assert_eq!(vv(&x.context()), [(0x5a, 2)]);

    // Sx replicates D2 to Sy and Sz.
    y.merge_from(&x).unwrap();
    z.merge_from(&x).unwrap();
    assert_eq!(live(&y), ["D2"]);

    // D3([Sx,2],[Sy,1]): a client reads D2 and updates it through Sy.
    let read_d2 = y.read().context;
    assert_eq!(put(&mut y, &read_d2, "D3", sy), dot(sy, 1));
    assert_eq!(live(&y), ["D3"]);
    assert_eq!(vv(&y.context()), [(0x5a, 2), (0x5b, 1)]);

    // D4([Sx,2],[Sz,1]): another client read D2 too and updates it through Sz.
    let read_d2_at_z = z.read().context;
    assert_eq!(read_d2_at_z, read_d2);
    assert_eq!(put(&mut z, &read_d2_at_z, "D4", sz), dot(sz, 1));
    assert_eq!(live(&z), ["D4"]);
    assert_eq!(vv(&z.context()), [(0x5a, 2), (0x5c, 1)]);

    // A node still holding D1 that receives D3 keeps only D3: D3 descends D1.
    assert_eq!(live(&merged(&d1_copy, &y)), ["D3"]);

    // A node that receives both D3 and D4 keeps both: neither descends the other.
    let both = merged(&merged(&x, &y), &z);
    assert_eq!(live(&both), ["D3", "D4"]);
    assert_eq!(both.sibling_count(), 2);
    assert_eq!(vv(&both.context()), [(0x5a, 2), (0x5b, 1), (0x5c, 1)]);

    // D5([Sx,3],[Sy,1],[Sz,1]): a client reads {D3, D4}, reconciles, and writes through Sx.
    // Sx itself never received D3 or D4: the context alone makes them obsolete.
    let read_both = both.read().context;
    assert_eq!(live(&x), ["D2"]);
    assert_eq!(put(&mut x, &read_both, "D5", sx), dot(sx, 3));
    assert_eq!(live(&x), ["D5"]);
    assert_eq!(vv(&x.context()), [(0x5a, 3), (0x5b, 1), (0x5c, 1)]);

    // D5 reaches everyone: D3 and D4 disappear and all replicas agree.
    y.merge_from(&x).unwrap();
    z.merge_from(&x).unwrap();
    let both = merged(&both, &x);
    for replica in [&x, &y, &z, &both] {
        assert_eq!(live(replica), ["D5"]);
        assert_eq!(replica, &x);
    }
}

#[test]
fn sequential_writes_through_different_replicas_leave_one_value() {
    let actors = [Actor(1), Actor(2), Actor(3)];
    let mut replicas = [CausalState::new(), CausalState::new(), CausalState::new()];
    // Each write reads from the previous coordinator and goes through the next replica,
    // which has not received the previous write yet.
    let mut reader = 0;
    for step in 0..9 {
        let coordinator = (step * 2 + 1) % 3;
        let context = replicas[reader].read().context;
        put(
            &mut replicas[coordinator],
            &context,
            &format!("v{step}"),
            actors[coordinator],
        );
        reader = coordinator;
    }
    let all = merged(&merged(&replicas[0], &replicas[1]), &replicas[2]);
    assert_eq!(live(&all), ["v8"]);
}

#[test]
fn concurrent_writes_through_the_same_replica_are_siblings() {
    let actor = Actor(9);
    let mut state = CausalState::new();
    put(&mut state, &Context::empty(), "base", actor);
    let read = state.read().context;
    // Two clients read "base" and both write through the same replica.
    put(&mut state, &read, "alice", actor);
    put(&mut state, &read, "bob", actor);
    assert_eq!(live(&state), ["alice", "bob"]);
    // A blind write (no context) is concurrent with everything.
    put(&mut state, &Context::empty(), "carol", actor);
    assert_eq!(live(&state), ["alice", "bob", "carol"]);
    // Reading all three and writing once resolves them.
    let read = state.read().context;
    put(&mut state, &read, "resolved", actor);
    assert_eq!(live(&state), ["resolved"]);
    assert_eq!(state.sibling_count(), 1);
}

/// A context read before a sibling existed covers only what it saw: the newer sibling stays.
#[test]
fn stale_context_keeps_the_sibling_it_did_not_see() {
    let (a, b, c) = (Actor(1), Actor(2), Actor(3));
    let mut replica_a = CausalState::new();
    put(&mut replica_a, &Context::empty(), "first", a);
    let stale = replica_a.read().context;

    // Meanwhile another client writes concurrently through replica B.
    let mut replica_b = replica_a.clone();
    put(&mut replica_b, &Context::empty(), "concurrent", b);
    let mut replica_c = merged(&replica_a, &replica_b);
    assert_eq!(live(&replica_c), ["first", "concurrent"]);

    // The first client writes with its stale context through C: "first" is covered,
    // "concurrent" is not.
    put(&mut replica_c, &stale, "second", c);
    assert_eq!(live(&replica_c), ["concurrent", "second"]);
    // Every replica ends up the same once states are exchanged.
    let everyone = merged(&merged(&replica_a, &replica_b), &replica_c);
    assert_eq!(everyone, replica_c);
}

#[test]
fn deletes_are_writes_with_the_same_causality() {
    let (a, b) = (Actor(1), Actor(2));
    let mut replica_a = CausalState::new();
    put(&mut replica_a, &Context::empty(), "v1", a);
    let read = replica_a.read().context;

    // A delete through B that saw v1, while B never received v1.
    let mut replica_b = CausalState::new();
    let deleted = replica_b.update(&read, Value::Tombstone, b).unwrap();
    assert_eq!(deleted.dot, dot(b, 1));
    assert!(replica_b.is_tombstone_only());
    replica_a.merge_from(&replica_b).unwrap();
    assert!(replica_a.is_tombstone_only());
    assert_eq!(replica_a.sibling_count(), 1);

    // An all-tombstone key reads as not found, with a context covering the tombstones.
    assert!(replica_a.read().values.is_empty());
    let context = replica_a.read().context;
    assert_eq!(vv(&context), [(1, 1), (2, 1)]);

    // A write with that context replaces the tombstone.
    put(&mut replica_a, &context, "v2", a);
    assert_eq!(live(&replica_a), ["v2"]);
    assert_eq!(replica_a.sibling_count(), 1);
    assert!(!replica_a.is_tombstone_only());

    // A delete concurrent with a put: the put stays visible, the tombstone stays a
    // sibling until a write covers both.
    let read = replica_a.read().context;
    let mut replica_b = replica_a.clone();
    put(&mut replica_a, &read, "v3", a);
    replica_b.update(&read, Value::Tombstone, b).unwrap();
    let mut both = merged(&replica_a, &replica_b);
    assert_eq!(live(&both), ["v3"]);
    assert_eq!(both.sibling_count(), 2);
    assert!(!both.is_tombstone_only());
    let read = both.read().context;
    both.update(&read, Value::Tombstone, a).unwrap();
    assert!(both.is_tombstone_only());
    assert_eq!(both.sibling_count(), 1);

    // A never-written key is neither live nor a tombstone.
    let never = CausalState::new();
    assert!(never.is_empty());
    assert!(!never.is_tombstone_only());
    assert!(never.read().values.is_empty());
    assert!(never.read().context.is_empty());
}

#[test]
fn an_empty_value_is_not_a_tombstone() {
    let mut state = CausalState::new();
    state
        .update(&Context::empty(), Value::Bytes(Vec::new()), Actor(1))
        .unwrap();
    assert_eq!(state.read().values.as_slice(), [&[] as &[u8]]);
    assert!(!state.is_tombstone_only());
    let decoded = CausalState::decode(&state.to_bytes()).unwrap();
    assert_eq!(decoded, state);
}

/// The Riak "doomstone" (basho/riak_kv#679): a vnode lost its data, restarted with the same
/// actor id, and counted from 1 again. Its new writes carried dots that the other replicas
/// had already seen and superseded, so a merge dropped them silently. An actor is a store
/// incarnation, renewed after data loss; this test shows both sides of that rule.
#[test]
fn doomstone_a_replica_with_a_new_actor_after_data_loss_does_not_lose_writes() {
    let (a, b) = (Actor(10), Actor(20));
    let mut replica_a = CausalState::new();
    for version in 1..=3 {
        let read = replica_a.read().context;
        put(&mut replica_a, &read, &format!("v{version}"), a);
    }
    let mut replica_b = CausalState::new();
    replica_b.merge_from(&replica_a).unwrap();
    assert_eq!(live(&replica_b), ["v3"]);

    // Replica A loses its disk and comes back empty. A client writes through it without a
    // context (its read found nothing there).
    let mut wiped = CausalState::new();

    // The bug, reproduced: reusing actor `a` issues dot (a, 1) again, which B saw long
    // ago, so the acknowledged write "fresh" vanishes on the first exchange.
    let mut reused = wiped.clone();
    put(&mut reused, &Context::empty(), "fresh", a);
    assert_eq!(live(&merged(&replica_b, &reused)), ["v3"]);

    // The rule: a store that lost its data takes a new incarnation, hence a new actor.
    let a_renewed = Actor(11);
    assert_eq!(
        put(&mut wiped, &Context::empty(), "fresh", a_renewed),
        dot(a_renewed, 1)
    );
    let exchanged = merged(&replica_b, &wiped);
    assert_eq!(live(&exchanged), ["v3", "fresh"]);
    assert_eq!(exchanged, merged(&wiped, &replica_b));

    // And a later write through B that saw both resolves them.
    let read = exchanged.read().context;
    let mut resolved = exchanged.clone();
    put(&mut resolved, &read, "v4", b);
    assert_eq!(live(&merged(&resolved, &wiped)), ["v4"]);
}

/// A coordinator whose copy lags what a client's context saw of its own actor (say, an
/// older copy of its state came back) numbers the new write past the context, so it never
/// reissues a dot the context (and so other replicas) already knows.
#[test]
fn new_dots_are_numbered_past_what_the_context_saw_of_the_actor() {
    let a = Actor(1);
    let mut current = CausalState::new();
    put(&mut current, &Context::empty(), "v1", a);
    let older_copy = current.clone();
    for version in 2..=3 {
        let read = current.read().context;
        put(&mut current, &read, &format!("v{version}"), a);
    }
    let read = current.read().context;
    let mut lagging = older_copy;
    assert_eq!(put(&mut lagging, &read, "v4", a), dot(a, 4));
    assert_eq!(live(&lagging), ["v4"]);
    assert_eq!(live(&merged(&lagging, &current)), ["v4"]);
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[test]
fn siblings_warn_past_the_threshold_and_are_refused_past_the_maximum() {
    let actor = Actor(1);
    let mut state = CausalState::new();
    for written in 1..=SIBLINGS_MAX {
        let report = state
            .update(&Context::empty(), bytes(&written.to_string()), actor)
            .unwrap()
            .report;
        assert_eq!(report.siblings, written);
        assert_eq!(report.warn, written > SIBLINGS_WARN, "at {written}");
    }
    let before = state.clone();
    assert_eq!(
        state.update(&Context::empty(), bytes("one too many"), actor),
        Err(CausalError::TooManySiblings {
            siblings: SIBLINGS_MAX + 1,
            max: SIBLINGS_MAX
        })
    );
    assert_eq!(state, before, "a refused update changes nothing");
    // A write that covers the siblings is still accepted: that is how a client resolves.
    let read = state.read().context;
    let report = state
        .update(&read, bytes("resolved"), actor)
        .unwrap()
        .report;
    assert_eq!(report.siblings, 1);
    assert!(!report.warn);
}

#[test]
fn merges_past_the_maximum_are_refused_not_truncated() {
    let half = SIBLINGS_MAX / 2 + 1;
    let mut left = CausalState::new();
    let mut right = CausalState::new();
    for index in 0..half {
        put(&mut left, &Context::empty(), &index.to_string(), Actor(1));
        put(&mut right, &Context::empty(), &index.to_string(), Actor(2));
    }
    assert_eq!(
        left.merge(&right),
        Err(CausalError::TooManySiblings {
            siblings: 2 * half,
            max: SIBLINGS_MAX
        })
    );
    let before = left.clone();
    assert!(left.merge_from(&right).is_err());
    assert_eq!(left, before);
    // Below the maximum the merge reports the warning.
    let report = left.merge(&CausalState::new()).unwrap().1;
    assert_eq!(report.siblings, half);
    assert_eq!(report.warn, half > SIBLINGS_WARN);
}

#[test]
fn configured_limits_apply_and_cannot_exceed_the_format_maximum() {
    let limits = SiblingLimits::new(1, 2);
    let mut state = CausalState::new();
    let first = state
        .update_with_limits(&Context::empty(), bytes("a"), Actor(1), &limits)
        .unwrap();
    assert!(!first.report.warn);
    let second = state
        .update_with_limits(&Context::empty(), bytes("b"), Actor(1), &limits)
        .unwrap();
    assert!(second.report.warn);
    assert_eq!(
        state.update_with_limits(&Context::empty(), bytes("c"), Actor(1), &limits),
        Err(CausalError::TooManySiblings {
            siblings: 3,
            max: 2
        })
    );
    assert_eq!(
        state.merge_with_limits(&state, &SiblingLimits::new(0, 1)),
        Err(CausalError::TooManySiblings {
            siblings: 2,
            max: 1
        })
    );
    assert_eq!(SiblingLimits::new(500, 1000).max(), SIBLINGS_MAX);
    assert_eq!(SiblingLimits::new(500, 1000).warn(), SIBLINGS_MAX);
    assert_eq!(SiblingLimits::new(0, 0).max(), 1);
    assert_eq!(SiblingLimits::default().warn(), SIBLINGS_WARN);
}

#[test]
fn oversized_values_are_refused() {
    let mut state = CausalState::new();
    let huge = Value::Bytes(vec![0; VALUE_BYTES_MAX + 1]);
    assert_eq!(
        state.update(&Context::empty(), huge, Actor(1)),
        Err(CausalError::ValueTooLarge {
            bytes: VALUE_BYTES_MAX + 1
        })
    );
    assert!(state.is_empty());
    let largest = Value::Bytes(vec![7; VALUE_BYTES_MAX]);
    state.update(&Context::empty(), largest, Actor(1)).unwrap();
    assert_eq!(CausalState::decode(&state.to_bytes()), Ok(state));
}

#[test]
fn actors_past_the_maximum_are_refused() {
    // Sequential writes through ever new replica incarnations: one sibling, many actors.
    let mut state = CausalState::new();
    for actor in 1..=CAUSAL_ACTORS_MAX as u64 {
        let read = state.read().context;
        put(&mut state, &read, "v", Actor(actor));
    }
    assert_eq!(state.actor_count(), CAUSAL_ACTORS_MAX);
    assert_eq!(state.sibling_count(), 1);
    let full = state.clone();
    let read = state.read().context;
    assert_eq!(
        state.update(&read, bytes("v"), Actor(u64::MAX)),
        Err(CausalError::TooManyActors {
            actors: CAUSAL_ACTORS_MAX + 1,
            max: CAUSAL_ACTORS_MAX
        })
    );
    assert_eq!(state, full);
    // The largest state and context still round-trip.
    assert_eq!(CausalState::decode(&full.to_bytes()).as_ref(), Ok(&full));
    assert_eq!(Context::decode_opaque(&read.to_opaque()), Ok(read.clone()));
    // An actor already named does not count twice.
    state.update(&read, bytes("w"), Actor(1)).unwrap();
    // Merging in one more actor is refused too.
    let mut other = CausalState::new();
    put(&mut other, &Context::empty(), "x", Actor(u64::MAX));
    assert!(matches!(
        full.merge(&other),
        Err(CausalError::TooManyActors { .. })
    ));
}

#[test]
fn a_forged_counter_at_the_maximum_is_refused_not_wrapped() {
    // Found by the fuzzer: listing the siblings of such a state once overflowed.
    let forged = CausalState::decode(&raw_state(&[(1, u64::MAX, &[Some(b"x")])])).unwrap();
    assert_eq!(live(&forged), ["x"]);
    assert_eq!(forged.siblings().next().unwrap().0, dot(Actor(1), u64::MAX));
    let covered = CausalState::decode(&raw_state(&[(1, u64::MAX, &[])])).unwrap();
    assert_eq!(covered.siblings().count(), 0);
    let mut state = forged.clone();
    assert_eq!(
        state.update(&Context::empty(), bytes("y"), Actor(1)),
        Err(CausalError::CounterOverflow)
    );
    assert_eq!(state, forged);
}

// ---------------------------------------------------------------------------------------
// Byte formats
// ---------------------------------------------------------------------------------------

/// One entry as the spec lays it out: actor, counter, values oldest first (`None` is a
/// tombstone).
type RawEntry<'a> = (u64, u64, &'a [Option<&'a [u8]>]);

/// A causal state written straight from the byte table of `wire-spec/causal.md`, with no
/// validation (entries: actor, counter, values oldest first; `None` is a tombstone).
fn raw_state(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = b"RS\x01\0\0\0\0".to_vec();
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (actor, counter, values) in entries {
        out.extend_from_slice(&actor.to_le_bytes());
        out.extend_from_slice(&counter.to_le_bytes());
        out.extend_from_slice(&(values.len() as u16).to_le_bytes());
        for value in *values {
            match value {
                None => out.push(0),
                Some(bytes) => {
                    out.push(1);
                    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
    }
    seal_state(out)
}

/// Sets the total length and appends the checksum of a causal state under construction.
fn seal_state(mut out: Vec<u8>) -> Vec<u8> {
    let len = (out.len() + 4) as u32;
    out[3..7].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The Dynamo example's {D3, D4} state with a tombstone added: the shape of the vectors.
fn sample_state() -> CausalState {
    CausalState::decode(&raw_state(&[
        (0x1111_1111_1111_1111, 2, &[]),
        (0x2222_2222_2222_2222, 1, &[Some(b"D3")]),
        (0x3333_3333_3333_3333, 2, &[None, Some(b"D4")]),
    ]))
    .unwrap()
}

#[test]
fn the_encoder_follows_the_spec_table() {
    let state = sample_state();
    let siblings: Vec<_> = state.siblings().collect();
    assert_eq!(
        siblings,
        [
            (dot(Actor(0x2222_2222_2222_2222), 1), &bytes("D3")),
            (dot(Actor(0x3333_3333_3333_3333), 1), &Value::Tombstone),
            (dot(Actor(0x3333_3333_3333_3333), 2), &bytes("D4")),
        ]
    );
    assert_eq!(
        state.to_bytes(),
        raw_state(&[
            (0x1111_1111_1111_1111, 2, &[]),
            (0x2222_2222_2222_2222, 1, &[Some(b"D3")]),
            (0x3333_3333_3333_3333, 2, &[None, Some(b"D4")]),
        ])
    );
    assert_eq!(state.encoded_len(), state.to_bytes().len());
    assert_eq!(CausalState::new().to_bytes(), raw_state(&[]));
    assert_eq!(CausalState::new().to_bytes().len(), 13);
}

/// Bytes of a `wire-spec/vectors/*.hex` file: hex digits, whitespace and `#` comments.
fn vector(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&digits[at..at + 2], 16).unwrap())
        .collect()
}

#[test]
fn wire_spec_vectors_decode_and_re_encode_identically() {
    let context = vector(include_str!(
        "../../wire-spec/vectors/causal-context-three-actors.hex"
    ));
    let decoded = Context::decode_opaque(&context).unwrap();
    assert_eq!(decoded, sample_state().context());
    assert_eq!(decoded.to_opaque(), context);

    let state = vector(include_str!(
        "../../wire-spec/vectors/causal-state-siblings.hex"
    ));
    assert_eq!(CausalState::decode(&state), Ok(sample_state()));
    assert_eq!(sample_state().to_bytes(), state);

    let empty = vector(include_str!(
        "../../wire-spec/vectors/causal-state-empty.hex"
    ));
    assert_eq!(CausalState::decode(&empty), Ok(CausalState::new()));
    assert_eq!(CausalState::new().to_bytes(), empty);
}

#[test]
fn states_round_trip() {
    for state in [CausalState::new(), sample_state()] {
        let mut out = b"prefix".to_vec();
        state.encode(&mut out);
        assert_eq!(CausalState::decode(&out[6..]).as_ref(), Ok(&state));
    }
}

#[test]
fn every_truncated_state_is_rejected_as_truncated() {
    let bytes = sample_state().to_bytes();
    for len in 1..bytes.len() {
        assert_eq!(
            CausalState::decode(&bytes[..len]),
            Err(DecodeError::Truncated),
            "prefix of {len} bytes"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        CausalState::decode(&trailing),
        Err(DecodeError::TrailingBytes)
    );
}

#[test]
fn every_single_bit_flip_in_a_state_is_rejected() {
    let bytes = sample_state().to_bytes();
    for bit in 0..bytes.len() * 8 {
        let mut corrupt = bytes.clone();
        corrupt[bit / 8] ^= 1 << (bit % 8);
        let result = CausalState::decode(&corrupt);
        if bit / 8 >= 7 {
            assert_eq!(result, Err(DecodeError::Checksum), "bit {bit}");
        } else {
            assert!(result.is_err(), "bit {bit} flipped still decoded");
        }
    }
}

#[test]
fn foreign_bytes_are_not_a_state() {
    let context = sample_state().context().to_opaque();
    assert_eq!(CausalState::decode(&context), Err(DecodeError::Foreign));
    assert_eq!(
        CausalState::decode(b"{\"json\":1}"),
        Err(DecodeError::Foreign)
    );
    assert_eq!(CausalState::decode(b""), Err(DecodeError::Truncated));
    let mut future = CausalState::new().to_bytes();
    future[2] = 9;
    assert_eq!(
        CausalState::decode(&future),
        Err(DecodeError::UnsupportedVersion(9))
    );
    let mut short = CausalState::new().to_bytes();
    short[3..7].copy_from_slice(&12u32.to_le_bytes());
    assert_eq!(CausalState::decode(&short), Err(DecodeError::BadLength));
}

/// Canonical-form and limit violations sealed with a correct checksum, as a buggy encoder
/// or a forger would send them.
#[test]
fn invalid_states_behind_valid_checksums_are_rejected() {
    let x: &[Option<&[u8]>] = &[Some(b"x")];
    let check = |entries: &[RawEntry<'_>], error| {
        assert_eq!(CausalState::decode(&raw_state(entries)), Err(error));
    };
    check(&[(2, 1, x), (1, 1, x)], DecodeError::UnsortedActors);
    check(&[(2, 1, x), (2, 2, &[])], DecodeError::UnsortedActors);
    check(&[(2, 0, &[])], DecodeError::ZeroCounter);
    check(&[(2, 1, &[None, None])], DecodeError::SiblingsAboveCounter);

    let many: Vec<Option<&[u8]>> = vec![None; SIBLINGS_MAX];
    check(
        &[(1, 500, &many), (2, 1, &[None])],
        DecodeError::TooManySiblings,
    );
    assert!(CausalState::decode(&raw_state(&[(1, 500, &many)])).is_ok());

    // Structure that disagrees with the framing.
    let mut bad_kind = raw_state(&[(1, 1, &[None])]);
    let kind_at = bad_kind.len() - 5;
    bad_kind[kind_at] = 2;
    let bad_kind = seal_state(bad_kind[..bad_kind.len() - 4].to_vec());
    assert_eq!(
        CausalState::decode(&bad_kind),
        Err(DecodeError::BadValueKind(2))
    );
    let mut extra = raw_state(&[(1, 1, &[None])]);
    extra.truncate(extra.len() - 4);
    extra.push(0);
    assert_eq!(
        CausalState::decode(&seal_state(extra)),
        Err(DecodeError::BadLength)
    );
    let mut missing = raw_state(&[(1, 1, &[Some(b"abc")])]);
    missing.truncate(missing.len() - 5);
    assert_eq!(
        CausalState::decode(&seal_state(missing)),
        Err(DecodeError::BadLength)
    );

    // Limits are checked before allocating: a huge value length or actor count fails
    // fast, with nothing behind it.
    let mut huge_value = b"RS\x01\0\0\0\0\x01\0".to_vec();
    huge_value.extend_from_slice(&1u64.to_le_bytes());
    huge_value.extend_from_slice(&1u64.to_le_bytes());
    huge_value.extend_from_slice(&1u16.to_le_bytes());
    huge_value.push(1);
    huge_value.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        CausalState::decode(&seal_state(huge_value)),
        Err(DecodeError::ValueTooLarge)
    );
    let mut many_actors = b"RS\x01\0\0\0\0".to_vec();
    many_actors.extend_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        CausalState::decode(&seal_state(many_actors)),
        Err(DecodeError::TooManyActors)
    );
    let mut few_bytes = b"RS\x01\0\0\0\0".to_vec();
    few_bytes.extend_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        CausalState::decode(&seal_state(few_bytes)),
        Err(DecodeError::BadLength)
    );
}

// ---------------------------------------------------------------------------------------
// Model check
// ---------------------------------------------------------------------------------------

const REPLICAS: usize = 4;

/// One step of a history of one key on `REPLICAS` replicas.
#[derive(Debug, Clone)]
enum Op {
    /// A client reads from `read_from` (none: a blind write) and writes through
    /// `coordinator`; a delete writes a tombstone.
    Write {
        coordinator: usize,
        read_from: Option<usize>,
        delete: bool,
    },
    /// Replica `to` receives replica `from`'s state (replication, repair, anti-entropy).
    Sync { from: usize, to: usize },
    /// A replica loses its data and restarts empty with a new incarnation.
    Wipe { replica: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..REPLICAS, proptest::option::weighted(0.8, 0..REPLICAS), proptest::bool::weighted(0.2))
            .prop_map(|(coordinator, read_from, delete)| Op::Write { coordinator, read_from, delete }),
        4 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Op::Sync { from, to }),
        1 => (0..REPLICAS).prop_map(|replica| Op::Wipe { replica }),
    ]
}

/// The replicas of one key plus a reference: the writes each replica has seen, and the
/// writes each write's context had seen.
struct Sim {
    replicas: Vec<SimReplica>,
    writes: Vec<WriteRecord>,
    next_actor: u64,
}

struct SimReplica {
    state: CausalState,
    actor: Actor,
    /// Ids of every write in this replica's causal past.
    seen: BTreeSet<usize>,
}

struct WriteRecord {
    dot: Dot,
    value: Value,
    /// Ids of the writes the client's context had seen: exactly those it may supersede.
    saw: BTreeSet<usize>,
}

impl Sim {
    fn new() -> Self {
        let replicas = (0..REPLICAS)
            .map(|index| SimReplica {
                state: CausalState::new(),
                actor: Actor(1000 + index as u64),
                seen: BTreeSet::new(),
            })
            .collect();
        Sim {
            replicas,
            writes: Vec::new(),
            next_actor: 2000,
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write {
                coordinator,
                read_from,
                delete,
            } => {
                let (context, saw) = match read_from {
                    Some(reader) => {
                        let reader = &self.replicas[reader];
                        (reader.state.read().context, reader.seen.clone())
                    }
                    None => (Context::empty(), BTreeSet::new()),
                };
                let id = self.writes.len();
                let value = if delete {
                    Value::Tombstone
                } else {
                    Value::Bytes(id.to_le_bytes().to_vec())
                };
                let replica = &mut self.replicas[coordinator];
                let updated = replica
                    .state
                    .update(&context, value.clone(), replica.actor)
                    .expect("histories stay within limits");
                replica.seen.extend(saw.iter().copied());
                replica.seen.insert(id);
                self.writes.push(WriteRecord {
                    dot: updated.dot,
                    value,
                    saw,
                });
            }
            Op::Sync { from, to } => {
                let source = self.replicas[from].state.clone();
                let seen = self.replicas[from].seen.clone();
                let target = &mut self.replicas[to];
                target.state.merge_from(&source).expect("within limits");
                target.seen.extend(seen);
            }
            Op::Wipe { replica } => {
                let replica = &mut self.replicas[replica];
                replica.state = CausalState::new();
                replica.seen.clear();
                replica.actor = Actor(self.next_actor);
                self.next_actor += 1;
            }
        }
    }

    /// What a replica that has seen `seen` must hold: every write it saw that no write it
    /// saw had in its context. Nothing else, and nothing less.
    fn expected(&self, seen: &BTreeSet<usize>) -> BTreeMap<Dot, Value> {
        seen.iter()
            .filter(|&&id| {
                !seen
                    .iter()
                    .any(|&later| self.writes[later].saw.contains(&id))
            })
            .map(|&id| (self.writes[id].dot, self.writes[id].value.clone()))
            .collect()
    }

    fn check_replicas(&self) -> Result<(), TestCaseError> {
        for (index, replica) in self.replicas.iter().enumerate() {
            prop_assert_eq!(
                actual(&replica.state),
                self.expected(&replica.seen),
                "replica {}",
                index
            );
        }
        Ok(())
    }

    /// Every replica sends its state to `order[0]`, which sends the result to everyone.
    fn sync_all(&mut self, order: &[usize]) {
        let hub = order[0];
        for &from in order {
            self.apply(&Op::Sync { from, to: hub });
        }
        for &to in order {
            self.apply(&Op::Sync { from: hub, to });
        }
    }
}

fn actual(state: &CausalState) -> BTreeMap<Dot, Value> {
    state
        .siblings()
        .map(|(dot, value)| (dot, value.clone()))
        .collect()
}

fn run(ops: &[Op]) -> Sim {
    let mut sim = Sim::new();
    for op in ops {
        sim.apply(op);
    }
    sim
}

fn order() -> impl Strategy<Value = Vec<usize>> {
    Just((0..REPLICAS).collect::<Vec<_>>()).prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every step, every replica holds exactly the writes the reference says: an
    /// acknowledged write disappears only once a write whose context saw it is known, and
    /// concurrent writes are all kept. Then any exchange order converges to the same state.
    #[test]
    fn histories_match_the_reference_and_converge(
        ops in proptest::collection::vec(op(), 0..60),
        first in order(),
        second in order(),
    ) {
        let mut sim = Sim::new();
        for op in &ops {
            sim.apply(op);
            sim.check_replicas()?;
        }
        let all_seen: BTreeSet<usize> =
            sim.replicas.iter().flat_map(|replica| replica.seen.iter().copied()).collect();
        let expected = sim.expected(&all_seen);
        let before: Vec<CausalState> =
            sim.replicas.iter().map(|replica| replica.state.clone()).collect();

        sim.sync_all(&first);
        sim.check_replicas()?;
        for replica in &sim.replicas {
            prop_assert_eq!(&replica.state, &sim.replicas[0].state);
        }
        prop_assert_eq!(actual(&sim.replicas[0].state), expected);

        // Another exchange order from the same starting point ends in the same state.
        let mut again = before;
        fold_in(&mut again, &second);
        for state in &again {
            prop_assert_eq!(state, &sim.replicas[0].state);
        }
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let sim = run(&ops);
        let [a, b, c, ..] = &sim.replicas[..] else { unreachable!() };
        let (a, b, c) = (&a.state, &b.state, &c.state);
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(&merged(a, a), a);
        // Merging in something already included changes nothing.
        let ab = merged(a, b);
        prop_assert_eq!(merged(&ab, b), ab);
    }

    /// A client that always passes the context of a read that saw the latest write never
    /// creates siblings, whichever replica coordinates and however stale it is.
    #[test]
    fn sequential_writes_never_create_siblings(
        steps in proptest::collection::vec(
            (0..REPLICAS, any::<usize>(), proptest::collection::vec(0..REPLICAS, 0..3)),
            1..40,
        ),
        exchange in order(),
    ) {
        let mut sim = Sim::new();
        for (coordinator, pick, spread) in steps {
            let latest = sim.writes.len().checked_sub(1);
            let holders: Vec<usize> = (0..REPLICAS)
                .filter(|&r| latest.is_none_or(|id| sim.replicas[r].seen.contains(&id)))
                .collect();
            let read_from = holders[pick % holders.len()];
            sim.apply(&Op::Write { coordinator, read_from: Some(read_from), delete: false });
            for to in spread {
                sim.apply(&Op::Sync { from: coordinator, to });
            }
            for replica in &sim.replicas {
                prop_assert!(replica.state.sibling_count() <= 1);
            }
        }
        sim.sync_all(&exchange);
        let last = sim.writes.len() - 1;
        for replica in &sim.replicas {
            let last_value = last.to_le_bytes();
            let view = replica.state.read();
            prop_assert_eq!(view.values.as_slice(), [&last_value[..]]);
        }
    }

    /// Writes that all read the same version are concurrent: every one surfaces as a
    /// sibling, even when several go through the same replica.
    #[test]
    fn concurrent_writes_always_surface_as_siblings(
        coordinators in proptest::collection::vec(0..REPLICAS, 1..8),
        exchange in order(),
    ) {
        let mut sim = Sim::new();
        sim.apply(&Op::Write { coordinator: 0, read_from: None, delete: false });
        sim.sync_all(&exchange);
        let snapshot = sim.replicas[0].state.read().context;
        for &coordinator in &coordinators {
            let replica = &mut sim.replicas[coordinator];
            let value = Value::Bytes(vec![coordinator as u8]);
            replica.state.update(&snapshot, value, replica.actor).unwrap();
        }
        sim.sync_all(&exchange);
        let mut expected: Vec<u8> = coordinators.iter().map(|&c| c as u8).collect();
        expected.sort_unstable();
        let mut seen: Vec<u8> = sim.replicas[0]
            .state
            .read()
            .values
            .iter()
            .map(|value| value[0])
            .collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, expected);
        prop_assert_eq!(&sim.replicas[1].state, &sim.replicas[0].state);
    }

    #[test]
    fn states_and_contexts_round_trip(ops in proptest::collection::vec(op(), 0..40)) {
        let sim = run(&ops);
        for replica in &sim.replicas {
            let bytes = replica.state.to_bytes();
            prop_assert_eq!(bytes.len(), replica.state.encoded_len());
            let decoded = CausalState::decode(&bytes);
            prop_assert_eq!(decoded.as_ref(), Ok(&replica.state));
            let context = replica.state.read().context;
            let opaque = context.to_opaque();
            prop_assert_eq!(opaque.len(), context.encoded_len());
            prop_assert_eq!(Context::decode_opaque(&opaque), Ok(context));
        }
    }
}

/// Merges every state into `order[0]` in that order, then that result into every state.
fn fold_in(states: &mut [CausalState], order: &[usize]) {
    let hub = order[0];
    for &from in order {
        let source = states[from].clone();
        states[hub].merge_from(&source).unwrap();
    }
    let result = states[hub].clone();
    for state in states.iter_mut() {
        state.merge_from(&result).unwrap();
    }
}
