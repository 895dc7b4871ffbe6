//! The proxy's configuration: `config/proxy.toml` (every field documented
//! there too) and the command-line flags that override it.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the proxy can be told. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address clients connect to (`ip:port`).
    pub listen: String,
    /// Seed nodes of the cluster (`ip:port`); any reachable one is enough,
    /// the rest of the cluster is discovered from it.
    pub nodes: Vec<String>,
    /// Address of the Prometheus `/metrics` and `/healthz` listener; empty
    /// disables it.
    pub metrics: String,
    /// Runtime worker threads. 1 (the default) runs everything on one
    /// thread, which costs the least CPU per request and keeps batching
    /// tight; more threads add throughput when the machine has idle cores.
    /// 0 picks the number of CPUs.
    pub threads: usize,
    /// Password clients must give with `AUTH` (or `HELLO ... AUTH`); empty
    /// means no authentication.
    pub requirepass: String,
    /// ACL user the proxy authenticates as on every backend; empty with a
    /// password means `AUTH password` (the `masterauth` style).
    pub backend_user: String,
    /// Password for the backends; empty means none.
    pub backend_password: String,
    /// Send read-only commands to replicas (after `READONLY`) when a master
    /// has any. Clients can also ask for it per connection with `READONLY`.
    pub read_from_replicas: bool,
    /// Most client connections at once; more are refused with an error.
    pub maxclients: usize,
    /// Close a client idle (no request, nothing pending) this long; 0 never.
    pub client_idle_timeout_secs: u64,
    /// Shared, pipelined connections per backend node and protocol version.
    /// Every client's requests to a node go over these.
    pub connections_per_node: usize,
    /// Most requests one client may have in flight before the proxy stops
    /// reading from it (backpressure).
    pub max_pipeline: usize,
    /// Largest reply the proxy buffers from a node for one request; a
    /// bigger one (SRANDMEMBER with a count of billions) is answered with
    /// an error instead of growing the proxy without bound.
    pub max_reply_bytes: usize,
    /// A client whose replies have waited this long without the socket
    /// taking a byte (it stopped reading) is closed, freeing what the
    /// proxy holds for it: the proxy's form of Redis's soft output-buffer
    /// limit. 0 never.
    pub client_output_stall_secs: u64,
    /// The most reply bytes the proxy holds for one client that has not
    /// taken them (it reads slower than its replies come): past it the
    /// client is closed, as by Redis's hard output-buffer limit. 0: no
    /// byte cap (Redis's default for normal clients); `max_pipeline` and
    /// the stall limit still bound it.
    pub client_output_limit_bytes: usize,
    /// Timeout for connecting to a backend.
    pub connect_timeout_ms: u64,
    /// Periodic topology refresh (`CLUSTER SLOTS`).
    pub refresh_interval_ms: u64,
    /// Refresh period while some master is unreachable, so a failover is
    /// noticed soon after the cluster promotes a replica.
    pub degraded_refresh_interval_ms: u64,
    /// How long a request may wait for a failover, redirects and retries
    /// before the client gets an error.
    pub request_deadline_ms: u64,
    /// Most MOVED/ASK redirects followed for one request.
    pub max_redirects: u32,
    /// Most retries of one request (TRYAGAIN, CLUSTERDOWN, LOADING, an
    /// unreachable master); the deadline bounds them too.
    pub max_retries: u32,
    /// First retry backoff for TRYAGAIN, CLUSTERDOWN, LOADING and
    /// unreachable masters; doubles on each retry.
    pub retry_backoff_initial_ms: u64,
    /// Cap of the retry backoff.
    pub retry_backoff_max_ms: u64,
    /// On SIGTERM, how long in-flight requests get to finish before exit.
    pub drain_timeout_ms: u64,
    /// Log level: error, warn, info, debug, trace (RUST_LOG wins).
    pub log_level: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:7777".into(),
            nodes: vec!["127.0.0.1:7000".into()],
            metrics: String::new(),
            threads: 1,
            requirepass: String::new(),
            backend_user: String::new(),
            backend_password: String::new(),
            read_from_replicas: false,
            maxclients: 10000,
            client_idle_timeout_secs: 0,
            connections_per_node: 1,
            max_pipeline: 4096,
            max_reply_bytes: 512 * 1024 * 1024,
            client_output_stall_secs: 60,
            client_output_limit_bytes: 0,
            connect_timeout_ms: 1000,
            refresh_interval_ms: 10_000,
            degraded_refresh_interval_ms: 100,
            request_deadline_ms: 15_000,
            max_redirects: 8,
            max_retries: 100,
            retry_backoff_initial_ms: 10,
            retry_backoff_max_ms: 500,
            drain_timeout_ms: 10_000,
            log_level: "info".into(),
        }
    }
}

