//! String commands: GET/SET and friends, counters, ranges, MGET/MSET.

use super::flags::*;
use super::Argv;
use super::{
    err, float_arg, get_string, int_arg, is, not_integer, syntax_error, CmdResult, CommandSpec, Ctx,
};
use crate::resp::{parse_i64, Reply};
use crate::store::{sds, Value};
use bytes::Bytes;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("get", 2, READONLY | FAST, [1, 1, 1], get),
    CommandSpec::new("set", -3, WRITE | DENYOOM, [1, 1, 1], set),
    CommandSpec::new("setnx", 3, WRITE | DENYOOM | FAST, [1, 1, 1], setnx),
    CommandSpec::new("setex", 4, WRITE | DENYOOM, [1, 1, 1], setex),
    CommandSpec::new("psetex", 4, WRITE | DENYOOM, [1, 1, 1], psetex),
    CommandSpec::new("getset", 3, WRITE | DENYOOM | FAST, [1, 1, 1], getset),
    CommandSpec::new("getdel", 2, WRITE | FAST, [1, 1, 1], getdel),
    CommandSpec::new("getex", -2, WRITE | FAST, [1, 1, 1], getex),
    CommandSpec::new("mget", -2, READONLY | FAST, [1, -1, 1], mget),
    CommandSpec::new("mset", -3, WRITE | DENYOOM, [1, -1, 2], mset),
    CommandSpec::new("msetnx", -3, WRITE | DENYOOM, [1, -1, 2], msetnx),
    CommandSpec::new("incr", 2, WRITE | DENYOOM | FAST, [1, 1, 1], incr),
    CommandSpec::new("decr", 2, WRITE | DENYOOM | FAST, [1, 1, 1], decr),
    CommandSpec::new("incrby", 3, WRITE | DENYOOM | FAST, [1, 1, 1], incrby),
    CommandSpec::new("decrby", 3, WRITE | DENYOOM | FAST, [1, 1, 1], decrby),
    CommandSpec::new("incrbyfloat", 3, WRITE | DENYOOM | FAST, [1, 1, 1], incrbyfloat),
    CommandSpec::new("append", 3, WRITE | DENYOOM | FAST, [1, 1, 1], append),
    CommandSpec::new("strlen", 2, READONLY | FAST, [1, 1, 1], strlen),
    CommandSpec::new("getrange", 4, READONLY, [1, 1, 1], getrange),
    CommandSpec::new("substr", 4, READONLY, [1, 1, 1], getrange),
    CommandSpec::new("setrange", 4, WRITE | DENYOOM, [1, 1, 1], setrange),
    CommandSpec::new("lcs", -3, READONLY, [1, 2, 1], lcs),
];

fn get(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::bulk_opt(get_string(ctx.db, a.at(1)?, ctx.now)?))
}

fn max_len(ctx: &Ctx) -> usize {
    ctx.shared.config.load().proto_max_bulk_len
}

fn too_big() -> Reply {
    err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
}

