//! Connection and server commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT,
//! RESET, DBSIZE, FLUSHALL, INFO, CONFIG, CLIENT, COMMAND, TIME, SHUTDOWN.

use super::flags::*;
use super::Argv;
use super::{err, int_arg, is, syntax_error, Action, CmdResult, CommandSpec, Ctx};
use crate::resp::{Proto, Reply};
use bytes::Bytes;
use std::sync::atomic::Ordering;

pub use crate::util::VERSION;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("ping", -1, FAST | STALE, [0, 0, 0], ping),
    CommandSpec::new("echo", 2, FAST, [0, 0, 0], echo),
    CommandSpec::new("quit", -1, FAST | NO_AUTH | STALE | ALLOW_BUSY, [0, 0, 0], quit),
    CommandSpec::new("hello", -1, FAST | NO_AUTH | STALE, [0, 0, 0], hello),
    CommandSpec::new("auth", -2, FAST | NO_AUTH | STALE, [0, 0, 0], auth),
    CommandSpec::new("select", 2, FAST | LOADING | STALE, [0, 0, 0], select),
    CommandSpec::new("dbsize", 1, READONLY | FAST, [0, 0, 0], dbsize),
    CommandSpec::new("flushall", -1, WRITE, [0, 0, 0], flushall),
    CommandSpec::new("flushdb", -1, WRITE, [0, 0, 0], flushall),
    CommandSpec::new("time", 1, FAST | LOADING | STALE, [0, 0, 0], time),
    CommandSpec::new("shutdown", -1, ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI | ALLOW_BUSY, [0, 0, 0], shutdown),
    CommandSpec::new("config", -2, ADMIN | NOSCRIPT | LOADING | STALE, [0, 0, 0], config),
    CommandSpec::new("command", -1, LOADING | STALE, [0, 0, 0], command),
    CommandSpec::new("info", -1, LOADING | STALE, [0, 0, 0], super::info::info),
    CommandSpec::new("client", -2, NOSCRIPT | LOADING | STALE, [0, 0, 0], super::client_cmd::client),
    CommandSpec::new("save", 1, ADMIN | NOSCRIPT | NO_MULTI, [0, 0, 0], save),
    CommandSpec::new("bgsave", -1, ADMIN | NOSCRIPT, [0, 0, 0], bgsave),
    CommandSpec::new("bgrewriteaof", 1, ADMIN | NOSCRIPT, [0, 0, 0], bgrewriteaof),
    CommandSpec::new("lastsave", 1, FAST | LOADING | STALE, [0, 0, 0], lastsave),
    CommandSpec::new("readonly", 1, FAST | LOADING | STALE, [0, 0, 0], readonly),
    CommandSpec::new("readwrite", 1, FAST | LOADING | STALE, [0, 0, 0], readwrite),
    CommandSpec::new("asking", 1, FAST, [0, 0, 0], asking),
    CommandSpec::new("memory", -2, READONLY, [0, 0, 0], memory),
    CommandSpec::new("debug", -2, ADMIN | NOSCRIPT | LOADING | STALE, [0, 0, 0], debug),
    CommandSpec::new("cluster", -2, STALE, [0, 0, 0], super::cluster_cmd::cluster),
    CommandSpec::new("slowlog", -2, ADMIN | LOADING | STALE, [0, 0, 0], slowlog),
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
    Ok(Reply::Bulk(a.at(1)?.clone()))
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
        2 => check_password(ctx, None, a.at(1)?)?,
        3 => check_password(ctx, Some(a.at(1)?), a.at(2)?)?,
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
        if is(a.at(i)?, "auth") && i + 2 < a.len() {
            check_password(ctx, Some(a.at(i + 1)?), a.at(i + 2)?)?;
            i += 3;
        } else if is(a.at(i)?, "setname") && i + 1 < a.len() {
            setname = Some(a.at(i + 1)?.clone());
            i += 2;
        } else {
            return Err(Reply::Error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(a.at(i)?)
            )));
        }
    }
    if !ctx.client.authenticated {
        return Err(err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    if let Some(n) = setname {
        *ctx.client.handle.name.lock() = Some(String::from_utf8_lossy(&n).into_owned());
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
        (
            Reply::bulk("role"),
            Reply::bulk(if ctx.shared.repl.is_replica() {
                "replica"
            } else {
                "master"
            }),
        ),
        (Reply::bulk("modules"), Reply::Array(vec![])),
    ]))
}

