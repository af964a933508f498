//! The spec's test vectors: one sample of every message, and the main malformed cases, each
//! with a plain statement of what it holds and what decoding it must give.

use super::super::*;
use super::{file_name, sample_get, sample_put};
use crate::constants::{FRAME_BODY_BYTES_MAX, KEY_BYTES_MAX, SIBLINGS_MAX, VALUE_BYTES_MAX};

/// One vector file.
pub(super) struct Vector {
    pub(super) name: String,
    meaning: Vec<String>,
    bytes: Vec<u8>,
    expect: String,
}

impl Vector {
    /// The file's text: meaning, expectation, then the bytes with each field on its own
    /// line and its decoded value in a trailing comment (the body of a malformed vector is
    /// shown in plain rows, since it does not decode).
    pub(super) fn render(&self) -> String {
        let mut text = String::new();
        for line in &self.meaning {
            text.push_str(&format!("# {line}\n"));
        }
        text.push_str(&format!("# expect: {}\n", self.expect));
        let (header, body) = self.bytes.split_at(self.bytes.len().min(HEADER_BYTES));
        if header.len() < HEADER_BYTES {
            text.push_str(&format!(
                "# {} bytes only (a header is 16):\n",
                header.len()
            ));
            text.push_str(&rows(header, ""));
            return text;
        }
        text.push_str("# header\n");
        let opcode = Opcode::from_wire(header[5]).map_or("unknown", |op| op.name());
        let at = |i: usize, n: usize| {
            let mut le = [0u8; 8];
            le[..n].copy_from_slice(&header[i..i + n]);
            u64::from_le_bytes(le)
        };
        let fields = [
            (
                0,
                4,
                format!("magic {:?}", String::from_utf8_lossy(&header[..4])),
            ),
            (4, 1, format!("version {}", header[4])),
            (5, 1, format!("opcode 0x{:02x} {opcode}", header[5])),
            (6, 2, format!("flags 0x{:04x}", at(6, 2))),
            (8, 4, format!("request_id {}", at(8, 4))),
            (12, 4, format!("body_len {}", at(12, 4))),
        ];
        for (i, n, comment) in fields {
            text.push_str(&rows(&header[i..i + n], &comment));
        }
        if body.is_empty() {
            text.push_str("# body: empty\n");
        } else if self.expect == "ok" {
            text.push_str("# body\n");
            let mut from = 0;
            for (to, label, kind) in field_marks(header[5], body) {
                if to > from {
                    let field = &body[from..to];
                    text.push_str(&rows(field, &describe(label, kind, field)));
                    from = to;
                }
            }
        } else {
            text.push_str(&format!("# body: {} bytes\n", body.len()));
            text.push_str(&rows(body, ""));
        }
        text
    }
}

/// Where each field of a valid body ends, with its name and Rust type, as the decoder saw it.
fn field_marks(opcode: u8, body: &[u8]) -> Vec<(usize, &'static str, &'static str)> {
    let opcode = Opcode::from_wire(opcode).expect("ok vectors have known opcodes");
    let mut reader = crate::wire::field::Reader::new(body);
    Message::read_body(opcode, &mut reader).expect("ok vectors decode");
    reader.marks
}

/// A field's decoded value, from its bytes and type.
fn describe(label: &str, kind: &str, bytes: &[u8]) -> String {
    let name = label.rsplit('.').next().unwrap_or(label);
    if kind.contains("[u8]") || kind.contains("str") {
        let data = bytes.get(4..).unwrap_or_default();
        return match std::str::from_utf8(data) {
            Ok(t) if t.chars().all(|c| c.is_ascii_graphic() || c == ' ') && !t.is_empty() => {
                format!("{name}: length {}, {t:?}", data.len())
            }
            _ => format!("{name}: length {}", data.len()),
        };
    }
    if let Some(item) = kind
        .strip_prefix("List<'a, ")
        .and_then(|k| k.strip_suffix('>'))
    {
        // A list of integers: the items follow the count mark with no marks of their own.
        let width = match item {
            "u16" => 2,
            "u32" => 4,
            _ => 8,
        };
        let items: Vec<String> = bytes.chunks(width).map(|c| le_int(c).to_string()).collect();
        return format!("{name} = [{}]", items.join(", "));
    }
    if bytes.len() > 8 {
        return format!("{name} ({} bytes)", bytes.len());
    }
    let value = le_int(bytes);
    let named = match kind {
        "Role" => u8::try_from(value)
            .ok()
            .and_then(Role::from_wire)
            .map(|v| format!("{v:?}")),
        "NodeStatus" => u8::try_from(value)
            .ok()
            .and_then(NodeStatus::from_wire)
            .map(|v| format!("{v:?}")),
        "ErrorCode" => u16::try_from(value)
            .ok()
            .and_then(ErrorCode::from_wire)
            .map(|v| format!("{v:?}")),
        "bool" => Some((value == 1).to_string()),
        _ => None,
    };
    match named {
        Some(named) => format!("{name} = {value} ({named})"),
        None if bytes.len() == 8 && value > 0xffff => format!("{name} = {value:#x}"),
        None => format!("{name} = {value}"),
    }
}

