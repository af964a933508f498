//! The persisted form of the membership: what a node writes to its data directory so it
//! rejoins with what it knew.
//!
//! Layout, all integers little-endian:
//!
//! | bytes | field                                                     |
//! |-------|-----------------------------------------------------------|
//! | 2     | magic `RM`                                                |
//! | 1     | format version, 1                                         |
//! | 4     | node count (at most `NODES_MAX`)                          |
//! | ...   | nodes: id u64, version u64, status u8, weight u32,         |
//! |       | zone (u16 length + UTF-8), address (u16 length + UTF-8),  |
//! |       | ports (u16 count + u16 each)                              |
//! | 4     | CRC32C of everything before                               |
//!
//! Decoding never panics; every malformed input is a [`PersistError`].

use super::NodeState;
use crate::constants::{NODES_MAX, SHARDS_PER_NODE_MAX, TEXT_BYTES_MAX};
use crate::ring::NodeId;
use crate::wire::NodeStatus;

const MAGIC: [u8; 2] = *b"RM";
const VERSION: u8 = 1;
const CRC_BYTES: usize = 4;

/// Why persisted membership bytes were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// Not a membership file.
    #[error("not a membership file")]
    Foreign,
    /// A format version this build does not know.
    #[error("unsupported membership format version {0}")]
    UnsupportedVersion(u8),
    /// The file ends early.
    #[error("truncated membership file")]
    Truncated,
    /// The checksum does not match.
    #[error("membership file checksum mismatch")]
    Checksum,
    /// A count or length is over its limit, a status unknown, or text not UTF-8.
    #[error("invalid membership file content")]
    Invalid,
    /// Bytes after the last node.
    #[error("trailing bytes in membership file")]
    TrailingBytes,
}

pub(super) fn encode<'a>(nodes: impl Iterator<Item = &'a NodeState>) -> Vec<u8> {
    let nodes: Vec<&NodeState> = nodes.collect();
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(nodes.len() as u32).to_le_bytes());
    for node in nodes {
        out.extend_from_slice(&node.id.0.to_le_bytes());
        out.extend_from_slice(&node.version.to_le_bytes());
        out.push(node.status.to_wire());
        out.extend_from_slice(&node.weight.to_le_bytes());
        for text in [&node.zone, &node.address] {
            // Texts are bounded by TEXT_BYTES_MAX where they enter (config, wire).
            let len = text.len().min(TEXT_BYTES_MAX);
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(text.as_bytes().get(..len).unwrap_or_default());
        }
        let ports = node.ports.get(..node.ports.len().min(SHARDS_PER_NODE_MAX));
        let ports = ports.unwrap_or_default();
        out.extend_from_slice(&(ports.len() as u16).to_le_bytes());
        for port in ports {
            out.extend_from_slice(&port.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(super) fn decode(bytes: &[u8]) -> Result<Vec<NodeState>, PersistError> {
    if bytes.get(..2) != Some(&MAGIC[..]) {
        return Err(PersistError::Foreign);
    }
    let version = *bytes.get(2).ok_or(PersistError::Truncated)?;
    if version != VERSION {
        return Err(PersistError::UnsupportedVersion(version));
    }
    let body_len = bytes
        .len()
        .checked_sub(CRC_BYTES)
        .ok_or(PersistError::Truncated)?;
    let (body, crc) = bytes.split_at(body_len);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| PersistError::Truncated)?);
    if crc32c::crc32c(body) != crc {
        return Err(PersistError::Checksum);
    }
    let mut reader = Reader { bytes: body, at: 3 };
    let count = reader.u32()? as usize;
    if count > NODES_MAX {
        return Err(PersistError::Invalid);
    }
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        let id = NodeId(reader.u64()?);
        let version = reader.u64()?;
        let status = NodeStatus::from_wire(reader.u8()?).ok_or(PersistError::Invalid)?;
        let weight = reader.u32()?;
        let zone = reader.text()?;
        let address = reader.text()?;
        let port_count = usize::from(reader.u16()?);
        if port_count > SHARDS_PER_NODE_MAX {
            return Err(PersistError::Invalid);
        }
        let mut ports = Vec::with_capacity(port_count);
        for _ in 0..port_count {
            ports.push(reader.u16()?);
        }
        nodes.push(NodeState {
            id,
            version,
            status,
            weight,
            zone,
            address,
            ports,
        });
    }
    if reader.at != body.len() {
        return Err(PersistError::TrailingBytes);
    }
    Ok(nodes)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], PersistError> {
        let end = self.at.checked_add(N).ok_or(PersistError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(PersistError::Truncated)?;
        self.at = end;
        slice.try_into().map_err(|_| PersistError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, PersistError> {
        Ok(u8::from_le_bytes(self.take()?))
    }

    fn u16(&mut self) -> Result<u16, PersistError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, PersistError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, PersistError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn text(&mut self) -> Result<String, PersistError> {
        let len = usize::from(self.u16()?);
        if len > TEXT_BYTES_MAX {
            return Err(PersistError::Invalid);
        }
        let end = self.at.checked_add(len).ok_or(PersistError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(PersistError::Truncated)?;
        self.at = end;
        String::from_utf8(slice.to_vec()).map_err(|_| PersistError::Invalid)
    }
}
