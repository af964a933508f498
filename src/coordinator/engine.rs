//! One shard's coordinator: the request state machines (GET, PUT, DELETE, forwarding), the
//! replica-side handlers, and hint delivery, over one [`ReplicaStore`].
//!
//! Place in the flow: the runtime feeds it client requests ([`Coordinator::client_request`]),
//! peer messages ([`Coordinator::peer_message`]) and ticks ([`Coordinator::tick`], also
//! after a group commit), and carries out the [`Action`]s it returns. The ring and the
//! failure detector's view are passed into every call, so gossip (which owns them) stays
//! a separate state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::storage::{Lsn, ReplicaStore};
use super::{
    Action, AllReachable, ClientError, ClientReply, ClientRequest, Config, ExtraWriteTargets,
    Liveness, Options, Origin, PeerMessage,
};
use crate::causal::{CausalError, CausalState, Context, Value};
use crate::constants::{FORWARD_GRACE_MS, REPLICAS_MAX, REQUEST_TIMEOUT_MS_MAX};
use crate::ring::{NodeId, PartitionId, Replica, Ring};
use crate::wire::ErrorCode;

/// The coordinator of one shard. Generic over its storage so the simulator runs it on
/// memory and the server on the real store.
#[derive(Debug)]
pub struct Coordinator<S> {
    /// This shard.
    local: Replica,
    config: Config,
    store: S,
    next_request_id: u32,
    next_op: u64,
    ops: BTreeMap<u64, Op>,
    /// Deadline index of `ops`: (deadline, op).
    deadlines: BTreeSet<(u64, u64)>,
    /// Requests this shard sent and awaits an answer to, by request id.
    pending: BTreeMap<u32, Pending>,
    /// Acknowledgements held back until the store has made their write durable, in
    /// sequence order.
    deferred: VecDeque<(Lsn, Deferred)>,
    /// Hints sent and not yet acknowledged: hint id -> when to send it again.
    hints_in_flight: BTreeMap<u64, u64>,
    next_handoff_at: u64,
    /// Hints this shard stored for replicas of its own writes (no fallback was left), since
    /// it started: a figure for tests and the simulator.
    local_hints: u64,
    /// Forwarded writes seen recently: (forwarder's node, shard, request id). A
    /// forwarded write is not idempotent (each application makes a new dot), so a
    /// duplicate (a retransmission, a replayed connection) must not run it again: the
    /// second copy would survive as a sibling of the first and come back after a write
    /// that superseded the first.
    forwards_seen: BTreeSet<(u64, u16, u32)>,
    /// `forwards_seen` in arrival order, with when to forget each.
    forwards_expiry: VecDeque<(u64, (u64, u16, u32))>,
    /// New holders of the partitions a pending ring change moves: they get every write
    /// too (see [`ExtraWriteTargets`]).
    extra_writes: Arc<ExtraWriteTargets>,
}

/// A request in flight to another shard.
#[derive(Debug, Clone, Copy)]
struct Pending {
    op: u64,
    to: Replica,
    /// A REPLICA_WRITE to a preference-list replica (which gets a background hint if it
    /// never answers).
    direct: bool,
}

#[derive(Debug)]
enum Deferred {
    /// A reply to send once durable.
    Send {
        to: Replica,
        request_id: u32,
        message: Box<PeerMessage>,
    },
    /// The coordinator's own write of `op` is durable.
    LocalAck { op: u64 },
}

#[derive(Debug)]
struct Op {
    origin: Origin,
    deadline: u64,
    /// Request ids of this op still in `pending`.
    requests: Vec<u32>,
    replied: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Write(Box<WriteOp>),
    Read(ReadOp),
    Forward { needed: u8 },
}

#[derive(Debug)]
struct WriteOp {
    partition: u32,
    key: Vec<u8>,
    /// The new state, sent to every replica.
    state: CausalState,
    /// The answer once W is reached.
    success: ClientReply,
    w: u8,
    acks: usize,
    /// Answers still expected, the local write included.
    waiting: usize,
    /// Reachable fallbacks not used yet, for replicas that never answer.
    spare: Vec<Replica>,
    /// Replicas this shard already holds a hint of this write for, so a replica that is
    /// both refused and silent, say, is hinted once.
    hinted: Vec<NodeId>,
    /// The last refusal a replica sent (a store failure, the sibling cap on its merge),
    /// reported if the write fails.
    failure: Option<ErrorCode>,
}

#[derive(Debug)]
struct ReadOp {
    partition: u32,
    key: Vec<u8>,
    r: u8,
    answers: Vec<(Replica, Option<CausalState>)>,
    waiting: usize,
}

