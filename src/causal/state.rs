//! The causal state of one key on one replica (a DVVSet): what the store keeps for the key
//! and what replicas send each other. Coordinators update it from a client's context;
//! replicas merge it; reads turn it into live values and a context.

use smallvec::{smallvec, SmallVec};

use super::codec::{self, join_by_actor, ByActor, Reader, Side, CRC_BYTES};
use super::{Actor, CausalError, Context, DecodeError, Dot, SiblingLimits, SiblingReport, Value};
use crate::constants::{CAUSAL_ACTORS_MAX, SIBLINGS_MAX, VALUE_BYTES_MAX};

/// Magic of an encoded causal state: "RS" (Rotor state).
const STATE_MAGIC: [u8; 2] = *b"RS";

/// Magic, version and total length: what is read before the checksum is verified.
const STATE_FRAME_BYTES: usize = 7;

/// Frame plus the entry count.
const STATE_HEADER_BYTES: usize = STATE_FRAME_BYTES + 2;

/// The smallest encoding: a state with no entries.
const STATE_BYTES_MIN: usize = STATE_HEADER_BYTES + CRC_BYTES;

/// Actor, counter and value count of one entry.
const ENTRY_HEADER_BYTES: usize = 18;

/// Sibling kind byte of a tombstone.
const KIND_TOMBSTONE: u8 = 0;

/// Sibling kind byte of a value, followed by its length and bytes.
const KIND_BYTES: u8 = 1;

/// The DVVSet of one key on one replica.
///
/// For every actor that ever coordinated a write of the key (as far as this replica
/// knows) it holds the highest counter seen, and the values of that actor's writes that no
/// later write has covered: the siblings. An actor's siblings always carry the *last*
/// dots up to its counter (a write covers whole prefixes of every actor's history, and new
/// dots are appended at the top), so dots are implied by position and never stored.
///
/// The representation is canonical (entries by increasing actor, no entry without an
/// event), so two replicas hold the same siblings and history exactly when their states
/// are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalState {
    /// Sorted by strictly increasing actor; at most `CAUSAL_ACTORS_MAX`; three inline
    /// entries cover a key written through N=3 replicas without allocating.
    entries: SmallVec<[Entry; 3]>,
}

/// What an update did: the new write's dot (its identity, for the caller's bookkeeping)
/// and the key's sibling count after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated {
    /// The dot given to the new value.
    pub dot: Dot,
    /// Siblings after the update, and whether to warn.
    pub report: SiblingReport,
}

/// What a client reads: the live values and the context to pass to its next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadView<'a> {
    /// Live siblings, tombstones hidden, by increasing dot. Empty when the key was never
    /// written or every sibling is a tombstone: the key reads as not found.
    pub values: SmallVec<[&'a [u8]; 1]>,
    /// Everything this state has seen, tombstones included, so a write carrying it
    /// supersedes every sibling (a tombstone-only key's next write replaces the tombstones).
    pub context: Context,
}

impl CausalState {
    /// The state of a key never written.
    pub fn new() -> Self {
        CausalState::default()
    }

    /// Whether this state has seen no write at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Siblings, live values and tombstones alike.
    pub fn sibling_count(&self) -> usize {
        self.entries.iter().map(|entry| entry.values.len()).sum()
    }

    /// Actors (replica incarnations) this state names.
    pub fn actor_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether the key has siblings and every one is a tombstone: a candidate for
    /// tombstone purging once every replica holds it. False for a key never written.
    pub fn is_tombstone_only(&self) -> bool {
        let mut values = self
            .entries
            .iter()
            .flat_map(|entry| &entry.values)
            .peekable();
        values.peek().is_some() && values.all(Value::is_tombstone)
    }

