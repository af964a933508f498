//! Anti-entropy on a real shard: drives the sans-IO [`AntiEntropy`] of
//! [`crate::antientropy`] with the shard's clock, ring, failure detector, store and peer
//! links, the way [`crate::sim`] drives it with simulated ones.
//!
//! Place in the flow:
//! - Requester: the shard's cluster timer calls [`ShardAntiEntropy::tick`]; the exchange
//!   picks the next partition this shard replicates and a reachable peer replica, and its
//!   MERKLE_RANGE / MERKLE_KEYS requests and MERKLE_PUSH write-backs go out on the shard's
//!   own link to that replica ([`super::peer`]) with anti-entropy's request-id class
//!   (`PEER_REQUEST_CLASS_ANTIENTROPY`). Their replies come back on the link to
//!   `Cluster::on_reply`, which hands them here ([`ShardAntiEntropy::on_reply`]) by
//!   opcode, and an `ERROR` by class.
//! - Responder: a MERKLE_* request on an incoming peer connection is answered at once,
//!   synchronously, from the shard's store ([`ShardAntiEntropy::serve`]): hashes and leaf
//!   entries are read, pushed entries merged, and the reply frame written on the spot.
//! - Rate: the shard's coordinated client requests report their latency
//!   ([`ShardAntiEntropy::record_latency`]); every `EXCHANGE_PRESSURE_WINDOW_MS` the window's
//!   p99.9 goes to the exchange's AIMD rate limiter, so repair yields to foreground load.
//!
//! Request ids: the machine numbers its own requests; each request sent gets a fresh
//! 30-bit wire id from this runtime, remembered with the machine's id and the partition
//! until its reply or its deadline, so an `ERROR` (which names no partition) still finds its
//! exchange and the machine's ids never need to fit in 30 bits.
//!
//! - Tombstone purge: every `TOMBSTONE_PURGE_CHECK_MS`, while the ring is stable (no
//!   membership change pending), the machine's purge grants (`AntiEntropy::take_purge_grants`,
//!   the rule in `src/antientropy/purge.rs`) are queued, and each tick hands a few of them
//!   to the store (`ExchangeHost::purge_tombstones`), which takes the tombstones out of its
//!   index and Merkle tree. A pending change or a new ring empties the queue
//!   (`--tombstone-purge off` turns all of it off).
//!
//! What this module deliberately does not do: decide anything about the exchange (the state
//! machine does), hold a borrow of the store across an `.await` (every call is synchronous),
//! or run in a one-node ring (there is nobody to compare with).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::cluster::{Cluster, SharedView};
use super::config::Config;
use super::convert;
use super::peer::{request_class, tag_request_id};
use super::replica_store::StoreReplicas;
use super::stats::StatEntry;
use crate::antientropy::{
    AntiEntropy, ExchangeAction, ExchangeConfig, ExchangeMessage, ExchangeStats, MerkleView,
    PurgeGrant,
};
use crate::causal::SiblingLimits;
use crate::constants::{
    EXCHANGE_PRESSURE_WINDOW_MS, EXCHANGE_WIRE_REQUESTS_MAX, PEER_REQUEST_CLASS_ANTIENTROPY,
    PEER_REQUEST_CLASS_SHIFT, STATS_LATENCY_US_MAX, TOMBSTONE_PURGE_BATCH,
    TOMBSTONE_PURGE_CHECK_MS, TOMBSTONE_PURGE_GRANTS_PER_TICK, TOMBSTONE_PURGE_SETTLE_MS,
};
use crate::coordinator::ReplicaStore;
use crate::ring::{NodeId, PartitionId, Replica, Ring};
use crate::wire::{self, ErrorCode, ErrorReply, Frame, MerklePushAck, Message};

