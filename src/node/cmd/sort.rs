//! SORT and SORT_RO: sorting lists, sets and sorted sets by their elements
//! or by external keys (`BY pattern`, `GET pattern`), as Redis 7.0's
//! `sort.c` does, including its quirks: `BY` without `*` means no sort, a
//! set sorted without order under STORE or a script is sorted ALPHA so
//! replicas agree, and in cluster mode external-key patterns are refused
//! outright (7.0 does not look at hash tags).

use super::flags::*;
use super::{err, int_arg, is, syntax_error, wrongtype, CmdResult, CommandSpec, Ctx};
use crate::resp::Reply;
use crate::store::{Db, Sds, Value};
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::VecDeque;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("sort", -2, WRITE | DENYOOM | MOVABLE_KEYS, [1, 1, 1], sort),
    CommandSpec::new("sort_ro", -2, READONLY | MOVABLE_KEYS, [1, 1, 1], sort_ro),
];

fn sort(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    sort_generic(ctx, a, false)
}

fn sort_ro(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    sort_generic(ctx, a, true)
}

/// The parsed options of one SORT call.
#[derive(Default)]
struct Opts {
    desc: bool,
    alpha: bool,
    limit: Option<(i64, i64)>,
    store: Option<Bytes>,
    by: Option<Bytes>,
    dontsort: bool,
    gets: Vec<Bytes>,
}

fn parse(a: &[Bytes], readonly: bool, cluster: bool) -> Result<Opts, Reply> {
    let mut o = Opts::default();
    let mut j = 2;
    while let Some(arg) = a.get(j) {
        let left = a.len() - j - 1;
        if is(arg, "asc") {
            o.desc = false;
        } else if is(arg, "desc") {
            o.desc = true;
        } else if is(arg, "alpha") {
            o.alpha = true;
        } else if is(arg, "limit") && left >= 2 {
            let start = int_arg(super::Argv::at(a, j + 1)?)?;
            let count = int_arg(super::Argv::at(a, j + 2)?)?;
            o.limit = Some((start, count));
            j += 2;
        } else if !readonly && is(arg, "store") && left >= 1 {
            o.store = Some(super::Argv::at(a, j + 1)?.clone());
            j += 1;
        } else if is(arg, "by") && left >= 1 {
            let pat = super::Argv::at(a, j + 1)?;
            // A constant BY (no `*`) names no key per element: no sort.
            if !pat.contains(&b'*') {
                o.dontsort = true;
            } else if cluster {
                return Err(err("ERR BY option of SORT denied in Cluster mode."));
            }
            o.by = Some(pat.clone());
            j += 1;
        } else if is(arg, "get") && left >= 1 {
            if cluster {
                return Err(err("ERR GET option of SORT denied in Cluster mode."));
            }
            o.gets.push(super::Argv::at(a, j + 1)?.clone());
            j += 1;
        } else {
            return Err(syntax_error());
        }
        j += 1;
    }
    Ok(o)
}

/// The value `pattern` names for element `subst`: `#` is the element
/// itself, the first `*` is replaced by it, and `key->field` reads a hash
/// field. A pattern without `*`, a missing key or a key of the wrong type
/// names nothing.
fn lookup_by_pattern(db: &mut Db, now: u64, pattern: &[u8], subst: &[u8]) -> Option<Bytes> {
    if pattern == b"#" {
        return Some(Bytes::copy_from_slice(subst));
    }
    let star = pattern.iter().position(|&c| c == b'*')?;
    let (prefix, after) = pattern.split_at(star);
    let after = after.get(1..).unwrap_or_default();
    // The field part starts at the first `->` after the `*`, unless the
    // arrow ends the pattern (then it is part of the key name).
    let arrow = after
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&i| i + 2 < after.len());
    let (postfix, field) = match arrow {
        Some(i) => (
            after.get(..i).unwrap_or_default(),
            after.get(i + 2..).filter(|f| !f.is_empty()),
        ),
        None => (after, None),
    };
    let mut key = Vec::with_capacity(prefix.len() + subst.len() + postfix.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(subst);
    key.extend_from_slice(postfix);
    match (db.get(&key, now)?, field) {
        (Value::Hash(h), Some(f)) => h.get(f).map(|v| Bytes::copy_from_slice(v)),
        (Value::Str(s), None) => Some(Bytes::copy_from_slice(s)),
        _ => None,
    }
}

/// The elements of the value to sort, in its native order (list order,
/// sorted-set rank order; a set's iteration order).
/// Also says whether the value is a set (no native order).
fn elements(db: &mut Db, key: &[u8], now: u64) -> Result<(Vec<Sds>, bool), Reply> {
    Ok(match db.get(key, now) {
        None => (Vec::new(), false),
        Some(Value::List(l)) => (l.iter().cloned().collect(), false),
        Some(Value::ZSet(z)) => (z.iter().map(|(m, _)| m.clone()).collect(), false),
        Some(Value::Set(s)) => {
            let mut v: Vec<Sds> = s.iter().cloned().collect();
            // Redis keeps small all-integer sets as a sorted intset and
            // iterates them in numeric order; large or mixed sets in hash
            // order (ours differs, as any hash order would).
            let ints: Option<Vec<i64>> = v.iter().map(|m| crate::resp::parse_i64(m)).collect();
            if let Some(mut ints) = ints.filter(|_| v.len() <= 512) {
                ints.sort_unstable();
                v = ints
                    .into_iter()
                    .map(|n| crate::store::value::sds(n.to_string().as_bytes()))
                    .collect();
            }
            (v, true)
        }
        Some(_) => return Err(wrongtype()),
    })
}

