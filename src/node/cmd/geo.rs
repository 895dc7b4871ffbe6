//! Geo commands: GEOADD GEODIST GEOHASH GEOPOS GEOSEARCH GEOSEARCHSTORE
//! GEORADIUS GEORADIUSBYMEMBER and their _RO forms, as Redis 7.0.
//!
//! A geo set is a sorted set whose scores are 52-bit geohashes (see
//! [`super::geohash`]); this file owns the argument rules, the search over
//! the score ranges of the covering cells, and the reply shapes. GEOADD is
//! ZADD with computed scores, and propagates as that ZADD (as Redis does).

use super::flags::*;
use super::geohash::{self, Shape, ShapeKind};
use super::{err, float_arg, int_arg, is, syntax_error, Argv, CmdResult, CommandSpec, Ctx};
use crate::resp::{Proto, Reply};
use crate::store::value::Score;
use crate::store::{sds, Sds, Value, ZSet};
use bytes::Bytes;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("geoadd", -5, WRITE | DENYOOM, [1, 1, 1], geoadd),
    CommandSpec::new("geodist", -4, READONLY, [1, 1, 1], geodist),
    CommandSpec::new("geohash", -2, READONLY, [1, 1, 1], geohash_cmd),
    CommandSpec::new("geopos", -2, READONLY, [1, 1, 1], geopos),
    CommandSpec::new("georadius", -6, WRITE | DENYOOM | MOVABLE_KEYS, [1, 1, 1], georadius),
    CommandSpec::new("georadius_ro", -6, READONLY, [1, 1, 1], georadius_ro),
    CommandSpec::new("georadiusbymember", -5, WRITE | DENYOOM | MOVABLE_KEYS, [1, 1, 1], georadiusbymember),
    CommandSpec::new("georadiusbymember_ro", -5, READONLY, [1, 1, 1], georadiusbymember_ro),
    CommandSpec::new("geosearch", -7, READONLY, [1, 1, 1], geosearch),
    CommandSpec::new("geosearchstore", -8, WRITE | DENYOOM, [1, 2, 1], geosearchstore),
];

fn zset_ref<'d>(ctx: &'d mut Ctx, key: &[u8]) -> Result<Option<&'d ZSet>, Reply> {
    super::read(ctx, key)
}

/// `lon lat` arguments, checked against the Mercator limits.
fn lon_lat(lon: &[u8], lat: &[u8]) -> Result<(f64, f64), Reply> {
    let (x, y) = (coord_arg(lon)?, coord_arg(lat)?);
    if !geohash::valid(x, y) {
        return Err(Reply::Error(format!(
            "ERR invalid longitude,latitude pair {x:.6},{y:.6}"
        )));
    }
    Ok((x, y))
}

/// A coordinate: Redis's strtod takes "inf" but calls an overflow like
/// 1e400 not a float.
fn coord_arg(b: &[u8]) -> Result<f64, Reply> {
    let v = float_arg(b)?;
    if v.is_infinite() && !b.to_ascii_lowercase().windows(3).any(|w| w == b"inf") {
        return Err(super::not_float());
    }
    Ok(v)
}

/// Metres per unit.
fn unit(u: &[u8]) -> Result<f64, Reply> {
    if is(u, "m") {
        Ok(1.0)
    } else if is(u, "km") {
        Ok(1000.0)
    } else if is(u, "ft") {
        Ok(0.3048)
    } else if is(u, "mi") {
        Ok(1609.34)
    } else {
        Err(err(
            "ERR unsupported unit provided. please use M, KM, FT, MI",
        ))
    }
}

/// A float argument with the command's own error text.
fn float_or(b: &[u8], msg: &str) -> Result<f64, Reply> {
    float_arg(b).map_err(|_| err(msg))
}

/// `radius unit`: (radius, metres per unit).
fn radius_arg(r: &[u8], u: &[u8]) -> Result<(f64, f64), Reply> {
    let radius = float_or(r, "ERR need numeric radius")?;
    if radius < 0.0 {
        return Err(err("ERR radius cannot be negative"));
    }
    Ok((radius, unit(u)?))
}

/// `width height unit`: (width, height, metres per unit).
fn box_arg(w: &[u8], h: &[u8], u: &[u8]) -> Result<(f64, f64, f64), Reply> {
    let width = float_or(w, "ERR need numeric width")?;
    let height = float_or(h, "ERR need numeric height")?;
    if height < 0.0 || width < 0.0 {
        return Err(err("ERR height or width cannot be negative"));
    }
    Ok((width, height, unit(u)?))
}