    /// Every sibling with its dot, by increasing dot.
    pub fn siblings(&self) -> impl Iterator<Item = (Dot, &Value)> + '_ {
        self.entries.iter().flat_map(|entry| {
            let actor = entry.actor;
            // An inclusive range: a counter may be u64::MAX, where `first..` would overflow
            // stepping past the last value.
            (entry.first_counter()..=entry.counter)
                .zip(&entry.values)
                .map(move |(counter, value)| (Dot { actor, counter }, value))
        })
    }

    /// The version vector of everything this state has seen.
    pub fn context(&self) -> Context {
        Context::from_sorted(self.entries.iter().map(|e| (e.actor, e.counter)).collect())
    }

    /// The live values and the context a client gets back from a read.
    pub fn read(&self) -> ReadView<'_> {
        ReadView {
            values: self
                .siblings()
                .filter_map(|(_, value)| value.as_bytes())
                .collect(),
            context: self.context(),
        }
    }

    /// A client's write (a put, or a delete with [`Value::Tombstone`]) coordinated by this
    /// replica, whose incarnation is `actor`, with the default sibling limits. See
    /// [`CausalState::update_with_limits`].
    pub fn update(
        &mut self,
        context: &Context,
        value: Value,
        actor: Actor,
    ) -> Result<Updated, CausalError> {
        self.update_with_limits(context, value, actor, &SiblingLimits::default())
    }

    /// A client's write coordinated by this replica: the new value gets the dot
    /// (`actor`, one past the highest counter of `actor` seen here or in `context`); the
    /// siblings `context` covers are dropped, every other sibling stays; the state's
    /// history absorbs `context` (so other replicas drop what the client saw, too).
    ///
    /// Refused, with the state unchanged, if the value is too large, if the key would carry
    /// more siblings than `limits` allow, or name more than `CAUSAL_ACTORS_MAX` actors.
    pub fn update_with_limits(
        &mut self,
        context: &Context,
        value: Value,
        actor: Actor,
        limits: &SiblingLimits,
    ) -> Result<Updated, CausalError> {
        if let Value::Bytes(bytes) = &value {
            if bytes.len() > VALUE_BYTES_MAX {
                return Err(CausalError::ValueTooLarge { bytes: bytes.len() });
            }
        }
        // Plan first, so a refusal leaves the state untouched.
        let mut siblings = 1;
        let mut actors = 0;
        let mut own_counter = None;
        for side in join_by_actor(self.entries.iter(), context.entries().iter()) {
            let (entry_actor, counter) = match side {
                Side::Left(entry) => {
                    siblings += entry.values.len();
                    (entry.actor, entry.counter)
                }
                Side::Right(&(seen_actor, seen)) => (seen_actor, seen),
                Side::Both(entry, &(_, seen)) => {
                    siblings += entry.unseen_by(seen);
                    (entry.actor, entry.counter.max(seen))
                }
            };
            actors += 1;
            if entry_actor == actor {
                own_counter = Some(counter);
            }
        }
        if own_counter.is_none() {
            actors += 1;
        }
        check_actors(actors)?;
        let report = limits.report(siblings)?;
        let counter = own_counter
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(CausalError::CounterOverflow)?;

        let old = std::mem::take(&mut self.entries);
        let mut entries = SmallVec::with_capacity(actors);
        for side in join_by_actor(old.into_iter(), context.entries().iter()) {
            entries.push(match side {
                Side::Left(entry) => entry,
                Side::Right(&(seen_actor, seen)) => Entry {
                    actor: seen_actor,
                    counter: seen,
                    values: SmallVec::new(),
                },
                Side::Both(mut entry, &(_, seen)) => {
                    entry.keep_newest(entry.unseen_by(seen));
                    entry.counter = entry.counter.max(seen);
                    entry
                }
            });
        }
        // The new dot is one past everything seen of `actor`, so the actor's surviving
        // siblings (if any) stay the newest dots below its counter.
        match entries.binary_search_by_key(&actor, |entry: &Entry| entry.actor) {
            Ok(index) => {
                if let Some(entry) = entries.get_mut(index) {
                    entry.counter = counter;
                    entry.values.push(value);
                }
            }
            Err(index) => entries.insert(
                index,
                Entry {
                    actor,
                    counter,
                    values: smallvec![value],
                },
            ),
        }
        self.entries = entries;
        Ok(Updated {
            dot: Dot { actor, counter },
            report,
        })
    }

    /// Merges two replicas' states with the default sibling limits. See
    /// [`CausalState::merge_with_limits`].
    pub fn merge(&self, other: &CausalState) -> Result<(CausalState, SiblingReport), CausalError> {
        self.merge_with_limits(other, &SiblingLimits::default())
    }

    /// Merges two replicas' states (replication, read repair, handoff, anti-entropy).
    ///
    /// A sibling survives unless the other side has seen its dot and no longer holds it
    /// (a later write there covered it). Commutative, associative and idempotent, so any
    /// order of exchanges converges. Refused if the result would exceed `limits` or
    /// `CAUSAL_ACTORS_MAX` actors; the caller keeps its own state and reports it.
    pub fn merge_with_limits(
        &self,
        other: &CausalState,
        limits: &SiblingLimits,
    ) -> Result<(CausalState, SiblingReport), CausalError> {
        let mut siblings = 0;
        let mut actors = 0;
        for side in join_by_actor(self.entries.iter(), other.entries.iter()) {
            siblings += match side {
                Side::Left(entry) | Side::Right(entry) => entry.values.len(),
                Side::Both(left, right) => merged_len(left, right),
            };
            actors += 1;
        }
        check_actors(actors)?;
        let report = limits.report(siblings)?;
        let mut entries = SmallVec::with_capacity(actors);
        for side in join_by_actor(self.entries.iter(), other.entries.iter()) {
            entries.push(match side {
                Side::Left(entry) | Side::Right(entry) => entry.clone(),
                Side::Both(left, right) => {
                    // Both hold the newest dots below their own counter; the result's are
                    // the newest `len` of the side that has seen further.
                    let len = merged_len(left, right);
                    let newer = if left.counter >= right.counter {
                        left
                    } else {
                        right
                    };
                    let skip = newer.values.len() - len;
                    Entry {
                        actor: newer.actor,
                        counter: newer.counter,
                        values: newer.values.iter().skip(skip).cloned().collect(),
                    }
                }
            });
        }
        Ok((CausalState { entries }, report))
    }

    /// Merges `other` into this state with the default limits; unchanged on refusal.
    pub fn merge_from(&mut self, other: &CausalState) -> Result<SiblingReport, CausalError> {
        let (merged, report) = self.merge(other)?;
        *self = merged;
        Ok(report)
    }

    /// Length of [`CausalState::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let entries: usize = self
            .entries
            .iter()
            .map(|entry| {
                let values: usize = entry.values.iter().map(value_encoded_len).sum();
                ENTRY_HEADER_BYTES + values
            })
            .sum();
        STATE_HEADER_BYTES + entries + CRC_BYTES
    }

    /// Appends the encoding (`wire-spec/causal.md`, "Causal state") to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Update, merge and decode keep every count and length within the limits, which
        // all fit the fields (compile-time asserts in constants.rs).
        let fits = "bounded by the causal limits";
        let len = self.encoded_len();
        let start = out.len();
        out.reserve(len);
        out.extend_from_slice(&STATE_MAGIC);
        out.push(codec::FORMAT_VERSION);
        out.extend_from_slice(&u32::try_from(len).expect(fits).to_le_bytes());
        let count = u16::try_from(self.entries.len()).expect(fits);
        out.extend_from_slice(&count.to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.actor.0.to_le_bytes());
            out.extend_from_slice(&entry.counter.to_le_bytes());
            let values = u16::try_from(entry.values.len()).expect(fits);
            out.extend_from_slice(&values.to_le_bytes());
            for value in &entry.values {
                match value {
                    Value::Tombstone => out.push(KIND_TOMBSTONE),
                    Value::Bytes(bytes) => {
                        out.push(KIND_BYTES);
                        let bytes_len = u32::try_from(bytes.len()).expect(fits);
                        out.extend_from_slice(&bytes_len.to_le_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        codec::append_crc(out, start);
        debug_assert_eq!(out.len() - start, len);
    }

    /// The encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Decodes what [`CausalState::encode`] wrote, checking magic, version, length and
    /// checksum first, then every limit before allocating for it, then canonical order.
    /// Whatever decodes re-encodes to the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::check_magic_version(bytes, STATE_MAGIC)?;
        let mut frame = Reader::new(bytes.get(STATE_MAGIC.len() + 1..).unwrap_or_default());
        let announced = frame.u32().ok_or(DecodeError::Truncated)?;
        let announced = usize::try_from(announced).map_err(|_| DecodeError::BadLength)?;
        if announced < STATE_BYTES_MIN {
            return Err(DecodeError::BadLength);
        }
        codec::check_length(bytes, announced)?;
        let covered = codec::verify_crc(bytes)?;
        let mut reader = Reader::new(covered.get(STATE_FRAME_BYTES..).unwrap_or_default());

        let count = usize::from(reader.u16().ok_or(DecodeError::BadLength)?);
        if count > CAUSAL_ACTORS_MAX {
            return Err(DecodeError::TooManyActors);
        }
        if count.saturating_mul(ENTRY_HEADER_BYTES) > reader.remaining() {
            return Err(DecodeError::BadLength);
        }
        let mut entries = SmallVec::with_capacity(count);
        let mut siblings = 0;
        let mut previous = None;
        for _ in 0..count {
            let (actor, counter) = codec::read_actor_counter(&mut reader, previous)?;
            previous = Some(actor);
            let held = usize::from(reader.u16().ok_or(DecodeError::BadLength)?);
            if u64::try_from(held).map_or(true, |held| held > counter) {
                return Err(DecodeError::SiblingsAboveCounter);
            }
            siblings += held;
            if siblings > SIBLINGS_MAX {
                return Err(DecodeError::TooManySiblings);
            }
            // Every sibling takes at least its kind byte.
            if held > reader.remaining() {
                return Err(DecodeError::BadLength);
            }
            let mut values = SmallVec::with_capacity(held);
            for _ in 0..held {
                values.push(read_value(&mut reader)?);
            }
            entries.push(Entry {
                actor,
                counter,
                values,
            });
        }
        if reader.remaining() != 0 {
            return Err(DecodeError::BadLength);
        }
        Ok(CausalState { entries })
    }
}

/// One actor's part of a state: its highest counter seen here and the values of its
/// writes not yet covered, oldest first. `values.len() <= counter`, and `values[k]` has the
/// dot (`actor`, `counter - values.len() + 1 + k`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    actor: Actor,
    counter: u64,
    /// One inline value: the common key has one sibling.
    values: SmallVec<[Value; 1]>,
}

