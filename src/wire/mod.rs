//! The wire protocol: frames and messages, encoded and decoded; pure, no I/O.
//!
//! This is the first thing a request meets: the server hands each connection's receive
//! buffer to [`decode`], which returns one [`Frame`] borrowing from the buffer (keys and
//! values are slices of it), reports [`Decoded::Incomplete`] when more bytes are needed, or a
//! [`FrameError`] saying what was wrong and whether the connection can go on. Replies, peer
//! traffic and the client use [`encode`], which appends to a caller's buffer. The byte
//! layout is specified in `wire-spec/README.md`, with test vectors in `wire-spec/vectors/`.
//!
//! Nothing here panics on any input: slices are taken with checked splits, every length is
//! compared with its limit from [`crate::constants`] before use, and every malformed input
//! is an [`Error`] value.

#[macro_use]
mod macros;
mod error;
mod field;
mod message;

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::constants::FRAME_BODY_BYTES_MAX;

pub use error::{Error, ErrorCode};
pub use field::List;
pub use message::*;

/// The four bytes every frame starts with: ASCII `ROTR`.
pub const MAGIC: [u8; 4] = *b"ROTR";

/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;

/// Size of the fixed frame header, in bytes.
pub const HEADER_BYTES: usize = 16;

/// The fixed 16-byte header in front of every frame body; all integers little-endian.
///
/// Read in place from the receive buffer (no copy, no alignment needed).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// Protocol version of this frame ([`VERSION`]).
    pub version: u8,
    /// Which message the body holds ([`Opcode`]).
    pub opcode: u8,
    /// Reserved for frame-level options of later versions; must be 0 in version 1.
    pub flags: U16,
    /// Chosen by the requester, echoed by the reply: lets requests be pipelined and
    /// answered out of order.
    pub request_id: U32,
    /// Length of the body that follows, at most `FRAME_BODY_BYTES_MAX`.
    pub body_len: U32,
}

const _: () = assert!(size_of::<Header>() == HEADER_BYTES);

/// One decoded frame: the request id and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header's request id.
    pub request_id: u32,
    /// The body.
    pub message: Message<'a>,
}

/// What [`decode`] found at the front of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid frame occupying the first `consumed` bytes.
    Frame {
        /// The frame.
        frame: Frame<'a>,
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
    /// The buffer holds a valid but incomplete frame prefix.
    Incomplete {
        /// At least this many more bytes are needed; exact once the header has arrived.
        needed: usize,
    },
}

/// A frame that is not valid, and what the connection can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// What was wrong.
    pub error: Error,
    /// The frame's request id if its header was readable, so the `ERROR` reply can name it.
    pub request_id: Option<u32>,
    /// Bytes the bad frame occupies, when its boundary is known and all of it is in the
    /// buffer: the connection may drop them and go on. `None`: the stream cannot be
    /// resynchronised and the connection must close.
    pub skip: Option<usize>,
}

impl FrameError {
    /// Whether the byte stream is lost (bad magic, unknown version, oversized length).
    pub fn must_close(&self) -> bool {
        self.skip.is_none()
    }

    /// The `ERROR` frame that answers the bad frame: its request id (0 if unreadable), the
    /// matching code and a short explanation.
    pub fn reply(&self) -> Frame<'static> {
        Frame {
            request_id: self.request_id.unwrap_or(0),
            message: Message::Error(ErrorReply {
                code: self.error.code(),
                answered: 0,
                needed: 0,
                ring_epoch: 0,
                message: self.error.describe(),
            }),
        }
    }
}

