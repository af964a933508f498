//! The one place where wire messages become the cluster state machines' values and back:
//! client requests and replies ([`ClientRequest`], [`ClientReply`]), replica messages
//! ([`PeerMessage`]) and membership messages ([`GossipMessage`]).
//!
//! Place in the flow: a connection decodes a frame ([`crate::wire::decode`], borrowing the
//! receive buffer), this module copies what the coordinator or gossip needs into owned
//! values (decoding causal states, so a corrupt state is refused here, before any state
//! machine sees it), and encodes their outgoing messages into frames.
//!
//! One asymmetry, on purpose: the wire has a single `ERROR` reply, while the coordinator
//! tells a replica's refusal ([`PeerMessage::Error`]) from a forwarded request's failure
//! (`PeerMessage::Reply(ClientReply::Error)`). An incoming `ERROR` reply becomes the
//! latter, which keeps the whole error (answered, needed, message) for a forwarded write;
//! for replica requests the coordinator treats both as a failed answer.

use crate::antientropy::Entry as TransferEntry;
use crate::causal::{Actor, CausalState, Dot};
use crate::coordinator::{ClientError, ClientReply, ClientRequest, Options, PeerMessage};
use crate::gossip::{GossipMessage, NodeState};
use crate::membership::TransferMessage;
use crate::ring::NodeId;
use crate::wire::{
    self, Delete, DeleteReply, ErrorCode, ErrorReply, Get, GetReply, GossipDigest, GossipState,
    HintAck, HintDeliver, HintedWrite, HintedWriteReply, List, Message, NodeInfo, NodeVersion,
    Ping, Pong, Put, PutReply, ReplicaRead, ReplicaReadReply, ReplicaWrite, ReplicaWriteReply,
};

/// Why a decoded message cannot be handed to the cluster state machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A causal state in the message does not decode.
    #[error("a causal state in the message does not decode")]
    BadState,
}

impl ConvertError {
    /// The wire error code to answer with.
    pub fn code(self) -> ErrorCode {
        match self {
            ConvertError::BadState => ErrorCode::InvalidArgument,
        }
    }
}

/// GET, PUT or DELETE as a coordinator request; `None` for any other message.
pub fn client_request(message: &Message<'_>) -> Option<ClientRequest> {
    Some(match message {
        Message::Get(get) => ClientRequest::Get {
            options: options_in(&get.options),
            key: get.key.to_vec(),
        },
        Message::Put(put) => ClientRequest::Put {
            options: options_in(&put.options),
            return_context: put.return_context,
            key: put.key.to_vec(),
            context: put.context.to_vec(),
            value: put.value.to_vec(),
        },
        Message::Delete(delete) => ClientRequest::Delete {
            options: options_in(&delete.options),
            return_context: delete.return_context,
            key: delete.key.to_vec(),
            context: delete.context.to_vec(),
        },
        _ => return None,
    })
}

/// A request a peer sent on its connection to this node (a forwarded client request or a
/// replica request); `Ok(None)` for messages that are not such requests.
pub fn peer_request(message: &Message<'_>) -> Result<Option<PeerMessage>, ConvertError> {
    if let Some(request) = client_request(message) {
        return Ok(Some(PeerMessage::Forward(request)));
    }
    Ok(Some(match message {
        Message::ReplicaWrite(m) => PeerMessage::ReplicaWrite {
            partition: m.partition,
            key: m.key.to_vec(),
            state: state_in(m.state)?,
        },
        Message::ReplicaRead(m) => PeerMessage::ReplicaRead {
            partition: m.partition,
            key: m.key.to_vec(),
        },
        Message::HintedWrite(m) => PeerMessage::HintedWrite {
            intended: m.intended,
            partition: m.partition,
            key: m.key.to_vec(),
            state: state_in(m.state)?,
        },
        Message::HintDeliver(m) => PeerMessage::HintDeliver {
            hint_id: m.hint_id,
            partition: m.partition,
            key: m.key.to_vec(),
            state: state_in(m.state)?,
        },
        _ => return Ok(None),
    }))
}

