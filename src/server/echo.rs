//! A trivial protocol that exercises the runtime end to end until the wire codec takes its
//! place: length-prefixed frames echoed back, tagged with the shard that served them,
//! optionally after a hop through the cross-core mailbox.
//!
//! Frame: `len: u32 LE` (bytes that follow) then `op: u8` then the op's body.
//! - `ECHO` (0): body = payload. Reply: `ECHO`, `shard: u16 LE`, payload.
//! - `FORWARD` (1): body = `target: u16 LE`, payload. Served by shard `target` through the
//!   mailbox. Reply: `FORWARD`, the serving shard, payload.
//! - `DELAY` (2): body = `millis: u32 LE` (at most 10 000), payload. Replied after that
//!   long, as deferred work: it stands for a slow request in tests of in-flight bounds and
//!   shutdown.
//! - Anything else, an empty frame, or a length above `ECHO_FRAME_BYTES_MAX`: reply
//!   `ERROR` (0xFF) with one code byte, then the connection closes.
//!
//! The handshake is the first complete frame: until one arrives the handshake timeout runs.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::connection::{CloseReason, FrameHandler, Step};
use super::mailbox::Mailbox;
use super::runtime::{Service, ShardInfo};

/// Echo the payload.
pub const OP_ECHO: u8 = 0;
/// Echo the payload from another shard, through the mailbox.
pub const OP_FORWARD: u8 = 1;
/// Echo the payload after a delay.
pub const OP_DELAY: u8 = 2;
/// Longest delay `DELAY` accepts, in milliseconds.
pub const DELAY_MS_MAX: u32 = 10_000;
/// Error reply; the connection closes after it.
pub const OP_ERROR: u8 = 0xFF;
/// Error code: the frame is longer than `ECHO_FRAME_BYTES_MAX`.
pub const ERROR_TOO_LARGE: u8 = 1;
/// Error code: unknown op or a body too short for it.
pub const ERROR_MALFORMED: u8 = 2;
/// Error code: the target shard does not exist or no longer answers.
pub const ERROR_NO_SHARD: u8 = 3;
/// Largest frame the echo protocol accepts (after the length field).
pub const ECHO_FRAME_BYTES_MAX: usize = 1024 * 1024;

/// The echo service of one shard.
#[derive(Debug)]
pub struct EchoService {
    shard: u16,
    shutdowns: Option<Arc<AtomicU32>>,
}

/// A payload forwarded to the shard that must echo it.
#[derive(Debug)]
pub struct EchoRequest {
    /// The shard that owns (must serve) this request.
    pub target: u16,
    /// Bytes to echo.
    pub payload: Vec<u8>,
}

/// The echo of a forwarded request.
#[derive(Debug)]
pub struct EchoReply {
    /// The shard that served it.
    pub shard: u16,
    /// The echoed bytes.
    pub payload: Vec<u8>,
}

/// The echo protocol on one connection.
pub struct EchoHandler {
    shard: u16,
    mailbox: Rc<Mailbox<EchoRequest, EchoReply>>,
    established: bool,
}

impl EchoService {
    /// The service of the shard described by `info`; each shutdown hook run increments
    /// `shutdowns` when given (so tests can see the hooks ran).
    pub fn new(info: &ShardInfo, shutdowns: Option<Arc<AtomicU32>>) -> EchoService {
        EchoService {
            shard: info.shard,
            shutdowns,
        }
    }
}

impl Service for EchoService {
    type Request = EchoRequest;
    type Response = EchoReply;
    type Handler = EchoHandler;

    fn connection(self: &Rc<Self>, mailbox: &Rc<Mailbox<EchoRequest, EchoReply>>) -> EchoHandler {
        EchoHandler {
            shard: self.shard,
            mailbox: mailbox.clone(),
            established: false,
        }
    }

    fn serve_forwarded(
        self: Rc<Self>,
        _from: u16,
        req: EchoRequest,
    ) -> impl Future<Output = EchoReply> + 'static {
        assert_eq!(
            req.target, self.shard,
            "echo request for shard {} served by shard {}",
            req.target, self.shard
        );
        std::future::ready(EchoReply {
            shard: self.shard,
            payload: req.payload,
        })
    }

    fn shutdown(self: Rc<Self>) -> impl Future<Output = ()> + 'static {
        if let Some(counter) = &self.shutdowns {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        std::future::ready(())
    }
}

