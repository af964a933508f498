//! The Rotor protocol for `rotor-bench`: [`RotorTarget`] learns the node's topology once
//! (through [`crate::client`]) and spreads connections over the shard ports, and
//! [`RotorConn`] turns operations into wire frames and replies into outcomes, sans-IO like
//! the Redis target.
//!
//! Shard awareness: every connection belongs to one *group* (a node shard's own port), and
//! the driver only gives a connection operations whose key that shard owns, so the node
//! never forwards a benchmark request across cores. Key groups are precomputed (one MD5
//! per key at start), so routing costs a table lookup per request.
//!
//! Writes and siblings: a PUT with an empty context is a blind write that becomes a sibling
//! of what the key holds, so a run of blind writes grows siblings without bound and hits
//! the cap (100) as `TOO_MANY_SIBLINGS` errors. By default every PUT carries the last
//! context seen for its key by any connection of the run (from a GET reply or from the
//! PUT reply, which is asked to return the new context), kept in a shared table of fixed
//! slots; a key not seen yet is written blind. Concurrent writes of one key from two
//! connections still make a sibling, which the next read-then-write resolves, so sibling
//! counts stay small. `--blind-writes` sends empty contexts (what a cache-like client
//! would do) and documents the cost.
//!
//! Clusters: the topology lists every node, and connections are spread over every node's
//! shard ports. A node that does not answer a handshake at start is left out: its
//! partitions go to the common port of the next node clockwise
//! ([`crate::client::Topology::fallback_addr`]), which coordinates them, as a client would
//! route around it. `n`, `r` and `w` set each request's replication options.
//!
//! Per request nothing is allocated: a `GET_REPLY` (nine replies in ten) is read in place
//! from the receive buffer by [`scan_get_reply`], which only counts siblings and finds the
//! context, where the codec's full decode would build the sibling list (one vector per
//! reply). Every other frame, and any `GET_REPLY` the scan does not accept, goes through the
//! codec, which then reports the precise error.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerocopy::FromBytes;

use crate::client::{Client, ClientConfig};
use crate::constants::{CONTEXT_BYTES_MAX, FRAME_BODY_BYTES_MAX, SIBLINGS_MAX, VALUE_BYTES_MAX};
use crate::wire::{self, Decoded as WireDecoded, Message, Role};

use super::target::{Decoded, Outcome, ProtocolError, Reply, Request, Target, TargetConn};
use super::workload::{self, KEY_BYTES};
use super::BenchError;

/// Keys whose group is precomputed at start (2 bytes each); beyond it a key's group is
/// computed per request (one MD5).
pub const KEY_GROUPS_PRECOMPUTED_MAX: u64 = 16 * 1024 * 1024;

/// Longest context the shared table keeps per key; a longer one is not kept (the next write
/// of that key is blind). One actor takes 25 bytes, three 57.
pub const CONTEXT_SLOT_BYTES: usize = 57;

/// Most slots of the shared context table (about 80 bytes each).
pub const CONTEXT_SLOTS_MAX: usize = 1 << 22;

/// Time a node has to connect and answer the probe's handshake at start before it is taken
/// as down for the run.
pub const NODE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Request id of the HELLO: request ids are tag + 1 and tags stay below the pipeline
/// limit, so this one is never a request's.
const HELLO_ID: u32 = u32::MAX;

/// How the Rotor target behaves; set by `rotor-bench` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotorOptions {
    /// Connect each connection to a shard's own port and send it only keys that shard owns
    /// (`false`: every connection to the common port).
    pub shard_aware: bool,
    /// Send every PUT with an empty context instead of the last one seen for the key.
    pub blind_writes: bool,
    /// Replicas N of every request; 0 leaves it to the node's default.
    pub n: u8,
    /// Read quorum R of every GET; 0 leaves it to the node's default.
    pub r: u8,
    /// Write quorum W of every PUT; 0 leaves it to the node's default.
    pub w: u8,
}

impl Default for RotorOptions {
    fn default() -> Self {
        RotorOptions {
            shard_aware: true,
            blind_writes: false,
            n: 0,
            r: 0,
            w: 0,
        }
    }
}

/// A Rotor node under test.
pub struct RotorTarget {
    /// One address per group: a shard's own port, or the common port.
    groups: Vec<SocketAddr>,
    /// Group of each partition.
    partition_groups: Vec<u16>,
    /// Group of each key number, when precomputed.
    key_groups: Vec<u16>,
    contexts: Option<Arc<ContextTable>>,
    /// Ids of the nodes found down at start, whose partitions go to other nodes.
    down: Vec<u64>,
    options: RotorOptions,
}

