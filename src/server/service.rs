//! The Rotor protocol served by every shard: handshake, GET/PUT/DELETE against the shard's
//! store with causal contexts, TOPOLOGY, STATS, forwarding to the owning shard, group
//! commit and background compaction.
//!
//! A frame meets, in order: [`ClientHandler::handle`] (decode with [`wire::decode`], refuse
//! anything before `HELLO`), the ring (which partition, which shard owns it), then either
//! [`ShardCore::execute`] on this shard or the [`Mailbox`] to the owner, which executes it
//! the same way and sends the encoded reply back. That direct path serves a node alone in
//! its ring (no seeds, or before it met any peer): N = R = W = 1, with requests validated as
//! a cluster would (N above the node count is `UNAVAILABLE`). Once the ring has another
//! member, GET/PUT/DELETE go to the shard's coordinator instead ([`super::cluster`]),
//! with N, R and W defaulting to the configured values clamped to the membership size; a
//! connection whose HELLO says role peer carries replica traffic and gossip
//! (`ClientHandler::peer_frame`).
//!
//! A write reads the key's causal state from the store, applies the client's context with
//! [`CausalState::update`] under the store's incarnation as actor, and stores the result.
//! Its reply goes out at once under `always` (the store synced) and `never`, and under
//! `group` once a sync covered it ([`GroupCommit`]).
//!
//! What this layer does not do: block the reactor waiting for anything but the store's own
//! synchronous calls, hold a `RefCell` borrow across an `.await`, or touch another shard's
//! store (only the mailbox crosses cores).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use glommio::{Latency, Shares};
use smallvec::SmallVec;
use tracing::{error, info, warn};

use super::cluster::{Cluster, ClusterRequest};
use super::commit::GroupCommit;
use super::config::{allowed_cpus, Config, ConfigError, Fsync};
use super::connection::{CloseReason, FrameHandler, Step};
use super::convert;
use super::mailbox::Mailbox;
use super::replica_store::StoreReplicas;
use super::ring_admin::AdminRequest;
use super::runtime::{self, RunningServer, ServerError, Service, ShardInfo};
use super::stats::{wire_stats, OpKind, ShardStats, StatEntry};
use crate::causal::{Actor, CausalError, CausalState, Context, Value};
use crate::constants::{
    CLUSTER_REPLY_GRACE_MS, COMPACTION_BACKOFF_MS, COMPACTION_IDLE_MS,
    COMPACTION_STEP_BYTES_DEFAULT, COMPACTION_STEP_PAUSE_US, FORWARD_GRACE_MS,
    GROUP_COMMIT_INTERVAL_MS_DEFAULT, PARTITIONS_DEFAULT, PEER_CONNECTION_IN_FLIGHT_MAX,
    REPLICAS_MAX, REQUEST_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_MAX,
};
use crate::coordinator::{self, ClientReply, ClientRequest};
use crate::gossip::{GossipMessage, NodeState};
use crate::ring::{Member, NodeId, PartitionId, Replica, Ring, RingError};
use crate::store::{
    CompactProgress, Durability, Lsn, ReadError, Store, StoreConfig, ValueKind, WriteError,
    GET_BATCH_KEYS_MAX,
};
use crate::wire::{
    self, Decoded, DeleteReply, ErrorCode, ErrorReply, FrameError, GetReply, HelloReply, List,
    Message, NodeInfo, NodeStatus, Options, Owner, PutReply, Role, StatsReply, TopologyReply,
};

/// The shares of the background compaction queue, against glommio's default 1000 for the
/// queue serving requests: compaction gets about 1% of a busy core and all of an idle one.
const COMPACTION_SHARES: usize = 10;

/// Name of the node's identity file in the data directory.
const NODE_FILE: &str = "NODE";

/// What every shard of a node shares: its identity and where it listens. The ring is each
/// shard's own copy ([`Cluster::view`]), sent by shard 0 whenever the membership changes.
pub struct Node {
    id: u64,
    /// Set once every shard listens (their ports are known only then).
    endpoints: OnceLock<Endpoints>,
}

/// The node's client addresses, as TOPOLOGY reports them.
#[derive(Debug, Clone)]
struct Endpoints {
    address: String,
    ports: Vec<u16>,
}

/// One shard's service: its store and counters, shared with its background tasks.
pub struct NodeService {
    core: Rc<ShardCore>,
}

/// A request one shard forwards to the shard that owns it.
#[derive(Debug)]
pub enum ShardRequest {
    /// A client request on a key of a partition the target owns.
    Op {
        /// The client's request id, for the reply frame.
        request_id: u32,
        /// The key's partition.
        partition: u32,
        /// What to do.
        op: OwnedOp,
    },
    /// The target's STATS entries.
    Stats,
    /// A message of the cluster runtime (coordinator, gossip, views).
    Cluster(ClusterRequest),
}

/// A key operation carried across cores (it owns its bytes).
#[derive(Debug)]
pub enum OwnedOp {
    /// Read the key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a value (`Some`) or a tombstone (`None`) under a context.
    Write {
        /// The key.
        key: Vec<u8>,
        /// The client's context (opaque bytes, checked by the owner).
        context: Vec<u8>,
        /// The value, or `None` for a delete.
        value: Option<Vec<u8>>,
        /// Whether the reply carries the new context.
        return_context: bool,
    },
}

/// The owner's answer to a [`ShardRequest`].
#[derive(Debug)]
pub enum ShardResponse {
    /// The encoded reply frame for the client.
    Frame(Vec<u8>),
    /// The owner's STATS entries.
    Stats(Vec<StatEntry>),
    /// Shard 0's answer to a forwarded gossip message, for its sender.
    Gossip(Option<GossipMessage>),
    /// A cluster message was taken in.
    Done,
}

