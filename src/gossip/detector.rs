//! The failure detector: each node's own, never gossiped, view of which peers answer.
//!
//! Place in the flow: the runtime (one per node) calls [`FailureDetector::tick`] on a
//! timer and sends the PINGs it returns, feeds PONGs to [`FailureDetector::pong`] and the
//! coordinators' [`crate::coordinator::Action::Unresponsive`] verdicts to
//! [`FailureDetector::failed`]. Coordinators read it through
//! [`crate::coordinator::Liveness`] to pick fallbacks and skip hint delivery.
//!
//! Direct pings with hysteresis rather than phi accrual: phi accrual infers liveness from
//! the arrival times of gossip heartbeats, so it needs a steady heartbeat stream per peer
//! and its threshold is a probability that is hard to reason about under a simulated
//! clock; ScyllaDB moved from it to direct pings. Here a peer goes down only after
//! `down_after` consecutive failures (pings unanswered within a generous timeout, or
//! requests that timed out) and comes back only after `up_after` consecutive answered
//! pings. A slow peer that answers within the ping timeout is never marked down, and one
//! lost ping or one slow request never flips a verdict, so peers do not flap. Only answers
//! to this node's own pings count as successes: in a one-way partition the peer's own
//! messages still arrive, yet requests to it cannot, so they must not keep it "up".
//! Unreachable peers keep being pinged: that probe is how they come back.

use std::collections::BTreeMap;

use crate::constants::{
    FAILURE_DOWN_AFTER, FAILURE_UP_AFTER, PING_INTERVAL_MS_DEFAULT, PING_TIMEOUT_MS_DEFAULT,
};
use crate::coordinator::Liveness;
use crate::ring::NodeId;

/// Tuning of a [`FailureDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Interval between two pings of one peer, milliseconds.
    pub ping_interval_ms: u64,
    /// How long a ping waits for its pong, milliseconds.
    pub ping_timeout_ms: u64,
    /// Consecutive failures that make a reachable peer unreachable.
    pub down_after: u32,
    /// Consecutive answered pings that make an unreachable peer reachable.
    pub up_after: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            ping_interval_ms: PING_INTERVAL_MS_DEFAULT,
            ping_timeout_ms: PING_TIMEOUT_MS_DEFAULT,
            down_after: FAILURE_DOWN_AFTER,
            up_after: FAILURE_UP_AFTER,
        }
    }
}

/// Per-peer reachability with hysteresis.
#[derive(Debug, Clone)]
pub struct FailureDetector {
    config: DetectorConfig,
    peers: BTreeMap<NodeId, PeerView>,
    next_nonce: u64,
}

#[derive(Debug, Clone, Default)]
struct PeerView {
    unreachable: bool,
    /// Consecutive failures (while reachable) or successes (while unreachable).
    streak: u32,
    /// The ping awaiting its pong: (nonce, sent at).
    outstanding: Option<(u64, u64)>,
    next_ping_at: u64,
}

impl FailureDetector {
    /// A detector that knows no peers yet.
    pub fn new(config: DetectorConfig) -> Self {
        FailureDetector {
            config,
            peers: BTreeMap::new(),
            next_nonce: 1,
        }
    }

