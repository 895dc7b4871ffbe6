//! Redis 7 Functions: FUNCTION LOAD / DELETE / FLUSH / LIST / DUMP /
//! RESTORE / STATS / KILL / HELP and FCALL / FCALL_RO, on a Lua VM of
//! their own (not EVAL's), with Redis's rules and error texts.
//!
//! The sources are data (`Db::functions`, so snapshots and full syncs
//! carry them); this module owns the compiled side: one VM holding every
//! library's registered callbacks. The VM is rebuilt from the sources
//! whenever their stamp says it is stale (a loaded RDB, a full resync), so
//! the two can never disagree for long.
//!
//! A library runs once at load with a restricted global scope (only
//! `redis.register_function`, `redis.log` and the version fields), as in
//! Redis; its functions later see the full script API. Both scopes are
//! the same environment table whose metatable `__index` is switched.

use super::flags::*;
use super::scripting::{call_args, current_line, from_lua, new_vm, script_call, to_lua};
use super::{err, is, Argv, CmdResult, CommandSpec, Ctx};
use crate::persist::rdb;
use crate::resp::Reply;
use crate::store::functions::{parse_shebang, valid_name, Libraries, BAD_NAME};
use bytes::Bytes;
use mlua::{Function, HookTriggers, Lua, MultiValue, RegistryKey, Table, Value, VmState};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("function", -2, NOSCRIPT, [0, 0, 0], function),
    CommandSpec::new("fcall", -3, NOSCRIPT | STALE | MOVABLE_KEYS | NO_PROPAGATE, [0, 0, 0], fcall),
    CommandSpec::new("fcall_ro", -3, NOSCRIPT | STALE | READONLY | MOVABLE_KEYS, [0, 0, 0], fcall_ro),
];

/// The only engine Redis 7.0 has, as FUNCTION LIST / STATS name it.
const ENGINE: &str = "LUA";

/// Redis stops a library's load-time code after this long.
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// Function flags (`flags = {...}` of `register_function`), in the order
/// Redis lists them.
const FLAG_NAMES: [(u8, &str); 5] = [
    (NO_WRITES, "no-writes"),
    (ALLOW_OOM, "allow-oom"),
    (ALLOW_STALE, "allow-stale"),
    (NO_CLUSTER, "no-cluster"),
    (ALLOW_CROSS_SLOT, "allow-cross-slot-keys"),
];
const NO_WRITES: u8 = 1;
const ALLOW_OOM: u8 = 2;
const ALLOW_STALE: u8 = 4;
const NO_CLUSTER: u8 = 8;
const ALLOW_CROSS_SLOT: u8 = 16;

