//! Test harness: runs our real binary on a free loopback port and hands out
//! real clients. Each process is killed (by PID) when its guard drops.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_slotway");

/// A loopback port for a test server, with its cluster bus port (+10000,
/// as in Redis) free too. Both stay below 32768, where the kernel's
/// ephemeral range begins, so no outgoing connection (a client, a bus
/// link, another test's bind to port 0) can be holding them. Each test
/// process walks its own stretch of 10000..22768 (seeded by its pid) and
/// never hands out a port twice, so tests running in parallel threads do
/// not race for one; a port is handed out only if both binds succeed now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LO: u32 = 10_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = (LO + (base + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair below 32768");
}

/// Polls `cond` until it holds or `deadline` passes; panics with `what`.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Waits until `child` exits on its own (then forgets it), or `deadline`.
pub fn wait_child_exit(child: &mut Option<Child>, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(c) = child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                *child = None;
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A running `slotway node`.
pub struct Node {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    /// Starts a node with `extra` directives (`["--maxmemory", "1mb"]`).
    pub fn start(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// Starts a node in `dir` on a free port; if another process took the
    /// port between the check and the node's bind (the node exits), tries
    /// the next one.
    pub fn start_in(mut dir: tempfile::TempDir, extra: &[&str]) -> Node {
        for _ in 0..5 {
            match Self::try_start(dir, free_port(), extra, &[]) {
                Ok(node) => return node,
                Err(d) => dir = d,
            }
        }
        panic!("the node did not start on any of 5 ports");
    }

    /// Stops the process and hands its directory back (to restart in it).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn start_in_port(dir: tempfile::TempDir, port: u16, extra: &[&str]) -> Node {
        Self::start_with_env(dir, port, extra, &[])
    }

    /// Like [`Node::start_in_port`], with extra environment variables for
    /// the process (`LD_PRELOAD` of libfaketime in the clock tests).
    pub fn start_with_env(
        dir: tempfile::TempDir,
        port: u16,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Node {
        match Self::try_start(dir, port, extra, env) {
            Ok(node) => node,
            Err(_) => panic!("the node on port {port} exited before answering"),
        }
    }

    /// Starts the node and waits for PING; gives the directory back if the
    /// process exits first (its port was taken, say).
    fn try_start(
        dir: tempfile::TempDir,
        port: u16,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Result<Node, tempfile::TempDir> {
        let mut args: Vec<String> = vec![
            "node".into(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--save".into(),
            "".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(BIN)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut node = Node {
            port,
            dir,
            child: Some(child),
        };
        let mut exited = false;
        wait_until("node to answer PING", Duration::from_secs(20), || {
            exited = node
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || node.raw_ok("PING")
        });
        if exited {
            node.child = None;
            return Err(node.into_dir());
        }
        Ok(node)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// One field of an INFO section of this node, "" if absent.
    pub fn info_field(&self, section: &str, name: &str) -> String {
        info_field(&mut self.client(), section, name)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub async fn async_client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Sends raw bytes and returns what arrives within a short window
    /// (until the server closes or goes quiet after replying).
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        raw_exchange(self.port, bytes)
    }

    fn raw_ok(&self, inline: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(format!("{inline}\r\n").as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Waits for the process to exit on its own (after SHUTDOWN).
    pub fn wait_exit(&mut self, deadline: Duration) -> bool {
        wait_child_exit(&mut self.child, deadline)
    }

    pub fn dir_path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `bytes`, then reads until the peer closes or is quiet for 300 ms.
pub fn raw_exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// Runs `slotway` with args and returns (status success, stdout+stderr).
pub fn run_bin(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A real `redis-server` on a free loopback port (compatibility tests),
/// killed by PID when dropped.
pub struct RealRedis {
    pub port: u16,
    child: Child,
}

impl RealRedis {
    /// Starts `redis-server` with `--port P --bind 127.0.0.1 --save ""`
    /// plus `extra`, and waits until it answers.
    pub fn start(dir: &Path, extra: &[&str]) -> RealRedis {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--save".into(),
            "".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let r = RealRedis { port, child };
        wait_until("redis-server to answer", Duration::from_secs(20), || {
            r.client_opt()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
        });
        r
    }

    fn client_opt(&self) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .ok()?
            .get_connection()
            .ok()
    }

    pub fn client(&self) -> redis::Connection {
        self.client_opt().unwrap()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RealRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `name:value` field of INFO text, "" if absent.
pub fn field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// One field of an INFO section, "" if absent.
pub fn info_field(c: &mut redis::Connection, section: &str, name: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    field(&info, name)
}
