//! List commands: pushes and pops at both ends, ranges, positional access,
//! moves between lists, and their blocking forms (BLPOP, BLMOVE, BLMPOP...).
//!
//! Writes look the key up with `peek` first and take mutable access only when
//! they will really change the list, because `get_mut` announces a change:
//! a failed LSET or an LREM that matched nothing must not dirty WATCHers.

use super::flags::*;
use super::Argv;
use super::{
    err, int_arg, is, syntax_error, timeout_arg, wrongtype, Action, CmdResult, CommandSpec, Ctx,
};
use crate::resp::{parse_i64, Reply};
use crate::store::{sds, Db, Sds, Value};
use bytes::Bytes;
use std::collections::VecDeque;
use std::ops::Range;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("lpush", -3, WRITE | DENYOOM | FAST, [1, 1, 1], lpush),
    CommandSpec::new("rpush", -3, WRITE | DENYOOM | FAST, [1, 1, 1], rpush),
    CommandSpec::new("lpushx", -3, WRITE | DENYOOM | FAST, [1, 1, 1], lpushx),
    CommandSpec::new("rpushx", -3, WRITE | DENYOOM | FAST, [1, 1, 1], rpushx),
    CommandSpec::new("lpop", -2, WRITE | FAST, [1, 1, 1], lpop),
    CommandSpec::new("rpop", -2, WRITE | FAST, [1, 1, 1], rpop),
    CommandSpec::new("llen", 2, READONLY | FAST, [1, 1, 1], llen),
    CommandSpec::new("lrange", 4, READONLY, [1, 1, 1], lrange),
    CommandSpec::new("lindex", 3, READONLY, [1, 1, 1], lindex),
    CommandSpec::new("lset", 4, WRITE | DENYOOM, [1, 1, 1], lset),
    CommandSpec::new("linsert", 5, WRITE | DENYOOM, [1, 1, 1], linsert),
    CommandSpec::new("lrem", 4, WRITE, [1, 1, 1], lrem),
    CommandSpec::new("ltrim", 4, WRITE, [1, 1, 1], ltrim),
    CommandSpec::new("lpos", -3, READONLY, [1, 1, 1], lpos),
    CommandSpec::new("lmove", 5, WRITE | DENYOOM, [1, 2, 1], lmove),
    CommandSpec::new("rpoplpush", 3, WRITE | DENYOOM, [1, 2, 1], rpoplpush),
    // Keys follow a numkeys argument: found by the key specs
    // (`cluster::keyspec`), not by fixed positions.
    CommandSpec::new("lmpop", -4, WRITE | MOVABLE_KEYS, [0, 0, 0], lmpop),
    CommandSpec::new("blpop", -3, WRITE | NOSCRIPT | BLOCKING, [1, -2, 1], blpop),
    CommandSpec::new("brpop", -3, WRITE | NOSCRIPT | BLOCKING, [1, -2, 1], brpop),
    CommandSpec::new("blmove", 6, WRITE | DENYOOM | NOSCRIPT | BLOCKING, [1, 2, 1], blmove),
    CommandSpec::new("brpoplpush", 4, WRITE | DENYOOM | NOSCRIPT | BLOCKING, [1, 2, 1], brpoplpush),
    CommandSpec::new("blmpop", -5, WRITE | BLOCKING | MOVABLE_KEYS, [0, 0, 0], blmpop),
];

// ---- helpers -------------------------------------------------------------

type List = VecDeque<Sds>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    Left,
    Right,
}

fn end_arg(b: &[u8]) -> Result<End, Reply> {
    if is(b, "left") {
        Ok(End::Left)
    } else if is(b, "right") {
        Ok(End::Right)
    } else {
        Err(syntax_error())
    }
}

fn bulk(s: &Sds) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s))
}

/// A list for reading (counts a keyspace hit or miss).
fn read_list<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Result<Option<&'d List>, Reply> {
    match db.get(key, now) {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l)),
        Some(_) => Err(wrongtype()),
    }
}

/// The length of a list about to be written, without announcing a change:
/// None when the key is missing.
fn len_for_write(db: &mut Db, key: &[u8], now: u64) -> Result<Option<usize>, Reply> {
    match db.peek(key, now).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l.len())),
        Some(_) => Err(wrongtype()),
    }
}

