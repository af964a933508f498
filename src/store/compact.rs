//! Compaction in bounded slices: copy the live records of a sealed segment to the head of
//! the log, then sync and delete the segment.
//!
//! The server calls [`Store::compact_step_deferred`] between requests with a byte budget,
//! so no call holds the core for long, and runs the sync and the unmapping that end a
//! compaction on another thread. A record is live if the index points at exactly its location;
//! markers are kept while an older segment exists (it may hold what they cancel). Copies
//! keep their LSN, so recovery orders them correctly wherever they land. The old file is
//! deleted only after the copies are synced, so a crash at any point loses nothing.

use std::sync::Arc;

use super::format::{decode_at, Decoded, RecordKind, SEGMENT_HEADER_BYTES};
use super::index::Loc;
use super::recovery::resync;
use super::segment::Segment;
use super::{Store, WriteError};

/// What one [`Store::compact_step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactProgress {
    /// Nothing to do: no sealed segment passes the garbage threshold.
    Idle,
    /// Copied part of a segment; call again.
    Working {
        /// Segment being compacted.
        segment: u32,
    },
    /// Only from [`Store::compact_step_deferred`]: every live record of `segment` is
    /// copied, and the copies must be on disk before the file may go. Sync (for instance
    /// [`Store::begin_sync`], [`SyncJob::run`](super::SyncJob::run) on another thread, then
    /// [`Store::finish_sync`]), then call again.
    NeedsSync {
        /// Segment whose copies wait for the sync.
        segment: u32,
    },
    /// A segment was emptied and deleted.
    Finished {
        /// The deleted segment.
        segment: u32,
        /// Bytes of the file given back to the file system.
        reclaimed: u64,
    },
    /// A periodic checkpoint was written (this step's cost grows with the number of keys).
    Checkpointed,
}

/// Maps of segments that compaction deleted, taken with [`Store::take_retired`]. Dropping
/// this unmaps them (once no [`SharedValue`](super::SharedValue) holds them any more), which
/// takes tens of milliseconds for a full segment: drop it on a thread that serves no
/// requests. `Send`.
#[derive(Debug, Default)]
pub struct RetiredSegments(Vec<Arc<Segment>>);

impl RetiredSegments {
    /// True when there is nothing to release.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A compaction in progress.
#[derive(Debug)]
pub(super) struct Job {
    segment: Arc<Segment>,
    /// Next offset to look at.
    cursor: usize,
    /// Once every live record is copied: the generation of the first sync that covers the
    /// copies (see `sync::Generations`).
    copied: Option<u64>,
}

impl Store {
    /// Does up to about `budget_bytes` of compaction work (bytes of records examined), or
    /// writes a due periodic checkpoint. Call between requests until it returns `Idle`.
    /// Once a segment's live records are copied, it syncs them and deletes the segment,
    /// all in this call: see [`Store::compact_step_deferred`] for a form that leaves the
    /// slow parts to the caller.
    pub fn compact_step(&mut self, budget_bytes: usize) -> Result<CompactProgress, WriteError> {
        let progress = self.compact(budget_bytes, false);
        self.retired.clear();
        progress
    }

    /// Like [`Store::compact_step`], but never syncs: once a segment's live records are
    /// copied it returns [`CompactProgress::NeedsSync`] until a sync begun after the copies
    /// has finished, and the deleted segment's map waits in [`Store::take_retired`]. So no
    /// call makes a slow system call apart from a rare checkpoint.
    pub fn compact_step_deferred(
        &mut self,
        budget_bytes: usize,
    ) -> Result<CompactProgress, WriteError> {
        self.compact(budget_bytes, true)
    }

    /// Maps of segments that [`Store::compact_step_deferred`] deleted, to be dropped on a
    /// thread where the unmapping stalls nothing.
    pub fn take_retired(&mut self) -> RetiredSegments {
        RetiredSegments(std::mem::take(&mut self.retired))
    }

