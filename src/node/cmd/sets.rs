//! Set commands.

use super::flags::*;
use super::hashes::{matches, scan_opts};
use super::picks;
use super::Argv;
use super::{err, int_arg, is, syntax_error, CmdResult, CommandSpec, Ctx};
use crate::resp::Reply;
use crate::store::{sds, Sds, Value};
use bytes::Bytes;
use hashbrown::HashSet;
use rand::seq::IteratorRandom;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("sadd", -3, WRITE | DENYOOM | FAST, [1, 1, 1], sadd),
    CommandSpec::new("srem", -3, WRITE | FAST, [1, 1, 1], srem),
    CommandSpec::new("smembers", 2, READONLY, [1, 1, 1], smembers),
    CommandSpec::new("sismember", 3, READONLY | FAST, [1, 1, 1], sismember),
    CommandSpec::new("smismember", -3, READONLY | FAST, [1, 1, 1], smismember),
    CommandSpec::new("scard", 2, READONLY | FAST, [1, 1, 1], scard),
    CommandSpec::new("spop", -2, WRITE | FAST, [1, 1, 1], spop),
    CommandSpec::new("srandmember", -2, READONLY, [1, 1, 1], srandmember),
    CommandSpec::new("smove", 4, WRITE | FAST, [1, 2, 1], smove),
    CommandSpec::new("sinter", -2, READONLY, [1, -1, 1], sinter),
    CommandSpec::new("sintercard", -3, READONLY | MOVABLE_KEYS, [0, 0, 0], sintercard),
    CommandSpec::new("sinterstore", -3, WRITE | DENYOOM, [1, -1, 1], sinterstore),
    CommandSpec::new("sunion", -2, READONLY, [1, -1, 1], sunion),
    CommandSpec::new("sunionstore", -3, WRITE | DENYOOM, [1, -1, 1], sunionstore),
    CommandSpec::new("sdiff", -2, READONLY, [1, -1, 1], sdiff),
    CommandSpec::new("sdiffstore", -3, WRITE | DENYOOM, [1, -1, 1], sdiffstore),
    CommandSpec::new("sscan", -3, READONLY, [1, 1, 1], sscan),
];

type Set = HashSet<Sds>;

fn set_ref<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<Option<&'d Set>, Reply> {
    super::read(ctx, key)
}

fn set_mut<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<&'d mut Set, Reply> {
    super::write(ctx, key)
}

fn members_reply(items: impl IntoIterator<Item = Sds>) -> Reply {
    Reply::Set(items.into_iter().map(Reply::bulk).collect())
}

fn sadd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let s = set_mut(ctx, a.at(1)?)?;
    let n = a.rest(2).iter().filter(|m| s.insert(sds(m))).count();
    if n == 0 {
        ctx.unchanged();
    }
    Ok(Reply::Int(n as i64))
}

fn srem(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if set_ref(ctx, a.at(1)?)?.is_none() {
        return Ok(Reply::Int(0));
    }
    let s = set_mut(ctx, a.at(1)?)?;
    let n = a.rest(2).iter().filter(|m| s.remove(&m[..])).count();
    ctx.db.remove_if_empty(a.at(1)?, ctx.now);
    if n == 0 {
        ctx.unchanged();
    }
    Ok(Reply::Int(n as i64))
}

fn smembers(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(members_reply(
        set_ref(ctx, a.at(1)?)?
            .map(|s| s.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
    ))
}

fn sismember(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let member = &a.at(2)?[..];
    Ok(Reply::Int(i64::from(
        set_ref(ctx, a.at(1)?)?.is_some_and(|s| s.contains(member)),
    )))
}

fn smismember(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let s = set_ref(ctx, a.at(1)?)?;
    Ok(Reply::Array(
        a.rest(2)
            .iter()
            .map(|m| Reply::Int(i64::from(s.is_some_and(|s| s.contains(&m[..])))))
            .collect(),
    ))
}

fn scard(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        set_ref(ctx, a.at(1)?)?.map_or(0, |s| s.len()) as i64
    ))
}

fn spop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let count = super::pop_count(a)?;
    if set_ref(ctx, a.at(1)?)?.is_none() {
        return Ok(if count.is_some() {
            Reply::Set(vec![])
        } else {
            Reply::Nil
        });
    }
    let s = set_mut(ctx, a.at(1)?)?;
    // Never more than the set holds: `choose_multiple` reserves what it is
    // asked for, and the count is the client's (up to 2^63).
    let wanted = count.unwrap_or(1).min(s.len());
    let picked: Vec<Sds> = if wanted == s.len() {
        s.iter().cloned().collect()
    } else {
        s.iter().cloned().choose_multiple(&mut rand::rng(), wanted)
    };
    for m in &picked {
        s.remove(m.as_slice());
    }
    let emptied = s.is_empty();
    ctx.db.remove_if_empty(a.at(1)?, ctx.now);
    // The choice was random: replicas get what was taken, not SPOP
    // (Redis 7: SREM in batches, or DEL when the whole set went).
    if picked.is_empty() {
        ctx.unchanged();
    } else if ctx.propagating() {
        if emptied && count.is_some() {
            ctx.propagate_as(vec![Bytes::from_static(b"DEL"), a.at(1)?.clone()]);
        } else {
            for chunk in picked.chunks(1024) {
                let mut cmd = Vec::with_capacity(chunk.len() + 2);
                cmd.push(Bytes::from_static(b"SREM"));
                cmd.push(a.at(1)?.clone());
                cmd.extend(chunk.iter().map(|m| Bytes::copy_from_slice(m)));
                ctx.propagate_as(cmd);
            }
        }
    }
    Ok(match count {
        Some(_) => members_reply(picked),
        None => picked.into_iter().next().map_or(Reply::Nil, Reply::bulk),
    })
}

