//! Generic key commands: DEL, EXISTS, TYPE, TTLs, RENAME, COPY, SCAN, KEYS,
//! RANDOMKEY, OBJECT, TOUCH.

use super::flags::*;
use super::Argv;
use super::{err, int_arg, is, syntax_error, CmdResult, CommandSpec, Ctx};
use crate::cluster::SLOTS;
use crate::glob::glob_match;
use crate::resp::Reply;
use bytes::Bytes;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("del", -2, WRITE, [1, -1, 1], del),
    CommandSpec::new("unlink", -2, WRITE | FAST, [1, -1, 1], del),
    CommandSpec::new("exists", -2, READONLY | FAST, [1, -1, 1], exists),
    CommandSpec::new("touch", -2, READONLY | FAST, [1, -1, 1], touch),
    CommandSpec::new("type", 2, READONLY | FAST, [1, 1, 1], type_cmd),
    CommandSpec::new("expire", -3, WRITE | FAST, [1, 1, 1], expire),
    CommandSpec::new("pexpire", -3, WRITE | FAST, [1, 1, 1], pexpire),
    CommandSpec::new("expireat", -3, WRITE | FAST, [1, 1, 1], expireat),
    CommandSpec::new("pexpireat", -3, WRITE | FAST, [1, 1, 1], pexpireat),
    CommandSpec::new("ttl", 2, READONLY | FAST, [1, 1, 1], ttl),
    CommandSpec::new("pttl", 2, READONLY | FAST, [1, 1, 1], pttl),
    CommandSpec::new("expiretime", 2, READONLY | FAST, [1, 1, 1], expiretime),
    CommandSpec::new("pexpiretime", 2, READONLY | FAST, [1, 1, 1], pexpiretime),
    CommandSpec::new("persist", 2, WRITE | FAST, [1, 1, 1], persist),
    CommandSpec::new("rename", 3, WRITE, [1, 2, 1], rename),
    CommandSpec::new("renamenx", 3, WRITE | FAST, [1, 2, 1], renamenx),
    CommandSpec::new("copy", -3, WRITE | DENYOOM, [1, 2, 1], copy),
    CommandSpec::new("scan", -2, READONLY, [0, 0, 0], scan),
    CommandSpec::new("keys", 2, READONLY, [0, 0, 0], keys),
    CommandSpec::new("randomkey", 1, READONLY, [0, 0, 0], randomkey),
    CommandSpec::new("object", -2, READONLY, [2, 2, 1], object),
];

fn del(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let n = a
        .rest(1)
        .iter()
        .filter(|k| ctx.db.remove(k, ctx.now).is_some())
        .count();
    Ok(Reply::Int(n as i64))
}

fn exists(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let n = a
        .rest(1)
        .iter()
        .filter(|k| ctx.db.contains(k, ctx.now))
        .count();
    Ok(Reply::Int(n as i64))
}

fn touch(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let n = a
        .rest(1)
        .iter()
        .filter(|k| ctx.db.get(k, ctx.now).is_some())
        .count();
    Ok(Reply::Int(n as i64))
}

fn type_cmd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::simple(
        ctx.db
            .peek(a.at(1)?, ctx.now)
            .map_or("none", |e| e.value.type_name()),
    ))
}