fn select(_ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let db = int_arg(a.at(1)?)?;
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
    // Even an empty keyspace's flush is propagated (Redis 7).
    ctx.force_propagation();
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
    let mut opts = super::ShutdownOpts::default();
    let mut abort = false;
    for opt in a.rest(1) {
        if is(opt, "nosave") && opts.save.is_none() {
            opts.save = Some(false);
        } else if is(opt, "save") && opts.save.is_none() {
            opts.save = Some(true);
        } else if is(opt, "now") {
            opts.now = true;
        } else if is(opt, "force") {
            opts.force = true;
        } else if is(opt, "abort") {
            abort = true;
        } else {
            return Err(syntax_error());
        }
    }
    if abort {
        if a.len() > 2 {
            return Err(syntax_error());
        }
        // The wait for replicas is not interruptible here.
        return Err(err("ERR No shutdown in progress."));
    }
    tracing::info!(client = ctx.client.id(), "User requested shutdown...");
    ctx.action = Some(Action::Shutdown(opts));
    // Redis closes the connection without a reply on success.
    ctx.client.skip_replies = 1;
    Ok(Reply::Ok)
}

fn config(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    if is(sub, "get") {
        if a.len() < 3 {
            return Err(super::wrong_arity("config|get"));
        }
        let table = ctx.shared.table.lock();
        let mut out = Vec::new();
        for (k, v) in table.entries() {
            if a.rest(2)
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
    if is(sub, "set") {
        if a.len() < 4 || a.len() % 2 != 0 {
            return Err(super::wrong_arity("config|set"));
        }
        let mut table = ctx.shared.table.lock();
        // All or nothing: apply to a copy, swap in only if every pair is valid.
        let mut next = table.clone();
        for (name, value) in a.pairs_from(2) {
            let name = String::from_utf8_lossy(name);
            let value = String::from_utf8_lossy(value);
            next.set(&name, &value)
                .map_err(|e| Reply::Error(format!("ERR {e}")))?;
        }
        let cfg = crate::runtime::config::NodeConfig::from_table(&next)
            .map_err(|e| Reply::Error(format!("ERR {e}")))?;
        ctx.db.set_policy(cfg.maxmemory_policy);
        // As in Redis, a new backlog size applies at once (not at the next
        // replication cron), so INFO shows what is in force.
        ctx.shared.repl.set_backlog_limit(cfg.repl_backlog_size);
        let (aof_on, fsync) = (cfg.appendonly, cfg.appendfsync.clone());
        ctx.shared.config.store(std::sync::Arc::new(cfg));
        *table = next;
        drop(table);
        apply_aof_config(ctx, aof_on, &fsync)?;
        return Ok(Reply::Ok);
    }
    if is(sub, "resetstat") && a.len() == 2 {
        let st = &ctx.shared.stats;
        for c in [
            &st.total_connections_received,
            &st.total_commands_processed,
            &st.rejected_connections,
            &st.net_input_bytes,
            &st.net_output_bytes,
            &st.error_replies,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        ctx.db.stats = crate::store::DbStats::default();
        return Ok(Reply::Ok);
    }
    if is(sub, "rewrite") && a.len() == 2 {
        let table = ctx.shared.table.lock();
        let Some(path) = table.file.clone() else {
            return Err(err("ERR The server is running without a config file"));
        };
        table
            .rewrite_file(&path)
            .map_err(|e| Reply::Error(format!("ERR Rewriting config file: {e}")))?;
        return Ok(Reply::Ok);
    }
    if is(sub, "help") {
        return Ok(Reply::array_of_bulks([
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
            "HELP",
            "    Print this help.",
        ]));
    }
    Err(Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try CONFIG HELP.",
        String::from_utf8_lossy(sub)
    )))
}

/// One COMMAND INFO entry in Redis 7's shape.
fn command_entry(spec: &super::CommandSpec) -> Reply {
    let flags = super::flags::NAMES
        .iter()
        .filter(|(f, _)| spec.has(*f))
        .map(|(_, n)| Reply::simple(n))
        .collect();
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Int(i64::from(spec.arity)),
        Reply::Set(flags),
        Reply::Int(i64::from(spec.first_key)),
        Reply::Int(i64::from(spec.last_key)),
        Reply::Int(i64::from(spec.step)),
        Reply::Set(vec![]),
        Reply::Set(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

fn sorted_specs() -> Vec<&'static super::CommandSpec> {
    let mut v: Vec<&'static super::CommandSpec> = super::table().values().copied().collect();
    v.sort_by_key(|s| s.name);
    v
}

fn command(_ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() == 1 {
        return Ok(Reply::Array(
            sorted_specs().into_iter().map(command_entry).collect(),
        ));
    }
    let sub = a.at(1)?;
    if is(sub, "count") && a.len() == 2 {
        return Ok(Reply::Int(super::table().len() as i64));
    }
    if is(sub, "info") {
        if a.len() == 2 {
            return Ok(Reply::Array(
                sorted_specs().into_iter().map(command_entry).collect(),
            ));
        }
        return Ok(Reply::Array(
            a.rest(2)
                .iter()
                .map(|n| super::lookup(n).map_or(Reply::NilArray, command_entry))
                .collect(),
        ));
    }
    if is(sub, "docs") {
        let names: Vec<&'static super::CommandSpec> = if a.len() == 2 {
            sorted_specs()
        } else {
            a.rest(2).iter().filter_map(|n| super::lookup(n)).collect()
        };
        return Ok(Reply::Map(
            names
                .into_iter()
                .map(|s| {
                    (
                        Reply::bulk(s.name),
                        Reply::Map(vec![
                            (Reply::bulk("summary"), Reply::bulk("")),
                            (Reply::bulk("since"), Reply::bulk("1.0.0")),
                            (Reply::bulk("group"), Reply::bulk("generic")),
                        ]),
                    )
                })
                .collect(),
        ));
    }
    if is(sub, "list") {
        let pattern = match a.get(2..) {
            Some([f, p, v]) if is(f, "filterby") && is(p, "pattern") => Some(v.clone()),
            Some([]) | None => None,
            _ => return Err(syntax_error()),
        };
        return Ok(Reply::Array(
            sorted_specs()
                .into_iter()
                .filter(|s| {
                    pattern
                        .as_ref()
                        .is_none_or(|p| crate::glob::glob_match(p, s.name.as_bytes(), true))
                })
                .map(|s| Reply::bulk(s.name))
                .collect(),
        ));
    }
    if is(sub, "getkeys") {
        if a.len() < 4 {
            return Err(err(
                "ERR wrong number of arguments for 'command|getkeys' command",
            ));
        }
        return getkeys(a.rest(2));
    }
    Err(Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try COMMAND HELP.",
        String::from_utf8_lossy(sub)
    )))
}

