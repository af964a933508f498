//! One client connection: bytes in, frames to the protocol handler, replies out.
//!
//! The loop knows nothing of the protocol. It reads into a bounded receive buffer, lets a
//! [`FrameHandler`] split off and serve as many complete frames as it can, writes the
//! replies, and enforces the per-connection bounds: requests in flight, reply bytes
//! waiting, receive buffer size, handshake and idle time. At a bound it stops reading (TCP
//! then pushes back on the client); it never queues without limit.
//!
//! A handler serves most frames synchronously, appending the reply to the output buffer
//! while the decoded message still borrows the receive buffer. A frame that needs
//! asynchronous work (another shard's data, later a replica's answer) becomes a
//! [`Step::Deferred`] future that owns what it needs; replies then go out in completion
//! order, which a protocol that answers by request id allows.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::constants;

/// A protocol plugged into the connection loop (the wire codec's server side, or the echo
/// protocol in tests). One instance per connection, living on the connection's shard.
pub trait FrameHandler: 'static {
    /// Asynchronous work for one frame; resolves to the encoded reply bytes.
    type Deferred: Future<Output = Vec<u8>> + 'static;

    /// Looks at the unconsumed received bytes, `input`, which start at a frame boundary.
    /// Either serves the first frame (appending its reply, if any, to `out`), defers it, says
    /// more bytes are needed, or closes the connection (after appending an error frame to
    /// `out`, which is written before closing). Called repeatedly while frames remain and
    /// the connection's bounds allow.
    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step<Self::Deferred>;

    /// Called once per serving pass with the received bytes not yet consumed (starting at a
    /// frame boundary), before `handle` is called on them: a handler may look ahead at the
    /// frames waiting and start work they will need (say, load what several pipelined
    /// reads will touch into the CPU's caches at once). Purely an optimisation: `handle`
    /// must give the same results whether or not this ran.
    fn prepare(&mut self, _input: &[u8]) {}

    /// Whether the connection completed its handshake; until then the handshake timeout
    /// applies instead of the idle timeout.
    fn is_established(&self) -> bool {
        true
    }

    /// This connection's own bound on requests served at once, if the handler sets one
    /// (a peer connection carries a whole shard's replica traffic); `None` keeps the
    /// configured per-connection bound.
    fn in_flight_max(&self) -> Option<usize> {
        None
    }
}

/// What a [`FrameHandler`] made of the front of the received bytes.
#[derive(Debug)]
pub enum Step<D> {
    /// No complete frame yet. `frame_bytes` is the whole frame's size when the header
    /// already told it, so the receive buffer can grow once, to exactly that.
    Incomplete {
        /// Size of the frame being received, header included, if known.
        frame_bytes: Option<usize>,
    },
    /// The first `consumed` bytes were one frame, served; its reply is in `out`.
    Served {
        /// Bytes of the frame (at least 1, at most the input's length).
        consumed: usize,
    },
    /// The first `consumed` bytes were one frame whose reply `reply` will produce.
    Deferred {
        /// Bytes of the frame (at least 1, at most the input's length).
        consumed: usize,
        /// Resolves to the reply bytes; it must own everything it needs.
        reply: D,
    },
    /// Close the connection after writing what is in `out`.
    Close(CloseReason),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its side and every reply was written.
    PeerClosed,
    /// A frame could not be decoded (the handler sent an error frame first).
    Malformed,
    /// A frame is larger than the receive buffer may grow.
    TooLarge,
    /// The handler ended the connection for a protocol reason of its own.
    Rejected,
    /// No completed handshake within the handshake timeout.
    HandshakeTimeout,
    /// Silent, with nothing in flight, for the idle timeout (or the client did not read its
    /// replies for that long).
    IdleTimeout,
    /// The server is shutting down; in-flight requests were answered first.
    Shutdown,
    /// The socket failed.
    Io(std::io::ErrorKind),
    /// The handler reported an impossible consumed count (a bug, caught, not trusted).
    HandlerBug,
}

/// The bounds of one connection, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Deferred requests served at once; reading stops at this many.
    pub in_flight_max: usize,
    /// Reply bytes waiting; reading stops past this (one reply may exceed it).
    pub output_bytes_max: usize,
    /// Silence (with nothing in flight) before closing, and longest wait on a write.
    pub idle_timeout: Duration,
    /// Time to complete the handshake.
    pub handshake_timeout: Duration,
}

