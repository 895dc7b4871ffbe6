//! What ships beside the binary stays true to it: the example node config
//! is accepted by our own parser and carries the founding directives, the
//! Grafana dashboard uses exactly the proxy's metric contract, and the
//! Dockerfile / docker-compose.yml / Prometheus config say what the README
//! promises. (Docker itself cannot run in CI; these catch the drift.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The proxy's metric names (the contract the dashboard and README use).
const METRICS: &[&str] = &[
    "slotway_proxy_client_connections",
    "slotway_proxy_client_connections_total",
    "slotway_proxy_client_connections_rejected_total",
    "slotway_proxy_commands_total",
    "slotway_proxy_command_duration_seconds",
    "slotway_proxy_backend_connections",
    "slotway_proxy_backend_inflight",
    "slotway_proxy_backend_errors_total",
    "slotway_proxy_redirects_total",
    "slotway_proxy_retries_total",
    "slotway_proxy_topology_refreshes_total",
    "slotway_proxy_slot_map_epoch",
    "slotway_proxy_slots_covered",
];

#[test]
fn the_example_node_conf_has_every_founding_directive_commented_and_parses() {
    let text = read("config/node.conf");
    let lines: Vec<&str> = text.lines().collect();
    for directive in [
        "daemonize",
        "port",
        "cluster-enabled",
        "cluster-node-timeout",
        "cluster-replica-no-failover",
        "maxmemory",
        "dir",
    ] {
        let at = lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(directive))
            .unwrap_or_else(|| panic!("config/node.conf lacks `{directive}`"));
        assert!(
            at > 0 && lines[at - 1].starts_with('#'),
            "`{directive}` has no comment above it"
        );
    }
    let table =
        slotway::runtime::config::ConfigTable::from_args(Some(&repo("config/node.conf")), &[])
            .unwrap();
    let cfg = slotway::runtime::config::NodeConfig::from_table(&table).unwrap();
    assert_eq!(cfg.cluster_node_timeout, 5000);
}

#[test]
fn the_grafana_dashboard_uses_exactly_the_proxy_metric_contract() {
    let text = read("config/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(!exprs.is_empty());
    let mut used = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("slotway_proxy_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                METRICS.contains(&base),
                "{name} is not in the metric contract"
            );
            used.insert(base.to_string());
        }
    }
    for m in METRICS {
        assert!(used.contains(*m), "the dashboard never shows {m}");
    }
}

#[test]
fn docker_files_ship_the_binary_and_a_whole_cluster() {
    let df = read("Dockerfile");
    assert!(df.contains("ENTRYPOINT [\"slotway\"]"), "{df}");
    for port in ["6379", "16379", "7777", "9121"] {
        assert!(
            df.lines()
                .any(|l| l.starts_with("EXPOSE") && l.contains(port)),
            "EXPOSE {port}"
        );
    }
    let user = df
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(df.contains("--release"), "release build");

    let compose = read("docker-compose.yml");
    let nodes = (1..=6)
        .filter(|i| compose.contains(&format!("\n  node{i}:\n")))
        .count();
    assert_eq!(nodes, 6, "six node services");
    assert!(compose.contains("slotway cluster create"));
    assert!(compose.contains("--replicas 1 --yes"));
    assert!(compose.contains("\"proxy\", \"--listen\""));
    assert!(compose.contains("\"--nodes\"") && compose.contains("\"--metrics\""));

    let prom = read("config/prometheus.yml");
    assert!(prom.contains("metrics_path: /metrics"));
    assert!(prom.contains(":9121"));
}
