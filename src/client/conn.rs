//! One blocking connection to one node port: HELLO at open, then frames written from a
//! reused send buffer and read into a reused receive buffer. Replies are decoded in place
//! and turned into owned values before the buffer moves on.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::constants::FRAME_BODY_BYTES_MAX;
use crate::wire::{self, Decoded, Frame, Hello, HelloReply, Message, Role};

use super::error::{ClientError, Result};
use super::ClientConfig;

/// Receive buffer to start with; grows only for larger replies, up to one whole frame.
const RECV_BYTES_INITIAL: usize = 16 * 1024;

/// A connection idle for this long is probed (a nonblocking peek) before reuse, so one the
/// node closed for idleness is replaced before a request is lost on it.
const IDLE_PROBE_AFTER: Duration = Duration::from_secs(1);

/// One open, handshaken connection.
pub(crate) struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    send: Vec<u8>,
    recv: Vec<u8>,
    start: usize,
    end: usize,
    next_id: u32,
    last_used: Instant,
    hello: HelloReply,
}

impl Connection {
    /// Connects to `addr` with the configured timeouts and completes the handshake.
    pub(crate) fn open(addr: SocketAddr, config: &ClientConfig) -> Result<Connection> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let stream =
            TcpStream::connect_timeout(&addr, config.connect_timeout).map_err(connect_err)?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(config.io_timeout))
            .and_then(|()| stream.set_write_timeout(config.io_timeout))
            .map_err(connect_err)?;
        let mut conn = Connection {
            addr,
            stream,
            send: Vec::with_capacity(4096),
            recv: vec![0; RECV_BYTES_INITIAL],
            start: 0,
            end: 0,
            next_id: 1,
            last_used: Instant::now(),
            hello: HelloReply {
                version: 0,
                role: Role::Peer,
                features: 0,
                cluster_id: 0,
                node_id: 0,
                shard: 0,
                shard_count: 0,
            },
        };
        let hello = Message::Hello(Hello {
            version_min: wire::VERSION,
            version_max: wire::VERSION,
            role: Role::Client,
            features: 0,
            cluster_id: config.cluster_id,
            node_id: 0,
        });
        let id = conn.queue(&hello)?;
        let exchanged = conn.flush(false).and_then(|()| {
            conn.read_frame(false, |frame| match frame.message {
                Message::HelloReply(reply) if frame.request_id == id => Ok(reply),
                Message::Error(e) => Err(super::server_error(&e, false)),
                other => Err(ClientError::Protocol {
                    addr: addr.to_string(),
                    detail: format!("expected HELLO_REPLY, got {:?}", other.opcode()),
                }),
            })
        });
        let reply = match exchanged {
            Ok(reply) => reply?,
            // No request was sent yet: a connection lost during the handshake is a failure
            // to connect, so the caller may safely send its request elsewhere. (A node that
            // was just killed can still complete the TCP handshake from its listen backlog
            // for a moment, then reset the connection.)
            Err(ClientError::Io { source, .. }) => return Err(connect_err(source)),
            Err(e) => return Err(e),
        };
        if config.cluster_id != 0 && reply.cluster_id != config.cluster_id {
            return Err(ClientError::Protocol {
                addr: addr.to_string(),
                detail: format!(
                    "node belongs to cluster {}, expected {}",
                    reply.cluster_id, config.cluster_id
                ),
            });
        }
        conn.hello = reply;
        Ok(conn)
    }

    /// The node's answer to HELLO (node id, shard serving this connection, shard count).
    pub(crate) fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// Whether the node closed this connection while it sat idle (checked only after
    /// [`IDLE_PROBE_AFTER`], so a busy connection costs no extra system call).
    pub(crate) fn closed_while_idle(&self) -> bool {
        if self.last_used.elapsed() < IDLE_PROBE_AFTER {
            return false;
        }
        let mut byte = [0u8; 1];
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let closed = match self.stream.peek(&mut byte) {
            Ok(0) => true,
            // Unasked bytes on an idle client connection: something is off, start afresh.
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        closed || self.stream.set_nonblocking(false).is_err()
    }

    /// Appends a request to the send buffer and returns its request id (never 0).
    pub(crate) fn queue(&mut self, message: &Message<'_>) -> Result<u32> {
        let id = self.next_id;
        self.next_id = match self.next_id.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        wire::encode(id, message, &mut self.send)
            .map_err(|e| ClientError::Invalid(format!("cannot encode request: {e}")))?;
        Ok(id)
    }

    /// Writes the whole send buffer. `write` says whether it holds a write, so a failure
    /// is reported as indeterminate.
    pub(crate) fn flush(&mut self, write: bool) -> Result<()> {
        if self.send.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.send);
        self.send.clear();
        self.last_used = Instant::now();
        result.map_err(|source| self.io_error(source, write))
    }

    /// Reads until one whole frame is buffered, hands it to `f` (borrowed from the receive
    /// buffer) and drops it from the buffer.
    pub(crate) fn read_frame<R>(
        &mut self,
        write: bool,
        f: impl FnOnce(Frame<'_>) -> R,
    ) -> Result<R> {
        loop {
            let buffered = self.recv.get(self.start..self.end).unwrap_or_default();
            let needed = match wire::decode(buffered) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    let out = f(frame);
                    self.start += consumed;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    self.last_used = Instant::now();
                    return Ok(out);
                }
                Ok(Decoded::Incomplete { needed }) => needed.max(1),
                Err(e) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.to_string(),
                        detail: format!("undecodable reply: {}", e.error),
                    })
                }
            };
            self.make_room(needed);
            let n = match self.stream.read(&mut self.recv[self.end..]) {
                Ok(0) => {
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the node");
                    return Err(self.io_error(eof, write));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e, write)),
            };
            self.end += n;
        }
    }

    /// Makes room for at least `needed` more bytes after `end`: moves buffered bytes to the
    /// front, then grows (bounded by one maximal frame).
    fn make_room(&mut self, needed: usize) {
        if self.start > 0 {
            self.recv.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = self.end.saturating_add(needed);
        if want > self.recv.len() {
            let cap = FRAME_BODY_BYTES_MAX + wire::HEADER_BYTES;
            let len = want.max(self.recv.len() * 2).min(cap).max(want.min(cap));
            self.recv.resize(len, 0);
        }
    }

    fn io_error(&self, source: io::Error, indeterminate: bool) -> ClientError {
        ClientError::Io {
            addr: self.addr.to_string(),
            source,
            indeterminate,
        }
    }
}
