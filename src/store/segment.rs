//! One segment file: preallocated, memory-mapped, appended to by its store and read by anyone
//! holding it. This file holds all of the store's `unsafe`.
//!
//! Invariant that makes the raw map sound: bytes below `published` never change again; only
//! the owning [`Store`](super::Store) writes, and only at or after `published`, then moves
//! `published` forward. Readers only ever get slices of `[0, published)`. The one exception,
//! zeroing a torn tail, takes `&mut self` during recovery, so no slice can be alive.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::MmapRaw;

use super::format::{encode_segment_header, SEGMENT_HEADER_BYTES};

/// A mapped segment file. Shared through `Arc` so that a record handed out stays readable
/// after compaction deleted the file (the mapping lives until the last `Arc` goes).
#[derive(Debug)]
pub struct Segment {
    id: u32,
    path: PathBuf,
    file: File,
    map: MmapRaw,
    /// End of the written, immutable part (see the module docs).
    published: AtomicU32,
}

impl Segment {
    /// Creates segment `id` at `path`: a new file preallocated to `bytes` with fallocate
    /// (so that a full disk is an `ENOSPC` here and never a `SIGBUS` on a later store into
    /// the map), mapped, with its header written.
    pub fn create(id: u32, path: &Path, bytes: u32) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(e) = fallocate(&file, bytes) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let map = MmapRaw::map_raw(&file)?;
        let seg = Segment {
            id,
            path: path.to_path_buf(),
            file,
            map,
            published: AtomicU32::new(0),
        };
        seg.append(&[&encode_segment_header(id)], SEGMENT_HEADER_BYTES);
        Ok(seg)
    }

    /// Maps an existing segment file, everything in it readable until recovery says where
    /// the written part ends ([`Segment::truncate`]). Files larger than `u32::MAX` bytes are
    /// refused (offsets are u32).
    pub fn open(id: u32, path: &Path) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l as usize >= SEGMENT_HEADER_BYTES)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "segment size out of range")
            })?;
        // Make sure every block is allocated: a file left sparse (copied, or created by
        // another tool) would otherwise turn a later store into a SIGBUS on a full disk.
        fallocate(&file, len)?;
        let map = MmapRaw::map_raw(&file)?;
        Ok(Segment {
            id,
            path: path.to_path_buf(),
            file,
            map,
            published: AtomicU32::new(len),
        })
    }

    /// The segment's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file (and map), in bytes.
    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// End of the written part.
    pub fn published(&self) -> usize {
        self.published.load(Ordering::Relaxed) as usize
    }

    /// The written, immutable part of the segment.
    pub fn bytes(&self) -> &[u8] {
        let len = self.published().min(self.map.len());
        // SAFETY: the map is `self.map.len()` bytes long, valid while `self` lives, and
        // `[0, published)` is never written again (module invariant), so a shared slice of
        // it never aliases a write. The file could still be changed by another process; the
        // store owns its directory and every record is CRC-checked before use.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), len) }
    }

    /// Appends `parts` back to back at `published`, then publishes `total` bytes (the parts
    /// plus zero padding, which preallocated space already holds). Only the owning store
    /// calls this, through `&mut Store`, after checking that `total` bytes fit.
    pub fn append(&self, parts: &[&[u8]], total: usize) {
        let start = self.published();
        assert!(
            start + total <= self.map.len(),
            "append past the segment end"
        );
        let mut at = start;
        for part in parts {
            // SAFETY: `[at, at + part.len())` lies within `[start, start + total)`, which is
            // inside the map (asserted above) and at or after `published`, so no reader holds
            // a slice of it; the single writer is the owning store (module invariant).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.map.as_mut_ptr().add(at),
                    part.len(),
                );
            }
            at += part.len();
        }
        debug_assert!(at <= start + total);
        self.published
            .store((start + total) as u32, Ordering::Relaxed);
    }

    /// Recovery found the written part to end at `end`: publish up to there. With `zero`
    /// (a torn tail), also zero whatever lies after it, so that no later scan resynchronises
    /// onto stale records behind the torn one. Nothing is ever appended after recovered
    /// bytes, so a clean end needs no zeroing (and no read of the preallocated tail).
    pub fn truncate(&mut self, end: usize, zero: bool) {
        let len = self.map.len();
        let end = end.min(len);
        let dirty = zero
            && self
                .bytes()
                .get(end..)
                .is_some_and(|t| t.iter().any(|&b| b != 0));
        if dirty {
            // SAFETY: `&mut self` means no slice of this segment is alive, and
            // `[end, len)` is inside the map.
            unsafe {
                std::ptr::write_bytes(self.map.as_mut_ptr().add(end), 0, len - end);
            }
        }
        self.published.store(end as u32, Ordering::Relaxed);
    }

    /// Makes the whole file readable again (recovery starts over after a rejected
    /// checkpoint). `&mut self`: no slice is alive, and nothing is written.
    pub fn expose_all(&mut self) {
        self.published
            .store(self.map.len() as u32, Ordering::Relaxed);
    }

    /// fdatasync: makes every store into the map durable (on Linux the page cache pages
    /// dirtied through a shared mapping are written by fdatasync like any others).
    pub fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if tests::FAIL_SYNC.with(|f| f.get()) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }
}

/// Allocates `[0, bytes)` of `file` (mode 0: the file size grows to `bytes` if smaller).
fn fallocate(file: &File, bytes: u32) -> io::Result<()> {
    // SAFETY: plain system call on a valid, open descriptor; no memory is passed. It is part
    // of the map's safety: stores into an allocated file cannot fault on a full disk.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, libc::off_t::from(bytes)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Makes every fdatasync of this thread fail with EIO (fault injection for tests).
        pub(crate) static FAIL_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn appends_publish_and_truncate_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut seg = Segment::create(1, &path, 4096).unwrap();
        assert_eq!(seg.published(), SEGMENT_HEADER_BYTES);
        seg.append(&[b"abc", b"de"], 8);
        assert_eq!(&seg.bytes()[32..37], b"abcde");
        assert_eq!(seg.published(), 40);
        seg.truncate(34, true);
        assert_eq!(seg.published(), 34);
        drop(seg);
        let seg = Segment::open(1, &path).unwrap();
        assert_eq!(seg.capacity(), 4096);
        assert_eq!(&seg.bytes()[32..37], b"ab\0\0\0");
    }
}