/// What anti-entropy needs from the shard that runs it (the cluster runtime; the tests'
/// in-memory shards).
pub trait ExchangeHost {
    /// The shard's store.
    type Store: MerkleView + ReplicaStore;
    /// Milliseconds since the shard started.
    fn now(&self) -> u64;
    /// The ring and the failure detector's verdicts the shard routes by now.
    fn view(&self) -> Rc<SharedView>;
    /// Runs `f` on the store (and has what it wrote synced by the shard's group commit).
    fn with_store<R>(&self, f: impl FnOnce(&mut Self::Store) -> R) -> R;
    /// Queues a frame on the link to another node's shard; false if it was dropped.
    fn send_frame(&self, to: Replica, frame: Vec<u8>) -> bool;
    /// A request to `node` went unanswered: a verdict for the failure detector.
    fn unresponsive(&self, node: NodeId);
    /// Purges up to `max` tombstones `grant` allows from the store (keeping its Merkle
    /// tree in step); returns the purged (key, state) entries. The default purges nothing.
    fn purge_tombstones(&self, grant: &PurgeGrant, max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let _ = (grant, max);
        Vec::new()
    }
}

/// One shard's anti-entropy runtime.
pub struct ShardAntiEntropy {
    local: Replica,
    /// Replicas per partition (the cluster's N).
    n: u8,
    /// Whether this shard starts exchanges (it answers its peers' either way).
    enabled: bool,
    request_timeout_ms: u64,
    machine: RefCell<AntiEntropy>,
    requests: RefCell<WireRequests>,
    latency: RefCell<LatencyWindow>,
    coverage: RefCell<Coverage>,
    purge: RefCell<Purges>,
    counters: Counters,
}

/// Tombstone purge grants waiting to be carried out.
#[derive(Default)]
struct Purges {
    /// Whether this shard purges at all (`--tombstone-purge`).
    on: bool,
    /// When the machine is next asked for grants.
    next_check_at: u64,
    /// The ring the queued grants were given under.
    ring: Option<Arc<Ring>>,
    /// Grants not yet carried out (or not completely), oldest first; one per partition.
    queue: VecDeque<PurgeGrant>,
}

/// Figures of this runtime besides the machine's own ([`ExchangeStats`]).
#[derive(Default)]
struct Counters {
    pushes_acked: Cell<u64>,
    /// Requests and pushes not sent (link down or full, bound reached, encoding failed).
    sends_dropped: Cell<u64>,
    /// Replies that answer no request in flight (late, duplicated or foreign).
    replies_unknown: Cell<u64>,
    /// Requests served for peers.
    requests_served: Cell<u64>,
    /// Purge grants received from the machine.
    purge_grants: Cell<u64>,
    /// Tombstones purged under them.
    tombstones_purged: Cell<u64>,
}

impl ShardAntiEntropy {
    /// The anti-entropy of shard `local` as `config` sets it up.
    pub fn new(local: Replica, config: &Config) -> Self {
        let exchange = ExchangeConfig {
            n: config.n,
            exchange_interval_ms: config.ae_interval_ms,
            keys_per_sec: config.ae_keys_per_sec,
            ..ExchangeConfig::default()
        };
        let shard = ShardAntiEntropy::with_config(local, exchange, config.anti_entropy);
        shard.purge.borrow_mut().on = config.tombstone_purge;
        shard
    }

    /// The anti-entropy of shard `local` with explicit exchange settings.
    pub fn with_config(local: Replica, exchange: ExchangeConfig, enabled: bool) -> Self {
        ShardAntiEntropy {
            local,
            n: exchange.n,
            enabled,
            request_timeout_ms: exchange.request_timeout_ms,
            machine: RefCell::new(AntiEntropy::new(local, exchange, SiblingLimits::default())),
            requests: RefCell::new(WireRequests::default()),
            latency: RefCell::new(LatencyWindow::new()),
            coverage: RefCell::new(Coverage::default()),
            purge: RefCell::new(Purges {
                on: true,
                ..Purges::default()
            }),
            counters: Counters::default(),
        }
    }

    /// The exchange's figures so far.
    pub fn stats(&self) -> ExchangeStats {
        self.machine.borrow().stats()
    }

    /// Partitions this shard replicates, and how many of them the last exchange found
    /// equal to the peer's copy (roots compared).
    pub fn coverage(&self) -> (u64, u64) {
        let coverage = self.coverage.borrow();
        (coverage.replicated, coverage.in_sync.len() as u64)
    }

    /// A client request this shard coordinated took `us` microseconds.
    pub fn record_latency(&self, us: u64) {
        self.latency.borrow_mut().record(us);
    }

