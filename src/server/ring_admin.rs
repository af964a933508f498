//! The ring state on shard 0 and the admin requests that change it.
//!
//! Place in the flow:
//! - Shard 0 holds one [`RingAdmin`]: the node's [`RingState`] (formation or committed,
//!   with the pending change), the [`Plan`] staged on this node, and the RING_STATE fetch
//!   in flight. Every other shard only sees the result, as the `ring` and `pending` of the
//!   [`SharedView`](super::cluster::SharedView) shard 0 publishes.
//! - Formation mode: at each gossip membership change the runtime offers
//!   `Ring::initial(Q, Up members)` ([`RingAdmin::set_formation`]); a committed state
//!   ignores it.
//! - Gossip carries [`RingState::epoch`] in every digest and state. A peer with a higher
//!   epoch, or the same one while a change is pending here (to learn which moves are done),
//!   makes shard 0 send RING_STATE (request id class `PEER_REQUEST_CLASS_RING`) to the
//!   peer's shard 0; the reply is merged ([`RingState::merge`]), persisted at
//!   `<data-dir>/RING` and published.
//! - A shard whose transfer finished reports `ClusterRequest::MoveDone`; shard 0 sets the
//!   flag, and when every move is done the next ring is published as the serving one.
//! - `rotor admin ...` requests arrive on any shard and are served here, on shard 0
//!   ([`Cluster::admin`]): JOIN, STAGE, PLAN, COMMIT, CLEAR, STATUS.
//!
//! What this module does not do: move data (the shards' transfers do), decide when a move
//! is done (their Merkle roots do), or change the ring of a committed state from gossip.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use tracing::{info, warn};

use super::cluster::{persist, Cluster, ClusterRequest};
use super::peer::{request_class, tag_request_id, LinkKey};
use super::service::{ShardRequest, ShardResponse};
use super::stats::{wire_stats, StatEntry};
use crate::constants::{
    ADMIN_JOIN_TIMEOUT_MS, PEER_REQUEST_CLASS_RING, RING_FETCH_TIMEOUT_MS, TEXT_BYTES_MAX,
};
use crate::gossip::NodeState;
use crate::membership::{
    Change, CommitError, PendingChange, Plan, PlanError, Preview, ReplicaMove, RingMode, RingState,
};
use crate::ring::{Member, NodeId, Replica, Ring, ShardId};
use crate::wire::{
    self, AdminClearReply, AdminCommitReply, AdminJoinReply, AdminPlanReply, AdminStageReply,
    AdminStatusReply, ChangeKind, ErrorCode, ErrorReply, Frame, List, Message, NodeStatus,
    PlanMove, PlanNode, RingStateReply, StagedChange, StatusNode,
};

/// Name of the persisted ring state in the data directory.
pub const RING_FILE: &str = "RING";

/// An admin request (or a peer's RING_STATE), owned so it can cross to shard 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// ADMIN_STAGE.
    Stage {
        /// Leave, Remove or Reweight.
        kind: ChangeKind,
        /// The node (0 for "this node" with Leave).
        node: u64,
        /// The new weight (Reweight).
        weight: u32,
    },
    /// ADMIN_PLAN.
    Plan,
    /// ADMIN_COMMIT.
    Commit,
    /// ADMIN_CLEAR.
    Clear,
    /// ADMIN_STATUS.
    Status,
    /// ADMIN_JOIN.
    Join {
        /// The seed's address.
        seed: String,
    },
    /// A peer's RING_STATE.
    RingState,
}

impl AdminRequest {
    /// The admin request a client message is, if it is one (RING_STATE is a peer's and
    /// not mapped here).
    pub fn from_message(message: &Message<'_>) -> Option<AdminRequest> {
        Some(match message {
            Message::AdminStage(m) => AdminRequest::Stage {
                kind: m.kind,
                node: m.node,
                weight: m.weight,
            },
            Message::AdminPlan(_) => AdminRequest::Plan,
            Message::AdminCommit(_) => AdminRequest::Commit,
            Message::AdminClear(_) => AdminRequest::Clear,
            Message::AdminStatus(_) => AdminRequest::Status,
            Message::AdminJoin(m) => AdminRequest::Join {
                seed: m.seed.to_string(),
            },
            _ => return None,
        })
    }
}

/// A refusal: the wire code and the operator's explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code of the ERROR reply.
    pub code: ErrorCode,
    /// Why, for the operator.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl From<PlanError> for Refusal {
    fn from(error: PlanError) -> Refusal {
        Refusal::new(ErrorCode::PlanRefused, error.to_string())
    }
}

