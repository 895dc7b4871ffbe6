//! `slotway up`: a whole local cluster plus the proxy, in the foreground,
//! for a first try. Owns the child processes it starts (nodes and proxy),
//! the per-node configs it writes under `--dir`, the decision between
//! creating a cluster and rejoining one from `nodes.conf`, and stopping
//! every child by PID on Ctrl-C so no process or port is left behind.

mod plan;
mod supervise;
mod ui;

pub use plan::*;
use supervise::{any_exited, spawn, stop, tail, watch, Proc, Signals};
use ui::{print_summary, Progress};

use crate::cli::cluster;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
