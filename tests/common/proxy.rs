//! Harness for proxy tests: a `slotway proxy` process, a slotway cluster
//! built with plain CLUSTER commands, and a real redis-server 7 cluster made
//! by `redis-cli --cluster create`. Every process is killed by PID when its
//! guard drops.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{free_port, wait_child_exit, wait_until, Node, BIN};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command over a fresh connection; the reply as a redis value.
pub fn call(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    let mut q = redis::cmd(args[0]);
    for a in &args[1..] {
        q.arg(*a);
    }
    q.query(&mut c)
}

pub fn text(port: u16, args: &[&str]) -> String {
    match call(port, args) {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(redis::Value::SimpleString(s)) => s,
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// A running `slotway proxy`.
pub struct ProxyProc {
    pub port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ProxyProc {
    /// Starts a proxy in front of `seeds` with extra flags, and waits until
    /// it answers PING (not until it has a slot map).
    pub fn start(seeds: &[String], extra: &[&str]) -> ProxyProc {
        Self::start_with(seeds, extra, None)
    }

    /// Same, with a TOML config file holding `toml`.
    pub fn start_with(seeds: &[String], extra: &[&str], toml: Option<&str>) -> ProxyProc {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let metrics_port = free_port();
        let mut args: Vec<String> = vec![
            "proxy".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--nodes".into(),
            seeds.join(","),
        ];
        if let Some(t) = toml {
            let path = dir.path().join("proxy.toml");
            std::fs::write(&path, t).unwrap();
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = ProxyProc {
            port,
            metrics_port,
            dir,
            child: Some(child),
        };
        wait_until("proxy to answer PING", Duration::from_secs(20), || {
            ping(p.port)
        });
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Waits until the proxy's slot map covers every slot.
    pub fn wait_covered(&self) {
        wait_until(
            "proxy slot map to cover all slots",
            Duration::from_secs(30),
            || text(self.port, &["INFO", "proxy"]).contains("slots_covered:16384"),
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(10))
            .unwrap()
    }

    pub async fn async_client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// `GET path` on the metrics listener: (status line, body).
    pub fn http(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }

    /// Value of a metric line starting with `prefix` (summed if several).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.http("/metrics");
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child process id we own.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, deadline: Duration) -> bool {
        wait_child_exit(&mut self.child, deadline)
    }
}

pub const SIGTERM: i32 = libc::SIGTERM;

impl Drop for ProxyProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

/// A slotway cluster of `masters` masters (no replicas) with the redis-cli
/// slot split.
pub fn slotway_cluster(masters: usize, extra: &[&str]) -> Vec<Node> {
    super::cluster::masters_only(masters, extra)
}

pub fn addrs(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(Node::addr).collect()
}

/// Are redis-server, redis-cli and redis-benchmark installed?
pub fn redis_tools() -> bool {
    ["redis-server", "redis-cli", "redis-benchmark"]
        .iter()
        .all(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// One real redis-server process.
pub struct RedisNode {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisNode {
    pub fn start(cluster: bool, node_timeout_ms: u64, extra: &[&str]) -> RedisNode {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if cluster {
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    &node_timeout_ms.to_string(),
                ]
                .iter()
                .map(|s| s.to_string()),
            );
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = RedisNode {
            port,
            dir,
            child: Some(child),
        };
        wait_until("redis-server to answer", Duration::from_secs(20), || {
            ping(n.port)
        });
        n
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `SHUTDOWN NOSAVE` and wait for the process to end.
    pub fn shutdown(&mut self) {
        let _ = call(self.port, &["SHUTDOWN", "NOSAVE"]);
        if let Some(mut c) = self.child.take() {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real Redis Cluster made by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize, node_timeout_ms: u64) -> RedisCluster {
        let nodes: Vec<RedisNode> = (0..masters * (1 + replicas))
            .map(|_| RedisNode::start(true, node_timeout_ms, &[]))
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(n.addr());
        }
        let out = cmd
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = RedisCluster { nodes };
        wait_until("redis cluster ok", Duration::from_secs(60), || {
            c.nodes
                .iter()
                .all(|n| text(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        if replicas > 0 {
            wait_until("replicas known", Duration::from_secs(60), || {
                c.nodes.iter().all(|n| {
                    text(n.port, &["CLUSTER", "NODES"]).matches("slave").count()
                        == masters * replicas
                })
            });
            // A master whose replica is still in its first sync pauses
            // writes on SHUTDOWN until it is done.
            wait_until("replicas synced", Duration::from_secs(60), || {
                c.nodes.iter().all(|n| {
                    let info = text(n.port, &["INFO", "replication"]);
                    info.contains("role:master")
                        || (info.contains("master_link_status:up")
                            && info.contains("master_sync_in_progress:0"))
                })
            });
        }
        c
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::addr).collect()
    }

    /// Index of a node that is a master now.
    pub fn a_master(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| text(n.port, &["ROLE"]).contains("master"))
            .unwrap()
    }
}

/// Runs a command line and returns (success, stdout+stderr).
pub fn run(cmd: &str, args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}