    /// Time passed: the rate's pressure report at each window's end, deadlines, and new
    /// exchanges when the rate allows.
    pub fn tick<H: ExchangeHost>(&self, host: &H) {
        let now = host.now();
        let view = host.view();
        if let Some(p999) = self.latency.borrow_mut().report(now) {
            self.machine.borrow_mut().set_pressure(p999);
        }
        self.requests
            .borrow_mut()
            .prune(now, self.request_timeout_ms.saturating_mul(2));
        if !self.enabled || view.ring.members().len() < 2 {
            return;
        }
        self.coverage
            .borrow_mut()
            .follow(&view.ring, self.local, self.n);
        let mut out = Vec::new();
        self.machine
            .borrow_mut()
            .tick(now, &view.ring, &*view, &mut out);
        self.carry_out(host, now, out);
        self.purge_step(host, now, &view);
    }

    /// Asks the machine for purge grants when it is time (nothing while a membership
    /// change is pending, and a new ring voids the queue), then carries out a bounded
    /// share of the queued ones.
    fn purge_step<H: ExchangeHost>(&self, host: &H, now: u64, view: &SharedView) {
        let mut purge = self.purge.borrow_mut();
        if !purge.on {
            return;
        }
        let stable = view.pending.is_none();
        let same_ring = purge
            .ring
            .as_ref()
            .is_some_and(|ring| Arc::ptr_eq(ring, &view.ring));
        if !stable || !same_ring {
            purge.queue.clear();
            purge.ring = Some(view.ring.clone());
        }
        if !stable {
            // Forget what was granted, so the next stable ring grants afresh.
            let _ = self.machine.borrow_mut().take_purge_grants(
                &view.ring,
                false,
                TOMBSTONE_PURGE_SETTLE_MS,
            );
            return;
        }
        if now >= purge.next_check_at {
            purge.next_check_at = now.saturating_add(TOMBSTONE_PURGE_CHECK_MS);
            let grants = self.machine.borrow_mut().take_purge_grants(
                &view.ring,
                true,
                TOMBSTONE_PURGE_SETTLE_MS,
            );
            for grant in grants {
                bump(&self.counters.purge_grants);
                purge.queue.retain(|g| g.partition != grant.partition);
                purge.queue.push_back(grant);
            }
        }
        let mut budget = TOMBSTONE_PURGE_BATCH;
        for _ in 0..TOMBSTONE_PURGE_GRANTS_PER_TICK {
            let Some(grant) = purge.queue.pop_front() else {
                break;
            };
            let entries = host.purge_tombstones(&grant, budget);
            if !entries.is_empty() {
                // So the same tombstone offered back by a replica that has not purged yet
                // is not taken again.
                self.machine
                    .borrow_mut()
                    .note_purged(grant.partition, &entries);
            }
            let purged = entries.len().min(budget);
            let total = self.counters.tombstones_purged.get();
            self.counters
                .tombstones_purged
                .set(total.saturating_add(purged as u64));
            budget -= purged;
            if budget == 0 {
                // The partition may hold more: its grant goes first next tick.
                purge.queue.push_front(grant);
                break;
            }
        }
    }