fn srandmember(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() > 3 {
        return Err(syntax_error());
    }
    let count = match a.get(2) {
        Some(c) => Some(picks::pick_count(c)?),
        None => None,
    };
    let Some(s) = set_ref(ctx, a.at(1)?)? else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Nil
        });
    };
    Ok(match count {
        None => s
            .iter()
            .choose(&mut rand::rng())
            .map_or(Reply::Nil, Reply::bulk),
        Some(n) => picks::random_picks(s.iter(), s.len(), n, |m| vec![Reply::bulk(m)]),
    })
}

fn smove(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (src, dst, m) = (a.at(1)?, a.at(2)?, &a.at(3)?[..]);
    let Some(s) = set_ref(ctx, src)? else {
        return Ok(Reply::Int(0));
    };
    let present = s.contains(m);
    set_ref(ctx, dst)?;
    if !present {
        return Ok(Reply::Int(0));
    }
    if src == dst {
        return Ok(Reply::Int(1));
    }
    set_mut(ctx, src)?.remove(m);
    ctx.db.remove_if_empty(src, ctx.now);
    set_mut(ctx, dst)?.insert(sds(m));
    Ok(Reply::Int(1))
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// Computes an algebra over the sets at `keys` (missing keys are empty).
fn combine(ctx: &mut Ctx, keys: &[Bytes], op: Op) -> Result<Vec<Sds>, Reply> {
    let mut sets: Vec<Option<Set>> = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(set_ref(ctx, k)?.cloned());
    }
    let mut iter = sets.into_iter();
    let first = iter.next().flatten().unwrap_or_default();
    let result: Set = match op {
        Op::Inter => {
            let rest: Vec<Option<Set>> = iter.collect();
            if rest.iter().any(Option::is_none) {
                Set::default()
            } else {
                first
                    .into_iter()
                    .filter(|m| rest.iter().flatten().all(|s| s.contains(m.as_slice())))
                    .collect()
            }
        }
        Op::Union => {
            let mut acc = first;
            for s in iter.flatten() {
                acc.extend(s);
            }
            acc
        }
        Op::Diff => {
            let rest: Vec<Set> = iter.flatten().collect();
            first
                .into_iter()
                .filter(|m| !rest.iter().any(|s| s.contains(m.as_slice())))
                .collect()
        }
    };
    Ok(result.into_iter().collect())
}

fn store(ctx: &mut Ctx, dst: &[u8], members: Vec<Sds>) -> CmdResult {
    let n = members.len();
    if n == 0 {
        ctx.db.remove(dst, ctx.now);
    } else {
        ctx.db
            .set(dst, Value::Set(Box::new(members.into_iter().collect())));
    }
    Ok(Reply::Int(n as i64))
}

fn sinter(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(members_reply(combine(ctx, a.rest(1), Op::Inter)?))
}
fn sunion(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(members_reply(combine(ctx, a.rest(1), Op::Union)?))
}
fn sdiff(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(members_reply(combine(ctx, a.rest(1), Op::Diff)?))
}
fn sinterstore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let m = combine(ctx, a.rest(2), Op::Inter)?;
    store(ctx, a.at(1)?, m)
}
fn sunionstore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let m = combine(ctx, a.rest(2), Op::Union)?;
    store(ctx, a.at(1)?, m)
}
fn sdiffstore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let m = combine(ctx, a.rest(2), Op::Diff)?;
    store(ctx, a.at(1)?, m)
}

fn sintercard(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let n = int_arg(a.at(1)?).map_err(|_| err("ERR numkeys should be greater than 0"))?;
    if n <= 0 {
        return Err(err("ERR numkeys should be greater than 0"));
    }
    let n = n as usize;
    let keys = a
        .get(2..2 + n)
        .ok_or_else(|| err("ERR Number of keys can't be greater than number of args"))?;
    let mut limit = usize::MAX;
    match a.get(2 + n..).unwrap_or_default() {
        [] => {}
        [l, v] if is(l, "limit") => {
            let v = int_arg(v).map_err(|_| err("ERR LIMIT can't be negative"))?;
            if v < 0 {
                return Err(err("ERR LIMIT can't be negative"));
            }
            if v > 0 {
                limit = v as usize;
            }
        }
        _ => return Err(syntax_error()),
    }
    let m = combine(ctx, keys, Op::Inter)?;
    Ok(Reply::Int(m.len().min(limit) as i64))
}

fn sscan(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let pattern = scan_opts(a, 2)?;
    let items = set_ref(ctx, a.at(1)?)?
        .map(|s| {
            s.iter()
                .filter(|m| matches(&pattern, m))
                .map(Reply::bulk)
                .collect()
        })
        .unwrap_or_default();
    Ok(Reply::Array(vec![Reply::bulk("0"), Reply::Array(items)]))
}
