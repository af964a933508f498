//! Errors of the store, one enum per kind of operation, with corruption kept apart from I/O.

use std::io;
use std::path::PathBuf;

/// Why [`Store::open`](super::Store::open) failed. Damaged data is not a reason: it is
/// skipped, counted and reported in the [`RecoveryReport`](super::RecoveryReport).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is outside the limits in `constants`.
    #[error("invalid store configuration: {0}")]
    Config(&'static str),
    /// The disk is full: the store could not create its first segment or meta file.
    #[error("no space left on device while opening the store at {0}")]
    NoSpace(PathBuf),
    /// The directory or a file in it could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why a write (put, drop, purge, hint, sync, compaction, checkpoint, close) failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The disk is full and the store needs a new segment. Reads are still served and
    /// writes succeed again once space is freed; nothing was written.
    #[error("no space left on device: writes are refused until space is freed (reads still work)")]
    NoSpace,
    /// An fsync failed just now. The kernel may have dropped the dirty pages, so the store
    /// refuses every later write (no retry-and-continue); reopen it to recover from disk.
    #[error("fsync failed, the store now refuses writes: {0}")]
    SyncFailed(#[source] io::Error),
    /// An earlier fsync failed; the store refuses writes until it is reopened.
    #[error("the store refuses writes after an earlier fsync failure; reopen it")]
    Poisoned,
    /// The key or value is over its limit, or the record cannot fit in one segment.
    #[error("record too large: {bytes} bytes (limit {max})")]
    TooLarge {
        /// Bytes asked for.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The hint area is at its byte quota; deliver or delete hints first.
    #[error("hint area full: {max} bytes of hints")]
    HintQuota {
        /// The quota.
        max: u64,
    },
    /// Another I/O error (creating a segment, writing a checkpoint); nothing was lost.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
}

/// Why a read failed: the record the index points at no longer checks out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The record's CRC or fields do not match: the bytes were damaged after they were
    /// written. Nothing of it is returned.
    #[error("corrupted record at segment {segment} offset {offset}")]
    Corrupted {
        /// Segment id.
        segment: u32,
        /// Offset in the segment.
        offset: u32,
    },
}

impl WriteError {
    /// Maps an error from creating a segment or writing a file: ENOSPC becomes `NoSpace`.
    pub(crate) fn from_io(e: io::Error) -> Self {
        if is_no_space(&e) {
            Self::NoSpace
        } else {
            Self::Io(e)
        }
    }
}

/// True for ENOSPC and EDQUOT (a quota is a full disk to us).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}
