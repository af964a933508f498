//! Field layouts: how each kind of value sits in a frame body.
//!
//! Every body is a sequence of fields, and every field kind is read, written and generated
//! (for fuzzing and property tests) by one [`Field`] impl, so each layout is stated once and
//! the reader and writer cannot drift apart. Reading never panics: every slice is taken with
//! checked splits, and every length is compared with its limit before the bytes it announces
//! are looked at or any list is allocated.

use std::fmt;
use std::ops::Deref;

use super::Error;

/// A length-prefixed list in a message: borrowed from the sender's own data when encoding
/// (so building a reply allocates no vector), owned after decoding.
///
/// Unlike `Cow<[T]>` it is covariant, so a `Message<'static>` can be used where a
/// `Message<'a>` is expected. Equality compares the items, whichever way they are held.
#[derive(Clone)]
pub enum List<'a, T> {
    /// Items borrowed from the caller.
    Borrowed(&'a [T]),
    /// Items decoded from a frame.
    Owned(Vec<T>),
}

impl<T> Deref for List<'_, T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            List::Borrowed(items) => items,
            List::Owned(items) => items,
        }
    }
}

impl<'a, T> From<&'a [T]> for List<'a, T> {
    fn from(items: &'a [T]) -> Self {
        List::Borrowed(items)
    }
}

impl<'a, T, const N: usize> From<&'a [T; N]> for List<'a, T> {
    fn from(items: &'a [T; N]) -> Self {
        List::Borrowed(items)
    }
}

impl<T> From<Vec<T>> for List<'_, T> {
    fn from(items: Vec<T>) -> Self {
        List::Owned(items)
    }
}

impl<T: PartialEq> PartialEq for List<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Eq> Eq for List<'_, T> {}

impl<T: fmt::Debug> fmt::Debug for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One kind of value in a frame body.
pub(crate) trait Field<'a>: Sized {
    /// What bounds a value of this kind: `()` for fixed-size values, a byte count for
    /// strings, a count and the items' own limit for lists.
    type Limit: Copy;
    /// Fewest bytes an encoded value occupies; lets a list count be checked against the
    /// bytes left before anything is allocated for it.
    const MIN_BYTES: usize;
    /// Reads one value, borrowing byte strings from the body.
    fn read(r: &mut Reader<'a>, limit: Self::Limit) -> Result<Self, Error>;
    /// Appends the value; refuses values the reader would refuse.
    fn write(&self, out: &mut Vec<u8>, limit: Self::Limit) -> Result<(), Error>;
    /// Builds a small valid value from fuzzer or property-test bytes.
    fn arbitrary(e: &mut Entropy<'a>, limit: Self::Limit) -> Self;
}

/// A cursor over one frame body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    /// Test builds record where each field ends, so the spec's vectors can show the bytes
    /// field by field.
    #[cfg(test)]
    pub(crate) marks: Vec<(usize, &'static str, &'static str)>,
    #[cfg(test)]
    body_len: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    #[inline]
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            #[cfg(test)]
            marks: Vec::new(),
            #[cfg(test)]
            body_len: buf.len(),
        }
    }

    /// Records that the field `label` of type `kind` ends here (test builds only).
    #[cfg(test)]
    pub(crate) fn mark(&mut self, label: &'static str, kind: &'static str) {
        let at = self.body_len - self.buf.len();
        self.marks.push((at, label, kind));
    }

    /// Succeeds only if every byte was read: a body longer than its fields is malformed,
    /// which keeps each message's encoding unique.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes)
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(Error::Truncated)?;
        self.buf = tail;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let (head, tail) = self.buf.split_first_chunk::<N>().ok_or(Error::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }
}

/// A source of choices for building arbitrary messages from fuzzer or proptest bytes.
///
/// It never fails: once the bytes run out every choice is zero, so any input builds some
/// message, and similar inputs build similar messages (which helps fuzzers and shrinking).
#[derive(Debug)]
pub(crate) struct Entropy<'a> {
    data: &'a [u8],
}

impl<'a> Entropy<'a> {
    /// Choices drawn from `data`, front to back.
    #[inline]
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Entropy { data }
    }

    /// The next byte, or 0 once exhausted.
    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A small number below `bound.max(1)`: lengths and counts stay small so the generated
    /// messages exercise structure rather than bulk.
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        usize::from(self.byte()) % bound.max(1)
    }

    #[inline]
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }
}

// ---------------------------------------------------------------------------------------
// Fixed-width integers: little-endian, no alignment.

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl<'a> Field<'a> for $t {
            type Limit = ();
            const MIN_BYTES: usize = size_of::<$t>();
            #[inline]
            fn read(r: &mut Reader<'a>, _: ()) -> Result<Self, Error> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
            #[inline]
            fn write(&self, out: &mut Vec<u8>, _: ()) -> Result<(), Error> {
                out.extend_from_slice(&self.to_le_bytes());
                Ok(())
            }
            fn arbitrary(e: &mut Entropy<'a>, _: ()) -> Self {
                let mut bytes = [0u8; size_of::<$t>()];
                bytes.iter_mut().for_each(|b| *b = e.byte());
                <$t>::from_le_bytes(bytes)
            }
        }
    )*};
}