/// The protocol state of one connection.
pub struct RotorConn {
    /// Per tag: the key of the request in flight, so a reply's context can be filed.
    keys: Vec<KeySlot>,
    contexts: Option<Arc<ContextTable>>,
    /// Context copied out of the table for the PUT being encoded (reused).
    scratch: Vec<u8>,
    options: RotorOptions,
}

#[derive(Clone, Copy)]
struct KeySlot {
    key: [u8; KEY_BYTES],
    len: u8,
}

/// Last context seen per key, in direct-mapped slots (a collision replaces: the table is a
/// cache, a miss only means a blind write).
struct ContextTable {
    slots: Vec<Mutex<ContextSlot>>,
    mask: usize,
}

#[derive(Clone, Copy)]
struct ContextSlot {
    key: [u8; KEY_BYTES],
    key_len: u8,
    context: [u8; CONTEXT_SLOT_BYTES],
    context_len: u8,
}

impl RotorTarget {
    /// Asks the node at `addr` for its topology and prepares routing for key numbers
    /// `0..keys`.
    pub fn discover(
        addr: SocketAddr,
        keys: u64,
        options: RotorOptions,
    ) -> Result<RotorTarget, BenchError> {
        let config = ClientConfig {
            shard_aware: options.shard_aware,
            ..ClientConfig::default()
        };
        let client = Client::connect_with(addr, config)
            .map_err(|e| BenchError::Config(format!("cannot reach rotor://{addr}: {e}")))?;
        let topology = client.topology();
        // Probed once: a node that comes back during the run stays routed around.
        let down: Vec<bool> = (0..topology.nodes.len())
            .map(|index| {
                let common = u16::try_from(index)
                    .ok()
                    .and_then(|i| topology.node_addr(i, addr))
                    .unwrap_or(addr);
                // A full handshake, not a bare TCP connect: a node killed a moment ago can
                // still accept from its listen backlog.
                let probe = ClientConfig {
                    connect_timeout: NODE_PROBE_TIMEOUT,
                    io_timeout: Some(NODE_PROBE_TIMEOUT),
                    pin_to_seed: true,
                    ..ClientConfig::default()
                };
                Client::connect_with(common, probe).is_err()
            })
            .collect();
        let is_down = |index: u16| down.get(usize::from(index)).copied().unwrap_or(false);
        let mut groups: Vec<SocketAddr> = Vec::new();
        let mut partition_groups = Vec::with_capacity(topology.owners.len());
        for (partition, owner) in topology.owners.iter().enumerate() {
            let fallback = match is_down(owner.node) {
                true => u32::try_from(partition)
                    .ok()
                    .and_then(|p| topology.fallback_addr(p, addr, is_down)),
                false => None,
            };
            let route = match fallback {
                Some((_, common)) => common,
                None => topology
                    .owner_addr(*owner, addr, options.shard_aware)
                    .unwrap_or(addr),
            };
            let group = match groups.iter().position(|g| *g == route) {
                Some(g) => g,
                None => {
                    groups.push(route);
                    groups.len() - 1
                }
            };
            partition_groups.push(u16::try_from(group).unwrap_or(0));
        }
        if groups.is_empty() {
            groups.push(addr);
        }
        let mut target = RotorTarget {
            groups,
            partition_groups,
            key_groups: Vec::new(),
            contexts: (!options.blind_writes).then(|| Arc::new(ContextTable::new(keys))),
            down: topology
                .nodes
                .iter()
                .zip(&down)
                .filter(|(_, &d)| d)
                .map(|(n, _)| n.id)
                .collect(),
            options,
        };
        if target.groups.len() > 1 && keys <= KEY_GROUPS_PRECOMPUTED_MAX {
            target.key_groups = (0..keys).map(|k| target.compute_group(k)).collect();
        }
        Ok(target)
    }

    /// The addresses connections are spread over.
    pub fn group_addrs(&self) -> &[SocketAddr] {
        &self.groups
    }

    /// Ids of the nodes that did not answer at start (routed around for the run).
    pub fn down_nodes(&self) -> &[u64] {
        &self.down
    }

