//! Stream commands as Redis 7.0 answers them: XADD XRANGE XREVRANGE XLEN
//! XDEL XTRIM XSETID XREAD, the consumer groups (XGROUP XREADGROUP XACK
//! XPENDING XCLAIM XAUTOCLAIM), XINFO, and the blocking forms of XREAD
//! and XREADGROUP.
//!
//! Propagation follows `t_stream.c`: XADD sends the ID it generated and
//! turns an approximate trim into the exact one it performed; XREADGROUP,
//! XCLAIM and XAUTOCLAIM never propagate as themselves but as the XCLAIM
//! ... FORCE JUSTID and XGROUP SETID / CREATECONSUMER commands that
//! rebuild the same pending entries on a replica.

use super::flags::*;
use super::Argv;
use super::{
    err, int_arg, is, syntax_error, wrong_arity, wrongtype, Action, CmdResult, CommandSpec, Ctx,
};
use crate::resp::{parse_i64, Proto, Reply};
use crate::store::stream::{Consumer, Group, Nack, Trim};
use crate::store::{sds, Sds, Stream, StreamId, Value};
use bytes::Bytes;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("xadd", -5, WRITE | DENYOOM | FAST, [1, 1, 1], xadd),
    CommandSpec::new("xrange", -4, READONLY, [1, 1, 1], xrange),
    CommandSpec::new("xrevrange", -4, READONLY, [1, 1, 1], xrevrange),
    CommandSpec::new("xlen", 2, READONLY | FAST, [1, 1, 1], xlen),
    CommandSpec::new("xdel", -3, WRITE | FAST, [1, 1, 1], xdel),
    CommandSpec::new("xtrim", -4, WRITE, [1, 1, 1], xtrim),
    CommandSpec::new("xsetid", -3, WRITE | DENYOOM | FAST, [1, 1, 1], xsetid),
    // Keys follow STREAMS: found by the key specs, not fixed positions.
    CommandSpec::new("xread", -4, READONLY | BLOCKING | MOVABLE_KEYS, [0, 0, 0], xread),
    CommandSpec::new("xreadgroup", -7, WRITE | BLOCKING | MOVABLE_KEYS, [0, 0, 0], xreadgroup),
    CommandSpec::new("xgroup", -2, WRITE | DENYOOM, [2, 2, 1], xgroup),
    CommandSpec::new("xack", -4, WRITE | FAST, [1, 1, 1], xack),
    CommandSpec::new("xpending", -3, READONLY, [1, 1, 1], xpending),
    CommandSpec::new("xclaim", -6, WRITE | FAST, [1, 1, 1], xclaim),
    CommandSpec::new("xautoclaim", -6, WRITE | FAST, [1, 1, 1], xautoclaim),
    CommandSpec::new("xinfo", -2, READONLY, [2, 2, 1], xinfo),
];

// ---- IDs -----------------------------------------------------------------

fn invalid_id() -> Reply {
    err("ERR Invalid stream ID specified as stream command argument")
}

/// C `string2ull`: digits, after optional blanks and a `+`, that fit 64 bits.
fn parse_u64(s: &[u8]) -> Option<u64> {
    let t = match s
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        Some(i) => s.get(i..)?,
        None => return None,
    };
    let t = t.strip_prefix(b"+").unwrap_or(t);
    if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// An ID argument: `-`/`+` unless `strict`, `<ms>` (sequence `missing`) or
/// `<ms>-<seq>`; with `auto_seq`, also `<ms>-*` (returned as None seq).
fn parse_id_full(
    b: &[u8],
    missing: u64,
    strict: bool,
    auto_seq: bool,
) -> Result<(StreamId, bool), Reply> {
    if b.len() > 127 {
        return Err(invalid_id());
    }
    if b == b"-" || b == b"+" {
        if strict {
            return Err(invalid_id());
        }
        return Ok((
            if b == b"-" {
                StreamId::MIN
            } else {
                StreamId::MAX
            },
            true,
        ));
    }
    let (ms, seq) = match b.iter().position(|&c| c == b'-') {
        Some(i) => (
            b.get(..i).unwrap_or_default(),
            Some(b.get(i + 1..).unwrap_or_default()),
        ),
        None => (b, None),
    };
    let ms = parse_u64(ms).ok_or_else(invalid_id)?;
    match seq {
        Some(b"*") if auto_seq => Ok((StreamId::new(ms, 0), false)),
        Some(s) => Ok((
            StreamId::new(ms, parse_u64(s).ok_or_else(invalid_id)?),
            true,
        )),
        None => Ok((StreamId::new(ms, missing), true)),
    }
}

fn parse_id(b: &[u8], missing: u64) -> Result<StreamId, Reply> {
    parse_id_full(b, missing, false, false).map(|(id, _)| id)
}

fn parse_strict_id(b: &[u8]) -> Result<StreamId, Reply> {
    parse_id_full(b, 0, true, false).map(|(id, _)| id)
}

/// A range bound: inclusive, or exclusive with a `(` prefix.
fn parse_interval(b: &[u8], missing: u64) -> Result<(StreamId, bool), Reply> {
    if b.len() > 1 && b.first() == Some(&b'(') {
        let id = parse_id_full(b.get(1..).unwrap_or_default(), missing, true, false)?.0;
        Ok((id, true))
    } else {
        Ok((parse_id(b, missing)?, false))
    }
}

fn range_start(b: &[u8]) -> Result<StreamId, Reply> {
    let (id, ex) = parse_interval(b, 0)?;
    if ex {
        return id
            .incr()
            .ok_or_else(|| err("ERR invalid start ID for the interval"));
    }
    Ok(id)
}

fn range_end(b: &[u8]) -> Result<StreamId, Reply> {
    let (id, ex) = parse_interval(b, u64::MAX)?;
    if ex {
        return id
            .decr()
            .ok_or_else(|| err("ERR invalid end ID for the interval"));
    }
    Ok(id)
}

fn id_bytes(id: StreamId) -> Bytes {
    Bytes::from(id.to_string())
}

fn id_reply(id: StreamId) -> Reply {
    Reply::Bulk(id_bytes(id))
}

fn entry_reply(id: StreamId, pairs: &[Sds]) -> Reply {
    Reply::Array(vec![
        id_reply(id),
        Reply::Array(pairs.iter().map(|p| Reply::bulk(p.as_slice())).collect()),
    ])
}

fn ll_arg(b: &[u8], msg: &str) -> Result<i64, Reply> {
    parse_i64(b).ok_or_else(|| err(&format!("ERR {msg}")))
}

// ---- key access ------------------------------------------------------------

/// The stream at `key` for reading: None if missing, WRONGTYPE otherwise.
fn read<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<Option<&'d Stream>, Reply> {
    match ctx.db.get(key, ctx.now) {
        None => Ok(None),
        Some(Value::Stream(s)) => Ok(Some(s)),
        Some(_) => Err(wrongtype()),
    }
}