/// COMMAND GETKEYS, by the key specs the slot checks use, with Redis's
/// errors for each way a call can fail to name keys.
fn getkeys(argv: &[Bytes]) -> CmdResult {
    use crate::cluster::keyspec::{self, flag, Named};
    let catalog = keyspec::catalog().map_err(|e| Reply::Error(format!("ERR {e}")))?;
    let Named::Found(i) = catalog.lookup(argv) else {
        return Err(err("ERR Invalid command specified"));
    };
    let Some(info) = catalog.at(i) else {
        return Err(err("ERR Invalid command specified"));
    };
    if !info.keys.takes_keys() {
        return Err(err("ERR The command has no key arguments"));
    }
    let argc = argv.len() as i64;
    let arity = i64::from(info.arity);
    if (arity > 0 && argc != arity) || argc < -arity {
        return Err(err("ERR Invalid number of arguments specified for command"));
    }
    let mut keys = Vec::new();
    info.keys.for_each_key(argv, |i| {
        keys.extend(argv.get(i).cloned().map(Reply::Bulk));
    });
    if keys.is_empty() && !info.has(flag::NO_MANDATORY_KEYS) {
        return Err(err("ERR Invalid arguments specified for command"));
    }
    Ok(Reply::Array(keys))
}

/// SAVE: a blocking save under the keyspace lock, as Redis's SAVE blocks
/// its event loop.
fn save(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    use crate::persist::snapshot::{self, SnapshotKind};
    match ctx.shared.persist.current() {
        Some(SnapshotKind::Rdb | SnapshotKind::Replication) => {
            return Err(err("ERR Background save already in progress"))
        }
        Some(SnapshotKind::AofRewrite) => {
            return Err(err("ERR Background rewrite already in progress"))
        }
        None => {}
    }
    // Earlier writes of this batch first, so the offset matches the data.
    ctx.shared.propagated(ctx.prop);
    let (replid, offset) = ctx.shared.repl.position();
    let path = crate::node::snapshot::rdb_path(ctx.shared);
    match snapshot::save_locked(ctx.db, &path, &replid, offset) {
        Ok(()) => {
            crate::node::snapshot::saved(ctx.shared, snapshot::total_changes(ctx.db));
            Ok(Reply::Ok)
        }
        Err(e) => {
            tracing::warn!(error = %e, "SAVE failed");
            ctx.shared
                .persist
                .last_bgsave_ok
                .store(false, Ordering::Relaxed);
            Err(err("ERR"))
        }
    }
}

