//! Hash commands.

use super::flags::*;
use super::picks::{self, pair_shape};
use super::Argv;
use super::{err, float_arg, int_arg, is, not_integer, syntax_error, CmdResult, CommandSpec, Ctx};
use crate::glob::glob_match;
use crate::resp::{parse_i64, Reply};
use crate::store::{sds, Sds};
use bytes::Bytes;
use hashbrown::HashMap;
use rand::seq::IteratorRandom;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("hset", -4, WRITE | DENYOOM | FAST, [1, 1, 1], hset),
    CommandSpec::new("hmset", -4, WRITE | DENYOOM | FAST, [1, 1, 1], hmset),
    CommandSpec::new("hsetnx", 4, WRITE | DENYOOM | FAST, [1, 1, 1], hsetnx),
    CommandSpec::new("hget", 3, READONLY | FAST, [1, 1, 1], hget),
    CommandSpec::new("hmget", -3, READONLY | FAST, [1, 1, 1], hmget),
    CommandSpec::new("hgetall", 2, READONLY, [1, 1, 1], hgetall),
    CommandSpec::new("hkeys", 2, READONLY, [1, 1, 1], hkeys),
    CommandSpec::new("hvals", 2, READONLY, [1, 1, 1], hvals),
    CommandSpec::new("hdel", -3, WRITE | FAST, [1, 1, 1], hdel),
    CommandSpec::new("hlen", 2, READONLY | FAST, [1, 1, 1], hlen),
    CommandSpec::new("hexists", 3, READONLY | FAST, [1, 1, 1], hexists),
    CommandSpec::new("hstrlen", 3, READONLY | FAST, [1, 1, 1], hstrlen),
    CommandSpec::new("hincrby", 4, WRITE | DENYOOM | FAST, [1, 1, 1], hincrby),
    CommandSpec::new("hincrbyfloat", 4, WRITE | DENYOOM | FAST, [1, 1, 1], hincrbyfloat),
    CommandSpec::new("hrandfield", -2, READONLY, [1, 1, 1], hrandfield),
    CommandSpec::new("hscan", -3, READONLY, [1, 1, 1], hscan),
];

type Hash = HashMap<Sds, Sds>;

fn hash_ref<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<Option<&'d Hash>, Reply> {
    super::read(ctx, key)
}

fn hash_mut<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<&'d mut Hash, Reply> {
    super::write(ctx, key)
}

fn hset_pairs(ctx: &mut Ctx, a: &[Bytes], name: &str) -> Result<i64, Reply> {
    if a.len() % 2 != 0 {
        return Err(super::wrong_arity(name));
    }
    let h = hash_mut(ctx, a.at(1)?)?;
    let mut added = 0;
    for (field, value) in a.pairs_from(2) {
        if h.insert(sds(field), sds(value)).is_none() {
            added += 1;
        }
    }
    Ok(added)
}

fn hset(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(hset_pairs(ctx, a, "hset")?))
}

fn hmset(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    hset_pairs(ctx, a, "hmset")?;
    Ok(Reply::Ok)
}

fn hsetnx(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let field = &a.at(2)?[..];
    if hash_ref(ctx, a.at(1)?)?.is_some_and(|h| h.contains_key(field)) {
        return Ok(Reply::Int(0));
    }
    hash_mut(ctx, a.at(1)?)?.insert(sds(a.at(2)?), sds(a.at(3)?));
    Ok(Reply::Int(1))
}

fn hget(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let field = &a.at(2)?[..];
    Ok(hash_ref(ctx, a.at(1)?)?
        .and_then(|h| h.get(field))
        .map_or(Reply::Nil, Reply::bulk))
}

fn hmget(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let h = hash_ref(ctx, a.at(1)?)?;
    Ok(Reply::Array(
        a.rest(2)
            .iter()
            .map(|f| {
                h.and_then(|h| h.get(&f[..]))
                    .map_or(Reply::Nil, Reply::bulk)
            })
            .collect(),
    ))
}

fn hgetall(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Map(
        hash_ref(ctx, a.at(1)?)?
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (Reply::bulk(k), Reply::bulk(v)))
                    .collect()
            })
            .unwrap_or_default(),
    ))
}

fn hkeys(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Array(
        hash_ref(ctx, a.at(1)?)?
            .map(|h| h.keys().map(Reply::bulk).collect())
            .unwrap_or_default(),
    ))
}

fn hvals(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Array(
        hash_ref(ctx, a.at(1)?)?
            .map(|h| h.values().map(Reply::bulk).collect())
            .unwrap_or_default(),
    ))
}

fn hdel(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if hash_ref(ctx, a.at(1)?)?.is_none() {
        return Ok(Reply::Int(0));
    }
    let h = hash_mut(ctx, a.at(1)?)?;
    let n = a
        .rest(2)
        .iter()
        .filter(|f| h.remove(&f[..]).is_some())
        .count();
    ctx.db.remove_if_empty(a.at(1)?, ctx.now);
    if n == 0 {
        ctx.unchanged();
    }
    Ok(Reply::Int(n as i64))
}