/// Checks the type without counting an access or announcing a change.
fn exists(ctx: &mut Ctx, key: &[u8]) -> Result<bool, Reply> {
    match ctx.db.peek(key, ctx.now) {
        None => Ok(false),
        Some(e) if matches!(e.value, Value::Stream(_)) => Ok(true),
        Some(_) => Err(wrongtype()),
    }
}

/// The stream for writing; the caller checked it exists (`exists`).
fn write<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<&'d mut Stream, Reply> {
    match ctx.db.get_mut(key, ctx.now) {
        Some(Value::Stream(s)) => Ok(s),
        Some(_) => Err(wrongtype()),
        None => Err(err("ERR no such key")),
    }
}

fn create<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<&'d mut Stream, Reply> {
    match ctx
        .db
        .get_or_insert_with(key, ctx.now, || Value::Stream(Box::default()))
    {
        Value::Stream(s) => Ok(s),
        _ => Err(wrongtype()),
    }
}

// ---- XADD / XTRIM ------------------------------------------------------------

struct TrimArgs {
    how: Option<Trim>,
    approx: bool,
    limit: u64,
    /// Position of the threshold argument (for the propagated rewrite).
    arg_idx: usize,
    nomkstream: bool,
    /// XADD: the ID position, the ID, and whether its sequence was given.
    id_pos: usize,
    id: Option<(StreamId, bool)>,
}

