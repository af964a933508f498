//! On-disk layouts of the store: the segment header, the record, and their checked decoding.
//!
//! Everything here is pure byte work (no I/O), so the scanner that recovery, compaction and
//! reads share can be tested and fuzzed on plain slices. The byte tables live in the module
//! docs of [`crate::store`].

use crate::constants::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Bytes of the segment header that opens every segment file; records start right after it.
pub const SEGMENT_HEADER_BYTES: usize = 32;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RTRSEG01";

/// Format version written into segment headers and the meta file (the checkpoint has its
/// own, in `recovery.rs`).
pub const FORMAT_VERSION: u32 = 1;

/// Bytes of a record header, before the key and value.
pub const RECORD_HEADER_BYTES: usize = 40;

/// Records start on multiples of this, so a scanner that lost its footing after damage
/// resynchronises by probing aligned offsets only.
pub const RECORD_ALIGN: usize = 8;

/// A fixed byte in every record header. With the zeroed reserved bytes it makes a random
/// offset very unlikely to parse as a record header before the CRC is even computed.
pub const RECORD_MARKER: u8 = 0xA7;

/// Largest record: header, largest key and largest value.
pub const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + KEY_BYTES_MAX + VALUE_BYTES_MAX;

/// What a record means. Values and tombstones are the data; the others are bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A live value (an opaque encoded causal state).
    Value = 1,
    /// A deletion marker that still carries its causal state; kept until purged.
    Tombstone = 2,
    /// A hinted write held for another node (`target`).
    Hint = 3,
    /// The hint whose id is the 8-byte little-endian value was delivered and deleted.
    HintDelete = 4,
    /// The key's records with a smaller LSN are gone for good (tombstone purge).
    Purge = 5,
    /// Every record of the partition with a smaller LSN is gone (partition handed off).
    PartitionDrop = 6,
}

impl RecordKind {
    /// Decodes the kind byte; unknown kinds are damage.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Value,
            2 => Self::Tombstone,
            3 => Self::Hint,
            4 => Self::HintDelete,
            5 => Self::Purge,
            6 => Self::PartitionDrop,
            _ => return None,
        })
    }

    /// Markers cancel older records; they are never served, only kept while they matter.
    pub fn is_marker(self) -> bool {
        matches!(self, Self::HintDelete | Self::Purge | Self::PartitionDrop)
    }
}

/// The fields of a record besides its key and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// What the record means.
    pub kind: RecordKind,
    /// Log sequence number: order of writes, kept when compaction copies a record.
    pub lsn: u64,
    /// Partition the key belongs to (0 for hint deletions).
    pub partition: u32,
    /// Target node of a hint; 0 for every other kind.
    pub target: u64,
}

/// A record decoded (and CRC-checked) from a segment.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Header fields.
    pub meta: RecordMeta,
    /// The key bytes.
    pub key: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
    /// Bytes the record occupies in the segment, padding included.
    pub padded_len: usize,
}

/// What lies at an offset of a segment.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole record whose CRC matches.
    Record(Record<'a>),
    /// Zeroed preallocated space: the end of the written part.
    End,
    /// Bytes that are neither: a torn write or damage.
    Bad,
}

/// Length of a record once padded to [`RECORD_ALIGN`].
pub fn padded(len: usize) -> usize {
    len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Builds the 40-byte header of a record and its CRC; the caller writes header, key and
/// value back to back. The CRC covers bytes 8.. of the record, then the length field.
pub fn encode_header(meta: &RecordMeta, key: &[u8], value: &[u8]) -> [u8; RECORD_HEADER_BYTES] {
    let len = RECORD_HEADER_BYTES + key.len() + value.len();
    debug_assert!(len <= RECORD_BYTES_MAX);
    let mut h = [0u8; RECORD_HEADER_BYTES];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&meta.lsn.to_le_bytes());
    h[16..20].copy_from_slice(&meta.partition.to_le_bytes());
    h[20..24].copy_from_slice(&(key.len() as u32).to_le_bytes());
    h[24..32].copy_from_slice(&meta.target.to_le_bytes());
    h[32] = meta.kind as u8;
    h[33] = RECORD_MARKER;
    let crc = record_crc(&h, key, value);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// CRC32C of a record: header bytes 8..40, key, value, then the length field.
fn record_crc(header: &[u8; RECORD_HEADER_BYTES], key: &[u8], value: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[8..]);
    let crc = crc32c::crc32c_append(crc, key);
    let crc = crc32c::crc32c_append(crc, value);
    crc32c::crc32c_append(crc, &header[0..4])
}

/// Decodes the record at `off` of `buf`, checking every field and the CRC. Never panics.
pub fn decode_at(buf: &[u8], off: usize) -> Decoded<'_> {
    decode_checked(buf, off, true)
}

