//! Redis's RDB format: snapshot files, the full-resync payload and DUMP
//! payloads.
//!
//! We write version 10 (Redis 7.0) with plain encodings (strings, lists,
//! sets, sorted sets as binary doubles, hashes), which every Redis since
//! 5.0 loads and `redis-check-rdb` validates. We read what Redis 7.0 and
//! older write for the types we hold: int-encoded and LZF-compressed
//! strings, ziplists, listpacks, intsets and quicklists, and streams (see
//! `rdb/stream.rs`). Module types are refused with a clear error.
//!
//! Nothing is trusted: every length is checked against what is left, a
//! missing EOF or a wrong CRC-64 is an error, and the caller gets values
//! only from a file that loaded completely.

use crate::store::value::{sds, Sds, Value, ZSet};

mod stream;
use crc::{Crc, Digest, CRC_64_REDIS};
use std::collections::VecDeque;
use std::io::{self, Read, Write};

pub const RDB_VERSION: u16 = 10;

static CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_REDIS);

/// CRC-64 as Redis computes it (`crc64(0, ...)`).
pub fn crc64(data: &[u8]) -> u64 {
    CRC64.checksum(data)
}

// Value types.
const T_STRING: u8 = 0;
const T_LIST: u8 = 1;
const T_SET: u8 = 2;
const T_ZSET: u8 = 3;
const T_HASH: u8 = 4;
const T_ZSET_2: u8 = 5;
const T_MODULE: u8 = 6;
const T_MODULE_2: u8 = 7;
const T_HASH_ZIPMAP: u8 = 9;
const T_LIST_ZIPLIST: u8 = 10;
const T_SET_INTSET: u8 = 11;
const T_ZSET_ZIPLIST: u8 = 12;
const T_HASH_ZIPLIST: u8 = 13;
const T_LIST_QUICKLIST: u8 = 14;
const T_STREAM_LISTPACKS: u8 = 15;
const T_HASH_LISTPACK: u8 = 16;
const T_ZSET_LISTPACK: u8 = 17;
const T_LIST_QUICKLIST_2: u8 = 18;
const T_STREAM_LISTPACKS_2: u8 = 19;
const T_SET_LISTPACK: u8 = 20;
const T_STREAM_LISTPACKS_3: u8 = 21;

// Opcodes.
const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

// Special string encodings (after a 0b11 length prefix).
const ENC_INT8: u8 = 0;
const ENC_INT16: u8 = 1;
const ENC_INT32: u8 = 2;
const ENC_LZF: u8 = 3;

