//! Node configuration: redis.conf-style files, `--directive value` overrides,
//! and the typed view the node runs with.
//!
//! Every directive Redis 7.0 knows is accepted (operators start from the
//! stock redis.conf), with Redis's defaults (`redis_defaults.tsv`, taken from
//! `CONFIG GET *` of redis-server 7.0.15). The ones slotway acts on are
//! validated and typed in [`NodeConfig`]; the rest are kept so `CONFIG GET`
//! answers, and have no effect. An unknown directive is an error naming the
//! file and line, as with redis-server.

use crate::resp::split_args;
use crate::store::EvictionPolicy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DEFAULTS: &str = include_str!("redis_defaults.tsv");

/// Old names Redis still accepts, mapped to the name it stores.
const ALIASES: &[(&str, &str)] = &[
    ("slaveof", "replicaof"),
    ("slave-read-only", "replica-read-only"),
    ("slave-serve-stale-data", "replica-serve-stale-data"),
    ("slave-priority", "replica-priority"),
    ("slave-lazy-flush", "replica-lazy-flush"),
    ("slave-announce-ip", "replica-announce-ip"),
    ("slave-announce-port", "replica-announce-port"),
    ("slave-ignore-maxmemory", "replica-ignore-maxmemory"),
    ("min-slaves-to-write", "min-replicas-to-write"),
    ("min-slaves-max-lag", "min-replicas-max-lag"),
    ("repl-ping-slave-period", "repl-ping-replica-period"),
    (
        "cluster-slave-validity-factor",
        "cluster-replica-validity-factor",
    ),
    ("cluster-slave-no-failover", "cluster-replica-no-failover"),
    ("hash-max-ziplist-entries", "hash-max-listpack-entries"),
    ("hash-max-ziplist-value", "hash-max-listpack-value"),
    ("list-max-ziplist-size", "list-max-listpack-size"),
    ("zset-max-ziplist-entries", "zset-max-listpack-entries"),
    ("zset-max-ziplist-value", "zset-max-listpack-value"),
];

/// Directives that only make sense in a file and are accepted without effect.
const FILE_ONLY: &[&str] = &["rename-command", "user", "loadmodule", "sentinel"];

/// Directives whose repeated lines accumulate instead of replacing.
const ACCUMULATE: &[&str] = &["save"];

/// Directives whose value sets only the parts it names, keeping the rest
/// (`client-output-buffer-limit pubsub 1mb 0 0` leaves normal and replica).
const MERGED: &[&str] = &["client-output-buffer-limit"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("FATAL CONFIG FILE ERROR: {file}, line {line}: >>> '{text}': {reason}")]
    Directive {
        file: String,
        line: usize,
        text: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A CONFIG SET failure; the text follows Redis's wording.
    #[error("{0}")]
    Invalid(String),
}

/// Resolves aliases to the stored name.
pub fn canonical(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    ALIASES
        .iter()
        .find(|(a, _)| *a == lower)
        .map_or(lower, |(_, c)| (*c).to_string())
}

