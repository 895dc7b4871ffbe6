//! Failover on real node processes, with data: a shut-down master is
//! replaced by its replica (no key lost) and comes back as that replica's
//! replica, resynced; `kill -9` loses no write acknowledged with `WAIT 1 0`;
//! a master cut off (SIGSTOP) is replaced and rejoins as a replica without
//! ever taking a write for slots it lost; a master alone refuses writes
//! after the node timeout; `cluster-replica-no-failover` stops automatic
//! promotion while `CLUSTER FAILOVER` still works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::cluster::{build_cluster_with, cmd, text};
use common::{wait_until, Node};
use std::time::Duration;

/// Short node timeout: failover in a few seconds, yet no false alarm on a
/// loaded 2-core CI machine.
const TIMEOUT: &str = "2000";

fn myself_line(n: &Node) -> String {
    text(n, &["CLUSTER", "NODES"])
        .lines()
        .find(|l| l.contains("myself"))
        .unwrap()
        .to_string()
}

/// Every replica (node i + 3) has applied all of its master's (node i)
/// stream.
fn wait_replicas_synced(nodes: &[Node]) {
    wait_until("replicas caught up", Duration::from_secs(30), || {
        (0..3).all(|i| {
            let m = nodes[i].info_field("replication", "master_repl_offset");
            let r = nodes[i + 3].info_field("replication", "slave_repl_offset");
            !m.is_empty() && m == r
        })
    });
}

fn cluster_client(nodes: &[&Node]) -> redis::cluster::ClusterClient {
    redis::cluster::ClusterClient::builder(nodes.iter().map(|n| n.url()).collect::<Vec<_>>())
        .retries(30)
        .build()
        .unwrap()
}

fn signal(n: &Node, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(n.pid() as i32), sig).unwrap();
}

/// `n` is a replica of `master` in its own view.
fn replica_of(n: &Node, master: &str) -> bool {
    let line = myself_line(n);
    let f: Vec<&str> = line.split(' ').collect();
    f[2].contains("slave") && f[3] == master
}