/// N, quorum and deadline of one request, after defaults.
struct Resolved {
    n: usize,
    quorum: u8,
    deadline: u64,
}

impl<S: ReplicaStore> Coordinator<S> {
    /// The coordinator of shard `local` over `store`.
    pub fn new(local: Replica, config: Config, store: S) -> Self {
        Coordinator {
            local,
            config,
            store,
            next_request_id: 1,
            next_op: 1,
            ops: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            pending: BTreeMap::new(),
            deferred: VecDeque::new(),
            hints_in_flight: BTreeMap::new(),
            next_handoff_at: 0,
            local_hints: 0,
            forwards_seen: BTreeSet::new(),
            forwards_expiry: VecDeque::new(),
            extra_writes: Arc::default(),
        }
    }

    /// The new holders that writes of moving partitions also go to, from now on (the
    /// runtime sets them at each view: empty once the change has flipped).
    pub fn set_extra_write_targets(&mut self, targets: Arc<ExtraWriteTargets>) {
        self.extra_writes = targets;
    }

    /// The shard this coordinator runs on.
    pub fn local(&self) -> Replica {
        self.local
    }

    /// The storage.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The storage, mutably (the runtime's group-commit timer syncs it).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the storage back (a crash in the simulator; shutdown in the server).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Requests in flight at this coordinator.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Hints this shard stored in its own hint area for replicas of writes it coordinated
    /// (because no fallback node was left), since it was created.
    pub fn local_hints(&self) -> u64 {
        self.local_hints
    }

    /// A client request (or one forwarded by a peer) arrived at `now`.
    pub fn client_request(
        &mut self,
        now: u64,
        origin: Origin,
        request: ClientRequest,
        ring: &Ring,
        live: &dyn Liveness,
        out: &mut Vec<Action>,
    ) {
        if self.ops.len() >= self.config.requests_max {
            let error = ClientError::new(ErrorCode::Overloaded, "too many requests in flight");
            respond(origin, ClientReply::Error(error), out);
            return;
        }
        match request {
            ClientRequest::Get { options, key } => {
                self.start_get(now, origin, options, key, ring, live, out)
            }
            write => self.start_write(now, origin, write, ring, live, out),
        }
        self.release_durable(out);
    }

    /// A message from shard `from` of another (or this) node.
    #[allow(clippy::too_many_arguments)]
    pub fn peer_message(
        &mut self,
        now: u64,
        from: Replica,
        request_id: u32,
        message: PeerMessage,
        ring: &Ring,
        live: &dyn Liveness,
        out: &mut Vec<Action>,
    ) {
        match message {
            PeerMessage::Forward(request) => {
                // Remembered until the forwarder's own deadline has passed twice over:
                // it has given up by then, and a transport that duplicates nothing (TCP)
                // cannot deliver another copy.
                let timeout = match &request {
                    ClientRequest::Get { options, .. }
                    | ClientRequest::Put { options, .. }
                    | ClientRequest::Delete { options, .. } => options.timeout_ms,
                };
                let timeout = if timeout == 0 {
                    self.config.timeout_ms
                } else {
                    timeout.min(REQUEST_TIMEOUT_MS_MAX)
                };
                let forget_at = now + 2 * (u64::from(timeout) + u64::from(FORWARD_GRACE_MS));
                let seen = (from.node.0, from.shard.0, request_id);
                if !self.forwards_seen.insert(seen) {
                    return;
                }
                self.forwards_expiry.push_back((forget_at, seen));
                let origin = Origin::Peer { from, request_id };
                self.client_request(now, origin, request, ring, live, out);
            }
            PeerMessage::ReplicaWrite {
                partition,
                key,
                state,
            } => {
                let reply = match self.merge_local(partition, &key, &state) {
                    Ok(lsn) => (lsn, PeerMessage::ReplicaWriteReply),
                    Err(code) => (0, PeerMessage::Error { code }),
                };
                self.defer_reply(from, request_id, reply, out);
            }
            PeerMessage::ReplicaRead { partition, key } => {
                let message = match self.store.get_state(partition, &key) {
                    Ok(state) => PeerMessage::ReplicaReadReply { state },
                    Err(_) => PeerMessage::Error {
                        code: ErrorCode::StoreFailed,
                    },
                };
                out.push(Action::Send {
                    to: from,
                    request_id,
                    message,
                });
            }
            PeerMessage::HintedWrite {
                intended,
                partition,
                key,
                state,
            } => {
                let reply = match self
                    .store
                    .put_hint(NodeId(intended), partition, &key, &state)
                {
                    Ok((_, lsn)) => (lsn, PeerMessage::HintedWriteReply),
                    Err(_) => (
                        0,
                        PeerMessage::Error {
                            code: ErrorCode::StoreFailed,
                        },
                    ),
                };
                self.defer_reply(from, request_id, reply, out);
            }
            PeerMessage::HintDeliver {
                hint_id,
                partition,
                key,
                state,
            } => {
                let reply = match self.merge_local(partition, &key, &state) {
                    Ok(lsn) => (lsn, PeerMessage::HintAck { hint_id }),
                    Err(code) => (0, PeerMessage::Error { code }),
                };
                self.defer_reply(from, request_id, reply, out);
            }
            PeerMessage::HintAck { hint_id } => {
                // Only the target's ack deletes a hint; a failed delete leaves it to be
                // delivered again, which is harmless.
                if self.hints_in_flight.remove(&hint_id).is_some() {
                    let _ = self.store.delete_hint(from.node, hint_id);
                }
            }
            PeerMessage::ReplicaWriteReply | PeerMessage::HintedWriteReply => {
                self.on_answer(from, request_id, Answer::Ack, out)
            }
            PeerMessage::ReplicaReadReply { state } => {
                self.on_answer(from, request_id, Answer::State(state), out)
            }
            PeerMessage::Error { code } => {
                self.on_answer(from, request_id, Answer::Failed(code), out)
            }
            PeerMessage::Reply(reply) => {
                self.on_answer(from, request_id, Answer::Relay(reply), out)
            }
        }
        self.release_durable(out);
    }