/// The protocol on one client connection.
pub struct ClientHandler {
    core: Rc<ShardCore>,
    mailbox: Rc<Mailbox<ShardRequest, ShardResponse>>,
    established: bool,
    /// Set when the HELLO said role peer: the pseudo replica naming this connection.
    peer: Option<Replica>,
    /// The partitions [`FrameHandler::prepare`] computed for the keyed requests it saw
    /// ahead, in frame order, each with its key's address and length in the receive
    /// buffer, so `keyed` does not hash a key twice. Valid for one serving pass only (the
    /// buffer is not touched during a pass); anything that does not match is recomputed.
    lookahead: SmallVec<[(usize, usize, u32); GET_BATCH_KEYS_MAX]>,
    /// Next entry of `lookahead` to match.
    lookahead_next: usize,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration does not fit this machine.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime could not start (ports, locked memory, a shard's store).
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The data directory or its identity file could not be used.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The one-node ring could not be built.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
}

/// Starts a one-node Rotor server: one shard per configured core, each with its store at
/// `<data-dir>/shard-<n>/`. Returns once every shard listens.
pub fn start_node(config: &Config) -> Result<RunningServer, StartError> {
    config.validate()?;
    let cores = config.cpus(&allowed_cpus())?.len();
    let shards = u16::try_from(cores).map_err(|_| StartError::DataDir {
        path: config.data_dir.clone(),
        message: format!("{cores} cores is more shards than a node may have"),
    })?;
    let id = node_identity(&config.data_dir, shards, config.node_id)?;
    // The ring every shard starts from (this node alone) must be valid for this shape.
    Ring::initial(
        PARTITIONS_DEFAULT,
        vec![Member::new(NodeId(id), config.weight, shards)],
    )?;
    let node = Arc::new(Node {
        id,
        endpoints: OnceLock::new(),
    });
    let shared = node.clone();
    let running = runtime::start(config, move |info| NodeService::open(info, shared.clone()))?;
    let _ = node.endpoints.set(Endpoints {
        address: running.listen_addr().to_string(),
        ports: running.shard_addrs().iter().map(|a| a.port()).collect(),
    });
    info!(node = id, shards, "node ready");
    Ok(running)
}

impl NodeService {
    /// Opens the store of the shard `info` describes and starts its background tasks
    /// (group commit, compaction). Runs on the shard's thread.
    pub fn open(info: &ShardInfo, node: Arc<Node>) -> Result<NodeService, String> {
        let dir = info.config.data_dir.join(format!("shard-{}", info.shard));
        let durability = match info.config.fsync {
            Fsync::Always => Durability::Always,
            Fsync::Group => Durability::Group,
            Fsync::Never => Durability::Never,
        };
        let store_config = StoreConfig {
            durability,
            ..StoreConfig::default()
        };
        let (mut store, report) = Store::open(&dir, store_config)
            .map_err(|e| format!("cannot open the store at {}: {e}", dir.display()))?;
        info!(
            shard = info.shard,
            dir = %dir.display(),
            keys = report.keys,
            clean = report.clean_shutdown,
            checkpoint = report.used_checkpoint,
            corrupt_records = report.corrupt_records,
            torn_tails = report.torn_tails,
            "store opened"
        );
        // An unclean stop may have lost writes whose counters this incarnation already
        // issued (under group or no-sync durability, and the previous run's policy is not
        // recorded): reusing them would let new writes be mistaken for superseded ones
        // (wire-spec/causal.md, "Operational note"). A new incarnation costs one more actor
        // in the clocks of keys written from now on; losing a write costs far more.
        if !report.new_incarnation && !report.clean_shutdown {
            let old = store.incarnation();
            let new = store.renew_incarnation().map_err(|e| {
                format!(
                    "store at {} was not closed cleanly and cannot start a new incarnation: {e}",
                    dir.display()
                )
            })?;
            warn!(
                shard = info.shard,
                old, new, "store not closed cleanly: new incarnation"
            );
        }

        let store = Rc::new(RefCell::new(Some(store)));
        let commits = Rc::new(GroupCommit::default());
        let cluster = Cluster::new(
            info.config.clone(),
            node.id,
            info.shard,
            info.shards,
            StoreReplicas::new(store.clone(), durability),
            commits.clone(),
        )?;
        let core = Rc::new(ShardCore {
            shard: info.shard,
            shards: info.shards,
            node,
            durability,
            store,
            scratch: RefCell::new(Vec::new()),
            stats: ShardStats::new(info.shard),
            commits,
            cluster,
        });
        if durability == Durability::Group {
            glommio::spawn_local(commit_loop(core.clone())).detach();
        }
        let queue = glommio::executor().create_task_queue(
            Shares::Static(COMPACTION_SHARES),
            Latency::NotImportant,
            "compaction",
        );
        glommio::spawn_local_into(compaction_loop(core.clone()), queue)
            .map_err(|e| format!("cannot start compaction: {e}"))?
            .detach();
        Ok(NodeService { core })
    }
}

impl Service for NodeService {
    type Request = ShardRequest;
    type Response = ShardResponse;
    type Handler = ClientHandler;

    fn connection(
        self: &Rc<Self>,
        mailbox: &Rc<Mailbox<ShardRequest, ShardResponse>>,
    ) -> ClientHandler {
        self.core.stats.connection_opened();
        ClientHandler {
            core: self.core.clone(),
            mailbox: mailbox.clone(),
            established: false,
            peer: None,
            lookahead: SmallVec::new(),
            lookahead_next: 0,
        }
    }

    fn started(self: &Rc<Self>, mailbox: &Rc<Mailbox<ShardRequest, ShardResponse>>) {
        let node = self.core.node.clone();
        self.core.cluster.start(mailbox.clone(), move || {
            node.endpoints
                .get()
                .map(|e| (e.address.clone(), e.ports.clone()))
        });
    }

    fn serve_forwarded(
        self: Rc<Self>,
        from: u16,
        req: ShardRequest,
    ) -> impl Future<Output = ShardResponse> + 'static {
        let core = self.core.clone();
        async move {
            match req {
                ShardRequest::Stats => ShardResponse::Stats(core.stat_entries()),
                ShardRequest::Cluster(ClusterRequest::Admin {
                    request_id,
                    request,
                }) => ShardResponse::Frame(core.cluster.clone().admin(request_id, request).await),
                ShardRequest::Cluster(request) => core.cluster.serve(request),
                ShardRequest::Op {
                    request_id,
                    partition,
                    op,
                } => {
                    let mut reply = Vec::new();
                    if core.owner_of(partition) != Some(core.shard) {
                        // The ring changed (a member joined) while the request crossed.
                        warn!(
                            partition,
                            from,
                            shard = core.shard,
                            "forwarded to a non-owner"
                        );
                        core.error(
                            &mut reply,
                            request_id,
                            ErrorCode::NotOwner,
                            "the ring changed: retry",
                        );
                        return ShardResponse::Frame(reply);
                    }
                    let ack = core.execute(request_id, partition, op.borrowed(), &mut reply);
                    ShardResponse::Frame(core.acknowledge(ack, request_id, reply).await)
                }
            }
        }
    }

    fn shutdown(self: Rc<Self>) -> impl Future<Output = ()> + 'static {
        let core = self.core.clone();
        async move {
            core.cluster.stop();
            core.shutdown()
        }
    }
}

