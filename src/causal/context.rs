//! The client's causal context: the version vector of what a read saw, handed to the client
//! as opaque bytes and handed back with its next write so the coordinator drops exactly the
//! siblings the client saw.

use smallvec::SmallVec;

use super::codec::{self, Reader, CRC_BYTES};
use super::{Actor, DecodeError, Dot};
use crate::constants::CAUSAL_ACTORS_MAX;

/// Magic of an encoded context: "RC" (Rotor context).
const CONTEXT_MAGIC: [u8; 2] = *b"RC";

/// Magic, version and entry count.
const CONTEXT_HEADER_BYTES: usize = 5;

/// One entry: actor and counter.
const CONTEXT_ENTRY_BYTES: usize = 16;

/// What a read saw: for each actor, the highest counter of that actor's writes the read's
/// replicas had seen (all of that actor's earlier writes are seen too, because an actor
/// issues counters in order and never forgets its own).
///
/// The empty context is what a first write (or a blind write) carries; it covers nothing,
/// so such a write becomes a sibling of whatever the key already holds. It encodes as zero
/// bytes. Obtain a context from [`super::CausalState::read`] or [`Context::decode_opaque`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Context {
    /// (actor, counter) sorted by strictly increasing actor, counters at least 1, at most
    /// `CAUSAL_ACTORS_MAX` entries. Three inline entries cover N=3 without allocating.
    entries: SmallVec<[(Actor, u64); 3]>,
}

impl Context {
    /// The context of a write that saw nothing.
    pub fn empty() -> Self {
        Context::default()
    }

    /// Whether this context saw nothing (a first or blind write).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest counter of `actor` this context saw, 0 if none.
    pub fn counter(&self, actor: Actor) -> u64 {
        self.entries
            .iter()
            .find(|(known, _)| *known == actor)
            .map_or(0, |&(_, counter)| counter)
    }

    /// Whether the write identified by `dot` was seen by this context, so a write carrying
    /// it supersedes that one.
    pub fn covers(&self, dot: Dot) -> bool {
        dot.counter <= self.counter(dot.actor)
    }

    /// The (actor, counter) entries, by increasing actor.
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Number of actors this context names.
    pub fn actor_count(&self) -> usize {
        self.entries.len()
    }

    /// Length of [`Context::encode_opaque`]'s output.
    pub fn encoded_len(&self) -> usize {
        if self.entries.is_empty() {
            return 0;
        }
        CONTEXT_HEADER_BYTES + CONTEXT_ENTRY_BYTES * self.entries.len() + CRC_BYTES
    }

