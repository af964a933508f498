//! The cluster runtime of one shard: it drives the sans-IO state machines (the shard's
//! [`Coordinator`], and on shard 0 the node's [`Gossip`] and [`FailureDetector`]) the way
//! [`crate::sim`] does, with real sockets, timers and the cross-core mailbox.
//!
//! Place in the flow:
//! - A client's GET/PUT/DELETE on a shard of a multi-node ring becomes
//!   [`Cluster::client_request`]; the coordinator's `Action::Reply` fills the connection's
//!   deferred reply ([`Cluster::client_slot`]).
//! - `Action::Send` goes, by destination: to another shard of this node over the mailbox
//!   (never TCP); to an incoming peer connection's pending reply (a pseudo shard id, see
//!   below); or to another node's shard over this shard's own outgoing [`Link`], created
//!   lazily ([`super::peer`]). Replies come back on the same link.
//! - A peer's request on an incoming connection (HELLO role peer) is fed to this shard's
//!   coordinator with `from` = (peer node, pseudo shard): HELLO carries the sender's node
//!   but not its shard, so each incoming connection gets its own shard id from
//!   `PEER_PSEUDO_SHARD_BASE` up, and the coordinator's replies to that `from` find the
//!   connection again by (pseudo replica, request id).
//! - Membership runs on shard 0: gossip rounds and pings from its timer, GOSSIP/PING frames
//!   arriving on other shards handed over by the mailbox. Each membership or reachability
//!   change makes a new [`SharedView`] (ring computed exactly as the simulator does,
//!   `Ring::initial(PARTITIONS_DEFAULT, members)`, the set of unreachable nodes, the node
//!   states) that shard 0 sends to every shard; each keeps an `Rc` of it, so the hot path
//!   never locks. The gossip state is persisted at `<data-dir>/GOSSIP` on every change.
//! - Each shard's timer ticks its coordinator (deadlines, hint delivery), and the group
//!   commit task ticks it after every sync so held acknowledgements go out.
//!
//! A node alone in its ring keeps the direct one-node path of [`super::service`]; this
//! runtime takes over once the ring has another member.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;
use tracing::{info, warn};

use super::commit::GroupCommit;
use super::config::Config;
use super::convert;
use super::mailbox::Mailbox;
use super::peer::{request_class, tag_request_id, Identity, Link, LinkKey, LinkOwner};
use super::replica_store::StoreReplicas;
use super::service::{ShardRequest, ShardResponse};
use super::stats::StatEntry;
use super::transfer::{PendingMoves, TransferAction, Transfers};
use crate::constants::{
    CLUSTER_MAILBOX_SENDS_MAX, CLUSTER_TICK_MS, PARTITIONS_DEFAULT, PEER_PSEUDO_SHARD_BASE,
    PEER_REQUEST_CLASS_TRANSFER,
};
use crate::coordinator::{
    self, Action, ClientReply, ClientRequest, Coordinator, Liveness, Origin, PeerMessage,
    ReplicaStore,
};
use crate::gossip::{
    DetectorConfig, FailureDetector, Gossip, GossipConfig, GossipMessage, GossipPeer, NodeState,
};
use crate::membership::HandoffConfig;
use crate::ring::{Member, NodeId, Replica, Ring, ShardId};
use crate::wire::{Frame, Message, NodeStatus};

/// Name of the persisted membership in the data directory.
const GOSSIP_FILE: &str = "GOSSIP";

/// What every shard routes by: the ring, who is unreachable, and the node states. Shard 0
/// makes a new one at each change and sends it to the others (cheap to clone: `Arc`s).
#[derive(Debug, Clone)]
pub struct SharedView {
    /// The ring of the current membership.
    pub ring: Arc<Ring>,
    /// Nodes this node's failure detector believes unreachable.
    pub down: Arc<BTreeSet<NodeId>>,
    /// Every known node state, by id.
    pub nodes: Arc<Vec<NodeState>>,
}

impl SharedView {
    /// The state of `node`, if known.
    pub fn node(&self, node: NodeId) -> Option<&NodeState> {
        self.nodes
            .binary_search_by_key(&node, |state| state.id)
            .ok()
            .and_then(|at| self.nodes.get(at))
    }
}

impl Liveness for SharedView {
    fn is_reachable(&self, node: NodeId) -> bool {
        !self.down.contains(&node)
    }
}

/// A message between shards of one node for the cluster runtime.
#[derive(Debug)]
pub enum ClusterRequest {
    /// A coordinator message from shard `from` of this node.
    Peer {
        /// The sending shard.
        from: Replica,
        /// Request id (fresh for requests, echoed for replies).
        request_id: u32,
        /// The message.
        message: PeerMessage,
    },
    /// A gossip message that arrived on another shard's listener, for shard 0.
    Gossip(GossipMessage),
    /// A coordinator's verdict for shard 0's failure detector.
    Unresponsive(NodeId),
    /// Shard 0's new view, for every other shard.
    View(SharedView),
}

