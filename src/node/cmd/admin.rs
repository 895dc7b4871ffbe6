//! MOVE, SWAPDB, FAILOVER and LOLWUT: commands a one-database node answers
//! the way Redis 7.0 does (cluster mode refuses the first three outright;
//! a standalone node has only database 0).

use super::flags::*;
use super::Argv;
use super::{err, int_arg, is, syntax_error, CmdResult, CommandSpec, Ctx};
use crate::resp::Reply;
use bytes::Bytes;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("move", 3, WRITE | FAST, [1, 1, 1], move_cmd),
    CommandSpec::new("swapdb", 3, WRITE | FAST, [0, 0, 0], swapdb),
    CommandSpec::new("failover", -1, ADMIN | NOSCRIPT | STALE, [0, 0, 0], failover),
    CommandSpec::new("lolwut", -1, READONLY | FAST, [0, 0, 0], lolwut),
];

fn cluster(ctx: &Ctx) -> bool {
    ctx.shared.config.load().cluster_enabled
}

/// A C `int` argument (getIntFromObjectOrReply) with the given error text.
fn int32(b: &[u8], msg: &str) -> Result<i32, Reply> {
    crate::resp::parse_i64(b)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| err(msg))
}

fn move_cmd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if cluster(ctx) {
        return Err(err("ERR MOVE is not allowed in cluster mode"));
    }
    let db = int32(a.at(2)?, "ERR value is not an integer or out of range")?;
    if db != 0 {
        return Err(err("ERR DB index is out of range"));
    }
    Err(err("ERR source and destination objects are the same"))
}

fn swapdb(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if cluster(ctx) {
        return Err(err("ERR SWAPDB is not allowed in cluster mode"));
    }
    let x = int32(a.at(1)?, "ERR invalid first DB index")?;
    let y = int32(a.at(2)?, "ERR invalid second DB index")?;
    if x != 0 || y != 0 {
        return Err(err("ERR DB index is out of range"));
    }
    // Swapping database 0 with itself changes nothing, but Redis counts it
    // as a write and propagates it.
    ctx.force_propagation();
    Ok(Reply::Ok)
}

/// FAILOVER [TO host port [FORCE]] [ABORT] [TIMEOUT ms]: Redis's checks in
/// its order. The coordinated standalone failover itself is not built:
/// slotway nodes fail over with CLUSTER FAILOVER.
fn failover(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if cluster(ctx) {
        return Err(err(
            "ERR FAILOVER not allowed in cluster mode. Use CLUSTER FAILOVER command instead.",
        ));
    }
    if a.len() == 2 && is(a.at(1)?, "abort") {
        return Err(err("ERR No failover in progress."));
    }
    let (mut timeout, mut to, mut force) = (None, false, false);
    let mut j = 1;
    while let Some(opt) = a.get(j) {
        if is(opt, "timeout") && j + 1 < a.len() && timeout.is_none() {
            let t = int_arg(a.at(j + 1)?)?;
            if t <= 0 {
                return Err(err("ERR FAILOVER timeout must be greater than 0"));
            }
            timeout = Some(t);
            j += 2;
        } else if is(opt, "to") && j + 2 < a.len() && !to {
            int_arg(a.at(j + 2)?)?;
            to = true;
            j += 3;
        } else if is(opt, "force") && !force {
            force = true;
            j += 1;
        } else {
            return Err(syntax_error());
        }
    }
    if ctx.shared.repl.is_replica() {
        return Err(err("ERR FAILOVER is not valid when server is a replica."));
    }
    if ctx.shared.repl.replicas().is_empty() {
        return Err(err("ERR FAILOVER requires connected replicas."));
    }
    if force && (timeout.is_none() || !to) {
        return Err(err(
            "ERR FAILOVER with force option requires both a timeout and target HOST and PORT.",
        ));
    }
    Err(err(
        "ERR FAILOVER of a standalone node is not supported by slotway; run it in cluster mode and use CLUSTER FAILOVER",
    ))
}

/// LOLWUT [VERSION v] [args]: Redis picks the art by version (5: squares,
/// 6: a skyline, anything else: just the version line). Ours draws simpler,
/// deterministic pictures with the same arguments, limits and captions.
fn lolwut(_ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let mut version = 7i64;
    let mut args = a.rest(1);
    if a.len() >= 3 && is(a.at(1)?, "version") {
        version = int_arg(a.at(2)?)?;
        args = a.rest(3);
    }
    // Redis formats the version as an unsigned int, then looks at "N.".
    let major = (version as u32) % 1_000_000_000;
    let num = |i: usize, default: i64| -> Result<i64, Reply> {
        args.get(i).map_or(Ok(default), |v| int_arg(v))
    };
    let tail = format!("Redis ver. {}\n", super::server::VERSION);
    let text = match major {
        5 => {
            let cols = num(0, 66)?.clamp(1, 1000) as usize;
            let per_row = num(1, 8)?.clamp(1, 200) as usize;
            let per_col = num(2, 12)?.clamp(1, 200) as usize;
            let mut s = squares(cols, per_row, per_col);
            s.push_str("\nGeorg Nees - schotter, plotter on paper, 1968. ");
            s.push_str(&tail);
            s
        }
        6 => {
            let cols = num(0, 80)?.clamp(1, 1000) as usize;
            let rows = num(1, 20)?.clamp(1, 1000) as usize;
            let mut s = skyline(cols, rows);
            s.push_str("\nDedicated to the 8 bit game developers of past and present.\nOriginal 8 bit image from Plaguemon by hikikomori. ");
            s.push_str(&tail);
            s
        }
        _ => tail,
    };
    Ok(Reply::Verbatim(Bytes::from(text)))
}

/// A grid of square outlines, `per_row` across, `per_col` down, `cols`
/// characters wide.
fn squares(cols: usize, per_row: usize, per_col: usize) -> String {
    let side = (cols / per_row).max(1);
    let mut s = String::new();
    for row in 0..per_col * side / 2 {
        let edge_row = row % (side / 2).max(1) == 0;
        for c in 0..(side * per_row).min(cols) {
            s.push(if edge_row || c % side == 0 { '#' } else { ' ' });
        }
        s.push('\n');
    }
    s
}

/// Buildings of varying height, one ANSI-coloured cell per character.
fn skyline(cols: usize, rows: usize) -> String {
    let mut s = String::new();
    for r in 0..rows {
        for c in 0..cols {
            // A fixed pseudo-random height per 6-column building.
            let b = (c / 6) as u64;
            let h = (b.wrapping_mul(2_654_435_761) >> 7) as usize % rows.max(1);
            let lit = rows - r <= h;
            s.push_str(if lit {
                "\x1b[0;90;100m \x1b[0m"
            } else {
                "\x1b[0;30;40m \x1b[0m"
            });
        }
        s.push('\n');
    }
    s
}
