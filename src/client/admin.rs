//! Membership administration from the client: the calls behind `rotor admin ...`.
//!
//! Every call goes to the node the client was connected to (its seed): staged changes live
//! in that node's memory, so `stage`, `plan`, `commit` and `clear` of one change are sent
//! to the same node. Refusals come back as [`ClientError::Server`] with `PLAN_REFUSED`,
//! `CHANGE_PENDING`, `INVALID_ARGUMENT` or `UNAVAILABLE` and the node's explanation.
//!
//! [`ClientError::Server`]: super::ClientError::Server

use std::time::{Duration, Instant};

use super::{Client, Result};
use crate::wire::{
    self, AdminCommitReply, AdminJoinReply, ChangeKind, ErrorCode, Message, PlanMove, PlanNode,
    StagedChange, StatusNode,
};

/// What committing the staged changes would do (`rotor admin plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInfo {
    /// Epoch of the serving ring the plan starts from.
    pub ring_epoch: u64,
    /// Epoch the committed ring would have.
    pub next_epoch: u64,
    /// The staged changes.
    pub staged: Vec<StagedChange>,
    /// Every replica move, in partition order.
    pub moves: Vec<PlanMove>,
    /// Per node: ownership before and after, replicas sent and received.
    pub nodes: Vec<PlanNode>,
}

/// A node's ring state (`rotor admin status` and `ring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    /// Epoch of the serving ring.
    pub ring_epoch: u64,
    /// Whether a change was ever committed (else the ring is formed from gossip).
    pub committed: bool,
    /// Epoch of the pending change's ring, if one is pending.
    pub next_epoch: Option<u64>,
    /// Every known node.
    pub nodes: Vec<StatusNode>,
    /// The pending change's moves with their done flags.
    pub moves: Vec<PlanMove>,
    /// Changes staged on the node.
    pub staged: Vec<StagedChange>,
    /// The node's transfer counters: (shard, name, value).
    pub transfers: Vec<(u16, String, u64)>,
}

impl StatusInfo {
    /// Moves of the pending change that are done.
    pub fn moves_done(&self) -> usize {
        self.moves.iter().filter(|m| m.done).count()
    }
}

/// How long an admin request refused with OVERLOADED is retried.
pub const ADMIN_OVERLOADED_WAIT: Duration = Duration::from_secs(5);
/// Pause between those retries.
pub const ADMIN_RETRY_INTERVAL: Duration = Duration::from_millis(50);

impl Client {
    /// Makes the connected node (a new node started without seeds) join the cluster of
    /// `seed`: it adopts that cluster's ring, gossips with it and stages its own join.
    pub fn admin_join(&mut self, seed: &str) -> Result<AdminJoinReply> {
        let message = Message::AdminJoin(wire::AdminJoin { seed });
        self.admin_call(&message, |m| match m {
            Message::AdminJoinReply(r) => Some(r),
            _ => None,
        })
    }

    /// Stages the connected node's leave.
    pub fn admin_leave(&mut self) -> Result<Vec<StagedChange>> {
        self.admin_stage(ChangeKind::Leave, 0, 0)
    }

    /// Stages the removal of (dead) node `node`.
    pub fn admin_remove(&mut self, node: u64) -> Result<Vec<StagedChange>> {
        self.admin_stage(ChangeKind::Remove, node, 0)
    }

    /// Stages a new weight for `node`.
    pub fn admin_weight(&mut self, node: u64, weight: u32) -> Result<Vec<StagedChange>> {
        self.admin_stage(ChangeKind::Reweight, node, weight)
    }

    /// Stages a change; returns every change now staged on the node.
    pub fn admin_stage(
        &mut self,
        kind: ChangeKind,
        node: u64,
        weight: u32,
    ) -> Result<Vec<StagedChange>> {
        let message = Message::AdminStage(wire::AdminStage { kind, node, weight });
        self.admin_call(&message, |m| match m {
            Message::AdminStageReply(r) => Some(r.staged.to_vec()),
            _ => None,
        })
    }

    /// The preview of the staged changes.
    pub fn admin_plan(&mut self) -> Result<PlanInfo> {
        self.admin_call(&Message::AdminPlan(wire::AdminPlan {}), |m| match m {
            Message::AdminPlanReply(r) => Some(PlanInfo {
                ring_epoch: r.ring_epoch,
                next_epoch: r.next_epoch,
                staged: r.staged.to_vec(),
                moves: r.moves.to_vec(),
                nodes: r.nodes.to_vec(),
            }),
            _ => None,
        })
    }

    /// Commits the staged changes.
    pub fn admin_commit(&mut self) -> Result<AdminCommitReply> {
        self.admin_call(&Message::AdminCommit(wire::AdminCommit {}), |m| match m {
            Message::AdminCommitReply(r) => Some(r),
            _ => None,
        })
    }

    /// Drops the staged changes; returns how many there were.
    pub fn admin_clear(&mut self) -> Result<u32> {
        self.admin_call(&Message::AdminClear(wire::AdminClear {}), |m| match m {
            Message::AdminClearReply(r) => Some(r.cleared),
            _ => None,
        })
    }

    /// The node's ring state, nodes and pending change.
    pub fn admin_status(&mut self) -> Result<StatusInfo> {
        self.admin_call(&Message::AdminStatus(wire::AdminStatus {}), |m| match m {
            Message::AdminStatusReply(r) => Some(StatusInfo {
                ring_epoch: r.ring_epoch,
                committed: r.committed,
                next_epoch: (r.next_epoch != 0).then_some(r.next_epoch),
                nodes: r.nodes.to_vec(),
                moves: r.moves.to_vec(),
                staged: r.staged.to_vec(),
                transfers: r
                    .transfers
                    .iter()
                    .map(|s| (s.shard, s.name.to_owned(), s.value))
                    .collect(),
            }),
            _ => None,
        })
    }

    /// Sends an admin request to the seed node.
    ///
    /// Between opening its port and starting gossip a node refuses admin requests with
    /// OVERLOADED ("the node is starting") before changing anything; such refusals are
    /// retried every [`ADMIN_RETRY_INTERVAL`] for up to [`ADMIN_OVERLOADED_WAIT`], so that a
    /// script may run `rotor admin` right after starting `rotord`.
    fn admin_call<T>(
        &mut self,
        message: &Message<'_>,
        convert: impl Fn(Message<'_>) -> Option<T>,
    ) -> Result<T> {
        let seed = self.seed;
        let deadline = Instant::now() + ADMIN_OVERLOADED_WAIT;
        loop {
            match self.call(seed, message, false, &convert) {
                Err(e) if e.code() == Some(ErrorCode::Overloaded) && Instant::now() < deadline => {
                    std::thread::sleep(ADMIN_RETRY_INTERVAL);
                }
                answer => return answer,
            }
        }
    }
}
