//! Shared by the `server_*` integration tests: start a real `rotord` on free loopback ports
//! with a temporary data directory, and speak raw frames to it with `wire::encode` and
//! `wire::decode` over a blocking `TcpStream`.
//!
//! Reads time out after 30 s, so a broken server fails a test instead of hanging it; no
//! test asserts on timing.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use rotor::constants::PARTITIONS_DEFAULT;
use rotor::ring::{key_position, partition_of_position};
use rotor::wire::{
    self, Decoded, Delete, ErrorCode, Get, Hello, Message, Options, Put, Role, Stats, Topology,
};

/// A running `rotord`.
pub struct Server {
    child: Child,
    /// The common client address.
    pub listen: SocketAddr,
}

/// A reply, copied out of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// HELLO_REPLY: node id, serving shard, shard count.
    Hello {
        /// The node.
        node_id: u64,
        /// The shard serving the connection.
        shard: u16,
        /// Shards of the node.
        shard_count: u16,
    },
    /// GET_REPLY: siblings (sorted) and context.
    Get {
        /// Live sibling values, sorted.
        siblings: Vec<Vec<u8>>,
        /// The context.
        context: Vec<u8>,
    },
    /// PUT_REPLY with its context.
    Put(Vec<u8>),
    /// DELETE_REPLY with its context.
    Delete(Vec<u8>),
    /// TOPOLOGY_REPLY: per-shard ports of the only node, and each partition's shard.
    Topology {
        /// Per-shard ports.
        ports: Vec<u16>,
        /// Shard of each partition.
        owners: Vec<u16>,
    },
    /// STATS_REPLY entries.
    Stats(Vec<(u16, String, u64)>),
    /// ERROR.
    Error {
        /// The code.
        code: ErrorCode,
        /// Replicas that answered.
        answered: u8,
        /// Replicas needed.
        needed: u8,
        /// The explanation.
        message: String,
    },
    /// Anything else, by opcode number.
    Other(u8),
}

impl Server {
    /// Starts `rotord` on `data` with extra flags (e.g. `--fsync always`), `cores` shards.
    pub fn start(data: &Path, cores: usize, extra: &[&str]) -> Server {
        let (child, listen) = common::spawn(data, &cores.to_string(), extra);
        Server { child, listen }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Stops with SIGTERM and waits; returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("wait")
    }

    /// Kills with SIGKILL (no shutdown at all) and waits.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }

    /// A connection to the common port, after the handshake.
    pub fn connect(&self) -> Conn {
        let mut conn = Conn::open(self.listen);
        conn.hello();
        conn
    }