int_field!(u8, u16, u32, u64);

/// A boolean is one byte, 0 or 1; anything else is `InvalidValue`, so it has one encoding.
impl<'a> Field<'a> for bool {
    type Limit = ();
    const MIN_BYTES: usize = 1;
    #[inline]
    fn read(r: &mut Reader<'a>, _: ()) -> Result<Self, Error> {
        match u8::read(r, ())? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::InvalidValue),
        }
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>, _: ()) -> Result<(), Error> {
        u8::from(*self).write(out, ())
    }
    fn arbitrary(e: &mut Entropy<'a>, _: ()) -> Self {
        e.byte() & 1 == 1
    }
}

// ---------------------------------------------------------------------------------------
// Byte strings and text: a u32 length, then the bytes.

/// A byte string: u32 length (at most the limit, else `TooLarge`), then the bytes.
impl<'a> Field<'a> for &'a [u8] {
    type Limit = usize;
    const MIN_BYTES: usize = 4;
    #[inline]
    fn read(r: &mut Reader<'a>, max: usize) -> Result<Self, Error> {
        let len = read_len(r, max, Error::TooLarge)?;
        r.take(len)
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>, max: usize) -> Result<(), Error> {
        write_len(out, self.len(), max, Error::TooLarge)?;
        out.extend_from_slice(self);
        Ok(())
    }
    fn arbitrary(e: &mut Entropy<'a>, max: usize) -> Self {
        let len = e.below(24).min(max);
        e.take(len)
    }
}

/// Text: a byte string that must be UTF-8 (else `InvalidUtf8`).
impl<'a> Field<'a> for &'a str {
    type Limit = usize;
    const MIN_BYTES: usize = 4;
    #[inline]
    fn read(r: &mut Reader<'a>, max: usize) -> Result<Self, Error> {
        let bytes = <&[u8]>::read(r, max)?;
        std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>, max: usize) -> Result<(), Error> {
        self.as_bytes().write(out, max)
    }
    fn arbitrary(e: &mut Entropy<'a>, max: usize) -> Self {
        let bytes = <&[u8]>::arbitrary(e, max);
        match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => bytes
                .get(..err.valid_up_to())
                .and_then(|valid| std::str::from_utf8(valid).ok())
                .unwrap_or(""),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Optional values and lists.

/// An optional value: one byte, 0 (absent, nothing follows) or 1 (the value follows).
impl<'a, T: Field<'a>> Field<'a> for Option<T> {
    type Limit = T::Limit;
    const MIN_BYTES: usize = 1;
    #[inline]
    fn read(r: &mut Reader<'a>, limit: T::Limit) -> Result<Self, Error> {
        let present = bool::read(r, ())?;
        #[cfg(test)]
        r.mark("present", "bool");
        if present {
            Ok(Some(T::read(r, limit)?))
        } else {
            Ok(None)
        }
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>, limit: T::Limit) -> Result<(), Error> {
        self.is_some().write(out, ())?;
        match self {
            Some(value) => value.write(out, limit),
            None => Ok(()),
        }
    }
    fn arbitrary(e: &mut Entropy<'a>, limit: T::Limit) -> Self {
        bool::arbitrary(e, ()).then(|| T::arbitrary(e, limit))
    }
}

/// A list: u32 count (at most the limit, else `TooMany`), then the items back to back.
///
/// Decoding allocates the item vector only after the count passed its limit and the bytes
/// left can hold that many items, so a short frame cannot make the reader reserve much.
/// Encoding takes a borrowed slice, so a sender builds no vector of its own.
impl<'a, T: Field<'a> + Clone> Field<'a> for List<'a, T> {
    type Limit = (usize, T::Limit);
    const MIN_BYTES: usize = 4;
    #[inline]
    fn read(r: &mut Reader<'a>, (max, item_limit): Self::Limit) -> Result<Self, Error> {
        let count = read_len(r, max, Error::TooMany)?;
        #[cfg(test)]
        r.mark("count", "count");
        if count.saturating_mul(T::MIN_BYTES.max(1)) > r.buf.len() {
            return Err(Error::Truncated);
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::read(r, item_limit)?);
        }
        Ok(List::Owned(items))
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>, (max, item_limit): Self::Limit) -> Result<(), Error> {
        write_len(out, self.len(), max, Error::TooMany)?;
        self.iter().try_for_each(|item| item.write(out, item_limit))
    }
    fn arbitrary(e: &mut Entropy<'a>, (max, item_limit): Self::Limit) -> Self {
        let count = e.below(4).min(max);
        List::Owned((0..count).map(|_| T::arbitrary(e, item_limit)).collect())
    }
}

#[inline]
fn read_len(r: &mut Reader<'_>, max: usize, over: Error) -> Result<usize, Error> {
    let len = usize::try_from(u32::read(r, ())?).map_err(|_| over)?;
    if len > max {
        return Err(over);
    }
    Ok(len)
}

#[inline]
fn write_len(out: &mut Vec<u8>, len: usize, max: usize, over: Error) -> Result<(), Error> {
    if len > max {
        return Err(over);
    }
    u32::try_from(len).map_err(|_| over)?.write(out, ())
}