fn parse_trim_args(ctx: &Ctx, a: &[Bytes], xadd: bool) -> Result<TrimArgs, Reply> {
    let mut t = TrimArgs {
        how: None,
        approx: false,
        limit: 0,
        arg_idx: 0,
        nomkstream: false,
        id_pos: a.len(),
        id: None,
    };
    let mut limit_given = false;
    let both =
        || err("ERR syntax error, MAXLEN and MINID options at the same time are not compatible");
    let mut i = 2;
    while i < a.len() {
        let more = a.len() - 1 - i;
        let opt = a.at(i)?;
        if xadd && opt.as_ref() == b"*" {
            t.id_pos = i;
            break;
        } else if (is(opt, "maxlen") || is(opt, "minid")) && more > 0 {
            if t.how.is_some() {
                return Err(both());
            }
            t.approx = false;
            let next = a.at(i + 1)?;
            if more >= 2 && next.as_ref() == b"~" {
                t.approx = true;
                i += 1;
            } else if more >= 2 && next.as_ref() == b"=" {
                i += 1;
            }
            let v = a.at(i + 1)?;
            if is(opt, "maxlen") {
                let n = int_arg(v)?;
                if n < 0 {
                    return Err(err("ERR The MAXLEN argument must be >= 0."));
                }
                t.how = Some(Trim::MaxLen(n as u64));
            } else {
                t.how = Some(Trim::MinId(parse_strict_id(v)?));
            }
            i += 1;
            t.arg_idx = i;
        } else if is(opt, "limit") && more > 0 {
            let n = int_arg(a.at(i + 1)?)?;
            if n < 0 {
                return Err(err("ERR The LIMIT argument must be >= 0."));
            }
            t.limit = n as u64;
            limit_given = true;
            i += 1;
        } else if xadd && is(opt, "nomkstream") {
            t.nomkstream = true;
        } else if xadd {
            t.id = Some(parse_id_full(opt, 0, true, true)?);
            t.id_pos = i;
            break;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    if t.limit != 0 && t.how.is_none() {
        return Err(err(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && t.how.is_none() {
        return Err(err(
            "ERR syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if ctx.client.is_master {
        // The master already rewrote the trim to what it did.
        t.limit = 0;
    } else if limit_given {
        if !t.approx {
            return Err(err(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
    } else if t.approx {
        t.limit = 100 * crate::store::stream::NODE_MAX_ENTRIES;
    } else {
        t.limit = 0;
    }
    Ok(t)
}

/// The first ID Redis's edge lookup sees (tombstones included), for the
/// MINID rewrite.
fn edge_first(s: &Stream) -> StreamId {
    let live = s.entries.keys().next().copied();
    let tomb = s.tombs.iter().next().copied();
    match (live, tomb) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => StreamId::MAX,
    }
}

/// After an approximate trim: propagate `= <what it left>`.
fn rewrite_trim(args: &mut [Bytes], s: &Stream, t: &TrimArgs) {
    if let Some(eq) = args.get_mut(t.arg_idx.wrapping_sub(1)) {
        *eq = Bytes::from_static(b"=");
    }
    let v = match t.how {
        Some(Trim::MaxLen(_)) => Bytes::from(s.len().to_string()),
        _ => id_bytes(edge_first(s)),
    };
    if let Some(x) = args.get_mut(t.arg_idx) {
        *x = v;
    }
}

fn xadd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let t = parse_trim_args(ctx, a, true)?;
    let field_pos = t.id_pos + 1;
    let nfields = a.len().saturating_sub(field_pos);
    if nfields < 2 || nfields % 2 == 1 {
        return Err(wrong_arity("xadd"));
    }
    if let Some((id, true)) = t.id {
        if id.is_zero() {
            return Err(err("ERR The ID specified in XADD must be greater than 0-0"));
        }
    }
    let present = exists(ctx, key)?;
    if !present && t.nomkstream {
        return Ok(Reply::Nil);
    }
    let now = ctx.now;
    let last = if present {
        read(ctx, key)?.map(|s| s.last_id).unwrap_or_default()
    } else {
        StreamId::MIN
    };
    if last == StreamId::MAX {
        return Err(err(
            "ERR The stream has exhausted the last possible ID, unable to add more items",
        ));
    }
    let too_small =
        || err("ERR The ID specified in XADD is equal or smaller than the target stream top item");
    let id = match t.id {
        Some((id, true)) => id,
        Some((id, false)) => {
            if last.ms == id.ms {
                last.incr()
                    .filter(|n| n.ms == id.ms)
                    .ok_or_else(too_small)?
            } else {
                id
            }
        }
        None => {
            if now > last.ms {
                StreamId::new(now, 0)
            } else {
                last.incr().ok_or_else(too_small)?
            }
        }
    };
    if id <= last {
        return Err(too_small());
    }
    let pairs: Vec<Sds> = a.rest(field_pos).iter().map(|b| sds(b)).collect();
    let s = create(ctx, key)?;
    s.append(id, pairs);
    let mut rewritten: Option<Vec<Bytes>> = None;
    if let Some(how) = t.how {
        s.trim(how, t.approx, t.limit);
        if t.approx {
            let mut args = a.to_vec();
            rewrite_trim(&mut args, s, &t);
            rewritten = Some(args);
        }
    }
    if !matches!(t.id, Some((_, true))) {
        let args = rewritten.get_or_insert_with(|| a.to_vec());
        if let Some(x) = args.get_mut(t.id_pos) {
            *x = id_bytes(id);
        }
    }
    if let Some(args) = rewritten {
        ctx.propagate_as(args);
    }
    Ok(id_reply(id))
}

fn xtrim(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let t = parse_trim_args(ctx, a, false)?;
    if !exists(ctx, key)? {
        return Ok(Reply::Int(0));
    }
    let Some(how) = t.how else {
        return Err(syntax_error());
    };
    let s = write(ctx, key)?;
    let deleted = s.trim(how, t.approx, t.limit);
    if deleted == 0 {
        ctx.unchanged();
        return Ok(Reply::Int(0));
    }
    if t.approx {
        let mut args = a.to_vec();
        rewrite_trim(&mut args, s, &t);
        ctx.propagate_as(args);
    }
    Ok(Reply::Int(deleted as i64))
}

// ---- reads -------------------------------------------------------------

fn range(ctx: &mut Ctx, a: &[Bytes], rev: bool) -> CmdResult {
    let (sa, ea) = if rev {
        (a.at(3)?, a.at(2)?)
    } else {
        (a.at(2)?, a.at(3)?)
    };
    let start = range_start(sa)?;
    let end = range_end(ea)?;
    let mut count: i64 = -1;
    let mut j = 4;
    while j < a.len() {
        if is(a.at(j)?, "count") && j + 1 < a.len() {
            count = int_arg(a.at(j + 1)?)?.max(0);
            j += 2;
        } else {
            return Err(syntax_error());
        }
    }
    let Some(s) = read(ctx, a.at(1)?)? else {
        return Ok(Reply::Array(vec![]));
    };
    if count == 0 {
        return Ok(Reply::NilArray);
    }
    let limit = if count < 0 {
        usize::MAX
    } else {
        count as usize
    };
    if start > end {
        return Ok(Reply::Array(vec![]));
    }
    let it = s.entries.range(start..=end);
    let out: Vec<Reply> = if rev {
        it.rev()
            .take(limit)
            .map(|(id, p)| entry_reply(*id, p))
            .collect()
    } else {
        it.take(limit).map(|(id, p)| entry_reply(*id, p)).collect()
    };
    Ok(Reply::Array(out))
}

fn xrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    range(ctx, a, false)
}

fn xrevrange(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    range(ctx, a, true)
}

fn xlen(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        read(ctx, a.at(1)?)?.map_or(0, |s| s.len() as i64),
    ))
}

fn xdel(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    if !exists(ctx, key)? {
        return Ok(Reply::Int(0));
    }
    let ids = a
        .rest(2)
        .iter()
        .map(|b| parse_strict_id(b))
        .collect::<Result<Vec<_>, _>>()?;
    let hit = read(ctx, key)?.is_some_and(|s| ids.iter().any(|id| s.entries.contains_key(id)));
    if !hit {
        return Ok(Reply::Int(0));
    }
    let s = write(ctx, key)?;
    let mut deleted = 0;
    for id in ids {
        if s.delete(id) {
            if id > s.max_deleted {
                s.max_deleted = id;
            }
            deleted += 1;
        }
    }
    Ok(Reply::Int(deleted))
}

fn xsetid(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let id = parse_strict_id(a.at(2)?)?;
    let mut added: Option<u64> = None;
    let mut max_del = StreamId::MIN;
    let mut i = 3;
    while i < a.len() {
        let more = a.len() - 1 - i;
        let opt = a.at(i)?;
        if is(opt, "entriesadded") && more > 0 {
            let n = int_arg(a.at(i + 1)?)?;
            if n < 0 {
                return Err(err("ERR entries_added must be positive"));
            }
            added = Some(n as u64);
        } else if is(opt, "maxdeletedid") && more > 0 {
            max_del = parse_strict_id(a.at(i + 1)?)?;
            if id < max_del {
                return Err(err("ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id"));
            }
        } else {
            return Err(syntax_error());
        }
        i += 2;
    }
    if !exists(ctx, key)? {
        return Err(err("ERR no such key"));
    }
    if let Some(s) = read(ctx, key)? {
        if !s.is_empty() {
            if id < s.last_valid_id() {
                return Err(err(
                    "ERR The ID specified in XSETID is smaller than the target stream top item",
                ));
            }
            if added.is_some_and(|n| (s.len() as u64) > n) {
                return Err(err("ERR The entries_added specified in XSETID is smaller than the target stream length"));
            }
        }
    }
    let s = write(ctx, key)?;
    s.last_id = id;
    if let Some(n) = added {
        s.entries_added = n;
    }
    if !max_del.is_zero() {
        s.max_deleted = max_del;
    }
    Ok(Reply::Ok)
}

// ---- XREAD / XREADGROUP ------------------------------------------------------

/// Where a read starts for one key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadFrom {
    After(StreamId),
    /// `$`: after the stream's last ID at the time of the call.
    Last,
    /// `>`: entries never delivered to the group.
    New,
}

struct ReadArgs {
    block: Option<Option<u64>>,
    count: usize,
    count_given: bool,
    streams_at: usize,
    nkeys: usize,
    group: Option<(Bytes, Bytes)>,
    noack: bool,
}

fn parse_read(ctx: &Ctx, a: &[Bytes], group_cmd: bool) -> Result<ReadArgs, Reply> {
    let mut r = ReadArgs {
        block: None,
        count: 0,
        count_given: false,
        streams_at: 0,
        nkeys: 0,
        group: None,
        noack: false,
    };
    let mut i = 1;
    while i < a.len() {
        let more = a.len() - 1 - i;
        let o = a.at(i)?;
        if is(o, "block") && more > 0 {
            if ctx.in_script {
                return Err(Reply::Error(format!(
                    "ERR {} command is not allowed with BLOCK option from scripts",
                    String::from_utf8_lossy(a.at(0)?)
                )));
            }
            i += 1;
            let ms = parse_i64(a.at(i)?)
                .ok_or_else(|| err("ERR timeout is not an integer or out of range"))?;
            if ms < 0 {
                return Err(err("ERR timeout is negative"));
            }
            r.block = Some(if ms == 0 {
                None
            } else {
                Some(ctx.now.saturating_add(ms as u64))
            });
        } else if is(o, "count") && more > 0 {
            i += 1;
            r.count = int_arg(a.at(i)?)?.max(0) as usize;
            r.count_given = true;
        } else if is(o, "streams") && more > 0 {
            r.streams_at = i + 1;
            let n = a.len() - r.streams_at;
            if n % 2 != 0 {
                return Err(err("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."));
            }
            r.nkeys = n / 2;
            break;
        } else if is(o, "group") && more >= 2 {
            if !group_cmd {
                return Err(err("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."));
            }
            r.group = Some((a.at(i + 1)?.clone(), a.at(i + 2)?.clone()));
            i += 2;
        } else if is(o, "noack") {
            if !group_cmd {
                return Err(err("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead."));
            }
            r.noack = true;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    if r.streams_at == 0 {
        return Err(syntax_error());
    }
    if group_cmd && r.group.is_none() {
        return Err(err("ERR Missing GROUP option for XREADGROUP"));
    }
    Ok(r)
}

fn xread(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    read_generic(ctx, a, false)
}

fn xreadgroup(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    read_generic(ctx, a, true)
}

fn keyed_reply(proto: Proto, items: Vec<(Bytes, Reply)>) -> Reply {
    if proto == Proto::Resp3 {
        Reply::Map(
            items
                .into_iter()
                .map(|(k, v)| (Reply::Bulk(k), v))
                .collect(),
        )
    } else {
        Reply::Array(
            items
                .into_iter()
                .map(|(k, v)| Reply::Array(vec![Reply::Bulk(k), v]))
                .collect(),
        )
    }
}

fn read_generic(ctx: &mut Ctx, a: &[Bytes], group_cmd: bool) -> CmdResult {
    let r = parse_read(ctx, a, group_cmd)?;
    let keys = a
        .rest(r.streams_at)
        .get(..r.nkeys)
        .unwrap_or_default()
        .to_vec();
    let id_args = a.rest(r.streams_at + r.nkeys).to_vec();
    let resumed = ctx.resumed;
    // Woken or timed out: a timeout answers nil; a woken XREADGROUP whose
    // key or group went away answers the error Redis unblocks it with.
    if ctx.timed_out {
        return Ok(Reply::NilArray);
    }
    let mut froms = Vec::with_capacity(keys.len());
    for (key, idb) in keys.iter().zip(&id_args) {
        let s = read(ctx, key)?;
        if let Some((g, _)) = &r.group {
            if resumed && s.is_none() {
                return Err(err("UNBLOCKED the stream key no longer exists"));
            }
            if !s.is_some_and(|s| s.groups.contains_key(g.as_ref())) {
                if resumed {
                    return Err(err(
                        "NOGROUP the consumer group this client was blocked on no longer exists",
                    ));
                }
                return Err(Reply::Error(format!(
                    "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(g)
                )));
            }
        }
        let from = if idb.as_ref() == b"$" {
            if group_cmd {
                return Err(err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set."));
            }
            ReadFrom::Last
        } else if idb.as_ref() == b">" {
            if !group_cmd {
                return Err(err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option."));
            }
            ReadFrom::New
        } else {
            ReadFrom::After(parse_strict_id(idb)?)
        };
        let from = match (from, s) {
            (ReadFrom::Last, Some(s)) => ReadFrom::After(s.last_id),
            (ReadFrom::Last, None) => ReadFrom::After(StreamId::MIN),
            (f, _) => f,
        };
        froms.push(from);
    }
    let count = if r.count == 0 { usize::MAX } else { r.count };
    let mut served: Vec<(Bytes, Reply)> = Vec::new();
    if let Some((g, c)) = &r.group {
        // Never propagated as itself: as the XCLAIM / XGROUP commands below.
        ctx.unchanged();
        for (key, from) in keys.iter().zip(&froms) {
            if let Some(rep) = serve_group(ctx, key, g, c, *from, count, r.noack)? {
                served.push((key.clone(), rep));
            }
        }
    } else {
        for (key, from) in keys.iter().zip(&froms) {
            let ReadFrom::After(gt) = *from else { continue };
            let Some(s) = read(ctx, key)? else { continue };
            if s.is_empty() || s.last_valid_id() <= gt {
                continue;
            }
            let Some(start) = gt.incr() else { continue };
            let entries: Vec<Reply> = s
                .entries
                .range(start..)
                .take(count)
                .map(|(id, p)| entry_reply(*id, p))
                .collect();
            served.push((key.clone(), Reply::Array(entries)));
        }
    }
    if !served.is_empty() {
        return Ok(keyed_reply(ctx.client.proto, served));
    }
    if let Some(deadline) = r.block {
        if ctx.can_block() {
            // Run again as blocked: `$` fixed to the IDs of now, and a
            // bounded COUNT, as Redis serves a blocked reader.
            let mut again = a.to_vec();
            for (i, from) in froms.iter().enumerate() {
                if let (ReadFrom::After(id), Some(x)) =
                    (from, again.get_mut(r.streams_at + r.nkeys + i))
                {
                    *x = id_bytes(*id);
                }
            }
            if !r.count_given || r.count == 0 {
                let at = r.streams_at - 1;
                again.splice(
                    at..at,
                    [Bytes::from_static(b"COUNT"), Bytes::from_static(b"1000")],
                );
            }
            ctx.rerun = Some(again);
            ctx.action = Some(Action::Block { keys, deadline });
        }
    }
    Ok(Reply::NilArray)
}

/// XREADGROUP for one key; None when there is nothing to serve.
fn serve_group(
    ctx: &mut Ctx,
    key: &Bytes,
    gname: &Bytes,
    cname: &Bytes,
    from: ReadFrom,
    count: usize,
    noack: bool,
) -> Result<Option<Reply>, Reply> {
    let now = ctx.now;
    let history = match from {
        ReadFrom::After(id) => Some(id),
        _ => None,
    };
    {
        let Some(s) = read(ctx, key)? else {
            return Ok(None);
        };
        let Some(g) = s.groups.get(gname.as_ref()) else {
            return Ok(None);
        };
        if history.is_none() && (s.is_empty() || s.last_valid_id() <= g.last_id) {
            return Ok(None);
        }
    }
    let propagating = ctx.propagating();
    let s = write(ctx, key)?;
    let mut props: Vec<Vec<Bytes>> = Vec::new();
    let Some(g) = s.groups.get_mut(gname.as_ref()) else {
        return Ok(None);
    };
    let created = !g.consumers.contains_key(cname.as_ref());
    let consumer = g.consumers.entry(sds(cname)).or_default();
    consumer.seen_time = now;
    if created && noack && propagating {
        props.push(vec![
            Bytes::from_static(b"XGROUP"),
            Bytes::from_static(b"CREATECONSUMER"),
            key.clone(),
            gname.clone(),
            cname.clone(),
        ]);
    }
    let mut out = Vec::new();
    if let Some(gt) = history {
        let start = gt.incr().unwrap_or(StreamId::MAX);
        let ids: Vec<StreamId> = consumer.pel.range(start..).take(count).copied().collect();
        for id in ids {
            match s.entries.get(&id) {
                Some(p) => {
                    out.push(entry_reply(id, p));
                    if let Some(n) = g.pel.get_mut(&id) {
                        n.delivery_time = now;
                        n.delivery_count += 1;
                    }
                }
                None => out.push(Reply::Array(vec![id_reply(id), Reply::NilArray])),
            }
        }
    } else {
        let start = g.last_id.incr().unwrap_or(StreamId::MAX);
        let ids: Vec<StreamId> = s
            .entries
            .range(start..)
            .take(count)
            .map(|(k, _)| *k)
            .collect();
        let mut moved = false;
        for id in ids {
            s.advance_group(gname, id);
            moved = true;
            if let Some(p) = s.entries.get(&id) {
                out.push(entry_reply(id, p));
            }
            let Some(g) = s.groups.get_mut(gname.as_ref()) else {
                continue;
            };
            if noack {
                continue;
            }
            if let Some(old) = g.pel.get(&id).map(|n| n.consumer.clone()) {
                if let Some(c) = g.consumers.get_mut(&old) {
                    c.pel.remove(&id);
                }
            }
            g.pel.insert(
                id,
                Nack {
                    consumer: sds(cname),
                    delivery_time: now,
                    delivery_count: 1,
                },
            );
            if let Some(c) = g.consumers.get_mut(cname.as_ref()) {
                c.pel.insert(id);
            }
            if propagating {
                props.push(xclaim_prop(key, gname, cname, id, now, 1, g.last_id));
            }
        }
        if noack && moved && propagating {
            if let Some(g) = s.groups.get(gname.as_ref()) {
                props.push(setid_prop(key, gname, g));
            }
        }
    }
    for p in props {
        ctx.propagate_as(p);
    }
    Ok(Some(Reply::Array(out)))
}

/// `XCLAIM key group consumer 0 id TIME t RETRYCOUNT n FORCE JUSTID LASTID l`:
/// how Redis replicates a pending entry.
fn xclaim_prop(
    key: &Bytes,
    g: &Bytes,
    c: &[u8],
    id: StreamId,
    time: u64,
    count: u64,
    last: StreamId,
) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"XCLAIM"),
        key.clone(),
        g.clone(),
        Bytes::copy_from_slice(c),
        Bytes::from_static(b"0"),
        id_bytes(id),
        Bytes::from_static(b"TIME"),
        Bytes::from(time.to_string()),
        Bytes::from_static(b"RETRYCOUNT"),
        Bytes::from(count.to_string()),
        Bytes::from_static(b"FORCE"),
        Bytes::from_static(b"JUSTID"),
        Bytes::from_static(b"LASTID"),
        id_bytes(last),
    ]
}

fn entries_read_arg(g: &Group) -> Bytes {
    match g.entries_read {
        Some(n) => Bytes::from(n.to_string()),
        None => Bytes::from_static(b"-1"),
    }
}

fn setid_prop(key: &Bytes, gname: &Bytes, g: &Group) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"XGROUP"),
        Bytes::from_static(b"SETID"),
        key.clone(),
        gname.clone(),
        id_bytes(g.last_id),
        Bytes::from_static(b"ENTRIESREAD"),
        entries_read_arg(g),
    ]
}

// ---- XGROUP ----------------------------------------------------------------

fn help(cmd: &str, lines: &[&str]) -> Reply {
    let mut out = vec![Reply::Simple(format!(
        "{cmd} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ))];
    out.extend(lines.iter().map(|l| Reply::Simple((*l).to_string())));
    out.push(Reply::simple("HELP"));
    out.push(Reply::simple("    Prints this help."));
    Reply::Array(out)
}

fn unknown_sub(cmd: &str, sub: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try {cmd} HELP.",
        String::from_utf8_lossy(sub)
    ))
}

fn sub_syntax(cmd: &str, sub: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try {cmd} HELP.",
        String::from_utf8_lossy(sub)
    ))
}

/// Subcommand arity (Redis convention), as the container table checks it.
fn sub_arity(cmd: &str, sub: &[u8], argc: usize, table: &[(&str, i32)]) -> Result<String, Reply> {
    let lower = String::from_utf8_lossy(sub).to_ascii_lowercase();
    let Some((name, arity)) = table.iter().find(|(n, _)| *n == lower) else {
        return Err(unknown_sub(&cmd.to_ascii_uppercase(), sub));
    };
    let argc = argc as i32;
    if (*arity > 0 && argc != *arity) || (*arity < 0 && argc < -*arity) {
        return Err(wrong_arity(&format!("{cmd}|{name}")));
    }
    Ok((*name).to_string())
}

fn nogroup_for_key(g: &[u8], key: &[u8]) -> Reply {
    Reply::Error(format!(
        "NOGROUP No such consumer group '{}' for key name '{}'",
        String::from_utf8_lossy(g),
        String::from_utf8_lossy(key)
    ))
}

fn xgroup(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub_arg = a.at(1)?;
    let table = [
        ("create", -5),
        ("createconsumer", 5),
        ("delconsumer", 5),
        ("destroy", 4),
        ("help", 2),
        ("setid", -5),
    ];
    let sub = sub_arity("xgroup", sub_arg, a.len(), &table)?;
    if sub == "help" {
        return Ok(help(
            "XGROUP",
            &[
                "CREATE <key> <groupname> <id|$> [option]",
                "    Create a new consumer group. Options are:",
                "    * MKSTREAM",
                "      Create the empty stream if it does not exist.",
                "    * ENTRIESREAD entries_read",
                "      Set the group's entries_read counter (internal use).",
                "CREATECONSUMER <key> <groupname> <consumer>",
                "    Create a new consumer in the specified group.",
                "DELCONSUMER <key> <groupname> <consumer>",
                "    Remove the specified consumer.",
                "DESTROY <key> <groupname>",
                "    Remove the specified group.",
                "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
                "    Set the current group ID and entries_read counter.",
            ],
        ));
    }
    let key = a.at(2)?;
    let gname = a.at(3)?;
    let mut mkstream = false;
    let mut entries_read: Option<u64> = None;
    let mut i = 5;
    while i < a.len() {
        let o = a.at(i)?;
        if sub == "create" && is(o, "mkstream") {
            mkstream = true;
            i += 1;
        } else if (sub == "create" || sub == "setid") && is(o, "entriesread") && i + 1 < a.len() {
            let n = int_arg(a.at(i + 1)?)?;
            if n < 0 && n != -1 {
                return Err(err("ERR value for ENTRIESREAD must be positive or -1"));
            }
            entries_read = u64::try_from(n).ok();
            i += 2;
        } else {
            return Err(sub_syntax("XGROUP", sub_arg));
        }
    }
    let present = exists(ctx, key)?;
    if !mkstream {
        if !present {
            return Err(err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically."));
        }
        let has = read(ctx, key)?.is_some_and(|s| s.groups.contains_key(gname.as_ref()));
        if !has && matches!(sub.as_str(), "setid" | "createconsumer" | "delconsumer") {
            return Err(nogroup_for_key(gname, key));
        }
    }
    let now = ctx.now;
    match sub.as_str() {
        "create" if a.len() <= 8 => {
            let last = read(ctx, key)?.map(|s| s.last_id).unwrap_or_default();
            let id = if a.at(4)?.as_ref() == b"$" {
                last
            } else {
                parse_strict_id(a.at(4)?)?
            };
            if read(ctx, key)?.is_some_and(|s| s.groups.contains_key(gname.as_ref())) {
                return Err(err("BUSYGROUP Consumer Group name already exists"));
            }
            let s = create(ctx, key)?;
            s.groups.insert(
                sds(gname),
                Group {
                    last_id: id,
                    entries_read,
                    ..Group::default()
                },
            );
            Ok(Reply::Ok)
        }
        "setid" if a.len() == 5 || a.len() == 7 => {
            let id = if a.at(4)?.as_ref() == b"$" {
                read(ctx, key)?.map(|s| s.last_id).unwrap_or_default()
            } else {
                parse_id(a.at(4)?, 0)?
            };
            let s = write(ctx, key)?;
            if let Some(g) = s.groups.get_mut(gname.as_ref()) {
                g.last_id = id;
                g.entries_read = entries_read;
            }
            Ok(Reply::Ok)
        }
        "destroy" if a.len() == 4 => {
            if !read(ctx, key)?.is_some_and(|s| s.groups.contains_key(gname.as_ref())) {
                return Ok(Reply::Int(0));
            }
            write(ctx, key)?.groups.remove(gname.as_ref());
            Ok(Reply::Int(1))
        }
        "createconsumer" if a.len() == 5 => {
            let cname = a.at(4)?;
            let has = read(ctx, key)?
                .and_then(|s| s.groups.get(gname.as_ref()))
                .is_some_and(|g| g.consumers.contains_key(cname.as_ref()));
            if has {
                return Ok(Reply::Int(0));
            }
            if let Some(g) = write(ctx, key)?.groups.get_mut(gname.as_ref()) {
                g.consumers.insert(
                    sds(cname),
                    Consumer {
                        seen_time: now,
                        ..Consumer::default()
                    },
                );
            }
            Ok(Reply::Int(1))
        }
        "delconsumer" if a.len() == 5 => {
            let cname = a.at(4)?;
            let has = read(ctx, key)?
                .and_then(|s| s.groups.get(gname.as_ref()))
                .is_some_and(|g| g.consumers.contains_key(cname.as_ref()));
            if !has {
                return Ok(Reply::Int(0));
            }
            let mut pending = 0;
            if let Some(g) = write(ctx, key)?.groups.get_mut(gname.as_ref()) {
                if let Some(c) = g.consumers.remove(cname.as_ref()) {
                    pending = c.pel.len();
                    for id in c.pel {
                        g.pel.remove(&id);
                    }
                }
            }
            Ok(Reply::Int(pending as i64))
        }
        _ => Err(sub_syntax("XGROUP", sub_arg)),
    }
}

// ---- XACK / XPENDING / XCLAIM / XAUTOCLAIM -------------------------------------

fn nogroup(key: &[u8], g: &[u8]) -> Reply {
    Reply::Error(format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(g)
    ))
}

fn xack(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let gname = a.at(2)?;
    let pending: Vec<StreamId> = match read(ctx, key)?.and_then(|s| s.groups.get(gname.as_ref())) {
        Some(g) => {
            let ids = a
                .rest(3)
                .iter()
                .map(|b| parse_strict_id(b))
                .collect::<Result<Vec<_>, _>>()?;
            ids.into_iter()
                .filter(|id| g.pel.contains_key(id))
                .collect()
        }
        None => return Ok(Reply::Int(0)),
    };
    if pending.is_empty() {
        return Ok(Reply::Int(0));
    }
    let mut acked = 0;
    if let Some(g) = write(ctx, key)?.groups.get_mut(gname.as_ref()) {
        for id in pending {
            if g.ack(id) {
                acked += 1;
            }
        }
    }
    Ok(Reply::Int(acked))
}

fn xpending(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let gname = a.at(2)?;
    let argc = a.len();
    if argc != 3 && !(6..=9).contains(&argc) {
        return Err(syntax_error());
    }
    let mut ext = None;
    if argc >= 6 {
        let mut si = 3;
        let mut minidle = 0i64;
        if is(a.at(3)?, "idle") {
            minidle = int_arg(a.at(4)?)?;
            if argc < 8 {
                return Err(syntax_error());
            }
            si += 2;
        }
        let count = int_arg(a.at(si + 2)?)?.max(0);
        let start = range_start(a.at(si)?)?;
        let end = range_end(a.at(si + 1)?)?;
        let consumer = a.get(si + 3).cloned();
        ext = Some((minidle, start, end, count, consumer));
    }
    let now = ctx.now as i64;
    let s = read(ctx, key)?;
    let Some(g) = s.and_then(|s| s.groups.get(gname.as_ref())) else {
        return Err(nogroup(key, gname));
    };
    let Some((minidle, start, end, count, consumer)) = ext else {
        if g.pel.is_empty() {
            return Ok(Reply::Array(vec![
                Reply::Int(0),
                Reply::Nil,
                Reply::Nil,
                Reply::NilArray,
            ]));
        }
        let first = g.pel.keys().next().copied().unwrap_or_default();
        let last = g.pel.keys().next_back().copied().unwrap_or_default();
        let per: Vec<Reply> = g
            .consumers
            .iter()
            .filter(|(_, c)| !c.pel.is_empty())
            .map(|(n, c)| {
                Reply::Array(vec![
                    Reply::bulk(n.as_slice()),
                    Reply::bulk(c.pel.len().to_string()),
                ])
            })
            .collect();
        return Ok(Reply::Array(vec![
            Reply::Int(g.pel.len() as i64),
            id_reply(first),
            id_reply(last),
            Reply::Array(per),
        ]));
    };
    let ids: Vec<StreamId> = match &consumer {
        Some(c) => match g.consumers.get(c.as_ref()) {
            Some(c) => c.pel.iter().copied().collect(),
            None => return Ok(Reply::Array(vec![])),
        },
        None => g.pel.keys().copied().collect(),
    };
    let mut out = Vec::new();
    let mut left = count;
    if start <= end {
        for id in ids.into_iter().filter(|id| *id >= start && *id <= end) {
            if left == 0 {
                break;
            }
            let Some(n) = g.pel.get(&id) else { continue };
            let idle = now - n.delivery_time as i64;
            if minidle != 0 && idle < minidle {
                continue;
            }
            left -= 1;
            out.push(Reply::Array(vec![
                id_reply(id),
                Reply::bulk(n.consumer.as_slice()),
                Reply::Int(idle.max(0)),
                Reply::Int(n.delivery_count as i64),
            ]));
        }
    }
    Ok(Reply::Array(out))
}

fn xclaim(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let gname = a.at(2)?;
    let cname = a.at(3)?;
    let has = read(ctx, key)?.is_some_and(|s| s.groups.contains_key(gname.as_ref()));
    if !has {
        return Err(nogroup(key, gname));
    }
    let minidle = ll_arg(a.at(4)?, "Invalid min-idle-time argument for XCLAIM")?.max(0);
    let mut ids = Vec::new();
    let mut j = 5;
    while j < a.len() {
        match parse_strict_id(a.at(j)?) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        j += 1;
    }
    let now = ctx.now as i64;
    let (mut force, mut justid) = (false, false);
    let mut retrycount: Option<u64> = None;
    let mut deliverytime: Option<i64> = None;
    let mut last_id = StreamId::MIN;
    while j < a.len() {
        let more = a.len() - 1 - j;
        let opt = a.at(j)?;
        if is(opt, "force") {
            force = true;
        } else if is(opt, "justid") {
            justid = true;
        } else if is(opt, "idle") && more > 0 {
            j += 1;
            deliverytime = Some(now - ll_arg(a.at(j)?, "Invalid IDLE option argument for XCLAIM")?);
        } else if is(opt, "time") && more > 0 {
            j += 1;
            deliverytime = Some(ll_arg(a.at(j)?, "Invalid TIME option argument for XCLAIM")?);
        } else if is(opt, "retrycount") && more > 0 {
            j += 1;
            let n = ll_arg(a.at(j)?, "Invalid RETRYCOUNT option argument for XCLAIM")?;
            retrycount = Some(n as u64);
        } else if is(opt, "lastid") && more > 0 {
            j += 1;
            last_id = parse_strict_id(a.at(j)?)?;
        } else {
            return Err(Reply::Error(format!(
                "ERR Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
        j += 1;
    }
    let dt = match deliverytime {
        Some(t) if t >= 0 && t <= now => t as u64,
        _ => now as u64,
    };
    let propagating = ctx.propagating();
    ctx.unchanged();
    let s = write(ctx, key)?;
    let Some(g) = s.groups.get_mut(gname.as_ref()) else {
        return Err(nogroup(key, gname));
    };
    let mut props = Vec::new();
    let mut propagate_last = false;
    if last_id > g.last_id {
        g.last_id = last_id;
        propagate_last = true;
    }
    let mut out = Vec::new();
    for id in ids {
        let exists = s.entries.contains_key(&id);
        let Some(g) = s.groups.get_mut(gname.as_ref()) else {
            break;
        };
        if !exists {
            if let Some(n) = g.pel.get(&id).cloned() {
                if propagating {
                    props.push(xclaim_prop(
                        key,
                        gname,
                        &n.consumer,
                        id,
                        n.delivery_time,
                        n.delivery_count,
                        g.last_id,
                    ));
                }
                propagate_last = false;
                g.ack(id);
            }
            continue;
        }
        let had = g.pel.contains_key(&id);
        if !had && !force {
            continue;
        }
        if had && minidle > 0 {
            if let Some(n) = g.pel.get(&id) {
                if now - (n.delivery_time as i64) < minidle {
                    continue;
                }
            }
        }
        let c = g.consumers.entry(sds(cname)).or_default();
        c.seen_time = now as u64;
        c.pel.insert(id);
        let nack = g.pel.entry(id).or_insert_with(|| Nack {
            consumer: sds(cname),
            delivery_time: now as u64,
            delivery_count: 1,
        });
        let prev = std::mem::replace(&mut nack.consumer, sds(cname));
        nack.delivery_time = dt;
        if let Some(n) = retrycount {
            nack.delivery_count = n;
        } else if !justid {
            nack.delivery_count += 1;
        }
        let (ndt, ndc) = (nack.delivery_time, nack.delivery_count);
        if prev.as_slice() != cname.as_ref() {
            if let Some(pc) = g.consumers.get_mut(&prev) {
                pc.pel.remove(&id);
            }
        }
        if justid {
            out.push(id_reply(id));
        } else if let Some(p) = s.entries.get(&id) {
            out.push(entry_reply(id, p));
        }
        if propagating {
            let last = s
                .groups
                .get(gname.as_ref())
                .map(|g| g.last_id)
                .unwrap_or_default();
            props.push(xclaim_prop(key, gname, cname, id, ndt, ndc, last));
        }
        propagate_last = false;
    }
    if propagate_last && propagating {
        if let Some(g) = s.groups.get(gname.as_ref()) {
            props.push(setid_prop(key, gname, g));
        }
    }
    for p in props {
        ctx.propagate_as(p);
    }
    Ok(Reply::Array(out))
}

fn xautoclaim(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let gname = a.at(2)?;
    let cname = a.at(3)?;
    let minidle = ll_arg(a.at(4)?, "Invalid min-idle-time argument for XAUTOCLAIM")?.max(0);
    let start = range_start(a.at(5)?)?;
    let mut count: u64 = 100;
    let mut justid = false;
    let mut j = 6;
    while j < a.len() {
        let more = a.len() - 1 - j;
        let opt = a.at(j)?;
        if is(opt, "count") && more > 0 {
            let max = (i64::MAX / 16) as u64;
            let n = parse_i64(a.at(j + 1)?)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| err("ERR COUNT must be > 0"))?;
            count = n;
            j += 1;
        } else if is(opt, "justid") {
            justid = true;
        } else {
            return Err(syntax_error());
        }
        j += 1;
    }
    let has = read(ctx, key)?.is_some_and(|s| s.groups.contains_key(gname.as_ref()));
    if !has {
        return Err(nogroup(key, gname));
    }
    let now = ctx.now;
    let propagating = ctx.propagating();
    ctx.unchanged();
    let s = write(ctx, key)?;
    let mut props = Vec::new();
    let mut out = Vec::new();
    let mut deleted = Vec::new();
    let mut attempts = count.saturating_mul(10);
    let mut cursor = start;
    let mut next: Option<StreamId> = None;
    #[allow(clippy::while_let_loop)] // the cursor step reads best as one loop
    loop {
        let Some(g) = s.groups.get(gname.as_ref()) else {
            break;
        };
        let candidate = g.pel.range(cursor..).next().map(|(k, _)| *k);
        if attempts == 0 || count == 0 {
            next = candidate;
            break;
        }
        attempts -= 1;
        let Some(id) = candidate else { break };
        cursor = id.incr().unwrap_or(StreamId::MAX);
        let exists = s.entries.contains_key(&id);
        let Some(g) = s.groups.get_mut(gname.as_ref()) else {
            break;
        };
        if !exists {
            if let Some(n) = g.pel.get(&id).cloned() {
                if propagating {
                    props.push(xclaim_prop(
                        key,
                        gname,
                        &n.consumer,
                        id,
                        n.delivery_time,
                        n.delivery_count,
                        g.last_id,
                    ));
                }
                g.ack(id);
            }
            deleted.push(id_reply(id));
            count -= 1;
            if id == StreamId::MAX {
                break;
            }
            continue;
        }
        if minidle > 0 {
            if let Some(n) = g.pel.get(&id) {
                if (now as i64) - (n.delivery_time as i64) < minidle {
                    if id == StreamId::MAX {
                        break;
                    }
                    continue;
                }
            }
        }
        let c = g.consumers.entry(sds(cname)).or_default();
        c.seen_time = now;
        c.pel.insert(id);
        let Some(nack) = g.pel.get_mut(&id) else {
            continue;
        };
        let prev = std::mem::replace(&mut nack.consumer, sds(cname));
        nack.delivery_time = now;
        if !justid {
            nack.delivery_count += 1;
        }
        let (ndt, ndc) = (nack.delivery_time, nack.delivery_count);
        if prev.as_slice() != cname.as_ref() {
            if let Some(pc) = g.consumers.get_mut(&prev) {
                pc.pel.remove(&id);
            }
        }
        let last = g.last_id;
        if justid {
            out.push(id_reply(id));
        } else if let Some(p) = s.entries.get(&id) {
            out.push(entry_reply(id, p));
        }
        if propagating {
            props.push(xclaim_prop(key, gname, cname, id, ndt, ndc, last));
        }
        count -= 1;
        if id == StreamId::MAX {
            break;
        }
    }
    for p in props {
        ctx.propagate_as(p);
    }
    Ok(Reply::Array(vec![
        id_reply(next.unwrap_or_default()),
        Reply::Array(out),
        Reply::Array(deleted),
    ]))
}

// ---- XINFO -------------------------------------------------------------------

fn field(name: &str, v: Reply) -> (Reply, Reply) {
    (Reply::bulk(name), v)
}

fn entries_read_reply(g: &Group) -> Reply {
    g.entries_read.map_or(Reply::Nil, |n| Reply::Int(n as i64))
}

fn lag_reply(s: &Stream, g: &Group) -> Reply {
    s.lag(g).map_or(Reply::Nil, |n| Reply::Int(n as i64))
}

/// A rough count of radix tree nodes for `keys` 16-byte keys: Redis's
/// exact figure depends on its node compression, which is not modelled.
fn rax_nodes(keys: usize) -> i64 {
    if keys == 0 {
        1
    } else {
        (keys * 2) as i64
    }
}

fn xinfo(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub_arg = a.at(1)?;
    let table = [("consumers", 4), ("groups", 3), ("help", 2), ("stream", -3)];
    let sub = sub_arity("xinfo", sub_arg, a.len(), &table)?;
    if sub == "help" {
        return Ok(help(
            "XINFO",
            &[
                "CONSUMERS <key> <groupname>",
                "    Show consumers of <groupname>.",
                "GROUPS <key>",
                "    Show the stream consumer groups.",
                "STREAM <key> [FULL [COUNT <count>]",
                "    Show information about the stream.",
            ],
        ));
    }
    let key = a.at(2)?;
    let now = ctx.now as i64;
    let Some(s) = read(ctx, key)? else {
        return Err(err("ERR no such key"));
    };
    match sub.as_str() {
        "consumers" => {
            let gname = a.at(3)?;
            let Some(g) = s.groups.get(gname.as_ref()) else {
                return Err(nogroup_for_key(gname, key));
            };
            Ok(Reply::Array(
                g.consumers
                    .iter()
                    .map(|(n, c)| {
                        Reply::Map(vec![
                            field("name", Reply::bulk(n.as_slice())),
                            field("pending", Reply::Int(c.pel.len() as i64)),
                            field("idle", Reply::Int((now - c.seen_time as i64).max(0))),
                        ])
                    })
                    .collect(),
            ))
        }
        "groups" => Ok(Reply::Array(
            s.groups
                .iter()
                .map(|(n, g)| {
                    Reply::Map(vec![
                        field("name", Reply::bulk(n.as_slice())),
                        field("consumers", Reply::Int(g.consumers.len() as i64)),
                        field("pending", Reply::Int(g.pel.len() as i64)),
                        field("last-delivered-id", id_reply(g.last_id)),
                        field("entries-read", entries_read_reply(g)),
                        field("lag", lag_reply(s, g)),
                    ])
                })
                .collect(),
        )),
        _ => xinfo_stream(s, a, sub_arg),
    }
}

fn xinfo_stream(s: &Stream, a: &[Bytes], sub_arg: &[u8]) -> CmdResult {
    let opts = a.rest(3);
    let mut full = false;
    let mut count: i64 = 10;
    if !opts.is_empty() {
        if (opts.len() != 1 && opts.len() != 3) || !is(a.at(3)?, "full") {
            return Err(sub_syntax("XINFO", sub_arg));
        }
        full = true;
        if opts.len() == 3 {
            if !is(a.at(4)?, "count") {
                return Err(sub_syntax("XINFO", sub_arg));
            }
            count = int_arg(a.at(5)?)?;
            if count < 0 {
                count = 10;
            }
        }
    }
    let mut m = vec![
        field("length", Reply::Int(s.len() as i64)),
        field("radix-tree-keys", Reply::Int(s.nodes.len() as i64)),
        field("radix-tree-nodes", Reply::Int(rax_nodes(s.nodes.len()))),
        field("last-generated-id", id_reply(s.last_id)),
        field("max-deleted-entry-id", id_reply(s.max_deleted)),
        field("entries-added", Reply::Int(s.entries_added as i64)),
        field("recorded-first-entry-id", id_reply(s.first_id())),
    ];
    if !full {
        m.push(field("groups", Reply::Int(s.groups.len() as i64)));
        let first = s
            .entries
            .iter()
            .next()
            .map_or(Reply::Nil, |(id, p)| entry_reply(*id, p));
        let last = s
            .entries
            .iter()
            .next_back()
            .map_or(Reply::Nil, |(id, p)| entry_reply(*id, p));
        m.push(field("first-entry", first));
        m.push(field("last-entry", last));
        return Ok(Reply::Map(m));
    }
    let limit = if count == 0 {
        usize::MAX
    } else {
        count as usize
    };
    m.push(field(
        "entries",
        Reply::Array(
            s.entries
                .iter()
                .take(limit)
                .map(|(id, p)| entry_reply(*id, p))
                .collect(),
        ),
    ));
    let groups =
        s.groups
            .iter()
            .map(|(n, g)| {
                let pending = g
                    .pel
                    .iter()
                    .take(limit)
                    .map(|(id, nk)| {
                        Reply::Array(vec![
                            id_reply(*id),
                            Reply::bulk(nk.consumer.as_slice()),
                            Reply::Int(nk.delivery_time as i64),
                            Reply::Int(nk.delivery_count as i64),
                        ])
                    })
                    .collect();
                let consumers =
                    g.consumers
                        .iter()
                        .map(|(cn, c)| {
                            let cp =
                                c.pel
                                    .iter()
                                    .take(limit)
                                    .map(|id| {
                                        let (t, d) = g.pel.get(id).map_or((0, 0), |n| {
                                            (n.delivery_time, n.delivery_count)
                                        });
                                        Reply::Array(vec![
                                            id_reply(*id),
                                            Reply::Int(t as i64),
                                            Reply::Int(d as i64),
                                        ])
                                    })
                                    .collect();
                            Reply::Map(vec![
                                field("name", Reply::bulk(cn.as_slice())),
                                field("seen-time", Reply::Int(c.seen_time as i64)),
                                field("pel-count", Reply::Int(c.pel.len() as i64)),
                                field("pending", Reply::Array(cp)),
                            ])
                        })
                        .collect();
                Reply::Map(vec![
                    field("name", Reply::bulk(n.as_slice())),
                    field("last-delivered-id", id_reply(g.last_id)),
                    field("entries-read", entries_read_reply(g)),
                    field("lag", lag_reply(s, g)),
                    field("pel-count", Reply::Int(g.pel.len() as i64)),
                    field("pending", Reply::Array(pending)),
                    field("consumers", Reply::Array(consumers)),
                ])
            })
            .collect();
    m.push(field("groups", Reply::Array(groups)));
    Ok(Reply::Map(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_parsing_follows_string2ull() {
        assert_eq!(parse_id(b"5", 7).ok(), Some(StreamId::new(5, 7)));
        assert_eq!(parse_id(b"+5-01", 0).ok(), Some(StreamId::new(5, 1)));
        assert_eq!(parse_id(b"-", 0).ok(), Some(StreamId::MIN));
        assert!(parse_strict_id(b"+").is_err());
        assert!(parse_id(b"1-2-3", 0).is_err());
        assert!(parse_id(b"", 0).is_err());
        assert!(parse_id(b"18446744073709551616", 0).is_err());
        assert_eq!(
            parse_id_full(b"3-*", 0, true, true).ok(),
            Some((StreamId::new(3, 0), false))
        );
        assert!(parse_strict_id(b"3-*").is_err());
    }
}
