//! Which arguments of a command are keys: Redis 7's key specs for every
//! command and subcommand, shared by the node's slot checks and the proxy's
//! router so both always agree on where a call belongs.
//!
//! The data is `commands.tsv`, generated from a real redis-server's
//! `COMMAND INFO` by `gen_commands.py` (the key specs there are the source
//! of truth). Keys are found with Redis's own key-spec algorithm
//! (`getKeysUsingKeySpecs`), so numkeys commands (EVAL, ZUNIONSTORE, FCALL),
//! keyword-started keys (XREAD STREAMS, GEORADIUS STORE) and key steps
//! (MSET) are all covered; the two commands whose specs say "unknown"
//! (SORT, SORT_RO) and MIGRATE's KEYS form have a hand-written rule, as in
//! Redis.

use bytes::Bytes;
use hashbrown::HashMap;
use std::sync::OnceLock;

const DATA: &str = include_str!("commands.tsv");

/// Command flags from the table that callers route by.
pub mod flag {
    pub const WRITE: u32 = 1;
    pub const READONLY: u32 = 1 << 1;
    pub const BLOCKING: u32 = 1 << 2;
    pub const PUBSUB: u32 = 1 << 3;
    pub const MOVABLE_KEYS: u32 = 1 << 4;
    /// EVAL, FCALL ...: a call may have no keys at all.
    pub const NO_MANDATORY_KEYS: u32 = 1 << 5;
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
    /// SPUBLISH's channel: routes like a key but is not one.
    not_key: bool,
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

/// The key specs of one command, with the way to apply them.
#[derive(Debug, Clone)]
pub struct KeyFinder {
    specs: Vec<KeySpec>,
    shape: Shape,
}

impl KeyFinder {
    /// Does the command have key specs at all (channels included)?
    pub fn has_specs(&self) -> bool {
        !self.specs.is_empty()
    }

    /// Does the command take keys (Redis's `doesCommandHaveKeys`)?
    pub fn takes_keys(&self) -> bool {
        self.specs.iter().any(|s| !s.not_key)
    }

    /// The position of the command's only key, for the commands that have
    /// exactly one at a fixed place (GET, SET, HSET ...).
    pub fn single_key(&self) -> Option<usize> {
        match self.shape {
            Shape::One(i) => Some(i),
            _ => None,
        }
    }

    /// Positions of this call's keys.
    pub fn key_positions(&self, args: &[Bytes]) -> Vec<usize> {
        let mut v = Vec::new();
        self.for_each_key(args, |i| v.push(i));
        v
    }

    /// Calls `f` with the position of every key of this call, in argument
    /// order. Positions are always inside `args`.
    pub fn for_each_key(&self, args: &[Bytes], mut f: impl FnMut(usize)) {
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
        // As Redis's getKeysUsingKeySpecs: one spec that does not fit the
        // call (bad numkeys, keys past the end) voids them all, and the
        // call has no keys; the command then reports its own error.
        if self.specs.iter().any(|spec| spec.range(args).is_err()) {
            return;
        }
        let migrate_keys_form = self.shape == Shape::Migrate
            && args.get(3).is_some_and(|k| k.is_empty())
            && args.iter().any(|a| a.eq_ignore_ascii_case(b"keys"));
        for spec in &self.specs {
            let Ok(Some((first, last, step))) = spec.range(args) else {
                continue;
            };
            for i in (first..=last).step_by(step) {
                if !(migrate_keys_form && i == 3) {
                    f(i);
                }
            }
        }
    }
}

/// A spec that cannot apply to a call.
struct Invalid;

impl KeySpec {
    /// Where the spec's keys begin (`begin_search`); `Ok(None)` when
    /// its keyword is not in the call.
    fn first(&self, args: &[Bytes]) -> Result<Option<i64>, Invalid> {
        let argc = args.len() as i64;
        match &self.begin {
            Begin::Index(i) => Ok(Some(*i)),
            Begin::Keyword { word, start } => {
                let (from, to) = if *start > 0 {
                    (*start, argc - 1)
                } else {
                    (argc + start, 1)
                };
                let mut i = from;
                while i != to && (1..argc).contains(&i) {
                    if args
                        .get(i as usize)
                        .is_some_and(|a| a.eq_ignore_ascii_case(word))
                    {
                        return Ok(Some(i + 1));
                    }
                    i += if from <= to { 1 } else { -1 };
                }
                Ok(None)
            }
            Begin::Unknown => Err(Invalid),
        }
    }

