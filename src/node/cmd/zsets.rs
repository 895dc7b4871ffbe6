//! Sorted-set commands.

use super::flags::*;
use super::hashes::{matches, scan_opts};
use super::picks::{self, pair_shape};
use super::Argv;
use super::{
    err, float_arg, int_arg, is, parse_float, syntax_error, timeout_arg, wrongtype, Action,
    CmdResult, CommandSpec, Ctx,
};
use crate::resp::{Proto, Reply};
use crate::store::{Sds, Value, ZSet};
use bytes::Bytes;
use rand::seq::IteratorRandom;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("zadd", -4, WRITE | DENYOOM | FAST, [1, 1, 1], zadd),
    CommandSpec::new("zincrby", 4, WRITE | DENYOOM | FAST, [1, 1, 1], zincrby),
    CommandSpec::new("zrem", -3, WRITE | FAST, [1, 1, 1], zrem),
    CommandSpec::new("zcard", 2, READONLY | FAST, [1, 1, 1], zcard),
    CommandSpec::new("zscore", 3, READONLY | FAST, [1, 1, 1], zscore),
    CommandSpec::new("zmscore", -3, READONLY | FAST, [1, 1, 1], zmscore),
    CommandSpec::new("zrank", 3, READONLY | FAST, [1, 1, 1], zrank),
    CommandSpec::new("zrevrank", 3, READONLY | FAST, [1, 1, 1], zrevrank),
    CommandSpec::new("zcount", 4, READONLY | FAST, [1, 1, 1], zcount),
    CommandSpec::new("zlexcount", 4, READONLY | FAST, [1, 1, 1], zlexcount),
    CommandSpec::new("zrange", -4, READONLY, [1, 1, 1], zrange),
    CommandSpec::new("zrangestore", -5, WRITE | DENYOOM, [1, 2, 1], zrangestore),
    CommandSpec::new("zrevrange", -4, READONLY, [1, 1, 1], zrevrange),
    CommandSpec::new("zrangebyscore", -4, READONLY, [1, 1, 1], zrangebyscore),
    CommandSpec::new("zrevrangebyscore", -4, READONLY, [1, 1, 1], zrevrangebyscore),
    CommandSpec::new("zrangebylex", -4, READONLY, [1, 1, 1], zrangebylex),
    CommandSpec::new("zrevrangebylex", -4, READONLY, [1, 1, 1], zrevrangebylex),
    CommandSpec::new("zremrangebyrank", 4, WRITE, [1, 1, 1], zremrangebyrank),
    CommandSpec::new("zremrangebyscore", 4, WRITE, [1, 1, 1], zremrangebyscore),
    CommandSpec::new("zremrangebylex", 4, WRITE, [1, 1, 1], zremrangebylex),
    CommandSpec::new("zpopmin", -2, WRITE | FAST, [1, 1, 1], zpopmin),
    CommandSpec::new("zpopmax", -2, WRITE | FAST, [1, 1, 1], zpopmax),
    CommandSpec::new("bzpopmin", -3, WRITE | FAST | BLOCKING, [1, -2, 1], bzpopmin),
    CommandSpec::new("bzpopmax", -3, WRITE | FAST | BLOCKING, [1, -2, 1], bzpopmax),
    CommandSpec::new("zrandmember", -2, READONLY, [1, 1, 1], zrandmember),
    CommandSpec::new("zscan", -3, READONLY, [1, 1, 1], zscan),
    CommandSpec::new("zunionstore", -4, WRITE | DENYOOM | MOVABLE_KEYS, [1, 1, 1], zunionstore),
    CommandSpec::new("zinterstore", -4, WRITE | DENYOOM | MOVABLE_KEYS, [1, 1, 1], zinterstore),
    CommandSpec::new("zdiffstore", -4, WRITE | DENYOOM | MOVABLE_KEYS, [1, 1, 1], zdiffstore),
    CommandSpec::new("zunion", -3, READONLY | MOVABLE_KEYS, [0, 0, 0], zunion),
    CommandSpec::new("zinter", -3, READONLY | MOVABLE_KEYS, [0, 0, 0], zinter),
    CommandSpec::new("zdiff", -3, READONLY | MOVABLE_KEYS, [0, 0, 0], zdiff),
    CommandSpec::new("zintercard", -3, READONLY | MOVABLE_KEYS, [0, 0, 0], zintercard),
    CommandSpec::new("zmpop", -4, WRITE | MOVABLE_KEYS, [0, 0, 0], zmpop),
    CommandSpec::new("bzmpop", -5, WRITE | BLOCKING | MOVABLE_KEYS, [0, 0, 0], bzmpop),
];