/// A reply that came back on this node's outgoing connection to a peer; `Ok(None)` for
/// messages that are not replies to coordinator requests.
pub fn peer_reply(message: &Message<'_>) -> Result<Option<PeerMessage>, ConvertError> {
    Ok(Some(match message {
        Message::ReplicaWriteReply(_) => PeerMessage::ReplicaWriteReply,
        Message::ReplicaReadReply(m) => PeerMessage::ReplicaReadReply {
            state: m.state.map(state_in).transpose()?,
        },
        Message::HintedWriteReply(_) => PeerMessage::HintedWriteReply,
        Message::HintAck(m) => PeerMessage::HintAck { hint_id: m.hint_id },
        Message::GetReply(m) => PeerMessage::Reply(ClientReply::Get {
            siblings: m.siblings.iter().map(|value| value.to_vec()).collect(),
            context: m.context.to_vec(),
        }),
        Message::PutReply(m) => PeerMessage::Reply(ClientReply::Put {
            context: m.context.to_vec(),
            dot: UNKNOWN_DOT,
        }),
        Message::DeleteReply(m) => PeerMessage::Reply(ClientReply::Delete {
            context: m.context.to_vec(),
            dot: UNKNOWN_DOT,
        }),
        Message::Error(e) => PeerMessage::Reply(ClientReply::Error(ClientError {
            code: e.code,
            answered: e.answered,
            needed: e.needed,
            ring_epoch: e.ring_epoch,
            message: e.message.to_owned(),
        })),
        _ => return Ok(None),
    }))
}

/// GOSSIP_DIGEST, GOSSIP_STATE, PING or PONG as a membership message; `None` otherwise.
pub fn gossip_message(message: &Message<'_>) -> Option<GossipMessage> {
    Some(match message {
        Message::GossipDigest(m) => GossipMessage::Digest {
            sender: m.sender,
            ring_epoch: m.ring_epoch,
            versions: m.versions.iter().map(|v| (v.node, v.version)).collect(),
        },
        Message::GossipState(m) => GossipMessage::State {
            sender: m.sender,
            ring_epoch: m.ring_epoch,
            nodes: m.nodes.iter().map(node_state_in).collect(),
        },
        Message::Ping(m) => GossipMessage::Ping {
            nonce: m.nonce,
            sender: m.sender,
        },
        Message::Pong(m) => GossipMessage::Pong {
            nonce: m.nonce,
            sender: m.sender,
        },
        _ => return None,
    })
}

/// Appends the frame of a peer message (a request or a reply) with `request_id`.
pub fn encode_peer(
    request_id: u32,
    message: &PeerMessage,
    out: &mut Vec<u8>,
) -> Result<(), wire::Error> {
    let mut state_bytes = Vec::new();
    let mut state = |state: &CausalState| {
        state_bytes.clear();
        state.encode(&mut state_bytes);
        state_bytes.clone()
    };
    match message {
        PeerMessage::Forward(request) => encode_client_request(request_id, request, out),
        PeerMessage::Reply(reply) => encode_client_reply(request_id, reply, out),
        PeerMessage::ReplicaWrite {
            partition,
            key,
            state: s,
        } => {
            let bytes = state(s);
            let m = ReplicaWrite {
                partition: *partition,
                key,
                state: &bytes,
            };
            wire::encode(request_id, &Message::ReplicaWrite(m), out)
        }
        PeerMessage::ReplicaWriteReply => wire::encode(
            request_id,
            &Message::ReplicaWriteReply(ReplicaWriteReply {}),
            out,
        ),
        PeerMessage::ReplicaRead { partition, key } => {
            let m = ReplicaRead {
                partition: *partition,
                key,
            };
            wire::encode(request_id, &Message::ReplicaRead(m), out)
        }
        PeerMessage::ReplicaReadReply { state: s } => {
            let bytes = s.as_ref().map(&mut state);
            let m = ReplicaReadReply {
                state: bytes.as_deref(),
            };
            wire::encode(request_id, &Message::ReplicaReadReply(m), out)
        }
        PeerMessage::HintedWrite {
            intended,
            partition,
            key,
            state: s,
        } => {
            let bytes = state(s);
            let m = HintedWrite {
                intended: *intended,
                partition: *partition,
                key,
                state: &bytes,
            };
            wire::encode(request_id, &Message::HintedWrite(m), out)
        }
        PeerMessage::HintedWriteReply => wire::encode(
            request_id,
            &Message::HintedWriteReply(HintedWriteReply {}),
            out,
        ),
        PeerMessage::HintDeliver {
            hint_id,
            partition,
            key,
            state: s,
        } => {
            let bytes = state(s);
            let m = HintDeliver {
                hint_id: *hint_id,
                partition: *partition,
                key,
                state: &bytes,
            };
            wire::encode(request_id, &Message::HintDeliver(m), out)
        }
        PeerMessage::HintAck { hint_id } => wire::encode(
            request_id,
            &Message::HintAck(HintAck { hint_id: *hint_id }),
            out,
        ),
        PeerMessage::Error { code } => {
            let m = ErrorReply {
                code: *code,
                answered: 0,
                needed: 0,
                ring_epoch: 0,
                message: "the replica refused the request",
            };
            wire::encode(request_id, &Message::Error(m), out)
        }
    }
}

