//! List commands, including the blocking pops (BLPOP, BRPOP, BLMOVE,
//! BRPOPLPUSH, BLMPOP).

use super::flags::*;
use super::{
    err, int_arg, is, syntax_error, timeout_arg, wrongtype, Action, CmdResult, CommandSpec, Ctx,
};
use crate::resp::Reply;
use crate::store::{sds, Sds, Value};
use bytes::Bytes;
use std::collections::VecDeque;

pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "lpush",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lpush,
    },
    CommandSpec {
        name: "rpush",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: rpush,
    },
    CommandSpec {
        name: "lpushx",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lpushx,
    },
    CommandSpec {
        name: "rpushx",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: rpushx,
    },
    CommandSpec {
        name: "lpop",
        arity: -2,
        flags: WRITE | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lpop,
    },
    CommandSpec {
        name: "rpop",
        arity: -2,
        flags: WRITE | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: rpop,
    },
    CommandSpec {
        name: "llen",
        arity: 2,
        flags: READONLY | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: llen,
    },
    CommandSpec {
        name: "lrange",
        arity: 4,
        flags: READONLY,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lrange,
    },
    CommandSpec {
        name: "lindex",
        arity: 3,
        flags: READONLY,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lindex,
    },
    CommandSpec {
        name: "lset",
        arity: 4,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lset,
    },
    CommandSpec {
        name: "linsert",
        arity: 5,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: linsert,
    },
    CommandSpec {
        name: "lrem",
        arity: 4,
        flags: WRITE,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lrem,
    },
    CommandSpec {
        name: "ltrim",
        arity: 4,
        flags: WRITE,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: ltrim,
    },
    CommandSpec {
        name: "lpos",
        arity: -3,
        flags: READONLY,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: lpos,
    },
    CommandSpec {
        name: "lmove",
        arity: 5,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 2,
        step: 1,
        handler: lmove,
    },
    CommandSpec {
        name: "rpoplpush",
        arity: 3,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 2,
        step: 1,
        handler: rpoplpush,
    },
    CommandSpec {
        name: "lmpop",
        arity: -4,
        flags: WRITE | MOVABLE_KEYS,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: lmpop,
    },
    CommandSpec {
        name: "blpop",
        arity: -3,
        flags: WRITE | BLOCKING,
        first_key: 1,
        last_key: -2,
        step: 1,
        handler: blpop,
    },
    CommandSpec {
        name: "brpop",
        arity: -3,
        flags: WRITE | BLOCKING,
        first_key: 1,
        last_key: -2,
        step: 1,
        handler: brpop,
    },
    CommandSpec {
        name: "blmove",
        arity: 6,
        flags: WRITE | DENYOOM | BLOCKING,
        first_key: 1,
        last_key: 2,
        step: 1,
        handler: blmove,
    },
    CommandSpec {
        name: "brpoplpush",
        arity: 4,
        flags: WRITE | DENYOOM | BLOCKING,
        first_key: 1,
        last_key: 2,
        step: 1,
        handler: brpoplpush,
    },
    CommandSpec {
        name: "blmpop",
        arity: -5,
        flags: WRITE | BLOCKING | MOVABLE_KEYS,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: blmpop,
    },
];

type List = VecDeque<Sds>;

fn list_ref<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<Option<&'d List>, Reply> {
    super::read(ctx, key)
}

/// Checks the key holds a list (or nothing) without touching it.
fn check_list(ctx: &mut Ctx, key: &[u8]) -> Result<bool, Reply> {
    match ctx.db.peek(key, ctx.now).map(|e| &e.value) {
        None => Ok(false),
        Some(Value::List(_)) => Ok(true),
        Some(_) => Err(wrongtype()),
    }
}

fn list_mut<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Option<&'d mut List> {
    match ctx.db.get_mut(key, ctx.now) {
        Some(Value::List(l)) => Some(l),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq)]
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