fn zset_ref<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<Option<&'d ZSet>, Reply> {
    super::read(ctx, key)
}

fn zset_mut<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<&'d mut ZSet, Reply> {
    super::write(ctx, key)
}

fn score_reply(d: f64) -> Reply {
    Reply::Double(d)
}

/// Members with optional scores in Redis 7's shapes: RESP2 flat, RESP3
/// pairs when scores are included.
fn with_scores(proto: Proto, items: Vec<(Sds, f64)>, scores: bool) -> Reply {
    Reply::Array(
        items
            .into_iter()
            .flat_map(|(m, s)| pair_shape(proto, Reply::bulk(m), scores.then(|| score_reply(s))))
            .collect(),
    )
}

/// Also GEOADD's engine (it runs ZADD with computed scores).
pub(super) fn zadd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < a.len() {
        let o = a.at(i)?;
        if is(o, "nx") {
            nx = true;
        } else if is(o, "xx") {
            xx = true;
        } else if is(o, "gt") {
            gt = true;
        } else if is(o, "lt") {
            lt = true;
        } else if is(o, "ch") {
            ch = true;
        } else if is(o, "incr") {
            incr = true;
        } else {
            break;
        }
        i += 1;
    }
    let pairs = a.rest(i);
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(syntax_error());
    }
    if nx && xx {
        return Err(err(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err(err(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if incr && pairs.len() > 2 {
        return Err(err(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let mut parsed = Vec::with_capacity(pairs.len() / 2);
    for (score, member) in pairs.pairs_from(0) {
        parsed.push((float_arg(score)?, member));
    }
    if xx && zset_ref(ctx, a.at(1)?)?.is_none() {
        return Ok(if incr { Reply::Nil } else { Reply::Int(0) });
    }
    let z = zset_mut(ctx, a.at(1)?)?;
    let (mut added, mut changed) = (0, 0);
    let mut incr_result = None;
    for (score, m) in parsed {
        let cur = z.score(m);
        if (nx && cur.is_some()) || (xx && cur.is_none()) {
            continue;
        }
        let new = if incr {
            cur.unwrap_or(0.0) + score
        } else {
            score
        };
        if new.is_nan() {
            ctx.db.remove_if_empty(a.at(1)?, ctx.now);
            return Err(err("ERR resulting score is not a number (NaN)"));
        }
        if let Some(c) = cur {
            if (gt && new <= c) || (lt && new >= c) {
                continue;
            }
            if c != new {
                changed += 1;
            }
        } else {
            added += 1;
        }
        z.insert(m, new);
        incr_result = Some(new);
    }
    ctx.db.remove_if_empty(a.at(1)?, ctx.now);
    if added + changed == 0 {
        ctx.unchanged();
    }
    if incr {
        return Ok(incr_result.map_or(Reply::Nil, score_reply));
    }
    Ok(Reply::Int(if ch { added + changed } else { added }))
}

fn zincrby(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = float_arg(a.at(2)?)?;
    let z = zset_mut(ctx, a.at(1)?)?;
    let new = z.score(a.at(3)?).unwrap_or(0.0) + by;
    if new.is_nan() {
        ctx.db.remove_if_empty(a.at(1)?, ctx.now);
        return Err(err("ERR resulting score is not a number (NaN)"));
    }
    z.insert(a.at(3)?, new);
    Ok(score_reply(new))
}

fn zrem(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if zset_ref(ctx, a.at(1)?)?.is_none() {
        return Ok(Reply::Int(0));
    }
    let z = zset_mut(ctx, a.at(1)?)?;
    let n = a.rest(2).iter().filter(|m| z.remove(m)).count();
    ctx.db.remove_if_empty(a.at(1)?, ctx.now);
    if n == 0 {
        ctx.unchanged();
    }
    Ok(Reply::Int(n as i64))
}

fn zcard(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        zset_ref(ctx, a.at(1)?)?.map_or(0, ZSet::len) as i64
    ))
}

fn zscore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let member = a.at(2)?;
    Ok(zset_ref(ctx, a.at(1)?)?
        .and_then(|z| z.score(member))
        .map_or(Reply::Nil, score_reply))
}

fn zmscore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let z = zset_ref(ctx, a.at(1)?)?;
    Ok(Reply::Array(
        a.rest(2)
            .iter()
            .map(|m| z.and_then(|z| z.score(m)).map_or(Reply::Nil, score_reply))
            .collect(),
    ))
}

fn rank_generic(ctx: &mut Ctx, a: &[Bytes], rev: bool) -> CmdResult {
    let Some(z) = zset_ref(ctx, a.at(1)?)? else {
        return Ok(Reply::Nil);
    };
    let len = z.len();
    Ok(z.rank(a.at(2)?).map_or(Reply::Nil, |r| {
        Reply::Int(if rev { len - 1 - r } else { r } as i64)
    }))
}

fn zrank(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    rank_generic(ctx, a, false)
}
fn zrevrank(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    rank_generic(ctx, a, true)
}

/// A score bound: `1.5`, `(1.5`, `-inf`, `+inf`.
#[derive(Clone, Copy)]
struct ScoreBound {
    v: f64,
    excl: bool,
}

fn score_bound(b: &[u8]) -> Result<ScoreBound, Reply> {
    let bad = || err("ERR min or max is not a float");
    match b.strip_prefix(b"(") {
        Some(rest) => Ok(ScoreBound {
            v: parse_float(rest).ok_or_else(bad)?,
            excl: true,
        }),
        None => Ok(ScoreBound {
            v: parse_float(b).ok_or_else(bad)?,
            excl: false,
        }),
    }
}

fn above_min(s: f64, min: ScoreBound) -> bool {
    if min.excl {
        s > min.v
    } else {
        s >= min.v
    }
}
fn below_max(s: f64, max: ScoreBound) -> bool {
    if max.excl {
        s < max.v
    } else {
        s <= max.v
    }
}

/// A lex bound: `[a`, `(a`, `-`, `+`.
#[derive(Clone)]
enum Lex {
    Min,
    Max,
    Incl(Vec<u8>),
    Excl(Vec<u8>),
}

fn lex_bound(b: &[u8]) -> Result<Lex, Reply> {
    match b.split_first() {
        Some((b'-', [])) => Ok(Lex::Min),
        Some((b'+', [])) => Ok(Lex::Max),
        Some((b'[', rest)) => Ok(Lex::Incl(rest.to_vec())),
        Some((b'(', rest)) => Ok(Lex::Excl(rest.to_vec())),
        _ => Err(err("ERR min or max not valid string range item")),
    }
}

fn lex_above(m: &[u8], min: &Lex) -> bool {
    match min {
        Lex::Min => true,
        Lex::Max => false,
        Lex::Incl(v) => m >= v.as_slice(),
        Lex::Excl(v) => m > v.as_slice(),
    }
}
fn lex_below(m: &[u8], max: &Lex) -> bool {
    match max {
        Lex::Min => false,
        Lex::Max => true,
        Lex::Incl(v) => m <= v.as_slice(),
        Lex::Excl(v) => m < v.as_slice(),
    }
}

enum RangeBy {
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(Lex, Lex),
}

/// Selects members per a range spec; `rev` walks from the top, and for
/// score/lex ranges the bounds arrive as (max, min) like Redis's REV forms.
fn select(z: &ZSet, by: &RangeBy, rev: bool, limit: Option<(i64, i64)>) -> Vec<(Sds, f64)> {
    let all: Box<dyn Iterator<Item = (&Sds, f64)>> = if rev {
        Box::new(z.iter().rev())
    } else {
        Box::new(z.iter())
    };
    let items: Vec<(Sds, f64)> = match by {
        RangeBy::Rank(start, stop) => {
            return match super::strings::clamp_range(*start, *stop, z.len()) {
                Some((lo, hi)) => all
                    .skip(lo)
                    .take(hi - lo + 1)
                    .map(|(m, s)| (m.clone(), s))
                    .collect(),
                None => Vec::new(),
            };
        }
        RangeBy::Score(min, max) => all
            .filter(|(_, s)| above_min(*s, *min) && below_max(*s, *max))
            .map(|(m, s)| (m.clone(), s))
            .collect(),
        RangeBy::Lex(min, max) => all
            .filter(|(m, _)| lex_above(m, min) && lex_below(m, max))
            .map(|(m, s)| (m.clone(), s))
            .collect(),
    };
    match limit {
        Some((off, count)) if off >= 0 => {
            let it = items.into_iter().skip(off as usize);
            if count < 0 {
                it.collect()
            } else {
                it.take(count as usize).collect()
            }
        }
        Some(_) => Vec::new(),
        None => items,
    }
}

/// Parses the shared ZRANGE-family syntax starting after `key min max`.
struct RangeOpts {
    by_score: bool,
    by_lex: bool,
    rev: bool,
    limit: Option<(i64, i64)>,
    withscores: bool,
}

fn range_opts(a: &[Bytes], from: usize, allow_withscores: bool) -> Result<RangeOpts, Reply> {
    let mut o = RangeOpts {
        by_score: false,
        by_lex: false,
        rev: false,
        limit: None,
        withscores: false,
    };
    let mut i = from;
    while i < a.len() {
        if is(a.at(i)?, "byscore") {
            o.by_score = true;
        } else if is(a.at(i)?, "bylex") {
            o.by_lex = true;
        } else if is(a.at(i)?, "rev") {
            o.rev = true;
        } else if is(a.at(i)?, "withscores") && allow_withscores {
            o.withscores = true;
        } else if is(a.at(i)?, "limit") && i + 2 < a.len() {
            o.limit = Some((int_arg(a.at(i + 1)?)?, int_arg(a.at(i + 2)?)?));
            i += 2;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    Ok(o)
}

/// Runs a ZRANGE-style query with bounds `min`/`max` as given by the user.
fn run_range(
    ctx: &mut Ctx,
    key: &[u8],
    min: &[u8],
    max: &[u8],
    o: &RangeOpts,
) -> Result<Vec<(Sds, f64)>, Reply> {
    if o.by_score && o.by_lex {
        return Err(syntax_error());
    }
    if o.limit.is_some() && !o.by_score && !o.by_lex {
        return Err(err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if o.withscores && o.by_lex {
        return Err(err(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let by = if o.by_score {
        let (lo, hi) = if o.rev { (max, min) } else { (min, max) };
        RangeBy::Score(score_bound(lo)?, score_bound(hi)?)
    } else if o.by_lex {
        let (lo, hi) = if o.rev { (max, min) } else { (min, max) };
        RangeBy::Lex(lex_bound(lo)?, lex_bound(hi)?)
    } else {
        RangeBy::Rank(int_arg(min)?, int_arg(max)?)
    };
    Ok(match zset_ref(ctx, key)? {
        Some(z) => select(z, &by, o.rev, o.limit),
        None => Vec::new(),
    })
}

fn zrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let o = range_opts(a, 4, true)?;
    let items = run_range(ctx, a.at(1)?, a.at(2)?, a.at(3)?, &o)?;
    Ok(with_scores(ctx.client.proto, items, o.withscores))
}

fn zrangestore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let o = range_opts(a, 5, false)?;
    let items = run_range(ctx, a.at(2)?, a.at(3)?, a.at(4)?, &o)?;
    store_items(ctx, a.at(1)?, items)
}

/// Legacy forms: ZREVRANGE, ZRANGEBYSCORE, ZREVRANGEBYSCORE, ZRANGEBYLEX...
fn legacy(ctx: &mut Ctx, a: &[Bytes], by_score: bool, by_lex: bool, rev: bool) -> CmdResult {
    let mut o = range_opts(a, 4, !by_lex)?;
    if o.by_score || o.by_lex || o.rev {
        return Err(syntax_error());
    }
    o.by_score = by_score;
    o.by_lex = by_lex;
    o.rev = rev;
    let items = run_range(ctx, a.at(1)?, a.at(2)?, a.at(3)?, &o)?;
    Ok(with_scores(ctx.client.proto, items, o.withscores))
}

fn zrevrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    legacy(ctx, a, false, false, true)
}
fn zrangebyscore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    legacy(ctx, a, true, false, false)
}
fn zrevrangebyscore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    legacy(ctx, a, true, false, true)
}
fn zrangebylex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    legacy(ctx, a, false, true, false)
}
fn zrevrangebylex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    legacy(ctx, a, false, true, true)
}

fn zcount(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (min, max) = (score_bound(a.at(2)?)?, score_bound(a.at(3)?)?);
    Ok(Reply::Int(zset_ref(ctx, a.at(1)?)?.map_or(0, |z| {
        select(z, &RangeBy::Score(min, max), false, None).len()
    }) as i64))
}

fn zlexcount(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (min, max) = (lex_bound(a.at(2)?)?, lex_bound(a.at(3)?)?);
    Ok(Reply::Int(
        zset_ref(ctx, a.at(1)?)?
            .map_or(0, |z| select(z, &RangeBy::Lex(min, max), false, None).len()) as i64,
    ))
}

fn remove_range(ctx: &mut Ctx, key: &[u8], by: RangeBy) -> CmdResult {
    let Some(z) = zset_ref(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let victims = select(z, &by, false, None);
    let z = zset_mut(ctx, key)?;
    for (m, _) in &victims {
        z.remove(m);
    }
    ctx.db.remove_if_empty(key, ctx.now);
    Ok(Reply::Int(victims.len() as i64))
}

fn zremrangebyrank(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = RangeBy::Rank(int_arg(a.at(2)?)?, int_arg(a.at(3)?)?);
    remove_range(ctx, a.at(1)?, by)
}
fn zremrangebyscore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = RangeBy::Score(score_bound(a.at(2)?)?, score_bound(a.at(3)?)?);
    remove_range(ctx, a.at(1)?, by)
}
fn zremrangebylex(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = RangeBy::Lex(lex_bound(a.at(2)?)?, lex_bound(a.at(3)?)?);
    remove_range(ctx, a.at(1)?, by)
}

/// Pops up to `count` lowest (or highest) members.
fn pop_n(ctx: &mut Ctx, key: &[u8], max: bool, count: usize) -> Result<Vec<(Sds, f64)>, Reply> {
    if zset_ref(ctx, key)?.is_none() {
        return Ok(Vec::new());
    }
    let z = zset_mut(ctx, key)?;
    let picked: Vec<(Sds, f64)> = if max {
        z.iter()
            .rev()
            .take(count)
            .map(|(m, s)| (m.clone(), s))
            .collect()
    } else {
        z.iter().take(count).map(|(m, s)| (m.clone(), s)).collect()
    };
    for (m, _) in &picked {
        z.remove(m);
    }
    ctx.db.remove_if_empty(key, ctx.now);
    Ok(picked)
}

fn zpop(ctx: &mut Ctx, a: &[Bytes], max: bool) -> CmdResult {
    let count = super::pop_count(a)?;
    let items = pop_n(ctx, a.at(1)?, max, count.unwrap_or(1))?;
    if count.is_none() && ctx.client.proto == Proto::Resp3 {
        // Redis 7 answers a single ZPOP in RESP3 as a flat [member, score].
        return Ok(match items.into_iter().next() {
            Some((m, s)) => Reply::Array(vec![Reply::bulk(m), score_reply(s)]),
            None => Reply::Array(vec![]),
        });
    }
    Ok(with_scores(ctx.client.proto, items, true))
}

fn zpopmin(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    zpop(ctx, a, false)
}
fn zpopmax(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    zpop(ctx, a, true)
}

fn bzpop(ctx: &mut Ctx, a: &[Bytes], max: bool) -> CmdResult {
    let (timeout, head) = a.split_last().ok_or_else(super::syntax_error)?;
    let deadline = timeout_arg(timeout, ctx.now)?;
    let keys = head.rest(1);
    for k in keys {
        if let Some((m, s)) = pop_n(ctx, k, max, 1)?.into_iter().next() {
            // Served: replicas apply the non-blocking form.
            ctx.propagate_as(vec![
                Bytes::from_static(if max { b"ZPOPMAX" } else { b"ZPOPMIN" }),
                k.clone(),
            ]);
            return Ok(Reply::Array(vec![
                Reply::Bulk(k.clone()),
                Reply::bulk(m),
                score_reply(s),
            ]));
        }
    }
    if ctx.can_block() {
        ctx.action = Some(Action::Block {
            keys: keys.to_vec(),
            deadline,
        });
    }
    Ok(Reply::NilArray)
}

fn bzpopmin(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    bzpop(ctx, a, false)
}
fn bzpopmax(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    bzpop(ctx, a, true)
}

/// `numkeys key... MIN|MAX [COUNT n]` from `numkeys_idx`, in Redis's order
/// of checks: numkeys, MIN|MAX, COUNT, then (BZMPOP) the timeout.
struct Mpop<'a> {
    keys: &'a [Bytes],
    max: bool,
    count: usize,
}

fn parse_zmpop(a: &[Bytes], numkeys_idx: usize) -> Result<Mpop<'_>, Reply> {
    let numkeys = a
        .get(numkeys_idx)
        .and_then(|n| crate::resp::parse_i64(n))
        .filter(|&n| n >= 1)
        .ok_or_else(|| err("ERR numkeys should be greater than 0"))?;
    let where_idx = usize::try_from(numkeys)
        .ok()
        .and_then(|n| n.checked_add(numkeys_idx + 1))
        .filter(|&w| w < a.len())
        .ok_or_else(syntax_error)?;
    let w = a.at(where_idx)?;
    let max = if is(w, "min") {
        false
    } else if is(w, "max") {
        true
    } else {
        return Err(syntax_error());
    };
    let mut count = None;
    let mut j = where_idx + 1;
    while let Some(opt) = a.get(j) {
        match a.get(j + 1) {
            Some(v) if count.is_none() && is(opt, "count") => {
                count = Some(
                    crate::resp::parse_i64(v)
                        .filter(|&n| n >= 1)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| err("ERR count should be greater than 0"))?,
                );
                j += 2;
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok(Mpop {
        keys: a.get(numkeys_idx + 1..where_idx).unwrap_or_default(),
        max,
        count: count.unwrap_or(1),
    })
}

/// Pops from the first non-empty sorted set among the keys:
/// `[key, [[member, score], ...]]`; None when all are empty.
fn zmpop_from(ctx: &mut Ctx, m: &Mpop) -> Result<Option<Reply>, Reply> {
    for key in m.keys {
        if zset_ref(ctx, key)?.is_none() {
            continue;
        }
        let items = pop_n(ctx, key, m.max, m.count)?;
        // Replicas pop from the chosen key directly, as Redis 7 rewrites it.
        if ctx.propagating() {
            ctx.propagate_as(vec![
                Bytes::from_static(if m.max { b"ZPOPMAX" } else { b"ZPOPMIN" }),
                key.clone(),
                Bytes::from(items.len().to_string()),
            ]);
        }
        let pairs = items
            .into_iter()
            .map(|(mem, sc)| Reply::Array(vec![Reply::bulk(mem), score_reply(sc)]))
            .collect();
        return Ok(Some(Reply::Array(vec![
            Reply::Bulk(key.clone()),
            Reply::Array(pairs),
        ])));
    }
    Ok(None)
}

fn zmpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let m = parse_zmpop(a, 1)?;
    Ok(zmpop_from(ctx, &m)?.unwrap_or(Reply::NilArray))
}

fn bzmpop(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let m = parse_zmpop(a, 2)?;
    let deadline = timeout_arg(a.at(1)?, ctx.now)?;
    if let Some(r) = zmpop_from(ctx, &m)? {
        return Ok(r);
    }
    if ctx.can_block() {
        ctx.action = Some(Action::Block {
            keys: m.keys.to_vec(),
            deadline,
        });
    }
    Ok(Reply::NilArray)
}

/// ZINTERCARD numkeys key... [LIMIT n]: the size of the intersection,
/// counting stops at the limit (0 = none). Sets count as sorted sets.
fn zintercard(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let n = int_arg(a.at(1)?)?;
    if n < 1 {
        return Err(err(
            "ERR at least 1 input key is needed for 'zintercard' command",
        ));
    }
    let keys = usize::try_from(n)
        .ok()
        .and_then(|n| a.get(2..2 + n))
        .ok_or_else(syntax_error)?;
    // Types first, then options, as Redis checks them.
    let mut sizes = Vec::with_capacity(keys.len());
    for k in keys {
        sizes.push(match ctx.db.get(k, ctx.now) {
            None => 0,
            Some(Value::ZSet(z)) => z.len(),
            Some(Value::Set(s)) => s.len(),
            Some(_) => return Err(wrongtype()),
        });
    }
    let mut limit = 0usize;
    let mut j = 2 + keys.len();
    while let Some(opt) = a.get(j) {
        match a.get(j + 1) {
            Some(v) if is(opt, "limit") => {
                limit = crate::resp::parse_i64(v)
                    .filter(|&n| n >= 0)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| err("ERR LIMIT can't be negative"))?;
                j += 2;
            }
            _ => return Err(syntax_error()),
        }
    }
    if sizes.contains(&0) {
        return Ok(Reply::Int(0));
    }
    // Walk the smallest input, probe the others.
    let smallest = sizes
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| **s)
        .map_or(0, |(i, _)| i);
    let Some(first) = keys.get(smallest) else {
        return Ok(Reply::Int(0));
    };
    let mut candidates: Vec<Sds> = match ctx.db.get(first, ctx.now) {
        Some(Value::ZSet(z)) => z.iter().map(|(m, _)| m.clone()).collect(),
        Some(Value::Set(s)) => s.iter().cloned().collect(),
        _ => Vec::new(),
    };
    for (i, k) in keys.iter().enumerate() {
        if i == smallest {
            continue;
        }
        match ctx.db.get(k, ctx.now) {
            Some(Value::ZSet(z)) => candidates.retain(|m| z.score(m).is_some()),
            Some(Value::Set(s)) => candidates.retain(|m| s.contains(m.as_slice())),
            _ => candidates.clear(),
        }
    }
    let n = if limit > 0 {
        candidates.len().min(limit)
    } else {
        candidates.len()
    };
    Ok(Reply::Int(n as i64))
}

