//! The children `up` starts: spawning them with their logs, noticing
//! exits, the stop signals, and stopping every child by PID.

use super::plan::{busy_port, shown, NodePlan};
use super::{Running, UpError, STOP_GRACE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};

/// A child process `up` started and must stop.
pub(super) struct Proc {
    pub(super) name: String,
    pub(super) pid: u32,
    pub(super) child: Child,
    pub(super) log: PathBuf,
    /// Set once the exit was seen (and reported).
    pub(super) exited: Option<String>,
}

/// Fails with the first of `procs` that has exited (while starting up,
/// one lost process means the plan failed).
pub(super) fn any_exited(procs: &mut [Proc]) -> Result<(), UpError> {
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
    pub(super) fn poll_exit(&mut self) -> Option<String> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st.to_string());
                return self.exited.clone();
            }
        }
        None
    }

    pub(super) fn running(&mut self) -> bool {
        self.poll_exit();
        self.exited.is_none()
    }

    pub(super) fn signal(&mut self, sig: Signal) {
        // Only a child not yet reaped: its PID cannot have been reused.
        if self.running() {
            if let Ok(pid) = i32::try_from(self.pid) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }
}

pub(super) fn spawn(exe: &Path, args: &[String], log: &Path, name: &str) -> Result<Proc, UpError> {
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

/// The last `lines` lines of a child's log, without a Rust backtrace
/// (RUST_BACKTRACE=1 would bury the one line that says what went wrong).
pub(super) fn tail(path: &Path, lines: usize) -> String {
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
pub(super) struct Signals {
    int: SignalStream,
    term: SignalStream,
    hup: SignalStream,
}

impl Signals {
    pub(super) fn install() -> Result<Signals, UpError> {
        let s = |k| signal(k).map_err(UpError::Runtime);
        Ok(Signals {
            int: s(SignalKind::interrupt())?,
            term: s(SignalKind::terminate())?,
            hup: s(SignalKind::hangup())?,
        })
    }

    pub(super) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Waits for a stop signal, reporting children that exit meanwhile (a
/// master shut down to watch a failover is expected, not fatal).
pub(super) async fn watch(running: &mut Running, signals: &mut Signals, nodes: &[NodePlan]) {
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
pub(super) async fn stop(running: &mut Running, signals: &mut Signals, ports: &[(u16, String)]) {
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