    /// A MERKLE_RANGE, MERKLE_KEYS or MERKLE_PUSH from a peer's incoming connection
    /// (`from` names that connection): served from the store at once; the reply frame is
    /// appended to `out`.
    pub fn serve<H: ExchangeHost>(
        &self,
        host: &H,
        from: Replica,
        request_id: u32,
        request: ExchangeMessage,
        out: &mut Vec<u8>,
    ) {
        bump(&self.counters.requests_served);
        let now = host.now();
        let view = host.view();
        let push_partition = match &request {
            ExchangeMessage::Push { partition, .. } => Some(*partition),
            _ => None,
        };
        if let Some(partition) = push_partition {
            if !replicates(&view.ring, self.local, self.n, partition) {
                return refuse(request_id, ErrorCode::NotOwner, out);
            }
        }
        let repaired_before = self.stats().keys_repaired;
        let mut actions = Vec::new();
        host.with_store(|store| {
            self.machine.borrow_mut().message(
                now,
                from,
                request_id,
                request,
                &view.ring,
                store,
                &mut actions,
            )
        });
        if let Some(partition) = push_partition {
            let repaired = self.stats().keys_repaired - repaired_before;
            let ack = Message::MerklePushAck(MerklePushAck {
                partition,
                repaired: u32::try_from(repaired).unwrap_or(u32::MAX),
            });
            if wire::encode(request_id, &ack, out).is_err() {
                refuse(request_id, ErrorCode::Internal, out);
            }
        }
        let mut rest = Vec::new();
        for action in actions {
            match action {
                ExchangeAction::Send {
                    to,
                    request_id: id,
                    message,
                } if message.is_reply() && to == from && id == request_id => {
                    let start = out.len();
                    if convert::encode_exchange(request_id, &message, out).is_err() {
                        out.truncate(start);
                        refuse(request_id, ErrorCode::TooLarge, out);
                    }
                }
                other => rest.push(other),
            }
        }
        self.carry_out(host, now, rest);
    }

    /// A frame that came back on the link to `from`: taken (true) if it is an exchange
    /// reply (by opcode) or an `ERROR` answering an anti-entropy request (by class).
    pub fn on_reply<H: ExchangeHost>(&self, host: &H, from: Replica, frame: &Frame<'_>) -> bool {
        let (class, wire_id) = request_class(frame.request_id);
        let reply = match &frame.message {
            Message::MerkleRangeReply(_) | Message::MerkleKeysReply(_) => {
                convert::exchange_reply(&frame.message)
            }
            Message::MerklePushAck(_) => None,
            Message::Error(_) if class == PEER_REQUEST_CLASS_ANTIENTROPY => None,
            _ => return false,
        };
        let Some(asked) = self.requests.borrow_mut().take(wire_id) else {
            bump(&self.counters.replies_unknown);
            return true;
        };
        let Some(machine_id) = asked.machine_id else {
            // A push's ack or refusal: pushes are advisory, nothing waits for them.
            if matches!(frame.message, Message::MerklePushAck(_)) {
                bump(&self.counters.pushes_acked);
            }
            return true;
        };
        let message = match (&frame.message, reply) {
            (Message::Error(error), _) => ExchangeMessage::Refused {
                partition: asked.partition,
                code: error.code,
            },
            (_, Some(reply)) => reply,
            (_, None) => return true,
        };
        let now = host.now();
        let view = host.view();
        let mut actions = Vec::new();
        host.with_store(|store| {
            if asked.root {
                if let ExchangeMessage::RangeReply { hashes, .. } = &message {
                    let mine = store.merkle_hashes(asked.partition, 0, 0, 1);
                    let equal = !mine.is_empty() && mine.first() == hashes.first();
                    self.coverage.borrow_mut().observed(asked.partition, equal);
                }
            }
            self.machine.borrow_mut().message(
                now,
                from,
                machine_id,
                message,
                &view.ring,
                store,
                &mut actions,
            )
        });
        self.carry_out(host, now, actions);
        true
    }

    /// This shard's anti-entropy counters for STATS.
    pub fn stat_entries(&self, shard: u16, entries: &mut Vec<StatEntry>) {
        let stats = self.stats();
        let (replicated, in_sync) = self.coverage();
        let share = self.machine.borrow().rate().share();
        let mut push = |name, value| entries.push(StatEntry { shard, name, value });
        push("ae_exchanges", stats.started);
        push("ae_exchanges_completed", stats.completed);
        push("ae_exchanges_dropped", stats.dropped);
        push("ae_exchanges_equal", stats.equal_roots);
        push("ae_keys_received", stats.entries_received);
        push("ae_keys_repaired", stats.keys_repaired);
        push("ae_keys_pushed", stats.entries_pushed);
        push("ae_bad_entries", stats.bad_entries);
        push("ae_messages_sent", stats.messages_sent);
        push("ae_bytes_sent", stats.bytes_sent);
        push("ae_requests_served", self.counters.requests_served.get());
        push("ae_pushes_acked", self.counters.pushes_acked.get());
        push("ae_sends_dropped", self.counters.sends_dropped.get());
        push("ae_replies_unknown", self.counters.replies_unknown.get());
        push("ae_partitions", replicated);
        push("ae_partitions_in_sync", in_sync);
        push("ae_rate_share", u64::from(share));
        push("ae_purge_grants", self.counters.purge_grants.get());
        push(
            "ae_tombstones_purged",
            self.counters.tombstones_purged.get(),
        );
    }