fn zrandmember(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let count = match a.get(2) {
        Some(c) => Some(picks::pick_count(c)?),
        None => None,
    };
    let withscores = match a.get(3) {
        Some(w) if is(w, "withscores") && a.len() == 4 => true,
        Some(_) => return Err(syntax_error()),
        None => false,
    };
    if let (true, Some(n)) = (withscores, count) {
        picks::check_pair_count(n)?;
    }
    let proto = ctx.client.proto;
    let Some(z) = zset_ref(ctx, a.at(1)?)? else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Nil
        });
    };
    let Some(count) = count else {
        return Ok(z
            .iter()
            .choose(&mut rand::rng())
            .map_or(Reply::Nil, |(m, _)| Reply::bulk(m)));
    };
    Ok(picks::random_picks(z.iter(), z.len(), count, |(m, s)| {
        pair_shape(proto, Reply::bulk(m), withscores.then(|| score_reply(s)))
    }))
}

fn zscan(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let pattern = scan_opts(a, 2)?;
    let mut items = Vec::new();
    if let Some(z) = zset_ref(ctx, a.at(1)?)? {
        for (m, s) in z.iter() {
            if matches(&pattern, m) {
                items.push(Reply::bulk(m));
                items.push(Reply::bulk(crate::resp::reply::format_double(s)));
            }
        }
    }
    Ok(Reply::Array(vec![Reply::bulk("0"), Reply::Array(items)]))
}

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Parses `numkeys key... [WEIGHTS w...] [AGGREGATE x] [WITHSCORES]` at `at`.
fn setop_args(
    a: &[Bytes],
    at: usize,
    op: SetOp,
    allow_withscores: bool,
) -> Result<(Vec<Bytes>, Vec<f64>, Aggregate, bool), Reply> {
    let n = int_arg(a.at(at)?)?;
    if n <= 0 {
        return Err(err("ERR at least 1 input key is needed for this command"));
    }
    let n = n as usize;
    let keys = a.get(at + 1..at + 1 + n).ok_or_else(syntax_error)?.to_vec();
    let mut weights = vec![1.0; n];
    let mut agg = Aggregate::Sum;
    let mut withscores = false;
    let mut i = at + 1 + n;
    while i < a.len() {
        if is(a.at(i)?, "weights") && op != SetOp::Diff {
            for (j, w) in weights.iter_mut().enumerate() {
                let v = a.get(i + 1 + j).ok_or_else(syntax_error)?;
                *w = parse_float(v).ok_or_else(|| err("ERR weight value is not a float"))?;
            }
            i += 1 + n;
        } else if is(a.at(i)?, "aggregate") && op != SetOp::Diff {
            let v = a.get(i + 1).ok_or_else(syntax_error)?;
            agg = if is(v, "sum") {
                Aggregate::Sum
            } else if is(v, "min") {
                Aggregate::Min
            } else if is(v, "max") {
                Aggregate::Max
            } else {
                return Err(syntax_error());
            };
            i += 2;
        } else if is(a.at(i)?, "withscores") && allow_withscores {
            withscores = true;
            i += 1;
        } else {
            return Err(syntax_error());
        }
    }
    Ok((keys, weights, agg, withscores))
}