    /// Appends the opaque encoding (`wire-spec/causal.md`, "Context") to `out`. The empty
    /// context appends nothing.
    pub fn encode_opaque(&self, out: &mut Vec<u8>) {
        if self.entries.is_empty() {
            return;
        }
        // Every constructor keeps the count within CAUSAL_ACTORS_MAX, far below u16::MAX.
        let count = u16::try_from(self.entries.len()).expect("actor count is bounded");
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&CONTEXT_MAGIC);
        out.push(codec::FORMAT_VERSION);
        out.extend_from_slice(&count.to_le_bytes());
        for &(Actor(actor), counter) in &self.entries {
            out.extend_from_slice(&actor.to_le_bytes());
            out.extend_from_slice(&counter.to_le_bytes());
        }
        codec::append_crc(out, start);
    }

    /// The opaque encoding as a new vector.
    pub fn to_opaque(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_opaque(&mut out);
        out
    }

    /// Decodes what [`Context::encode_opaque`] wrote. Zero bytes are the empty context.
    /// Foreign, truncated, corrupt or non-canonical bytes are a [`DecodeError`]; whatever
    /// decodes re-encodes to the same bytes.
    pub fn decode_opaque(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Ok(Context::empty());
        }
        codec::check_magic_version(bytes, CONTEXT_MAGIC)?;
        let mut header = Reader::new(bytes.get(3..).unwrap_or_default());
        let count = usize::from(header.u16().ok_or(DecodeError::Truncated)?);
        if count == 0 {
            return Err(DecodeError::EmptyFramedContext);
        }
        if count > CAUSAL_ACTORS_MAX {
            return Err(DecodeError::TooManyActors);
        }
        codec::check_length(
            bytes,
            CONTEXT_HEADER_BYTES + CONTEXT_ENTRY_BYTES * count + CRC_BYTES,
        )?;
        let covered = codec::verify_crc(bytes)?;
        let mut reader = Reader::new(covered.get(CONTEXT_HEADER_BYTES..).unwrap_or_default());
        let mut entries = SmallVec::with_capacity(count);
        let mut previous = None;
        for _ in 0..count {
            let entry = codec::read_actor_counter(&mut reader, previous)?;
            previous = Some(entry.0);
            entries.push(entry);
        }
        Ok(Context { entries })
    }

    /// Builds a context from entries already sorted by strictly increasing actor with
    /// non-zero counters and at most `CAUSAL_ACTORS_MAX` of them (the causal state's own
    /// version vector).
    pub(crate) fn from_sorted(entries: SmallVec<[(Actor, u64); 3]>) -> Self {
        debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
        debug_assert!(entries.iter().all(|&(_, counter)| counter > 0));
        debug_assert!(entries.len() <= CAUSAL_ACTORS_MAX);
        Context { entries }
    }

    /// The entries, for the update's walk alongside the state's entries.
    pub(crate) fn entries(&self) -> &[(Actor, u64)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    fn context(entries: &[(u64, u64)]) -> Context {
        Context::from_sorted(entries.iter().map(|&(a, c)| (Actor(a), c)).collect())
    }

    #[test]
    fn empty_context_is_zero_bytes_and_decodes_back() {
        let empty = Context::empty();
        assert_eq!(empty.to_opaque(), Vec::<u8>::new());
        assert_eq!(Context::decode_opaque(&[]), Ok(Context::empty()));
    }

    #[test]
    fn one_actor_context_is_25_bytes_and_round_trips() {
        let ctx = context(&[(7, 3)]);
        let bytes = ctx.to_opaque();
        assert_eq!(bytes.len(), 25);
        assert_eq!(bytes.len(), ctx.encoded_len());
        assert_eq!(&bytes[..5], b"RC\x01\x01\x00");
        assert_eq!(Context::decode_opaque(&bytes), Ok(ctx));
    }

    #[test]
    fn encode_appends_after_existing_bytes() {
        let ctx = context(&[(1, 1), (2, 9)]);
        let mut out = b"prefix".to_vec();
        ctx.encode_opaque(&mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(Context::decode_opaque(&out[6..]), Ok(ctx));
    }

    #[test]
    fn covers_is_per_actor_prefix() {
        let ctx = context(&[(1, 3), (5, 1)]);
        let dot = |actor, counter| Dot {
            actor: Actor(actor),
            counter,
        };
        assert!(ctx.covers(dot(1, 1)));
        assert!(ctx.covers(dot(1, 3)));
        assert!(!ctx.covers(dot(1, 4)));
        assert!(ctx.covers(dot(5, 1)));
        assert!(!ctx.covers(dot(2, 1)));
        assert_eq!(ctx.counter(Actor(9)), 0);
    }

    #[test]
    fn every_truncation_is_rejected_as_truncated() {
        let bytes = context(&[(1, 3), (5, 1), (8, 2)]).to_opaque();
        for len in 1..bytes.len() {
            assert_eq!(
                Context::decode_opaque(&bytes[..len]),
                Err(DecodeError::Truncated),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let ctx = context(&[(1, 3), (5, 1)]);
        let bytes = ctx.to_opaque();
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            let result = Context::decode_opaque(&corrupt);
            assert!(
                result.is_err(),
                "bit {bit} flipped still decoded: {result:?}"
            );
        }
        // A flip inside an entry is caught by the checksum specifically.
        let mut corrupt = bytes.clone();
        corrupt[9] ^= 0x10;
        assert_eq!(Context::decode_opaque(&corrupt), Err(DecodeError::Checksum));
    }

    #[test]
    fn foreign_and_future_bytes_are_rejected() {
        assert_eq!(
            Context::decode_opaque(b"hello world, not a context"),
            Err(DecodeError::Foreign)
        );
        assert_eq!(Context::decode_opaque(b"X"), Err(DecodeError::Foreign));
        assert_eq!(Context::decode_opaque(b"R"), Err(DecodeError::Truncated));
        // A causal state is not a context.
        let state = crate::causal::CausalState::new().to_bytes();
        assert_eq!(Context::decode_opaque(&state), Err(DecodeError::Foreign));
        let mut future = context(&[(1, 1)]).to_opaque();
        future[2] = 2;
        assert_eq!(
            Context::decode_opaque(&future),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let mut trailing = context(&[(1, 1)]).to_opaque();
        trailing.push(0);
        assert_eq!(
            Context::decode_opaque(&trailing),
            Err(DecodeError::TrailingBytes)
        );
    }

    /// Re-seals `bytes` with a correct checksum, so the checks behind it are reachable.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.truncate(bytes.len() - CRC_BYTES);
        codec::append_crc(&mut bytes, 0);
        bytes
    }

    #[test]
    fn non_canonical_contexts_with_valid_checksums_are_rejected() {
        let unsorted = reseal(
            Context {
                entries: smallvec![(Actor(5), 1), (Actor(1), 1)],
            }
            .to_opaque(),
        );
        assert_eq!(
            Context::decode_opaque(&unsorted),
            Err(DecodeError::UnsortedActors)
        );
        let repeated = Context {
            entries: smallvec![(Actor(5), 1), (Actor(5), 2)],
        }
        .to_opaque();
        assert_eq!(
            Context::decode_opaque(&repeated),
            Err(DecodeError::UnsortedActors)
        );
        let zero = Context {
            entries: smallvec![(Actor(5), 0)],
        }
        .to_opaque();
        assert_eq!(Context::decode_opaque(&zero), Err(DecodeError::ZeroCounter));
        let framed_empty = reseal(b"RC\x01\x00\x00\0\0\0\0".to_vec());
        assert_eq!(
            Context::decode_opaque(&framed_empty),
            Err(DecodeError::EmptyFramedContext)
        );
    }

    #[test]
    fn too_many_actors_is_refused_before_reading_entries() {
        let count = u16::try_from(CAUSAL_ACTORS_MAX + 1).unwrap();
        let mut bytes = b"RC\x01".to_vec();
        bytes.extend_from_slice(&count.to_le_bytes());
        assert_eq!(
            Context::decode_opaque(&bytes),
            Err(DecodeError::TooManyActors)
        );
    }
}