    fn compute_group(&self, key: u64) -> u16 {
        let mut bytes = [0u8; KEY_BYTES];
        workload::format_key(key, &mut bytes);
        let q = u32::try_from(self.partition_groups.len()).unwrap_or(u32::MAX);
        let p = crate::ring::partition_of_position(crate::ring::key_position(&bytes), q).0;
        usize::try_from(p)
            .ok()
            .and_then(|p| self.partition_groups.get(p))
            .copied()
            .unwrap_or(0)
    }
}

impl Target for RotorTarget {
    type Conn = RotorConn;

    fn addr(&self, index: usize) -> SocketAddr {
        self.groups[index % self.groups.len()]
    }

    fn new_conn(&self, depth: usize) -> RotorConn {
        RotorConn {
            keys: vec![
                KeySlot {
                    key: [0; KEY_BYTES],
                    len: 0
                };
                depth
            ],
            contexts: self.contexts.clone(),
            scratch: Vec::with_capacity(CONTEXT_SLOT_BYTES),
            options: self.options,
        }
    }

    fn groups(&self) -> usize {
        self.groups.len()
    }

    fn group_of_conn(&self, index: usize) -> usize {
        index % self.groups.len()
    }

    fn group_of_key(&self, key: u64) -> usize {
        if self.groups.len() == 1 {
            return 0;
        }
        let group = usize::try_from(key)
            .ok()
            .and_then(|k| self.key_groups.get(k).copied())
            .unwrap_or_else(|| self.compute_group(key));
        usize::from(group)
    }
}

impl TargetConn for RotorConn {
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        let hello = Message::Hello(wire::Hello {
            version_min: wire::VERSION,
            version_max: wire::VERSION,
            role: Role::Client,
            features: 0,
            cluster_id: 0,
            node_id: 0,
        });
        // A fixed-size message within every limit: encoding cannot fail.
        let _ = wire::encode(HELLO_ID, &hello, out);
        true
    }

    fn encode(&mut self, request: Request<'_>, tag: u32, out: &mut Vec<u8>) {
        let options = wire::Options {
            n: self.options.n,
            quorum: match request {
                Request::Get { .. } => self.options.r,
                Request::Put { .. } => self.options.w,
            },
            timeout_ms: 0,
        };
        let id = tag.wrapping_add(1);
        let key = match request {
            Request::Get { key } | Request::Put { key, .. } => key,
        };
        if let Some(slot) = usize::try_from(tag).ok().and_then(|t| self.keys.get_mut(t)) {
            *slot = KeySlot::new(key);
        }
        let message = match request {
            Request::Get { key } => Message::Get(wire::Get { options, key }),
            Request::Put { key, value } => {
                self.scratch.clear();
                if let Some(table) = &self.contexts {
                    table.load(key, &mut self.scratch);
                }
                Message::Put(wire::Put {
                    options,
                    return_context: self.contexts.is_some(),
                    key,
                    context: &self.scratch,
                    value,
                })
            }
        };
        // Keys and values are within the wire limits (the config checks the value size),
        // so this does not fail; if it did, the request's reply would never come and the
        // connection's stall handling would count it.
        let _ = wire::encode(id, &message, out);
    }

    fn decode(&mut self, input: &[u8]) -> Result<Option<Decoded>, ProtocolError> {
        if let Some(reply) = scan_get_reply(input) {
            let tag = reply.request_id.wrapping_sub(1);
            let outcome = if reply.siblings == 0 {
                Outcome::Miss
            } else {
                Outcome::Ok
            };
            self.remember_context(tag, reply.context);
            return Ok(Some(Decoded {
                len: reply.consumed,
                reply: Reply::Answer { tag, outcome },
            }));
        }
        let (frame, consumed) = match wire::decode(input) {
            Ok(WireDecoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(WireDecoded::Incomplete { .. }) => return Ok(None),
            Err(e) => return Err(ProtocolError::Rotor(e.error)),
        };
        let tag = frame.request_id.wrapping_sub(1);
        let (outcome, context) = match &frame.message {
            Message::HelloReply(_) => {
                return Ok(Some(Decoded {
                    len: consumed,
                    reply: Reply::HandshakeDone,
                }))
            }
            Message::Error(_) if frame.request_id == HELLO_ID => {
                return Err(ProtocolError::HandshakeRefused)
            }
            Message::GetReply(r) if r.siblings.is_empty() => (Outcome::Miss, r.context),
            Message::GetReply(r) => (Outcome::Ok, r.context),
            Message::PutReply(r) => (Outcome::Ok, r.context),
            Message::Error(_) => (Outcome::Error, &[][..]),
            _ => return Err(ProtocolError::Unsolicited),
        };
        self.remember_context(tag, context);
        Ok(Some(Decoded {
            len: consumed,
            reply: Reply::Answer { tag, outcome },
        }))
    }
}

