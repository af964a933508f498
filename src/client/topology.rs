//! The client's copy of a node's `TOPOLOGY_REPLY`, and routing by it: key -> partition (the
//! ring's MD5 rule) -> owner (node, shard) -> that shard's own port.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::ring::{key_position, partition_of_position};
use crate::wire::{NodeStatus, TopologyReply};

use super::error::{ClientError, Result};

/// The ring as a node described it: epoch, members and the owner of every partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The ring's epoch; grows with every ownership change.
    pub epoch: u64,
    /// The members; [`Owner::node`] indexes this list.
    pub nodes: Vec<NodeEntry>,
    /// The owner of each partition, in partition order; its length is Q.
    pub owners: Vec<Owner>,
}

/// One member of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// Node id.
    pub id: u64,
    /// Version of the node's gossiped state.
    pub version: u64,
    /// Membership status.
    pub status: NodeStatus,
    /// Relative capacity.
    pub weight: u32,
    /// Failure zone.
    pub zone: String,
    /// Common client address, `HOST:PORT`.
    pub address: String,
    /// Per-shard ports, by shard (empty if the node has none).
    pub ports: Vec<u16>,
}

/// Who holds one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Index into [`Topology::nodes`].
    pub node: u16,
    /// Shard of that node.
    pub shard: u16,
}

/// Where a request for one key goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The key's partition.
    pub partition: u32,
    /// Id of the owning node.
    pub node: u64,
    /// The owning shard.
    pub shard: u16,
    /// The shard's own port when the node lists one, else the node's common address; the
    /// common address of node `via` when the owner is unreachable; the seed when the client
    /// is pinned to it.
    pub addr: SocketAddr,
    /// The node the request goes through instead of the owner, which the client found
    /// unreachable (see [`Topology::fallback_addr`]); `None` when it goes to the owner.
    pub via: Option<u64>,
}

impl Topology {
    /// Copies a decoded reply (the codec already checked that Q is a power of two and that
    /// every owner names a listed node).
    pub fn from_reply(reply: &TopologyReply<'_>) -> Topology {
        Topology {
            epoch: reply.epoch,
            nodes: reply
                .nodes
                .iter()
                .map(|n| NodeEntry {
                    id: n.id,
                    version: n.version,
                    status: n.status,
                    weight: n.weight,
                    zone: n.zone.to_owned(),
                    address: n.address.to_owned(),
                    ports: n.ports.to_vec(),
                })
                .collect(),
            owners: reply
                .owners
                .iter()
                .map(|o| Owner {
                    node: o.node,
                    shard: o.shard,
                })
                .collect(),
        }
    }

    /// Q, the number of partitions.
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.owners.len()).unwrap_or(u32::MAX)
    }

    /// The partition of `key`: the top log2(Q) bits of MD5(key), as the ring computes it.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of_position(key_position(key), self.partitions()).0
    }

    /// Where a request for `key` goes. `seed` stands in for a node address whose host is
    /// unspecified (`0.0.0.0`) or does not resolve, and `shard_aware: false` always picks
    /// the common address.
    pub fn route(&self, key: &[u8], seed: SocketAddr, shard_aware: bool) -> Result<Route> {
        if self.owners.is_empty() {
            return Err(ClientError::Invalid(
                "the topology lists no partitions".into(),
            ));
        }
        let partition = self.partition_of(key);
        let owner = usize::try_from(partition)
            .ok()
            .and_then(|p| self.owners.get(p))
            .ok_or_else(|| ClientError::Invalid("partition outside the topology".into()))?;
        let node = self
            .nodes
            .get(usize::from(owner.node))
            .ok_or_else(|| ClientError::Invalid("owner names no listed node".into()))?;
        let addr = self.owner_addr(*owner, seed, shard_aware)?;
        Ok(Route {
            partition,
            node: node.id,
            shard: owner.shard,
            addr,
            via: None,
        })
    }

    /// Where `owner` listens: its shard's own port on the node's host when the node lists
    /// one and `shard_aware` is set, else the node's common address (see [`Topology::route`]
    /// for `seed`).
    pub fn owner_addr(
        &self,
        owner: Owner,
        seed: SocketAddr,
        shard_aware: bool,
    ) -> Result<SocketAddr> {
        let node = self
            .nodes
            .get(usize::from(owner.node))
            .ok_or_else(|| ClientError::Invalid("owner names no listed node".into()))?;
        let common = resolve(&node.address, seed);
        let port = node.ports.get(usize::from(owner.shard)).copied();
        Ok(match port {
            Some(port) if shard_aware && port != 0 => SocketAddr::new(common.ip(), port),
            _ => common,
        })
    }

    /// Where a request for `partition` goes when its owner cannot be reached: the common
    /// address of the first other node met walking the partitions clockwise from it (the
    /// order in which the ring builds preference lists, zones aside), skipping nodes for
    /// which `is_down(node index)` holds and nodes marked down or removed. That node is a
    /// replica of the partition or coordinates for it (sloppy quorum), so the request
    /// still reaches a node that can serve it. `None` when no other node qualifies.
    pub fn fallback_addr(
        &self,
        partition: u32,
        seed: SocketAddr,
        is_down: impl Fn(u16) -> bool,
    ) -> Option<(u64, SocketAddr)> {
        let q = self.owners.len();
        let start = usize::try_from(partition).ok()?;
        let owner = self.owners.get(start)?.node;
        (1..q)
            .filter_map(|step| self.owners.get((start + step) % q))
            .map(|o| o.node)
            .find(|&node| node != owner && self.serving(node) && !is_down(node))
            .and_then(|node| {
                let id = self.nodes.get(usize::from(node))?.id;
                Some((id, self.node_addr(node, seed)?))
            })
    }

    /// The common address of node `index` (see [`Topology::route`] for `seed`).
    pub fn node_addr(&self, index: u16, seed: SocketAddr) -> Option<SocketAddr> {
        let node = self.nodes.get(usize::from(index))?;
        Some(resolve(&node.address, seed))
    }

    /// The index of node `id` in [`Topology::nodes`].
    pub fn node_index(&self, id: u64) -> Option<u16> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Whether node `index` is a member that serves requests (not marked down or removed).
    fn serving(&self, index: u16) -> bool {
        self.nodes
            .get(usize::from(index))
            .is_some_and(|n| !matches!(n.status, NodeStatus::Down | NodeStatus::Removed))
    }
}

/// A node's `HOST:PORT`, with the seed's IP for an unspecified or unresolvable host (a node
/// listening on all interfaces advertises `0.0.0.0`), and the seed itself if the address
/// cannot be parsed at all.
fn resolve(address: &str, seed: SocketAddr) -> SocketAddr {
    let parsed = address
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| address.to_socket_addrs().ok().and_then(|mut a| a.next()));
    match parsed {
        Some(a) if a.ip().is_unspecified() => SocketAddr::new(seed.ip(), a.port()),
        Some(a) => a,
        None => seed,
    }
}