impl From<CommitError> for Refusal {
    fn from(error: CommitError) -> Refusal {
        let code = match error {
            CommitError::ChangePending { .. } => ErrorCode::ChangePending,
            CommitError::Unchanged | CommitError::Plan(_) => ErrorCode::PlanRefused,
        };
        Refusal::new(code, error.to_string())
    }
}

/// Shard 0's ring state, staged plan and fetch bookkeeping.
pub struct RingAdmin {
    state: RingState,
    plan: Plan,
    path: PathBuf,
    /// Replicas per partition the moves are computed for (the configured N).
    n: usize,
    next_id: u32,
    /// The RING_STATE request in flight: (request id, when sent).
    fetch: Option<(u32, u64)>,
    /// When a peer was last asked for done flags at an equal epoch.
    polled_at: Option<u64>,
    /// The ADMIN_JOIN waiting for its seed's ring state: (request id, where the reply
    /// goes).
    join: Option<(u32, JoinSender)>,
}

type JoinSender = glommio::channels::local_channel::LocalSender<Result<RingState, String>>;

impl RingAdmin {
    /// The ring state of a node whose one-node ring is `local`: the committed state
    /// persisted at `<data_dir>/RING` if there is one, else formation over `local`.
    pub fn open(data_dir: &std::path::Path, n: u8, local: Ring) -> RingAdmin {
        let path = data_dir.join(RING_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => match RingState::decode(&bytes) {
                Ok(state) => {
                    info!(
                        epoch = state.epoch(),
                        pending = state.pending().is_some(),
                        "ring state restored"
                    );
                    state
                }
                Err(error) => {
                    warn!(%error, path = %path.display(), "persisted ring state unreadable; forming from gossip");
                    RingState::formation(local)
                }
            },
            Err(_) => RingState::formation(local),
        };
        RingAdmin {
            state,
            plan: Plan::new(),
            path,
            n: usize::from(n.max(1)),
            next_id: 1,
            fetch: None,
            polled_at: None,
            join: None,
        }
    }

    /// The node's ring state.
    pub fn state(&self) -> &RingState {
        &self.state
    }

    /// The changes staged on this node.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Offers the formation ring of the current gossip membership; returns whether the
    /// serving ring changed (never in committed mode).
    pub fn set_formation(&mut self, ring: Ring) -> bool {
        self.state.set_formation_ring(ring)
    }

    /// A gossip message from `peer` said its ring state has `epoch`: the request id of a
    /// RING_STATE to send it, if one is worth sending now.
    pub fn wants_fetch(&mut self, now: u64, epoch: u64, poll_interval_ms: u64) -> Option<u32> {
        if let Some((_, sent)) = self.fetch {
            if now < sent.saturating_add(RING_FETCH_TIMEOUT_MS) {
                return None;
            }
        }
        let ours = self.state.epoch();
        let newer = epoch > ours;
        let poll = epoch == ours
            && self.state.pending().is_some()
            && self
                .polled_at
                .is_none_or(|at| now >= at.saturating_add(poll_interval_ms));
        if !newer && !poll {
            return None;
        }
        if poll {
            self.polled_at = Some(now);
        }
        let id = self.fresh_id();
        self.fetch = Some((id, now));
        Some(id)
    }

    /// A RING_STATE_REPLY (or `None`: an ERROR) answering request `id`. Returns whether
    /// the ring state changed (then it is persisted and the caller publishes it).
    pub fn fetched(&mut self, id: u32, state: Option<&[u8]>) -> bool {
        if let Some((join_id, _)) = &self.join {
            if *join_id == id {
                let result = match state {
                    Some(bytes) => RingState::decode(bytes).map_err(|e| e.to_string()),
                    None => Err("the seed refused RING_STATE".to_string()),
                };
                if let Some((_, sender)) = self.join.take() {
                    let _ = sender.try_send(result);
                }
                return false;
            }
        }
        if self.fetch.is_none_or(|(fetch_id, _)| fetch_id != id) {
            return false;
        }
        self.fetch = None;
        let Some(bytes) = state else {
            return false;
        };
        let theirs = match RingState::decode(bytes) {
            Ok(theirs) => theirs,
            Err(error) => {
                warn!(%error, "a peer's ring state does not decode");
                return false;
            }
        };
        if theirs.ring().q() != self.state.ring().q() {
            warn!("a peer's ring has another partition count; ignored");
            return false;
        }
        let changed = self.state.merge(&theirs);
        if changed {
            info!(
                epoch = self.state.epoch(),
                serving = self.state.ring().epoch(),
                pending = self.state.pending().is_some(),
                "ring state merged from a peer"
            );
            self.persist();
        }
        changed
    }