/// Parses Redis memory sizes: `512mb`, `1gb`, `100k` (k = 1000, kb = 1024).
pub fn parse_memory(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    u64::try_from(n).ok()?.checked_mul(mul)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Checks a value for the directives slotway acts on; `Err(reason)` uses
/// Redis's wording.
fn validate(name: &str, value: &str) -> Result<String, String> {
    let int = |lo: i64, hi: i64| -> Result<String, String> {
        match value.parse::<i64>() {
            Ok(v) if (lo..=hi).contains(&v) => Ok(v.to_string()),
            Ok(_) => Err(format!("argument must be between {lo} and {hi} inclusive")),
            Err(_) => Err("argument couldn't be parsed into an integer".into()),
        }
    };
    let mem = || -> Result<String, String> {
        parse_memory(value)
            .map(|v| v.to_string())
            .ok_or_else(|| "argument must be a memory value".into())
    };
    let boolean = || -> Result<String, String> {
        parse_bool(value)
            .map(|b| if b { "yes" } else { "no" }.to_string())
            .ok_or_else(|| "argument must be 'yes' or 'no'".into())
    };
    let one_of = |opts: &[&str]| -> Result<String, String> {
        let v = value.to_ascii_lowercase();
        if opts.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err("argument(s) must be one of the following: ".to_string() + &opts.join(", "))
        }
    };
    match name {
        "port" | "cluster-port" => int(0, 65535),
        "cluster-node-timeout" => int(1, i64::MAX),
        "maxclients" => int(1, i64::from(u32::MAX)),
        "timeout" | "tcp-keepalive" | "hz" => int(0, i64::from(i32::MAX)),
        "databases" => int(1, i64::from(i32::MAX)),
        "io-threads" => int(1, 128),
        "slowlog-log-slower-than" => int(-1, i64::MAX),
        "slowlog-max-len" => int(0, i64::MAX),
        "maxmemory-samples" => int(1, 64),
        "cluster-replica-validity-factor" | "cluster-migration-barrier" => {
            int(0, i64::from(i32::MAX))
        }
        "repl-timeout" | "repl-ping-replica-period" => int(1, i64::from(i32::MAX)),
        "repl-backlog-ttl" => int(0, i64::from(i32::MAX)),
        "shutdown-timeout" | "replica-priority" | "auto-aof-rewrite-percentage" => {
            int(0, i64::from(i32::MAX))
        }
        "auto-aof-rewrite-min-size" => mem(),
        // A memory value up to LONG_MAX, as Redis 7.0 declares it.
        "hll-sparse-max-bytes" => match parse_memory(value) {
            Some(v) if i64::try_from(v).is_ok() => Ok(v.to_string()),
            Some(_) => Err(format!(
                "argument must be between 0 and {} inclusive",
                i64::MAX
            )),
            None if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
                "argument must be between 0 and {} inclusive",
                i64::MAX
            )),
            None => Err("argument must be a memory value".into()),
        },
        "replicaof" => {
            let parts: Vec<&str> = value.split_whitespace().collect();
            match parts.as_slice() {
                [] => Ok(String::new()),
                [host, port] if port.parse::<u16>().is_ok() => Ok(format!("{host} {port}")),
                _ => Err("Invalid master port".into()),
            }
        }
        "client-output-buffer-limit" => OutputLimits::parse(value).map(|l| l.render()),
        "maxmemory" | "proto-max-bulk-len" | "repl-backlog-size" | "client-query-buffer-limit" => {
            mem()
        }
        // Bytes, or a percentage of maxmemory (Redis 7.0's PERCENT_CONFIG).
        "maxmemory-clients" => match value.strip_suffix('%') {
            Some(p) => match p.parse::<u64>() {
                Ok(v) if v <= 100 => Ok(format!("{v}%")),
                _ => Err("argument must be a memory or percent value".into()),
            },
            None => parse_memory(value)
                .map(|v| v.to_string())
                .ok_or_else(|| "argument must be a memory or percent value".into()),
        },
        "daemonize"
        | "protected-mode"
        | "cluster-enabled"
        | "cluster-replica-no-failover"
        | "cluster-require-full-coverage"
        | "appendonly"
        | "replica-read-only"
        | "replica-announced"
        | "aof-load-truncated"
        | "aof-use-rdb-preamble"
        | "cluster-allow-reads-when-down" => boolean(),
        "maxmemory-policy" => one_of(&[
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "noeviction",
        ]),
        "appendfsync" => one_of(&["always", "everysec", "no"]),
        "loglevel" => one_of(&["debug", "verbose", "notice", "warning", "nothing"]),
        "save" => {
            let parts: Vec<&str> = value.split_whitespace().collect();
            if parts.len() % 2 != 0 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
                return Err("Invalid save parameters".into());
            }
            Ok(parts.join(" "))
        }
        _ => Ok(value.to_string()),
    }
}

/// All directives with their current values, as `CONFIG GET` shows them.
#[derive(Debug, Clone)]
pub struct ConfigTable {
    values: BTreeMap<String, String>,
    /// The file the node was started with (for CONFIG REWRITE).
    pub file: Option<PathBuf>,
}

impl Default for ConfigTable {
    fn default() -> Self {
        defaults().clone()
    }
}

