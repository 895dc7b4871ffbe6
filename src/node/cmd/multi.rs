//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH, and RESET (which
//! also leaves a transaction).

use super::flags::*;
use super::Argv;
use super::{err, execute, CmdResult, CommandSpec, Ctx};
use crate::resp::{Proto, Reply};
use bytes::Bytes;
use std::sync::atomic::Ordering;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("multi", 1, FAST | LOADING | STALE | NOSCRIPT | ALLOW_BUSY, [0, 0, 0], multi),
    CommandSpec::new("exec", 1, NOSCRIPT | LOADING | STALE | NO_PROPAGATE, [0, 0, 0], exec),
    CommandSpec::new("discard", 1, FAST | NOSCRIPT | LOADING | STALE | ALLOW_BUSY, [0, 0, 0], discard),
    CommandSpec::new("watch", -2, FAST | NOSCRIPT | LOADING | STALE | ALLOW_BUSY, [1, -1, 1], watch),
    CommandSpec::new("unwatch", 1, FAST | NOSCRIPT | LOADING | STALE | ALLOW_BUSY, [0, 0, 0], unwatch),
    CommandSpec::new("reset", 1, FAST | NOSCRIPT | LOADING | STALE | NO_AUTH | ALLOW_BUSY, [0, 0, 0], reset),
];

/// Forgets every WATCHed key of the client.
pub fn unwatch_all(ctx: &mut Ctx) {
    for k in ctx.client.watched.drain(..) {
        ctx.db.unwatch(&k, &ctx.client.watch_dirty);
    }
    ctx.client.watch_dirty.store(false, Ordering::Release);
}

fn leave_multi(ctx: &mut Ctx) {
    ctx.client.multi = None;
    ctx.client.multi_error = false;
    ctx.client.handle.in_multi.store(false, Ordering::Relaxed);
}

fn multi(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    if ctx.client.in_multi() {
        return Err(err("ERR MULTI calls can not be nested"));
    }
    ctx.client.multi = Some(Vec::new());
    ctx.client.multi_error = false;
    ctx.client.handle.in_multi.store(true, Ordering::Relaxed);
    Ok(Reply::Ok)
}

fn exec(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    let Some(queued) = ctx.client.multi.take() else {
        return Err(err("ERR EXEC without MULTI"));
    };
    let aborted = ctx.client.multi_error;
    leave_multi(ctx);
    if aborted {
        unwatch_all(ctx);
        return Err(err(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    if ctx.client.watch_dirty.load(Ordering::Acquire) {
        unwatch_all(ctx);
        return Ok(Reply::NilArray);
    }
    unwatch_all(ctx);
    // The whole batch runs under the keyspace lock the caller holds, so no
    // other client sees a partial transaction.
    let was_nested = ctx.nested;
    ctx.nested = true;
    let mut replies = Vec::with_capacity(queued.len());
    for args in &queued {
        replies.push(execute(ctx, args));
        // A transaction cannot block or close midway; those actions are
        // dropped, as in Redis.
        ctx.action = None;
    }
    ctx.nested = was_nested;
    Ok(Reply::Array(replies))
}

fn discard(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    if !ctx.client.in_multi() {
        return Err(err("ERR DISCARD without MULTI"));
    }
    leave_multi(ctx);
    unwatch_all(ctx);
    Ok(Reply::Ok)
}

fn watch(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if ctx.client.in_multi() {
        return Err(err("ERR WATCH inside MULTI is not allowed"));
    }
    for k in a.rest(1) {
        if !ctx.client.watched.contains(k) {
            ctx.db.watch(k, &ctx.client.watch_dirty);
            ctx.client.watched.push(k.clone());
        }
    }
    Ok(Reply::Ok)
}

fn unwatch(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    unwatch_all(ctx);
    Ok(Reply::Ok)
}

fn reset(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    leave_multi(ctx);
    unwatch_all(ctx);
    super::pubsub::unsubscribe_everything(ctx);
    ctx.client.proto = Proto::Resp2;
    ctx.client.handle.resp.store(2, Ordering::Relaxed);
    ctx.client.readonly = false;
    ctx.client.asking = false;
    ctx.client.reply_off = false;
    ctx.client.skip_replies = 0;
    *ctx.client.handle.name.lock() = None;
    if ctx.shared.config.load().requirepass.is_some() {
        ctx.client.authenticated = false;
    }
    Ok(Reply::simple("RESET"))
}