/// `slotway proxy` flags; each one overrides the same key of the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ProxyArgs {
    /// TOML configuration file (see config/proxy.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Client listen address (ip:port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Seed nodes, comma-separated ip:port.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Option<Vec<String>>,
    /// Metrics listen address (ip:port) for /metrics and /healthz.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Runtime worker threads (default 1; 0 = CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Password clients must AUTH with.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Password for the backend nodes.
    #[arg(long)]
    pub backend_password: Option<String>,
    /// Maximum client connections.
    #[arg(long)]
    pub maxclients: Option<usize>,
    /// Shared connections per backend node.
    #[arg(long)]
    pub connections_per_node: Option<usize>,
    /// Send read-only commands to replicas.
    #[arg(long)]
    pub read_from_replicas: bool,
    /// Request deadline in milliseconds (failover wait, retries).
    #[arg(long)]
    pub request_deadline_ms: Option<u64>,
    /// Log level.
    #[arg(long)]
    pub log_level: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ProxyConfig {
    /// Parses a TOML text (unknown keys are an error naming the key).
    pub fn from_toml(text: &str, path: &Path) -> Result<ProxyConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The file (if any), then the flags on top, then validation.
    pub fn load(args: &ProxyArgs) -> Result<ProxyConfig, ConfigError> {
        let mut cfg = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text, path)?
            }
            None => ProxyConfig::default(),
        };
        cfg.apply(args);
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply(&mut self, a: &ProxyArgs) {
        if let Some(v) = &a.listen {
            self.listen = v.clone();
        }
        if let Some(v) = &a.nodes {
            self.nodes = v.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        if let Some(v) = &a.metrics {
            self.metrics = v.clone();
        }
        if let Some(v) = a.threads {
            self.threads = v;
        }
        if let Some(v) = &a.requirepass {
            self.requirepass = v.clone();
        }
        if let Some(v) = &a.backend_password {
            self.backend_password = v.clone();
        }
        if let Some(v) = a.maxclients {
            self.maxclients = v;
        }
        if let Some(v) = a.connections_per_node {
            self.connections_per_node = v;
        }
        if a.read_from_replicas {
            self.read_from_replicas = true;
        }
        if let Some(v) = a.request_deadline_ms {
            self.request_deadline_ms = v;
        }
        if let Some(v) = &a.log_level {
            self.log_level = v.clone();
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!("listen '{}' is not ip:port", self.listen));
        }
        if !self.metrics.is_empty() && self.metrics.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!("metrics '{}' is not ip:port", self.metrics));
        }
        if self.nodes.is_empty() {
            return bad("nodes: at least one seed node is needed".into());
        }
        for n in &self.nodes {
            if crate::proxy::router::parse_addr(n).is_none() {
                return bad(format!("nodes: '{n}' is not host:port"));
            }
        }
        if self.connections_per_node == 0 || self.connections_per_node > 64 {
            return bad("connections_per_node must be 1..=64".into());
        }
        if self.max_pipeline == 0 {
            return bad("max_pipeline must be at least 1".into());
        }
        if self.refresh_interval_ms == 0 || self.degraded_refresh_interval_ms == 0 {
            return bad("refresh intervals must be positive".into());
        }
        Ok(())
    }

    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.request_deadline_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ms = self
            .retry_backoff_initial_ms
            .max(1)
            .saturating_mul(1u64 << attempt.min(20));
        Duration::from_millis(ms.min(self.retry_backoff_max_ms.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_lists_every_option_with_its_default() {
        let text = include_str!("../../config/proxy.toml");
        let mut cfg = ProxyConfig::from_toml(text, Path::new("config/proxy.toml")).unwrap();
        cfg.validate().unwrap();
        // Only the seeds and the metrics address differ from the defaults.
        assert_eq!(cfg.nodes.len(), 3);
        assert_eq!(cfg.metrics, "127.0.0.1:9121");
        let default = ProxyConfig::default();
        cfg.nodes = default.nodes.clone();
        cfg.metrics = default.metrics.clone();
        assert_eq!(cfg, default);
        let in_file: toml::Table = toml::from_str(text).unwrap();
        let all: toml::Table = toml::from_str(&toml::to_string(&default).unwrap()).unwrap();
        let missing: Vec<&String> = all.keys().filter(|k| !in_file.contains_key(*k)).collect();
        assert!(missing.is_empty(), "not in config/proxy.toml: {missing:?}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ProxyConfig::from_toml("listne = \"x\"\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let mut cfg = ProxyConfig::from_toml(
            "listen = \"127.0.0.1:1\"\nnodes = [\"127.0.0.1:2\"]\n",
            Path::new("p.toml"),
        )
        .unwrap();
        cfg.apply(&ProxyArgs {
            listen: Some("127.0.0.1:3".into()),
            nodes: Some(vec!["127.0.0.1:4".into(), "127.0.0.1:5".into()]),
            ..ProxyArgs::default()
        });
        assert_eq!(cfg.listen, "127.0.0.1:3");
        assert_eq!(cfg.nodes, vec!["127.0.0.1:4", "127.0.0.1:5"]);
        cfg.validate().unwrap();
        cfg.nodes = vec!["nope".into()];
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = ProxyConfig::default();
        assert_eq!(cfg.backoff(0), Duration::from_millis(10));
        assert_eq!(cfg.backoff(1), Duration::from_millis(20));
        assert_eq!(cfg.backoff(30), Duration::from_millis(500));
    }
}
