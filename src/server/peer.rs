//! Outgoing peer links: one TCP connection from this shard to one shard of another node
//! (or to a seed's common port), created lazily, reconnected with back-off.
//!
//! Place in the flow: the shard's cluster runtime ([`super::cluster`]) turns the
//! coordinator's and gossip's outgoing messages into frames and hands them to
//! [`Link::push`]; the link's task connects, says `HELLO` (role peer, cluster id, node id),
//! writes the queued frames and reads the replies, which come back on the same connection
//! carrying the request's id (wire-spec section 2) and go to [`LinkOwner::on_reply`].
//!
//! Why per shard and per peer shard: a replica is (node, shard), so a shard talks to the
//! partition's shard on the other node directly, with no cross-core hop on either side.
//! Sockets bind to this node's listen IP (port 0) before connecting, so links between
//! 127.0.0.x addresses can be cut with a firewall rule in tests. The connect itself is a
//! blocking call on glommio's blocking thread pool, never on the reactor.
//!
//! Bounds: a link queues at most `PEER_LINK_QUEUE_FRAMES_MAX` frames; a link that failed
//! to connect drops what is pushed until its back-off ends (the coordinator's deadlines
//! account for lost messages and report the peer unresponsive to the failure detector).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::debug;

use crate::constants::{
    PEER_BACKOFF_MS_MAX, PEER_BACKOFF_MS_MIN, PEER_CONNECT_TIMEOUT_MS, PEER_LINK_QUEUE_FRAMES_MAX,
    PEER_REQUEST_CLASS_SHIFT,
};
use crate::ring::Replica;
use crate::wire::{self, Decoded, Frame, Hello, Message, Role};

/// The wire request id of request `id` of state machine `class` (a
/// `PEER_REQUEST_CLASS_*` constant): the class in the top two bits, the id's low 30 bits
/// below it, so the machines sharing a link keep their own counters.
pub fn tag_request_id(class: u32, id: u32) -> u32 {
    let mask = (1u32 << PEER_REQUEST_CLASS_SHIFT) - 1;
    (class << PEER_REQUEST_CLASS_SHIFT) | (id & mask)
}

/// The (class, id) a wire request id carries: the inverse of [`tag_request_id`].
pub fn request_class(wire_id: u32) -> (u32, u32) {
    let mask = (1u32 << PEER_REQUEST_CLASS_SHIFT) - 1;
    (wire_id >> PEER_REQUEST_CLASS_SHIFT, wire_id & mask)
}

/// Where a link goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkKey {
    /// One shard of a node of the membership.
    Replica(Replica),
    /// A seed's common address, before its node is known.
    Seed(String),
}

/// What a link needs from the shard that owns it.
pub trait LinkOwner: 'static {
    /// Where to connect for `key` now (`None`: unknown for the moment, retried later).
    fn address(&self, key: &LinkKey) -> Option<String>;
    /// A reply frame arrived on the link of `key`.
    fn on_reply(self: &Rc<Self>, key: &LinkKey, frame: Frame<'_>);
    /// Whether the shard is stopping (the link's task then ends).
    fn stopping(&self) -> bool;
}

/// Who this node is, as its HELLO says.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// This node's id.
    pub node_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The IP outgoing sockets bind to.
    pub bind_ip: IpAddr,
}

/// One outgoing link's queue and state, shared by its task and the shard.
#[derive(Default)]
pub struct Link {
    queue: RefCell<VecDeque<Vec<u8>>>,
    /// Connection failed: pushes are refused until the next attempt.
    backing_off: Cell<bool>,
    writer: RefCell<Option<Waker>>,
}

impl Link {
    /// Starts the link's task for `key`; returns the link to push frames to.
    pub fn start<O: LinkOwner>(owner: Rc<O>, identity: Identity, key: LinkKey) -> Rc<Link> {
        let link = Rc::new(Link::default());
        let task = run(owner, identity, key, link.clone());
        glommio::spawn_local(task).detach();
        link
    }