/// Quicklist 2 node containers.
const QUICKLIST_PLAIN: u64 = 1;
const QUICKLIST_PACKED: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("wrong signature, not an RDB file")]
    BadMagic,
    #[error("can't handle RDB format version {0}")]
    Version(u32),
    #[error("unexpected end of file (truncated or torn RDB)")]
    Truncated,
    #[error("corrupt RDB: {0}")]
    Corrupt(&'static str),
    #[error("wrong RDB checksum expected: {expected:016x} got: {got:016x}")]
    Checksum { expected: u64, got: u64 },
    #[error("unsupported value type {0} ({1}) in RDB")]
    Unsupported(u8, &'static str),
}

fn corrupt(what: &'static str) -> RdbError {
    RdbError::Corrupt(what)
}

// ---- encoding ---------------------------------------------------------------

/// RDB length encoding.
pub fn put_len(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A string, int-encoded when it is the canonical form of a 32-bit
/// integer (as Redis's `rdbTryIntegerEncoding`).
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 11 {
        if let Some(v) = crate::resp::parse_i64(s) {
            let mut buf = itoa::Buffer::new();
            if buf.format(v).as_bytes() == s {
                if let Ok(v) = i8::try_from(v) {
                    out.push(0xC0 | ENC_INT8);
                    out.push(v as u8);
                    return;
                }
                if let Ok(v) = i16::try_from(v) {
                    out.push(0xC0 | ENC_INT16);
                    out.extend_from_slice(&v.to_le_bytes());
                    return;
                }
                if let Ok(v) = i32::try_from(v) {
                    out.push(0xC0 | ENC_INT32);
                    out.extend_from_slice(&v.to_le_bytes());
                    return;
                }
            }
        }
    }
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn type_of(v: &Value) -> u8 {
    match v {
        Value::Str(_) => T_STRING,
        Value::List(_) => T_LIST,
        Value::Set(_) => T_SET,
        Value::ZSet(_) => T_ZSET_2,
        Value::Hash(_) => T_HASH,
        Value::Stream(_) => T_STREAM_LISTPACKS_2,
    }
}

/// The body of a value (what follows its type byte and key).
fn put_body(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => put_string(out, s),
        Value::List(l) => {
            put_len(out, l.len() as u64);
            for e in l.iter() {
                put_string(out, e);
            }
        }
        Value::Set(s) => {
            put_len(out, s.len() as u64);
            for e in s.iter() {
                put_string(out, e);
            }
        }
        Value::ZSet(z) => {
            put_len(out, z.len() as u64);
            for (m, score) in z.iter() {
                put_string(out, m);
                out.extend_from_slice(&score.to_le_bytes());
            }
        }
        Value::Hash(h) => {
            put_len(out, h.len() as u64);
            for (k, v) in h.iter() {
                put_string(out, k);
                put_string(out, v);
            }
        }
        Value::Stream(st) => stream::put_stream(out, st),
    }
}

/// One key as it appears in the keyspace section: [expiry], type, key,
/// value.
pub fn put_entry(out: &mut Vec<u8>, key: &[u8], value: &Value, expire_at: Option<u64>) {
    if let Some(at) = expire_at {
        out.push(OP_EXPIRETIME_MS);
        out.extend_from_slice(&at.to_le_bytes());
    }
    out.push(type_of(value));
    put_string(out, key);
    put_body(out, value);
}

/// Writes an RDB stream, computing its CRC-64 on the way.
pub struct RdbWriter<W: Write> {
    inner: W,
    digest: Digest<'static, u64>,
    written: u64,
}

impl<W: Write> RdbWriter<W> {
    /// Starts the file: magic, version, aux fields, the function libraries
    /// (where Redis puts them: before the first database), `SELECTDB 0`
    /// and the table size hints.
    pub fn start(
        inner: W,
        aux: &[(&str, String)],
        functions: &[bytes::Bytes],
        keys: usize,
        expires: usize,
    ) -> io::Result<Self> {
        let mut w = RdbWriter {
            inner,
            digest: CRC64.digest(),
            written: 0,
        };
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(format!("REDIS{RDB_VERSION:04}").as_bytes());
        for (k, v) in aux {
            head.push(OP_AUX);
            put_string(&mut head, k.as_bytes());
            put_string(&mut head, v.as_bytes());
        }
        put_functions(&mut head, functions);
        head.push(OP_SELECTDB);
        put_len(&mut head, 0);
        head.push(OP_RESIZEDB);
        put_len(&mut head, keys as u64);
        put_len(&mut head, expires as u64);
        w.write_raw(&head)?;
        Ok(w)
    }

    /// Appends bytes already in RDB form (entries from `put_entry`).
    pub fn write_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.digest.update(b);
        self.written += b.len() as u64;
        self.inner.write_all(b)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Ends the file (EOF opcode and checksum) and hands the sink back.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_raw(&[OP_EOF])?;
        let crc = self.digest.finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.written += 8;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// A whole RDB of `entries` (key, value, expiry) in memory.
pub fn to_vec<'a>(
    aux: &[(&str, String)],
    entries: impl IntoIterator<Item = (&'a [u8], &'a Value, Option<u64>)>,
) -> Vec<u8> {
    let entries: Vec<_> = entries.into_iter().collect();
    let expires = entries.iter().filter(|e| e.2.is_some()).count();
    let mut body = Vec::new();
    for (k, v, e) in &entries {
        put_entry(&mut body, k, v, *e);
    }
    let run = || -> io::Result<Vec<u8>> {
        let mut w = RdbWriter::start(Vec::new(), aux, &[], entries.len(), expires)?;
        w.write_raw(&body)?;
        w.finish()
    };
    // Writing to a Vec cannot fail.
    run().unwrap_or_default()
}

// ---- decoding ---------------------------------------------------------------

/// Reads from `inner`, feeding every byte to the CRC.
struct Input<R: Read> {
    inner: R,
    digest: Digest<'static, u64>,
}

impl<R: Read> Input<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), RdbError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => RdbError::Truncated,
            _ => RdbError::Io(e),
        })?;
        self.digest.update(buf);
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, RdbError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut b = [0u8; N];
        self.exact(&mut b)?;
        Ok(b)
    }

    /// `n` bytes, without trusting `n` for the allocation.
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, RdbError> {
        let mut v = Vec::with_capacity(usize::try_from(n.min(1 << 20)).unwrap_or(0));
        let got = (&mut self.inner)
            .take(n)
            .read_to_end(&mut v)
            .map_err(RdbError::Io)?;
        if got as u64 != n {
            return Err(RdbError::Truncated);
        }
        self.digest.update(&v);
        Ok(v)
    }

    /// A length, or the special encoding tag (`Err` side of the inner
    /// result) of a string.
    fn len_or_enc(&mut self) -> Result<Result<u64, u8>, RdbError> {
        let b = self.u8()?;
        Ok(match b >> 6 {
            0 => Ok(u64::from(b & 0x3f)),
            1 => Ok((u64::from(b & 0x3f) << 8) | u64::from(self.u8()?)),
            2 => match b {
                0x80 => Ok(u64::from(u32::from_be_bytes(self.array()?))),
                0x81 => Ok(u64::from_be_bytes(self.array()?)),
                _ => return Err(corrupt("unknown length encoding")),
            },
            _ => Err(b & 0x3f),
        })
    }

    fn len(&mut self) -> Result<u64, RdbError> {
        self.len_or_enc()?
            .map_err(|_| corrupt("encoded string where a length was expected"))
    }

    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.len_or_enc()? {
            Ok(n) => self.bytes(n),
            Err(ENC_INT8) => Ok((self.u8()? as i8).to_string().into_bytes()),
            Err(ENC_INT16) => Ok(i16::from_le_bytes(self.array()?).to_string().into_bytes()),
            Err(ENC_INT32) => Ok(i32::from_le_bytes(self.array()?).to_string().into_bytes()),
            Err(ENC_LZF) => {
                let clen = self.len()?;
                let len = self.len()?;
                let compressed = self.bytes(clen)?;
                lzf_decompress(&compressed, len).ok_or(corrupt("invalid LZF data"))
            }
            Err(_) => Err(corrupt("unknown string encoding")),
        }
    }

    /// The score of an old `ZSET` (type 3): a length-prefixed decimal.
    fn ascii_double(&mut self) -> Result<f64, RdbError> {
        match self.u8()? {
            255 => Ok(f64::NEG_INFINITY),
            254 => Ok(f64::INFINITY),
            253 => Err(corrupt("NaN score")),
            n => {
                let b = self.bytes(u64::from(n))?;
                parse_score(&b)
            }
        }
    }
}