/// One shard's cluster runtime.
pub struct Cluster {
    local: Replica,
    identity: Identity,
    n: u8,
    r: u8,
    w: u8,
    started: Instant,
    coordinator: RefCell<Coordinator<StoreReplicas>>,
    view: RefCell<Rc<SharedView>>,
    commits: Rc<GroupCommit>,
    mailbox: RefCell<Option<Rc<Mailbox<ShardRequest, ShardResponse>>>>,
    /// Mailbox sends in flight (shared with the tasks that make them).
    mailbox_sends: Rc<Cell<usize>>,
    clients: Slots<u64, ClientReply>,
    next_token: Cell<u64>,
    /// Replies owed to incoming peer connections: (peer node, pseudo shard, request id).
    incoming: Slots<IncomingKey, Vec<u8>>,
    next_pseudo: Cell<u16>,
    links: RefCell<HashMap<LinkKey, Rc<Link>>>,
    /// Shard 0 only.
    membership: Option<RefCell<Membership>>,
    /// Set once shutdown began: timers and links end.
    stopping: Cell<bool>,
    counters: Counters,
    /// Partition transfers of a ring change (see [`super::transfer`]).
    transfers: RefCell<Transfers>,
}

/// Awaited answers by key.
type Slots<K, T> = RefCell<HashMap<K, Rc<Slot<T>>>>;

/// A reply owed to an incoming peer connection: (peer node, pseudo shard, request id).
type IncomingKey = (u64, u16, u32);

/// The node's membership state, on shard 0.
struct Membership {
    config: Arc<Config>,
    path: PathBuf,
    /// `None` until the node's addresses are known (the shards listen).
    gossip: Option<Gossip>,
    detector: FailureDetector,
    published_down: BTreeSet<NodeId>,
    next_request_id: u32,
}

#[derive(Default)]
struct Counters {
    replica_writes: Cell<u64>,
    read_repairs: Cell<u64>,
    forwards: Cell<u64>,
    dropped: Cell<u64>,
}

