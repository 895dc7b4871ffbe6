//! Failover on real node processes: a shut-down master is replaced by its
//! replica and comes back as that replica's replica; `cluster-replica-no-
//! failover` stops automatic promotion while `CLUSTER FAILOVER` still works.
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
