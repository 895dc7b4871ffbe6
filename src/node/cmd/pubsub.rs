//! Pub/Sub commands: (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PUBLISH, SPUBLISH,
//! PUBSUB introspection.

use super::flags::*;
use super::Argv;
use super::{is, CmdResult, CommandSpec, Ctx};
use crate::node::pubsub::{Kind, Subscriber};
use crate::resp::Reply;
use bytes::Bytes;
use std::sync::atomic::Ordering;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("subscribe", -2, PUBSUB | NOSCRIPT | LOADING | STALE, [0, 0, 0], subscribe),
    CommandSpec::new("psubscribe", -2, PUBSUB | NOSCRIPT | LOADING | STALE, [0, 0, 0], psubscribe),
    CommandSpec::new("ssubscribe", -2, PUBSUB | NOSCRIPT | LOADING | STALE, [1, -1, 1], ssubscribe),
    CommandSpec::new("unsubscribe", -1, PUBSUB | NOSCRIPT | LOADING | STALE, [0, 0, 0], unsubscribe),
    CommandSpec::new("punsubscribe", -1, PUBSUB | NOSCRIPT | LOADING | STALE, [0, 0, 0], punsubscribe),
    CommandSpec::new("sunsubscribe", -1, PUBSUB | NOSCRIPT | LOADING | STALE, [1, -1, 1], sunsubscribe),
    CommandSpec::new("publish", 3, PUBSUB | LOADING | STALE | FAST, [0, 0, 0], publish),
    CommandSpec::new("spublish", 3, PUBSUB | LOADING | STALE | FAST, [1, 1, 1], spublish),
    CommandSpec::new("pubsub", -2, PUBSUB | LOADING | STALE, [0, 0, 0], pubsub),
];

fn names(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Channel => ("subscribe", "unsubscribe"),
        Kind::Pattern => ("psubscribe", "punsubscribe"),
        Kind::Shard => ("ssubscribe", "sunsubscribe"),
    }
}

fn own<'c>(ctx: &'c mut Ctx<'_>, kind: Kind) -> &'c mut std::collections::HashSet<Bytes> {
    match kind {
        Kind::Channel => &mut ctx.client.channels,
        Kind::Pattern => &mut ctx.client.patterns,
        Kind::Shard => &mut ctx.client.shard_channels,
    }
}

/// The count Redis reports in confirmations: shard subscriptions count
/// apart from channels + patterns.
fn count(ctx: &Ctx, kind: Kind) -> i64 {
    match kind {
        Kind::Shard => ctx.client.shard_channels.len() as i64,
        _ => (ctx.client.channels.len() + ctx.client.patterns.len()) as i64,
    }
}

fn publish_counts(ctx: &Ctx) {
    let h = &ctx.client.handle;
    h.sub_count
        .store(ctx.client.channels.len() as u64, Ordering::Relaxed);
    h.psub_count
        .store(ctx.client.patterns.len() as u64, Ordering::Relaxed);
}

/// Emits one confirmation per name: the first as the command's reply, the
/// rest as extra top-level replies, in order.
fn emit(ctx: &mut Ctx, mut replies: Vec<Reply>) -> CmdResult {
    if replies.is_empty() {
        return Ok(Reply::Push(vec![]));
    }
    let first = replies.remove(0);
    ctx.extra.extend(replies);
    Ok(first)
}

fn do_subscribe(ctx: &mut Ctx, a: &[Bytes], kind: Kind) -> CmdResult {
    let sub = Subscriber {
        tx: ctx.client.push_tx.clone(),
        handle: ctx.client.handle.clone(),
    };
    let (word, _) = names(kind);
    let mut replies = Vec::with_capacity(a.len() - 1);
    for name in a.rest(1) {
        if own(ctx, kind).insert(name.clone()) {
            ctx.shared.pubsub.lock().subscribe(kind, name, sub.clone());
        }
        replies.push(Reply::Push(vec![
            Reply::bulk(word),
            Reply::Bulk(name.clone()),
            Reply::Int(count(ctx, kind)),
        ]));
    }
    publish_counts(ctx);
    emit(ctx, replies)
}

