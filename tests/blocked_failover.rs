//! Clients blocked on keys (XREAD, BLPOP ...) when the cluster changes
//! under them: a master that becomes a replica releases them with Redis's
//! UNBLOCKED error and closes the connection; a node that loses the slot
//! answers them with MOVED and keeps the connection. The same scenario
//! runs on a slotway cluster and (ignored, needs redis-server) on a real
//! Redis 7.0 cluster, and both must give the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::cluster::build_cluster_with;
use common::proxy::{text, RedisCluster};
use common::wait_until;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `{bar}` hashes to slot 5061, in the first master's range.
const SLOT: &str = "5061";

struct Member {
    id: String,
    port: u16,
    master: Option<String>,
    slots: Vec<(u16, u16)>,
}

fn members(port: u16) -> Vec<Member> {
    text(port, &["CLUSTER", "NODES"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let addr = f[1].split('@').next().unwrap();
            Member {
                id: f[0].to_string(),
                port: addr.rsplit(':').next().unwrap().parse().unwrap(),
                master: (f[3] != "-").then(|| f[3].to_string()),
                slots: f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .map(|s| match s.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (s.parse().unwrap(), s.parse().unwrap()),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn blocked(port: u16) -> bool {
    text(port, &["INFO", "clients"]).contains("blocked_clients:1")
}

/// Sends a raw command on its own connection.
fn send(port: u16, cmd: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(cmd.as_bytes()).unwrap();
    s
}

/// Everything the server sends until it closes the connection, or until
/// `quiet` passes with nothing new after at least one full line.
fn read_until_quiet(s: &mut TcpStream, deadline: Duration, quiet: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut last = Instant::now();
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                last = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.ends_with(b"\r\n") && last.elapsed() > quiet {
                    return (got, false);
                }
            }
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Runs the scenario from any node's port; returns the two replies (with
/// the MOVED address replaced by `ADDR`) and whether each connection closed.
fn scenario(any: u16) -> Vec<(String, bool)> {
    let all = members(any);
    let slot: u16 = SLOT.parse().unwrap();
    let owner = all
        .iter()
        .find(|m| m.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .unwrap();
    let replica = all
        .iter()
        .find(|m| m.master.as_deref() == Some(owner.id.as_str()))
        .unwrap();
    let mut out = Vec::new();

    // 1. The master is demoted by a manual failover.
    let mut s = send(
        owner.port,
        "*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$6\r\n{bar}s\r\n$1\r\n$\r\n",
    );
    wait_until("XREAD blocked", Duration::from_secs(10), || {
        blocked(owner.port)
    });
    let r = text(replica.port, &["CLUSTER", "FAILOVER"]);
    assert!(!r.starts_with("error"), "{r}");
    let (got, closed) = read_until_quiet(&mut s, Duration::from_secs(30), Duration::from_secs(1));
    out.push((String::from_utf8_lossy(&got).into_owned(), closed));
    wait_until("the replica took over", Duration::from_secs(30), || {
        text(replica.port, &["ROLE"]).contains("master")
            && text(replica.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
    });

    // 2. The new master gives the (empty) slot to another master.
    let mut s = send(
        replica.port,
        "*3\r\n$5\r\nBLPOP\r\n$6\r\n{bar}l\r\n$1\r\n0\r\n",
    );
    wait_until("BLPOP blocked", Duration::from_secs(10), || {
        blocked(replica.port)
    });
    let other = all
        .iter()
        .find(|m| m.master.is_none() && m.id != owner.id && !m.slots.is_empty())
        .unwrap();
    for m in all
        .iter()
        .filter(|m| m.master.is_none() && m.id != owner.id)
    {
        let r = text(m.port, &["CLUSTER", "SETSLOT", SLOT, "NODE", &other.id]);
        assert!(!r.starts_with("error"), "{r}");
    }
    let r = text(
        replica.port,
        &["CLUSTER", "SETSLOT", SLOT, "NODE", &other.id],
    );
    assert!(!r.starts_with("error"), "{r}");
    let (got, _) = read_until_quiet(&mut s, Duration::from_secs(30), Duration::from_millis(300));
    let reply = String::from_utf8_lossy(&got).replace(&format!(":{}", other.port), ":ADDR");
    // The connection goes on.
    s.write_all(b"PING\r\n").unwrap();
    let (pong, closed) =
        read_until_quiet(&mut s, Duration::from_secs(10), Duration::from_millis(200));
    assert_eq!(pong, b"+PONG\r\n");
    out.push((reply, closed));
    out
}

fn expected() -> Vec<(String, bool)> {
    vec![
        (
            "-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n"
                .to_string(),
            true,
        ),
        (format!("-MOVED {SLOT} 127.0.0.1:ADDR\r\n"), false),
    ]
}

#[test]
fn blocked_clients_are_released_on_failover_and_redirected_on_a_slot_move() {
    let nodes = build_cluster_with(&["--cluster-node-timeout", "2000"]);
    assert_eq!(scenario(nodes[0].port), expected());
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn real_redis_cluster_does_the_same() {
    let cluster = RedisCluster::start(3, 1, 2000);
    assert_eq!(scenario(cluster.nodes[0].port), expected());
}