/// `node` owns slot `slot` in the view of every node in `observers`, and
/// they all report cluster_state:ok.
fn owns_everywhere(node: &Node, slot: u16, observers: &[&Node]) -> bool {
    let id = text(node, &["CLUSTER", "MYID"]);
    observers.iter().all(|o| {
        let slots: redis::Value = cmd(o, &["CLUSTER", "SLOTS"]).unwrap();
        let owner = match slots {
            redis::Value::Array(ranges) => ranges.into_iter().find_map(|r| match r {
                redis::Value::Array(f) => {
                    let (lo, hi) = match (&f[0], &f[1]) {
                        (redis::Value::Int(lo), redis::Value::Int(hi)) => (*lo, *hi),
                        _ => return None,
                    };
                    if (lo..=hi).contains(&i64::from(slot)) {
                        match &f[2] {
                            redis::Value::Array(m) => match &m[2] {
                                redis::Value::BulkString(b) => {
                                    Some(String::from_utf8_lossy(b).into_owned())
                                }
                                _ => None,
                            },
                            _ => None,
                        }
                    } else {
                        None
                    }
                }
                _ => None,
            }),
            _ => None,
        };
        owner.as_deref() == Some(id.as_str())
            && text(o, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
    })
}

#[test]
fn a_shut_down_master_is_replaced_and_comes_back_as_a_replica() {
    let mut nodes = build_cluster_with(&["--cluster-node-timeout", TIMEOUT]);
    let old_id = text(&nodes[0], &["CLUSTER", "MYID"]);
    let new_id = text(&nodes[3], &["CLUSTER", "MYID"]);
    let port = nodes[0].port;
    // Keys on every master, replicated before the crash.
    let all: Vec<&Node> = nodes.iter().collect();
    let client = cluster_client(&all);
    let mut c = client.get_connection().unwrap();
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg("{bar}h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    wait_replicas_synced(&nodes);
    // The walkthrough's `redis-cli -p <master> shutdown`.
    let _ = cmd(&nodes[0], &["SHUTDOWN", "NOSAVE"]);
    assert!(nodes[0].wait_exit(Duration::from_secs(10)), "master exited");
    let others: Vec<&Node> = nodes[1..].iter().collect();
    wait_until(
        "the replica owns slot 0 everywhere, state ok",
        Duration::from_secs(30),
        || owns_everywhere(&nodes[3], 0, &others),
    );
    assert!(myself_line(&nodes[3]).contains("myself,master"));
    // Every key written before the crash reads back (from the promoted
    // node for the failed master's slots).
    let survivors: Vec<&Node> = nodes[1..].iter().collect();
    let mut c = cluster_client(&survivors).get_connection().unwrap();
    for i in 0..300 {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, Some(i), "k{i} lost in the failover");
    }
    let _: () = redis::cmd("SET")
        .arg("{bar}after")
        .arg("1")
        .query(&mut c)
        .unwrap();
    wait_until(
        "the old master is flagged failed",
        Duration::from_secs(10),
        || {
            text(&nodes[1], &["CLUSTER", "NODES"])
                .lines()
                .any(|l| l.starts_with(&old_id) && l.contains("master,fail"))
        },
    );
    // Restart it from its nodes.conf: it notices a newer owner of its slots
    // and turns into a replica of the promoted node by itself.
    let old = nodes.remove(0);
    let back = Node::start_in_port(
        old.into_dir(),
        port,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            TIMEOUT,
        ],
    );
    wait_until(
        "the old master replicates the promoted one",
        Duration::from_secs(30),
        || replica_of(&back, &new_id),
    );
    wait_until(
        "everyone sees it as a healthy replica",
        Duration::from_secs(30),
        || {
            nodes.iter().all(|n| {
                text(n, &["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.starts_with(&old_id) && l.contains(&format!(" slave {new_id} ")))
                    && text(n, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })
        },
    );
    // It resynced from the new master: what was written there after the
    // failover is on it too (read after READONLY).
    wait_until("the old master resynced", Duration::from_secs(30), || {
        back.info_field("replication", "master_link_status") == "up"
    });
    // While it loads the new master's snapshot it answers -LOADING: ask
    // again, on a fresh connection each time.
    let readonly_client = || -> redis::RedisResult<redis::Connection> {
        let mut b = redis::Client::open(back.url())?.get_connection()?;
        redis::cmd("READONLY").query::<()>(&mut b)?;
        Ok(b)
    };
    wait_until("the new write reached it", Duration::from_secs(30), || {
        readonly_client()
            .and_then(|mut b| {
                redis::cmd("GET")
                    .arg("{bar}after")
                    .query::<Option<String>>(&mut b)
            })
            .is_ok_and(|v| v.as_deref() == Some("1"))
    });
    let mut b = readonly_client().unwrap();
    let h: Option<String> = redis::cmd("HGET")
        .arg("{bar}h")
        .arg("f")
        .query(&mut b)
        .unwrap();
    assert_eq!(h.as_deref(), Some("v"));
    // Writes to its old slots are redirected to the new master.
    // ("bar" hashes to slot 5061.)
    let err = cmd(&back, &["SET", "bar", "1"]).unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::Moved, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("5061 127.0.0.1:{}", nodes[2].port)),
        "{err}"
    );
}

#[test]
fn no_failover_blocks_promotion_but_cluster_failover_works() {
    let mut nodes = build_cluster_with(&[
        "--cluster-node-timeout",
        TIMEOUT,
        "--cluster-replica-no-failover",
        "yes",
    ]);
    assert!(myself_line(&nodes[3]).contains("nofailover"));
    // Coordinated manual failover while the master is alive: roles swap.
    let r_id = text(&nodes[3], &["CLUSTER", "MYID"]);
    let err = cmd(&nodes[0], &["CLUSTER", "FAILOVER"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("You should send CLUSTER FAILOVER to a replica"),
        "{err}"
    );
    cmd(&nodes[3], &["CLUSTER", "FAILOVER"]).unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_until("manual failover done", Duration::from_secs(20), || {
        owns_everywhere(&nodes[3], 0, &all) && replica_of(&nodes[0], &r_id)
    });
    // The second master (node 1) dies: its replica (node 4) must not take
    // over on its own...
    let _ = cmd(&nodes[1], &["SHUTDOWN", "NOSAVE"]);
    assert!(nodes[1].wait_exit(Duration::from_secs(10)));
    wait_until("the master is failed", Duration::from_secs(20), || {
        text(&nodes[2], &["CLUSTER", "INFO"]).contains("cluster_state:fail")
    });
    // A negative needs a window: longer than the slowest election start
    // (FAIL is already agreed, an election would begin within ~1 s).
    let end = std::time::Instant::now() + Duration::from_millis(3 * 2000);
    while std::time::Instant::now() < end {
        assert!(
            myself_line(&nodes[4]).contains("myself,slave"),
            "no automatic promotion"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...but an operator's FORCE does it.
    let err = cmd(&nodes[4], &["CLUSTER", "FAILOVER"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("please use CLUSTER FAILOVER FORCE"), "{err}");
    cmd(&nodes[4], &["CLUSTER", "FAILOVER", "FORCE"]).unwrap();
    let live: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, n)| n)
        .collect();
    wait_until("forced failover done", Duration::from_secs(20), || {
        owns_everywhere(&nodes[4], 5461, &live)
    });
}

/// Writes keys that hash to master 0's slots (`{bar}` is slot 5061) to it
/// directly, each followed by `WAIT 1 0`; returns the acknowledged ones.
fn acked_writer(port: u16, max: u64) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
        else {
            return Vec::new();
        };
        let mut acked = Vec::new();
        for i in 0..max {
            if redis::cmd("SET")
                .arg(format!("{{bar}}w{i}"))
                .arg(i)
                .query::<()>(&mut c)
                .is_err()
            {
                break;
            }
            match redis::cmd("WAIT").arg(1).arg(0).query::<i64>(&mut c) {
                Ok(1) => acked.push(i),
                _ => break,
            }
        }
        acked
    })
}