/// Redis 7.0's defaults, parsed once.
fn defaults() -> &'static ConfigTable {
    static DEFAULT_TABLE: std::sync::OnceLock<ConfigTable> = std::sync::OnceLock::new();
    DEFAULT_TABLE.get_or_init(|| {
        let mut values = BTreeMap::new();
        for line in DEFAULTS.lines() {
            if let Some((k, v)) = line.split_once('\t') {
                values.insert(k.to_string(), v.to_string());
            }
        }
        ConfigTable { values, file: None }
    })
}

impl ConfigTable {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&canonical(name)).map(String::as_str)
    }

    pub fn is_known(&self, name: &str) -> bool {
        self.values.contains_key(&canonical(name))
    }

    /// Every (name, value), aliases included, sorted by name.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (alias, name) in ALIASES {
            if let Some(v) = self.values.get(*name) {
                out.push(((*alias).to_string(), v.clone()));
            }
        }
        out.sort();
        out
    }

    /// Sets one directive after validating it (CONFIG SET, overrides).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let name = canonical(name);
        if !self.values.contains_key(&name) {
            return Err(ConfigError::Invalid(format!(
                "Unknown option or number of arguments for CONFIG SET - '{name}'"
            )));
        }
        let value = self.merged(&name, value);
        let v = validate(&name, &value).map_err(|reason| {
            ConfigError::Invalid(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - {reason}"
            ))
        })?;
        self.values.insert(name, v);
        Ok(())
    }

    /// The value to validate for `name`: for a [`MERGED`] directive, the
    /// current value followed by the new parts, which override it.
    fn merged(&self, name: &str, value: &str) -> String {
        match self.values.get(name) {
            Some(prev) if MERGED.contains(&name) => format!("{prev} {value}"),
            _ => value.to_string(),
        }
    }

    /// Applies lines of redis.conf text; `origin` names them in errors.
    pub fn apply_text(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let mut seen_accumulating: Vec<String> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| ConfigError::Directive {
                file: origin.to_string(),
                line: i + 1,
                text: line.to_string(),
                reason: reason.to_string(),
            };
            let Some(args) = split_args(line.as_bytes()) else {
                return Err(err("Unbalanced quotes in configuration line"));
            };
            let args: Vec<String> = args
                .into_iter()
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .collect();
            let Some((name, rest)) = args.split_first() else {
                continue;
            };
            let name = canonical(name);
            if name == "include" {
                let path = rest
                    .first()
                    .ok_or_else(|| err("wrong number of arguments"))?;
                self.apply_file(Path::new(path))?;
                continue;
            }
            if FILE_ONLY.contains(&name.as_str()) {
                continue;
            }
            if !self.values.contains_key(&name) {
                return Err(err("Bad directive or wrong number of arguments"));
            }
            if rest.is_empty() && name != "save" {
                return Err(err("wrong number of arguments"));
            }
            let mut value = rest.join(" ");
            if ACCUMULATE.contains(&name.as_str()) {
                if seen_accumulating.contains(&name) {
                    let prev = self.values.get(&name).cloned().unwrap_or_default();
                    if !value.is_empty() && !prev.is_empty() {
                        value = format!("{prev} {value}");
                    }
                } else {
                    seen_accumulating.push(name.clone());
                }
            }
            let value = self.merged(&name, &value);
            let v = validate(&name, &value).map_err(|r| err(&r))?;
            self.values.insert(name, v);
        }
        Ok(())
    }

    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.apply_text(&text, &path.display().to_string())
    }

    /// Builds the table the way `redis-server FILE --a b --c d e` does: the
    /// file, then the flags as extra config lines.
    pub fn from_args(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut t = ConfigTable::default();
        if let Some(f) = file {
            t.apply_file(f)?;
            t.file = Some(f.to_path_buf());
        }
        let mut text = String::new();
        for a in overrides {
            if let Some(name) = a.strip_prefix("--") {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(name);
            } else {
                text.push(' ');
                text.push_str(&quote(a));
            }
        }
        t.apply_text(&text, "command line")?;
        Ok(t)
    }

    /// CONFIG REWRITE: keeps the user's lines (comments, order), replaces
    /// directives whose value changed, appends the rest; written to a temp
    /// file and renamed so a crash never leaves half a config.
    pub fn rewrite_file(&self, path: &Path) -> std::io::Result<()> {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let defaults = ConfigTable::default();
        let mut done: Vec<String> = Vec::new();
        let mut out = String::new();
        for line in old.lines() {
            let t = line.trim();
            let name = t.split_whitespace().next().map(canonical);
            match name {
                Some(n) if !t.starts_with('#') && self.values.contains_key(&n) => {
                    if done.contains(&n) {
                        continue; // multi-line directives are written once
                    }
                    let v = self.values.get(&n).cloned().unwrap_or_default();
                    out.push_str(&format!("{n} {}\n", quote(&v)));
                    done.push(n);
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        for (k, v) in &self.values {
            if !done.contains(k) && defaults.values.get(k) != Some(v) {
                out.push_str(&format!("{k} {}\n", quote(v)));
            }
        }
        let tmp = path.with_extension("rewrite.tmp");
        std::fs::write(&tmp, out)?;
        std::fs::rename(&tmp, path)
    }

    /// The file text for CONFIG REWRITE: every value that differs from the
    /// default, one directive per line.
    pub fn render_non_defaults(&self) -> String {
        let defaults = defaults();
        let mut out = String::new();
        for (k, v) in &self.values {
            if defaults.values.get(k) != Some(v) {
                out.push_str(&format!(
                    "{k} {}\n",
                    if v.is_empty() {
                        "\"\"".into()
                    } else {
                        quote(v)
                    }
                ));
            }
        }
        out
    }
}

/// Quotes a value for a config line when it needs it (spaces, quotes,
/// backslashes, control or non-ASCII bytes), escaping as Redis's
/// `sdscatrepr` does, so the line reads back to the same value whatever it
/// holds.
fn quote(v: &str) -> String {
    if v.is_empty() {
        return "\"\"".into();
    }
    let plain = |b: u8| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\');
    if v.bytes().all(plain) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for b in v.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            7 => out.push_str("\\a"),
            8 => out.push_str("\\b"),
            b' ' | b'\'' => out.push(char::from(b)),
            b if b.is_ascii_graphic() => out.push(char::from(b)),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// One client class's `client-output-buffer-limit`: the connection is
/// closed once its pending output reaches `hard` bytes, or stays at or
/// above `soft` for more than `soft_secs` seconds. 0 disables a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_secs: u64,
}

impl OutputLimit {
    /// Whether `pending` bytes break the limit, given since when (ms,
    /// monotonic) the soft limit has been reached; updates that mark.
    pub fn exceeded(&self, pending: u64, soft_since: &mut Option<u64>, now_ms: u64) -> bool {
        if self.hard > 0 && pending >= self.hard {
            return true;
        }
        if self.soft == 0 || pending < self.soft {
            *soft_since = None;
            return false;
        }
        let since = *soft_since.get_or_insert(now_ms);
        // As in Redis: over the soft limit for *more* than soft_secs.
        now_ms.saturating_sub(since) > self.soft_secs.saturating_mul(1000)
    }
}

/// `client-output-buffer-limit` for the three client classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    pub normal: OutputLimit,
    pub replica: OutputLimit,
    pub pubsub: OutputLimit,
}

impl OutputLimits {
    /// Parses `class hard soft secs` groups, later groups overriding
    /// earlier ones, with Redis's error texts. Classes not named keep
    /// Redis's defaults.
    pub fn parse(value: &str) -> Result<OutputLimits, String> {
        let words: Vec<&str> = value.split_whitespace().collect();
        if words.is_empty() || words.len() % 4 != 0 {
            return Err("Wrong number of arguments in buffer limit configuration.".into());
        }
        let mut out = OutputLimits::default();
        for group in words.chunks(4) {
            let [class, hard, soft, secs] = group else {
                return Err("Wrong number of arguments in buffer limit configuration.".into());
            };
            let slot = match class.to_ascii_lowercase().as_str() {
                "normal" => &mut out.normal,
                "slave" | "replica" => &mut out.replica,
                "pubsub" => &mut out.pubsub,
                _ => {
                    return Err(
                        "Invalid client class specified in buffer limit configuration.".into(),
                    )
                }
            };
            let bad =
                || "Error in hard, soft or soft_seconds setting in buffer limit configuration.";
            *slot = OutputLimit {
                hard: parse_memory(hard).ok_or_else(bad)?,
                soft: parse_memory(soft).ok_or_else(bad)?,
                soft_secs: secs.parse::<u64>().map_err(|_| bad())?,
            };
        }
        Ok(out)
    }

    /// The CONFIG GET form: every class, in bytes, replicas as `slave`.
    pub fn render(&self) -> String {
        let one = |n: &str, l: &OutputLimit| format!("{n} {} {} {}", l.hard, l.soft, l.soft_secs);
        format!(
            "{} {} {}",
            one("normal", &self.normal),
            one("slave", &self.replica),
            one("pubsub", &self.pubsub)
        )
    }
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            normal: OutputLimit::default(),
            replica: OutputLimit {
                hard: 256 << 20,
                soft: 64 << 20,
                soft_secs: 60,
            },
            pubsub: OutputLimit {
                hard: 32 << 20,
                soft: 8 << 20,
                soft_secs: 60,
            },
        }
    }
}