fn parse_score(b: &[u8]) -> Result<f64, RdbError> {
    let v = crate::util::parse_float(b).ok_or(corrupt("invalid score"))?;
    if v.is_nan() {
        return Err(corrupt("NaN score"));
    }
    Ok(v)
}

fn cap(n: u64) -> usize {
    usize::try_from(n.min(1 << 16)).unwrap_or(0)
}

fn read_value<R: Read>(inp: &mut Input<R>, t: u8) -> Result<Value, RdbError> {
    Ok(match t {
        T_STRING => Value::Str(sds(&inp.string()?)),
        T_LIST => {
            let n = inp.len()?;
            let mut l = VecDeque::with_capacity(cap(n));
            for _ in 0..n {
                l.push_back(sds(&inp.string()?));
            }
            Value::List(Box::new(l))
        }
        T_SET => {
            let n = inp.len()?;
            let mut s = hashbrown::HashSet::with_capacity(cap(n));
            for _ in 0..n {
                s.insert(sds(&inp.string()?));
            }
            Value::Set(Box::new(s))
        }
        T_ZSET | T_ZSET_2 => {
            let n = inp.len()?;
            let mut z = ZSet::default();
            for _ in 0..n {
                let m = inp.string()?;
                let score = if t == T_ZSET_2 {
                    let v = f64::from_le_bytes(inp.array()?);
                    if v.is_nan() {
                        return Err(corrupt("NaN score"));
                    }
                    v
                } else {
                    inp.ascii_double()?
                };
                z.insert(&m, score);
            }
            Value::ZSet(Box::new(z))
        }
        T_HASH => {
            let n = inp.len()?;
            let mut h = hashbrown::HashMap::with_capacity(cap(n));
            for _ in 0..n {
                let k = inp.string()?;
                let v = inp.string()?;
                h.insert(sds(&k), sds(&v));
            }
            Value::Hash(Box::new(h))
        }
        T_LIST_ZIPLIST => Value::List(Box::new(ziplist(&inp.string()?)?.into())),
        T_LIST_QUICKLIST | T_LIST_QUICKLIST_2 => {
            let nodes = inp.len()?;
            let mut l = VecDeque::new();
            for _ in 0..nodes {
                let container = if t == T_LIST_QUICKLIST_2 {
                    inp.len()?
                } else {
                    QUICKLIST_PACKED
                };
                let blob = inp.string()?;
                match (t, container) {
                    (_, QUICKLIST_PLAIN) => l.push_back(sds(&blob)),
                    (T_LIST_QUICKLIST, _) => l.extend(ziplist(&blob)?),
                    (_, QUICKLIST_PACKED) => l.extend(listpack(&blob)?),
                    _ => return Err(corrupt("unknown quicklist container")),
                }
            }
            Value::List(Box::new(l))
        }
        T_SET_INTSET => Value::Set(Box::new(intset(&inp.string()?)?.into_iter().collect())),
        T_SET_LISTPACK => Value::Set(Box::new(listpack(&inp.string()?)?.into_iter().collect())),
        T_ZSET_ZIPLIST | T_ZSET_LISTPACK => {
            let items = packed_pairs(
                &inp.string()?,
                t == T_ZSET_ZIPLIST,
                "odd sorted set listpack",
            )?;
            let mut z = ZSet::default();
            for pair in items.chunks_exact(2) {
                if let [m, s] = pair {
                    z.insert(m, parse_score(s)?);
                }
            }
            Value::ZSet(Box::new(z))
        }
        T_HASH_ZIPLIST | T_HASH_LISTPACK => {
            let items = packed_pairs(&inp.string()?, t == T_HASH_ZIPLIST, "odd hash listpack")?;
            let mut h = hashbrown::HashMap::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                h.insert(k, v);
            }
            Value::Hash(Box::new(h))
        }
        T_STREAM_LISTPACKS => Value::Stream(Box::new(stream::read_stream(inp, 1)?)),
        T_STREAM_LISTPACKS_2 => Value::Stream(Box::new(stream::read_stream(inp, 2)?)),
        T_STREAM_LISTPACKS_3 => Value::Stream(Box::new(stream::read_stream(inp, 3)?)),
        T_MODULE | T_MODULE_2 => return Err(RdbError::Unsupported(t, "module")),
        T_HASH_ZIPMAP => return Err(RdbError::Unsupported(t, "zipmap hash (Redis 2.x)")),
        _ => return Err(RdbError::Unsupported(t, "unknown")),
    })
}

/// What a loaded file said about itself.
#[derive(Debug, Default, Clone)]
pub struct RdbMeta {
    pub version: u32,
    /// Aux fields (`redis-ver`, `repl-id`, `repl-offset`, ...).
    pub aux: Vec<(String, String)>,
    pub keys: u64,
    /// Keys whose TTL had passed (not handed to the caller when
    /// `skip_expired_before` was given).
    pub expired: u64,
    /// Keys of databases other than 0, which a slotway node does not have.
    pub skipped_other_db: u64,
    /// The sources of the function libraries (Redis 7), in file order.
    pub functions: Vec<Vec<u8>>,
}

