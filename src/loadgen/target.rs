//! The servers the benchmark can measure. A [`Target`] names the address and makes one
//! [`TargetConn`] per connection: the protocol half of a connection, sans-IO. The driver owns
//! the sockets and the clock; a `TargetConn` only turns operations into request bytes and
//! reply bytes into outcomes, so one event loop serves every protocol.
//!
//! The Rotor protocol ([`super::rotor`]) follows these rules: `handshake` writes the client
//! `HELLO` and `decode` reports [`Reply::HandshakeDone`] on `HELLO_REPLY` (requests wait for
//! it); `encode` writes a GET or PUT frame whose request id is derived from `tag` (ids are
//! the requester's choice; keep them non-zero, as 0 is the push id); `decode` returns the id
//! of each reply, since a node may answer out of order. `addr` may pick a shard's own port
//! per connection index, and `groups`/`group_of_key` keep each key on connections to its
//! owning shard, to make the benchmark shard-aware.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::resp::{self, ReplyKind, RespError};

/// A server under test: where it listens and how to speak to it.
pub trait Target: Send + Sync {
    /// Protocol state of one connection.
    type Conn: TargetConn;

    /// Where connection number `index` connects (the same for every connection unless the
    /// protocol spreads them, e.g. over per-shard ports).
    fn addr(&self, index: usize) -> SocketAddr;

    /// Fresh protocol state for a new (or re-opened) connection that may keep up to `depth`
    /// requests in flight.
    fn new_conn(&self, depth: usize) -> Self::Conn;

    /// How many groups connections fall into (e.g. one per shard port); a connection is
    /// only given keys of its own group. One group (the default) means any key anywhere.
    fn groups(&self) -> usize {
        1
    }

    /// The group of connection number `index` (consistent with [`Target::addr`]).
    fn group_of_conn(&self, index: usize) -> usize {
        let _ = index;
        0
    }

    /// The group whose connections key number `key` must be sent on.
    fn group_of_key(&self, key: u64) -> usize {
        let _ = key;
        0
    }
}

/// One operation as handed to a protocol: borrowed key and value, no allocation.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Read `key`.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Write `value` under `key`.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
}

/// How a request ended, as the statistics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server did what was asked (a read found a value; a write was acknowledged).
    Ok,
    /// A read found no value: successful, counted apart.
    Miss,
    /// The server answered with an error.
    Error,
}

/// One reply decoded from the front of a connection's receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes consumed from the front of the buffer.
    pub len: usize,
    /// What it was.
    pub reply: Reply,
}

/// What a decoded reply means to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The answer to the request sent with `tag`.
    Answer {
        /// The tag given to [`TargetConn::encode`].
        tag: u32,
        /// What the answer said.
        outcome: Outcome,
    },
    /// The handshake succeeded: requests may be sent now.
    HandshakeDone,
    /// A message that answers no request (a push): skipped.
    Skip,
}

/// Why a connection's byte stream cannot be understood any more; the driver closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// Malformed RESP.
    Resp(RespError),
    /// An undecodable Rotor frame.
    Rotor(crate::wire::Error),
    /// A reply arrived with no request waiting for it.
    Unsolicited,
    /// The server refused the handshake.
    HandshakeRefused,
}

/// The protocol half of one connection.
pub trait TargetConn: Send {
    /// Appends the first bytes of a new connection to `out` and says whether requests must
    /// wait for [`Reply::HandshakeDone`]. The default sends nothing and waits for nothing.
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        let _ = out;
        false
    }

    /// Appends the request for `request` to `out`; its reply will carry back `tag`.
    fn encode(&mut self, request: Request<'_>, tag: u32, out: &mut Vec<u8>);

    /// Decodes one reply from the front of `input`; `Ok(None)` if it is not complete yet.
    fn decode(&mut self, input: &[u8]) -> Result<Option<Decoded>, ProtocolError>;
}

/// A Redis-compatible server, spoken to in RESP with GET and SET.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    addr: SocketAddr,
}

/// RESP connection state: Redis answers in order, so tags wait in a FIFO.
#[derive(Debug)]
pub struct RedisConn {
    /// Tags of requests sent and not answered yet, oldest first; never more than the
    /// connection's depth, allocated once.
    waiting: VecDeque<u32>,
}

impl RedisTarget {
    /// A target at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }
}

impl Target for RedisTarget {
    type Conn = RedisConn;

    fn addr(&self, _index: usize) -> SocketAddr {
        self.addr
    }

    fn new_conn(&self, depth: usize) -> RedisConn {
        RedisConn {
            waiting: VecDeque::with_capacity(depth),
        }
    }
}

impl TargetConn for RedisConn {
    fn encode(&mut self, request: Request<'_>, tag: u32, out: &mut Vec<u8>) {
        match request {
            Request::Get { key } => resp::encode_get(key, out),
            Request::Put { key, value } => resp::encode_set(key, value, out),
        }
        self.waiting.push_back(tag);
    }

    fn decode(&mut self, input: &[u8]) -> Result<Option<Decoded>, ProtocolError> {
        let Some(reply) = resp::parse_reply(input).map_err(ProtocolError::Resp)? else {
            return Ok(None);
        };
        let tag = self.waiting.pop_front().ok_or(ProtocolError::Unsolicited)?;
        let outcome = match reply.kind {
            ReplyKind::Error => Outcome::Error,
            ReplyKind::Nil => Outcome::Miss,
            ReplyKind::Simple | ReplyKind::Integer | ReplyKind::Bulk | ReplyKind::Array => {
                Outcome::Ok
            }
        };
        Ok(Some(Decoded {
            len: reply.len,
            reply: Reply::Answer { tag, outcome },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_replies_return_tags_in_order() {
        let target = RedisTarget::new("127.0.0.1:1".parse().unwrap());
        let mut conn = target.new_conn(4);
        let mut out = Vec::new();
        assert!(!conn.handshake(&mut out));
        assert!(out.is_empty());
        conn.encode(Request::Get { key: b"a" }, 7, &mut out);
        conn.encode(
            Request::Put {
                key: b"a",
                value: b"v",
            },
            3,
            &mut out,
        );
        conn.encode(Request::Get { key: b"b" }, 9, &mut out);
        let replies: &[u8] = b"$1\r\nv\r\n+OK\r\n-ERR no\r\n$-1\r\n";
        let answer = |tag, outcome| Reply::Answer { tag, outcome };
        let first = conn.decode(replies).unwrap().unwrap();
        assert_eq!((first.reply, first.len), (answer(7, Outcome::Ok), 7));
        let second = conn.decode(&replies[7..]).unwrap().unwrap();
        assert_eq!(second.reply, answer(3, Outcome::Ok));
        let third = conn.decode(&replies[12..]).unwrap().unwrap();
        assert_eq!(third.reply, answer(9, Outcome::Error));
        // Nothing is waiting any more: a further reply is a protocol error.
        assert_eq!(conn.decode(&replies[21..]), Err(ProtocolError::Unsolicited));
        // An incomplete reply leaves the waiting tags alone.
        conn.encode(Request::Get { key: b"c" }, 1, &mut out);
        assert_eq!(conn.decode(b"$-"), Ok(None));
        let miss = conn.decode(b"$-1\r\n").unwrap().unwrap();
        assert_eq!(miss.reply, answer(1, Outcome::Miss));
    }
}