    /// First key, last key and step of this spec in a call (`find_keys`),
    /// always inside `args`; `Ok(None)` when the spec finds nothing.
    fn range(&self, args: &[Bytes]) -> Result<Option<(usize, usize, usize)>, Invalid> {
        let Some(first) = self.first(args)? else {
            return Ok(None);
        };
        let argc = args.len() as i64;
        let (first, last, step) = match &self.find {
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
                let n = args
                    .get(usize::try_from(first + idx).map_err(|_| Invalid)?)
                    .and_then(|a| crate::util::parse_i64(a))
                    .filter(|n| *n >= 0)
                    .ok_or(Invalid)?;
                let start = first + fk;
                // A client's numkeys may be anything up to i64::MAX.
                (start, start.saturating_add(n).saturating_sub(1), *step)
            }
            Find::Unknown => return Err(Invalid),
        };
        if last >= argc || last < first || first >= argc || first < 1 || step < 1 {
            return Err(Invalid);
        }
        Ok(Some((first as usize, last as usize, step as usize)))
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

/// One command or subcommand (`config|get`) of Redis 7.0.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    /// Lower case; `container|sub` for subcommands.
    pub name: String,
    pub arity: i32,
    pub flags: u32,
    pub keys: KeyFinder,
}

impl CommandInfo {
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
}

/// Commands with subcommands in Redis 7.0 (checked against the table by a
/// test, so lookups do not scan the table).
pub const CONTAINERS: &[&str] = &[
    "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
    "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

/// What the name in a request refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// Index of the command or subcommand in [`Catalog::iter`] order.
    Found(usize),
    /// Not a Redis 7 command.
    UnknownCommand,
    /// A container (CONFIG) whose subcommand is not one of Redis 7.
    UnknownSubcommand,
}

/// Every Redis 7.0 command and subcommand, by name.
pub struct Catalog {
    cmds: Vec<CommandInfo>,
    by_name: HashMap<Box<[u8]>, usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("commands.tsv line {line}: {reason}")]
pub struct CatalogError {
    line: usize,
    reason: String,
}

fn parse_spec(s: &str) -> Option<KeySpec> {
    let mut parts = s.split('/');
    let begin = parts.next()?;
    let find = parts.next()?;
    // `not_key` specs (SPUBLISH's channel) still pick the node, so they
    // are kept like the others.
    let not_key = parts.next()?.split(',').any(|f| f == "not_key");
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
    Some(KeySpec {
        begin,
        find,
        not_key,
    })
}

fn shape_of(name: &str, specs: &[KeySpec]) -> Shape {
    match (name, specs) {
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
                ..
            }],
        ) if *i > 0 => Shape::One(*i as usize),
        _ => Shape::Specs,
    }
}