impl RdbMeta {
    pub fn aux(&self, name: &str) -> Option<&str> {
        self.aux
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Loads an RDB stream, handing each key to `on_key`. The caller must not
/// use what it received if this returns an error (the file is torn or
/// corrupt). `skip_expired_before`: keys whose TTL is at or before this
/// unix ms are dropped (a master loading its own file), None keeps all
/// (a replica, whose master will DEL them).
pub fn load<R: Read>(
    inner: R,
    skip_expired_before: Option<u64>,
    mut on_key: impl FnMut(Sds, Value, Option<u64>),
) -> Result<RdbMeta, RdbError> {
    let mut inp = Input {
        inner,
        digest: CRC64.digest(),
    };
    let magic: [u8; 9] = inp.array()?;
    if magic.get(..5) != Some(b"REDIS") {
        return Err(RdbError::BadMagic);
    }
    let version: u32 = std::str::from_utf8(magic.get(5..).unwrap_or_default())
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(RdbError::BadMagic)?;
    if !(1..=u32::from(RDB_VERSION) + 1).contains(&version) {
        return Err(RdbError::Version(version));
    }
    let mut meta = RdbMeta {
        version,
        ..RdbMeta::default()
    };
    let mut db = 0u64;
    let mut expire: Option<u64> = None;
    loop {
        let t = inp.u8()?;
        match t {
            OP_EXPIRETIME_MS => {
                expire = Some(u64::from_le_bytes(inp.array()?));
                continue;
            }
            OP_EXPIRETIME => {
                expire = Some(u64::from(u32::from_le_bytes(inp.array()?)) * 1000);
                continue;
            }
            OP_IDLE => {
                inp.len()?;
                continue;
            }
            OP_FREQ => {
                inp.u8()?;
                continue;
            }
            OP_SELECTDB => {
                db = inp.len()?;
                continue;
            }
            OP_RESIZEDB => {
                inp.len()?;
                inp.len()?;
                continue;
            }
            OP_AUX => {
                let k = inp.string()?;
                let v = inp.string()?;
                meta.aux.push((
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ));
                continue;
            }
            OP_FUNCTION2 => {
                meta.functions.push(inp.string()?);
                continue;
            }
            OP_FUNCTION_PRE_GA => return Err(RdbError::Unsupported(t, "pre-GA function")),
            OP_MODULE_AUX => return Err(RdbError::Unsupported(t, "module aux data")),
            OP_EOF => break,
            _ => {}
        }
        let key = inp.string()?;
        let value = read_value(&mut inp, t)?;
        let at = expire.take();
        if db != 0 {
            meta.skipped_other_db += 1;
            continue;
        }
        if value.is_empty_collection() {
            continue;
        }
        if let (Some(at), Some(now)) = (at, skip_expired_before) {
            if at <= now {
                meta.expired += 1;
                continue;
            }
        }
        meta.keys += 1;
        on_key(sds(&key), value, at);
    }
    if version >= 5 {
        let computed = inp.digest.clone().finalize();
        let mut stored = [0u8; 8];
        inp.inner
            .read_exact(&mut stored)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => RdbError::Truncated,
                _ => RdbError::Io(e),
            })?;
        let stored = u64::from_le_bytes(stored);
        // Zero means the writer had checksums off (`rdbchecksum no`).
        if stored != 0 && stored != computed {
            return Err(RdbError::Checksum {
                expected: stored,
                got: computed,
            });
        }
    }
    Ok(meta)
}

// ---- DUMP payloads ----------------------------------------------------------

/// A DUMP payload as Redis makes it: the value, the RDB version (2 bytes
/// LE), then the CRC-64 of all that (8 bytes LE).
pub fn dump_payload(v: &Value) -> Vec<u8> {
    let mut out = vec![type_of(v)];
    put_body(&mut out, v);
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a DUMP payload (ours or a real Redis's); None when the version
/// is newer than ours, the checksum is wrong or the value is corrupt.
pub fn restore_payload(p: &[u8]) -> Option<Value> {
    let body_len = p.len().checked_sub(10)?;
    let (body, footer) = p.split_at(body_len);
    let version = u16::from_le_bytes([*footer.first()?, *footer.get(1)?]);
    if version > RDB_VERSION {
        return None;
    }
    let crc = u64::from_le_bytes(footer.get(2..10)?.try_into().ok()?);
    if crc64(p.get(..body_len + 2)?) != crc {
        return None;
    }
    let mut inp = Input {
        inner: body,
        digest: CRC64.digest(),
    };
    let t = inp.u8().ok()?;
    let v = read_value(&mut inp, t).ok()?;
    inp.inner.is_empty().then_some(v)
}

/// Each library as Redis's `rdbSaveFunctions` writes it: the opcode, then
/// the whole source as one string.
fn put_functions(out: &mut Vec<u8>, functions: &[bytes::Bytes]) {
    for code in functions {
        out.push(OP_FUNCTION2);
        put_string(out, code);
    }
}

/// FUNCTION DUMP's payload: the libraries as in an RDB, then the RDB
/// version and the CRC-64, like a key's DUMP.
pub fn functions_payload(functions: &[bytes::Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    put_functions(&mut out, functions);
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Why a FUNCTION RESTORE payload was refused, in Redis's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionsPayloadError {
    /// Too short, from a newer RDB version, or a wrong checksum.
    Footer,
    /// Something other than a library in it.
    NotAFunction,
    /// A library string that does not decode.
    Corrupt,
}

impl std::fmt::Display for FunctionsPayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FunctionsPayloadError::Footer => "DUMP payload version or checksum are wrong",
            FunctionsPayloadError::NotAFunction => "given type is not a function",
            FunctionsPayloadError::Corrupt => "failed loading the given functions payload",
        })
    }
}

