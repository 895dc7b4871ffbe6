//! Incremental parser for client requests: RESP multibulk arrays and inline
//! (telnet) commands.
//!
//! Why not `redis-protocol` here: requests are always arrays of bulk strings,
//! the parser sits on the hottest path, and it must keep its place across
//! reads (a 100k-argument MSET arriving in pieces must not be re-scanned from
//! the start each time) and enforce Redis's limits *before* buffering an absurd
//! length. `redis-protocol` decodes general frames (replies) elsewhere.
//!
//! A partial request is `Ok(None)` and consumes nothing; the buffer is split
//! only once a whole request is present, so arguments are zero-copy slices.

use bytes::{BufMut, Bytes, BytesMut};

/// Limits a server applies to requests (Redis: `proto-max-bulk-len` and the
/// fixed 64 KiB inline limit).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bulk_len: usize,
    pub max_multibulk_len: usize,
    pub max_inline_len: usize,
    /// The client has not authenticated yet while a password is required:
    /// Redis then caps a request at 10 arguments of 16 KiB each, so an
    /// anonymous peer cannot make the server buffer 512 MB.
    pub unauthenticated: bool,
}

/// Redis 7.0's caps for a client that has not authenticated.
const UNAUTH_MAX_ARGS: i64 = 10;
const UNAUTH_MAX_BULK: usize = 16384;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024 * 1024,
            max_inline_len: 64 * 1024,
            unauthenticated: false,
        }
    }
}

/// A protocol error: the text is what Redis sends before closing the
/// connection (after `-ERR `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(s: &str) -> Self {
        ProtocolError(s.to_string())
    }
}

/// A whole request taken from the buffer by
/// [`RequestParser::parse_raw`].
#[derive(Debug)]
pub enum Raw {
    /// A multibulk request's own bytes (no arguments for `*0`); its arguments are
    /// read from the parser.
    Frame(Bytes),
    /// An inline request: its line as received and its arguments (none
    /// for a blank line).
    Inline(Bytes, Vec<Bytes>),
}

/// Resumable state of a multibulk request being received.
#[derive(Debug, Default)]
pub struct RequestParser {
    /// Arguments expected in the current multibulk, once its header is read.
    expected: Option<usize>,
    /// Byte ranges (into the unconsumed buffer) of arguments complete so far.
    ranges: Vec<(usize, usize)>,
    /// Where parsing resumes.
    pos: usize,
}

/// A length as Redis writes it, at `at` and up to `\r\n`: decimal digits,
/// no sign, no leading zero, at most 18 digits. Returns it and where the
/// line ends (after `\r\n`); `None` for anything else or a partial line.
fn plain_len(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut v: usize = 0;
    let mut i = at;
    while let Some(&b) = buf.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        v = v * 10 + usize::from(b - b'0');
        i += 1;
        if i - at > 18 {
            return None;
        }
    }
    let digits = i - at;
    if digits == 0 || (digits > 1 && buf.get(at) == Some(&b'0')) {
        return None;
    }
    if buf.get(i..i + 2)? != b"\r\n" {
        return None;
    }
    Some((v, i + 2))
}

/// Position of the first `\r\n` (or, for inline, `\n`) at or after `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let mut i = 0;
    while let Some(off) = hay
        .get(i..)
        .and_then(|h| h.iter().position(|&b| b == b'\r'))
    {
        let at = i + off;
        match hay.get(at + 1) {
            Some(b'\n') => return Some(from + at),
            Some(_) => i = at + 1,
            None => return None,
        }
    }
    None
}

/// The most the parser reserves ahead for a bulk argument still arriving;
/// more grows as the bytes do.
const MAX_UPFRONT_RESERVE: usize = 32 << 20;