/// Serves one connection until it ends; returns why it ended. `stop` is the shard's stop
/// semaphore: it is closed on shutdown, which makes the loop stop reading, answer what is
/// in flight and return [`CloseReason::Shutdown`].
pub async fn serve<H: FrameHandler>(
    stream: &mut TcpStream,
    handler: &mut H,
    limits: &ConnectionLimits,
    stop: &Semaphore,
) -> CloseReason {
    // Nagle would hold small replies back for up to 40 ms waiting for the client's ACK.
    // Failures here only cost latency or the write bound, never correctness.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(limits.idle_timeout));

    let mut input = InputBuffer::new();
    let mut out: Vec<u8> = Vec::new();
    let completions = Rc::new(Completions::default());
    let mut in_flight = 0usize;
    let started = Instant::now();
    let mut last_activity = started;
    let mut stopping = false;
    let mut peer_closed = false;
    let mut frame_hint: Option<usize>;

    loop {
        // Finished deferred replies first: each frees a place for the frames waiting.
        in_flight -= completions.drain_into(&mut out);
        let mut closing = None;
        let mut pos = 0;
        // Only the frame left incomplete by this pass may size the buffer.
        frame_hint = None;
        let in_flight_max = handler.in_flight_max().unwrap_or(limits.in_flight_max);
        if !input.filled().is_empty() {
            handler.prepare(input.filled());
        }
        while in_flight < in_flight_max && out.len() < limits.output_bytes_max {
            let pending = input.filled().get(pos..).unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            match handler.handle(pending, &mut out) {
                Step::Incomplete { frame_bytes } => {
                    frame_hint = frame_bytes;
                    break;
                }
                Step::Served { consumed } if (1..=pending.len()).contains(&consumed) => {
                    pos += consumed;
                }
                Step::Deferred { consumed, reply } if (1..=pending.len()).contains(&consumed) => {
                    pos += consumed;
                    in_flight += 1;
                    let completions = completions.clone();
                    glommio::spawn_local(async move { completions.push(reply.await) }).detach();
                }
                Step::Served { .. } | Step::Deferred { .. } => {
                    closing = Some(CloseReason::HandlerBug);
                    break;
                }
                Step::Close(reason) => {
                    closing = Some(reason);
                    break;
                }
            }
        }
        input.consume(pos);
        // Serving stopped at the output bound: once written, serve on before waiting.
        let output_was_full = out.len() >= limits.output_bytes_max;

        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                return io_reason(&e);
            }
            out.clear();
            if out.capacity() > limits.output_bytes_max {
                out.shrink_to(constants::CONNECTION_INPUT_BYTES_INITIAL);
            }
            last_activity = Instant::now();
        }
        if let Some(reason) = closing {
            return reason;
        }
        if output_was_full {
            continue;
        }
        if in_flight == 0 && (stopping || peer_closed) {
            // A frame cut short by the client's close is dropped with the connection.
            return if stopping {
                CloseReason::Shutdown
            } else {
                CloseReason::PeerClosed
            };
        }

        let in_flight_max = handler.in_flight_max().unwrap_or(limits.in_flight_max);
        let can_read = !stopping && !peer_closed && in_flight < in_flight_max;
        if can_read && input.make_room(frame_hint).is_err() {
            return CloseReason::TooLarge;
        }
        let deadline = if !handler.is_established() {
            Some(started + limits.handshake_timeout)
        } else if in_flight == 0 {
            Some(last_activity + limits.idle_timeout)
        } else {
            None
        };

        let read = async {
            if can_read {
                Event::Read(stream.read(input.spare()).await)
            } else {
                future::pending().await
            }
        };
        let completed = async {
            if in_flight > 0 {
                completions.ready().await;
                Event::Completed
            } else {
                future::pending().await
            }
        };
        let timer = async {
            match deadline {
                Some(at) => {
                    glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                    Event::Timeout
                }
                None => future::pending().await,
            }
        };
        let stopped = async {
            if stopping {
                future::pending().await
            } else {
                // The semaphore never gets units: acquire only returns when it is closed.
                let _ = stop.acquire(1).await;
                Event::Stop
            }
        };
        match future::or(read, future::or(completed, future::or(stopped, timer))).await {
            Event::Read(Ok(0)) => peer_closed = true,
            Event::Read(Ok(n)) => {
                input.advance(n);
                last_activity = Instant::now();
            }
            Event::Read(Err(e)) => return io_reason(&e),
            Event::Completed => {}
            Event::Stop => stopping = true,
            Event::Timeout if handler.is_established() => return CloseReason::IdleTimeout,
            Event::Timeout => return CloseReason::HandshakeTimeout,
        }
    }
}

/// What woke the connection loop.
enum Event {
    Read(std::io::Result<usize>),
    Completed,
    Stop,
    Timeout,
}

fn io_reason(e: &std::io::Error) -> CloseReason {
    match e.kind() {
        std::io::ErrorKind::TimedOut => CloseReason::IdleTimeout,
        kind => CloseReason::Io(kind),
    }
}