/// The library sources of a FUNCTION DUMP payload (ours or Redis's).
pub fn parse_functions_payload(p: &[u8]) -> Result<Vec<Vec<u8>>, FunctionsPayloadError> {
    let body_len = p
        .len()
        .checked_sub(10)
        .ok_or(FunctionsPayloadError::Footer)?;
    let footer = p.get(body_len..).unwrap_or_default();
    let version = u16::from_le_bytes([
        footer.first().copied().unwrap_or(u8::MAX),
        footer.get(1).copied().unwrap_or(u8::MAX),
    ]);
    if version > RDB_VERSION {
        return Err(FunctionsPayloadError::Footer);
    }
    let crc = footer
        .get(2..10)
        .and_then(|c| <[u8; 8]>::try_from(c).ok())
        .map(u64::from_le_bytes)
        .ok_or(FunctionsPayloadError::Footer)?;
    // Redis accepts a zero checksum as "not computed".
    if crc != 0 && crc64(p.get(..body_len + 2).unwrap_or_default()) != crc {
        return Err(FunctionsPayloadError::Footer);
    }
    let mut inp = Input {
        inner: p.get(..body_len).unwrap_or_default(),
        digest: CRC64.digest(),
    };
    let mut out = Vec::new();
    while !inp.inner.is_empty() {
        let t = inp.u8().map_err(|_| FunctionsPayloadError::Corrupt)?;
        if t != OP_FUNCTION2 {
            return Err(FunctionsPayloadError::NotAFunction);
        }
        out.push(inp.string().map_err(|_| FunctionsPayloadError::Corrupt)?);
    }
    Ok(out)
}

// ---- compact encodings --------------------------------------------------------

/// LZF decompression (liblzf's format, as Redis writes it).
pub fn lzf_decompress(input: &[u8], out_len: u64) -> Option<Vec<u8>> {
    let out_len = usize::try_from(out_len).ok()?;
    // LZF expands at most ~ 264x; a claimed size beyond that is a lie.
    if out_len > input.len().saturating_mul(264).saturating_add(64) {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(out_len);
    let mut i = 0usize;
    while i < input.len() {
        let ctrl = usize::from(*input.get(i)?);
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(input.get(i..i + n)?);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i)?);
                i += 1;
            }
            let off = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            len += 2;
            let start = out.len().checked_sub(off)?;
            // Byte by byte: the source may overlap what is being written.
            for k in start..start + len {
                let b = *out.get(k)?;
                out.push(b);
            }
        }
        if out.len() > out_len {
            return None;
        }
    }
    (out.len() == out_len).then_some(out)
}

fn int_sds(v: i64) -> Sds {
    let mut buf = itoa::Buffer::new();
    sds(buf.format(v).as_bytes())
}

/// The elements of a ziplist (older Redis) or listpack holding pairs
/// (field and value, member and score).
fn packed_pairs(
    blob: &[u8],
    ziplist_format: bool,
    odd: &'static str,
) -> Result<Vec<Sds>, RdbError> {
    let items = if ziplist_format {
        ziplist(blob)?
    } else {
        listpack(blob)?
    };
    if items.len() % 2 != 0 {
        return Err(corrupt(odd));
    }
    Ok(items)
}

