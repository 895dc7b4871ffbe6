//! The command table and dispatch: lookup, arity, auth, MULTI queueing,
//! pub/sub context, maxmemory, then the family handler.
//!
//! Each family file (`strings.rs`, `lists.rs`, ...) exports `COMMANDS`, a
//! slice of [`CommandSpec`]. The table is their concatenation, so adding a
//! command touches only its family file. Key positions in the specs are the
//! Redis ones (`COMMAND INFO`); cluster routing and the proxy use them.

pub mod admin;
pub mod bitmaps;
pub mod client_cmd;
pub mod cluster_cmd;
pub mod functions;
pub mod geo;
pub mod geohash;
#[cfg(test)]
mod harness;
pub mod hashes;
pub mod hyperloglog;
pub mod info;
pub mod keys;
pub mod lists;
pub mod migrate;
pub mod multi;
pub mod picks;
#[cfg(test)]
mod propagation_tests;
pub mod pubsub;
pub mod replication;
pub mod scripting;
pub mod server;
pub mod sets;
pub mod sort;
pub mod streams;
pub mod strings;
pub mod zsets;

use crate::node::client::Client;
use crate::node::shared::Shared;
use crate::replication::propagate::Propagator;
use crate::resp::{parse_i64, Reply};
use crate::store::{Db, Value};
use bytes::Bytes;
use hashbrown::HashMap;
use std::sync::OnceLock;

/// Command flags, as `COMMAND INFO` names them.
pub mod flags {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    pub const NO_AUTH: u32 = 1 << 10;
    pub const NO_MULTI: u32 = 1 << 11;
    pub const MOVABLE_KEYS: u32 = 1 << 12;
    pub const ALLOW_BUSY: u32 = 1 << 13;
    /// Never propagated as itself: its effects are (EXEC, EVAL). Not a Redis
    /// flag, so `COMMAND INFO` does not show it.
    pub const NO_PROPAGATE: u32 = 1 << 14;

    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NO_MULTI, "no_multi"),
        (MOVABLE_KEYS, "movablekeys"),
        (ALLOW_BUSY, "allow_busy"),
    ];
}

/// What a handler returns: `Err` carries an error reply (so `?` works).
pub type CmdResult = Result<Reply, Reply>;
pub type Handler = fn(&mut Ctx, &[Bytes]) -> CmdResult;

/// One command: name, arity (Redis convention: N exact, -N at least N, both
/// counting the name), flags, key positions (first, last, step; last -1 means
/// the last argument, 0 means no keys), handler.
pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    pub flags: u32,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub handler: Handler,
}

impl CommandSpec {
    /// One table entry: `keys` is the legacy `[first, last, step]` key
    /// range COMMAND INFO reports (slot checks use the key specs of
    /// `cluster::keyspec`).
    pub const fn new(
        name: &'static str,
        arity: i32,
        flags: u32,
        keys: [i32; 3],
        handler: Handler,
    ) -> CommandSpec {
        let [first_key, last_key, step] = keys;
        CommandSpec {
            name,
            arity,
            flags,
            first_key,
            last_key,
            step,
            handler,
        }
    }

    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
}

/// Something the connection must do after a command, beyond sending its
/// reply.
#[derive(Debug)]
pub enum Action {
    /// Close after flushing replies (QUIT, CLIENT KILL of self).
    Close,
    /// Wait until one of `keys` changes or `deadline` (unix ms, None = forever)
    /// passes, then run the command again.
    Block {
        keys: Vec<Bytes>,
        deadline: Option<u64>,
    },
    /// Stop the server (SHUTDOWN): wait for replicas, save, exit.
    Shutdown(ShutdownOpts),
    /// PSYNC/SYNC: this connection becomes a replica link; the replication
    /// driver takes the socket over (and sends the reply).
    Sync { psync: Option<(String, String)> },
    /// WAIT: reply once `numreplicas` acknowledged `offset`, or at
    /// `deadline` (unix ms; None = no timeout), without blocking others.
    Wait {
        numreplicas: usize,
        offset: u64,
        deadline: Option<u64>,
    },
}

/// SHUTDOWN's options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShutdownOpts {
    /// Some(true) SAVE, Some(false) NOSAVE, None: save if save points exist.
    pub save: Option<bool>,
    /// Do not wait for replicas to catch up.
    pub now: bool,
    /// Exit even if the save fails.
    pub force: bool,
}