/// EXPIRE family core. `at` is the absolute unix ms requested.
fn expire_generic(ctx: &mut Ctx, a: &[Bytes], at: Option<i64>, cmd: &str) -> CmdResult {
    let key = a.at(1)?;
    let Some(at) = at else {
        return Err(Reply::Error(format!(
            "ERR invalid expire time in '{cmd}' command"
        )));
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in a.rest(3) {
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "gt") {
            gt = true;
        } else if is(opt, "lt") {
            lt = true;
        } else {
            return Err(Reply::Error(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    if !ctx.db.contains(key, ctx.now) {
        return Ok(Reply::Int(0));
    }
    let cur = ctx.db.expire_at(key, ctx.now);
    let ok = match cur {
        None => !xx && !gt,
        Some(c) => !nx && (!gt || at > c as i64) && (!lt || at < c as i64),
    };
    if !ok {
        return Ok(Reply::Int(0));
    }
    // A time already past deletes the key, except for the master's stream
    // on a replica, which keeps keys until the master's own DEL.
    if at <= ctx.now as i64 && !ctx.client.is_master {
        ctx.db.remove(key, ctx.now);
        ctx.propagate_as(vec![Bytes::from_static(b"DEL"), key.clone()]);
    } else {
        let at = u64::try_from(at).unwrap_or(0);
        ctx.db.set_expire(key, at, ctx.now);
        if ctx.propagating() {
            // PEXPIREAT with the absolute time, options kept (Redis 7).
            let mut cmd = Vec::with_capacity(a.len());
            cmd.push(Bytes::from_static(b"PEXPIREAT"));
            cmd.push(key.clone());
            cmd.push(Bytes::from(at.to_string()));
            cmd.extend(a.rest(3).iter().cloned());
            ctx.propagate_as(cmd);
        }
    }
    Ok(Reply::Int(1))
}

fn rel(ctx: &Ctx, v: &[u8], unit: i64) -> Result<Option<i64>, Reply> {
    let n = int_arg(v)?;
    Ok(n.checked_mul(unit)
        .and_then(|ms| ms.checked_add(ctx.now as i64)))
}

fn expire(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let at = rel(ctx, a.at(2)?, 1000)?;
    expire_generic(ctx, a, at, "expire")
}

fn pexpire(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let at = rel(ctx, a.at(2)?, 1)?;
    expire_generic(ctx, a, at, "pexpire")
}

fn expireat(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let at = int_arg(a.at(2)?)?.checked_mul(1000);
    expire_generic(ctx, a, at, "expireat")
}

fn pexpireat(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let at = Some(int_arg(a.at(2)?)?);
    expire_generic(ctx, a, at, "pexpireat")
}

/// -2 no key, -1 no TTL, else remaining ms.
fn ttl_ms(ctx: &mut Ctx, key: &[u8]) -> i64 {
    if !ctx.db.contains(key, ctx.now) {
        return -2;
    }
    match ctx.db.expire_at(key, ctx.now) {
        None => -1,
        Some(at) => at.saturating_sub(ctx.now) as i64,
    }
}

fn ttl(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let ms = ttl_ms(ctx, a.at(1)?);
    // Redis rounds the remaining seconds to nearest.
    Ok(Reply::Int(if ms < 0 { ms } else { (ms + 500) / 1000 }))
}

fn pttl(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(ttl_ms(ctx, a.at(1)?)))
}

fn expiretime_ms(ctx: &mut Ctx, key: &[u8]) -> i64 {
    if !ctx.db.contains(key, ctx.now) {
        return -2;
    }
    ctx.db.expire_at(key, ctx.now).map_or(-1, |at| at as i64)
}

fn expiretime(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let t = expiretime_ms(ctx, a.at(1)?);
    Ok(Reply::Int(if t < 0 { t } else { t / 1000 }))
}

fn pexpiretime(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(expiretime_ms(ctx, a.at(1)?)))
}

fn persist(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(i64::from(ctx.db.persist(a.at(1)?, ctx.now))))
}

fn rename_generic(ctx: &mut Ctx, a: &[Bytes], nx: bool) -> CmdResult {
    let (src, dst) = (a.at(1)?, a.at(2)?);
    if !ctx.db.contains(src, ctx.now) {
        return Err(err("ERR no such key"));
    }
    if src == dst {
        return Ok(if nx { Reply::Int(0) } else { Reply::Ok });
    }
    if nx && ctx.db.contains(dst, ctx.now) {
        return Ok(Reply::Int(0));
    }
    let ttl = ctx.db.expire_at(src, ctx.now);
    let Some(v) = ctx.db.remove(src, ctx.now) else {
        return Err(err("ERR no such key"));
    };
    ctx.db.set_with_expire(dst, v, ttl);
    Ok(if nx { Reply::Int(1) } else { Reply::Ok })
}

fn rename(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    rename_generic(ctx, a, false)
}

fn renamenx(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    rename_generic(ctx, a, true)
}

fn copy(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (src, dst) = (a.at(1)?, a.at(2)?);
    let mut replace = false;
    let mut i = 3;
    while i < a.len() {
        if is(a.at(i)?, "replace") {
            replace = true;
        } else if is(a.at(i)?, "db") && i + 1 < a.len() {
            if int_arg(a.at(i + 1)?)? != 0 {
                return Err(err("ERR DB index is out of range"));
            }
            i += 1;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    if src == dst {
        return Err(err("ERR source and destination objects are the same"));
    }
    let Some(v) = ctx.db.peek(src, ctx.now).map(|e| e.value.clone()) else {
        return Ok(Reply::Int(0));
    };
    if !replace && ctx.db.contains(dst, ctx.now) {
        return Ok(Reply::Int(0));
    }
    let ttl = ctx.db.expire_at(src, ctx.now);
    ctx.db.set_with_expire(dst, v, ttl);
    Ok(Reply::Int(1))
}

fn scan(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let cursor = std::str::from_utf8(a.at(1)?)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err("ERR invalid cursor"))?;
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut type_filter: Option<&[u8]> = None;
    let mut i = 2;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return Err(syntax_error());
        };
        if is(a.at(i)?, "match") {
            pattern = Some(v);
        } else if is(a.at(i)?, "count") {
            let c = int_arg(v)?;
            if c < 1 {
                return Err(syntax_error());
            }
            count = c as usize;
        } else if is(a.at(i)?, "type") {
            type_filter = Some(v);
        } else {
            return Err(syntax_error());
        }
        i += 2;
    }
    // The cursor is the next slot to visit: every key present for the whole
    // iteration is returned, whatever tables resize in between.
    let mut slot = usize::try_from(cursor).unwrap_or(SLOTS).min(SLOTS);
    let mut found: Vec<Reply> = Vec::new();
    let mut candidates: Vec<Bytes> = Vec::new();
    while found.len() < count {
        let Some(next) = ctx.db.next_slot_with_keys(slot) else {
            slot = SLOTS;
            break;
        };
        slot = next;
        candidates.clear();
        candidates.extend(
            ctx.db
                .keys_in_slot(slot as u16)
                .filter(|k| pattern.is_none_or(|p| glob_match(p, k, false)))
                .map(|k| Bytes::copy_from_slice(k)),
        );
        for k in candidates.drain(..) {
            let Some(e) = ctx.db.peek(&k, ctx.now) else {
                continue;
            };
            if type_filter.is_some_and(|t| !e.value.type_name().as_bytes().eq_ignore_ascii_case(t))
            {
                continue;
            }
            found.push(Reply::Bulk(k));
        }
        slot += 1;
    }
    let next = if slot >= SLOTS { 0 } else { slot };
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(found),
    ]))
}