/// Mutable access to a list already known to exist (announces the change).
fn list_mut<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Option<&'d mut List> {
    match db.get_mut(key, now) {
        Some(Value::List(l)) => Some(l),
        _ => None,
    }
}

/// The list at `key`, created empty if missing; the caller has checked the
/// type. Err only if that check was skipped.
fn list_or_create<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Result<&'d mut List, Reply> {
    match db.get_or_insert_with(key, now, || Value::List(Box::default())) {
        Value::List(l) => Ok(l),
        _ => Err(wrongtype()),
    }
}

/// Pops up to `n` elements from one end of an existing list, deleting the key
/// when it empties.
fn pop_n(db: &mut Db, key: &[u8], now: u64, end: End, n: usize) -> Vec<Sds> {
    let mut out = Vec::new();
    if let Some(l) = list_mut(db, key, now) {
        let n = n.min(l.len());
        out.reserve(n);
        for _ in 0..n {
            let v = match end {
                End::Left => l.pop_front(),
                End::Right => l.pop_back(),
            };
            match v {
                Some(v) => out.push(v),
                None => break,
            }
        }
    }
    db.remove_if_empty(key, now);
    out
}

/// Redis's normalisation of an index: negative counts from the tail.
fn index_of(idx: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if idx < 0 { len + idx } else { idx };
    (0..len).contains(&i).then_some(i as usize)
}

/// The inclusive range `start..=end` of a list of `len` (LRANGE/LTRIM rules);
/// None when it selects nothing.
fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = i64::try_from(len).ok()?;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 { len + end } else { end };
    if start > end || start >= len {
        return None;
    }
    Some((start as usize, end.min(len - 1) as usize))
}

/// If nothing could be served: block when allowed; otherwise the reply for
/// a timeout (nil array, for every blocking command, as Redis 7.0 sends) or,
/// inside MULTI/scripts, the reply of the non-blocking form.
fn block_or_nil(ctx: &mut Ctx, keys: &[Bytes], deadline: Option<u64>, nested: Reply) -> CmdResult {
    if ctx.can_block() {
        ctx.action = Some(Action::Block {
            keys: keys.to_vec(),
            deadline,
        });
        return Ok(Reply::NilArray);
    }
    if ctx.timed_out {
        Ok(Reply::NilArray)
    } else {
        Ok(nested)
    }
}

// ---- push / pop ----------------------------------------------------------

fn push(ctx: &mut Ctx, a: &[Bytes], end: End, only_existing: bool) -> CmdResult {
    let key = a.at(1)?;
    if len_for_write(ctx.db, key, ctx.now)?.is_none() && only_existing {
        return Ok(Reply::Int(0));
    }
    let l = list_or_create(ctx.db, key, ctx.now)?;
    let vals = a.rest(2);
    match end {
        End::Left => vals.iter().for_each(|v| l.push_front(sds(v))),
        End::Right => {
            l.reserve(vals.len());
            vals.iter().for_each(|v| l.push_back(sds(v)));
        }
    }
    Ok(Reply::Int(l.len() as i64))
}

fn lpush(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Left, false)
}
fn rpush(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Right, false)
}
fn lpushx(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Left, true)
}
fn rpushx(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Right, true)
}

fn pop(ctx: &mut Ctx, a: &[Bytes], end: End) -> CmdResult {
    if a.len() > 3 {
        return Err(super::wrong_arity(if end == End::Left {
            "lpop"
        } else {
            "rpop"
        }));
    }
    let count = match a.get(2) {
        None => None,
        Some(c) => Some(
            parse_i64(c)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| err("ERR value is out of range, must be positive"))?,
        ),
    };
    let key = a.at(1)?;
    // A missing key answers nil of the reply's shape, even for COUNT 0.
    if len_for_write(ctx.db, key, ctx.now)?.is_none() {
        return Ok(if count.is_some() {
            Reply::NilArray
        } else {
            Reply::Nil
        });
    }
    match count {
        None => Ok(pop_n(ctx.db, key, ctx.now, end, 1)
            .first()
            .map_or(Reply::Nil, bulk)),
        Some(0) => Ok(Reply::Array(Vec::new())),
        Some(n) => Ok(Reply::Array(
            pop_n(ctx.db, key, ctx.now, end, n)
                .iter()
                .map(bulk)
                .collect(),
        )),
    }
}

fn lpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    pop(ctx, a, End::Left)
}
fn rpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    pop(ctx, a, End::Right)
}

