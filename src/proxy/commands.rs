//! The proxy's command table: every Redis 7 command and subcommand, its
//! arity, flags and key specs, and how the proxy routes it.
//!
//! The data is `commands.tsv`, generated from a real redis-server's
//! `COMMAND INFO` by `gen_commands.py` (the key specs there are the source
//! of truth). Keys are found with Redis's own key-spec algorithm
//! (`getKeysUsingKeySpecs`), so numkeys commands (EVAL, ZUNIONSTORE, FCALL),
//! keyword-started keys (XREAD STREAMS, GEORADIUS STORE) and key steps
//! (MSET) are all covered; the two commands whose specs say "unknown"
//! (SORT, SORT_RO) have a hand-written rule, as in Redis. How a command is
//! routed ([`Route`]) is decided here once, so no command falls through to
//! a default by accident: `every_command_has_a_deliberate_route` checks it.

use bytes::Bytes;
use hashbrown::HashMap;
use std::sync::OnceLock;

const DATA: &str = include_str!("commands.tsv");

/// Command flags the proxy cares about.
pub mod flag {
    pub const WRITE: u32 = 1;
    pub const READONLY: u32 = 1 << 1;
    pub const BLOCKING: u32 = 1 << 2;
    pub const PUBSUB: u32 = 1 << 3;
    pub const MOVABLE_KEYS: u32 = 1 << 4;
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Begin {
    Index(i64),
    Keyword { word: Vec<u8>, start: i64 },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Find {
    Range { last: i64, step: i64, limit: i64 },
    Keynum { idx: i64, first: i64, step: i64 },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySpec {
    begin: Begin,
    find: Find,
}

/// How replies of a command sent to several nodes are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Integers added (DBSIZE, DEL, EXISTS ...).
    Sum,
    /// Arrays concatenated (KEYS).
    Concat,
    /// Every node must succeed; the first node's reply is returned
    /// (FLUSHALL, SCRIPT LOAD, FUNCTION LOAD).
    AllOk,
    /// Arrays of 0/1 combined element-wise with AND (SCRIPT EXISTS).
    AndArray,
    /// Success if any node succeeds (SCRIPT KILL, FUNCTION KILL).
    AnyOk,
}

/// Multi-key commands the proxy splits by slot and merges back in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// MGET: one array, values in key order.
    Mget,
    /// MSET: key/value pairs; atomic per slot group; OK when all are.
    Mset,
    /// DEL UNLINK EXISTS TOUCH: integer sum.
    Count,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Hello,
    Auth,
    Select,
    Reset,
    Readonly,
    Readwrite,
    Asking,
    Info,
    ClientSetname,
    ClientGetname,
    ClientId,
    ClientInfo,
    ClientList,
    ClientNoop,
    ClusterSlots,
    ClusterShards,
    ClusterNodes,
    ClusterInfo,
    ClusterMyid,
    ClusterKeyslot,
    ClusterEmpty,
    Role,
    AclWhoami,
    /// UNSUBSCRIBE family outside subscribe mode.
    Unsubscribe,
}

/// Transaction commands (`MULTI` is queued locally, `EXEC` sends the block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Txn {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// By the slot of its keys (all in one slot, else CROSSSLOT). A call
    /// with no keys (EVAL with numkeys 0) goes to any master.
    Keyed,
    /// Split per slot and merged.
    Split(Split),
    /// Keyless and stateless: any master answers the same.
    AnyMaster,
    /// To every master, replies merged.
    AllMasters(Merge),
    /// To every node, masters and replicas (CONFIG SET).
    AllNodes(Merge),
    /// SCAN with a cursor that also encodes which master is being scanned.
    Scan,
    /// CLUSTER COUNTKEYSINSLOT / GETKEYSINSLOT: to the owner of the slot
    /// given as argument.
    SlotArg,
    /// PUBLISH: to the master of the channel's slot. Any master would do
    /// (the cluster propagates messages), but proxy subscribers listen on
    /// the master of their first channel's slot, so this one delivers even
    /// before the bus does.
    Channel,
    /// Keyed, on a connection of this client's own, because it may block
    /// (BLPOP ...; XREAD/XREADGROUP only with BLOCK).
    Blocking,
    Local(Local),
    Txn(Txn),
    /// SUBSCRIBE PSUBSCRIBE SSUBSCRIBE: the client enters subscribe mode.
    Subscribe,
    /// Refused with a reason: per-node administration, replication, or
    /// connection state the proxy cannot share between clients.
    Unsupported(&'static str),
}

/// How a command's keys are found, decided once per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Exactly one key at this position (GET, SET, HSET ...): the hot path.
    One(usize),
    /// SORT / SORT_RO: options walked like Redis's `sortGetKeys`.
    Sort,
    /// MIGRATE: the key argument is empty in the KEYS form.
    Migrate,
    /// The general key-spec algorithm.
    Specs,
}

