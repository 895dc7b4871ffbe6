//! Replication commands: REPLICAOF/SLAVEOF, ROLE, WAIT, and what a replica
//! sends its master (REPLCONF, PSYNC, SYNC).

use super::flags::*;
use super::Argv;
use super::{err, int_arg, is, Action, CmdResult, CommandSpec, Ctx};
use crate::resp::Reply;
use bytes::Bytes;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("replicaof", 3, ADMIN | NOSCRIPT | STALE, [0, 0, 0], replicaof),
    CommandSpec::new("slaveof", 3, ADMIN | NOSCRIPT | STALE, [0, 0, 0], replicaof),
    CommandSpec::new("role", 1, NOSCRIPT | LOADING | STALE | FAST, [0, 0, 0], role),
    CommandSpec::new("wait", 3, NOSCRIPT, [0, 0, 0], wait),
    CommandSpec::new("replconf", -1, ADMIN | NOSCRIPT | LOADING | STALE, [0, 0, 0], replconf),
    CommandSpec::new("psync", -3, ADMIN | NOSCRIPT | NO_MULTI, [0, 0, 0], psync),
    CommandSpec::new("sync", 1, ADMIN | NOSCRIPT | NO_MULTI, [0, 0, 0], sync),
];

fn replicaof(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if ctx.shared.cluster.is_some() {
        return Err(err("ERR REPLICAOF not allowed in cluster mode."));
    }
    let repl = &ctx.shared.repl;
    if is(a.at(1)?, "no") && is(a.at(2)?, "one") {
        if repl.is_replica() {
            // Earlier writes of this batch (none can exist on a replica,
            // but the stream must not mix roles).
            ctx.shared.propagated(ctx.prop);
            repl.set_master(None);
            tracing::info!("MASTER MODE enabled (user request)");
        }
        return Ok(Reply::Ok);
    }
    let port = int_arg(a.at(2)?)
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| err("ERR Invalid master port"))?;
    let host = String::from_utf8_lossy(a.at(1)?).into_owned();
    if repl.master().as_ref() == Some(&(host.clone(), port)) {
        return Ok(Reply::simple("OK Already connected to specified master"));
    }
    ctx.shared.propagated(ctx.prop);
    tracing::info!(master = %host, port, "REPLICAOF enabled (user request)");
    repl.set_master(Some((host, port)));
    Ok(Reply::Ok)
}

fn role(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    let repl = &ctx.shared.repl;
    if let Some((host, port)) = repl.master() {
        let link = repl.link().clone();
        let offset = if link.up { repl.offset() as i64 } else { -1 };
        return Ok(Reply::Array(vec![
            Reply::bulk("slave"),
            Reply::bulk(host),
            Reply::Int(i64::from(port)),
            Reply::bulk(if link.state.is_empty() {
                "connect"
            } else {
                link.state
            }),
            Reply::Int(offset),
        ]));
    }
    let replicas = repl
        .replicas()
        .into_iter()
        .map(|r| {
            Reply::Array(vec![
                Reply::bulk(r.ip),
                Reply::bulk(r.port.to_string()),
                Reply::bulk(r.ack.to_string()),
            ])
        })
        .collect();
    Ok(Reply::Array(vec![
        Reply::bulk("master"),
        Reply::Int(repl.offset() as i64),
        Reply::Array(replicas),
    ]))
}

fn wait(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let n = int_arg(a.at(1)?)?;
    let t = int_arg(a.at(2)?)?;
    if t < 0 {
        return Err(err("ERR timeout is negative"));
    }
    if ctx.shared.repl.is_replica() {
        return Err(err("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated."));
    }
    // The writes of this batch count: hand them to the stream first.
    ctx.shared.propagated(ctx.prop);
    let offset = ctx.shared.repl.offset();
    let acked = ctx.shared.repl.count_acked(offset);
    let n = usize::try_from(n).unwrap_or(0);
    if acked >= n || ctx.nested || ctx.client.in_multi() {
        return Ok(Reply::Int(acked as i64));
    }
    ctx.action = Some(Action::Wait {
        numreplicas: n,
        offset,
        deadline: (t > 0).then(|| ctx.now.saturating_add(t as u64)),
    });
    Ok(Reply::Int(acked as i64))
}

fn replconf(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() % 2 == 0 {
        return Err(super::syntax_error());
    }
    for (k, v) in a.pairs_from(1) {
        if is(k, "listening-port") {
            ctx.client.repl_listening_port = int_arg(v)
                .ok()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(super::not_integer)?;
        } else if is(k, "ip-address") {
            ctx.client.repl_ip = Some(String::from_utf8_lossy(v).into_owned());
        } else if is(k, "ack") || is(k, "getack") {
            // Only meaningful on a replication link, which is not served
            // here; Redis answers nothing.
            ctx.client.skip_replies = 1;
            return Ok(Reply::Ok);
        } else if is(k, "capa") || is(k, "rdb-only") || is(k, "rdb-filter-only") {
            // We always send an RDB with a length; every replica reads that.
        } else {
            return Err(Reply::Error(format!(
                "ERR Unrecognized REPLCONF option: {}",
                String::from_utf8_lossy(k)
            )));
        }
    }
    Ok(Reply::Ok)
}

fn start_sync(ctx: &mut Ctx, psync: Option<(String, String)>) -> CmdResult {
    if ctx.shared.repl.is_replica() && !ctx.shared.repl.link().up {
        return Err(err(
            "NOMASTERLINK Can't SYNC while not connected with my master",
        ));
    }
    ctx.action = Some(Action::Sync { psync });
    Ok(Reply::Ok)
}

fn psync(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let replid = String::from_utf8_lossy(a.at(1)?).into_owned();
    let offset = String::from_utf8_lossy(a.at(2)?).into_owned();
    start_sync(ctx, Some((replid, offset)))
}

fn sync(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    start_sync(ctx, None)
}
