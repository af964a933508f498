//! Pieces shared by the context and causal-state byte formats (`wire-spec/causal.md`): the
//! framing checks (magic, version, trailing CRC32C), a bounds-checked little-endian reader,
//! and the walk of two actor-sorted sequences that update, merge and decoding all use.

use std::iter::Peekable;

use super::{Actor, DecodeError};

/// The one format version of both encodings this build writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Bytes of the trailing CRC32C.
pub(crate) const CRC_BYTES: usize = 4;

/// Checks the magic and the version, in that order, so foreign bytes are reported as such
/// even when they are short.
pub(crate) fn check_magic_version(bytes: &[u8], magic: [u8; 2]) -> Result<(), DecodeError> {
    let seen = bytes.len().min(magic.len());
    if bytes.get(..seen) != magic.get(..seen) {
        return Err(DecodeError::Foreign);
    }
    match bytes.get(magic.len()) {
        None => Err(DecodeError::Truncated),
        Some(&FORMAT_VERSION) => Ok(()),
        Some(&other) => Err(DecodeError::UnsupportedVersion(other)),
    }
}

/// Compares the announced total length with what arrived, so truncation and trailing
/// garbage get their own errors before the checksum would call both "corrupt".
pub(crate) fn check_length(bytes: &[u8], announced: usize) -> Result<(), DecodeError> {
    match bytes.len().cmp(&announced) {
        std::cmp::Ordering::Less => Err(DecodeError::Truncated),
        std::cmp::Ordering::Greater => Err(DecodeError::TrailingBytes),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Verifies the trailing CRC32C (over every byte before it) and returns those bytes.
pub(crate) fn verify_crc(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let Some((covered, stored)) = bytes.split_last_chunk::<CRC_BYTES>() else {
        return Err(DecodeError::Truncated);
    };
    if crc32c::crc32c(covered) != u32::from_le_bytes(*stored) {
        return Err(DecodeError::Checksum);
    }
    Ok(covered)
}

/// Appends the CRC32C of `out[start..]`, closing an encoding begun at `start`.
pub(crate) fn append_crc(out: &mut Vec<u8>, start: usize) {
    let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
}

/// A little-endian reader over untrusted bytes: every read is bounds-checked and `None`
/// at the end, never a panic.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let head = self.rest.get(..len)?;
        self.rest = self.rest.get(len..)?;
        Some(head)
    }
}

/// Reads one (actor, counter) pair as both formats lay it out, checking that actors are
/// strictly increasing after `previous` and that the counter is not zero. Running out of
/// bytes is `BadLength`: callers have already matched the total length and the checksum.
pub(crate) fn read_actor_counter(
    reader: &mut Reader<'_>,
    previous: Option<Actor>,
) -> Result<(Actor, u64), DecodeError> {
    let actor = Actor(reader.u64().ok_or(DecodeError::BadLength)?);
    let counter = reader.u64().ok_or(DecodeError::BadLength)?;
    if previous.is_some_and(|previous| previous >= actor) {
        return Err(DecodeError::UnsortedActors);
    }
    if counter == 0 {
        return Err(DecodeError::ZeroCounter);
    }
    Ok((actor, counter))
}

/// Something ordered by the actor it belongs to (a version-vector entry, a state entry).
pub(crate) trait ByActor {
    fn actor(&self) -> Actor;
}

impl ByActor for (Actor, u64) {
    fn actor(&self) -> Actor {
        self.0
    }
}

impl<T: ByActor> ByActor for &T {
    fn actor(&self) -> Actor {
        (**self).actor()
    }
}

impl<T: ByActor> ByActor for &mut T {
    fn actor(&self) -> Actor {
        (**self).actor()
    }
}

/// One step of [`join_by_actor`]: an actor present on the left only, the right only, or
/// both.
pub(crate) enum Side<L, R> {
    Left(L),
    Right(R),
    Both(L, R),
}

/// Walks two sequences sorted by strictly increasing actor in one pass, pairing equal
/// actors. Version vectors and states are a handful of entries, so this beats any map.
pub(crate) fn join_by_actor<L, R>(left: L, right: R) -> JoinByActor<L, R>
where
    L: Iterator,
    R: Iterator,
    L::Item: ByActor,
    R::Item: ByActor,
{
    JoinByActor {
        left: left.peekable(),
        right: right.peekable(),
    }
}

/// The iterator of [`join_by_actor`].
pub(crate) struct JoinByActor<L: Iterator, R: Iterator> {
    left: Peekable<L>,
    right: Peekable<R>,
}

impl<L, R> Iterator for JoinByActor<L, R>
where
    L: Iterator,
    R: Iterator,
    L::Item: ByActor,
    R::Item: ByActor,
{
    type Item = Side<L::Item, R::Item>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.left.peek(), self.right.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(left), Some(right)) => left.actor().cmp(&right.actor()),
        };
        match order {
            std::cmp::Ordering::Less => self.left.next().map(Side::Left),
            std::cmp::Ordering::Greater => self.right.next().map(Side::Right),
            std::cmp::Ordering::Equal => match (self.left.next(), self.right.next()) {
                (Some(left), Some(right)) => Some(Side::Both(left, right)),
                _ => None,
            },
        }
    }
}