/// A little-endian integer of up to 8 bytes.
fn le_int(bytes: &[u8]) -> u64 {
    let mut le = [0u8; 8];
    le[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(le)
}

/// Hex rows of at most 16 bytes, the first carrying `comment`.
fn rows(bytes: &[u8], comment: &str) -> String {
    let mut text = String::new();
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let hex = hex.join(" ");
        if i == 0 && !comment.is_empty() {
            text.push_str(&format!("{hex:<47}  # {comment}\n"));
        } else {
            text.push_str(&format!("{hex}\n"));
        }
    }
    text
}

fn encoded(frame: &Frame<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).expect("sample encodes");
    bytes
}

fn ok(suffix: &str, meaning: &[&str], request_id: u32, message: Message<'_>) -> Vector {
    let frame = Frame {
        request_id,
        message,
    };
    let mut name = format!("ok-{}", file_name(frame.message.opcode()));
    if !suffix.is_empty() {
        name = format!("{name}-{suffix}");
    }
    Vector {
        name,
        meaning: meaning.iter().map(|s| s.to_string()).collect(),
        bytes: encoded(&frame),
        expect: "ok".into(),
    }
}

fn bad(case: &str, meaning: &[&str], bytes: Vec<u8>, expect: &str) -> Vector {
    Vector {
        name: format!("bad-{case}"),
        meaning: meaning.iter().map(|s| s.to_string()).collect(),
        bytes,
        expect: expect.into(),
    }
}

/// Replaces the header's body length with the actual body length.
fn fix_len(mut bytes: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(bytes.len() - HEADER_BYTES).unwrap();
    bytes[12..16].copy_from_slice(&len.to_le_bytes());
    bytes
}

fn node<'a>(
    id: u64,
    version: u64,
    status: NodeStatus,
    zone: &'a str,
    address: &'a str,
    ports: &'a [u16],
) -> NodeInfo<'a> {
    NodeInfo {
        id,
        version,
        status,
        weight: 100,
        zone,
        address,
        ports: List::Borrowed(ports),
    }
}

const DEFAULTS: Options = Options {
    n: 0,
    quorum: 0,
    timeout_ms: 0,
};

