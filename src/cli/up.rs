//! `slotway up`: a whole local cluster plus the proxy, in the foreground,
//! for a first try. Owns the child processes it starts (nodes and proxy),
//! the per-node configs it writes under `--dir`, the decision between
//! creating a cluster and rejoining one from `nodes.conf`, and stopping
//! every child by PID on Ctrl-C so no process or port is left behind.

use crate::cli::cluster;
use crate::cluster::topology::NodesConf;
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};

/// How long each startup phase may take before `up` gives up with an error
/// (a fresh 3+3 cluster is ready in a few seconds on a laptop).
const NODES_DEADLINE: Duration = Duration::from_secs(30);
const CLUSTER_DEADLINE: Duration = Duration::from_secs(90);
const PROXY_DEADLINE: Duration = Duration::from_secs(20);
/// SIGTERM → this long → SIGKILL. A node saving a large snapshot on
/// shutdown may need a while, but Ctrl-C must not hang forever.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What `slotway up` was asked for: its command-line flags.
#[derive(Debug, Clone, clap::Args)]
pub struct UpOptions {
    /// Master nodes (at least 3).
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Replicas per master.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Client port of the first node; the others follow, each with its
    /// cluster bus on port + 10000.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// Where the proxy listens.
    #[arg(long, default_value_t = 7777)]
    pub proxy_port: u16,
    /// Where the proxy serves /metrics and /healthz.
    #[arg(long, default_value_t = 9121)]
    pub metrics_port: u16,
    /// One subdirectory per node (config, nodes.conf, data, log); rerun
    /// with the same dir to restart the same cluster.
    #[arg(long, default_value = "./data")]
    pub dir: PathBuf,
    /// cluster-node-timeout of every node, ms (the founding document's).
    #[arg(long = "node-timeout", value_name = "MS", default_value_t = 5000)]
    pub node_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0}")]
    Options(String),
    #[error("port {port} ({what}) is already in use: stop what listens there, or pick other ports with --base-port / --proxy-port / --metrics-port")]
    PortBusy { port: u16, what: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} exited during startup ({status}); last lines of {log}:\n{tail}")]
    Exited {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} within {secs} s; see the logs in {dir}")]
    Timeout {
        what: String,
        secs: u64,
        dir: PathBuf,
    },
    #[error("{0}")]
    Layout(String),
    #[error("`slotway cluster create` failed: {source}\n{output}")]
    Create {
        source: cluster::AdminError,
        output: String,
    },
    #[error("interrupted during startup; everything started so far was stopped")]
    Interrupted,
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// One node of the plan: where it listens and where its files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub port: u16,
    pub bus_port: u16,
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
}

impl NodePlan {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The nodes `opts` asks for, with validated ports. `dir` must be absolute
/// already: each node changes into its own directory.
pub fn plan(opts: &UpOptions, dir: &Path) -> Result<Vec<NodePlan>, UpError> {
    if opts.masters < 3 {
        return Err(UpError::Options(format!(
            "--masters {}: a Redis cluster needs at least 3 masters",
            opts.masters
        )));
    }
    let count = opts
        .masters
        .checked_mul(opts.replicas + 1)
        .ok_or_else(|| UpError::Options("too many nodes".into()))?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| opts.base_port.checked_add(i))
            .filter(|p| *p != 0);
        // The bus listens on port + 10000, as in Redis.
        let (Some(port), Some(bus_port)) = (port, port.and_then(|p| p.checked_add(10000))) else {
            return Err(UpError::Options(format!(
                "--base-port {} leaves no room for {count} nodes and their bus ports (port + 10000 must stay below 65536)",
                opts.base_port
            )));
        };
        let ndir = dir.join(port.to_string());
        out.push(NodePlan {
            port,
            bus_port,
            conf: ndir.join("node.conf"),
            log: ndir.join("node.log"),
            dir: ndir,
        });
    }
    Ok(out)
}