/// The typed configuration the node acts on.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub port: u16,
    pub bind: Vec<String>,
    pub protected_mode: bool,
    pub requirepass: Option<String>,
    pub masterauth: Option<String>,
    pub daemonize: bool,
    pub pidfile: Option<PathBuf>,
    pub logfile: Option<PathBuf>,
    pub loglevel: String,
    pub dir: PathBuf,
    pub cluster_enabled: bool,
    pub cluster_config_file: String,
    pub cluster_node_timeout: u64,
    pub cluster_port: u16,
    pub cluster_replica_no_failover: bool,
    pub cluster_require_full_coverage: bool,
    pub cluster_replica_validity_factor: u64,
    pub cluster_migration_barrier: u64,
    pub cluster_allow_replica_migration: bool,
    pub maxmemory: u64,
    pub maxmemory_policy: EvictionPolicy,
    pub maxmemory_samples: usize,
    /// What all normal and pub/sub clients together may hold in buffers
    /// before the largest are evicted (`maxmemory-clients`, a percentage
    /// already resolved against maxmemory); 0 off.
    pub maxmemory_clients: u64,
    pub appendonly: bool,
    pub appendfsync: String,
    pub appendfilename: String,
    /// Directory (inside `dir`) of the multi-part AOF.
    pub appenddirname: String,
    pub aof_load_truncated: bool,
    pub aof_use_rdb_preamble: bool,
    pub auto_aof_rewrite_percentage: u64,
    pub auto_aof_rewrite_min_size: u64,
    /// `masteruser` for AUTH to our master.
    pub masteruser: Option<String>,
    /// `replicaof host port` at start (standalone mode).
    pub replicaof: Option<(String, u16)>,
    pub repl_backlog_size: usize,
    /// Seconds without replicas after which a master frees its backlog
    /// (0 = never).
    pub repl_backlog_ttl: u64,
    /// Seconds without traffic before a replication link is dropped.
    pub repl_timeout: u64,
    pub repl_ping_replica_period: u64,
    pub replica_read_only: bool,
    pub replica_priority: u64,
    pub replica_announced: bool,
    /// Seconds SHUTDOWN waits for replicas to catch up.
    pub shutdown_timeout: u64,
    pub dbfilename: String,
    /// (seconds, changes) pairs of the `save` directive.
    pub save: Vec<(u64, u64)>,
    pub proto_max_bulk_len: usize,
    pub maxclients: usize,
    /// Client idle timeout in seconds (0 = never).
    pub timeout: u64,
    pub hz: u32,
    pub io_threads: usize,
    pub output_limits: OutputLimits,
    /// Microseconds from which a command is logged; negative: never.
    pub slowlog_log_slower_than: i64,
    pub slowlog_max_len: usize,
    /// Bytes past which a sparse HyperLogLog becomes dense.
    pub hll_sparse_max_bytes: usize,
}