/// State that lives under the keyspace lock.
pub struct State {
    pub db: Db,
    pub scripts: scripting::Scripts,
    /// The propagation stream, in execution order.
    pub prop: Propagator,
}

impl State {
    pub fn new() -> Self {
        State {
            db: Db::new(),
            scripts: scripting::Scripts::default(),
            prop: Propagator::default(),
        }
    }

    /// A context to run one client's commands in.
    pub fn ctx<'a>(&'a mut self, client: &'a mut Client, shared: &'a Shared, now: u64) -> Ctx<'a> {
        Ctx {
            db: &mut self.db,
            scripts: &mut self.scripts,
            prop: &mut self.prop,
            client,
            shared,
            now,
            action: None,
            nested: false,
            timed_out: false,
            extra: Vec::new(),
            prop_mode: PropMode::default(),
            noop: false,
            in_script: false,
            resumed: false,
            rerun: None,
        }
    }

    /// Turns the propagation hook on or off (something consumes the
    /// stream, or nothing does).
    pub fn set_propagation(&mut self, on: bool) {
        self.prop.set_on(on);
        self.db.set_log_deletions(on);
    }

    /// Propagates keys the server removed on its own (expiry, eviction
    /// outside any command) as DELs, one unit each.
    pub fn propagate_server_deletions(&mut self) {
        if let Some(keys) = self.db.take_deleted() {
            for k in keys {
                self.prop.push(&[&b"DEL"[..], &k]);
                self.prop.end_unit();
            }
        }
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// How the running command is propagated, as its handler decided.
#[derive(Debug, Default)]
pub struct PropMode {
    /// Propagate even if the keyspace did not change.
    force: bool,
    /// Propagate these commands instead of the one received.
    rewrite: Option<Vec<Vec<Bytes>>>,
}

/// Everything a handler can touch while it runs.
pub struct Ctx<'a> {
    pub db: &'a mut Db,
    pub scripts: &'a mut scripting::Scripts,
    pub prop: &'a mut Propagator,
    pub client: &'a mut Client,
    pub shared: &'a Shared,
    /// Unix time in ms, fixed for the whole batch (like Redis's cached time).
    pub now: u64,
    pub action: Option<Action>,
    /// Inside EXEC or a script: blocking commands must not block.
    pub nested: bool,
    /// The command is re-run after its block deadline passed.
    pub timed_out: bool,
    /// Further top-level replies to send right after this command's own
    /// (SUBSCRIBE of N channels answers N confirmations).
    pub extra: Vec<Reply>,
    /// Set by the handler through `propagate_as` and friends.
    pub prop_mode: PropMode,
    /// The running command changed nothing (see `unchanged`).
    noop: bool,
    /// Called by a script (redis.call): the slow log shows no client.
    pub in_script: bool,
    /// The command blocked before and runs again (woken or timed out).
    pub resumed: bool,
    /// If the command blocks: the arguments to run it with when woken
    /// (XREAD's `$` fixed to the IDs it saw).
    pub rerun: Option<Vec<Bytes>>,
}

impl Ctx<'_> {
    /// May a blocking command block now?
    pub fn can_block(&self) -> bool {
        !self.nested && !self.timed_out && !self.client.is_master
    }

    /// Whether the command's writes are propagated. Handlers that rewrite
    /// their command for propagation build the new form only when true.
    #[inline]
    pub fn propagating(&self) -> bool {
        self.prop.is_on()
    }

    /// Propagates `args` instead of the command received (call again to
    /// propagate several commands, in order). Used where the command as
    /// received would not reproduce the same data on a replica or after an
    /// AOF reload: relative TTLs, floats, randomness, blocking forms.
    /// Ignored if the command leaves the keyspace unchanged.
    pub fn propagate_as(&mut self, args: Vec<Bytes>) {
        if self.prop.is_on() {
            self.prop_mode
                .rewrite
                .get_or_insert_with(Vec::new)
                .push(args);
        }
    }

    /// Propagates nothing for this command: it touched keys without
    /// changing them (SADD of present members, ...).
    pub fn unchanged(&mut self) {
        self.noop = true;
        if self.prop.is_on() {
            self.prop_mode.rewrite = Some(Vec::new());
        }
    }

    /// Propagates the command even though the keyspace did not change
    /// (FLUSHALL of an empty keyspace).
    pub fn force_propagation(&mut self) {
        if self.prop.is_on() {
            self.prop_mode.force = true;
        }
    }
}