/// Decodes the frame at the front of `buf`: the streaming entry point for receive buffers.
///
/// The header is validated as soon as it has arrived, so a stranger's bytes or an oversized
/// length are refused before any body is buffered; a bad magic is refused from its first
/// wrong byte.
#[inline]
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, FrameError> {
    let fatal = |error| FrameError {
        error,
        request_id: None,
        skip: None,
    };
    let Ok((header, rest)) = Header::ref_from_prefix(buf) else {
        let seen = buf.len().min(MAGIC.len());
        if buf.get(..seen) != MAGIC.get(..seen) {
            return Err(fatal(Error::BadMagic));
        }
        return Ok(Decoded::Incomplete {
            needed: HEADER_BYTES.saturating_sub(buf.len()),
        });
    };
    if header.magic != MAGIC {
        return Err(fatal(Error::BadMagic));
    }
    if header.version != VERSION {
        return Err(fatal(Error::UnsupportedVersion));
    }
    let request_id = header.request_id.get();
    let body_len = match usize::try_from(header.body_len.get()) {
        Ok(len) if len <= FRAME_BODY_BYTES_MAX => len,
        _ => {
            return Err(FrameError {
                request_id: Some(request_id),
                ..fatal(Error::FrameTooLarge)
            })
        }
    };
    let Some(body) = rest.get(..body_len) else {
        return Ok(Decoded::Incomplete {
            needed: body_len.saturating_sub(rest.len()),
        });
    };
    let consumed = HEADER_BYTES.saturating_add(body_len);
    let message = decode_message(header, body).map_err(|error| FrameError {
        error,
        request_id: Some(request_id),
        skip: Some(consumed),
    })?;
    Ok(Decoded::Frame {
        frame: Frame {
            request_id,
            message,
        },
        consumed,
    })
}

/// Appends one frame carrying `message` to `out`.
///
/// Refuses (leaving `out` as it was) any message the decoder would refuse: a field over its
/// limit, an inconsistent topology, or a body over `FRAME_BODY_BYTES_MAX`.
pub fn encode(request_id: u32, message: &Message<'_>, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        opcode: message.opcode().to_wire(),
        flags: U16::new(0),
        request_id: U32::new(request_id),
        body_len: U32::new(0),
    };
    out.extend_from_slice(header.as_bytes());
    let written = message.write_body(out).and_then(|()| {
        let body_len = out.len().saturating_sub(start + HEADER_BYTES);
        if body_len > FRAME_BODY_BYTES_MAX {
            return Err(Error::FrameTooLarge);
        }
        let body_len = u32::try_from(body_len).map_err(|_| Error::FrameTooLarge)?;
        let header = out
            .get_mut(start..start + HEADER_BYTES)
            .and_then(|bytes| Header::mut_from_bytes(bytes).ok())
            .ok_or(Error::FrameTooLarge)?;
        header.body_len = U32::new(body_len);
        Ok(())
    });
    if written.is_err() {
        out.truncate(start);
    }
    written
}

impl Frame<'_> {
    /// Appends this frame to `out`; see [`encode`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        encode(self.request_id, &self.message, out)
    }
}

impl<'a> Frame<'a> {
    /// Builds a small valid frame from arbitrary bytes, for fuzzing and property tests:
    /// every opcode is reachable and every field is within its limits. It may still fail to
    /// encode where fields must agree (a topology's owners must name listed nodes).
    pub fn arbitrary(data: &'a [u8]) -> Frame<'a> {
        let mut e = field::Entropy::new(data);
        let all = Opcode::ALL;
        let opcode = all
            .get(e.below(all.len()))
            .copied()
            .unwrap_or(Opcode::Hello);
        let request_id = <u32 as field::Field>::arbitrary(&mut e, ());
        Frame {
            request_id,
            message: Message::arbitrary_body(opcode, &mut e),
        }
    }
}

/// Decodes a body whose header is already known to be complete and of version 1.
fn decode_message<'a>(header: &Header, body: &'a [u8]) -> Result<Message<'a>, Error> {
    let opcode = Opcode::from_wire(header.opcode).ok_or(Error::UnknownOpcode)?;
    if header.flags.get() != 0 {
        return Err(Error::ReservedBits);
    }
    Message::read_body(opcode, &mut field::Reader::new(body))
}

#[cfg(test)]
mod tests;