    /// Carries out the machine's actions: requests and pushes to peers go out on the links
    /// with fresh wire ids; verdicts go to the failure detector.
    fn carry_out<H: ExchangeHost>(&self, host: &H, now: u64, actions: Vec<ExchangeAction>) {
        for action in actions {
            match action {
                ExchangeAction::Send {
                    to,
                    request_id,
                    message,
                } => {
                    if message.is_reply() || to.node == self.local.node {
                        // Replies only answer a peer's request (written by `serve`), and
                        // peers are other nodes: anything else is a runtime bug, not input.
                        debug_assert!(false, "unexpected exchange send to {to:?}");
                        bump(&self.counters.sends_dropped);
                        continue;
                    }
                    let asked = Asked {
                        machine_id: (!matches!(message, ExchangeMessage::Push { .. }))
                            .then_some(request_id),
                        partition: partition_of(&message),
                        root: matches!(message, ExchangeMessage::Range { level: 0, .. }),
                        sent_at: now,
                    };
                    if !self.send(host, to, asked, &message) {
                        bump(&self.counters.sends_dropped);
                    }
                }
                ExchangeAction::Unresponsive { node } => host.unresponsive(node),
            }
        }
    }

    fn send<H: ExchangeHost>(
        &self,
        host: &H,
        to: Replica,
        asked: Asked,
        message: &ExchangeMessage,
    ) -> bool {
        let Some(wire_id) = self.requests.borrow_mut().insert(asked) else {
            return false;
        };
        let mut frame = Vec::new();
        let tagged = tag_request_id(PEER_REQUEST_CLASS_ANTIENTROPY, wire_id);
        let sent = convert::encode_exchange(tagged, message, &mut frame).is_ok()
            && host.send_frame(to, frame);
        if !sent {
            // The machine's deadline covers a lost request; forget its wire id now.
            self.requests.borrow_mut().take(wire_id);
        }
        sent
    }
}

/// An exchange request or push on the wire, by its 30-bit wire id.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// The machine's own request id; `None` for a push (nothing awaits its ack).
    machine_id: Option<u32>,
    partition: u32,
    /// Whether it asked for the root (its reply tells whether the partition is in sync).
    root: bool,
    sent_at: u64,
}

/// The wire ids of requests awaiting replies.
#[derive(Debug, Default)]
struct WireRequests {
    next: u32,
    in_flight: BTreeMap<u32, Asked>,
}

impl WireRequests {
    /// Remembers `asked` under a fresh wire id (below 2^30, never 0, not in use); `None`
    /// at the bound.
    fn insert(&mut self, asked: Asked) -> Option<u32> {
        if self.in_flight.len() >= EXCHANGE_WIRE_REQUESTS_MAX {
            return None;
        }
        let mask = (1u32 << PEER_REQUEST_CLASS_SHIFT) - 1;
        let id = loop {
            let candidate = (self.next.wrapping_add(1) & mask).max(1);
            self.next = candidate;
            if !self.in_flight.contains_key(&candidate) {
                break candidate;
            }
        };
        self.in_flight.insert(id, asked);
        Some(id)
    }

    fn take(&mut self, id: u32) -> Option<Asked> {
        self.in_flight.remove(&id)
    }

    /// Forgets requests older than `age_ms` (their exchange has long been dropped by its
    /// deadline; a reply arriving later is ignored as unknown).
    fn prune(&mut self, now: u64, age_ms: u64) {
        self.in_flight
            .retain(|_, asked| now.saturating_sub(asked.sent_at) <= age_ms);
    }
}

/// The latencies of the client requests of the current window.
struct LatencyWindow {
    histogram: Histogram<u64>,
    ends_at: u64,
}

