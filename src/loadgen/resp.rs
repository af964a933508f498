//! RESP, the Redis protocol, as far as the benchmark needs it: GET and SET requests encoded
//! into a caller's buffer, and a reply parser for untrusted bytes that tells a complete reply
//! from an incomplete one and never panics on malformed input.

use std::fmt;

/// Longest bulk string a reply may announce. Values the benchmark writes are far smaller;
/// a larger length means a confused or hostile peer, refused before buffering it.
pub const BULK_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Deepest nesting of arrays accepted in a reply (GET and SET replies are never arrays;
/// the bound keeps a hostile reply from recursing without limit).
pub const NESTING_MAX: usize = 8;

/// Most elements of one array in a reply.
pub const ARRAY_LEN_MAX: usize = 1 << 20;

/// Longest header line (type byte, number, CRLF) before it is called malformed.
const LINE_BYTES_MAX: usize = 64 * 1024;

/// What one complete reply said, as far as the benchmark cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// `+...` simple string (SET's `+OK`).
    Simple,
    /// `-...` error reply.
    Error,
    /// `:n` integer.
    Integer,
    /// `$n` bulk string of n bytes (GET's hit).
    Bulk,
    /// `$-1` or `*-1` or `_`: no value (GET's miss).
    Nil,
    /// `*n` array of n replies.
    Array,
}

/// A reply parsed from the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What it was.
    pub kind: ReplyKind,
    /// Bytes it took from the front of the buffer.
    pub len: usize,
}

/// Why bytes are not a RESP reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespError {
    /// The first byte names no RESP type.
    UnknownType(u8),
    /// A length or integer is not a decimal number, or is out of range.
    BadNumber,
    /// A line or bulk string does not end in CRLF.
    MissingCrlf,
    /// A bulk string or array announces more than the limits allow.
    TooLarge,
    /// Arrays nest deeper than [`NESTING_MAX`].
    TooDeep,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            Self::BadNumber => f.write_str("malformed RESP number"),
            Self::MissingCrlf => f.write_str("RESP line not ended by CRLF"),
            Self::TooLarge => f.write_str("RESP length over the limit"),
            Self::TooDeep => f.write_str("RESP arrays nested too deep"),
        }
    }
}

impl std::error::Error for RespError {}

/// Parses one reply from the front of `input`: `Ok(None)` if more bytes are needed.
pub fn parse_reply(input: &[u8]) -> Result<Option<Reply>, RespError> {
    parse_at(input, 0)
}

/// Appends `GET key` as a RESP array.
pub fn encode_get(key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    encode_bulk(key, out);
}

/// Appends `SET key value` as a RESP array.
pub fn encode_set(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    encode_bulk(key, out);
    encode_bulk(value, out);
}