/// The two global scopes a library sees (see the module doc). `...` is
/// nothing; the chunk returns the tables the VM keeps handles on.
const SCOPES: &str = r#"
local function missing(_, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end
local function readonly() error("Attempt to modify a readonly table", 2) end
local meta = {__index = _G, __newindex = readonly}
local env = setmetatable({}, meta)
local load_redis = setmetatable({}, {__index = missing, __newindex = readonly})
local load_api = setmetatable({redis = load_redis}, {__index = missing, __newindex = readonly})
return env, meta, load_api, load_redis
"#;

/// `error` as functions see it: Lua's, after noting where an error
/// table was raised (Redis's error handler adds that line to the reply;
/// a table carries no position of its own). Not a tail call, so levels
/// still count from the caller.
const ERROR_WRAP: &str = r#"
local note = ...
local lua_error = error
rawset(_G, "error", function(e, level)
  if type(e) == "table" then note() end
  level = level or 1
  if level > 0 then level = level + 1 end
  lua_error(e, level)
end)
"#;

/// Where the last error table was raised (see `ERROR_WRAP`).
struct RaisedAt(i64);

/// Calls a function with its KEYS and ARGV tables, catching what it raises
/// as a value (an error table stays a table).
const RUNNER: &str = "local f, k, a = ...\nreturn pcall(f, k, a)";

/// One registered function.
struct Func {
    /// As registered (FUNCTION LIST, error replies).
    name: String,
    lib: String,
    desc: Option<String>,
    flags: u8,
    callback: RegistryKey,
}

/// The compiled libraries.
struct Vm {
    lua: Lua,
    /// The `Libraries` stamp this VM was built from.
    stamp: u64,
    env: Table,
    env_meta: Table,
    globals: Table,
    load_api: Table,
    load_redis: Table,
    /// The run-time `redis` table (call and pcall are set per call).
    redis: Table,
    runner: Function,
    /// Library name → its function names.
    libs: BTreeMap<String, Vec<String>>,
    /// By lowercased name: FCALL finds functions in any case, as Redis's
    /// function index does.
    funcs: BTreeMap<String, Func>,
}

/// The functions VM, made on first use (lives in `Scripts`).
#[derive(Default)]
pub struct Engine {
    vm: Option<Vm>,
}

fn vm_error(e: mlua::Error) -> Reply {
    Reply::Error(format!("ERR Lua VM: {e}"))
}

/// The first line of what Lua or a callback raised, without mlua's
/// wrapping.
fn root_message(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::CallbackError { cause, .. } => return root_message(cause),
        mlua::Error::RuntimeError(s) => s.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("runtime error: ")
        .or_else(|| first.strip_prefix("syntax error: "))
        .unwrap_or(first)
        .to_string()
}

/// The line of a `user_function:N: ...` message.
fn line_of(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("user_function:")?;
    let end = rest.find(':')?;
    let n = rest.get(..end)?;
    n.bytes().all(|c| c.is_ascii_digit()).then_some(n)
}

/// What one `redis.register_function` call asks for: (name, description,
/// callback, flags).
type Registration = (Vec<u8>, Option<String>, Function, u8);

/// `redis.register_function`'s arguments, or Redis's complaint.
fn read_registration(args: MultiValue) -> Result<Registration, &'static str> {
    let args: Vec<Value> = args.into_iter().collect();
    let as_text = |v: &Value| -> Option<Vec<u8>> {
        match v {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Integer(n) => Some(n.to_string().into_bytes()),
            Value::Number(n) => Some(crate::resp::reply::format_double(*n).into_bytes()),
            _ => None,
        }
    };
    match args.as_slice() {
        [single] => {
            let Value::Table(t) = single else {
                return Err("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).");
            };
            let (mut name, mut desc, mut callback, mut flags) = (None, None, None, 0u8);
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, v) =
                    pair.map_err(|_| "unknown argument given to redis.register_function")?;
                let Some(key) = as_text(&k) else {
                    return Err(
                        "named argument key given to redis.register_function is not a string",
                    );
                };
                if key.eq_ignore_ascii_case(b"function_name") {
                    name = Some(as_text(&v).ok_or(
                        "function_name argument given to redis.register_function must be a string",
                    )?);
                } else if key.eq_ignore_ascii_case(b"description") {
                    let d = as_text(&v).ok_or(
                        "description argument given to redis.register_function must be a string",
                    )?;
                    desc = Some(String::from_utf8_lossy(&d).into_owned());
                } else if key.eq_ignore_ascii_case(b"callback") {
                    let Value::Function(f) = v else {
                        return Err(
                            "callback argument given to redis.register_function must be a function",
                        );
                    };
                    callback = Some(f);
                } else if key.eq_ignore_ascii_case(b"flags") {
                    let Value::Table(ft) = v else {
                        return Err("flags argument to redis.register_function must be a table representing function flags");
                    };
                    flags = read_flags(&ft).ok_or("unknown flag given")?;
                } else {
                    return Err("unknown argument given to redis.register_function");
                }
            }
            let name = name.ok_or("redis.register_function must get a function name argument")?;
            let callback =
                callback.ok_or("redis.register_function must get a callback argument")?;
            Ok((name, desc, callback, flags))
        }
        [first, second] => {
            let name = as_text(first)
                .ok_or("first argument to redis.register_function must be a string")?;
            let Value::Function(f) = second else {
                return Err("second argument to redis.register_function must be a function");
            };
            Ok((name, None, f.clone(), 0))
        }
        _ => Err("wrong number of arguments to redis.register_function"),
    }
}

/// The `flags` array: known names only (any case).
fn read_flags(t: &Table) -> Option<u8> {
    let mut flags = 0;
    for i in 1.. {
        let v: Value = t.raw_get(i).ok()?;
        let name = match v {
            Value::Nil => break,
            Value::String(s) => s.as_bytes().to_vec(),
            _ => return None,
        };
        let (bit, _) = FLAG_NAMES
            .iter()
            .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(&name))?;
        flags |= bit;
    }
    Some(flags)
}

/// `redis.REDIS_VERSION_NUM`: 0x00MMmmpp.
fn version_num() -> i64 {
    let mut parts = crate::util::VERSION
        .split('.')
        .map(|p| p.parse::<i64>().unwrap_or(0));
    let mut n = 0;
    for _ in 0..3 {
        n = n * 256 + parts.next().unwrap_or(0);
    }
    n
}