/// Expiry given as a relative or absolute time in the unit of the option;
/// returns the absolute unix ms.
fn expire_from(ctx: &Ctx, v: &[u8], unit_ms: i64, absolute: bool, cmd: &str) -> Result<u64, Reply> {
    let n = int_arg(v)?;
    let invalid = || Reply::Error(format!("ERR invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        (ctx.now as i64).checked_add(ms).ok_or_else(invalid)?
    };
    u64::try_from(at).map_err(|_| invalid())
}

#[derive(PartialEq)]
enum Cond {
    Always,
    Nx,
    Xx,
}

fn set(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (key, val) = (a.at(1)?, a.at(2)?);
    let mut cond = Cond::Always;
    let mut expire: Option<u64> = None;
    let mut keepttl = false;
    let mut get_old = false;
    let mut pxat = false;
    let mut i = 3;
    while i < a.len() {
        let opt = a.at(i)?;
        let next = a.get(i + 1);
        if is(opt, "nx") && cond == Cond::Always {
            cond = Cond::Nx;
        } else if is(opt, "xx") && cond == Cond::Always {
            cond = Cond::Xx;
        } else if is(opt, "get") {
            get_old = true;
        } else if is(opt, "keepttl") && expire.is_none() {
            keepttl = true;
        } else if let (Some(v), false, Some((unit, abs))) =
            (next, keepttl || expire.is_some(), ttl_option(opt))
        {
            pxat = unit == 1 && abs;
            expire = Some(expire_from(ctx, v, unit, abs, "set")?);
            i += 1;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    let old: Option<Option<Bytes>> = if get_old {
        Some(get_string(ctx.db, key, ctx.now)?.map(Bytes::copy_from_slice))
    } else {
        None
    };
    let exists = match &old {
        Some(o) => o.is_some(),
        None if cond != Cond::Always => ctx.db.contains(key, ctx.now),
        None => false,
    };
    let proceed = match cond {
        Cond::Always => true,
        Cond::Nx => !exists,
        Cond::Xx => exists,
    };
    if proceed {
        let v = Value::Str(sds(val));
        if keepttl {
            ctx.db.set_keep_ttl(key, v, ctx.now);
        } else {
            ctx.db.set_with_expire(key, v, expire);
        }
        // Relative or second-based expiry travels as an absolute PXAT, as
        // Redis 7 propagates it, so a replica or an AOF reload expires the
        // key at the same instant.
        if let (Some(at), false, true) = (expire, pxat, ctx.propagating()) {
            ctx.propagate_as(set_pxat(key, val, at));
        }
    }
    Ok(match old {
        Some(o) => o.map_or(Reply::Nil, Reply::Bulk),
        None if proceed => Reply::Ok,
        None => Reply::Nil,
    })
}

/// `SET key value PXAT ms`.
fn set_pxat(key: &Bytes, val: &Bytes, at: u64) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"SET"),
        key.clone(),
        val.clone(),
        Bytes::from_static(b"PXAT"),
        Bytes::from(at.to_string()),
    ]
}

fn setnx(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if ctx.db.contains(a.at(1)?, ctx.now) {
        return Ok(Reply::Int(0));
    }
    ctx.db.set(a.at(1)?, Value::Str(sds(a.at(2)?)));
    Ok(Reply::Int(1))
}

fn setex_unit(ctx: &mut Ctx, a: &[Bytes], unit: i64, cmd: &str) -> CmdResult {
    let at = expire_from(ctx, a.at(2)?, unit, false, cmd)?;
    ctx.db
        .set_with_expire(a.at(1)?, Value::Str(sds(a.at(3)?)), Some(at));
    if ctx.propagating() {
        ctx.propagate_as(set_pxat(a.at(1)?, a.at(3)?, at));
    }
    Ok(Reply::Ok)
}

fn setex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setex_unit(ctx, a, 1000, "setex")
}

fn psetex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setex_unit(ctx, a, 1, "psetex")
}

fn getset(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let old = get_string(ctx.db, a.at(1)?, ctx.now)?.map(Bytes::copy_from_slice);
    ctx.db.set(a.at(1)?, Value::Str(sds(a.at(2)?)));
    Ok(old.map_or(Reply::Nil, Reply::Bulk))
}

fn getdel(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let old = get_string(ctx.db, a.at(1)?, ctx.now)?.map(Bytes::copy_from_slice);
    if old.is_some() {
        ctx.db.remove(a.at(1)?, ctx.now);
        ctx.propagate_as(vec![Bytes::from_static(b"DEL"), a.at(1)?.clone()]);
    }
    Ok(old.map_or(Reply::Nil, Reply::Bulk))
}

/// EX / PX / EXAT / PXAT: milliseconds per unit, and whether the time is
/// absolute.
fn ttl_option(opt: &[u8]) -> Option<(i64, bool)> {
    [
        ("ex", 1000, false),
        ("px", 1, false),
        ("exat", 1000, true),
        ("pxat", 1, true),
    ]
    .into_iter()
    .find(|(name, ..)| is(opt, name))
    .map(|(_, unit, abs)| (unit, abs))
}

