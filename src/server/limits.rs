//! Node-wide state shared by every shard thread: the connection cap and the stop signal.
//!
//! These are the only server objects that cross threads besides the mailbox. The
//! connection cap is a lock-free counter (model-checked with loom: build the tests with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib server::limits`); the latch (stop
//! signal and shutdown barrier) is a mutex-guarded count plus wakers, touched a few times
//! per shard at shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

#[cfg(loom)]
use loom::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

/// The cap on open client connections of the whole node, shared by all shards.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    inner: Arc<CapInner>,
}

/// One admitted connection; dropping it frees its place under the cap.
#[derive(Debug)]
pub struct ConnectionSlot {
    inner: Arc<CapInner>,
}

#[derive(Debug)]
struct CapInner {
    open: AtomicU32,
    max: u32,
}

impl ConnectionCap {
    /// A cap admitting at most `max` connections at once.
    pub fn new(max: u32) -> ConnectionCap {
        ConnectionCap {
            inner: Arc::new(CapInner {
                open: AtomicU32::new(0),
                max,
            }),
        }
    }

    /// Admits one more connection, or `None` when `max` are already open.
    pub fn try_acquire(&self) -> Option<ConnectionSlot> {
        // A compare-exchange loop rather than fetch_add-then-undo: the counter never
        // overshoots, so a racing shard never sees a spurious "full".
        let max = self.inner.max;
        self.inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionSlot {
                inner: self.inner.clone(),
            })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.inner.open.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A cross-thread countdown: waiters resume once it reaches zero. With a count of one it
/// is the stop signal (the signal thread counts down, each shard awaits); with a count of
/// the shard number it is the barrier "every shard has drained its connections".
#[derive(Debug, Clone)]
pub struct Latch {
    inner: std::sync::Arc<Mutex<LatchState>>,
}

#[derive(Debug)]
struct LatchState {
    count: usize,
    wakers: Vec<Waker>,
}

/// Future returned by [`Latch::wait`].
#[derive(Debug)]
pub struct LatchWait {
    latch: Latch,
}

impl Latch {
    /// A latch that opens after `count` count-downs (at once if `count` is 0).
    pub fn new(count: usize) -> Latch {
        Latch {
            inner: std::sync::Arc::new(Mutex::new(LatchState {
                count,
                wakers: Vec::new(),
            })),
        }
    }

    /// Counts down by one (never below zero); at zero wakes every waiter.
    pub fn count_down(&self) {
        let wakers = {
            let mut state = lock(&self.inner);
            state.count = state.count.saturating_sub(1);
            if state.count > 0 {
                return;
            }
            std::mem::take(&mut state.wakers)
        };
        // Wake outside the lock: a waker may run code that takes it again.
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the count reached zero.
    pub fn is_open(&self) -> bool {
        lock(&self.inner).count == 0
    }

    /// Resolves once the count reaches zero.
    pub fn wait(&self) -> LatchWait {
        LatchWait {
            latch: self.clone(),
        }
    }
}

impl Future for LatchWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.latch.inner);
        if state.count == 0 {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A poisoned lock only means another thread panicked while holding it; the flag and the
/// waker list are still meaningful, so carry on with them.
fn lock(m: &Mutex<LatchState>) -> std::sync::MutexGuard<'_, LatchState> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn cap_admits_up_to_max_and_frees_on_drop() {
        let cap = ConnectionCap::new(2);
        let a = cap.try_acquire().expect("first");
        let b = cap.try_acquire().expect("second");
        assert!(cap.try_acquire().is_none());
        assert_eq!(cap.open(), 2);
        drop(a);
        let c = cap.try_acquire().expect("freed slot");
        assert!(
            cap.clone().try_acquire().is_none(),
            "clones share the count"
        );
        drop((b, c));
        assert_eq!(cap.open(), 0);
    }

    #[test]
    fn cap_holds_across_threads() {
        let cap = ConnectionCap::new(50);
        let admitted: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let slots: Vec<_> = (0..100).filter_map(|_| cap.try_acquire()).collect();
                        slots.len()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Slots are dropped when each thread ends, so at most 50 were held at once per
        // instant, but a thread may have reused freed ones: the total is at least 50.
        assert!(admitted.iter().sum::<usize>() >= 50);
        assert_eq!(cap.open(), 0);
    }

    #[test]
    fn latch_wakes_waiters_on_other_threads_at_zero() {
        let latch = Latch::new(2);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let latch = latch.clone();
                std::thread::spawn(move || futures_lite::future::block_on(latch.wait()))
            })
            .collect();
        latch.count_down();
        assert!(!latch.is_open());
        latch.count_down();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert!(latch.is_open());
        latch.count_down();
        assert!(latch.is_open(), "counting past zero keeps it open");
        // Waiting on an open latch completes at once.
        futures_lite::future::block_on(latch.wait());
        futures_lite::future::block_on(Latch::new(0).wait());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// Two shards race for the last slot while a third frees one: never more than `max`
    /// admitted, and the count returns to zero.
    #[test]
    fn cap_never_exceeds_max() {
        loom::model(|| {
            let cap = ConnectionCap::new(1);
            let held = cap.try_acquire().expect("empty cap admits");
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let cap = cap.clone();
                    loom::thread::spawn(move || {
                        let slot = cap.try_acquire();
                        assert!(cap.open() <= 1);
                        slot.is_some()
                    })
                })
                .collect();
            drop(held);
            let admitted: usize = racers
                .into_iter()
                .map(|r| usize::from(r.join().unwrap()))
                .sum();
            assert!(admitted <= 2);
            assert_eq!(cap.open(), 0);
        });
    }

    /// Two concurrent acquisitions on a cap of one: exactly one wins.
    #[test]
    fn one_slot_one_winner() {
        loom::model(|| {
            let cap = ConnectionCap::new(1);
            let other = {
                let cap = cap.clone();
                // The slot travels back with the join, so both are held at the same time.
                loom::thread::spawn(move || cap.try_acquire())
            };
            let mine = cap.try_acquire();
            let theirs = other.join().unwrap();
            assert!(
                mine.is_some() != theirs.is_some(),
                "exactly one of two admitted"
            );
            drop((mine, theirs));
            assert_eq!(cap.open(), 0);
        });
    }
}