/// Appends the frame of a client request (a forward to the coordinating replica).
pub fn encode_client_request(
    request_id: u32,
    request: &ClientRequest,
    out: &mut Vec<u8>,
) -> Result<(), wire::Error> {
    let message = match request {
        ClientRequest::Get { options, key } => Message::Get(Get {
            options: options_out(*options),
            key,
        }),
        ClientRequest::Put {
            options,
            return_context,
            key,
            context,
            value,
        } => Message::Put(Put {
            options: options_out(*options),
            return_context: *return_context,
            key,
            context,
            value,
        }),
        ClientRequest::Delete {
            options,
            return_context,
            key,
            context,
        } => Message::Delete(Delete {
            options: options_out(*options),
            return_context: *return_context,
            key,
            context,
        }),
    };
    wire::encode(request_id, &message, out)
}

/// Appends the frame answering a client (or a forwarding peer): GET_REPLY, PUT_REPLY,
/// DELETE_REPLY or ERROR.
pub fn encode_client_reply(
    request_id: u32,
    reply: &ClientReply,
    out: &mut Vec<u8>,
) -> Result<(), wire::Error> {
    match reply {
        ClientReply::Get { siblings, context } => {
            let values: Vec<&[u8]> = siblings.iter().map(Vec::as_slice).collect();
            let m = GetReply {
                siblings: List::Owned(values),
                context,
            };
            wire::encode(request_id, &Message::GetReply(m), out)
        }
        ClientReply::Put { context, .. } => {
            wire::encode(request_id, &Message::PutReply(PutReply { context }), out)
        }
        ClientReply::Delete { context, .. } => wire::encode(
            request_id,
            &Message::DeleteReply(DeleteReply { context }),
            out,
        ),
        ClientReply::Error(e) => {
            let m = ErrorReply {
                code: e.code,
                answered: e.answered,
                needed: e.needed,
                ring_epoch: e.ring_epoch,
                message: text_out(&e.message),
            };
            wire::encode(request_id, &Message::Error(m), out)
        }
    }
}

/// Appends the frame of a membership message.
pub fn encode_gossip(
    request_id: u32,
    message: &GossipMessage,
    out: &mut Vec<u8>,
) -> Result<(), wire::Error> {
    match message {
        GossipMessage::Digest {
            sender,
            ring_epoch,
            versions,
        } => {
            let versions: Vec<NodeVersion> = versions
                .iter()
                .map(|&(node, version)| NodeVersion { node, version })
                .collect();
            let m = GossipDigest {
                sender: *sender,
                ring_epoch: *ring_epoch,
                versions: List::Owned(versions),
            };
            wire::encode(request_id, &Message::GossipDigest(m), out)
        }
        GossipMessage::State {
            sender,
            ring_epoch,
            nodes,
        } => {
            let nodes: Vec<NodeInfo<'_>> = nodes.iter().map(node_info).collect();
            let m = GossipState {
                sender: *sender,
                ring_epoch: *ring_epoch,
                nodes: List::Owned(nodes),
            };
            wire::encode(request_id, &Message::GossipState(m), out)
        }
        GossipMessage::Ping { nonce, sender } => wire::encode(
            request_id,
            &Message::Ping(Ping {
                nonce: *nonce,
                sender: *sender,
            }),
            out,
        ),
        GossipMessage::Pong { nonce, sender } => wire::encode(
            request_id,
            &Message::Pong(Pong {
                nonce: *nonce,
                sender: *sender,
            }),
            out,
        ),
    }
}