impl Vm {
    fn new() -> mlua::Result<Vm> {
        let lua = new_vm()?;
        let globals = lua.globals();
        // Functions get their keys and arguments as parameters.
        globals.raw_set("KEYS", Value::Nil)?;
        globals.raw_set("ARGV", Value::Nil)?;
        let redis: Table = globals.raw_get("redis")?;
        redis.raw_set("REDIS_VERSION", crate::util::VERSION)?;
        redis.raw_set("REDIS_VERSION_NUM", version_num())?;
        redis.raw_set(
            "setresp",
            lua.create_function(|_, v: i64| match v {
                2 => Ok(()),
                3 => Err(mlua::Error::RuntimeError(
                    "ERR RESP3 replies inside functions are not supported by this node".into(),
                )),
                _ => Err(mlua::Error::RuntimeError(
                    "ERR RESP version must be 2 or 3.".into(),
                )),
            })?,
        )?;
        let note = lua.create_function(|lua, ()| {
            // 0 is this function, 1 the wrapper, 2 the script.
            let line = lua
                .inspect_stack(2)
                .map_or(1, |d| i64::from(d.curr_line()).max(1));
            lua.set_app_data(RaisedAt(line));
            Ok(())
        })?;
        lua.load(ERROR_WRAP)
            .set_name("@error_wrap")
            .call::<()>(note)?;
        let (env, env_meta, load_api, load_redis): (Table, Table, Table, Table) =
            lua.load(SCOPES).set_name("@function_scopes").eval()?;
        for k in [
            "log",
            "LOG_DEBUG",
            "LOG_VERBOSE",
            "LOG_NOTICE",
            "LOG_WARNING",
            "REDIS_VERSION",
            "REDIS_VERSION_NUM",
        ] {
            load_redis.raw_set(k, redis.raw_get::<Value>(k)?)?;
        }
        let runner = lua
            .load(RUNNER)
            .set_name("@function_runner")
            .into_function()?;
        Ok(Vm {
            lua,
            stamp: 0,
            env,
            env_meta,
            globals,
            load_api,
            load_redis,
            redis,
            runner,
            libs: BTreeMap::new(),
            funcs: BTreeMap::new(),
        })
    }

    /// A VM with every library of `libs`; one that no longer loads (a
    /// source from elsewhere) is left out with a warning.
    fn build(libs: &Libraries) -> Result<Vm, Reply> {
        let mut vm = Vm::new().map_err(vm_error)?;
        for (name, code) in libs.codes() {
            let compiled = parse_shebang(code)
                .and_then(|sb| vm.compile(code, sb.body_at))
                .and_then(|fs| vm.check_collisions(name, &fs).map(|()| fs));
            match compiled {
                Ok(fs) => vm.link(name, fs),
                Err(e) => {
                    tracing::warn!(library = %name, error = %e, "function library not loaded")
                }
            }
        }
        vm.stamp = libs.stamp();
        Ok(vm)
    }

    /// Runs a library's load-time code; its registered functions, or the
    /// error text (without `ERR `).
    fn compile(&mut self, code: &[u8], body_at: usize) -> Result<Vec<(String, Func)>, String> {
        let body = code.get(body_at..).unwrap_or_default();
        let chunk = self
            .lua
            .load(body)
            .set_name("@user_function")
            .set_environment(self.env.clone())
            .into_function()
            .map_err(|e| format!("Error compiling function: {}", root_message(&e)))?;
        let registered: RefCell<Vec<(String, Func)>> = RefCell::new(Vec::new());
        let failure: RefCell<Option<String>> = RefCell::new(None);
        self.env_meta
            .raw_set("__index", self.load_api.clone())
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        self.lua.set_hook(
            HookTriggers::new().every_nth_instruction(100_000),
            move |_, _| {
                if started.elapsed() > LOAD_TIMEOUT {
                    return Err(mlua::Error::RuntimeError("FUNCTION LOAD timeout".into()));
                }
                Ok(VmState::Continue)
            },
        );
        let outcome = self.lua.scope(|scope| {
            let register = scope.create_function(|lua, args: MultiValue| {
                let fail = |msg: &str| {
                    *failure.borrow_mut() = Some(format!("ERR {msg}"));
                    Err(mlua::Error::RuntimeError(msg.to_string()))
                };
                let (name, desc, callback, flags) = match read_registration(args) {
                    Ok(r) => r,
                    Err(msg) => return fail(msg),
                };
                if !valid_name(&name) {
                    return fail(BAD_NAME);
                }
                let name = String::from_utf8_lossy(&name).into_owned();
                if registered.borrow().iter().any(|(n, _)| *n == name) {
                    return fail("Function already exists in the library");
                }
                let callback = lua.create_registry_value(callback)?;
                registered.borrow_mut().push((
                    name.clone(),
                    Func {
                        name,
                        lib: String::new(),
                        desc,
                        flags,
                        callback,
                    },
                ));
                Ok(())
            })?;
            self.load_redis.raw_set("register_function", register)?;
            let r = chunk.call::<()>(());
            self.load_redis.raw_set("register_function", Value::Nil)?;
            Ok(r)
        });
        self.lua.remove_hook();
        self.env_meta
            .raw_set("__index", self.globals.clone())
            .map_err(|e| e.to_string())?;
        match outcome {
            Ok(Ok(())) => Ok(registered.into_inner()),
            Ok(Err(e)) => {
                let msg = failure
                    .into_inner()
                    .unwrap_or_else(|| format!("ERR {}", root_message(&e)));
                Err(format!("Error registering functions: {msg}"))
            }
            Err(e) => Err(format!("Error registering functions: ERR {e}")),
        }
    }