/// A listpack's or ziplist's header starts with its total length (u32,
/// little endian), which must be the blob's.
fn check_total(b: &[u8], bad: impl Fn() -> RdbError) -> Result<(), RdbError> {
    let total = b
        .get(..4)
        .and_then(|h| <[u8; 4]>::try_from(h).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(&bad)?;
    if total as usize != b.len() {
        return Err(bad());
    }
    Ok(())
}

/// The byte that starts the entry at `i`, or `None` at the end marker
/// (0xFF), which must be the blob's last byte.
fn entry_or_end(b: &[u8], i: usize, bad: impl Fn() -> RdbError) -> Result<Option<u8>, RdbError> {
    match b.get(i) {
        Some(0xFF) if i + 1 == b.len() => Ok(None),
        Some(0xFF) | None => Err(bad()),
        Some(e) => Ok(Some(*e)),
    }
}

/// The four bytes at `at`.
fn four(b: &[u8], at: usize) -> Option<[u8; 4]> {
    b.get(at..at.checked_add(4)?)?.try_into().ok()
}

/// A little-endian two's-complement integer of `raw.len()` (1 to 8) bytes.
fn le_signed(raw: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (k, byte) in raw.iter().enumerate() {
        v |= i64::from(*byte) << (8 * k);
    }
    // Sign-extend from n bytes.
    let shift = 64 - 8 * (raw.len().clamp(1, 8) as u32);
    (v << shift) >> shift
}

/// Walks a listpack or ziplist: its total length checked, then, after
/// `header` bytes, each entry until the end marker. `entry(i, first)`
/// decodes the entry at `i` (whose first byte is `first`) and says how
/// many bytes it spans.
fn walk_packed(
    b: &[u8],
    header: usize,
    bad: fn() -> RdbError,
    mut entry: impl FnMut(usize, u8) -> Result<(Sds, usize), RdbError>,
) -> Result<Vec<Sds>, RdbError> {
    check_total(b, bad)?;
    let mut out = Vec::new();
    let mut i = header;
    while let Some(first) = entry_or_end(b, i, bad)? {
        let (item, span) = entry(i, first)?;
        i = i.checked_add(span).ok_or_else(bad)?;
        out.push(item);
    }
    Ok(out)
}

/// Elements of a listpack (Redis 7's compact encoding).
pub fn listpack(b: &[u8]) -> Result<Vec<Sds>, RdbError> {
    let bad: fn() -> RdbError = || corrupt("invalid listpack");
    walk_packed(b, 6, bad, |i, e| {
        let int = |n: usize| b.get(i + 1..i + 1 + n).map(le_signed).ok_or_else(bad);
        let (item, len) = if e & 0x80 == 0 {
            (int_sds(i64::from(e & 0x7f)), 1)
        } else if e & 0xC0 == 0x80 {
            let n = usize::from(e & 0x3f);
            (sds(b.get(i + 1..i + 1 + n).ok_or_else(bad)?), 1 + n)
        } else if e & 0xE0 == 0xC0 {
            let raw = (i64::from(e & 0x1f) << 8) | i64::from(*b.get(i + 1).ok_or_else(bad)?);
            let v = if raw >= 1 << 12 { raw - (1 << 13) } else { raw };
            (int_sds(v), 2)
        } else if e & 0xF0 == 0xE0 {
            let n = (usize::from(e & 0x0f) << 8) | usize::from(*b.get(i + 1).ok_or_else(bad)?);
            (sds(b.get(i + 2..i + 2 + n).ok_or_else(bad)?), 2 + n)
        } else {
            match e {
                0xF0 => {
                    let n = u32::from_le_bytes(four(b, i + 1).ok_or_else(bad)?) as usize;
                    (sds(b.get(i + 5..i + 5 + n).ok_or_else(bad)?), 5 + n)
                }
                0xF1 => (int_sds(int(2)?), 3),
                0xF2 => (int_sds(int(3)?), 4),
                0xF3 => (int_sds(int(4)?), 5),
                0xF4 => (int_sds(int(8)?), 9),
                _ => return Err(bad()),
            }
        };
        let backlen = match len {
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2097150 => 3,
            2097151..=268435454 => 4,
            _ => 5,
        };
        Ok((item, len + backlen))
    })
}

/// Elements of a ziplist (Redis before 7).
pub fn ziplist(b: &[u8]) -> Result<Vec<Sds>, RdbError> {
    let bad: fn() -> RdbError = || corrupt("invalid ziplist");
    walk_packed(b, 10, bad, |start, first| {
        // The previous entry's length comes first: 1 byte, or 0xFE and 4.
        let i = start + if first < 254 { 1 } else { 5 };
        let e = *b.get(i).ok_or_else(bad)?;
        let le = |n: usize| b.get(i + 1..i + 1 + n).map(le_signed).ok_or_else(bad);
        let (item, len) = match e >> 6 {
            0 => {
                let n = usize::from(e & 0x3f);
                (sds(b.get(i + 1..i + 1 + n).ok_or_else(bad)?), 1 + n)
            }
            1 => {
                let n = (usize::from(e & 0x3f) << 8) | usize::from(*b.get(i + 1).ok_or_else(bad)?);
                (sds(b.get(i + 2..i + 2 + n).ok_or_else(bad)?), 2 + n)
            }
            2 => {
                let n = u32::from_be_bytes(four(b, i + 1).ok_or_else(bad)?) as usize;
                (sds(b.get(i + 5..i + 5 + n).ok_or_else(bad)?), 5 + n)
            }
            _ => match e {
                0xC0 => (int_sds(le(2)?), 3),
                0xD0 => (int_sds(le(4)?), 5),
                0xE0 => (int_sds(le(8)?), 9),
                0xF0 => (int_sds(le(3)?), 4),
                0xFE => (int_sds(le(1)?), 2),
                0xF1..=0xFD => (int_sds(i64::from(e & 0x0f) - 1), 1),
                _ => return Err(bad()),
            },
        };
        Ok((item, (i - start) + len))
    })
}

/// Members of an intset.
pub fn intset(b: &[u8]) -> Result<Vec<Sds>, RdbError> {
    let bad = || corrupt("invalid intset");
    let word = |at: usize| -> Result<u32, RdbError> {
        Ok(u32::from_le_bytes(
            b.get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ))
    };
    let width = word(0)? as usize;
    let n = word(4)? as usize;
    if !matches!(width, 2 | 4 | 8) || b.len() != 8 + width * n {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let raw = b.get(8 + k * width..8 + (k + 1) * width).ok_or_else(bad)?;
        let v = match width {
            2 => i64::from(i16::from_le_bytes(raw.try_into().map_err(|_| bad())?)),
            4 => i64::from(i32::from_le_bytes(raw.try_into().map_err(|_| bad())?)),
            _ => i64::from_le_bytes(raw.try_into().map_err(|_| bad())?),
        };
        out.push(int_sds(v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Vec<u8>, Value, Option<u64>)> {
        let mut z = ZSet::default();
        z.insert(b"a", 1.5);
        z.insert(b"b", f64::NEG_INFINITY);
        z.insert(b"c", -0.25);
        vec![
            (b"s".to_vec(), Value::Str(sds(b"hello")), None),
            (
                b"i".to_vec(),
                Value::Str(sds(b"-123456")),
                Some(1_900_000_000_000),
            ),
            (b"big".to_vec(), Value::Str(sds(b"12345678901234")), None),
            (b"lead0".to_vec(), Value::Str(sds(b"007")), None),
            (b"empty".to_vec(), Value::Str(sds(b"")), None),
            (
                b"l".to_vec(),
                Value::List(Box::new([sds(b"x"), sds(b"1"), sds(&[0u8; 300])].into())),
                None,
            ),
            (
                b"h".to_vec(),
                Value::Hash(Box::new(
                    [(sds(b"f"), sds(b"v")), (sds(b"n"), sds(b"7"))]
                        .into_iter()
                        .collect(),
                )),
                Some(1),
            ),
            (
                b"set".to_vec(),
                Value::Set(Box::new([sds(b"m"), sds(b"2")].into_iter().collect())),
                None,
            ),
            (b"z".to_vec(), Value::ZSet(Box::new(z)), None),
        ]
    }

    fn describe(v: &Value) -> String {
        match v {
            Value::Str(s) => format!("str {:?}", s),
            Value::List(l) => format!("list {:?}", l),
            Value::Hash(h) => {
                let mut v: Vec<_> = h.iter().collect();
                v.sort();
                format!("hash {v:?}")
            }
            Value::Set(s) => {
                let mut v: Vec<_> = s.iter().collect();
                v.sort();
                format!("set {v:?}")
            }
            Value::ZSet(z) => format!("zset {:?}", z.iter().collect::<Vec<_>>()),
            Value::Stream(st) => format!("stream {:?}", st.entries),
        }
    }

    fn file() -> Vec<u8> {
        let s = sample();
        to_vec(
            &[("redis-ver", "7.0.15".into()), ("redis-bits", "64".into())],
            s.iter().map(|(k, v, e)| (k.as_slice(), v, *e)),
        )
    }

    #[test]
    fn round_trip_every_type_and_ttl() {
        let f = file();
        let mut got = Vec::new();
        let meta = load(&f[..], None, |k, v, e| {
            got.push((k.to_vec(), describe(&v), e))
        })
        .unwrap();
        let want: Vec<_> = sample()
            .iter()
            .map(|(k, v, e)| (k.clone(), describe(v), *e))
            .collect();
        assert_eq!(got, want);
        assert_eq!(meta.aux("redis-ver"), Some("7.0.15"));
        assert_eq!(meta.aux("redis-bits"), Some("64"));
        // Expired keys can be dropped on load.
        let mut n = 0;
        let meta = load(&f[..], Some(1_000), |_, _, _| n += 1).unwrap();
        assert_eq!((n, meta.expired), (sample().len() - 1, 1));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let f = file();
        for cut in 0..f.len() {
            assert!(load(&f[..cut], None, |_, _, _| {}).is_err(), "cut at {cut}");
        }
        for i in 9..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x10;
            assert!(load(&bad[..], None, |_, _, _| {}).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn crc64_matches_redis() {
        // The check value of crc64.c's self-test.
        assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn int_encoding_only_for_canonical_32_bit_integers() {
        for (s, encoded) in [
            ("0", true),
            ("-1", true),
            ("127", true),
            ("-32768", true),
            ("2147483647", true),
            ("2147483648", false),
            ("007", false),
            ("+1", false),
            ("1 ", false),
        ] {
            let mut out = Vec::new();
            put_string(&mut out, s.as_bytes());
            assert_eq!(out[0] >> 6 == 3, encoded, "{s}");
            let mut inp = Input {
                inner: &out[..],
                digest: CRC64.digest(),
            };
            assert_eq!(inp.string().unwrap(), s.as_bytes());
        }
    }

    #[test]
    fn lengths_round_trip_at_the_encoding_boundaries() {
        for n in [
            0u64,
            63,
            64,
            16383,
            16384,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_len(&mut out, n);
            let mut inp = Input {
                inner: &out[..],
                digest: CRC64.digest(),
            };
            assert_eq!(inp.len().unwrap(), n);
        }
    }

    #[test]
    fn lzf_known_vectors_and_garbage() {
        // "aaaaaaaaaa": literal 'a' then a back-reference of 9 at distance 1.
        let c = [0x00, b'a', 0xE0, 0x00, 0x00];
        assert_eq!(lzf_decompress(&c, 10).as_deref(), Some(&b"aaaaaaaaaa"[..]));
        assert!(lzf_decompress(&c, 9).is_none());
        assert!(
            lzf_decompress(&[0x20, 0x05], 4).is_none(),
            "reference before start"
        );
        assert!(lzf_decompress(&[0x05, b'a'], 6).is_none(), "short literal");
    }

    #[test]
    fn ziplist_and_intset_decoding() {
        // A ziplist of "ab", 12, -2, 300 (hand-built like ziplist.c does).
        let mut zl = vec![0u8; 10];
        let entries: Vec<Vec<u8>> = vec![
            vec![0x02, b'a', b'b'],
            vec![0xFD],       // immediate 12
            vec![0xFE, 0xFE], // int8 -2
            vec![0xC0, 0x2C, 0x01],
        ];
        let mut prev = 0u8;
        for e in &entries {
            zl.push(prev);
            zl.extend_from_slice(e);
            prev = (e.len() + 1) as u8;
        }
        zl.push(0xFF);
        let total = zl.len() as u32;
        zl[..4].copy_from_slice(&total.to_le_bytes());
        let got: Vec<String> = ziplist(&zl)
            .unwrap()
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(got, ["ab", "12", "-2", "300"]);
        let mut is = Vec::new();
        is.extend_from_slice(&2u32.to_le_bytes());
        is.extend_from_slice(&2u32.to_le_bytes());
        is.extend_from_slice(&(-5i16).to_le_bytes());
        is.extend_from_slice(&7i16.to_le_bytes());
        let got: Vec<String> = intset(&is)
            .unwrap()
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(got, ["-5", "7"]);
        assert!(intset(&is[..is.len() - 1]).is_err());
    }

    #[test]
    fn a_real_redis_7_file_loads() {
        let f = include_bytes!("../../tests/fixtures/redis-7.0.15.rdb");
        let mut keys = std::collections::BTreeMap::new();
        let meta = load(&f[..], None, |k, v, e| {
            keys.insert(String::from_utf8_lossy(&k).into_owned(), (v, e));
        })
        .unwrap();
        assert_eq!(meta.aux("redis-ver"), Some("7.0.15"));
        assert_eq!(keys.len(), 18);
        let s = |k: &str| match &keys[k].0 {
            Value::Str(s) => String::from_utf8_lossy(s).into_owned(),
            v => panic!("{k}: {v:?}"),
        };
        assert_eq!(s("str"), "hello");
        assert_eq!(s("int"), "12345");
        assert_eq!(s("neg"), "-42");
        assert_eq!(s("big"), "123456789012345");
        assert_eq!(s("long"), "abcabcabc".repeat(20));
        assert!(keys["ttl"].1.is_some());
        let list = |k: &str| match &keys[k].0 {
            Value::List(l) => l
                .iter()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect::<Vec<_>>(),
            v => panic!("{k}: {v:?}"),
        };
        assert_eq!(list("smalllist"), ["a", "b", "1", "2", "300", "-70000", ""]);
        let big = list("biglist");
        assert_eq!(big.len(), 2000);
        assert_eq!(big[1999], "element1999");
        assert_eq!(list("hugeel")[0].len(), 10000);
        match &keys["smallhash"] {
            (Value::Hash(h), Some(4102444800000)) => {
                assert_eq!(h.get(&b"f2"[..]).map(|v| v.as_slice()), Some(&b"2"[..]));
                assert_eq!(h.len(), 3);
            }
            v => panic!("{v:?}"),
        }
        for (k, n) in [("bighash", 300), ("hugehash", 600), ("hlong", 1)] {
            assert!(matches!(&keys[k].0, Value::Hash(h) if h.len() == n), "{k}");
        }
        match &keys["intset"].0 {
            Value::Set(s) => {
                assert_eq!(s.len(), 6);
                assert!(s.contains(&b"9999999999"[..]) && s.contains(&b"-5"[..]));
            }
            v => panic!("{v:?}"),
        }
        for (k, n) in [("strset", 3), ("bigset", 600)] {
            assert!(matches!(&keys[k].0, Value::Set(s) if s.len() == n), "{k}");
        }
        match &keys["smallz"].0 {
            Value::ZSet(z) => {
                assert_eq!(z.score(b"b"), Some(2.5));
                assert_eq!(z.score(b"c"), Some(-3.0));
                assert_eq!(z.score(b"d"), Some(f64::INFINITY));
            }
            v => panic!("{v:?}"),
        }
        assert!(
            matches!(&keys["bigz"].0, Value::ZSet(z) if z.len() == 300 && z.score(b"zm7") == Some(7.5))
        );
    }

    #[test]
    fn dump_payloads_round_trip_and_check_their_footer() {
        for (_, v, _) in sample() {
            let p = dump_payload(&v);
            assert_eq!(describe(&restore_payload(&p).unwrap()), describe(&v));
            for cut in 0..p.len() {
                assert!(restore_payload(&p[..cut]).is_none());
            }
            let mut bad = p.clone();
            let n = bad.len();
            bad[n - 10] = 11; // a version from the future
            assert!(restore_payload(&bad).is_none());
        }
        // A payload from redis-server 7.0.15: DUMP of `RPUSH dl a`.
        let real = b"\x12\x01\x02\x0a\x0a\x00\x00\x00\x01\x00\x81\x61\x02\xff\x0a\x00\x09\xb9\xed\xf5\x94\xde\xd9\x95";
        assert!(
            matches!(restore_payload(real), Some(Value::List(l)) if l.len() == 1 && l[0].as_slice() == b"a")
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = load(&data[..], None, |_, _, _| {});
                let mut with_magic = b"REDIS0010".to_vec();
                with_magic.extend_from_slice(&data);
                let _ = load(&with_magic[..], None, |_, _, _| {});
                let _ = restore_payload(&data);
                let _ = listpack(&data);
                let _ = ziplist(&data);
                let _ = intset(&data);
                let _ = lzf_decompress(&data, data.len() as u64 * 3);
            }

            #[test]
            fn strings_round_trip(s in proptest::collection::vec(any::<u8>(), 0..300)) {
                let v = Value::Str(sds(&s));
                let p = dump_payload(&v);
                prop_assert!(matches!(restore_payload(&p), Some(Value::Str(b)) if b.as_slice() == &s[..]));
            }
        }
    }
}