impl FrameHandler for ClientHandler {
    type Deferred = Pin<Box<dyn Future<Output = Vec<u8>>>>;

    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step<Self::Deferred> {
        let (frame, consumed) = match wire::decode(input) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete { needed }) => {
                let frame_bytes =
                    (input.len() >= wire::HEADER_BYTES).then(|| input.len().saturating_add(needed));
                return Step::Incomplete { frame_bytes };
            }
            Err(e) => return self.bad_frame(e, out),
        };
        if !self.established {
            return self.handshake(frame.request_id, &frame.message, consumed, out);
        }
        let id = frame.request_id;
        if let Some(from) = self.peer {
            if let Some(step) = self.peer_frame(from, id, &frame.message, consumed, out) {
                return step;
            }
        }
        if let Some(request) = AdminRequest::from_message(&frame.message) {
            let reply = Box::pin(self.core.cluster.clone().admin(id, request));
            return Step::Deferred { consumed, reply };
        }
        match frame.message {
            Message::Get(get) => {
                self.keyed(id, get.options, Op::Get { key: get.key }, consumed, out)
            }
            Message::Put(put) => self.keyed(
                id,
                put.options,
                Op::Write {
                    key: put.key,
                    context: put.context,
                    value: Some(put.value),
                    return_context: put.return_context,
                },
                consumed,
                out,
            ),
            Message::Delete(delete) => self.keyed(
                id,
                delete.options,
                Op::Write {
                    key: delete.key,
                    context: delete.context,
                    value: None,
                    return_context: delete.return_context,
                },
                consumed,
                out,
            ),
            Message::Topology(_) => {
                self.core.topology(id, out);
                Step::Served { consumed }
            }
            Message::Stats(_) => Step::Deferred {
                consumed,
                reply: Box::pin(stats_reply(self.core.clone(), self.mailbox.clone(), id)),
            },
            Message::Hello(_) => {
                // A repeated HELLO changes nothing: answer it the same way.
                self.core.hello_reply(id, out);
                Step::Served { consumed }
            }
            // Replies are never answered (wire-spec section 2, rule 3).
            message if message.opcode().is_reply() => Step::Served { consumed },
            _ => {
                self.core.error(
                    out,
                    id,
                    ErrorCode::Unsupported,
                    "peer messages are not served on a client connection",
                );
                Step::Served { consumed }
            }
        }
    }

    /// With several GET/PUT/DELETE frames waiting on a one-node ring (the store path),
    /// computes their partitions together (`Ring::partitions_of`: their MD5s run side by
    /// side in SIMD lanes, about 20 ns a key instead of 160) and has the store prefetch
    /// their index buckets and records together, so the requests' cache misses overlap
    /// instead of each waiting for its own two in turn (see `Store::get_many`).
    ///
    /// A multi-node ring is left to the coordinator, which hashes each key itself: taking a
    /// prepared partition there would change the coordinator's request type.
    fn prepare(&mut self, input: &[u8]) {
        self.lookahead.clear();
        self.lookahead_next = 0;
        if !self.established || self.peer.is_some() {
            return;
        }
        let view = self.core.cluster.view();
        if view.ring.members().len() > 1 {
            return;
        }
        let mut keys: SmallVec<[&[u8]; GET_BATCH_KEYS_MAX]> = SmallVec::new();
        let mut rest = input;
        while keys.len() < GET_BATCH_KEYS_MAX {
            let Ok(Decoded::Frame { frame, consumed }) = wire::decode(rest) else {
                break;
            };
            match frame.message {
                Message::Get(get) => keys.push(get.key),
                Message::Put(put) => keys.push(put.key),
                Message::Delete(delete) => keys.push(delete.key),
                _ => {}
            }
            rest = rest.get(consumed..).unwrap_or_default();
        }
        let mut partitions = [PartitionId(0); GET_BATCH_KEYS_MAX];
        let partitions = &mut partitions[..keys.len()];
        view.ring.partitions_of(&keys, partitions);
        let mut batch: SmallVec<[(u32, &[u8]); GET_BATCH_KEYS_MAX]> = SmallVec::new();
        for (&key, &PartitionId(partition)) in keys.iter().zip(partitions.iter()) {
            self.lookahead
                .push((key.as_ptr() as usize, key.len(), partition));
            batch.push((partition, key));
        }
        if batch.len() > 1 {
            if let Some(store) = self.core.store.borrow().as_ref() {
                store.prefetch(&batch);
            }
        }
    }

    fn is_established(&self) -> bool {
        self.established
    }

    fn in_flight_max(&self) -> Option<usize> {
        self.peer.map(|_| PEER_CONNECTION_IN_FLIGHT_MAX)
    }
}

impl Drop for ClientHandler {
    fn drop(&mut self) {
        self.core.stats.connection_closed();
    }
}

impl ClientHandler {
    /// A frame the codec refused: answer with its `ERROR`, then close, except after an
    /// unknown opcode on an established connection, whose frame boundary is known
    /// (wire-spec section 2, rule 4).
    fn bad_frame(
        &mut self,
        e: FrameError,
        out: &mut Vec<u8>,
    ) -> Step<<Self as FrameHandler>::Deferred> {
        self.core.stats.error();
        // An error reply always fits a frame.
        let _ = e.reply().encode(out);
        match e.skip {
            Some(skip) if self.established && e.error == wire::Error::UnknownOpcode => {
                Step::Served { consumed: skip }
            }
            _ if e.error == wire::Error::FrameTooLarge => Step::Close(CloseReason::TooLarge),
            _ => Step::Close(CloseReason::Malformed),
        }
    }

    /// The first frame must be a client HELLO with a version range containing ours.
    fn handshake(
        &mut self,
        id: u32,
        message: &Message<'_>,
        consumed: usize,
        out: &mut Vec<u8>,
    ) -> Step<<Self as FrameHandler>::Deferred> {
        let Message::Hello(hello) = message else {
            self.core.error(
                out,
                id,
                ErrorCode::HandshakeRequired,
                "the first frame must be HELLO",
            );
            return Step::Close(CloseReason::Rejected);
        };
        if !(hello.version_min..=hello.version_max).contains(&wire::VERSION) {
            self.core.error(
                out,
                id,
                ErrorCode::UnsupportedVersion,
                "this node speaks protocol version 1 only",
            );
            return Step::Close(CloseReason::Rejected);
        }
        if hello.role == Role::Peer {
            if hello.cluster_id != self.core.cluster_id() {
                self.core.error(
                    out,
                    id,
                    ErrorCode::WrongCluster,
                    "this node belongs to another cluster",
                );
                return Step::Close(CloseReason::Rejected);
            }
            if hello.node_id == 0 {
                self.core.error(
                    out,
                    id,
                    ErrorCode::HandshakeRequired,
                    "a peer must give its node id",
                );
                return Step::Close(CloseReason::Rejected);
            }
            self.peer = Some(self.core.cluster.incoming_peer(hello.node_id));
        }
        self.established = true;
        self.core.hello_reply(id, out);
        Step::Served { consumed }
    }