    /// Time passed: deadlines, hint delivery, and acknowledgements whose writes became
    /// durable (call it after every group commit too).
    pub fn tick(&mut self, now: u64, ring: &Ring, live: &dyn Liveness, out: &mut Vec<Action>) {
        self.release_durable(out);
        while let Some(&(deadline, op_id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, op_id));
            self.expire(op_id, live, out);
        }
        while let Some(&(forget_at, seen)) = self.forwards_expiry.front() {
            if forget_at > now {
                break;
            }
            self.forwards_expiry.pop_front();
            self.forwards_seen.remove(&seen);
        }
        if now >= self.next_handoff_at {
            self.next_handoff_at = now + self.config.hint_delivery_interval_ms;
            self.deliver_hints(now, ring, live, out);
        }
    }

    // --- starting requests -------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn start_get(
        &mut self,
        now: u64,
        origin: Origin,
        options: Options,
        key: Vec<u8>,
        ring: &Ring,
        live: &dyn Liveness,
        out: &mut Vec<Action>,
    ) {
        let resolved = match self.resolve(now, options, self.config.r) {
            Ok(resolved) => resolved,
            Err(error) => return respond(origin, ClientReply::Error(error), out),
        };
        let partition = ring.partition_of(&key);
        let targets: Vec<Replica> = ring
            .preference_list(partition, resolved.n)
            .iter()
            .copied()
            .filter(|replica| replica.node == self.local.node || live.is_reachable(replica.node))
            .collect();
        if targets.len() < usize::from(resolved.quorum) {
            let error = ClientError::quorum(
                ErrorCode::Unavailable,
                targets.len(),
                resolved.quorum,
                "too few replicas reachable",
            );
            return respond(origin, ClientReply::Error(error), out);
        }
        let op_id = self.new_op(
            origin,
            resolved.deadline,
            Kind::Read(ReadOp {
                partition: partition.0,
                key: key.clone(),
                r: resolved.quorum,
                answers: Vec::new(),
                waiting: targets.len(),
            }),
        );
        for replica in targets {
            if replica == self.local {
                let state = self.store.get_state(partition.0, &key);
                let answer = match state {
                    Ok(state) => Answer::State(state),
                    Err(_) => Answer::Failed(ErrorCode::StoreFailed),
                };
                self.apply_answer(op_id, replica, false, answer, out);
            } else {
                let message = PeerMessage::ReplicaRead {
                    partition: partition.0,
                    key: key.clone(),
                };
                self.send_request(op_id, replica, false, message, out);
            }
        }
    }

    /// A PUT or DELETE: coordinated here if this shard holds a replica, else forwarded.
    fn start_write(
        &mut self,
        now: u64,
        origin: Origin,
        request: ClientRequest,
        ring: &Ring,
        live: &dyn Liveness,
        out: &mut Vec<Action>,
    ) {
        let (options, return_context, key, context, value) = match &request {
            ClientRequest::Put {
                options,
                return_context,
                key,
                context,
                value,
            } => (
                *options,
                *return_context,
                key.clone(),
                context,
                Value::Bytes(value.clone()),
            ),
            ClientRequest::Delete {
                options,
                return_context,
                key,
                context,
            } => (
                *options,
                *return_context,
                key.clone(),
                context,
                Value::Tombstone,
            ),
            ClientRequest::Get { .. } => return, // Routed to `start_get` by the caller.
        };
        let resolved = match self.resolve(now, options, self.config.w) {
            Ok(resolved) => resolved,
            Err(error) => return respond(origin, ClientReply::Error(error), out),
        };
        let context = match Context::decode_opaque(context) {
            Ok(context) => context,
            Err(error) => {
                let error = ClientError::new(ErrorCode::BadContext, error.to_string());
                return respond(origin, ClientReply::Error(error), out);
            }
        };
        let partition = ring.partition_of(&key);
        let preference = ring.preference_list(partition, resolved.n);
        if !preference.contains(&self.local) {
            return self.forward(
                now,
                origin,
                request,
                &preference,
                &resolved,
                ring,
                live,
                out,
            );
        }
        // Plan before touching the store, so an unavailable write changes nothing.
        let mut fallbacks = ring
            .extended(partition, resolved.n)
            .into_iter()
            .filter(|replica| live.is_reachable(replica.node));
        let mut targets = Vec::new();
        // Unreachable replicas with no fallback left (always so in a cluster of exactly N
        // nodes): this shard keeps their hints itself.
        let mut hint_here = Vec::new();
        for &replica in preference.iter().filter(|&&replica| replica != self.local) {
            if replica.node == self.local.node || live.is_reachable(replica.node) {
                targets.push((replica, None));
            } else if let Some(fallback) = fallbacks.next() {
                targets.push((fallback, Some(replica.node)));
            } else {
                hint_here.push(replica.node);
            }
        }
        let spare: Vec<Replica> = fallbacks.collect();
        if targets.len() + 1 < usize::from(resolved.quorum) {
            let error = ClientError::quorum(
                ErrorCode::Unavailable,
                targets.len() + 1,
                resolved.quorum,
                "too few replicas reachable",
            );
            return respond(origin, ClientReply::Error(error), out);
        }
        let tombstone = value.is_tombstone();
        let mut state = match self.store.get_state(partition.0, &key) {
            Ok(state) => state.unwrap_or_default(),
            Err(error) => {
                let error = ClientError::new(ErrorCode::StoreFailed, error.to_string());
                return respond(origin, ClientReply::Error(error), out);
            }
        };
        let actor = self.store.incarnation();
        let updated =
            match state.update_with_limits(&context, value, actor, &self.config.sibling_limits) {
                Ok(updated) => updated,
                Err(error) => return respond(origin, ClientReply::Error(refusal(error)), out),
            };
        let mut lsn = match self.store.put_state(partition.0, &key, &state) {
            Ok(lsn) => lsn,
            Err(error) => {
                let error = ClientError::new(ErrorCode::StoreFailed, error.to_string());
                return respond(origin, ClientReply::Error(error), out);
            }
        };
        let context_out = if return_context {
            state.context().to_opaque()
        } else {
            Vec::new()
        };
        let success = if tombstone {
            ClientReply::Delete {
                context: context_out,
                dot: updated.dot,
            }
        } else {
            ClientReply::Put {
                context: context_out,
                dot: updated.dot,
            }
        };
        let mut write = Box::new(WriteOp {
            partition: partition.0,
            key: key.clone(),
            state: state.clone(),
            success,
            w: resolved.quorum,
            acks: 0,
            waiting: targets.len() + 1,
            spare,
            hinted: Vec::new(),
            failure: None,
        });
        // The local ack waits for the hints too, so an acknowledged write never depends on
        // a hint a crash could still take away. They do not count toward W (see
        // `hint_locally`).
        for intended in hint_here {
            if let Some(hint_lsn) = self.hint_locally(&mut write, intended) {
                lsn = lsn.max(hint_lsn);
            }
        }
        let op_id = self.new_op(origin, resolved.deadline, Kind::Write(write));
        self.deferred
            .push_back((lsn, Deferred::LocalAck { op: op_id }));
        for (replica, intended) in targets {
            let message = match intended {
                None => PeerMessage::ReplicaWrite {
                    partition: partition.0,
                    key: key.clone(),
                    state: state.clone(),
                },
                Some(intended) => PeerMessage::HintedWrite {
                    intended: intended.0,
                    partition: partition.0,
                    key: key.clone(),
                    state: state.clone(),
                },
            };
            self.send_request(op_id, replica, intended.is_none(), message, out);
        }
        self.write_extra(partition.0, &key, &state, &preference, live, out);
    }

    /// Sends `state` to the extra write targets of `partition` that are not replicas
    /// already: fire and forget, outside the op (no W, no failure, no hint), since they
    /// are not owners yet. A lost write is caught by the transfer's root comparison.
    fn write_extra(
        &mut self,
        partition: u32,
        key: &[u8],
        state: &CausalState,
        replicas: &[Replica],
        live: &dyn Liveness,
        out: &mut Vec<Action>,
    ) {
        if self.extra_writes.is_empty() {
            return;
        }
        let extra = self.extra_writes.clone();
        for &to in extra.of(partition) {
            if to == self.local || replicas.contains(&to) || !live.is_reachable(to.node) {
                continue;
            }
            let request_id = self.fresh_request_id();
            out.push(Action::Send {
                to,
                request_id,
                message: PeerMessage::ReplicaWrite {
                    partition,
                    key: key.to_vec(),
                    state: state.clone(),
                },
            });
        }
    }

    /// A write reached a node without a replica of its key (on this shard): hand it to the
    /// first reachable replica, which coordinates it.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: u64,
        origin: Origin,
        request: ClientRequest,
        preference: &[Replica],
        resolved: &Resolved,
        ring: &Ring,
        live: &dyn Liveness,
        out: &mut Vec<Action>,
    ) {
        if let Origin::Peer { .. } = origin {
            // Forwarded once already: the two nodes' rings disagree. Never forward again,
            // or a request could circle between them.
            let mut error = ClientError::new(ErrorCode::NotOwner, "no replica of this key here");
            error.ring_epoch = ring.epoch();
            return respond(origin, ClientReply::Error(error), out);
        }
        let target = preference
            .iter()
            .copied()
            .find(|replica| replica.node == self.local.node || live.is_reachable(replica.node));
        let Some(target) = target else {
            let error = ClientError::quorum(
                ErrorCode::Unavailable,
                0,
                resolved.quorum,
                "no replica of the key reachable",
            );
            return respond(origin, ClientReply::Error(error), out);
        };
        let deadline = resolved.deadline + u64::from(FORWARD_GRACE_MS);
        let op_id = self.new_op(
            origin,
            deadline,
            Kind::Forward {
                needed: resolved.quorum,
            },
        );
        debug_assert!(now <= deadline);
        self.send_request(op_id, target, false, PeerMessage::Forward(request), out);
    }

    // --- answers -------------------------------------------------------------------

    fn on_answer(&mut self, from: Replica, request_id: u32, answer: Answer, out: &mut Vec<Action>) {
        let Some(pending) = self.pending.get(&request_id).copied() else {
            return; // A duplicate, or an answer after the deadline.
        };
        if pending.to != from {
            return; // Not from the shard asked: a stale or misrouted message.
        }
        self.pending.remove(&request_id);
        if let Some(op) = self.ops.get_mut(&pending.op) {
            op.requests.retain(|&id| id != request_id);
        }
        self.apply_answer(pending.op, from, pending.direct, answer, out);
    }

    /// `direct`: the answer is to a REPLICA_WRITE to a preference-list replica.
    fn apply_answer(
        &mut self,
        op_id: u64,
        from: Replica,
        direct: bool,
        answer: Answer,
        out: &mut Vec<Action>,
    ) {
        let Some(mut op) = self.ops.remove(&op_id) else {
            return;
        };
        let done = match (&mut op.kind, answer) {
            (Kind::Write(write), Answer::Ack) => {
                write.acks += 1;
                write.waiting -= 1;
                progress_write(&mut op.replied, op.origin, write, out)
            }
            (Kind::Write(write), answer) => {
                if let Answer::Failed(code) = answer {
                    write.failure = Some(code);
                    // A store failure may pass; a refusal (the sibling cap) would be
                    // refused again on every delivery, so it gets no hint.
                    if direct && code == ErrorCode::StoreFailed {
                        self.hint_locally(write, from.node);
                    }
                }
                write.waiting -= 1;
                progress_write(&mut op.replied, op.origin, write, out)
            }
            (Kind::Read(read), Answer::State(state)) => {
                read.waiting -= 1;
                read.answers.push((from, state));
                self.progress_read(&mut op.replied, op.origin, read, out)
            }
            (Kind::Read(read), _) => {
                read.waiting -= 1;
                self.progress_read(&mut op.replied, op.origin, read, out)
            }
            (Kind::Forward { .. }, Answer::Relay(reply)) => {
                respond(op.origin, reply, out);
                true
            }
            (Kind::Forward { needed }, _) => {
                let error = ClientError::quorum(
                    ErrorCode::Indeterminate,
                    0,
                    *needed,
                    "the coordinating replica failed",
                );
                respond(op.origin, ClientReply::Error(error), out);
                true
            }
        };
        if done {
            self.finish(op_id, op);
        } else {
            self.ops.insert(op_id, op);
        }
    }

    /// Replies once R states are in; repairs once every asked replica answered.
    fn progress_read(
        &mut self,
        replied: &mut bool,
        origin: Origin,
        read: &ReadOp,
        out: &mut Vec<Action>,
    ) -> bool {
        if !*replied && read.answers.len() >= usize::from(read.r) {
            *replied = true;
            let reply = match self.merge_answers(&read.answers) {
                Ok(merged) => read_reply(&merged),
                Err(error) => ClientReply::Error(refusal(error)),
            };
            respond(origin, reply, out);
        }
        if !*replied && read.answers.len() + read.waiting < usize::from(read.r) {
            *replied = true;
            let error = ClientError::quorum(
                ErrorCode::Unavailable,
                read.answers.len(),
                read.r,
                "too few replicas answered",
            );
            respond(origin, ClientReply::Error(error), out);
        }
        if read.waiting == 0 {
            self.repair(read, out);
            return true;
        }
        false
    }

    /// Read repair: every replica that answered with a state other than the merge of all
    /// answers gets the merge.
    fn repair(&mut self, read: &ReadOp, out: &mut Vec<Action>) {
        let Ok(merged) = self.merge_answers(&read.answers) else {
            return; // Over the sibling cap: reported to the client, nothing to repair with.
        };
        if merged.is_empty() {
            return;
        }
        let asked: Vec<Replica> = read.answers.iter().map(|(replica, _)| *replica).collect();
        let mut repaired = false;
        for (replica, state) in &read.answers {
            if state.as_ref() == Some(&merged) {
                continue;
            }
            repaired = true;
            if *replica == self.local {
                // Best effort, like any repair: a failure leaves the replica as it was.
                let _ = self.merge_local(read.partition, &read.key, &merged);
            } else {
                let request_id = self.fresh_request_id();
                out.push(Action::Send {
                    to: *replica,
                    request_id,
                    message: PeerMessage::ReplicaWrite {
                        partition: read.partition,
                        key: read.key.clone(),
                        state: merged.clone(),
                    },
                });
            }
        }
        if repaired {
            // The new holders of a moving partition get the repair too. A repair runs
            // without the failure detector's view at hand: a message to an unreachable
            // target is dropped by its link.
            let partition = read.partition;
            self.write_extra(partition, &read.key, &merged, &asked, &AllReachable, out);
        }
    }

    fn merge_answers(
        &self,
        answers: &[(Replica, Option<CausalState>)],
    ) -> Result<CausalState, CausalError> {
        let mut merged = CausalState::new();
        for state in answers.iter().filter_map(|(_, state)| state.as_ref()) {
            merged = merged
                .merge_with_limits(state, &self.config.sibling_limits)?
                .0;
        }
        Ok(merged)
    }

    /// The deadline of `op_id` passed.
    fn expire(&mut self, op_id: u64, live: &dyn Liveness, out: &mut Vec<Action>) {
        let Some(mut op) = self.ops.remove(&op_id) else {
            return;
        };
        let silent: Vec<Pending> = op
            .requests
            .iter()
            .filter_map(|id| self.pending.get(id).copied())
            .collect();
        for pending in &silent {
            out.push(Action::Unresponsive {
                node: pending.to.node,
            });
        }
        match &mut op.kind {
            Kind::Write(write) => {
                if !op.replied {
                    let error = ClientError::quorum(
                        ErrorCode::Indeterminate,
                        write.acks,
                        write.w,
                        "deadline passed before the write quorum",
                    );
                    respond(op.origin, ClientReply::Error(error), out);
                }
                // Finish in the background: a replica that never answered gets a hint (on
                // a spare fallback, else here), so a lost message does not leave it behind
                // for good.
                let spare: Vec<Replica> = write
                    .spare
                    .iter()
                    .copied()
                    .filter(|replica| live.is_reachable(replica.node))
                    .collect();
                let mut spare = spare.into_iter();
                for pending in silent.iter().filter(|pending| pending.direct) {
                    let Some(holder) = spare.next() else {
                        self.hint_locally(write, pending.to.node);
                        continue;
                    };
                    let request_id = self.fresh_request_id();
                    out.push(Action::Send {
                        to: holder,
                        request_id,
                        message: PeerMessage::HintedWrite {
                            intended: pending.to.node.0,
                            partition: write.partition,
                            key: write.key.clone(),
                            state: write.state.clone(),
                        },
                    });
                }
            }
            Kind::Read(read) => {
                if !op.replied {
                    let error = ClientError::quorum(
                        ErrorCode::Timeout,
                        read.answers.len(),
                        read.r,
                        "deadline passed before the read quorum",
                    );
                    respond(op.origin, ClientReply::Error(error), out);
                }
                self.repair(read, out);
            }
            Kind::Forward { needed } => {
                let error = ClientError::quorum(
                    ErrorCode::Indeterminate,
                    0,
                    *needed,
                    "the coordinating replica did not answer in time",
                );
                respond(op.origin, ClientReply::Error(error), out);
            }
        }
        op.replied = true;
        self.finish(op_id, op);
    }

    // --- replica side and hints ----------------------------------------------------------

    /// Merges `incoming` into the stored state of a key and stores the result.
    fn merge_local(
        &mut self,
        partition: u32,
        key: &[u8],
        incoming: &CausalState,
    ) -> Result<Lsn, ErrorCode> {
        let stored = self
            .store
            .get_state(partition, key)
            .map_err(|_| ErrorCode::StoreFailed)?
            .unwrap_or_default();
        let (merged, _) = stored
            .merge_with_limits(incoming, &self.config.sibling_limits)
            .map_err(|error| refusal(error).code)?;
        self.store
            .put_state(partition, key, &merged)
            .map_err(|_| ErrorCode::StoreFailed)
    }

    /// Stores a hint of `write` for replica node `intended` in this shard's own hint area,
    /// once per write and node; returns the hint's sequence number if it stored one. The
    /// usual delivery (`deliver_hints`) hands it over once `intended` is reachable.
    ///
    /// It does not count toward W: W counts distinct nodes that hold the write durably,
    /// and this node's own write already counted once. A hint here adds no copy on
    /// another machine, so if this node is lost the write is as exposed as before.
    /// A failed store leaves the replica to read repair and anti-entropy, as a lost
    /// HINTED_WRITE would.
    fn hint_locally(&mut self, write: &mut WriteOp, intended: NodeId) -> Option<Lsn> {
        if write.hinted.contains(&intended) {
            return None;
        }
        let (_, lsn) = self
            .store
            .put_hint(intended, write.partition, &write.key, &write.state)
            .ok()?;
        write.hinted.push(intended);
        self.local_hints += 1;
        Some(lsn)
    }

    /// Sends a reply once the write it acknowledges is durable (errors right away).
    fn defer_reply(
        &mut self,
        to: Replica,
        request_id: u32,
        (lsn, message): (Lsn, PeerMessage),
        out: &mut Vec<Action>,
    ) {
        if matches!(message, PeerMessage::Error { .. }) {
            out.push(Action::Send {
                to,
                request_id,
                message,
            });
        } else {
            self.deferred.push_back((
                lsn,
                Deferred::Send {
                    to,
                    request_id,
                    message: Box::new(message),
                },
            ));
        }
    }

    fn release_durable(&mut self, out: &mut Vec<Action>) {
        let durable = self.store.durable_lsn();
        while let Some((lsn, _)) = self.deferred.front() {
            if *lsn > durable {
                break;
            }
            let Some((_, deferred)) = self.deferred.pop_front() else {
                break;
            };
            match deferred {
                Deferred::Send {
                    to,
                    request_id,
                    message,
                } => out.push(Action::Send {
                    to,
                    request_id,
                    message: *message,
                }),
                Deferred::LocalAck { op } => {
                    self.apply_answer(op, self.local, false, Answer::Ack, out)
                }
            }
        }
    }

    /// Sends a batch of hints to every reachable node this shard holds hints for.
    fn deliver_hints(&mut self, now: u64, ring: &Ring, live: &dyn Liveness, out: &mut Vec<Action>) {
        for target in self.store.hint_targets() {
            if !live.is_reachable(target) {
                continue; // The failure detector keeps probing it.
            }
            let Ok(hints) = self.store.hints_for(target, self.config.hint_batch) else {
                continue;
            };
            for hint in hints {
                if self
                    .hints_in_flight
                    .get(&hint.hint_id)
                    .is_some_and(|&resend_at| resend_at > now)
                {
                    continue;
                }
                let Some(shard) = ring.shard_of(target, PartitionId(hint.partition)) else {
                    // Not a member of this ring: kept until membership changes decide.
                    continue;
                };
                self.hints_in_flight
                    .insert(hint.hint_id, now + self.config.hint_ack_timeout_ms);
                let request_id = self.fresh_request_id();
                out.push(Action::Send {
                    to: Replica {
                        node: target,
                        shard,
                    },
                    request_id,
                    message: PeerMessage::HintDeliver {
                        hint_id: hint.hint_id,
                        partition: hint.partition,
                        key: hint.key,
                        state: hint.state,
                    },
                });
            }
        }
    }

    // --- bookkeeping -----------------------------------------------------------------

    fn resolve(
        &self,
        now: u64,
        options: Options,
        quorum_default: u8,
    ) -> Result<Resolved, ClientError> {
        let n = if options.n == 0 {
            self.config.n
        } else {
            options.n
        };
        let quorum = if options.quorum == 0 {
            quorum_default.min(n)
        } else {
            options.quorum
        };
        let timeout = if options.timeout_ms == 0 {
            self.config.timeout_ms
        } else {
            options.timeout_ms
        };
        if n > REPLICAS_MAX || quorum > n || timeout > REQUEST_TIMEOUT_MS_MAX {
            let message = format!("n={n} quorum={quorum} timeout_ms={timeout} out of range");
            return Err(ClientError::new(ErrorCode::InvalidArgument, message));
        }
        Ok(Resolved {
            n: usize::from(n),
            quorum,
            deadline: now + u64::from(timeout),
        })
    }

    fn new_op(&mut self, origin: Origin, deadline: u64, kind: Kind) -> u64 {
        let op_id = self.next_op;
        self.next_op += 1;
        self.deadlines.insert((deadline, op_id));
        self.ops.insert(
            op_id,
            Op {
                origin,
                deadline,
                requests: Vec::new(),
                replied: false,
                kind,
            },
        );
        op_id
    }

    fn finish(&mut self, op_id: u64, op: Op) {
        self.deadlines.remove(&(op.deadline, op_id));
        for id in op.requests {
            self.pending.remove(&id);
        }
    }

    fn send_request(
        &mut self,
        op_id: u64,
        to: Replica,
        direct: bool,
        message: PeerMessage,
        out: &mut Vec<Action>,
    ) {
        let request_id = self.fresh_request_id();
        self.pending.insert(
            request_id,
            Pending {
                op: op_id,
                to,
                direct,
            },
        );
        if let Some(op) = self.ops.get_mut(&op_id) {
            op.requests.push(request_id);
        }
        out.push(Action::Send {
            to,
            request_id,
            message,
        });
    }

    fn fresh_request_id(&mut self) -> u32 {
        // Skips ids still pending after a wrap-around (a u32 lasts days at full speed, and
        // pending requests are bounded, so the loop ends at once).
        loop {
            let id = self.next_request_id;
            self.next_request_id = (self.next_request_id.wrapping_add(1)
                % (1 << crate::constants::PEER_REQUEST_CLASS_SHIFT))
                .max(1);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }
}