/// A coordinate reply: a bulk string in RESP2, a double in RESP3, both
/// with Redis's 17-decimal text.
fn coord_reply(proto: Proto, v: f64) -> Reply {
    let text = geohash::format_coord(v);
    match proto {
        Proto::Resp3 => Reply::DoubleText(text),
        _ => Reply::bulk(text),
    }
}

fn geoadd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (mut nx, mut xx) = (false, false);
    let mut first = 2;
    while let Some(o) = a.get(first) {
        if is(o, "nx") {
            nx = true;
        } else if is(o, "xx") {
            xx = true;
        } else if !is(o, "ch") {
            break;
        }
        first += 1;
    }
    let triples = a.rest(first);
    if triples.len() % 3 != 0 || (nx && xx) {
        return Err(syntax_error());
    }
    // ZADD key [options] score member ...: what GEOADD runs and propagates.
    let mut zadd: Vec<Bytes> = Vec::with_capacity(first + triples.len() / 3 * 2);
    zadd.push(Bytes::from_static(b"zadd"));
    zadd.extend(a.get(1..first).unwrap_or_default().iter().cloned());
    for t in triples.chunks_exact(3) {
        let [lon, lat, member] = t else {
            return Err(syntax_error());
        };
        let (x, y) = lon_lat(lon, lat)?;
        let score = geohash::score_of(x, y).ok_or_else(syntax_error)?;
        zadd.push(Bytes::from(score.to_string()));
        zadd.push(member.clone());
    }
    // Before ZADD runs: if it changes nothing it empties the rewrite.
    ctx.propagate_as(zadd.clone());
    super::zsets::zadd(ctx, &zadd)
}

fn geodist(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let to_m = match a.len() {
        5 => unit(a.at(4)?)?,
        n if n > 5 => return Err(syntax_error()),
        _ => 1.0,
    };
    let Some(z) = zset_ref(ctx, a.at(1)?)? else {
        return Ok(Reply::Nil);
    };
    let (Some(s1), Some(s2)) = (z.score(a.at(2)?), z.score(a.at(3)?)) else {
        return Ok(Reply::Nil);
    };
    let (x1, y1) = geohash::point_of(s1);
    let (x2, y2) = geohash::point_of(s2);
    Ok(Reply::bulk(geohash::format_distance(
        geohash::distance(x1, y1, x2, y2) / to_m,
    )))
}

fn geohash_cmd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let z = zset_ref(ctx, a.at(1)?)?;
    Ok(Reply::Array(
        a.rest(2)
            .iter()
            .map(|m| {
                z.and_then(|z| z.score(m)).map_or(Reply::Nil, |s| {
                    Reply::bulk(Bytes::copy_from_slice(&geohash::hash_string(s)))
                })
            })
            .collect(),
    ))
}

fn geopos(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let proto = ctx.client.proto;
    let z = zset_ref(ctx, a.at(1)?)?;
    Ok(Reply::Array(
        a.rest(2)
            .iter()
            .map(|m| {
                z.and_then(|z| z.score(m)).map_or(Reply::NilArray, |s| {
                    let (x, y) = geohash::point_of(s);
                    Reply::Array(vec![coord_reply(proto, x), coord_reply(proto, y)])
                })
            })
            .collect(),
    ))
}

/// Which command runs the search (Redis's georadiusGeneric flags).
#[derive(Clone, Copy, PartialEq)]
enum Form {
    /// GEORADIUS key lon lat radius unit ...
    Coords { store: bool },
    /// GEORADIUSBYMEMBER key member radius unit ...
    Member { store: bool },
    /// GEOSEARCH key ... / GEOSEARCHSTORE dst key ...
    Search { store: bool },
}

#[derive(Clone, Copy, PartialEq)]
enum Sort {
    None,
    Asc,
    Desc,
}

/// One point found by a search.
struct Found {
    member: Sds,
    score: f64,
    lon: f64,
    lat: f64,
    /// Metres until the reply or store divides by the unit.
    dist: f64,
}

fn georadius(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    search(ctx, a, Form::Coords { store: true })
}
fn georadius_ro(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    search(ctx, a, Form::Coords { store: false })
}
fn georadiusbymember(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    search(ctx, a, Form::Member { store: true })
}
fn georadiusbymember_ro(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    search(ctx, a, Form::Member { store: false })
}
fn geosearch(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    search(ctx, a, Form::Search { store: false })
}
fn geosearchstore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    search(ctx, a, Form::Search { store: true })
}

