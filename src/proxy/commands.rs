//! The proxy's command table: every Redis 7 command and subcommand, its
//! arity and flags (from the shared key-spec catalog, `cluster::keyspec`),
//! and how the proxy routes it.
//!
//! How a command is routed ([`Route`]) is decided here once, so no command
//! falls through to a default by accident:
//! `every_command_has_a_deliberate_route` checks it.

use crate::cluster::keyspec::{self, KeyFinder, Named};
use bytes::Bytes;
use std::sync::OnceLock;

pub use crate::cluster::keyspec::flag;

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

/// One command or subcommand (`config|get`).
#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    pub arity: i32,
    pub flags: u32,
    pub keys: KeyFinder,
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
    pub fn for_each_key(&self, args: &[Bytes], f: impl FnMut(usize)) {
        self.keys.for_each_key(args, f)
    }

    /// Positions of this call's keys.
    pub fn key_positions(&self, args: &[Bytes]) -> Vec<usize> {
        self.keys.key_positions(args)
    }

    /// The position of the command's only key, for the commands that have
    /// exactly one at a fixed place (GET, SET, HSET ...).
    pub fn single_key(&self) -> Option<usize> {
        self.keys.single_key()
    }

    /// Does the call have the right number of arguments?
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

/// What the name in a request refers to.
pub enum Lookup<'a> {
    Found(&'a Command),
    /// Not a Redis 7 command: the text of Redis's error.
    Unknown(String),
}

/// The catalog's commands in its order, each with its route.
pub struct Table {
    catalog: &'static keyspec::Catalog,
    cmds: Vec<Command>,
    /// Top-level command names (metric labels), lower case.
    pub metric_names: Vec<String>,
    /// Number of commands and subcommands, for tests and INFO.
    pub len: usize,
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
    pub fn new(catalog: &'static keyspec::Catalog) -> Table {
        let mut cmds = Vec::with_capacity(catalog.len());
        let mut metric_names: Vec<String> = Vec::new();
        let mut metric_of: hashbrown::HashMap<String, usize> = hashbrown::HashMap::new();
        for info in catalog.iter() {
            let name = info.name.as_str();
            let top = name.split('|').next().unwrap_or(name).to_string();
            let metric = match metric_of.get(&top) {
                Some(i) => *i,
                None => {
                    metric_names.push(top.clone());
                    metric_of.insert(top, metric_names.len() - 1);
                    metric_names.len() - 1
                }
            };
            let route = match special_route(name) {
                Some(r) => r,
                None if info.has(flag::BLOCKING) => Route::Blocking,
                // SPUBLISH: the channel's slot picks the node (a
                // `not_key` spec, used for routing only).
                None if info.keys.has_specs() => Route::Keyed,
                None => Route::Unsupported("the proxy does not know where this command belongs"),
            };
            cmds.push(Command {
                name: info.name.clone(),
                arity: info.arity,
                flags: info.flags,
                keys: info.keys.clone(),
                route,
                metric,
            });
        }
        metric_names.push("other".into());
        let len = cmds.len();
        Table {
            catalog,
            cmds,
            metric_names,
            len,
        }
    }

    /// Metric index used for unknown commands.
    pub fn other_metric(&self) -> usize {
        self.metric_names.len() - 1
    }

    pub fn get(&self, name: &str) -> Option<&Command> {
        self.cmds.get(self.catalog.index_of(name)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Command> {
        self.cmds.iter()
    }

    /// The command `name` names if it has no subcommands (the hot path:
    /// no argument list, no error text). `None` sends the caller to
    /// [`lookup`](Self::lookup).
    pub fn lookup_plain(&self, name: &[u8]) -> Option<&Command> {
        self.cmds.get(self.catalog.plain_index(name)?)
    }

    /// Finds the command (or subcommand) a request names.
    pub fn lookup(&self, args: &[Bytes]) -> Lookup<'_> {
        match self.catalog.lookup(args) {
            Named::Found(i) => match self.cmds.get(i) {
                Some(c) => Lookup::Found(c),
                None => Lookup::Unknown(unknown_command(args)),
            },
            Named::UnknownCommand if args.is_empty() => Lookup::Unknown("ERR empty command".into()),
            Named::UnknownCommand => Lookup::Unknown(unknown_command(args)),
            Named::UnknownSubcommand => Lookup::Unknown(format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                args.get(1).map(|s| clip(s)).unwrap_or_default(),
                args.first()
                    .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                    .unwrap_or_default()
            )),
        }
    }
}

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

/// The table built over the shared catalog (once).
pub fn table() -> Result<&'static Table, String> {
    TABLE
        .get_or_init(|| keyspec::catalog().map(Table::new))
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

    #[test]
    fn the_table_covers_the_catalog() {
        assert_eq!(t().len, keyspec::catalog().unwrap().len());
        assert_eq!(t().get("config|get").unwrap().name, "config|get");
        let Lookup::Found(c) = t().lookup(&args("object encoding k")) else {
            panic!()
        };
        assert_eq!(c.key_positions(&args("object encoding k")), [2]);
    }

    #[test]
    fn every_command_has_a_deliberate_route() {
        for c in t().iter() {
            if keyspec::CONTAINERS.contains(&c.name.as_str()) {
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
                assert!(c.keys.has_specs() || c.name == "sort", "{}", c.name);
            }
            // Any command with keys is routed by them (or split), never
            // sent to an arbitrary node.
            if c.keys.has_specs() {
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