    /// The per-shard ports and each partition's shard, from TOPOLOGY.
    pub fn topology(&self) -> (Vec<u16>, Vec<u16>) {
        let mut conn = self.connect();
        match conn.call(&Message::Topology(Topology {})) {
            Reply::Topology { ports, owners } => (ports, owners),
            other => panic!("unexpected {other:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking client connection speaking raw frames.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
    next_id: u32,
}

impl Conn {
    /// Connects without a handshake.
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    /// Sends HELLO as a client and returns the reply.
    pub fn hello(&mut self) -> Reply {
        let reply = self.call(&hello());
        assert!(matches!(reply, Reply::Hello { .. }), "{reply:?}");
        reply
    }

    /// Sends `message` with request id `id`.
    pub fn send(&mut self, id: u32, message: &Message<'_>) {
        let mut out = Vec::new();
        wire::encode(id, message, &mut out).expect("encodes");
        self.send_raw(&out);
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Closes the sending side (the server sees end of stream).
    pub fn finish(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The next reply and its request id, or `None` once the server closed.
    pub fn recv(&mut self) -> Option<(u32, Reply)> {
        loop {
            match wire::decode(&self.buf) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    let reply = (frame.request_id, own(&frame.message));
                    self.buf.drain(..consumed);
                    return Some(reply);
                }
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => panic!("the server sent a bad frame: {e:?}"),
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends `message` and waits for its reply (checking the request id).
    pub fn call(&mut self, message: &Message<'_>) -> Reply {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send(id, message);
        let (got, reply) = self.recv().expect("a reply before the close");
        assert_eq!(got, id, "reply to another request: {reply:?}");
        reply
    }

    /// GET: sorted siblings and the context.
    pub fn get(&mut self, key: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
        match self.call(&get(key)) {
            Reply::Get { siblings, context } => (siblings, context),
            other => panic!("GET failed: {other:?}"),
        }
    }

    /// PUT with `context`; returns the new context.
    pub fn put(&mut self, key: &[u8], value: &[u8], context: &[u8]) -> Vec<u8> {
        match self.call(&put(key, value, context)) {
            Reply::Put(context) => context,
            other => panic!("PUT failed: {other:?}"),
        }
    }

    /// DELETE with `context`; returns the new context.
    pub fn delete(&mut self, key: &[u8], context: &[u8]) -> Vec<u8> {
        match self.call(&delete(key, context)) {
            Reply::Delete(context) => context,
            other => panic!("DELETE failed: {other:?}"),
        }
    }

    /// STATS entries.
    pub fn stats(&mut self) -> Vec<(u16, String, u64)> {
        match self.call(&Message::Stats(Stats {})) {
            Reply::Stats(entries) => entries,
            other => panic!("STATS failed: {other:?}"),
        }
    }
}

/// Options asking for the server's defaults.
pub const DEFAULTS: Options = Options {
    n: 0,
    quorum: 0,
    timeout_ms: 0,
};

/// A client HELLO for version 1.
pub fn hello() -> Message<'static> {
    Message::Hello(Hello {
        version_min: 1,
        version_max: 1,
        role: Role::Client,
        features: 0,
        cluster_id: 0,
        node_id: 0,
    })
}

/// A GET with default options.
pub fn get(key: &[u8]) -> Message<'_> {
    Message::Get(Get {
        options: DEFAULTS,
        key,
    })
}

/// A PUT with default options, asking for the new context.
pub fn put<'a>(key: &'a [u8], value: &'a [u8], context: &'a [u8]) -> Message<'a> {
    Message::Put(Put {
        options: DEFAULTS,
        return_context: true,
        key,
        context,
        value,
    })
}

/// A DELETE with default options, asking for the new context.
pub fn delete<'a>(key: &'a [u8], context: &'a [u8]) -> Message<'a> {
    Message::Delete(Delete {
        options: DEFAULTS,
        return_context: true,
        key,
        context,
    })
}

/// The partition of `key` in a ring of the default size.
pub fn partition(key: &[u8]) -> usize {
    partition_of_position(key_position(key), PARTITIONS_DEFAULT).0 as usize
}

/// The sum of counter `name` over every shard.
pub fn total(stats: &[(u16, String, u64)], name: &str) -> u64 {
    stats
        .iter()
        .filter(|(_, n, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

fn own(message: &Message<'_>) -> Reply {
    match message {
        Message::HelloReply(h) => Reply::Hello {
            node_id: h.node_id,
            shard: h.shard,
            shard_count: h.shard_count,
        },
        Message::GetReply(g) => {
            let mut siblings: Vec<Vec<u8>> = g.siblings.iter().map(|s| s.to_vec()).collect();
            siblings.sort();
            Reply::Get {
                siblings,
                context: g.context.to_vec(),
            }
        }
        Message::PutReply(p) => Reply::Put(p.context.to_vec()),
        Message::DeleteReply(d) => Reply::Delete(d.context.to_vec()),
        Message::TopologyReply(t) => Reply::Topology {
            ports: t
                .nodes
                .first()
                .map(|n| n.ports.to_vec())
                .unwrap_or_default(),
            owners: t.owners.iter().map(|o| o.shard).collect(),
        },
        Message::StatsReply(s) => Reply::Stats(
            s.stats
                .iter()
                .map(|e| (e.shard, e.name.to_string(), e.value))
                .collect(),
        ),
        Message::Error(e) => Reply::Error {
            code: e.code,
            answered: e.answered,
            needed: e.needed,
            message: e.message.to_string(),
        },
        other => Reply::Other(other.opcode().to_wire()),
    }
}