/// What a shard answered.
enum Answer {
    Ack,
    State(Option<CausalState>),
    Relay(ClientReply),
    Failed(ErrorCode),
}

/// Replies once W acknowledgements are in, or once W can no longer be reached; the op is
/// done once nothing more is expected.
fn progress_write(
    replied: &mut bool,
    origin: Origin,
    write: &WriteOp,
    out: &mut Vec<Action>,
) -> bool {
    if !*replied && write.acks >= usize::from(write.w) {
        *replied = true;
        respond(origin, write.success.clone(), out);
    }
    if !*replied && write.acks + write.waiting < usize::from(write.w) {
        *replied = true;
        let message = match write.failure {
            Some(code) => format!("replicas failed after the write was sent (last: {code:?})"),
            None => "replicas failed after the write was sent".to_owned(),
        };
        let error = ClientError::quorum(ErrorCode::Indeterminate, write.acks, write.w, message);
        respond(origin, ClientReply::Error(error), out);
    }
    write.waiting == 0
}

fn respond(origin: Origin, reply: ClientReply, out: &mut Vec<Action>) {
    out.push(match origin {
        Origin::Client(client) => Action::Reply { client, reply },
        Origin::Peer { from, request_id } => Action::Send {
            to: from,
            request_id,
            message: PeerMessage::Reply(reply),
        },
    });
}

fn read_reply(merged: &CausalState) -> ClientReply {
    let view = merged.read();
    ClientReply::Get {
        siblings: view.values.iter().map(|value| value.to_vec()).collect(),
        context: view.context.to_opaque(),
    }
}

/// The client error for an update or merge the causal layer refused.
fn refusal(error: CausalError) -> ClientError {
    let code = match error {
        CausalError::TooManySiblings { .. } => ErrorCode::TooManySiblings,
        CausalError::TooManyActors { .. } | CausalError::ValueTooLarge { .. } => {
            ErrorCode::TooLarge
        }
        CausalError::CounterOverflow => ErrorCode::Internal,
    };
    ClientError::new(code, error.to_string())
}
