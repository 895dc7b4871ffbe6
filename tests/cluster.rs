//! Cluster mode on real node processes: building a 3+3 cluster with CLUSTER
//! commands (as redis-cli does), redirects, a cluster-aware client that no
//! one here wrote (redis-rs `cluster`), and rejoining from nodes.conf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::cluster::{build_cluster, cmd, slot_ranges, text};
use common::{wait_until, Node};
use std::time::Duration;

#[test]
fn a_three_plus_three_cluster_serves_every_slot_with_redirects() {
    let nodes = build_cluster();
    // CLUSTER NODES in Redis's exact line format.
    let listing = text(&nodes[0], &["CLUSTER", "NODES"]);
    let mine = listing.lines().find(|l| l.contains("myself")).unwrap();
    let f: Vec<&str> = mine.split(' ').collect();
    assert_eq!(f.len(), 9, "{mine}");
    assert_eq!(f[0].len(), 40);
    assert_eq!(
        f[1],
        format!("127.0.0.1:{}@{}", nodes[0].port, nodes[0].port + 10000)
    );
    assert_eq!(f[2], "myself,master");
    assert_eq!(f[3], "-");
    assert_eq!(f[7], "connected");
    assert_eq!(f[8], "0-5460");
    // A key of another master's slot is redirected.
    let e = cmd(&nodes[0], &["GET", "foo"]).unwrap_err();
    assert_eq!(e.code(), Some("MOVED"), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("12182 127.0.0.1:{}", nodes[2].port)),
        "{e}"
    );
    let e = cmd(&nodes[2], &["MSET", "foo", "1", "bar", "2"]).unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
    let mut c = nodes[0].client();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{user1000}.following")
        .query(&mut c)
        .unwrap();
    let tag: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("user1000")
        .query(&mut c)
        .unwrap();
    assert_eq!(slot, tag, "hash tags pick the slot");

    // A cluster-aware client no one here wrote follows the redirects.
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let client = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut cc = client.get_connection().unwrap();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query(&mut cc)
            .unwrap();
    }
    for i in 0..200 {
        let v: i64 = redis::cmd("GET")
            .arg(format!("key:{i}"))
            .query(&mut cc)
            .unwrap();
        assert_eq!(v, i);
    }
    // Keys really are spread over the three masters.
    for m in &nodes[..3] {
        let mut c = m.client();
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert!(n > 30, "master {} holds {n} keys", m.port);
    }
}

#[test]
fn a_restarted_node_rejoins_from_nodes_conf() {
    let mut nodes = build_cluster();
    let id = text(&nodes[1], &["CLUSTER", "MYID"]);
    let conf = std::fs::read_to_string(nodes[1].dir_path().join("nodes.conf")).unwrap();
    assert!(
        conf.lines().any(|l| l.starts_with(&id)
            && l.contains("myself,master")
            && l.ends_with("5461-10922")),
        "{conf}"
    );
    assert!(
        conf.ends_with("\n")
            && conf
                .lines()
                .last()
                .unwrap()
                .starts_with("vars currentEpoch "),
        "{conf}"
    );
    // Stop node 1 and start a new process in the same dir on the same port.
    let port = nodes[1].port;
    let old = nodes.remove(1);
    let dir = old.into_dir();
    let back = Node::start_in_port(
        dir,
        port,
        &["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"],
    );
    assert_eq!(
        text(&back, &["CLUSTER", "MYID"]),
        id,
        "same identity after restart"
    );
    wait_until("rejoined cluster", Duration::from_secs(30), || {
        let info = text(&back, &["CLUSTER", "INFO"]);
        info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
    });
}

#[test]
fn slotway_cluster_create_and_check_build_the_same_cluster() {
    let nodes: Vec<Node> = (0..6)
        .map(|_| Node::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]))
        .collect();
    let mut args: Vec<String> = vec!["cluster".into(), "create".into()];
    args.extend(nodes.iter().map(Node::addr));
    args.extend(["--replicas".into(), "1".into(), "--yes".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = common::run_bin(&argv, &nodes[0].dir_path());
    assert!(ok, "{out}");
    assert!(
        out.contains("Master[0] -> Slots 0 - 5460")
            && out.contains("Master[1] -> Slots 5461 - 10922")
            && out.contains("Master[2] -> Slots 10923 - 16383"),
        "{out}"
    );
    assert!(out.contains("[OK] All 16384 slots covered."), "{out}");
    // The final check already shows the replicas (create waits for them).
    let check_part = &out[out.find(">>> Performing Cluster Check").unwrap()..];
    assert_eq!(check_part.matches("\nS: ").count(), 3, "{out}");
    let (ok, out) = common::run_bin(
        &["cluster", "check", &nodes[3].addr()],
        &nodes[0].dir_path(),
    );
    assert!(
        ok && out.contains("[OK] All nodes agree about slots configuration."),
        "{out}"
    );
    wait_until("roles everywhere", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            text(n, &["CLUSTER", "NODES"])
                .lines()
                .filter(|l| l.contains("slave"))
                .count()
                == 3
        })
    });
    // Creating again is refused: the nodes are no longer empty.
    let (ok, out) = common::run_bin(&argv, &nodes[0].dir_path());
    assert!(!ok && out.contains("is not empty"), "{out}");
}

#[test]
fn publish_on_one_node_reaches_subscribers_on_every_node() {
    let nodes = build_cluster();
    let mut conns: Vec<redis::Connection> = nodes.iter().map(Node::client).collect();
    let mut subs: Vec<redis::PubSub<'_>> = Vec::new();
    for c in conns.iter_mut() {
        let mut ps = c.as_pubsub();
        ps.subscribe("news").unwrap();
        ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        subs.push(ps);
    }
    // Each node counts only its own receivers, as in Redis.
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut nodes[2].client())
        .unwrap();
    assert_eq!(n, 1);
    for (i, ps) in subs.iter_mut().enumerate() {
        let msg = ps.get_message().unwrap_or_else(|e| panic!("node {i}: {e}"));
        assert_eq!(msg.get_channel_name(), "news");
        assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
    }
}

#[test]
fn the_harness_splits_slots_as_redis_cli_does() {
    assert_eq!(slot_ranges(3), [(0, 5460), (5461, 10922), (10923, 16383)]);
    assert_eq!(slot_ranges(1), [(0, 16383)]);
    assert_eq!(slot_ranges(2), [(0, 8191), (8192, 16383)]);
}