/// A node state as the wire's `NodeInfo` (TOPOLOGY_REPLY and GOSSIP_STATE).
pub fn node_info(state: &NodeState) -> NodeInfo<'_> {
    NodeInfo {
        id: state.id.0,
        version: state.version,
        status: state.status,
        weight: state.weight,
        zone: &state.zone,
        address: &state.address,
        ports: List::Borrowed(&state.ports),
    }
}

/// The dot of a write acknowledged by another node: the wire does not carry it (it is for
/// logs and the simulator only).
const UNKNOWN_DOT: Dot = Dot {
    actor: Actor(0),
    counter: 0,
};

fn node_state_in(info: &NodeInfo<'_>) -> NodeState {
    NodeState {
        id: NodeId(info.id),
        version: info.version,
        status: info.status,
        weight: info.weight,
        zone: info.zone.to_owned(),
        address: info.address.to_owned(),
        ports: info.ports.to_vec(),
    }
}

fn state_in(bytes: &[u8]) -> Result<CausalState, ConvertError> {
    CausalState::decode(bytes).map_err(|_| ConvertError::BadState)
}

fn options_in(options: &wire::Options) -> Options {
    Options {
        n: options.n,
        quorum: options.quorum,
        timeout_ms: options.timeout_ms,
    }
}

fn options_out(options: Options) -> wire::Options {
    wire::Options {
        n: options.n,
        quorum: options.quorum,
        timeout_ms: options.timeout_ms,
    }
}