static TABLE: OnceLock<HashMap<&'static str, &'static CommandSpec>> = OnceLock::new();

fn families() -> [&'static [CommandSpec]; 19] {
    [
        replication::COMMANDS,
        migrate::COMMANDS,
        strings::COMMANDS,
        bitmaps::COMMANDS,
        hyperloglog::COMMANDS,
        keys::COMMANDS,
        hashes::COMMANDS,
        lists::COMMANDS,
        sets::COMMANDS,
        sort::COMMANDS,
        admin::COMMANDS,
        zsets::COMMANDS,
        streams::COMMANDS,
        geo::COMMANDS,
        pubsub::COMMANDS,
        multi::COMMANDS,
        scripting::COMMANDS,
        functions::COMMANDS,
        server::COMMANDS,
    ]
}

pub fn table() -> &'static HashMap<&'static str, &'static CommandSpec> {
    TABLE.get_or_init(|| {
        let mut m = HashMap::new();
        for fam in families() {
            for spec in fam {
                m.insert(spec.name, spec);
            }
        }
        m
    })
}

/// Finds a command by name, case-insensitively, without allocating for
/// names of normal length.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let s = std::str::from_utf8(lower).ok()?;
    table().get(s).copied()
}

/// The optional COUNT of SPOP / ZPOPMIN / ZPOPMAX (`KEY [COUNT]`), with
/// Redis's errors; a count larger than memory is not an error (the reply
/// is bounded by the collection).
pub fn pop_count(a: &[Bytes]) -> Result<Option<usize>, Reply> {
    if a.len() > 3 {
        return Err(syntax_error());
    }
    let Some(c) = a.get(2) else {
        return Ok(None);
    };
    let out_of_range = || err("ERR value is out of range, must be positive");
    let n = int_arg(c).map_err(|_| out_of_range())?;
    let n = usize::try_from(n).map_err(|_| out_of_range())?;
    Ok(Some(n))
}

// ---- errors with Redis's exact texts -------------------------------------

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

pub fn err(msg: &str) -> Reply {
    Reply::Error(msg.to_string())
}
pub fn wrongtype() -> Reply {
    err(WRONGTYPE)
}
pub fn syntax_error() -> Reply {
    err("ERR syntax error")
}
pub fn not_integer() -> Reply {
    err("ERR value is not an integer or out of range")
}
pub fn not_float() -> Reply {
    err("ERR value is not a valid float")
}
pub fn wrong_arity(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Parses an integer argument (Redis `string2ll` rules).
pub fn int_arg(b: &[u8]) -> Result<i64, Reply> {
    parse_i64(b).ok_or_else(not_integer)
}

/// Parses a float argument like Redis `strtold`-based parsing (accepts
/// `inf`, `-inf`, `+inf`; rejects NaN and trailing garbage).
pub fn float_arg(b: &[u8]) -> Result<f64, Reply> {
    parse_float(b).ok_or_else(not_float)
}

pub use crate::util::parse_float;

/// A positive timeout in seconds (float allowed) as used by blocking
/// commands; returns the absolute deadline, None for 0 (block forever).
///
/// Mirrors Redis 7.0: seconds become whole milliseconds rounded up (so
/// 0.0001 is 1 ms, -0.0001 is 0 = forever), cast to a C `long long`; values
/// that do not fit (inf, 1e400) come out negative there, hence "negative".
pub fn timeout_arg(b: &[u8], now: u64) -> Result<Option<u64>, Reply> {
    let secs = parse_float(b).ok_or_else(|| err("ERR timeout is not a float or out of range"))?;
    let ms = (secs * 1000.0).ceil();
    // 2^63: the first value a long long cannot hold.
    const LL_LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if !(ms > -LL_LIMIT && ms < LL_LIMIT) || ms < 0.0 {
        return Err(err("ERR timeout is negative"));
    }
    if ms == 0.0 {
        return Ok(None);
    }
    Ok(Some(now.saturating_add(ms as u64)))
}

/// Panic-free access to a command's arguments. The arity check in dispatch
/// makes the fixed positions present, but option parsing walks positions
/// the arity cannot vouch for; a position that is not there answers
/// `ERR syntax error` instead of taking the thread down.
pub trait Argv {
    /// Argument `i`.
    fn at(&self, i: usize) -> Result<&Bytes, Reply>;
    /// Arguments from `i` on; empty past the end.
    fn rest(&self, i: usize) -> &[Bytes];
    /// Arguments from `i` on, two at a time (an odd last one is left out:
    /// callers check parity for the error text).
    fn pairs_from(&self, i: usize) -> impl Iterator<Item = (&Bytes, &Bytes)>;
}

impl Argv for [Bytes] {
    #[inline]
    fn at(&self, i: usize) -> Result<&Bytes, Reply> {
        self.get(i).ok_or_else(syntax_error)
    }
    #[inline]
    fn rest(&self, i: usize) -> &[Bytes] {
        self.get(i..).unwrap_or_default()
    }
    fn pairs_from(&self, i: usize) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.rest(i).chunks_exact(2).filter_map(|c| match c {
            [k, v] => Some((k, v)),
            _ => None,
        })
    }
}