/// Reads a key as a scored collection: zsets as is, sets with score 1.
fn scored(ctx: &mut Ctx, key: &[u8]) -> Result<Option<Vec<(Sds, f64)>>, Reply> {
    match ctx.db.get(key, ctx.now) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z.iter().map(|(m, s)| (m.clone(), s)).collect())),
        Some(Value::Set(s)) => Ok(Some(s.iter().map(|m| (m.clone(), 1.0)).collect())),
        Some(_) => Err(wrongtype()),
    }
}

/// inf * 0 and inf + -inf are NaN: Redis scores them 0, and a NaN must
/// never be stored (no RDB reader, ours or Redis's, accepts one).
fn nan_to_zero(r: f64) -> f64 {
    if r.is_nan() {
        0.0
    } else {
        r
    }
}

fn compute(
    ctx: &mut Ctx,
    keys: &[Bytes],
    weights: &[f64],
    agg: Aggregate,
    op: SetOp,
) -> Result<Vec<(Sds, f64)>, Reply> {
    let mut inputs = Vec::with_capacity(keys.len());
    for k in keys {
        inputs.push(scored(ctx, k)?);
    }
    let combine = |x: f64, y: f64| {
        nan_to_zero(match agg {
            Aggregate::Sum => x + y,
            Aggregate::Min => x.min(y),
            Aggregate::Max => x.max(y),
        })
    };
    let weighted = |s: f64, w: f64| nan_to_zero(s * w);
    let mut acc: hashbrown::HashMap<Sds, f64> = hashbrown::HashMap::new();
    let mut iter = inputs.into_iter().zip(weights.iter().copied());
    if let Some((first, w)) = iter.next() {
        for (m, s) in first.unwrap_or_default() {
            acc.insert(m, if op == SetOp::Diff { s } else { weighted(s, w) });
        }
    }
    for (input, w) in iter {
        let input = input.unwrap_or_default();
        match op {
            SetOp::Union => {
                for (m, s) in input {
                    let v = weighted(s, w);
                    acc.entry(m)
                        .and_modify(|c| *c = combine(*c, v))
                        .or_insert(v);
                }
            }
            SetOp::Inter => {
                let other: hashbrown::HashMap<Sds, f64> = input.into_iter().collect();
                acc.retain(|m, c| match other.get(m) {
                    Some(s) => {
                        *c = combine(*c, weighted(*s, w));
                        true
                    }
                    None => false,
                });
            }
            SetOp::Diff => {
                for (m, _) in input {
                    acc.remove(&m);
                }
            }
        }
    }
    let mut out: Vec<(Sds, f64)> = acc.into_iter().collect();
    out.sort_by(|x, y| {
        crate::store::value::Score(x.1)
            .cmp(&crate::store::value::Score(y.1))
            .then_with(|| x.0.cmp(&y.0))
    });
    Ok(out)
}