/// An error text cut to the wire's text limit, at a character boundary.
pub fn text_out(text: &str) -> &str {
    let max = crate::constants::TEXT_BYTES_MAX;
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Context, Value};
    use crate::wire::{Decoded, NodeStatus};

    fn state() -> CausalState {
        let mut state = CausalState::new();
        state
            .update(&Context::default(), Value::Bytes(b"v".to_vec()), Actor(3))
            .unwrap();
        state
    }

    fn frame(encode: impl FnOnce(&mut Vec<u8>) -> Result<(), wire::Error>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out).expect("encodes");
        out
    }

    fn decoded<T>(bytes: &[u8], check: impl FnOnce(u32, &Message<'_>) -> T) -> T {
        match wire::decode(bytes).expect("decodes") {
            Decoded::Frame { frame, consumed } => {
                assert_eq!(consumed, bytes.len());
                check(frame.request_id, &frame.message)
            }
            Decoded::Incomplete { .. } => panic!("incomplete"),
        }
    }

    fn options() -> Options {
        Options {
            n: 3,
            quorum: 2,
            timeout_ms: 700,
        }
    }

    #[test]
    fn peer_requests_round_trip() {
        let requests = [
            PeerMessage::ReplicaWrite {
                partition: 9,
                key: b"k".to_vec(),
                state: state(),
            },
            PeerMessage::ReplicaRead {
                partition: 1,
                key: b"k".to_vec(),
            },
            PeerMessage::HintedWrite {
                intended: 77,
                partition: 2,
                key: b"h".to_vec(),
                state: state(),
            },
            PeerMessage::HintDeliver {
                hint_id: 5,
                partition: 3,
                key: b"d".to_vec(),
                state: state(),
            },
            PeerMessage::Forward(ClientRequest::Put {
                options: options(),
                return_context: true,
                key: b"k".to_vec(),
                context: b"ctx".to_vec(),
                value: b"v".to_vec(),
            }),
            PeerMessage::Forward(ClientRequest::Delete {
                options: options(),
                return_context: false,
                key: b"k".to_vec(),
                context: Vec::new(),
            }),
            PeerMessage::Forward(ClientRequest::Get {
                options: options(),
                key: b"k".to_vec(),
            }),
        ];
        for request in requests {
            let bytes = frame(|out| encode_peer(41, &request, out));
            decoded(&bytes, |id, message| {
                assert_eq!(id, 41);
                assert_eq!(peer_request(message), Ok(Some(request.clone())));
                assert_eq!(peer_reply(message), Ok(None), "a request is no reply");
            });
        }
    }

    #[test]
    fn peer_replies_round_trip() {
        let replies = [
            PeerMessage::ReplicaWriteReply,
            PeerMessage::ReplicaReadReply {
                state: Some(state()),
            },
            PeerMessage::ReplicaReadReply { state: None },
            PeerMessage::HintedWriteReply,
            PeerMessage::HintAck { hint_id: 12 },
            PeerMessage::Reply(ClientReply::Get {
                siblings: vec![b"a".to_vec(), b"b".to_vec()],
                context: b"c".to_vec(),
            }),
            PeerMessage::Reply(ClientReply::Put {
                context: b"c".to_vec(),
                dot: UNKNOWN_DOT,
            }),
            PeerMessage::Reply(ClientReply::Delete {
                context: Vec::new(),
                dot: UNKNOWN_DOT,
            }),
            PeerMessage::Reply(ClientReply::Error(ClientError {
                code: ErrorCode::Unavailable,
                answered: 1,
                needed: 2,
                ring_epoch: 4,
                message: "too few".into(),
            })),
        ];
        for reply in replies {
            let bytes = frame(|out| encode_peer(7, &reply, out));
            decoded(&bytes, |id, message| {
                assert_eq!(id, 7);
                assert_eq!(peer_reply(message), Ok(Some(reply.clone())));
                assert_eq!(peer_request(message), Ok(None), "a reply is no request");
            });
        }
        // A replica's refusal comes back as an error reply (see the module doc).
        let refusal = PeerMessage::Error {
            code: ErrorCode::StoreFailed,
        };
        let bytes = frame(|out| encode_peer(8, &refusal, out));
        decoded(&bytes, |_, message| match peer_reply(message) {
            Ok(Some(PeerMessage::Reply(ClientReply::Error(e)))) => {
                assert_eq!(e.code, ErrorCode::StoreFailed)
            }
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn a_corrupt_state_is_refused_before_any_state_machine() {
        let m = ReplicaWrite {
            partition: 1,
            key: b"k",
            state: b"not a state",
        };
        let bytes = frame(|out| wire::encode(3, &Message::ReplicaWrite(m), out));
        decoded(&bytes, |_, message| {
            assert_eq!(peer_request(message), Err(ConvertError::BadState));
        });
        let m = ReplicaReadReply {
            state: Some(b"junk"),
        };
        let bytes = frame(|out| wire::encode(3, &Message::ReplicaReadReply(m), out));
        decoded(&bytes, |_, message| {
            assert_eq!(peer_reply(message), Err(ConvertError::BadState));
        });
    }

    #[test]
    fn gossip_messages_round_trip() {
        let node = NodeState {
            id: NodeId(4),
            version: 9,
            status: NodeStatus::Up,
            weight: 2,
            zone: "z".into(),
            address: "127.0.0.2:7070".into(),
            ports: vec![7071, 7072],
        };
        let messages = [
            GossipMessage::Digest {
                sender: 1,
                ring_epoch: 3,
                versions: vec![(1, 2), (4, 9)],
            },
            GossipMessage::State {
                sender: 1,
                ring_epoch: 3,
                nodes: vec![node],
            },
            GossipMessage::Ping {
                nonce: 5,
                sender: 1,
            },
            GossipMessage::Pong {
                nonce: 5,
                sender: 2,
            },
        ];
        for message in messages {
            let bytes = frame(|out| encode_gossip(0, &message, out));
            decoded(&bytes, |_, decoded| {
                assert_eq!(gossip_message(decoded), Some(message.clone()));
            });
        }
    }

    #[test]
    fn long_error_texts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(crate::constants::TEXT_BYTES_MAX);
        let cut = text_out(&long);
        assert!(cut.len() <= crate::constants::TEXT_BYTES_MAX);
        assert!(cut.len() >= crate::constants::TEXT_BYTES_MAX - 1);
        assert_eq!(text_out("short"), "short");
        let reply = ClientReply::Error(ClientError {
            code: ErrorCode::Internal,
            answered: 0,
            needed: 0,
            ring_epoch: 0,
            message: long,
        });
        frame(|out| encode_client_reply(1, &reply, out));
    }
}

// --- partition transfer (TRANSFER_BATCH, TRANSFER_ACK, TRANSFER_CONFIRM and their replies)

/// TRANSFER_BATCH, TRANSFER_ACK, TRANSFER_CONFIRM or TRANSFER_CONFIRM_REPLY as a transfer
/// message (entries copied out of the receive buffer); `None` for any other message. An
/// `ERROR` answering a transfer request is [`transfer_refusal`]'s.
pub fn transfer_message(message: &Message<'_>) -> Option<TransferMessage> {
    Some(match message {
        Message::TransferBatch(m) => TransferMessage::Batch {
            partition: m.partition,
            ring_epoch: m.ring_epoch,
            sequence: m.sequence,
            last: m.last,
            entries: m
                .entries
                .iter()
                .map(|entry| TransferEntry {
                    key: entry.key.to_vec(),
                    state: entry.state.to_vec(),
                })
                .collect(),
        },
        Message::TransferAck(m) => TransferMessage::Ack {
            partition: m.partition,
            sequence: m.sequence,
        },
        Message::TransferConfirm(m) => TransferMessage::Confirm {
            partition: m.partition,
            ring_epoch: m.ring_epoch,
            key_count: m.key_count,
            merkle_root: m.merkle_root,
        },
        Message::TransferConfirmReply(m) => TransferMessage::ConfirmReply {
            partition: m.partition,
            key_count: m.key_count,
            merkle_root: m.merkle_root,
        },
        _ => return None,
    })
}

/// An `ERROR` answering a transfer request about `partition` (the runtime knows it from the
/// request id) as [`TransferMessage::Refused`]; `None` for any other message.
pub fn transfer_refusal(message: &Message<'_>, partition: u32) -> Option<TransferMessage> {
    match message {
        Message::Error(e) => Some(TransferMessage::Refused {
            partition,
            code: e.code,
        }),
        _ => None,
    }
}

/// Appends the frame of a transfer message with `request_id`; a refusal becomes an `ERROR`
/// with its code. Entry states are not decoded here: the receiving machine decodes each
/// one and counts those that do not (a bad entry must not refuse the whole batch).
pub fn encode_transfer(
    request_id: u32,
    message: &TransferMessage,
    out: &mut Vec<u8>,
) -> Result<(), wire::Error> {
    match message {
        TransferMessage::Batch {
            partition,
            ring_epoch,
            sequence,
            last,
            entries,
        } => {
            let entries: Vec<wire::Entry<'_>> = entries
                .iter()
                .map(|entry| wire::Entry {
                    key: &entry.key,
                    state: &entry.state,
                })
                .collect();
            let m = wire::TransferBatch {
                partition: *partition,
                ring_epoch: *ring_epoch,
                sequence: *sequence,
                last: *last,
                entries: List::Owned(entries),
            };
            wire::encode(request_id, &Message::TransferBatch(m), out)
        }
        TransferMessage::Ack {
            partition,
            sequence,
        } => {
            let m = wire::TransferAck {
                partition: *partition,
                sequence: *sequence,
            };
            wire::encode(request_id, &Message::TransferAck(m), out)
        }
        TransferMessage::Confirm {
            partition,
            ring_epoch,
            key_count,
            merkle_root,
        } => {
            let m = wire::TransferConfirm {
                partition: *partition,
                ring_epoch: *ring_epoch,
                key_count: *key_count,
                merkle_root: *merkle_root,
            };
            wire::encode(request_id, &Message::TransferConfirm(m), out)
        }
        TransferMessage::ConfirmReply {
            partition,
            key_count,
            merkle_root,
        } => {
            let m = wire::TransferConfirmReply {
                partition: *partition,
                key_count: *key_count,
                merkle_root: *merkle_root,
            };
            wire::encode(request_id, &Message::TransferConfirmReply(m), out)
        }
        TransferMessage::Refused { code, .. } => {
            let m = ErrorReply {
                code: *code,
                answered: 0,
                needed: 0,
                ring_epoch: 0,
                message: "this shard does not expect the transfer",
            };
            wire::encode(request_id, &Message::Error(m), out)
        }
    }
}

#[cfg(test)]
mod transfer_tests {
    use super::*;
    use crate::wire::Decoded;

    fn round_trip(message: &TransferMessage, check: impl FnOnce(u32, &Message<'_>)) {
        let mut bytes = Vec::new();
        encode_transfer(0x8000_0005, message, &mut bytes).expect("encodes");
        match wire::decode(&bytes).expect("decodes") {
            Decoded::Frame { frame, consumed } => {
                assert_eq!(consumed, bytes.len());
                check(frame.request_id, &frame.message);
            }
            Decoded::Incomplete { .. } => panic!("incomplete"),
        }
    }

    #[test]
    fn transfer_messages_round_trip() {
        let entry = |key: &[u8], state: &[u8]| TransferEntry {
            key: key.to_vec(),
            state: state.to_vec(),
        };
        let messages = [
            TransferMessage::Batch {
                partition: 17,
                ring_epoch: 9,
                sequence: 3,
                last: true,
                entries: vec![entry(b"a", b"state a"), entry(b"bb", b"")],
            },
            TransferMessage::Batch {
                partition: 0,
                ring_epoch: u64::MAX,
                sequence: 0,
                last: false,
                entries: Vec::new(),
            },
            TransferMessage::Ack {
                partition: 17,
                sequence: 3,
            },
            TransferMessage::Confirm {
                partition: 1023,
                ring_epoch: 9,
                key_count: 100_000,
                merkle_root: 0xdead_beef_0bad_f00d,
            },
            TransferMessage::ConfirmReply {
                partition: 1023,
                key_count: 99_999,
                merkle_root: 7,
            },
        ];
        for message in messages {
            round_trip(&message, |id, decoded| {
                assert_eq!(id, 0x8000_0005, "the request id travels unchanged");
                assert_eq!(transfer_message(decoded).as_ref(), Some(&message));
                assert_eq!(transfer_refusal(decoded, 1), None, "not an ERROR");
                assert_eq!(gossip_message(decoded), None);
                assert_eq!(peer_request(decoded), Ok(None), "not a coordinator request");
                assert_eq!(peer_reply(decoded), Ok(None), "not a coordinator reply");
            });
        }
    }

    #[test]
    fn a_refusal_is_an_error_reply_carrying_its_code() {
        let refusal = TransferMessage::Refused {
            partition: 12,
            code: ErrorCode::NotOwner,
        };
        round_trip(&refusal, |_, decoded| {
            assert_eq!(transfer_message(decoded), None);
            // The partition is the request's, which the runtime supplies.
            assert_eq!(transfer_refusal(decoded, 12), Some(refusal.clone()));
        });
    }

    #[test]
    fn a_batch_over_the_wire_limit_does_not_encode() {
        let entries = (0..=crate::constants::BATCH_ENTRIES_MAX)
            .map(|i| TransferEntry {
                key: (i as u32).to_le_bytes().to_vec(),
                state: Vec::new(),
            })
            .collect();
        let batch = TransferMessage::Batch {
            partition: 1,
            ring_epoch: 1,
            sequence: 0,
            last: true,
            entries,
        };
        let mut out = Vec::new();
        assert!(encode_transfer(1, &batch, &mut out).is_err());
    }
}