/// Every port `up` will listen on, with what it is for (for the busy check
/// before starting and the free check after stopping).
pub fn all_ports(nodes: &[NodePlan], opts: &UpOptions) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = Vec::new();
    for n in nodes {
        v.push((n.port, format!("node {}", n.port)));
        v.push((n.bus_port, format!("cluster bus of node {}", n.port)));
    }
    v.push((opts.proxy_port, "proxy".into()));
    v.push((opts.metrics_port, "proxy metrics".into()));
    v
}

/// The founding document's directives for one node, run in the foreground
/// so `up` owns the process.
pub fn render_node_conf(n: &NodePlan, node_timeout_ms: u64) -> String {
    format!(
        "# Written by `slotway up` on every start: change the flags of `slotway up`
# (or copy this file elsewhere) rather than editing it here.
# The founding document's directives; see config/node.conf for each one.
# `up` owns this process, so it stays in the foreground.
daemonize no
port {port}
cluster-enabled yes
cluster-node-timeout {node_timeout_ms}
cluster-replica-no-failover no
maxmemory 512mb
dir {dir}
# Loopback only: this is a local cluster for a first try.
bind 127.0.0.1
cluster-config-file nodes.conf
# Plain-text log; `up` also sends the process's own output here.
logfile {log}
",
        port = n.port,
        dir = n.dir.display(),
        log = n.log.display(),
    )
}

/// Checks that nothing listens on any of `ports` (bind and release each).
pub fn busy_port(ports: &[(u16, String)]) -> Option<(u16, String)> {
    ports
        .iter()
        .find(|(p, _)| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        .cloned()
}

/// The fields of `CLUSTER INFO` that decide between create and rejoin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub state_ok: bool,
    pub known_nodes: usize,
    pub slots_assigned: usize,
}

pub fn parse_cluster_info(text: &str) -> ClusterInfo {
    let mut info = ClusterInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim_end().split_once(':') else {
            continue;
        };
        match k {
            "cluster_state" => info.state_ok = v == "ok",
            "cluster_known_nodes" => info.known_nodes = v.parse().unwrap_or(0),
            "cluster_slots_assigned" => info.slots_assigned = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    info
}

/// True when a `CLUSTER NODES` listing shows `total` nodes, each connected
/// and none failing or still in handshake.
pub fn all_linked(listing: &str, total: usize) -> bool {
    let lines: Vec<&str> = listing.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.len() == total
        && lines.iter().all(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let flags = f.get(2).copied().unwrap_or("");
            f.get(7) == Some(&"connected")
                && !flags
                    .split(',')
                    .any(|x| matches!(x, "fail" | "fail?" | "handshake" | "noaddr"))
        })
}

/// What the nodes in `--dir` already are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Every node is empty and alone: create the cluster.
    Fresh,
    /// Every node already belongs to a cluster of exactly these nodes
    /// (restarted from nodes.conf): just wait for it.
    Cluster,
    /// Anything else; the message says what is wrong and what to do.
    Mixed(String),
}

pub fn classify(infos: &[(u16, ClusterInfo)], dir: &Path) -> Existing {
    let fresh = |i: &ClusterInfo| i.known_nodes <= 1 && i.slots_assigned == 0;
    let total = infos.len();
    if infos.iter().all(|(_, i)| fresh(i)) {
        return Existing::Fresh;
    }
    let new: Vec<String> = infos
        .iter()
        .filter(|(_, i)| fresh(i))
        .map(|(p, _)| p.to_string())
        .collect();
    if !new.is_empty() {
        return Existing::Mixed(format!(
            "{} holds a cluster, but nodes {} are new: rerun with the same --masters/--replicas/--base-port as before, or use another --dir (or remove it) for a new cluster",
            shown(dir),
            new.join(", ")
        ));
    }
    if let Some((p, i)) = infos.iter().find(|(_, i)| i.known_nodes != total) {
        return Existing::Mixed(format!(
            "node {p} in {} belongs to a cluster of {} nodes, but these flags make {total}: rerun with the same --masters/--replicas/--base-port as before, or use another --dir (or remove it) for a new cluster",
            shown(dir),
            i.known_nodes
        ));
    }
    Existing::Cluster
}

