//! The cross-core mailbox: how one shard asks another for something and awaits the answer.
//!
//! A full mesh of glommio shared channels (bounded single-producer single-consumer queues
//! with cross-thread wake-ups; not custom lock-free code): for every ordered pair of shards
//! one queue carries requests and one carries the replies back. Requests and replies have
//! separate queues so a shard busy with requests can never hold up the replies another
//! shard's requests are waiting for. This is the only path by which shards exchange data.
//!
//! Each shard runs one pump task per peer for requests (serving each in its own task,
//! at most `MAILBOX_QUEUE_DEPTH` at once per peer) and one for replies (waking the caller).
//! Every request carries the shard it was sent to, and the pump asserts it arrived there.
//! Handlers must not call back into the shard that called them and await that answer
//! while holding the caller's permits: the mailbox supports one hop, as forwarding needs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use glommio::sync::Semaphore;

/// A shard's handle to send requests to the other shards.
pub struct Mailbox<Req: Send + 'static, Resp: Send + 'static> {
    shard: u16,
    requests: Vec<Option<ConnectedSender<Envelope<Req>>>>,
    replies: Vec<Option<ConnectedSender<Reply<Resp>>>>,
    pending: RefCell<HashMap<u64, Pending<Resp>>>,
    next_id: Cell<u64>,
}

/// One shard's unconnected ends of the mesh, created together by [`mesh`] on any thread
/// and moved to the shard's executor thread, where [`MailboxEnds::connect`] joins them.
pub struct MailboxEnds<Req: Send + 'static, Resp: Send + 'static> {
    shard: u16,
    depth: usize,
    request_tx: Vec<Option<SharedSender<Envelope<Req>>>>,
    request_rx: Vec<Option<SharedReceiver<Envelope<Req>>>>,
    reply_tx: Vec<Option<SharedSender<Reply<Resp>>>>,
    reply_rx: Vec<Option<SharedReceiver<Reply<Resp>>>>,
}

/// The receiving ends of one shard, consumed by [`Mailbox::run`].
pub struct Inbox<Req: Send + 'static, Resp: Send + 'static> {
    depth: u64,
    requests: Vec<(u16, ConnectedReceiver<Envelope<Req>>)>,
    replies: Vec<(u16, ConnectedReceiver<Reply<Resp>>)>,
}

/// Serves a request that arrived from shard `from`.
pub type RequestHandler<Req, Resp> = Rc<dyn Fn(u16, Req) -> Pin<Box<dyn Future<Output = Resp>>>>;

/// Why a cross-shard call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    /// There is no such shard, or it is the caller itself (serve locally instead).
    #[error("no shard {0} to send to")]
    NoSuchShard(u16),
    /// The target shard's mailbox closed (it is shutting down).
    #[error("shard {0} no longer answers")]
    Closed(u16),
}

/// A call waiting for its reply: the shard it went to, and where the reply lands.
type Pending<Resp> = (u16, Rc<ReplySlot<Resp>>);

/// A request in flight between shards.
struct Envelope<Req> {
    from: u16,
    to: u16,
    id: u64,
    req: Req,
}

/// A reply on its way back to the calling shard.
struct Reply<Resp> {
    id: u64,
    resp: Resp,
}

/// Creates the mesh of `shards` shards with queues of `depth` messages; element `i` goes
/// to shard `i`.
pub fn mesh<Req: Send + 'static, Resp: Send + 'static>(
    shards: u16,
    depth: usize,
) -> Vec<MailboxEnds<Req, Resp>> {
    let n = usize::from(shards);
    let mut ends: Vec<MailboxEnds<Req, Resp>> = (0..shards)
        .map(|shard| MailboxEnds {
            shard,
            depth,
            request_tx: (0..n).map(|_| None).collect(),
            request_rx: (0..n).map(|_| None).collect(),
            reply_tx: (0..n).map(|_| None).collect(),
            reply_rx: (0..n).map(|_| None).collect(),
        })
        .collect();
    for from in 0..n {
        for to in (0..n).filter(|&to| to != from) {
            let (tx, rx) = shared_channel::new_bounded(depth);
            ends[from].request_tx[to] = Some(tx);
            ends[to].request_rx[from] = Some(rx);
            let (tx, rx) = shared_channel::new_bounded(depth);
            ends[to].reply_tx[from] = Some(tx);
            ends[from].reply_rx[to] = Some(rx);
        }
    }
    ends
}