    fn compact(
        &mut self,
        budget_bytes: usize,
        deferred: bool,
    ) -> Result<CompactProgress, WriteError> {
        self.check_writable()?;
        if self.compaction.is_none() {
            let interval = self.config.checkpoint_interval_bytes;
            if interval > 0 && self.bytes_since_checkpoint >= interval {
                self.checkpoint()?;
                return Ok(CompactProgress::Checkpointed);
            }
            let Some(id) = self.compaction_candidate() else {
                return Ok(CompactProgress::Idle);
            };
            let Some(info) = self.segments.get(&id) else {
                return Ok(CompactProgress::Idle);
            };
            self.compaction = Some(Job {
                segment: Arc::clone(&info.seg),
                cursor: SEGMENT_HEADER_BYTES,
                copied: None,
            });
        }
        let Some(job) = self.compaction.take() else {
            return Ok(CompactProgress::Idle);
        };
        if let Some(generation) = job.copied {
            return self.finish_compaction(job, generation, deferred);
        }
        let seg = Arc::clone(&job.segment);
        let id = seg.id();
        let mut cursor = job.cursor;
        let bytes = seg.bytes();
        let mut spent = 0;
        while spent < budget_bytes.max(1) && cursor < bytes.len() {
            match decode_at(bytes, cursor) {
                Decoded::Record(rec) => {
                    let loc = Loc {
                        segment: id,
                        offset: cursor as u32,
                    };
                    if let Err(e) = self.keep_if_live(loc, &rec) {
                        self.compaction = Some(Job {
                            segment: seg,
                            cursor,
                            copied: None,
                        });
                        return Err(e);
                    }
                    cursor += rec.padded_len;
                    spent += rec.padded_len;
                }
                Decoded::End => cursor = bytes.len(),
                Decoded::Bad => {
                    let next = resync(bytes, cursor).unwrap_or(bytes.len());
                    spent += next - cursor;
                    cursor = next;
                }
            }
        }
        if cursor < bytes.len() {
            self.compaction = Some(Job {
                segment: seg,
                cursor,
                copied: None,
            });
            return Ok(CompactProgress::Working { segment: id });
        }
        // Every live record is copied: the copies must be durable before the file goes.
        let generation = self.syncs.next();
        let job = Job {
            segment: seg,
            cursor,
            copied: Some(generation),
        };
        self.finish_compaction(job, generation, deferred)
    }

    /// Deletes the compacted segment once its copies are on disk (syncing them first unless
    /// `deferred`, which hands the sync to the caller).
    fn finish_compaction(
        &mut self,
        job: Job,
        generation: u64,
        deferred: bool,
    ) -> Result<CompactProgress, WriteError> {
        let id = job.segment.id();
        if !self.syncs.covers(generation) {
            if deferred {
                self.compaction = Some(job);
                return Ok(CompactProgress::NeedsSync { segment: id });
            }
            // A sync begun now covers every copy.
            if let Err(e) = self.sync() {
                self.compaction = Some(job);
                return Err(e);
            }
        }
        let seg = job.segment;
        let reclaimed = seg.capacity() as u64;
        self.segments.remove(&id);
        std::fs::remove_file(seg.path()).map_err(WriteError::Io)?;
        if self.config.durability != super::Durability::Never {
            self.sync_dir()?;
        }
        self.retired.push(seg);
        Ok(CompactProgress::Finished {
            segment: id,
            reclaimed,
        })
    }

    /// The sealed segment with the largest share of reclaimable bytes, if it passes the
    /// configured threshold.
    fn compaction_candidate(&self) -> Option<u32> {
        let oldest = *self.segments.keys().next()?;
        let threshold = u64::from(self.config.compaction_garbage_percent);
        self.segments
            .iter()
            .filter(|(&id, _)| id != self.active)
            .filter_map(|(&id, info)| {
                let used = info.used();
                let kept = info.live + if id == oldest { 0 } else { info.markers };
                let reclaimable = used.saturating_sub(kept);
                (used == 0 || reclaimable * 100 >= threshold * used).then_some((
                    id,
                    reclaimable,
                    used,
                ))
            })
            .max_by_key(|&(_, r, used)| (r * 100).checked_div(used).unwrap_or(100))
            .map(|(id, _, _)| id)
    }

    /// Copies the record at `loc` to the head of the log if something still needs it.
    fn keep_if_live(
        &mut self,
        loc: Loc,
        rec: &super::format::Record<'_>,
    ) -> Result<(), WriteError> {
        let meta = rec.meta;
        let live = match meta.kind {
            RecordKind::Value | RecordKind::Tombstone => {
                let hash = self.hasher.hash_one(rec.key);
                self.partitions
                    .get(&meta.partition)
                    .is_some_and(|p| p.holds(hash, loc))
            }
            RecordKind::Hint => self.hints.get(meta.lsn) == Some(loc),
            RecordKind::HintDelete | RecordKind::Purge | RecordKind::PartitionDrop => self
                .segments
                .keys()
                .next()
                .is_some_and(|&oldest| oldest < loc.segment),
        };
        if !live {
            return Ok(());
        }
        let (new, len) = self.append_record(&meta, rec.key, rec.value)?;
        match meta.kind {
            RecordKind::Value | RecordKind::Tombstone => {
                let hash = self.hasher.hash_one(rec.key);
                if let Some(p) = self.partitions.get_mut(&meta.partition) {
                    p.relocate(hash, loc, new);
                }
                self.add_live(new, len);
                self.release(loc);
            }
            RecordKind::Hint => {
                self.hints.relocate(meta.lsn, loc, new);
                self.add_live(new, len);
                self.release(loc);
            }
            _ => {
                self.add_markers(new, len);
                if let Some(info) = self.segments.get_mut(&loc.segment) {
                    info.markers = info.markers.saturating_sub(len);
                }
            }
        }
        Ok(())
    }
}