    /// "Function f already exists" when a function of `fs` belongs to a
    /// library other than `lib`.
    fn check_collisions(&self, lib: &str, fs: &[(String, Func)]) -> Result<(), String> {
        match fs.iter().find(|(n, _)| {
            self.funcs
                .get(&n.to_ascii_lowercase())
                .is_some_and(|f| f.lib != lib)
        }) {
            Some((n, _)) => Err(format!("Function {n} already exists")),
            None => Ok(()),
        }
    }

    fn unlink(&mut self, lib: &str) {
        for f in self.libs.remove(lib).unwrap_or_default() {
            self.funcs.remove(&f.to_ascii_lowercase());
        }
    }

    /// Installs `lib` with `fs` (replacing a library of that name).
    fn link(&mut self, lib: &str, fs: Vec<(String, Func)>) {
        self.unlink(lib);
        let mut names = Vec::with_capacity(fs.len());
        for (n, mut f) in fs {
            f.lib = lib.to_string();
            self.funcs.insert(n.to_ascii_lowercase(), f);
            names.push(n);
        }
        names.sort();
        self.libs.insert(lib.to_string(), names);
    }
}

impl Engine {
    /// The VM, rebuilt first if `libs` changed behind its back.
    fn synced(&mut self, libs: &Libraries) -> Result<&mut Vm, Reply> {
        if self.vm.as_ref().is_none_or(|vm| vm.stamp != libs.stamp()) {
            self.vm = Some(Vm::build(libs)?);
        }
        self.vm
            .as_mut()
            .ok_or_else(|| err("ERR functions VM unavailable"))
    }

    /// Functions registered, over all libraries (INFO, STATS).
    fn functions_count(&self) -> usize {
        self.vm.as_ref().map_or(0, |vm| vm.funcs.len())
    }
}

// ---- FUNCTION ----------------------------------------------------------------

/// Writes are refused on a read-only replica (FUNCTION LOAD and friends are
/// write commands in Redis), except from its master.
fn deny_on_replica(ctx: &Ctx) -> Result<(), Reply> {
    if !ctx.client.is_master
        && ctx.shared.repl.is_replica()
        && ctx.shared.config.load().replica_read_only
    {
        return Err(err("READONLY You can't write against a read only replica."));
    }
    Ok(())
}

/// Subcommand arities, Redis convention (counting FUNCTION and the name).
fn arity(sub: &[u8]) -> Option<(&'static str, i32)> {
    const SUBS: [(&str, i32); 9] = [
        ("load", -3),
        ("delete", 3),
        ("list", -2),
        ("dump", 2),
        ("restore", -3),
        ("flush", -2),
        ("stats", 2),
        ("kill", 2),
        ("help", 2),
    ];
    SUBS.iter().find(|(n, _)| is(sub, n)).copied()
}

fn function(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    let Some((name, want)) = arity(sub) else {
        return Err(Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try FUNCTION HELP.",
            String::from_utf8_lossy(sub.get(..sub.len().min(128)).unwrap_or_default())
        )));
    };
    let argc = a.len() as i32;
    if (want > 0 && argc != want) || (want < 0 && argc < -want) {
        return Err(Reply::Error(format!(
            "ERR wrong number of arguments for 'function|{name}' command"
        )));
    }
    match name {
        "load" => load(ctx, a),
        "delete" => delete(ctx, a),
        "list" => list(ctx, a),
        "dump" => Ok(Reply::bulk(rdb::functions_payload(
            &ctx.db.functions.sources(),
        ))),
        "restore" => restore(ctx, a),
        "flush" => flush(ctx, a),
        "stats" => stats(ctx),
        "kill" => Err(err("NOTBUSY No scripts in execution right now.")),
        _ => Ok(help()),
    }
}

fn subcommand_syntax_error(sub: &str) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try FUNCTION HELP."
    ))
}