impl<Req: Send + 'static, Resp: Send + 'static> MailboxEnds<Req, Resp> {
    /// Connects this shard's ends; completes once every other shard connected its ends
    /// too, so all shards must call it concurrently.
    pub async fn connect(self) -> (Rc<Mailbox<Req, Resp>>, Inbox<Req, Resp>) {
        // Connecting waits for the peer to connect its end: start them all before awaiting.
        let requests = connect_all(self.request_tx, |tx| tx.connect());
        let replies = connect_all(self.reply_tx, |tx| tx.connect());
        let request_rx = connect_all(self.request_rx, |rx| rx.connect());
        let reply_rx = connect_all(self.reply_rx, |rx| rx.connect());
        let mailbox = Mailbox {
            shard: self.shard,
            requests: join_all(requests).await,
            replies: join_all(replies).await,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        };
        let inbox = Inbox {
            depth: u64::try_from(self.depth).unwrap_or(u64::MAX),
            requests: numbered(join_all(request_rx).await),
            replies: numbered(join_all(reply_rx).await),
        };
        (Rc::new(mailbox), inbox)
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Mailbox<Req, Resp> {
    /// This shard's index.
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// Sends `req` to shard `to` and awaits its reply. Waits while the queue to `to` is
    /// full. Dropping the future abandons the request (its reply is discarded).
    pub async fn call(&self, to: u16, req: Req) -> Result<Resp, MailboxError> {
        let sender = self
            .requests
            .get(usize::from(to))
            .and_then(Option::as_ref)
            .ok_or(MailboxError::NoSuchShard(to))?;
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let slot = Rc::new(ReplySlot::default());
        self.pending.borrow_mut().insert(id, (to, slot.clone()));
        let _pending = PendingGuard { mailbox: self, id };
        let envelope = Envelope {
            from: self.shard,
            to,
            id,
            req,
        };
        if sender.send(envelope).await.is_err() {
            return Err(MailboxError::Closed(to));
        }
        slot.wait().await.ok_or(MailboxError::Closed(to))
    }

    /// Starts the pumps: requests from other shards go to `handler`, replies to waiting
    /// callers. The pumps run until the peers' ends close or the executor stops.
    pub fn run(self: &Rc<Self>, inbox: Inbox<Req, Resp>, handler: RequestHandler<Req, Resp>) {
        for (from, rx) in inbox.requests {
            let mailbox = self.clone();
            let handler = handler.clone();
            let depth = inbox.depth;
            glommio::spawn_local(
                async move { mailbox.pump_requests(from, rx, depth, handler).await },
            )
            .detach();
        }
        for (from, rx) in inbox.replies {
            let mailbox = self.clone();
            glommio::spawn_local(async move { mailbox.pump_replies(from, rx).await }).detach();
        }
    }

    async fn pump_requests(
        self: Rc<Self>,
        from: u16,
        rx: ConnectedReceiver<Envelope<Req>>,
        depth: u64,
        handler: RequestHandler<Req, Resp>,
    ) {
        let permits = Rc::new(Semaphore::new(depth));
        loop {
            let Ok(permit) = permits.acquire_static_permit(1).await else {
                return;
            };
            let Some(envelope) = rx.recv().await else {
                return;
            };
            // The routing invariant: a message is only ever handled by the shard it was
            // addressed to, so shard-local state is never touched from the wrong core.
            assert_eq!(
                envelope.to, self.shard,
                "mailbox message for shard {} reached shard {}",
                envelope.to, self.shard
            );
            debug_assert_eq!(envelope.from, from);
            let work = handler(envelope.from, envelope.req);
            let mailbox = self.clone();
            glommio::spawn_local(async move {
                let resp = work.await;
                if let Some(Some(back)) = mailbox.replies.get(usize::from(from)) {
                    // The caller's shard may be gone at shutdown; then nobody waits.
                    let _ = back
                        .send(Reply {
                            id: envelope.id,
                            resp,
                        })
                        .await;
                }
                drop(permit);
            })
            .detach();
        }
    }

    async fn pump_replies(self: Rc<Self>, from: u16, rx: ConnectedReceiver<Reply<Resp>>) {
        while let Some(reply) = rx.recv().await {
            let slot = self.pending.borrow_mut().remove(&reply.id);
            if let Some((_, slot)) = slot {
                slot.fill(Some(reply.resp));
            }
        }
        // The peer is gone: nothing more will come back from it.
        let failed: Vec<_> = {
            let mut pending = self.pending.borrow_mut();
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, (to, _))| *to == from)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(&id))
                .collect()
        };
        for (_, slot) in failed {
            slot.fill(None);
        }
    }
}