// ---- reads ---------------------------------------------------------------

fn llen(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        read_list(ctx.db, a.at(1)?, ctx.now)?.map_or(0, |l| l.len() as i64),
    ))
}

fn lrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let start = int_arg(a.at(2)?)?;
    let end = int_arg(a.at(3)?)?;
    let Some(l) = read_list(ctx.db, a.at(1)?, ctx.now)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let items = match clamp_range(start, end, l.len()) {
        Some((s, e)) => l.range(s..=e).map(bulk).collect(),
        None => Vec::new(),
    };
    Ok(Reply::Array(items))
}

fn lindex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let Some(l) = read_list(ctx.db, a.at(1)?, ctx.now)? else {
        return Ok(Reply::Nil);
    };
    let idx = int_arg(a.at(2)?)?;
    Ok(index_of(idx, l.len())
        .and_then(|i| l.get(i))
        .map_or(Reply::Nil, bulk))
}

fn lpos(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let mut rank: i64 = 1;
    let mut count: Option<usize> = None;
    let mut maxlen: usize = 0;
    let mut i = 3;
    while i < a.len() {
        let (opt, val) = (a.at(i)?, a.get(i + 1));
        match val {
            Some(v) if is(opt, "rank") => {
                rank = int_arg(v)?;
                if rank == 0 {
                    return Err(err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"));
                }
            }
            Some(v) if is(opt, "count") => {
                count = Some(
                    parse_i64(v)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| err("ERR COUNT can't be negative"))?,
                );
            }
            Some(v) if is(opt, "maxlen") => {
                maxlen = parse_i64(v)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| err("ERR MAXLEN can't be negative"))?;
            }
            _ => return Err(syntax_error()),
        }
        i += 2;
    }
    let elem: &[u8] = a.at(2)?;
    let Some(l) = read_list(ctx.db, a.at(1)?, ctx.now)? else {
        return Ok(if count.is_some() {
            Reply::Array(Vec::new())
        } else {
            Reply::Nil
        });
    };
    let from_tail = rank < 0;
    // Redis negates RANK in a C long: LLONG_MIN stays negative, which makes
    // the first match qualify and the COUNT limit never trigger. Mirror it.
    let (skip, limit) = if rank == i64::MIN {
        (0, usize::MAX)
    } else {
        let skip = usize::try_from(rank.unsigned_abs() - 1).unwrap_or(usize::MAX);
        (skip, count.filter(|&c| c > 0).unwrap_or(usize::MAX))
    };
    let scan = if maxlen == 0 {
        l.len()
    } else {
        maxlen.min(l.len())
    };
    let len = l.len();
    let mut found = Vec::new();
    let mut matches = 0usize;
    for step in 0..scan {
        let idx = if from_tail { len - 1 - step } else { step };
        if l.get(idx).is_some_and(|v| v.as_slice() == elem) {
            matches += 1;
            if matches > skip {
                found.push(idx);
                if count.is_none() || found.len() >= limit {
                    break;
                }
            }
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found.into_iter().map(|i| Reply::Int(i as i64)).collect()),
        None => found.first().map_or(Reply::Nil, |&i| Reply::Int(i as i64)),
    })
}

// ---- in-place writes -----------------------------------------------------

fn lset(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let Some(len) = len_for_write(ctx.db, key, ctx.now)? else {
        return Err(err("ERR no such key"));
    };
    let idx = int_arg(a.at(2)?)?;
    let i = index_of(idx, len).ok_or_else(|| err("ERR index out of range"))?;
    if let Some(slot) = list_mut(ctx.db, key, ctx.now).and_then(|l| l.get_mut(i)) {
        *slot = sds(a.at(3)?);
    }
    Ok(Reply::Ok)
}

fn linsert(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let after = if is(a.at(2)?, "after") {
        true
    } else if is(a.at(2)?, "before") {
        false
    } else {
        return Err(syntax_error());
    };
    let key = a.at(1)?;
    let pivot: &[u8] = a.at(3)?;
    let pos = match ctx.db.peek(key, ctx.now).map(|e| &e.value) {
        None => return Ok(Reply::Int(0)),
        Some(Value::List(l)) => l.iter().position(|v| v.as_slice() == pivot),
        Some(_) => return Err(wrongtype()),
    };
    let Some(pos) = pos else {
        return Ok(Reply::Int(-1));
    };
    let Some(l) = list_mut(ctx.db, key, ctx.now) else {
        return Ok(Reply::Int(0));
    };
    l.insert(pos + usize::from(after), sds(a.at(4)?));
    Ok(Reply::Int(l.len() as i64))
}