    /// Move `index` of the change to `epoch` is done. Returns whether the state changed.
    pub fn move_done(&mut self, epoch: u64, index: usize) -> bool {
        let changed = self.state.mark_done(epoch, index);
        if changed {
            if self.state.pending().is_none() {
                info!(epoch, "every move is done: the committed ring serves");
            }
            self.persist();
        }
        changed
    }

    /// Stages a change after checking it against the serving ring (the whole plan must
    /// still preview). Refused while a change is pending.
    pub fn stage(&mut self, change: Change) -> Result<(), Refusal> {
        self.refuse_if_pending()?;
        let mut plan = self.plan.clone();
        plan.stage(change)?;
        self.state.preview(&plan, self.n)?;
        self.plan = plan;
        Ok(())
    }

    /// The preview of the staged plan.
    pub fn preview(&self) -> Result<Preview, Refusal> {
        Ok(self.state.preview(&self.plan, self.n)?)
    }

    /// Commits the staged plan; the plan is cleared and the state persisted.
    pub fn commit(&mut self) -> Result<Preview, Refusal> {
        let preview = self.state.commit(&self.plan, self.n)?;
        self.plan.clear();
        info!(
            epoch = self.state.epoch(),
            moves = preview.moves.len(),
            "membership change committed"
        );
        self.persist();
        Ok(preview)
    }

    /// Drops the staged plan; returns how many changes it held.
    pub fn clear(&mut self) -> usize {
        let count = self.plan.changes().len();
        self.plan.clear();
        count
    }