/// Like [`decode_at`], checking every field (so the slices stay within the record) but not
/// the CRC: for a record this process already checked (see the store's "Reads" docs).
pub fn decode_verified_at(buf: &[u8], off: usize) -> Decoded<'_> {
    decode_checked(buf, off, false)
}

fn decode_checked(buf: &[u8], off: usize, check_crc: bool) -> Decoded<'_> {
    let Some(rest) = buf.get(off..) else {
        return Decoded::Bad;
    };
    let Some(head) = rest.get(..RECORD_HEADER_BYTES) else {
        return if rest.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Bad
        };
    };
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header.copy_from_slice(head);
    if header == [0u8; RECORD_HEADER_BYTES] {
        return Decoded::End;
    }
    let len = u32_at(&header, 0) as usize;
    let key_len = u32_at(&header, 20) as usize;
    if header[33] != RECORD_MARKER
        || header[34..40] != [0u8; 6]
        || !(RECORD_HEADER_BYTES..=RECORD_BYTES_MAX).contains(&len)
        || key_len > KEY_BYTES_MAX
        || key_len > len - RECORD_HEADER_BYTES
        || len - RECORD_HEADER_BYTES - key_len > VALUE_BYTES_MAX
    {
        return Decoded::Bad;
    }
    let Some(kind) = RecordKind::from_byte(header[32]) else {
        return Decoded::Bad;
    };
    let Some(body) = rest.get(RECORD_HEADER_BYTES..len) else {
        return Decoded::Bad;
    };
    let (key, value) = body.split_at(key_len);
    // The same CRC as `record_crc`, over the record's contiguous bytes 8..len in one pass.
    let Some(covered) = rest.get(8..len) else {
        return Decoded::Bad;
    };
    if check_crc
        && crc32c::crc32c_append(crc32c::crc32c(covered), &header[0..4]) != u32_at(&header, 4)
    {
        return Decoded::Bad;
    }
    let meta = RecordMeta {
        kind,
        lsn: u64_at(&header, 8),
        partition: u32_at(&header, 16),
        target: u64_at(&header, 24),
    };
    Decoded::Record(Record {
        meta,
        key,
        value,
        padded_len: padded(len),
    })
}

/// Builds a segment header for segment `id`.
pub fn encode_segment_header(id: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..20].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header: magic, version, CRC and the id the file name promised.
pub fn check_segment_header(buf: &[u8], id: u32) -> bool {
    let Some(h) = buf.get(..SEGMENT_HEADER_BYTES) else {
        return false;
    };
    let mut want = [0u8; SEGMENT_HEADER_BYTES];
    want.copy_from_slice(h);
    want == encode_segment_header(id)
}

/// Reads a little-endian u32 at `at` of a fixed header (in bounds by construction).
pub fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// Reads a little-endian u64 at `at` of a fixed header (in bounds by construction).
pub fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: RecordKind, key: &[u8], value: &[u8]) -> Vec<u8> {
        let meta = RecordMeta {
            kind,
            lsn: 7,
            partition: 3,
            target: 9,
        };
        let mut buf = encode_header(&meta, key, value).to_vec();
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        buf.resize(padded(buf.len()), 0);
        buf
    }

    #[test]
    fn a_record_round_trips() {
        let buf = record(RecordKind::Hint, b"key", b"value!");
        let Decoded::Record(r) = decode_at(&buf, 0) else {
            panic!("not decoded")
        };
        assert_eq!(r.meta.kind, RecordKind::Hint);
        assert_eq!((r.meta.lsn, r.meta.partition, r.meta.target), (7, 3, 9));
        assert_eq!((r.key, r.value), (&b"key"[..], &b"value!"[..]));
        assert_eq!(r.padded_len, buf.len());
        assert!(matches!(decode_at(&buf, buf.len()), Decoded::End));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let buf = record(RecordKind::Value, b"k", b"some value bytes");
        let len = RECORD_HEADER_BYTES + 1 + 16;
        for bit in 0..len * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_at(&bad, 0), Decoded::Bad),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn truncated_and_zero_inputs_are_classified() {
        let buf = record(RecordKind::Value, b"k", b"v");
        assert!(matches!(decode_at(&buf[..20], 0), Decoded::Bad));
        assert!(matches!(decode_at(&buf[..41], 0), Decoded::Bad));
        assert!(matches!(decode_at(&[0u8; 10], 0), Decoded::End));
        assert!(matches!(decode_at(&[0u8; 100], 0), Decoded::End));
        assert!(matches!(decode_at(&buf, 1000), Decoded::Bad));
    }

    #[test]
    fn segment_headers_check_their_id() {
        let h = encode_segment_header(42);
        assert!(check_segment_header(&h, 42));
        assert!(!check_segment_header(&h, 43));
        assert!(!check_segment_header(&h[..10], 42));
    }
}