impl RotorConn {
    /// Keeps a reply's context for the key of request `tag`, for that key's next write.
    fn remember_context(&self, tag: u32, context: &[u8]) {
        if let (Some(table), false) = (&self.contexts, context.is_empty()) {
            if let Some(slot) = usize::try_from(tag).ok().and_then(|t| self.keys.get(t)) {
                table.store(slot.key(), context);
            }
        }
    }
}

/// What [`scan_get_reply`] reads of a `GET_REPLY` frame.
#[derive(Debug, PartialEq, Eq)]
struct GetReplyScan<'a> {
    request_id: u32,
    siblings: usize,
    context: &'a [u8],
    /// Bytes of the frame, header included.
    consumed: usize,
}

/// Reads a complete, well-formed `GET_REPLY` at the front of `input` in place: its request
/// id, sibling count and context, skipping the sibling values, checking every length
/// against the codec's limits and that the fields fill the body exactly
/// (wire-spec/README.md, section 8.2). `None` for anything else (another message, an
/// incomplete frame, any malformed byte): the caller then decodes with the codec.
fn scan_get_reply(input: &[u8]) -> Option<GetReplyScan<'_>> {
    let (header, rest) = wire::Header::ref_from_prefix(input).ok()?;
    if header.magic != wire::MAGIC
        || header.version != wire::VERSION
        || header.opcode != wire::Opcode::GetReply.to_wire()
        || header.flags.get() != 0
    {
        return None;
    }
    let body_len = usize::try_from(header.body_len.get())
        .ok()
        .filter(|&len| len <= FRAME_BODY_BYTES_MAX)?;
    let mut body = rest.get(..body_len)?;
    let siblings = usize::try_from(take_u32(&mut body)?).ok()?;
    if siblings > SIBLINGS_MAX {
        return None;
    }
    for _ in 0..siblings {
        take_bytes(&mut body, VALUE_BYTES_MAX)?;
    }
    let context = take_bytes(&mut body, CONTEXT_BYTES_MAX)?;
    if !body.is_empty() {
        return None;
    }
    Some(GetReplyScan {
        request_id: header.request_id.get(),
        siblings,
        context,
        consumed: wire::HEADER_BYTES.checked_add(body_len)?,
    })
}

/// Takes a little-endian u32 off the front of `buf`.
fn take_u32(buf: &mut &[u8]) -> Option<u32> {
    let (head, rest) = buf.split_first_chunk::<4>()?;
    *buf = rest;
    Some(u32::from_le_bytes(*head))
}

/// Takes a length-prefixed byte string of at most `max` bytes off the front of `buf`.
fn take_bytes<'a>(buf: &mut &'a [u8], max: usize) -> Option<&'a [u8]> {
    let len = usize::try_from(take_u32(buf)?).ok()?;
    if len > max || len > buf.len() {
        return None;
    }
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    Some(bytes)
}

impl KeySlot {
    fn new(key: &[u8]) -> KeySlot {
        let mut slot = KeySlot {
            key: [0; KEY_BYTES],
            len: 0,
        };
        // Longer keys are not tracked (their writes stay blind).
        if let Some(dst) = slot.key.get_mut(..key.len()) {
            dst.copy_from_slice(key);
            slot.len = key.len() as u8;
        }
        slot
    }

