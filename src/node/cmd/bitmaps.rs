//! Bitmap commands over string values: SETBIT, GETBIT, BITCOUNT, BITPOS,
//! BITOP and BITFIELD / BITFIELD_RO, with redis-server 7.0's replies, errors
//! and limits.

use super::flags::*;
use super::Argv;
use super::{err, get_string, int_arg, is, not_integer, syntax_error, wrongtype, CmdResult};
use super::{CommandSpec, Ctx};
use crate::resp::{parse_i64, Reply};
use crate::store::{sds, Db, Value};
use bytes::Bytes;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("setbit", 4, WRITE | DENYOOM, [1, 1, 1], setbit),
    CommandSpec::new("getbit", 3, READONLY | FAST, [1, 1, 1], getbit),
    CommandSpec::new("bitcount", -2, READONLY, [1, 1, 1], bitcount),
    CommandSpec::new("bitpos", -3, READONLY, [1, 1, 1], bitpos),
    CommandSpec::new("bitop", -4, WRITE | DENYOOM, [2, -1, 1], bitop),
    CommandSpec::new("bitfield", -2, WRITE | DENYOOM, [1, 1, 1], bitfield),
    CommandSpec::new("bitfield_ro", -2, READONLY | FAST, [1, 1, 1], bitfield_ro),
];

const OFFSET_ERR: &str = "ERR bit offset is not an integer or out of range";
const BIT_ERR: &str = "ERR bit is not an integer or out of range";
const TYPE_ERR: &str =
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

fn offset_error() -> Reply {
    err(OFFSET_ERR)
}

/// A bit offset argument. With `hash_bits`, `#N` means N fields of that
/// width (BITFIELD). Offsets whose byte lies at or past
/// proto-max-bulk-len are refused, except from our master or the AOF:
/// Redis obeys those whatever its own limit, so a replica with a smaller
/// limit than its master still follows it.
fn bit_offset(ctx: &Ctx, arg: &[u8], hash_bits: Option<u32>) -> Result<u64, Reply> {
    let (digits, scale) = match (arg.first(), hash_bits) {
        (Some(b'#'), Some(bits)) => (arg.get(1..).unwrap_or_default(), Some(bits)),
        _ => (arg, None),
    };
    let mut n = parse_i64(digits).ok_or_else(offset_error)?;
    if let Some(bits) = scale {
        // Redis multiplies in a C long long, which wraps on the machines it
        // runs on; wrapping keeps `#N` answers identical for huge N.
        n = n.wrapping_mul(i64::from(bits));
    }
    let n = u64::try_from(n).map_err(|_| offset_error())?;
    let limit = ctx.shared.config.load().proto_max_bulk_len as u64;
    if !ctx.client.is_master && (n >> 3) >= limit {
        return Err(offset_error());
    }
    Ok(n)
}

/// The byte holding bit `offset`, as an index.
fn byte_index(offset: u64) -> Result<usize, Reply> {
    usize::try_from(offset >> 3).map_err(|_| offset_error())
}

/// The mask of bit `offset` inside its byte (bit 0 is the most significant).
fn bit_mask(offset: u64) -> u8 {
    0x80 >> (offset & 7)
}

/// `n` zero bytes, or an error instead of an abort when a master asks for
/// more memory than there is (its offsets skip the size limit).
fn zeros(n: usize) -> Result<Vec<u8>, Reply> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| offset_error())?;
    v.resize(n, 0);
    Ok(v)
}

/// A string value for a write: looked up like Redis's `lookupKeyWrite`,
/// which counts no keyspace hit or miss.
fn string_for_write<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Result<Option<&'d [u8]>, Reply> {
    match db.peek(key, now) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Str(s) => Ok(Some(s.as_slice())),
            _ => Err(wrongtype()),
        },
    }
}

/// Replaces the bytes of an existing string key, keeping its TTL and its
/// place in the table.
fn replace_bytes(ctx: &mut Ctx, key: &[u8], bytes: &[u8]) {
    if let Some(Value::Str(s)) = ctx.db.get_mut(key, ctx.now) {
        *s = sds(bytes);
    }
}

// ---- SETBIT / GETBIT --------------------------------------------------------

fn setbit(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let offset = bit_offset(ctx, a.at(2)?, None)?;
    let on = match parse_i64(a.at(3)?) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(err(BIT_ERR)),
    };
    let key = a.at(1)?;
    let byte = byte_index(offset)?;
    let mask = bit_mask(offset);
    enum Plan {
        Create,
        Grow(usize),
        Flip,
    }
    let (old, plan) = match string_for_write(ctx.db, key, ctx.now)? {
        None => (false, Plan::Create),
        Some(s) => match s.get(byte) {
            None => (false, Plan::Grow(s.len())),
            Some(&b) => {
                let old = b & mask != 0;
                if old == on {
                    // Nothing changes: no write, so no propagation and no
                    // WATCH invalidation, as in Redis.
                    return Ok(Reply::Int(i64::from(old)));
                }
                (old, Plan::Flip)
            }
        },
    };
    let bit = if on { mask } else { 0 };
    match plan {
        Plan::Create => {
            let mut v = zeros(byte + 1)?;
            if let Some(b) = v.last_mut() {
                *b = bit;
            }
            ctx.db.set(key, Value::Str(sds(&v)));
        }
        Plan::Grow(len) => {
            // The bit lands in the new zero tail: append it, the existing
            // bytes stay where they are.
            let mut tail = zeros(byte + 1 - len)?;
            if let Some(b) = tail.last_mut() {
                *b = bit;
            }
            if let Some(Value::Str(s)) = ctx.db.get_mut(key, ctx.now) {
                s.extend_from_slice(&tail);
            }
        }
        // In place: a bit of a large bitmap must not cost a copy of it.
        Plan::Flip => {
            if let Some(Value::Str(s)) = ctx.db.get_mut(key, ctx.now) {
                if let Some(b) = s.as_mut_slice().get_mut(byte) {
                    *b ^= mask;
                }
            }
        }
    }
    Ok(Reply::Int(i64::from(old)))
}