/// C `strtod` as SORT uses it: leading blanks allowed, the whole rest must
/// be the number (an empty string is 0), overflow and NaN refused.
fn sort_score(b: &[u8]) -> Option<f64> {
    if b.is_empty() {
        return Some(0.0);
    }
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))?;
    let s = std::str::from_utf8(b.get(start..)?).ok()?;
    let lower = s.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    let literal_inf = unsigned == "inf" || unsigned == "infinity";
    let v: f64 = if literal_inf {
        if lower.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }
    } else {
        // Rust accepts "inf"/"nan" spellings strtod also takes; anything
        // else it refuses strtod would stop early on, which SORT refuses.
        if lower.len() - unsigned.len() > 1 || unsigned.starts_with(['i', 'n']) {
            return None;
        }
        lower.parse().ok()?
    };
    // ERANGE: a finite spelling that overflowed, or a nonzero one that
    // underflowed to zero or a subnormal.
    let nonzero_digits = unsigned
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|c| (b'1'..=b'9').contains(&c)));
    if v.is_nan()
        || (!literal_inf && v.is_infinite())
        || (nonzero_digits && (v == 0.0 || v.is_subnormal()))
    {
        return None;
    }
    Some(v)
}

struct Item {
    obj: Sds,
    score: f64,
    cmp: Option<Bytes>,
}

fn sort_generic(ctx: &mut Ctx, a: &[Bytes], readonly: bool) -> CmdResult {
    let cluster = ctx.shared.config.load().cluster_enabled;
    let mut o = parse(a, readonly, cluster)?;
    let key = super::Argv::at(a, 1)?;
    let (elems, is_set) = elements(ctx.db, key, ctx.now)?;
    // An unordered set must come out the same on replicas and in scripts.
    if o.dontsort && is_set && (o.store.is_some() || ctx.in_script) {
        o.dontsort = false;
        o.alpha = true;
        o.by = None;
    }
    let len = elems.len() as i64;
    let (limit_start, limit_count) = o.limit.unwrap_or((0, -1));
    let mut start = limit_start.max(0).min(len);
    let count = limit_count.max(-1).min(len);
    let mut end = if count < 0 {
        len - 1
    } else {
        start + count - 1
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    if end >= len {
        end = len - 1;
    }
    let mut items: Vec<Item> = elems
        .into_iter()
        .map(|obj| Item {
            obj,
            score: 0.0,
            cmp: None,
        })
        .collect();
    // Unsorted lists and sorted sets keep their order, DESC reversing it.
    if o.dontsort && !is_set && o.desc {
        items.reverse();
    }
    let mut conversion_error = false;
    if !o.dontsort {
        for it in &mut items {
            let by = match &o.by {
                Some(p) => match lookup_by_pattern(ctx.db, ctx.now, p, &it.obj) {
                    Some(v) => v,
                    None => continue,
                },
                None => Bytes::copy_from_slice(&it.obj),
            };
            if o.alpha {
                if o.by.is_some() {
                    it.cmp = Some(by);
                }
            } else {
                match sort_score(&by) {
                    Some(s) => it.score = s,
                    None => conversion_error = true,
                }
            }
        }
        let (alpha, by_pattern, desc) = (o.alpha, o.by.is_some(), o.desc);
        items.sort_by(|x, y| {
            let c = if !alpha {
                x.score
                    .partial_cmp(&y.score)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| x.obj.cmp(&y.obj))
            } else if by_pattern {
                // Elements whose BY key is missing come first.
                match (&x.cmp, &y.cmp) {
                    (Some(p), Some(q)) => p.cmp(q),
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                }
            } else {
                x.obj.cmp(&y.obj)
            };
            if desc {
                c.reverse()
            } else {
                c
            }
        });
    }
    if conversion_error {
        return Err(err("ERR One or more scores can't be converted into double"));
    }
    let picked: &[Item] = if end >= start {
        items.get(start as usize..=end as usize).unwrap_or_default()
    } else {
        &[]
    };
    let mut out: Vec<Option<Bytes>> = Vec::new();
    for it in picked {
        if o.gets.is_empty() {
            out.push(Some(Bytes::copy_from_slice(&it.obj)));
        }
        for g in &o.gets {
            out.push(lookup_by_pattern(ctx.db, ctx.now, g, &it.obj));
        }
    }
    let Some(dst) = o.store else {
        return Ok(Reply::Array(
            out.into_iter()
                .map(|v| v.map_or(Reply::Nil, Reply::Bulk))
                .collect(),
        ));
    };
    let n = out.len();
    if n > 0 {
        let list: VecDeque<Sds> = out
            .iter()
            .map(|v| crate::store::value::sds(v.as_deref().unwrap_or_default()))
            .collect();
        ctx.db.set(&dst, Value::List(Box::new(list)));
    } else {
        ctx.db.remove(&dst, ctx.now);
    }
    Ok(Reply::Int(n as i64))
}

#[cfg(test)]
mod tests {
    use super::sort_score;

    #[test]
    fn scores_parse_like_strtod() {
        assert_eq!(sort_score(b""), Some(0.0));
        assert_eq!(sort_score(b"  1.5"), Some(1.5));
        assert_eq!(sort_score(b"-3"), Some(-3.0));
        assert_eq!(sort_score(b"1e3"), Some(1000.0));
        assert_eq!(sort_score(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(sort_score(b"Infinity"), Some(f64::INFINITY));
        assert_eq!(sort_score(b"1 "), None);
        assert_eq!(sort_score(b"   "), None);
        assert_eq!(sort_score(b"abc"), None);
        assert_eq!(sort_score(b"nan"), None);
        assert_eq!(sort_score(b"1e400"), None);
        assert_eq!(sort_score(b"1e-400"), None);
        assert_eq!(sort_score(b"0e-400"), Some(0.0));
        assert_eq!(sort_score(b"--1"), None);
    }
}