    fn key(&self) -> &[u8] {
        self.key.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl ContextTable {
    fn new(keys: u64) -> ContextTable {
        let wanted = usize::try_from(keys.saturating_mul(2)).unwrap_or(usize::MAX);
        let len = wanted.clamp(1024, CONTEXT_SLOTS_MAX).next_power_of_two();
        let empty = ContextSlot {
            key: [0; KEY_BYTES],
            key_len: 0,
            context: [0; CONTEXT_SLOT_BYTES],
            context_len: 0,
        };
        ContextTable {
            slots: (0..len).map(|_| Mutex::new(empty)).collect(),
            mask: len - 1,
        }
    }

    fn slot(&self, key: &[u8]) -> Option<&Mutex<ContextSlot>> {
        // FNV-1a: keys are short, and any spread over the slots will do.
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        self.slots.get(hash as usize & self.mask)
    }

    /// Appends the last context seen for `key` to `out` (nothing if none is known).
    fn load(&self, key: &[u8], out: &mut Vec<u8>) {
        let Some(slot) = self.slot(key) else { return };
        let slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.key.get(..usize::from(slot.key_len)) == Some(key) {
            out.extend_from_slice(
                slot.context
                    .get(..usize::from(slot.context_len))
                    .unwrap_or_default(),
            );
        }
    }

    /// Files `context` as the last one seen for `key`.
    fn store(&self, key: &[u8], context: &[u8]) {
        if key.is_empty() || key.len() > KEY_BYTES || context.len() > CONTEXT_SLOT_BYTES {
            return;
        }
        let Some(slot) = self.slot(key) else { return };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.key[..key.len()].copy_from_slice(key);
        slot.key_len = key.len() as u8;
        slot.context[..context.len()].copy_from_slice(context);
        slot.context_len = context.len() as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(blind: bool) -> RotorConn {
        RotorConn {
            keys: vec![KeySlot::new(b""); 4],
            contexts: (!blind).then(|| Arc::new(ContextTable::new(100))),
            scratch: Vec::new(),
            options: RotorOptions {
                n: 3,
                r: 2,
                w: 1,
                ..RotorOptions::default()
            },
        }
    }

    /// The PUT in `bytes`: its request id and context.
    fn put_of(bytes: &[u8]) -> (u32, Vec<u8>) {
        match wire::decode(bytes).unwrap() {
            WireDecoded::Frame { frame, .. } => match frame.message {
                Message::Put(p) => (frame.request_id, p.context.to_vec()),
                other => panic!("not a PUT: {other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn reply(id: u32, message: Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode(id, &message, &mut out).unwrap();
        out
    }

    #[test]
    fn get_replies_scanned_in_place_agree_with_the_codec() {
        for values in [
            &[][..],
            &[&b"v"[..]][..],
            &[&b"alice"[..], &b""[..], &[7u8; 300][..]][..],
        ] {
            for context in [&b""[..], &b"ctx1"[..]] {
                let message = Message::GetReply(wire::GetReply {
                    siblings: values.into(),
                    context,
                });
                let mut bytes = reply(41, message);
                let consumed = bytes.len();
                bytes.extend_from_slice(b"next frame");
                let scan = scan_get_reply(&bytes).expect("a well-formed reply is scanned");
                let Ok(WireDecoded::Frame { frame, consumed: c }) = wire::decode(&bytes) else {
                    panic!("the codec refused it")
                };
                let Message::GetReply(r) = frame.message else {
                    panic!("not a GET_REPLY")
                };
                let want = GetReplyScan {
                    request_id: frame.request_id,
                    siblings: r.siblings.len(),
                    context: r.context,
                    consumed: c,
                };
                assert_eq!(scan, want);
                assert_eq!(scan.consumed, consumed);
                // Incomplete or damaged frames are left to the codec.
                for cut in 0..consumed {
                    assert_eq!(scan_get_reply(&bytes[..cut]), None, "cut at {cut}");
                }
                let mut long = bytes[..consumed].to_vec();
                long[12] += 1; // body_len one more: a trailing byte in the body
                long.push(0);
                assert_eq!(scan_get_reply(&long), None);
            }
        }
        let put = reply(3, Message::PutReply(wire::PutReply { context: b"c" }));
        assert_eq!(scan_get_reply(&put), None, "only GET_REPLY is scanned");
    }

    #[test]
    fn writes_carry_the_last_context_seen_for_their_key() {
        let mut c = conn(false);
        let mut out = Vec::new();
        let put = Request::Put {
            key: b"key:000000000001",
            value: b"v",
        };
        c.encode(put, 2, &mut out);
        let (id, context) = put_of(&out);
        assert_eq!((id, context.as_slice()), (3, &b""[..]));
        // The PUT reply's context is filed under the key of tag 2.
        let bytes = reply(3, Message::PutReply(wire::PutReply { context: b"ctx-a" }));
        let decoded = c.decode(&bytes).unwrap().unwrap();
        assert_eq!(decoded.len, bytes.len());
        assert_eq!(
            decoded.reply,
            Reply::Answer {
                tag: 2,
                outcome: Outcome::Ok
            }
        );
        out.clear();
        c.encode(put, 0, &mut out);
        assert_eq!(put_of(&out).1, b"ctx-a");
        // A GET reply's context replaces it; a miss is counted apart.
        c.encode(
            Request::Get {
                key: b"key:000000000001",
            },
            1,
            &mut Vec::new(),
        );
        let siblings: [&[u8]; 2] = [b"x", b"y"];
        let get = reply(
            2,
            Message::GetReply(wire::GetReply {
                siblings: siblings.as_slice().into(),
                context: b"ctx-b",
            }),
        );
        let decoded = c.decode(&get).unwrap().unwrap();
        assert_eq!(
            decoded.reply,
            Reply::Answer {
                tag: 1,
                outcome: Outcome::Ok
            }
        );
        out.clear();
        c.encode(put, 0, &mut out);
        assert_eq!(put_of(&out).1, b"ctx-b");
        // Another key knows nothing yet.
        out.clear();
        c.encode(
            Request::Put {
                key: b"key:000000000002",
                value: b"v",
            },
            0,
            &mut out,
        );
        assert_eq!(put_of(&out).1, b"");
    }

    #[test]
    fn blind_writes_send_empty_contexts_and_errors_count() {
        let mut c = conn(true);
        let mut out = Vec::new();
        assert!(c.handshake(&mut out));
        let hello_reply = reply(
            HELLO_ID,
            Message::HelloReply(wire::HelloReply {
                version: 1,
                role: Role::Peer,
                features: 0,
                cluster_id: 1,
                node_id: 1,
                shard: 0,
                shard_count: 1,
            }),
        );
        let decoded = c.decode(&hello_reply).unwrap().unwrap();
        assert_eq!(decoded.reply, Reply::HandshakeDone);
        out.clear();
        let put = Request::Put {
            key: b"key:000000000001",
            value: b"v",
        };
        c.encode(put, 0, &mut out);
        let bytes = reply(1, Message::PutReply(wire::PutReply { context: b"" }));
        c.decode(&bytes).unwrap().unwrap();
        out.clear();
        c.encode(put, 0, &mut out);
        assert_eq!(put_of(&out).1, b"");
        let error = reply(
            1,
            Message::Error(wire::ErrorReply {
                code: wire::ErrorCode::TooManySiblings,
                answered: 0,
                needed: 0,
                ring_epoch: 0,
                message: "too many",
            }),
        );
        assert_eq!(
            c.decode(&error).unwrap().unwrap().reply,
            Reply::Answer {
                tag: 0,
                outcome: Outcome::Error
            }
        );
        // Incomplete input waits; garbage is a protocol error.
        assert_eq!(c.decode(&error[..10]), Ok(None));
        assert!(matches!(
            c.decode(b"HTTP/1.1"),
            Err(ProtocolError::Rotor(_))
        ));
    }

    #[test]
    fn requests_carry_n_and_their_quorum() {
        let mut c = conn(false);
        let mut out = Vec::new();
        c.encode(Request::Get { key: b"k" }, 0, &mut out);
        c.encode(
            Request::Put {
                key: b"k",
                value: b"v",
            },
            1,
            &mut out,
        );
        let mut options = Vec::new();
        let mut at = 0;
        while let Ok(WireDecoded::Frame { frame, consumed }) = wire::decode(&out[at..]) {
            at += consumed;
            options.push(match frame.message {
                Message::Get(g) => (g.options.n, g.options.quorum),
                Message::Put(p) => (p.options.n, p.options.quorum),
                other => panic!("{other:?}"),
            });
        }
        // conn() asks for N=3, R=2, W=1.
        assert_eq!(options, vec![(3, 2), (3, 1)]);
    }

    #[test]
    fn a_refused_handshake_is_reported() {
        let mut c = conn(true);
        let error = reply(
            HELLO_ID,
            Message::Error(wire::ErrorReply {
                code: wire::ErrorCode::UnsupportedVersion,
                answered: 0,
                needed: 0,
                ring_epoch: 0,
                message: "no",
            }),
        );
        assert_eq!(c.decode(&error), Err(ProtocolError::HandshakeRefused));
    }

    #[test]
    fn the_context_table_keeps_one_context_per_slot() {
        let table = ContextTable::new(10);
        let mut out = Vec::new();
        table.load(b"a", &mut out);
        assert!(out.is_empty());
        table.store(b"a", b"one");
        table.store(b"a", b"two");
        table.load(b"a", &mut out);
        assert_eq!(out, b"two");
        // Too long to keep: the key stays as it was.
        table.store(b"a", &[7; CONTEXT_SLOT_BYTES + 1]);
        out.clear();
        table.load(b"a", &mut out);
        assert_eq!(out, b"two");
    }
}
