//! Replies as values, and their encoding in RESP2 or RESP3.
//!
//! Commands build a [`Reply`]; the connection encodes it for the protocol the
//! client negotiated with `HELLO`. Keeping replies as values (not bytes) lets
//! MULTI/EXEC collect them and Lua convert them.

use bytes::{BufMut, Bytes, BytesMut};

/// Protocol version a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`
    Ok,
    Simple(String),
    /// Full error text including its class, e.g. `ERR syntax error`.
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// A bulk string short enough to live inline (up to 23 bytes): the hot
    /// GET path builds its reply without a heap allocation.
    SmallBulk(compact_bytes::CompactBytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Nil,
    /// RESP2 `*-1`, RESP3 `_`.
    NilArray,
    Array(Vec<Reply>),
    /// RESP3 map; RESP2 flat array of key, value, ...
    Map(Vec<(Reply, Reply)>),
    /// RESP3 set; RESP2 array.
    Set(Vec<Reply>),
    /// RESP3 double; RESP2 bulk string.
    Double(f64),
    /// A double already formatted, for replies whose text is not `%.17g`
    /// (GEOPOS's 17 decimals): RESP3 double, RESP2 bulk string.
    DoubleText(String),
    /// RESP3 boolean; RESP2 integer 1/0.
    Bool(bool),
    /// RESP3 verbatim string (`txt:`); RESP2 bulk string.
    Verbatim(Bytes),
    /// RESP3 push (pub/sub messages); RESP2 array.
    Push(Vec<Reply>),
    /// An array of random picks produced while it is written (see
    /// [`crate::resp::stream`]): only connections stream it; anything else
    /// must go through [`Reply::is_lazy`] first.
    Sample(Box<crate::resp::stream::Sample>),
}

impl Reply {
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }
    pub fn simple(s: &str) -> Reply {
        Reply::Simple(s.to_string())
    }
    pub fn bulk(b: impl AsRef<[u8]>) -> Reply {
        let b = b.as_ref();
        if b.len() <= compact_bytes::CompactBytes::MAX_INLINE {
            Reply::SmallBulk(compact_bytes::CompactBytes::new(b))
        } else {
            Reply::Bulk(Bytes::copy_from_slice(b))
        }
    }

    /// The bytes of a bulk reply of either representation.
    pub fn as_bulk(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::SmallBulk(b) => Some(b.as_slice()),
            _ => None,
        }
    }
    pub fn bulk_opt(b: Option<impl AsRef<[u8]>>) -> Reply {
        b.map_or(Reply::Nil, Reply::bulk)
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
    /// Whether this reply holds a [`Reply::Sample`] and must be streamed.
    pub fn is_lazy(&self) -> bool {
        match self {
            Reply::Sample(_) => true,
            Reply::Array(items) => items.iter().any(Reply::is_lazy),
            _ => false,
        }
    }
    pub fn array_of_bulks<I, T>(it: I) -> Reply
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        Reply::Array(it.into_iter().map(Reply::bulk).collect())
    }
}