fn do_unsubscribe(ctx: &mut Ctx, a: &[Bytes], kind: Kind) -> CmdResult {
    let (_, word) = names(kind);
    let targets: Vec<Bytes> = if a.len() > 1 {
        a.rest(1).to_vec()
    } else {
        own(ctx, kind).iter().cloned().collect()
    };
    if targets.is_empty() {
        return Ok(Reply::Push(vec![
            Reply::bulk(word),
            Reply::Nil,
            Reply::Int(count(ctx, kind)),
        ]));
    }
    let id = ctx.client.id();
    let mut replies = Vec::with_capacity(targets.len());
    for name in targets {
        if own(ctx, kind).remove(&name) {
            ctx.shared.pubsub.lock().unsubscribe(kind, &name, id);
        }
        replies.push(Reply::Push(vec![
            Reply::bulk(word),
            Reply::Bulk(name),
            Reply::Int(count(ctx, kind)),
        ]));
    }
    publish_counts(ctx);
    emit(ctx, replies)
}

/// Leaves every subscription without replies (RESET).
pub fn unsubscribe_everything(ctx: &mut Ctx) {
    if ctx.client.subscription_count() == 0 {
        return;
    }
    ctx.shared.pubsub.lock().remove_client(ctx.client.id());
    ctx.client.channels.clear();
    ctx.client.patterns.clear();
    ctx.client.shard_channels.clear();
    publish_counts(ctx);
}

fn subscribe(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    do_subscribe(ctx, a, Kind::Channel)
}
fn psubscribe(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    do_subscribe(ctx, a, Kind::Pattern)
}
fn ssubscribe(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    do_subscribe(ctx, a, Kind::Shard)
}
fn unsubscribe(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    do_unsubscribe(ctx, a, Kind::Channel)
}
fn punsubscribe(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    do_unsubscribe(ctx, a, Kind::Pattern)
}
fn sunsubscribe(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    do_unsubscribe(ctx, a, Kind::Shard)
}

/// In cluster mode a message also goes over the bus to the other nodes'
/// subscribers; the reply counts only this node's receivers, as in Redis.
fn propagate(ctx: &Ctx, channel: &Bytes, message: &Bytes, shard: bool) {
    if let Some(cl) = &ctx.shared.cluster {
        cl.bus().publish(channel, message, shard);
        cl.pump();
    }
}

fn publish(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (channel, message) = (a.at(1)?, a.at(2)?);
    let limit = ctx.shared.config.load().output_limits.pubsub;
    let n = ctx.shared.pubsub.lock().publish(channel, message, &limit);
    propagate(ctx, channel, message, false);
    Ok(Reply::Int(n as i64))
}

fn spublish(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let (channel, message) = (a.at(1)?, a.at(2)?);
    let limit = ctx.shared.config.load().output_limits.pubsub;
    let n = ctx
        .shared
        .pubsub
        .lock()
        .publish_shard(channel, message, &limit);
    propagate(ctx, channel, message, true);
    Ok(Reply::Int(n as i64))
}

fn pubsub(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    let ps = ctx.shared.pubsub.lock();
    let bad = || {
        Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
            String::from_utf8_lossy(sub)
        ))
    };
    if is(sub, "channels") || is(sub, "shardchannels") {
        if a.len() > 3 {
            return Err(bad());
        }
        let kind = if is(sub, "channels") {
            Kind::Channel
        } else {
            Kind::Shard
        };
        return Ok(Reply::Array(
            ps.names(kind, a.get(2).map(|p| &p[..]))
                .into_iter()
                .map(Reply::Bulk)
                .collect(),
        ));
    }
    if is(sub, "numsub") || is(sub, "shardnumsub") {
        let kind = if is(sub, "numsub") {
            Kind::Channel
        } else {
            Kind::Shard
        };
        let mut out = Vec::new();
        for ch in a.rest(2) {
            out.push((
                Reply::Bulk(ch.clone()),
                Reply::Int(ps.count(kind, ch) as i64),
            ));
        }
        return Ok(Reply::Map(out));
    }
    if is(sub, "numpat") && a.len() == 2 {
        return Ok(Reply::Int(ps.numpat() as i64));
    }
    if is(sub, "help") {
        return Ok(Reply::array_of_bulks([
            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
            "HELP",
            "    Print this help.",
        ]));
    }
    Err(bad())
}