#[test]
fn kill_9_under_write_load_loses_no_write_acknowledged_by_wait() {
    let nodes = build_cluster_with(&["--cluster-node-timeout", TIMEOUT]);
    wait_replicas_synced(&nodes);
    let writer = acked_writer(nodes[0].port, 1_000_000);
    // Kill mid-stream, once the replica holds a few dozen writes.
    wait_until("some writes acknowledged", Duration::from_secs(20), || {
        let db0 = nodes[3].info_field("keyspace", "db0");
        db0.strip_prefix("keys=")
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 50)
    });
    signal(&nodes[0], nix::sys::signal::Signal::SIGKILL);
    let acked = writer.join().unwrap();
    assert!(
        acked.len() > 10,
        "the writer made progress ({})",
        acked.len()
    );
    let others: Vec<&Node> = nodes[1..].iter().collect();
    wait_until("the replica took over", Duration::from_secs(30), || {
        owns_everywhere(&nodes[3], 5061, &others)
    });
    let mut r = nodes[3].client();
    for i in &acked {
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("{{bar}}w{i}"))
            .query(&mut r)
            .unwrap();
        assert_eq!(v, Some(*i), "acknowledged write {{bar}}w{i} lost");
    }
}

#[test]
fn a_master_cut_off_is_replaced_and_rejoins_without_taking_a_stale_write() {
    let nodes = build_cluster_with(&["--cluster-node-timeout", TIMEOUT]);
    let all: Vec<&Node> = nodes.iter().collect();
    let mut c = cluster_client(&all).get_connection().unwrap();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{bar}}k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    wait_replicas_synced(&nodes);
    // Partition master 0 away from everyone (it is frozen: SIGSTOP).
    signal(&nodes[0], nix::sys::signal::Signal::SIGSTOP);
    let others: Vec<&Node> = nodes[1..].iter().collect();
    wait_until("the majority failed over", Duration::from_secs(30), || {
        owns_everywhere(&nodes[3], 5061, &others)
    });
    let mut n3 = nodes[3].client();
    let _: () = redis::cmd("SET")
        .arg("{bar}during")
        .arg("new")
        .query(&mut n3)
        .unwrap();
    // The partition heals. From the instant it wakes up, the old master
    // never accepts a write for the slots it lost: CLUSTERDOWN while it
    // distrusts its view, MOVED once it knows the new owner.
    signal(&nodes[0], nix::sys::signal::Signal::SIGCONT);
    let mut old = nodes[0].client();
    let new_id = text(&nodes[3], &["CLUSTER", "MYID"]);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    loop {
        let r = redis::cmd("SET")
            .arg("{bar}stale")
            .arg("x")
            .query::<()>(&mut old);
        probes += 1;
        match r {
            Ok(()) => panic!("the cut-off master took a write for a slot it lost"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    redis::ErrorKind::Moved | redis::ErrorKind::ClusterDown
                ),
                "{e}"
            ),
        }
        if replica_of(&nodes[0], &new_id) || std::time::Instant::now() > end {
            break;
        }
    }
    assert!(
        replica_of(&nodes[0], &new_id),
        "rejoined as a replica ({probes} probes)"
    );
    wait_until("it resynced", Duration::from_secs(30), || {
        nodes[0].info_field("replication", "master_link_status") == "up"
    });
    let _: () = redis::cmd("READONLY").query(&mut old).unwrap();
    wait_until(
        "it has the write made during the partition",
        Duration::from_secs(30),
        || {
            // (A read may meet CLUSTERDOWN while it settles.)
            redis::cmd("GET")
                .arg("{bar}during")
                .query::<Option<String>>(&mut old)
                .is_ok_and(|v| v.as_deref() == Some("new"))
        },
    );
    let v: Option<i64> = redis::cmd("GET").arg("{bar}k7").query(&mut old).unwrap();
    assert_eq!(v, Some(7));
    let stale: Option<String> = redis::cmd("GET").arg("{bar}stale").query(&mut n3).unwrap();
    assert_eq!(stale, None);
}