    /// Starts a join: refused unless this node has never joined anything (formation mode
    /// over itself alone). Returns the request id of the RING_STATE for the seed.
    pub fn start_join(&mut self, local: NodeId, reply: JoinSender) -> Result<u32, Refusal> {
        let alone = self.state.ring().members().iter().all(|m| m.id == local);
        if self.state.mode() != RingMode::Formation || !alone {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "this node already belongs to a cluster",
            ));
        }
        if self.join.is_some() {
            return Err(Refusal::new(
                ErrorCode::Overloaded,
                "a join is already in progress",
            ));
        }
        let id = self.fresh_id();
        self.join = Some((id, reply));
        Ok(id)
    }

    /// Ends a join with the cluster's state: adopts it and stages `Join(member)`.
    pub fn finish_join(&mut self, cluster: RingState, member: Member) -> Result<(), Refusal> {
        self.join = None;
        if cluster.ring().q() != self.state.ring().q() {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "the seed's ring has another partition count",
            ));
        }
        if cluster.ring().members().iter().any(|m| m.id == member.id) {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "the seed's ring already has a member with this node's id",
            ));
        }
        self.state = cluster;
        self.plan.clear();
        // Staged without the pending check: a pending change only delays the commit.
        self.plan.stage(Change::Join(member))?;
        if self.state.mode() == RingMode::Committed {
            self.persist();
        }
        Ok(())
    }

    /// Forgets a join that timed out.
    pub fn abandon_join(&mut self) {
        self.join = None;
    }

    fn refuse_if_pending(&self) -> Result<(), Refusal> {
        match self.state.pending() {
            Some(p) => Err(Refusal::new(
                ErrorCode::ChangePending,
                format!(
                    "the change to ring epoch {} is still pending ({} of {} moves done)",
                    p.epoch,
                    p.done_count(),
                    p.moves.len()
                ),
            )),
            None => Ok(()),
        }
    }

    fn fresh_id(&mut self) -> u32 {
        let id = tag_request_id(PEER_REQUEST_CLASS_RING, self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Writes a committed state to `<data-dir>/RING` (a formation ring is a function of
    /// the persisted gossip membership and needs no file).
    fn persist(&self) {
        if self.state.mode() != RingMode::Committed {
            return;
        }
        if let Err(error) = persist(&self.path, &self.state.to_bytes()) {
            warn!(path = %self.path.display(), %error, "cannot persist the ring state");
        }
    }
}

// --- the runtime: requests on any shard, served by shard 0 ------------------------------

impl Cluster {
    /// Serves an admin request (or a peer's RING_STATE) that arrived on this shard: on
    /// shard 0 here, else over the mailbox. Resolves to the reply frame.
    pub async fn admin(self: Rc<Self>, id: u32, request: AdminRequest) -> Vec<u8> {
        if self.ring_admin().is_some() {
            return self.serve_admin(id, request).await;
        }
        let Some(mailbox) = self.mailbox() else {
            return self.error_frame(id, ErrorCode::ShuttingDown, "the node is stopping");
        };
        let call = ShardRequest::Cluster(ClusterRequest::Admin {
            request_id: id,
            request,
        });
        match mailbox.call(0, call).await {
            Ok(ShardResponse::Frame(frame)) => frame,
            _ => self.error_frame(id, ErrorCode::ShuttingDown, "shard 0 did not answer"),
        }
    }

    /// Move `index` of the change to `epoch` is done (a transfer's roots matched): set the
    /// flag on shard 0, from any shard.
    pub fn report_move_done(self: &Rc<Self>, epoch: u64, index: usize) {
        if self.ring_admin().is_some() {
            self.move_done(epoch, index);
        } else {
            self.send_to_shard0(ClusterRequest::MoveDone { epoch, index });
        }
    }

    /// Shard 0: a move is done.
    pub(super) fn move_done(self: &Rc<Self>, epoch: u64, index: usize) {
        let changed = self
            .ring_admin()
            .is_some_and(|admin| admin.borrow_mut().move_done(epoch, index));
        if changed {
            self.ring_changed();
        }
    }

    /// Shard 0: a gossip message from `peer` carried `epoch`; fetch its ring state if it
    /// is newer (or the same while a change is pending here).
    pub(super) fn ring_epoch_seen(self: &Rc<Self>, peer: NodeId, epoch: u64) {
        if peer == self.local_node() {
            return;
        }
        let now = self.now_ms();
        let interval = self.gossip_interval_ms();
        let Some(id) = self
            .ring_admin()
            .and_then(|admin| admin.borrow_mut().wants_fetch(now, epoch, interval))
        else {
            return;
        };
        let key = LinkKey::Replica(Replica {
            node: peer,
            shard: ShardId(0),
        });
        self.send_ring_state_request(key, id);
    }

    /// A reply on a link that belongs to the ring machinery (RING_STATE_REPLY, or an
    /// ERROR whose request id is in the ring class); returns whether it was one.
    pub(super) fn ring_reply(self: &Rc<Self>, frame: &Frame<'_>) -> bool {
        let state = match &frame.message {
            Message::RingStateReply(reply) => Some(reply.state),
            Message::Error(_) if request_class(frame.request_id).0 == PEER_REQUEST_CLASS_RING => {
                None
            }
            _ => return false,
        };
        let changed = self
            .ring_admin()
            .is_some_and(|admin| admin.borrow_mut().fetched(frame.request_id, state));
        if changed {
            self.ring_changed();
        }
        true
    }

    fn send_ring_state_request(self: &Rc<Self>, key: LinkKey, id: u32) {
        let epoch = self
            .ring_admin()
            .map_or(0, |admin| admin.borrow().state().epoch());
        let message = Message::RingState(wire::RingState {
            sender: self.local_node().0,
            ring_epoch: epoch,
        });
        let mut frame = Vec::new();
        if wire::encode(id, &message, &mut frame).is_ok() {
            self.push_link_frame(key, frame);
        }
    }

    async fn serve_admin(self: Rc<Self>, id: u32, request: AdminRequest) -> Vec<u8> {
        let result = match request {
            AdminRequest::RingState => Ok(self.ring_state_reply(id)),
            AdminRequest::Stage { kind, node, weight } => self.stage(id, kind, node, weight),
            AdminRequest::Plan => self.plan_reply(id),
            AdminRequest::Commit => self.commit(id),
            AdminRequest::Clear => Ok(self.clear(id)),
            AdminRequest::Status => Ok(self.status(id).await),
            AdminRequest::Join { seed } => self.clone().join(id, seed).await,
        };
        result.unwrap_or_else(|refusal| self.error_frame(id, refusal.code, &refusal.message))
    }

    fn ring_state_reply(&self, id: u32) -> Vec<u8> {
        let bytes = self
            .ring_admin()
            .map(|admin| admin.borrow().state().to_bytes())
            .unwrap_or_default();
        let mut out = Vec::new();
        let reply = Message::RingStateReply(RingStateReply { state: &bytes });
        if wire::encode(id, &reply, &mut out).is_err() {
            return self.error_frame(id, ErrorCode::TooLarge, "the ring state is too large");
        }
        out
    }

    fn stage(
        self: &Rc<Self>,
        id: u32,
        kind: ChangeKind,
        node: u64,
        weight: u32,
    ) -> Result<Vec<u8>, Refusal> {
        let local = self.local_node();
        let change = match kind {
            ChangeKind::Leave if node == 0 || node == local.0 => Change::Leave(local),
            ChangeKind::Leave => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "leave is sent to the leaving node; remove another (dead) node instead",
                ))
            }
            ChangeKind::Remove => Change::Remove(NodeId(node)),
            ChangeKind::Reweight if weight == 0 => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "weight must be >= 1",
                ))
            }
            ChangeKind::Reweight => Change::Reweight {
                node: NodeId(node),
                weight,
            },
            ChangeKind::Join => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "a join is staged by ADMIN_JOIN on the new node",
                ))
            }
        };
        let admin = self.admin_state()?;
        let mut admin = admin.borrow_mut();
        admin.stage(change)?;
        let staged = staged_changes(admin.plan());
        encode_reply(
            id,
            &Message::AdminStageReply(AdminStageReply {
                staged: List::Owned(staged),
            }),
        )
    }

    fn plan_reply(self: &Rc<Self>, id: u32) -> Result<Vec<u8>, Refusal> {
        let admin = self.admin_state()?;
        let admin = admin.borrow();
        let preview = admin.preview()?;
        let reply = AdminPlanReply {
            ring_epoch: admin.state().ring().epoch(),
            next_epoch: preview.ring.epoch(),
            staged: List::Owned(staged_changes(admin.plan())),
            moves: List::Owned(plan_moves(&preview.moves, None)),
            nodes: List::Owned(
                preview
                    .per_node
                    .iter()
                    .map(|n| PlanNode {
                        node: n.node.0,
                        owned_before: n.owned_before,
                        owned_after: n.owned_after,
                        sending: n.sending,
                        receiving: n.receiving,
                    })
                    .collect(),
            ),
        };
        encode_reply(id, &Message::AdminPlanReply(reply))
    }

    fn commit(self: &Rc<Self>, id: u32) -> Result<Vec<u8>, Refusal> {
        let (reply, _) = {
            let admin = self.admin_state()?;
            let mut admin = admin.borrow_mut();
            let preview = admin.commit()?;
            let state = admin.state();
            let reply = AdminCommitReply {
                ring_epoch: state.ring().epoch(),
                next_epoch: preview.ring.epoch(),
                moves: u32::try_from(preview.moves.len()).unwrap_or(u32::MAX),
            };
            (reply, ())
        };
        self.ring_changed();
        encode_reply(id, &Message::AdminCommitReply(reply))
    }

    fn clear(self: &Rc<Self>, id: u32) -> Vec<u8> {
        let cleared = self
            .ring_admin()
            .map_or(0, |admin| admin.borrow_mut().clear());
        let reply = AdminClearReply {
            cleared: u32::try_from(cleared).unwrap_or(u32::MAX),
        };
        encode_reply(id, &Message::AdminClearReply(reply))
            .unwrap_or_else(|r| self.error_frame(id, r.code, &r.message))
    }

    async fn status(self: &Rc<Self>, id: u32) -> Vec<u8> {
        let transfers = self.transfer_counters().await;
        let Some(admin) = self.ring_admin() else {
            return self.error_frame(id, ErrorCode::Internal, "no ring state on this shard");
        };
        let (state, staged) = {
            let admin = admin.borrow();
            (admin.state().clone(), staged_changes(admin.plan()))
        };
        let view = self.view();
        let nodes = status_nodes(&state, &view.nodes, |node| !view.down.contains(&node));
        let (next_epoch, moves) = match state.pending() {
            Some(p) => (p.epoch, plan_moves(&p.moves, Some(p))),
            None => (0, Vec::new()),
        };
        let stats = wire_stats(&transfers);
        let reply = AdminStatusReply {
            ring_epoch: state.ring().epoch(),
            committed: state.mode() == RingMode::Committed,
            next_epoch,
            nodes: List::Owned(nodes),
            moves: List::Owned(moves),
            staged: List::Owned(staged),
            transfers: List::Owned(stats),
        };
        encode_reply(id, &Message::AdminStatusReply(reply))
            .unwrap_or_else(|r| self.error_frame(id, r.code, &r.message))
    }

    /// Every shard's counters whose names start with `transfer_`.
    async fn transfer_counters(self: &Rc<Self>) -> Vec<StatEntry> {
        let mut entries = Vec::new();
        self.stat_entries(&mut entries);
        if let Some(mailbox) = self.mailbox() {
            for shard in 1..self.shards() {
                if let Ok(ShardResponse::Stats(more)) =
                    mailbox.call(shard, ShardRequest::Stats).await
                {
                    entries.extend(more);
                }
            }
        }
        entries.retain(|e| e.name.starts_with("transfer_"));
        entries
    }

    async fn join(self: Rc<Self>, id: u32, seed: String) -> Result<Vec<u8>, Refusal> {
        if seed.is_empty() || seed.len() > TEXT_BYTES_MAX || !seed.contains(':') {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "the seed must be HOST:PORT",
            ));
        }
        let local = self.local_node();
        // Before gossip has started this node cannot describe itself to the cluster: refuse
        // before anything changes, so that the caller may simply retry.
        let Some(member) = self.local_member() else {
            return Err(Refusal::new(ErrorCode::Overloaded, "the node is starting"));
        };
        let (sender, receiver) = glommio::channels::local_channel::new_bounded(1);
        let request_id = self.admin_state()?.borrow_mut().start_join(local, sender)?;
        self.send_ring_state_request(LinkKey::Seed(seed.clone()), request_id);
        let wait = Duration::from_millis(ADMIN_JOIN_TIMEOUT_MS);
        let answer = glommio::timer::timeout(wait, async { Ok(receiver.recv().await) }).await;
        let cluster = match answer {
            Ok(Some(Ok(state))) => state,
            Ok(Some(Err(message))) => {
                self.admin_state()?.borrow_mut().abandon_join();
                return Err(Refusal::new(ErrorCode::Unavailable, message));
            }
            Ok(None) | Err(_) => {
                self.admin_state()?.borrow_mut().abandon_join();
                return Err(Refusal::new(
                    ErrorCode::Unavailable,
                    format!("no ring state from the seed {seed}"),
                ));
            }
        };
        self.admin_state()?
            .borrow_mut()
            .finish_join(cluster, member)?;
        // Joining: gossip with the cluster, but stay out of formation rings.
        self.start_joining(seed);
        self.ring_changed();
        let epoch = self
            .ring_admin()
            .map_or(0, |admin| admin.borrow().state().ring().epoch());
        info!(epoch, "joined a cluster; the join is staged");
        encode_reply(
            id,
            &Message::AdminJoinReply(AdminJoinReply {
                ring_epoch: epoch,
                node: local.0,
            }),
        )
    }

    fn admin_state(&self) -> Result<&std::cell::RefCell<RingAdmin>, Refusal> {
        self.ring_admin()
            .ok_or_else(|| Refusal::new(ErrorCode::Internal, "no ring state on this shard"))
    }

    fn error_frame(&self, id: u32, code: ErrorCode, message: &str) -> Vec<u8> {
        let reply = ErrorReply {
            code,
            answered: 0,
            needed: 0,
            ring_epoch: self.view().ring.epoch(),
            message: super::convert::text_out(message),
        };
        let mut out = Vec::new();
        let _ = wire::encode(id, &Message::Error(reply), &mut out);
        out
    }
}