/// Every vector of the spec.
pub(super) fn vectors() -> Vec<Vector> {
    let siblings: [&[u8]; 2] = [b"alice", b"bob"];
    let nodes = [
        node(1, 5, NodeStatus::Up, "a", "127.0.0.1:7379", &[7380, 7381]),
        node(2, 2, NodeStatus::Joining, "b", "127.0.0.2:7379", &[7380]),
    ];
    let owners = [
        Owner { node: 0, shard: 0 },
        Owner { node: 1, shard: 0 },
        Owner { node: 0, shard: 1 },
        Owner { node: 1, shard: 0 },
    ];
    let stats = [
        Stat {
            shard: 0,
            name: "get.count",
            value: 42,
        },
        Stat {
            shard: 1,
            name: "put.count",
            value: 7,
        },
    ];
    let entries = [
        Entry {
            key: b"k1",
            state: b"S1",
        },
        Entry {
            key: b"k2",
            state: b"S2",
        },
    ];
    let hello = Hello {
        version_min: 1,
        version_max: 1,
        role: Role::Client,
        features: 0,
        cluster_id: 7,
        node_id: 0,
    };
    let get_reply = GetReply {
        siblings: List::Borrowed(&siblings),
        context: b"ctx1",
    };
    let topology = TopologyReply {
        epoch: 3,
        nodes: List::Borrowed(&nodes),
        owners: List::Borrowed(&owners),
    };
    let error = ErrorReply {
        code: ErrorCode::Unavailable,
        answered: 1,
        needed: 2,
        ring_epoch: 0,
        message: "1 of 2 replicas answered",
    };
    let replica_read_reply = ReplicaReadReply { state: Some(b"S1") };
    let put = sample_put();

    let mut v = vec![
        ok(
            "",
            &[
                "HELLO from a client: versions 1..=1, role client (0), no features,",
                "cluster id 7, node id 0 (clients have none).",
            ],
            0,
            hello.clone().into(),
        ),
        ok(
            "",
            &[
                "HELLO_REPLY: version 1, role peer (1), no features, cluster id 7,",
                "node id 0x1111, this connection is served by shard 1 of 2.",
            ],
            0,
            HelloReply {
                version: 1,
                role: Role::Peer,
                features: 0,
                cluster_id: 7,
                node_id: 0x1111,
                shard: 1,
                shard_count: 2,
            }
            .into(),
        ),
        ok(
            "",
            &["GET key \"user:42\", n=0 r=0 timeout_ms=0 (all server defaults)."],
            1,
            sample_get().message,
        ),
        ok(
            "",
            &["GET_REPLY: two siblings \"alice\" and \"bob\", context \"ctx1\" (opaque)."],
            1,
            get_reply.into(),
        ),
        ok(
            "empty",
            &["GET_REPLY for an absent key: no siblings, empty context."],
            1,
            GetReply {
                siblings: List::Borrowed(&[]),
                context: b"",
            }
            .into(),
        ),
        ok(
            "",
            &[
                "PUT key \"user:42\" value \"carol\" with context \"ctx1\";",
                "n=3 w=2 timeout_ms=500; return_context = true.",
            ],
            put.request_id,
            put.message,
        ),
        ok(
            "",
            &["PUT_REPLY carrying the new context \"ctx2\"."],
            2,
            PutReply { context: b"ctx2" }.into(),
        ),
        ok(
            "",
            &[
                "DELETE key \"user:42\" with context \"ctx2\", server defaults,",
                "return_context = false.",
            ],
            3,
            Delete {
                options: DEFAULTS,
                return_context: false,
                key: b"user:42",
                context: b"ctx2",
            }
            .into(),
        ),
        ok(
            "",
            &["DELETE_REPLY without a context."],
            3,
            DeleteReply { context: b"" }.into(),
        ),
        ok("", &["TOPOLOGY request (empty body)."], 4, Topology {}.into()),
        ok(
            "",
            &[
                "TOPOLOGY_REPLY: ring epoch 3, two nodes, Q = 4 partitions.",
                "node 0: id 1, version 5, status up (1), weight 100, zone \"a\",",
                "        address \"127.0.0.1:7379\", shard ports [7380, 7381]",
                "node 1: id 2, version 2, status joining (0), weight 100, zone \"b\",",
                "        address \"127.0.0.2:7379\", shard ports [7380]",
                "owners (node index, shard): p0 (0,0), p1 (1,0), p2 (0,1), p3 (1,0)",
            ],
            4,
            topology.clone().into(),
        ),
        ok("", &["STATS request (empty body)."], 5, Stats {}.into()),
        ok(
            "",
            &["STATS_REPLY: shard 0 \"get.count\" = 42, shard 1 \"put.count\" = 7."],
            5,
            StatsReply {
                stats: List::Borrowed(&stats),
            }
            .into(),
        ),
        ok(
            "",
            &[
                "ERROR UNAVAILABLE (33) for request 6: 1 replica answered of 2 needed,",
                "ring epoch 0, message \"1 of 2 replicas answered\".",
            ],
            6,
            error.clone().into(),
        ),
        ok(
            "",
            &["REPLICA_WRITE partition 513, key \"user:42\", causal state \"S1\" (opaque)."],
            10,
            ReplicaWrite {
                partition: 513,
                key: b"user:42",
                state: b"S1",
            }
            .into(),
        ),
        ok(
            "",
            &["REPLICA_WRITE_REPLY (empty body)."],
            10,
            ReplicaWriteReply {}.into(),
        ),
        ok(
            "",
            &["REPLICA_READ partition 513, key \"user:42\"."],
            11,
            ReplicaRead {
                partition: 513,
                key: b"user:42",
            }
            .into(),
        ),
        ok(
            "",
            &["REPLICA_READ_REPLY: present (1), causal state \"S1\"."],
            11,
            replica_read_reply.clone().into(),
        ),
        ok(
            "absent",
            &["REPLICA_READ_REPLY: absent (0), nothing follows."],
            11,
            ReplicaReadReply { state: None }.into(),
        ),
        ok(
            "",
            &["HINTED_WRITE for intended node 3: partition 513, key \"user:42\", state \"S1\"."],
            12,
            HintedWrite {
                intended: 3,
                partition: 513,
                key: b"user:42",
                state: b"S1",
            }
            .into(),
        ),
        ok(
            "",
            &["HINTED_WRITE_REPLY (empty body)."],
            12,
            HintedWriteReply {}.into(),
        ),
        ok(
            "",
            &["HINT_DELIVER hint 9: partition 513, key \"user:42\", state \"S1\"."],
            13,
            HintDeliver {
                hint_id: 9,
                partition: 513,
                key: b"user:42",
                state: b"S1",
            }
            .into(),
        ),
        ok("", &["HINT_ACK hint 9."], 13, HintAck { hint_id: 9 }.into()),
        ok(
            "",
            &["GOSSIP_DIGEST from node 1, ring epoch 3: node 1 at version 5, node 2 at 2."],
            14,
            GossipDigest {
                sender: 1,
                ring_epoch: 3,
                versions: List::Borrowed(&[
                    NodeVersion {
                        node: 1,
                        version: 5,
                    },
                    NodeVersion {
                        node: 2,
                        version: 2,
                    },
                ]),
            }
            .into(),
        ),
        ok(
            "",
            &[
                "GOSSIP_STATE from node 2, ring epoch 3, one node state:",
                "id 2, version 2, joining, weight 100, zone \"b\", \"127.0.0.2:7379\", ports [7380].",
            ],
            14,
            GossipState {
                sender: 2,
                ring_epoch: 3,
                nodes: List::Borrowed(&nodes[1..]),
            }
            .into(),
        ),
        ok(
            "",
            &["PING nonce 0xdeadbeef from node 1."],
            15,
            Ping {
                nonce: 0xdead_beef,
                sender: 1,
            }
            .into(),
        ),
        ok(
            "",
            &["PONG nonce 0xdeadbeef from node 2."],
            15,
            Pong {
                nonce: 0xdead_beef,
                sender: 2,
            }
            .into(),
        ),
        ok(
            "",
            &["MERKLE_RANGE partition 513, level 2, buckets 16..20 (start 16, count 4)."],
            16,
            MerkleRange {
                partition: 513,
                level: 2,
                start: 16,
                count: 4,
            }
            .into(),
        ),
        ok(
            "",
            &["MERKLE_RANGE_REPLY partition 513, level 2, start 16, hashes 1, 2, 3, 0xffffffffffffffff."],
            16,
            MerkleRangeReply {
                partition: 513,
                level: 2,
                start: 16,
                hashes: List::Borrowed(&[1, 2, 3, u64::MAX]),
            }
            .into(),
        ),
        ok(
            "",
            &["MERKLE_KEYS partition 513, leaf buckets 17 and 19."],
            17,
            MerkleKeys {
                partition: 513,
                buckets: List::Borrowed(&[17, 19]),
            }
            .into(),
        ),
        ok(
            "",
            &[
                "MERKLE_KEYS_REPLY partition 513: buckets [17] complete, entries",
                "(\"k1\", state \"S1\"), (\"k2\", state \"S2\"); bucket 19 to be asked again.",
            ],
            17,
            MerkleKeysReply {
                partition: 513,
                buckets: List::Borrowed(&[17]),
                entries: List::Borrowed(&entries),
            }
            .into(),
        ),
        ok(
            "",
            &[
                "TRANSFER_BATCH partition 513, ring epoch 4, sequence 0, last = true,",
                "entries (\"k1\", \"S1\"), (\"k2\", \"S2\").",
            ],
            18,
            TransferBatch {
                partition: 513,
                ring_epoch: 4,
                sequence: 0,
                last: true,
                entries: List::Borrowed(&entries),
            }
            .into(),
        ),
        ok(
            "",
            &["TRANSFER_ACK partition 513, sequence 0."],
            18,
            TransferAck {
                partition: 513,
                sequence: 0,
            }
            .into(),
        ),
        ok(
            "",
            &["TRANSFER_CONFIRM partition 513, ring epoch 4, 2 keys, Merkle root 0x0123456789abcdef."],
            19,
            TransferConfirm {
                partition: 513,
                ring_epoch: 4,
                key_count: 2,
                merkle_root: 0x0123_4567_89ab_cdef,
            }
            .into(),
        ),
        ok(
            "",
            &["TRANSFER_CONFIRM_REPLY partition 513, 2 keys, Merkle root 0x0123456789abcdef."],
            19,
            TransferConfirmReply {
                partition: 513,
                key_count: 2,
                merkle_root: 0x0123_4567_89ab_cdef,
            }
            .into(),
        ),
    ];
    v.extend(membership_vectors());

    let get = encoded(&sample_get());
    let put = encoded(&sample_put());
    let with = |frame: Message<'_>| {
        encoded(&Frame {
            request_id: 20,
            message: frame,
        })
    };

    let mut http = b"GET / HTTP/1.1\r\n".to_vec();
    http.extend_from_slice(b"Host: x\r\n\r\n");
    v.push(bad(
        "magic",
        &["An HTTP request on the Rotor port: the magic is wrong; close the connection."],
        http,
        "error BadMagic",
    ));
    let mut b = get.clone();
    b[4] = 2;
    v.push(bad(
        "version",
        &["The GET of ok-get.hex with version 2: not spoken by this codec; close."],
        b,
        "error UnsupportedVersion",
    ));
    let mut b = get.clone();
    b[5] = 0x7f;
    v.push(bad(
        "unknown-opcode",
        &["The GET of ok-get.hex with opcode 0x7f, which names no message."],
        b,
        "error UnknownOpcode",
    ));
    let mut b = get.clone();
    b[6] = 1;
    v.push(bad(
        "reserved-flags",
        &["The GET of ok-get.hex with flag bit 0 set; version 1 reserves every flag bit."],
        b,
        "error ReservedBits",
    ));
    let mut b = get[..HEADER_BYTES].to_vec();
    let len = u32::try_from(FRAME_BODY_BYTES_MAX + 1).unwrap();
    b[12..16].copy_from_slice(&len.to_le_bytes());
    v.push(bad(
        "frame-too-large",
        &[
            "A GET header announcing a body of 16 MiB + 1 bytes (over FRAME_BODY_BYTES_MAX):",
            "refused from the header alone, before any body is buffered; close.",
        ],
        b,
        "error FrameTooLarge",
    ));
    v.push(bad(
        "truncated-header",
        &["The first 10 bytes of ok-get.hex: wait for at least 6 more."],
        get[..10].to_vec(),
        "incomplete",
    ));
    v.push(bad(
        "truncated-body",
        &["ok-get.hex without its last 3 bytes: wait for exactly 3 more."],
        get[..get.len() - 3].to_vec(),
        "incomplete",
    ));
    v.push(bad(
        "truncated-field",
        &[
            "A GET whose body ends inside the key: the key length says 7 bytes but the",
            "header's body length leaves only 4.",
        ],
        fix_len(get[..get.len() - 3].to_vec()),
        "error Truncated",
    ));
    let mut b = get.clone();
    b.push(0);
    v.push(bad(
        "trailing-bytes",
        &["ok-get.hex with one extra zero byte inside the body (body length 18)."],
        fix_len(b),
        "error TrailingBytes",
    ));
    let mut b = get[..HEADER_BYTES + 6].to_vec();
    b.extend_from_slice(&u32::try_from(KEY_BYTES_MAX + 1).unwrap().to_le_bytes());
    v.push(bad(
        "key-too-large",
        &[
            "A GET whose key length is 65537 (over KEY_BYTES_MAX = 65536): refused from the",
            "length itself, whatever follows.",
        ],
        fix_len(b),
        "error TooLarge",
    ));
    // The PUT body: options (6), flag (1), key (4 + 7), context (4 + 4), value length.
    let value_at = HEADER_BYTES + 6 + 1 + 11 + 8;
    let mut b = put[..value_at].to_vec();
    b.extend_from_slice(&u32::try_from(VALUE_BYTES_MAX + 1).unwrap().to_le_bytes());
    v.push(bad(
        "value-too-large",
        &["The PUT of ok-put.hex with value length 1 MiB + 1 (over VALUE_BYTES_MAX)."],
        fix_len(b),
        "error TooLarge",
    ));
    let mut b = with(
        GetReply {
            siblings: List::Borrowed(&[]),
            context: b"",
        }
        .into(),
    );
    let count = u32::try_from(SIBLINGS_MAX + 1).unwrap();
    b[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&count.to_le_bytes());
    v.push(bad(
        "too-many-siblings",
        &["A GET_REPLY announcing 101 siblings (over SIBLINGS_MAX = 100)."],
        b,
        "error TooMany",
    ));
    let mut b = with(
        GetReply {
            siblings: List::Borrowed(&[]),
            context: b"",
        }
        .into(),
    );
    b[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&100u32.to_le_bytes());
    v.push(bad(
        "list-short",
        &[
            "A GET_REPLY announcing 100 siblings (allowed) in a 8-byte body that cannot hold",
            "them: refused before any list is allocated.",
        ],
        b,
        "error Truncated",
    ));
    let mut b = put.clone();
    b[HEADER_BYTES + 6] = 2;
    v.push(bad(
        "bool",
        &["The PUT of ok-put.hex with return_context = 2 (booleans are 0 or 1)."],
        b,
        "error InvalidValue",
    ));
    let mut b = with(hello.into());
    b[HEADER_BYTES + 2] = 7;
    v.push(bad(
        "role",
        &["The HELLO of ok-hello.hex with role 7 (0 client, 1 peer)."],
        b,
        "error InvalidValue",
    ));
    let mut b = with(error.clone().into());
    b[HEADER_BYTES..HEADER_BYTES + 2].copy_from_slice(&999u16.to_le_bytes());
    v.push(bad(
        "error-code",
        &["The ERROR of ok-error.hex with code 999, which version 1 does not define."],
        b,
        "error InvalidValue",
    ));
    let mut b = with(error.into());
    let last = b.len() - 1;
    b[last] = 0xff;
    v.push(bad(
        "utf8",
        &["The ERROR of ok-error.hex with the message's last byte 0xff: not UTF-8."],
        b,
        "error InvalidUtf8",
    ));
    let mut b = with(replica_read_reply.into());
    b[HEADER_BYTES] = 2;
    v.push(bad(
        "presence",
        &["The REPLICA_READ_REPLY of ok-replica-read-reply.hex with presence byte 2."],
        b,
        "error InvalidValue",
    ));
    let mut b = with(topology.into());
    let last_owner = b.len() - 4;
    b[last_owner..last_owner + 2].copy_from_slice(&5u16.to_le_bytes());
    v.push(bad(
        "topology-owner",
        &[
            "The TOPOLOGY_REPLY of ok-topology-reply.hex whose last owner names node index 5",
            "of a 2-node list.",
        ],
        b,
        "error Inconsistent",
    ));
    let three = TopologyReply {
        epoch: 3,
        nodes: List::Borrowed(&nodes),
        owners: List::Borrowed(&owners[..3]),
    };
    let mut buf = Vec::new();
    // Encoding refuses it, so the bytes are built field by field.
    assert_eq!(
        encode(20, &three.clone().into(), &mut buf),
        Err(Error::Inconsistent)
    );
    let mut b = with(topology_with_four(&three));
    let owners_at = b.len() - 4 * 4 - 4;
    b[owners_at..owners_at + 4].copy_from_slice(&3u32.to_le_bytes());
    b.truncate(b.len() - 4);
    v.push(bad(
        "topology-q",
        &["A TOPOLOGY_REPLY with 3 owners: Q must be a power of two."],
        fix_len(b),
        "error Inconsistent",
    ));
    v
}

