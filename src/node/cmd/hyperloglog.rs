//! HyperLogLog commands: PFADD, PFCOUNT, PFMERGE, PFDEBUG and PFSELFTEST,
//! with redis-server 7.0's replies, errors and propagation. The values are
//! plain strings in Redis's own layout ([`encoding`]), so GET, DUMP and
//! RESTORE carry them to and from a real Redis unchanged.

pub mod encoding;

use super::flags::*;
use super::Argv;
use super::{err, wrongtype, CmdResult, CommandSpec, Ctx};
use crate::resp::Reply;
use crate::store::{sds, Value};
use bytes::Bytes;
use encoding as hll;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("pfadd", -2, WRITE | DENYOOM | FAST, [1, 1, 1], pfadd),
    CommandSpec::new("pfcount", -2, READONLY, [1, -1, 1], pfcount),
    CommandSpec::new("pfmerge", -2, WRITE | DENYOOM, [1, -1, 1], pfmerge),
    CommandSpec::new("pfdebug", 3, WRITE | DENYOOM | ADMIN, [2, 2, 1], pfdebug),
    CommandSpec::new("pfselftest", 1, ADMIN, [0, 0, 0], pfselftest),
];

const NOT_HLL: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";
const CORRUPT: &str = "INVALIDOBJ Corrupted HLL object detected";

fn corrupt() -> Reply {
    err(CORRUPT)
}

/// A key's HLL value, as Redis's `isHLLObjectOrReply` sees it.
enum Found {
    Missing,
    Hll { bytes: Vec<u8>, enc: u8 },
}

/// Checks a looked-up value: a string in HLL layout, or the errors.
fn as_hll(v: Option<&Value>) -> Result<Found, Reply> {
    match v {
        None => Ok(Found::Missing),
        Some(Value::Str(s)) => match hll::check(s) {
            Ok(enc) => Ok(Found::Hll {
                bytes: s.to_vec(),
                enc,
            }),
            Err(hll::NotHll) => Err(err(NOT_HLL)),
        },
        Some(_) => Err(wrongtype()),
    }
}

/// Looks a key up like Redis's `lookupKeyRead` (counts a hit or miss).
fn lookup_read(ctx: &mut Ctx, key: &[u8]) -> Result<Found, Reply> {
    as_hll(ctx.db.get(key, ctx.now))
}

/// Looks a key up like Redis's `lookupKeyWrite` (no hit or miss counted).
fn lookup_write(ctx: &mut Ctx, key: &[u8]) -> Result<Found, Reply> {
    as_hll(ctx.db.peek(key, ctx.now).map(|e| &e.value))
}

/// Replaces the bytes of an existing key, keeping its TTL.
fn store_existing(ctx: &mut Ctx, key: &[u8], bytes: &[u8]) {
    if let Some(Value::Str(s)) = ctx.db.get_mut(key, ctx.now) {
        *s = sds(bytes);
    }
}

fn max_bytes(ctx: &Ctx) -> usize {
    ctx.shared.config.load().hll_sparse_max_bytes
}

// ---- PFADD ------------------------------------------------------------------

fn pfadd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let key = a.at(1)?;
    let max = max_bytes(ctx);
    let (mut v, created) = match lookup_write(ctx, key)? {
        Found::Missing => (hll::new_sparse(), true),
        Found::Hll { bytes, .. } => (bytes, false),
    };
    let before = (!created).then(|| v.clone());
    let mut updated = created;
    for ele in a.rest(2) {
        let (index, count) = hll::pat_len(ele);
        match hll::set(&mut v, index, count, max) {
            Ok(hll::Set::Updated) => updated = true,
            Ok(hll::Set::Unchanged) => {}
            Err(hll::Corrupt) => {
                // Redis keeps what the elements before the bad spot
                // changed, but counts no change: nothing is propagated.
                if before.as_deref() != Some(&v[..]) {
                    store_existing(ctx, key, &v);
                }
                ctx.unchanged();
                return Err(corrupt());
            }
        }
    }
    if !updated {
        return Ok(Reply::Int(0));
    }
    hll::invalidate_cache(&mut v);
    if created {
        ctx.db.set(key, Value::Str(sds(&v)));
    } else {
        store_existing(ctx, key, &v);
    }
    Ok(Reply::Int(1))
}

// ---- PFCOUNT ----------------------------------------------------------------