/// Sends one command on a fresh connection and returns the reply as text
/// (error replies included, prefixed with `-`). Async so a slow node never
/// blocks the signal handling.
async fn query(addr: &str, args: &[&str]) -> Option<String> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = crate::resp::command_bytes(args);
        s.write_all(&req).await.ok()?;
        let mut buf = Vec::new();
        loop {
            if let Ok(Some((frame, _))) = decode(&buf) {
                return match frame {
                    OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    OwnedFrame::Error(e) => Some(format!("-{e}")),
                    OwnedFrame::Integer(i) => Some(i.to_string()),
                    _ => None,
                };
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(chunk.get(..n)?);
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// A child process `up` started and must stop.
struct Proc {
    name: String,
    pid: u32,
    child: Child,
    log: PathBuf,
    /// Set once the exit was seen (and reported).
    exited: Option<String>,
}

/// Fails with the first of `procs` that has exited (while starting up,
/// one lost process means the plan failed).
fn any_exited(procs: &mut [Proc]) -> Result<(), UpError> {
    for p in procs.iter_mut() {
        if let Some(status) = p.poll_exit() {
            return Err(UpError::Exited {
                what: p.name.clone(),
                status,
                log: p.log.clone(),
                tail: tail(&p.log, 10),
            });
        }
    }
    Ok(())
}

impl Proc {
    fn poll_exit(&mut self) -> Option<String> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st.to_string());
                return self.exited.clone();
            }
        }
        None
    }

    fn running(&mut self) -> bool {
        self.poll_exit();
        self.exited.is_none()
    }

    fn signal(&mut self, sig: Signal) {
        // Only a child not yet reaped: its PID cannot have been reused.
        if self.running() {
            if let Ok(pid) = i32::try_from(self.pid) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }
}

fn spawn(exe: &Path, args: &[String], log: &Path, name: &str) -> Result<Proc, UpError> {
    let io = |source| UpError::Io {
        path: log.to_path_buf(),
        source,
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let err = out.try_clone().map_err(io)?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: Ctrl-C in the terminal reaches `up` only, and
        // `up` stops the children in order (proxy first, then nodes).
        .process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            // If `up` itself is killed (SIGKILL, crash), its children must
            // not outlive it holding the ports.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            if nix::unistd::getppid().as_raw().unsigned_abs() != parent {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| UpError::Spawn {
        what: name.to_string(),
        source,
    })?;
    Ok(Proc {
        name: name.to_string(),
        pid: child.id().unwrap_or(0),
        child,
        log: log.to_path_buf(),
        exited: None,
    })
}

/// A path as the user would type it: relative to the current directory
/// when it is below it (`data/7000/node.log`), else absolute.
fn shown(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|rel| !rel.as_os_str().is_empty())
        .unwrap_or_else(|| p.to_path_buf())
        .display()
        .to_string()
}

/// The last `lines` lines of a child's log, without a Rust backtrace
/// (RUST_BACKTRACE=1 would bury the one line that says what went wrong).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .take_while(|l| {
            !l.trim_start()
                .to_ascii_lowercase()
                .starts_with("stack backtrace")
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    let from = all.len().saturating_sub(lines);
    all.get(from..)
        .unwrap_or_default()
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// SIGINT, SIGTERM and SIGHUP all mean "stop everything".
struct Signals {
    int: SignalStream,
    term: SignalStream,
    hup: SignalStream,
}