fn getbit(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let offset = bit_offset(ctx, a.at(2)?, None)?;
    let Some(s) = get_string(ctx.db, a.at(1)?, ctx.now)? else {
        return Ok(Reply::Int(0));
    };
    let set = usize::try_from(offset >> 3)
        .ok()
        .and_then(|i| s.get(i))
        .is_some_and(|b| b & bit_mask(offset) != 0);
    Ok(Reply::Int(i64::from(set)))
}

// ---- BITCOUNT / BITPOS ------------------------------------------------------

fn popcount(s: &[u8]) -> i64 {
    let words = s.chunks_exact(8);
    let tail: i64 = words
        .remainder()
        .iter()
        .map(|b| i64::from(b.count_ones()))
        .sum();
    words
        .map(|w| {
            let mut x = [0u8; 8];
            x.copy_from_slice(w);
            i64::from(u64::from_ne_bytes(x).count_ones())
        })
        .sum::<i64>()
        + tail
}

/// BIT or BYTE, the unit of a range.
fn range_unit(arg: Option<&Bytes>) -> Result<bool, Reply> {
    match arg {
        None => Ok(false),
        Some(u) if is(u, "bit") => Ok(true),
        Some(u) if is(u, "byte") => Ok(false),
        Some(_) => Err(syntax_error()),
    }
}

/// A range normalised the Redis way: negatives count from the end, then
/// clamped to the value (`total` is its length in the range's unit).
fn normalise(start: i64, end: i64, total: i64) -> (i64, i64) {
    let mut s = if start < 0 {
        total.saturating_add(start)
    } else {
        start
    };
    let mut e = if end < 0 {
        total.saturating_add(end)
    } else {
        end
    };
    s = s.max(0);
    e = e.max(0);
    if e >= total {
        e = total - 1;
    }
    (s, e)
}

/// A bit range as byte range plus the masks of the bits outside it in its
/// first byte (high bits) and last byte (low bits).
fn bit_edges(start: i64, end: i64) -> (i64, i64, u8, u8) {
    let first = !((1u32 << (8 - (start & 7))) - 1) as u8;
    let last = ((1u32 << (7 - (end & 7))) - 1) as u8;
    (start >> 3, end >> 3, first, last)
}

fn byte_at(s: &[u8], i: i64) -> u8 {
    usize::try_from(i)
        .ok()
        .and_then(|i| s.get(i))
        .copied()
        .unwrap_or(0)
}

fn slice_of(s: &[u8], from: i64, len: i64) -> &[u8] {
    let (Ok(from), Ok(len)) = (usize::try_from(from), usize::try_from(len)) else {
        return &[];
    };
    s.get(from..from.saturating_add(len)).unwrap_or_default()
}

fn bitcount(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    // The key comes first: a missing key answers 0 whatever the arguments.
    let Some(s) = get_string(ctx.db, a.at(1)?, ctx.now)? else {
        return Ok(Reply::Int(0));
    };
    if a.len() == 2 {
        return Ok(Reply::Int(popcount(s)));
    }
    if a.len() != 4 && a.len() != 5 {
        return Err(syntax_error());
    }
    let (start, end) = (int_arg(a.at(2)?)?, int_arg(a.at(3)?)?);
    // Redis answers this one before it looks at the unit.
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::Int(0));
    }
    let bit = range_unit(a.get(4))?;
    let len = s.len() as i64;
    let (start, end) = normalise(start, end, if bit { len << 3 } else { len });
    if start > end {
        return Ok(Reply::Int(0));
    }
    let (start, end, first, last) = if bit {
        bit_edges(start, end)
    } else {
        (start, end, 0, 0)
    };
    let count = popcount(slice_of(s, start, end - start + 1))
        - i64::from((byte_at(s, start) & first).count_ones())
        - i64::from((byte_at(s, end) & last).count_ones());
    Ok(Reply::Int(count))
}

/// Position of the first `bit` in `s`. No 1 found is -1; no 0 found is
/// the first position past `s`, as if the string went on with zeros.
fn first_bit(s: &[u8], bit: bool) -> i64 {
    let skip = if bit { 0x00 } else { 0xff };
    match s.iter().position(|&b| b != skip) {
        Some(i) => {
            let b = s.get(i).copied().unwrap_or(skip);
            let within = if bit {
                b.leading_zeros()
            } else {
                b.leading_ones()
            };
            (i as i64) * 8 + i64::from(within)
        }
        None if bit => -1,
        None => (s.len() as i64) * 8,
    }
}