fn getex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    enum Op {
        None,
        Persist,
        At(u64),
    }
    let mut op = Op::None;
    let mut i = 2;
    while i < a.len() {
        let opt = a.at(i)?;
        if is(opt, "persist") && matches!(op, Op::None) {
            op = Op::Persist;
        } else if let (Some(v), true, Some((unit, abs))) =
            (a.get(i + 1), matches!(op, Op::None), ttl_option(opt))
        {
            op = Op::At(expire_from(ctx, v, unit, abs, "getex")?);
            i += 1;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    let Some(v) = get_string(ctx.db, a.at(1)?, ctx.now)?.map(Bytes::copy_from_slice) else {
        return Ok(Reply::Nil);
    };
    // GETEX is never propagated as received: as PERSIST, DEL or an
    // absolute PEXPIREAT (Redis 7).
    let key = a.at(1)?.clone();
    match op {
        Op::None => {}
        Op::Persist => {
            ctx.db.persist(&key, ctx.now);
            ctx.propagate_as(vec![Bytes::from_static(b"PERSIST"), key]);
        }
        Op::At(at) if at <= ctx.now => {
            ctx.db.remove(&key, ctx.now);
            ctx.propagate_as(vec![Bytes::from_static(b"DEL"), key]);
        }
        Op::At(at) => {
            ctx.db.set_expire(&key, at, ctx.now);
            if ctx.propagating() {
                ctx.propagate_as(vec![
                    Bytes::from_static(b"PEXPIREAT"),
                    key,
                    Bytes::from(at.to_string()),
                ]);
            }
        }
    }
    Ok(Reply::Bulk(v))
}

fn mget(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let out = a
        .rest(1)
        .iter()
        .map(|k| match ctx.db.get(k, ctx.now) {
            Some(Value::Str(s)) => Reply::bulk(s),
            _ => Reply::Nil,
        })
        .collect();
    Ok(Reply::Array(out))
}

fn mset(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() % 2 == 0 {
        return Err(super::wrong_arity("mset"));
    }
    for (key, value) in a.pairs_from(1) {
        ctx.db.set(key, Value::Str(sds(value)));
    }
    Ok(Reply::Ok)
}

fn msetnx(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() % 2 == 0 {
        return Err(super::wrong_arity("msetnx"));
    }
    if a.pairs_from(1)
        .any(|(key, _)| ctx.db.contains(key, ctx.now))
    {
        return Ok(Reply::Int(0));
    }
    for (key, value) in a.pairs_from(1) {
        ctx.db.set(key, Value::Str(sds(value)));
    }
    Ok(Reply::Int(1))
}

/// INCRBY core: the stored value must be a canonical integer string.
fn incr_by(ctx: &mut Ctx, key: &[u8], by: i64) -> CmdResult {
    let cur = match get_string(ctx.db, key, ctx.now)? {
        None => 0,
        Some(s) => parse_i64(s).ok_or_else(not_integer)?,
    };
    let new = cur
        .checked_add(by)
        .ok_or_else(|| err("ERR increment or decrement would overflow"))?;
    let mut buf = itoa::Buffer::new();
    ctx.db
        .set_keep_ttl(key, Value::Str(sds(buf.format(new).as_bytes())), ctx.now);
    Ok(Reply::Int(new))
}

fn incr(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    incr_by(ctx, a.at(1)?, 1)
}

fn decr(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    incr_by(ctx, a.at(1)?, -1)
}

fn incrby(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = int_arg(a.at(2)?)?;
    incr_by(ctx, a.at(1)?, by)
}

fn decrby(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = int_arg(a.at(2)?)?;
    let by = by
        .checked_neg()
        .ok_or_else(|| err("ERR decrement would overflow"))?;
    incr_by(ctx, a.at(1)?, by)
}

fn incrbyfloat(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = float_arg(a.at(2)?)?;
    let cur = match get_string(ctx.db, a.at(1)?, ctx.now)? {
        None => 0.0,
        Some(s) => super::parse_float(s).ok_or_else(|| err("ERR value is not a valid float"))?,
    };
    let new = cur + by;
    if !new.is_finite() {
        return Err(err("ERR increment would produce NaN or Infinity"));
    }
    let text = format!("{new}");
    ctx.db
        .set_keep_ttl(a.at(1)?, Value::Str(sds(text.as_bytes())), ctx.now);
    // The result, not the increment, so float formatting can never make a
    // replica or an AOF reload differ (Redis 7 does the same).
    if ctx.propagating() {
        ctx.propagate_as(vec![
            Bytes::from_static(b"SET"),
            a.at(1)?.clone(),
            Bytes::from(text.clone()),
            Bytes::from_static(b"KEEPTTL"),
        ]);
    }
    Ok(Reply::bulk(text))
}

fn append(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let max = max_len(ctx);
    let cur_len = get_string(ctx.db, a.at(1)?, ctx.now)?.map(<[u8]>::len);
    let new_len = cur_len.unwrap_or(0) + a.at(2)?.len();
    if new_len > max {
        return Err(too_big());
    }
    match ctx.db.get_mut(a.at(1)?, ctx.now) {
        Some(Value::Str(s)) => s.extend_from_slice(a.at(2)?),
        _ => ctx.db.set(a.at(1)?, Value::Str(sds(a.at(2)?))),
    }
    Ok(Reply::Int(new_len as i64))
}

fn strlen(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        get_string(ctx.db, a.at(1)?, ctx.now)?.map_or(0, <[u8]>::len) as i64,
    ))
}

