//! A benchmark clock for a shared machine: the CPU time of the calling thread.
//!
//! On the two shared cores these benchmarks run on, wall time measures the neighbours as
//! much as the code: a benchmark pinned to a core that three compilers also want gets a
//! third of it. Thread CPU time counts only the time the benchmark ran (the neighbours
//! still cost it some cache), so figures from a loaded machine compare with a quiet one.
//! Used through criterion's `iter_custom`, which times a whole batch of iterations.

use std::time::Duration;

/// CPU time used so far by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; the call
    // writes only it. (Not a memory map: the one `unsafe` of the benchmarks, since std has
    // no CPU-time clock.)
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` `iters` times and returns the thread CPU time it took.
pub fn cpu_time_of(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = thread_cpu_time();
    for _ in 0..iters {
        f();
    }
    thread_cpu_time() - start
}
