//! Building a slotway cluster out of real node processes, the way redis-cli
//! does it: ADDSLOTSRANGE, SET-CONFIG-EPOCH, MEET, REPLICATE. Every test
//! that needs a cluster forms it here, so all of them get the same slot
//! split and wait for the same conditions.

use super::{wait_until, Node};
use std::time::Duration;

pub fn cmd(node: &Node, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = node.client();
    let mut q = redis::cmd(args[0]);
    for a in &args[1..] {
        q.arg(*a);
    }
    q.query(&mut c)
}

pub fn text(node: &Node, args: &[&str]) -> String {
    let mut c = node.client();
    let mut q = redis::cmd(args[0]);
    for a in &args[1..] {
        q.arg(*a);
    }
    q.query::<String>(&mut c).unwrap()
}

/// Six nodes, three masters with the redis-cli slot split, three replicas
/// (node i + 3 replicates node i), node timeout 5 s.
pub fn build_cluster() -> Vec<Node> {
    build_cluster_with(&["--cluster-node-timeout", "5000"])
}

/// Like [`build_cluster`], every node started with `extra` directives.
pub fn build_cluster_with(extra: &[&str]) -> Vec<Node> {
    let mut args = vec!["--cluster-enabled", "yes"];
    args.extend_from_slice(extra);
    let nodes: Vec<Node> = (0..6).map(|_| Node::start(&args)).collect();
    form_cluster(&nodes, 3, password_in(extra));
    nodes
}

/// `masters` masters and no replicas, node timeout 5 s, plus `extra`.
pub fn masters_only(masters: usize, extra: &[&str]) -> Vec<Node> {
    let mut args = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
    args.extend_from_slice(extra);
    let nodes: Vec<Node> = (0..masters).map(|_| Node::start(&args)).collect();
    form_cluster(&nodes, masters, password_in(extra));
    nodes
}

/// The `--requirepass` among a node's start arguments.
pub fn password_in<'a>(extra: &[&'a str]) -> Option<&'a str> {
    let i = extra.iter().position(|a| *a == "--requirepass")?;
    extra.get(i + 1).copied()
}

/// The slot ranges `redis-cli --cluster create` gives `masters` masters.
pub fn slot_ranges(masters: usize) -> Vec<(u16, u16)> {
    let per = 16384.0 / masters as f64;
    let mut first = 0u16;
    let mut cursor = 0.0;
    (0..masters)
        .map(|i| {
            let last = if i + 1 == masters {
                16383
            } else {
                ((cursor + per - 1.0).round() as u16).min(16383)
            };
            let range = (first, last);
            first = last + 1;
            cursor += per;
            range
        })
        .collect()
}

fn admin(node: &Node, password: Option<&str>) -> redis::Connection {
    let mut c = node.client();
    if let Some(pw) = password {
        let _: () = redis::cmd("AUTH").arg(pw).query(&mut c).unwrap();
    }
    c
}

/// Makes one cluster of started nodes: the first `masters` get the
/// redis-cli slot split and config epochs 1..; every node meets node 0;
/// node `masters + i` replicates master `i % masters`. Returns when every
/// node sees all nodes, every replica and `cluster_state:ok`.
pub fn form_cluster(nodes: &[Node], masters: usize, password: Option<&str>) {
    let q = |node: &Node, args: &[String]| -> redis::Value {
        let mut c = admin(node, password);
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        cmd.query(&mut c).unwrap()
    };
    let s = |parts: &[&str]| -> Vec<String> { parts.iter().map(|p| p.to_string()).collect() };
    for (i, (lo, hi)) in slot_ranges(masters).into_iter().enumerate() {
        q(
            &nodes[i],
            &s(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()]),
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        q(
            n,
            &s(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]),
        );
    }
    for n in &nodes[1..] {
        q(
            &nodes[0],
            &s(&["CLUSTER", "MEET", "127.0.0.1", &n.port.to_string()]),
        );
    }
    let info = |n: &Node, what: &str| -> String {
        let mut c = admin(n, password);
        redis::cmd("CLUSTER").arg(what).query(&mut c).unwrap()
    };
    // Counting known nodes is not enough: a peer still in handshake is
    // counted under a temporary id, and REPLICATE of its real id fails.
    wait_until("all nodes know each other", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            let table = info(n, "NODES");
            table.lines().count() == nodes.len() && !table.contains("handshake")
        })
    });
    for (i, replica) in nodes.iter().enumerate().skip(masters) {
        let master_id = info(&nodes[i % masters], "MYID");
        q(replica, &s(&["CLUSTER", "REPLICATE", &master_id]));
    }
    let replicas = nodes.len() - masters;
    wait_until(
        "every node sees every replica and the cluster ok",
        Duration::from_secs(30),
        || {
            nodes.iter().all(|n| {
                let seen = info(n, "NODES")
                    .lines()
                    .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("slave")))
                    .count();
                seen == replicas && info(n, "INFO").contains("cluster_state:ok")
            })
        },
    );
}