    /// A GET, PUT or DELETE: validated, then executed here or forwarded to the owner.
    fn keyed(
        &mut self,
        id: u32,
        options: Options,
        op: Op<'_>,
        consumed: usize,
        out: &mut Vec<u8>,
    ) -> Step<<Self as FrameHandler>::Deferred> {
        let started = Instant::now();
        let kind = op.kind();
        let view = self.core.cluster.view();
        let members = view.ring.members().len();
        let defaults = self.core.cluster.defaults();
        let resolved = match check_options(options, kind, members, defaults) {
            Ok(resolved) => resolved,
            Err(refusal) => {
                self.core.stats.error();
                let _ = wire::encode(id, &Message::Error(refusal), out);
                return Step::Served { consumed };
            }
        };
        if members > 1 {
            return self.coordinate(id, resolved, op, started, consumed);
        }
        let partition = self
            .prepared_partition(op.key())
            .unwrap_or_else(|| view.ring.partition_of(op.key()).0);
        let Some(owner) = self.core.owner_of(partition) else {
            self.core
                .error(out, id, ErrorCode::NotOwner, "this node owns no replica");
            return Step::Served { consumed };
        };
        if owner == self.core.shard {
            let start = out.len();
            match self.core.execute(id, partition, op, out) {
                Ack::Now => {
                    self.core.stats.record(kind, started);
                    Step::Served { consumed }
                }
                ack => {
                    let reply = out.split_off(start);
                    let core = self.core.clone();
                    Step::Deferred {
                        consumed,
                        reply: Box::pin(async move {
                            let reply = core.acknowledge(ack, id, reply).await;
                            core.stats.record(kind, started);
                            reply
                        }),
                    }
                }
            }
        } else {
            self.core.stats.forwarded();
            let request = ShardRequest::Op {
                request_id: id,
                partition,
                op: op.owned(),
            };
            let core = self.core.clone();
            let mailbox = self.mailbox.clone();
            Step::Deferred {
                consumed,
                reply: Box::pin(async move {
                    let reply = match mailbox.call(owner, request).await {
                        Ok(ShardResponse::Frame(reply)) => reply,
                        Ok(_) => {
                            let mut reply = Vec::new();
                            core.error(&mut reply, id, ErrorCode::Internal, "unexpected reply");
                            reply
                        }
                        Err(e) => {
                            let mut reply = Vec::new();
                            warn!(shard = core.shard, owner, error = %e, "forwarding failed");
                            core.error(
                                &mut reply,
                                id,
                                ErrorCode::ShuttingDown,
                                "the owning shard is stopping",
                            );
                            reply
                        }
                    };
                    core.stats.record(kind, started);
                    reply
                }),
            }
        }
    }
}

impl ClientHandler {
    /// The partition `prepare` computed for `key`, if `key` is the next keyed request it
    /// saw (the same bytes of the receive buffer).
    fn prepared_partition(&mut self, key: &[u8]) -> Option<u32> {
        while let Some(&(at, len, partition)) = self.lookahead.get(self.lookahead_next) {
            self.lookahead_next += 1;
            if at == key.as_ptr() as usize && len == key.len() {
                return Some(partition);
            }
        }
        None
    }

    /// A GET/PUT/DELETE on a multi-node ring: run by this shard's coordinator, answered
    /// when it says so.
    fn coordinate(
        &mut self,
        id: u32,
        options: Options,
        op: Op<'_>,
        started: Instant,
        consumed: usize,
    ) -> Step<<Self as FrameHandler>::Deferred> {
        let kind = op.kind();
        match op {
            Op::Get { .. } => self.core.stats.get(),
            Op::Write { value: Some(_), .. } => self.core.stats.put(),
            Op::Write { value: None, .. } => self.core.stats.delete(),
        }
        let timeout_ms = match options.timeout_ms {
            0 => REQUEST_TIMEOUT_MS_DEFAULT,
            ms => ms.min(REQUEST_TIMEOUT_MS_MAX),
        };
        let wait = Duration::from_millis(reply_wait_ms(timeout_ms));
        let cluster = self.core.cluster.clone();
        let (token, slot) = cluster.client_slot();
        cluster.client_request(token, op.request(options));
        let core = self.core.clone();
        Step::Deferred {
            consumed,
            reply: Box::pin(async move {
                let answer = glommio::timer::timeout(wait, async { Ok(slot.wait().await) }).await;
                let mut out = Vec::new();
                match answer {
                    Ok(reply) => {
                        if let ClientReply::Error(_) = reply {
                            core.stats.error();
                        }
                        if convert::encode_client_reply(id, &reply, &mut out).is_err() {
                            out.clear();
                            core.error(&mut out, id, ErrorCode::TooLarge, "the reply is too large");
                        }
                    }
                    Err(_) => {
                        core.cluster.forget_client(token);
                        core.error(
                            &mut out,
                            id,
                            ErrorCode::Internal,
                            "the coordinator never answered",
                        );
                    }
                }
                let us = core.stats.record(kind, started);
                core.cluster.antientropy().record_latency(us);
                out
            }),
        }
    }