impl NodeConfig {
    pub fn from_table(t: &ConfigTable) -> Result<Self, ConfigError> {
        let s = |n: &str| t.get(n).unwrap_or_default().to_string();
        let num = |n: &str| -> Result<u64, ConfigError> {
            let v = s(n);
            parse_memory(&v)
                .ok_or_else(|| ConfigError::Invalid(format!("invalid value for '{n}': '{v}'")))
        };
        let flag = |n: &str| parse_bool(&s(n)).unwrap_or(false);
        let opt = |n: &str| Some(s(n)).filter(|v| !v.is_empty());
        let save_parts: Vec<u64> = s("save")
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let dir = match opt("dir") {
            Some(d) => PathBuf::from(d),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        Ok(NodeConfig {
            port: u16::try_from(num("port")?)
                .map_err(|_| ConfigError::Invalid("port out of range".into()))?,
            bind: s("bind").split_whitespace().map(str::to_string).collect(),
            protected_mode: flag("protected-mode"),
            requirepass: opt("requirepass"),
            masterauth: opt("masterauth"),
            daemonize: flag("daemonize"),
            pidfile: opt("pidfile").map(PathBuf::from),
            logfile: opt("logfile").map(PathBuf::from),
            loglevel: s("loglevel"),
            dir,
            cluster_enabled: flag("cluster-enabled"),
            cluster_config_file: s("cluster-config-file"),
            cluster_node_timeout: num("cluster-node-timeout")?,
            cluster_port: u16::try_from(num("cluster-port")?).unwrap_or(0),
            cluster_replica_no_failover: flag("cluster-replica-no-failover"),
            cluster_require_full_coverage: flag("cluster-require-full-coverage"),
            cluster_replica_validity_factor: num("cluster-replica-validity-factor")?,
            cluster_migration_barrier: num("cluster-migration-barrier")?,
            cluster_allow_replica_migration: flag("cluster-allow-replica-migration"),
            maxmemory: num("maxmemory")?,
            maxmemory_policy: EvictionPolicy::parse(&s("maxmemory-policy")).unwrap_or_default(),
            maxmemory_samples: usize::try_from(num("maxmemory-samples")?).unwrap_or(5),
            maxmemory_clients: {
                let v = s("maxmemory-clients");
                match v.strip_suffix('%') {
                    Some(p) => p.parse::<u64>().unwrap_or(0) * num("maxmemory")? / 100,
                    None => num("maxmemory-clients")?,
                }
            },
            appendonly: flag("appendonly"),
            appendfsync: s("appendfsync"),
            appendfilename: s("appendfilename"),
            appenddirname: s("appenddirname"),
            aof_load_truncated: flag("aof-load-truncated"),
            aof_use_rdb_preamble: flag("aof-use-rdb-preamble"),
            auto_aof_rewrite_percentage: num("auto-aof-rewrite-percentage")?,
            auto_aof_rewrite_min_size: num("auto-aof-rewrite-min-size")?,
            masteruser: opt("masteruser"),
            replicaof: s("replicaof")
                .split_once(' ')
                .and_then(|(h, p)| Some((h.to_string(), p.trim().parse::<u16>().ok()?))),
            repl_backlog_size: usize::try_from(num("repl-backlog-size")?).unwrap_or(1 << 20),
            repl_backlog_ttl: num("repl-backlog-ttl")?,
            repl_timeout: num("repl-timeout")?.max(1),
            repl_ping_replica_period: num("repl-ping-replica-period")?.max(1),
            replica_read_only: flag("replica-read-only"),
            replica_priority: num("replica-priority")?,
            replica_announced: flag("replica-announced"),
            shutdown_timeout: num("shutdown-timeout")?,
            dbfilename: s("dbfilename"),
            save: save_parts
                .chunks(2)
                .filter_map(|c| Some((*c.first()?, *c.get(1)?)))
                .collect(),
            proto_max_bulk_len: usize::try_from(num("proto-max-bulk-len")?).unwrap_or(usize::MAX),
            maxclients: usize::try_from(num("maxclients")?).unwrap_or(10000),
            timeout: num("timeout")?,
            hz: u32::try_from(num("hz")?).unwrap_or(10).clamp(1, 500),
            io_threads: usize::try_from(num("io-threads")?).unwrap_or(1).max(1),
            output_limits: OutputLimits::parse(&s("client-output-buffer-limit"))
                .map_err(ConfigError::Invalid)?,
            slowlog_log_slower_than: s("slowlog-log-slower-than").parse().unwrap_or(10_000),
            slowlog_max_len: s("slowlog-max-len").parse().unwrap_or(128),
            hll_sparse_max_bytes: usize::try_from(num("hll-sparse-max-bytes")?)
                .unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_values_read_back_whatever_bytes_they_hold() {
        // Found by the config_text fuzz target: control characters inside
        // a quoted value were written raw, so the rewritten line split.
        let input = include_bytes!("../../fuzz/seeds/config_text/rewrite-control-chars");
        let text = std::str::from_utf8(input).unwrap();
        let mut t = ConfigTable::default();
        t.apply_text(text, "fuzz").unwrap();
        for value in [
            "a b",
            "tab\there",
            "cr\rlf\n",
            "q\"uo'te",
            "back\\slash",
            "nul\0x\u{7f}",
            "é",
        ] {
            let mut t2 = ConfigTable::default();
            t2.apply_text(&format!("dbfilename {}\n", quote(value)), "t")
                .unwrap();
            assert_eq!(t2.get("dbfilename"), Some(value), "{value:?}");
        }
        let mut again = ConfigTable::default();
        again
            .apply_text(&t.render_non_defaults(), "rewrite")
            .unwrap();
        assert_eq!(again.entries(), t.entries());
    }

    #[test]
    fn founding_document_config() {
        let text =
            "# comment\ndaemonize yes\nport 6379\ncluster-enabled yes\ncluster-node-timeout 5000\n\
                    cluster-replica-no-failover no\nmaxmemory 512mb\ndir /path/to/\n";
        let mut t = ConfigTable::default();
        t.apply_text(text, "node.conf").unwrap();
        let c = NodeConfig::from_table(&t).unwrap();
        assert!(c.daemonize && c.cluster_enabled && !c.cluster_replica_no_failover);
        assert_eq!(c.maxmemory, 512 * 1024 * 1024);
        assert_eq!(c.cluster_node_timeout, 5000);
        assert_eq!(c.dir, PathBuf::from("/path/to/"));
        assert_eq!(t.get("maxmemory"), Some("536870912"));
    }

    #[test]
    fn unknown_directive_names_file_and_line() {
        let mut t = ConfigTable::default();
        let e = t
            .apply_text("port 7000\n\nfrobnicate yes\n", "/etc/node.conf")
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/node.conf") && msg.contains("line 3") && msg.contains("frobnicate"),
            "{msg}"
        );
        let e = t
            .apply_text("maxmemory lots\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("memory"), "{e}");
    }

    #[test]
    fn overrides_like_redis_server() {
        let t = ConfigTable::from_args(
            None,
            &[
                "--port".into(),
                "7001".into(),
                "--save".into(),
                "".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "::1".into(),
            ],
        )
        .unwrap();
        assert_eq!(t.get("port"), Some("7001"));
        assert_eq!(t.get("save"), Some(""));
        assert_eq!(t.get("bind"), Some("127.0.0.1 ::1"));
    }

    #[test]
    fn save_lines_accumulate_and_aliases_resolve() {
        let mut t = ConfigTable::default();
        t.apply_text("save 900 1\nsave 300 10\nslaveof-unused-check no\n", "f")
            .unwrap_err();
        let mut t = ConfigTable::default();
        t.apply_text("save 900 1\nsave 300 10\nslave-read-only no\n", "f")
            .unwrap();
        assert_eq!(t.get("save"), Some("900 1 300 10"));
        assert_eq!(t.get("replica-read-only"), Some("no"));
        let c = NodeConfig::from_table(&t).unwrap();
        assert_eq!(c.save, vec![(900, 1), (300, 10)]);
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("1KB"), Some(1024));
        assert_eq!(parse_memory("2gb"), Some(2 << 30));
        assert_eq!(parse_memory("12"), Some(12));
        assert_eq!(parse_memory("x"), None);
        assert_eq!(parse_memory("-1"), None);
    }
}