/// The receive buffer: `buf[..filled]` holds received bytes not yet consumed, starting at
/// a frame boundary. It starts small and grows only for a frame that does not fit, up to
/// `constants::CONNECTION_INPUT_BYTES_MAX`, and shrinks back once that frame is consumed.
struct InputBuffer {
    buf: Vec<u8>,
    filled: usize,
}

/// The next frame cannot fit in the largest receive buffer allowed.
#[derive(Debug)]
struct FrameTooLarge;

impl InputBuffer {
    fn new() -> InputBuffer {
        InputBuffer {
            buf: vec![0; constants::CONNECTION_INPUT_BYTES_INITIAL],
            filled: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        self.buf.get(..self.filled).unwrap_or_default()
    }

    fn spare(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.filled..).unwrap_or_default()
    }

    fn advance(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.filled);
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
        if self.filled <= constants::CONNECTION_INPUT_BYTES_INITIAL
            && self.buf.len() > constants::CONNECTION_INPUT_BYTES_INITIAL
            && self.filled == 0
        {
            self.buf.truncate(constants::CONNECTION_INPUT_BYTES_INITIAL);
            self.buf.shrink_to_fit();
        }
    }

    /// Ensures there is room to read: grows to the announced frame size, or doubles when
    /// full with the size unknown.
    fn make_room(&mut self, frame_bytes: Option<usize>) -> Result<(), FrameTooLarge> {
        let want = match frame_bytes {
            Some(n) if n > self.buf.len() => n,
            _ if self.filled < self.buf.len() => return Ok(()),
            _ => self.buf.len().saturating_mul(2),
        };
        if frame_bytes.is_some_and(|n| n > constants::CONNECTION_INPUT_BYTES_MAX) {
            return Err(FrameTooLarge);
        }
        let want = want.min(constants::CONNECTION_INPUT_BYTES_MAX);
        if want <= self.filled {
            return Err(FrameTooLarge);
        }
        self.buf.resize(want, 0);
        Ok(())
    }
}

/// Replies of deferred requests, in completion order, waiting for the connection loop.
#[derive(Default)]
struct Completions {
    inner: RefCell<CompletionsInner>,
}

#[derive(Default)]
struct CompletionsInner {
    ready: Vec<Vec<u8>>,
    waker: Option<Waker>,
}

impl Completions {
    fn push(&self, reply: Vec<u8>) {
        let waker = {
            let mut inner = self.inner.borrow_mut();
            inner.ready.push(reply);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves every finished reply into `out`; returns how many.
    fn drain_into(&self, out: &mut Vec<u8>) -> usize {
        let mut inner = self.inner.borrow_mut();
        let n = inner.ready.len();
        for reply in inner.ready.drain(..) {
            out.extend_from_slice(&reply);
        }
        n
    }

    /// Resolves once at least one reply is waiting.
    async fn ready(&self) {
        future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.ready.is_empty() {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_buffer_grows_for_announced_frames_and_shrinks_back() {
        let mut input = InputBuffer::new();
        let initial = constants::CONNECTION_INPUT_BYTES_INITIAL;
        assert_eq!(input.spare().len(), initial);
        input.make_room(Some(initial * 3)).unwrap();
        assert_eq!(input.spare().len(), initial * 3);
        input.spare()[..4].copy_from_slice(b"abcd");
        input.advance(4);
        input.consume(1);
        assert_eq!(input.filled(), b"bcd");
        input.consume(3);
        assert_eq!(input.spare().len(), initial, "shrinks once empty");
    }

    #[test]
    fn input_buffer_doubles_when_full_and_refuses_past_the_max() {
        let mut input = InputBuffer::new();
        let initial = constants::CONNECTION_INPUT_BYTES_INITIAL;
        input.advance(initial);
        input.make_room(None).unwrap();
        assert_eq!(input.spare().len(), initial);
        assert!(input
            .make_room(Some(constants::CONNECTION_INPUT_BYTES_MAX + 1))
            .is_err());
        input
            .make_room(Some(constants::CONNECTION_INPUT_BYTES_MAX))
            .unwrap();
        input.advance(constants::CONNECTION_INPUT_BYTES_MAX);
        assert!(input.make_room(None).is_err(), "full at the max");
    }

    #[test]
    fn completions_drain_in_order() {
        let c = Completions::default();
        c.push(b"ab".to_vec());
        c.push(b"c".to_vec());
        futures_lite::future::block_on(c.ready());
        let mut out = Vec::new();
        assert_eq!(c.drain_into(&mut out), 2);
        assert_eq!(out, b"abc");
        assert_eq!(c.drain_into(&mut out), 0);
    }
}