/// Compiles and installs one library; its name, or Redis's error text
/// (without `ERR `).
fn install(ctx: &mut Ctx, code: &[u8], replace: bool) -> Result<String, String> {
    let sb = parse_shebang(code)?;
    if !sb.engine.eq_ignore_ascii_case(ENGINE) {
        return Err(format!("Engine '{}' not found", sb.engine));
    }
    let vm = ctx
        .scripts
        .functions
        .synced(&ctx.db.functions)
        .map_err(|r| match r {
            Reply::Error(e) => e.strip_prefix("ERR ").unwrap_or(&e).to_string(),
            _ => "functions VM unavailable".to_string(),
        })?;
    if vm.libs.contains_key(&sb.name) && !replace {
        return Err(format!("Library '{}' already exists", sb.name));
    }
    let fs = vm.compile(code, sb.body_at)?;
    if fs.is_empty() {
        return Err("No functions registered".into());
    }
    vm.check_collisions(&sb.name, &fs)?;
    vm.link(&sb.name, fs);
    ctx.db
        .functions
        .insert(sb.name.clone(), Bytes::copy_from_slice(code));
    vm.stamp = ctx.db.functions.stamp();
    Ok(sb.name)
}

fn load(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let mut replace = false;
    let mut pos = 2;
    while pos + 1 < a.len() {
        let opt = a.at(pos)?;
        pos += 1;
        if is(opt, "replace") {
            replace = true;
            continue;
        }
        return Err(Reply::Error(format!(
            "ERR Unknown option given: {}",
            String::from_utf8_lossy(opt)
        )));
    }
    let code = a
        .get(pos)
        .ok_or_else(|| err("ERR Function code is missing"))?;
    deny_on_replica(ctx)?;
    let name = install(ctx, code, replace).map_err(|m| Reply::Error(format!("ERR {m}")))?;
    // A change of data: propagated, and counted for the save rules.
    ctx.db.dirty += 1;
    Ok(Reply::bulk(name))
}

fn delete(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    deny_on_replica(ctx)?;
    let name = String::from_utf8_lossy(a.at(2)?).into_owned();
    let before = ctx.db.functions.stamp();
    if !ctx.db.functions.remove(&name) {
        return Err(err("ERR Library not found"));
    }
    if let Some(vm) = ctx
        .scripts
        .functions
        .vm
        .as_mut()
        .filter(|vm| vm.stamp == before)
    {
        vm.unlink(&name);
        vm.stamp = ctx.db.functions.stamp();
    }
    ctx.db.dirty += 1;
    Ok(Reply::Ok)
}

fn flush(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    if a.len() > 3 {
        return Err(subcommand_syntax_error("flush"));
    }
    if let Some(mode) = a.get(2) {
        if !is(mode, "sync") && !is(mode, "async") {
            return Err(err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option"));
        }
    }
    deny_on_replica(ctx)?;
    ctx.db.functions = Libraries::from_codes(BTreeMap::new());
    ctx.scripts.functions.vm = None;
    ctx.db.dirty += 1;
    Ok(Reply::Ok)
}

fn list(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let mut with_code = false;
    let mut pattern: Option<&Bytes> = None;
    let mut i = 2;
    while let Some(arg) = a.get(i) {
        if !with_code && is(arg, "withcode") {
            with_code = true;
        } else if pattern.is_none() && is(arg, "libraryname") {
            i += 1;
            pattern = Some(
                a.get(i)
                    .ok_or_else(|| err("ERR library name argument was not given"))?,
            );
        } else {
            return Err(Reply::Error(format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(arg)
            )));
        }
        i += 1;
    }
    let vm = ctx.scripts.functions.synced(&ctx.db.functions)?;
    let mut out = Vec::new();
    for (lib, names) in &vm.libs {
        if pattern.is_some_and(|p| !crate::glob::glob_match(p, lib.as_bytes(), true)) {
            continue;
        }
        let functions = names
            .iter()
            .filter_map(|n| vm.funcs.get(&n.to_ascii_lowercase()).map(|f| (n, f)))
            .map(|(n, f)| {
                let flags = FLAG_NAMES
                    .iter()
                    .filter(|(bit, _)| f.flags & bit != 0)
                    .map(|(_, name)| Reply::simple(name))
                    .collect();
                Reply::Map(vec![
                    (Reply::bulk("name"), Reply::bulk(n)),
                    (Reply::bulk("description"), Reply::bulk_opt(f.desc.as_ref())),
                    (Reply::bulk("flags"), Reply::Set(flags)),
                ])
            })
            .collect();
        let mut fields = vec![
            (Reply::bulk("library_name"), Reply::bulk(lib)),
            (Reply::bulk("engine"), Reply::bulk(ENGINE)),
            (Reply::bulk("functions"), Reply::Array(functions)),
        ];
        if with_code {
            let code = ctx
                .db
                .functions
                .codes()
                .get(lib)
                .cloned()
                .unwrap_or_default();
            fields.push((Reply::bulk("library_code"), Reply::Bulk(code)));
        }
        out.push(Reply::Map(fields));
    }
    Ok(Reply::Array(out))
}