fn pfcount(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let keys = a.rest(1);
    if keys.len() > 1 {
        // The union's cardinality, through a one-byte-per-register HLL
        // nothing stores.
        let mut max = [0u8; hll::REGISTERS];
        for key in keys {
            if let Found::Hll { bytes, enc } = lookup_read(ctx, key)? {
                hll::merge_into(&mut max, &bytes, enc).map_err(|_| corrupt())?;
            }
        }
        return Ok(Reply::Int(hll::count_raw(&max) as i64));
    }
    let key = a.at(1)?;
    let Found::Hll { mut bytes, enc } = lookup_read(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    if hll::cache_valid(&bytes) {
        return Ok(Reply::Int(hll::cached_card(&bytes) as i64));
    }
    let card = hll::count(&bytes, enc).map_err(|_| corrupt())?;
    // The cache is part of the value: writing it is a change, and Redis
    // propagates this PFCOUNT so replicas and the AOF hold the same bytes.
    hll::set_cached_card(&mut bytes, card);
    store_existing(ctx, key, &bytes);
    Ok(Reply::Int(card as i64))
}

// ---- PFMERGE ----------------------------------------------------------------

fn pfmerge(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let dest = a.at(1)?;
    let mut max = [0u8; hll::REGISTERS];
    let mut use_dense = false;
    // The destination is a source too.
    for key in a.rest(1) {
        if let Found::Hll { bytes, enc } = lookup_read(ctx, key)? {
            use_dense |= enc == hll::DENSE;
            hll::merge_into(&mut max, &bytes, enc).map_err(|_| corrupt())?;
        }
    }
    let (mut v, created) = match lookup_write(ctx, dest)? {
        Found::Missing => (hll::new_sparse(), true),
        Found::Hll { bytes, .. } => (bytes, false),
    };
    if use_dense && hll::to_dense(&mut v).is_err() {
        return Err(corrupt());
    }
    let limit = max_bytes(ctx);
    for (i, &m) in max.iter().enumerate() {
        if m != 0 {
            // The destination was validated as a source; a sparse one that
            // still fails here is left as Redis leaves it.
            let _ = hll::set(&mut v, i, m, limit);
        }
    }
    hll::invalidate_cache(&mut v);
    if created {
        ctx.db.set(dest, Value::Str(sds(&v)));
    } else {
        store_existing(ctx, dest, &v);
    }
    Ok(Reply::Ok)
}

// ---- PFDEBUG / PFSELFTEST ---------------------------------------------------

fn pfdebug(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    let key = a.at(2)?;
    let Found::Hll { mut bytes, enc } = lookup_write(ctx, key)? else {
        return Err(err("ERR The specified key does not exist"));
    };
    let sub_name = sub.to_ascii_lowercase();
    match &sub_name[..] {
        b"getreg" | b"todense" => {
            let converted = enc == hll::SPARSE;
            if converted {
                hll::to_dense(&mut bytes).map_err(|_| corrupt())?;
                // The encoding change is a write: propagated, as in Redis.
                store_existing(ctx, key, &bytes);
            }
            if &sub_name[..] == b"todense" {
                return Ok(Reply::Int(i64::from(converted)));
            }
            let regs = bytes.get(hll::HDR_SIZE..).unwrap_or_default();
            Ok(Reply::Array(
                (0..hll::REGISTERS)
                    .map(|i| Reply::Int(i64::from(hll::dense_get(regs, i))))
                    .collect(),
            ))
        }
        b"decode" => {
            if enc != hll::SPARSE {
                return Err(err("ERR HLL encoding is not sparse"));
            }
            let data = bytes.get(hll::HDR_SIZE..).unwrap_or_default();
            Ok(Reply::bulk(hll::decode(data)))
        }
        b"encoding" => Ok(Reply::simple(if enc == hll::DENSE {
            "dense"
        } else {
            "sparse"
        })),
        _ => Err(Reply::Error(format!(
            "ERR Unknown PFDEBUG subcommand '{}'",
            String::from_utf8_lossy(sub)
        ))),
    }
}

/// Redis's own check of the implementation: dense registers keep what is
/// written to them, and sparse and dense HLLs fed the same 10 million
/// elements agree and stay within the expected error.
fn pfselftest(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut dense = hll::new_sparse();
    let _ = hll::to_dense(&mut dense);
    {
        let regs = dense.get_mut(hll::HDR_SIZE..).unwrap_or_default();
        let mut want = vec![0u8; hll::REGISTERS];
        for _ in 0..1000 {
            for (i, w) in want.iter_mut().enumerate() {
                *w = rng.random::<u8>() & 63;
                hll::dense_put(regs, i, *w);
            }
            for (i, w) in want.iter().enumerate() {
                let got = hll::dense_get(regs, i);
                if got != *w {
                    return Err(Reply::Error(format!(
                        "TESTFAILED Register {i} should be {w} but is {got}"
                    )));
                }
            }
        }
        regs.fill(0);
    }
    let max = max_bytes(ctx);
    let mut sparse = hll::new_sparse();
    let relerr = 1.04 / (hll::REGISTERS as f64).sqrt();
    let seed: u64 = rng.random();
    let mut checkpoint: u64 = 1;
    for j in 1..=10_000_000u64 {
        let ele = (j ^ seed).to_le_bytes();
        let (i, c) = hll::pat_len(&ele);
        let _ = hll::set(&mut dense, i, c, max);
        let _ = hll::set(&mut sparse, i, c, max);
        if j != checkpoint {
            continue;
        }
        if (j as usize) < max / 2 && hll::check(&sparse) != Ok(hll::SPARSE) {
            return Err(err("TESTFAILED sparse encoding not used"));
        }
        let d = hll::count(&dense, hll::DENSE).unwrap_or(u64::MAX);
        let s = hll::check(&sparse)
            .ok()
            .and_then(|enc| hll::count(&sparse, enc).ok());
        if s != Some(d) {
            return Err(err("TESTFAILED dense/sparse disagree"));
        }
        let abserr = (checkpoint as i64 - d as i64).unsigned_abs();
        let maxerr = if j == 10 {
            1
        } else {
            (relerr * 6.0 * checkpoint as f64).ceil() as u64
        };
        if abserr > maxerr {
            return Err(Reply::Error(format!(
                "TESTFAILED Too big error. card:{checkpoint} abserr:{abserr}"
            )));
        }
        checkpoint *= 10;
    }
    Ok(Reply::Ok)
}

#[cfg(test)]
mod tests {
    use super::super::execute;
    use super::super::harness::Harness;
    use bytes::Bytes;

    const NOW: u64 = 1_700_000_000_000;

    fn run(h: &mut Harness, cmd: &str) -> crate::resp::Reply {
        let args: Vec<Bytes> = cmd.split(' ').map(|w| Bytes::from(w.to_string())).collect();
        let mut ctx = h.state.ctx(&mut h.client, &h.shared, NOW);
        execute(&mut ctx, &args)
    }

    /// The propagated commands so far, one line each.
    fn stream(h: &mut Harness) -> Vec<String> {
        let raw = h.state.prop.take();
        let mut parser = crate::resp::RequestParser::new();
        let mut buf = bytes::BytesMut::from(&raw[..]);
        let mut out = Vec::new();
        while let Ok(Some(args)) = parser.parse(&mut buf, &crate::resp::Limits::default()) {
            let words: Vec<String> = args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            out.push(words.join(" "));
        }
        out
    }

    #[test]
    fn propagation_is_redis_s() {
        // The same sequence on redis-server 7.0.15 with appendonly yes
        // logs exactly these commands.
        let mut h = Harness::new();
        h.state.set_propagation(true);
        for cmd in [
            "pfadd k a",
            "pfadd k a",
            "pfcount k",
            "pfcount k",
            "pfdebug todense k",
            "pfdebug todense k",
            "pfdebug getreg k",
            "pfmerge m",
            "pfmerge m",
            "pfcount k m",
        ] {
            assert!(!run(&mut h, cmd).is_error(), "{cmd}");
        }
        assert_eq!(
            stream(&mut h),
            [
                "pfadd k a",
                "pfcount k",
                "pfdebug todense k",
                "pfmerge m",
                "pfmerge m"
            ]
        );
    }

    #[test]
    fn a_corrupt_value_answers_invalidobj_and_propagates_nothing() {
        let mut h = Harness::new();
        h.state.set_propagation(true);
        run(&mut h, "pfadd k a");
        // Cut the sparse body short: the registers no longer add up.
        run(&mut h, "setrange k 17 \u{1}");
        stream(&mut h);
        for cmd in [
            "pfadd k x y z",
            "pfcount k",
            "pfmerge d k",
            "pfdebug todense k",
        ] {
            let r = run(&mut h, cmd);
            assert_eq!(
                r,
                crate::resp::Reply::Error(super::CORRUPT.to_string()),
                "{cmd}"
            );
        }
        assert!(stream(&mut h).is_empty());
    }
}
