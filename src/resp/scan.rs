//! Reply frame boundaries without building values: the proxy forwards
//! backend replies byte for byte and only needs to know where each one ends.
//!
//! [`FrameScanner`] is resumable: a huge array arriving in many reads is
//! scanned once, not from its start on every read. It understands every
//! RESP2 and RESP3 type (attributes are folded into the reply they precede).
//! No I/O and nothing consumed: callers split the buffer at the returned
//! length.

use bytes::Bytes;

/// A byte stream that is not RESP: the connection cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad reply frame: {0}")]
pub struct FrameError(pub &'static str);

/// Where a scan stopped inside an unfinished frame.
#[derive(Debug, Default)]
pub struct FrameScanner {
    pos: usize,
    /// Elements still expected by each open aggregate, innermost last.
    open: Vec<u64>,
}

/// Largest aggregate length accepted from a backend (Redis caps at 2^32).
const MAX_COUNT: i64 = 1 << 32;

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let at = hay.iter().position(|&b| b == b'\r')?;
    Some(from + at)
}

fn int(s: &[u8]) -> Result<i64, FrameError> {
    crate::resp::parse_i64(s).ok_or(FrameError("bad length"))
}

impl FrameScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Length of the first complete frame of `buf`, or `None` if more bytes
    /// are needed. `buf` must start where the previous complete frame ended
    /// and only grow between calls that return `None`.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(end) = line_end(buf, self.pos) else {
                return Ok(None);
            };
            if buf.get(end + 1).is_none() {
                return Ok(None);
            }
            if buf.get(end + 1) != Some(&b'\n') {
                return Err(FrameError("line without LF"));
            }
            let body = buf.get(self.pos + 1..end).unwrap_or_default();
            let after_line = end + 2;
            let mut opened = None;
            match kind {
                b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => self.pos = after_line,
                b'$' | b'!' | b'=' => {
                    let n = int(body)?;
                    if n < 0 {
                        if kind != b'$' {
                            return Err(FrameError("negative blob length"));
                        }
                        self.pos = after_line;
                    } else {
                        let stop = after_line + n as usize;
                        if buf.len() < stop + 2 {
                            return Ok(None);
                        }
                        if buf.get(stop..stop + 2) != Some(b"\r\n".as_slice()) {
                            return Err(FrameError("blob without CRLF"));
                        }
                        self.pos = stop + 2;
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = int(body)?;
                    if n > MAX_COUNT {
                        return Err(FrameError("aggregate too long"));
                    }
                    self.pos = after_line;
                    if n > 0 {
                        let n = n as u64;
                        opened = Some(match kind {
                            b'%' => n * 2,
                            // An attribute map is followed by the reply it
                            // annotates: both make one frame.
                            b'|' => n * 2 + 1,
                            _ => n,
                        });
                    } else if n < 0 && kind != b'*' {
                        return Err(FrameError("negative aggregate length"));
                    } else if kind == b'|' {
                        opened = Some(1);
                    }
                }
                _ => return Err(FrameError("unknown type byte")),
            }
            if let Some(n) = opened {
                self.open.push(n);
                continue;
            }
            // One element finished: close every aggregate it completes.
            loop {
                match self.open.last_mut() {
                    None => {
                        let len = self.pos;
                        self.pos = 0;
                        return Ok(Some(len));
                    }
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Length of the first complete frame of `buf` (one-shot, not resumable).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    FrameScanner::new().scan(buf)
}

/// Splits a buffer of whole frames into the frames.
pub fn split_frames(mut buf: Bytes) -> Result<Vec<Bytes>, FrameError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match frame_len(&buf)? {
            Some(n) => out.push(buf.split_to(n)),
            None => return Err(FrameError("truncated frame")),
        }
    }
    Ok(out)
}

/// The elements of an array (or set/push) reply, each a whole frame.
/// `None` when the reply is not an aggregate of that kind (an error, a nil).
pub fn array_elements(frame: &Bytes) -> Option<Vec<Bytes>> {
    let kind = *frame.first()?;
    if !matches!(kind, b'*' | b'~' | b'>') {
        return None;
    }
    let end = line_end(frame, 0)?;
    let n = crate::resp::parse_i64(frame.get(1..end)?)?;
    if n < 0 {
        return None;
    }
    let mut rest = frame.slice(end + 2..);
    let mut out = Vec::with_capacity((n as usize).min(4096));
    for _ in 0..n {
        let len = frame_len(&rest).ok()??;
        out.push(rest.split_to(len));
    }
    Some(out)
}

/// The value of an integer reply (`:n`).
pub fn integer(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    crate::resp::parse_i64(body)
}

/// The text of a simple, blob or (RESP3) verbatim string reply; a
/// verbatim string without its `txt:` format prefix.
pub fn text(frame: &[u8]) -> Option<&[u8]> {
    match frame.first()? {
        b'+' => frame.get(1..frame.len().checked_sub(2)?),
        kind @ (b'$' | b'=') => {
            let end = line_end(frame, 0)?;
            let n = usize::try_from(crate::resp::parse_i64(frame.get(1..end)?)?).ok()?;
            let body = frame.get(end + 2..end + 2 + n)?;
            if *kind == b'=' {
                body.get(4..)
            } else {
                Some(body)
            }
        }
        _ => None,
    }
}