impl FrameHandler for EchoHandler {
    type Deferred = Pin<Box<dyn Future<Output = Vec<u8>>>>;

    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step<Self::Deferred> {
        let Some(len) = input.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)) else {
            return Step::Incomplete { frame_bytes: None };
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > ECHO_FRAME_BYTES_MAX {
            error_frame(out, ERROR_TOO_LARGE);
            return Step::Close(CloseReason::TooLarge);
        }
        let frame_bytes = 4 + len;
        let Some(body) = input.get(4..frame_bytes) else {
            return Step::Incomplete {
                frame_bytes: Some(frame_bytes),
            };
        };
        let Some((&op, rest)) = body.split_first() else {
            error_frame(out, ERROR_MALFORMED);
            return Step::Close(CloseReason::Malformed);
        };
        self.established = true;
        match op {
            OP_ECHO => {
                reply_frame(out, OP_ECHO, self.shard, rest);
                Step::Served {
                    consumed: frame_bytes,
                }
            }
            OP_FORWARD => {
                let Some((target, payload)) = rest
                    .split_first_chunk::<2>()
                    .map(|(t, p)| (u16::from_le_bytes(*t), p))
                else {
                    error_frame(out, ERROR_MALFORMED);
                    return Step::Close(CloseReason::Malformed);
                };
                if target == self.shard {
                    reply_frame(out, OP_FORWARD, self.shard, payload);
                    return Step::Served {
                        consumed: frame_bytes,
                    };
                }
                let mailbox = self.mailbox.clone();
                let req = EchoRequest {
                    target,
                    payload: payload.to_vec(),
                };
                Step::Deferred {
                    consumed: frame_bytes,
                    reply: Box::pin(async move {
                        let mut reply = Vec::new();
                        match mailbox.call(target, req).await {
                            Ok(r) => reply_frame(&mut reply, OP_FORWARD, r.shard, &r.payload),
                            Err(_) => error_frame(&mut reply, ERROR_NO_SHARD),
                        }
                        reply
                    }),
                }
            }
            OP_DELAY => {
                let Some((millis, payload)) = rest
                    .split_first_chunk::<4>()
                    .map(|(m, p)| (u32::from_le_bytes(*m), p))
                    .filter(|(m, _)| *m <= DELAY_MS_MAX)
                else {
                    error_frame(out, ERROR_MALFORMED);
                    return Step::Close(CloseReason::Malformed);
                };
                let shard = self.shard;
                let payload = payload.to_vec();
                Step::Deferred {
                    consumed: frame_bytes,
                    reply: Box::pin(async move {
                        glommio::timer::sleep(Duration::from_millis(millis.into())).await;
                        let mut reply = Vec::new();
                        reply_frame(&mut reply, OP_DELAY, shard, &payload);
                        reply
                    }),
                }
            }
            _ => {
                error_frame(out, ERROR_MALFORMED);
                Step::Close(CloseReason::Malformed)
            }
        }
    }

    fn is_established(&self) -> bool {
        self.established
    }
}

/// Encodes a request frame (client side; tests and tools).
pub fn request(op: u8, target: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let target = target.map(u16::to_le_bytes);
    let body_len = 1 + target.map_or(0, |t| t.len()) + payload.len();
    let mut frame = Vec::with_capacity(4 + body_len);
    frame.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    frame.push(op);
    if let Some(t) = target {
        frame.extend_from_slice(&t);
    }
    frame.extend_from_slice(payload);
    frame
}

/// A decoded reply frame (client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `ECHO` or `FORWARD`: op, serving shard, payload.
    Echo(u8, u16, Vec<u8>),
    /// `ERROR` with its code.
    Error(u8),
}

/// Decodes the first reply frame of `input`: the reply and its size, or `None` if
/// incomplete or malformed (clients in tests treat both as "read more").
pub fn parse_reply(input: &[u8]) -> Option<(Reply, usize)> {
    let len = usize::try_from(u32::from_le_bytes(*input.first_chunk::<4>()?)).ok()?;
    let body = input.get(4..4 + len)?;
    let (&op, rest) = body.split_first()?;
    let reply = if op == OP_ERROR {
        Reply::Error(*rest.first()?)
    } else {
        let (shard, payload) = rest.split_first_chunk::<2>()?;
        Reply::Echo(op, u16::from_le_bytes(*shard), payload.to_vec())
    };
    Some((reply, 4 + len))
}

fn reply_frame(out: &mut Vec<u8>, op: u8, shard: u16, payload: &[u8]) {
    let len = u32::try_from(3 + payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(op);
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(payload);
}

fn error_frame(out: &mut Vec<u8>, code: u8) {
    out.extend_from_slice(&2u32.to_le_bytes());
    out.push(OP_ERROR);
    out.push(code);
}
