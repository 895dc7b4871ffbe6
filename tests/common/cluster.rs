//! Building a slotway cluster out of real node processes, the way redis-cli
//! does it: ADDSLOTSRANGE, SET-CONFIG-EPOCH, MEET, REPLICATE.

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
    let ranges = [("0", "5460"), ("5461", "10922"), ("10923", "16383")];
    for (i, (lo, hi)) in ranges.iter().enumerate() {
        cmd(&nodes[i], &["CLUSTER", "ADDSLOTSRANGE", lo, hi]).unwrap();
    }
    for (i, n) in nodes.iter().enumerate() {
        cmd(n, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]).unwrap();
    }
    for n in &nodes[1..] {
        cmd(
            &nodes[0],
            &["CLUSTER", "MEET", "127.0.0.1", &n.port.to_string()],
        )
        .unwrap();
    }
    wait_until("all nodes know each other", Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| text(n, &["CLUSTER", "INFO"]).contains("cluster_known_nodes:6"))
    });
    for i in 0..3 {
        let master_id = text(&nodes[i], &["CLUSTER", "MYID"]);
        cmd(&nodes[i + 3], &["CLUSTER", "REPLICATE", &master_id]).unwrap();
    }
    wait_until(
        "every node sees 3 masters and 3 slaves",
        Duration::from_secs(30),
        || {
            nodes.iter().all(|n| {
                let t = text(n, &["CLUSTER", "NODES"]);
                t.lines()
                    .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("slave")))
                    .count()
                    == 3
            }) && nodes
                .iter()
                .all(|n| text(n, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        },
    );
    nodes
}