/// Case-insensitive comparison of an argument with an option name.
pub fn is(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

/// The string value of a key: Ok(None) if missing, Err(WRONGTYPE) if not a
/// string.
pub fn get_string<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Result<Option<&'d [u8]>, Reply> {
    match db.get(key, now) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.as_slice())),
        Some(_) => Err(wrongtype()),
    }
}

/// A collection for reading: Ok(None) if the key is missing, WRONGTYPE if
/// it holds another type.
pub fn read<'d, T: crate::store::Collection>(
    ctx: &'d mut Ctx,
    key: &[u8],
) -> Result<Option<&'d T>, Reply> {
    match ctx.db.get(key, ctx.now) {
        None => Ok(None),
        Some(v) => T::of(v).map(Some).ok_or_else(wrongtype),
    }
}

/// A collection for writing, created empty if the key is missing
/// (callers remove it again with `remove_if_empty` when they leave it empty).
pub fn write<'d, T: crate::store::Collection>(
    ctx: &'d mut Ctx,
    key: &[u8],
) -> Result<&'d mut T, Reply> {
    if let Some(e) = ctx.db.peek(key, ctx.now) {
        if T::of(&e.value).is_none() {
            return Err(wrongtype());
        }
    }
    T::of_mut(ctx.db.get_or_insert_with(key, ctx.now, T::empty)).ok_or_else(wrongtype)
}

// ---- dispatch --------------------------------------------------------------

fn quote_args(args: &[Bytes]) -> String {
    let mut s = String::new();
    for a in args.iter().take(16) {
        s.push('\'');
        s.push_str(&String::from_utf8_lossy(
            a.get(..a.len().min(128)).unwrap_or_default(),
        ));
        s.push_str("' ");
    }
    s
}

/// Commands allowed in RESP2 subscriber context.
fn allowed_in_pubsub(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "punsubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

/// Runs one command: every check Redis makes before calling the handler,
/// then the handler. `args[0]` is the command name.
/// Runs `f` (one command) so that a bug that panics in it costs that
/// command an error reply, not the client's connection and the keyspace
/// lock for everyone (the lock is taken over after a panic, see
/// `Shared::lock`). No known input panics; this is the net under the
/// arity checks and the fuzzers.
pub fn contain_panic(command: &[u8], f: impl FnOnce() -> Reply) -> Reply {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(
                command = %String::from_utf8_lossy(command),
                "command panicked; answered with an error (please report)"
            );
            err("ERR internal error while running the command")
        }
    }
}