    /// A frame on a peer connection: gossip and pings, replica requests and forwarded
    /// client requests. `None` for what a peer may send like a client (TOPOLOGY, STATS).
    fn peer_frame(
        &mut self,
        from: Replica,
        id: u32,
        message: &Message<'_>,
        consumed: usize,
        out: &mut Vec<u8>,
    ) -> Option<Step<<Self as FrameHandler>::Deferred>> {
        if let Some(gossip) = convert::gossip_message(message) {
            let step = match gossip {
                GossipMessage::Ping { nonce, .. } => {
                    let pong = GossipMessage::Pong {
                        nonce,
                        sender: self.core.node.id,
                    };
                    let _ = convert::encode_gossip(id, &pong, out);
                    Step::Served { consumed }
                }
                // Pongs answer this node's pings on its own links, never here.
                GossipMessage::Pong { .. } => Step::Served { consumed },
                message => {
                    let answer = matches!(message, GossipMessage::Digest { .. });
                    let cluster = self.core.cluster.clone();
                    let local = self.core.node.id;
                    let reply: <Self as FrameHandler>::Deferred = Box::pin(async move {
                        let reply = cluster.gossip(message).await;
                        let mut out = Vec::new();
                        if answer {
                            // Every request gets one reply: nothing newer is an empty state.
                            let reply = reply.unwrap_or(GossipMessage::State {
                                sender: local,
                                ring_epoch: 0,
                                nodes: Vec::new(),
                            });
                            let _ = convert::encode_gossip(id, &reply, &mut out);
                        }
                        out
                    });
                    Step::Deferred { consumed, reply }
                }
            };
            return Some(step);
        }
        if let Some(request) = convert::exchange_request(message) {
            let cluster = &self.core.cluster;
            cluster.antientropy().serve(cluster, from, id, request, out);
            return Some(Step::Served { consumed });
        }
        if self.core.cluster.transfer_request(from, id, message, out) {
            return Some(Step::Served { consumed });
        }
        if let Message::RingState(_) = message {
            let reply = Box::pin(self.core.cluster.clone().admin(id, AdminRequest::RingState));
            return Some(Step::Deferred { consumed, reply });
        }
        match convert::peer_request(message) {
            Ok(Some(request)) => {
                let (slot, guard) = self.core.cluster.peer_request(from, id, request);
                let wait = Duration::from_millis(reply_wait_ms(REQUEST_TIMEOUT_MS_MAX));
                Some(Step::Deferred {
                    consumed,
                    reply: Box::pin(async move {
                        let _guard = guard;
                        glommio::timer::timeout(wait, async { Ok(slot.wait().await) })
                            .await
                            .unwrap_or_default()
                    }),
                })
            }
            Ok(None) => None,
            Err(error) => {
                self.core
                    .error(out, id, error.code(), "a causal state does not decode");
                Some(Step::Served { consumed })
            }
        }
    }
}

/// How long a connection waits for the coordinator's answer to a request with this
/// deadline: the deadline, a forwarder's grace, and a safety margin.
fn reply_wait_ms(timeout_ms: u32) -> u64 {
    u64::from(timeout_ms) + u64::from(FORWARD_GRACE_MS) + CLUSTER_REPLY_GRACE_MS
}

/// The state of one shard: its store, counters and pending group commits.
struct ShardCore {
    shard: u16,
    shards: u16,
    node: Arc<Node>,
    durability: Durability,
    /// `None` once shut down. Shared with the coordinator's adapter.
    store: Rc<RefCell<Option<Store>>>,
    /// Reused buffer for encoding causal states before they are stored.
    scratch: RefCell<Vec<u8>>,
    stats: ShardStats,
    commits: Rc<GroupCommit>,
    /// The cluster runtime: coordinator, links, and on shard 0 the membership.
    cluster: Rc<Cluster>,
}

/// A key operation borrowing the request frame (or a forwarded request's bytes).
#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    Get {
        key: &'a [u8],
    },
    Write {
        key: &'a [u8],
        context: &'a [u8],
        value: Option<&'a [u8]>,
        return_context: bool,
    },
}

/// When the reply of an executed request may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// Now.
    Now,
    /// Once the store's durable LSN reached this write's LSN.
    AfterSync(Lsn),
}

impl ShardCore {
    /// The shard of this node that owns `partition`.
    fn owner_of(&self, partition: u32) -> Option<u16> {
        let ring = self.cluster.view().ring.clone();
        ring.shard_of(NodeId(self.node.id), crate::ring::PartitionId(partition))
            .map(|s| s.0)
    }

    /// Executes `op` on this shard's store and appends its reply frame to `out`; says when
    /// that reply may be sent.
    fn execute(&self, id: u32, partition: u32, op: Op<'_>, out: &mut Vec<u8>) -> Ack {
        match op {
            Op::Get { key } => {
                self.stats.get();
                self.get(id, partition, key, out);
                Ack::Now
            }
            Op::Write {
                key,
                context,
                value,
                return_context,
            } => {
                if value.is_some() {
                    self.stats.put();
                } else {
                    self.stats.delete();
                }
                self.write(id, partition, key, context, value, return_context, out)
            }
        }
    }