fn bgsave(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    use crate::persist::snapshot::SnapshotKind;
    let schedule = match a.get(1) {
        None => false,
        Some(o) if is(o, "schedule") && a.len() == 2 => true,
        Some(_) => return Err(syntax_error()),
    };
    match ctx.shared.persist.current() {
        Some(SnapshotKind::Rdb | SnapshotKind::Replication) => {
            return Err(err("ERR Background save already in progress"))
        }
        Some(SnapshotKind::AofRewrite) if schedule => {
            ctx.shared
                .persist
                .bgsave_scheduled
                .store(true, Ordering::Relaxed);
            return Ok(Reply::simple("Background saving scheduled"));
        }
        Some(SnapshotKind::AofRewrite) => return Err(err("ERR Another child process is active (AOF?): can't BGSAVE right now. Use BGSAVE SCHEDULE in order to schedule a BGSAVE whenever possible.")),
        None => {}
    }
    let shared = ctx
        .shared
        .self_arc()
        .ok_or_else(|| err("ERR server is stopping"))?;
    // The image is taken now, under the lock, as Redis forks inside BGSAVE:
    // writes after the reply are not in it.
    ctx.shared.propagated(ctx.prop);
    let begun = crate::node::snapshot::begin_locked(ctx.shared, ctx.db)
        .ok_or_else(|| err("ERR Background save already in progress"))?;
    match crate::node::snapshot::spawn_bgsave(&shared, begun) {
        Ok(()) => Ok(Reply::simple("Background saving started")),
        Err(_) => {
            ctx.db.end_snapshot();
            Err(err("ERR Background save already in progress"))
        }
    }
}

/// CONFIG SET appendonly / appendfsync take effect at once, as in Redis:
/// turning the log on writes a base from the current data first.
fn apply_aof_config(ctx: &mut Ctx, on: bool, fsync: &str) -> Result<(), Reply> {
    use crate::persist::aof;
    ctx.shared.aof.set_fsync(aof::Fsync::parse(fsync));
    if on == ctx.shared.aof.is_on() {
        return Ok(());
    }
    if !on {
        ctx.shared.propagated(ctx.prop);
        crate::node::aof::disable(ctx.shared);
        return Ok(());
    }
    let shared = ctx
        .shared
        .self_arc()
        .ok_or_else(|| err("ERR server is stopping"))?;
    ctx.shared.propagated(ctx.prop);
    crate::node::aof::enable(&shared, false).or_else(|e| {
        if e == "busy" {
            // Another snapshot runs: the rewrite starts when it is done.
            shared.aof.rewrite_scheduled.store(true, Ordering::Relaxed);
            Ok(())
        } else {
            Err(Reply::Error(format!("ERR {e}")))
        }
    })
}

fn bgrewriteaof(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    use crate::persist::snapshot::SnapshotKind;
    if !ctx.shared.aof.is_on() {
        return Err(err(
            "ERR Background append only file rewriting needs appendonly yes",
        ));
    }
    match ctx.shared.persist.current() {
        Some(SnapshotKind::AofRewrite) => {
            return Err(err(
                "ERR Background append only file rewriting already in progress",
            ))
        }
        Some(_) => {
            ctx.shared
                .aof
                .rewrite_scheduled
                .store(true, Ordering::Relaxed);
            return Ok(Reply::simple(
                "Background append only file rewriting scheduled",
            ));
        }
        None => {}
    }
    let shared = ctx
        .shared
        .self_arc()
        .ok_or_else(|| err("ERR server is stopping"))?;
    match crate::node::aof::start_rewrite(&shared, false) {
        Ok(()) => Ok(Reply::simple(
            "Background append only file rewriting started",
        )),
        Err(_) => Err(err(
            "ERR Background append only file rewriting already in progress",
        )),
    }
}

fn lastsave(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(
        ctx.shared.lastsave.load(Ordering::Relaxed) as i64
    ))
}

fn cluster_disabled(ctx: &Ctx) -> Result<(), Reply> {
    if ctx.shared.config.load().cluster_enabled {
        Ok(())
    } else {
        Err(err("ERR This instance has cluster support disabled"))
    }
}

fn readonly(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    cluster_disabled(ctx)?;
    ctx.client.readonly = true;
    Ok(Reply::Ok)
}

fn readwrite(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    cluster_disabled(ctx)?;
    ctx.client.readonly = false;
    Ok(Reply::Ok)
}