fn encode_reply(id: u32, message: &Message<'_>) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    wire::encode(id, message, &mut out)
        .map_err(|_| Refusal::new(ErrorCode::TooLarge, "the reply is too large"))?;
    Ok(out)
}

/// The staged changes as the wire lists them.
fn staged_changes(plan: &Plan) -> Vec<StagedChange> {
    plan.changes()
        .iter()
        .map(|change| match change {
            Change::Join(member) => StagedChange {
                kind: ChangeKind::Join,
                node: member.id.0,
                weight: member.weight,
            },
            Change::Leave(node) => StagedChange {
                kind: ChangeKind::Leave,
                node: node.0,
                weight: 0,
            },
            Change::Remove(node) => StagedChange {
                kind: ChangeKind::Remove,
                node: node.0,
                weight: 0,
            },
            Change::Reweight { node, weight } => StagedChange {
                kind: ChangeKind::Reweight,
                node: node.0,
                weight: *weight,
            },
        })
        .collect()
}

/// Moves as the wire lists them, with the done flags of `pending` if given.
fn plan_moves(moves: &[ReplicaMove], pending: Option<&PendingChange>) -> Vec<PlanMove> {
    moves
        .iter()
        .enumerate()
        .map(|(i, m)| PlanMove {
            partition: m.partition.0,
            from_node: m.from.node.0,
            from_shard: m.from.shard.0,
            to_node: m.to.node.0,
            to_shard: m.to.shard.0,
            drop_after: m.drop_after,
            done: pending.is_some_and(|p| p.done.get(i).copied().unwrap_or(false)),
        })
        .collect()
}