fn bitpos(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let bit = match parse_i64(a.at(2)?) {
        Some(0) => false,
        Some(1) => true,
        Some(_) => return Err(err("ERR The bit argument must be 1 or 0.")),
        None => return Err(not_integer()),
    };
    // A missing key is an endless run of zeros.
    let Some(s) = get_string(ctx.db, a.at(1)?, ctx.now)? else {
        return Ok(Reply::Int(if bit { -1 } else { 0 }));
    };
    let len = s.len() as i64;
    let (mut start, end, end_given, first, last) = match a.len() {
        3 => (0, len - 1, false, 0, 0),
        4..=6 => {
            let start = int_arg(a.at(3)?)?;
            let unit_bit = range_unit(a.get(5))?;
            let (end, end_given) = match a.get(4) {
                Some(e) => (int_arg(e)?, true),
                None => (len - 1, false),
            };
            let total = if unit_bit { len << 3 } else { len };
            let (start, end) = normalise(start, end, total);
            if unit_bit && start <= end {
                let (s, e, f, l) = bit_edges(start, end);
                (s, e, end_given, f, l)
            } else {
                (start, end, end_given, 0, 0)
            }
        }
        _ => return Err(syntax_error()),
    };
    if start > end {
        return Ok(Reply::Int(-1));
    }
    // Edge bytes outside a BIT range are forced to the value not sought.
    let hide = |b: u8, mask: u8| if bit { b & !mask } else { b | mask };
    let mut bytes = end - start + 1;
    let pos = 'found: {
        if first != 0 {
            let mut b = hide(byte_at(s, start), first);
            if last != 0 && bytes == 1 {
                b = hide(b, last);
            }
            let pos = first_bit(&[b], bit);
            if bytes == 1 || (pos != -1 && pos != 8) {
                break 'found pos;
            }
            start += 1;
            bytes -= 1;
        }
        let whole = bytes - i64::from(last != 0);
        if whole > 0 {
            let pos = first_bit(slice_of(s, start, whole), bit);
            if bytes == whole || (pos != -1 && pos != whole * 8) {
                break 'found pos;
            }
            start += whole;
            bytes -= whole;
        }
        first_bit(&[hide(byte_at(s, end), last)], bit)
    };
    // With an explicit end the zeros past the value are not in range.
    if end_given && !bit && pos == bytes * 8 {
        return Ok(Reply::Int(-1));
    }
    Ok(Reply::Int(if pos == -1 { -1 } else { pos + start * 8 }))
}

// ---- BITOP ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum BitOp {
    And,
    Or,
    Xor,
    Not,
}