fn push(ctx: &mut Ctx, a: &[Bytes], end: End, only_existing: bool) -> CmdResult {
    let exists = check_list(ctx, &a[1])?;
    if only_existing && !exists {
        return Ok(Reply::Int(0));
    }
    let v = ctx
        .db
        .get_or_insert_with(&a[1], ctx.now, || Value::List(Box::default()));
    let Value::List(l) = v else {
        return Err(wrongtype());
    };
    for e in &a[2..] {
        match end {
            End::Left => l.push_front(sds(e)),
            End::Right => l.push_back(sds(e)),
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

/// Pops up to `count` elements from one end, removing the key when empty.
fn pop_n(ctx: &mut Ctx, key: &[u8], end: End, count: usize) -> Vec<Sds> {
    let mut out = Vec::new();
    if let Some(l) = list_mut(ctx, key) {
        while out.len() < count {
            let e = match end {
                End::Left => l.pop_front(),
                End::Right => l.pop_back(),
            };
            match e {
                Some(e) => out.push(e),
                None => break,
            }
        }
    }
    ctx.db.remove_if_empty(key, ctx.now);
    out
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
        Some(c) => {
            let n = int_arg(c).map_err(|_| err("ERR value is out of range, must be positive"))?;
            if n < 0 {
                return Err(err("ERR value is out of range, must be positive"));
            }
            Some(n as usize)
        }
        None => None,
    };
    if !check_list(ctx, &a[1])? {
        return Ok(if count.is_some() {
            Reply::NilArray
        } else {
            Reply::Nil
        });
    }
    match count {
        None => Ok(pop_n(ctx, &a[1], end, 1)
            .pop()
            .map_or(Reply::Nil, Reply::bulk)),
        Some(n) => Ok(Reply::array_of_bulks(pop_n(ctx, &a[1], end, n))),
    }
}

fn lpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    pop(ctx, a, End::Left)
}
fn rpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    pop(ctx, a, End::Right)
}

fn llen(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        list_ref(ctx, &a[1])?.map_or(0, |l| l.len()) as i64
    ))
}

fn lrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    let Some(l) = list_ref(ctx, &a[1])? else {
        return Ok(Reply::Array(vec![]));
    };
    Ok(match super::strings::clamp_range(start, stop, l.len()) {
        Some((lo, hi)) => Reply::Array(l.range(lo..=hi).map(Reply::bulk).collect()),
        None => Reply::Array(vec![]),
    })
}

fn index_of(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

fn lindex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let i = int_arg(&a[2])?;
    let Some(l) = list_ref(ctx, &a[1])? else {
        return Ok(Reply::Nil);
    };
    Ok(index_of(i, l.len())
        .and_then(|i| l.get(i))
        .map_or(Reply::Nil, Reply::bulk))
}

fn lset(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let i = int_arg(&a[2])?;
    if !check_list(ctx, &a[1])? {
        return Err(err("ERR no such key"));
    }
    let l = list_mut(ctx, &a[1]).ok_or_else(|| err("ERR no such key"))?;
    let i = index_of(i, l.len()).ok_or_else(|| err("ERR index out of range"))?;
    if let Some(slot) = l.get_mut(i) {
        *slot = sds(&a[3]);
    }
    Ok(Reply::Ok)
}

fn linsert(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let before = if is(&a[2], "before") {
        true
    } else if is(&a[2], "after") {
        false
    } else {
        return Err(syntax_error());
    };
    if !check_list(ctx, &a[1])? {
        return Ok(Reply::Int(0));
    }
    let Some(l) = list_mut(ctx, &a[1]) else {
        return Ok(Reply::Int(0));
    };
    let Some(pos) = l.iter().position(|e| e.as_slice() == &a[3][..]) else {
        return Ok(Reply::Int(-1));
    };
    l.insert(if before { pos } else { pos + 1 }, sds(&a[4]));
    Ok(Reply::Int(l.len() as i64))
}

