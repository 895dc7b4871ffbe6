//! The layout of a local cluster: ports, per-node directories and configs,
//! and whether what is under `--dir` is to be created or rejoined. Pure:
//! no processes, no sockets beyond the busy-port probe.

use super::{UpError, UpOptions};
use std::path::{Path, PathBuf};

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
    pub(super) fn addr(&self) -> String {
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

/// A path as the user would type it: relative to the current directory
/// when it is below it (`data/7000/node.log`), else absolute.
pub(super) fn shown(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|rel| !rel.as_os_str().is_empty())
        .unwrap_or_else(|| p.to_path_buf())
        .display()
        .to_string()
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