pub fn execute(ctx: &mut Ctx, args: &[Bytes]) -> Reply {
    let Some(name_arg) = args.first() else {
        return err("ERR empty command");
    };
    let Some(spec) = lookup(name_arg) else {
        let reply = Reply::Error(format!(
            "ERR unknown command '{}', with args beginning with: {}",
            String::from_utf8_lossy(name_arg.get(..name_arg.len().min(128)).unwrap_or_default()),
            quote_args(args.get(1..).unwrap_or_default())
        ));
        ctx.client.flag_multi_error();
        return reply;
    };
    let argc = args.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        ctx.client.flag_multi_error();
        return wrong_arity(spec.name);
    }
    if !ctx.client.authenticated && !spec.has(flags::NO_AUTH) {
        ctx.client.flag_multi_error();
        return err("NOAUTH Authentication required.");
    }
    ctx.client.last_cmd = spec.name;
    // ASKING covers exactly the next command.
    let asking = std::mem::take(&mut ctx.client.asking);
    if let Some(cl) = ctx
        .shared
        .cluster
        .as_ref()
        .filter(|_| !ctx.client.is_master)
    {
        let view = cl.view.load();
        let (db, now) = (&mut *ctx.db, ctx.now);
        let mut exists = |k: &[u8]| db.contains(k, now);
        if let Err(r) = crate::node::cluster::check(
            &view,
            spec,
            args,
            (ctx.client.readonly, asking),
            &mut exists,
        ) {
            ctx.client.flag_multi_error();
            return r.reply();
        }
    }
    if spec.has(flags::WRITE) && !ctx.client.is_master && ctx.shared.repl.is_replica() {
        let cfg = ctx.shared.config.load();
        if cfg.replica_read_only {
            ctx.client.flag_multi_error();
            return err("READONLY You can't write against a read only replica.");
        }
    }
    if ctx.client.in_multi()
        && !matches!(
            spec.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        )
    {
        if spec.has(flags::NO_MULTI) {
            ctx.client.flag_multi_error();
            return Reply::Error("ERR Command not allowed inside a transaction".to_string());
        }
        ctx.client.queue(args.to_vec());
        return Reply::simple("QUEUED");
    }
    if ctx.client.in_pubsub_context() && !allowed_in_pubsub(spec.name) {
        return Reply::Error(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        ));
    }
    // A replica applies its master's writes whatever its own memory
    // (replica-ignore-maxmemory).
    if spec.has(flags::DENYOOM) && !ctx.client.is_master {
        if let Err(e) = enforce_maxmemory(ctx) {
            return e;
        }
    }
    ctx.client.commands_unreported += 1;
    let mark = ctx.db.hold_signals();
    let outer_noop = std::mem::replace(&mut ctx.noop, false);
    let timer = SlowTimer::start(ctx, spec);
    let reply = if ctx.prop.is_on() {
        run_propagating(ctx, spec, args)
    } else {
        match (spec.handler)(ctx, args) {
            Ok(r) | Err(r) => r,
        }
    };
    if let Some(t) = timer {
        t.finish(ctx, args);
    }
    let noop = std::mem::replace(&mut ctx.noop, outer_noop);
    ctx.db.release_signals(mark, !noop);
    reply
}

/// Times one command for the slow log, when the log is on.
struct SlowTimer {
    start: std::time::Instant,
    threshold_us: u64,
}

impl SlowTimer {
    fn start(ctx: &Ctx, spec: &CommandSpec) -> Option<SlowTimer> {
        // EXEC's commands are logged one by one, not EXEC itself (Redis's
        // skip_slowlog).
        if spec.name == "exec" {
            return None;
        }
        let threshold = ctx.shared.config.load().slowlog_log_slower_than;
        let threshold_us = u64::try_from(threshold).ok()?;
        Some(SlowTimer {
            start: std::time::Instant::now(),
            threshold_us,
        })
    }

    fn finish(self, ctx: &Ctx, args: &[Bytes]) {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        // A command that blocked is logged when it runs again and is served;
        // one whose wait timed out, never (as Redis).
        let blocked = matches!(ctx.action, Some(Action::Block { .. })) || ctx.timed_out;
        // Checked only for a slow command: the AOF replay at startup is
        // not logged.
        let loading = ctx.client.handle.addr == crate::node::aof::LOADER_ADDR;
        if micros < self.threshold_us || blocked || loading {
            return;
        }
        let (addr, name) = if ctx.in_script {
            ("?:0".to_string(), String::new())
        } else {
            let h = &ctx.client.handle;
            (h.addr.clone(), h.name().unwrap_or_default())
        };
        let entry = crate::node::slowlog::Entry {
            id: 0,
            time: ctx.now / 1000,
            micros,
            args: crate::node::slowlog::logged_args(args),
            addr,
            name,
        };
        let max_len = ctx.shared.config.load().slowlog_max_len;
        ctx.shared.slowlog.lock().push(entry, max_len);
    }
}