impl Signals {
    fn install() -> Result<Signals, UpError> {
        let s = |k| signal(k).map_err(UpError::Runtime);
        Ok(Signals {
            int: s(SignalKind::interrupt())?,
            term: s(SignalKind::terminate())?,
            hup: s(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Progress on a TTY (indicatif spinner), plain lines everywhere.
struct Progress {
    bar: ProgressBar,
    step: Instant,
}

impl Progress {
    fn new() -> Progress {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress {
            bar,
            step: Instant::now(),
        }
    }

    fn phase(&mut self, msg: impl Into<String>) {
        self.step = Instant::now();
        self.bar.reset_elapsed();
        self.bar.set_message(msg.into());
    }

    fn update(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    fn done(&self, msg: &str) {
        let secs = self.step.elapsed().as_secs_f64();
        self.bar.suspend(|| println!("✓ {msg} ({secs:.1} s)"));
    }

    fn note(&self, msg: &str) {
        self.bar.suspend(|| println!("{msg}"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The running children and what `up` learned while starting them.
struct Running {
    nodes: Vec<Proc>,
    proxy: Option<Proc>,
    proxy_error: Option<String>,
}

/// `slotway up`: runs until Ctrl-C (or SIGTERM/SIGHUP), then stops every
/// child. Returns an error only when startup fails.
pub fn run(opts: &UpOptions) -> Result<(), UpError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UpError::Runtime)?;
    // Current-thread on purpose: children are spawned from this thread, and
    // their parent-death signal is tied to the thread that forked them.
    rt.block_on(up(opts))
}

async fn up(opts: &UpOptions) -> Result<(), UpError> {
    let started = Instant::now();
    let dir = std::path::absolute(&opts.dir).map_err(|source| UpError::Io {
        path: opts.dir.clone(),
        source,
    })?;
    let nodes = plan(opts, &dir)?;
    let ports = all_ports(&nodes, opts);
    // Before anything is written or started: a busy port is the most common
    // first-run failure (another `up`, a redis-server on 7000).
    if let Some((port, what)) = busy_port(&ports) {
        return Err(UpError::PortBusy { port, what });
    }
    for n in &nodes {
        let io = |source| UpError::Io {
            path: n.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&n.dir).map_err(io)?;
        std::fs::write(&n.conf, render_node_conf(n, opts.node_timeout_ms)).map_err(io)?;
    }
    let exe = std::env::current_exe().map_err(|source| UpError::Spawn {
        what: "slotway (cannot find its own executable)".into(),
        source,
    })?;
    let mut signals = Signals::install()?;
    println!(
        "slotway up: {} masters, {} replica(s) each, nodes on 127.0.0.1:{}-{}, data in {}",
        opts.masters,
        opts.replicas,
        nodes.first().map_or(0, |n| n.port),
        nodes.last().map_or(0, |n| n.port),
        opts.dir.display()
    );
    let mut running = Running {
        nodes: Vec::new(),
        proxy: None,
        proxy_error: None,
    };
    let mut progress = Progress::new();
    let outcome = tokio::select! {
        r = start(opts, &exe, &dir, &nodes, &mut running, &mut progress) => r,
        sig = signals.recv() => {
            progress.note(&format!("{sig} received during startup"));
            Err(UpError::Interrupted)
        }
    };
    progress.finish();
    if let Err(e) = outcome {
        stop(&mut running, &mut signals, &ports).await;
        return Err(e);
    }
    print_summary(opts, &nodes, &mut running, started).await;
    watch(&mut running, &mut signals, &nodes).await;
    stop(&mut running, &mut signals, &ports).await;
    Ok(())
}

async fn start(
    opts: &UpOptions,
    exe: &Path,
    dir: &Path,
    nodes: &[NodePlan],
    running: &mut Running,
    progress: &mut Progress,
) -> Result<(), UpError> {
    progress.phase(format!("starting {} nodes", nodes.len()));
    for n in nodes {
        let args = vec!["node".to_string(), n.conf.display().to_string()];
        running
            .nodes
            .push(spawn(exe, &args, &n.log, &format!("node {}", n.port))?);
    }
    let deadline = Instant::now() + NODES_DEADLINE;
    loop {
        any_exited(&mut running.nodes)?;
        let mut up = 0;
        for n in nodes {
            if query(&n.addr(), &["PING"]).await.as_deref() == Some("PONG") {
                up += 1;
            }
        }
        progress.update(format!("starting nodes: {up}/{} answer PING", nodes.len()));
        if up == nodes.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(UpError::Timeout {
                what: format!("only {up} of {} nodes answered PING", nodes.len()),
                secs: NODES_DEADLINE.as_secs(),
                dir: dir.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.done(&format!("{} nodes answer PING", nodes.len()));

    let mut infos = Vec::new();
    for n in nodes {
        let text = query(&n.addr(), &["CLUSTER", "INFO"])
            .await
            .unwrap_or_default();
        infos.push((n.port, parse_cluster_info(&text)));
    }
    match classify(&infos, dir) {
        Existing::Mixed(msg) => return Err(UpError::Layout(msg)),
        Existing::Cluster => {
            progress.note(&format!(
                "✓ existing cluster found (nodes.conf in {}): rejoining, no create",
                shown(dir)
            ));
        }
        Existing::Fresh => {
            progress.phase("creating the cluster (slotway cluster create)");
            let addrs: Vec<String> = nodes.iter().map(NodePlan::addr).collect();
            let replicas = opts.replicas;
            // The admin CLI is blocking; keep this thread free for signals.
            let (res, output) = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let r = cluster::create(&addrs, replicas, true, &mut out);
                (r, String::from_utf8_lossy(&out).into_owned())
            })
            .await
            .map_err(|e| UpError::Runtime(std::io::Error::other(e)))?;
            let log = dir.join("cluster-create.log");
            let _ = std::fs::write(&log, &output);
            if let Err(source) = res {
                return Err(UpError::Create { source, output });
            }
            progress.done(&format!(
                "cluster created with `slotway cluster create --replicas {replicas}` (its output: {})",
                shown(&log)
            ));
        }
    }

    // cluster_state:ok alone is not enough: nodes restarted from nodes.conf
    // report it at once, before their bus links are back.
    progress.phase("waiting for cluster_state:ok and every bus link on every node");
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    loop {
        let mut ok = 0;
        for n in nodes {
            let info = query(&n.addr(), &["CLUSTER", "INFO"])
                .await
                .unwrap_or_default();
            let listing = query(&n.addr(), &["CLUSTER", "NODES"])
                .await
                .unwrap_or_default();
            if parse_cluster_info(&info).state_ok && all_linked(&listing, nodes.len()) {
                ok += 1;
            }
        }
        progress.update(format!(
            "waiting for the cluster: {ok}/{} nodes ready",
            nodes.len()
        ));
        if ok == nodes.len() {
            break;
        }
        any_exited(&mut running.nodes)?;
        if Instant::now() > deadline {
            return Err(UpError::Timeout {
                what: format!(
                    "only {ok} of {} nodes reached cluster_state:ok",
                    nodes.len()
                ),
                secs: CLUSTER_DEADLINE.as_secs(),
                dir: dir.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.done("cluster_state:ok and every bus link connected on every node");

    progress.phase("starting the proxy");
    let seeds: Vec<String> = nodes.iter().map(NodePlan::addr).collect();
    let args = vec![
        "proxy".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", opts.proxy_port),
        "--nodes".into(),
        seeds.join(","),
        "--metrics".into(),
        format!("127.0.0.1:{}", opts.metrics_port),
    ];
    let mut proxy = spawn(exe, &args, &dir.join("proxy.log"), "proxy")?;
    let addr = format!("127.0.0.1:{}", opts.proxy_port);
    let deadline = Instant::now() + PROXY_DEADLINE;
    // The cluster is useful without the proxy (`redis-cli -c`), so a proxy
    // that fails is reported loudly but does not take the cluster down.
    loop {
        if let Some(status) = proxy.poll_exit() {
            running.proxy_error = Some(format!(
                "the proxy exited ({status}); last lines of {}:\n{}",
                shown(&proxy.log),
                tail(&proxy.log, 5)
            ));
            break;
        }
        if query(&addr, &["PING"]).await.as_deref() == Some("PONG") {
            progress.done(&format!("proxy answers PING on {addr}"));
            break;
        }
        if Instant::now() > deadline {
            running.proxy_error = Some(format!(
                "the proxy did not answer PING on {addr} within {} s (see {})",
                PROXY_DEADLINE.as_secs(),
                shown(&proxy.log)
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.proxy = Some(proxy);
    Ok(())
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart, indented by two.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (cell, w) in r.iter().zip(&widths) {
            let _ = write!(line, " {cell:<w$} ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The endpoint table and the node list, from the cluster's own view.
async fn print_summary(opts: &UpOptions, nodes: &[NodePlan], running: &mut Running, t0: Instant) {
    let first = nodes.first().map(NodePlan::addr).unwrap_or_default();
    let listing = query(&first, &["CLUSTER", "NODES"])
        .await
        .unwrap_or_default();
    let conf = NodesConf::parse(&format!("{listing}vars currentEpoch 0 lastVoteEpoch 0\n")).ok();
    let mut out = String::new();
    if let Some(err) = &running.proxy_error {
        let _ = writeln!(
            out,
            "✗ {err}\n  The cluster keeps running without the proxy; connect with redis-cli -c.\n"
        );
    }
    let proxy_ok = running.proxy_error.is_none();
    let first_port = nodes.first().map_or(0, |n| n.port);
    let mut rows = vec![row(&["endpoint", "address", "connect with"])];
    if proxy_ok {
        let addr = format!("127.0.0.1:{}", opts.proxy_port);
        rows.push(row(&[
            "proxy",
            &addr,
            &format!("redis-cli -p {}", opts.proxy_port),
        ]));
        let url = format!("http://127.0.0.1:{}/metrics", opts.metrics_port);
        rows.push(row(&["proxy metrics", &url, &format!("curl -s {url}")]));
    }
    rows.push(row(&[
        "cluster (any node)",
        &first,
        &format!("redis-cli -c -p {first_port}"),
    ]));
    let _ = write!(out, "\n{}", table(&rows));
    let mut rows = vec![row(&["node", "role", "slots", "pid", "log"])];
    for (n, p) in nodes.iter().zip(running.nodes.iter()) {
        let me = conf
            .as_ref()
            .and_then(|c| c.nodes.iter().find(|x| x.port == n.port));
        let (role, slots) = match me {
            Some(x) if x.flags.master => (
                "master",
                crate::cluster::topology::render_ranges(&x.slots.ranges()),
            ),
            Some(x) => {
                let of = x
                    .master_id
                    .as_ref()
                    .and_then(|m| conf.as_ref()?.nodes.iter().find(|y| &y.id == m))
                    .map_or_else(|| "?".to_string(), |m| m.port.to_string());
                ("replica", format!("of {of}"))
            }
            None => ("?", String::new()),
        };
        rows.push(vec![
            n.port.to_string(),
            role.into(),
            slots,
            p.pid.to_string(),
            shown(&n.log),
        ]);
    }
    if let (Some(p), true) = (&running.proxy, proxy_ok) {
        rows.push(vec![
            "proxy".into(),
            String::new(),
            String::new(),
            p.pid.to_string(),
            shown(&p.log),
        ]);
    }
    let _ = write!(out, "\n{}", table(&rows));
    let _ = writeln!(
        out,
        "\nslotway is up in {:.1} s. Ctrl-C stops everything.",
        t0.elapsed().as_secs_f64()
    );
    print!("{out}");
}

/// Waits for a stop signal, reporting children that exit meanwhile (a
/// master shut down to watch a failover is expected, not fatal).
async fn watch(running: &mut Running, signals: &mut Signals, nodes: &[NodePlan]) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            sig = signals.recv() => {
                println!("\n{sig} received: stopping");
                return;
            }
            _ = tick.tick() => {}
        }
        for (p, n) in running.nodes.iter_mut().zip(nodes) {
            if let Some(status) = p.poll_exit() {
                println!(
                    "! {} (pid {}) exited ({status}); the others keep running. To bring it back: {} node {}",
                    p.name,
                    p.pid,
                    std::env::current_exe().map_or_else(|_| "slotway".into(), |e| shown(&e)),
                    shown(&n.conf)
                );
            }
        }
        if let Some(p) = running.proxy.as_mut() {
            if running.proxy_error.is_none() {
                if let Some(status) = p.poll_exit() {
                    println!(
                        "! the proxy (pid {}) exited ({status}); see {}",
                        p.pid,
                        shown(&p.log)
                    );
                }
            }
        }
        let mut alive = 0;
        for p in running.nodes.iter_mut().chain(running.proxy.as_mut()) {
            alive += usize::from(p.running());
        }
        if alive == 0 {
            println!("every process exited: nothing left to run");
            return;
        }
    }
}

/// Proxy first (its clients see one clean close), then every node: SIGTERM,
/// a bounded wait, SIGKILL for what is left; a second signal skips the wait.
async fn stop(running: &mut Running, signals: &mut Signals, ports: &[(u16, String)]) {
    let mut stopped = 0usize;
    let mut groups: Vec<Vec<&mut Proc>> = vec![
        running.proxy.iter_mut().collect(),
        running.nodes.iter_mut().collect(),
    ];
    // A second signal means "now": it holds for every group after it.
    let mut forced = false;
    for group in groups.iter_mut() {
        for p in group.iter_mut() {
            if p.running() {
                stopped += 1;
            }
            p.signal(if forced {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            });
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        loop {
            let mut left = 0;
            for p in group.iter_mut() {
                left += usize::from(p.running());
            }
            if left == 0 {
                break;
            }
            let mut kill_now = forced;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    println!("{left} process(es) still running after {} s: SIGKILL", STOP_GRACE.as_secs());
                    kill_now = true;
                }
                sig = signals.recv() => {
                    println!("{sig} again: SIGKILL");
                    forced = true;
                    kill_now = true;
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if kill_now {
                for p in group.iter_mut() {
                    p.signal(Signal::SIGKILL);
                }
                for p in group.iter_mut() {
                    // Reap, so the PID is really gone when `up` returns.
                    let _ = p.child.wait().await;
                    p.exited.get_or_insert_with(|| "killed".into());
                }
            }
        }
    }
    // Listening sockets close with their process; allow the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut busy = busy_port(ports);
    while busy.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        busy = busy_port(ports);
    }
    match busy {
        None => println!("stopped {stopped} process(es); every port is free again"),
        Some((port, what)) => println!(
            "stopped {stopped} process(es), but port {port} ({what}) is still in use by something else"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> UpOptions {
        UpOptions {
            masters: 3,
            replicas: 1,
            base_port: 7000,
            proxy_port: 7777,
            metrics_port: 9121,
            dir: PathBuf::from("/tmp/x"),
            node_timeout_ms: 5000,
        }
    }

    #[test]
    fn plan_lays_out_consecutive_ports_with_bus_ports_and_a_dir_each() {
        let p = plan(&opts(), Path::new("/d")).unwrap();
        assert_eq!(p.len(), 6);
        assert_eq!(p[0].port, 7000);
        assert_eq!(p[5].port, 7005);
        assert_eq!(p[5].bus_port, 17005);
        assert_eq!(p[2].conf, PathBuf::from("/d/7002/node.conf"));
        let ports = all_ports(&p, &opts());
        assert_eq!(ports.len(), 14);
        assert!(ports
            .iter()
            .any(|(p, w)| *p == 9121 && w == "proxy metrics"));
    }

    #[test]
    fn plan_refuses_what_cannot_be_a_cluster() {
        let mut o = opts();
        o.masters = 2;
        assert!(matches!(
            plan(&o, Path::new("/d")),
            Err(UpError::Options(_))
        ));
        let mut o = opts();
        o.base_port = 60000;
        let e = plan(&o, Path::new("/d")).unwrap_err().to_string();
        assert!(e.contains("65536"), "{e}");
    }

    #[test]
    fn node_conf_carries_the_founding_directives_in_the_foreground() {
        let p = plan(&opts(), Path::new("/d")).unwrap();
        let text = render_node_conf(&p[1], 5000);
        for line in [
            "daemonize no",
            "port 7001",
            "cluster-enabled yes",
            "cluster-node-timeout 5000",
            "cluster-replica-no-failover no",
            "maxmemory 512mb",
            "dir /d/7001",
            "bind 127.0.0.1",
            "logfile /d/7001/node.log",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        // And our own config parser accepts it.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node.conf");
        std::fs::write(&f, &text).unwrap();
        let table = crate::runtime::config::ConfigTable::from_args(Some(&f), &[]).unwrap();
        let cfg = crate::runtime::config::NodeConfig::from_table(&table).unwrap();
        assert_eq!(cfg.cluster_node_timeout, 5000);
        assert!(!cfg.daemonize);
    }

    #[test]
    fn busy_ports_are_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = busy_port(&[(port, "node".into())]);
        assert_eq!(found, Some((port, "node".to_string())));
        drop(l);
        assert_eq!(busy_port(&[(port, "node".into())]), None);
    }

    #[test]
    fn cluster_info_fields_are_read() {
        let i = parse_cluster_info(
            "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:6\r\n",
        );
        assert_eq!(
            i,
            ClusterInfo {
                state_ok: true,
                known_nodes: 6,
                slots_assigned: 16384
            }
        );
        assert!(!parse_cluster_info("cluster_state:fail\r\n").state_ok);
    }

    #[test]
    fn a_cluster_is_ready_only_when_every_link_is_up() {
        let ok = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                  b 127.0.0.1:7001@17001 slave a 0 0 1 connected\n";
        assert!(all_linked(ok, 2));
        assert!(!all_linked(ok, 3), "a node is missing");
        let down = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b 127.0.0.1:7001@17001 slave a 0 0 1 disconnected\n";
        assert!(!all_linked(down, 2));
        let failing = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                       b 127.0.0.1:7001@17001 slave,fail? a 0 0 1 connected\n";
        assert!(!all_linked(failing, 2));
    }

    #[test]
    fn fresh_nodes_are_created_and_a_whole_cluster_is_rejoined() {
        let d = Path::new("/d");
        let fresh = ClusterInfo {
            state_ok: false,
            known_nodes: 1,
            slots_assigned: 0,
        };
        let member = ClusterInfo {
            state_ok: true,
            known_nodes: 3,
            slots_assigned: 16384,
        };
        assert_eq!(
            classify(&[(1, fresh), (2, fresh), (3, fresh)], d),
            Existing::Fresh
        );
        assert_eq!(
            classify(&[(1, member), (2, member), (3, member)], d),
            Existing::Cluster
        );
        let Existing::Mixed(m) = classify(&[(1, member), (2, member), (3, fresh)], d) else {
            panic!("a new node beside a cluster is refused");
        };
        assert!(m.contains("nodes 3 are new"), "{m}");
        let Existing::Mixed(m) = classify(&[(1, member), (2, member)], d) else {
            panic!("a cluster of another size is refused");
        };
        assert!(m.contains("cluster of 3 nodes"), "{m}");
    }
}