/// The point of a member, or Redis's error for a missing one.
fn member_point(z: &ZSet, member: &[u8]) -> Result<(f64, f64), Reply> {
    z.score(member)
        .map(geohash::point_of)
        .ok_or_else(|| err("ERR could not decode requested zset member"))
}

/// The search commands, with Redis's order of checks: the source's type,
/// the fixed arguments, then the options left to right (each failing as
/// soon as it is read), then the combinations.
fn search(ctx: &mut Ctx, a: &[Bytes], form: Form) -> CmdResult {
    let src_idx = if form == (Form::Search { store: true }) {
        2
    } else {
        1
    };
    let src = a.at(src_idx)?.clone();
    let exists = zset_ref(ctx, &src)?.is_some();
    // Center and size; GEOSEARCH fills them in from its options.
    let mut center = (0.0, 0.0);
    let mut kind = ShapeKind::Radius(0.0);
    let mut conversion = 1.0;
    let mut store_key: Option<Bytes> = None;
    let base = match form {
        Form::Coords { .. } => {
            center = lon_lat(a.at(2)?, a.at(3)?)?;
            let (r, c) = radius_arg(a.at(4)?, a.at(5)?)?;
            (kind, conversion) = (ShapeKind::Radius(r), c);
            6
        }
        Form::Member { .. } => {
            if let Some(z) = zset_ref(ctx, &src)? {
                center = member_point(z, a.at(2)?)?;
                let (r, c) = radius_arg(a.at(3)?, a.at(4)?)?;
                (kind, conversion) = (ShapeKind::Radius(r), c);
            }
            5
        }
        Form::Search { store } => {
            if store {
                store_key = Some(a.at(1)?.clone());
                3
            } else {
                2
            }
        }
    };
    let radius_form = !matches!(form, Form::Search { .. });
    let can_store = matches!(
        form,
        Form::Coords { store: true } | Form::Member { store: true }
    );
    let (mut withdist, mut withhash, mut withcoord) = (false, false, false);
    let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
    let mut sort = Sort::None;
    let mut any = false;
    let mut count: i64 = 0;
    let mut storedist = false;
    let opts = a.rest(base);
    let left = |i: usize| opts.len() - i - 1;
    let mut i = 0;
    while i < opts.len() {
        let o = opts.at(i)?;
        if is(o, "withdist") {
            withdist = true;
        } else if is(o, "withhash") {
            withhash = true;
        } else if is(o, "withcoord") {
            withcoord = true;
        } else if is(o, "any") {
            any = true;
        } else if is(o, "asc") {
            sort = Sort::Asc;
        } else if is(o, "desc") {
            sort = Sort::Desc;
        } else if is(o, "count") && left(i) >= 1 {
            count = int_arg(opts.at(i + 1)?)?;
            if count <= 0 {
                return Err(err("ERR COUNT must be > 0"));
            }
            i += 1;
        } else if (is(o, "store") || is(o, "storedist")) && left(i) >= 1 && can_store {
            store_key = Some(opts.at(i + 1)?.clone());
            storedist = is(o, "storedist");
            i += 1;
        } else if is(o, "storedist") && form == (Form::Search { store: true }) {
            storedist = true;
        } else if is(o, "frommember") && left(i) >= 1 && !radius_form && !fromloc {
            // A missing source is answered after all the parsing.
            if let Some(z) = zset_ref(ctx, &src)? {
                center = member_point(z, opts.at(i + 1)?)?;
            }
            frommember = true;
            i += 1;
        } else if is(o, "fromlonlat") && left(i) >= 2 && !radius_form && !frommember {
            center = lon_lat(opts.at(i + 1)?, opts.at(i + 2)?)?;
            fromloc = true;
            i += 2;
        } else if is(o, "byradius") && left(i) >= 2 && !radius_form && !bybox {
            let (r, c) = radius_arg(opts.at(i + 1)?, opts.at(i + 2)?)?;
            (kind, conversion) = (ShapeKind::Radius(r), c);
            byradius = true;
            i += 2;
        } else if is(o, "bybox") && left(i) >= 3 && !radius_form && !byradius {
            let (w, h, c) = box_arg(opts.at(i + 1)?, opts.at(i + 2)?, opts.at(i + 3)?)?;
            (kind, conversion) = (ShapeKind::Box(w, h), c);
            bybox = true;
            i += 3;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    let name = String::from_utf8_lossy(a.at(0)?).into_owned();
    if store_key.is_some() && (withdist || withhash || withcoord) {
        let what = if form == (Form::Search { store: true }) {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        return Err(Reply::Error(format!(
            "ERR {what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        )));
    }
    if !(radius_form || frommember || fromloc) {
        return Err(Reply::Error(format!(
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
        )));
    }
    if !(radius_form || byradius || bybox) {
        return Err(Reply::Error(format!(
            "ERR exactly one of BYRADIUS and BYBOX can be specified for {name}"
        )));
    }
    if any && count == 0 {
        return Err(err("ERR the ANY argument requires COUNT argument"));
    }
    if !exists {
        return Ok(match store_key {
            Some(dst) => {
                ctx.db.remove(&dst, ctx.now);
                Reply::Int(0)
            }
            None => Reply::Array(Vec::new()),
        });
    }
    // The closest N need a sort; ANY takes the first N found.
    if count != 0 && sort == Sort::None && !any {
        sort = Sort::Asc;
    }
    let shape = Shape {
        lon: center.0,
        lat: center.1,
        conversion,
        kind,
    };
    let limit = if any { count as usize } else { 0 };
    let mut found = match zset_ref(ctx, &src)? {
        Some(z) => collect(z, &shape, limit),
        None => Vec::new(),
    };
    if found.is_empty() && store_key.is_none() {
        return Ok(Reply::Array(Vec::new()));
    }
    let total = found.len();
    let returned = if count == 0 {
        total
    } else {
        total.min(usize::try_from(count).unwrap_or(usize::MAX))
    };
    let by_dist = |x: &Found, y: &Found| {
        x.dist
            .partial_cmp(&y.dist)
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    match sort {
        Sort::None => {}
        // A full sort is glibc's qsort, a merge sort: stable, as ours.
        Sort::Asc if returned == total => found.sort_by(by_dist),
        Sort::Desc if returned == total => found.sort_by(|x, y| by_dist(y, x)),
        Sort::Asc => geohash::partial_sort(&mut found, 0, returned - 1, &by_dist),
        Sort::Desc => geohash::partial_sort(&mut found, 0, returned - 1, &|x, y| by_dist(y, x)),
    }
    found.truncate(returned);
    for f in &mut found {
        f.dist /= conversion;
    }
    if let Some(dst) = store_key {
        let n = found.len();
        if n == 0 {
            ctx.db.remove(&dst, ctx.now);
        } else {
            let mut z = ZSet::default();
            for f in &found {
                z.insert(&f.member, if storedist { f.dist } else { f.score });
            }
            ctx.db.set(&dst, Value::ZSet(Box::new(z)));
        }
        return Ok(Reply::Int(n as i64));
    }
    let proto = ctx.client.proto;
    let nested = withdist || withhash || withcoord;
    Ok(Reply::Array(
        found
            .into_iter()
            .map(|f| {
                let member = Reply::bulk(Bytes::copy_from_slice(&f.member));
                if !nested {
                    return member;
                }
                let mut item = vec![member];
                if withdist {
                    item.push(Reply::bulk(geohash::format_distance(f.dist)));
                }
                if withhash {
                    item.push(Reply::Int(f.score as i64));
                }
                if withcoord {
                    item.push(Reply::Array(vec![
                        coord_reply(proto, f.lon),
                        coord_reply(proto, f.lat),
                    ]));
                }
                Reply::Array(item)
            })
            .collect(),
    ))
}

/// The points of the nine cells around the centre that fall in the shape,
/// cell by cell in Redis's order, each cell in score order. `limit` (ANY)
/// stops the search once that many are found; 0 means no limit.
fn collect(z: &ZSet, shape: &Shape, limit: usize) -> Vec<Found> {
    let cells = shape.cells();
    let mut out = Vec::new();
    let mut last = 0usize;
    let full = |out: &Vec<Found>| limit != 0 && out.len() >= limit;
    for (i, c) in cells.iter().enumerate() {
        if c.is_zero() {
            continue;
        }
        // Large radii make neighbours coincide: skip a repeat of the cell
        // searched just before (Redis never compares with the centre).
        if last != 0 && cells.get(last) == Some(c) {
            continue;
        }
        if full(&out) {
            break;
        }
        let min = c.align52() as f64;
        let max = c.next().align52() as f64;
        let start = (Score(min), sds(b""));
        for (s, m) in z.index.range(start..) {
            // Scores in [min, max).
            if s.0 >= max {
                break;
            }
            let (lon, lat) = geohash::point_of(s.0);
            if let Some(dist) = shape.contains(lon, lat) {
                out.push(Found {
                    member: m.clone(),
                    score: s.0,
                    lon,
                    lat,
                    dist,
                });
            }
            if full(&out) {
                break;
            }
        }
        last = i;
    }
    out
}