fn parse_flags(flags: &str) -> u32 {
    flags
        .split(',')
        .map(|f| match f {
            "write" => flag::WRITE,
            "readonly" => flag::READONLY,
            "blocking" => flag::BLOCKING,
            "pubsub" => flag::PUBSUB,
            "movablekeys" => flag::MOVABLE_KEYS,
            "no_mandatory_keys" => flag::NO_MANDATORY_KEYS,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

impl Catalog {
    pub fn parse(data: &str) -> Result<Catalog, CatalogError> {
        let mut cmds = Vec::new();
        let mut by_name = HashMap::new();
        for (n, line) in data.lines().enumerate() {
            let err = |reason: &str| CatalogError {
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
            let mut key_specs = Vec::new();
            if *specs != "-" {
                for s in specs.split(';') {
                    key_specs.push(parse_spec(s).ok_or_else(|| err("bad key spec"))?);
                }
            }
            by_name.insert(name.as_bytes().to_vec().into_boxed_slice(), cmds.len());
            cmds.push(CommandInfo {
                name: name.to_string(),
                arity,
                flags: parse_flags(flags),
                keys: KeyFinder {
                    shape: shape_of(name, &key_specs),
                    specs: key_specs,
                },
            });
        }
        Ok(Catalog { cmds, by_name })
    }

    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &CommandInfo> {
        self.cmds.iter()
    }

    pub fn get(&self, name: &str) -> Option<&CommandInfo> {
        self.cmds.get(self.index_of(name)?)
    }

    /// The index of a lower-case name (`config|get` for subcommands).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name.as_bytes()).copied()
    }

    pub fn at(&self, index: usize) -> Option<&CommandInfo> {
        self.cmds.get(index)
    }

    /// The index of the command `name` names if it has no subcommands
    /// (the hot path: no argument list). `None` sends the caller to
    /// [`lookup`](Self::lookup).
    pub fn plain_index(&self, name: &[u8]) -> Option<usize> {
        let mut buf = [0u8; 32];
        let lower = buf.get_mut(..name.len())?;
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        let i = *self.by_name.get(&*lower)?;
        let cmd = self.cmds.get(i)?;
        (!is_container(&cmd.name)).then_some(i)
    }

    /// Finds the command (or, for a container, the subcommand) a request
    /// names. A container named without a subcommand is found itself.
    pub fn lookup(&self, args: &[Bytes]) -> Named {
        let Some(name) = args.first() else {
            return Named::UnknownCommand;
        };
        let mut buf = [0u8; 64];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return Named::UnknownCommand;
        };
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        let Some(&i) = self.by_name.get(&*lower) else {
            return Named::UnknownCommand;
        };
        let is_cont = self.cmds.get(i).is_some_and(|c| is_container(&c.name));
        let (true, Some(sub)) = (is_cont, args.get(1)) else {
            return Named::Found(i);
        };
        let mut full = lower.to_vec();
        full.push(b'|');
        full.extend(sub.iter().map(u8::to_ascii_lowercase));
        match self.by_name.get(full.as_slice()) {
            Some(&s) => Named::Found(s),
            None => Named::UnknownSubcommand,
        }
    }

    /// The key finder of the command a request names, if Redis 7 knows it.
    pub fn keys_of(&self, args: &[Bytes]) -> Option<&KeyFinder> {
        match self.lookup(args) {
            Named::Found(i) => self.cmds.get(i).map(|c| &c.keys),
            Named::UnknownCommand | Named::UnknownSubcommand => None,
        }
    }
}

fn is_container(name: &str) -> bool {
    CONTAINERS.contains(&name)
}

static CATALOG: OnceLock<Result<Catalog, String>> = OnceLock::new();

/// The catalog built from the embedded data (once).
pub fn catalog() -> Result<&'static Catalog, String> {
    CATALOG
        .get_or_init(|| Catalog::parse(DATA).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> &'static Catalog {
        catalog().unwrap()
    }

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn keys(s: &str) -> Vec<String> {
        let a = args(s);
        let finder = c().keys_of(&a).unwrap_or_else(|| panic!("{s}"));
        finder
            .key_positions(&a)
            .into_iter()
            .map(|i| String::from_utf8_lossy(&a[i]).into_owned())
            .collect()
    }

    #[test]
    fn the_catalog_is_complete() {
        // Redis 7.0 has 240 top-level commands (COMMAND COUNT).
        let top = c().iter().filter(|x| !x.name.contains('|')).count();
        assert_eq!(top, 240);
        assert!(c().len() > 360);
        let has_subs = |name: &str| {
            let probe = format!("{name}|");
            c().iter().any(|x| x.name.starts_with(&probe))
        };
        for name in CONTAINERS {
            assert!(has_subs(name), "{name}");
        }
        let containers = c()
            .iter()
            .filter(|x| !x.name.contains('|') && has_subs(&x.name))
            .count();
        assert_eq!(containers, CONTAINERS.len());
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
        assert_eq!(keys("RESTORE-ASKING k 0 x"), ["k"]);
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
        // A spec that does not fit voids the call's keys, as in Redis
        // (the command reports the error).
        let none = Vec::<String>::new();
        assert_eq!(keys("EVAL s x a"), none);
        assert_eq!(keys("EVAL s 5 a"), none);
        assert_eq!(keys("EVAL s 9223372036854775807 a b"), none);
        assert_eq!(keys("ZUNIONSTORE d 9223372036854775807 a"), none);
        assert_eq!(keys("ZUNIONSTORE d 0 a"), none);
        assert_eq!(keys("LMPOP 0 a LEFT"), none);
        assert_eq!(keys("LMPOP -1 a LEFT"), none);
        // The keyword is not looked for in the last argument (as Redis).
        assert_eq!(keys("GEORADIUS k 0 0 1 km STORE"), ["k"]);
    }

    #[test]
    fn names_and_subcommands() {
        assert_eq!(c().lookup(&args("FOO a")), Named::UnknownCommand);
        assert_eq!(c().lookup(&args("CONFIG foo")), Named::UnknownSubcommand);
        let Named::Found(i) = c().lookup(&args("config GET x")) else {
            panic!()
        };
        assert_eq!(c().at(i).unwrap().name, "config|get");
        let Named::Found(i) = c().lookup(&args("CONFIG")) else {
            panic!()
        };
        assert_eq!(c().at(i).unwrap().name, "config");
        assert_eq!(c().plain_index(b"CONFIG"), None);
        assert!(c().plain_index(b"Get").is_some());
        assert_eq!(
            c().lookup(&[Bytes::from(vec![b'a'; 100])]),
            Named::UnknownCommand
        );
    }

    #[test]
    fn the_single_key_fast_path_agrees_with_the_key_specs() {
        // Every command on the fast path, called with extra arguments,
        // finds the same keys as the general algorithm.
        let mut fast = 0;
        for cmd in c().iter() {
            let Shape::One(_) = cmd.keys.shape else {
                continue;
            };
            fast += 1;
            let general = KeyFinder {
                shape: Shape::Specs,
                ..cmd.keys.clone()
            };
            for argc in 1..6 {
                let args: Vec<Bytes> = (0..argc).map(|i| Bytes::from(format!("a{i}"))).collect();
                assert_eq!(
                    cmd.keys.key_positions(&args),
                    general.key_positions(&args),
                    "{} argc {argc}",
                    cmd.name
                );
            }
        }
        assert!(fast > 100, "{fast}");
    }
}