fn hlen(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        hash_ref(ctx, a.at(1)?)?.map_or(0, |h| h.len()) as i64
    ))
}

fn hexists(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let field = &a.at(2)?[..];
    Ok(Reply::Int(i64::from(
        hash_ref(ctx, a.at(1)?)?.is_some_and(|h| h.contains_key(field)),
    )))
}

fn hstrlen(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let field = &a.at(2)?[..];
    Ok(Reply::Int(
        hash_ref(ctx, a.at(1)?)?
            .and_then(|h| h.get(field))
            .map_or(0, |v| v.len()) as i64,
    ))
}

fn hincrby(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = int_arg(a.at(3)?)?;
    let h = hash_mut(ctx, a.at(1)?)?;
    let cur = match h.get(&a.at(2)?[..]) {
        None => 0,
        Some(v) => parse_i64(v).ok_or_else(|| err("ERR hash value is not an integer"))?,
    };
    let new = cur
        .checked_add(by)
        .ok_or_else(|| err("ERR increment or decrement would overflow"))?;
    h.insert(sds(a.at(2)?), sds(new.to_string().as_bytes()));
    Ok(Reply::Int(new))
}

fn hincrbyfloat(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let by = float_arg(a.at(3)?)?;
    // Checked before creating the hash: a refused increment must not leave
    // an empty hash behind (nor a difference with the replicas, which never
    // see a failed command).
    let field = &a.at(2)?[..];
    let cur = match hash_ref(ctx, a.at(1)?)?.and_then(|h| h.get(field)) {
        None => 0.0,
        Some(v) => super::parse_float(v).ok_or_else(|| err("ERR hash value is not a float"))?,
    };
    let new = cur + by;
    if !new.is_finite() {
        return Err(err("ERR increment would produce NaN or Infinity"));
    }
    let text = format!("{new}");
    hash_mut(ctx, a.at(1)?)?.insert(sds(a.at(2)?), sds(text.as_bytes()));
    // The result, not the increment (float formatting, as Redis 7).
    if ctx.propagating() {
        ctx.propagate_as(vec![
            Bytes::from_static(b"HSET"),
            a.at(1)?.clone(),
            a.at(2)?.clone(),
            Bytes::from(text.clone()),
        ]);
    }
    Ok(Reply::bulk(text))
}

fn hrandfield(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let count = match a.get(2) {
        Some(c) => Some(picks::pick_count(c)?),
        None => None,
    };
    let withvalues = match a.get(3) {
        Some(w) if is(w, "withvalues") && a.len() == 4 => true,
        Some(_) => return Err(syntax_error()),
        None => false,
    };
    if let (true, Some(n)) = (withvalues, count) {
        picks::check_pair_count(n)?;
    }
    let proto = ctx.client.proto;
    let Some(h) = hash_ref(ctx, a.at(1)?)? else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Nil
        });
    };
    let Some(count) = count else {
        return Ok(h
            .keys()
            .choose(&mut rand::rng())
            .map_or(Reply::Nil, Reply::bulk));
    };
    Ok(picks::random_picks(h.iter(), h.len(), count, |(k, v)| {
        pair_shape(proto, Reply::bulk(k), withvalues.then(|| Reply::bulk(v)))
    }))
}

/// Parses `cursor [MATCH p] [COUNT n]` for the collection SCANs. The cursor
/// of a collection scan is accepted but the whole collection is returned in
/// one step (cursor 0), which the SCAN contract allows.
pub fn scan_opts(a: &[Bytes], at: usize) -> Result<Option<Bytes>, Reply> {
    std::str::from_utf8(a.at(at)?)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut i = at + 1;
    while i < a.len() {
        let v = a.get(i + 1).ok_or_else(syntax_error)?;
        if is(a.at(i)?, "match") {
            pattern = Some(v.clone());
        } else if is(a.at(i)?, "count") {
            if int_arg(v).map_err(|_| not_integer())? < 1 {
                return Err(syntax_error());
            }
        } else {
            return Err(syntax_error());
        }
        i += 2;
    }
    Ok(pattern)
}

pub fn matches(pattern: &Option<Bytes>, s: &[u8]) -> bool {
    pattern.as_ref().is_none_or(|p| glob_match(p, s, false))
}

fn hscan(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let pattern = scan_opts(a, 2)?;
    let mut items = Vec::new();
    if let Some(h) = hash_ref(ctx, a.at(1)?)? {
        for (k, v) in h {
            if matches(&pattern, k) {
                items.push(Reply::bulk(k));
                items.push(Reply::bulk(v));
            }
        }
    }
    Ok(Reply::Array(vec![Reply::bulk("0"), Reply::Array(items)]))
}