fn asking(ctx: &mut Ctx, _a: &[Bytes]) -> CmdResult {
    cluster_disabled(ctx)?;
    ctx.client.asking = true;
    Ok(Reply::Ok)
}

/// Rough bytes a value takes (MEMORY USAGE): close enough to compare keys.
fn value_size(v: &crate::store::Value) -> usize {
    use crate::store::Value;
    let s = |b: &[u8]| if b.len() <= 23 { 24 } else { 24 + b.len() };
    64 + match v {
        Value::Str(x) => s(x),
        Value::List(l) => l.iter().map(|e| s(e)).sum::<usize>(),
        Value::Hash(h) => h.iter().map(|(k, v)| s(k) + s(v) + 8).sum::<usize>(),
        Value::Set(m) => m.iter().map(|e| s(e) + 8).sum::<usize>(),
        Value::ZSet(z) => z.iter().map(|(m, _)| 2 * s(m) + 24).sum::<usize>(),
        Value::Stream(st) => {
            st.entries.values().flatten().map(|f| s(f)).sum::<usize>() + 16 * st.len()
        }
    }
}

fn memory(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if is(a.at(1)?, "usage") && a.len() >= 3 {
        let key = a.at(2)?;
        return Ok(ctx.db.peek(key, ctx.now).map_or(Reply::Nil, |e| {
            Reply::Int((value_size(&e.value) + 24 + key.len()) as i64)
        }));
    }
    if is(a.at(1)?, "doctor") {
        return Ok(Reply::Verbatim(Bytes::from_static(b"Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.")));
    }
    if is(a.at(1)?, "stats") {
        crate::runtime::alloc::flush_local();
        let used = crate::runtime::alloc::allocated() as i64;
        return Ok(Reply::Map(vec![
            (
                Reply::bulk("peak.allocated"),
                Reply::Int(ctx.shared.peak_memory.load(Ordering::Relaxed) as i64),
            ),
            (Reply::bulk("total.allocated"), Reply::Int(used)),
            (Reply::bulk("keys.count"), Reply::Int(ctx.db.len() as i64)),
        ]));
    }
    Err(Reply::Error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try MEMORY HELP.",
        String::from_utf8_lossy(a.at(1)?)
    )))
}

fn debug(_ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if is(a.at(1)?, "sleep") && a.len() == 3 {
        // Holds the keyspace lock, as Redis's single thread would.
        let secs = super::parse_float(a.at(2)?).unwrap_or(0.0).clamp(0.0, 60.0);
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        return Ok(Reply::Ok);
    }
    Err(Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try DEBUG HELP.",
        String::from_utf8_lossy(a.at(1)?)
    )))
}

/// SLOWLOG GET [count] | LEN | RESET | HELP, with Redis's texts.
fn slowlog(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    let fixed = |n: usize, name: &str| -> Result<(), Reply> {
        if a.len() == n {
            Ok(())
        } else {
            Err(Reply::Error(format!(
                "ERR wrong number of arguments for 'slowlog|{name}' command"
            )))
        }
    };
    if is(sub, "help") {
        fixed(2, "help")?;
        return Ok(Reply::array_of_bulks([
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Prints this help.",
        ]));
    }
    if is(sub, "len") {
        fixed(2, "len")?;
        return Ok(Reply::Int(ctx.shared.slowlog.lock().len() as i64));
    }
    if is(sub, "reset") {
        fixed(2, "reset")?;
        ctx.shared.slowlog.lock().reset();
        return Ok(Reply::Ok);
    }
    if !is(sub, "get") {
        return Err(Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try SLOWLOG HELP.",
            String::from_utf8_lossy(sub.get(..sub.len().min(128)).unwrap_or_default())
        )));
    }
    if a.len() > 3 {
        return Err(err(
            "ERR unknown subcommand or wrong number of arguments for 'get'. Try SLOWLOG HELP.",
        ));
    }
    let count = match a.get(2) {
        None => Some(10),
        Some(c) => match crate::resp::parse_i64(c) {
            Some(-1) => None,
            Some(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Err(err("ERR count should be greater than or equal to -1")),
        },
    };
    let log = ctx.shared.slowlog.lock();
    let entries = log
        .newest(count)
        .map(|e| {
            Reply::Array(vec![
                Reply::Int(e.id as i64),
                Reply::Int(e.time as i64),
                Reply::Int(e.micros as i64),
                Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                Reply::bulk(e.addr.as_bytes()),
                Reply::bulk(e.name.as_bytes()),
            ])
        })
        .collect();
    Ok(Reply::Array(entries))
}