/// Normalises Redis-style (possibly negative) inclusive indexes against a
/// length; None when the range is empty.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e < 0 || s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize))
}

fn getrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (start, end) = (int_arg(a.at(2)?)?, int_arg(a.at(3)?)?);
    let Some(s) = get_string(ctx.db, a.at(1)?, ctx.now)? else {
        return Ok(Reply::bulk(""));
    };
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::bulk(""));
    }
    Ok(match clamp_range(start, end, s.len()) {
        Some((lo, hi)) => Reply::bulk(s.get(lo..=hi).unwrap_or_default()),
        None => Reply::bulk(""),
    })
}

fn setrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let offset = int_arg(a.at(2)?)?;
    if offset < 0 {
        return Err(err("ERR offset is out of range"));
    }
    let offset = offset as usize;
    let val = a.at(3)?;
    let cur = get_string(ctx.db, a.at(1)?, ctx.now)?.map(<[u8]>::to_vec);
    let Some(mut cur) = cur else {
        if val.is_empty() {
            return Ok(Reply::Int(0));
        }
        if offset + val.len() > max_len(ctx) {
            return Err(too_big());
        }
        let mut v = vec![0u8; offset];
        v.extend_from_slice(val);
        let n = v.len();
        ctx.db.set(a.at(1)?, Value::Str(sds(&v)));
        return Ok(Reply::Int(n as i64));
    };
    if val.is_empty() {
        return Ok(Reply::Int(cur.len() as i64));
    }
    if offset + val.len() > max_len(ctx) {
        return Err(too_big());
    }
    if cur.len() < offset + val.len() {
        cur.resize(offset + val.len(), 0);
    }
    if let Some(dst) = cur.get_mut(offset..offset + val.len()) {
        dst.copy_from_slice(val);
    }
    let n = cur.len();
    ctx.db
        .set_keep_ttl(a.at(1)?, Value::Str(sds(&cur)), ctx.now);
    Ok(Reply::Int(n as i64))
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: the longest
/// common subsequence by Redis's dynamic programme, and (IDX) the matching
/// ranges from the end of the strings backwards, as Redis reports them.
fn lcs(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let wrong = || err("ERR The specified keys must contain string values");
    let x = get_string(ctx.db, a.at(1)?, ctx.now)
        .map_err(|_| wrong())?
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let y = get_string(ctx.db, a.at(2)?, ctx.now)
        .map_err(|_| wrong())?
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let (mut getlen, mut getidx, mut withmatchlen, mut minmatchlen) = (false, false, false, 0i64);
    let mut j = 3;
    while let Some(opt) = a.get(j) {
        if is(opt, "idx") {
            getidx = true;
        } else if is(opt, "len") {
            getlen = true;
        } else if is(opt, "withmatchlen") {
            withmatchlen = true;
        } else if is(opt, "minmatchlen") && j + 1 < a.len() {
            minmatchlen = int_arg(a.at(j + 1)?)?.max(0);
            j += 1;
        } else {
            return Err(syntax_error());
        }
        j += 1;
    }
    if getlen && getidx {
        return Err(err(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    let (alen, blen) = (x.len(), y.len());
    if alen >= u32::MAX as usize - 1 || blen >= u32::MAX as usize - 1 {
        return Err(err("ERR String too long for LCS"));
    }
    // The table is (alen+1) x (blen+1) u32s, bounded like Redis's.
    let cells = (alen + 1)
        .checked_mul(blen + 1)
        .filter(|c| c.checked_mul(4).is_some_and(|b| b <= max_len(ctx)))
        .ok_or_else(|| {
            err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
        })?;
    let mut table: Vec<u32> = Vec::new();
    table
        .try_reserve_exact(cells)
        .map_err(|_| err("ERR Insufficient memory, failed allocating transient memory for LCS"))?;
    table.resize(cells, 0);
    let at = |t: &[u32], i: usize, j: usize| t.get(j + i * (blen + 1)).copied().unwrap_or(0);
    for i in 1..=alen {
        for j in 1..=blen {
            let v = if x.get(i - 1) == y.get(j - 1) {
                at(&table, i - 1, j - 1) + 1
            } else {
                at(&table, i - 1, j).max(at(&table, i, j - 1))
            };
            if let Some(c) = table.get_mut(j + i * (blen + 1)) {
                *c = v;
            }
        }
    }
    let total = at(&table, alen, blen);
    if getlen {
        return Ok(Reply::Int(i64::from(total)));
    }
    // Walk back from the end, collecting the string and the ranges.
    let mut result = vec![0u8; total as usize];
    let mut idx = total as usize;
    let mut ranges = Vec::new();
    let (mut i, mut j) = (alen, blen);
    // `alen` as arange_start means "no open range".
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0usize, 0usize, 0usize);
    while i > 0 && j > 0 {
        let mut emit = false;
        if x.get(i - 1) == y.get(j - 1) {
            if let (Some(r), Some(&c)) = (result.get_mut(idx.wrapping_sub(1)), x.get(i - 1)) {
                *r = c;
            }
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            idx = idx.saturating_sub(1);
            i -= 1;
            j -= 1;
        } else {
            if at(&table, i - 1, j) > at(&table, i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        if emit {
            let match_len = a_end.wrapping_sub(a_start).wrapping_add(1) as u32;
            if getidx && (minmatchlen == 0 || i64::from(match_len) >= minmatchlen) {
                let mut r = vec![
                    Reply::Array(vec![Reply::Int(a_start as i64), Reply::Int(a_end as i64)]),
                    Reply::Array(vec![Reply::Int(b_start as i64), Reply::Int(b_end as i64)]),
                ];
                if withmatchlen {
                    r.push(Reply::Int(i64::from(match_len)));
                }
                ranges.push(Reply::Array(r));
            }
            a_start = alen;
        }
    }
    if getidx {
        return Ok(Reply::Map(vec![
            (Reply::bulk("matches"), Reply::Array(ranges)),
            (Reply::bulk("len"), Reply::Int(i64::from(total))),
        ]));
    }
    Ok(Reply::bulk(result))
}
