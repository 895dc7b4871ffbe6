//! A step of one node's wall clock (NTP correction, an operator's `date
//! -s`) must not look like a failure: its timers run on the monotonic
//! clock. libfaketime moves the wall clock of one node of a running
//! cluster an hour forward, then an hour back; through both, no node flags
//! another as failing, the cluster stays `ok` and the stepped node keeps
//! taking writes for its slots. Needs the `faketime` Debian package (CI
//! installs it), hence `#[ignore]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::cluster::{cmd, form_cluster, text};
use common::{free_port, wait_until, Node};
use std::path::Path;
use std::time::{Duration, Instant};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const TIMEOUT_MS: u64 = 2000;

/// Three masters; node 0 runs under libfaketime, whose offset is read
/// from `offset_file` on every clock call.
fn cluster(offset_file: &Path) -> Vec<Node> {
    let timeout = TIMEOUT_MS.to_string();
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        &timeout,
    ];
    let env = [
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", offset_file.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ];
    let faked = Node::start_with_env(tempfile::tempdir().unwrap(), free_port(), &args, &env);
    let nodes = vec![faked, Node::start(&args), Node::start(&args)];
    form_cluster(&nodes, 3, None);
    wait_until(
        "no peer is flagged failing",
        Duration::from_secs(30),
        || healthy(&nodes),
    );
    nodes
}

/// Every node reports `ok` and flags no peer `fail?` or `fail`.
fn healthy(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| {
        text(n, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            && text(n, &["CLUSTER", "NODES"])
                .lines()
                .all(|l| l.split(' ').nth(2).is_some_and(|f| !f.contains("fail")))
            && text(n, &["CLUSTER", "NODES"]).lines().count() == 3
    })
}

/// Watches the cluster for three node timeouts: long enough for any timer
/// that read the stepped wall clock to have fired.
fn stays_healthy(nodes: &[Node], what: &str) {
    let until = Instant::now() + Duration::from_millis(3 * TIMEOUT_MS);
    let mut writes = 0u64;
    while Instant::now() < until {
        assert!(
            healthy(nodes),
            "{what}: a node saw a failure:\n{}",
            views(nodes)
        );
        // "a" hashes to slot 15495 (node 2), "{b}" to 3300 (node 0, the
        // stepped one): both must keep taking writes.
        writes += 1;
        let r = cmd(&nodes[0], &["SET", "{b}", &writes.to_string()]);
        assert!(r.is_ok(), "{what}: write to the stepped node failed: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(text(&nodes[0], &["GET", "{b}"]), writes.to_string());
}

fn views(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| text(n, &["CLUSTER", "NODES"]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs libfaketime (apt-get install faketime); run with --ignored"]
fn stepping_one_nodes_wall_clock_is_not_a_failure() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("skipped: {LIBFAKETIME} missing (apt-get install faketime)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let nodes = cluster(&offset);
    let wall = |n: &Node| -> i64 {
        match cmd(n, &["TIME"]).unwrap() {
            redis::Value::Array(v) => match &v[0] {
                redis::Value::BulkString(s) => std::str::from_utf8(s).unwrap().parse().unwrap(),
                other => panic!("TIME: {other:?}"),
            },
            other => panic!("TIME: {other:?}"),
        }
    };

    std::fs::write(&offset, "+3600\n").unwrap();
    wait_until(
        "the node's wall clock moved an hour on",
        Duration::from_secs(10),
        || wall(&nodes[0]) - wall(&nodes[1]) > 3500,
    );
    stays_healthy(&nodes, "an hour forward");

    std::fs::write(&offset, "-3600\n").unwrap();
    wait_until(
        "the node's wall clock moved two hours back",
        Duration::from_secs(10),
        || wall(&nodes[1]) - wall(&nodes[0]) > 3500,
    );
    stays_healthy(&nodes, "an hour back");
}