fn lrem(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let count = int_arg(a.at(2)?)?;
    let key = a.at(1)?;
    let elem: &[u8] = a.at(3)?;
    let from_tail = count < 0;
    let limit = if count == 0 {
        usize::MAX
    } else {
        usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX)
    };
    // Find what to remove before touching the key, so that removing nothing
    // is not announced as a change.
    let doomed: Vec<usize> = match ctx.db.peek(key, ctx.now).map(|e| &e.value) {
        None => return Ok(Reply::Int(0)),
        Some(Value::List(l)) => {
            let matching = |(_, v): &(usize, &Sds)| v.as_slice() == elem;
            if from_tail {
                let mut v: Vec<usize> = l
                    .iter()
                    .enumerate()
                    .rev()
                    .filter(matching)
                    .take(limit)
                    .map(|(i, _)| i)
                    .collect();
                v.reverse();
                v
            } else {
                l.iter()
                    .enumerate()
                    .filter(matching)
                    .take(limit)
                    .map(|(i, _)| i)
                    .collect()
            }
        }
        Some(_) => return Err(wrongtype()),
    };
    if doomed.is_empty() {
        return Ok(Reply::Int(0));
    }
    if let Some(l) = list_mut(ctx.db, key, ctx.now) {
        if let [only] = doomed.as_slice() {
            l.remove(*only);
        } else {
            let mut next = doomed.iter().peekable();
            let mut i = 0usize;
            l.retain(|_| {
                let drop = next.peek().is_some_and(|&&d| d == i);
                if drop {
                    next.next();
                }
                i += 1;
                !drop
            });
        }
    }
    ctx.db.remove_if_empty(key, ctx.now);
    Ok(Reply::Int(doomed.len() as i64))
}

fn ltrim(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let start = int_arg(a.at(2)?)?;
    let end = int_arg(a.at(3)?)?;
    let key = a.at(1)?;
    let Some(len) = len_for_write(ctx.db, key, ctx.now)? else {
        return Ok(Reply::Ok);
    };
    let keep = clamp_range(start, end, len);
    if let Some(l) = list_mut(ctx.db, key, ctx.now) {
        match keep {
            Some((s, e)) => {
                l.truncate(e + 1);
                l.drain(..s);
            }
            None => l.clear(),
        }
    }
    ctx.db.remove_if_empty(key, ctx.now);
    Ok(Reply::Ok)
}

// ---- moves ---------------------------------------------------------------

/// Moves one element from `src` to `dst`; Ok(None) when `src` is missing.
/// `dst`'s type is checked only when there is something to move, as Redis.
fn move_one(
    ctx: &mut Ctx,
    src: &[u8],
    dst: &[u8],
    from: End,
    to: End,
) -> Result<Option<Sds>, Reply> {
    if len_for_write(ctx.db, src, ctx.now)?.is_none() {
        return Ok(None);
    }
    len_for_write(ctx.db, dst, ctx.now)?;
    let Some(v) = list_mut(ctx.db, src, ctx.now).and_then(|l| match from {
        End::Left => l.pop_front(),
        End::Right => l.pop_back(),
    }) else {
        return Ok(None);
    };
    // Push before deleting an emptied `src`: with src == dst the list must
    // survive its own rotation.
    let l = list_or_create(ctx.db, dst, ctx.now)?;
    match to {
        End::Left => l.push_front(v.clone()),
        End::Right => l.push_back(v.clone()),
    }
    ctx.db.remove_if_empty(src, ctx.now);
    Ok(Some(v))
}

fn lmove(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let from = end_arg(a.at(3)?)?;
    let to = end_arg(a.at(4)?)?;
    Ok(move_one(ctx, a.at(1)?, a.at(2)?, from, to)?.map_or(Reply::Nil, |v| bulk(&v)))
}

fn rpoplpush(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(move_one(ctx, a.at(1)?, a.at(2)?, End::Right, End::Left)?.map_or(Reply::Nil, |v| bulk(&v)))
}

fn end_name(e: End) -> Bytes {
    Bytes::from_static(if e == End::Left { b"LEFT" } else { b"RIGHT" })
}