impl LatencyWindow {
    fn new() -> Self {
        LatencyWindow {
            // Two significant digits up to a minute (as STATS): ~20 KiB, ns per record.
            histogram: Histogram::new_with_bounds(1, STATS_LATENCY_US_MAX, 2)
                .expect("constant bounds: 1 <= low, high >= 2 * low, 2 significant digits"),
            ends_at: EXCHANGE_PRESSURE_WINDOW_MS,
        }
    }

    fn record(&mut self, us: u64) {
        self.histogram
            .saturating_record(us.clamp(1, STATS_LATENCY_US_MAX));
    }

    /// At the window's end, its p99.9 in microseconds (0 if no request ran: no pressure),
    /// and a new window begins.
    fn report(&mut self, now: u64) -> Option<u64> {
        if now < self.ends_at {
            return None;
        }
        let p999 = if self.histogram.is_empty() {
            0
        } else {
            self.histogram.value_at_quantile(0.999)
        };
        self.histogram.reset();
        self.ends_at = now.saturating_add(EXCHANGE_PRESSURE_WINDOW_MS);
        Some(p999)
    }
}

/// Which partitions this shard replicates in the current ring, and which of them were
/// found in sync with a peer by the last root comparison.
#[derive(Default)]
struct Coverage {
    ring: Option<Arc<Ring>>,
    replicated: u64,
    in_sync: BTreeSet<u32>,
}

impl Coverage {
    /// Recounts after a ring change.
    fn follow(&mut self, ring: &Arc<Ring>, local: Replica, n: u8) {
        if self
            .ring
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, ring))
        {
            return;
        }
        let mine: BTreeSet<u32> = (0..ring.q())
            .filter(|&p| replicates(ring, local, n, p))
            .collect();
        self.replicated = mine.len() as u64;
        self.in_sync.retain(|p| mine.contains(p));
        self.ring = Some(ring.clone());
    }

    fn observed(&mut self, partition: u32, equal: bool) {
        if equal {
            self.in_sync.insert(partition);
        } else {
            self.in_sync.remove(&partition);
        }
    }
}

/// Whether `local` holds a replica of `partition` in `ring`.
fn replicates(ring: &Ring, local: Replica, n: u8, partition: u32) -> bool {
    partition < ring.q()
        && ring
            .preference_list(PartitionId(partition), usize::from(n))
            .contains(&local)
}

fn partition_of(message: &ExchangeMessage) -> u32 {
    match message {
        ExchangeMessage::Range { partition, .. }
        | ExchangeMessage::RangeReply { partition, .. }
        | ExchangeMessage::Keys { partition, .. }
        | ExchangeMessage::KeysReply { partition, .. }
        | ExchangeMessage::Push { partition, .. }
        | ExchangeMessage::Refused { partition, .. } => *partition,
    }
}

/// Appends an `ERROR` answering `request_id`.
fn refuse(request_id: u32, code: ErrorCode, out: &mut Vec<u8>) {
    let message = match code {
        ErrorCode::NotOwner => "this shard does not replicate the partition",
        ErrorCode::TooLarge => "the reply does not fit in a frame",
        _ => "the request could not be served",
    };
    let error = ErrorReply {
        code,
        answered: 0,
        needed: 0,
        ring_epoch: 0,
        message,
    };
    let _ = wire::encode(request_id, &Message::Error(error), out);
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

/// The cluster runtime is the host of its shard's anti-entropy.
impl ExchangeHost for Rc<Cluster> {
    type Store = StoreReplicas;

    fn now(&self) -> u64 {
        Cluster::now(self)
    }

    fn view(&self) -> Rc<SharedView> {
        Cluster::view(self)
    }

    fn with_store<R>(&self, f: impl FnOnce(&mut StoreReplicas) -> R) -> R {
        Cluster::with_store(self, f)
    }

    fn send_frame(&self, to: Replica, frame: Vec<u8>) -> bool {
        Cluster::push_frame(self, to, frame)
    }

    fn unresponsive(&self, node: NodeId) {
        Cluster::report_unresponsive(self, node)
    }

    fn purge_tombstones(&self, grant: &PurgeGrant, max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        Cluster::with_store(self, |store| store.purge_tombstones(grant, max))
    }
}

#[cfg(test)]
mod tests;