/// The text of an error reply (`-ERR ...` or RESP3 `!len`), without prefix.
pub fn error_text(frame: &[u8]) -> Option<&[u8]> {
    match frame.first()? {
        b'-' => frame.get(1..frame.len().checked_sub(2)?),
        b'!' => {
            let end = line_end(frame, 0)?;
            let n = usize::try_from(crate::resp::parse_i64(frame.get(1..end)?)?).ok()?;
            frame.get(end + 2..end + 2 + n)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_of_simple_blob_and_verbatim_strings() {
        assert_eq!(text(b"+OK\r\n"), Some(&b"OK"[..]));
        assert_eq!(text(b"$2\r\nhi\r\n"), Some(&b"hi"[..]));
        assert_eq!(text(b"=6\r\ntxt:hi\r\n"), Some(&b"hi"[..]));
        assert_eq!(text(b":1\r\n"), None);
    }
    use proptest::prelude::*;

    const SAMPLES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR no\r\n",
        b":42\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"$0\r\n\r\n",
        b"$5\r\nhe\r\no\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
        b"~1\r\n,1.5\r\n",
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        b"#t\r\n",
        b"(123\r\n",
        b"=8\r\ntxt:abcd\r\n",
        b"!3\r\nERR\r\n",
        b"*1\r\n*1\r\n*0\r\n",
    ];

    #[test]
    fn every_type_is_one_frame() {
        for s in SAMPLES {
            assert_eq!(frame_len(s).unwrap(), Some(s.len()), "{s:?}");
            let mut two = s.to_vec();
            two.extend_from_slice(b"+next\r\n");
            assert_eq!(frame_len(&two).unwrap(), Some(s.len()), "{s:?}");
        }
    }

    #[test]
    fn split_at_every_offset_resumes() {
        let all: Vec<u8> = SAMPLES.concat();
        for cut in 0..all.len() {
            let mut sc = FrameScanner::new();
            let mut got = Vec::new();
            let mut buf = all[..cut].to_vec();
            let mut fed = cut;
            loop {
                match sc.scan(&buf).unwrap() {
                    Some(n) => {
                        got.push(buf.drain(..n).collect::<Vec<u8>>());
                    }
                    None if fed < all.len() => {
                        buf.extend_from_slice(&all[fed..]);
                        fed = all.len();
                    }
                    None => break,
                }
            }
            assert!(buf.is_empty(), "cut {cut}");
            let want: Vec<Vec<u8>> = SAMPLES.iter().map(|s| s.to_vec()).collect();
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(frame_len(b"?x\r\n").is_err());
        assert!(frame_len(b"$3\r\nabcde\r\n").is_err());
        assert!(frame_len(b"*x\r\n").is_err());
        assert!(frame_len(b"+a\rb").is_err());
    }

    #[test]
    fn helpers() {
        let f = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n");
        let els = array_elements(&f).unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(&els[1][..], b"$-1\r\n");
        assert_eq!(integer(&els[2]), Some(5));
        assert_eq!(text(&els[0]), Some(&b"a"[..]));
        assert_eq!(text(b"+OK\r\n"), Some(&b"OK"[..]));
        assert_eq!(error_text(b"-MOVED 1 a:1\r\n"), Some(&b"MOVED 1 a:1"[..]));
        assert_eq!(error_text(b"!3\r\nERR\r\n"), Some(&b"ERR"[..]));
        assert!(array_elements(&Bytes::from_static(b"-ERR\r\n")).is_none());
        let frames = split_frames(Bytes::from_static(b"+OK\r\n:1\r\n")).unwrap();
        assert_eq!(frames.len(), 2);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut sc = FrameScanner::new();
            let _ = sc.scan(&data);
        }

        /// Whole or in pieces, the same boundaries (also the fuzz target
        /// `reply_scanner`). Inputs are built from valid frames with random
        /// corruption so both paths are exercised.
        #[test]
        fn pieces_find_the_same_frames(
            picks in proptest::collection::vec(0usize..18, 1..8),
            flip in proptest::option::of((0usize..400, any::<u8>())),
            step in 1usize..9,
        ) {
            let mut data: Vec<u8> = picks.iter().flat_map(|i| SAMPLES[*i].to_vec()).collect();
            if let Some((at, b)) = flip {
                let at = at % data.len();
                data[at] = b;
            }
            let frames = |step: usize| {
                let mut out = Vec::new();
                let mut sc = FrameScanner::new();
                let (mut start, mut end) = (0, 0);
                while end < data.len() {
                    end = (end + step).min(data.len());
                    loop {
                        match sc.scan(&data[start..end]) {
                            Ok(Some(n)) => { out.push(Ok(n)); start += n; }
                            Ok(None) => break,
                            Err(_) => { out.push(Err(())); return out; }
                        }
                    }
                }
                out
            };
            prop_assert_eq!(frames(data.len()), frames(step));
        }

        #[test]
        fn agrees_with_redis_protocol(vals in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..6)) {
            use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};
            let frame = OwnedFrame::Array(vals.into_iter().map(OwnedFrame::BulkString).collect());
            let mut buf = vec![0u8; frame.encode_len(false)];
            let n = redis_protocol::resp2::encode::encode(&mut buf, &frame, false).unwrap();
            prop_assert_eq!(frame_len(&buf[..n]).unwrap(), Some(n));
        }
    }
}