impl Entry {
    /// Counter of the oldest value held (the counter itself when none is held). Written
    /// so that a counter of u64::MAX cannot overflow; `values.len() <= counter` holds.
    fn first_counter(&self) -> u64 {
        self.counter - self.values.len().saturating_sub(1) as u64
    }

    /// How many of the held values a context that saw this actor up to `seen` did not see:
    /// the values with a dot above `seen`.
    fn unseen_by(&self, seen: u64) -> usize {
        let unseen = self.counter.saturating_sub(seen);
        usize::try_from(unseen).map_or(self.values.len(), |unseen| unseen.min(self.values.len()))
    }

    /// Drops the oldest values, keeping the newest `keep`.
    fn keep_newest(&mut self, keep: usize) {
        let drop = self.values.len().saturating_sub(keep);
        self.values.drain(..drop);
    }
}

impl ByActor for Entry {
    fn actor(&self) -> Actor {
        self.actor
    }
}

/// Siblings of one actor that survive merging two replicas' entries for it: the newer
/// side's values whose dots the older side never saw, plus those both sides still hold.
/// A value only one side holds while the other has seen its dot was covered there.
fn merged_len(left: &Entry, right: &Entry) -> usize {
    let (newer, older) = if left.counter >= right.counter {
        (left, right)
    } else {
        (right, left)
    };
    let survivors = newer.counter - older.counter;
    usize::try_from(survivors).map_or(newer.values.len(), |survivors| {
        survivors
            .saturating_add(older.values.len())
            .min(newer.values.len())
    })
}

fn check_actors(actors: usize) -> Result<(), CausalError> {
    if actors > CAUSAL_ACTORS_MAX {
        return Err(CausalError::TooManyActors {
            actors,
            max: CAUSAL_ACTORS_MAX,
        });
    }
    Ok(())
}

fn value_encoded_len(value: &Value) -> usize {
    match value {
        Value::Tombstone => 1,
        Value::Bytes(bytes) => 1 + 4 + bytes.len(),
    }
}

fn read_value(reader: &mut Reader<'_>) -> Result<Value, DecodeError> {
    match reader.u8().ok_or(DecodeError::BadLength)? {
        KIND_TOMBSTONE => Ok(Value::Tombstone),
        KIND_BYTES => {
            let len = reader.u32().ok_or(DecodeError::BadLength)?;
            let len = usize::try_from(len).map_err(|_| DecodeError::ValueTooLarge)?;
            if len > VALUE_BYTES_MAX {
                return Err(DecodeError::ValueTooLarge);
            }
            let bytes = reader.bytes(len).ok_or(DecodeError::BadLength)?;
            Ok(Value::Bytes(bytes.to_vec()))
        }
        other => Err(DecodeError::BadValueKind(other)),
    }
}
