//! The bundled Rotor client: blocking, for a plain `main` without an async runtime. It sits
//! in front of everything else: it speaks the wire protocol ([`crate::wire`]) over std
//! `TcpStream`s and routes each key the way the node would ([`crate::ring`]'s MD5 rule and
//! the topology's owner table), so a request goes straight to the shard that owns its
//! partition and the node does not forward it across cores.
//!
//! [`Client::connect`] sends `HELLO` to one node, fetches `TOPOLOGY`, and then opens one
//! connection per (node, shard port) on first use. An `ERROR` saying `WRONG_SHARD` or
//! `NOT_OWNER`, or carrying a newer ring epoch, makes it fetch the topology again and retry
//! once (those codes guarantee the request was not applied). [`Client::batch`] pipelines
//! many requests and matches replies by request id, so replies may come in any order.
//!
//! In a cluster, a node that refuses connections (or drops one under a read) is taken as
//! unreachable for [`ClientConfig::node_retry_after`]: its keys go meanwhile to the next node clockwise
//! on the ring ([`Topology::fallback_addr`]), which coordinates them as any node may. Only
//! requests that cannot have been applied are sent again (a refused connection, or a read):
//! a write lost with its connection is reported as indeterminate, never resent.
//! [`ClientConfig::pin_to_seed`] sends everything through the one node given instead.
//!
//! ```no_run
//! let mut client = rotor::client::Client::connect("127.0.0.1:7070")?;
//! client.put(b"user:42", b"alice", None)?;
//! let read = client.get(b"user:42")?;
//! client.put(b"user:42", b"alice v2", Some(&read.context))?;
//! # Ok::<(), rotor::client::ClientError>(())
//! ```

mod admin;
mod conn;
mod error;
mod topology;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::wire::{self, ErrorCode, ErrorReply, Message};

pub use admin::{PlanInfo, StatusInfo, ADMIN_OVERLOADED_WAIT, ADMIN_RETRY_INTERVAL};
use conn::Connection;
pub use error::{ClientError, Result};
pub use topology::{NodeEntry, Owner, Route, Topology};

/// Time allowed for a TCP connect before [`ClientError::Connect`].
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);

/// Time allowed for one read or write on a socket before [`ClientError::Io`] (a timed-out
/// write request is indeterminate). Longer than the node's own request deadline, so the
/// node's TIMEOUT/INDETERMINATE reply normally arrives first.
pub const IO_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Requests a batch keeps in flight on one connection. The node bounds its own in-flight
/// requests and output buffer; a client that wrote a whole large batch before reading
/// could fill both socket buffers and wait forever, so it reads as it goes.
pub const BATCH_WINDOW: usize = 128;

/// Default of [`ClientConfig::node_retry_after`]: long enough not to pay a refused connect
/// per request, short enough to return to a restarted node within a few seconds.
pub const NODE_RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(2);

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Read/write timeout on every socket; `None` waits forever.
    pub io_timeout: Option<Duration>,
    /// Cluster id the node must belong to; 0 accepts any.
    pub cluster_id: u64,
    /// Send each key to its owning shard's port (`true`), or to its owning node's common
    /// address.
    pub shard_aware: bool,
    /// Send every request to the address given to `connect` (its common port), whatever
    /// the key, so that node coordinates or forwards it: to go through one chosen node,
    /// or through a load balancer. No rerouting around unreachable nodes.
    pub pin_to_seed: bool,
    /// How long a node that could not be reached is routed around before the client tries
    /// it again.
    pub node_retry_after: Duration,
    /// Options used by requests that do not give their own.
    pub options: RequestOptions,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            io_timeout: Some(IO_TIMEOUT_DEFAULT),
            cluster_id: 0,
            shard_aware: true,
            pin_to_seed: false,
            node_retry_after: NODE_RETRY_AFTER_DEFAULT,
            options: RequestOptions::default(),
        }
    }
}