fn restore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    #[derive(PartialEq)]
    enum Policy {
        Append,
        Replace,
        Flush,
    }
    if a.len() > 4 {
        return Err(subcommand_syntax_error("restore"));
    }
    let policy =
        match a.get(3) {
            None => Policy::Append,
            Some(p) if is(p, "append") => Policy::Append,
            Some(p) if is(p, "replace") => Policy::Replace,
            Some(p) if is(p, "flush") => Policy::Flush,
            Some(_) => return Err(err(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            )),
        };
    deny_on_replica(ctx)?;
    let sources =
        rdb::parse_functions_payload(a.at(2)?).map_err(|e| Reply::Error(format!("ERR {e}")))?;
    let fail = |m: String| Reply::Error(format!("ERR {m}"));
    // The payload's libraries, checked among themselves in a VM of their
    // own, as Redis loads them into a fresh library context first.
    let mut scratch = Vm::new().map_err(vm_error)?;
    let mut restored: BTreeMap<String, Bytes> = BTreeMap::new();
    let mut restored_funcs: Vec<String> = Vec::new();
    for code in &sources {
        let sb = parse_shebang(code).map_err(fail)?;
        if !sb.engine.eq_ignore_ascii_case(ENGINE) {
            return Err(fail(format!("Engine '{}' not found", sb.engine)));
        }
        if restored.contains_key(&sb.name) {
            return Err(fail(format!("Library '{}' already exists", sb.name)));
        }
        let fs = scratch.compile(code, sb.body_at).map_err(fail)?;
        if fs.is_empty() {
            return Err(fail("No functions registered".into()));
        }
        scratch.check_collisions(&sb.name, &fs).map_err(fail)?;
        restored_funcs.extend(fs.iter().map(|(n, _)| n.clone()));
        scratch.link(&sb.name, fs);
        restored.insert(sb.name, Bytes::copy_from_slice(code));
    }
    let mut merged = if policy == Policy::Flush {
        BTreeMap::new()
    } else {
        let vm = ctx.scripts.functions.synced(&ctx.db.functions)?;
        let mut kept = ctx.db.functions.codes().clone();
        for name in restored.keys() {
            if kept.contains_key(name) {
                if policy == Policy::Append {
                    return Err(fail(format!("Library {name} already exists")));
                }
                kept.remove(name);
            }
        }
        if let Some(f) = restored_funcs.iter().find(|f| {
            vm.funcs
                .get(&f.to_ascii_lowercase())
                .is_some_and(|existing| kept.contains_key(&existing.lib))
        }) {
            return Err(fail(format!("Function {f} already exists")));
        }
        kept
    };
    merged.extend(restored);
    ctx.db.functions = Libraries::from_codes(merged);
    ctx.scripts.functions.vm = Some(Vm::build(&ctx.db.functions)?);
    ctx.db.dirty += 1;
    Ok(Reply::Ok)
}

fn stats(ctx: &mut Ctx) -> CmdResult {
    ctx.scripts.functions.synced(&ctx.db.functions)?;
    let libs = ctx.db.functions.len();
    let funcs = ctx.scripts.functions.functions_count();
    // Functions run under the keyspace lock: no other client can ever see
    // one running, so `running_script` is always nil.
    Ok(Reply::Map(vec![
        (Reply::bulk("running_script"), Reply::Nil),
        (
            Reply::bulk("engines"),
            Reply::Map(vec![(
                Reply::bulk(ENGINE),
                Reply::Map(vec![
                    (Reply::bulk("libraries_count"), Reply::Int(libs as i64)),
                    (Reply::bulk("functions_count"), Reply::Int(funcs as i64)),
                ]),
            )]),
        ),
    ]))
}