fn keys(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let pattern = a.at(1)?;
    let mut out = Vec::new();
    let mut next = ctx.db.next_slot_with_keys(0);
    while let Some(i) = next {
        next = ctx.db.next_slot_with_keys(i + 1);
        let slot = i as u16;
        for k in ctx.db.keys_in_slot(slot) {
            if glob_match(pattern, k, false) && !ctx.db.is_expired_in_slot(slot, k, ctx.now) {
                out.push(Reply::bulk(k));
            }
        }
    }
    Ok(Reply::Array(out))
}

fn randomkey(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    Ok(ctx.db.random_key(ctx.now).map_or(Reply::Nil, Reply::bulk))
}

fn object(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    if is(sub, "help") {
        return Ok(Reply::array_of_bulks([
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
            "HELP",
            "    Print this help.",
        ]));
    }
    if a.len() != 3 {
        return Err(Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(sub)
        )));
    }
    let key = a.at(2)?;
    let Some(entry) = ctx.db.peek(key, ctx.now) else {
        return Ok(Reply::Nil);
    };
    if is(sub, "encoding") {
        return Ok(Reply::bulk(entry.value.encoding()));
    }
    if is(sub, "refcount") {
        return Ok(Reply::Int(1));
    }
    let access = ctx.db.access_of(key, ctx.now);
    if is(sub, "idletime") {
        return match access {
            Some((_, true)) => Err(err("ERR An LRU maxmemory policy is not selected, access time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.")),
            Some((idle, false)) => Ok(Reply::Int(i64::from(idle))),
            None => Ok(Reply::Nil),
        };
    }
    if is(sub, "freq") {
        return match access {
            Some((freq, true)) => Ok(Reply::Int(i64::from(freq))),
            Some((_, false)) => Err(err("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.")),
            None => Ok(Reply::Nil),
        };
    }
    Err(Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try OBJECT HELP.",
        String::from_utf8_lossy(sub)
    )))
}
