//! Causality: dotted version vector sets (DVVSet) decide which writes of a key are siblings.
//!
//! Place in the flow: a client reads a key and gets the live values plus an opaque
//! [`Context`]; its next write carries that context back. The coordinating replica calls
//! [`CausalState::update`], which gives the new value a fresh [`Dot`] of the replica's own
//! [`Actor`] and drops exactly the siblings the context covers. Replicas exchange whole
//! [`CausalState`]s (replication, hinted handoff, read repair, anti-entropy) and combine them
//! with [`CausalState::merge`]. The store keeps the encoded state as an opaque byte string;
//! the wire carries encoded states and contexts as opaque byte strings too. Both byte
//! formats are specified in `wire-spec/causal.md`.
//!
//! The model is the DVVSet of Almeida et al., "Scalable and Accurate Causality Tracking for
//! Eventually Consistent Stores", as used by Riak 2.0: one version vector per key and
//! replica, plus a dot per sibling, so that
//! - sequential writes that pass the context they read never create siblings, whichever
//!   replica coordinates them;
//! - concurrent writes always surface as siblings, and a sibling disappears only when a
//!   later write's context covered it;
//! - clocks name replica incarnations ([`Actor`]s), never clients, so they stay as small as
//!   the number of replicas that ever coordinated a write of the key.
//!
//! What this module deliberately does not do: no I/O, no clock, no logging. Where a caller
//! must act (too many siblings, an oversized value) it gets a typed value back.

mod codec;
mod context;
mod state;
#[cfg(test)]
mod tests;

pub use context::Context;
pub use state::{CausalState, ReadView, Updated};

use crate::constants::{SIBLINGS_MAX, SIBLINGS_WARN};

/// A replica incarnation that coordinates writes: the store's `incarnation()`.
///
/// It is random per store incarnation and renewed whenever a store starts without its data,
/// so an actor never issues the same counter twice. Reusing an actor after data loss is the
/// Riak "doomstone" bug (basho/riak_kv#679): the replica would hand out counters other
/// replicas already saw, and their newer writes would silently shadow the new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor(pub u64);

/// The identity of one write: the actor that coordinated it and that actor's counter.
///
/// Counters start at 1. Two siblings never share a dot, because an actor never reuses a
/// counter (see [`Actor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The coordinating replica incarnation.
    pub actor: Actor,
    /// The actor's event counter, from 1.
    pub counter: u64,
}

/// The value of one sibling: the bytes a client put, or a tombstone a client's delete left.
///
/// A delete is a write like any other (it has a dot and supersedes what its context saw);
/// the tombstone stays until a later write covers it or the cluster purges it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// A value a client put. May be empty; an empty value is not a tombstone.
    Bytes(Vec<u8>),
    /// A delete.
    Tombstone,
}

impl Value {
    /// The bytes of a live value, `None` for a tombstone.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(bytes) => Some(bytes),
            Value::Tombstone => None,
        }
    }

    /// Whether this sibling is a delete.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Value::Tombstone)
    }
}

/// How many siblings a key may carry before a warning, and before updates are refused.
///
/// The defaults come from [`crate::constants`]. A deployment may lower them; the hard
/// maximum can never be raised past [`SIBLINGS_MAX`], because that is what the decoder
/// accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiblingLimits {
    warn: usize,
    max: usize,
}

impl SiblingLimits {
    /// Limits from a warning threshold and a hard maximum; `max` is clamped to
    /// [`SIBLINGS_MAX`] and to at least 1 (a write must be able to land), `warn` to `max`.
    pub fn new(warn: usize, max: usize) -> Self {
        let max = max.clamp(1, SIBLINGS_MAX);
        SiblingLimits {
            warn: warn.min(max),
            max,
        }
    }

    /// Siblings above this count set [`SiblingReport::warn`].
    pub fn warn(&self) -> usize {
        self.warn
    }

    /// Siblings above this count are refused with [`CausalError::TooManySiblings`].
    pub fn max(&self) -> usize {
        self.max
    }

    fn report(&self, siblings: usize) -> Result<SiblingReport, CausalError> {
        if siblings > self.max {
            return Err(CausalError::TooManySiblings {
                siblings,
                max: self.max,
            });
        }
        Ok(SiblingReport {
            siblings,
            warn: siblings > self.warn,
        })
    }
}

impl Default for SiblingLimits {
    fn default() -> Self {
        SiblingLimits::new(SIBLINGS_WARN, SIBLINGS_MAX)
    }
}

/// How many siblings a key has after an update or a merge, and whether that is worth a
/// warning in the caller's log (Riak's "too many siblings" warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiblingReport {
    /// Siblings (live values and tombstones) the key now has.
    pub siblings: usize,
    /// The count is above the warning threshold.
    pub warn: bool,
}

/// Why an update or a merge was refused. The state is left unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CausalError {
    /// The result would carry more siblings than allowed. Nothing is dropped: the caller
    /// reports the refusal (the client must resolve siblings by writing with a context).
    #[error("too many siblings: {siblings} would exceed the maximum of {max}")]
    TooManySiblings {
        /// Siblings the result would have had.
        siblings: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The result would name more actors than [`crate::constants::CAUSAL_ACTORS_MAX`].
    #[error("too many actors: {actors} would exceed the maximum of {max}")]
    TooManyActors {
        /// Actors the result would have named.
        actors: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The value is larger than [`crate::constants::VALUE_BYTES_MAX`].
    #[error("value of {bytes} bytes is too large")]
    ValueTooLarge {
        /// The value's length.
        bytes: usize,
    },
    /// An actor's counter is at `u64::MAX` (only a forged state can get there).
    #[error("an actor's counter would overflow")]
    CounterOverflow,
}

/// Why bytes are not a valid context or causal state. Every malformed input maps to one
/// of these; decoding never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not start with the format's magic: not a Rotor context or causal state
    /// (or a state passed where a context was expected, and the reverse).
    #[error("foreign bytes: wrong magic")]
    Foreign,
    /// A format version this build does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Fewer bytes than the header announces.
    #[error("truncated")]
    Truncated,
    /// More bytes than the header announces.
    #[error("trailing bytes after the end")]
    TrailingBytes,
    /// The CRC32C does not match: the bytes were corrupted.
    #[error("checksum mismatch")]
    Checksum,
    /// A length field is impossible, or the content disagrees with it.
    #[error("inconsistent length")]
    BadLength,
    /// More actors than [`crate::constants::CAUSAL_ACTORS_MAX`].
    #[error("too many actors")]
    TooManyActors,
    /// More siblings than [`SIBLINGS_MAX`].
    #[error("too many siblings")]
    TooManySiblings,
    /// A value larger than [`crate::constants::VALUE_BYTES_MAX`].
    #[error("value too large")]
    ValueTooLarge,
    /// Actors are not in strictly increasing order (unsorted or repeated).
    #[error("actors not strictly increasing")]
    UnsortedActors,
    /// A counter of zero (counters start at 1).
    #[error("zero counter")]
    ZeroCounter,
    /// An actor holds more siblings than its counter has events.
    #[error("more siblings than events for an actor")]
    SiblingsAboveCounter,
    /// A sibling kind byte other than tombstone (0) or bytes (1).
    #[error("unknown sibling kind {0}")]
    BadValueKind(u8),
    /// A framed context with no entries: the empty context is encoded as zero bytes.
    #[error("empty context must be encoded as zero bytes")]
    EmptyFramedContext,
}
