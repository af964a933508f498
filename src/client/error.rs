//! What a client call can fail with: the transport, the protocol, or the node's own `ERROR`
//! reply with its stable code, and whether a write's outcome is unknown.

use std::io;

use crate::wire::ErrorCode;

/// Why a [`Client`](super::Client) call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be opened (refused, unreachable, or the connect timed out).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// An established connection failed or its read or write timed out. For a write that
    /// was already sent, `indeterminate` says the node may or may not have applied it.
    #[error("connection to {addr} failed: {source}{}", indeterminate_note(*.indeterminate))]
    Io {
        /// The peer.
        addr: String,
        /// What went wrong (`TimedOut`/`WouldBlock` for a read timeout).
        source: io::Error,
        /// Whether a write may have been applied.
        indeterminate: bool,
    },
    /// The node answered with `ERROR`.
    #[error("server error {code} ({}): {message}{}", code.to_wire(), indeterminate_note(*.indeterminate))]
    Server {
        /// The stable wire code.
        code: ErrorCode,
        /// The node's explanation (for people, not for parsing).
        message: String,
        /// Replicas that answered (UNAVAILABLE, TIMEOUT, INDETERMINATE), else 0.
        answered: u8,
        /// Replicas the request needed, else 0.
        needed: u8,
        /// The ring epoch the node routed by (WRONG_SHARD, NOT_OWNER), else 0.
        ring_epoch: u64,
        /// Whether this was a write whose outcome is unknown (INDETERMINATE, or a store or
        /// internal failure of a write).
        indeterminate: bool,
    },
    /// The node sent bytes that are not a valid reply to what was asked.
    #[error("protocol error from {addr}: {detail}")]
    Protocol {
        /// The peer.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// The request cannot be sent as given (over a wire limit, or an unusable topology).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The wire error code, if the node answered with `ERROR`.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a write may or may not have been applied: read the key before retrying it.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Self::Io { indeterminate, .. } | Self::Server { indeterminate, .. } => *indeterminate,
            _ => false,
        }
    }

    /// Whether the failure is about reaching the node (connect, I/O, timeout) rather than
    /// an answer from it.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Io { .. })
    }
}

fn indeterminate_note(indeterminate: bool) -> &'static str {
    if indeterminate {
        " (the write may or may not have been applied)"
    } else {
        ""
    }
}

/// Result of a client call.
pub type Result<T> = std::result::Result<T, ClientError>;