/// Where one awaited answer lands (a client's reply, or a frame for a peer connection).
pub struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Slot<T> {
    fn new() -> Rc<Self> {
        Rc::new(Slot {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        })
    }

    fn fill(&self, value: T) {
        *self.value.borrow_mut() = Some(value);
        let waker = self.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves with the value once filled.
    pub async fn wait(&self) -> T {
        future::poll_fn(|cx| match self.value.borrow_mut().take() {
            Some(value) => Poll::Ready(value),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Cluster {
    /// The runtime of shard `shard` over `store`; `commits` is the shard's group commit.
    pub fn new(
        config: Arc<Config>,
        node_id: u64,
        shard: u16,
        shards: u16,
        store: StoreReplicas,
        commits: Rc<GroupCommit>,
    ) -> Result<Rc<Cluster>, String> {
        let local = Replica {
            node: NodeId(node_id),
            shard: ShardId(shard),
        };
        // Outgoing sockets leave from the listen IP (an unspecified one binds to any).
        let bind_ip = config
            .listen_addr()
            .map_err(|e| e.to_string())?
            .ip()
            .to_canonical();
        let coordinator_config = coordinator::Config {
            n: config.n,
            r: config.r,
            w: config.w,
            ..coordinator::Config::default()
        };
        let ring = Ring::initial(
            PARTITIONS_DEFAULT,
            vec![local_member(&config, node_id, shards)],
        )
        .map_err(|e| e.to_string())?;
        let view = SharedView {
            ring: Arc::new(ring),
            down: Arc::new(BTreeSet::new()),
            nodes: Arc::new(Vec::new()),
        };
        let membership = (shard == 0).then(|| {
            RefCell::new(Membership {
                path: config.data_dir.join(GOSSIP_FILE),
                config: config.clone(),
                gossip: None,
                detector: FailureDetector::new(DetectorConfig::default()),
                published_down: BTreeSet::new(),
                next_request_id: 1,
            })
        });
        let cluster = Rc::new(Cluster {
            local,
            identity: Identity {
                node_id,
                cluster_id: config.cluster_id,
                bind_ip,
            },
            n: config.n,
            r: config.r,
            w: config.w,
            started: Instant::now(),
            coordinator: RefCell::new(Coordinator::new(local, coordinator_config, store)),
            view: RefCell::new(Rc::new(view)),
            commits,
            mailbox: RefCell::new(None),
            mailbox_sends: Rc::new(Cell::new(0)),
            clients: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            incoming: RefCell::new(HashMap::new()),
            next_pseudo: Cell::new(PEER_PSEUDO_SHARD_BASE),
            links: RefCell::new(HashMap::new()),
            membership,
            stopping: Cell::new(false),
            counters: Counters::default(),
            transfers: RefCell::new(Transfers::new(
                local,
                HandoffConfig::default(),
                coordinator_config.sibling_limits,
            )),
        });
        Ok(cluster)
    }

    /// Starts the shard's timer; `mailbox` reaches the node's other shards.
    pub fn start(
        self: &Rc<Self>,
        mailbox: Rc<Mailbox<ShardRequest, ShardResponse>>,
        endpoints: impl Fn() -> Option<(String, Vec<u16>)> + 'static,
    ) {
        *self.mailbox.borrow_mut() = Some(mailbox);
        let cluster = self.clone();
        glommio::spawn_local(async move {
            while !cluster.stopping.get() {
                glommio::timer::sleep(Duration::from_millis(CLUSTER_TICK_MS)).await;
                if cluster.membership.is_some() {
                    cluster.membership_tick(&endpoints);
                }
                cluster.tick();
            }
        })
        .detach();
    }

    /// Shutdown began: the timer and the links end.
    pub fn stop(&self) {
        self.stopping.set(true);
    }

    /// The cluster this node belongs to.
    pub fn cluster_id(&self) -> u64 {
        self.identity.cluster_id
    }

    /// The view this shard routes by now.
    pub fn view(&self) -> Rc<SharedView> {
        self.view.borrow().clone()
    }

    /// Default N, R and W (before clamping to the membership).
    pub fn defaults(&self) -> (u8, u8, u8) {
        (self.n, self.r, self.w)
    }

    /// A new client token and the slot its reply will land in.
    pub fn client_slot(&self) -> (u64, Rc<Slot<ClientReply>>) {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        let slot = Slot::new();
        self.clients.borrow_mut().insert(token, slot.clone());
        (token, slot)
    }

    /// Forgets a client token whose connection no longer waits.
    pub fn forget_client(&self, token: u64) {
        self.clients.borrow_mut().remove(&token);
    }

    /// Runs a client request on this shard's coordinator.
    pub fn client_request(self: &Rc<Self>, token: u64, request: ClientRequest) {
        let is_get = matches!(request, ClientRequest::Get { .. });
        let out = self.drive(|now, coordinator, view, out| {
            coordinator.client_request(now, Origin::Client(token), request, &view.ring, view, out)
        });
        self.actions(out, is_get);
    }

    /// A pseudo replica naming a new incoming peer connection from `node`.
    pub fn incoming_peer(&self, node: u64) -> Replica {
        let pseudo = self.next_pseudo.get();
        let next = pseudo.checked_add(1).unwrap_or(PEER_PSEUDO_SHARD_BASE);
        self.next_pseudo.set(next.max(PEER_PSEUDO_SHARD_BASE));
        Replica {
            node: NodeId(node),
            shard: ShardId(pseudo),
        }
    }

    /// A peer request from incoming connection `from`; returns the slot of its reply
    /// frame, and a guard that forgets the slot when dropped.
    pub fn peer_request(
        self: &Rc<Self>,
        from: Replica,
        request_id: u32,
        message: PeerMessage,
    ) -> (Rc<Slot<Vec<u8>>>, IncomingGuard) {
        let slot = Slot::new();
        let key = (from.node.0, from.shard.0, request_id);
        self.incoming.borrow_mut().insert(key, slot.clone());
        let guard = IncomingGuard {
            cluster: self.clone(),
            key,
        };
        self.peer_message(from, request_id, message);
        (slot, guard)
    }

    /// A gossip message that arrived on this shard's listener: handled by shard 0 (here
    /// or over the mailbox); resolves to the reply for the sender, if any.
    pub async fn gossip(self: Rc<Self>, message: GossipMessage) -> Option<GossipMessage> {
        if self.membership.is_some() {
            return self.handle_gossip(message);
        }
        let mailbox = self.mailbox.borrow().clone()?;
        match mailbox
            .call(0, ShardRequest::Cluster(ClusterRequest::Gossip(message)))
            .await
        {
            Ok(ShardResponse::Gossip(reply)) => reply,
            _ => None,
        }
    }

    /// Serves a cluster message from another shard of this node.
    pub fn serve(self: &Rc<Self>, request: ClusterRequest) -> ShardResponse {
        match request {
            ClusterRequest::Peer {
                from,
                request_id,
                message,
            } => {
                self.peer_message(from, request_id, message);
                ShardResponse::Done
            }
            ClusterRequest::Gossip(message) => ShardResponse::Gossip(self.handle_gossip(message)),
            ClusterRequest::Unresponsive(node) => {
                self.unresponsive(node);
                ShardResponse::Done
            }
            ClusterRequest::View(view) => {
                self.set_view(view);
                ShardResponse::Done
            }
        }
    }

    /// Time passed (the shard's timer, and after each group commit): deadlines, hint
    /// delivery, acknowledgements whose writes became durable.
    pub fn tick(self: &Rc<Self>) {
        let out =
            self.drive(|now, coordinator, view, out| coordinator.tick(now, &view.ring, view, out));
        self.actions(out, true);
        self.transfer_tick();
    }

    /// This shard's cluster counters for STATS.
    pub fn stat_entries(&self, entries: &mut Vec<StatEntry>) {
        let shard = self.local.shard.0;
        let hints = self.coordinator.borrow().store().hint_count();
        let mut push = |name, value| entries.push(StatEntry { shard, name, value });
        push("hints_held", u64::try_from(hints).unwrap_or(u64::MAX));
        push("replica_writes", self.counters.replica_writes.get());
        push("read_repairs", self.counters.read_repairs.get());
        push("forwards", self.counters.forwards.get());
        push("peer_messages_dropped", self.counters.dropped.get());
        if self.membership.is_some() {
            let down = self.view().down.len();
            push("peers_down", u64::try_from(down).unwrap_or(u64::MAX));
        }
        let t = self.transfers.borrow().counters();
        push("transfer_active", t.active);
        push("transfer_keys_sent", t.keys_sent);
        push("transfer_keys_received", t.keys_received);
        push("transfer_done", t.done);
        push("transfer_stalled", t.stalled);
        push("partitions_dropped", t.partitions_dropped);
    }

    // --- driving the coordinator --------------------------------------------------------

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one coordinator step and returns its actions (the borrow ends before they
    /// are carried out, since carrying them out may step the coordinator again).
    fn drive(
        &self,
        step: impl FnOnce(u64, &mut Coordinator<StoreReplicas>, &SharedView, &mut Vec<Action>),
    ) -> Vec<Action> {
        let view = self.view();
        let now = self.now();
        let mut out = Vec::new();
        let needs_sync = {
            let mut coordinator = self.coordinator.borrow_mut();
            step(now, &mut coordinator, &view, &mut out);
            coordinator.store().needs_sync()
        };
        if needs_sync {
            self.commits.request_sync();
        }
        out
    }

    fn peer_message(self: &Rc<Self>, from: Replica, request_id: u32, message: PeerMessage) {
        if matches!(
            message,
            PeerMessage::ReplicaWrite { .. } | PeerMessage::HintDeliver { .. }
        ) {
            bump(&self.counters.replica_writes);
        }
        // Read repairs go out when a read's last answer arrives.
        let repairs = matches!(
            message,
            PeerMessage::ReplicaReadReply { .. }
                | PeerMessage::Error { .. }
                | PeerMessage::Reply(_)
        );
        let out = self.drive(|now, coordinator, view, out| {
            coordinator.peer_message(now, from, request_id, message, &view.ring, view, out)
        });
        self.actions(out, repairs);
    }

    /// Carries out the coordinator's actions. `repairs`: whether a REPLICA_WRITE among them
    /// is a read repair (the step could only have finished a read).
    fn actions(self: &Rc<Self>, out: Vec<Action>, repairs: bool) {
        for action in out {
            match action {
                Action::Send {
                    to,
                    request_id,
                    message,
                } => {
                    match &message {
                        PeerMessage::ReplicaWrite { .. } if repairs => {
                            bump(&self.counters.read_repairs)
                        }
                        PeerMessage::Forward(_) => bump(&self.counters.forwards),
                        _ => {}
                    }
                    self.send(to, request_id, message);
                }
                Action::Reply { client, reply } => {
                    let slot = self.clients.borrow_mut().remove(&client);
                    if let Some(slot) = slot {
                        slot.fill(reply);
                    }
                }
                Action::Unresponsive { node } => self.report_unresponsive(node),
            }
        }
    }

    fn send(self: &Rc<Self>, to: Replica, request_id: u32, message: PeerMessage) {
        if to.node == self.local.node && to.shard.0 < PEER_PSEUDO_SHARD_BASE {
            if to.shard == self.local.shard {
                // The coordinator never addresses itself; a message to this shard is
                // delivered as if it came back from the mailbox.
                return self.peer_message(self.local, request_id, message);
            }
            let request = ClusterRequest::Peer {
                from: self.local,
                request_id,
                message,
            };
            return self.mailbox_send(to.shard.0, request);
        }
        let mut frame = Vec::new();
        if convert::encode_peer(request_id, &message, &mut frame).is_err() {
            warn!(?to, "a peer message does not encode; dropped");
            return bump(&self.counters.dropped);
        }
        if to.shard.0 >= PEER_PSEUDO_SHARD_BASE {
            let slot = self
                .incoming
                .borrow_mut()
                .remove(&(to.node.0, to.shard.0, request_id));
            match slot {
                Some(slot) => slot.fill(frame),
                None => bump(&self.counters.dropped), // That connection is gone.
            }
            return;
        }
        if !self.link(LinkKey::Replica(to)).push(frame) {
            // The coordinator's deadline covers the request; the detector hears of it then.
            bump(&self.counters.dropped);
        }
    }

    fn link(self: &Rc<Self>, key: LinkKey) -> Rc<Link> {
        if let Some(link) = self.links.borrow().get(&key) {
            return link.clone();
        }
        let link = Link::start(self.clone(), self.identity, key.clone());
        self.links.borrow_mut().insert(key, link.clone());
        link
    }

    fn mailbox_send(self: &Rc<Self>, to: u16, request: ClusterRequest) {
        let Some(mailbox) = self.mailbox.borrow().clone() else {
            return bump(&self.counters.dropped);
        };
        if self.mailbox_sends.get() >= CLUSTER_MAILBOX_SENDS_MAX {
            return bump(&self.counters.dropped);
        }
        self.mailbox_sends.set(self.mailbox_sends.get() + 1);
        let sends = self.mailbox_sends.clone();
        glommio::spawn_local(async move {
            let _ = mailbox.call(to, ShardRequest::Cluster(request)).await;
            sends.set(sends.get().saturating_sub(1));
        })
        .detach();
    }

    fn report_unresponsive(self: &Rc<Self>, node: NodeId) {
        if self.membership.is_some() {
            self.unresponsive(node);
        } else {
            self.mailbox_send(0, ClusterRequest::Unresponsive(node));
        }
    }

    // --- membership (shard 0) ----------------------------------------------------------

    fn unresponsive(self: &Rc<Self>, node: NodeId) {
        if let Some(membership) = &self.membership {
            membership.borrow_mut().detector.failed(node);
            self.publish_if_reachability_changed();
        }
    }

    fn membership_tick(self: &Rc<Self>, endpoints: &dyn Fn() -> Option<(String, Vec<u16>)>) {
        let Some(membership) = &self.membership else {
            return;
        };
        let now = self.now();
        let mut sends: Vec<(GossipPeer, u32, GossipMessage)> = Vec::new();
        let mut changed = false;
        {
            let mut m = membership.borrow_mut();
            if m.gossip.is_none() {
                let Some((address, ports)) = endpoints() else {
                    return;
                };
                let gossip = m.open_gossip(self.local.node, address, ports);
                m.detector.set_peers(gossip.peers());
                m.gossip = Some(gossip);
                changed = true;
            }
            for (peer, nonce) in m.detector.tick(now) {
                let id = m.request_id();
                let ping = GossipMessage::Ping {
                    nonce,
                    sender: self.local.node.0,
                };
                sends.push((GossipPeer::Node(peer), id, ping));
            }
            let m = &mut *m;
            if let Some(gossip) = m.gossip.as_mut() {
                let lonely = gossip.peers().is_empty() && m.config.seeds.is_empty();
                if !lonely {
                    if let Some((peer, digest)) = gossip.tick(now) {
                        // Push what this node knows first (request id 0, no reply), so
                        // the receiver knows the sender before it answers the digest.
                        let push = GossipMessage::State {
                            sender: self.local.node.0,
                            ring_epoch: self.view().ring.epoch(),
                            nodes: gossip.nodes().cloned().collect(),
                        };
                        sends.push((peer.clone(), 0, push));
                        let id = m.request_id();
                        sends.push((peer, id, digest));
                    }
                }
            }
        }
        if changed {
            self.membership_changed();
        }
        for (peer, id, message) in sends {
            self.send_gossip(peer, id, &message);
        }
        self.publish_if_reachability_changed();
    }

    /// A gossip message for shard 0; returns the reply to its sender, if any.
    fn handle_gossip(self: &Rc<Self>, message: GossipMessage) -> Option<GossipMessage> {
        let membership = self.membership.as_ref()?;
        let now = self.now();
        let (out, changed) = match message {
            GossipMessage::Ping { nonce, .. } => {
                return Some(GossipMessage::Pong {
                    nonce,
                    sender: self.local.node.0,
                })
            }
            GossipMessage::Pong { nonce, sender } => {
                membership.borrow_mut().detector.pong(NodeId(sender), nonce);
                self.publish_if_reachability_changed();
                return None;
            }
            message => {
                let mut m = membership.borrow_mut();
                let sender = match &message {
                    GossipMessage::Digest { sender, .. } => Some(*sender),
                    _ => None,
                };
                let gossip = m.gossip.as_mut()?;
                let (out, changed) = gossip.handle(now, message);
                (
                    out.into_iter()
                        .map(|(peer, msg)| (peer, sender, msg))
                        .collect::<Vec<_>>(),
                    changed,
                )
            }
        };
        if changed {
            self.membership_changed();
        }
        let mut reply = None;
        for (peer, sender, message) in out {
            let to_sender = matches!(&peer, GossipPeer::Node(node) if Some(node.0) == sender);
            if to_sender && reply.is_none() && matches!(message, GossipMessage::State { .. }) {
                reply = Some(message);
            } else {
                let id = membership.borrow_mut().request_id();
                self.send_gossip(peer, id, &message);
            }
        }
        reply
    }

    fn send_gossip(self: &Rc<Self>, peer: GossipPeer, request_id: u32, message: &GossipMessage) {
        let key = match peer {
            GossipPeer::Node(node) if node == self.local.node => return,
            GossipPeer::Node(node) => LinkKey::Replica(Replica {
                node,
                shard: ShardId(0),
            }),
            GossipPeer::Seed(address) => LinkKey::Seed(address),
        };
        let mut frame = Vec::new();
        if convert::encode_gossip(request_id, message, &mut frame).is_ok() {
            self.link(key).push(frame);
        }
    }

    /// The membership changed: new ring, detector peers, persisted state, view.
    fn membership_changed(self: &Rc<Self>) {
        let Some(membership) = &self.membership else {
            return;
        };
        let view = {
            let mut m = membership.borrow_mut();
            let m = &mut *m;
            let Some(gossip) = m.gossip.as_mut() else {
                return;
            };
            let ring = match Ring::initial(PARTITIONS_DEFAULT, gossip.members()) {
                Ok(ring) => ring,
                Err(error) => {
                    warn!(%error, "the gossiped membership makes no ring; keeping the old one");
                    return;
                }
            };
            gossip.set_ring_epoch(ring.epoch());
            m.detector.set_peers(gossip.peers());
            if let Err(error) = persist(&m.path, &gossip.persist()) {
                warn!(path = %m.path.display(), %error, "cannot persist the membership");
            }
            let down: BTreeSet<NodeId> = m.detector.unreachable().collect();
            m.published_down = down.clone();
            info!(
                members = ring.members().len(),
                epoch = ring.epoch(),
                "membership changed"
            );
            SharedView {
                ring: Arc::new(ring),
                down: Arc::new(down),
                nodes: Arc::new(gossip.nodes().cloned().collect()),
            }
        };
        self.publish(view);
    }

    fn publish_if_reachability_changed(self: &Rc<Self>) {
        let Some(membership) = &self.membership else {
            return;
        };
        let down = {
            let mut m = membership.borrow_mut();
            let down: BTreeSet<NodeId> = m.detector.unreachable().collect();
            if down == m.published_down {
                return;
            }
            m.published_down = down.clone();
            down
        };
        info!(down = ?down, "reachability changed");
        let current = self.view();
        self.publish(SharedView {
            ring: current.ring.clone(),
            down: Arc::new(down),
            nodes: current.nodes.clone(),
        });
    }

    fn publish(self: &Rc<Self>, view: SharedView) {
        let count = self.shard_count();
        for shard in (0..count).filter(|&s| s != self.local.shard.0) {
            self.mailbox_send(shard, ClusterRequest::View(view.clone()));
        }
        self.set_view(view);
    }

    fn shard_count(&self) -> u16 {
        let view = self.view();
        view.ring
            .members()
            .iter()
            .find(|member| member.id == self.local.node)
            .map_or(1, |member| member.shards)
    }

    fn link_address(&self, key: &LinkKey) -> Option<String> {
        match key {
            LinkKey::Seed(address) => Some(address.clone()),
            LinkKey::Replica(replica) => {
                let view = self.view();
                shard_address(view.node(replica.node)?, replica.shard)
            }
        }
    }
}

// --- partition transfer (see super::transfer) -----------------------------------------

impl Cluster {
    /// Routes by `view` from now on; the transfers follow its pending change.
    fn set_view(self: &Rc<Self>, view: SharedView) {
        let view = Rc::new(view);
        *self.view.borrow_mut() = view.clone();
        let pending = pending_moves(&view);
        let targets = self.transfers.borrow_mut().view(
            self.now(),
            &view.ring,
            pending,
            usize::from(self.n),
            &*view,
        );
        if let Some(targets) = targets {
            self.coordinator
                .borrow_mut()
                .set_extra_write_targets(targets);
        }
    }

    fn transfer_tick(self: &Rc<Self>) {
        let mut out = Vec::new();
        {
            let coordinator = self.coordinator.borrow();
            let mut transfers = self.transfers.borrow_mut();
            transfers.tick(self.now(), coordinator.store(), &mut out);
        }
        self.transfer_actions(out);
    }

    /// A TRANSFER_BATCH or TRANSFER_CONFIRM on a peer connection from `from` (a pseudo
    /// replica): handled at once, its answer appended to `reply`. False for any other
    /// message.
    pub fn transfer_request(
        self: &Rc<Self>,
        from: Replica,
        request_id: u32,
        message: &Message<'_>,
        reply: &mut Vec<u8>,
    ) -> bool {
        let Some(message) = convert::transfer_message(message) else {
            return false;
        };
        let mut out = Vec::new();
        self.with_store(|now, store, transfers| {
            transfers.request(now, from, request_id, message, store, &mut out)
        });
        let mut rest = Vec::new();
        for action in out {
            match action {
                TransferAction::Send {
                    to,
                    request_id,
                    message,
                } if to == from => {
                    if convert::encode_transfer(request_id, &message, reply).is_err() {
                        bump(&self.counters.dropped);
                    }
                }
                other => rest.push(other),
            }
        }
        self.transfer_actions(rest);
        true
    }

    /// A reply on this shard's link `key` to a transfer request; false if it is not one.
    fn transfer_reply(self: &Rc<Self>, key: &LinkKey, frame: &Frame<'_>) -> bool {
        let (class, request_id) = request_class(frame.request_id);
        let message = match convert::transfer_message(&frame.message) {
            Some(message) => Ok(message),
            None if class != PEER_REQUEST_CLASS_TRANSFER => return false,
            None => match &frame.message {
                Message::Error(e) => Err(e.code),
                _ => return true, // A transfer request id on something else: dropped.
            },
        };
        let LinkKey::Replica(from) = key else {
            return true;
        };
        let mut out = Vec::new();
        self.with_store(|now, store, transfers| {
            transfers.reply(now, *from, request_id, message, store, &mut out)
        });
        self.transfer_actions(out);
        true
    }

    /// Runs `step` over the shard's store and transfers, then asks for a sync if it wrote.
    fn with_store(&self, step: impl FnOnce(u64, &mut StoreReplicas, &mut Transfers)) {
        let now = self.now();
        let needs_sync = {
            let mut coordinator = self.coordinator.borrow_mut();
            let mut transfers = self.transfers.borrow_mut();
            step(now, coordinator.store_mut(), &mut transfers);
            coordinator.store().needs_sync()
        };
        if needs_sync {
            self.commits.request_sync();
        }
    }

    fn transfer_actions(self: &Rc<Self>, out: Vec<TransferAction>) {
        for action in out {
            match action {
                TransferAction::Send {
                    to,
                    request_id,
                    message,
                } => {
                    let id = tag_request_id(PEER_REQUEST_CLASS_TRANSFER, request_id);
                    let mut frame = Vec::new();
                    let sent = to.shard.0 < PEER_PSEUDO_SHARD_BASE
                        && convert::encode_transfer(id, &message, &mut frame).is_ok()
                        && self.link(LinkKey::Replica(to)).push(frame);
                    if !sent {
                        // The transfer's own timeout sends it again.
                        bump(&self.counters.dropped);
                    }
                }
                TransferAction::MoveDone { epoch, index } => {
                    let _ = (epoch, index); // MOVEDONE-STUB
                }
                TransferAction::DropPartition { partition } => {
                    let dropped = self.with_store_result(|store| store.drop_partition(partition));
                    match dropped {
                        Ok(_) => info!(partition, "dropped a partition moved away"),
                        Err(error) => warn!(partition, ?error, "cannot drop a partition"),
                    }
                }
            }
        }
    }

    fn with_store_result<T>(&self, f: impl FnOnce(&mut StoreReplicas) -> T) -> T {
        let result = f(self.coordinator.borrow_mut().store_mut());
        if self.coordinator.borrow().store().needs_sync() {
            self.commits.request_sync();
        }
        result
    }
}

/// The view's pending change as the transfers take it.
fn pending_moves(_view: &SharedView) -> Option<PendingMoves<'_>> {
    None // PENDING-STUB
}

/// Where `shard` of the node `state` describes listens: the host of its gossiped common
/// address with the shard's own port.
fn shard_address(state: &NodeState, shard: ShardId) -> Option<String> {
    let port = *state.ports.get(usize::from(shard.0))?;
    let host = state.address.rsplit_once(':')?.0;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Forgets an incoming peer request's slot when its connection stops waiting.
pub struct IncomingGuard {
    cluster: Rc<Cluster>,
    key: IncomingKey,
}

impl Drop for IncomingGuard {
    fn drop(&mut self) {
        self.cluster.incoming.borrow_mut().remove(&self.key);
    }
}

impl LinkOwner for Cluster {
    fn address(&self, key: &LinkKey) -> Option<String> {
        self.link_address(key)
    }

    fn on_reply(self: &Rc<Self>, key: &LinkKey, frame: Frame<'_>) {
        let this = self;
        if this.transfer_reply(key, &frame) {
            return;
        }
        if let Some(message) = convert::gossip_message(&frame.message) {
            if matches!(
                message,
                GossipMessage::Pong { .. } | GossipMessage::State { .. }
            ) {
                this.handle_gossip(message);
            }
            return;
        }
        let LinkKey::Replica(from) = key else {
            return;
        };
        match convert::peer_reply(&frame.message) {
            Ok(Some(message)) => this.peer_message(*from, frame.request_id, message),
            Ok(None) => {}
            Err(error) => {
                // Left to the request's deadline, like a lost reply.
                warn!(?from, %error, "a peer's reply does not decode");
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.get()
    }
}

impl Membership {
    fn request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = id.wrapping_add(1).max(1);
        id
    }

    /// This node's gossip: restored from the data directory when it was persisted there.
    fn open_gossip(&self, node: NodeId, address: String, ports: Vec<u16>) -> Gossip {
        let local = NodeState {
            id: node,
            version: 1,
            status: NodeStatus::Up,
            weight: self.config.weight,
            zone: self.config.zone.clone(),
            address,
            ports,
        };
        let config = GossipConfig {
            interval_ms: self.config.gossip_interval_ms,
            ..GossipConfig::default()
        };
        let seed = random_seed(node.0);
        let seeds = self.config.seeds.clone();
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                match Gossip::restore(&bytes, local.clone(), seeds.clone(), config, seed) {
                    Ok(gossip) => {
                        info!(nodes = gossip.nodes().count(), "membership restored");
                        gossip
                    }
                    Err(error) => {
                        warn!(%error, path = %self.path.display(), "persisted membership unreadable; starting from the seeds");
                        Gossip::new(local, seeds, config, seed)
                    }
                }
            }
            Err(_) => Gossip::new(local, seeds, config, seed),
        }
    }
}

/// This node as a ring member before it knows any other.
fn local_member(config: &Config, node_id: u64, shards: u16) -> Member {
    let member = Member::new(NodeId(node_id), config.weight, shards);
    if config.zone.is_empty() {
        member
    } else {
        member.with_zone(config.zone.clone())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, directory fsync.
fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn random_seed(node: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    node ^ (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: u64, address: &str, ports: Vec<u16>) -> NodeState {
        NodeState {
            id: NodeId(id),
            version: 1,
            status: NodeStatus::Up,
            weight: 1,
            zone: String::new(),
            address: address.into(),
            ports,
        }
    }

    #[test]
    fn a_peer_shard_is_reached_at_its_gossiped_host_and_own_port() {
        let node = state(1, "127.0.0.2:7070", vec![7071, 7072]);
        assert_eq!(
            shard_address(&node, ShardId(1)).as_deref(),
            Some("127.0.0.2:7072")
        );
        assert_eq!(shard_address(&node, ShardId(2)), None, "no such shard");
        let v6 = state(2, "[::1]:7070", vec![7071]);
        assert_eq!(
            shard_address(&v6, ShardId(0)).as_deref(),
            Some("[::1]:7071")
        );
        assert_eq!(
            shard_address(&state(3, "nonsense", vec![1]), ShardId(0)),
            None
        );
    }

    #[test]
    fn the_view_finds_nodes_and_answers_for_the_detector() {
        let ring = Ring::initial(64, vec![Member::new(NodeId(1), 1, 1)]).unwrap();
        let view = SharedView {
            ring: Arc::new(ring),
            down: Arc::new([NodeId(3)].into_iter().collect()),
            nodes: Arc::new(vec![state(1, "a:1", vec![2]), state(3, "b:1", vec![2])]),
        };
        assert_eq!(view.node(NodeId(3)).map(|s| s.id), Some(NodeId(3)));
        assert!(view.node(NodeId(2)).is_none());
        assert!(view.is_reachable(NodeId(1)));
        assert!(!view.is_reachable(NodeId(3)));
    }

    #[test]
    fn the_membership_is_persisted_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GOSSIP_FILE);
        persist(&path, b"first").unwrap();
        persist(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
    }
}