/// Formats a double the way Redis 7.0 does for replies: C's `%.17g`
/// (17 significant digits, so 0.1 is `0.10000000000000001`), with `inf`
/// and `-inf`. (Redis 7.2 moved to the shortest form; 7.0 is our
/// reference.)
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d.is_nan() {
        return "nan".into();
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // 17 significant digits in exponent form tell the exponent %g uses to
    // choose between its two styles (after rounding).
    let e_form = format!("{d:.16e}");
    let Some((mantissa, exp)) = e_form.split_once('e') else {
        return e_form;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if (-4..17).contains(&exp) {
        let decimals = (16 - exp) as usize;
        trim(&format!("{d:.decimals$}"))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    }
}

pub(crate) fn put_len(out: &mut BytesMut, prefix: u8, n: impl itoa::Integer) {
    out.put_u8(prefix);
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    put_len(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub fn put_int(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Error lines must not contain CR/LF, or the client would desync.
fn put_line(out: &mut BytesMut, prefix: u8, text: &str) {
    out.put_u8(prefix);
    for &c in text.as_bytes() {
        out.put_u8(if c == b'\r' || c == b'\n' { b' ' } else { c });
    }
    out.extend_from_slice(b"\r\n");
}

impl Reply {
    pub fn encode(&self, proto: Proto, out: &mut BytesMut) {
        let r3 = proto == Proto::Resp3;
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(s) => put_line(out, b'+', s),
            Reply::Error(e) => put_line(out, b'-', e),
            Reply::Int(n) => put_int(out, *n),
            Reply::Bulk(b) => put_bulk(out, b),
            Reply::SmallBulk(b) => put_bulk(out, b.as_slice()),
            Reply::Nil if r3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray if r3 => out.extend_from_slice(b"_\r\n"),
            Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                put_len(out, b'*', items.len());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Set(items) => {
                put_len(out, if r3 { b'~' } else { b'*' }, items.len());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Push(items) => {
                put_len(out, if r3 { b'>' } else { b'*' }, items.len());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if r3 {
                    put_len(out, b'%', pairs.len());
                } else {
                    put_len(out, b'*', pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Double(d) if r3 => put_line(out, b',', &format_double(*d)),
            Reply::Double(d) => put_bulk(out, format_double(*d).as_bytes()),
            Reply::DoubleText(t) if r3 => put_line(out, b',', t),
            Reply::DoubleText(t) => put_bulk(out, t.as_bytes()),
            Reply::Bool(b) if r3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::Bool(b) => put_int(out, i64::from(*b)),
            Reply::Verbatim(b) if r3 => {
                put_len(out, b'=', b.len() + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(b) => put_bulk(out, b),
            // Whole, for the rare caller that did not stream it; its size is
            // the client's choice, so the connection never takes this path.
            Reply::Sample(_) => {
                let mut s = crate::resp::stream::ReplyStream::new(proto, vec![self.clone()]);
                s.fill(out, usize::MAX);
            }
        }
    }

    /// Convenience for tests and small callers.
    pub fn to_bytes(&self, proto: Proto) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(proto, &mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_encodings() {
        let r = Reply::Map(vec![(Reply::bulk("a"), Reply::Int(1))]);
        assert_eq!(&r.to_bytes(Proto::Resp2)[..], b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(&r.to_bytes(Proto::Resp3)[..], b"%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(&Reply::Nil.to_bytes(Proto::Resp2)[..], b"$-1\r\n");
        assert_eq!(&Reply::NilArray.to_bytes(Proto::Resp2)[..], b"*-1\r\n");
        assert_eq!(&Reply::Nil.to_bytes(Proto::Resp3)[..], b"_\r\n");
        assert_eq!(&Reply::Double(1.5).to_bytes(Proto::Resp3)[..], b",1.5\r\n");
        assert_eq!(
            &Reply::Double(1.5).to_bytes(Proto::Resp2)[..],
            b"$3\r\n1.5\r\n"
        );
        assert_eq!(
            &Reply::error("ERR a\r\nb").to_bytes(Proto::Resp2)[..],
            b"-ERR a  b\r\n"
        );
    }

    #[test]
    fn doubles_like_redis() {
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(-2.5), "-2.5");
        // As redis-server 7.0.15 replies (ZSCORE, ZRANGE WITHSCORES).
        assert_eq!(format_double(0.1), "0.10000000000000001");
        assert_eq!(format_double(496944.0241305219), "496944.02413052192");
        assert_eq!(format_double(1e-7), "9.9999999999999995e-08");
        assert_eq!(
            format_double(123456789012345678.0),
            "1.2345678901234568e+17"
        );
        assert_eq!(format_double(1e20), "1e+20");
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(-0.0), "-0");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(1e21), "1e+21");
        assert_eq!(format_double(1.5e-7), "1.4999999999999999e-07");
        assert_eq!(format_double(1e16), "10000000000000000");
        assert_eq!(format_double(1e17), "1e+17");
        assert_eq!(format_double(5e-324), "4.9406564584124654e-324");
    }

    /// What the C library's printf makes of `%.17g`, the reference.
    fn c_g17(d: f64) -> String {
        let mut buf = [0u8; 64];
        // SAFETY: the buffer outlives the call, its size is passed, and the
        // format takes exactly one double.
        let n = unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.17g".as_ptr(), d) };
        String::from_utf8_lossy(&buf[..n.clamp(0, 63) as usize]).into_owned()
    }

    proptest::proptest! {
        #[test]
        fn doubles_match_c_printf(bits in proptest::prelude::any::<u64>(), small in -1e6f64..1e6) {
            for d in [f64::from_bits(bits), small, small / 1e9] {
                if d.is_finite() {
                    proptest::prop_assert_eq!(format_double(d), c_g17(d));
                }
            }
        }
    }
}