/// `three` with a fourth owner, so it encodes; the caller then cuts the fourth away.
fn topology_with_four<'a>(three: &TopologyReply<'a>) -> Message<'a> {
    let mut owners = three.owners.to_vec();
    owners.push(Owner { node: 0, shard: 0 });
    TopologyReply {
        epoch: three.epoch,
        nodes: three.nodes.clone(),
        owners: List::Owned(owners),
    }
    .into()
}

/// The membership messages: the admin requests and replies, RING_STATE and its reply.
fn membership_vectors() -> Vec<Vector> {
    let staged = [
        StagedChange {
            kind: ChangeKind::Join,
            node: 4,
            weight: 1,
        },
        StagedChange {
            kind: ChangeKind::Reweight,
            node: 2,
            weight: 3,
        },
    ];
    let moves = [PlanMove {
        partition: 7,
        from_node: 1,
        from_shard: 0,
        to_node: 4,
        to_shard: 1,
        drop_after: true,
        done: false,
    }];
    let done_moves = [PlanMove {
        done: true,
        ..moves[0].clone()
    }];
    let plan_nodes = [
        PlanNode {
            node: 1,
            owned_before: 8,
            owned_after: 6,
            sending: 3,
            receiving: 0,
        },
        PlanNode {
            node: 4,
            owned_before: 0,
            owned_after: 2,
            sending: 0,
            receiving: 3,
        },
    ];
    let status_nodes = [StatusNode {
        id: 1,
        status: NodeStatus::Up,
        weight: 1,
        reachable: true,
        owned: 8,
        owned_next: 6,
    }];
    let transfers = [Stat {
        shard: 0,
        name: "transfer_batches_sent",
        value: 12,
    }];
    vec![
        ok(
            "",
            &["ADMIN_STAGE: stage a reweight of node 2 to weight 3."],
            30,
            AdminStage {
                kind: ChangeKind::Reweight,
                node: 2,
                weight: 3,
            }
            .into(),
        ),
        ok(
            "",
            &["ADMIN_STAGE_REPLY: staged are the join of node 4 (weight 1) and the reweight."],
            30,
            AdminStageReply {
                staged: List::Borrowed(&staged),
            }
            .into(),
        ),
        ok("", &["ADMIN_PLAN (empty body)."], 31, AdminPlan {}.into()),
        ok(
            "",
            &[
                "ADMIN_PLAN_REPLY: from ring epoch 1 to 2, the two staged changes, one move",
                "(partition 7 from node 1 shard 0 to node 4 shard 1, dropped after), and the",
                "ownership of nodes 1 and 4 before and after.",
            ],
            31,
            AdminPlanReply {
                ring_epoch: 1,
                next_epoch: 2,
                staged: List::Borrowed(&staged),
                moves: List::Borrowed(&moves),
                nodes: List::Borrowed(&plan_nodes),
            }
            .into(),
        ),
        ok(
            "",
            &["ADMIN_COMMIT (empty body)."],
            32,
            AdminCommit {}.into(),
        ),
        ok(
            "",
            &["ADMIN_COMMIT_REPLY: ring epoch 1 serves, epoch 2 is committed, 1 move."],
            32,
            AdminCommitReply {
                ring_epoch: 1,
                next_epoch: 2,
                moves: 1,
            }
            .into(),
        ),
        ok("", &["ADMIN_CLEAR (empty body)."], 33, AdminClear {}.into()),
        ok(
            "",
            &["ADMIN_CLEAR_REPLY: 2 staged changes dropped."],
            33,
            AdminClearReply { cleared: 2 }.into(),
        ),
        ok(
            "",
            &["ADMIN_STATUS (empty body)."],
            34,
            AdminStatus {}.into(),
        ),
        ok(
            "",
            &[
                "ADMIN_STATUS_REPLY: committed ring epoch 1 serving, epoch 2 pending, node 1",
                "up and reachable owning 8 (6 next), its one move done, nothing staged, one",
                "transfer counter of shard 0.",
            ],
            34,
            AdminStatusReply {
                ring_epoch: 1,
                committed: true,
                next_epoch: 2,
                nodes: List::Borrowed(&status_nodes),
                moves: List::Borrowed(&done_moves),
                staged: List::Borrowed(&[]),
                transfers: List::Borrowed(&transfers),
            }
            .into(),
        ),
        ok(
            "",
            &["ADMIN_JOIN: join the cluster of the seed 127.0.0.1:7070."],
            35,
            AdminJoin {
                seed: "127.0.0.1:7070",
            }
            .into(),
        ),
        ok(
            "",
            &["ADMIN_JOIN_REPLY: ring epoch 1 adopted by node 4."],
            35,
            AdminJoinReply {
                ring_epoch: 1,
                node: 4,
            }
            .into(),
        ),
        ok(
            "",
            &["RING_STATE from node 3, whose own ring state has epoch 1."],
            0xC000_0001,
            RingState {
                sender: 3,
                ring_epoch: 1,
            }
            .into(),
        ),
        ok(
            "",
            &[
                "RING_STATE_REPLY with an 8-byte stand-in for the state (the codec carries",
                "it as opaque bytes; its format is src/membership/state.rs).",
            ],
            0xC000_0001,
            RingStateReply {
                state: b"RRNG\x01...",
            }
            .into(),
        ),
    ]
}
