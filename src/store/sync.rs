//! Group commit off the calling thread: the `fdatasync` of [`Store::sync`] split into a
//! [`SyncJob`] that any thread can run and a cheap finish back on the store's thread.
//!
//! Place in the flow: under `Durability::Group` a shard's timer makes writes durable every
//! few milliseconds. An `fdatasync` takes from tens of microseconds to tens of
//! milliseconds, and on the shard's reactor thread it would stall every request of the core
//! for that long. So the shard calls [`Store::begin_sync`] (which only collects the
//! segments to sync), hands the job to a blocking-task thread, goes on serving requests
//! (and accepting writes), and calls [`Store::finish_sync`] with the outcome: only then does
//! [`Store::durable_lsn`] move, to the LSN the job was begun at, never further.
//!
//! Why it is exact: a job syncs every segment written since the last completed sync, and
//! covers the writes made before it began. A segment stays marked as written until a job
//! that covered it finishes *and* nothing was appended to it since the job began (its end
//! has not moved), so a write made while a job runs is left to the next sync; and a job
//! begun while another still runs syncs that one's segments too, so jobs may finish in any
//! order. An error poisons the store exactly as [`Store::sync`] does ("fsyncgate": no retry).

use std::io;
use std::sync::Arc;

use super::segment::Segment;
use super::{Lsn, Store, WriteError};

/// The expensive part of a sync, detached from the store: owns handles on the segments to
/// `fdatasync` (so it may outlive their compaction) and the LSN it will make durable.
/// `Send`: run it on any thread with [`SyncJob::run`].
#[derive(Debug)]
pub struct SyncJob {
    /// Segments written since the last completed sync, each with its end when the job
    /// began.
    segments: Vec<(u32, usize, Arc<Segment>)>,
    upto: Lsn,
    /// Number of this job among the store's syncs (see [`Generations`]).
    generation: u64,
}

/// Counts syncs, so that something written at one moment (compaction's copies, which keep
/// their old LSNs and so are not covered by [`Store::durable_lsn`]) can tell when a sync
/// begun after it has finished: then it is on disk.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Generations {
    /// Syncs begun so far; the next one gets `begun + 1`.
    pub(super) begun: u64,
    /// Highest generation of a sync that finished successfully.
    pub(super) finished: u64,
}

impl Generations {
    /// The generation of the first sync that covers everything written until now.
    pub(super) fn next(&self) -> u64 {
        self.begun + 1
    }

    /// True once a sync of generation `generation` or later finished.
    pub(super) fn covers(&self, generation: u64) -> bool {
        self.finished >= generation
    }
}

/// A [`SyncJob`] that succeeded: what [`Store::finish_sync`] needs to mark it done.
#[derive(Debug)]
pub struct Synced {
    /// (segment id, its end when the job began).
    segments: Vec<(u32, usize)>,
    upto: Lsn,
    generation: u64,
}

impl SyncJob {
    /// The LSN this job makes durable: every write the store made before
    /// [`Store::begin_sync`].
    pub fn upto(&self) -> Lsn {
        self.upto
    }

    /// Runs `fdatasync` on every segment of the job, on the calling thread. Blocks for as
    /// long as the disk takes. Stops at the first error: the store will be poisoned anyway.
    pub fn run(self) -> io::Result<Synced> {
        for (_, _, seg) in &self.segments {
            seg.sync()?;
        }
        Ok(Synced {
            segments: self
                .segments
                .into_iter()
                .map(|(id, end, _)| (id, end))
                .collect(),
            upto: self.upto,
            generation: self.generation,
        })
    }
}

impl Store {
    /// Starts a sync whose `fdatasync`s run elsewhere: collects the segments written since
    /// the last completed sync and the LSN of the last write. Cheap (no system call). Pass
    /// the job's outcome to [`Store::finish_sync`]; until then nothing counts as durable.
    /// Writes may go on meanwhile; they are left to the next sync.
    pub fn begin_sync(&mut self) -> Result<SyncJob, WriteError> {
        self.check_writable()?;
        let segments = self
            .segments
            .iter()
            .filter(|(_, info)| info.dirty)
            .map(|(&id, info)| (id, info.seg.published(), Arc::clone(&info.seg)))
            .collect();
        self.syncs.begun += 1;
        Ok(SyncJob {
            segments,
            upto: self.next_lsn - 1,
            generation: self.syncs.begun,
        })
    }