/// Runs a handler and propagates what it changed. A top-level command
/// (not inside EXEC or a script) closes its unit.
fn run_propagating(ctx: &mut Ctx, spec: &CommandSpec, args: &[Bytes]) -> Reply {
    let top = !ctx.nested;
    let dirty = ctx.db.dirty;
    let outer = std::mem::take(&mut ctx.prop_mode);
    let reply = match (spec.handler)(ctx, args) {
        Ok(r) | Err(r) => r,
    };
    let mode = std::mem::replace(&mut ctx.prop_mode, outer);
    // Keys that expired under the command first: it saw them gone.
    if let Some(keys) = ctx.db.take_deleted() {
        for k in keys {
            ctx.prop.push(&[&b"DEL"[..], &k]);
        }
    }
    let changed = ctx.db.dirty != dirty || mode.force;
    if changed && !spec.has(flags::NO_PROPAGATE) {
        match mode.rewrite {
            Some(cmds) => {
                for c in cmds {
                    ctx.prop.push(&c);
                }
            }
            // A failed command changed nothing a replica must copy.
            None if reply.is_error() && !mode.force => {}
            None => ctx.prop.push(args),
        }
    }
    if top {
        ctx.prop.end_unit();
    }
    reply
}

/// Evicts per policy if over `maxmemory`; Err(-OOM) when it cannot.
fn enforce_maxmemory(ctx: &mut Ctx) -> Result<(), Reply> {
    let cfg = ctx.shared.config.load();
    if cfg.maxmemory == 0 {
        return Ok(());
    }
    let limit = usize::try_from(cfg.maxmemory).unwrap_or(usize::MAX);
    crate::runtime::alloc::flush_local();
    if crate::runtime::alloc::allocated() <= limit {
        return Ok(());
    }
    ctx.db
        .evict(cfg.maxmemory_samples, ctx.now, || {
            crate::runtime::alloc::flush_local();
            crate::runtime::alloc::allocated() > limit
        })
        .map_err(|oom| Reply::Error(oom.to_string()))
}

#[cfg(test)]
mod contain_panic_tests {
    #[test]
    #[allow(clippy::panic)]
    fn a_panicking_command_becomes_an_error_reply() {
        let r = super::contain_panic(b"get", || panic!("a bug"));
        assert!(r.is_error());
        let ok = super::contain_panic(b"get", || crate::resp::Reply::Int(1));
        assert!(!ok.is_error());
    }
}

#[cfg(test)]
mod key_table_tests {
    use crate::cluster::keyspec;
    use bytes::Bytes;

    /// The legacy first/last/step triple COMMAND INFO reports.
    fn triple_positions(spec: &super::CommandSpec, argc: usize) -> Vec<usize> {
        if spec.first_key <= 0 || spec.step <= 0 {
            return Vec::new();
        }
        let last = if spec.last_key < 0 {
            argc as i32 + spec.last_key
        } else {
            spec.last_key
        };
        (spec.first_key..=last)
            .step_by(spec.step as usize)
            .take_while(|i| (*i as usize) < argc)
            .map(|i| i as usize)
            .collect()
    }

    #[test]
    fn every_keyed_command_is_in_the_shared_key_table() {
        let catalog = keyspec::catalog().unwrap();
        for spec in super::table().values() {
            let Some(info) = catalog.get(spec.name) else {
                // Only node-private commands may be missing, and those
                // must not take keys, or slot checks would miss them.
                assert!(
                    spec.first_key <= 0,
                    "{} has keys but no key specs",
                    spec.name
                );
                continue;
            };
            if spec.first_key <= 0 || keyspec::CONTAINERS.contains(&spec.name) {
                continue;
            }
            // Where the triple describes the keys, the key specs agree.
            if info.has(keyspec::flag::MOVABLE_KEYS) {
                continue;
            }
            let argcs = if spec.arity > 0 {
                spec.arity..=spec.arity
            } else {
                -spec.arity..=8
            };
            for argc in argcs.map(|n| n as usize) {
                let mut args: Vec<Bytes> = vec![Bytes::from(spec.name)];
                args.extend((1..argc).map(|i| Bytes::from(format!("a{i}"))));
                // `PFMERGE dest` with no sources: Redis's key specs (whose
                // source spec starts past the end) void the call, so
                // COMMAND GETKEYS has no keys; the node still checks the
                // destination's slot, rather than write to a slot it may
                // not own as Redis would.
                if spec.name == "pfmerge" && argc == 2 {
                    assert!(info.keys.key_positions(&args).is_empty());
                    continue;
                }
                assert_eq!(
                    info.keys.key_positions(&args),
                    triple_positions(spec, argc),
                    "{} argc {argc}",
                    spec.name
                );
            }
        }
    }
}