/// Every node known to gossip or to either ring, by id, with its ownership.
fn status_nodes(
    state: &RingState,
    gossiped: &[NodeState],
    reachable: impl Fn(NodeId) -> bool,
) -> Vec<StatusNode> {
    let owned = |ring: &Ring| -> Vec<(NodeId, u32)> {
        ring.members()
            .iter()
            .map(|m| m.id)
            .zip(ring.ownership_counts())
            .collect()
    };
    let now = owned(state.ring());
    let next = state.pending().map(|p| owned(&p.next));
    let count = |list: &[(NodeId, u32)], node: NodeId| {
        list.iter()
            .find(|(id, _)| *id == node)
            .map_or(0, |(_, c)| *c)
    };
    let mut ids: Vec<NodeId> = gossiped.iter().map(|s| s.id).collect();
    ids.extend(now.iter().map(|(id, _)| *id));
    if let Some(next) = &next {
        ids.extend(next.iter().map(|(id, _)| *id));
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let gossip = gossiped.iter().find(|s| s.id == id);
            let member = state.ring().members().iter().find(|m| m.id == id);
            let owned_now = count(&now, id);
            StatusNode {
                id: id.0,
                status: gossip.map_or(NodeStatus::Up, |s| s.status),
                weight: gossip
                    .map(|s| s.weight)
                    .or(member.map(|m| m.weight))
                    .unwrap_or(0),
                reachable: reachable(id),
                owned: owned_now,
                owned_next: next.as_deref().map_or(owned_now, |next| count(next, id)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u64]) -> Vec<Member> {
        ids.iter().map(|&i| Member::new(NodeId(i), 1, 2)).collect()
    }

    fn admin(dir: &std::path::Path, ids: &[u64]) -> RingAdmin {
        let mut admin = RingAdmin::open(dir, 3, Ring::initial(64, members(&[ids[0]])).unwrap());
        admin.set_formation(Ring::initial(64, members(ids)).unwrap());
        admin
    }

    #[test]
    fn a_staged_join_commits_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = admin(dir.path(), &[1, 2, 3]);
        a.stage(Change::Join(Member::new(NodeId(4), 1, 2))).unwrap();
        let preview = a.preview().unwrap();
        assert!(preview.moves.iter().all(|m| m.to.node == NodeId(4)));
        let committed = a.commit().unwrap();
        assert_eq!(committed.moves, preview.moves);
        assert!(a.plan().changes().is_empty());
        assert_eq!(a.state().mode(), RingMode::Committed);
        let epoch = a.state().epoch();
        // A restart restores the committed state, whatever the local ring.
        let b = RingAdmin::open(dir.path(), 3, Ring::initial(64, members(&[9])).unwrap());
        assert_eq!(b.state(), a.state());
        assert_eq!(b.state().epoch(), epoch);
    }

    #[test]
    fn stages_are_checked_and_refused_while_a_change_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = admin(dir.path(), &[1, 2, 3]);
        let unknown = a.stage(Change::Remove(NodeId(9))).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::PlanRefused);
        let too_few = a.stage(Change::Leave(NodeId(1))).unwrap_err();
        assert_eq!(too_few.code, ErrorCode::PlanRefused, "3 nodes at N = 3");
        assert!(
            a.plan().changes().is_empty(),
            "a refused stage leaves the plan"
        );
        assert_eq!(a.commit().unwrap_err().code, ErrorCode::PlanRefused);
        a.stage(Change::Join(Member::new(NodeId(4), 1, 2))).unwrap();
        a.commit().unwrap();
        let pending = a.stage(Change::Leave(NodeId(1))).unwrap_err();
        assert_eq!(pending.code, ErrorCode::ChangePending);
        assert_eq!(a.commit().unwrap_err().code, ErrorCode::ChangePending);
        assert_eq!(a.clear(), 0);
    }

    #[test]
    fn newer_peers_are_fetched_once_at_a_time_and_merged() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = admin(dir.path(), &[1, 2, 3]);
        let other = tempfile::tempdir().unwrap();
        let mut b = admin(other.path(), &[1, 2, 3]);
        b.stage(Change::Join(Member::new(NodeId(4), 1, 2))).unwrap();
        b.commit().unwrap();
        let epoch = b.state().epoch();
        assert_eq!(
            a.wants_fetch(0, 1, 1000),
            None,
            "same epoch, nothing pending"
        );
        let id = a.wants_fetch(0, epoch, 1000).unwrap();
        assert_eq!(request_class(id).0, PEER_REQUEST_CLASS_RING);
        assert_eq!(a.wants_fetch(1, epoch, 1000), None, "one fetch in flight");
        let bytes = b.state().to_bytes();
        assert!(!a.fetched(id.wrapping_add(1), Some(&bytes)), "unknown id");
        assert!(a.fetched(id, Some(&bytes)));
        assert_eq!(a.state(), b.state());
        // Equal epochs with a change pending: poll, at most once per interval.
        let poll = a.wants_fetch(10, epoch, 1000).unwrap();
        assert!(!a.fetched(poll, Some(&bytes)), "nothing new");
        assert_eq!(a.wants_fetch(20, epoch, 1000), None);
        assert!(a.wants_fetch(1010, epoch, 1000).is_some());
        // A refused or garbled fetch ends it without a change.
        let next = a.wants_fetch(RING_FETCH_TIMEOUT_MS + 2000, epoch + 1, 1000);
        assert!(!a.fetched(next.unwrap(), Some(b"garbage")));
    }

    #[test]
    fn moves_done_flip_the_ring_and_are_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = admin(dir.path(), &[1, 2, 3]);
        a.stage(Change::Join(Member::new(NodeId(4), 1, 2))).unwrap();
        a.commit().unwrap();
        let p = a.state().pending().unwrap().clone();
        for i in 0..p.moves.len() {
            assert!(a.move_done(p.epoch, i));
        }
        assert!(a.state().pending().is_none());
        assert_eq!(a.state().ring().epoch(), p.epoch);
        let b = RingAdmin::open(dir.path(), 3, Ring::initial(64, members(&[1])).unwrap());
        assert_eq!(b.state(), a.state());
    }

    #[test]
    fn a_join_adopts_the_cluster_and_stages_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut alone = RingAdmin::open(dir.path(), 3, Ring::initial(64, members(&[4])).unwrap());
        let (sender, _receiver) = glommio::channels::local_channel::new_bounded(1);
        let id = alone.start_join(NodeId(4), sender).unwrap();
        assert_eq!(request_class(id).0, PEER_REQUEST_CLASS_RING);
        let cluster = RingState::formation(Ring::initial(64, members(&[1, 2, 3])).unwrap());
        alone
            .finish_join(cluster.clone(), Member::new(NodeId(4), 1, 2))
            .unwrap();
        assert_eq!(alone.state(), &cluster);
        let preview = alone.preview().unwrap();
        assert!(preview.moves.iter().all(|m| m.to.node == NodeId(4)));
        let (sender, _receiver) = glommio::channels::local_channel::new_bounded(1);
        assert_eq!(
            alone.start_join(NodeId(4), sender).unwrap_err().code,
            ErrorCode::InvalidArgument,
            "a member joins nothing twice"
        );
    }

    #[test]
    fn status_lists_every_node_with_its_ownership_before_and_after() {
        let mut state = RingState::formation(Ring::initial(64, members(&[1, 2, 3])).unwrap());
        let mut plan = Plan::new();
        plan.stage(Change::Join(Member::new(NodeId(4), 1, 2)))
            .unwrap();
        state.commit(&plan, 3).unwrap();
        let nodes = status_nodes(&state, &[], |n| n != NodeId(2));
        let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
        let four = nodes.iter().find(|n| n.id == 4).unwrap();
        assert_eq!((four.owned, four.owned_next), (0, 16));
        assert_eq!(nodes.iter().map(|n| n.owned).sum::<u32>(), 64);
        assert!(!nodes.iter().find(|n| n.id == 2).unwrap().reachable);
    }

    #[test]
    fn admin_messages_map_to_requests() {
        let join = Message::AdminJoin(wire::AdminJoin { seed: "h:1" });
        assert_eq!(
            AdminRequest::from_message(&join),
            Some(AdminRequest::Join { seed: "h:1".into() })
        );
        let stats = Message::Stats(wire::Stats {});
        assert_eq!(AdminRequest::from_message(&stats), None);
    }
}
