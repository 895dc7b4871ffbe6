//! `slotway up` end to end: the real binary starts a 3+3 cluster and the
//! proxy on free loopback ports, serves SET/GET to a cluster client (and
//! through the proxy), stops every child and frees every port on SIGINT,
//! and a rerun with the same --dir brings back the same cluster from
//! nodes.conf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{wait_until, BIN};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NODES: u16 = 6;

/// Ports for one `up`: 6 node ports whose bus ports (+10000) are free too,
/// a proxy port and a metrics port. Below the ephemeral range, so that
/// `free_port()` in other tests never hands out one of ours.
struct Ports {
    base: u16,
    proxy: u16,
    metrics: u16,
}

impl Ports {
    fn all(&self) -> Vec<u16> {
        let mut v: Vec<u16> = (0..NODES)
            .flat_map(|i| [self.base + i, self.base + i + 10000])
            .collect();
        v.push(self.proxy);
        v.push(self.metrics);
        v
    }
}

fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn pick_ports() -> Ports {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for attempt in 0..200u64 {
        let base = 11000 + ((seed + attempt * 7919) % 9000) as u16;
        let p = Ports {
            base,
            proxy: base + 20,
            metrics: base + 21,
        };
        if p.all().into_iter().all(free) {
            return p;
        }
    }
    panic!("no free port range for `slotway up`");
}

/// A running `slotway up` whose stdout is read line by line.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(ports: &Ports, dir: &Path) -> Up {
        let mut child = Command::new(BIN)
            .args([
                "up",
                "--base-port",
                &ports.base.to_string(),
                "--proxy-port",
                &ports.proxy.to_string(),
                "--metrics-port",
                &ports.metrics.to_string(),
                "--dir",
                &dir.display().to_string(),
                "--node-timeout",
                "3000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Up {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; panics with everything seen.
    fn expect_line(&mut self, needle: &str, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            if self.seen.iter().any(|l| l.contains(needle)) {
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(l) => self.seen.push(l),
                Err(_) if Instant::now() >= end => {
                    panic!("no line with {needle:?}; output:\n{}", self.output())
                }
                Err(_) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        // Drain what is left, then fail with it.
                        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                            self.seen.push(l);
                        }
                        if !self.seen.iter().any(|l| l.contains(needle)) {
                            panic!("`up` exited ({st}) before {needle:?}:\n{}", self.output());
                        }
                    }
                }
            }
        }
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGINT, then waits for `up` to exit on its own.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.pid()), Signal::SIGINT).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return st;
            }
            assert!(
                Instant::now() < end,
                "`up` still running 30 s after SIGINT:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed assertion must not leave a cluster behind: SIGTERM lets
        // `up` stop its children by itself.
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// PIDs whose parent is `parent` (from /proc).
fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the ")" that ends the command name: state, ppid, ...
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn cmd(port: u16, args: &[&str]) -> redis::RedisResult<String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()?;
    let mut q = redis::cmd(args[0]);
    for a in &args[1..] {
        q.arg(*a);
    }
    q.query(&mut c)
}

/// id → (port, role, master port or "-", slots), from one node's view.
fn layout(port: u16) -> BTreeMap<String, (String, String, String, String)> {
    let text = cmd(port, &["CLUSTER", "NODES"]).unwrap();
    let port_of: BTreeMap<String, String> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let port = f[1].split('@').next().unwrap().rsplit(':').next().unwrap();
            (f[0].to_string(), port.to_string())
        })
        .collect();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let role = if f[2].contains("master") {
                "master"
            } else {
                "replica"
            };
            let master = port_of.get(f[3]).cloned().unwrap_or_else(|| "-".into());
            (
                f[0].to_string(),
                (
                    port_of[f[0]].clone(),
                    role.to_string(),
                    master,
                    f[8..].join(" "),
                ),
            )
        })
        .collect()
}

/// GET /path over plain HTTP/1.0; returns (status line, body).
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The proxy part of the check. On a branch where `slotway proxy` still
/// answers "not implemented yet", `up` must say so plainly and keep the
/// cluster; once the proxy is merged the full check runs.
fn check_proxy(up: &Up, ports: &Ports) {
    let out = up.output();
    if out.contains("`slotway proxy` is not implemented yet") {
        assert!(
            out.contains("The cluster keeps running without the proxy"),
            "{out}"
        );
        eprintln!("NOTE: `slotway proxy` is not implemented on this branch; proxy checks skipped");
        return;
    }
    assert!(
        out.contains(&format!("redis-cli -p {}", ports.proxy)),
        "{out}"
    );
    for i in 0..50 {
        let k = format!("proxy:key:{i}");
        assert_eq!(
            cmd(ports.proxy, &["SET", &k, &i.to_string()]).unwrap(),
            "OK"
        );
    }
    for i in 0..50 {
        let k = format!("proxy:key:{i}");
        assert_eq!(cmd(ports.proxy, &["GET", &k]).unwrap(), i.to_string());
    }
    let (status, body) = http_get(ports.metrics, "/metrics").expect("metrics answer");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("slotway_proxy_"), "{body}");
}