pub use crate::util::parse_i64;

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tries to take one whole request from `buf`. `Ok(Some(vec![]))` is an
    /// empty request (blank inline line, `*0`) that the caller skips.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        Ok(self.parse_frame(buf, limits)?.map(|(_, args)| args))
    }

    /// Like [`parse`](Self::parse), and also hands back the request's own
    /// bytes exactly as received (the line, for an inline request), so a
    /// proxy can forward them and a replica count its master's stream.
    pub fn parse_frame(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<(Bytes, Vec<Bytes>)>, ProtocolError> {
        Ok(self.parse_raw(buf, limits)?.map(|raw| match raw {
            Raw::Frame(frame) => {
                let args = self.args_of(&frame);
                (frame, args)
            }
            Raw::Inline(line, args) => (line, args),
        }))
    }

    /// The arguments of the frame [`parse_raw`](Self::parse_raw) just
    /// returned, as slices of it.
    pub fn args_of(&self, frame: &Bytes) -> Vec<Bytes> {
        self.ranges
            .iter()
            .map(|&(s, e)| frame.slice(s..e))
            .collect()
    }

    /// Argument `i` of the frame [`parse_raw`](Self::parse_raw) just
    /// returned, borrowed (no reference count, no allocation).
    pub fn arg<'a>(&self, frame: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let &(s, e) = self.ranges.get(i)?;
        frame.get(s..e)
    }

    /// Arguments of the frame [`parse_raw`](Self::parse_raw) just returned.
    pub fn argc(&self) -> usize {
        self.ranges.len()
    }

    /// Like [`parse_frame`](Self::parse_frame), without building the
    /// argument list: a multibulk request comes back as its bytes, its
    /// arguments readable with [`arg`](Self::arg) until the next call.
    pub fn parse_raw(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Raw>, ProtocolError> {
        if self.expected.is_none() {
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {}
                Some(_) => {
                    return Ok(self
                        .parse_inline(buf, limits)?
                        .map(|(line, args)| Raw::Inline(line, args)))
                }
            }
            if let Some(len) = self.parse_whole(buf, limits) {
                let frame = buf.split_to(len).freeze();
                return Ok(Some(Raw::Frame(frame)));
            }
            let Some(end) = find_crlf(buf, 0) else {
                if buf.len() > limits.max_inline_len {
                    return Err(ProtocolError::new("too big mbulk count string"));
                }
                return Ok(None);
            };
            let n = buf
                .get(1..end)
                .and_then(parse_i64)
                .filter(|&n| n <= limits.max_multibulk_len as i64)
                .ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
            if limits.unauthenticated && n > UNAUTH_MAX_ARGS {
                return Err(ProtocolError::new("unauthenticated multibulk length"));
            }
            if n <= 0 {
                let frame = buf.split_to(end + 2).freeze();
                self.ranges.clear();
                return Ok(Some(Raw::Frame(frame)));
            }
            let n = n as usize;
            self.expected = Some(n);
            self.ranges.clear();
            // Never trust the header for an allocation size.
            self.ranges.reserve(n.min(1024));
            self.pos = end + 2;
        }
        let expected = self.expected.unwrap_or(0);
        while self.ranges.len() < expected {
            let Some(&first) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(end) = find_crlf(buf, self.pos) else {
                if buf.len() - self.pos > limits.max_inline_len {
                    return Err(ProtocolError::new("too big bulk count string"));
                }
                return Ok(None);
            };
            if first != b'$' {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    char::from(first)
                )));
            }
            let len = buf
                .get(self.pos + 1..end)
                .and_then(parse_i64)
                .filter(|&l| l >= 0 && l as u64 <= limits.max_bulk_len as u64)
                .ok_or_else(|| ProtocolError::new("invalid bulk length"))?
                as usize;
            if limits.unauthenticated && len > UNAUTH_MAX_BULK {
                return Err(ProtocolError::new("unauthenticated bulk length"));
            }
            let start = end + 2;
            if buf.len() < start + len + 2 {
                // Make room once for the whole argument instead of growing by
                // doubling while a large value streams in, up to a cap: the
                // length is only a claim, and a corrupt AOF or a hostile
                // peer's `$200000000000` must not reserve what never comes.
                buf.reserve((start + len + 2 - buf.len()).min(MAX_UPFRONT_RESERVE));
                return Ok(None);
            }
            if buf.get(start + len..start + len + 2) != Some(b"\r\n".as_slice()) {
                return Err(ProtocolError::new("invalid bulk format"));
            }
            self.ranges.push((start, start + len));
            self.pos = start + len + 2;
        }
        let frame = buf.split_to(self.pos).freeze();
        // `ranges` stay until the next request starts: see `arg`.
        self.expected = None;
        self.pos = 0;
        Ok(Some(Raw::Frame(frame)))
    }

    /// The common case in one pass: a whole multibulk request already in
    /// `buf` with plain lengths. Returns its length with `ranges` filled.
    /// `None` changes nothing that matters (the general path starts by
    /// clearing `ranges`) and leaves anything else — a partial request,
    /// odd or over-limit lengths, bad framing — to the general path, which
    /// returns the same request or the proper error.
    fn parse_whole(&mut self, buf: &[u8], limits: &Limits) -> Option<usize> {
        let (n, mut pos) = plain_len(buf, 1)?;
        if n == 0 || n > limits.max_multibulk_len || n > 1024 || limits.unauthenticated {
            return None;
        }
        self.ranges.clear();
        for _ in 0..n {
            if *buf.get(pos)? != b'$' {
                return None;
            }
            let (len, start) = plain_len(buf, pos + 1)?;
            if len > limits.max_bulk_len {
                return None;
            }
            let end = start.checked_add(len)?;
            if buf.get(end..end.checked_add(2)?)? != b"\r\n" {
                return None;
            }
            self.ranges.push((start, end));
            pos = end + 2;
        }
        Some(pos)
    }

    fn parse_inline(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<(Bytes, Vec<Bytes>)>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > limits.max_inline_len {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(None);
        };
        let line = buf.split_to(nl + 1).freeze();
        let body = line.get(..nl).unwrap_or_default();
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let args = split_args(body)
            .map(|v| v.into_iter().map(Bytes::from).collect())
            .ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
        Ok(Some((line, args)))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Splits a line into arguments with the quoting rules of Redis's
/// `sdssplitargs` (used for inline commands and config files). `None` means
/// unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let at = |i: usize| line.get(i).copied();
    loop {
        while at(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        if at(i).is_none() {
            return Some(args);
        }
        let mut cur = Vec::new();
        // The quote the current argument is inside, if any.
        let mut quote: Option<u8> = None;
        loop {
            let c = at(i);
            let Some(q) = quote else {
                match c {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(q @ (b'"' | b'\'')) => quote = Some(q),
                    Some(other) => cur.push(other),
                }
                i += 1;
                continue;
            };
            match c {
                None => return None,
                Some(b'\\') if q == b'"' => {
                    if let (Some(b'x'), Some(h), Some(l)) = (at(i + 1), at(i + 2), at(i + 3)) {
                        if let (Some(h), Some(l)) = (hex_val(h), hex_val(l)) {
                            cur.push(h * 16 + l);
                            i += 4;
                            continue;
                        }
                    }
                    cur.push(match at(i + 1)? {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                }
                Some(b'\\') if at(i + 1) == Some(b'\'') => {
                    cur.push(b'\'');
                    i += 2;
                }
                Some(c) if c == q => {
                    // A closing quote must be followed by space or end.
                    if at(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                Some(other) => {
                    cur.push(other);
                    i += 1;
                }
            }
        }
        args.push(cur);
    }
}

/// Appends `args` to `out` as a RESP command (an array of bulk strings):
/// the one encoder for every command slotway sends (propagation, the
/// proxy's backends, MIGRATE, the CLI, `up`).
pub fn encode_command<A: AsRef<[u8]>>(out: &mut BytesMut, args: &[A]) {
    let mut n = itoa::Buffer::new();
    let size: usize = args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
    out.reserve(size);
    out.put_u8(b'*');
    out.put_slice(n.format(args.len()).as_bytes());
    out.put_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.put_u8(b'$');
        out.put_slice(n.format(a.len()).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
}

/// [`encode_command`] into a fresh buffer, for one-off requests.
pub fn command_bytes<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_command(&mut out, args);
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raw_requests_expose_their_arguments_until_the_next_one() {
        let mut buf =
            BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*0\r\n*1\r\n$4\r\nPI"[..]);
        let mut p = RequestParser::new();
        let l = Limits::default();
        let Some(Raw::Frame(f)) = p.parse_raw(&mut buf, &l).unwrap() else {
            panic!("frame expected");
        };
        assert_eq!(&f[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(p.argc(), 2);
        assert_eq!(p.arg(&f, 0), Some(&b"GET"[..]));
        assert_eq!(p.arg(&f, 1), Some(&b"k"[..]));
        assert_eq!(p.arg(&f, 2), None);
        assert_eq!(p.args_of(&f), vec![Bytes::from("GET"), Bytes::from("k")]);
        let Some(Raw::Inline(line, a)) = p.parse_raw(&mut buf, &l).unwrap() else {
            panic!("inline expected");
        };
        // The bytes as received: a replica counts them in its offset.
        assert_eq!(&line[..], b"PING\r\n");
        assert_eq!(a, vec![Bytes::from("PING")]);
        let Some(Raw::Frame(f)) = p.parse_raw(&mut buf, &l).unwrap() else {
            panic!("empty frame expected");
        };
        assert_eq!(&f[..], b"*0\r\n");
        assert_eq!(p.argc(), 0);
        // A partial request consumes nothing.
        assert!(p.parse_raw(&mut buf, &l).unwrap().is_none());
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPI");
    }

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut p = RequestParser::new();
        let mut out = Vec::new();
        while let Some(a) = p.parse(&mut buf, &Limits::default())? {
            out.push(a);
        }
        Ok(out)
    }

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    #[test]
    fn multibulk_and_inline() {
        let r = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nset a \"b c\"\n").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(r[1], vec![Bytes::from("PING")]);
        assert_eq!(
            r[2],
            vec![Bytes::from("set"), Bytes::from("a"), Bytes::from("b c")]
        );
    }

    #[test]
    fn partial_input_consumes_nothing_until_complete() {
        let whole = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        for cut in 0..whole.len() {
            let mut p = RequestParser::new();
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(
                p.parse(&mut buf, &Limits::default()).unwrap(),
                None,
                "cut {cut}"
            );
            assert_eq!(buf.len(), cut);
            buf.extend_from_slice(&whole[cut..]);
            let args = p.parse(&mut buf, &Limits::default()).unwrap().unwrap();
            assert_eq!(args.len(), 3);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn errors_match_redis_texts() {
        let e = |s: &[u8]| parse_all(s).unwrap_err().to_string();
        assert_eq!(e(b"*abc\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(e(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            e(b"*1\r\n+foo\r\n"),
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            e(b"set \"a\n"),
            "Protocol error: unbalanced quotes in request"
        );
        let limits = Limits {
            max_bulk_len: 10,
            ..Limits::default()
        };
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
        assert_eq!(
            p.parse(&mut buf, &limits).unwrap_err().to_string(),
            "Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn absurd_lengths_do_not_allocate() {
        // A 2^30-argument header must not reserve 2^30 slots.
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1073741824\r\n$1\r\na\r\n"[..]);
        assert_eq!(p.parse(&mut buf, &Limits::default()).unwrap(), None);
        assert!(p.ranges.capacity() <= 1024);
    }

    #[test]
    fn a_huge_claimed_bulk_length_does_not_reserve_it() {
        // What the AOF loader allows (no client limit): a corrupt file's
        // `$200000090005` must not reserve 200 GB up front (found by the
        // aof_replay fuzz target: the allocation aborted the process).
        let limits = Limits {
            max_bulk_len: i64::MAX as usize,
            ..Limits::default()
        };
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*2\r\n$200000090005\r\nab"[..]);
        assert_eq!(p.parse(&mut buf, &limits).unwrap(), None);
        assert!(
            buf.capacity() <= MAX_UPFRONT_RESERVE + 64,
            "{}",
            buf.capacity()
        );
        // A large argument still gets its whole room at once below the cap.
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$1000000\r\nab"[..]);
        assert_eq!(p.parse(&mut buf, &limits).unwrap(), None);
        assert!(buf.capacity() >= 1_000_000);
    }

    #[test]
    fn split_args_quoting() {
        assert_eq!(
            split_args(br#"a "b\x41\n" 'c\'d'"#).unwrap(),
            vec![b"a".to_vec(), b"bA\n".to_vec(), b"c'd".to_vec()]
        );
        assert!(split_args(b"\"abc\"def").is_none());
        assert_eq!(split_args(b"   ").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn integers_like_string2ll() {
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"01"[..],
            b"+1",
            b" 1",
            b"",
            b"-",
            b"-0",
            b"9223372036854775808",
            b"1a",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn roundtrip_split_anywhere(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8), cut in 0usize..400) {
            let wire = encode(&args);
            let cut = cut.min(wire.len());
            let mut p = RequestParser::new();
            let mut buf = BytesMut::from(&wire[..cut]);
            let first = p.parse(&mut buf, &Limits::default()).unwrap();
            let got = match first {
                Some(a) => a,
                None => {
                    buf.extend_from_slice(&wire[cut..]);
                    p.parse(&mut buf, &Limits::default()).unwrap().unwrap()
                }
            };
            let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(got, args);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut p = RequestParser::new();
            let mut buf = BytesMut::from(&data[..]);
            for _ in 0..64 {
                match p.parse(&mut buf, &Limits::default()) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }

        #[test]
        fn agrees_with_redis_protocol_decoder(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let wire = encode(&args);
            let (frame, used) = redis_protocol::resp2::decode::decode(&wire).unwrap().unwrap();
            prop_assert_eq!(used, wire.len());
            let theirs: Vec<Vec<u8>> = match frame {
                redis_protocol::resp2::types::OwnedFrame::Array(items) => items.into_iter().map(|f| match f {
                    redis_protocol::resp2::types::OwnedFrame::BulkString(b) => b,
                    _ => Vec::new(),
                }).collect(),
                _ => Vec::new(),
            };
            let ours: Vec<Vec<u8>> = parse_all(&wire).unwrap().remove(0).iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(ours, theirs);
        }
    }
}