fn lrem(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let count = int_arg(&a[2])?;
    if !check_list(ctx, &a[1])? {
        return Ok(Reply::Int(0));
    }
    let target = &a[3][..];
    let mut removed = 0i64;
    if let Some(l) = list_mut(ctx, &a[1]) {
        let limit = if count == 0 { i64::MAX } else { count.abs() };
        if count >= 0 {
            let mut i = 0;
            while i < l.len() && removed < limit {
                if l.get(i).is_some_and(|e| e.as_slice() == target) {
                    l.remove(i);
                    removed += 1;
                } else {
                    i += 1;
                }
            }
        } else {
            let mut i = l.len();
            while i > 0 && removed < limit {
                i -= 1;
                if l.get(i).is_some_and(|e| e.as_slice() == target) {
                    l.remove(i);
                    removed += 1;
                }
            }
        }
    }
    ctx.db.remove_if_empty(&a[1], ctx.now);
    Ok(Reply::Int(removed))
}

fn ltrim(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    if !check_list(ctx, &a[1])? {
        return Ok(Reply::Ok);
    }
    if let Some(l) = list_mut(ctx, &a[1]) {
        match super::strings::clamp_range(start, stop, l.len()) {
            Some((lo, hi)) => {
                l.truncate(hi + 1);
                l.drain(..lo);
            }
            None => l.clear(),
        }
    }
    ctx.db.remove_if_empty(&a[1], ctx.now);
    Ok(Reply::Ok)
}

fn lpos(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let mut rank: i64 = 1;
    let mut count: Option<usize> = None;
    let mut maxlen: usize = 0;
    let mut i = 3;
    while i < a.len() {
        let v = a.get(i + 1).ok_or_else(syntax_error)?;
        if is(&a[i], "rank") {
            rank = int_arg(v)?;
            if rank == 0 {
                return Err(err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"));
            }
        } else if is(&a[i], "count") {
            let c = int_arg(v)?;
            if c < 0 {
                return Err(err("ERR COUNT can't be negative"));
            }
            count = Some(c as usize);
        } else if is(&a[i], "maxlen") {
            let m = int_arg(v)?;
            if m < 0 {
                return Err(err("ERR MAXLEN can't be negative"));
            }
            maxlen = m as usize;
        } else {
            return Err(syntax_error());
        }
        i += 2;
    }
    let target = a[2].clone();
    let Some(l) = list_ref(ctx, &a[1])? else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Nil
        });
    };
    let want = match count {
        Some(0) => usize::MAX,
        Some(c) => c,
        None => 1,
    };
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    let len = l.len();
    let limit = if maxlen == 0 { len } else { maxlen.min(len) };
    for step in 0..limit {
        let idx = if rank > 0 { step } else { len - 1 - step };
        if l.get(idx).is_some_and(|e| e.as_slice() == &target[..]) {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(Reply::Int(idx as i64));
            if found.len() >= want {
                break;
            }
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found),
        None => found.pop().unwrap_or(Reply::Nil),
    })
}

/// LMOVE core: pops from `src` at `from`, pushes to `dst` at `to`.
fn do_move(
    ctx: &mut Ctx,
    src: &[u8],
    dst: &[u8],
    from: End,
    to: End,
) -> Result<Option<Sds>, Reply> {
    if !check_list(ctx, src)? {
        return Ok(None);
    }
    check_list(ctx, dst)?;
    let Some(e) = pop_n(ctx, src, from, 1).pop() else {
        return Ok(None);
    };
    let v = ctx
        .db
        .get_or_insert_with(dst, ctx.now, || Value::List(Box::default()));
    if let Value::List(l) = v {
        match to {
            End::Left => l.push_front(e.clone()),
            End::Right => l.push_back(e.clone()),
        }
    }
    Ok(Some(e))
}

fn lmove(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (from, to) = (end_arg(&a[3])?, end_arg(&a[4])?);
    Ok(do_move(ctx, &a[1], &a[2], from, to)?.map_or(Reply::Nil, Reply::bulk))
}

fn rpoplpush(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(do_move(ctx, &a[1], &a[2], End::Right, End::Left)?.map_or(Reply::Nil, Reply::bulk))
}