/// Removes an abandoned or finished call from the pending table.
struct PendingGuard<'a, Req: Send + 'static, Resp: Send + 'static> {
    mailbox: &'a Mailbox<Req, Resp>,
    id: u64,
}

impl<Req: Send + 'static, Resp: Send + 'static> Drop for PendingGuard<'_, Req, Resp> {
    fn drop(&mut self) {
        self.mailbox.pending.borrow_mut().remove(&self.id);
    }
}

/// Where a reply lands for its caller: `Some(resp)`, or `None` when the peer went away.
struct ReplySlot<Resp> {
    state: RefCell<(Option<Option<Resp>>, Option<Waker>)>,
}

impl<Resp> Default for ReplySlot<Resp> {
    fn default() -> Self {
        ReplySlot {
            state: RefCell::new((None, None)),
        }
    }
}

impl<Resp> ReplySlot<Resp> {
    fn fill(&self, resp: Option<Resp>) {
        let waker = {
            let mut state = self.state.borrow_mut();
            state.0 = Some(resp);
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    async fn wait(&self) -> Option<Resp> {
        futures_lite::future::poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            match state.0.take() {
                Some(resp) => Poll::Ready(resp),
                None => {
                    state.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// Starts connecting every present end as its own task.
fn connect_all<E, C, F, Fut>(
    ends: Vec<Option<E>>,
    connect: F,
) -> Vec<Option<glommio::task::JoinHandle<C>>>
where
    F: Fn(E) -> Fut,
    Fut: Future<Output = C> + 'static,
    C: 'static,
{
    ends.into_iter()
        .map(|end| end.map(|end| glommio::spawn_local(connect(end)).detach()))
        .collect()
}

async fn join_all<C>(handles: Vec<Option<glommio::task::JoinHandle<C>>>) -> Vec<Option<C>> {
    let mut connected = Vec::with_capacity(handles.len());
    for handle in handles {
        connected.push(match handle {
            Some(handle) => handle.await,
            None => None,
        });
    }
    connected
}

fn numbered<T>(ends: Vec<Option<T>>) -> Vec<(u16, T)> {
    ends.into_iter()
        .zip(0u16..)
        .filter_map(|(end, i)| end.map(|end| (i, end)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    /// Three shards each call both others many times at once through queues of depth 4
    /// (so senders wait for room): every call gets the answer of the shard it addressed.
    #[test]
    fn every_shard_reaches_every_other_and_gets_its_own_answers() {
        const SHARDS: u16 = 3;
        const CALLS: u32 = 200;
        let ends = mesh::<(u16, u32), (u16, u32)>(SHARDS, 4);
        let done = crate::server::limits::Latch::new(usize::from(SHARDS));
        let handles: Vec<_> = ends
            .into_iter()
            .map(|ends| {
                let done = done.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(crate::constants::EXECUTOR_IO_MEMORY_BYTES)
                    .spawn(move || async move {
                        let (mailbox, inbox) = ends.connect().await;
                        let me = mailbox.shard();
                        let handler: RequestHandler<(u16, u32), (u16, u32)> =
                            Rc::new(move |from, (to, n)| {
                                assert_eq!(to, me, "delivered to its addressee");
                                Box::pin(async move { (from, n * 2) })
                            });
                        mailbox.run(inbox, handler);
                        assert_eq!(
                            mailbox.call(me, (me, 0)).await.err(),
                            Some(MailboxError::NoSuchShard(me))
                        );
                        assert_eq!(
                            mailbox.call(SHARDS, (SHARDS, 0)).await.err(),
                            Some(MailboxError::NoSuchShard(SHARDS))
                        );
                        let calls: Vec<_> = (0..SHARDS)
                            .filter(|&to| to != me)
                            .flat_map(|to| (0..CALLS).map(move |n| (to, n)))
                            .map(|(to, n)| {
                                let mailbox = mailbox.clone();
                                glommio::spawn_local(async move {
                                    assert_eq!(mailbox.call(to, (to, n)).await, Ok((me, n * 2)));
                                })
                            })
                            .collect();
                        for call in calls {
                            call.await;
                        }
                        // Stay up until the peers are done calling us too.
                        done.count_down();
                        done.wait().await;
                        assert!(mailbox.pending.borrow().is_empty());
                    })
                    .expect("executor")
            })
            .collect();
        for handle in handles {
            handle.join().expect("shard finished");
        }
    }
}