/// Per-request replication settings; 0 in any field means the node's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Replicas N.
    pub n: u8,
    /// R for reads, W for writes.
    pub quorum: u8,
    /// Server-side deadline in milliseconds.
    pub timeout_ms: u32,
}

/// What a read found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResult {
    /// Every live sibling value; empty if the key is absent or deleted.
    pub siblings: Vec<Vec<u8>>,
    /// Opaque causal context covering all of them: pass it to the next write of the key.
    pub context: Vec<u8>,
}

impl GetResult {
    /// Whether the key has no live value.
    pub fn is_absent(&self) -> bool {
        self.siblings.is_empty()
    }
}

/// One counter of one shard, from `STATS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The shard.
    pub shard: u16,
    /// Dotted counter name, e.g. `get.count`.
    pub name: String,
    /// Its value.
    pub value: u64,
}

/// One request of a [`Client::batch`].
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// Read a key.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Write a value; `context` from an earlier read of the key, or empty for a blind write.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// The context, or empty.
        context: &'a [u8],
    },
    /// Delete a key (write a tombstone) superseding what `context` covers.
    Delete {
        /// The key.
        key: &'a [u8],
        /// The context.
        context: &'a [u8],
    },
}

/// A successful answer to one [`Op`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpReply {
    /// What a `Get` found.
    Get(GetResult),
    /// A `Put` or `Delete` was acknowledged; the context after it.
    Written {
        /// The key's context after the write.
        context: Vec<u8>,
    },
}

/// A blocking, partition- and shard-aware Rotor client. Not `Sync`: one per thread.
pub struct Client {
    seed: SocketAddr,
    config: ClientConfig,
    topology: Topology,
    conns: HashMap<SocketAddr, Connection>,
    /// Nodes found unreachable, by id, with when; routed around for
    /// [`ClientConfig::node_retry_after`].
    unreachable: HashMap<u64, Instant>,
    /// Requests sent again around an unreachable node.
    reroutes: u64,
}