fn help() -> Reply {
    let lines = [
        "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "LOAD [REPLACE] <FUNCTION CODE>",
        "    Create a new library with the given library name and code.",
        "DELETE <LIBRARY NAME>",
        "    Delete the given library.",
        "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
        "    Return general information on all the libraries:",
        "    * Library name",
        "    * The engine used to run the Library",
        "    * Library description",
        "    * Functions list",
        "    * Library code (if WITHCODE is given)",
        "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
        "STATS",
        "    Return information about the current function running:",
        "    * Function name",
        "    * Command used to run the function",
        "    * Duration in MS that the function is running",
        "    If no function is running, return nil",
        "    In addition, returns a list of available engines.",
        "KILL",
        "    Kill the current running function.",
        "FLUSH [ASYNC|SYNC]",
        "    Delete all the libraries.",
        "    When called without the optional mode argument, the behavior is determined by the",
        "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
        "    * ASYNC: Asynchronously flush the libraries.",
        "    * SYNC: Synchronously flush the libraries.",
        "DUMP",
        "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
        "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
        "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
        "    control how to handle existing libraries (default APPEND):",
        "    * FLUSH: delete all existing libraries.",
        "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
        "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
        "      libraries with the new libraries (notice that even on this option there is a chance of failure",
        "      in case of functions name collision with another library).",
        "HELP",
        "    Prints this help.",
    ];
    Reply::Array(lines.iter().map(|l| Reply::simple(l)).collect())
}

// ---- FCALL -------------------------------------------------------------------

fn fcall(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    fcall_generic(ctx, a, false)
}

fn fcall_ro(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    fcall_generic(ctx, a, true)
}