fn encode_bulk(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'$');
    push_decimal(bytes.len() as u64, out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without allocating.
fn push_decimal(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn parse_at(input: &[u8], depth: usize) -> Result<Option<Reply>, RespError> {
    let Some((&kind, _)) = input.split_first() else {
        return Ok(None);
    };
    let Some(line_end) = find_line_end(input)? else {
        return Ok(None);
    };
    // The header line without its type byte and CRLF.
    let header = input.get(1..line_end).unwrap_or_default();
    let after_header = line_end + 2;
    let done = |kind| {
        Ok(Some(Reply {
            kind,
            len: after_header,
        }))
    };
    match kind {
        b'+' => done(ReplyKind::Simple),
        b'-' => done(ReplyKind::Error),
        b':' => {
            parse_int(header)?;
            done(ReplyKind::Integer)
        }
        b'_' => {
            if header.is_empty() {
                done(ReplyKind::Nil)
            } else {
                Err(RespError::BadNumber)
            }
        }
        b'$' => {
            let Some(len) = parse_length(header, BULK_BYTES_MAX)? else {
                return done(ReplyKind::Nil);
            };
            let end = after_header
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or(RespError::TooLarge)?;
            match input.get(after_header + len..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(Reply {
                    kind: ReplyKind::Bulk,
                    len: end,
                })),
                Some(_) => Err(RespError::MissingCrlf),
            }
        }
        b'*' => {
            let Some(count) = parse_length(header, ARRAY_LEN_MAX)? else {
                return done(ReplyKind::Nil);
            };
            if depth >= NESTING_MAX {
                return Err(RespError::TooDeep);
            }
            let mut at = after_header;
            for _ in 0..count {
                let rest = input.get(at..).unwrap_or_default();
                match parse_at(rest, depth + 1)? {
                    None => return Ok(None),
                    Some(element) => at += element.len,
                }
            }
            Ok(Some(Reply {
                kind: ReplyKind::Array,
                len: at,
            }))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// Index of the `\r` ending the first line, `None` if the line is not complete yet.
fn find_line_end(input: &[u8]) -> Result<Option<usize>, RespError> {
    let window = input
        .get(..LINE_BYTES_MAX.min(input.len()))
        .unwrap_or(input);
    match window.iter().position(|&b| b == b'\r') {
        Some(cr) => match input.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(cr)),
            Some(_) => Err(RespError::MissingCrlf),
        },
        None if window.len() >= LINE_BYTES_MAX => Err(RespError::MissingCrlf),
        None => Ok(None),
    }
}

/// A length field: `-1` means nil (`None`), otherwise `0..=max`.
fn parse_length(digits: &[u8], max: usize) -> Result<Option<usize>, RespError> {
    let n = parse_int(digits)?;
    if n == -1 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| RespError::BadNumber)?;
    if n > max {
        return Err(RespError::TooLarge);
    }
    Ok(Some(n))
}

/// A signed decimal integer of at most 19 digits.
fn parse_int(text: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(RespError::BadNumber);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::BadNumber);
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &[u8], expect: Result<Option<(ReplyKind, usize)>, RespError>) {
        let got = parse_reply(input).map(|r| r.map(|r| (r.kind, r.len)));
        assert_eq!(got, expect, "{:?}", String::from_utf8_lossy(input));
    }

    #[test]
    fn complete_replies() {
        check(b"+OK\r\n", Ok(Some((ReplyKind::Simple, 5))));
        check(b"-ERR wrong\r\n", Ok(Some((ReplyKind::Error, 12))));
        check(b":42\r\n", Ok(Some((ReplyKind::Integer, 5))));
        check(b":-7\r\n", Ok(Some((ReplyKind::Integer, 5))));
        check(b"$-1\r\n", Ok(Some((ReplyKind::Nil, 5))));
        check(b"*-1\r\n", Ok(Some((ReplyKind::Nil, 5))));
        check(b"_\r\n", Ok(Some((ReplyKind::Nil, 3))));
        check(b"$0\r\n\r\n", Ok(Some((ReplyKind::Bulk, 6))));
        check(b"$5\r\nhello\r\n", Ok(Some((ReplyKind::Bulk, 11))));
        check(b"$4\r\na\r\nb\r\n", Ok(Some((ReplyKind::Bulk, 10))));
        check(b"*2\r\n$1\r\na\r\n:1\r\n", Ok(Some((ReplyKind::Array, 15))));
        check(b"*0\r\n", Ok(Some((ReplyKind::Array, 4))));
        // Only the first reply is taken; the rest stays for the next call.
        check(b"+OK\r\n$-1\r\n", Ok(Some((ReplyKind::Simple, 5))));
    }

    #[test]
    fn partial_replies_need_more() {
        let whole: &[u8] = b"*2\r\n$5\r\nhello\r\n+OK\r\n";
        for cut in 0..whole.len() {
            check(&whole[..cut], Ok(None));
        }
        check(whole, Ok(Some((ReplyKind::Array, whole.len()))));
        check(b"+OK\r", Ok(None));
        check(b"$100\r\nabc", Ok(None));
    }

    #[test]
    fn malformed_replies_are_errors() {
        check(b"?what\r\n", Err(RespError::UnknownType(b'?')));
        check(b"+OK\rX", Err(RespError::MissingCrlf));
        check(b"$abc\r\n", Err(RespError::BadNumber));
        check(b"$\r\n", Err(RespError::BadNumber));
        check(b"$-2\r\n", Err(RespError::BadNumber));
        check(b":1x\r\n", Err(RespError::BadNumber));
        check(b"$3\r\nabcXY", Err(RespError::MissingCrlf));
        check(b"$99999999999\r\n", Err(RespError::TooLarge));
        check(b"$99999999999999999999999\r\n", Err(RespError::BadNumber));
        check(b"*9999999999\r\n", Err(RespError::TooLarge));
        check(
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            Err(RespError::TooDeep),
        );
        check(b"_x\r\n", Err(RespError::BadNumber));
        let long = vec![b'+'; LINE_BYTES_MAX + 1];
        check(&long, Err(RespError::MissingCrlf));
    }

    #[test]
    fn encoded_requests_are_resp_arrays() {
        let mut out = Vec::new();
        encode_get(b"key:1", &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n");
        out.clear();
        encode_set(b"k", &[b'v'; 12], &mut out);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$12\r\nvvvvvvvvvvvv\r\n"
        );
        // A request is itself a well-formed RESP value.
        check(&out, Ok(Some((ReplyKind::Array, out.len()))));
    }

    proptest! {
        #[test]
        fn never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some(reply)) = parse_reply(&bytes) {
                prop_assert!(reply.len <= bytes.len());
                prop_assert!(reply.len > 0);
            }
        }

        #[test]
        fn prefixes_of_valid_replies_are_incomplete(value in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut whole = Vec::new();
            whole.extend_from_slice(b"*2\r\n");
            encode_bulk(&value, &mut whole);
            whole.extend_from_slice(b"-ERR x\r\n");
            for cut in 0..whole.len() {
                prop_assert_eq!(parse_reply(&whole[..cut]), Ok(None));
            }
            prop_assert_eq!(
                parse_reply(&whole),
                Ok(Some(Reply { kind: ReplyKind::Array, len: whole.len() }))
            );
        }
    }
}