fn pop_name(e: End) -> Bytes {
    Bytes::from_static(if e == End::Left { b"LPOP" } else { b"RPOP" })
}

fn blocking_move(ctx: &mut Ctx, a: &[Bytes], from: End, to: End, timeout: &[u8]) -> CmdResult {
    let deadline = timeout_arg(timeout, ctx.now)?;
    match move_one(ctx, a.at(1)?, a.at(2)?, from, to)? {
        Some(v) => {
            // Served: replicas apply the non-blocking form.
            ctx.propagate_as(vec![
                Bytes::from_static(b"LMOVE"),
                a.at(1)?.clone(),
                a.at(2)?.clone(),
                end_name(from),
                end_name(to),
            ]);
            Ok(bulk(&v))
        }
        None => block_or_nil(ctx, a.get(1..2).unwrap_or_default(), deadline, Reply::Nil),
    }
}

fn blmove(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let from = end_arg(a.at(3)?)?;
    let to = end_arg(a.at(4)?)?;
    blocking_move(ctx, a, from, to, a.at(5)?)
}

fn brpoplpush(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    blocking_move(ctx, a, End::Right, End::Left, a.at(3)?)
}

// ---- multi-key pops ------------------------------------------------------

/// Positions of the keys announced by the numkeys argument at `numkeys_idx`.
fn numkeys_range(a: &[Bytes], numkeys_idx: usize) -> Result<Range<usize>, Reply> {
    let numkeys = a
        .get(numkeys_idx)
        .and_then(|n| parse_i64(n))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| err("ERR numkeys should be greater than 0"))?;
    let first = numkeys_idx + 1;
    // The keys must leave room for LEFT|RIGHT after them.
    match first.checked_add(numkeys) {
        Some(end) if end < a.len() => Ok(first..end),
        _ => Err(syntax_error()),
    }
}

struct MpopArgs {
    keys: Range<usize>,
    end: End,
    count: usize,
}

/// `numkeys key... LEFT|RIGHT [COUNT n]`, in Redis's order of checks.
fn parse_mpop(a: &[Bytes], numkeys_idx: usize) -> Result<MpopArgs, Reply> {
    let keys = numkeys_range(a, numkeys_idx)?;
    let end = end_arg(a.at(keys.end)?)?;
    let mut count = None;
    let mut i = keys.end + 1;
    while i < a.len() {
        match a.get(i + 1) {
            Some(v) if count.is_none() && is(a.at(i)?, "count") => {
                count = Some(
                    parse_i64(v)
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| err("ERR count should be greater than 0"))?,
                );
            }
            _ => return Err(syntax_error()),
        }
        i += 2;
    }
    Ok(MpopArgs {
        keys,
        end,
        count: count.unwrap_or(1),
    })
}

/// Pops from the first non-empty list among the keys: `[key, [elements]]`.
fn mpop(ctx: &mut Ctx, a: &[Bytes], m: &MpopArgs) -> Result<Option<Reply>, Reply> {
    for key in a.get(m.keys.clone()).unwrap_or_default() {
        if len_for_write(ctx.db, key, ctx.now)?.is_some() {
            let items = pop_n(ctx.db, key, ctx.now, m.end, m.count);
            // One key was chosen: replicas pop from it directly (Redis 7).
            if ctx.propagating() {
                ctx.propagate_as(vec![
                    pop_name(m.end),
                    key.clone(),
                    Bytes::from(items.len().to_string()),
                ]);
            }
            return Ok(Some(Reply::Array(vec![
                Reply::Bulk(key.clone()),
                Reply::Array(items.iter().map(bulk).collect()),
            ])));
        }
    }
    Ok(None)
}

fn lmpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let m = parse_mpop(a, 1)?;
    Ok(mpop(ctx, a, &m)?.unwrap_or(Reply::NilArray))
}

fn blmpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let m = parse_mpop(a, 2)?;
    let deadline = timeout_arg(a.at(1)?, ctx.now)?;
    match mpop(ctx, a, &m)? {
        Some(r) => Ok(r),
        None => block_or_nil(
            ctx,
            a.get(m.keys.clone()).unwrap_or_default(),
            deadline,
            Reply::NilArray,
        ),
    }
}

// ---- BLPOP / BRPOP -------------------------------------------------------