    /// Follows the membership: new peers start reachable (nothing says otherwise yet),
    /// peers no longer listed are forgotten.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        let mut next: BTreeMap<NodeId, PeerView> = BTreeMap::new();
        for peer in peers {
            let view = self.peers.remove(&peer).unwrap_or_default();
            next.insert(peer, view);
        }
        self.peers = next;
    }

    /// Whether `node` is believed reachable; unknown nodes are.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.peers.get(&node).is_none_or(|view| !view.unreachable)
    }

    /// Peers currently believed unreachable.
    pub fn unreachable(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .iter()
            .filter(|(_, view)| view.unreachable)
            .map(|(&node, _)| node)
    }

    /// The pings due at `now`: (peer, nonce). Also turns overdue pings into failures.
    pub fn tick(&mut self, now: u64) -> Vec<(NodeId, u64)> {
        let mut pings = Vec::new();
        let config = self.config;
        for (&node, view) in &mut self.peers {
            if let Some((_, sent_at)) = view.outstanding {
                if now >= sent_at + config.ping_timeout_ms {
                    view.outstanding = None;
                    record_failure(view, &config);
                }
            }
            if view.outstanding.is_none() && now >= view.next_ping_at {
                let nonce = self.next_nonce;
                self.next_nonce += 1;
                view.outstanding = Some((nonce, now));
                view.next_ping_at = now + config.ping_interval_ms;
                pings.push((node, nonce));
            }
        }
        pings
    }

    /// A PONG from `node`. Stale nonces (answers to pings already counted as failed) are
    /// ignored.
    pub fn pong(&mut self, node: NodeId, nonce: u64) {
        let config = self.config;
        let Some(view) = self.peers.get_mut(&node) else {
            return;
        };
        if view.outstanding.map(|(expected, _)| expected) != Some(nonce) {
            return;
        }
        view.outstanding = None;
        if view.unreachable {
            view.streak += 1;
            if view.streak >= config.up_after {
                view.unreachable = false;
                view.streak = 0;
            }
        } else {
            view.streak = 0;
        }
    }

    /// A request to `node` timed out.
    pub fn failed(&mut self, node: NodeId) {
        let config = self.config;
        if let Some(view) = self.peers.get_mut(&node) {
            record_failure(view, &config);
        }
    }
}

impl Liveness for FailureDetector {
    fn is_reachable(&self, node: NodeId) -> bool {
        self.is_up(node)
    }
}

fn record_failure(view: &mut PeerView, config: &DetectorConfig) {
    if view.unreachable {
        view.streak = 0; // The run of successes needed to come back starts over.
    } else {
        view.streak += 1;
        if view.streak >= config.down_after {
            view.unreachable = true;
            view.streak = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> FailureDetector {
        let mut detector = FailureDetector::new(DetectorConfig {
            ping_interval_ms: 10,
            ping_timeout_ms: 30,
            down_after: 3,
            up_after: 2,
        });
        detector.set_peers([NodeId(2)]);
        detector
    }

    #[test]
    fn a_silent_peer_goes_down_after_three_failures_and_stays_probed() {
        let mut detector = detector();
        let mut pings = 0;
        let mut now = 0;
        while detector.is_up(NodeId(2)) {
            pings += detector.tick(now).len();
            now += 10;
            assert!(now < 1_000);
        }
        assert!(pings >= 3);
        // Still probed while down.
        assert_eq!(detector.tick(now + 100).len(), 1);
    }

    #[test]
    fn one_failure_or_one_pong_does_not_flip_the_verdict() {
        let mut detector = detector();
        detector.failed(NodeId(2));
        detector.failed(NodeId(2));
        let ping = detector.tick(0);
        detector.pong(NodeId(2), ping[0].1);
        detector.failed(NodeId(2));
        assert!(
            detector.is_up(NodeId(2)),
            "the pong reset the failure streak"
        );
        detector.failed(NodeId(2));
        detector.failed(NodeId(2));
        assert!(!detector.is_up(NodeId(2)));
        let ping = detector.tick(10);
        detector.pong(NodeId(2), ping[0].1);
        assert!(
            !detector.is_up(NodeId(2)),
            "one pong is not enough to come back"
        );
        let ping = detector.tick(20);
        detector.pong(NodeId(2), ping[0].1);
        assert!(detector.is_up(NodeId(2)));
    }

    #[test]
    fn a_late_pong_is_ignored() {
        let mut detector = detector();
        let ping = detector.tick(0);
        assert!(
            detector.tick(30).len() == 1,
            "the first ping timed out, a new one left"
        );
        detector.failed(NodeId(2));
        detector.failed(NodeId(2));
        detector.pong(NodeId(2), ping[0].1);
        assert!(!detector.is_up(NodeId(2)));
    }
}