    /// Queues one encoded frame; false if it was dropped (link down or queue full).
    pub fn push(&self, frame: Vec<u8>) -> bool {
        if self.backing_off.get() {
            return false;
        }
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= PEER_LINK_QUEUE_FRAMES_MAX {
            return false;
        }
        queue.push_back(frame);
        drop(queue);
        let waker = self.writer.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Frames waiting to be written.
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Waits for frames and takes them all (the writer's loop).
    async fn take_all(&self) -> Vec<u8> {
        future::poll_fn(|cx| {
            let mut queue = self.queue.borrow_mut();
            if queue.is_empty() {
                *self.writer.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let mut bytes = Vec::new();
            for frame in queue.drain(..) {
                bytes.extend_from_slice(&frame);
            }
            Poll::Ready(bytes)
        })
        .await
    }
}

/// Why a connection attempt or an established link ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("I/O: {0}")]
    Io(std::io::Error),
    /// The peer refused the handshake, or is not the node expected there.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer sent bytes that do not decode.
    #[error("malformed frame")]
    Malformed,
}

impl From<std::io::Error> for LinkError {
    fn from(error: std::io::Error) -> Self {
        LinkError::Io(error)
    }
}

async fn run<O: LinkOwner>(owner: Rc<O>, identity: Identity, key: LinkKey, link: Rc<Link>) {
    let mut backoff = PEER_BACKOFF_MS_MIN;
    loop {
        if owner.stopping() {
            return;
        }
        link.backing_off.set(false);
        let outcome = match owner.address(&key) {
            Some(address) => session(&owner, identity, &key, &link, address, &mut backoff).await,
            None => Err(LinkError::Refused("address unknown".into())),
        };
        if let Err(error) = outcome {
            debug!(?key, %error, "peer link down");
        }
        link.backing_off.set(true);
        link.queue.borrow_mut().clear();
        glommio::timer::sleep(Duration::from_millis(backoff)).await;
        backoff = (backoff * 2).min(PEER_BACKOFF_MS_MAX);
    }
}

/// One connection: connect, handshake, then write and read until either side fails.
async fn session<O: LinkOwner>(
    owner: &Rc<O>,
    identity: Identity,
    key: &LinkKey,
    link: &Link,
    address: String,
    backoff: &mut u64,
) -> Result<(), LinkError> {
    let bind_ip = identity.bind_ip;
    let socket = glommio::executor()
        .spawn_blocking(move || connect(bind_ip, &address))
        .await?;
    let mut stream = TcpStream::from(socket);
    let _ = stream.set_nodelay(true);
    let mut hello = Vec::new();
    let message = Message::Hello(Hello {
        version_min: wire::VERSION,
        version_max: wire::VERSION,
        role: Role::Peer,
        features: 0,
        cluster_id: identity.cluster_id,
        node_id: identity.node_id,
    });
    if wire::encode(0, &message, &mut hello).is_err() {
        return Err(LinkError::Malformed);
    }
    stream.write_all(&hello).await?;
    let mut input = Vec::new();
    let accepted = loop {
        if let Some((accepted, used)) = first_reply(&input, identity, key)? {
            input.drain(..used);
            break accepted;
        }
        read_some(&mut stream, &mut input).await?;
    };
    accepted?;
    *backoff = PEER_BACKOFF_MS_MIN;
    debug!(?key, "peer link up");
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let writing = async {
        loop {
            let bytes = link.take_all().await;
            writer.write_all(&bytes).await?;
        }
    };
    let reading = async {
        loop {
            loop {
                match wire::decode(&input) {
                    Ok(Decoded::Frame { frame, consumed }) => {
                        owner.on_reply(key, frame);
                        input.drain(..consumed);
                    }
                    Ok(Decoded::Incomplete { .. }) => break,
                    Err(_) => return Err(LinkError::Malformed),
                }
            }
            read_some(&mut reader, &mut input).await?;
        }
    };
    future::or(writing, reading).await
}

/// The HELLO_REPLY at the front of `input`, checked: `None` until it is complete.
#[allow(clippy::type_complexity)]
fn first_reply(
    input: &[u8],
    identity: Identity,
    key: &LinkKey,
) -> Result<Option<(Result<(), LinkError>, usize)>, LinkError> {
    let (frame, consumed) = match wire::decode(input) {
        Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
        Ok(Decoded::Incomplete { .. }) => return Ok(None),
        Err(_) => return Err(LinkError::Malformed),
    };
    let verdict = match frame.message {
        Message::HelloReply(reply) if reply.cluster_id != identity.cluster_id => Err(
            LinkError::Refused(format!("peer is in cluster {}", reply.cluster_id)),
        ),
        Message::HelloReply(reply) => match key {
            LinkKey::Replica(replica) if replica.node.0 != reply.node_id => {
                Err(LinkError::Refused(format!(
                    "node {} answered where node {} was expected",
                    reply.node_id, replica.node.0
                )))
            }
            _ => Ok(()),
        },
        Message::Error(error) => Err(LinkError::Refused(format!(
            "{:?}: {}",
            error.code, error.message
        ))),
        _ => Err(LinkError::Malformed),
    };
    Ok(Some((verdict, consumed)))
}

/// Reads what is available onto the end of `input`; an orderly close is an error here
/// (the link has requests outstanding or may have).
async fn read_some<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    input: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let mut chunk = [0u8; 16 * 1024];
    let n = reader.read(&mut chunk).await?;
    if n == 0 {
        return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    input.extend_from_slice(chunk.get(..n).unwrap_or_default());
    Ok(())
}

/// A blocking connect from `bind_ip` (port 0) to `address` (resolved here, on the
/// blocking thread, since a seed may be a host name).
fn connect(bind_ip: IpAddr, address: &str) -> std::io::Result<socket2::Socket> {
    let target = address
        .to_socket_addrs()?
        .find(|a| a.is_ipv4() == bind_ip.is_ipv4())
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrNotAvailable))?;
    let domain = socket2::Domain::for_address(target);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(bind_ip, 0).into())?;
    socket.connect_timeout(
        &target.into(),
        Duration::from_millis(PEER_CONNECT_TIMEOUT_MS),
    )?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            node_id: 1,
            cluster_id: 5,
            bind_ip: "127.0.0.1".parse().unwrap(),
        }
    }

    fn reply(cluster_id: u64, node_id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let message = Message::HelloReply(wire::HelloReply {
            version: 1,
            role: Role::Peer,
            features: 0,
            cluster_id,
            node_id,
            shard: 0,
            shard_count: 1,
        });
        wire::encode(0, &message, &mut out).unwrap();
        out
    }

    fn replica(node: u64) -> LinkKey {
        LinkKey::Replica(Replica {
            node: crate::ring::NodeId(node),
            shard: crate::ring::ShardId(0),
        })
    }

    #[test]
    fn request_classes_round_trip_and_stay_apart() {
        use crate::constants::{
            PEER_REQUEST_CLASS_ANTIENTROPY, PEER_REQUEST_CLASS_COORDINATOR,
            PEER_REQUEST_CLASS_RING, PEER_REQUEST_CLASS_TRANSFER,
        };
        let classes = [
            PEER_REQUEST_CLASS_COORDINATOR,
            PEER_REQUEST_CLASS_ANTIENTROPY,
            PEER_REQUEST_CLASS_TRANSFER,
            PEER_REQUEST_CLASS_RING,
        ];
        for class in classes {
            for id in [0, 1, 12_345, (1 << 30) - 1] {
                assert_eq!(request_class(tag_request_id(class, id)), (class, id));
            }
        }
        // Coordinator ids are the wire ids unchanged (as before classes existed).
        assert_eq!(tag_request_id(PEER_REQUEST_CLASS_COORDINATOR, 77), 77);
        assert_eq!(request_class(77), (PEER_REQUEST_CLASS_COORDINATOR, 77));
        // An id past 30 bits is masked, never spills into the class.
        let tagged = tag_request_id(PEER_REQUEST_CLASS_ANTIENTROPY, u32::MAX);
        assert_eq!(
            request_class(tagged),
            (PEER_REQUEST_CLASS_ANTIENTROPY, (1 << 30) - 1)
        );
        assert_eq!(
            request_class(u32::MAX),
            (PEER_REQUEST_CLASS_RING, (1 << 30) - 1)
        );
    }

    #[test]
    fn the_handshake_reply_is_checked() {
        let ok = reply(5, 2);
        assert!(matches!(
            first_reply(&ok, identity(), &replica(2)),
            Ok(Some((Ok(()), n))) if n == ok.len()
        ));
        assert!(matches!(
            first_reply(&ok[..ok.len() - 1], identity(), &replica(2)),
            Ok(None)
        ));
        assert!(matches!(
            first_reply(&reply(6, 2), identity(), &replica(2)),
            Ok(Some((Err(LinkError::Refused(_)), _)))
        ));
        assert!(matches!(
            first_reply(&ok, identity(), &replica(3)),
            Ok(Some((Err(LinkError::Refused(_)), _)))
        ));
        let seed = LinkKey::Seed("127.0.0.1:1".into());
        assert!(matches!(
            first_reply(&ok, identity(), &seed),
            Ok(Some((Ok(()), _)))
        ));
        assert!(matches!(
            first_reply(b"ROTRgarbage-garbage", identity(), &seed),
            Err(LinkError::Malformed)
        ));
    }

    #[test]
    fn a_link_refuses_frames_past_its_bound_or_while_backing_off() {
        let link = Link::default();
        for _ in 0..PEER_LINK_QUEUE_FRAMES_MAX {
            assert!(link.push(vec![1]));
        }
        assert!(!link.push(vec![1]), "full");
        assert_eq!(link.queued(), PEER_LINK_QUEUE_FRAMES_MAX);
        let bytes = futures_lite::future::block_on(link.take_all());
        assert_eq!(bytes.len(), PEER_LINK_QUEUE_FRAMES_MAX);
        link.backing_off.set(true);
        assert!(!link.push(vec![1]), "down");
    }

    #[test]
    fn connecting_binds_to_the_given_ip() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let socket = connect("127.0.0.1".parse().unwrap(), &addr).unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(local.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, local);
        assert!(connect("127.0.0.1".parse().unwrap(), "no-port").is_err());
    }
}