fn bitop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let name = a.at(1)?;
    let op = [
        ("and", BitOp::And),
        ("or", BitOp::Or),
        ("xor", BitOp::Xor),
        ("not", BitOp::Not),
    ]
    .into_iter()
    .find(|(n, _)| is(name, n))
    .map(|(_, op)| op)
    .ok_or_else(syntax_error)?;
    if op == BitOp::Not && a.len() != 4 {
        return Err(err(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    let (dest, sources) = (a.at(2)?, a.rest(3));
    // First pass: types and the result's length, before anything is built.
    let mut maxlen = 0;
    for k in sources {
        if let Some(s) = get_string(ctx.db, k, ctx.now)? {
            maxlen = maxlen.max(s.len());
        }
    }
    if maxlen == 0 {
        ctx.db.remove(dest, ctx.now);
        return Ok(Reply::Int(0));
    }
    let mut res = zeros(maxlen)?;
    for (i, k) in sources.iter().enumerate() {
        // Missing keys are empty strings: zeros for the whole length.
        let src = match ctx.db.peek(k, ctx.now) {
            Some(e) => match &e.value {
                Value::Str(s) => s.as_slice(),
                _ => &[],
            },
            None => &[],
        };
        if i == 0 {
            if let Some(dst) = res.get_mut(..src.len()) {
                dst.copy_from_slice(src);
            }
            if op == BitOp::Not {
                res.iter_mut().for_each(|b| *b = !*b);
            }
            continue;
        }
        match op {
            BitOp::And => {
                res.iter_mut()
                    .zip(src.iter().chain(std::iter::repeat(&0)))
                    .for_each(|(r, b)| *r &= b);
            }
            BitOp::Or => res.iter_mut().zip(src).for_each(|(r, b)| *r |= b),
            BitOp::Xor => res.iter_mut().zip(src).for_each(|(r, b)| *r ^= b),
            BitOp::Not => {}
        }
    }
    ctx.db.set(dest, Value::Str(sds(&res)));
    Ok(Reply::Int(maxlen as i64))
}

// ---- BITFIELD ---------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy, PartialEq)]
enum FieldOp {
    Get,
    Set,
    Incrby,
}

struct Field {
    op: FieldOp,
    offset: u64,
    /// SET's value or INCRBY's increment.
    value: i64,
    overflow: Overflow,
    bits: u32,
    signed: bool,
}

/// `i1`..`i64` or `u1`..`u63` (a u64 could not be replied as an integer).
fn field_type(arg: &[u8]) -> Result<(bool, u32), Reply> {
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(err(TYPE_ERR)),
    };
    let max = if signed { 64 } else { 63 };
    match parse_i64(arg.get(1..).unwrap_or_default()) {
        Some(n) if (1..=max).contains(&n) => Ok((signed, n as u32)),
        _ => Err(err(TYPE_ERR)),
    }
}

fn get_unsigned(p: &[u8], offset: u64, bits: u32) -> u64 {
    (0..u64::from(bits)).fold(0u64, |v, j| {
        let at = offset + j;
        let b = usize::try_from(at >> 3)
            .ok()
            .and_then(|i| p.get(i))
            .copied()
            .unwrap_or(0);
        (v << 1) | u64::from(b & bit_mask(at) != 0)
    })
}

fn get_signed(p: &[u8], offset: u64, bits: u32) -> i64 {
    let v = get_unsigned(p, offset, bits);
    // Sign-extend from the field's top bit.
    if bits < 64 && v & (1u64 << (bits - 1)) != 0 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

fn set_unsigned(p: &mut [u8], offset: u64, bits: u32, value: u64) {
    for j in 0..u64::from(bits) {
        let at = offset + j;
        let on = value & (1u64 << (u64::from(bits) - 1 - j)) != 0;
        let Some(b) = usize::try_from(at >> 3).ok().and_then(|i| p.get_mut(i)) else {
            continue;
        };
        if on {
            *b |= bit_mask(at);
        } else {
            *b &= !bit_mask(at);
        }
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: None if `value + incr` fits,
/// else the value to store under WRAP / SAT (unused under FAIL).
fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> Option<u64> {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = value.wrapping_neg() as i64;
    let wrap = || value.wrapping_add(incr as u64) & !u64::MAX.checked_shl(bits).unwrap_or(0);
    if value > max || (incr > 0 && incr > maxincr) {
        Some(if ow == Overflow::Wrap { wrap() } else { max })
    } else if incr < 0 && incr < minincr {
        Some(if ow == Overflow::Wrap { wrap() } else { 0 })
    } else {
        None
    }
}

/// Redis's `checkSignedBitfieldOverflow`, same contract.
fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        c as i64
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        Some(if ow == Overflow::Wrap { wrap() } else { max })
    } else if value < min
        || (bits != 64 && incr < minincr)
        || (value < 0 && incr < 0 && incr < minincr)
    {
        Some(if ow == Overflow::Wrap { wrap() } else { min })
    } else {
        None
    }
}

/// Runs one SET or INCRBY on `p`: the reply, and whether the bits changed.
fn write_field(p: &mut [u8], f: &Field) -> (Reply, bool) {
    let incr = f.op == FieldOp::Incrby;
    if f.signed {
        let old = get_signed(p, f.offset, f.bits);
        let (new, over) = if incr {
            let over = signed_overflow(old, f.value, f.bits, f.overflow);
            (over.unwrap_or(old.wrapping_add(f.value)), over.is_some())
        } else {
            let over = signed_overflow(f.value, 0, f.bits, f.overflow);
            (over.unwrap_or(f.value), over.is_some())
        };
        if over && f.overflow == Overflow::Fail {
            return (Reply::Nil, false);
        }
        set_unsigned(p, f.offset, f.bits, new as u64);
        (Reply::Int(if incr { new } else { old }), new != old)
    } else {
        let old = get_unsigned(p, f.offset, f.bits);
        let (new, over) = if incr {
            let over = unsigned_overflow(old, f.value, f.bits, f.overflow);
            (
                over.unwrap_or(old.wrapping_add(f.value as u64)),
                over.is_some(),
            )
        } else {
            let over = unsigned_overflow(f.value as u64, 0, f.bits, f.overflow);
            (over.unwrap_or(f.value as u64), over.is_some())
        };
        if over && f.overflow == Overflow::Fail {
            return (Reply::Nil, false);
        }
        set_unsigned(p, f.offset, f.bits, new);
        // Fields are at most 63 bits wide, so the value fits an i64.
        (
            Reply::Int((if incr { new } else { old }) as i64),
            new != old,
        )
    }
}

fn read_field(p: &[u8], f: &Field) -> Reply {
    if f.signed {
        Reply::Int(get_signed(p, f.offset, f.bits))
    } else {
        Reply::Int(get_unsigned(p, f.offset, f.bits) as i64)
    }
}

/// Parses every subcommand first, as Redis does: any error leaves the key
/// untouched.
fn parse_fields(ctx: &Ctx, a: &[Bytes]) -> Result<Vec<Field>, Reply> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < a.len() {
        let sub = a.at(j)?;
        let remaining = a.len() - j - 1;
        let op = if is(sub, "get") && remaining >= 2 {
            FieldOp::Get
        } else if is(sub, "set") && remaining >= 3 {
            FieldOp::Set
        } else if is(sub, "incrby") && remaining >= 3 {
            FieldOp::Incrby
        } else if is(sub, "overflow") && remaining >= 1 {
            let kind = a.at(j + 1)?;
            overflow = [
                ("wrap", Overflow::Wrap),
                ("sat", Overflow::Sat),
                ("fail", Overflow::Fail),
            ]
            .into_iter()
            .find(|(n, _)| is(kind, n))
            .map(|(_, o)| o)
            .ok_or_else(|| err("ERR Invalid OVERFLOW type specified"))?;
            j += 2;
            continue;
        } else {
            return Err(syntax_error());
        };
        let (signed, bits) = field_type(a.at(j + 1)?)?;
        let offset = bit_offset(ctx, a.at(j + 2)?, Some(bits))?;
        let value = if op == FieldOp::Get {
            0
        } else {
            int_arg(a.at(j + 3)?)?
        };
        fields.push(Field {
            op,
            offset,
            value,
            overflow,
            bits,
            signed,
        });
        j += if op == FieldOp::Get { 3 } else { 4 };
    }
    Ok(fields)
}

fn bitfield_generic(ctx: &mut Ctx, a: &[Bytes], read_only: bool) -> CmdResult {
    let fields = parse_fields(ctx, a)?;
    let key = a.at(1)?;
    let highest = fields
        .iter()
        .filter(|f| f.op != FieldOp::Get)
        .map(|f| f.offset + u64::from(f.bits) - 1)
        .max();
    let Some(highest) = highest else {
        // Only GETs: a read, zeros past the end of the value.
        let s = get_string(ctx.db, key, ctx.now)?.unwrap_or_default();
        return Ok(Reply::Array(
            fields.iter().map(|f| read_field(s, f)).collect(),
        ));
    };
    if read_only {
        return Err(err("ERR BITFIELD_RO only supports the GET subcommand"));
    }
    let need = byte_index(highest)? + 1;
    let (mut buf, existed) = match string_for_write(ctx.db, key, ctx.now)? {
        Some(s) => (s.to_vec(), true),
        None => (Vec::new(), false),
    };
    let grown = buf.len() < need;
    if grown {
        let more = zeros(need - buf.len())?;
        buf.extend_from_slice(&more);
    }
    let mut changed = false;
    let replies = fields
        .iter()
        .map(|f| {
            if f.op == FieldOp::Get {
                read_field(&buf, f)
            } else {
                let (r, c) = write_field(&mut buf, f);
                changed |= c;
                r
            }
        })
        .collect();
    // Redis creates or pads the key even when every write then fails
    // under OVERFLOW FAIL; the keyspace here ends up the same.
    if !existed {
        ctx.db.set(key, Value::Str(sds(&buf)));
    } else if grown || changed {
        replace_bytes(ctx, key, &buf);
    }
    Ok(Reply::Array(replies))
}

fn bitfield(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    bitfield_generic(ctx, a, false)
}

fn bitfield_ro(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    bitfield_generic(ctx, a, true)
}

#[cfg(test)]
mod tests {
    use crate::node::cmd::execute;
    use crate::node::cmd::harness::Harness;
    use crate::resp::Reply;
    use bytes::Bytes;

    const NOW: u64 = 1_700_000_000_000;
    const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
    const OFFSET: &str = "ERR bit offset is not an integer or out of range";
    const TYPE: &str =
        "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

    fn raw(h: &mut Harness, words: &[&[u8]]) -> Reply {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w)).collect();
        let mut ctx = h.state.ctx(&mut h.client, &h.shared, NOW);
        execute(&mut ctx, &args)
    }

    fn run(h: &mut Harness, cmd: &str) -> Reply {
        let words: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
        raw(h, &words)
    }

    fn ints(v: &[i64]) -> Reply {
        Reply::Array(v.iter().map(|&n| Reply::Int(n)).collect())
    }

    fn error(msg: &str) -> Reply {
        Reply::Error(msg.to_string())
    }

    fn value(h: &mut Harness, key: &str) -> Option<Vec<u8>> {
        match run(h, &format!("get {key}")) {
            Reply::Nil => None,
            r => Some(r.as_bulk().unwrap().to_vec()),
        }
    }

    /// Runs `cmd` with propagation on; what went to replicas and the AOF.
    fn propagated(h: &mut Harness, cmd: &str) -> Vec<String> {
        h.state.set_propagation(true);
        run(h, cmd);
        let raw = h.state.prop.take();
        h.state.set_propagation(false);
        let mut parser = crate::resp::RequestParser::new();
        let mut buf = bytes::BytesMut::from(&raw[..]);
        let mut out = Vec::new();
        while let Ok(Some(args)) = parser.parse(&mut buf, &crate::resp::Limits::default()) {
            let words: Vec<String> = args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            out.push(words.join(" "));
        }
        out
    }

    #[test]
    fn setbit_and_getbit() {
        let mut h = Harness::new();
        assert_eq!(run(&mut h, "setbit k 7 1"), Reply::Int(0));
        assert_eq!(run(&mut h, "setbit k 7 1"), Reply::Int(1));
        assert_eq!(value(&mut h, "k").unwrap(), b"\x01");
        assert_eq!(run(&mut h, "setbit k 17 1"), Reply::Int(0));
        assert_eq!(value(&mut h, "k").unwrap(), b"\x01\x00\x40");
        assert_eq!(run(&mut h, "setbit k 7 0"), Reply::Int(1));
        assert_eq!(value(&mut h, "k").unwrap(), b"\x00\x00\x40");
        assert_eq!(run(&mut h, "getbit k 17"), Reply::Int(1));
        assert_eq!(run(&mut h, "getbit k 16"), Reply::Int(0));
        assert_eq!(run(&mut h, "getbit k 4294967295"), Reply::Int(0));
        assert_eq!(run(&mut h, "getbit missing 3"), Reply::Int(0));
        // Clearing a bit past the end still pads the string.
        assert_eq!(run(&mut h, "setbit z 15 0"), Reply::Int(0));
        assert_eq!(value(&mut h, "z").unwrap(), b"\x00\x00");
    }

    #[test]
    fn setbit_and_getbit_errors() {
        let mut h = Harness::new();
        run(&mut h, "rpush l a");
        for cmd in [
            "setbit k -1 1",
            "setbit k x 1",
            "setbit k #1 1",
            "setbit k 4294967296 1",
            "getbit k 4294967296",
            "getbit k -1",
            "getbit k 1.5",
        ] {
            assert_eq!(run(&mut h, cmd), error(OFFSET), "{cmd}");
        }
        for cmd in [
            "setbit k 1 2",
            "setbit k 1 -1",
            "setbit k 1 x",
            "setbit k 1 01",
        ] {
            assert_eq!(
                run(&mut h, cmd),
                error("ERR bit is not an integer or out of range"),
                "{cmd}"
            );
        }
        assert_eq!(run(&mut h, "setbit l 1 1"), error(WRONGTYPE));
        assert_eq!(run(&mut h, "getbit l 1"), error(WRONGTYPE));
        // The offset is checked before the type, as in Redis.
        assert_eq!(run(&mut h, "getbit l x"), error(OFFSET));
        assert_eq!(
            run(&mut h, "setbit k 1"),
            error("ERR wrong number of arguments for 'setbit' command")
        );
        assert!(value(&mut h, "k").is_none());
    }

    #[test]
    fn the_offset_limit_follows_proto_max_bulk_len() {
        let mut h = Harness::new();
        assert_eq!(run(&mut h, "getbit k 4294967295"), Reply::Int(0));
        assert_eq!(run(&mut h, "getbit k 4294967296"), error(OFFSET));
        // Our master's offsets are obeyed whatever the local limit.
        h.client.is_master = true;
        assert_eq!(run(&mut h, "getbit k 4294967296"), Reply::Int(0));
    }

    #[test]
    fn setbit_keeps_the_ttl_and_propagates_only_changes() {
        let mut h = Harness::new();
        run(&mut h, "set k \x00");
        run(&mut h, &format!("pexpireat k {}", NOW + 10_000));
        assert_eq!(propagated(&mut h, "setbit k 3 1"), ["setbit k 3 1"]);
        assert_eq!(propagated(&mut h, "setbit k 3 1"), Vec::<String>::new());
        assert_eq!(propagated(&mut h, "setbit k 40 0"), ["setbit k 40 0"]);
        assert_eq!(run(&mut h, "pttl k"), Reply::Int(10_000));
        assert_eq!(value(&mut h, "k").unwrap(), b"\x10\x00\x00\x00\x00\x00");
    }

    #[test]
    fn bitcount_byte_and_bit_ranges() {
        let mut h = Harness::new();
        run(&mut h, "set s foobar");
        for (cmd, n) in [
            ("bitcount s", 26),
            ("bitcount s 0 0", 4),
            ("bitcount s 1 1", 6),
            ("bitcount s 0 -1", 26),
            ("bitcount s -2 -1", 7),
            ("bitcount s -1 -2", 0),
            ("bitcount s -1 -2 nonsense", 0),
            ("bitcount s -100 100", 26),
            ("bitcount s 5 3", 0),
            ("bitcount s 0 0 BYTE", 4),
            ("bitcount s 5 30 BIT", 17),
            ("bitcount s 3 3 bit", 0),
            ("bitcount s 1 1 bit", 1),
            ("bitcount s -5 -1 BIT", 2),
            ("bitcount s 0 -1 BIT", 26),
            ("bitcount s 47 100 BIT", 0),
            ("bitcount missing", 0),
            ("bitcount missing x y", 0),
        ] {
            assert_eq!(run(&mut h, cmd), Reply::Int(n), "{cmd}");
        }
        run(&mut h, "set empty ");
        assert_eq!(
            raw(&mut h, &[b"bitcount", b"empty", b"0", b"-1", b"bit"]),
            Reply::Int(0)
        );
    }

    #[test]
    fn bitcount_errors() {
        let mut h = Harness::new();
        run(&mut h, "set s foobar");
        run(&mut h, "rpush l a");
        for cmd in [
            "bitcount s 0",
            "bitcount s 0 1 bit x",
            "bitcount s 0 1 nibble",
        ] {
            assert_eq!(run(&mut h, cmd), error("ERR syntax error"), "{cmd}");
        }
        for cmd in ["bitcount s a 1", "bitcount s 0 b"] {
            assert_eq!(
                run(&mut h, cmd),
                error("ERR value is not an integer or out of range"),
                "{cmd}"
            );
        }
        assert_eq!(run(&mut h, "bitcount l"), error(WRONGTYPE));
        assert_eq!(run(&mut h, "bitcount l x y"), error(WRONGTYPE));
    }

    #[test]
    fn bitpos_finds_bits() {
        let mut h = Harness::new();
        raw(&mut h, &[b"set", b"ones", b"\xff\xff\xff"]);
        raw(&mut h, &[b"set", b"zeros", b"\x00\x00\x00"]);
        raw(&mut h, &[b"set", b"mixed", b"\xff\xf0\x00"]);
        run(&mut h, "set empty ");
        for (cmd, n) in [
            ("bitpos ones 0", 24),
            ("bitpos ones 1", 0),
            ("bitpos ones 0 0", 24),
            ("bitpos ones 0 0 -1", -1),
            ("bitpos ones 0 1 -1 bit", -1),
            ("bitpos zeros 1", -1),
            ("bitpos zeros 0", 0),
            ("bitpos zeros 1 0 -1 BIT", -1),
            ("bitpos zeros 0 5 9 BIT", 5),
            ("bitpos empty 0", -1),
            ("bitpos empty 1", -1),
            ("bitpos empty 0 0", -1),
            ("bitpos missing 0", 0),
            ("bitpos missing 1", -1),
            ("bitpos missing 1 x", -1),
            ("bitpos mixed 0", 12),
            ("bitpos mixed 1 1", 8),
            ("bitpos mixed 1 2", -1),
            ("bitpos mixed 0 0 0", -1),
            ("bitpos mixed 1 -1", -1),
            ("bitpos mixed 0 3 10 BIT", -1),
            ("bitpos mixed 0 3 12 BIT", 12),
            ("bitpos mixed 0 3 11 BIT", -1),
            ("bitpos mixed 1 10 10 bit", 10),
            ("bitpos mixed 1 12 23 BIT", -1),
            ("bitpos mixed 0 12 12 bit", 12),
            ("bitpos mixed 1 3 2", -1),
        ] {
            assert_eq!(run(&mut h, cmd), Reply::Int(n), "{cmd}");
        }
    }

    #[test]
    fn bitpos_errors() {
        let mut h = Harness::new();
        run(&mut h, "set s foobar");
        run(&mut h, "rpush l a");
        for cmd in ["bitpos s 2", "bitpos s -1", "bitpos missing 2"] {
            assert_eq!(
                run(&mut h, cmd),
                error("ERR The bit argument must be 1 or 0."),
                "{cmd}"
            );
        }
        for cmd in ["bitpos s x", "bitpos s 1 x", "bitpos s 1 0 x"] {
            assert_eq!(
                run(&mut h, cmd),
                error("ERR value is not an integer or out of range"),
                "{cmd}"
            );
        }
        for cmd in ["bitpos s 1 0 1 word", "bitpos s 1 0 1 bit x"] {
            assert_eq!(run(&mut h, cmd), error("ERR syntax error"), "{cmd}");
        }
        assert_eq!(run(&mut h, "bitpos l 1"), error(WRONGTYPE));
        // The bit is checked before the key.
        assert_eq!(
            run(&mut h, "bitpos l 2"),
            error("ERR The bit argument must be 1 or 0.")
        );
    }

    #[test]
    fn bitop_combines_and_stores() {
        let mut h = Harness::new();
        run(&mut h, "set a foobar");
        run(&mut h, "set b abcdef");
        run(&mut h, "set c xyz");
        assert_eq!(run(&mut h, "bitop and d a b"), Reply::Int(6));
        assert_eq!(value(&mut h, "d").unwrap(), b"`bc`ab");
        assert_eq!(run(&mut h, "bitop or d a c"), Reply::Int(6));
        assert_eq!(value(&mut h, "d").unwrap(), b"\x7e\x7f\x7fbar");
        assert_eq!(run(&mut h, "bitop xor d a b c"), Reply::Int(6));
        assert_eq!(value(&mut h, "d").unwrap(), b"\x7ftv\x06\x04\x14");
        // A missing key is an empty string: AND with it is all zeros.
        assert_eq!(run(&mut h, "bitop AND d a missing"), Reply::Int(6));
        assert_eq!(value(&mut h, "d").unwrap(), b"\x00\x00\x00\x00\x00\x00");
        assert_eq!(run(&mut h, "bitop not d c"), Reply::Int(3));
        assert_eq!(value(&mut h, "d").unwrap(), b"\x87\x86\x85");
        // The destination is overwritten whatever it held, TTL dropped.
        run(&mut h, "rpush list x");
        run(&mut h, "expire list 100");
        assert_eq!(run(&mut h, "bitop or list a"), Reply::Int(6));
        assert_eq!(run(&mut h, "ttl list"), Reply::Int(-1));
        assert_eq!(value(&mut h, "list").unwrap(), b"foobar");
        // An empty result deletes the destination.
        assert_eq!(run(&mut h, "bitop or d missing other"), Reply::Int(0));
        assert_eq!(run(&mut h, "exists d"), Reply::Int(0));
        // ... and propagates nothing when there was nothing to delete.
        assert_eq!(
            propagated(&mut h, "bitop or d missing"),
            Vec::<String>::new()
        );
        assert_eq!(propagated(&mut h, "bitop or d a"), ["bitop or d a"]);
    }

    #[test]
    fn bitop_errors() {
        let mut h = Harness::new();
        run(&mut h, "set a foobar");
        run(&mut h, "rpush l x");
        assert_eq!(run(&mut h, "bitop nand d a"), error("ERR syntax error"));
        assert_eq!(
            run(&mut h, "bitop not d a b"),
            error("ERR BITOP NOT must be called with a single source key.")
        );
        assert_eq!(run(&mut h, "bitop or d a l"), error(WRONGTYPE));
        assert_eq!(run(&mut h, "exists d"), Reply::Int(0));
        assert_eq!(
            run(&mut h, "bitop and d"),
            error("ERR wrong number of arguments for 'bitop' command")
        );
    }

    #[test]
    fn bitop_keys_are_destination_and_sources() {
        let spec = crate::cluster::keyspec::catalog()
            .unwrap()
            .get("bitop")
            .unwrap();
        let args: Vec<Bytes> = ["bitop", "and", "d", "a", "b"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        assert_eq!(spec.keys.key_positions(&args), [2, 3, 4]);
    }

    #[test]
    fn bitfield_get_set_incrby() {
        let mut h = Harness::new();
        assert_eq!(
            run(&mut h, "bitfield f set i8 0 -100 get i8 0 get u8 0"),
            ints(&[0, -100, 156])
        );
        assert_eq!(
            run(&mut h, "bitfield f incrby i5 100 1 get u4 0"),
            ints(&[1, 9])
        );
        assert_eq!(
            run(&mut h, "bitfield f set u8 #2 255 get u8 16 get u8 #2"),
            ints(&[0, 255, 255])
        );
        assert_eq!(
            value(&mut h, "f").unwrap(),
            b"\x9c\x00\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80"
        );
        // GETs past the end read zeros and create nothing.
        assert_eq!(
            run(&mut h, "bitfield g get u8 0 get i64 1000"),
            ints(&[0, 0])
        );
        assert_eq!(run(&mut h, "exists g"), Reply::Int(0));
        assert_eq!(run(&mut h, "bitfield g"), Reply::Array(vec![]));
        assert_eq!(
            run(&mut h, "bitfield_ro f get u8 0 get i4 #3"),
            ints(&[156, 0])
        );
        assert_eq!(run(&mut h, "bitfield_ro missing get u8 0"), ints(&[0]));
    }

    #[test]
    fn bitfield_overflow_modes() {
        let mut h = Harness::new();
        for (cmd, want) in [
            ("bitfield w overflow wrap incrby u8 0 300", Reply::Int(44)),
            ("bitfield w overflow wrap incrby u8 0 -600", Reply::Int(212)),
            ("bitfield w overflow sat incrby u8 0 -600", Reply::Int(0)),
            ("bitfield w overflow sat incrby u8 0 600", Reply::Int(255)),
            ("bitfield w overflow fail incrby u8 0 1", Reply::Nil),
            ("bitfield w overflow wrap set u8 0 -1", Reply::Int(255)),
            ("bitfield w overflow sat set u8 0 1000", Reply::Int(255)),
            ("bitfield w overflow fail set u8 0 256", Reply::Nil),
            ("bitfield w overflow sat set i8 0 -1000", Reply::Int(-1)),
            ("bitfield w get i8 0", Reply::Int(-128)),
            ("bitfield w overflow fail incrby i8 0 -1", Reply::Nil),
            ("bitfield w overflow wrap incrby i8 0 -1", Reply::Int(127)),
            ("bitfield w overflow sat incrby i8 0 1", Reply::Int(127)),
            ("bitfield i set i64 0 9223372036854775807", Reply::Int(0)),
            ("bitfield i incrby i64 0 1", Reply::Int(i64::MIN)),
            ("bitfield i incrby i64 0 -1", Reply::Int(i64::MAX)),
            (
                "bitfield i overflow sat incrby i64 0 1",
                Reply::Int(i64::MAX),
            ),
            ("bitfield i overflow fail incrby i64 0 1", Reply::Nil),
            ("bitfield u set u63 0 9223372036854775807", Reply::Int(0)),
            ("bitfield u overflow wrap incrby u63 0 1", Reply::Int(0)),
            ("bitfield u overflow sat incrby u63 0 -1", Reply::Int(0)),
            ("bitfield u overflow sat set u63 0 -5", Reply::Int(0)),
            ("bitfield u get u63 0", Reply::Int(i64::MAX)),
        ] {
            assert_eq!(run(&mut h, cmd), Reply::Array(vec![want]), "{cmd}");
        }
        // Under FAIL the key is still created (padded), as in Redis.
        assert_eq!(
            run(&mut h, "bitfield fresh overflow fail incrby u2 10 10"),
            Reply::Array(vec![Reply::Nil])
        );
        assert_eq!(value(&mut h, "fresh").unwrap(), b"\x00\x00");
    }

    #[test]
    fn bitfield_errors() {
        let mut h = Harness::new();
        run(&mut h, "rpush l a");
        for cmd in [
            "bitfield f get u64 0",
            "bitfield f get i65 0",
            "bitfield f get i0 0",
            "bitfield f get x8 0",
            "bitfield f get I8 0",
            "bitfield f get u08 0",
            "bitfield f set u8 0 1 get u99 0",
        ] {
            assert_eq!(run(&mut h, cmd), error(TYPE), "{cmd}");
        }
        for cmd in [
            "bitfield f get u8 -1",
            "bitfield f get u8 #-1",
            "bitfield f get u8 #x",
            "bitfield f get u8 4294967296",
            "bitfield f get u8 #536870912",
        ] {
            assert_eq!(run(&mut h, cmd), error(OFFSET), "{cmd}");
        }
        for cmd in [
            "bitfield f get u8",
            "bitfield f set u8 0",
            "bitfield f overflow",
            "bitfield f get u8 0 bogus",
        ] {
            assert_eq!(run(&mut h, cmd), error("ERR syntax error"), "{cmd}");
        }
        assert_eq!(
            run(&mut h, "bitfield f set u8 0 x"),
            error("ERR value is not an integer or out of range")
        );
        assert_eq!(
            run(&mut h, "bitfield f overflow saturate get u8 0"),
            error("ERR Invalid OVERFLOW type specified")
        );
        for cmd in ["bitfield_ro f set u8 0 1", "bitfield_ro f incrby u8 0 1"] {
            assert_eq!(
                run(&mut h, cmd),
                error("ERR BITFIELD_RO only supports the GET subcommand"),
                "{cmd}"
            );
        }
        for cmd in [
            "bitfield l get u8 0",
            "bitfield l set u8 0 1",
            "bitfield l",
            "bitfield_ro l get u8 0",
        ] {
            assert_eq!(run(&mut h, cmd), error(WRONGTYPE), "{cmd}");
        }
        // No error wrote anything.
        assert_eq!(run(&mut h, "exists f"), Reply::Int(0));
    }

    #[test]
    fn bitfield_propagates_writes_only() {
        let mut h = Harness::new();
        run(&mut h, "set k \x00");
        run(&mut h, &format!("pexpireat k {}", NOW + 10_000));
        assert_eq!(
            propagated(&mut h, "bitfield k get u8 0"),
            Vec::<String>::new()
        );
        assert_eq!(
            propagated(&mut h, "bitfield k set u8 0 0"),
            Vec::<String>::new()
        );
        assert_eq!(
            propagated(&mut h, "bitfield k overflow fail incrby u8 0 -1"),
            Vec::<String>::new()
        );
        assert_eq!(
            propagated(&mut h, "bitfield k incrby u8 0 5"),
            ["bitfield k incrby u8 0 5"]
        );
        assert_eq!(run(&mut h, "pttl k"), Reply::Int(10_000));
    }
}