/// One command or subcommand (`config|get`).
#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    pub arity: i32,
    pub flags: u32,
    specs: Vec<KeySpec>,
    shape: Shape,
    pub route: Route,
    /// Index into [`Table::metric_names`]: the top-level command.
    pub metric: usize,
}

impl Command {
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Calls `f` with the position of every key of this call, in argument
    /// order. Positions are always inside `args`.
    pub fn for_each_key(&self, args: &[Bytes], mut f: impl FnMut(usize)) {
        let argc = args.len() as i64;
        match self.shape {
            Shape::One(i) => {
                if i < args.len() {
                    f(i);
                }
                return;
            }
            Shape::Sort => return sort_keys(args, &mut f),
            Shape::Migrate | Shape::Specs => {}
        }
        let migrate_keys_form = self.shape == Shape::Migrate
            && args.get(3).is_some_and(|k| k.is_empty())
            && args.iter().any(|a| a.eq_ignore_ascii_case(b"keys"));
        for spec in &self.specs {
            let first = match &spec.begin {
                Begin::Index(i) => *i,
                Begin::Keyword { word, start } => {
                    let (from, to) = if *start > 0 {
                        (*start, argc - 1)
                    } else {
                        (argc + start, 1)
                    };
                    let mut i = from;
                    let mut found = None;
                    loop {
                        if i >= argc || i < 1 {
                            break;
                        }
                        if args
                            .get(i as usize)
                            .is_some_and(|a| a.eq_ignore_ascii_case(word))
                        {
                            found = Some(i + 1);
                            break;
                        }
                        if i == to {
                            break;
                        }
                        i += if from <= to { 1 } else { -1 };
                    }
                    match found {
                        Some(i) => i,
                        None => continue,
                    }
                }
                Begin::Unknown => continue,
            };
            let (first, last, step) = match &spec.find {
                Find::Range { last, step, limit } => {
                    let end = if *last >= 0 {
                        first + last
                    } else if *limit <= 1 {
                        argc + last
                    } else {
                        first + ((argc - first) / limit + last)
                    };
                    (first, end, *step)
                }
                Find::Keynum {
                    idx,
                    first: fk,
                    step,
                } => {
                    let Some(n) = args
                        .get((first + idx) as usize)
                        .and_then(|a| crate::resp::parse_i64(a))
                        .filter(|n| *n >= 0)
                    else {
                        continue;
                    };
                    let start = first + fk;
                    // A client's numkeys may be anything up to i64::MAX.
                    (start, start.saturating_add(n).saturating_sub(1), *step)
                }
                Find::Unknown => continue,
            };
            if step <= 0 {
                continue;
            }
            let mut i = first;
            while i <= last {
                if i >= argc || i < 1 {
                    break;
                }
                if !(migrate_keys_form && i == 3) {
                    f(i as usize);
                }
                i += step;
            }
        }
    }

    /// Positions of this call's keys.
    pub fn key_positions(&self, args: &[Bytes]) -> Vec<usize> {
        let mut v = Vec::new();
        self.for_each_key(args, |i| v.push(i));
        v
    }