    /// Ends a sync begun by [`Store::begin_sync`] with what [`SyncJob::run`] returned, and
    /// returns the new [`Store::durable_lsn`]. Success moves the durable LSN up to the
    /// job's (never back) and marks its segments synced unless written since it began; an
    /// error poisons the store like a failed [`Store::sync`].
    pub fn finish_sync(&mut self, done: io::Result<Synced>) -> Result<Lsn, WriteError> {
        self.check_writable()?;
        let synced = done.map_err(|e| {
            self.poisoned = true;
            WriteError::SyncFailed(e)
        })?;
        for (id, end) in synced.segments {
            if let Some(info) = self.segments.get_mut(&id) {
                if info.seg.published() == end {
                    info.dirty = false;
                }
            }
        }
        self.durable_lsn = self.durable_lsn.max(synced.upto);
        self.syncs.finished = self.syncs.finished.max(synced.generation);
        Ok(self.durable_lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::super::segment::tests::FAIL_SYNC;
    use super::super::{Durability, StoreConfig, ValueKind};
    use super::*;

    fn group_store(dir: &std::path::Path) -> Store {
        let config = StoreConfig {
            durability: Durability::Group,
            segment_bytes: 1 << 16,
            ..StoreConfig::default()
        };
        Store::open(dir, config).unwrap().0
    }

    /// Runs `job` on a new thread, with every fdatasync failing there if `fail`.
    fn run_elsewhere(job: SyncJob, fail: bool) -> io::Result<Synced> {
        std::thread::spawn(move || {
            FAIL_SYNC.with(|f| f.set(fail));
            job.run()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn sync_jobs_are_send() {
        fn is_send<T: Send>() {}
        is_send::<SyncJob>();
        is_send::<Synced>();
    }

    #[test]
    fn a_job_covers_exactly_the_writes_before_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = group_store(dir.path());
        s.put(1, b"a", ValueKind::Value, b"1").unwrap();
        let before = s.put(1, b"b", ValueKind::Value, b"2").unwrap();
        let job = s.begin_sync().unwrap();
        assert_eq!(job.upto(), before);
        assert_eq!(
            s.durable_lsn(),
            0,
            "nothing is durable before the job finishes"
        );
        let after = s.put(1, b"c", ValueKind::Value, b"3").unwrap();
        let done = run_elsewhere(job, false);
        assert_eq!(s.finish_sync(done).unwrap(), before);
        assert_eq!(
            s.durable_lsn(),
            before,
            "a write after begin is not durable"
        );
        // The write after begin dirtied the segment again: the next job syncs it.
        let job = s.begin_sync().unwrap();
        assert_eq!(job.segments.len(), 1);
        let done = run_elsewhere(job, false);
        assert_eq!(s.finish_sync(done).unwrap(), after);
        // Nothing written since: the next job has nothing to sync.
        assert!(s.begin_sync().unwrap().segments.is_empty());
        assert_eq!(s.sync().unwrap(), after);
    }

    #[test]
    fn jobs_may_finish_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = group_store(dir.path());
        let first = s.put(1, b"a", ValueKind::Value, b"1").unwrap();
        let early = s.begin_sync().unwrap();
        let second = s.put(1, b"b", ValueKind::Value, b"2").unwrap();
        let late = s.begin_sync().unwrap();
        // The later job also syncs what the earlier one was to sync.
        assert_eq!(late.segments.len(), 1);
        let late_done = run_elsewhere(late, false);
        assert_eq!(s.finish_sync(late_done).unwrap(), second);
        let early_done = run_elsewhere(early, false);
        assert_eq!(
            s.finish_sync(early_done).unwrap(),
            second,
            "never moves back"
        );
        assert!(first < second);
    }

    #[test]
    fn a_failed_job_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = group_store(dir.path());
        s.put(1, b"a", ValueKind::Value, b"1").unwrap();
        let job = s.begin_sync().unwrap();
        let done = run_elsewhere(job, true);
        assert!(matches!(
            s.finish_sync(done),
            Err(WriteError::SyncFailed(_))
        ));
        assert_eq!(s.durable_lsn(), 0);
        assert!(matches!(
            s.put(1, b"b", ValueKind::Value, b"2"),
            Err(WriteError::Poisoned)
        ));
        assert!(matches!(s.begin_sync(), Err(WriteError::Poisoned)));
        assert!(matches!(s.sync(), Err(WriteError::Poisoned)));
        // Reads still work.
        assert_eq!(s.get(1, b"a").unwrap().unwrap().value, b"1");
    }
}