fn fcall_generic(ctx: &mut Ctx, a: &[Bytes], ro: bool) -> CmdResult {
    let name = String::from_utf8_lossy(a.at(1)?).to_ascii_lowercase();
    let vm = ctx.scripts.functions.synced(&ctx.db.functions)?;
    let Some((flags, shown)) = vm.funcs.get(&name).map(|f| (f.flags, f.name.clone())) else {
        return Err(err("ERR Function not found"));
    };
    let n =
        crate::resp::parse_i64(a.at(2)?).ok_or_else(|| err("ERR Bad number of keys provided"))?;
    if n > a.len() as i64 - 3 {
        return Err(err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let n = usize::try_from(n).map_err(|_| err("ERR Number of keys can't be negative"))?;
    if flags & NO_CLUSTER != 0 && ctx.shared.cluster.is_some() {
        return Err(err(
            "ERR Can not run script on cluster, 'no-cluster' flag is set.",
        ));
    }
    if flags & NO_WRITES == 0 {
        if !ctx.client.is_master
            && ctx.shared.repl.is_replica()
            && ctx.shared.config.load().replica_read_only
        {
            return Err(err(
                "READONLY Can not run script with write flag on readonly replica",
            ));
        }
        if ro {
            return Err(err(
                "ERR Can not execute a script with write flag using *_ro command.",
            ));
        }
    }
    let keys = a.get(3..3 + n).unwrap_or_default();
    let argv = a.rest(3 + n);
    let readonly = ro || flags & NO_WRITES != 0;
    // Taken out for the call: the callback's redis.call needs the whole
    // context, and FCALL is refused from scripts, so nothing re-enters.
    let Some(vm) = ctx.scripts.functions.vm.take() else {
        return Err(err("ERR Function not found"));
    };
    let result = run(&vm, ctx, (&name, &shown), keys, argv, readonly);
    ctx.scripts.functions.vm = Some(vm);
    result
}

fn run(
    vm: &Vm,
    ctx: &mut Ctx,
    (key, fname): (&str, &str),
    keys: &[Bytes],
    argv: &[Bytes],
    readonly: bool,
) -> CmdResult {
    let lua = &vm.lua;
    let func = vm
        .funcs
        .get(key)
        .ok_or_else(|| err("ERR Function not found"))?;
    let callback: Function = lua.registry_value(&func.callback).map_err(vm_error)?;
    let array = |items: &[Bytes]| -> mlua::Result<Table> {
        let t = lua.create_table()?;
        for (i, k) in items.iter().enumerate() {
            t.raw_set(i + 1, lua.create_string(k)?)?;
        }
        Ok(t)
    };
    let keys_t = array(keys).map_err(vm_error)?;
    let args_t = array(argv).map_err(vm_error)?;
    lua.remove_app_data::<RaisedAt>();
    let was_nested = std::mem::replace(&mut ctx.nested, true);
    let failure: RefCell<Option<(String, i64)>> = RefCell::new(None);
    let ctx_cell = RefCell::new(&mut *ctx);
    let outcome = lua.scope(|scope| {
        let call = scope.create_function(|lua, args: MultiValue| {
            let res = call_args(args).and_then(|argv| {
                let mut c = ctx_cell.borrow_mut();
                script_call(&mut c, &argv, readonly)
            });
            match res {
                Ok(r) => to_lua(lua, r),
                Err(e) => {
                    *failure.borrow_mut() = Some((e.clone(), current_line(lua)));
                    Err(mlua::Error::RuntimeError(e))
                }
            }
        })?;
        let pcall = scope.create_function(|lua, args: MultiValue| {
            let res = call_args(args).and_then(|argv| {
                let mut c = ctx_cell.borrow_mut();
                script_call(&mut c, &argv, readonly)
            });
            match res {
                Ok(r) => to_lua(lua, r),
                Err(e) => to_lua(lua, Reply::Error(e)),
            }
        })?;
        vm.redis.raw_set("call", call)?;
        vm.redis.raw_set("pcall", pcall)?;
        let r = vm.runner.call::<(bool, Value)>((callback, keys_t, args_t));
        // The scoped functions die with the scope.
        vm.redis.raw_set("call", Value::Nil)?;
        vm.redis.raw_set("pcall", Value::Nil)?;
        r
    });
    ctx.nested = was_nested;
    let suffix = |line: &str| format!(" script: {fname}, on @user_function:{line}.");
    match outcome {
        Ok((true, v)) => Ok(from_lua(v)),
        Ok((false, raised)) => {
            if let Some((msg, line)) = failure.into_inner() {
                return Err(Reply::Error(format!("{msg}{}", suffix(&line.to_string()))));
            }
            Err(Reply::Error(match raised {
                Value::String(s) => {
                    let text = String::from_utf8_lossy(&s.as_bytes()).into_owned();
                    let first = text.lines().next().unwrap_or_default();
                    match line_of(first) {
                        Some(line) => format!("ERR {first}{}", suffix(line)),
                        None => format!("ERR {first}"),
                    }
                }
                Value::Table(t) => match t.raw_get::<Value>("err") {
                    Ok(Value::String(e)) => {
                        let e = String::from_utf8_lossy(&e.as_bytes()).into_owned();
                        match lua.remove_app_data::<RaisedAt>() {
                            Some(RaisedAt(line)) => format!("{e}{}", suffix(&line.to_string())),
                            None => e,
                        }
                    }
                    _ => format!("Error running script {fname}, execution failure"),
                },
                Value::Error(e) => format!("ERR {}", root_message(&e)),
                _ => format!("Error running script {fname}, execution failure"),
            }))
        }
        Err(e) => Err(Reply::Error(format!("ERR {}", root_message(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libs(codes: &[&str]) -> Libraries {
        let mut m = BTreeMap::new();
        for c in codes {
            let sb = parse_shebang(c.as_bytes()).unwrap();
            m.insert(sb.name, Bytes::copy_from_slice(c.as_bytes()));
        }
        Libraries::from_codes(m)
    }

    #[test]
    fn libraries_register_their_functions_with_flags() {
        let l = libs(&["#!lua name=a\nredis.register_function('f', function() return 1 end)\n\
             redis.register_function{function_name='g', callback=function() return 2 end, flags={'no-writes', 'ALLOW-OOM'}, description='d'}"]);
        let vm = Vm::build(&l).unwrap();
        assert_eq!(vm.libs["a"], ["f", "g"]);
        assert_eq!(vm.funcs["g"].name, "g");
        assert_eq!(vm.funcs["g"].flags, NO_WRITES | ALLOW_OOM);
        assert_eq!(vm.funcs["g"].desc.as_deref(), Some("d"));
        assert_eq!(vm.stamp, l.stamp());
    }

    #[test]
    fn load_time_scope_is_restricted_and_errors_match_redis() {
        let mut vm = Vm::new().unwrap();
        let mut e = |code: &str| {
            let sb = parse_shebang(code.as_bytes()).unwrap();
            vm.compile(code.as_bytes(), sb.body_at).err().unwrap()
        };
        assert_eq!(
            e("#!lua name=l\nredis.call('set','a','b')"),
            "Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'call'"
        );
        assert_eq!(
            e("#!lua name=l\nlocal x = string.len('a')"),
            "Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'string'"
        );
        assert_eq!(
            e("#!lua name=l\nx = 1"),
            "Error registering functions: ERR user_function:2: Attempt to modify a readonly table"
        );
        assert_eq!(
            e("#!lua name=l\nlocal function f( "),
            "Error compiling function: user_function:2: <name> or '...' expected near '<eof>'"
        );
        assert_eq!(
            e("#!lua name=l\nredis.register_function{function_name='f', callback=function() end, flags={'bad'}}"),
            "Error registering functions: ERR unknown flag given"
        );
        assert_eq!(
            e("#!lua name=l\nredis.register_function('f', function() end)\nredis.register_function('f', function() end)"),
            "Error registering functions: ERR Function already exists in the library"
        );
    }

    #[test]
    fn version_num_is_redis_hex_form() {
        assert_eq!(version_num(), 0x00_07_00_0f);
    }
}