    /// Does the call have the right number of arguments?
    /// The position of the command's only key, for the commands that have
    /// exactly one at a fixed place (GET, SET, HSET ...).
    pub fn single_key(&self) -> Option<usize> {
        match self.shape {
            Shape::One(i) => Some(i),
            _ => None,
        }
    }

    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let a = i64::from(self.arity);
        if a >= 0 {
            argc == a
        } else {
            argc >= -a
        }
    }

    /// Redis's error for a wrong argument count.
    pub fn arity_error(&self) -> String {
        format!("ERR wrong number of arguments for '{}' command", self.name)
    }

    /// XREAD/XREADGROUP block only with the BLOCK option.
    pub fn blocks(&self, args: &[Bytes]) -> bool {
        match self.route {
            Route::Blocking if self.name.starts_with("xread") => {
                args.iter().any(|a| a.eq_ignore_ascii_case(b"block"))
            }
            Route::Blocking => true,
            _ => false,
        }
    }
}

/// SORT's STORE destination is found by walking its options, like Redis's
/// `sortGetKeys` (BY and GET patterns are not keys of this call).
fn sort_keys(args: &[Bytes], f: &mut impl FnMut(usize)) {
    if args.len() < 2 {
        return;
    }
    f(1);
    let mut i = 2;
    while i < args.len() {
        let a = args
            .get(i)
            .map(|b| b.to_ascii_lowercase())
            .unwrap_or_default();
        match a.as_slice() {
            b"limit" => i += 2,
            b"get" | b"by" => i += 1,
            b"store" => {
                if i + 1 < args.len() {
                    f(i + 1);
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
}

/// What the name in a request refers to.
pub enum Lookup<'a> {
    Found(&'a Command),
    /// Not a Redis 7 command: the text of Redis's error.
    Unknown(String),
}

pub struct Table {
    cmds: Vec<Command>,
    by_name: HashMap<Box<[u8]>, usize>,
    /// Top-level command names (metric labels), lower case.
    pub metric_names: Vec<String>,
    /// Number of commands and subcommands, for tests and INFO.
    pub len: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("commands.tsv line {line}: {reason}")]
pub struct TableError {
    line: usize,
    reason: String,
}

fn parse_spec(s: &str) -> Option<(KeySpec, bool)> {
    let mut parts = s.split('/');
    let begin = parts.next()?;
    let find = parts.next()?;
    let flags = parts.next()?;
    let b: Vec<&str> = begin.split(':').collect();
    let begin = match b.as_slice() {
        ["index", i] => Begin::Index(i.parse().ok()?),
        ["keyword", w, s] => Begin::Keyword {
            word: w.as_bytes().to_vec(),
            start: s.parse().ok()?,
        },
        ["unknown"] => Begin::Unknown,
        _ => return None,
    };
    let f: Vec<&str> = find.split(':').collect();
    let find = match f.as_slice() {
        ["range", l, s, lim] => Find::Range {
            last: l.parse().ok()?,
            step: s.parse().ok()?,
            limit: lim.parse().ok()?,
        },
        ["keynum", i, fk, s] => Find::Keynum {
            idx: i.parse().ok()?,
            first: fk.parse().ok()?,
            step: s.parse().ok()?,
        },
        ["unknown"] => Find::Unknown,
        _ => return None,
    };
    let not_key = flags.split(',').any(|f| f == "not_key");
    Some((KeySpec { begin, find }, not_key))
}

/// The route of every command whose keys alone do not decide it.
fn special_route(name: &str) -> Option<Route> {
    use Route::*;
    const PER_NODE: &str = "it is per node: run it on the nodes themselves";
    const CONN_STATE: &str = "it changes connection state the proxy shares between clients";
    const ADMIN: &str = "it administers one node: run it on the nodes themselves";
    Some(match name {
        "mget" => Split(self::Split::Mget),
        "mset" => Split(self::Split::Mset),
        "del" | "unlink" | "exists" | "touch" => Split(self::Split::Count),
        "ping" => Local(self::Local::Ping),
        "echo" => Local(self::Local::Echo),
        "quit" => Local(self::Local::Quit),
        "hello" => Local(self::Local::Hello),
        "auth" => Local(self::Local::Auth),
        "select" => Local(self::Local::Select),
        "reset" => Local(self::Local::Reset),
        "readonly" => Local(self::Local::Readonly),
        "readwrite" => Local(self::Local::Readwrite),
        "asking" => Local(self::Local::Asking),
        "info" => Local(self::Local::Info),
        "role" => Local(self::Local::Role),
        "client|setname" => Local(self::Local::ClientSetname),
        "client|getname" => Local(self::Local::ClientGetname),
        "client|id" => Local(self::Local::ClientId),
        "client|info" => Local(self::Local::ClientInfo),
        "client|list" => Local(self::Local::ClientList),
        "client|no-evict" => Local(self::Local::ClientNoop),
        "client|help" => AnyMaster,
        "client|caching" | "client|getredir" | "client|tracking" | "client|trackinginfo" => {
            Unsupported("client-side caching needs a connection of the client's own")
        }
        "client|kill" | "client|pause" | "client|unpause" | "client|unblock" | "client|reply" => {
            Unsupported(CONN_STATE)
        }
        "cluster|slots" => Local(self::Local::ClusterSlots),
        "cluster|shards" => Local(self::Local::ClusterShards),
        "cluster|nodes" => Local(self::Local::ClusterNodes),
        "cluster|info" => Local(self::Local::ClusterInfo),
        "cluster|myid" => Local(self::Local::ClusterMyid),
        "cluster|keyslot" => Local(self::Local::ClusterKeyslot),
        "cluster|replicas" | "cluster|slaves" | "cluster|links" => Local(self::Local::ClusterEmpty),
        "cluster|countkeysinslot" | "cluster|getkeysinslot" => SlotArg,
        "cluster|help" => AnyMaster,
        n if n.starts_with("cluster|") => Unsupported(ADMIN),
        "acl|whoami" => Local(self::Local::AclWhoami),
        "acl|cat" | "acl|help" | "acl|genpass" => AnyMaster,
        n if n.starts_with("acl|") => Unsupported(ADMIN),
        // COMMAND alone lists every command (clients call it at start).
        "command" => AnyMaster,
        n if n.starts_with("command|") => AnyMaster,
        "config|get" | "config|help" => AnyMaster,
        "config|set" => AllNodes(Merge::AllOk),
        "config|rewrite" | "config|resetstat" => Unsupported(ADMIN),
        "dbsize" => AllMasters(Merge::Sum),
        "keys" => AllMasters(Merge::Concat),
        "flushall" | "flushdb" => AllMasters(Merge::AllOk),
        "randomkey" => AnyMaster,
        "scan" => Scan,
        "script|load" | "script|flush" => AllMasters(Merge::AllOk),
        "script|exists" => AllMasters(Merge::AndArray),
        "script|kill" => AllMasters(Merge::AnyOk),
        "script|help" => AnyMaster,
        "script|debug" => Unsupported(CONN_STATE),
        "function|load" | "function|delete" | "function|flush" | "function|restore" => {
            AllMasters(Merge::AllOk)
        }
        "function|kill" => AllMasters(Merge::AnyOk),
        "function|list" | "function|dump" | "function|help" => AnyMaster,
        "function|stats" => Unsupported(PER_NODE),
        "memory|purge" => AllMasters(Merge::AllOk),
        "memory|help" => AnyMaster,
        "memory|doctor" | "memory|malloc-stats" | "memory|stats" => Unsupported(PER_NODE),
        n if n.starts_with("latency|") || n.starts_with("slowlog|") => {
            if n.ends_with("|help") {
                AnyMaster
            } else {
                Unsupported(PER_NODE)
            }
        }
        n if n.starts_with("module|") => Unsupported(ADMIN),
        "object|help" | "xinfo|help" | "xgroup|help" | "pubsub|help" => AnyMaster,
        // Subscriptions made through the proxy live on the masters; these
        // report what one master knows (shard channels: the one asked).
        n if n.starts_with("pubsub|") => AnyMaster,
        "publish" => Channel,
        "subscribe" | "psubscribe" | "ssubscribe" => Subscribe,
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => Local(self::Local::Unsubscribe),
        "multi" => Txn(self::Txn::Multi),
        "exec" => Txn(self::Txn::Exec),
        "discard" => Txn(self::Txn::Discard),
        "watch" => Txn(self::Txn::Watch),
        "unwatch" => Txn(self::Txn::Unwatch),
        "time" | "lastsave" | "lolwut" => AnyMaster,
        "save" | "bgsave" | "bgrewriteaof" => AllMasters(Merge::AllOk),
        "wait" => Unsupported(
            "it waits for the replicas of one connection's writes; the proxy shares connections",
        ),
        "monitor" | "sync" | "psync" | "replconf" => Unsupported(CONN_STATE),
        "replicaof" | "slaveof" | "failover" | "shutdown" | "debug" | "swapdb" | "pfselftest" => {
            Unsupported(ADMIN)
        }
        _ => return None,
    })
}

impl Table {
    pub fn parse(data: &str) -> Result<Table, TableError> {
        let mut cmds = Vec::new();
        let mut by_name = HashMap::new();
        let mut metric_names: Vec<String> = Vec::new();
        let mut metric_of: HashMap<String, usize> = HashMap::new();
        for (n, line) in data.lines().enumerate() {
            let err = |reason: &str| TableError {
                line: n + 1,
                reason: reason.to_string(),
            };
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let [name, arity, flags, _tips, specs] = cols.as_slice() else {
                return Err(err("expected 5 tab-separated columns"));
            };
            let arity: i32 = arity.parse().map_err(|_| err("bad arity"))?;
            let mut fl = 0;
            for f in flags.split(',') {
                fl |= match f {
                    "write" => flag::WRITE,
                    "readonly" => flag::READONLY,
                    "blocking" => flag::BLOCKING,
                    "pubsub" => flag::PUBSUB,
                    "movablekeys" => flag::MOVABLE_KEYS,
                    _ => 0,
                };
            }
            let mut key_specs = Vec::new();
            if *specs != "-" {
                for s in specs.split(';') {
                    // `not_key` specs (SPUBLISH's channel) still pick the
                    // node, so they are kept.
                    let (spec, _not_key) = parse_spec(s).ok_or_else(|| err("bad key spec"))?;
                    key_specs.push(spec);
                }
            }
            let top = name.split('|').next().unwrap_or(name).to_string();
            let metric = match metric_of.get(&top) {
                Some(i) => *i,
                None => {
                    metric_names.push(top.clone());
                    metric_of.insert(top.clone(), metric_names.len() - 1);
                    metric_names.len() - 1
                }
            };
            let route = match special_route(name) {
                Some(r) => r,
                None if fl & flag::BLOCKING != 0 => Route::Blocking,
                // SPUBLISH: the channel's slot picks the node (a
                // `not_key` spec, used for routing only).
                None if !key_specs.is_empty() => Route::Keyed,
                None => Route::Unsupported("the proxy does not know where this command belongs"),
            };
            let shape = match (*name, key_specs.as_slice()) {
                ("sort" | "sort_ro", _) => Shape::Sort,
                ("migrate", _) => Shape::Migrate,
                (
                    _,
                    [KeySpec {
                        begin: Begin::Index(i),
                        find:
                            Find::Range {
                                last: 0,
                                step: 1,
                                limit: 0,
                            },
                    }],
                ) if *i > 0 => Shape::One(*i as usize),
                _ => Shape::Specs,
            };
            by_name.insert(name.as_bytes().to_vec().into_boxed_slice(), cmds.len());
            cmds.push(Command {
                name: name.to_string(),
                arity,
                flags: fl,
                specs: key_specs,
                shape,
                route,
                metric,
            });
        }
        metric_names.push("other".into());
        let len = cmds.len();
        Ok(Table {
            cmds,
            by_name,
            metric_names,
            len,
        })
    }

    /// Metric index used for unknown commands.
    pub fn other_metric(&self) -> usize {
        self.metric_names.len() - 1
    }

    pub fn get(&self, name: &str) -> Option<&Command> {
        self.by_name
            .get(name.as_bytes())
            .and_then(|i| self.cmds.get(*i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Command> {
        self.cmds.iter()
    }

    #[cfg(test)]
    fn is_container(&self, lower: &[u8]) -> bool {
        // Containers have subcommands and no keys of their own.
        let mut probe = lower.to_vec();
        probe.push(b'|');
        self.by_name.keys().any(|k| k.starts_with(&probe))
    }

    /// The command `name` names if it has no subcommands (the hot path:
    /// no argument list, no error text). `None` sends the caller to
    /// [`lookup`](Self::lookup).
    pub fn lookup_plain(&self, name: &[u8]) -> Option<&Command> {
        let mut buf = [0u8; 32];
        let lower = buf.get_mut(..name.len())?;
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        let cmd = self.by_name.get(&*lower).and_then(|i| self.cmds.get(*i))?;
        (!self.has_subcommands(cmd)).then_some(cmd)
    }

    /// Finds the command (or subcommand) a request names.
    pub fn lookup(&self, args: &[Bytes]) -> Lookup<'_> {
        let Some(name) = args.first() else {
            return Lookup::Unknown("ERR empty command".into());
        };
        let mut buf = [0u8; 64];
        let lower: &[u8] = if name.len() <= buf.len() {
            let dst = buf.get_mut(..name.len()).unwrap_or_default();
            dst.copy_from_slice(name);
            dst.make_ascii_lowercase();
            dst
        } else {
            return Lookup::Unknown(unknown_command(args));
        };
        let Some(cmd) = self.by_name.get(lower).and_then(|i| self.cmds.get(*i)) else {
            return Lookup::Unknown(unknown_command(args));
        };
        if self.has_subcommands(cmd) {
            let Some(sub) = args.get(1) else {
                return Lookup::Found(cmd);
            };
            let mut full = lower.to_vec();
            full.push(b'|');
            full.extend(sub.iter().map(u8::to_ascii_lowercase));
            return match self
                .by_name
                .get(full.as_slice())
                .and_then(|i| self.cmds.get(*i))
            {
                Some(c) => Lookup::Found(c),
                None => Lookup::Unknown(format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    clip(sub),
                    cmd.name.to_ascii_uppercase()
                )),
            };
        }
        Lookup::Found(cmd)
    }

    fn has_subcommands(&self, cmd: &Command) -> bool {
        CONTAINERS.contains(&cmd.name.as_str())
    }
}

/// Commands with subcommands in Redis 7.0 (checked against the table by a
/// test, so the fast path does not scan the table).
const CONTAINERS: &[&str] = &[
    "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
    "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(128).collect()
}

/// Redis 7's text for an unknown command.
pub fn unknown_command(args: &[Bytes]) -> String {
    let name = args.first().map(|n| clip(n)).unwrap_or_default();
    let mut s = format!("ERR unknown command '{name}', with args beginning with: ");
    for a in args.iter().skip(1) {
        if s.len() > 256 {
            break;
        }
        s.push('\'');
        s.push_str(&clip(a));
        s.push_str("' ");
    }
    s
}

static TABLE: OnceLock<Result<Table, String>> = OnceLock::new();

/// The table built from the embedded data (once).
pub fn table() -> Result<&'static Table, String> {
    TABLE
        .get_or_init(|| Table::parse(DATA).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> &'static Table {
        table().unwrap()
    }

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn keys(s: &str) -> Vec<String> {
        let a = args(s);
        match t().lookup(&a) {
            Lookup::Found(c) => c
                .key_positions(&a)
                .into_iter()
                .map(|i| String::from_utf8_lossy(&a[i]).into_owned())
                .collect(),
            Lookup::Unknown(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_table_is_complete() {
        // Redis 7.0 has 240 top-level commands (COMMAND COUNT).
        let top = t().iter().filter(|c| !c.name.contains('|')).count();
        assert_eq!(top, 240);
        assert!(t().len > 360);
        for c in CONTAINERS {
            assert!(t().is_container(c.as_bytes()), "{c}");
        }
        let containers = t()
            .iter()
            .filter(|c| !c.name.contains('|') && t().is_container(c.name.as_bytes()))
            .count();
        assert_eq!(containers, CONTAINERS.len());
    }

    #[test]
    fn every_command_has_a_deliberate_route() {
        for c in t().iter() {
            if CONTAINERS.contains(&c.name.as_str()) {
                continue;
            }
            assert_ne!(
                c.route,
                Route::Unsupported("the proxy does not know where this command belongs"),
                "{} has no route",
                c.name
            );
            // A keyed route needs key specs, or the call would go anywhere.
            if matches!(c.route, Route::Keyed | Route::Blocking | Route::Split(_)) {
                assert!(!c.specs.is_empty() || c.name == "sort", "{}", c.name);
            }
            // Any command with keys is routed by them (or split), never
            // sent to an arbitrary node.
            if !c.specs.is_empty() {
                // (SSUBSCRIBE/SUNSUBSCRIBE route by channel slot in
                // subscribe mode.)
                assert!(
                    matches!(
                        c.route,
                        Route::Keyed
                            | Route::Blocking
                            | Route::Split(_)
                            | Route::Txn(Txn::Watch)
                            | Route::Subscribe
                            | Route::Local(Local::Unsubscribe)
                    ),
                    "{} has keys but route {:?}",
                    c.name,
                    c.route
                );
            }
        }
    }

    #[test]
    fn first_key_all_keys_and_steps() {
        assert_eq!(keys("GET k"), ["k"]);
        assert_eq!(keys("set k v EX 10"), ["k"]);
        assert_eq!(keys("MSET a 1 b 2 c 3"), ["a", "b", "c"]);
        assert_eq!(keys("MGET a b c"), ["a", "b", "c"]);
        assert_eq!(keys("DEL a b"), ["a", "b"]);
        assert_eq!(keys("RENAME a b"), ["a", "b"]);
        assert_eq!(keys("SMOVE a b m"), ["a", "b"]);
        assert_eq!(keys("SINTERSTORE d a b"), ["d", "a", "b"]);
        assert_eq!(keys("BLPOP a b 0"), ["a", "b"]);
        assert_eq!(keys("BLMOVE a b LEFT RIGHT 0"), ["a", "b"]);
        assert_eq!(keys("LMOVE a b LEFT RIGHT"), ["a", "b"]);
        assert_eq!(keys("OBJECT ENCODING k"), ["k"]);
        assert_eq!(keys("MEMORY USAGE k SAMPLES 5"), ["k"]);
        assert_eq!(keys("XINFO STREAM s"), ["s"]);
        assert_eq!(keys("XGROUP CREATE s g $"), ["s"]);
        assert_eq!(keys("BITOP AND d a b"), ["d", "a", "b"]);
        assert_eq!(keys("PFCOUNT a b"), ["a", "b"]);
        assert_eq!(keys("COPY a b"), ["a", "b"]);
        assert_eq!(keys("SPUBLISH ch m"), ["ch"]);
        assert_eq!(keys("SSUBSCRIBE a b"), ["a", "b"]);
        assert_eq!(keys("WATCH a b"), ["a", "b"]);
    }

    #[test]
    fn numkeys_keywords_and_special_cases() {
        assert_eq!(keys("EVAL s 2 a b x y"), ["a", "b"]);
        assert_eq!(keys("EVALSHA s 0 x"), Vec::<String>::new());
        assert_eq!(keys("FCALL f 1 a x"), ["a"]);
        assert_eq!(keys("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), ["d", "a", "b"]);
        assert_eq!(keys("ZUNION 2 a b"), ["a", "b"]);
        assert_eq!(keys("LMPOP 2 a b LEFT"), ["a", "b"]);
        assert_eq!(keys("BLMPOP 0 2 a b LEFT"), ["a", "b"]);
        assert_eq!(keys("SINTERCARD 2 a b LIMIT 1"), ["a", "b"]);
        assert_eq!(keys("XREAD COUNT 2 STREAMS a b 0 0"), ["a", "b"]);
        assert_eq!(keys("XREADGROUP GROUP g c BLOCK 0 STREAMS a 0"), ["a"]);
        assert_eq!(keys("GEORADIUS k 0 0 1 km STORE d"), ["k", "d"]);
        assert_eq!(keys("GEORADIUSBYMEMBER k m 1 km STOREDIST d"), ["k", "d"]);
        assert_eq!(keys("SORT k BY w GET o LIMIT 0 1 STORE d"), ["k", "d"]);
        assert_eq!(keys("SORT k GET store"), ["k"]);
        assert_eq!(keys("MIGRATE h 1 k 0 10"), ["k"]);
        assert_eq!(keys("MIGRATE h 1  0 10 KEYS a b"), ["a", "b"]);
        // Bad numkeys: no keys, and the node reports the error.
        assert_eq!(keys("EVAL s x a"), Vec::<String>::new());
        assert_eq!(keys("EVAL s 5 a"), ["a"]);
        assert_eq!(keys("EVAL s 9223372036854775807 a b"), ["a", "b"]);
        assert_eq!(keys("ZUNIONSTORE d 9223372036854775807 a"), ["d", "a"]);
    }

    #[test]
    fn routes_of_families() {
        let r = |s: &str| match t().lookup(&args(s)) {
            Lookup::Found(c) => c.route,
            Lookup::Unknown(e) => panic!("{e}"),
        };
        assert_eq!(r("GET k"), Route::Keyed);
        assert_eq!(r("MGET a"), Route::Split(Split::Mget));
        assert_eq!(r("MSETNX a 1"), Route::Keyed);
        assert_eq!(r("DBSIZE"), Route::AllMasters(Merge::Sum));
        assert_eq!(r("config get save"), Route::AnyMaster);
        assert_eq!(r("CONFIG SET a b"), Route::AllNodes(Merge::AllOk));
        assert_eq!(r("SCRIPT LOAD x"), Route::AllMasters(Merge::AllOk));
        assert_eq!(r("BLPOP a 0"), Route::Blocking);
        assert_eq!(r("CLUSTER SLOTS"), Route::Local(Local::ClusterSlots));
        assert_eq!(r("COMMAND"), Route::AnyMaster);
        assert_eq!(r("COMMAND INFO get"), Route::AnyMaster);
        assert_eq!(r("command count"), Route::AnyMaster);
        assert_eq!(r("SUBSCRIBE a"), Route::Subscribe);
        assert_eq!(r("SPUBLISH a m"), Route::Keyed);
        assert!(matches!(r("MONITOR"), Route::Unsupported(_)));
        assert!(matches!(
            r("CLUSTER SETSLOT 1 STABLE"),
            Route::Unsupported(_)
        ));
    }

    #[test]
    fn unknown_names_and_arity() {
        match t().lookup(&args("FOO a b")) {
            Lookup::Unknown(e) => assert_eq!(
                e,
                "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
            ),
            Lookup::Found(_) => panic!(),
        }
        match t().lookup(&args("CONFIG foo")) {
            Lookup::Unknown(e) => assert_eq!(e, "ERR unknown subcommand 'foo'. Try CONFIG HELP."),
            Lookup::Found(_) => panic!(),
        }
        let Lookup::Found(get) = t().lookup(&args("get")) else {
            panic!()
        };
        assert!(!get.arity_ok(1));
        assert!(get.arity_ok(2));
        assert_eq!(
            get.arity_error(),
            "ERR wrong number of arguments for 'get' command"
        );
        let Lookup::Found(cg) = t().lookup(&args("config get")) else {
            panic!()
        };
        assert!(!cg.arity_ok(2));
        assert_eq!(
            cg.arity_error(),
            "ERR wrong number of arguments for 'config|get' command"
        );
    }

    #[test]
    fn the_single_key_fast_path_agrees_with_the_key_specs() {
        // Every command on the fast path, called with extra arguments,
        // finds the same keys as the general algorithm.
        let mut fast = 0;
        for c in t().iter() {
            let Shape::One(_) = c.shape else { continue };
            fast += 1;
            let general = Command {
                shape: Shape::Specs,
                ..c.clone()
            };
            for argc in 1..6 {
                let args: Vec<Bytes> = (0..argc).map(|i| Bytes::from(format!("a{i}"))).collect();
                assert_eq!(
                    c.key_positions(&args),
                    general.key_positions(&args),
                    "{} argc {argc}",
                    c.name
                );
            }
        }
        assert!(fast > 100, "{fast}");
    }

    #[test]
    fn xread_blocks_only_with_block() {
        let a = args("XREAD STREAMS a 0");
        let Lookup::Found(c) = t().lookup(&a) else {
            panic!()
        };
        assert!(!c.blocks(&a));
        let a = args("XREAD BLOCK 0 STREAMS a 0");
        assert!(c.blocks(&a));
    }
}