fn blocking_pop(ctx: &mut Ctx, a: &[Bytes], end: End) -> CmdResult {
    let (timeout, head) = a.split_last().ok_or_else(super::syntax_error)?;
    let deadline = timeout_arg(timeout, ctx.now)?;
    let keys = head.rest(1);
    for key in keys {
        if len_for_write(ctx.db, key, ctx.now)?.is_some() {
            if let Some(v) = pop_n(ctx.db, key, ctx.now, end, 1).first() {
                ctx.propagate_as(vec![pop_name(end), key.clone()]);
                return Ok(Reply::Array(vec![Reply::Bulk(key.clone()), bulk(v)]));
            }
        }
    }
    block_or_nil(ctx, keys, deadline, Reply::NilArray)
}

fn blpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    blocking_pop(ctx, a, End::Left)
}
fn brpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    blocking_pop(ctx, a, End::Right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::cmd::execute;
    use crate::node::cmd::harness::Harness;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    impl Harness {
        fn run_as(&mut self, cmd: &str, nested: bool, timed_out: bool) -> (Reply, Option<Action>) {
            let mut ctx = self.state.ctx(&mut self.client, &self.shared, 1_000_000);
            ctx.nested = nested;
            ctx.timed_out = timed_out;
            let reply = execute(&mut ctx, &args(cmd));
            (reply, ctx.action.take())
        }

        fn reply(&mut self, cmd: &str) -> Reply {
            self.run_as(cmd, false, false).0
        }
    }

    fn block_of(action: Option<Action>) -> Option<(Vec<String>, Option<u64>)> {
        match action {
            Some(Action::Block { keys, deadline }) => Some((
                keys.iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect(),
                deadline,
            )),
            _ => None,
        }
    }

    #[test]
    fn blocking_commands_block_on_the_right_keys() {
        let mut h = Harness::new();
        let (_, a) = h.run_as("blpop k1 k2 0", false, false);
        assert_eq!(block_of(a), Some((vec!["k1".into(), "k2".into()], None)));
        let (_, a) = h.run_as("brpop k1 1.5", false, false);
        assert_eq!(block_of(a), Some((vec!["k1".into()], Some(1_001_500))));
        let (_, a) = h.run_as("blmove src dst left right 0.2", false, false);
        assert_eq!(block_of(a), Some((vec!["src".into()], Some(1_000_200))));
        let (_, a) = h.run_as("brpoplpush src dst 0", false, false);
        assert_eq!(block_of(a), Some((vec!["src".into()], None)));
        let (_, a) = h.run_as("blmpop 0 2 m1 m2 left count 3", false, false);
        assert_eq!(block_of(a), Some((vec!["m1".into(), "m2".into()], None)));
        // Data present: served, no block.
        h.reply("rpush m2 a");
        let (r, a) = h.run_as("blmpop 0 2 m1 m2 left count 3", false, false);
        assert!(a.is_none());
        assert!(matches!(r, Reply::Array(ref v) if v.len() == 2));
    }

    #[test]
    fn nested_and_timed_out_replies() {
        let mut h = Harness::new();
        for (cmd, nested_reply) in [
            ("blpop k 0", Reply::NilArray),
            ("brpop k j 0", Reply::NilArray),
            ("blmpop 0 1 k left", Reply::NilArray),
            // Inside MULTI the non-blocking form answers: LMOVE's nil bulk.
            ("blmove k d left left 0", Reply::Nil),
            ("brpoplpush k d 0", Reply::Nil),
        ] {
            let (r, a) = h.run_as(cmd, true, false);
            assert!(a.is_none(), "{cmd}");
            assert_eq!(format!("{r:?}"), format!("{nested_reply:?}"), "{cmd}");
            // A real timeout is a nil array for every one of them.
            let (r, a) = h.run_as(cmd, false, true);
            assert!(a.is_none(), "{cmd}");
            assert!(matches!(r, Reply::NilArray), "{cmd}: {r:?}");
        }
        // A timed-out re-run still serves data that arrived meanwhile.
        h.reply("rpush k v");
        let (r, _) = h.run_as("blmove k d left left 1", false, true);
        assert!(matches!(r, Reply::Bulk(ref b) if &b[..] == b"v"));
    }

    #[test]
    fn writes_that_change_nothing_leave_watchers_alone() {
        let mut h = Harness::new();
        h.reply("rpush l a b");
        h.reply("set s x");
        let flag = Arc::new(AtomicBool::new(false));
        for k in [&b"l"[..], b"s", b"missing"] {
            h.state.db.watch(k, &flag);
        }
        for cmd in [
            "lset l 5 x",
            "lset missing 0 x",
            "lrem l 0 zz",
            "linsert l before zz x",
            "lpop missing",
            "rpop missing 2",
            "lpushx missing a",
            "lpush s a",
            "lmove missing l left left",
            "lmove l s left left",
            "ltrim missing 0 1",
            "lmpop 1 missing left",
            "lrange l 0 -1",
            "lpos l a",
        ] {
            h.reply(cmd);
            assert!(!flag.load(Ordering::Acquire), "{cmd} dirtied a watcher");
        }
        h.reply("lpop l");
        assert!(flag.load(Ordering::Acquire));
    }

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn range_clamping_matches_redis() {
        assert_eq!(clamp_range(0, -1, 5), Some((0, 4)));
        assert_eq!(clamp_range(-100, 100, 5), Some((0, 4)));
        assert_eq!(clamp_range(3, 1, 5), None);
        assert_eq!(clamp_range(5, 10, 5), None);
        assert_eq!(clamp_range(-2, -1, 5), Some((3, 4)));
        assert_eq!(clamp_range(i64::MIN, i64::MAX, 3), Some((0, 2)));
        assert_eq!(clamp_range(0, -1, 0), None);
        assert_eq!(clamp_range(0, i64::MIN, 3), None);
    }

    #[test]
    fn index_normalisation() {
        assert_eq!(index_of(0, 3), Some(0));
        assert_eq!(index_of(-1, 3), Some(2));
        assert_eq!(index_of(-3, 3), Some(0));
        assert_eq!(index_of(-4, 3), None);
        assert_eq!(index_of(3, 3), None);
        assert_eq!(index_of(i64::MIN, 3), None);
        assert_eq!(index_of(i64::MAX, 3), None);
    }

    #[test]
    fn mpop_argument_checks() {
        let ok = parse_mpop(&args("lmpop 2 a b right count 3"), 1);
        assert!(matches!(ok, Ok(MpopArgs { keys, end: End::Right, count: 3 }) if keys == (2..4)));
        let e = |s: &str, idx| match parse_mpop(&args(s), idx) {
            Err(Reply::Error(e)) => e,
            _ => String::new(),
        };
        let numkeys = "ERR numkeys should be greater than 0";
        let syntax = "ERR syntax error";
        let cases = [
            ("lmpop 0 a left", 1, numkeys),
            ("lmpop x a left", 1, numkeys),
            ("lmpop 2 a b", 1, syntax),
            ("lmpop 9223372036854775807 a left", 1, syntax),
            ("lmpop 1 a up", 1, syntax),
            (
                "lmpop 1 a left count 0",
                1,
                "ERR count should be greater than 0",
            ),
            ("lmpop 1 a left count 1 count 2", 1, syntax),
            ("lmpop 1 a left count", 1, syntax),
            ("blmpop 0 1 a middle", 2, syntax),
        ];
        for (call, numkeys_at, want) in cases {
            assert_eq!(e(call, numkeys_at), want, "{call}");
        }
    }

    #[test]
    fn timeouts_follow_redis_rounding() {
        let t = |s: &str| match timeout_arg(s.as_bytes(), 1000) {
            Ok(d) => Ok(d),
            Err(Reply::Error(e)) => Err(e),
            Err(_) => Err(String::new()),
        };
        assert_eq!(t("0"), Ok(None));
        assert_eq!(t("-0"), Ok(None));
        assert_eq!(t("-0.0001"), Ok(None));
        assert_eq!(t("0.0001"), Ok(Some(1001)));
        assert_eq!(t("0.2"), Ok(Some(1200)));
        assert_eq!(t("1"), Ok(Some(2000)));
        let negative = Err("ERR timeout is negative".to_string());
        assert_eq!(t("-1"), negative);
        assert_eq!(t("inf"), negative);
        assert_eq!(t("-inf"), negative);
        assert_eq!(t("1e400"), negative);
        assert_eq!(t("9999999999999999"), negative);
        let nan = Err("ERR timeout is not a float or out of range".to_string());
        assert_eq!(t("x"), nan);
        assert_eq!(t("nan"), nan);
        assert_eq!(t(" 1"), nan);
        assert_eq!(t(""), nan);
    }
}