#[test]
fn a_master_alone_refuses_writes_after_the_node_timeout() {
    let nodes = build_cluster_with(&["--cluster-node-timeout", TIMEOUT]);
    let mut m = nodes[0].client();
    let _: () = redis::cmd("SET")
        .arg("{bar}a")
        .arg("1")
        .query(&mut m)
        .unwrap();
    // Everyone else is unreachable (frozen).
    for n in &nodes[1..] {
        signal(n, nix::sys::signal::Signal::SIGSTOP);
    }
    wait_until(
        "CLUSTERDOWN on the lone master",
        Duration::from_secs(20),
        || {
            matches!(
                redis::cmd("SET").arg("{bar}a").arg("2").query::<()>(&mut m),
                Err(e) if e.kind() == redis::ErrorKind::ClusterDown
            )
        },
    );
    assert!(text(&nodes[0], &["CLUSTER", "INFO"]).contains("cluster_state:fail"));
    for n in &nodes[1..] {
        signal(n, nix::sys::signal::Signal::SIGCONT);
    }
    // Nobody could fail it over: once it hears the others again it serves.
    wait_until("writes accepted again", Duration::from_secs(30), || {
        redis::cmd("SET")
            .arg("{bar}a")
            .arg("3")
            .query::<()>(&mut m)
            .is_ok()
    });
    assert!(myself_line(&nodes[0]).contains("myself,master"));
}
