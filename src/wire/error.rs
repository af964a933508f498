//! What can go wrong with a frame ([`Error`], local to this codec) and what a server tells a
//! client went wrong ([`ErrorCode`], the stable numbers carried by an `ERROR` reply).

use std::fmt;

/// Why bytes are not a valid frame, or why a message cannot be encoded.
///
/// Small and `Copy` so decoding never allocates to fail. Incomplete input is not an error:
/// [`decode`](super::decode) reports it as [`Decoded::Incomplete`](super::Decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The first four bytes are not `ROTR`: not this protocol.
    BadMagic,
    /// The header's version is not one this codec speaks (only 1).
    UnsupportedVersion,
    /// The header's opcode names no message.
    UnknownOpcode,
    /// A header flag bit that version 1 reserves is set.
    ReservedBits,
    /// The header announces a body over `FRAME_BODY_BYTES_MAX`, or an encoded body would
    /// exceed it.
    FrameTooLarge,
    /// A field runs past the end of the body.
    Truncated,
    /// The body has bytes after its last field.
    TrailingBytes,
    /// A byte string (key, value, context, state, text) is longer than its limit.
    TooLarge,
    /// A list has more items than its limit.
    TooMany,
    /// An enum, boolean or presence byte holds a number the protocol does not define.
    InvalidValue,
    /// A text field is not UTF-8.
    InvalidUtf8,
    /// Fields contradict each other (e.g. a partition owner names a node not listed).
    Inconsistent,
}

impl Error {
    /// The code an `ERROR` reply to the offending frame carries.
    pub fn code(self) -> ErrorCode {
        match self {
            Error::UnsupportedVersion => ErrorCode::UnsupportedVersion,
            Error::UnknownOpcode => ErrorCode::UnknownOpcode,
            Error::FrameTooLarge | Error::TooLarge | Error::TooMany => ErrorCode::TooLarge,
            Error::BadMagic
            | Error::ReservedBits
            | Error::Truncated
            | Error::TrailingBytes
            | Error::InvalidValue
            | Error::InvalidUtf8
            | Error::Inconsistent => ErrorCode::Malformed,
        }
    }

    /// A short explanation, suitable for the message of an `ERROR` reply.
    pub fn describe(self) -> &'static str {
        match self {
            Error::BadMagic => "not a Rotor frame (bad magic)",
            Error::UnsupportedVersion => "unsupported protocol version",
            Error::UnknownOpcode => "unknown opcode",
            Error::ReservedBits => "reserved header flag set",
            Error::FrameTooLarge => "frame body over the frame limit",
            Error::Truncated => "field runs past the end of the body",
            Error::TrailingBytes => "bytes after the last field",
            Error::TooLarge => "byte string over its limit",
            Error::TooMany => "list over its limit",
            Error::InvalidValue => "undefined enum or boolean value",
            Error::InvalidUtf8 => "text is not UTF-8",
            Error::Inconsistent => "fields contradict each other",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for Error {}

wire_enum! {
    /// The stable error codes of `ERROR` replies (wire-spec/README.md, "Error codes").
    ///
    /// Numbers never change meaning; new codes come with a new protocol version or feature
    /// bit, so a version-1 peer only ever receives these.
    ErrorCode: u16 {
        /// The frame could not be parsed. The connection is closed.
        Malformed = 1,
        /// The frame's protocol version is not supported. The connection is closed.
        UnsupportedVersion = 2,
        /// The opcode names no message this server knows.
        UnknownOpcode = 3,
        /// The first frame on a connection was not HELLO, or HELLO asked for a role this
        /// endpoint does not serve. The connection is closed.
        HandshakeRequired = 4,
        /// HELLO named another cluster. The connection is closed.
        WrongCluster = 5,
        /// A key, value, context, list or the reply would exceed its limit.
        TooLarge = 16,
        /// A request field is out of range (e.g. R greater than N, N over the maximum).
        InvalidArgument = 17,
        /// The context is corrupt, truncated or from another system.
        BadContext = 18,
        /// The write would give the key more than `SIBLINGS_MAX` siblings; resolve them
        /// (write with a context that covers them) first.
        TooManySiblings = 19,
        /// The message is valid but this endpoint does not serve it (e.g. a client sent a
        /// peer message, or the feature is not built yet).
        Unsupported = 20,
        /// Refused before any work because a queue or buffer is full. Not applied.
        Overloaded = 32,
        /// Fewer replicas were reachable than the request needs; `answered` of `needed`.
        /// Refused before any replica applied it.
        Unavailable = 33,
        /// A read's deadline passed before enough replicas answered (`answered` of
        /// `needed`). Writes report `Indeterminate` instead.
        Timeout = 34,
        /// A write may or may not have been applied: some replicas may hold it (`answered`
        /// acknowledged, `needed` were required) but the quorum was not confirmed.
        Indeterminate = 35,
        /// The node is shutting down and takes no new requests. Not applied.
        ShuttingDown = 36,
        /// The request reached a shard that does not own the partition. Not applied.
        WrongShard = 37,
        /// This node holds no replica of the partition in its ring (`ring_epoch` says which
        /// ring decided). Not applied.
        NotOwner = 38,
        /// The local store failed (I/O error, disk full). For a write the outcome is
        /// unknown, as with `Indeterminate`.
        StoreFailed = 39,
        /// An unexpected server fault. For a write the outcome is unknown.
        Internal = 40,
        /// A membership plan was refused (the message says why: a node unknown or already
        /// a member, too few nodes left, nothing staged, ...). Nothing changed.
        PlanRefused = 41,
        /// A commit, or a change of the node's own membership, was refused because a
        /// committed change is still being carried out. Nothing changed.
        ChangePending = 42,
    }
}

impl ErrorCode {
    /// Whether the failed request was certainly not applied, so sending it again cannot
    /// apply it twice. `false` means the outcome of a write is unknown or the same request
    /// will fail again.
    pub fn retry_safe(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded
                | ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
                | ErrorCode::WrongShard
                | ErrorCode::NotOwner
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