/// Parses `numkeys key... LEFT|RIGHT [COUNT n]` starting at `a[at]`.
fn mpop_args(a: &[Bytes], at: usize) -> Result<(Vec<Bytes>, End, usize), Reply> {
    let n = int_arg(&a[at]).map_err(|_| err("ERR numkeys should be greater than 0"))?;
    if n <= 0 {
        return Err(err("ERR numkeys should be greater than 0"));
    }
    let n = n as usize;
    let keys = a.get(at + 1..at + 1 + n).ok_or_else(syntax_error)?.to_vec();
    let end = end_arg(a.get(at + 1 + n).ok_or_else(syntax_error)?)?;
    let mut count = 1usize;
    let rest = a.get(at + 2 + n..).unwrap_or_default();
    match rest {
        [] => {}
        [c, v] if is(c, "count") => {
            let v = int_arg(v).map_err(|_| err("ERR count should be greater than 0"))?;
            if v <= 0 {
                return Err(err("ERR count should be greater than 0"));
            }
            count = v as usize;
        }
        _ => return Err(syntax_error()),
    }
    Ok((keys, end, count))
}

/// First non-empty list among `keys` → [key, [elements]].
fn mpop_try(ctx: &mut Ctx, keys: &[Bytes], end: End, count: usize) -> Result<Option<Reply>, Reply> {
    for k in keys {
        if check_list(ctx, k)? {
            let els = pop_n(ctx, k, end, count);
            return Ok(Some(Reply::Array(vec![
                Reply::Bulk(k.clone()),
                Reply::array_of_bulks(els),
            ])));
        }
    }
    Ok(None)
}

fn lmpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (keys, end, count) = mpop_args(a, 1)?;
    Ok(mpop_try(ctx, &keys, end, count)?.unwrap_or(Reply::NilArray))
}

/// Blocks on `keys` until `deadline`, or gives the timeout reply.
fn block_or(
    ctx: &mut Ctx,
    keys: Vec<Bytes>,
    deadline: Option<u64>,
    timeout_reply: Reply,
) -> CmdResult {
    if ctx.can_block() {
        ctx.action = Some(Action::Block { keys, deadline });
    }
    Ok(timeout_reply)
}

fn bpop(ctx: &mut Ctx, a: &[Bytes], end: End) -> CmdResult {
    let deadline = timeout_arg(&a[a.len() - 1], ctx.now)?;
    let keys = &a[1..a.len() - 1];
    for k in keys {
        if check_list(ctx, k)? {
            if let Some(e) = pop_n(ctx, k, end, 1).pop() {
                return Ok(Reply::Array(vec![Reply::Bulk(k.clone()), Reply::bulk(e)]));
            }
        }
    }
    block_or(ctx, keys.to_vec(), deadline, Reply::NilArray)
}

fn blpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    bpop(ctx, a, End::Left)
}
fn brpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    bpop(ctx, a, End::Right)
}

fn bmove(ctx: &mut Ctx, src: &Bytes, dst: &Bytes, from: End, to: End, timeout: &[u8]) -> CmdResult {
    let deadline = timeout_arg(timeout, ctx.now)?;
    match do_move(ctx, src, dst, from, to)? {
        Some(e) => Ok(Reply::bulk(e)),
        None => block_or(ctx, vec![src.clone()], deadline, Reply::Nil),
    }
}

fn blmove(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (from, to) = (end_arg(&a[3])?, end_arg(&a[4])?);
    bmove(ctx, &a[1], &a[2], from, to, &a[5])
}

fn brpoplpush(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    bmove(ctx, &a[1], &a[2], End::Right, End::Left, &a[3])
}

fn blmpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let deadline = timeout_arg(&a[1], ctx.now)?;
    let (keys, end, count) = mpop_args(a, 2)?;
    match mpop_try(ctx, &keys, end, count)? {
        Some(r) => Ok(r),
        None => block_or(ctx, keys, deadline, Reply::NilArray),
    }
}