fn stop_and_check_clean(up: &mut Up, ports: &Ports) {
    let kids = children_of(up.pid());
    assert!(
        kids.len() >= NODES as usize,
        "expected at least {NODES} children, found {kids:?}"
    );
    let st = up.interrupt();
    assert!(st.success(), "`up` exit status {st}:\n{}", up.output());
    let out = up.output();
    assert!(out.contains("every port is free again"), "{out}");
    for pid in kids {
        assert!(!alive(pid), "child {pid} survived `up`:\n{out}");
    }
    for p in ports.all() {
        assert!(free(p), "port {p} still in use after `up` stopped");
    }
}

#[test]
fn up_serves_a_cluster_stops_cleanly_and_restarts_from_nodes_conf() {
    let ports = pick_ports();
    let dir = tempfile::tempdir().unwrap();

    let mut up = Up::start(&ports, dir.path());
    up.expect_line("slotway is up", Duration::from_secs(90));
    let out = up.output();
    assert!(out.contains("cluster created"), "{out}");
    assert!(
        out.contains(&format!("redis-cli -c -p {}", ports.base)),
        "{out}"
    );

    // A cluster client no one here wrote: every slot range is served.
    let urls: Vec<String> = (0..NODES)
        .map(|i| format!("redis://127.0.0.1:{}/", ports.base + i))
        .collect();
    let client = redis::cluster::ClusterClient::new(urls.clone()).unwrap();
    let mut cc = client.get_connection().unwrap();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query(&mut cc)
            .unwrap();
    }
    for i in 0..100 {
        let v: i64 = redis::cmd("GET")
            .arg(format!("key:{i}"))
            .query(&mut cc)
            .unwrap();
        assert_eq!(v, i);
    }
    let info = cmd(ports.base, &["CLUSTER", "INFO"]).unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_known_nodes:6"), "{info}");
    let before = layout(ports.base);
    assert_eq!(before.len(), 6);
    assert_eq!(
        before.values().filter(|v| v.1 == "master").count(),
        3,
        "{before:?}"
    );
    check_proxy(&up, &ports);
    stop_and_check_clean(&mut up, &ports);
    drop(up);

    // Same --dir: the same cluster comes back from nodes.conf, no create.
    let mut up = Up::start(&ports, dir.path());
    up.expect_line("slotway is up", Duration::from_secs(90));
    let out = up.output();
    assert!(out.contains("existing cluster found"), "{out}");
    assert!(!out.contains("cluster created"), "{out}");
    wait_until(
        "every node to report the same layout as before",
        Duration::from_secs(30),
        || (0..NODES).all(|i| layout(ports.base + i) == before),
    );
    let client = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut cc = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("after-restart")
        .arg("yes")
        .query(&mut cc)
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("after-restart")
        .query(&mut cc)
        .unwrap();
    assert_eq!(v, "yes");
    check_proxy(&up, &ports);
    stop_and_check_clean(&mut up, &ports);
}

#[test]
fn up_refuses_a_busy_port_before_starting_anything() {
    let ports = pick_ports();
    let dir = tempfile::tempdir().unwrap();
    let _squatter = TcpListener::bind(("127.0.0.1", ports.base + 2)).unwrap();
    let mut up = Up::start(&ports, dir.path());
    up.expect_line("already in use", Duration::from_secs(20));
    let st = up.child.wait().unwrap();
    assert!(!st.success());
    let out = up.output();
    assert!(
        out.contains(&format!(
            "port {} (node {})",
            ports.base + 2,
            ports.base + 2
        )),
        "{out}"
    );
    assert!(
        !dir.path().join(ports.base.to_string()).exists(),
        "nothing was started or written"
    );
    for p in ports.all() {
        if p != ports.base + 2 {
            assert!(free(p), "port {p} in use");
        }
    }
}

#[test]
fn up_interrupted_during_startup_leaves_nothing_behind() {
    let ports = pick_ports();
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&ports, dir.path());
    // As soon as the first node process exists, whatever phase `up` is in.
    let mut kids = Vec::new();
    wait_until("`up` to start a child", Duration::from_secs(20), || {
        kids = children_of(up.pid());
        !kids.is_empty()
    });
    kill(Pid::from_raw(up.pid()), Signal::SIGTERM).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while up.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "`up` ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Children spawned after our first look are covered by the port check.
    for pid in kids {
        assert!(!alive(pid), "child {pid} survived");
    }
    wait_until("every port to be free", Duration::from_secs(5), || {
        ports.all().into_iter().all(free)
    });
}
