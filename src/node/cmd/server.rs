//! Connection and server commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT,
//! RESET, DBSIZE, FLUSHALL, INFO, CONFIG, CLIENT, COMMAND, TIME, SHUTDOWN.

use super::flags::*;
use super::{err, int_arg, is, syntax_error, Action, CmdResult, CommandSpec, Ctx};
use crate::resp::{Proto, Reply};
use bytes::Bytes;
use std::sync::atomic::Ordering;

pub const VERSION: &str = "7.0.15";

pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: FAST | STALE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: ping,
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: FAST,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: echo,
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: FAST | NO_AUTH | STALE | ALLOW_BUSY,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: quit,
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: FAST | NO_AUTH | STALE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: hello,
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: FAST | NO_AUTH | STALE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: auth,
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: FAST | LOADING | STALE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: select,
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: READONLY | FAST,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: dbsize,
    },
    CommandSpec {
        name: "flushall",
        arity: -1,
        flags: WRITE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: flushall,
    },
    CommandSpec {
        name: "flushdb",
        arity: -1,
        flags: WRITE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: flushall,
    },
    CommandSpec {
        name: "time",
        arity: 1,
        flags: FAST | LOADING | STALE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: time,
    },
    CommandSpec {
        name: "shutdown",
        arity: -1,
        flags: ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI | ALLOW_BUSY,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: shutdown,
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: config,
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: LOADING | STALE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: command,
    },
];

fn ping(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() > 2 {
        return Err(super::wrong_arity("ping"));
    }
    if ctx.client.in_pubsub_context() {
        return Ok(Reply::Array(vec![
            Reply::bulk("pong"),
            Reply::bulk(a.get(1).map_or(&b""[..], |b| &b[..])),
        ]));
    }
    Ok(match a.get(1) {
        Some(m) => Reply::Bulk(m.clone()),
        None => Reply::simple("PONG"),
    })
}

fn echo(_ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Bulk(a[1].clone()))
}

fn quit(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    ctx.action = Some(Action::Close);
    Ok(Reply::Ok)
}

/// Checks a password against `requirepass`; marks the client authenticated.
fn check_password(ctx: &mut Ctx, user: Option<&[u8]>, pass: &[u8]) -> Result<(), Reply> {
    let cfg = ctx.shared.config.load();
    let Some(required) = cfg.requirepass.as_deref() else {
        if user.is_none() {
            return Err(err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"));
        }
        // `AUTH default anything` succeeds when the default user has no password.
        if user == Some(b"default") {
            ctx.client.authenticated = true;
            return Ok(());
        }
        return Err(err(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ));
    };
    if user.is_some_and(|u| u != b"default") || pass != required.as_bytes() {
        return Err(err(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ));
    }
    ctx.client.authenticated = true;
    Ok(())
}

fn auth(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    match a.len() {
        2 => check_password(ctx, None, &a[1])?,
        3 => check_password(ctx, Some(&a[1]), &a[2])?,
        _ => return Err(syntax_error()),
    }
    Ok(Reply::Ok)
}

fn hello(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let mut proto = ctx.client.proto;
    let mut i = 1;
    if let Some(v) = a.get(1) {
        let ver = int_arg(v)
            .map_err(|_| err("ERR Protocol version is not an integer or out of range"))?;
        proto = match ver {
            2 => Proto::Resp2,
            3 => Proto::Resp3,
            _ => return Err(err("NOPROTO unsupported protocol version")),
        };
        i = 2;
    }
    let mut setname: Option<Bytes> = None;
    while i < a.len() {
        if is(&a[i], "auth") && i + 2 < a.len() {
            check_password(ctx, Some(&a[i + 1]), &a[i + 2])?;
            i += 3;
        } else if is(&a[i], "setname") && i + 1 < a.len() {
            setname = Some(a[i + 1].clone());
            i += 2;
        } else {
            return Err(Reply::Error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&a[i])
            )));
        }
    }
    if !ctx.client.authenticated {
        return Err(err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    if let Some(n) = setname {
        if let Ok(mut name) = ctx.client.handle.name.lock() {
            *name = Some(String::from_utf8_lossy(&n).into_owned());
        }
    }
    ctx.client.proto = proto;
    ctx.client
        .handle
        .resp
        .store(if proto == Proto::Resp3 { 3 } else { 2 }, Ordering::Relaxed);
    let cluster = ctx.shared.config.load().cluster_enabled;
    Ok(Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(VERSION)),
        (
            Reply::bulk("proto"),
            Reply::Int(if proto == Proto::Resp3 { 3 } else { 2 }),
        ),
        (Reply::bulk("id"), Reply::Int(ctx.client.id() as i64)),
        (
            Reply::bulk("mode"),
            Reply::bulk(if cluster { "cluster" } else { "standalone" }),
        ),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(vec![])),
    ]))
}

fn select(_ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let db = int_arg(&a[1])?;
    // Cluster mode has one database; slotway always does.
    if db != 0 {
        return Err(err("ERR DB index is out of range"));
    }
    Ok(Reply::Ok)
}

fn dbsize(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(ctx.db.len() as i64))
}

fn flushall(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() > 2 || a.get(1).is_some_and(|o| !is(o, "sync") && !is(o, "async")) {
        return Err(syntax_error());
    }
    ctx.db.clear();
    Ok(Reply::Ok)
}

fn time(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(ctx.now * 1000, |d| d.as_micros() as u64);
    Ok(Reply::Array(vec![
        Reply::bulk((us / 1_000_000).to_string()),
        Reply::bulk((us % 1_000_000).to_string()),
    ]))
}

fn shutdown(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    for opt in &a[1..] {
        if !(is(opt, "nosave")
            || is(opt, "save")
            || is(opt, "now")
            || is(opt, "force")
            || is(opt, "abort"))
        {
            return Err(syntax_error());
        }
    }
    tracing::info!(client = ctx.client.id(), "User requested shutdown...");
    ctx.action = Some(Action::Shutdown);
    // Redis closes the connection without a reply on success.
    ctx.client.skip_next_reply = true;
    Ok(Reply::Ok)
}

fn config(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "get") {
        if a.len() < 3 {
            return Err(super::wrong_arity("config|get"));
        }
        let table = ctx
            .shared
            .table
            .lock()
            .map_err(|_| err("ERR config unavailable"))?;
        let mut out = Vec::new();
        for (k, v) in table.entries() {
            if a[2..]
                .iter()
                .any(|p| crate::glob::glob_match(p, k.as_bytes(), true))
            {
                let v = if k == "dir" && v.is_empty() {
                    std::env::current_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                } else {
                    v
                };
                out.push((Reply::bulk(k), Reply::bulk(v)));
            }
        }
        return Ok(Reply::Map(out));
    }
    Err(Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try CONFIG HELP.",
        String::from_utf8_lossy(sub)
    )))
}

fn command(_ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() == 1 || is(&a[1], "docs") {
        return Ok(Reply::Array(vec![]));
    }
    if is(&a[1], "count") {
        return Ok(Reply::Int(super::table().len() as i64));
    }
    Err(Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try COMMAND HELP.",
        String::from_utf8_lossy(&a[1])
    )))
}