fn store_items(ctx: &mut Ctx, dst: &[u8], items: Vec<(Sds, f64)>) -> CmdResult {
    let n = items.len();
    if n == 0 {
        ctx.db.remove(dst, ctx.now);
    } else {
        let mut z = ZSet::default();
        for (m, s) in &items {
            z.insert(m, *s);
        }
        ctx.db.set(dst, Value::ZSet(Box::new(z)));
    }
    Ok(Reply::Int(n as i64))
}

fn setop_store(ctx: &mut Ctx, a: &[Bytes], op: SetOp) -> CmdResult {
    let (keys, w, agg, _) = setop_args(a, 2, op, false)?;
    let items = compute(ctx, &keys, &w, agg, op)?;
    store_items(ctx, a.at(1)?, items)
}

fn setop_reply(ctx: &mut Ctx, a: &[Bytes], op: SetOp) -> CmdResult {
    let (keys, w, agg, withscores) = setop_args(a, 1, op, true)?;
    let items = compute(ctx, &keys, &w, agg, op)?;
    Ok(with_scores(ctx.client.proto, items, withscores))
}

fn zunionstore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setop_store(ctx, a, SetOp::Union)
}
fn zinterstore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setop_store(ctx, a, SetOp::Inter)
}
fn zdiffstore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setop_store(ctx, a, SetOp::Diff)
}
fn zunion(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setop_reply(ctx, a, SetOp::Union)
}
fn zinter(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setop_reply(ctx, a, SetOp::Inter)
}
fn zdiff(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    setop_reply(ctx, a, SetOp::Diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_and_lex_bounds() {
        assert!(score_bound(b"(1.5").unwrap().excl);
        assert_eq!(score_bound(b"-inf").unwrap().v, f64::NEG_INFINITY);
        assert!(score_bound(b"abc").is_err());
        assert!(matches!(lex_bound(b"-").unwrap(), Lex::Min));
        assert!(lex_bound(b"abc").is_err());
    }
}
