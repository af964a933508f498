//! Group commit: writes acknowledged only once a periodic sync made them durable.
//!
//! Under the `group` durability policy a shard's `put` returns at once with the write's
//! LSN, and the reply waits here. A per-shard task (see `service`) sleeps for the group
//! commit interval whenever writes wait, runs the store's sync with its fdatasyncs on
//! glommio's blocking thread (`Store::begin_sync`, `SyncJob::run`, `Store::finish_sync`),
//! and hands the new durable LSN to [`GroupCommit::release`], which wakes every waiter at
//! or below it. So one fsync acknowledges every write of its interval, and the reactor
//! neither waits for one write nor for the device while it flushes. A failed sync releases every waiter with a failure (the store is poisoned
//! and the writes' outcome is unknown).
//!
//! The queue needs no bound of its own: each waiter is a request in flight, already
//! bounded per connection (`connection_in_flight_max`) and per mailbox queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::future;

use crate::store::Lsn;

/// The writes of one shard waiting for a sync, in LSN order.
#[derive(Default)]
pub struct GroupCommit {
    waiters: RefCell<VecDeque<(Lsn, Rc<Slot>)>>,
    /// The commit task, parked while nothing waits.
    committer: RefCell<Option<Waker>>,
    /// Set at shutdown: the commit task ends.
    stopped: Cell<bool>,
    /// A sync was asked for without a waiter here: the cluster coordinator holds its own
    /// acknowledgements and releases them when ticked after the sync.
    wanted: Cell<bool>,
}

/// Where one waiting write learns its outcome.
#[derive(Default)]
struct Slot {
    /// `Some(true)` durable, `Some(false)` the sync failed.
    outcome: Cell<Option<bool>>,
    waker: RefCell<Option<Waker>>,
}

impl GroupCommit {
    /// Resolves once the write with LSN `lsn` is durable (`true`) or its sync failed
    /// (`false`). `durable` is the store's durable LSN now: a write already covered by a
    /// sync resolves at once.
    pub async fn wait(&self, lsn: Lsn, durable: Lsn) -> bool {
        if lsn <= durable {
            return true;
        }
        let slot = Rc::new(Slot::default());
        {
            let mut waiters = self.waiters.borrow_mut();
            // LSNs of one store only grow, but a forwarded write may register after a later
            // local one: keep the queue sorted so release can stop at the first newer one.
            let at = waiters.partition_point(|(waiting, _)| *waiting <= lsn);
            waiters.insert(at, (lsn, slot.clone()));
        }
        self.kick();
        future::poll_fn(|cx| match slot.outcome.get() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                *slot.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Whether any write waits for a sync.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.borrow().is_empty() || self.wanted.get()
    }

    /// Asks for a sync although no write waits here (the coordinator's writes, whose
    /// acknowledgements it holds itself until the durable LSN passes them).
    pub fn request_sync(&self) {
        if !self.wanted.replace(true) {
            self.kick();
        }
    }

    /// Wakes every waiter whose LSN is at most `durable` with success.
    pub fn release(&self, durable: Lsn) {
        self.wanted.set(false);
        let mut done = Vec::new();
        {
            let mut waiters = self.waiters.borrow_mut();
            while waiters.front().is_some_and(|(lsn, _)| *lsn <= durable) {
                if let Some((_, slot)) = waiters.pop_front() {
                    done.push(slot);
                }
            }
        }
        finish(done, true);
    }

    /// Wakes every waiter with failure: the sync failed and the store refuses writes.
    pub fn fail_all(&self) {
        self.wanted.set(false);
        let done: Vec<Rc<Slot>> = self
            .waiters
            .borrow_mut()
            .drain(..)
            .map(|(_, s)| s)
            .collect();
        finish(done, false);
    }

    /// Resolves when a write waits (or at shutdown): the commit task's idle wait.
    pub async fn work(&self) {
        future::poll_fn(|cx| {
            if self.stopped.get() || self.has_waiters() {
                Poll::Ready(())
            } else {
                *self.committer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Whether [`GroupCommit::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Ends the commit task at its next wake-up.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.kick();
    }

    fn kick(&self) {
        let waker = self.committer.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn finish(slots: Vec<Rc<Slot>>, outcome: bool) {
    for slot in slots {
        slot.outcome.set(Some(outcome));
        let waker = slot.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn waiters_are_released_up_to_the_durable_lsn_in_order() {
        let commit = GroupCommit::default();
        assert!(block_on(commit.wait(3, 5)), "already durable");
        let mut first = Box::pin(commit.wait(7, 5));
        let mut second = Box::pin(commit.wait(6, 5));
        let mut third = Box::pin(commit.wait(9, 5));
        for w in [&mut first, &mut second, &mut third] {
            assert_eq!(block_on(poll_once(w.as_mut())), None);
        }
        assert!(commit.has_waiters());
        commit.release(7);
        assert_eq!(block_on(poll_once(first.as_mut())), Some(true));
        assert_eq!(block_on(poll_once(second.as_mut())), Some(true));
        assert_eq!(block_on(poll_once(third.as_mut())), None);
        commit.fail_all();
        assert_eq!(block_on(poll_once(third.as_mut())), Some(false));
        assert!(!commit.has_waiters());
    }

    #[test]
    fn a_requested_sync_wakes_the_commit_task_until_released() {
        let commit = GroupCommit::default();
        let mut idle = Box::pin(commit.work());
        assert_eq!(block_on(poll_once(idle.as_mut())), None);
        commit.request_sync();
        assert_eq!(block_on(poll_once(idle.as_mut())), Some(()));
        commit.release(1);
        assert!(!commit.has_waiters());
    }

    #[test]
    fn the_commit_task_wakes_for_work_and_for_stop() {
        let commit = GroupCommit::default();
        let mut idle = Box::pin(commit.work());
        assert_eq!(block_on(poll_once(idle.as_mut())), None);
        commit.stop();
        assert_eq!(block_on(poll_once(idle.as_mut())), Some(()));
        assert!(commit.is_stopped());
    }
}