impl Client {
    /// Connects to the node at `addr` (`HOST:PORT`) with default settings, says HELLO and
    /// fetches the topology.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        Client::connect_with(addr, ClientConfig::default())
    }

    /// [`Client::connect`] with explicit settings.
    pub fn connect_with(addr: impl ToSocketAddrs, config: ClientConfig) -> Result<Client> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Connect {
                addr: "(unresolved)".into(),
                source,
            })?
            .collect();
        let mut last = None;
        for seed in addrs {
            match Connection::open(seed, &config) {
                Ok(conn) => {
                    let mut client = Client {
                        seed,
                        config,
                        topology: Topology {
                            epoch: 0,
                            nodes: Vec::new(),
                            owners: Vec::new(),
                        },
                        conns: HashMap::new(),
                        unreachable: HashMap::new(),
                        reroutes: 0,
                    };
                    client.conns.insert(seed, conn);
                    client.refresh_topology()?;
                    return Ok(client);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: "(no address)".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address resolved"),
        }))
    }

    /// The topology the client routes by.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The address the client was given (after resolution).
    pub fn seed(&self) -> SocketAddr {
        self.seed
    }

    /// Fetches `TOPOLOGY` from the seed node again and routes by it from now on.
    pub fn refresh_topology(&mut self) -> Result<&Topology> {
        let seed = self.seed;
        let reply = self.call(
            seed,
            &Message::Topology(wire::Topology {}),
            false,
            |m| match m {
                Message::TopologyReply(t) => Some(Topology::from_reply(&t)),
                _ => None,
            },
        )?;
        self.topology = reply;
        Ok(&self.topology)
    }

    /// Where a request for `key` goes under the current topology: its owner, or the next
    /// reachable node when the owner was found unreachable (see the module docs), or the
    /// seed when pinned to it.
    pub fn route(&self, key: &[u8]) -> Result<Route> {
        let mut route = self
            .topology
            .route(key, self.seed, self.config.shard_aware)?;
        if self.config.pin_to_seed {
            route.addr = self.seed;
        } else if self.is_unreachable(route.node) {
            let down = |index: u16| {
                self.topology
                    .nodes
                    .get(usize::from(index))
                    .is_some_and(|n| self.is_unreachable(n.id))
            };
            if let Some((via, addr)) = self
                .topology
                .fallback_addr(route.partition, self.seed, down)
            {
                route.via = Some(via);
                route.addr = addr;
            }
        }
        Ok(route)
    }

    /// Nodes currently routed around because they could not be reached, by id.
    pub fn unreachable_nodes(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .unreachable
            .keys()
            .copied()
            .filter(|&id| self.is_unreachable(id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many requests were sent again around an unreachable node since the client was
    /// made (each counts once per resend).
    pub fn reroutes(&self) -> u64 {
        self.reroutes
    }

    fn is_unreachable(&self, node: u64) -> bool {
        self.unreachable
            .get(&node)
            .is_some_and(|since| since.elapsed() < self.config.node_retry_after)
    }

    /// Notes that the node `route` sent to could not be reached. Returns whether routing
    /// around it is possible and useful (not pinned, and the node was not already known
    /// unreachable, so a rerouted request is never sent to the same place twice).
    fn mark_unreachable(&mut self, route: &Route) -> bool {
        if self.config.pin_to_seed {
            return false;
        }
        let node = route.via.unwrap_or(route.node);
        if self.is_unreachable(node) {
            return false;
        }
        self.unreachable.insert(node, Instant::now());
        true
    }

    /// The node id and shard that serve the connection to `addr`, opening it if needed
    /// (for checking shard-aware routing).
    pub fn serving_shard(&mut self, addr: SocketAddr) -> Result<(u64, u16)> {
        let hello = self.connection(addr)?.hello();
        Ok((hello.node_id, hello.shard))
    }

    /// Reads `key` with the default options.
    pub fn get(&mut self, key: &[u8]) -> Result<GetResult> {
        self.get_with(key, self.config.options)
    }

    /// Reads `key` with `options`.
    pub fn get_with(&mut self, key: &[u8], options: RequestOptions) -> Result<GetResult> {
        match self.routed(Op::Get { key }, options)? {
            OpReply::Get(r) => Ok(r),
            OpReply::Written { .. } => Err(self.unexpected()),
        }
    }

    /// Writes `value` under `key`. `context` comes from an earlier read of the key (the new
    /// value supersedes what it covers); `None` is a blind write, which becomes a sibling
    /// of whatever exists. Returns the key's context after the write.
    pub fn put(&mut self, key: &[u8], value: &[u8], context: Option<&[u8]>) -> Result<Vec<u8>> {
        self.put_with(key, value, context, self.config.options)
    }

    /// [`Client::put`] with `options`.
    pub fn put_with(
        &mut self,
        key: &[u8],
        value: &[u8],
        context: Option<&[u8]>,
        options: RequestOptions,
    ) -> Result<Vec<u8>> {
        let op = Op::Put {
            key,
            value,
            context: context.unwrap_or_default(),
        };
        self.written(op, options)
    }

    /// Deletes `key` (writes a tombstone) superseding what `context` covers. Returns the
    /// key's context after the deletion.
    pub fn delete(&mut self, key: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        self.delete_with(key, context, self.config.options)
    }

    /// [`Client::delete`] with `options`.
    pub fn delete_with(
        &mut self,
        key: &[u8],
        context: &[u8],
        options: RequestOptions,
    ) -> Result<Vec<u8>> {
        self.written(Op::Delete { key, context }, options)
    }

    /// The seed node's counters, per shard.
    pub fn stats(&mut self) -> Result<Vec<Stat>> {
        let seed = self.seed;
        self.call(seed, &Message::Stats(wire::Stats {}), false, |m| match m {
            Message::StatsReply(s) => Some(
                s.stats
                    .iter()
                    .map(|s| Stat {
                        shard: s.shard,
                        name: s.name.to_owned(),
                        value: s.value,
                    })
                    .collect(),
            ),
            _ => None,
        })
    }

    /// Sends every op pipelined, each to its owning shard, and returns one result per op
    /// in the order given. Replies are matched by request id, so the node may answer in
    /// any order. A connection failure fails the ops still waiting on it (writes among them
    /// as indeterminate); an `ERROR` fails only its own op. Ops are not retried.
    pub fn batch(&mut self, ops: &[Op<'_>]) -> Vec<Result<OpReply>> {
        self.batch_with(ops, self.config.options)
    }

    /// [`Client::batch`] with `options` for every op. Ops that could not be applied
    /// because their node was unreachable (refused connection; reads lost with their
    /// connection) are sent again around it, as [`Client::get`] and the others do.
    pub fn batch_with(&mut self, ops: &[Op<'_>], options: RequestOptions) -> Vec<Result<OpReply>> {
        let mut results: Vec<Option<Result<OpReply>>> = ops.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..ops.len()).collect();
        let mut stale = false;
        // Each round marks at least one more node unreachable, so this ends.
        while !pending.is_empty() {
            let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
            for &index in &pending {
                match self.route(ops[index].key()) {
                    Ok(route) => match groups.iter_mut().find(|(r, _)| r.addr == route.addr) {
                        Some((_, list)) => list.push(index),
                        None => groups.push((route, vec![index])),
                    },
                    Err(e) => results[index] = Some(Err(e)),
                }
            }
            pending.clear();
            for (route, indexes) in groups {
                self.pipeline(route.addr, ops, &indexes, options, &mut results, &mut stale);
                let failed = indexes
                    .iter()
                    .copied()
                    .filter(|&i| matches!(&results[i], Some(Err(e)) if e.is_connection()));
                let failed: Vec<usize> = failed.collect();
                if failed.is_empty() || !self.mark_unreachable(&route) {
                    continue;
                }
                let before = pending.len();
                pending.extend(failed.into_iter().filter(
                    |&i| matches!(&results[i], Some(Err(e)) if resendable(e, ops[i].is_write())),
                ));
                self.reroutes += (pending.len() - before) as u64;
            }
        }
        if stale {
            // The next calls route by the fresh ring; a failure here shows up on them.
            let _ = self.refresh_topology();
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ClientError::Invalid("op not sent".into()))))
            .collect()
    }

    /// Runs one connection's share of a batch with at most [`BATCH_WINDOW`] in flight.
    fn pipeline(
        &mut self,
        addr: SocketAddr,
        ops: &[Op<'_>],
        indexes: &[usize],
        options: RequestOptions,
        results: &mut [Option<Result<OpReply>>],
        stale: &mut bool,
    ) {
        let epoch = self.topology.epoch;
        let mut waiting: HashMap<u32, usize> = HashMap::with_capacity(BATCH_WINDOW);
        let mut next = 0;
        let failure = loop {
            let conn = match self.connection(addr) {
                Ok(conn) => conn,
                Err(e) => break Some(e),
            };
            let mut queued_write = false;
            while next < indexes.len() && waiting.len() < BATCH_WINDOW {
                let index = indexes[next];
                next += 1;
                match conn.queue(&ops[index].message(options)) {
                    Ok(id) => {
                        waiting.insert(id, index);
                        queued_write |= ops[index].is_write();
                    }
                    Err(e) => results[index] = Some(Err(e)),
                }
            }
            if let Err(e) = conn.flush(queued_write) {
                break Some(e);
            }
            if waiting.is_empty() {
                break None;
            }
            // Read until half the window is free, then top it up again.
            let mut failed = None;
            while !waiting.is_empty() && (waiting.len() > BATCH_WINDOW / 2 || next == indexes.len())
            {
                let any_write = waiting.values().any(|&i| ops[i].is_write());
                let read = conn.read_frame(any_write, |frame| {
                    let index = waiting.remove(&frame.request_id);
                    index.map(|i| (i, reply_of(frame.message, ops[i].is_write())))
                });
                match read {
                    Ok(Some((index, reply))) => {
                        if let Err(ClientError::Server {
                            code, ring_epoch, ..
                        }) = &reply
                        {
                            *stale |= is_routing(*code) || *ring_epoch > epoch;
                        }
                        results[index] = Some(reply);
                    }
                    Ok(None) => {
                        failed = Some(ClientError::Protocol {
                            addr: addr.to_string(),
                            detail: "reply to an unknown request id".into(),
                        });
                        break;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if failed.is_some() {
                break failed;
            }
        };
        let Some(failure) = failure else {
            return;
        };
        self.conns.remove(&addr);
        // Every op still waiting or never sent on this connection fails with it.
        let lost = waiting.into_values().chain(indexes[next..].iter().copied());
        let sent: Vec<usize> = lost.collect();
        for index in sent {
            let was_sent = !indexes[next..].contains(&index);
            results[index] = Some(Err(copy_failure(
                &failure,
                was_sent && ops[index].is_write(),
            )));
        }
    }

    /// One op with routing, the single retry after a routing error, and rerouting around
    /// unreachable nodes when the op cannot have been applied.
    fn routed(&mut self, op: Op<'_>, options: RequestOptions) -> Result<OpReply> {
        let mut retried = false;
        // Each reroute marks one more node unreachable, so this ends.
        loop {
            let route = self.route(op.key())?;
            let write = op.is_write();
            let result = self.call(route.addr, &op.message(options), write, |m| {
                Some(reply_of(m, write))
            });
            let reply = match result {
                Ok(reply) => reply,
                Err(e) => Err(e),
            };
            match reply {
                Err(e) if e.is_connection() => {
                    let rerouted = self.mark_unreachable(&route);
                    if !(rerouted && resendable(&e, write)) {
                        return Err(e);
                    }
                    self.reroutes += 1;
                }
                Err(ClientError::Server {
                    code, ring_epoch, ..
                }) if !retried
                    && (is_routing(code)
                        || (ring_epoch > self.topology.epoch && code.retry_safe())) =>
                {
                    retried = true;
                    self.refresh_topology()?;
                }
                other => return other,
            }
        }
    }

    fn written(&mut self, op: Op<'_>, options: RequestOptions) -> Result<Vec<u8>> {
        match self.routed(op, options)? {
            OpReply::Written { context } => Ok(context),
            OpReply::Get(_) => Err(self.unexpected()),
        }
    }

    /// Sends one request to `addr` and converts its reply with `convert` (`None`: the reply
    /// is of the wrong kind). An `ERROR` reply becomes [`ClientError::Server`].
    fn call<T>(
        &mut self,
        addr: SocketAddr,
        message: &Message<'_>,
        write: bool,
        convert: impl FnOnce(Message<'_>) -> Option<T>,
    ) -> Result<T> {
        let result = (|| {
            let conn = self.connection(addr)?;
            let id = conn.queue(message)?;
            conn.flush(write)?;
            conn.read_frame(write, |frame| {
                if frame.request_id != id {
                    return Err(ClientError::Protocol {
                        addr: addr.to_string(),
                        detail: format!(
                            "reply to request {} while waiting for {id}",
                            frame.request_id
                        ),
                    });
                }
                match frame.message {
                    Message::Error(e) => Err(server_error(&e, write)),
                    other => {
                        let opcode = other.opcode();
                        convert(other).ok_or_else(|| ClientError::Protocol {
                            addr: addr.to_string(),
                            detail: format!("unexpected reply {opcode:?}"),
                        })
                    }
                }
            })?
        })();
        if matches!(
            result,
            Err(ClientError::Io { .. } | ClientError::Protocol { .. })
        ) {
            // The stream's state is unknown: never reuse it.
            self.conns.remove(&addr);
        }
        result
    }

    /// The open connection to `addr`, opened (with HELLO) on first use or when the node
    /// closed it while idle.
    fn connection(&mut self, addr: SocketAddr) -> Result<&mut Connection> {
        if self.conns.get(&addr).is_some_and(|c| c.closed_while_idle()) {
            self.conns.remove(&addr);
        }
        if !self.conns.contains_key(&addr) {
            let conn = Connection::open(addr, &self.config)?;
            self.conns.insert(addr, conn);
        }
        self.conns
            .get_mut(&addr)
            .ok_or_else(|| ClientError::Invalid("connection vanished".into()))
    }

    fn unexpected(&self) -> ClientError {
        ClientError::Protocol {
            addr: self.seed.to_string(),
            detail: "reply of the wrong kind".into(),
        }
    }
}

impl<'a> Op<'a> {
    /// The key the op is about.
    pub fn key(&self) -> &'a [u8] {
        match *self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    /// Whether the op writes.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }

    fn message(&self, options: RequestOptions) -> Message<'a> {
        let options = wire::Options {
            n: options.n,
            quorum: options.quorum,
            timeout_ms: options.timeout_ms,
        };
        match *self {
            Op::Get { key } => Message::Get(wire::Get { options, key }),
            Op::Put {
                key,
                value,
                context,
            } => Message::Put(wire::Put {
                options,
                return_context: true,
                key,
                context,
                value,
            }),
            Op::Delete { key, context } => Message::Delete(wire::Delete {
                options,
                return_context: true,
                key,
                context,
            }),
        }
    }
}

/// Whether a request that failed with `e` cannot have been applied, so it may be sent
/// again elsewhere: nothing reached the node, or it was a read.
fn resendable(e: &ClientError, write: bool) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Io { .. } => !write,
        _ => false,
    }
}

/// Whether `code` says the request went to the wrong place (so the topology is stale).
fn is_routing(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::WrongShard | ErrorCode::NotOwner)
}

/// Turns a decoded reply into an owned result.
fn reply_of(message: Message<'_>, write: bool) -> Result<OpReply> {
    match message {
        Message::GetReply(r) if !write => Ok(OpReply::Get(GetResult {
            siblings: r.siblings.iter().map(|s| s.to_vec()).collect(),
            context: r.context.to_vec(),
        })),
        Message::PutReply(r) if write => Ok(OpReply::Written {
            context: r.context.to_vec(),
        }),
        Message::DeleteReply(r) if write => Ok(OpReply::Written {
            context: r.context.to_vec(),
        }),
        Message::Error(e) => Err(server_error(&e, write)),
        other => Err(ClientError::Protocol {
            addr: String::new(),
            detail: format!("unexpected reply {:?}", other.opcode()),
        }),
    }
}

/// The client error for an `ERROR` reply; `write` marks codes that leave a write's outcome
/// unknown as indeterminate.
fn server_error(e: &ErrorReply<'_>, write: bool) -> ClientError {
    let unknown_outcome = matches!(
        e.code,
        ErrorCode::Indeterminate | ErrorCode::StoreFailed | ErrorCode::Internal
    );
    ClientError::Server {
        code: e.code,
        message: e.message.to_owned(),
        answered: e.answered,
        needed: e.needed,
        ring_epoch: e.ring_epoch,
        indeterminate: e.code == ErrorCode::Indeterminate || (write && unknown_outcome),
    }
}

/// A copy of a connection failure for each op it took down.
fn copy_failure(failure: &ClientError, indeterminate: bool) -> ClientError {
    match failure {
        ClientError::Connect { addr, source } => ClientError::Connect {
            addr: addr.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        ClientError::Io { addr, source, .. } => ClientError::Io {
            addr: addr.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
            indeterminate,
        },
        ClientError::Protocol { addr, detail } => ClientError::Protocol {
            addr: addr.clone(),
            detail: detail.clone(),
        },
        ClientError::Server { .. } | ClientError::Invalid(_) => {
            ClientError::Invalid(failure.to_string())
        }
    }
}

#[cfg(test)]
mod tests;