    fn get(&self, id: u32, partition: u32, key: &[u8], out: &mut Vec<u8>) {
        let store = self.store.borrow();
        let Some(store) = store.as_ref() else {
            return self.error(out, id, ErrorCode::ShuttingDown, "the shard is stopping");
        };
        let state = match store.get(partition, key) {
            Ok(None) => {
                let reply = GetReply {
                    siblings: List::Borrowed(&[]),
                    context: &[],
                };
                let _ = wire::encode(id, &Message::GetReply(reply), out);
                return;
            }
            Ok(Some(found)) => CausalState::decode(found.value),
            Err(ReadError::Corrupted { .. }) => {
                error!(shard = self.shard, partition, "corrupted record read");
                return self.error(
                    out,
                    id,
                    ErrorCode::StoreFailed,
                    "the stored record is corrupt",
                );
            }
        };
        let Ok(state) = state else {
            error!(
                shard = self.shard,
                partition, "stored causal state does not decode"
            );
            return self.error(
                out,
                id,
                ErrorCode::StoreFailed,
                "the stored state is corrupt",
            );
        };
        let view = state.read();
        let context = view.context.to_opaque();
        let reply = GetReply {
            siblings: List::Borrowed(&view.values),
            context: &context,
        };
        if wire::encode(id, &Message::GetReply(reply), out).is_err() {
            self.error(
                out,
                id,
                ErrorCode::TooLarge,
                "the siblings do not fit in one frame",
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        id: u32,
        partition: u32,
        key: &[u8],
        context: &[u8],
        value: Option<&[u8]>,
        return_context: bool,
        out: &mut Vec<u8>,
    ) -> Ack {
        let Ok(context) = Context::decode_opaque(context) else {
            self.error(
                out,
                id,
                ErrorCode::BadContext,
                "the context is corrupt or foreign: read the key again",
            );
            return Ack::Now;
        };
        let mut store = self.store.borrow_mut();
        let Some(store) = store.as_mut() else {
            self.error(out, id, ErrorCode::ShuttingDown, "the shard is stopping");
            return Ack::Now;
        };
        let mut state = match store
            .get(partition, key)
            .map(|found| found.map(|f| CausalState::decode(f.value)))
        {
            Ok(None) => CausalState::new(),
            Ok(Some(Ok(state))) => state,
            Ok(Some(Err(_))) | Err(_) => {
                error!(
                    shard = self.shard,
                    partition, "stored state unreadable; write refused"
                );
                self.error(
                    out,
                    id,
                    ErrorCode::StoreFailed,
                    "the stored state is corrupt",
                );
                return Ack::Now;
            }
        };
        let is_delete = value.is_none();
        let value = match value {
            Some(bytes) => Value::Bytes(bytes.to_vec()),
            None => Value::Tombstone,
        };
        let updated = match state.update(&context, value, Actor(store.incarnation())) {
            Ok(updated) => updated,
            Err(e) => {
                let code = match e {
                    CausalError::TooManySiblings { .. } => ErrorCode::TooManySiblings,
                    CausalError::TooManyActors { .. } | CausalError::ValueTooLarge { .. } => {
                        ErrorCode::TooLarge
                    }
                    CausalError::CounterOverflow => ErrorCode::Internal,
                };
                self.error_text(out, id, code, &e.to_string());
                return Ack::Now;
            }
        };
        if updated.report.warn {
            warn!(
                shard = self.shard,
                partition,
                siblings = updated.report.siblings,
                "key has many siblings: clients should resolve them"
            );
        }
        let kind = if state.is_tombstone_only() {
            ValueKind::Tombstone
        } else {
            ValueKind::Value
        };
        let mut encoded = self.scratch.borrow_mut();
        encoded.clear();
        state.encode(&mut encoded);
        let lsn = match store.put(partition, key, kind, &encoded) {
            Ok(lsn) => lsn,
            Err(e) => {
                let code = match e {
                    WriteError::TooLarge { .. } => ErrorCode::TooLarge,
                    _ => ErrorCode::StoreFailed,
                };
                error!(shard = self.shard, error = %e, "store write failed");
                self.error_text(out, id, code, &e.to_string());
                return Ack::Now;
            }
        };
        let context = if return_context {
            state.context().to_opaque()
        } else {
            Vec::new()
        };
        let reply = if is_delete {
            Message::DeleteReply(DeleteReply { context: &context })
        } else {
            Message::PutReply(PutReply { context: &context })
        };
        let _ = wire::encode(id, &reply, out);
        if self.durability == Durability::Group && store.durable_lsn() < lsn {
            Ack::AfterSync(lsn)
        } else {
            Ack::Now
        }
    }

    /// Waits until `reply` may go out (see [`Ack`]); a failed sync turns it into
    /// `STORE_FAILED`.
    async fn acknowledge(&self, ack: Ack, id: u32, reply: Vec<u8>) -> Vec<u8> {
        let Ack::AfterSync(lsn) = ack else {
            return reply;
        };
        let durable = self
            .store
            .borrow()
            .as_ref()
            .map_or(0, |store| store.durable_lsn());
        if self.commits.wait(lsn, durable).await {
            return reply;
        }
        let mut failed = Vec::new();
        self.error(
            &mut failed,
            id,
            ErrorCode::StoreFailed,
            "the sync failed: the write may or may not be durable",
        );
        failed
    }

    /// Syncs the store and releases the writes the sync covered.
    /// Group commit's sync, with the fdatasyncs on glommio's blocking thread: the reactor
    /// keeps serving while the device flushes. Writes made meanwhile are left to the next
    /// sync ([`Store::begin_sync`] covers exactly the writes before it).
    async fn sync_off_reactor_and_release(&self) {
        let job = {
            let mut store = self.store.borrow_mut();
            store.as_mut().map(Store::begin_sync)
        };
        let job = match job {
            Some(Ok(job)) => job,
            Some(Err(e)) => return self.sync_failed(&e),
            None => return self.commits.fail_all(),
        };
        let done = glommio::executor().spawn_blocking(move || job.run()).await;
        let finished = {
            let mut store = self.store.borrow_mut();
            store.as_mut().map(|store| store.finish_sync(done))
        };
        match finished {
            Some(Ok(durable)) => self.commits.release(durable),
            Some(Err(e)) => self.sync_failed(&e),
            None => self.commits.fail_all(),
        }
    }

    fn sync_failed(&self, e: &WriteError) {
        error!(shard = self.shard, error = %e, "group commit sync failed; writes refused");
        self.commits.fail_all();
    }

    fn sync_and_release(&self) {
        let synced = {
            let mut store = self.store.borrow_mut();
            store.as_mut().map(|store| store.sync())
        };
        match synced {
            Some(Ok(durable)) => self.commits.release(durable),
            Some(Err(e)) => self.sync_failed(&e),
            None => self.commits.fail_all(),
        }
    }

    fn hello_reply(&self, id: u32, out: &mut Vec<u8>) {
        let reply = HelloReply {
            version: wire::VERSION,
            role: Role::Peer,
            features: 0,
            cluster_id: self.cluster_id(),
            node_id: self.node.id,
            shard: self.shard,
            shard_count: self.shards,
        };
        let _ = wire::encode(id, &Message::HelloReply(reply), out);
    }

    /// Every node of the ring (in member order, so an owner's node index points into the
    /// list) and the owner (node index, shard) of every partition.
    fn topology(&self, id: u32, out: &mut Vec<u8>) {
        let Some(endpoints) = self.node.endpoints.get() else {
            return self.error(out, id, ErrorCode::Overloaded, "the node is starting");
        };
        let view = self.cluster.view();
        let ring = &view.ring;
        let states: Vec<NodeState> = ring
            .members()
            .iter()
            .map(|member| match view.node(member.id) {
                Some(state) => state.clone(),
                // This node before its gossip started, or a member known only by its id.
                None => {
                    let local = member.id.0 == self.node.id;
                    NodeState {
                        id: member.id,
                        version: 1,
                        status: NodeStatus::Up,
                        weight: member.weight,
                        zone: member.zone.clone().unwrap_or_default(),
                        address: if local {
                            endpoints.address.clone()
                        } else {
                            String::new()
                        },
                        ports: if local {
                            endpoints.ports.clone()
                        } else {
                            Vec::new()
                        },
                    }
                }
            })
            .collect();
        let nodes: Vec<NodeInfo<'_>> = states.iter().map(convert::node_info).collect();
        let owners: Vec<Owner> = (0..ring.q())
            .map(|p| {
                let index = ring
                    .owner_indexes()
                    .get(usize::try_from(p).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or(0);
                let shard = ring
                    .members()
                    .get(usize::from(index))
                    .and_then(|member| ring.shard_of(member.id, crate::ring::PartitionId(p)))
                    .map_or(0, |shard| shard.0);
                Owner { node: index, shard }
            })
            .collect();
        let reply = TopologyReply {
            epoch: ring.epoch(),
            nodes: List::Owned(nodes),
            owners: List::Owned(owners),
        };
        if wire::encode(id, &Message::TopologyReply(reply), out).is_err() {
            self.error(out, id, ErrorCode::Internal, "the topology does not encode");
        }
    }

    /// The cluster this node belongs to.
    fn cluster_id(&self) -> u64 {
        self.cluster.cluster_id()
    }

    fn stat_entries(&self) -> Vec<StatEntry> {
        let store = self.store.borrow().as_ref().map(Store::stats);
        let mut entries = self.stats.entries(store.as_ref());
        self.cluster.stat_entries(&mut entries);
        entries
    }

    /// Appends an `ERROR` reply and counts it.
    fn error(&self, out: &mut Vec<u8>, id: u32, code: ErrorCode, message: &'static str) {
        self.error_text(out, id, code, message);
    }

    fn error_text(&self, out: &mut Vec<u8>, id: u32, code: ErrorCode, message: &str) {
        self.stats.error();
        let reply = ErrorReply {
            code,
            answered: 0,
            needed: 0,
            ring_epoch: self.cluster.view().ring.epoch(),
            message: convert::text_out(message),
        };
        let _ = wire::encode(id, &Message::Error(reply), out);
    }

    /// Syncs and closes the store: called once, after every connection of the node ended.
    fn shutdown(&self) {
        self.commits.stop();
        self.sync_and_release();
        let store = self.store.borrow_mut().take();
        if let Some(store) = store {
            match store.close() {
                Ok(()) => info!(shard = self.shard, "store closed"),
                Err(e) => error!(shard = self.shard, error = %e, "store close failed"),
            }
        }
    }
}

impl Op<'_> {
    /// The coordinator's request for this operation under `options`.
    fn request(&self, options: Options) -> ClientRequest {
        let options = coordinator::Options {
            n: options.n,
            quorum: options.quorum,
            timeout_ms: options.timeout_ms,
        };
        match *self {
            Op::Get { key } => ClientRequest::Get {
                options,
                key: key.to_vec(),
            },
            Op::Write {
                key,
                context,
                value: Some(value),
                return_context,
            } => ClientRequest::Put {
                options,
                return_context,
                key: key.to_vec(),
                context: context.to_vec(),
                value: value.to_vec(),
            },
            Op::Write {
                key,
                context,
                value: None,
                return_context,
            } => ClientRequest::Delete {
                options,
                return_context,
                key: key.to_vec(),
                context: context.to_vec(),
            },
        }
    }

    fn key(&self) -> &[u8] {
        match self {
            Op::Get { key } | Op::Write { key, .. } => key,
        }
    }

    fn kind(&self) -> OpKind {
        match self {
            Op::Get { .. } => OpKind::Read,
            Op::Write { .. } => OpKind::Write,
        }
    }

    fn owned(&self) -> OwnedOp {
        match *self {
            Op::Get { key } => OwnedOp::Get { key: key.to_vec() },
            Op::Write {
                key,
                context,
                value,
                return_context,
            } => OwnedOp::Write {
                key: key.to_vec(),
                context: context.to_vec(),
                value: value.map(<[u8]>::to_vec),
                return_context,
            },
        }
    }
}

impl OwnedOp {
    fn borrowed(&self) -> Op<'_> {
        match self {
            OwnedOp::Get { key } => Op::Get { key },
            OwnedOp::Write {
                key,
                context,
                value,
                return_context,
            } => Op::Write {
                key,
                context,
                value: value.as_deref(),
                return_context: *return_context,
            },
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

/// Checks a request's replication options against this node: `INVALID_ARGUMENT` for N over
/// `REPLICAS_MAX` or a quorum over N, `UNAVAILABLE` for N over the node count (0 means the
/// default, which a node with fewer members than the default lowers to its member count).
fn check_options(
    options: Options,
    kind: OpKind,
    nodes: usize,
    (n_default, r_default, w_default): (u8, u8, u8),
) -> Result<Options, ErrorReply<'static>> {
    let refuse = |code, answered, needed, message| ErrorReply {
        code,
        answered,
        needed,
        ring_epoch: 0,
        message,
    };
    if options.n > REPLICAS_MAX {
        return Err(refuse(
            ErrorCode::InvalidArgument,
            0,
            0,
            "n is above the maximum of 16",
        ));
    }
    let nodes = u8::try_from(nodes).unwrap_or(u8::MAX);
    let n = match options.n {
        0 => n_default.min(nodes).max(1),
        n => n,
    };
    let quorum_default = match kind {
        OpKind::Read => r_default,
        OpKind::Write => w_default,
    };
    let quorum = match options.quorum {
        0 => quorum_default.min(n).max(1),
        q => q,
    };
    if quorum > n {
        return Err(refuse(
            ErrorCode::InvalidArgument,
            0,
            0,
            "the quorum is above n",
        ));
    }
    if n > nodes {
        // The shortfall is in replicas: `needed` says how many the request asked for.
        return Err(refuse(
            ErrorCode::Unavailable,
            nodes,
            n,
            "fewer nodes than the requested replicas",
        ));
    }
    Ok(Options {
        n,
        quorum,
        timeout_ms: options.timeout_ms,
    })
}

/// Gathers every shard's STATS entries (this one's, then the others' over the mailbox).
async fn stats_reply(
    core: Rc<ShardCore>,
    mailbox: Rc<Mailbox<ShardRequest, ShardResponse>>,
    id: u32,
) -> Vec<u8> {
    let mut entries = core.stat_entries();
    for shard in (0..core.shards).filter(|&s| s != core.shard) {
        match mailbox.call(shard, ShardRequest::Stats).await {
            Ok(ShardResponse::Stats(more)) => entries.extend(more),
            Ok(_) | Err(_) => {
                warn!(shard = core.shard, other = shard, "no stats from a shard");
            }
        }
    }
    let stats = wire_stats(&entries);
    let mut out = Vec::new();
    let reply = StatsReply {
        stats: List::Owned(stats),
    };
    if wire::encode(id, &Message::StatsReply(reply), &mut out).is_err() {
        core.error(&mut out, id, ErrorCode::TooLarge, "too many counters");
    }
    out
}

/// Under `group` durability: whenever writes wait, sleep one interval (gathering more), sync,
/// release them.
async fn commit_loop(core: Rc<ShardCore>) {
    let interval = Duration::from_millis(GROUP_COMMIT_INTERVAL_MS_DEFAULT);
    loop {
        core.commits.work().await;
        if core.commits.is_stopped() {
            return;
        }
        glommio::timer::sleep(interval).await;
        if core.commits.is_stopped() {
            return;
        }
        core.sync_off_reactor_and_release().await;
        // Acknowledgements the coordinator held for this sync go out now.
        core.cluster.tick();
    }
}

/// Compacts the store a bounded step at a time, in a low-share task queue so requests keep
/// their latency; sleeps while there is nothing to compact.
///
/// Between steps it sleeps briefly rather than yielding its task queue: glommio polls
/// sockets and timers only when no task queue has work left (or its preempt timer, 100 ms,
/// fires), so a compaction that only yielded kept the queue busy and left every connection
/// waiting up to 100 ms for its socket to be polled, for as long as a segment took to
/// compact. The fdatasync that makes the copies durable and the unmapping of the deleted
/// segment (40 to 100 ms each) run on glommio's blocking thread.
async fn compaction_loop(core: Rc<ShardCore>) {
    let pause = Duration::from_micros(COMPACTION_STEP_PAUSE_US);
    loop {
        let step = {
            let mut store = core.store.borrow_mut();
            match store.as_mut() {
                Some(store) => store.compact_step_deferred(COMPACTION_STEP_BYTES_DEFAULT),
                None => return,
            }
        };
        match step {
            Ok(CompactProgress::Idle) => {
                glommio::timer::sleep(Duration::from_millis(COMPACTION_IDLE_MS)).await;
            }
            Ok(CompactProgress::NeedsSync { .. }) => {
                core.sync_off_reactor_and_release().await;
            }
            Ok(CompactProgress::Finished { segment, reclaimed }) => {
                info!(shard = core.shard, segment, reclaimed, "segment compacted");
                let retired = core.store.borrow_mut().as_mut().map(Store::take_retired);
                if let Some(retired) = retired.filter(|r| !r.is_empty()) {
                    glommio::executor()
                        .spawn_blocking(move || drop(retired))
                        .await;
                }
                glommio::timer::sleep(pause).await;
            }
            Ok(CompactProgress::Working { .. } | CompactProgress::Checkpointed) => {
                glommio::timer::sleep(pause).await;
            }
            Err(e) => {
                warn!(shard = core.shard, error = %e, "compaction step failed; backing off");
                glommio::timer::sleep(Duration::from_millis(COMPACTION_BACKOFF_MS)).await;
            }
        }
    }
}

/// The node id kept in `<data-dir>/NODE`, created on first start; refuses a data directory
/// made for another shard count (partitions would sit in the wrong shards' stores).
fn node_identity(data_dir: &Path, shards: u16, wanted: Option<u64>) -> Result<u64, StartError> {
    let fail = |path: &Path, message: String| StartError::DataDir {
        path: path.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| fail(data_dir, e.to_string()))?;
    let path = data_dir.join(NODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (id, recorded) = parse_node_file(&text)
                .ok_or_else(|| fail(&path, "unreadable node identity file".into()))?;
            if let Some(wanted) = wanted.filter(|&wanted| wanted != id) {
                return Err(fail(
                    &path,
                    format!("this data belongs to node {id}, not --node-id {wanted}"),
                ));
            }
            if recorded != shards {
                return Err(fail(
                    &path,
                    format!(
                        "the data was written by {recorded} shards; start with --cores {recorded} \
                         (moving partitions between shards is not supported yet)"
                    ),
                ));
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = match wanted {
                Some(id) => id,
                None => random_id().map_err(|e| fail(&path, e.to_string()))?,
            };
            write_node_file(data_dir, &path, id, shards).map_err(|e| fail(&path, e.to_string()))?;
            Ok(id)
        }
        Err(e) => Err(fail(&path, e.to_string())),
    }
}

fn parse_node_file(text: &str) -> Option<(u64, u16)> {
    let mut id = None;
    let mut shards = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("node_id = ") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("shards = ") {
            shards = v.trim().parse().ok();
        }
    }
    Some((id.filter(|&id| id != 0)?, shards?))
}

fn write_node_file(dir: &Path, path: &Path, id: u64, shards: u16) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    write!(
        file,
        "# Rotor node identity; do not edit.\nnode_id = {id}\nshards = {shards}\n"
    )?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn random_id() -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(n: u8, quorum: u8) -> Options {
        Options {
            n,
            quorum,
            timeout_ms: 0,
        }
    }

    fn outcome(n: u8, quorum: u8, kind: OpKind, nodes: usize) -> Option<(ErrorCode, u8, u8)> {
        check_options(options(n, quorum), kind, nodes, (3, 2, 2))
            .err()
            .map(|e| (e.code, e.answered, e.needed))
    }

    #[test]
    fn options_are_checked_against_the_node_count() {
        // Defaults shrink to a one-node ring.
        assert_eq!(outcome(0, 0, OpKind::Read, 1), None);
        assert_eq!(outcome(0, 0, OpKind::Write, 1), None);
        assert_eq!(outcome(1, 1, OpKind::Write, 1), None);
        assert_eq!(
            outcome(0, 2, OpKind::Read, 1),
            Some((ErrorCode::InvalidArgument, 0, 0))
        );
        assert_eq!(
            outcome(3, 2, OpKind::Write, 1),
            Some((ErrorCode::Unavailable, 1, 3))
        );
        assert_eq!(outcome(3, 0, OpKind::Write, 3), None);
        // The defaults resolve against the membership: N clamps, R and W follow.
        let resolved = check_options(options(0, 0), OpKind::Read, 2, (3, 2, 2)).unwrap();
        assert_eq!((resolved.n, resolved.quorum), (2, 2));
        let resolved = check_options(options(0, 0), OpKind::Write, 5, (3, 1, 3)).unwrap();
        assert_eq!((resolved.n, resolved.quorum), (3, 3));
        assert_eq!(
            outcome(2, 3, OpKind::Read, 3),
            Some((ErrorCode::InvalidArgument, 0, 0))
        );
        assert_eq!(
            outcome(REPLICAS_MAX + 1, 1, OpKind::Read, 100),
            Some((ErrorCode::InvalidArgument, 0, 0))
        );
    }

    #[test]
    fn the_node_file_round_trips_and_refuses_garbage() {
        assert_eq!(
            parse_node_file("# comment\nnode_id = 42\nshards = 2\n"),
            Some((42, 2))
        );
        assert_eq!(parse_node_file("node_id = 0\nshards = 2\n"), None);
        assert_eq!(parse_node_file("node_id = 42\n"), None);
        assert_eq!(parse_node_file("shards = x\nnode_id = 1"), None);

        let dir = tempfile::tempdir().unwrap();
        let id = node_identity(dir.path(), 2, None).unwrap();
        assert_eq!(
            node_identity(dir.path(), 2, None).unwrap(),
            id,
            "kept across starts"
        );
        assert_eq!(node_identity(dir.path(), 2, Some(id)).unwrap(), id);
        let err = node_identity(dir.path(), 3, None).unwrap_err().to_string();
        assert!(err.contains("--cores 2"), "{err}");
        let other = id.wrapping_add(1).max(1);
        let err = node_identity(dir.path(), 2, Some(other))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--node-id"), "{err}");

        let given = tempfile::tempdir().unwrap();
        assert_eq!(node_identity(given.path(), 1, Some(42)).unwrap(), 42);
        assert_eq!(node_identity(given.path(), 1, None).unwrap(), 42);
    }
}
